"""Toy densities: the 1-D Gaussian of the original GAN paper and the 2-D mode-coverage benchmarks.

Each density draws samples from an explicit `torch.Generator`, so a dataset is a function of its seed.
Ring and grid are the standard mode-collapse benchmarks (Metz et al. 2017; Lin et al. 2018, PacGAN).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class ToyDensity:
    """Base class: `sample(n, generator) -> (n, dim)` float32 points."""

    dim: int = 2
    metrics: tuple[str, ...] = ("sliced_w1",)  # default metrics of `gankit eval`

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        raise NotImplementedError


class Gauss1D(ToyDensity):
    """N(mean, std^2) on the line (Goodfellow et al. 2014, Fig. 1)."""

    dim = 1
    metrics = ("dist1d",)

    def __init__(self, mean: float = 3.0, std: float = 1.0) -> None:
        self.mean, self.std = mean, std

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return self.mean + self.std * torch.randn(n, 1, generator=generator)  # (n, 1)

    def pdf(self, x: Tensor) -> Tensor:
        return torch.exp(-0.5 * ((x - self.mean) / self.std) ** 2) / (
            self.std * math.sqrt(2 * math.pi)
        )


class SplitNormal(ToyDensity):
    """A 2-D standard normal cut along the first axis, each half pushed `shift` away from 0."""

    def __init__(self, shift: float = 1.0) -> None:
        self.shift = shift

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        x = torch.randn(n, 2, generator=generator)
        x[:, 0] += self.shift * torch.where(x[:, 0] < 0, -1.0, 1.0)
        return x  # (n, 2)


class Heart(ToyDensity):
    """Points near the classic heart curve x = 16 sin^3 t, y = 13 cos t - 5 cos 2t - 2 cos 3t - cos 4t."""

    def __init__(self, scale: float = 1 / 16, noise: float = 0.02) -> None:
        self.scale, self.noise = scale, noise

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        t = 2 * math.pi * torch.rand(n, generator=generator)
        x = 16 * torch.sin(t) ** 3
        y = 13 * torch.cos(t) - 5 * torch.cos(2 * t) - 2 * torch.cos(3 * t) - torch.cos(4 * t)
        pts = self.scale * torch.stack([x, y], dim=1)
        return pts + self.noise * torch.randn(n, 2, generator=generator)  # (n, 2)


class GaussianMixture(ToyDensity):
    """Equal-weight isotropic Gaussians at `centers` (K, 2), each with standard deviation `std`."""

    metrics = ("modes",)

    def __init__(self, centers: Tensor, std: float) -> None:
        self.centers, self.std = centers.float(), std

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        k = torch.randint(len(self.centers), (n,), generator=generator)
        return self.centers[k] + self.std * torch.randn(n, 2, generator=generator)  # (n, 2)


def _check(**values: float) -> None:
    """ValueError naming the first parameter that is not a positive finite number."""
    for name, v in values.items():
        if not (v > 0 and math.isfinite(v)):
            raise ValueError(f"{name} must be a positive finite number, got {v}")


def ring(num_modes: int = 8, radius: float = 1.0, std: float = 0.01) -> GaussianMixture:
    """`num_modes` Gaussians with means evenly spaced on a circle (8 on the unit circle, std 0.01)."""
    _check(num_modes=num_modes, radius=radius, std=std)
    angle = 2 * math.pi * torch.arange(num_modes) / num_modes
    return GaussianMixture(radius * torch.stack([angle.cos(), angle.sin()], dim=1), std)


def grid(size: int = 5, spacing: float = 2.0, std: float = 0.05) -> GaussianMixture:
    """size x size Gaussians on a square lattice centred at 0 (25 at {-4,-2,0,2,4}^2, std 0.05)."""
    _check(size=size, spacing=spacing, std=std)
    axis = spacing * (torch.arange(size) - (size - 1) / 2)
    return GaussianMixture(torch.cartesian_prod(axis, axis), std)


def gauss1d(mean: float = 3.0, std: float = 1.0) -> Gauss1D:
    _check(std=std)
    if not math.isfinite(mean):
        raise ValueError(f"mean must be finite, got {mean}")
    return Gauss1D(mean, std)


def split_normal(shift: float = 1.0) -> SplitNormal:
    return SplitNormal(shift)


def heart(scale: float = 1 / 16, noise: float = 0.02) -> Heart:
    _check(scale=scale)
    return Heart(scale, noise)
