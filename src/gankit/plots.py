"""Plots of training runs and toy densities: data in, ``matplotlib.figure.Figure`` out.

Figures are built without pyplot (no backend, no global state); callers save them with
`save_figure`. Real data is drawn in blue, generated data in red.

Longer than 400 lines because it is the one home the style guide gives every plot: the toy and
curve figures (which share the colours, the point checks and the axis limits, and `toy_frames`
redraws frame by frame for the GIF) plus the few small helpers for sample grids and GIFs.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from PIL import Image

REAL_COLOR = "tab:blue"
FAKE_COLOR = "tab:red"

Limits = tuple[float, float, float, float]


def _points2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape (N, 2), got {a.shape}")
    return a


def _points1d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 2 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim != 1:
        raise ValueError(f"{name} must have shape (N,) or (N, 1), got {a.shape}")
    return a


def _bounds(arrays: Sequence[np.ndarray], margin: float = 0.05) -> tuple[float, ...]:
    """(lo0, hi0, lo1, hi1, ...) over the finite rows of all arrays, padded by `margin` * span."""
    data = np.concatenate([a.reshape(len(a), -1) for a in arrays])
    data = data[np.isfinite(data).all(axis=1)]
    if len(data) == 0:
        raise ValueError("cannot derive plot limits: no finite points")
    lo, hi = data.min(axis=0), data.max(axis=0)
    pad = np.where(hi > lo, (hi - lo) * margin, 0.5)  # a single point still gets a visible window
    return tuple(float(v) for pair in zip(lo - pad, hi + pad, strict=True) for v in pair)


def _series(history: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    rows = [(r["step"], r[key]) for r in history if "step" in r and r.get(key) is not None]
    steps, values = zip(*rows, strict=True) if rows else ((), ())
    return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)


def loss_curves(history: list[dict]) -> Figure:
    """Losses and mean discriminator outputs against the training step.

    Args:
        history: metrics records such as ``{"step": 100, "loss_d": 1.3, "loss_g": 0.7,
            "d_real": 0.55, "d_fake": 0.45}``; ``d_real``/``d_fake`` are mean sigmoid(D) in
            [0, 1]. A record lacking a key (or without ``step``) is skipped for that line.

    Returns:
        Figure with two axes: (loss_d, loss_g) and (d_real, d_fake, dashed 0.5 reference).
    """
    if not history:
        raise ValueError("no metrics to plot: history is empty")
    fig = Figure(figsize=(10, 4), layout="constrained")
    ax_loss, ax_d = fig.subplots(1, 2)
    n_lines = 0
    loss_keys = {"loss_d": None, "loss_g": None}
    for ax, keys in ((ax_loss, loss_keys), (ax_d, {"d_real": REAL_COLOR, "d_fake": FAKE_COLOR})):
        for key, color in keys.items():
            steps, values = _series(history, key)
            if len(steps):
                ax.plot(steps, values, label=key, color=color)
                n_lines += 1
        if ax.lines:
            ax.legend()
        ax.set_xlabel("step")
    if n_lines == 0:
        raise ValueError("no metrics to plot: no record has 'step' and loss_d/loss_g/d_real/d_fake")
    ax_loss.set(ylabel="loss", title="losses")
    ax_d.axhline(0.5, linestyle="--", color="gray", linewidth=1)
    ax_d.set(ylabel="mean sigmoid(D)", title="discriminator outputs", ylim=(-0.02, 1.02))
    return fig


def scatter2d(real: np.ndarray, fake: np.ndarray, title: str = "") -> Figure:
    """Scatter of (N, 2) real points (blue) and (M, 2) generated points (red), equal aspect."""
    real, fake = _points2d(real, "real"), _points2d(fake, "fake")
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(real[:, 0], real[:, 1], s=4, alpha=0.4, color=REAL_COLOR, label="real")
    ax.scatter(fake[:, 0], fake[:, 1], s=4, alpha=0.4, color=FAKE_COLOR, label="generated")
    ax.set_aspect("equal", adjustable="datalim")
    ax.legend(markerscale=3)
    if title:
        ax.set_title(title)
    return fig


def density2d(
    fake: np.ndarray, real: np.ndarray | None = None, bins: int = 200, limits: Limits | None = None
) -> Figure:
    """Log-scaled 2-D histogram of (M, 2) generated points, (N, 2) real points as white dots.

    Args:
        limits: (xmin, xmax, ymin, ymax); defaults to the range of all points plus a 5% margin.
    """
    fake = _points2d(fake, "fake")
    real = None if real is None else _points2d(real, "real")
    if limits is None:
        limits = _bounds([fake] if real is None else [fake, real])
    x0, x1, y0, y1 = limits
    counts, xedges, yedges = np.histogram2d(
        fake[:, 0], fake[:, 1], bins=bins, range=[[x0, x1], [y0, y1]]
    )
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    ax.set_facecolor("black")  # empty bins are masked and show the background
    # counts is (x, y); pcolormesh wants (rows=y, cols=x).
    shown, norm = np.ma.masked_equal(counts.T, 0), LogNorm(vmin=1, vmax=max(counts.max(), 1))
    mesh = ax.pcolormesh(xedges, yedges, shown, norm=norm, cmap="magma")
    fig.colorbar(mesh, ax=ax, label="count")
    if real is not None:
        ax.scatter(real[:, 0], real[:, 1], s=0.5, color="white", alpha=0.6, label="real")
    ax.set(xlim=(x0, x1), ylim=(y0, y1), title="generated density")
    ax.set_aspect("equal", adjustable="box")
    return fig


def grid_points(limits: Limits, n: int = 200) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Regular grid over (xmin, xmax, ymin, ymax) for evaluating D.

    Returns:
        xs (n,), ys (n,) and points (n * n, 2) float32 in row-major order: point ``i * n + j`` is
        ``(xs[j], ys[i])``, so ``D(points).reshape(len(ys), len(xs))`` is what
        `decision_surface` expects.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    x0, x1, y0, y1 = limits
    xs = np.linspace(x0, x1, n)
    ys = np.linspace(y0, y1, n)
    gx, gy = np.meshgrid(xs, ys)  # each (len(ys), len(xs))
    points = np.stack([gx.ravel(), gy.ravel()], axis=1).astype(np.float32)
    return xs, ys, points


def decision_surface(
    xs: np.ndarray,
    ys: np.ndarray,
    prob: np.ndarray,
    real: np.ndarray | None = None,
    fake: np.ndarray | None = None,
) -> Figure:
    """Heat map of sigmoid(D(x, y)) in [0, 1] with optional real (blue) / fake (red) points.

    Args:
        xs: (W,) grid x coordinates; ys: (H,) grid y coordinates (see `grid_points`).
        prob: (H, W) discriminator probabilities, ``prob[i, j] = sigmoid(D(xs[j], ys[i]))``.
    """
    xs, ys = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    prob = np.asarray(prob, dtype=np.float64)
    if prob.shape != (len(ys), len(xs)):
        raise ValueError(
            f"prob must be (len(ys), len(xs)) = {(len(ys), len(xs))}, not {prob.shape}"
        )
    fig = Figure(figsize=(6, 5), layout="constrained")
    ax = fig.subplots()
    # RdBu: 0 (judged fake) is red and 1 (judged real) is blue, matching the point colours.
    mesh = ax.pcolormesh(xs, ys, prob, shading="nearest", cmap="RdBu", vmin=0.0, vmax=1.0)
    fig.colorbar(mesh, ax=ax, label="D(x)")
    for pts, color, label in ((real, REAL_COLOR, "real"), (fake, FAKE_COLOR, "generated")):
        if pts is not None:
            pts = _points2d(pts, label)
            ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.6, color=color, label=label)
    if real is not None or fake is not None:
        ax.legend(markerscale=3, loc="upper right")
    ax.set(xlim=(xs.min(), xs.max()), ylim=(ys.min(), ys.max()), title="discriminator output")
    ax.set_aspect("equal", adjustable="box")
    return fig


def density1d(
    fake: np.ndarray,
    target_pdf: Callable[[np.ndarray], np.ndarray] | None = None,
    real: np.ndarray | None = None,
    bins: int = 60,
) -> Figure:
    """Density histogram of (N,) or (N, 1) generated samples (red) against the target.

    Args:
        target_pdf: vectorised density of the target, drawn as a blue curve.
        real: (M,) or (M, 1) real samples, drawn as a blue outline histogram on the same bins.
    """
    fake = _points1d(fake, "fake")
    real = None if real is None else _points1d(real, "real")
    lo, hi = _bounds([fake] if real is None else [fake, real])
    edges = np.linspace(lo, hi, bins + 1)
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    ax.hist(fake, bins=edges, density=True, color=FAKE_COLOR, alpha=0.5, label="generated")
    if real is not None:
        ax.hist(real, bins=edges, density=True, histtype="step", color=REAL_COLOR, label="real")
    if target_pdf is not None:
        x = np.linspace(lo, hi, 400)
        ax.plot(x, np.asarray(target_pdf(x)), color=REAL_COLOR, linewidth=2, label="target")
    ax.set(xlim=(lo, hi), xlabel="x", ylabel="density")
    ax.legend()
    return fig


def moments1d(history: list[dict], target_mean: float, target_std: float) -> Figure:
    """Mean and std of generated 1-D samples against the step, targets dashed.

    Only records with ``step``, ``fake_mean`` and ``fake_std`` are used.
    """
    rows = [
        (r["step"], r["fake_mean"], r["fake_std"])
        for r in history
        if "step" in r and r.get("fake_mean") is not None and r.get("fake_std") is not None
    ]
    if not rows:
        raise ValueError("no metrics to plot: no record has 'step', 'fake_mean' and 'fake_std'")
    steps, means, stds = np.asarray(rows, dtype=np.float64).T
    fig = Figure(figsize=(10, 4), layout="constrained")
    for ax, values, target, name in zip(
        fig.subplots(1, 2), (means, stds), (target_mean, target_std), ("mean", "std"), strict=True
    ):
        ax.plot(steps, values, color=FAKE_COLOR, label=f"generated {name}")
        ax.axhline(target, linestyle="--", color=REAL_COLOR, label=f"target {name}")
        ax.set(xlabel="step", ylabel=name, title=f"sample {name}")
        ax.legend()
    return fig


def _density(a: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram density normalised by all finite samples, so mass outside `edges` is missing."""
    a = a[np.isfinite(a)]
    counts, _ = np.histogram(a, bins=edges)
    return counts / max(len(a), 1) / np.diff(edges)


