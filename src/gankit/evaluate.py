"""Evaluating a run: `EvalContext` (what a metric may use: generators, data, seed, options), the
`METRICS` table of adapters (in `gankit.metric_adapters`), `evaluate` (one metric's record) and
`eval_run` (`gankit eval`: every metric asked for, appended to the run's eval.jsonl).

The context holds in-memory models (`gankit.factory.RunModels`), not a checkpoint, so the same
metrics run on a checkpoint (`EvalContext.from_checkpoint`) or on live generators inside training
(`EvalContext.from_models`). The metrics' protocols are described in `gankit.metrics`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gankit.checkpoint import load_checkpoint
from gankit.data import DataSource, ToySource, data_from_config
from gankit.factory import RunModels
from gankit.layout import RunLayout
from gankit.metric_adapters import METRICS
from gankit.registry import lookup
from gankit.rundir import resolve
from gankit.utils import GankitError, append_jsonl, get_device, make_generator
from gankit.version import __version__

__all__ = ["METRICS", "EvalContext", "default_metrics", "eval_run", "evaluate", "load_run"]


@dataclass
class EvalContext:
    """What a metric may use: the run's models and data, the evaluation seed and options.

    `options`: n (sample count overriding each protocol's default), inception_weights,
    inception_unverified, device, batch_size, progress.
    """

    cfg: Any  # gankit.config.Config
    data: DataSource
    models: RunModels  # per-class runs: one pair per class, see `fake`
    seed: int = 0
    floor: bool = False
    options: dict = field(default_factory=dict)
    cache: dict = field(default_factory=dict)

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict, *, path: str | Path | None = None, **kwargs: Any
    ) -> EvalContext:
        """The context of a loaded checkpoint (`load_checkpoint`): its config, training data source
        and models. `path` names the file in errors; kwargs: seed, floor, options."""
        models = RunModels.from_checkpoint(ckpt, path=path)
        return cls(models.cfg, data_from_config(models.cfg), models, **kwargs)

    @classmethod
    def from_models(cls, models: RunModels, data: DataSource, **kwargs: Any) -> EvalContext:
        """The context of live models (e.g. inside training) and their data source. The device
        defaults to the models' own, so evaluating never moves a model that is being trained."""
        options = dict(kwargs.pop("options", None) or {})
        if not options.get("device"):
            G = next(iter(models.pairs.values()))[0]
            options["device"] = str(next(G.parameters()).device)
        return cls(models.cfg, data, models, options=options, **kwargs)

    def n(self, default: int) -> int:
        n = self.options.get("n")
        if n is not None and n < 1:
            raise GankitError(f"--n must be >= 1, got {n}")
        return n or default

    @property
    def device(self) -> torch.device:
        return get_device(self.options.get("device") or "auto")

    @property
    def classes(self) -> list[int]:
        return self.models.classes

    def fake(self, n: int) -> tuple[Tensor, Tensor | None]:
        """n generated samples (N, *shape) on the CPU and their requested classes (N,) or None.

        Noise comes from the evaluation stream of `seed`, classes uniformly from the model's classes, so
        the same models and seed give the same samples. With `floor`, n real training images instead.
        """
        key = ("fake", n)
        if key not in self.cache:
            if not self.floor:
                self.cache[key] = self._generate(n)
            elif self._subset():
                self.cache[key] = self._of_classes("train", n)
            else:
                self.cache[key] = self.data.train_fixed(n, self.seed)
        return self.cache[key]

    def _subset(self) -> bool:
        """Per-class runs trained on some classes only (train.classes) are compared with those."""
        return bool(self.models.per_class and self.cfg.train.classes)

    def _of_classes(self, split: str, n: int) -> tuple[Tensor, Tensor]:
        """min(n, available) images of `split` whose label is one of the model's classes, chosen by seed."""
        import numpy as np

        from gankit.data.images import gather, to_float

        imgs = self.data.images
        x, y = (
            (imgs.train, imgs.train_labels) if split == "train" else (imgs.test, imgs.test_labels)
        )
        idx = torch.from_numpy(np.flatnonzero(np.isin(np.asarray(y), self.classes)))
        idx = idx[
            torch.randperm(len(idx), generator=make_generator(self.seed, "classes", split))[:n]
        ]
        return to_float(gather(x, idx)), torch.from_numpy(np.asarray(y, dtype=np.int64))[idx]

    def _generate(self, n: int) -> tuple[Tensor, Tensor | None]:
        from tqdm.auto import tqdm

        from gankit.sample import generate, sample_z

        g, m = make_generator(self.seed, "eval"), self.cfg.model
        z = sample_z(n, m.z_dim, m.z_dist, g)
        classes = self.classes
        labels = (
            torch.tensor(classes)[torch.randint(len(classes), (n,), generator=g)]
            if classes
            else None
        )
        bs = self.options.get("batch_size") or 500
        bar = dict(desc=f"sampling {n}", leave=False, disable=not self.options.get("progress"))
        if not self.models.per_class:  # in chunks of bs, as generate() itself would: same numbers
            G = self.models.generator().to(self.device)
            out = [generate(G, z[i : i + bs], None if labels is None else labels[i : i + bs], bs)
                   for i in tqdm(range(0, n, bs), **bar)]  # fmt: skip
            return torch.cat(out), labels
        x = None
        for k in tqdm(classes, **bar):  # each class's samples from its own pair
            G = self.models.generator(k).to(self.device)
            rows = (labels == k).nonzero().squeeze(1)
            out = generate(G, z[rows], None, bs)
            x = out.new_empty(n, *out.shape[1:]) if x is None else x
            x[rows] = out
        return x, labels

    def real(self, n: int) -> tuple[Tensor, Tensor | None]:
        """min(n, M) real test images (or fresh toy points) and their labels: the reference split."""
        key = ("real", n)
        if key not in self.cache:
            self.cache[key] = (
                self._of_classes("test", n)
                if self._subset()
                else self.data.held_out_labeled(n, self.seed)
            )
        return self.cache[key]


def default_metrics(data: DataSource, per_class: bool = False) -> list[str]:
    """The metrics `gankit eval` computes when none are asked for: the toy density's, else D's
    statistics (per-class checkpoints, which hold one D per class: the Parzen log-likelihood)."""
    toy_metrics = list(data.density.metrics) if isinstance(data, ToySource) else []
    return toy_metrics or (["parzen"] if per_class else ["dstats"])


def evaluate(ctx: EvalContext, name: str) -> dict[str, Any]:
    """The record of one metric: its values and protocol, plus the seed and whether it is a --floor figure."""
    fn = lookup(METRICS, name, "metric")
    t0 = time.perf_counter()
    with torch.no_grad():
        values = fn(ctx)
    seconds = round(time.perf_counter() - t0, 2)
    return {"metric": name, **values, "seed": ctx.seed, "floor": ctx.floor, "seconds": seconds}


def load_run(
    path: str | Path,
) -> tuple[Path | None, dict, Any, Any, torch.nn.Module, torch.nn.Module]:
    """(run_dir, checkpoint dict, config, data source, G, D) for a run directory or checkpoint."""
    run_dir, ckpt_path = resolve(path)
    ckpt = load_checkpoint(ckpt_path)
    models = RunModels.from_checkpoint(ckpt, path=ckpt_path)
    data = data_from_config(models.cfg)
    G, D = models.generator(), models.discriminator()
    return run_dir, ckpt, models.cfg, data, G, D


def eval_run(
    path: str | Path,
    metrics: list[str] | None = None,
    n: int | None = None,
    seed: int | None = None,
    *,
    floor: bool = False,
    options: dict | None = None,
) -> list[dict[str, Any]]:
    """Evaluate a run's last checkpoint (or a checkpoint file) under each metric's protocol.

    Records carry their protocol (n_fake, n_real, reference split, seed, extractor and weights hash,
    gankit version) and are appended to the run's eval.jsonl (a warning when it cannot be written).
    `n` overrides each metric's sample count; `floor` evaluates real training images in place of
    generated ones. `options`: see EvalContext.
    """
    run_dir, ckpt_path = resolve(path)
    ctx = EvalContext.from_checkpoint(
        load_checkpoint(ckpt_path), path=ckpt_path, floor=floor, options={**(options or {}), "n": n}
    )
    cfg = ctx.cfg
    ctx.seed = cfg.eval.seed if seed is None else seed
    names = metrics or cfg.eval.metrics or default_metrics(ctx.data, ctx.models.per_class)
    for name in names:  # every name checked before hours of computing
        lookup(METRICS, name, "metric")
    records = []
    log_to = RunLayout(run_dir).evals if run_dir is not None else None
    for name in names:  # each record kept as soon as it is computed: a later failure loses nothing
        r = evaluate(ctx, name)
        r.update(step=ctx.models.step, dataset=cfg.data.name, checkpoint=str(ckpt_path),
                 gankit_version=__version__, time=time.strftime("%Y-%m-%dT%H:%M:%S"))  # fmt: skip
        if log_to is not None:
            try:
                append_jsonl(r, log_to)
            except OSError as e:  # a read-only or full run directory: the numbers are still good
                import logging

                logging.getLogger(__name__).warning(
                    "could not append to %s: %s; results printed only", log_to, e
                )
                log_to = None  # one warning, not one per metric
        records.append(r)
    return records
