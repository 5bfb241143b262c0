"""GAN losses as pure functions of discriminator logits, and gradient penalties.

`LOSSES[name] = (d_loss, g_loss)`; `d_loss(d_real, d_fake, label_smoothing)` and `g_loss(d_fake)` take
logits of shape (B,) and return a scalar. sigmoid/log are fused as softplus for numerical stability:
-log sigmoid(x) = softplus(-x) and -log(1 - sigmoid(x)) = softplus(x).

Relativistic losses (names in RELATIVISTIC) compare each fake with a real sample, so their G loss also
takes the real logits: `g_loss(d_fake, d_real)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def d_bce(d_real: Tensor, d_fake: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """-[t log D(x) + (1 - t) log(1 - D(x))] - log(1 - D(G(z))) with real target t = 1 - smoothing.

    One-sided label smoothing (Salimans et al. 2016) touches the real targets only.
    """
    t = 1.0 - label_smoothing
    real = t * F.softplus(-d_real) + (1 - t) * F.softplus(d_real)
    return real.mean() + F.softplus(d_fake).mean()


def g_nonsaturating(d_fake: Tensor) -> Tensor:
    """-log D(G(z)): the non-saturating generator loss (Goodfellow et al. 2014, Sec. 3)."""
    return F.softplus(-d_fake).mean()


def g_minimax(d_fake: Tensor) -> Tensor:
    """log(1 - D(G(z))): the saturating minimax generator loss, minimised by G."""
    return -F.softplus(d_fake).mean()


def d_lsgan(d_real: Tensor, d_fake: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Least squares (Mao et al. 2017): (D(x) - t)^2 / 2 + D(G(z))^2 / 2 on raw outputs."""
    t = 1.0 - label_smoothing
    return 0.5 * ((d_real - t) ** 2).mean() + 0.5 * (d_fake**2).mean()


def g_lsgan(d_fake: Tensor) -> Tensor:
    return 0.5 * ((d_fake - 1) ** 2).mean()


def d_hinge(d_real: Tensor, d_fake: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Hinge loss (Lim & Ye 2017): relu(1 - D(x)) + relu(1 + D(G(z)))."""
    return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()


def g_wasserstein(d_fake: Tensor) -> Tensor:
    """-D(G(z)): generator loss of WGAN and of the hinge GAN."""
    return -d_fake.mean()


def d_wasserstein(d_real: Tensor, d_fake: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Critic loss D(G(z)) - D(x) (Arjovsky et al. 2017); pair it with loss.gp_weight (WGAN-GP)."""
    return d_fake.mean() - d_real.mean()


def d_rpgan(d_real: Tensor, d_fake: Tensor, label_smoothing: float = 0.0) -> Tensor:
    """Relativistic pairing loss for D: softplus(D(G(z)) - D(x)) = -log sigmoid(D(x) - D(G(z))),
    fake i paired with real i (Jolicoeur-Martineau 2019; R3GAN, Huang et al. 2024, Eq. 2). Pair it
    with loss.r1_weight and loss.r2_weight, as R3GAN does: the pairing alone need not converge."""
    return F.softplus(d_fake - d_real).mean()


def g_rpgan(d_fake: Tensor, d_real: Tensor) -> Tensor:
    """Relativistic pairing loss for G: softplus(D(x) - D(G(z))), the real logits held fixed."""
    return F.softplus(d_real.detach() - d_fake).mean()


LOSSES = {
    "nonsaturating": (d_bce, g_nonsaturating),
    "minimax": (d_bce, g_minimax),
    "lsgan": (d_lsgan, g_lsgan),
    "hinge": (d_hinge, g_wasserstein),
    "wgan": (d_wasserstein, g_wasserstein),
    "rpgan": (d_rpgan, g_rpgan),
}
RELATIVISTIC = frozenset({"rpgan"})  # G's loss needs D(x) as well as D(G(z))


def gradient_penalty(
    D: nn.Module, real: Tensor, fake: Tensor, labels: Tensor | None = None
) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)|| - 1)^2] on random interpolates x_hat."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device)
    x_hat = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x_hat, labels).sum(), x_hat, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(D: nn.Module, real: Tensor, labels: Tensor | None = None) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(x)||^2] / 2 on real data; on fakes it is R2."""
    x = real.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(D(x, labels).sum(), x, create_graph=True)
    return 0.5 * grad.flatten(1).pow(2).sum(dim=1).mean()
