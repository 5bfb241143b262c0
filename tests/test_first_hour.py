"""The first hour of a new user: the README's promises (exit codes, messages, one writer per run
directory, what `gankit train` says at the end) hold, each reproduced from a reported failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gankit import pair as pair_module
from gankit.checkpoint import load_checkpoint
from gankit.cli import main
from gankit.config import load_config
from gankit.rundir import RunDirBusy, RunLock
from gankit.trainer import train
from gankit.utils import GankitError

ROOT = Path(__file__).resolve().parents[1]
TOY = ["train.steps=8", "train.log_every=2", "train.sample_every=4", "train.ckpt_every=4",
       "train.progress=false", "train.threads=1", "data.batch_size=16", "model.g.hidden=[16,16]",
       "model.d.hidden=[16,16]", "eval.n_samples=256"]  # fmt: skip


def _sets(over: list[str]) -> list[str]:
    return [a for o in over for a in ("--set", o)]


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    run = tmp_path_factory.mktemp("hour") / "ring"
    train(load_config("toy_ring", TOY), run)
    return run


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """24 tiny RGB images in one folder (no classes)."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    for i in range(24):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(root / f"{i}.png")
    return root


def _image(faces, cache, *extra):
    return ["data.name=folder", f"data.params.path={faces}", f"data.cache_dir={cache}",
            "data.img_size=16", "data.channels=3", "data.batch_size=8", "model.z_dim=8",
            "model.g={ngf: 4}", "model.d={ndf: 4}", "train.sample_n=16", "train.dstats_n=8",
            "train.progress=false", "train.threads=1", *extra]  # fmt: skip


@pytest.mark.parametrize("args", [
    ["sample", "RUN", "--out", "s.jpg"],
    ["sample", "RUN", "--class", "3", "--out", "s.npy"],
    ["sample", "RUN", "--n", "0", "--out", "s.npy"],
    ["sample", "RUN", "--n", "-5", "--out", "s.npy"],
    ["sample", "RUN", "--seeds", "0-99999999", "--out", "s.npy"],
    ["sample", "RUN", "--seeds", "9-3", "--out", "s.npy"],
    ["nn", "RUN", "--k", "100000", "--out", "nn.png"],
    ["interpolate", "RUN", "--seeds", "1,2", "--steps", "100000", "--out", "w.png"],
    ["train", "toy_ring", "--set", "optim.lr_d=.nan"],
    ["train", "dcgan_mnist", "--set", "data.img_size=7"],
    ["train", "toy_ring", "--set", "seed=18446744073709551616"],
])  # fmt: skip
def test_usage_errors_exit_2_with_one_line(ring, tmp_path, capsys, args):
    args = [str(ring) if a == "RUN" else a for a in args]
    args = [str(tmp_path / a) if a.endswith((".jpg", ".npy", ".png")) else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gankit: error: ") and "\n" not in err, err
    assert not any(tmp_path.iterdir())  # refused before any output


def test_list_presets_is_instant_and_describes_each_preset(tmp_path):
    code = "import sys; from gankit.cli import main; main(['list', 'presets']); " \
           "assert 'torch' not in sys.modules, 'list presets imported torch'"  # fmt: skip
    env = {**os.environ, "GANKIT_DATA": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    lines = {ln.split()[0]: ln for ln in done.stdout.splitlines()}
    assert "ring (built in): 8 Gaussians on the unit circle" in lines["toy_ring"]
    assert f"mnist (missing: MNIST/ under {tmp_path})" in lines["dcgan_mnist"]
    assert "Radford et al. 2016" in lines["dcgan_mnist"]  # "et al." does not end the sentence
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    (tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert "mnist (present)" in done.stdout


def test_train_ends_with_a_summary_and_what_to_run_next(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "toy_ring", "--run-dir", str(run), *_sets(TOY)]) == 0
    out = capsys.readouterr().out
    assert "trained 8 steps in " in out and "last window: D(real) 0." in out
    assert "verdict: " in out and f"next: gankit eval {run}" in out


def test_python_train_refuses_an_existing_run(ring):
    with pytest.raises(GankitError, match="already exists with a checkpoint"):
        train(load_config("toy_ring", TOY), ring)


def test_a_run_directory_has_one_writer(ring, tmp_path):
    with (
        RunLock(tmp_path / "busy"),
        pytest.raises(RunDirBusy, match=r"in use by another gankit process \(pid \d+\)"),
    ):
        train(load_config("toy_ring", TOY), tmp_path / "busy")
    with RunLock(ring), pytest.raises(RunDirBusy):  # --resume while the run still trains
        train(load_config("toy_ring", [*TOY, "train.steps=12"]), ring, resume=True)


def test_a_second_process_on_a_training_run_fails_at_once(tmp_path):
    run = tmp_path / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from gankit.rundir import RunLock\n"
         f"with RunLock({str(run)!r}):\n  print('locked', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "locked"  # no sleep: the holder says when
        cmd = [
            sys.executable,
            "-m",
            "gankit",
            "train",
            "toy_ring",
            "--run-dir",
            str(run),
            *_sets(TOY),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True)
        assert done.returncode == 1 and f"pid {holder.pid}" in done.stderr, done.stderr
    finally:
        holder.communicate("")
    assert holder.returncode == 0


def test_resume_updates_config_and_keeps_the_first_command_line(tmp_path):
    run = tmp_path / "r"
    over = [*TOY, "optim.lr_schedule=constant"]
    train(load_config("toy_ring", over), run)
    first = json.loads((run / "env.json").read_text())
    assert main(["train", "--resume", "--run-dir", str(run), "--set", "train.steps=12",
                 "--set", "optim.lr_d=1e-4"]) == 0  # fmt: skip
    env = json.loads((run / "env.json").read_text())
    assert env["argv"] == first["argv"] and env["resumes"][0]["step"] == 8
    assert "steps: 12" in (run / "config.yaml").read_text()
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    opt_d = ckpt["pairs"][0]["opt_d"]
    assert ckpt["step"] == 12 and opt_d["param_groups"][0]["lr"] == pytest.approx(1e-4)


def test_a_short_image_run_warns_and_sigterm_still_writes_plots(
    faces, tmp_path, monkeypatch, caplog
):
    real_step, calls = pair_module.train_step, {"n": 0}

    def step_then_sigterm(state, reals, labels, cfg):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGTERM)  # handled by the loop after this step
        return real_step(state, reals, labels, cfg)

    monkeypatch.setattr(pair_module, "train_step", step_then_sigterm)
    run = tmp_path / "r"
    over = _image(faces, tmp_path / "cache", "train.epochs=5", "train.sample_every=2")
    assert main(["train", "dcgan_mnist", "--run-dir", str(run), *_sets(over)]) == 143
    assert "only 10 steps (5 epochs of 2 batches): far too few" in caplog.text
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 3
    assert (run / "plots" / "samples.gif").is_file()  # what was trained so far, plotted


def _readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading) :]
    start = section.index("```python\n") + len("```python\n")
    return section[start : section.index("```", start)]


def test_readme_python_quickstart_runs_as_printed(tmp_path):
    code = _readme_block("## Python quickstart")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "runs" / "my-ring" / "checkpoints" / "last.pt").is_file()
    assert "'modes': 8," in done.stdout  # 2,000 steps of the stabilised preset: no collapse
