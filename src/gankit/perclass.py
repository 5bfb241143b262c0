"""One independent unconditional G/D pair per class ("classDCGAN"), interleaved in one process.

Routing: epoch e walks the permutation `ImageSource.epoch_indices(e)` once and appends each image
to its class's buffer; a buffer that holds `data.batch_size * optim.d_steps` images is an *event*:
that class's pair takes one `train_step` on it. Leftover partial buffers are dropped at the epoch's
end (as drop_last does), so each pair sees each image of its class at most once per epoch. The
event list is a pure function of (seed, epoch) and the run's clock is the global event counter, so
`--resume` is bit-identical on CPU. Pair k is seeded from (seed, k) alone: it trains the same
whatever subset `train.classes` selects (given a constant learning rate and no dropout, which
depend on shared state: the global step and the global RNG).

Pairs take their steps one after another, not vectorised: stacking them (torch.func vmap or grouped
convolutions) measured slower on the 2-core CPU this was written on, but a vectorised/grouped path
could pay on a GPU, where one pair's batch of 128 small images leaves most of the device idle.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gankit.checkpoint import CheckpointError, load_checkpoint, save_checkpoint, set_rng_state
from gankit.config import Config, config_from_dict, to_dict
from gankit.data import data_from_config
from gankit.data.images import gather, to_float
from gankit.metrics.dstats import d_output_stats
from gankit.models import build_models
from gankit.sample import generate, sample_z
from gankit.trainer import (
    LOG_KEYS,
    NonFiniteLossError,
    TrainState,
    _check_resume_config,
    _SignalGuard,
    build_state,
    ckpt_step,
    ema_update,
    finite_state,
    interrupted,
    new_run_dir,
    nonfinite_error,
    record_env,
    set_lr,
    train_step,
    truncate_log,
)
from gankit.utils import (
    GankitError,
    append_jsonl,
    get_device,
    make_generator,
    use_amp,
)

log = logging.getLogger(__name__)
GRID_COLUMNS = 8  # columns of the combined class grid (one row per class)


@dataclass
class PerClassState:
    """What `train_per_class` returns: the pairs and the run's clock."""

    pairs: dict[int, TrainState]  # class id -> its pair; each pair's `step` counts its own steps
    step: int = 0  # global event counter: the pair-steps of all pairs together


