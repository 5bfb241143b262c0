"""What the training loop looks at every `sample_every` steps: the fixed-noise snapshot (grid / GIF
frame), D's outputs on real-train, fresh fake and real-test data, and the live diagnoses.

`Probes` observes the one pair of an ordinary run, `ClassProbes` the pairs of a `train.per_class`
run (a grid per class, a combined grid with one row per class, per-class D statistics and their
means under the usual keys). Both answer `build(cfg, data, keys)`, `reals_grid(run_dir)` and
`snapshot(pairs, step, run_dir)`; their noise is a function of (seed, step), so resume is exact.
`RunLog` writes the records (metrics.jsonl with `time_s`, TensorBoard / W&B mirrors) and acts on
the live diagnoses (a warning, and `train.stop_on`).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from gankit.checkpoint import load_checkpoint
from gankit.config import Config
from gankit.data import DataSource, ToySource
from gankit.data.image_source import ImageSource
from gankit.data.images import gather, to_float
from gankit.diagnose import (
    DIAGNOSES,
    WEIGHT_LIMIT,
    describe,
    diagnose,
    mean_pairwise_distance,
    persistent,
    weight_norm,
)
from gankit.distributed import World
from gankit.errors import GankitError
from gankit.layout import RunLayout
from gankit.metrics.dstats import d_output_stats
from gankit.pair import Pair
from gankit.plots import save_grid
from gankit.sample import generate, sample_z
from gankit.utils import append_jsonl, make_generator, read_jsonl

log = logging.getLogger(__name__)

DIAGNOSE_FROM = 100  # first step whose snapshot is diagnosed
GRID_COLUMNS = 8  # columns of a per-class run's combined grid (one row per class)


@dataclass
class Probes:
    """Fixed inputs of an ordinary run's snapshots: fixed noise (+ labels) for the grid, fixed
    real-train / real-test batches for the D-output statistics, and what the live diagnostics
    compare the snapshot with (gankit.diagnose)."""

    cfg: Config
    z: Tensor
    labels: Tensor | None
    nrow: (
        int  # images per grid row: a conditional grid has one row per class, fixed noise per column
    )
    train_x: Tensor
    train_y: Tensor | None
    test_x: Tensor
    test_y: Tensor | None
    real_diversity: float = 0.0  # mean pairwise distance of train_x
    modes: object | None = None  # toy mixture with centers / std (ring, grid), for mode coverage
    classifier: nn.Module | None = None  # the domain classifier of labelled images, if shipped

    @classmethod
    def build(cls, cfg: Config, data: DataSource, keys: list) -> Probes:
        m, n, g = cfg.model, cfg.train.dstats_n, make_generator(cfg.seed, "fixed_noise")
        if m.num_classes:
            nrow = math.ceil(cfg.train.sample_n / m.num_classes)
            z = sample_z(nrow, m.z_dim, m.z_dist, g).repeat(m.num_classes, 1)  # (K * nrow, z_dim)
            labels = torch.arange(m.num_classes).repeat_interleave(nrow)  # row k: class k
        else:
            nrow, labels = 0, None
            z = sample_z(cfg.train.sample_n, m.z_dim, m.z_dist, g)
        train_x, train_y = data.train_fixed(n, cfg.seed)
        test_x, test_y = data.held_out_labeled(n, cfg.seed)
        if not m.num_classes:
            train_y = test_y = None
        density = data.density if isinstance(data, ToySource) else None
        modes = density if hasattr(density, "centers") else None  # ring, grid: mode coverage
        return cls(cfg, z, labels, nrow, train_x, train_y, test_x, test_y,
                   mean_pairwise_distance(train_x), modes, _watch_classifier(cfg))  # fmt: skip

    def reals_grid(self, path: Path) -> None:
        """reals.png of an image run: the first sample_n fixed real-train images."""
        if self.train_x.dim() == 4:
            save_grid(self.train_x[: self.cfg.train.sample_n], path)

    def snapshot(self, pairs: dict[Any, Pair], step: int, samples: Path) -> dict[str, Any]:
        """Snapshot G(fixed noise) to samples/ (STEP.png grid for images, STEP.npy for toys, a GIF
        frame), measure D's outputs on real-train, fresh fake and real-test data, and diagnose the
        run; returns metrics.jsonl fields."""
        (pair,) = pairs.values()
        cfg = self.cfg
        fake = generate(pair.sampler, self.z, self.labels)  # eval mode, train mode restored
        if fake.dim() == 4:
            save_grid(fake, samples / f"{step:06d}.png", self.nrow)
        else:
            np.save(samples / f"{step:06d}.npy", fake.numpy())
        rec = {"fake_mean": fake.mean().item(), "fake_std": fake.std(dim=0).mean().item()}
        # fresh fakes from the G that D is trained against; noise is a function of the step
        m, n = cfg.model, self.train_x.shape[0]
        g = make_generator(cfg.seed, "dstats", step)
        fake_y = torch.randint(m.num_classes, (n,), generator=g) if m.num_classes else None
        fresh = generate(pair.G, sample_z(n, m.z_dim, m.z_dist, g), fake_y)
        for name, x, y in (("train", self.train_x, self.train_y), ("fake", fresh, fake_y),
                           ("test", self.test_x, self.test_y)):  # fmt: skip
            stats = d_output_stats(pair.D, x, y)
            rec[f"dstat_{name}_mean"], rec[f"dstat_{name}_std"] = stats["mean"], stats["std"]
        if self.modes is not None:
            from gankit.metrics.toy import mode_stats

            cov = mode_stats(fake.float(), self.modes.centers, self.modes.std)
            rec |= {k: cov[k] for k in ("modes", "num_modes", "high_quality")}
        if self.classifier is not None:
            from gankit.metrics.classifier import predict

            probs, _ = predict(self.classifier, fake)
            rec["classes_seen"] = int(probs.argmax(1).unique().numel())
            rec["num_classes_clf"] = probs.shape[1]
        if self.real_diversity > 0:
            rec["diversity_ratio"] = mean_pairwise_distance(fresh) / self.real_diversity
        rec["weight_norm"] = weight_norm(pair.G, pair.D)
        if step >= DIAGNOSE_FROM:  # G at (or near) its initialisation is not a diagnosis
            rec["diagnoses"] = diagnose(rec, cfg.loss.name)
        return rec


def _watch_classifier(cfg: Config) -> nn.Module | None:
    """The shipped domain classifier for the class coverage of MNIST / Fashion-MNIST snapshots."""
    if cfg.data.name not in ("mnist", "fashion_mnist") or cfg.data.channels not in (0, 1):
        return None
    from gankit.metrics.classifier import classifier_info, get_classifier

    if classifier_info(cfg.data.name, cfg.data.cache_dir) is None:
        return None
    return get_classifier(cfg.data.name, cfg.data.cache_dir)[0]


@dataclass
class ClassProbes:
    """Fixed inputs of a per-class run's snapshots and D-output statistics, per class."""

    cfg: Config
    z: Tensor  # (sample_n, z_dim) fixed noise, the same for every class
    train: dict[int, Tensor]  # class -> (<= dstats_n, C, H, W) real-train images in [-1, 1]
    test: dict[int, Tensor]  # class -> (<= dstats_n, C, H, W) real-test images (may be empty)

    @classmethod
    def build(cls, cfg: Config, data: ImageSource, keys: list) -> ClassProbes:
        m, n, imgs = cfg.model, cfg.train.dstats_n, data.images
        z = sample_z(cfg.train.sample_n, m.z_dim, m.z_dist, make_generator(cfg.seed, "fixed_noise"))

        def pick(x: np.ndarray, y: np.ndarray, c: int, split: str) -> Tensor:
            idx = torch.from_numpy(np.flatnonzero(np.asarray(y) == c))
            idx = idx[torch.randperm(len(idx), generator=make_generator(cfg.seed, split, c))[:n]]
            return to_float(gather(x, idx))

        train = {c: pick(imgs.train, imgs.train_labels, c, "train_fixed") for c in keys}
        test = {c: pick(imgs.test, imgs.test_labels, c, "held_out") for c in keys}
        return cls(cfg, z, train, test)

    def reals_grid(self, path: Path) -> None:
        """reals.png: one row of real-train images per class."""
        ncol = min(GRID_COLUMNS, *(len(x) for x in self.train.values()))
        save_grid(torch.cat([x[:ncol] for x in self.train.values()]), path, nrow=ncol)

    def snapshot(self, pairs: dict[Any, Pair], step: int, samples: Path) -> dict[str, Any]:
        """Write samples/class_K/STEP.png and the combined samples/STEP.png (one row per class, the
        same fixed-noise columns), measure each D_k on its class's real-train, fresh fake and
        real-test images, and diagnose each pair. Returns metrics.jsonl fields: per-class lists,
        their means under the usual keys, and `diagnoses` (those of any pair; which pair in
        `diagnoses_per_class`)."""
        m, n = self.cfg.model, self.cfg.train.dstats_n
        parts = ("train", "fake", "test")
        rec: dict = {f"dstat_{p}_{s}_per_class": [] for p in parts for s in ("mean", "std")}
        rec |= {"diversity_ratio_per_class": [], "weight_norm_per_class": []}
        rows, per_class = [], []
        for c, pair in pairs.items():
            if len(self.z):
                fake = generate(pair.sampler, self.z)
                save_grid(fake, samples / f"class_{c}" / f"{step:06d}.png")
                rows.append(fake[:GRID_COLUMNS])
            g = make_generator(self.cfg.seed, "dstats", c, step)  # a function of the step
            fresh = generate(pair.G, sample_z(n, m.z_dim, m.z_dist, g))
            own: dict[str, Any] = {}
            for part, x in (("train", self.train[c]), ("fake", fresh), ("test", self.test[c])):
                stats = d_output_stats(pair.D, x) if len(x) else {"mean": None, "std": None}
                for s in ("mean", "std"):
                    rec[f"dstat_{part}_{s}_per_class"].append(stats[s])
                own[f"dstat_{part}_mean"] = stats["mean"]
            real = mean_pairwise_distance(self.train[c])
            own["diversity_ratio"] = mean_pairwise_distance(fresh) / real if real > 0 else None
            own["weight_norm"] = weight_norm(pair.G, pair.D)
            rec["diversity_ratio_per_class"].append(own["diversity_ratio"])
            rec["weight_norm_per_class"].append(own["weight_norm"])
            per_class.append(diagnose(own, self.cfg.loss.name) if step >= DIAGNOSE_FROM else [])
        if rows:
            save_grid(torch.cat(rows), samples / f"{step:06d}.png", nrow=len(rows[0]))
        for key, values in list(rec.items()):  # means over the classes that have data, for plots
            known = [v for v in values if v is not None]
            if known:
                rec[key.removesuffix("_per_class")] = sum(known) / len(known)
        # the worst pair speaks for the run: the largest (or a non-finite) weight norm, the least
        # diverse fakes
        norms = rec["weight_norm_per_class"]
        rec["weight_norm"] = next((v for v in norms if not v <= WEIGHT_LIMIT), max(norms))
        ratios = [v for v in rec["diversity_ratio_per_class"] if v is not None]
        if ratios:
            rec["diversity_ratio"] = min(ratios)
        if step >= DIAGNOSE_FROM:
            rec["diagnoses"] = [d for d in DIAGNOSES if any(d in ds for ds in per_class)]
            rec["diagnoses_per_class"] = per_class
        return rec


