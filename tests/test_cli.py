"""The `gankit` command end to end: exit codes, one-line errors, files written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from gankit.cli import main
from tests.conftest import TINY


def _set(*extra: str) -> list[str]:
    out = []
    for o in (*TINY, *extra):
        out += ["--set", o]
    return out


@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "ring"
    assert main(["train", "toy_ring", "--run-dir", str(run), *_set()]) == 0
    return run


def test_list_commands(capsys):
    for what, expected in [("presets", "toy_ring"), ("models", "mlp"), ("losses", "minimax"),
                           ("datasets", "grid"), ("metrics", "modes"), ("benches", "toy")]:  # fmt: skip
        assert main(["list", what]) == 0
        assert expected in capsys.readouterr().out.split()


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
    capsys.readouterr()
    assert main(["train", "nope"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gankit: error: unknown preset 'nope'; choose from:")
    assert len(err.splitlines()) == 1
    assert main(["train", "toy_ring", "--set", "optim.lr_d=fast"]) == 2
    assert "optim.lr_d: expected a number" in capsys.readouterr().err


def test_dry_run_prints_config_and_writes_nothing(tmp_path, capsys):
    run = tmp_path / "r"
    assert main(["train", "gauss1d", "--run-dir", str(run), "--dry-run", "--set", "seed=7"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("seed: 7") and f"# run directory: {run}" in out
    assert not run.exists()


def test_train_writes_the_run_directory(ring_run):
    for rel in ("config.yaml", "env.json", "metrics.jsonl", "eval.jsonl", "checkpoints/last.pt"):
        assert (ring_run / rel).is_file(), rel
    assert sorted(p.stem for p in (ring_run / "samples").glob("*.npy")) == ["000000", "000004",
                                                                           "000008"]  # fmt: skip
    recs = [json.loads(x) for x in (ring_run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in recs if "loss_d" in r]
    assert [r["step"] for r in logged] == [2, 4, 6, 8]
    assert all(0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1 for r in logged)


def test_existing_run_dir_is_never_reused(ring_run, capsys):
    assert main(["train", "toy_ring", "--run-dir", str(ring_run), *_set()]) == 1
    assert "already exists" in capsys.readouterr().err


def test_eval_appends_with_protocol_and_json(ring_run, capsys):
    assert main(["eval", str(ring_run), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["metric"] == "modes" and rec["n_fake"] == 256 and rec["step"] == 8
    assert {"modes", "high_quality", "reverse_kl", "seed", "gankit_version"} <= set(rec)
    lines = (ring_run / "eval.jsonl").read_text().splitlines()
    assert json.loads(lines[-1])["modes"] == rec["modes"]
    assert main(["eval", str(ring_run), "--json"]) == 0  # same checkpoint + seed = same number
    assert json.loads(capsys.readouterr().out)["high_quality"] == rec["high_quality"]
    assert main(["eval", str(ring_run), "--metrics", "modes,sliced_w1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("verdict: ") and "\nmodes: " in out and "sliced_w1: sliced_w1=" in out


def test_plot_writes_pngs_and_gif(ring_run):
    assert main(["plot", str(ring_run)]) == 0
    for name in ("losses.png", "scatter.png", "density.png", "decision.png"):
        with Image.open(ring_run / "plots" / name) as im:
            assert im.format == "PNG" and im.size[0] > 100
    with Image.open(ring_run / "plots" / "samples.gif") as im:
        assert im.n_frames == 3


def test_sample_seeds_are_reproducible(ring_run, tmp_path):
    a, b = tmp_path / "a.npy", tmp_path / "b.npy"
    assert main(["sample", str(ring_run), "--seeds", "0-3", "--out", str(a)]) == 0
    assert main(["sample", str(ring_run), "--seeds", "2-3", "--out", str(b)]) == 0
    xa, xb = np.load(a), np.load(b)
    assert xa.shape == (4, 2)
    np.testing.assert_array_equal(xa[2:], xb)  # seed 2 is the same sample whatever else is asked
    c = tmp_path / "c.csv"
    assert (
        main(["sample", str(ring_run / "checkpoints" / "last.pt"), "--n", "10", "--out", str(c)])
        == 0
    )
    assert np.loadtxt(c, delimiter=",").shape == (10, 2)
    assert main(["sample", str(ring_run), "--out", str(tmp_path / "s.png")]) == 0
    assert main(["sample", str(ring_run), "--out", str(tmp_path / "s.xyz")]) == 2  # usage


def test_corrupt_and_missing_checkpoints_are_one_line_errors(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    assert main(["eval", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gankit: error: {bad}: not a readable gankit checkpoint")
    assert len(err.splitlines()) == 1
    assert main(["eval", str(tmp_path / "missing")]) == 1
    assert "no such run directory or checkpoint" in capsys.readouterr().err


def test_truncated_checkpoint_is_rejected(ring_run, tmp_path, capsys):
    data = (ring_run / "checkpoints" / "last.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    assert main(["sample", str(cut), "--out", str(tmp_path / "x.npy")]) == 1
    assert "not a readable gankit checkpoint" in capsys.readouterr().err


def test_resume_via_cli_extends_a_run(tmp_path):
    run = tmp_path / "r"
    assert main(["train", "gauss1d", "--run-dir", str(run), *_set("train.steps=4")]) == 0
    assert main(["train", "--resume", "--run-dir", str(run), "--set", "train.steps=6"]) == 0
    from gankit.checkpoint import load_checkpoint

    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6
