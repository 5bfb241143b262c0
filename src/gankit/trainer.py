"""The trainer: `train()`, one loop for every mode.

The loop drives a dict of pairs (`gankit.pair.Pair`: one for an ordinary run, one per class for
`train.per_class`) from a schedule (`gankit.schedule`) that says which pair takes which batch at each
step of the run's clock. Logging windows, NaN checks, snapshots and D-statistics (`gankit.observe`),
live diagnoses, checkpoints, signals, tracking and `time_s` are written once, here. Batch `i` of the
run is a function of `(seed, i)`, and every RNG state is checkpointed, so a resumed run is
bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gankit.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from gankit.config import Config, to_dict, to_yaml
from gankit.data import data_from_config
from gankit.diagnose import describe, persistent
from gankit.layout import RunLayout
from gankit.observe import probes_for
from gankit.pair import LOG_KEYS, Pair, build_pair, choose_update
from gankit.rundir import RunLock, check_new_run_dir, check_resume_config, record_env, truncate_log
from gankit.schedule import keep_freed_memory, schedule_for
from gankit.track import open_tracker
from gankit.utils import (
    GankitError,
    append_jsonl,
    get_device,
    read_jsonl,
    use_amp,
    write_atomic_text,
)

log = logging.getLogger(__name__)
SHORT_RUN = 500  # image runs whose pairs take fewer steps get a warning: DCGANs need thousands


class NonFiniteLossError(GankitError):
    """A loss became NaN or infinite."""


class DiagnosedStop(GankitError):
    """A diagnosis listed in train.stop_on held at two snapshots in a row; the run stopped."""


class TrainingInterrupted(GankitError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved. `signum` gives the exit code 128 + signum."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class _SignalGuard:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


class _SignalGuard:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def nonfinite_error(
    key: str, value: float, first: int, step: int, last: Path, who: str = ""
) -> NonFiniteLossError:
    """The one-line error for a loss that became NaN/inf between steps `first` and `step`."""
    good = ckpt_step(last)
    return NonFiniteLossError(
        f"{who}{key} became {value} between steps {first} and {step}; stopped without saving "
        f"(last good checkpoint: {good}); lower optim.lr_d/lr_g or try another loss.name"
    )


def interrupted(signum: int, step: int, last: Path, saved: bool = True) -> TrainingInterrupted:
    name = signal.Signals(signum).name
    if not saved:  # a train.stop_on diagnosis held: the checkpoint from before it is kept
        return TrainingInterrupted(
            f"{name} at step {step}: not saved while a train.stop_on diagnosis holds; {last} "
            f"keeps {ckpt_step(last)}; continue with --resume", signum
        )  # fmt: skip
    return TrainingInterrupted(
        f"{name} at step {step}: checkpoint saved to {last}; continue with --resume", signum
    )


def ckpt_step(path: Path) -> str:
    """'step N' of the checkpoint at `path`, or 'none'."""
    return f"step {load_checkpoint(path)['step']}" if path.exists() else "none"


@dataclass
class Trained:
    """What `train` returns: the pairs (key None for an ordinary run, class ids for per-class runs)
    and the run's clock. `G`, `D`, `G_ema` are the one pair's of an ordinary run."""

    pairs: dict[int | None, Pair]
    step: int

    @property
    def pair(self) -> Pair:
        if None not in self.pairs:
            raise GankitError("a per-class run has one pair per class: use .pairs[k]")
        return self.pairs[None]

    G = property(lambda self: self.pair.G)
    D = property(lambda self: self.pair.D)
    G_ema = property(lambda self: self.pair.G_ema)


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> Trained:
    """Run (or resume) training; writes config, metrics.jsonl, snapshots and checkpoints in run_dir.

    A new run refuses a directory that holds another run (`resume=True` continues it); the
    directory is locked while training, so a second writer fails at once (gankit.rundir).
    """
    layout = RunLayout(run_dir)
    if resume and not layout.last.is_file():
        raise GankitError(f"--resume: no checkpoint in {layout.checkpoints} to continue from")
    with RunLock(layout.root):
        if not resume:
            check_new_run_dir(layout.root)
        return _train(cfg, layout, resume)


def _warn_short(cfg: Config, data: Any, pair_steps: int) -> None:
    if len(data.shape) != 3 or pair_steps >= SHORT_RUN:
        return
    per = (
        f" ({cfg.train.epochs} epochs of {data.batches_per_epoch} batches)"
        if cfg.train.epochs
        else ""
    )
    each = " per class" if cfg.train.per_class else ""
    log.warning(
        "only %d steps%s%s: far too few for a GAN to learn images (expect grey or noisy "
        "samples); ask for thousands, e.g. --set train.steps=5000",
        pair_steps, each, per,
    )  # fmt: skip


def _open(cfg: Config, layout: RunLayout, pairs: dict, probes: Any, resume: bool) -> int:
    """Restore checkpoints/last.pt (dropping the log lines written after it, which will be
    recomputed identically) and return its step, or lay out a new run directory (config.yaml
    before the first step) and return 0."""
    if resume:
        # on the CPU: RNG states must be CPU byte tensors; load_state_dict moves weights to the device
        ckpt = load_checkpoint(layout.last)
        check_resume_config(ckpt["config"], cfg)
        entries = {e["key"]: e for e in ckpt["pairs"]}
        if set(entries) != set(pairs):
            raise GankitError(f"--resume: {layout.last} holds other pairs than this config trains")
        for k, pair in pairs.items():
            pair.load_state_dict(entries[k], cfg)
        set_rng_state(ckpt["rng"])
        truncate_log(layout, ckpt["step"])
        log.info("resumed %s at step %d", layout.root, ckpt["step"])
        return ckpt["step"]
    for d in (layout.checkpoints, layout.samples, layout.plots):
        d.mkdir(parents=True, exist_ok=True)
    write_atomic_text(layout.config, to_yaml(cfg))
    layout.metrics.touch()
    layout.evals.touch()
    probes.reals_grid(layout.reals)
    return 0


def _train(cfg: Config, layout: RunLayout, resume: bool) -> Trained:
    """`train` in a locked run directory: build, restore or lay out, then `_loop`."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = get_device(cfg.train.device)
    data = data_from_config(cfg).to(device)
    sched = schedule_for(cfg, data)
    if len(sched.keys) > 1 and device.type == "cpu":
        keep_freed_memory()
    _warn_short(cfg, data, sched.pair_steps)
    pairs = {k: build_pair(cfg, data.shape, device, k) for k in sched.keys}
    probes = probes_for(cfg, data, sched.keys)
    clock = _open(cfg, layout, pairs, probes, resume)
    record_env(layout, cfg, device, clock if resume else None)
    why_not = [choose_update(p, cfg) for p in pairs.values()][0]
    log.info("fast MLP step: %s", "on" if why_not is None else f"off ({why_not})")
    # bfloat16 autocast: no loss scaling needed; choose it by measurement (`gankit bench dcgan`)
    amp = use_amp(cfg.train.amp, device)
    log.info("bf16 autocast: %s", "on" if amp else "off")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    with open_tracker(layout.root, to_dict(cfg), cfg.track, resume_step=clock) as tracker:
        watch = _Watch(cfg, layout, tracker)
        if clock == 0:
            watch.record({"step": 0, **probes.snapshot(pairs, 0, layout.samples)})
        clock = _loop(cfg, layout, pairs, sched, probes, watch, autocast, clock, data.shape)
    return Trained(pairs, clock)