def probes_for(cfg: Config, data: DataSource, keys: list) -> Probes | ClassProbes:
    return (ClassProbes if cfg.train.per_class else Probes).build(cfg, data, keys)


class DiagnosedStop(GankitError):
    """A diagnosis listed in train.stop_on held at two snapshots in a row; the run stopped."""


def ckpt_step(path: Path) -> str:
    """'step N' of the checkpoint at `path`, or 'none'."""
    return f"step {load_checkpoint(path)['step']}" if path.exists() else "none"


class RunLog:
    """metrics.jsonl records (with `time_s`, mirrored to TensorBoard / W&B) and the live diagnoses:
    a warning for each new one; a train.stop_on one that holds twice in a row stops the run, and
    while one holds checkpoints are not written (the last good one is kept)."""

    def __init__(self, cfg: Config, layout: RunLayout, tracker: Any, world: World) -> None:
        self.cfg, self.layout, self.tracker, self.world = cfg, layout, tracker, world
        history = read_jsonl(layout.metrics) if world.main else []
        self.snaps = [r for r in history if "diagnoses" in r]
        self.suspect = False
        # wall-clock seconds of training, summed over the processes of a resumed run
        self.t_start = time.perf_counter()
        self.elapsed = next((r["time_s"] for r in reversed(history) if "time_s" in r), 0.0)

    def record(self, rec: dict) -> None:
        rec["time_s"] = round(self.elapsed + time.perf_counter() - self.t_start, 3)
        append_jsonl(rec, self.layout.metrics)
        self.tracker.scalars(rec["step"], rec)
        grid = self.layout.snapshot(rec["step"])
        if self.tracker.enabled and "fake_mean" in rec and grid.exists():
            self.tracker.image(rec["step"], "samples", np.asarray(Image.open(grid)))
        self._diagnose(rec)

    def _diagnose(self, rec: dict) -> None:
        if "diagnoses" not in rec:
            return
        stop_on = self.cfg.train.stop_on
        seen = self.snaps[-1]["diagnoses"] if self.snaps else []
        new = [d for d in rec["diagnoses"] if d not in seen]
        if new:
            log.warning("%s", describe(new, rec))
        stop = persistent(self.snaps, rec, stop_on)
        self.snaps.append(rec)
        self.suspect = any(d in stop_on for d in rec["diagnoses"])
        if stop:
            raise DiagnosedStop(
                f"stopped by train.stop_on at step {rec['step']}: {describe(stop, rec)}; "
                f"last checkpoint kept from before it: {ckpt_step(self.layout.last)}"
            )

    def final_check(self, step: int) -> None:
        """Diagnosed at the very last step: there is no good last.pt to write."""
        if self.suspect:
            bad = [d for d in self.snaps[-1]["diagnoses"] if d in self.cfg.train.stop_on]
            raise DiagnosedStop(
                f"stopped by train.stop_on at the last step {step}: "
                f"{describe(bad, self.snaps[-1])}; last checkpoint kept from before it: "
                f"{ckpt_step(self.layout.last)}"
            )