def epoch_events(
    perm: Tensor, labels: Tensor, classes: list[int], size: int
) -> list[tuple[int, Tensor]]:
    """The events of one epoch in firing order: (class id, (size,) training-image indices).

    Equal to walking `perm` with one buffer per class and firing a buffer when it holds `size`
    indices, without the Python walk: the j-th batch of class c fires at the position in `perm` of
    its (j + 1) * size-th image of class c.

    Args:
        perm: (N,) int64 order of the epoch's images.
        labels: (N,) int64 class of every training image.
    """
    lab = labels[perm]
    fired = []
    for c in classes:
        pos = (lab == c).nonzero().squeeze(1)  # ascending positions in perm
        pos = pos[: len(pos) // size * size].view(-1, size)
        fired += [(int(p[-1]), c, perm[p]) for p in pos]
    fired.sort(key=lambda e: e[0])
    return [(c, idx) for _, c, idx in fired]


def _check_classes(cfg: Config, data, size: int) -> tuple[list[int], Tensor]:  # noqa: ANN001
    """(the classes to train, sorted; (N,) int64 labels of the training images), or a one-line
    GankitError."""
    if cfg.model.num_classes:
        raise GankitError(
            f"train.per_class trains unconditional pairs: set model.num_classes=0 "
            f"(got {cfg.model.num_classes})"
        )
    if not getattr(data, "num_classes", 0):
        raise GankitError(
            f"train.per_class needs a labelled image dataset; {cfg.data.name!r} has no classes "
            "(a folder dataset needs >= 2 class subfolders)"
        )
    names = ", ".join(f"{i} ({n})" for i, n in enumerate(data.classes))
    bad = [c for c in cfg.train.classes if not 0 <= c < data.num_classes]
    if bad:
        raise GankitError(
            f"train.classes: {bad[0]} is not a class of {cfg.data.name!r}; choose from: {names}"
        )
    classes = sorted(set(cfg.train.classes)) or list(range(data.num_classes))
    labels = torch.from_numpy(np.asarray(data.images.train_labels, dtype=np.int64))
    counts = torch.bincount(labels, minlength=data.num_classes).tolist()
    small = [f"{c} ({counts[c]})" for c in classes if counts[c] < size]
    if small:
        raise GankitError(
            f"train.per_class: classes {', '.join(small)} have fewer training images than "
            f"data.batch_size * optim.d_steps = {size}; lower data.batch_size or leave them out "
            "of train.classes"
        )
    return classes, labels


def _build_pair(cfg: Config, c: int, shape: tuple[int, ...], device: torch.device) -> TrainState:
    """build_state for class c: models seeded from (seed, c), noise from stream (seed, "z", c)."""
    seed = make_generator(cfg.seed, "pair", c).initial_seed()
    pair = build_state(dataclasses.replace(cfg, seed=seed), shape, device)
    pair.z_gen = make_generator(cfg.seed, "z", c, device=device)
    pair.aug_gen = make_generator(cfg.seed, "augment", c, device=device)
    return pair


@dataclass
class ClassProbes:
    """Fixed inputs of the snapshots and D-output statistics, per class."""

    z: Tensor  # (sample_n, z_dim) fixed noise, the same for every class
    train: dict[int, Tensor]  # class -> (<= dstats_n, C, H, W) real-train images in [-1, 1]
    test: dict[int, Tensor]  # class -> (<= dstats_n, C, H, W) real-test images (may be empty)

    @classmethod
    def build(cls, cfg: Config, data, classes: list[int]) -> ClassProbes:  # noqa: ANN001
        m, n, imgs = cfg.model, cfg.train.dstats_n, data.images
        z = sample_z(cfg.train.sample_n, m.z_dim, m.z_dist, make_generator(cfg.seed, "fixed_noise"))

        def pick(x: np.ndarray, y: np.ndarray, c: int, split: str) -> Tensor:
            idx = torch.from_numpy(np.flatnonzero(np.asarray(y) == c))
            idx = idx[torch.randperm(len(idx), generator=make_generator(cfg.seed, split, c))[:n]]
            return to_float(gather(x, idx))

        train = {c: pick(imgs.train, imgs.train_labels, c, "train_fixed") for c in classes}
        test = {c: pick(imgs.test, imgs.test_labels, c, "held_out") for c in classes}
        return cls(z, train, test)


def _observe(state: PerClassState, probes: ClassProbes, cfg: Config, run_dir: Path) -> dict:
    """Write samples/class_K/STEP.png and the combined samples/STEP.png (one row per class, the same
    fixed-noise columns), and measure each D_k on its class's real-train, fresh fake and real-test
    images. Returns metrics.jsonl fields: per-class lists and their means under the usual keys."""
    from gankit.plots import save_grid

    m, n, step = cfg.model, cfg.train.dstats_n, state.step
    parts = ("train", "fake", "test")
    rec: dict = {f"dstat_{p}_{s}_per_class": [] for p in parts for s in ("mean", "std")}
    rows = []
    for c, pair in state.pairs.items():
        if len(probes.z):
            fake = generate(pair.G if pair.G_ema is None else pair.G_ema, probes.z)
            save_grid(fake, run_dir / "samples" / f"class_{c}" / f"{step:06d}.png")
            rows.append(fake[:GRID_COLUMNS])
        g = make_generator(cfg.seed, "dstats", c, step)  # a function of the step: resume-exact
        fresh = generate(pair.G, sample_z(n, m.z_dim, m.z_dist, g))
        for part, x in (("train", probes.train[c]), ("fake", fresh), ("test", probes.test[c])):
            stats = d_output_stats(pair.D, x) if len(x) else {"mean": None, "std": None}
            for s in ("mean", "std"):
                rec[f"dstat_{part}_{s}_per_class"].append(stats[s])
    if rows:
        save_grid(torch.cat(rows), run_dir / "samples" / f"{step:06d}.png", nrow=len(rows[0]))
    for key, values in list(rec.items()):  # means over the classes that have data, for the plots
        known = [v for v in values if v is not None]
        if known:
            rec[key.removesuffix("_per_class")] = sum(known) / len(known)
    return rec


def _save(
    path: Path, state: PerClassState, cfg: Config, shape: tuple[int, ...], gens: dict
) -> None:
    """One checkpoint holding every pair: keys "G/K", "D/K", "G_ema/K", "opt_g/K", "opt_d/K".
    Never written when a pair's weights or Adam moments became NaN/inf (NonFiniteLossError)."""
    bad = [c for c, p in state.pairs.items() if not finite_state(p)]
    if bad:
        raise NonFiniteLossError(
            f"class {bad[0]}: weights or Adam moments became non-finite by step {state.step}; "
            f"stopped without saving (last good checkpoint: {ckpt_step(path)}); lower "
            "optim.lr_d/lr_g"
        )
    models: dict[str, nn.Module | None] = {}
    opts: dict[str, torch.optim.Optimizer] = {}
    for c, p in state.pairs.items():
        models |= {f"G/{c}": p.G, f"D/{c}": p.D, f"G_ema/{c}": p.G_ema}
        opts |= {f"opt_g/{c}": p.opt_g, f"opt_d/{c}": p.opt_d}
    extra = {"data_shape": list(shape), "per_class": list(state.pairs),
             "pair_steps": [p.step for p in state.pairs.values()]}  # fmt: skip
    save_checkpoint(path, step=state.step, config=to_dict(cfg), models=models, optimizers=opts,
                    generators=gens, extra=extra)  # fmt: skip


def _restore(state: PerClassState, ckpt: dict, gens: dict) -> None:
    for (c, p), n in zip(state.pairs.items(), ckpt["pair_steps"], strict=True):
        p.G.load_state_dict(ckpt[f"G/{c}"])
        p.D.load_state_dict(ckpt[f"D/{c}"])
        if p.G_ema is not None:
            p.G_ema.load_state_dict(ckpt[f"G_ema/{c}"])
        p.opt_g.load_state_dict(ckpt[f"opt_g/{c}"])
        p.opt_d.load_state_dict(ckpt[f"opt_d/{c}"])
        p.step = n
    state.step = ckpt["step"]
    set_rng_state(ckpt["rng"], gens)


def _open_run_dir(
    run_dir: Path, cfg: Config, state: PerClassState, probes: ClassProbes, gens: dict, resume: bool
) -> None:
    """Restore checkpoints/last.pt (dropping the log lines written after it, which will be
    recomputed identically), or lay out a new run directory with reals.png, one row per class."""
    if resume:
        # on the CPU: RNG states must be CPU byte tensors; load_state_dict moves the weights
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        _check_resume_config(ckpt["config"], cfg)
        _restore(state, ckpt, gens)
        truncate_log(run_dir, state.step)
        log.info("resumed %s at step %d", run_dir, state.step)
        return
    from gankit.plots import save_grid

    new_run_dir(run_dir, cfg)
    ncol = min(GRID_COLUMNS, *(len(x) for x in probes.train.values()))
    reals = torch.cat([x[:ncol] for x in probes.train.values()])
    save_grid(reals, run_dir / "reals.png", nrow=ncol)


def _window(acc: Tensor, counts: list[int], classes: list[int], s: int, last: Path) -> dict:
    """metrics.jsonl fields of a log window: means over all pair-steps, and per-class lists (None
    for a class without steps in the window). Raises NonFiniteLossError naming a diverged class."""
    sums = acc.tolist()  # the one host sync per window
    per = [[v / n if n else None for v in row] for row, n in zip(sums, counts, strict=True)]
    for c, row, n in zip(classes, per, counts, strict=True):
        for k, v in zip(LOG_KEYS, row, strict=True):
            if n and not math.isfinite(v):
                raise nonfinite_error(k, v, s - sum(counts) + 1, s, last, who=f"class {c}: ")
    total = sum(counts)
    rec = {k: sum(r[i] for r in sums) / total for i, k in enumerate(LOG_KEYS)}
    return rec | {f"{k}_per_class": [r[i] for r in per] for i, k in enumerate(LOG_KEYS)}


def _keep_freed_memory() -> None:
    """Stop glibc from handing freed heap memory back to the OS after every step (process-wide).

    Each step frees and re-allocates its activations and gradients; with ten pairs' long-lived
    tensors interleaved on the heap, glibc trims the heap top and the next step page-faults it back
    in (system time): a one-pass MNIST run took 1.14-1.22x the single pair's time per image, and
    0.99-1.02x with these settings (`gankit bench per_class`, 2-core CPU). Up to 1 GiB of freed
    memory stays mapped; a no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 * 2**20)  # the upper end of glibc's own dynamic threshold
    mallopt(m_trim_threshold, 2**30)


def train_per_class(cfg: Config, run_dir: str | Path, resume: bool = False) -> PerClassState:
    """Train (or resume) one unconditional pair per class of `cfg.train.classes` ([] = all), in
    run_dir's usual layout; `train.epochs` counts passes over the data, `train.steps` and every
    cadence count global events (pair-steps)."""
    run_dir = Path(run_dir)
    last, tc = run_dir / "checkpoints" / "last.pt", cfg.train
    if tc.threads:
        torch.set_num_threads(tc.threads)
    device = get_device(tc.device)
    if device.type == "cpu":
        _keep_freed_memory()
    data = data_from_config(cfg).to(device)
    size = cfg.data.batch_size * cfg.optim.d_steps  # images of one event
    classes, labels = _check_classes(cfg, data, size)
    counts = torch.bincount(labels, minlength=data.num_classes)
    per_epoch = sum(int(counts[c]) // size for c in classes)
    steps = tc.epochs * per_epoch if tc.epochs else tc.steps
    sample_every = tc.sample_every or per_epoch
    state = PerClassState({c: _build_pair(cfg, c, data.shape, device) for c in classes})
    probes = ClassProbes.build(cfg, data, classes)
    gens = {f"z/{c}": p.z_gen for c, p in state.pairs.items()}
    if cfg.train.augment:  # checkpointed only when used: older checkpoints keep loading
        gens |= {f"augment/{c}": p.aug_gen for c, p in state.pairs.items()}
    _open_run_dir(run_dir, cfg, state, probes, gens, resume)
    record_env(run_dir, cfg, device, state.step if resume else None)
    if tc.compile:
        for p in state.pairs.values():
            p.G.compile()
            p.D.compile()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp(tc.amp, device))
    if state.step == 0:
        append_jsonl(
            {"step": 0, **_observe(state, probes, cfg, run_dir)}, run_dir / "metrics.jsonl"
        )

    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=state.step, disable=not tc.progress, unit="step",
               dynamic_ncols=True, mininterval=0.5)  # fmt: skip
    row = {c: i for i, c in enumerate(classes)}
    acc = torch.zeros(len(classes), len(LOG_KEYS), device=device)  # per-class sums of the window
    n_acc = [0] * len(classes)
    epoch, events, t_log = -1, [], time.perf_counter()
    with _SignalGuard() as guard, bar:
        while state.step < steps:
            e, j = divmod(state.step, per_epoch)
            if e != epoch:
                epoch, events = e, epoch_events(data.epoch_indices(e), labels, classes, size)
            c, idx = events[j]
            pair = state.pairs[c]
            set_lr(pair, cfg, state.step, steps)  # of the global step: resume-exact
            x = to_float(gather(data.images.train, idx).to(device))  # uint8 moved, float on device
            memory = torch.channels_last if tc.channels_last else torch.contiguous_format
            reals = [r.contiguous(memory_format=memory) for r in x.split(cfg.data.batch_size)]
            with autocast:
                out = train_step(pair, reals, [None] * len(reals), cfg)
            if pair.G_ema is not None:
                ema_update(pair.G_ema, pair.G, tc.ema_decay)
            acc[row[c]] += torch.stack([out[k] for k in LOG_KEYS])
            n_acc[row[c]] += 1
            state.step += 1
            s = state.step
            bar.update(1)
            stop = guard.signum is not None
            is_log = s % tc.log_every == 0 or s == steps or stop
            is_ckpt = s % tc.ckpt_every == 0 or s == steps or stop
            rec = None
            if is_log or is_ckpt:
                rec = _window(acc, n_acc, classes, s, last)
                now = time.perf_counter()
                rec = {"step": s, **rec, "it_s": sum(n_acc) / max(now - t_log, 1e-9)}
                acc.zero_()
                n_acc, t_log = [0] * len(classes), now
            if s % sample_every == 0 or s == steps:
                rec = (rec or {"step": s}) | _observe(state, probes, cfg, run_dir)
            if rec is not None:
                append_jsonl(rec, run_dir / "metrics.jsonl")
            if is_ckpt:
                _save(last, state, cfg, data.shape, gens)
                if tc.keep_every and s % tc.keep_every == 0:
                    _save(
                        run_dir / "checkpoints" / f"step_{s:06d}.pt", state, cfg, data.shape, gens
                    )
            if stop:
                raise interrupted(guard.signum, s, last)
    return state


def pair_classes(ckpt: dict) -> list[int]:
    """The class ids of the pairs a loaded per-class checkpoint holds."""
    if "per_class" not in ckpt:
        raise CheckpointError(
            "not a per-class checkpoint (train.per_class=false); use gankit.checkpoint.load_models"
        )
    return list(ckpt["per_class"])


def load_pair(ckpt: dict, k: int) -> tuple[nn.Module, nn.Module]:
    """(G_k, D_k) of class k rebuilt from a loaded per-class checkpoint (CPU, train mode).

    G_k holds G_ema's weights when the run kept a moving average (train.ema_decay > 0), as
    `gankit.checkpoint.load_models` does for ordinary runs.
    """
    classes = pair_classes(ckpt)
    if k not in classes:
        raise CheckpointError(
            f"class {k} has no pair in this checkpoint; choose from: {', '.join(map(str, classes))}"
        )
    cfg = config_from_dict(ckpt["config"])
    m = cfg.model
    G, D = build_models(m.name, m.z_dim, tuple(ckpt["data_shape"]), 0, m.g, m.d)
    ema = ckpt.get(f"G_ema/{k}")
    G.load_state_dict(ema if ema is not None else ckpt[f"G/{k}"])
    D.load_state_dict(ckpt[f"D/{k}"])
    return G, D