def _render(fig: Figure) -> Image.Image:
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())).convert("RGB")


def toy_frames(
    snapshots: list[tuple[int, np.ndarray]],
    real: np.ndarray | None = None,
    limits: tuple[float, ...] | None = None,
    *,
    dpi: int = 80,
) -> list[Image.Image]:
    """One RGB frame (4x4 in at `dpi`) per ``(step, samples)`` snapshot, titled "step N".

    2-D samples (N, 2) are a red scatter over the real points (blue); 1-D samples (N,) or (N, 1)
    a red density histogram over the real one (blue outline). All frames share the same axes.

    Args:
        limits: (xmin, xmax, ymin, ymax) for 2-D; (xmin, xmax) or (xmin, xmax, ymin, ymax) for
            1-D (y is the density). Defaults to the range over all snapshots and `real`.
    """
    if not snapshots:
        raise ValueError("no snapshots to render")
    first = np.asarray(snapshots[0][1])
    one_d = first.ndim == 1 or (first.ndim == 2 and first.shape[1] == 1)
    as_points = _points1d if one_d else _points2d
    samples = [as_points(s, f"snapshot at step {step}") for step, s in snapshots]
    real = None if real is None else as_points(real, "real")
    everything = samples if real is None else [*samples, real]
    if limits is None:
        limits = _bounds(everything)
    if len(limits) != 4 and not (one_d and len(limits) == 2):
        raise ValueError(f"limits must be (xmin, xmax, ymin, ymax) here, got {limits}")
    if one_d:
        edges = np.linspace(limits[0], limits[1], 51)
        if len(limits) < 4:
            top = max(_density(a, edges).max() for a in everything)
            limits = (limits[0], limits[1], 0.0, 1.05 * top if top > 0 else 1.0)
    x0, x1, y0, y1 = limits

    frames = []
    for (step, _), pts in zip(snapshots, samples, strict=True):
        fig = Figure(figsize=(4, 4), dpi=dpi)
        # Fixed margins (not constrained layout) keep the axes box identical on every frame.
        fig.subplots_adjust(left=0.15, right=0.95, bottom=0.1, top=0.9)
        ax = fig.subplots()
        if one_d:
            ax.stairs(_density(pts, edges), edges, fill=True, color=FAKE_COLOR, alpha=0.5)
            if real is not None:
                ax.stairs(_density(real, edges), edges, color=REAL_COLOR, linewidth=1.5)
        else:
            if real is not None:
                ax.scatter(real[:, 0], real[:, 1], s=3, alpha=0.3, color=REAL_COLOR)
            ax.scatter(pts[:, 0], pts[:, 1], s=3, alpha=0.5, color=FAKE_COLOR)
        ax.set(xlim=(x0, x1), ylim=(y0, y1), title=f"step {step}")
        frames.append(_render(fig))
    return frames