class _Watch:
    """metrics.jsonl records (with `time_s`, mirrored to TensorBoard / W&B) and the live diagnoses:
    a warning for each new one; a train.stop_on one that holds twice in a row stops the run, and
    while one holds checkpoints are not written (the last good one is kept)."""

    def __init__(self, cfg: Config, layout: RunLayout, tracker: Any) -> None:
        self.cfg, self.layout, self.tracker = cfg, layout, tracker
        history = read_jsonl(layout.metrics)
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


def _window(acc: Tensor, counts: list[int], keys: list, s: int, last: Path) -> dict:
    """metrics.jsonl fields of a log window: the means over its steps (per-class runs: over all
    pair-steps, plus per-class lists, None for a class without steps in the window). Raises
    NonFiniteLossError naming the diverged pair."""
    if keys == [None]:  # float32 means, as the single pair has always logged them
        rows = [(acc[0] / counts[0]).tolist()]
    else:
        sums = acc.tolist()  # the one host sync per window
        rows = [[v / n if n else None for v in row] for row, n in zip(sums, counts, strict=True)]
    for k, row, n in zip(keys, rows, counts, strict=True):
        for name, v in zip(LOG_KEYS, row, strict=True):
            if n and not math.isfinite(v):
                who = "" if k is None else f"class {k}: "
                raise nonfinite_error(name, v, s - sum(counts) + 1, s, last, who=who)
    if keys == [None]:
        return dict(zip(LOG_KEYS, rows[0], strict=True))
    total = sum(counts)
    rec = {name: sum(r[i] for r in sums) / total for i, name in enumerate(LOG_KEYS)}
    return rec | {f"{name}_per_class": [r[i] for r in rows] for i, name in enumerate(LOG_KEYS)}


