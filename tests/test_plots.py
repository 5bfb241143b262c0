from __future__ import annotations

import math

import numpy as np
import pytest
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from PIL import Image

from gankit.plots import (
    decision_surface,
    density1d,
    density2d,
    grid_points,
    loss_curves,
    moments1d,
    save_figure,
    save_gif,
    scatter2d,
    toy_frames,
)


def _history(n: int = 6) -> list[dict]:
    records = [
        {
            "step": 10 * i,
            "loss_d": 1.4 - 0.1 * i,
            "loss_g": 0.7 + 0.1 * i,
            "d_real": 0.6,
            "d_fake": 0.4,
        }
        for i in range(n)
    ]
    del records[2]["d_fake"]
    records.append({"fid": 12.3})  # an eval record without step: ignored
    return records


def _check_png(path, size: tuple[int, int] | None = None) -> None:
    assert path.is_file()
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        assert im.width > 0
        assert im.height > 0
        if size is not None:
            assert im.size == size


def _blue_mask(frame: Image.Image) -> np.ndarray:
    rgb = np.asarray(frame).astype(int)
    return (
        rgb[..., 2] - rgb[..., 0] > 30
    )  # real points are blue; red, black, gray and white are not


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


def test_loss_curves_panels_and_lines(tmp_path):
    fig = loss_curves(_history())
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    ax_loss, ax_d = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["loss_d", "loss_g"]
    assert len(ax_d.lines) == 3  # d_real, d_fake, 0.5 reference
    by_label = {line.get_label(): line for line in ax_d.lines}
    assert len(by_label["d_real"].get_xdata()) == 6
    assert len(by_label["d_fake"].get_xdata()) == 5  # record 2 lacks d_fake
    refs = [line for line in ax_d.lines if line.get_linestyle() == "--"]
    assert len(refs) == 1
    np.testing.assert_allclose(refs[0].get_ydata(), [0.5, 0.5])
    _check_png(save_figure(fig, tmp_path / "losses.png"))


def test_loss_curves_skips_missing_keys():
    fig = loss_curves([{"step": 0, "loss_d": 1.0}, {"step": 1, "loss_d": 0.9, "loss_g": None}])
    ax_loss, ax_d = fig.axes
    assert [line.get_label() for line in ax_loss.lines] == ["loss_d"]
    assert len(ax_d.lines) == 1  # only the reference line


@pytest.mark.parametrize("history", [[], [{"fid": 3.0}], [{"loss_d": 1.0}]])
def test_loss_curves_without_data_raises(history):
    with pytest.raises(ValueError, match="no metrics to plot"):
        loss_curves(history)


def test_scatter2d(tmp_path, rng):
    real, fake = rng.normal(size=(50, 2)), rng.normal(size=(30, 2)) + 2
    fig = scatter2d(real, fake, title="ring")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert [len(c.get_offsets()) for c in ax.collections] == [50, 30]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["real", "generated"]
    assert ax.get_aspect() == 1.0
    assert ax.get_title() == "ring"
    _check_png(save_figure(fig, tmp_path / "scatter.png"))


def test_scatter2d_rejects_bad_shape(rng):
    with pytest.raises(ValueError, match=r"\(N, 2\)"):
        scatter2d(rng.normal(size=(10, 3)), rng.normal(size=(10, 2)))


def test_density2d(tmp_path, rng):
    fake, real = rng.normal(size=(500, 2)), rng.normal(size=(100, 2))
    fig = density2d(fake, real, bins=20)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # main + colour bar
    ax = fig.axes[0]
    mesh = ax.collections[0]
    assert isinstance(mesh.norm, LogNorm)
    assert mesh.get_array().sum() == 500  # default limits contain every point
    assert len(ax.collections[1].get_offsets()) == 100
    _check_png(save_figure(fig, tmp_path / "density.png"))


def test_density2d_explicit_limits(rng):
    fig = density2d(rng.normal(size=(200, 2)), bins=10, limits=(-1.0, 1.0, -2.0, 2.0))
    ax = fig.axes[0]
    assert ax.get_xlim() == pytest.approx((-1.0, 1.0))
    assert ax.get_ylim() == pytest.approx((-2.0, 2.0))


def test_grid_points_order_matches_reshape():
    xs, ys, points = grid_points((-1.0, 2.0, -3.0, 0.0), n=7)
    assert points.shape == (49, 2)
    assert points.dtype == np.float32
    np.testing.assert_allclose(xs, np.linspace(-1, 2, 7))
    np.testing.assert_allclose(ys, np.linspace(-3, 0, 7))
    # A function of x only must vary along columns (axis 1) and be constant down each column.
    prob = (1 / (1 + np.exp(-points[:, 0]))).reshape(len(ys), len(xs))
    np.testing.assert_allclose(prob, np.broadcast_to(prob[0], prob.shape))
    np.testing.assert_allclose(prob[0], 1 / (1 + np.exp(-xs)), rtol=1e-6)
    assert np.all(np.diff(prob[0]) > 0)
    np.testing.assert_allclose(points[:, 1].reshape(len(ys), len(xs))[:, 0], ys, rtol=1e-6)