def image_grid(x, nrow: int = 0, pad: int = 2) -> Image.Image:  # noqa: ANN001 (Tensor)
    """An RGB/L PIL image of a batch x (N, C, H, W) in [-1, 1]: `nrow` images per row (0: ~square)."""
    import torch
    from torchvision.utils import make_grid

    x = torch.as_tensor(x).detach().float().cpu()
    if x.dim() != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"expected images (N, 1|3, H, W), got shape {tuple(x.shape)}")
    nrow = nrow or max(1, int(np.ceil(np.sqrt(len(x)))))
    grid = make_grid(x.clamp(-1, 1), nrow=nrow, padding=pad, normalize=True, value_range=(-1, 1))
    arr = grid.mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return Image.fromarray(arr[:, :, 0] if x.shape[1] == 1 else arr)


def save_grid(x, path: str | Path, nrow: int = 0, pad: int = 2) -> Path:  # noqa: ANN001 (Tensor)
    """Write a batch of images in [-1, 1] as one grid PNG (atomically)."""
    from gankit.utils import atomic_write

    img = image_grid(x, nrow, pad)
    return atomic_write(path, lambda f: img.save(f, "PNG"))


def grid_frames(paths: Sequence[str | Path], max_frames: int = 100) -> list[Image.Image]:
    """GIF frames from snapshot grids samples/STEP.png, each captioned with its step.

    At most `max_frames` evenly spaced frames (always the first and the last), so long runs stay small.
    """
    from PIL import ImageDraw

    paths = list(paths)
    if len(paths) > max_frames:
        keep = np.unique(np.linspace(0, len(paths) - 1, max_frames).round().astype(int))
        paths = [paths[i] for i in keep]
    frames = []
    for p in paths:
        img = Image.open(p).convert("RGB")
        canvas = Image.new("RGB", (img.width, img.height + 14), "white")
        canvas.paste(img, (0, 14))
        ImageDraw.Draw(canvas).text((2, 1), f"step {int(Path(p).stem)}", fill="black")
        frames.append(canvas)
    return frames


