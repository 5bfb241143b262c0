"""`gankit bench per_class`: one pass over MNIST's training set by the per-class trainer (10
independent pairs, `train.per_class=true`) against one unconditional pair making the same pass, in
one run on the same CPU threads.

Both sides are gankit's `train()` on the dcgan_mnist preset (28 px, ngf = ndf = 64, batch 128,
channels_last). Each per-class pair sees each image of its class once, so both sides train on about
the same images with the same FLOPs (MNIST: 463 pair-steps against 468 steps; the per-class pass
drops up to 127 leftover images per class). Images/s normalises the difference.

Timed: the training loop, i.e. the sum of the log windows of metrics.jsonl (every step, its data
gathering and the log lines; not model building, snapshots or checkpoints). The dataset cache is
built before timing. The sides take turns in chunks of CHUNK steps (each chunk resumes the side's
run exactly), and the headline `ratio` is the median over chunks of per-class time per step over
that of the single-pair chunk run just before it, so other work sharing the CPU for part of the run
skews few chunks (the ratio of the totals is printed too). The per-class trainer raises glibc's
heap trim threshold for the process (see `gankit.schedule.keep_freed_memory`), so single-pair
chunks after the first run with it too. The default is the full pass; `--steps N` times only the
first N steps of each side.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from gankit.layout import RunLayout
from gankit.utils import cpu_model, read_jsonl

BATCH, WIDTH = 128, 64
CHUNK = 50  # steps per turn
SIDES = {"single pair": [], "per-class (10 pairs)": ["train.per_class=true"]}


def loop_seconds(metrics: Path) -> tuple[float, int]:
    """(seconds, steps) of the training loop: the sum of the log windows' durations."""
    rows = sorted((r for r in read_jsonl(metrics) if "it_s" in r), key=lambda r: r["step"])
    seconds, prev = 0.0, 0
    for r in rows:
        seconds += (r["step"] - prev) / r["it_s"]
        prev = r["step"]
    return seconds, prev


def _config(root: Path, extra: list[str], steps: int):  # noqa: ANN202 (a Config)
    from gankit.config import load_config

    overrides = [f"data.root={root}", "data.img_size=28", f"data.batch_size={BATCH}",
                 f"model.g.ngf={WIDTH}", f"model.d.ndf={WIDTH}", "train.epochs=0",
                 f"train.steps={steps}", "train.progress=false", "train.sample_every=0",
                 "train.ckpt_every=100000", *extra]  # fmt: skip
    return load_config("dcgan_mnist", overrides)


def one_pass(root: Path, extra: list[str]) -> int:
    """Steps of one pass over the training set (building the dataset cache if needed)."""
    from gankit.data import data_from_config

    cfg = _config(root, extra, 1)
    data = data_from_config(cfg)
    if not cfg.train.per_class:
        return data.batches_per_epoch
    return int((np.bincount(data.images.train_labels) // BATCH).sum())


def alternate(root: Path, totals: dict[str, int], tmp: Path) -> tuple[dict, dict]:
    """Train the sides in turns of CHUNK steps up to `totals`, in tmp/SIDE; returns each side's
    seconds per step of every chunk and its wall time of the train() calls (restarts included)."""
    from gankit.trainer import train

    done, wall = dict.fromkeys(SIDES, 0), dict.fromkeys(SIDES, 0.0)
    chunks: dict[str, list[float]] = {side: [] for side in SIDES}
    while any(done[side] < totals[side] for side in SIDES):
        for side, extra in SIDES.items():
            if done[side] < totals[side]:
                before = loop_seconds(RunLayout(tmp / side).metrics)
                resume, done[side] = done[side] > 0, min(done[side] + CHUNK, totals[side])
                t0 = time.perf_counter()
                train(_config(root, extra, done[side]), tmp / side, resume=resume)
                wall[side] += time.perf_counter() - t0
                after = loop_seconds(RunLayout(tmp / side).metrics)
                chunks[side].append((after[0] - before[0]) / (after[1] - before[1]))
    return chunks, wall


def run(args: argparse.Namespace) -> dict:
    root = Path(args.data_root or os.environ.get("GANKIT_DATA", "data"))
    threads = torch.get_num_threads()
    print(f"cpu: {cpu_model()} ({threads} torch threads), torch {torch.__version__}, batch {BATCH}")
    what = f"first {args.steps} steps" if args.steps else "one pass over the 60,000 training images"
    print(f"workload: {what}, 28 px DCGAN (ngf = ndf = {WIDTH}), fp32, channels_last")
    load0 = os.getloadavg()[0]
    totals = {side: one_pass(root, extra) for side, extra in SIDES.items()}
    if args.steps:
        totals = {side: min(n, args.steps) for side, n in totals.items()}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        chunks, wall = alternate(root, totals, Path(tmp))
        for side in SIDES:
            seconds, steps = loop_seconds(RunLayout(Path(tmp) / side).metrics)
            img_s = steps * BATCH / seconds
            results[side] = {"steps": steps, "loop_s": seconds, "img_s": img_s,
                             "train_calls_wall_s": wall[side]}  # fmt: skip
            print(f"{side}: {steps} steps, loop {seconds:.1f} s ({img_s:,.0f} img/s); "
                  f"train() calls {wall[side]:.1f} s with restarts")  # fmt: skip
    load1 = os.getloadavg()[0]
    shared = " (above the core count: other work shared the CPU)" if load0 > os.cpu_count() else ""
    print(
        f"load average (1 min) before/after: {load0:.1f}/{load1:.1f} on {os.cpu_count()} cores{shared}"
    )
    single, per = results.values()
    total_ratio = (
        single["img_s"] / per["img_s"]
    )  # per image: the images each side drops don't count
    # each per-class chunk against the single-pair chunk run just before it: robust to load changes
    paired = [b / a for a, b in zip(*chunks.values(), strict=False)]
    ratio = float(np.median(paired))
    print(f"per-chunk ratios: {' '.join(f'{r:.2f}' for r in paired)}")
    print(f"ratio: {ratio:.2f}x (per-class / single-pair loop time per image: median of "
          f"{len(paired)} paired chunks; ratio of the totals {total_ratio:.2f}x)")  # fmt: skip
    result = {"cpu": cpu_model(), "torch": torch.__version__, "threads": threads,
              "chunk": CHUNK, "load_avg": [load0, load1], **results, "paired_ratios": paired,
              "ratio": ratio, "ratio_of_totals": total_ratio}  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result
