"""`gankit bench ddp`: one process against N processes (gankit.distributed, gloo on CPU) training the
28 px DCGAN on MNIST with the same global batch of 128, in one run.

On a CPU the N processes share the machine's cores: one process runs with all T torch threads, each
of the N with T / N, so the figure says whether splitting the batch over processes beats splitting
each convolution over threads (on 2 cores it need not: the gradient all-reduce and the duplicated
per-step Python work are overhead a single process does not pay). `efficiency` is the N-process
images/s over the one-process images/s. With `--device cuda`, rank r uses GPU r and efficiency is
N-process images/s over N times the one-GPU images/s.

Images/s are of steady-state training, from rank 0's log windows (the first window, warm-up and
model build, is dropped), data loading and the all-reduces included.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from gankit.bench.dcgan import BATCH, WIDTH, mnist_raw
from gankit.layout import RunLayout
from gankit.utils import GankitError, cpu_model, read_jsonl

WINDOW = 5  # steps per log window


def _overrides(root: Path, steps: int, threads: int, device: str) -> list[str]:
    total = WINDOW + steps
    return [f"data.root={root}", "train.epochs=0", f"train.steps={total}",
            f"train.log_every={WINDOW}", f"train.sample_every={total}", f"train.ckpt_every={total}",
            "train.progress=false", f"model.g.ngf={WIDTH}", f"model.d.ndf={WIDTH}",
            f"data.batch_size={BATCH}", "train.channels_last=true", f"train.threads={threads}",
            f"train.device={device}", "train.sync_bn=true"]  # fmt: skip


def images_per_s(nproc: int, root: Path, steps: int, threads: int, device: str) -> float:
    """Steady-state images/s of `gankit train dcgan_mnist --nproc nproc`."""
    steps = -(-steps // WINDOW) * WINDOW
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        sets = [a for o in _overrides(root, steps, threads, device) for a in ("--set", o)]
        cmd = [sys.executable, "-m", "gankit", "train", "dcgan_mnist", "--run-dir", str(run), *sets]
        if nproc > 1:
            cmd[4:4] = ["--nproc", str(nproc)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise GankitError(
                f"bench ddp: {nproc}-process run failed: {done.stderr.strip()[-400:]}"
            )
        rows = [r for r in read_jsonl(RunLayout(run).metrics) if "it_s" in r]
    timed = rows[1:]
    seconds = sum(WINDOW / r["it_s"] for r in timed)
    return len(timed) * WINDOW * BATCH / seconds


def run(args: argparse.Namespace) -> dict:
    root = Path(args.data_root or os.environ.get("GANKIT_DATA", "data"))
    mnist_raw(root)
    device = getattr(args, "device", None) or "cpu"
    nproc = getattr(args, "nproc", None) or 2
    threads = torch.get_num_threads()
    if device == "cuda":
        if torch.cuda.device_count() < nproc:
            raise GankitError(
                f"bench ddp --device cuda needs {nproc} GPUs; {torch.cuda.device_count()} found"
            )
        where = f"{nproc} x {torch.cuda.get_device_name(0)}"
    else:
        where = f"{cpu_model()}, {threads} torch threads shared by the processes"
    print(
        f"device: {where}; torch {torch.__version__}, global batch {BATCH}, 28 px DCGAN (ngf = ndf = {WIDTH})"
    )
    steps = args.steps or 30
    one = images_per_s(1, root, steps, threads, device)
    print(f"1 process: {one:,.0f} img/s")
    many = images_per_s(
        nproc, root, steps, max(1, threads // nproc) if device == "cpu" else threads, device
    )
    ideal = one if device == "cpu" else one * nproc
    print(f"{nproc} processes: {many:,.0f} img/s")
    print(
        f"efficiency: {many / ideal:.2f} ({nproc} processes vs {'the same cores' if device == 'cpu' else f'{nproc} x 1 GPU'})"
    )
    result = {"device": where, "torch": torch.__version__, "nproc": nproc, "img_s_1": one,
              f"img_s_{nproc}": many, "efficiency": many / ideal}  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return result
