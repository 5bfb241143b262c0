"""Image GANs end to end on a folder of PNGs the code has never seen: run directory, grids, GIF,
D-output statistics, BatchNorm untouched by sampling, resume, `gankit sample`, the bench reference."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.cli import main
from gankit.config import load_config
from gankit.observe import Probes
from gankit.pair import build_pair
from gankit.trainer import train
from tests.conftest import image_overrides


@pytest.fixture(scope="module")
def image_run(stripes, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("img")
    run = tmp / "run"
    args = ["train", "dcgan_mnist", "--run-dir", str(run)]
    for o in image_overrides(stripes, tmp / "cache"):
        args += ["--set", o]
    assert main(args) == 0
    return run


def test_a_folder_of_new_images_trains_without_code_change(image_run):
    for f in ("config.yaml", "reals.png", "checkpoints/last.pt", "plots/samples.gif",
              "plots/samples.png", "plots/dstats.png", "plots/losses.png"):  # fmt: skip
        assert (image_run / f).is_file(), f
    grids = sorted(p.name for p in (image_run / "samples").glob("*.png"))
    assert grids == ["000000.png", "000004.png", "000008.png"]
    grid = Image.open(image_run / "samples" / "000008.png")
    assert grid.mode == "RGB" and grid.size == (4 * 16 + 5 * 2,) * 2  # 16 images, 4 per row, pad 2
    gif = Image.open(image_run / "plots" / "samples.gif")
    assert gif.n_frames == 3
    ckpt = torch.load(image_run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["data_shape"] == [3, 16, 16] and ckpt["step"] == 8


def test_d_statistics_are_logged_at_the_sample_cadence(image_run):
    rows = [json.loads(x) for x in (image_run / "metrics.jsonl").read_text().splitlines()]
    with_stats = [r for r in rows if "dstat_train_mean" in r]
    assert [r["step"] for r in with_stats] == [0, 4, 8]
    for r in with_stats:
        for part in ("train", "fake", "test"):
            assert 0.0 <= r[f"dstat_{part}_mean"] <= 1.0
            assert r[f"dstat_{part}_std"] >= 0.0


def test_sample_grid_and_per_seed_images(image_run, tmp_path):
    assert main(["sample", str(image_run), "--n", "9", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size == (3 * 16 + 4 * 2,) * 2
    assert main(["sample", str(image_run), "--seeds", "0-3", "--out", str(tmp_path / "a")]) == 0
    assert main(["sample", str(image_run), "--seeds", "2,3", "--out", str(tmp_path / "b")]) == 0
    files = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files == [f"seed_{i:06d}.png" for i in range(4)]
    for name in ("seed_000002.png", "seed_000003.png"):  # image by image, whatever else is asked
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    assert Image.open(tmp_path / "a" / "seed_000000.png").size == (16, 16)


def test_observing_leaves_batchnorm_stats_and_modes_alone(stripes, tmp_path):
    from gankit.data import data_from_config

    cfg = load_config("dcgan_mnist", image_overrides(stripes, tmp_path / "cache"))
    data = data_from_config(cfg)
    state = build_pair(cfg, data.shape, torch.device("cpu"))
    (tmp_path / "samples").mkdir()
    before = copy.deepcopy((state.G.state_dict(), state.D.state_dict()))
    rec = Probes.build(cfg, data, [None]).snapshot({None: state}, 0, tmp_path / "samples")
    after = (state.G.state_dict(), state.D.state_dict())
    for b, a in zip(before, after, strict=True):
        assert all(torch.equal(b[k], a[k]) for k in b)  # running_mean/var included
    assert state.G.training and state.D.training
    assert {"dstat_train_mean", "dstat_fake_std", "dstat_test_mean"} <= set(rec)


def test_image_resume_is_bit_identical(stripes, tmp_path, split_resume):
    split_resume(
        "dcgan_mnist", [*image_overrides(stripes, tmp_path / "cache"), "train.channels_last=true"]
    )


def test_2014_gan_resume_is_bit_identical(stripes, tmp_path, split_resume):
    """gan2014_mnist's machinery across a resume: the simultaneous SGD update with its momentum ramp
    and exponential learning rate, maxout D with dropout, the data-mean output bias."""
    split_resume("gan2014_mnist", [
        "data.name=folder", f"data.params={{path: {stripes}}}", f"data.cache_dir={tmp_path / 'c'}",
        "data.img_size=16", "data.channels=1", "data.batch_size=8", "model.g.hidden=[16]",
        "model.d.hidden=[8]", "optim.momentum_steps=6", "train.epochs=0", "train.steps=8",
        "train.sample_every=4", "train.sample_n=16", "train.dstats_n=8", "train.ckpt_every=4",
        "train.progress=false", "train.threads=1",
    ])  # fmt: skip


def test_sample_every_zero_means_once_per_epoch(stripes, tmp_path):
    # 3 epochs of the folder's train split -> a grid at step 0 and at the end of each epoch
    over = image_overrides(stripes, tmp_path / "cache")
    cfg = load_config("dcgan_mnist", [*over, "train.sample_every=0", "train.epochs=3"])
    state = train(cfg, tmp_path / "r")
    bpe = state.step // 3
    assert bpe >= 2
    grids = sorted(int(p.stem) for p in (tmp_path / "r" / "samples").glob("*.png"))
    assert grids == [bpe * e for e in range(4)]


def test_conditional_runs_pass_labels_and_unconditional_ones_do_not(stripes, tmp_path):
    over = image_overrides(stripes, tmp_path / "cache")
    state = train(load_config("dcgan_mnist", [*over, "model.num_classes=2", "train.steps=2"]),
                  tmp_path / "c")  # fmt: skip
    assert state.G.num_classes == 2 and state.step == 2


def test_bad_image_data_is_a_one_line_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    args = ["train", "dcgan_mnist", "--run-dir", str(tmp_path / "r")]
    for o in image_overrides(tmp_path / "empty", tmp_path / "cache"):
        args += ["--set", o]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no images" in err and "empty" in err


@pytest.mark.parametrize("size", [28, 64])
def test_bench_reference_is_the_same_architecture(size):
    from gankit.bench.dcgan import WIDTH, Z_DIM, textbook_models
    from gankit.models import build_models

    ref_g, ref_d = textbook_models(size)
    g, d = build_models("dcgan", Z_DIM, (1, size, size), 0, {"ngf": WIDTH}, {"ndf": WIDTH})
    shapes = lambda m: sorted(tuple(p.shape) for p in m.parameters())  # noqa: E731
    assert shapes(ref_g) == shapes(g)
    assert shapes(ref_d) == shapes(d)


@pytest.fixture(scope="module")
def all_formats(tmp_path_factory):
    """One data root holding tiny MNIST, Fashion-MNIST, CIFAR-10 and CelebA files in their layouts."""
    from tests.conftest import make_celeba, make_cifar, make_mnist

    root = tmp_path_factory.mktemp("formats")
    make_mnist(root, n=(12, 6))
    make_mnist(root, "FashionMNIST", n=(12, 6))
    make_cifar(root, per_batch=4)
    make_celeba(root, n=14, size=(70, 80))
    return root


IMAGE_PRESETS = ["gan2014_mnist", "gan_mlp_mnist", "dcgan_mnist", "dcgan_fashion_mnist", "lindcgan_mnist",
                 "dcgan_cifar10", "upsample_cifar10", "dcgan_celeba64", "dcgan_celeba64_few", "linear_celeba64",
                 "cgan_mnist", "cdcgan_mnist", "cdcgan_fashion_mnist", "cdcgan_cifar10",
                 "classdcgan_mnist", "classdcgan_cifar10", "dcgan_stacked_mnist"]  # fmt: skip


@pytest.mark.parametrize("preset", IMAGE_PRESETS)
def test_every_image_preset_trains_on_its_data_format(preset, all_formats, tmp_path):
    cfg = load_config(preset)
    width = ["model.g.hidden=[16]", "model.d.hidden=[16]"] if cfg.model.name == "mlp" else [
        "model.g.ngf=4", "model.d.ndf=4"]  # fmt: skip
    over = [f"data.root={all_formats}", f"data.cache_dir={tmp_path / 'cache'}", "data.batch_size=4",
            "train.epochs=0", "train.steps=2", "train.sample_every=2", "train.sample_n=4",
            "train.dstats_n=4", "train.progress=false", "train.threads=1", *width]  # fmt: skip
    if cfg.data.name == "stacked_mnist":  # 16 stacks of the tiny files, not the default 128,000
        over += ["data.params.n_train=16", "data.params.n_test=8"]
    if cfg.data.params.get("n_train") and cfg.data.name == "mnist":  # gan2014_mnist's train[:50000]
        over += ["data.params.n_train=10"]
    if cfg.train.per_class:  # the tiny files have a few images per class: train the largest class
        from gankit.data import data_from_config

        labels = data_from_config(load_config(preset, over)).images.train_labels
        over += ["data.batch_size=2", f"train.classes=[{int(np.bincount(labels).argmax())}]"]
    state = train(load_config(preset, over), tmp_path / "r")
    assert state.step == 2
    size = cfg.data.img_size
    G = next(iter(state.pairs.values())).G if cfg.train.per_class else state.G
    assert tuple(G.data_shape) == (cfg.data.channels, size, size)
    assert G.num_classes == (0 if cfg.train.per_class else cfg.model.num_classes)
    assert (tmp_path / "r" / "samples" / "000002.png").is_file()


STABILISED = ["train.augment=color,translation,cutout", "model.d={ndf: 4, pack: 2, minibatch_std: 2,"
              " spectral_norm: true}", "model.g={ngf: 4, spectral_norm: true}", "loss.name=rpgan",
              "loss.r1_weight=0.1", "loss.r2_weight=0.1"]  # fmt: skip


def test_stabilised_image_resume_is_bit_identical(stripes, tmp_path, split_resume):
    """DiffAugment's stream is checkpointed: 8 steps == 4 + resume + 4 with every stabiliser on."""
    over = [*image_overrides(stripes, tmp_path / "cache"), "train.channels_last=true", *STABILISED]
    full, _ = split_resume("dcgan_mnist", over)
    assert "augment" in full["pairs"][0]["rng"]