DSTATS = (("train", "real train", REAL_COLOR), ("test", "real test", "tab:green"),
          ("fake", "fake", FAKE_COLOR))  # fmt: skip


def dstats(history: list[dict]) -> Figure:
    """Three panels against the step: mean and std of sigmoid(D(x)) on real-train, real-test and
    fake data, and the losses. Real-train far above real-test means D overfits."""
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax_mean, ax_std, ax_loss = fig.subplots(1, 3)
    for key, label, color in DSTATS:
        for ax, stat in ((ax_mean, "mean"), (ax_std, "std")):
            steps, v = _series(history, f"dstat_{key}_{stat}")
            ax.plot(steps, v, marker=".", color=color, label=label)
    ax_mean.set(title="mean sigmoid(D(x))", xlabel="step", ylim=(-0.02, 1.02))
    ax_std.set(title="std sigmoid(D(x))", xlabel="step")
    ax_mean.legend(loc="best", fontsize="small")
    for key, color in (("loss_d", "tab:purple"), ("loss_g", "tab:orange")):
        steps, v = _series(history, key)
        ax_loss.plot(steps, v, color=color, label=key)
    ax_loss.set(title="losses", xlabel="step")
    ax_loss.legend(loc="best", fontsize="small")
    return fig


def save_gif(
    frames: list[Image.Image], path: str | Path, duration_ms: int = 200, last_frame_ms: int = 1500
) -> Path:
    """Write `frames` as a looping animated GIF, holding the last frame for `last_frame_ms`.

    GIF stores durations in units of 10 ms. PIL merges identical consecutive frames (summing
    their durations); `toy_frames` titles make every frame distinct.
    """
    if not frames:
        raise ValueError("no frames to save")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    durations = [duration_ms] * (len(frames) - 1) + [last_frame_ms]
    rest = list(frames[1:])
    frames[0].save(path, "GIF", save_all=True, append_images=rest, duration=durations, loop=0)
    return path


def save_figure(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Save `fig` (format from the suffix, default PNG), creating parent dirs; then release it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    # A figure made with pyplot is also held by pyplot's manager; never import pyplot ourselves.
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:
        pyplot.close(fig)
    fig.clear()
    return path
