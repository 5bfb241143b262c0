"""The trainer: `train()`, one loop for every mode.

The loop drives a dict of pairs (`gankit.pair.Pair`: one for an ordinary run, one per class for
`train.per_class`) from a schedule (`gankit.schedule`) that says which pair takes which batch at each
step of the run's clock. Logging windows, NaN checks, snapshots and D-statistics (`gankit.observe`),
live diagnoses, checkpoints, signals, tracking and `time_s` are written once, here. Batch `i` of the
run is a function of `(seed, i)`, and every RNG state is checkpointed, so a resumed run is
bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from gankit.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from gankit.config import Config, TrackConfig, to_dict, to_yaml
from gankit.data import DataSource, data_from_config
from gankit.distributed import (
    World,
    all_reduce_sum,
    any_rank,
    broadcast_error,
    broadcast_object,
    check_batch,
    env_world,
    setup,
    teardown,
)
from gankit.layout import RunLayout
from gankit.observe import RunLog, ckpt_step, probes_for
from gankit.pair import LOG_KEYS, Pair, build_pair, choose_update, data_mean
from gankit.rundir import RunLock, check_new_run_dir, check_resume_config, record_env, truncate_log
from gankit.schedule import ClassRouting, Stream, keep_freed_memory, schedule_for
from gankit.track import open_tracker
from gankit.utils import (
    GankitError,
    amp_dtype,
    get_device,
    write_atomic_text,
)

log = logging.getLogger(__name__)
SHORT_RUN = 500  # image runs whose pairs take fewer steps get a warning: DCGANs need thousands


class NonFiniteLossError(GankitError):
    """A loss became NaN or infinite."""


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
        if self.signum == signal.SIGINT == signum:  # a second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = self.signum or signum  # (torchrun follows a Ctrl-C with SIGTERM)

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def nonfinite_error(
    key: str, value: float, first: int, step: int, good: str, who: str = ""
) -> NonFiniteLossError:
    """The one-line error for a loss that became NaN/inf between steps `first` and `step`; `good`
    names the last good checkpoint."""
    return NonFiniteLossError(
        f"{who}{key} became {value} between steps {first} and {step}; stopped without saving "
        f"(last good checkpoint: {good}); lower optim.lr_d/lr_g or try another loss.name"
    )


def interrupted(
    signum: int, step: int, last: Path, saved: bool = True, main: bool = True
) -> TrainingInterrupted:
    name = signal.Signals(signum).name
    if not main:  # rank 0 reports the checkpoint
        return TrainingInterrupted(f"{name} at step {step}: stopped with rank 0", signum)
    if not saved:  # a train.stop_on diagnosis held: the checkpoint from before it is kept
        return TrainingInterrupted(
            f"{name} at step {step}: not saved while a train.stop_on diagnosis holds; {last} "
            f"keeps {ckpt_step(last)}; continue with --resume", signum
        )  # fmt: skip
    return TrainingInterrupted(
        f"{name} at step {step}: checkpoint saved to {last}; continue with --resume", signum
    )


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
    directory is locked while training, so a second writer fails at once (gankit.rundir). Under
    torchrun (or `gankit train --nproc N`) every process calls this with the same arguments; they
    share each step (gankit.distributed) and rank 0 alone writes the run directory.
    """
    world = env_world()
    check_batch(cfg.data.batch_size, world)
    device = setup(get_device(cfg.train.device), world)
    layout = RunLayout(run_dir)
    try:
        with contextlib.ExitStack() as stack:

            def claim() -> None:
                if resume and not layout.last.is_file():
                    raise GankitError(
                        f"--resume: no checkpoint in {layout.checkpoints} to continue from"
                    )
                stack.enter_context(RunLock(layout.root))
                if not resume:
                    check_new_run_dir(layout.root)

            on_main(world, claim)
            return _train(cfg, layout, resume, world, device)
    finally:
        teardown(world)


def on_main(world: World, fn: Callable[[], Any]) -> Any:
    """`fn()` on rank 0 (the writer), its result there and None elsewhere; a GankitError there stops
    every rank at the same step, the others with rank 0's message."""
    if world.size == 1:
        return fn()
    error, out = None, None
    if world.main:
        try:
            out = fn()
        except GankitError as e:
            error = e
    message = broadcast_error(None if error is None else str(error), world)
    if error is not None:
        raise error
    if message is not None:
        raise GankitError(f"rank 0 stopped the run: {message}")
    return out


