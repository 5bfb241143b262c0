"""`gankit eval` under each metric's protocol: records, --floor, seeds, per-class and conditional sampling,
Parzen and the classifier metrics wired to real checkpoints, Stacked-MNIST mode counting."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from gankit.checkpoint import load_checkpoint
from gankit.cli import main
from gankit.evaluate import METRICS, EvalContext, eval_run
from gankit.metrics import NAMES
from gankit.metrics.toy import mode_histogram_stats
from tests.conftest import TINY, image_overrides

PROTOCOL = (
    "metric",
    "n_fake",
    "seed",
    "floor",
    "step",
    "dataset",
    "checkpoint",
    "gankit_version",
    "time",
)


def _train(args: list[str]) -> None:
    cmd = args[:4]
    for o in args[4:]:
        cmd += ["--set", o]
    assert main(cmd) == 0


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    run = tmp_path_factory.mktemp("eval") / "ring"
    _train(["train", "toy_ring", "--run-dir", str(run), *TINY])
    return run


@pytest.fixture(scope="module")
def image_runs(stripes, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("eval_img")
    base = [*image_overrides(stripes, tmp / "cache"), "train.steps=2"]
    runs = {}
    for name, extra in (
        ("plain", []),
        ("cond", ["model.num_classes=2"]),
        ("pairs", ["train.per_class=true"]),
    ):
        _train(["train", "dcgan_mnist", "--run-dir", str(tmp / name), *base, *extra])
        runs[name] = tmp / name
    return runs


def test_every_metric_is_a_function_of_an_eval_context():
    assert set(METRICS) >= {"modes", "dist1d", "sliced_w1", "dstats", "parzen", "classifier", "fid_clf",
                            "stacked_mnist", "fid", "kid", "is", "prc"}  # fmt: skip


def test_the_light_names_table_lists_exactly_the_metrics():
    # config validation and `gankit list metrics` read NAMES; `gankit eval` runs METRICS
    assert set(METRICS) == set(NAMES)
    assert list(METRICS) == list(NAMES)  # the order of "choose from: ..." in both errors
    assert all(isinstance(v, str) and v and "\n" not in v for v in NAMES.values())


def test_records_carry_their_protocol_and_the_same_seed_gives_the_same_number(ring):
    a = eval_run(ring, ["modes", "sliced_w1"])
    b = eval_run(ring, ["modes", "sliced_w1"])
    c = eval_run(ring, ["sliced_w1"], seed=1)
    for r in a:
        assert all(k in r for k in PROTOCOL) and r["floor"] is False and r["n_fake"] == 256
    assert a[1]["n_real"] == 256 and a[1]["reference"] == "test"
    strip = lambda r: {k: v for k, v in r.items() if k not in ("time", "seconds")}  # noqa: E731
    assert [strip(r) for r in a] == [strip(r) for r in b]
    assert c[0]["sliced_w1"] != a[1]["sliced_w1"]
    lines = [json.loads(x) for x in (ring / "eval.jsonl").read_text().splitlines()]
    assert len(lines) == 5 and lines[-1]["seed"] == 1


def test_floor_on_the_ring_is_the_real_data_figure(ring, capsys):
    assert main(["eval", str(ring), "--metrics", "modes", "--floor", "--n", "2000"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("modes (floor: real train vs real test)")
    r = json.loads((ring / "eval.jsonl").read_text().splitlines()[-1])
    # real ring samples: every mode, ~99.7 % within 3 std (a 2-D Gaussian: 1 - exp(-4.5) = 98.9 %)
    assert (
        r["floor"] is True and r["modes"] == 8 and r["high_quality"] > 0.97 and r["n_fake"] == 2000
    )


def test_unknown_metric_and_image_metric_on_toys_are_one_line_errors(ring, capsys):
    assert main(["eval", str(ring), "--metrics", "frechet"]) == 2
    assert "choose from: modes, dist1d" in capsys.readouterr().err
    assert main(["eval", str(ring), "--metrics", "fid_clf"]) == 1
    assert "needs an image dataset" in capsys.readouterr().err


def test_dstats_default_for_image_runs_and_no_floor(image_runs, capsys):
    r = eval_run(image_runs["plain"])[0]
    assert r["metric"] == "dstats" and r["reference"] == "train+test"
    for split in ("train", "fake", "test"):
        assert 0 <= r[f"{split}_mean"] <= 1 and r[f"{split}_std"] >= 0
    assert math.isclose(r["train_test_gap"], r["train_mean"] - r["test_mean"])
    assert main(["eval", str(image_runs["plain"]), "--metrics", "dstats", "--floor"]) == 1
    assert "no --floor" in capsys.readouterr().err
    assert main(["eval", str(image_runs["pairs"]), "--metrics", "dstats"]) == 1
    assert "per-class" in capsys.readouterr().err


def _ctx(run, **kw) -> EvalContext:
    return EvalContext.from_checkpoint(load_checkpoint(run / "checkpoints" / "last.pt"), **kw)


def test_conditional_samples_request_uniform_classes_deterministically(image_runs):
    x, y = _ctx(image_runs["cond"]).fake(400)
    assert (
        x.shape == (400, 3, 16, 16)
        and set(y.tolist()) == {0, 1}
        and 150 < int((y == 1).sum()) < 250
    )
    x2, y2 = _ctx(image_runs["cond"]).fake(400)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, _ctx(image_runs["cond"], seed=1).fake(400)[0])


def test_per_class_samples_come_from_each_class_pair(image_runs):
    from gankit.factory import RunModels
    from gankit.sample import generate, sample_z
    from gankit.utils import make_generator

    ctx = _ctx(image_runs["pairs"])
    x, y = ctx.fake(6)
    g = make_generator(0, "eval")
    z = sample_z(6, ctx.cfg.model.z_dim, ctx.cfg.model.z_dist, g)
    pairs = RunModels.load(image_runs["pairs"] / "checkpoints" / "last.pt")  # rebuilt apart
    assert not torch.allclose(generate(pairs.generator(0), z), generate(pairs.generator(1), z))
    for k in (0, 1):  # row i is pair y[i]'s sample of noise z[i]
        rows = (y == k).nonzero().squeeze(1)
        assert torch.allclose(x[rows], generate(pairs.generator(k), z[rows]), atol=1e-6)


def test_floor_samples_are_real_training_images(image_runs):
    x, _ = _ctx(image_runs["plain"], floor=True).fake(8)
    train = (
        torch.from_numpy(np.array(_ctx(image_runs["plain"]).data.images.train)).float() / 127.5 - 1
    )
    assert all((train == img).flatten(1).all(1).any() for img in x)


def test_parzen_on_an_image_run_and_its_floor(image_runs):
    run = image_runs["plain"]
    r = eval_run(run, ["parzen"], n=30)[0]
    assert r["n_fake"] == 30 and r["sigma"] in r["sigmas"] and math.isfinite(r["ll_mean"])
    assert r["reference"] == "test" and r["validation"] == "train[30:35]"  # the last sixth
    floor = eval_run(run, ["parzen"], n=30, floor=True)[0]
    assert floor["floor"] is True and math.isfinite(floor["ll_mean"])


def test_stacked_mnist_mode_counting_on_hand_built_labels():
    all_modes = mode_histogram_stats(torch.arange(1000).repeat(26), 1000)
    assert all_modes == {"modes": 1000, "num_modes": 1000, "kl": pytest.approx(0.0, abs=1e-12)}
    one = mode_histogram_stats(torch.full((26_000,), 417), 1000)
    assert one["modes"] == 1 and one["kl"] == pytest.approx(math.log(1000))
    half = mode_histogram_stats(torch.cat([torch.arange(500)] * 4), 1000)  # 500 modes, uniform
    assert half["modes"] == 500 and half["kl"] == pytest.approx(math.log(2))
    with pytest.raises(ValueError, match=r"\[0, 1000\)"):
        mode_histogram_stats(torch.tensor([1000]), 1000)


def test_inception_metrics_through_eval_with_a_stand_in_extractor(
    image_runs, tmp_path, monkeypatch, capsys
):
    from gankit.metrics import fidelity

    calls = []

    def features(x, weights, **kw):  # 16-d features and 1008 logits, a cheap stand-in for Inception
        calls.append(len(x))
        f = x.float().flatten(1) @ torch.randn(
            x[0].numel(), 16, generator=torch.Generator().manual_seed(0)
        )
        f = f / 1e4  # O(1) logits: softmax without exact zeros
        return {
            "2048": f.double(),
            "logits_unbiased": torch.nn.functional.pad(f, (0, 992)).double(),
        }

    monkeypatch.setattr(fidelity, "load_inception", lambda path, device: "stand-in")
    monkeypatch.setattr(fidelity, "inception_features", features)
    weights = tmp_path / "not-official.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    run = str(image_runs["plain"])
    args = [
        "eval",
        run,
        "--metrics",
        "fid,kid,is,prc",
        "--n",
        "12",
        "--inception-weights",
        str(weights),
    ]
    assert main(args) == 1  # not the official file: a one-line error saying where to get it
    err = capsys.readouterr().err
    assert (
        len(err.strip().splitlines()) == 1 and "6726825d" in err and "--inception-unverified" in err
    )
    assert main([*args, "--inception-unverified", "--json"]) == 0
    recs = {r["metric"]: r for r in json.loads(capsys.readouterr().out)["results"]}
    assert calls == [12, 5]  # fake, real features: once for the four metrics (5 test images)
    calls.clear()
    assert main([*args, "--inception-unverified", "--metrics", "is"]) == 0
    assert calls == [12]  # IS needs no real images
    assert (
        recs["fid"]["fid"] >= 0
        and recs["kid"]["kid_subset_size"] == 5
        and recs["is"]["is_mean"] >= 1
    )
    assert 0 <= recs["prc"]["precision"] <= 1 and recs["prc"]["prc_k"] == 3
    for r in recs.values():
        assert r["extractor"].startswith("inception-v3-compat") and len(r["weights_sha256"]) == 64
    assert recs["fid"]["n_real"] == 5 and recs["fid"]["reference"] == "test"


def test_classifier_metrics_through_eval(image_runs, capsys):
    from gankit.metrics.classifier import fit_and_cache

    ctx = _ctx(image_runs["plain"])
    assert main(["eval", str(image_runs["plain"]), "--metrics", "classifier"]) == 1
    assert "run `gankit classifier fit folder` first" in capsys.readouterr().err
    info = fit_and_cache(
        "folder", ctx.data, epochs=3, batch_size=8, cache_dir=ctx.cfg.data.cache_dir, progress=False
    )
    for name in ("plain", "cond", "pairs"):
        clf, fid = eval_run(image_runs[name], ["classifier", "fid_clf"], n=20)
        assert clf["num_classes"] == 2 and 1 <= clf["classes_covered"] <= 2 and clf["n_fake"] == 20
        assert 0 <= clf["class_kl"] <= math.log(2) + 1e-9 and 1 <= clf["is_clf"] <= 2 + 1e-9
        assert ("class_acc" in clf) == (
            name != "plain"
        )  # conditional and per-class: the asked class
        assert fid["fid_clf"] >= 0 and fid["reference"] == "test"
        assert clf["weights_sha256"] == fid["weights_sha256"] == info["sha256"]
    floor = eval_run(image_runs["plain"], ["classifier"], n=20, floor=True)[0]
    assert (
        floor["class_acc"] >= 0.9
    )  # real training images with their labels: the classifier's accuracy


def test_records_are_kept_as_they_complete_and_bad_requests_fail_early(image_runs, capsys):
    run = image_runs["plain"]
    before = (run / "eval.jsonl").read_text().count("\n")
    assert main(["eval", str(run), "--metrics", "parzen,dstats", "--n", "10", "--floor"]) == 1
    assert "no --floor" in capsys.readouterr().err
    lines = (run / "eval.jsonl").read_text().splitlines()
    assert len(lines) == before + 1 and json.loads(lines[-1])["metric"] == "parzen"  # not lost
    with pytest.raises(SystemExit):
        main(["eval", str(run), "--n", "0"])
    assert "must be >= 1" in capsys.readouterr().err
    assert main(["eval", str(run), "--metrics", "stacked_mnist"]) == 1
    assert "needs the stacked_mnist dataset" in capsys.readouterr().err


def test_a_per_class_run_on_some_classes_is_compared_with_those_classes(stripes, tmp_path):  # noqa: F811
    over = [*image_overrides(stripes, tmp_path / "cache"), "train.steps=2", "train.per_class=true",
            "train.classes=[1]", "data.batch_size=4"]  # fmt: skip
    _train(["train", "dcgan_mnist", "--run-dir", str(tmp_path / "one"), *over])
    ctx = _ctx(tmp_path / "one", floor=True)
    test_labels = ctx.data.images.test_labels
    for (x, y), n in ((ctx.real(50), int((test_labels == 1).sum())), (ctx.fake(50), 20)):
        assert len(x) == len(y) == n and set(y.tolist()) <= {1}  # class 1 only, all of it
