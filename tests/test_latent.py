"""Latent walks (lerp / slerp, grids and GIFs, class sweeps) and the nearest-neighbour memorisation check."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.checkpoint import load_checkpoint
from gankit.cli import main
from gankit.latent import interpolate, lerp, seed_noise, slerp, walk
from gankit.neighbours import nearest, nn_check
from tests.conftest import image_overrides


def test_lerp_and_slerp_end_at_the_endpoints_and_slerp_follows_the_arc():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    t = torch.linspace(0, 1, 5)
    for f in (lerp, slerp):
        p = f(a, b, t)
        assert p.shape == (5, 2) and torch.allclose(p[0], a) and torch.allclose(p[-1], b, atol=1e-6)
    mid = slerp(a, b, torch.tensor([0.5]))[0]
    # on the arc: 45 degrees, the norm halfway between 1 and 2
    assert torch.allclose(mid, torch.tensor([1.5, 1.5]) / math.sqrt(2), atol=1e-6)
    assert torch.allclose(lerp(a, b, torch.tensor([0.5]))[0], torch.tensor([0.5, 1.0]))
    same = slerp(a, 3 * a, t)  # parallel: the arc degenerates to the line, no NaN
    assert torch.isfinite(same).all() and torch.allclose(same, lerp(a, 3 * a, t))


def test_slerp_keeps_gaussian_noise_on_its_shell_where_lerp_does_not():
    z = torch.randn(2, 512, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.5])
    r = math.sqrt(512)
    assert abs(slerp(z[0], z[1], t).norm() - r) < 0.1 * r
    assert (
        lerp(z[0], z[1], t).norm() < 0.8 * r
    )  # the straight line cuts through the low-density core


def test_walk_shape_and_seed_noise_matches_gankit_sample():
    zs = seed_noise([3, 7, 9], 4, "normal")
    assert torch.equal(zs[1], torch.randn(1, 4, generator=torch.Generator().manual_seed(7))[0])
    w = walk(zs, 6, "slerp")
    assert w.shape == (2, 6, 4) and torch.allclose(w[0, -1], w[1, 0])
    with pytest.raises(Exception, match="choose from: slerp, lerp"):
        walk(zs, 6, "cubic")


@pytest.fixture(scope="module")
def runs(stripes, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("latent")
    out = {}
    for name, extra in (("plain", []), ("cond", ["model.num_classes=2"])):
        args = ["train", "dcgan_mnist", "--run-dir", str(tmp / name)]
        for o in [*image_overrides(stripes, tmp / "cache"), "train.steps=2", *extra]:
            args += ["--set", o]
        assert main(args) == 0
        out[name] = tmp / name
    return out


def test_interpolate_grid_rows_start_and_end_at_the_seeds_samples(runs):
    ckpt = load_checkpoint(runs["plain"] / "checkpoints" / "last.pt")
    x, nrow = interpolate(ckpt, [1, 2, 3], steps=5)
    assert x.shape == (10, 3, 16, 16) and nrow == 5
    from gankit.run import draw

    ends = draw(ckpt, seeds=[1, 2, 3])[0]
    assert torch.allclose(x[0], ends[0], atol=1e-5) and torch.allclose(x[4], ends[1], atol=1e-5)
    assert torch.allclose(x[9], ends[2], atol=1e-5)


def test_interpolate_cli_writes_a_grid_and_a_gif(runs, tmp_path, capsys):
    png, gif = tmp_path / "w.png", tmp_path / "w.gif"
    assert (
        main(
            [
                "interpolate",
                str(runs["plain"]),
                "--seeds",
                "1,2,3",
                "--steps",
                "4",
                "--out",
                str(png),
            ]
        )
        == 0
    )
    assert Image.open(png).size == (4 * 18 + 2, 2 * 18 + 2)  # 16 px images, 2 px padding
    assert main(["interpolate", str(runs["plain"]), "--seeds", "1,2", "--steps", "4", "--mode", "lerp",
                 "--out", str(gif)]) == 0  # fmt: skip
    im = Image.open(gif)
    assert im.n_frames == 4 and im.size == (128, 128)  # upscaled 8x to be visible


def test_conditional_interpolation_fixed_class_and_sweep(runs, tmp_path, capsys):
    ckpt = load_checkpoint(runs["cond"] / "checkpoints" / "last.pt")
    x, nrow = interpolate(ckpt, [0, 1, 2], klass="sweep")
    assert x.shape == (6, 3, 16, 16) and nrow == 2  # a row per seed, a column per class
    fixed, _ = interpolate(ckpt, [0, 1], steps=3, klass="1")
    assert torch.allclose(
        fixed[0], x[1], atol=1e-5
    )  # seed 0 in class 1 = the sweep's (seed 0, class 1)
    run = str(runs["cond"])
    assert main(["interpolate", run, "--seeds", "0,1", "--out", str(tmp_path / "a.png")]) == 2
    assert "--class K" in capsys.readouterr().err
    assert (
        main(
            ["interpolate", run, "--seeds", "0,1", "--class", "7", "--out", str(tmp_path / "a.png")]
        )
        == 2
    )
    assert "choose a class in 0-1 or sweep" in capsys.readouterr().err
    assert (
        main(
            [
                "interpolate",
                run,
                "--seeds",
                "0-2",
                "--class",
                "sweep",
                "--out",
                str(tmp_path / "s.gif"),
            ]
        )
        == 0
    )
    assert Image.open(tmp_path / "s.gif").n_frames == 2  # one frame per class


def test_nearest_matches_brute_force_across_chunks():
    g = torch.Generator().manual_seed(0)
    q, keys = torch.randn(5, 7, generator=g), torch.randn(50, 7, generator=g)
    d, i = nearest(q, keys.split(13), 3)
    full = torch.cdist(q.double(), keys.double())
    ref_d, ref_i = full.topk(3, dim=1, largest=False)
    assert torch.equal(i, ref_i) and torch.allclose(d, ref_d)


def test_nn_check_rows_are_a_sample_then_its_neighbours_in_distance_order(runs, tmp_path, capsys):
    ckpt = load_checkpoint(runs["plain"] / "checkpoints" / "last.pt")
    x, stats = nn_check(ckpt, n=3, k=2)
    assert x.shape == (9, 3, 16, 16) and len(stats["distances"]) == 3
    assert stats["fake_nn"] > 0 and stats["test_nn"] > 0
    assert np.isclose(stats["ratio"], stats["fake_nn"] / stats["test_nn"])
    d = np.array(stats["distances"])
    assert (np.diff(d, axis=1) >= 0).all()  # neighbours in increasing distance
    # the distance printed is the distance to the image shown next to the sample
    assert np.isclose(d[0, 0], (x[0] - x[1]).flatten().double().norm().item(), rtol=1e-4)
    assert (
        main(["nn", str(runs["plain"]), "--n", "2", "--k", "3", "--out", str(tmp_path / "nn.png")])
        == 0
    )
    assert "ratio" in capsys.readouterr().out and Image.open(tmp_path / "nn.png").size == (
        4 * 18 + 2,
        2 * 18 + 2,
    )