def _warn_short(cfg: Config, data: DataSource, sched: Stream | ClassRouting) -> None:
    """Warn when the pairs of an image run take too few steps to learn anything."""
    pair_steps = sched.pair_steps
    if len(data.shape) != 3 or pair_steps >= SHORT_RUN:
        return
    per = (
        f" ({cfg.train.epochs} epochs of {data.batches_per_epoch} batches)"
        if cfg.train.epochs
        else ""
    )
    each = " per pair" if len(sched.keys) > 1 else ""
    log.warning(
        "only %d steps%s%s: far too few for a GAN to learn images (expect grey or noisy "
        "samples); ask for thousands, e.g. --set train.steps=5000",
        pair_steps, each, per,
    )  # fmt: skip


def _restore(cfg: Config, layout: RunLayout, pairs: dict, world: World) -> int:
    """Restore checkpoints/last.pt into every rank's pairs (rank 0 reads it and sends it to the
    others) and drop the log lines written after it, which will be recomputed identically; returns
    its step."""

    def read() -> dict:
        # on the CPU: RNG states must be CPU byte tensors; load_state_dict moves weights to the device
        ckpt = load_checkpoint(layout.last)
        check_resume_config(ckpt["config"], cfg)
        if {e["key"] for e in ckpt["pairs"]} != set(pairs):
            raise GankitError(f"--resume: {layout.last} holds other pairs than this config trains")
        truncate_log(layout, ckpt["step"])
        return ckpt

    ckpt = broadcast_object(on_main(world, read), world)
    entries = {e["key"]: e for e in ckpt["pairs"]}
    for k, pair in pairs.items():
        pair.load_state_dict(entries[k], cfg)
    set_rng_state(ckpt["rng"])
    if world.main:
        log.info("resumed %s at step %d", layout.root, ckpt["step"])
    return ckpt["step"]


def _lay_out(cfg: Config, layout: RunLayout, probes: Any) -> None:
    """A new run directory: config.yaml before the first step, empty logs, reals.png."""
    for d in (layout.checkpoints, layout.samples, layout.plots):
        d.mkdir(parents=True, exist_ok=True)
    write_atomic_text(layout.config, to_yaml(cfg))
    layout.metrics.touch()
    layout.evals.touch()
    probes.reals_grid(layout.reals)


def _train(
    cfg: Config, layout: RunLayout, resume: bool, world: World, device: torch.device
) -> Trained:
    """`train` in a locked run directory: build, restore or lay out, then `_loop`."""
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    data = data_from_config(cfg).to(device)
    sched = schedule_for(cfg, data)
    if len(sched.keys) > 1 and device.type == "cpu":
        keep_freed_memory()
    if world.main:
        _warn_short(cfg, data, sched)
    mean = data_mean(cfg, data)
    pairs = {k: build_pair(cfg, data.shape, device, k, world, mean) for k in sched.keys}
    # bf16 autocast needs no loss scaling; fp16 has a GradScaler (Pair.use_scaler). Choose by
    # measurement (`gankit bench dcgan`)
    dtype = amp_dtype(cfg.train.amp, device)
    if dtype == torch.float16:
        for pair in pairs.values():
            pair.use_scaler(device)
    probes = probes_for(cfg, data, sched.keys) if world.main else None
    if resume:
        clock = _restore(cfg, layout, pairs, world)
    else:
        clock = 0
        on_main(world, lambda: _lay_out(cfg, layout, probes))
    on_main(world, lambda: record_env(layout, cfg, device, clock if resume else None))
    why_not = [choose_update(p, cfg) for p in pairs.values()][0]
    log.info("fast MLP step: %s", "on" if why_not is None else f"off ({why_not})")
    log.info("autocast: %s", dtype or "off")
    autocast = torch.autocast(device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)
    track = cfg.track if world.main else TrackConfig()  # only rank 0 mirrors
    with open_tracker(layout.root, to_dict(cfg), track, resume_step=clock) as tracker:
        watch = RunLog(cfg, layout, tracker, world)
        if clock == 0:
            on_main(
                world,
                lambda: watch.record({"step": 0, **probes.snapshot(pairs, 0, layout.samples)}),
            )
        clock = _loop(cfg, layout, pairs, sched, probes, watch, autocast, clock, data.shape)
    return Trained(pairs, clock)


def _window(acc: Tensor, counts: list[int], keys: list, s: int, good: Callable[[], str]) -> dict:
    """metrics.jsonl fields of a log window: the means over its steps (per-class runs: over all
    pair-steps, plus per-class lists, None for a class without steps in the window). Raises
    NonFiniteLossError naming the diverged pair; `good()` names the last good checkpoint."""
    if keys == [None]:  # float32 means, as the single pair has always logged them
        rows = [(acc[0] / counts[0]).tolist()]
    else:
        sums = acc.tolist()  # the one host sync per window
        rows = [[v / n if n else None for v in row] for row, n in zip(sums, counts, strict=True)]
    for k, row, n in zip(keys, rows, counts, strict=True):
        for name, v in zip(LOG_KEYS, row, strict=True):
            if n and not math.isfinite(v):
                who = "" if k is None else f"class {k}: "
                raise nonfinite_error(name, v, s - sum(counts) + 1, s, good(), who=who)
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


