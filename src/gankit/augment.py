"""Differentiable Augmentation (DiffAugment) for data-efficient GAN training.

Zhao, Liu, Lin, Zhu & Han, "Differentiable Augmentation for Data-Efficient GAN Training", NeurIPS 2020
(https://arxiv.org/abs/2006.10738). The same random, differentiable transform is applied to real and fake
images before D sees them, so G still receives gradients through it. Ops and ranges follow the paper's
reference implementation: brightness, saturation and contrast jitter ("color"), integer translation by
up to 1/8 of the image with zero fill ("translation"), and a zeroed half-size patch ("cutout").

Every random number comes from an explicit `torch.Generator`, so a run is reproducible from its seed.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

POLICIES = ("color", "translation", "cutout")

TRANSLATION_RATIO = 0.125
CUTOUT_RATIO = 0.5


@functools.lru_cache(maxsize=16)  # train_step reads train.augment on every step
def parse_policy(text: str) -> tuple[str, ...]:
    """Comma-separated policy string -> tuple of op names, e.g. 'color,cutout' -> ('color', 'cutout').

    '' (or only whitespace) gives (). Items are stripped of surrounding whitespace; an unknown,
    empty or repeated item raises ValueError naming it and the valid choices.
    """
    if not text.strip():
        return ()
    items = tuple(item.strip() for item in text.split(","))
    seen: set[str] = set()
    for item in items:
        if item not in POLICIES:
            raise ValueError(
                f"train.augment: unknown policy item {item!r} in {text!r}; "
                f"choose a comma-separated subset of: {', '.join(POLICIES)}"
            )
        if item in seen:
            raise ValueError(
                f"train.augment: duplicate policy item {item!r} in {text!r}; "
                f"each of {', '.join(POLICIES)} may appear at most once"
            )
        seen.add(item)
    return items


def _rows(n: int, generator: Any) -> tuple[torch.Generator, int, slice]:
    """(torch generator, numbers to draw, rows to keep): a `RankRows` stream draws the global
    batch's numbers and keeps its rank's rows (gankit.distributed)."""
    world = getattr(generator, "world", None)
    if world is None:
        return generator, n, slice(None)
    return generator.generator, n * world.size, world.rows(n * world.size)


def _rand(n: int, x: Tensor, generator: torch.Generator) -> Tensor:
    """(n, 1, 1, 1) uniform [0, 1) numbers drawn on the generator's device, moved to x's device/dtype."""
    # Drawn in float32 so the random stream does not depend on x's dtype.
    g, total, rows = _rows(n, generator)
    r = torch.rand(total, 1, 1, 1, generator=g, device=g.device)[rows]
    return r.to(device=x.device, dtype=x.dtype)


def _randint(low: int, high: int, n: int, x: Tensor, generator: torch.Generator) -> Tensor:
    """(n,) int64 numbers uniform in [low, high) drawn on the generator's device, moved to x's device."""
    g, total, rows = _rows(n, generator)
    r = torch.randint(low, high, (total,), generator=g, device=g.device)[rows]
    return r.to(x.device)


def rand_brightness(x: Tensor, generator: torch.Generator) -> Tensor:
    """x + (r - 0.5) with r ~ U(0, 1) per sample: a brightness shift in [-0.5, 0.5). x: (B, C, H, W)."""
    return x + (_rand(x.shape[0], x, generator) - 0.5)


def rand_saturation(x: Tensor, generator: torch.Generator) -> Tensor:
    """m + (x - m) * 2r with m the per-pixel channel mean, r ~ U(0, 1) per sample. x: (B, C, H, W)."""
    m = x.mean(dim=1, keepdim=True)  # (B, 1, H, W)
    return m + (x - m) * (2 * _rand(x.shape[0], x, generator))


def rand_contrast(x: Tensor, generator: torch.Generator) -> Tensor:
    """m + (x - m) * (r + 0.5) with m the per-image mean, r ~ U(0, 1) per sample. x: (B, C, H, W)."""
    m = x.mean(dim=(1, 2, 3), keepdim=True)  # (B, 1, 1, 1)
    return m + (x - m) * (_rand(x.shape[0], x, generator) + 0.5)


def translation_shift(height: int, width: int, ratio: float = TRANSLATION_RATIO) -> tuple[int, int]:
    """Largest integer shift (s_h, s_w) = (int(H * ratio + 0.5), int(W * ratio + 0.5))."""
    return int(height * ratio + 0.5), int(width * ratio + 0.5)


def rand_translation(
    x: Tensor, generator: torch.Generator, ratio: float = TRANSLATION_RATIO
) -> Tensor:
    """Shift each image by integers (dy, dx) uniform in [-s_h, s_h] x [-s_w, s_w], zero fill.

    Pixel (i, j) of the output is input pixel (i + dy, j + dx), or 0 where that falls outside the image.
    Vectorised as a gather from a zero-padded copy, so it is differentiable w.r.t. x. x: (B, C, H, W).
    """
    b, _, h, w = x.shape
    s_h, s_w = translation_shift(h, w, ratio)
    dy = _randint(-s_h, s_h + 1, b, x, generator)  # (B,)
    dx = _randint(-s_w, s_w + 1, b, x, generator)  # (B,)
    # Padding by the largest shift means every source index lands inside x_pad: no clamping needed.
    x_pad = F.pad(x, [s_w, s_w, s_h, s_h])  # (B, C, H + 2 s_h, W + 2 s_w)
    rows = torch.arange(h, device=x.device)[None, :, None] + (dy + s_h)[:, None, None]  # (B, H, 1)
    cols = torch.arange(w, device=x.device)[None, None, :] + (dx + s_w)[:, None, None]  # (B, 1, W)
    batch = torch.arange(b, device=x.device)[:, None, None]  # (B, 1, 1)
    out = x_pad.permute(0, 2, 3, 1)[batch, rows, cols]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def cutout_size(height: int, width: int, ratio: float = CUTOUT_RATIO) -> tuple[int, int]:
    """Cutout patch size (int(H * ratio + 0.5), int(W * ratio + 0.5)) before clipping to the image."""
    return int(height * ratio + 0.5), int(width * ratio + 0.5)


def rand_cutout(x: Tensor, generator: torch.Generator, ratio: float = CUTOUT_RATIO) -> Tensor:
    """Zero a (c_h, c_w) patch per image, centred at a random pixel and clipped to the image.

    The centre (cy, cx) is an integer in [0, H + 1 - c_h % 2) x [0, W + 1 - c_w % 2); the patch covers
    rows [cy - c_h // 2, cy - c_h // 2 + c_h) and likewise columns, intersected with the image.
    x: (B, C, H, W); the result is x times a 0/1 mask, so gradients pass through the kept pixels.
    """
    b, _, h, w = x.shape
    c_h, c_w = cutout_size(h, w, ratio)
    cy = _randint(0, h + (1 - c_h % 2), b, x, generator)  # (B,)
    cx = _randint(0, w + (1 - c_w % 2), b, x, generator)  # (B,)
    top = (cy - c_h // 2)[:, None, None]  # (B, 1, 1)
    left = (cx - c_w // 2)[:, None, None]
    rows = torch.arange(h, device=x.device)[None, :, None]  # (1, H, 1)
    cols = torch.arange(w, device=x.device)[None, None, :]  # (1, 1, W)
    inside = (rows >= top) & (rows < top + c_h) & (cols >= left) & (cols < left + c_w)  # (B, H, W)
    mask = (~inside).to(x.dtype)[:, None]  # (B, 1, H, W)
    return x * mask


_OPS = {
    "color": (rand_brightness, rand_saturation, rand_contrast),
    "translation": (rand_translation,),
    "cutout": (rand_cutout,),
}


def diff_augment(x: Tensor, policy: tuple[str, ...], generator: torch.Generator) -> Tensor:
    """Apply the policy's ops, in order, to a batch of images with per-sample random parameters.

    Args:
        x: (B, C, H, W) images in [-1, 1], any float dtype and device (channels_last allowed).
        policy: op names from `POLICIES`, e.g. the output of `parse_policy`.
        generator: source of every random number; it may live on another device than x (numbers are
            drawn on generator.device and moved), so the same generator state gives the same output.

    Returns:
        (B, C, H, W) augmented images, same dtype and device, differentiable w.r.t. x. Values can leave
        [-1, 1] (brightness/saturation/contrast are not clamped, as in the paper). An empty policy
        returns x itself.
    """
    if not policy:
        return x
    for name in policy:
        if name not in _OPS:
            raise ValueError(
                f"train.augment: unknown policy item {name!r}; choose from: {', '.join(POLICIES)}"
            )
    if x.ndim != 4 or not x.is_floating_point():
        raise ValueError(
            f"train.augment: expected float images of shape (B, C, H, W), "
            f"got {tuple(x.shape)} {x.dtype}"
        )
    for name in policy:
        for op in _OPS[name]:
            x = op(x, generator)
    return x
