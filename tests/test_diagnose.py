"""Live diagnostics: each failure is provoked on a tiny real run and named in metrics.jsonl, the
warning, the verdict of `gankit eval`, and (with train.stop_on) stops the run."""

from __future__ import annotations

import logging

import pytest
import torch

from gankit.checkpoint import load_checkpoint
from gankit.cli import main
from gankit.config import ConfigError, load_config
from gankit.diagnose import diagnose, mean_pairwise_distance, verdict
from gankit.observe import DiagnosedStop
from gankit.trainer import NonFiniteLossError, train
from gankit.utils import read_jsonl

# the presets without their stabilisers, so that D can win
QUIET = ["train.progress=false", "train.threads=1", "train.log_every=100", "loss.r1_weight=0",
         "model.d.pack=1", "train.sample_every=100"]  # fmt: skip
# G frozen at its initialisation: D separates it perfectly and its samples sit in one blob
D_WINS = ["train.steps=300", "train.sample_every=100", "optim.lr_g=0", *QUIET]
# 16 training points of a continuous density and a large D: D learns the points themselves
MEMORISES = ["train.epochs=0", "train.steps=1000", "train.sample_every=500", "data.n_points=16",
             "data.batch_size=16", "train.dstats_n=16", "optim.lr_d=3e-3",
             "model.d.hidden=[256,256]", *QUIET]  # fmt: skip
EXPLODES = ["train.steps=200", "train.sample_every=100", "loss.name=wgan", "optim.lr_d=1e3",
            "optim.lr_g=1e3", "train.ckpt_every=1000", "train.stop_on=[]", *QUIET]  # fmt: skip


def _snapshots(run):
    return [r for r in read_jsonl(run / "metrics.jsonl") if "diagnoses" in r]


def test_d_won_and_collapse_are_diagnosed_warned_and_explained(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="gankit.trainer"):
        train(load_config("toy_ring", D_WINS), tmp_path / "r")
    snaps = _snapshots(tmp_path / "r")
    assert [r["step"] for r in snaps] == [
        100,
        200,
        300,
    ]  # step 0 (G's initialisation) is not judged
    assert all({"d_won", "collapsed"} <= set(r["diagnoses"]) for r in snaps)
    assert snaps[-1]["modes"] == 0 and snaps[-1]["num_modes"] == 8
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1 and warned[0].startswith("D won at step 100")  # once, when it starts
    line = verdict(read_jsonl(tmp_path / "r" / "metrics.jsonl"))
    assert (
        line.startswith("D won at step 100: D(fake) 0.0")
        and "mode collapse at step 100: 0/8" in line
    )


def test_a_healthy_toy_run_gets_a_clean_verdict(tmp_path):
    over = ["train.steps=2000", "train.sample_every=1000", "train.progress=false"]  # stabilised
    train(load_config("toy_ring", over), tmp_path / "r")
    last = _snapshots(tmp_path / "r")[-1]
    assert last["diagnoses"] == [] and last["modes"] == 8, last
    assert "8/8 modes" in verdict(read_jsonl(tmp_path / "r" / "metrics.jsonl"))
    assert "no collapse, D has not won" in verdict(read_jsonl(tmp_path / "r" / "metrics.jsonl"))


def test_memorising_d_is_diagnosed(tmp_path):
    train(load_config("split_normal", MEMORISES), tmp_path / "r")
    last = _snapshots(tmp_path / "r")[-1]
    assert "memorising" in last["diagnoses"], last
    assert last["dstat_train_mean"] - last["dstat_test_mean"] > 0.15


def test_exploding_training_is_diagnosed_and_never_checkpointed(tmp_path):
    with pytest.raises(NonFiniteLossError, match="non-finite by step 200; stopped without saving"):
        train(load_config("toy_ring", EXPLODES), tmp_path / "r")
    snaps = _snapshots(tmp_path / "r")
    assert "diverged" in snaps[0]["diagnoses"] and abs(snaps[0]["loss_d"]) > 1e4
    assert not (tmp_path / "r" / "checkpoints" / "last.pt").exists()  # inf Adam moments not kept


def test_a_diverging_run_stops_by_default(tmp_path):
    over = [o for o in EXPLODES if not o.startswith("train.stop_on")]
    with pytest.raises(
        DiagnosedStop, match="stopped by train.stop_on at step 200: training diverged"
    ):
        train(load_config("toy_ring", over), tmp_path / "r")


def test_stop_on_stops_after_two_snapshots_and_keeps_the_checkpoint_from_before(tmp_path):
    over = [*D_WINS, "train.steps=1000", "train.ckpt_every=50", "train.stop_on=[d_won]"]
    with pytest.raises(DiagnosedStop, match="stopped by train.stop_on at step 200: D won at step"):
        train(load_config("toy_ring", over), tmp_path / "r")
    # diagnosed at 100 (checkpoints paused from then on), confirmed at 200: last.pt is step 50's
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["step"] == 50


def test_stop_on_names_are_checked():
    with pytest.raises(ConfigError, match="unknown diagnosis .train.stop_on. 'colapsed'"):
        load_config("toy_ring", ["train.stop_on=[colapsed]"])


def test_eval_prints_the_verdict_first(tmp_path, capsys):
    train(load_config("toy_ring", D_WINS), tmp_path / "r")
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "r"), "--metrics", "modes"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("verdict: D won at step 100")


def test_diagnose_rules_on_hand_made_records():
    assert diagnose({"dstat_fake_mean": 0.5, "dstat_train_mean": 0.5, "dstat_test_mean": 0.5}) == []
    won = {"dstat_fake_mean": 0.01, "dstat_train_mean": 0.99, "dstat_test_mean": 0.7}
    assert diagnose(won) == ["d_won", "memorising"]
    assert diagnose(won, "hinge") == []  # sigmoid(D) is no probability for hinge/wgan/lsgan/rpgan
    assert diagnose({"num_modes": 25, "modes": 12}) == ["collapsed"]
    assert diagnose({"num_modes": 25, "modes": 25, "high_quality": 0.4}) == []  # blur, not collapse
    assert diagnose({"num_classes_clf": 10, "classes_seen": 4}) == ["collapsed"]
    assert diagnose({"num_classes_clf": 10, "classes_seen": 5}) == []
    assert diagnose({"weight_norm": float("inf")}) == ["diverged"]
    assert diagnose({"weight_norm": float("nan")}) == ["diverged"]
    assert diagnose({"loss_g": -2e4}) == ["diverged"]


def test_mean_pairwise_distance_golden_value():
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert mean_pairwise_distance(x) == pytest.approx(5.0)
    assert mean_pairwise_distance(torch.ones(5, 3)) == 0.0
