"""Several processes, one run (gankit.distributed): 2 gloo processes equal 1 process with the same
global batch, resume across world sizes, a killed rank stops the others, only rank 0 writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gankit.checkpoint import load_checkpoint
from gankit.config import load_config
from gankit.distributed import World
from gankit.trainer import train
from gankit.utils import read_jsonl
from tests.conftest import TINY, folder_overrides

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
CONST = "optim.lr_schedule=constant"  # resumes below lengthen runs; a linear schedule would change


def _gankit(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gankit", *args], env=ENV, capture_output=True,
                          text=True, timeout=timeout)  # fmt: skip


def _sets(over: list[str]) -> list[str]:
    return [a for o in over for a in ("--set", o)]


def _toy() -> list[str]:
    return [*TINY, "train.fast_path=false", "loss.r1_weight=0.1", "model.d.pack=2", CONST]


def _dcgan(class_folder) -> list[str]:
    return [*folder_overrides(*class_folder), "train.sync_bn=true", CONST]


def _close(a: Path, b: Path, atol: float = 1e-4) -> None:
    """Final G and D of two runs equal within float tolerance (the ranks' gradient sum is taken in
    another order than one process's batch sum)."""
    ca, cb = (
        load_checkpoint(a / "checkpoints" / "last.pt"),
        load_checkpoint(b / "checkpoints" / "last.pt"),
    )
    assert ca["step"] == cb["step"]
    for ea, eb in zip(ca["pairs"], cb["pairs"], strict=True):
        for key in ("G", "D"):
            for name, x in ea[key].items():
                torch.testing.assert_close(
                    x, eb[key][name], atol=atol, rtol=1e-3, msg=f"{key}.{name}"
                )


def test_world_rows_split_the_global_batch():
    rows = [World(r, 4).rows(128) for r in range(4)]
    assert [(s.start, s.stop) for s in rows] == [(0, 32), (32, 64), (64, 96), (96, 128)]


@pytest.mark.parametrize("kind", ["toy", "dcgan"])
def test_two_processes_equal_one(kind, class_folder, tmp_path):
    preset, over = ("toy_ring", _toy()) if kind == "toy" else ("dcgan_mnist", _dcgan(class_folder))
    train(load_config(preset, over), tmp_path / "one")
    done = _gankit(
        "train", preset, "--nproc", "2", "--run-dir", str(tmp_path / "two"), *_sets(over)
    )
    assert done.returncode == 0, done.stderr
    _close(tmp_path / "one", tmp_path / "two")
    steps = lambda d: [(r["step"], sorted(r)) for r in read_jsonl(d / "metrics.jsonl")]  # noqa: E731
    drop = lambda rows: [(s, [k for k in ks if k not in ("time_s", "it_s")]) for s, ks in rows]  # noqa: E731
    assert drop(steps(tmp_path / "one")) == drop(steps(tmp_path / "two"))  # same records, once each
    # rank 0 alone wrote: the same files as the one-process run, nothing per rank (plots/ aside:
    # `gankit train` draws an image run's plots after train() returns)
    files = lambda d: sorted(str(p.relative_to(d)) for p in d.rglob("*") if "plots" not in p.parts)  # noqa: E731
    assert files(tmp_path / "one") == files(tmp_path / "two")
    assert done.stdout.count("trained 8 steps") == 1  # one summary, rank 0's


def test_resume_across_world_sizes(tmp_path):
    """2 -> 1 and 1 -> 2 processes continue the same run (equal to the uninterrupted one)."""
    over = _toy()
    train(load_config("toy_ring", over), tmp_path / "straight")
    half = [*over, "train.steps=4"]
    done = _gankit(
        "train", "toy_ring", "--nproc", "2", "--run-dir", str(tmp_path / "a"), *_sets(half)
    )
    assert done.returncode == 0, done.stderr
    train(load_config("toy_ring", over), tmp_path / "a", resume=True)  # 2 -> 1
    _close(tmp_path / "straight", tmp_path / "a")
    train(load_config("toy_ring", half), tmp_path / "b")
    done = _gankit("train", "--resume", "--nproc", "2", "--run-dir", str(tmp_path / "b"),
                   *_sets(["train.steps=8"]))  # fmt: skip
    assert done.returncode == 0, done.stderr  # 1 -> 2
    _close(tmp_path / "straight", tmp_path / "b")


KILL_RANK_1 = """
import os, signal, sys
from gankit.cli import main
from gankit.pair import Pair

real, calls = Pair.update, {"n": 0}
def update(self, *args, **kwargs):
    calls["n"] += 1
    if os.environ["RANK"] == "1" and calls["n"] == 7:  # after the checkpoint of step 4
        os.kill(os.getpid(), signal.SIGKILL)
    return real(self, *args, **kwargs)
Pair.update = update
sys.exit(main(sys.argv[1:]))
"""


def test_killing_one_rank_stops_every_rank_and_keeps_the_last_good_checkpoint(tmp_path):
    script = tmp_path / "kill.py"
    script.write_text(KILL_RANK_1)
    run = tmp_path / "r"
    args = ["train", "toy_ring", "--run-dir", str(run), *_sets(_toy())]
    t0 = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node", "2", str(script), *args], env=ENV,
                          capture_output=True, text=True, timeout=240)  # fmt: skip
    assert done.returncode != 0
    assert time.monotonic() - t0 < 120  # not the collective timeout of a hung rank
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["step"] == 4
    assert not [p for p in (run / "checkpoints").iterdir() if p.name != "last.pt"]  # no temp file
    assert "SIGKILL" in done.stderr or "Signal 9" in done.stderr  # the launcher names the failure


