"""`gankit compare`: curves of several runs overlaid, their latest evaluations side by side."""

from __future__ import annotations

import json

from PIL import Image

from gankit.cli import main
from gankit.compare import compare_table, latest_evals, load_runs


def _fake_run(d, losses, evals):
    d.mkdir()
    (d / "metrics.jsonl").write_text("".join(
        json.dumps({"step": 10 * (i + 1), "loss_d": v, "loss_g": 2 * v, "d_real": 0.6, "d_fake": 0.4}) + "\n"
        for i, v in enumerate(losses)))  # fmt: skip
    (d / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in evals))
    return d


def test_latest_non_floor_record_per_metric_is_compared(tmp_path):
    a = _fake_run(tmp_path / "gan", [1.0, 0.9, 0.8], [
        {"metric": "parzen", "ll_mean": 200.0, "n_fake": 10000, "floor": False},
        {"metric": "parzen", "ll_mean": 210.0, "n_fake": 10000, "floor": False},
        {"metric": "parzen", "ll_mean": 300.0, "n_fake": 10000, "floor": True}])  # fmt: skip
    b = _fake_run(tmp_path / "dcgan", [1.2, 1.1], [{"metric": "modes", "modes": 7, "n_fake": 2500}])
    assert latest_evals(a)["parzen"]["ll_mean"] == 210.0  # the floor figure is not the run's
    table = compare_table(load_runs([a, b])).splitlines()
    assert table[0].split() == ["run", "steps", "modes:modes", "parzen:ll_mean"]
    assert table[1].split() == ["gan", "30", "-", "210"] and table[2].split() == [
        "dcgan",
        "20",
        "7",
        "-",
    ]


def test_compare_cli_writes_the_figure_and_rejects_a_non_run(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", [1.0] * 12, [{"metric": "fid", "fid": 12.5, "n_fake": 100}])
    b = _fake_run(tmp_path / "b", [1.5] * 12, [{"metric": "fid", "fid": 20.0, "n_fake": 100}])
    out = tmp_path / "cmp.png"
    assert main(["compare", str(a), str(b), "--out", str(out)]) == 0
    assert "12.5" in capsys.readouterr().out
    w, h = Image.open(out).size
    assert w > 1000 and h > 500  # curves row + metrics row
    assert main(["compare", str(a), str(tmp_path), "--out", str(out)]) == 1
    assert "no metrics.jsonl" in capsys.readouterr().err
    assert main(["compare", str(a), "--out", str(tmp_path / "x.txt")]) == 1
