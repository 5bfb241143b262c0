"""Sampling from a generator: latent noise, fixed-noise batches, per-seed samples.

Every function runs G in eval mode (BatchNorm running statistics, no dropout) and restores its mode.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from gankit.utils import UsageError, eval_mode


def sample_z(
    n: int,
    z_dim: int,
    dist: str = "normal",
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(n, z_dim) latent noise: N(0, I) for "normal", U(-1, 1) for "uniform", U(-sqrt 3, sqrt 3)
    (unit variance, the 2014 GAN code's "uniform") for "uniform_sqrt3"."""
    if dist == "normal":
        return torch.randn(n, z_dim, generator=generator, device=device)
    if dist == "uniform":
        return torch.rand(n, z_dim, generator=generator, device=device) * 2 - 1
    if dist == "uniform_sqrt3":
        return (torch.rand(n, z_dim, generator=generator, device=device) * 2 - 1) * math.sqrt(3)
    raise ValueError(f"unknown z_dist {dist!r}; choose from: normal, uniform, uniform_sqrt3")


def noise_of(G: nn.Module, z_dist: str | None = None) -> str:
    """`z_dist` when given, else the noise distribution G was built for (`G.z_dist`, set by
    `gankit.factory`), else "normal"."""
    return z_dist if z_dist is not None else getattr(G, "z_dist", "normal")


def _device(G: nn.Module) -> torch.device:
    return next(G.parameters()).device


@torch.no_grad()
def sample(
    G: nn.Module,
    n: int,
    *,
    z_dist: str | None = None,
    generator: torch.Generator | None = None,
    labels: Tensor | None = None,
    batch_size: int = 1024,
) -> Tensor:
    """(n, *data_shape) samples on CPU; noise drawn on CPU from `generator` (device-independent),
    from `z_dist` or, by default, the distribution G was trained on."""
    z = sample_z(n, G.z_dim, noise_of(G, z_dist), generator)
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


MAX_SEEDS = 100_000  # samples a command may draw by seed or --n


def parse_seeds(text: str, limit: int = MAX_SEEDS) -> list[int]:
    """ "0-63" -> [0..63]; "1,5,9" -> [1, 5, 9]; "0-3,10" -> [0, 1, 2, 3, 10]. At most `limit` seeds,
    counted before any list is built (`0-99999999` fails at once)."""
    ranges: list[tuple[int, int]] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.strip().rsplit("-", 1) if part.count("-") == 1 else part.split("-", 1)
                lo, hi = int(a), int(b)
                if hi < lo:
                    raise ValueError
                ranges.append((lo, hi))
            else:
                ranges.append((int(part), int(part)))
    except ValueError:
        raise UsageError(f"--seeds: bad seed list {text!r}; use e.g. 0-63 or 1,5,9") from None
    count = sum(hi - lo + 1 for lo, hi in ranges)
    if count > limit:
        raise UsageError(f"--seeds {text}: {count:,} seeds; at most {limit:,} per command")
    if any(lo < 0 or hi >= 2**63 for lo, hi in ranges):
        raise UsageError(f"--seeds {text}: seeds must be in [0, 2**63 - 1]")
    return [s for lo, hi in ranges for s in range(lo, hi + 1)]


SEED_BLOCK = 64


@torch.no_grad()
def sample_seeds(
    G: nn.Module, seeds: list[int], *, z_dist: str | None = None, labels: Tensor | None = None
) -> Tensor:
    """One sample per seed: seed s always gives the same sample, bit for bit, whatever else is requested.

    z for seed s comes from its own torch.Generator. Bit-identity also needs the same arithmetic: a GEMM's
    blocking depends on the batch size and a row's position in it, so seed s is always computed at position
    s % SEED_BLOCK of a batch of SEED_BLOCK rows (its block's seeds; unrequested rows are computed and dropped).
    """
    if labels is not None and labels.shape[0] != len(seeds):
        raise ValueError(f"{labels.shape[0]} labels for {len(seeds)} seeds")
    out = torch.empty(len(seeds), *G.data_shape)
    dist = noise_of(G, z_dist)
    rows: dict[int, list[int]] = {}  # block -> indices into seeds
    for i, s in enumerate(seeds):
        rows.setdefault(s // SEED_BLOCK, []).append(i)
    for block, idx in rows.items():
        base = block * SEED_BLOCK
        z = torch.cat(
            [
                sample_z(1, G.z_dim, dist, torch.Generator().manual_seed(base + j))
                for j in range(SEED_BLOCK)
            ]
        )
        lab = None
        if labels is not None:
            lab = torch.zeros(SEED_BLOCK, dtype=torch.long)
            for i in idx:
                lab[seeds[i] - base] = labels[i]
        x = generate(G, z, lab, batch_size=SEED_BLOCK)
        for i in idx:
            out[i] = x[seeds[i] - base]
    return out
