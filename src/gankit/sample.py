"""Sampling from a generator: latent noise, fixed-noise batches, per-seed samples.

Every function runs G in eval mode (BatchNorm running statistics, no dropout) and restores its mode.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from gankit.utils import eval_mode


def sample_z(
    n: int,
    z_dim: int,
    dist: str = "normal",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(n, z_dim) latent noise: N(0, I) for "normal", U(-1, 1) for "uniform"."""
    if dist == "normal":
        return torch.randn(n, z_dim, generator=generator, device=device)
    if dist == "uniform":
        return torch.rand(n, z_dim, generator=generator, device=device) * 2 - 1
    raise ValueError(f"unknown z_dist {dist!r}; choose from: normal, uniform")


def _device(G: nn.Module) -> torch.device:
    return next(G.parameters()).device


@torch.no_grad()
def sample(
    G: nn.Module,
    n: int,
    *,
    z_dist: str = "normal",
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    batch_size: int = 1024,
) -> Tensor:
    """(n, *data_shape) samples on CPU; noise drawn on CPU from `generator` (device-independent)."""
    z = sample_z(n, G.z_dim, z_dist, generator)
    return generate(G, z, labels, batch_size)


@torch.no_grad()
def generate(
    G: nn.Module, z: Tensor, labels: Tensor | None = None, batch_size: int = 1024
) -> Tensor:
    """G(z) in eval mode, in chunks, returned on CPU: (n, *data_shape)."""
    device = _device(G)
    out = []
    with eval_mode(G):
        for i in range(0, z.shape[0], batch_size):
            lab = None if labels is None else labels[i : i + batch_size].to(device)
            out.append(G(z[i : i + batch_size].to(device), lab).float().cpu())
    return torch.cat(out) if out else torch.empty(0, *G.data_shape)


def parse_seeds(text: str) -> list[int]:
    """ "0-63" -> [0..63]; "1,5,9" -> [1, 5, 9]; "0-3,10" -> [0, 1, 2, 3, 10]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.strip().rsplit("-", 1) if part.count("-") == 1 else part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                seeds.extend(range(lo, hi + 1))
            else:
                seeds.append(int(part))
    except ValueError:
        raise ValueError(f"bad seed list {text!r}; use e.g. 0-63 or 1,5,9") from None
    return seeds


@torch.no_grad()
def sample_seeds(
    G: nn.Module, seeds: list[int], *, z_dist: str = "normal", labels: Tensor | None = None
) -> Tensor:
    """One sample per seed: seed s always gives the same sample, whatever else is requested."""
    z = torch.cat([sample_z(1, G.z_dim, z_dist, torch.Generator().manual_seed(s)) for s in seeds])
    return generate(G, z, labels)