def test_sigterm_to_the_launcher_saves_and_exits_143(tmp_path):
    run = tmp_path / "r"
    over = [*_toy(), "train.steps=1000000", "train.ckpt_every=1000000", "train.log_every=10"]
    proc = subprocess.Popen([sys.executable, "-m", "gankit", "train", "toy_ring", "--nproc", "2",
                             "--run-dir", str(run), *_sets(over)], env=ENV,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    t0 = time.monotonic()
    while len(read_jsonl(run / "metrics.jsonl")) < 3:  # the loop runs on both ranks
        assert proc.poll() is None and time.monotonic() - t0 < 120
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)  # saved at the stop
    assert ckpt["step"] > 0 and "checkpoint saved" in err


def test_an_uneven_global_batch_is_a_usage_error(tmp_path):
    done = _gankit("train", "toy_ring", "--nproc", "2", "--run-dir", str(tmp_path / "r"),
                   *_sets([*TINY, "data.batch_size=15"]))  # fmt: skip
    assert done.returncode == 2
    assert "data.batch_size 15 does not split over 2 processes" in done.stderr


def test_torchrun_without_run_dir_is_a_usage_error(tmp_path):
    """Each rank would pick its own runs/NNNNN: refused before any work (--nproc picks one)."""
    env = {**ENV, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"}
    done = subprocess.run([sys.executable, "-m", "gankit", "train", "toy_ring"], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 2
    assert "several processes (torchrun) need --run-dir" in done.stderr
    assert not (tmp_path / "runs").exists()


def test_worker_command_line_is_the_same_command_in_the_chosen_directory(tmp_path):
    from gankit.cli import build_parser
    from gankit.commands import _worker_argv

    args = build_parser().parse_args(["-v", "train", "toy_ring", "--set", "train.steps=5",
                                      "--nproc", "2", "--report"])  # fmt: skip
    assert _worker_argv(args, tmp_path / "r") == [
        "-v", "train", "toy_ring", "--set", "train.steps=5", "--run-dir", str(tmp_path / "r"),
        "--report",
    ]  # fmt: skip
    again = build_parser().parse_args(["train", "--resume", "--run-dir", "x", "--nproc", "2"])
    assert _worker_argv(again, Path("x")) == ["train", "--run-dir", "x", "--resume"]
