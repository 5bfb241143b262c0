"""Latent-space walks: lerp / slerp between the noise vectors of given seeds, as a grid or a GIF.

Seed s means the same noise vector as `gankit sample --seeds s`. For conditional models the class is
held fixed (`klass=K`) or swept with the noise fixed (`klass="sweep"`: one column per class).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from gankit.checkpoint import load_checkpoint
from gankit.factory import RunModels
from gankit.run import class_range
from gankit.sample import generate, sample_z
from gankit.utils import GankitError, UsageError

MODES = ("slerp", "lerp")


def lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """(d,), (d,), (T,) -> (T, d): the straight line from a to b."""
    return a + t[:, None] * (b - a)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """(d,), (d,), (T,) -> (T, d): the great-circle arc from a to b, with the norm interpolated linearly.

    For Gaussian noise the arc keeps points at the typical radius, where lerp's midpoints fall inside
    the shell (White 2016, "Sampling generative networks").
    """
    na, nb = a.norm(), b.norm()
    cos = torch.dot(a / na, b / nb).clamp(-1, 1)
    omega = torch.arccos(cos)
    if (
        omega < 1e-4
    ):  # parallel within float precision: the arc is the line (antiparallel: no unique arc)
        return lerp(a, b, t)
    sin = torch.sin(omega)
    wa, wb = torch.sin((1 - t) * omega) / sin, torch.sin(t * omega) / sin  # (T,), (T,)
    unit = wa[:, None] * (a / na) + wb[:, None] * (b / nb)  # (T, d), on the unit sphere
    return unit * (na + t[:, None] * (nb - na))


MAX_STEPS, MAX_WALK_SEEDS = 256, 64  # a grid stays a picture, not a giant PNG


def walk(zs: Tensor, steps: int, mode: str = "slerp") -> Tensor:
    """(K, d) noise vectors -> (K - 1, steps, d): `steps` points from each z_i to z_{i+1}, ends included."""
    if mode not in MODES:
        raise UsageError(f"--mode {mode}: choose from: {', '.join(MODES)}")
    if not 2 <= steps <= MAX_STEPS or len(zs) < 2:
        raise UsageError(f"interpolation needs at least 2 seeds and --steps in [2, {MAX_STEPS}]")
    t = torch.linspace(0, 1, steps, dtype=zs.dtype)
    f = slerp if mode == "slerp" else lerp
    return torch.stack([f(zs[i], zs[i + 1], t) for i in range(len(zs) - 1)])


def seed_noise(seeds: list[int], z_dim: int, z_dist: str) -> Tensor:
    """(K, z_dim): the noise vector of each seed, as `gankit sample --seeds` draws it."""
    return torch.cat([sample_z(1, z_dim, z_dist, torch.Generator().manual_seed(s)) for s in seeds])


def interpolate(
    ckpt: dict, seeds: list[int], steps: int = 8, mode: str = "slerp", klass: str | None = None
) -> tuple[Tensor, int]:
    """Images of a latent walk and the grid row length.

    Without `klass="sweep"`: (len(seeds) - 1) rows of `steps` images, row i walking seed i -> seed i+1.
    With "sweep": one row per seed, one column per class, the noise fixed along the row.
    """
    if len(ckpt.get("data_shape", [0, 0, 0])) != 3:
        raise GankitError("interpolate needs an image model; for toys use `gankit sample`")
    models = RunModels.from_checkpoint(ckpt)
    cfg, classes, gen, per_class = models.cfg, models.classes, models.generator, models.per_class
    if classes and klass is None:
        raise UsageError(
            "this model is conditional: pass --class K (a fixed class) or --class sweep"
        )
    if not classes and klass is not None:
        raise UsageError("--class: this model is unconditional (model.num_classes = 0)")
    zs = seed_noise(seeds, cfg.model.z_dim, cfg.model.z_dist)
    if klass == "sweep":
        if not seeds:
            raise UsageError("--class sweep needs at least one seed")
        cols = [
            generate(gen(k), zs, None if per_class else torch.full((len(zs),), k)) for k in classes
        ]
        return torch.stack(cols, 1).flatten(0, 1), len(classes)  # row = seed, column = class
    if klass is not None and (not klass.lstrip("-").isdigit() or int(klass) not in classes):
        raise UsageError(f"--class {klass}: choose a class in {class_range(classes)} or sweep")
    z = walk(zs, steps, mode).flatten(0, 1)  # ((K-1) * steps, d)
    k = None if klass is None else int(klass)
    labels = None if k is None or per_class else torch.full((len(z),), k)
    return generate(gen(k), z, labels), steps


def interpolate_to_file(
    ckpt_path: str | Path,
    out: str | Path,
    seeds: list[int],
    steps: int = 8,
    mode: str = "slerp",
    klass: str | None = None,
    frame_ms: int = 80,
) -> Path:
    """Write a walk as a PNG grid (one row per seed pair, or per seed for a sweep) or an animated GIF
    (the frames in order: seed 1 -> 2 -> ... for a walk; the classes in turn, all seeds side by side,
    for a sweep)."""
    from gankit.plots import image_grid, save_gif, save_grid

    out = Path(out)
    if out.suffix.lower() not in (".png", ".gif"):
        raise UsageError(f"--out {out.name}: unsupported output; use .png (grid) or .gif")
    if len(seeds) > MAX_WALK_SEEDS or not 2 <= steps <= MAX_STEPS:
        raise UsageError(
            f"interpolate: at most {MAX_WALK_SEEDS} seeds and --steps in [2, {MAX_STEPS}], got "
            f"{len(seeds)} seeds and --steps {steps}"
        )
    x, nrow = interpolate(load_checkpoint(ckpt_path), seeds, steps, mode, klass)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix.lower() == ".png":
        return save_grid(x, out, nrow)
    if klass == "sweep":  # frame j: class j for every seed
        frames = [x.view(len(seeds), nrow, *x.shape[1:])[:, j] for j in range(nrow)]
    else:
        frames = [f[None] for f in x]
    scale = max(1, 128 // x.shape[-1])  # small images are upscaled (nearest) to be visible
    imgs = [image_grid(f, nrow=len(f), pad=0 if len(f) == 1 else 2) for f in frames]
    imgs = [im.resize((im.width * scale, im.height * scale), 0) for im in imgs]
    return save_gif(imgs, out, duration_ms=frame_ms, last_frame_ms=frame_ms * 5)
