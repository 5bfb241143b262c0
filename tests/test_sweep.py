"""`gankit sweep`: seed lists, the sweep directory, resuming an interrupted sweep without retraining,
refusing a mixed directory, mean ± se over seeds, failed seeds and --jobs."""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics

import pytest
import torch

from gankit.cli import main
from gankit.config import ConfigError, load_config
from gankit.sweep import parse_seeds
from gankit.sweep_summary import format_seeds
from gankit.trainer import train
from gankit.utils import read_jsonl

TOY = ["train.steps=30", "train.sample_every=10", "train.ckpt_every=10", "train.log_every=10",
       "train.progress=false", "eval.n_samples=200"]  # fmt: skip
METRICS = ["modes", "sliced_w1"]


def sweep_args(out, seeds: str = "0-1", extra: list[str] = ()) -> list[str]:
    sets = [a for o in [*TOY, *extra] for a in ("--set", o)]
    return ["sweep", "toy_ring", "--seeds", seeds, *sets, "--metrics", ",".join(METRICS),
            "--out", str(out)]  # fmt: skip


def ckpt_step(run_dir) -> int:
    return torch.load(run_dir / "checkpoints" / "last.pt", weights_only=True)["step"]


def fingerprint(run_dir) -> tuple:
    """What training or evaluating a run would change."""
    mtimes = [(run_dir / f).stat().st_mtime_ns for f in ("checkpoints/last.pt", "env.json")]
    return (
        *mtimes,
        (run_dir / "metrics.jsonl").read_bytes(),
        (run_dir / "eval.jsonl").read_bytes(),
    )


def summary_rows(out) -> dict[str, dict]:
    return {r["key"]: r for r in json.loads((out / "summary.json").read_text())["rows"]}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("sweep") / "ring"
    assert main(sweep_args(out)) == 0
    return out


@pytest.mark.parametrize(
    ("text", "seeds"),
    [("0-4", [0, 1, 2, 3, 4]), ("0,2,5", [0, 2, 5]), ("3", [3]), (" 0-2, 7 ", [0, 1, 2, 7])],
)
def test_parse_seeds(text, seeds):
    assert parse_seeds(text) == seeds
    assert parse_seeds(format_seeds(seeds)) == seeds


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("", "empty"),
        ("-1", "negative"),
        ("3-1", "reversed"),
        ("0,0", "twice"),
        ("a", "not a seed"),
        ("1,,2", "empty"),
        ("0-1000", "more than 1000"),
        ("0-99999999", "more than 1000"),
        ("0-99999999999999", "more than 1000"),
    ],  # fmt: skip
)
def test_parse_seeds_rejects(text, why):
    with pytest.raises(ConfigError, match="--seeds") as e:  # the huge ranges are never expanded
        parse_seeds(text)
    assert why in str(e.value) and "0-4" in str(e.value)
    assert len(str(e.value).splitlines()) == 1


def test_bad_seeds_exit_2_before_any_work(tmp_path, capsys):
    assert main(sweep_args(tmp_path / "s", seeds="0-99999999")) == 2
    assert "--seeds" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_sweep_layout_and_summary(sweep):
    meta = json.loads((sweep / "sweep.json").read_text())
    assert meta["preset"] == "toy_ring" and meta["overrides"] == TOY and meta["seeds"] == [0, 1]
    for s in (0, 1):
        run = sweep / f"seed_{s}"
        assert (run / "DONE").is_file() and ckpt_step(run) == 30
        assert load_config(str(run / "config.yaml")).seed == s
    assert (sweep / "summary.md").read_text().startswith("# sweep toy_ring")
    rows = summary_rows(sweep)
    # recompute every metric row from the runs' own eval.jsonl
    evals = {s: {r["metric"]: r for r in read_jsonl(sweep / f"seed_{s}" / "eval.jsonl")}
             for s in (0, 1)}  # fmt: skip
    assert {"modes.modes", "modes.high_quality", "sliced_w1.sliced_w1"} <= set(rows)
    assert not any(k.split(".")[1].startswith(("n_", "num_")) or k.endswith(".seed") for k in rows)
    for key, row in rows.items():
        if key == "train.time_s":
            continue
        metric, field = key.split(".")
        values = [evals[s][metric][field] for s in (0, 1)]
        assert row["values"] == {"0": values[0], "1": values[1]}
        if not all(map(math.isfinite, values)):
            continue
        assert row["mean"] == pytest.approx(statistics.mean(values))
        assert row["se"] == pytest.approx(statistics.stdev(values) / math.sqrt(2))
        assert (row["min"], row["max"]) == (min(values), max(values))
    w1 = rows["sliced_w1.sliced_w1"]["values"]
    assert w1["0"] != w1["1"]  # two seeds really are two different runs
    times = [read_jsonl(sweep / f"seed_{s}" / "metrics.jsonl")[-1]["time_s"] for s in (0, 1)]
    assert rows["train.time_s"]["values"] == {"0": times[0], "1": times[1]}


def test_rerun_does_not_retrain(sweep, capsys):
    runs = [sweep / f"seed_{s}" for s in (0, 1)]
    before = [fingerprint(r) for r in runs]
    summary = json.loads((sweep / "summary.json").read_text())
    capsys.readouterr()
    assert main(sweep_args(sweep)) == 0
    # train() not even called (it rewrites env.json), nothing re-evaluated
    assert [fingerprint(r) for r in runs] == before
    assert json.loads((sweep / "summary.json").read_text()) == summary
    printed = capsys.readouterr().out
    assert "seed 1: already trained (30 steps); eval reused" in printed
    assert "sliced_w1.sliced_w1" in printed and "seeds 0-1 (2 runs)" in printed


