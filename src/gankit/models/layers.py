"""Stabilisers shared by every model family: spectral normalisation, minibatch standard deviation and
PacGAN packing.

- Spectral normalisation (Miyato et al. 2018, "Spectral Normalization for Generative Adversarial
  Networks"): every Linear / Conv / ConvTranspose weight is divided by its largest singular value,
  estimated by one power iteration per training forward pass (torch's parametrization), which bounds
  each layer's Lipschitz constant by 1.
- Minibatch standard deviation (Karras et al. 2018, "Progressive Growing of GANs", Sec. 3): D appends
  the average over features of the per-feature standard deviation within groups of `group` samples as
  one extra feature (a constant plane for images), so a batch of near-identical fakes is easy to spot.
- Packing (Lin et al. 2018, "PacGAN"): D scores `pack` samples jointly, concatenated along channels
  (images) or features (vectors); a collapsed generator's packs look unlike real packs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrizations, parametrize

SN_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)


def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectrally normalise every Linear/Conv2d/ConvTranspose2d weight of `module` (in place)."""
    for m in list(module.modules()):
        if isinstance(m, SN_LAYERS) and not parametrize.is_parametrized(m, "weight"):
            # ConvTranspose2d keeps its output channels on dim 1: normalise over that matrix view
            dim = 1 if isinstance(m, nn.ConvTranspose2d) else 0
            parametrizations.spectral_norm(m, dim=dim)
    return module


def is_spectral_normed(module: nn.Module) -> bool:
    """Whether any submodule of `module` has a parametrized (e.g. spectrally normalised) weight."""
    return any(parametrize.is_parametrized(m) for m in module.modules())


def minibatch_std(x: Tensor, group: int) -> Tensor:
    """x (B, F) or (B, C, H, W) -> the same with one extra feature / channel: the mean over features of
    the standard deviation across each group of samples (samples b, b + B/g, ... share a group, as in
    Karras et al.). The group is the largest size <= `group` dividing B."""
    b = x.shape[0]
    g = min(group, b)
    while b % g:
        g -= 1
    y = x.float().reshape(g, b // g, -1)  # (G, M, F): sample i*M + m is member i of group m
    std = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=1)  # (M,)
    std = std.repeat(g).to(x.dtype)  # (B,): group m's value for each of its members
    if x.dim() == 2:
        return torch.cat([x, std[:, None]], dim=1)  # (B, F + 1)
    plane = std[:, None, None, None].expand(b, 1, *x.shape[2:])
    return torch.cat([x, plane], dim=1)  # (B, C + 1, H, W)


class MinibatchStd(nn.Module):
    """`minibatch_std(x, group)` as a layer."""

    def __init__(self, group: int) -> None:
        super().__init__()
        self.group = group

    def forward(self, x: Tensor) -> Tensor:
        return minibatch_std(x, self.group)

    def extra_repr(self) -> str:
        return f"group={self.group}"


def pack_samples(x: Tensor, pack: int) -> Tensor:
    """x (B, C, ...) -> (B / pack, pack * C, ...): consecutive samples concatenated along dim 1."""
    b = x.shape[0]
    if b % pack:
        raise ValueError(
            f"a packed discriminator (pack={pack}) needs a batch divisible by it, got {b}"
        )
    return x.reshape(b // pack, pack * x.shape[1], *x.shape[2:])


def check_stabilisers(pack: int, minibatch_std: int, cond: str, num_classes: int) -> None:
    """ValueError for out-of-range stabiliser arguments of a discriminator."""
    if pack < 1:
        raise ValueError(f"pack must be >= 1 (1 = no packing), got {pack}")
    if minibatch_std < 0 or minibatch_std == 1:
        raise ValueError(f"minibatch_std is a group size >= 2 (0 = off), got {minibatch_std}")
    if pack > 1 and cond == "projection" and num_classes:
        raise ValueError("pack > 1 needs cond=concat (a projection D scores one label per sample)")
