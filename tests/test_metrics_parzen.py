"""Parzen-window log-likelihood: closed forms, a float64 brute force, stability, sigma selection and
the full MNIST protocol (marked `data`; skipped when ../shared/datasets is absent)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import MultivariateNormal, Normal

from gankit.metrics.parzen import SIGMAS, parzen, parzen_log_likelihood, select_sigma

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def brute_force(samples: torch.Tensor, x: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    """(S, M) float64 log-likelihoods from explicit differences: the textbook formula."""
    mu, x = samples.double().flatten(1), x.double().flatten(1)
    # (M, N); 8 rows of x at a time keep the (8, N, d) differences small
    d2 = torch.cat([((xb[:, None, :] - mu[None, :, :]) ** 2).sum(2) for xb in x.split(8)])
    sig = sigmas.double()[:, None, None]  # (S, 1, 1)
    lse = torch.logsumexp(-d2[None] / (2 * sig**2), dim=2)  # (S, M)
    d = mu.shape[1]
    return lse - math.log(mu.shape[0]) - 0.5 * d * torch.log(2 * math.pi * sig[:, :, 0] ** 2)


def mnist_like(n: int, gen: torch.Generator) -> torch.Tensor:
    """(n, 784) images in [0, 1]: ~80% exact zeros, the rest mostly near 1, like MNIST strokes."""
    on = torch.rand(n, 784, generator=gen) < 0.2
    return torch.where(on, torch.rand(n, 784, generator=gen).sqrt(), torch.zeros(()))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_single_centre_is_the_gaussian_density(dtype: torch.dtype) -> None:
    mu, x = torch.randn(1, 3), torch.randn(5, 3) * 2
    sigmas = torch.tensor([0.3, 1.0, 2.5])
    ll = parzen_log_likelihood(mu, x, sigmas, dtype=dtype)
    assert ll.shape == (3, 5)
    assert ll.dtype == torch.float64
    for s, sigma in enumerate(sigmas.tolist()):
        mvn = MultivariateNormal(mu[0].double(), covariance_matrix=sigma**2 * torch.eye(3).double())
        iso = Normal(mu[0].double(), sigma).log_prob(x.double()).sum(1)
        tol = 1e-10 if dtype == torch.float64 else 1e-3
        torch.testing.assert_close(ll[s], mvn.log_prob(x.double()), atol=tol, rtol=0)
        torch.testing.assert_close(ll[s], iso, atol=tol, rtol=0)


@pytest.mark.parametrize("chunk", [1, 7, 17, 1000])
def test_matches_brute_force_for_several_sigmas_and_chunks(chunk: int) -> None:
    samples, x = torch.rand(50, 6), torch.rand(17, 6)
    sigmas = torch.tensor([0.05, 0.1, 0.3, 1.0, 3.0])
    ref = brute_force(samples, x, sigmas)
    ll64 = parzen_log_likelihood(samples, x, sigmas, chunk, dtype=torch.float64)
    torch.testing.assert_close(ll64, ref, atol=1e-9, rtol=0)
    torch.testing.assert_close(
        parzen_log_likelihood(samples, x, sigmas, chunk), ref, atol=1e-3, rtol=0
    )
    # Chunks only split the rows of x: every row sees the same arithmetic.
    ll_one_chunk = parzen_log_likelihood(samples, x, sigmas, 10_000, dtype=torch.float64)
    torch.testing.assert_close(ll64, ll_one_chunk, atol=1e-12, rtol=0)


def test_float32_matches_float64_brute_force_on_mnist_like_data() -> None:
    gen = torch.Generator().manual_seed(0)
    samples, x = mnist_like(400, gen), mnist_like(40, gen)
    # Make the kernels matter: half the points are a sample plus small noise (near neighbours).
    x[:20] = (samples[:20] + 0.05 * torch.randn(20, 784, generator=gen)).clamp(0, 1)
    ref = brute_force(samples, x, SIGMAS)
    err = (parzen_log_likelihood(samples, x, SIGMAS) - ref).abs()  # (10, 40)
    assert err.max() < 3e-3
    assert err.mean(1).max() < 1e-3  # the mean LL, which is what gets reported


def test_float_sigma_gives_one_row_and_images_are_flattened() -> None:
    samples, x = torch.rand(8, 1, 4, 4), torch.rand(5, 1, 4, 4)
    ll = parzen_log_likelihood(samples, x, 0.4)
    assert ll.shape == (5,)
    torch.testing.assert_close(
        ll, parzen_log_likelihood(samples.flatten(1), x.flatten(1), [0.4])[0]
    )
    torch.testing.assert_close(
        ll, brute_force(samples, x, torch.tensor([0.4]))[0], atol=1e-4, rtol=0
    )


def test_tiny_sigma_and_far_points_stay_finite() -> None:
    # exp(-d^2 / 2 sigma^2) underflows to 0 for every centre here (exponents ~ -1e6 .. -5e9), so a
    # naive log(mean(exp(.))) is -inf; the nearest centre alone fixes the value.
    samples = torch.tensor([[0.0, 0.0], [100.0, 0.0]])
    x = torch.tensor([[1.0, 0.0], [0.0, 50.0], [-40.0, 0.0]])
    sigma = 1e-3
    ll = parzen_log_likelihood(samples, x, sigma, dtype=torch.float64)
    assert torch.isfinite(ll).all()
    nearest_d2 = torch.tensor([1.0, 2500.0, 1600.0], dtype=torch.float64)
    expected = -nearest_d2 / (2 * sigma**2) - math.log(2) - math.log(2 * math.pi * sigma**2)
    torch.testing.assert_close(ll, expected, rtol=1e-12, atol=0)
    ll32 = parzen_log_likelihood(samples, x, sigma)
    assert torch.isfinite(ll32).all()
    torch.testing.assert_close(ll32, expected, rtol=1e-6, atol=0)


def test_select_sigma_recovers_the_bandwidth_that_generated_the_data() -> None:
    # Validation points drawn from the Parzen mixture itself at sigma* = SIGMAS[4]: the expected
    # validation LL is a cross-entropy, maximised exactly at sigma = sigma* (Gibbs' inequality), and
    # neighbours on the grid lose ~0.8 nats per point at d = 10, far beyond the noise of 2,000 points.
    gen = torch.Generator().manual_seed(1)
    centres = torch.rand(30, 10, generator=gen)
    true_sigma = float(SIGMAS[4])
    pick = torch.randint(0, 30, (2000,), generator=gen)
    x_val = centres[pick] + true_sigma * torch.randn(2000, 10, generator=gen)
    sigma, val_ll = select_sigma(centres, x_val)
    assert sigma == pytest.approx(true_sigma)
    assert val_ll.shape == (10,)
    assert int(val_ll.argmax()) == 4
    assert val_ll[4] - max(val_ll[3], val_ll[5]) > 0.3
    per_point = parzen_log_likelihood(centres, x_val, SIGMAS)
    torch.testing.assert_close(val_ll, per_point.mean(1))


def test_select_sigma_on_a_gaussian_shrinks_below_the_data_scale() -> None:
    # For samples of N(0, s^2 I) the Parzen density is N(0, s^2 I) blurred by the kernel, plus
    # sampling noise that a wider kernel smooths out: the best sigma is below s and grows as N
    # falls (Silverman's rule: ~ s N^(-1/(d+4))). Measured: 0.215 at N = 5000, 0.359 at N = 20.
    gen = torch.Generator().manual_seed(2)
    s = float(SIGMAS[6])
    x_val = s * torch.randn(1000, 4, generator=gen)
    many, _ = select_sigma(s * torch.randn(5000, 4, generator=gen), x_val)
    few, _ = select_sigma(s * torch.randn(20, 4, generator=gen), x_val)
    assert many < s
    assert many < few < s


def test_parzen_reports_mean_standard_error_and_protocol() -> None:
    gen = torch.Generator().manual_seed(3)
    samples, x_val, x_test = (torch.rand(n, 12, generator=gen) for n in (200, 30, 40))
    grid = torch.tensor([0.1, 0.2, 0.4, 0.8])
    out = parzen(samples, x_val, x_test, grid)
    sigma, val_ll = select_sigma(samples, x_val, grid)
    ll = parzen_log_likelihood(samples, x_test, sigma).numpy()
    assert out["sigma"] == sigma
    assert out["sigmas"] == pytest.approx(grid.tolist())
    assert out["val_ll"] == pytest.approx(val_ll.tolist())
    assert out["ll_mean"] == pytest.approx(float(ll.mean()), abs=1e-9)
    assert out["ll_se"] == pytest.approx(float(np.std(ll) / math.sqrt(40)), abs=1e-9)  # ddof 0
    assert (out["n_samples"], out["n_val"], out["n_test"], out["d"]) == (200, 30, 40, 12)
    assert parzen(samples, x_val, x_test, grid) == out  # deterministic
    assert parzen(samples, x_val, x_test, grid, progress=True) == out  # bar off: not a TTY


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.rand(4, 3), torch.rand(2, 5), 0.1), "same dimension"),
        ((torch.rand(0, 3), torch.rand(2, 3), 0.1), "non-empty"),
        ((torch.rand(4, 3), torch.rand(2, 3), [0.1, 0.0]), "sigmas must be"),
        ((torch.rand(4, 3), torch.rand(2, 3), []), "sigmas must be"),
        ((torch.ones(4, 3, dtype=torch.uint8), torch.rand(2, 3), 0.1), "float pixels"),
    ],
)
def test_bad_inputs_are_loud(args: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parzen_log_likelihood(*args)


def test_bad_chunk_is_loud() -> None:
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        parzen_log_likelihood(torch.rand(4, 3), torch.rand(2, 3), 0.1, chunk=0)


def _mnist():  # noqa: ANN202 (an ImageSet)
    if not (SHARED / "MNIST" / "raw").is_dir():
        pytest.skip(f"no MNIST under {SHARED}")
    from gankit.data import build_data

    source = build_data("mnist", {}, 0, 64, options={"root": str(SHARED), "download": False})
    return source.images


def _floats(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(u8)).flatten(1).float() / 255


@pytest.mark.data
def test_float32_matches_float64_on_real_mnist() -> None:
    images = _mnist()
    samples, x = _floats(images.train[:1000]), _floats(images.test[:64])
    err = (parzen_log_likelihood(samples, x, SIGMAS) - brute_force(samples, x, SIGMAS)).abs()
    assert err.max() < 3e-3  # per point, worst at sigma = 0.1
    assert err.mean(1).max() < 1e-3


@pytest.mark.data
@pytest.mark.slow
def test_full_protocol_on_real_mnist() -> None:
    # Real training images stand in for a perfect generator. Measured here: 241.19 +- 2.13 at
    # sigma = 0.167; held-out digits are not copies of training digits, so the LL sits in the same
    # low-to-mid 200s as the paper's GAN (225 +- 2), not far above it.
    images = _mnist()
    samples = _floats(images.train[:10_000])
    x_val = _floats(images.train[50_000:51_000])
    x_test = _floats(images.test)
    out = parzen(samples, x_val, x_test)
    assert (out["n_samples"], out["n_val"], out["n_test"], out["d"]) == (10_000, 1000, 10_000, 784)
    assert out["sigma"] in out["sigmas"]
    assert out["sigma"] == pytest.approx(0.1668, abs=1e-3)
    assert 220 < out["ll_mean"] < 260
    assert 1 < out["ll_se"] < 4
    assert all(math.isfinite(v) for v in out["val_ll"])