def _checkpointer(
    cfg: Config, layout: RunLayout, pairs: dict, shape: tuple[int, ...]
) -> Callable[[Path, int], None]:
    def checkpoint(path: Path, step: int) -> None:
        bad = [k for k, p in pairs.items() if not p.finite()]
        if bad:
            who = "" if bad[0] is None else f"class {bad[0]}: "
            raise NonFiniteLossError(
                f"{who}weights or Adam moments became non-finite by step {step}; stopped without "
                f"saving (last good checkpoint: {ckpt_step(layout.last)}); resume it with a lower "
                "optim.lr_d/lr_g"
            )
        save_checkpoint(path, step=step, config=to_dict(cfg), data_shape=shape,
                        pairs=[p.state_dict(cfg) for p in pairs.values()])  # fmt: skip

    return checkpoint


def _loop(
    cfg: Config, layout: RunLayout, pairs: dict, sched: Any, probes: Any, watch: _Watch,
    autocast: Any, clock: int, shape: tuple[int, ...],
) -> int:  # fmt: skip
    """Steps from `clock` to the schedule's end; returns the final clock. One step: the schedule's
    batch, its pair's update, the window sums; then, at their cadences, a log record (the one
    host sync), a snapshot, a checkpoint, and the signal check."""
    from tqdm.auto import tqdm

    tc, steps, keys, last = cfg.train, sched.steps, list(pairs), layout.last
    row = {k: i for i, k in enumerate(keys)}
    acc = torch.zeros(len(keys), len(LOG_KEYS), device=sched.data.device)
    counts, t_log = [0] * len(keys), time.perf_counter()
    checkpoint = _checkpointer(cfg, layout, pairs, shape)
    bar = tqdm(total=steps, initial=clock, disable=not tc.progress, unit="step",
               dynamic_ncols=True, mininterval=0.5)  # fmt: skip
    with _SignalGuard() as guard, bar:
        while clock < steps:
            key, reals, labels = sched.batch(clock)
            out = pairs[key].update(reals, labels, cfg, clock, steps, autocast)
            acc[row[key]] += torch.stack([out[k] for k in LOG_KEYS])
            counts[row[key]] += 1
            clock += 1
            s = clock
            bar.update(1)
            stop = guard.signum is not None
            is_log = s % tc.log_every == 0 or s == steps or stop
            is_ckpt = s % tc.ckpt_every == 0 or s == steps or stop
            rec = None
            if is_log or is_ckpt:
                now = time.perf_counter()
                rec = {"step": s, **_window(acc, counts, keys, s, last),
                       "it_s": sum(counts) / max(now - t_log, 1e-9)}  # fmt: skip
                bar.set_postfix(loss_d=f"{rec['loss_d']:.3f}", loss_g=f"{rec['loss_g']:.3f}",
                                refresh=False)  # fmt: skip
                acc.zero_()
                counts, t_log = [0] * len(keys), now
            if s % sched.sample_every == 0 or s == steps:
                rec = (rec or {"step": s}) | probes.snapshot(pairs, s, layout.samples)
            if rec is not None:
                watch.record(rec)
            if is_ckpt and s == steps:
                watch.final_check(s)
            if is_ckpt and not watch.suspect:
                checkpoint(last, s)
                if tc.keep_every and s % tc.keep_every == 0:
                    checkpoint(layout.kept(s), s)
            if stop:
                raise interrupted(guard.signum, s, last, saved=not watch.suspect)
    return clock
