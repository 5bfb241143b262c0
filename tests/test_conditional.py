"""Conditional GANs: fake-label draws, label plumbing through the trainer, class grids, --class."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.cli import main
from gankit.config import load_config
from gankit.pair import fake_labels
from gankit.trainer import train
from tests.conftest import image_overrides


def test_uniform_fake_labels_cover_every_class_including_the_last():
    g = torch.Generator().manual_seed(0)
    real = torch.zeros(5000, dtype=torch.long)
    y = fake_labels(real, 10, "uniform", g)
    counts = torch.bincount(y, minlength=10)
    assert counts.shape == (10,) and (counts > 400).all()  # ~500 each, class 9 included
    assert y.max() == 9 and y.min() == 0


def test_data_fake_labels_follow_the_real_batch_and_unconditional_gets_none():
    g = torch.Generator().manual_seed(0)
    real = torch.tensor([3, 3, 1, 0])
    assert torch.equal(fake_labels(real, 10, "data", g), real)
    assert fake_labels(None, 0, "uniform", g) is None
    assert fake_labels(real, 0, "uniform", g) is None


@pytest.fixture(scope="module")
def cond_run(stripes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cond")
    over = image_overrides(stripes, tmp / "cache") + ["model.num_classes=2", "train.sample_n=6"]
    train(load_config("dcgan_mnist", over), tmp / "run")
    return tmp / "run"


def test_training_writes_a_class_grid(cond_run):
    # 2 classes x ceil(6 / 2) = 3 fixed-noise columns: one row per class
    grid = Image.open(cond_run / "samples" / "000008.png")
    assert grid.size == (3 * 16 + 4 * 2, 2 * 16 + 3 * 2)


def test_sample_class_k_all_and_errors(cond_run, tmp_path, capsys):
    assert (
        main(
            [
                "sample",
                str(cond_run),
                "--class",
                "1",
                "--n",
                "4",
                "--out",
                str(tmp_path / "one.npy"),
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "sample",
                str(cond_run),
                "--class",
                "all",
                "--seeds",
                "0-2",
                "--out",
                str(tmp_path / "d"),
            ]
        )
        == 0
    )
    files = sorted(p.name for p in (tmp_path / "d").iterdir())
    assert files == [f"class_{k}_seed_{s:06d}.png" for k in (0, 1) for s in range(3)]
    # the same seed in two classes: same noise, different label -> different images (compared as
    # floats: an 8-step G is nearly grey, so its 8-bit PNGs may round to the same bytes)
    for k in (0, 1):
        out = str(tmp_path / f"c{k}.npy")
        assert main(["sample", str(cond_run), "--class", str(k), "--seeds", "1", "--out", out]) == 0
    a, b = np.load(tmp_path / "c0.npy"), np.load(tmp_path / "c1.npy")
    assert a.shape == b.shape == (1, 3, 16, 16) and not np.array_equal(a, b)
    png = Image.open(tmp_path / "d" / "class_0_seed_000001.png")
    assert png.size == (16, 16)
    capsys.readouterr()
    assert main(["sample", str(cond_run), "--class", "2", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "choose from 0-1 or all" in err


def test_class_on_an_unconditional_model_is_an_error(stripes, tmp_path, capsys):
    over = image_overrides(stripes, tmp_path / "cache") + ["train.steps=2"]
    train(load_config("dcgan_mnist", over), tmp_path / "u")
    capsys.readouterr()
    assert (
        main(["sample", str(tmp_path / "u"), "--class", "0", "--out", str(tmp_path / "x.png")]) == 2
    )
    assert "unconditional" in capsys.readouterr().err


def test_conditional_step_feeds_fake_labels_to_g_and_d(stripes, tmp_path, monkeypatch):
    from gankit import pair as train_mod

    seen = []
    real_fn = train_mod.fake_labels

    def spy(real, k, mode, g):
        out = real_fn(real, k, mode, g)
        seen.append((real.clone(), out.clone()))
        return out

    monkeypatch.setattr(train_mod, "fake_labels", spy)
    over = image_overrides(stripes, tmp_path / "cache") + ["model.num_classes=2", "train.steps=3"]
    train(load_config("dcgan_mnist", over), tmp_path / "r")
    assert len(seen) == 3 and all(len(f) == len(r) == 8 for r, f in seen)
    assert any(not torch.equal(r, f) for r, f in seen)  # uniform draws, not the real labels


def test_sample_class_draws_from_the_per_class_pair(stripes, tmp_path, capsys):
    from gankit.checkpoint import load_checkpoint
    from gankit.factory import RunModels
    from gankit.run import draw

    over = image_overrides(stripes, tmp_path / "cache") + ["train.per_class=true", "train.steps=4"]
    train(load_config("dcgan_mnist", over), tmp_path / "pc")
    ckpt = load_checkpoint(tmp_path / "pc" / "checkpoints" / "last.pt")
    x, nrow, ids = draw(ckpt, n=3, seed=5, klass="1")
    G1 = RunModels.from_checkpoint(ckpt).generator(1).eval()
    z = torch.randn(3, G1.z_dim, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(x, G1(z))  # class 1 comes from pair 1
    assert ids == [1]
    grid, nrow, ids = draw(ckpt, n=4, klass="all")
    assert ids == [0, 1] and nrow == 2 and grid.shape[0] == 4
    assert (
        main(["sample", str(tmp_path / "pc"), "--class", "all", "--out", str(tmp_path / "g.png")])
        == 0
    )
    capsys.readouterr()
    # eval draws each class's samples from its pair (see test_eval); dstats needs a single D
    assert main(["eval", str(tmp_path / "pc"), "--metrics", "sliced_w1"]) == 0
    assert main(["eval", str(tmp_path / "pc"), "--metrics", "dstats"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "per-class" in err