def test_augment_changes_what_d_sees_and_g_gets_its_gradient(stripes, tmp_path):
    over = image_overrides(stripes, tmp_path / "cache") + ["train.steps=2"]
    plain = train(load_config("dcgan_mnist", over), tmp_path / "plain")
    aug = train(load_config("dcgan_mnist", [*over, "train.augment=translation"]), tmp_path / "aug")
    g_plain, g_aug = plain.G.state_dict(), aug.G.state_dict()
    assert any(not torch.equal(g_plain[k], g_aug[k]) for k in g_plain)  # G trained through it


def test_fp16_autocast_has_a_grad_scaler_that_resumes_exactly(stripes, tmp_path, split_resume):
    """train.amp=fp16 (for GPUs whose bf16 is slow; CPU autocast runs it too): losses scaled by a
    GradScaler whose state is checkpointed, so 4 + resume + 4 steps == 8 steps."""
    over = [*image_overrides(stripes, tmp_path / "cache"), "train.amp=fp16"]
    full, _ = split_resume("dcgan_mnist", over)
    entry = full["pairs"][0]
    assert entry["scaler"]["scale"] > 0 and entry["scaler"]["_growth_tracker"] >= 0
    assert all(torch.isfinite(v).all() for v in entry["G"].values() if v.is_floating_point())