def _save(checkpoint: Callable[[Path, int], None], layout: RunLayout, s: int, keep: bool) -> None:
    checkpoint(layout.last, s)
    if keep:
        checkpoint(layout.kept(s), s)


def _rank_rows(reals: list[Tensor], labels: list, world: World) -> tuple[list, list]:
    """This rank's rows of each global batch (and of its labels)."""
    if world.size == 1:
        return reals, labels
    rows = world.rows(reals[0].shape[0])
    return [r[rows] for r in reals], [None if y is None else y[rows] for y in labels]


def _loop(
    cfg: Config, layout: RunLayout, pairs: dict, sched: Any, probes: Any, watch: RunLog,
    autocast: Any, clock: int, shape: tuple[int, ...],
) -> int:  # fmt: skip
    """Steps from `clock` to the schedule's end; returns the final clock. One step: the schedule's
    batch (this rank's rows of it), its pair's update, the window sums; then, at their cadences, a
    log record (the one host sync), a snapshot, a checkpoint, and the signal check."""
    # long: the cadences of one step (log, snapshot, checkpoint, signals) read in the order they
    # happen; each is a call, and what remains is the bookkeeping that ties them to the clock
    from tqdm.auto import tqdm

    tc, steps, keys, last, world = cfg.train, sched.steps, list(pairs), layout.last, watch.world
    row = {k: i for i, k in enumerate(keys)}
    device = sched.data.device
    acc = torch.zeros(len(keys), len(LOG_KEYS), device=device)
    counts, t_log = [0] * len(keys), time.perf_counter()
    checkpoint = _checkpointer(cfg, layout, pairs, shape)
    good = (lambda: ckpt_step(last)) if world.main else (lambda: "on rank 0")  # noqa: E731
    # with several processes the stop flag is agreed on every `poll` steps (a collective)
    poll = 1 if world.size == 1 else min(tc.log_every, 10)
    bar = tqdm(total=steps, initial=clock, disable=not (tc.progress and world.main), unit="step",
               dynamic_ncols=True, mininterval=0.5)  # fmt: skip
    with _SignalGuard() as guard, bar:
        while clock < steps:
            key, reals, labels = sched.batch(clock)
            reals, labels = _rank_rows(reals, labels, world)
            out = pairs[key].update(reals, labels, cfg, clock, steps, autocast)
            acc[row[key]] += torch.stack([out[k] for k in LOG_KEYS])
            counts[row[key]] += 1
            clock += 1
            s = clock
            bar.update(1)
            stop = guard.signum is not None
            if world.size > 1:  # every rank acts on it together, at the next poll
                stop = (s % poll == 0 or s == steps) and any_rank(stop, world, device)
            is_log = s % tc.log_every == 0 or s == steps or stop
            is_ckpt = s % tc.ckpt_every == 0 or s == steps or stop
            rec = None
            if is_log or is_ckpt:
                now = time.perf_counter()
                sums = acc if world.size == 1 else all_reduce_sum(acc.clone(), world) / world.size
                rec = {"step": s, **_window(sums, counts, keys, s, good),
                       "it_s": sum(counts) / max(now - t_log, 1e-9)}  # fmt: skip
                bar.set_postfix(loss_d=f"{rec['loss_d']:.3f}", loss_g=f"{rec['loss_g']:.3f}",
                                refresh=False)  # fmt: skip
                acc.zero_()
                counts, t_log = [0] * len(keys), now
            if s % sched.sample_every == 0 or s == steps:
                snap = on_main(world, lambda s=s: probes.snapshot(pairs, s, layout.samples))
                rec = (rec or {"step": s}) | (snap or {})
            if rec is not None:
                on_main(world, lambda rec=rec: watch.record(rec))
            if is_ckpt and s == steps:
                on_main(world, lambda s=s: watch.final_check(s))
            if is_ckpt:  # not while a stop_on diagnosis holds: the last good one is kept
                keep = tc.keep_every and s % tc.keep_every == 0
                on_main(
                    world,
                    lambda s=s, keep=keep: watch.suspect or _save(checkpoint, layout, s, keep),
                )
            if stop:
                signum = guard.signum or signal.SIGTERM  # a rank the signal did not reach
                raise interrupted(signum, s, last, saved=not watch.suspect, main=world.main)
    return clock
