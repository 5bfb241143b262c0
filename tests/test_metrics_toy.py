"""Tests for gankit.metrics.toy against hand-built samples and closed-form values."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from gankit.metrics.toy import dist1d_stats, mode_stats, sliced_w1

RING_STD = 0.01
GRID_STD = 0.05


def ring_centers() -> torch.Tensor:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    return torch.stack([angles.cos(), angles.sin()], dim=1).float()


def grid_centers() -> torch.Tensor:
    ticks = torch.tensor([-4.0, -2.0, 0.0, 2.0, 4.0])
    return torch.cartesian_prod(ticks, ticks)


def test_mode_stats_all_ring_centres() -> None:
    centers = ring_centers()
    out = mode_stats(centers.repeat(10, 1), centers, RING_STD)
    assert out["modes"] == 8
    assert out["num_modes"] == 8
    assert out["n"] == 80
    assert out["high_quality"] == pytest.approx(1.0)
    assert out["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


def test_mode_stats_two_of_eight_modes() -> None:
    centers = ring_centers()
    samples = centers[[0, 3]].repeat(5, 1)
    out = mode_stats(samples, centers, RING_STD)
    assert out["modes"] == 2
    assert out["high_quality"] == pytest.approx(1.0)
    # p_gen = (1/2, 1/2) on two modes: sum 1/2 * log(8/2) * 2 = log 4.
    assert out["reverse_kl"] == pytest.approx(math.log(4))


def test_mode_stats_threshold_radius() -> None:
    centers = ring_centers()
    # Offset tangentially so the nearest centre stays the same one.
    inside = centers[:1] + torch.tensor([[0.0, 2 * RING_STD]])
    outside = centers[:1] + torch.tensor([[0.0, 4 * RING_STD]])
    assert mode_stats(inside, centers, RING_STD)["high_quality"] == 1.0
    assert mode_stats(inside, centers, RING_STD)["modes"] == 1
    out = mode_stats(torch.cat([inside, outside]), centers, RING_STD)
    assert out["high_quality"] == pytest.approx(0.5)
    assert out["modes"] == 1
    assert mode_stats(outside, centers, RING_STD, threshold=5.0)["high_quality"] == 1.0


def test_mode_stats_nothing_captured() -> None:
    centers = ring_centers()
    out = mode_stats(torch.zeros(20, 2), centers, RING_STD)
    assert out["modes"] == 0
    assert out["high_quality"] == 0.0
    assert out["reverse_kl"] == float("inf")


def test_mode_stats_grid() -> None:
    centers = grid_centers()
    gen = torch.Generator().manual_seed(0)
    # 4 samples per mode on 20 of the 25 modes, plus 10 samples halfway between two modes.
    covered = centers[:20].repeat(4, 1)
    covered = covered + GRID_STD * 0.5 * torch.randn(covered.shape, generator=gen).clamp(-2, 2)
    between = torch.tensor([[1.0, 0.0]]).repeat(10, 1)
    out = mode_stats(torch.cat([covered, between]), centers, GRID_STD)
    assert out["modes"] == 20
    assert out["num_modes"] == 25
    assert out["high_quality"] == pytest.approx(80 / 90)
    assert out["reverse_kl"] == pytest.approx(math.log(25 / 20))


def test_mode_stats_chunking_matches() -> None:
    centers = ring_centers()
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, 5, (203,), generator=gen)
    samples = centers[idx] + 0.02 * torch.randn(203, 2, generator=gen)
    whole = mode_stats(samples, centers, RING_STD)
    chunked = mode_stats(samples, centers, RING_STD, chunk_size=7)
    assert chunked == whole
    assert 0 < whole["high_quality"] < 1


def test_mode_stats_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="centers"):
        mode_stats(torch.zeros(4, 3), ring_centers(), RING_STD)


def test_dist1d_point_mass_golden() -> None:
    # W1(delta_0, N(0, 1)) = E|Z| = sqrt(2 / pi).
    out = dist1d_stats(torch.zeros(1), 0.0, 1.0)
    assert out["w1"] == pytest.approx(math.sqrt(2 / math.pi), rel=1e-12)
    # W1(delta_a, N(0, 1)) = E|Z - a| = a (2 Phi(a) - 1) + 2 phi(a); a point at mean + a * std.
    a = 1.3
    expected = a * (2 * stats.norm.cdf(a) - 1) + 2 * stats.norm.pdf(a)
    out = dist1d_stats(torch.tensor([[2.0 + a * 0.5]], dtype=torch.float64), 2.0, 0.5)
    assert out["w1"] == pytest.approx(0.5 * expected, rel=1e-12)


def test_dist1d_w1_matches_numerical_integral() -> None:
    x = np.array([-2.5, -0.3, -0.3, 0.1, 0.2, 1.7, 4.0])
    mean, std = 0.4, 1.5

    def integrand(t: float) -> float:
        return abs(np.mean(x <= t) - stats.norm.cdf(t, mean, std))

    breaks = np.sort(np.concatenate([x, stats.norm.ppf(np.arange(1, 7) / 7, mean, std)]))
    pieces = [integrate.quad(integrand, -np.inf, breaks[0])[0]]
    pieces += [integrate.quad(integrand, lo, hi)[0] for lo, hi in itertools.pairwise(breaks)]
    pieces.append(integrate.quad(integrand, breaks[-1], np.inf)[0])
    out = dist1d_stats(torch.from_numpy(x), mean, std)
    assert out["w1"] == pytest.approx(sum(pieces), rel=1e-7)


def test_dist1d_large_sample_from_target() -> None:
    gen = torch.Generator().manual_seed(0)
    x = 2.0 + 0.5 * torch.randn(200_000, generator=gen, dtype=torch.float64)
    out = dist1d_stats(x, 2.0, 0.5)
    assert out["n"] == 200_000
    assert out["w1"] < 0.02 * 0.5
    ref = np.random.default_rng(1).normal(2.0, 0.5, 1_000_000)
    assert out["w1"] == pytest.approx(stats.wasserstein_distance(x.numpy(), ref), abs=0.01)
    assert out["mean"] == pytest.approx(x.mean().item())
    assert out["std"] == pytest.approx(x.std(unbiased=False).item())


def test_dist1d_w1_scale_and_shift() -> None:
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(50_000, generator=gen, dtype=torch.float64)
    base = dist1d_stats(z, 0.0, 1.0)["w1"]
    # W1 is equivariant under x -> s x + m applied to both sample and target.
    assert dist1d_stats(3.0 * z - 1.0, -1.0, 3.0)["w1"] == pytest.approx(3.0 * base, rel=1e-9)
    # Shifting the target by 0.5 gives W1 ~ 0.5 (exact for the population, W1 = |shift|).
    assert dist1d_stats(3.0 + z, 3.5, 1.0)["w1"] == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("n", [1, 50, 5000])
def test_dist1d_ks_matches_scipy(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    x = 0.3 + 1.2 * torch.randn(n, 1, generator=gen, dtype=torch.float64)
    out = dist1d_stats(x, 0.0, 1.0)
    expected = stats.kstest(x[:, 0].numpy(), "norm", args=(0.0, 1.0)).statistic
    assert out["ks"] == pytest.approx(expected, abs=1e-12)


def test_dist1d_moments() -> None:
    out = dist1d_stats(torch.tensor([1.0, 2.0, 3.0, 6.0]), 0.0, 1.0)
    assert out["mean"] == pytest.approx(3.0)
    assert out["std"] == pytest.approx(math.sqrt(3.5))
    assert out["n"] == 4


def test_dist1d_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="shape"):
        dist1d_stats(torch.zeros(4, 2), 0.0, 1.0)


def test_sliced_w1_identical_is_zero() -> None:
    x = torch.randn(300, 2, generator=torch.Generator().manual_seed(0))
    out = sliced_w1(x, x.clone())
    assert out["sliced_w1"] == pytest.approx(0.0, abs=1e-12)
    assert out == {"sliced_w1": out["sliced_w1"], "num_projections": 128, "n": 300, "n_ref": 300}


@pytest.mark.parametrize("copies", [1, 3])
def test_sliced_w1_shift(copies: int) -> None:
    # The reference is the shifted set repeated, so on direction theta the 1-D W1 is exactly
    # |cos theta| (also for unequal sizes); over uniform directions E|cos theta| = 2 / pi.
    x = torch.randn(200, 2, generator=torch.Generator().manual_seed(3))
    y = (x + torch.tensor([1.0, 0.0])).repeat(copies, 1)
    out = sliced_w1(x, y, num_projections=512)
    assert out["sliced_w1"] == pytest.approx(2 / math.pi, abs=0.05)
    assert out["n"] == 200
    assert out["n_ref"] == 200 * copies


def test_sliced_w1_deterministic_per_seed() -> None:
    gen = torch.Generator().manual_seed(4)
    x, y = torch.randn(100, 3, generator=gen), torch.randn(80, 3, generator=gen) + 0.5
    assert sliced_w1(x, y, num_projections=32, seed=7) == sliced_w1(
        x, y, num_projections=32, seed=7
    )
    assert sliced_w1(x, y, seed=7)["sliced_w1"] != sliced_w1(x, y, seed=8)["sliced_w1"]


@pytest.mark.parametrize("m", [70, 100])
def test_sliced_w1_1d_matches_scipy(m: int) -> None:
    # In 1-D every unit direction is +-1, so each slice is the plain 1-D W1.
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(100, 1, generator=gen), 2.0 * torch.rand(m, 1, generator=gen)
    out = sliced_w1(x, y, num_projections=4)
    expected = stats.wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())
    assert out["sliced_w1"] == pytest.approx(expected, rel=1e-6)
    assert type(out["sliced_w1"]) is float


def test_results_are_plain_python_types() -> None:
    centers = ring_centers()
    results = [
        mode_stats(centers, centers, RING_STD),
        dist1d_stats(torch.randn(10), 0.0, 1.0),
        sliced_w1(torch.randn(10, 2), torch.randn(7, 2)),
    ]
    for out in results:
        assert all(type(v) in (int, float) for v in out.values()), out
