"""Longer checks: process kill + resume, signals, and the presets' convergence targets."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gankit.checkpoint import load_checkpoint
from gankit.config import load_config
from gankit.run import eval_run
from gankit.trainer import train

pytestmark = pytest.mark.slow

OVER = ["train.progress=false", "train.threads=1", "train.log_every=50", "train.sample_every=500"]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "gankit", *args]


def _sets(over: list[str]) -> list[str]:
    return [a for o in over for a in ("--set", o)]


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60) -> None:
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, "training ended before the first checkpoint"
        assert time.time() - t0 < timeout
        time.sleep(0.01)


def test_sigkill_then_resume_is_bit_identical(tmp_path):
    over = [*OVER, "train.steps=3000", "train.ckpt_every=100"]
    full = train(load_config("toy_ring", over), tmp_path / "full")
    run = tmp_path / "killed"
    proc = subprocess.Popen(_cmd("train", "toy_ring", "--run-dir", str(run), *_sets(over)))
    _wait_for(run / "checkpoints" / "last.pt", proc)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 0 < killed_at < 3000
    rc = subprocess.run(_cmd("train", "--resume", "--run-dir", str(run)), check=False).returncode
    assert rc == 0
    a = load_checkpoint(run / "checkpoints" / "last.pt")
    assert a["step"] == full.step == 3000
    ref = {k: v for k, v in full.G.state_dict().items()}
    assert all(torch.equal(a["G"][k], ref[k]) for k in ref)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_checkpoint_and_exits(tmp_path, sig, code):
    over = [*OVER, "train.steps=1000000", "train.ckpt_every=100000"]
    run = tmp_path / "r"
    proc = subprocess.Popen(_cmd("train", "toy_ring", "--run-dir", str(run), *_sets(over)),
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    _wait_for(run / "samples" / "000000.npy", proc)
    time.sleep(0.5)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code
    assert "checkpoint saved" in err and "--resume" in err
    step = load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert step > 0


def test_gauss1d_preset_converges(tmp_path):
    train(load_config("gauss1d", OVER[:2]), tmp_path / "g")
    r = eval_run(tmp_path / "g")[0]
    assert abs(r["mean"] - 3.0) < 0.15 and abs(r["std"] - 1.0) < 0.15, r


def test_toy_ring_preset_covers_all_modes(tmp_path):
    # a quarter of the preset's 40,000 steps, as `make demo` trains it
    train(load_config("toy_ring", [*OVER[:2], "train.steps=10000"]), tmp_path / "ring")
    r = eval_run(tmp_path / "ring")[0]
    assert r["modes"] == 8 and r["high_quality"] >= 0.8, r