def test_decision_surface(tmp_path, rng):
    xs, ys, points = grid_points((-2.0, 2.0, -2.0, 2.0), n=30)
    prob = (1 / (1 + np.exp(-points[:, 0]))).reshape(len(ys), len(xs))
    fig = decision_surface(
        xs, ys, prob, real=rng.normal(size=(40, 2)), fake=rng.normal(size=(20, 2))
    )
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    ax, cax = fig.axes
    assert cax.get_ylabel() == "D(x)"
    mesh = ax.collections[0]
    assert mesh.get_clim() == (0.0, 1.0)
    assert [len(c.get_offsets()) for c in ax.collections[1:]] == [40, 20]
    _check_png(save_figure(fig, tmp_path / "dsurf.png"))


def test_decision_surface_rejects_transposed_prob():
    xs, ys = np.linspace(0, 1, 5), np.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="len\\(ys\\), len\\(xs\\)"):
        decision_surface(xs, ys, np.zeros((5, 3)))


def test_density1d(tmp_path, rng):
    fake = rng.normal(size=(400, 1))  # (N, 1) accepted
    real = rng.normal(size=400)
    fig = density1d(fake, lambda x: np.exp(-(x**2) / 2) / math.sqrt(2 * math.pi), real, bins=20)
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert sorted(labels) == ["generated", "real", "target"]
    bars = [p for p in ax.patches if p.get_label() != "real" and hasattr(p, "get_height")]
    area = sum(p.get_height() * p.get_width() for p in bars)
    assert area == pytest.approx(1.0)  # density=True
    _check_png(save_figure(fig, tmp_path / "d1.png"))


def test_moments1d(tmp_path):
    history = [{"step": s, "fake_mean": 0.1 * s, "fake_std": 1.0 + s} for s in range(4)]
    history.insert(1, {"step": 5, "loss_d": 1.0})
    fig = moments1d(history, target_mean=4.0, target_std=1.25)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    for ax, target in zip(fig.axes, (4.0, 1.25), strict=True):
        generated, ref = ax.lines
        assert len(generated.get_xdata()) == 4
        assert ref.get_linestyle() == "--"
        np.testing.assert_allclose(ref.get_ydata(), [target, target])
    _check_png(save_figure(fig, tmp_path / "moments.png"))


def test_moments1d_without_moments_raises():
    with pytest.raises(ValueError, match="no metrics to plot"):
        moments1d([{"step": 0, "loss_d": 1.0}], 0.0, 1.0)


@pytest.mark.parametrize("dim", [1, 2])
def test_toy_frames_and_gif(tmp_path, rng, dim):
    shape = (100,) if dim == 1 else (100, 2)
    snapshots = [(step, rng.normal(size=shape) + step / 100) for step in (0, 100, 200)]
    frames = toy_frames(snapshots, real=rng.normal(size=shape))
    assert len(frames) == 3
    assert all(f.mode == "RGB" and f.size == (320, 320) for f in frames)
    path = save_gif(frames, tmp_path / "sub" / "toy.gif", duration_ms=120, last_frame_ms=700)
    assert path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.n_frames == 3
        durations = []
        for i in range(im.n_frames):
            im.seek(i)
            durations.append(im.info["duration"])
    assert durations == [120, 120, 700]


@pytest.mark.parametrize("dim", [1, 2])
def test_toy_frames_share_limits(rng, dim):
    # Generated samples far left, then far right: with per-frame limits the real (blue) points
    # would move between frames; with shared limits they are drawn at identical pixels.
    shape = (200,) if dim == 1 else (200, 2)
    real = rng.normal(size=shape)
    snapshots = [(0, rng.normal(size=shape) - 6), (1, rng.normal(size=shape) * 0.5 + 6)]
    first, second = (_blue_mask(f) for f in toy_frames(snapshots, real=real))
    assert first.sum() > 50
    np.testing.assert_array_equal(first, second)
    # The check is sensitive: different explicit limits do move the real points.
    lims = (-4.0, 4.0, -4.0, 4.0) if dim == 2 else (-4.0, 4.0, 0.0, 1.0)
    wide = tuple(2 * v for v in lims) if dim == 2 else (-8.0, 8.0, 0.0, 1.0)
    a = _blue_mask(toy_frames([(0, snapshots[0][1])], real=real, limits=lims)[0])
    b = _blue_mask(toy_frames([(0, snapshots[0][1])], real=real, limits=wide)[0])
    assert not np.array_equal(a, b)


def test_toy_frames_empty_raises():
    with pytest.raises(ValueError, match="no snapshots"):
        toy_frames([])


def test_save_gif_single_frame(tmp_path):
    frame = Image.new("RGB", (16, 12), (255, 0, 0))
    path = save_gif([frame], tmp_path / "a" / "b" / "one.gif", last_frame_ms=900)
    with Image.open(path) as im:
        assert im.format == "GIF"
        assert im.size == (16, 12)
        assert getattr(im, "n_frames", 1) == 1
        assert im.info["duration"] == 900


def test_save_gif_empty_raises(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        save_gif([], tmp_path / "x.gif")


def test_save_figure_creates_dirs_and_uses_dpi(tmp_path):
    fig = Figure(figsize=(4, 3))
    fig.subplots().plot([0, 1], [1, 0])
    path = save_figure(fig, tmp_path / "nested" / "dir" / "fig.png", dpi=50)
    _check_png(path, size=(200, 150))


def test_save_figure_closes_pyplot_figure(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.plot([0, 1])
    save_figure(fig, tmp_path / "p.png")
    assert not plt.fignum_exists(fig.number)