def test_interrupted_seeds_are_completed(sweep, tmp_path):
    out = tmp_path / "ring"
    out.mkdir()
    shutil.copy(sweep / "sweep.json", out / "sweep.json")
    # seed 0 was killed before its first checkpoint: a config.yaml and nothing else
    (out / "seed_0").mkdir()
    shutil.copy(sweep / "seed_0" / "config.yaml", out / "seed_0" / "config.yaml")
    # seed 1 stopped with a checkpoint at step 10 of 30 (trained with fewer steps, then extended)
    train(load_config("toy_ring", [*TOY, "seed=1", "train.steps=10"]), out / "seed_1")
    early = read_jsonl(out / "seed_1" / "metrics.jsonl")
    assert ckpt_step(out / "seed_1") == 10
    assert main(sweep_args(out)) == 0
    for s in (0, 1):
        assert ckpt_step(out / f"seed_{s}") == 30 and (out / f"seed_{s}" / "DONE").is_file()
    lines = read_jsonl(out / "seed_1" / "metrics.jsonl")
    assert lines[: len(early)] == early and lines[-1]["step"] == 30  # resumed, not restarted
    assert summary_rows(out)["modes.modes"]["n"] == 2


def test_failed_seed_does_not_stop_the_others(sweep, tmp_path, capsys):
    out = tmp_path / "ring"
    (out / "seed_0" / "checkpoints").mkdir(parents=True)
    shutil.copy(sweep / "sweep.json", out / "sweep.json")
    (out / "seed_0" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    assert main(sweep_args(out)) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [0] and summary["runs"]["0"]["status"] == "failed"
    assert ckpt_step(out / "seed_1") == 30
    row = summary_rows(out)["sliced_w1.sliced_w1"]
    assert list(row["values"]) == ["1"] and row["se"] is None
    assert "seed 0: FAILED" in capsys.readouterr().out


def test_different_settings_refused(sweep, capsys):
    meta = (sweep / "sweep.json").read_bytes()
    capsys.readouterr()
    assert main(sweep_args(sweep, extra=["optim.lr_d=1e-4"])) == 2
    err = capsys.readouterr().err
    assert "different sweep" in err and "overrides" in err and len(err.strip().splitlines()) == 1
    assert main([*sweep_args(sweep)[:-4], "--metrics", "modes", "--out", str(sweep)]) == 2
    assert (sweep / "sweep.json").read_bytes() == meta


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--metrics", "modez"], "unknown metric (--metrics) 'modez'"),
     (["--set", "train.stepz=3"], "train.stepz"), (["--set", "seed=3"], "conflicts with --seeds")],
)  # fmt: skip
def test_bad_input_exit_2_before_any_run(tmp_path, capsys, args, message):
    out = tmp_path / "s"
    assert main(["sweep", "toy_ring", "--seeds", "0-1", *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_jobs_2(sweep, tmp_path, capsys):
    out = tmp_path / "ring"
    (out / "seed_2" / "checkpoints").mkdir(parents=True)
    shutil.copy(sweep / "sweep.json", out / "sweep.json")
    (out / "seed_2" / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    assert main([*sweep_args(out, seeds="0-2"), "--jobs", "2"]) == 1  # seed 2 fails in its worker
    assert "seed 2: FAILED" in capsys.readouterr().out
    for s in (0, 1):
        cfg = load_config(str(out / f"seed_{s}" / "config.yaml"))
        assert cfg.seed == s and cfg.train.threads == max(1, (os.cpu_count() or 1) // 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == [2] and summary["runs"]["2"]["status"] == "failed"
    rows, ref = summary_rows(out), summary_rows(sweep)
    assert set(rows) == set(ref)
    for key in set(rows) - {"train.time_s"}:  # the same runs as one job at a time
        assert set(rows[key]["values"]) == {"0", "1"}
        for s in ("0", "1"):
            assert rows[key]["values"][s] == pytest.approx(ref[key]["values"][s], rel=1e-4)


def test_sigterm_to_a_jobs_sweep_stops_its_workers_with_their_checkpoints(tmp_path):
    """`kill` of a --jobs sweep reaches its workers: each saves its checkpoint and exits, no queued
    seed starts, no worker keeps training (their run locks are free), and the exit code is 143."""
    import fcntl
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "ring"
    sets = ["train.steps=1000000", "train.log_every=10", "train.ckpt_every=1000000",
            "train.sample_every=1000000", "train.progress=false", "train.threads=1"]  # fmt: skip
    cmd = [sys.executable, "-m", "gankit", "sweep", "toy_ring", "--seeds", "0-2", "--jobs", "2",
           *[a for o in sets for a in ("--set", o)], "--out", str(out)]  # fmt: skip
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err_out:  # a file, not a pipe: orphaned workers would hold a pipe
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_out)
    logs = [out / f"seed_{s}" / "metrics.jsonl" for s in (0, 1)]
    deadline = time.monotonic() + 300  # a guard against hanging, not a pass condition
    while not all(p.is_file() and "loss_d" in p.read_text() for p in logs):
        assert proc.poll() is None and time.monotonic() < deadline, err_file.read_text()
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=300)
    err = err_file.read_text()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "SIGTERM: each running seed saved its checkpoint; run the same sweep command" in err
    for s in (0, 1):
        run = out / f"seed_{s}"
        assert ckpt_step(run) > 0 and not (run / "DONE").exists()
        with open(run / ".lock", "a+") as f:  # no worker holds its run directory any more
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert not (out / "seed_2").exists()  # queued, never started
