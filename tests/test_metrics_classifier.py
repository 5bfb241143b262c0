"""The domain classifier: metric closed forms, fitting on a tiny synthetic set, files, the cache and
the packaged MNIST / Fashion-MNIST classifiers.

The synthetic set has one bright square per image whose position is the class, so any working CNN
separates it in a few dozen steps; the real-data tests are marked `data` and `slow`.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch

from gankit.cli import main
from gankit.data.image_source import ImageSet, ImageSource, to_float
from gankit.metrics import classifier as clf
from gankit.metrics import classifier_fit
from gankit.metrics.classifier import (
    PACKAGED_SHA256,
    classifier_info,
    classifier_path,
    export_packaged,
    fit_and_cache,
    get_classifier,
    load_classifier,
    packaged_path,
    save_classifier,
)
from gankit.metrics.classifier_fit import fit_classifier
from gankit.metrics.classifier_model import (
    Classifier,
    class_histogram_stats,
    classifier_inception_score,
    conditional_accuracy,
    predict,
)
from gankit.utils import GankitError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
K, SIZE = 4, 16  # synthetic classes and image size
# least test accuracy of each packaged classifier, and its folder under the shared datasets
PACKAGED = {"mnist": (0.99, "MNIST"), "fashion_mnist": (0.90, "FashionMNIST")}


def squares(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, 1, 16, 16) uint8 noise with a bright 5x5 square in the quadrant given by the label."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, K, n)
    x = rng.integers(0, 60, (n, 1, SIZE, SIZE)).astype(np.uint8)
    for i, y in enumerate(labels):
        r, c = 8 * (y // 2) + rng.integers(0, 4), 8 * (y % 2) + rng.integers(0, 4)
        x[i, 0, r : r + 5, c : c + 5] = 255
    return x, labels


def make_source(n_train: int = 256, n_test: int = 64, num_classes: int = K) -> ImageSource:
    tx, ty = squares(n_train, 1)
    vx, vy = squares(n_test, 2)
    classes = [f"q{k}" for k in range(num_classes)]
    s = ImageSet(tx, ty, vx, vy, num_classes, classes, [], "/synthetic/squares-train.npy")
    return ImageSource(s, seed=123, batch_size=32)


@pytest.fixture(scope="module")
def fitted() -> tuple[Classifier, dict]:
    return fit_classifier(make_source(), epochs=2, seed=0, batch_size=32, threads=1)


# ---- pure metric functions


def test_inception_score_closed_forms():
    # one-hot predictions spread evenly over K classes in every split: IS = K exactly
    probs = torch.eye(5).repeat(4, 1)  # (20, 5), each chunk of 10 holds every class twice
    mean, std = classifier_inception_score(probs, splits=2)
    assert mean == pytest.approx(5.0, abs=1e-12) and std == pytest.approx(0.0, abs=1e-12)
    # identical predictions: p(y|x) = p(y), KL = 0, IS = 1
    same = torch.softmax(torch.tensor([0.3, -1.0, 2.0]), 0).repeat(12, 1)
    assert classifier_inception_score(same, splits=3) == pytest.approx((1.0, 0.0), abs=1e-12)
    # two symmetric soft predictions: KL(p(y|x) || p(y)) = 0.9 ln 1.8 + 0.1 ln 0.2 for both
    two = torch.tensor([[0.9, 0.1], [0.1, 0.9]], dtype=torch.float64)
    golden = math.exp(0.9 * math.log(1.8) + 0.1 * math.log(0.2))
    assert classifier_inception_score(two, splits=1)[0] == pytest.approx(golden, rel=1e-9)


def test_inception_score_splits_and_errors():
    # split 1 is all class 0 (IS 1), split 2 is balanced one-hot over 2 classes (IS 2)
    probs = torch.tensor([[1.0, 0], [1.0, 0], [1.0, 0], [0, 1.0]])
    assert classifier_inception_score(probs, splits=2) == pytest.approx((1.5, 0.5), abs=1e-12)
    with pytest.raises(ValueError, match="splits"):
        classifier_inception_score(probs, splits=5)
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        classifier_inception_score(torch.ones(4))


def test_class_histogram_stats():
    one = torch.tensor([[0.1, 0.7, 0.2]]).repeat(5, 1)  # all mass on class 1
    s = class_histogram_stats(one, 3)
    assert s["classes_covered"] == 1 and s["class_hist"] == [0, 5, 0]
    assert s["class_kl"] == pytest.approx(math.log(3)) and s["n"] == 5
    uniform = torch.eye(4).repeat(3, 1)
    s = class_histogram_stats(uniform, 4)
    assert s["classes_covered"] == 4 and s["class_kl"] == pytest.approx(0.0, abs=1e-12)
    # histogram (2, 1, 1, 0)/4 against uniform 1/4: KL = 0.5 ln 2
    hand = torch.tensor([[0.6, 0.4, 0, 0], [0.9, 0, 0.1, 0], [0, 0.8, 0.2, 0], [0.1, 0, 0.5, 0.4]])
    s = class_histogram_stats(hand, 4)
    assert s["class_hist"] == [2, 1, 1, 0] and s["classes_covered"] == 3
    assert s["class_kl"] == pytest.approx(0.5 * math.log(2))
    with pytest.raises(ValueError, match="num_classes=10"):
        class_histogram_stats(hand, 10)


def test_conditional_accuracy():
    probs = torch.tensor([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.9]])
    assert conditional_accuracy(probs, torch.tensor([0, 1, 1, 1])) == pytest.approx(0.75)
    assert conditional_accuracy(probs, torch.tensor([1, 0, 1, 0])) == 0.0
    with pytest.raises(ValueError, match=r"labels \(4,\)"):
        conditional_accuracy(probs, torch.tensor([0, 1]))


# ---- the model


def test_classifier_shapes_and_errors():
    m = Classifier().eval()
    x = torch.rand(3, 1, 28, 28) * 2 - 1
    assert m(x).shape == (3, 10) and m.features(x).shape == (3, 128)
    assert (m.features(x) >= 0).all()
    assert Classifier(3, 5, 32).eval()(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(GankitError, match=r"expects images \(B, 1, 28, 28\), got \(3, 1, 32, 32\)"):
        m(torch.zeros(3, 1, 32, 32))
    with pytest.raises(GankitError, match="multiple of 4"):
        Classifier(img_size=30)


def test_predict_shapes_batching_and_resize():
    m = Classifier(1, K, SIZE)
    m.train()
    x = to_float(torch.from_numpy(squares(7, 3)[0]))
    probs, feats = predict(m, x, batch_size=3)
    assert probs.shape == (7, K) and feats.shape == (7, 128) and probs.device.type == "cpu"
    torch.testing.assert_close(probs.sum(1), torch.ones(7))
    full = predict(m, x, batch_size=1000)  # eval mode, so batching cannot change BatchNorm
    torch.testing.assert_close(probs, full[0]) and torch.testing.assert_close(feats, full[1])
    assert m.training  # mode restored
    big = torch.nn.functional.interpolate(x, size=(32, 32), mode="nearest")  # 2x upscale
    assert predict(m, big)[0].shape == (7, K)  # resized back to the classifier's 16 px


# ---- fitting


def test_fit_reaches_high_accuracy(fitted):
    model, info = fitted
    assert info["test_acc"] >= 0.95
    assert info["epochs"] == 2 and info["n_train"] == 256 and info["n_test"] == 64
    assert info["shape"] == [1, SIZE, SIZE] and info["num_classes"] == K
    assert info["data_cache"] == "/synthetic/squares-train.npy" and info["train_time_s"] > 0
    assert not model.training


def test_fit_is_deterministic_and_leaves_global_rng_alone(fitted):
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    threads = torch.get_num_threads()
    again, info = fit_classifier(make_source(), epochs=2, seed=0, batch_size=32, threads=1)
    torch.testing.assert_close(torch.rand(3), expected)  # fit used its own RNG state
    assert info["threads"] == 1 and torch.get_num_threads() == threads  # restored
    for (k, a), b in zip(fitted[0].state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    assert info["test_acc"] == fitted[1]["test_acc"]
    other, _ = fit_classifier(make_source(), epochs=1, seed=1, batch_size=32, threads=1)
    assert not torch.equal(other.head[1].weight, again.head[1].weight)


def test_fit_rejects_unlabelled_data():
    with pytest.raises(GankitError, match="labelled dataset"):
        fit_classifier(make_source(num_classes=0), epochs=1)


# ---- files and the cache


def test_save_load_round_trip(fitted, tmp_path):
    model, info = fitted
    path = tmp_path / "squares.pt"
    sha = save_classifier(model, info, path)
    assert sha == clf._sha256(path) and len(sha) == 64
    raw = torch.load(path, weights_only=True)
    assert raw["format"] == "gankit-classifier" and raw["kwargs"] == {
        "in_channels": 1,
        "num_classes": K,
        "img_size": SIZE,
    }
    loaded, info2 = load_classifier(path, sha)
    assert info2 == info and not loaded.training
    x = torch.rand(5, 1, SIZE, SIZE) * 2 - 1
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)


def test_tampered_or_corrupt_file_is_a_one_line_error(fitted, tmp_path):
    path = tmp_path / "mnist.pt"
    sha = save_classifier(*fitted, path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(GankitError) as e:
        load_classifier(path, sha)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and "`gankit classifier fit mnist`" in msg
    assert "corrupt" in msg
    path.write_bytes(b"not a torch file")  # without a checksum: unreadable, same advice
    with pytest.raises(GankitError, match=r"cannot read classifier .*gankit classifier fit mnist"):
        load_classifier(path)


def test_get_classifier_on_empty_cache_names_the_fit_command(tmp_path):
    # a dataset without a packaged classifier (mnist and fashion_mnist have one: tests below)
    path = tmp_path / "classifiers" / "squares.pt"
    with pytest.raises(GankitError) as e:
        get_classifier("squares", str(tmp_path))
    assert str(e.value) == (
        f"no squares classifier in {path}; run `gankit classifier fit squares` first"
    )
    assert classifier_info("squares", str(tmp_path)) is None


def test_classifier_path_follows_the_cache_rule(tmp_path, monkeypatch):
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "env"))
    assert classifier_path("mnist") == tmp_path / "env" / "classifiers" / "mnist.pt"
    assert classifier_path("mnist", str(tmp_path)) == tmp_path / "classifiers" / "mnist.pt"
    monkeypatch.delenv("GANKIT_CACHE")
    assert classifier_path("x") == Path("~/.cache/gankit/classifiers/x.pt").expanduser()


def test_fit_and_cache_writes_reuses_and_verifies(tmp_path, monkeypatch, capsys):
    cache = str(tmp_path)
    meta = fit_and_cache(
        "squares", make_source(), epochs=2, seed=0, cache_dir=cache, threads=1, command="c 1"
    )
    path = classifier_path("squares", cache)
    side = json.loads(path.with_suffix(".json").read_text())
    assert meta == {**side, "source": "local", "reused": False}
    assert side["sha256"] == clf._sha256(path) and side["command"] == "c 1"
    assert side["test_acc"] >= 0.95 and side["path"] == str(path) and side["gankit"]
    assert side["data_cache"] == "/synthetic/squares-train.npy" and side["time"]
    assert side["torch"] == torch.__version__ and side["threads"] == 1
    assert "test acc" in capsys.readouterr().err  # progress printed
    model, info = get_classifier("squares", cache)
    assert info["test_acc"] == side["test_acc"] and model.num_classes == K
    assert info["source"] == "local" and info["sha256"] == side["sha256"]

    def no_fit(*a, **k):
        raise AssertionError("refitted a cached classifier")

    monkeypatch.setattr(clf, "fit_classifier", no_fit)
    reused = fit_and_cache("squares", make_source(), epochs=2, seed=0, cache_dir=cache, threads=1)
    assert reused == {**info, "reused": True}
    monkeypatch.undo()
    again = fit_and_cache(
        "squares", make_source(), epochs=1, seed=1, cache_dir=cache, force=True, threads=1
    )
    assert not again["reused"] and again["sha256"] != side["sha256"] and again["epochs"] == 1
    path.write_bytes(path.read_bytes()[:-10])  # damage it: the sidecar's sha256 catches it
    with pytest.raises(
        GankitError, match="corrupt.*re-run `gankit classifier fit squares --force`"
    ):
        get_classifier("squares", cache)
    with pytest.raises(GankitError, match="corrupt"):  # without --force: no silent reuse either
        fit_and_cache("squares", make_source(), cache_dir=cache)


# ---- real data


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").exists(), reason="no shared MNIST")
def test_real_mnist_one_epoch(tmp_path):
    from gankit.data import build_data

    data = build_data(
        "mnist", {}, 0, 128, options={"root": str(SHARED), "cache_dir": str(tmp_path)}
    )
    # one epoch (~25-30 s on one core) instead of the default 4 (~90-105 s, 99.28-99.32 % here)
    model, info = fit_classifier(data, epochs=1, seed=0, threads=1)
    assert info["test_acc"] >= 0.985, info["test_acc"]  # 98.89 % measured
    x, y = data.held_out_labeled(500)
    probs, feats = predict(model, x)
    assert conditional_accuracy(probs, y) >= 0.97 and feats.shape == (500, 128)
    assert class_histogram_stats(probs, 10)["classes_covered"] == 10


# ---- the packaged classifiers


def test_every_packaged_classifier_has_a_test_threshold():
    assert set(PACKAGED) == set(PACKAGED_SHA256) == {"mnist", "fashion_mnist"}


@pytest.mark.parametrize("dataset", sorted(PACKAGED))
def test_packaged_file_is_shipped_intact_with_its_record(dataset):
    path = packaged_path(dataset)
    assert path == Path(str(resources.files("gankit") / "weights" / f"classifier_{dataset}.pt"))
    assert path.is_file() and path.stat().st_size < 4 << 20  # small package data
    assert clf._sha256(path) == PACKAGED_SHA256[dataset]
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "gankit-classifier"
    assert raw["kwargs"] == {"in_channels": 1, "num_classes": 10, "img_size": 28}
    side = json.loads(path.with_suffix(".json").read_text())
    assert side["sha256"] == PACKAGED_SHA256[dataset] and side["file"] == path.name
    assert side["test_acc"] >= PACKAGED[dataset][0] and side["test_acc"] == raw["info"]["test_acc"]
    assert (side["n_train"], side["n_test"], side["epochs"], side["seed"]) == (60000, 10000, 4, 0)
    assert side["command"].startswith(f"gankit classifier fit {dataset} ") and side["gankit"]


def test_empty_cache_uses_the_packaged_classifier(tmp_path, monkeypatch):
    def no_fit(*a, **k):
        raise AssertionError("fitted although a packaged classifier exists")

    monkeypatch.setattr(clf, "fit_classifier", no_fit)
    model, info = get_classifier("mnist", str(tmp_path))
    assert info["source"] == "packaged" and info["sha256"] == PACKAGED_SHA256["mnist"]
    assert info["path"] == str(packaged_path("mnist")) and info["dataset"] == "mnist"
    assert info["test_acc"] >= 0.99 and model.num_classes == 10 and not model.training
    assert classifier_info("mnist", str(tmp_path)) == info
    assert fit_and_cache("mnist", None, cache_dir=str(tmp_path)) == {**info, "reused": True}
    assert not (tmp_path / "classifiers").exists()  # nothing fitted, nothing written


def test_a_local_refit_wins_until_deleted(tmp_path):
    cache = str(tmp_path)
    path = classifier_path("mnist", cache)
    meta = fit_and_cache("mnist", make_source(), epochs=1, cache_dir=cache, force=True, threads=1)
    model, info = get_classifier("mnist", cache)
    assert info["source"] == "local" and info["sha256"] == meta["sha256"] == clf._sha256(path)
    assert info["sha256"] != PACKAGED_SHA256["mnist"] and model.num_classes == K
    assert info["path"] == str(path)
    path.with_suffix(".json").unlink()  # an incomplete entry (fit interrupted) is not a refit
    assert get_classifier("mnist", cache)[1]["source"] == "packaged"
    fit_and_cache("mnist", make_source(), epochs=1, cache_dir=cache, force=True, threads=1)
    path.write_bytes(path.read_bytes()[:-10])  # a damaged refit: an error, not the packaged one
    with pytest.raises(GankitError) as e:
        get_classifier("mnist", cache)
    assert f"delete {path} to use the packaged classifier" in str(e.value)
    path.unlink()  # the way back
    assert get_classifier("mnist", cache)[1]["source"] == "packaged"


def test_tampered_packaged_file_is_a_one_line_error(tmp_path, monkeypatch):
    copy = tmp_path / "classifier_mnist.pt"
    data = bytearray(packaged_path("mnist").read_bytes())
    data[len(data) // 2] ^= 0x01
    copy.write_bytes(bytes(data))
    copy.with_suffix(".json").write_bytes(packaged_path("mnist").with_suffix(".json").read_bytes())
    monkeypatch.setattr(clf, "packaged_path", lambda dataset: tmp_path / f"classifier_{dataset}.pt")
    with pytest.raises(GankitError) as e:
        get_classifier("mnist", str(tmp_path / "cache"))
    msg = str(e.value)
    assert "\n" not in msg and str(copy) in msg and "corrupt" in msg
    assert "reinstall gankit" in msg and "`gankit classifier fit mnist --force`" in msg
    copy.unlink()
    with pytest.raises(GankitError, match=f"{copy} does not exist.*reinstall gankit"):
        get_classifier("mnist", str(tmp_path / "cache"))


def test_cli_reports_the_packaged_one_and_force_refits_locally(tmp_path, monkeypatch, capsys):
    cache = str(tmp_path)
    path = classifier_path("mnist", cache)

    def no_data(*a, **k):
        raise AssertionError("built the dataset without --force")

    monkeypatch.setattr("gankit.data.build_data", no_data)
    assert main(["classifier", "fit", "mnist", "--cache-dir", cache]) == 0
    out = capsys.readouterr().out
    assert "(packaged; --force refits locally)" in out and PACKAGED_SHA256["mnist"][:16] in out
    assert not path.exists()
    monkeypatch.setattr("gankit.data.build_data", lambda *a, **k: make_source())
    args = ["classifier", "fit", "mnist", "--cache-dir", cache, "--epochs", "1", "--threads", "1"]
    assert main([*args, "--force"]) == 0
    out = capsys.readouterr().out
    assert "(fitted now)" in out and "records now use this local refit (source local)" in out
    assert f"delete {path}" in out and path.is_file()
    assert json.loads(path.with_suffix(".json").read_text())["command"] == (
        "gankit classifier fit mnist --epochs 1 --seed 0 --device cpu --threads 1 --force"
    )
    monkeypatch.setattr("gankit.data.build_data", no_data)
    assert main(args) == 0
    assert "an earlier local refit; --force refits again" in capsys.readouterr().out


def test_export_packaged_copies_a_local_refit(tmp_path):
    cache, dest = str(tmp_path / "cache"), tmp_path / "weights"
    with pytest.raises(GankitError, match="no local squares classifier"):
        export_packaged("squares", cache, dest)
    meta = fit_and_cache(
        "squares", make_source(), epochs=1, cache_dir=cache, threads=1, command="fit it"
    )
    side = export_packaged("squares", cache, dest)
    target = dest / "classifier_squares.pt"
    assert target.read_bytes() == classifier_path("squares", cache).read_bytes()
    assert side == json.loads(target.with_suffix(".json").read_text())
    assert side["sha256"] == meta["sha256"] and side["command"] == "fit it"
    assert side["test_acc"] == meta["test_acc"] and side["file"] == target.name
    assert export_packaged("squares", cache, dest, command="other")["command"] == "other"


@pytest.mark.data
@pytest.mark.slow
@pytest.mark.parametrize("dataset", sorted(PACKAGED))
def test_packaged_accuracy_on_the_real_test_split(dataset, tmp_path):
    least, folder = PACKAGED[dataset]
    if not (SHARED / folder / "raw").exists():
        pytest.skip(f"no shared {folder}")
    from gankit.data import build_data

    data = build_data(
        dataset, {}, 0, 128, options={"root": str(SHARED), "cache_dir": str(tmp_path)}
    )
    model, info = get_classifier(dataset, str(tmp_path))
    assert info["source"] == "packaged"
    images = data.images
    acc = classifier_fit._accuracy(model, images.test, images.test_labels, torch.device("cpu"))
    # the recorded accuracy was measured on this split; another thread count may flip a few argmaxes
    assert acc >= least and acc == pytest.approx(info["test_acc"], abs=1e-3)
