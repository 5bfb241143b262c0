"""The trainer's contract, for every mode of its one loop (conftest.MODES: a toy MLP pair on the fast
step, a toy pair by autograd with EMA, an image pair, one image pair per class): exact resume, a NaN
stops with the last good checkpoint intact, SIGINT/SIGTERM save, a SIGKILL at a known step loses
nothing but the steps after the last checkpoint, tracking and `time_s`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gankit.checkpoint import load_checkpoint
from gankit.config import to_yaml
from gankit.losses import LOSSES
from gankit.pair import Pair
from gankit.trainer import NonFiniteLossError, TrainingInterrupted, train
from gankit.utils import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def _same(a, b, where=""):
    """Recursive bit-for-bit equality of checkpoint entries (tensors, dicts, lists, values)."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    else:
        assert a == b, where


def _last(run: Path) -> dict:
    return load_checkpoint(run / "checkpoints" / "last.pt")


def _log(run: Path) -> list:
    """metrics.jsonl without the wall-clock fields."""
    drop = {"time_s", "it_s"}
    return [
        {k: v for k, v in r.items() if k not in drop} for r in read_jsonl(run / "metrics.jsonl")
    ]


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """mode -> the run directory of its uninterrupted 8 steps (trained once per module)."""
    runs: dict[str, Path] = {}

    def get(mode: str, cfg) -> Path:
        if mode not in runs:
            runs[mode] = tmp_path_factory.mktemp(mode) / "full"
            train(cfg, runs[mode])
        return runs[mode]

    return get


def test_resume_is_bit_identical(mode, mode_cfg, tmp_path):
    """4 steps + resume to 8 == 8 steps: every pair's weights, optimizer states, step and noise
    streams, the global RNG, and the same metrics.jsonl lines, none duplicated. (The schedule is
    constant: a linear one is a function of train.steps, which the short run changes; the signal
    and SIGKILL tests below resume runs of one config with the presets' schedules.)"""
    const = "optim.lr_schedule=constant"
    train(mode_cfg(mode, const), tmp_path / "full")
    train(mode_cfg(mode, const, "train.steps=4"), tmp_path / "half")
    resumed = train(mode_cfg(mode, const), tmp_path / "half", resume=True)
    assert resumed.step == 8
    a, b = _last(tmp_path / "full"), _last(tmp_path / "half")
    _same(a["pairs"], b["pairs"], "pairs")
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])
    assert _log(tmp_path / "full") == _log(tmp_path / "half")  # step 4 logs and snapshots in both


def test_a_nan_stops_the_run_and_keeps_the_last_good_checkpoint(
    mode, mode_cfg, tmp_path, monkeypatch
):
    calls = {"n": 0}
    d_loss, g_loss = LOSSES["nonsaturating"]

    def poisoned(d_real, d_fake, smoothing=0.0):  # the 6th D update onwards
        calls["n"] += 1
        loss = d_loss(d_real, d_fake, smoothing)
        return loss * float("nan") if calls["n"] >= 6 else loss

    monkeypatch.setitem(LOSSES, "poisoned", (poisoned, g_loss))
    with pytest.raises(NonFiniteLossError) as err:
        train(mode_cfg(mode, "loss.name=poisoned"), tmp_path / "r")
    msg = str(err.value)
    assert "loss_d became nan between steps 5 and 6" in msg and "\n" not in msg
    assert msg.startswith("class ") == (mode == "per_class")  # names the pair that diverged
    assert "last good checkpoint: step 4" in msg
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 4
    for e in ckpt["pairs"]:
        for sd in (e["G"], e["D"]):
            assert all(torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_and_resume_finishes_the_same_run(
    mode, sig, mode_cfg, straight, tmp_path, monkeypatch
):
    real_update, calls = Pair.update, {"n": 0}

    def update_then_signal(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), sig)  # caught by the loop's guard, handled after this step
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(Pair, "update", update_then_signal)
    with pytest.raises(TrainingInterrupted, match=f"{sig.name} at step 3: checkpoint saved") as e:
        train(mode_cfg(mode), tmp_path / "r")
    assert e.value.signum == sig
    assert _last(tmp_path / "r")["step"] == 3
    monkeypatch.setattr(Pair, "update", real_update)
    assert train(mode_cfg(mode), tmp_path / "r", resume=True).step == 8
    _same(_last(straight(mode, mode_cfg(mode)))["pairs"], _last(tmp_path / "r")["pairs"], "pairs")


KILL_AT = """
import os, signal, sys
import yaml
from gankit.config import config_from_dict
from gankit.pair import Pair
from gankit.trainer import train

real, calls = Pair.update, {"n": 0}
def update(self, *args, **kwargs):
    calls["n"] += 1
    if calls["n"] == 7:  # mid-run, after the checkpoint of step 4: no handler can run
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args, **kwargs)
Pair.update = update
train(config_from_dict(yaml.safe_load(open(sys.argv[1]))), sys.argv[2])
"""


def test_sigkill_at_a_known_step_loses_only_the_steps_after_the_last_checkpoint(
    mode, mode_cfg, straight, tmp_path
):
    cfg = mode_cfg(mode)
    (tmp_path / "cfg.yaml").write_text(to_yaml(cfg))
    env = {
        **os.environ,
        "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
    }
    run = tmp_path / "killed"
    done = subprocess.run([sys.executable, "-c", KILL_AT, str(tmp_path / "cfg.yaml"), str(run)],
                          env=env, capture_output=True, text=True)  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # intact, loadable
    assert ckpt["step"] == 4
    assert not [p for p in (run / "checkpoints").iterdir() if p.name != "last.pt"]  # no temp files
    assert train(cfg, run, resume=True).step == 8  # the killed run finishes as if never killed
    _same(_last(straight(mode, cfg))["pairs"], _last(run)["pairs"], "pairs")


def test_every_record_has_time_s_and_tensorboard_mirrors_it(mode, mode_cfg, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "r"
    train(mode_cfg(mode, "track.tensorboard=true"), run)
    rows = read_jsonl(run / "metrics.jsonl")
    times = [r["time_s"] for r in rows]
    assert len(times) == len(rows) and times == sorted(times) and times[-1] > 0
    acc = EventAccumulator(str(run / "tensorboard")).Reload()
    logged = [e.step for e in acc.Scalars("loss_d")]
    assert logged == [r["step"] for r in rows if "loss_d" in r] == [2, 4, 6, 8]
    assert [e.step for e in acc.Scalars("time_s")] == [r["step"] for r in rows]
