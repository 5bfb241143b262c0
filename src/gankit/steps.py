"""The autograd updates of one step of a G/D pair (`Pair.update_fn`): `train_step` (d_steps D updates,
then g_steps G updates, G answering the D just updated) and `simultaneous_step` (one update of both
players from gradients taken before either moves, `optim.simultaneous`), sharing the D objective
with its penalties. gankit.fastmlp has the closed-form MLP step that computes `train_step` exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from gankit.augment import diff_augment, parse_policy
from gankit.config import Config
from gankit.losses import LOSSES, RELATIVISTIC, gradient_penalty, r1_penalty

if TYPE_CHECKING:
    from gankit.pair import Pair


def _d_objective(
    state: Pair, real_in: Tensor, fake_in: Tensor, lab: Any, fake_lab: Any, cfg: Config, i: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(loss_d, d_real, d_fake) of D update `i` of the run (`state.step * d_steps + j`) on what D
    sees: the loss plus WGAN-GP and, on one update in loss.r1_every, R1/R2 weighted r1_every."""
    D, lc = state.D, cfg.loss
    d_real, d_fake = D(real_in, lab), D(fake_in, fake_lab)
    loss_d = LOSSES[lc.name][0](d_real, d_fake, lc.label_smoothing)
    if lc.gp_weight:  # interpolates carry the real labels
        loss_d = loss_d + lc.gp_weight * gradient_penalty(D, real_in, fake_in, lab)
    # lazy R1/R2: the penalties on one D update in r1_every, weighted r1_every, else not at all
    scale = lc.r1_every if i % lc.r1_every == 0 else 0
    if lc.r1_weight and scale:
        loss_d = loss_d + scale * lc.r1_weight * r1_penalty(D, real_in, lab)
    if lc.r2_weight and scale:  # R2: the same penalty on fakes (R3GAN)
        loss_d = loss_d + scale * lc.r2_weight * r1_penalty(D, fake_in, fake_lab)
    return loss_d, d_real, d_fake


def _logged(loss_d: Tensor, loss_g: Tensor, d_real: Tensor, d_fake: Tensor) -> dict[str, Tensor]:
    return {
        "loss_d": loss_d.detach(),
        "loss_g": loss_g.detach(),
        "d_real": torch.sigmoid(d_real.detach()).mean(),
        "d_fake": torch.sigmoid(d_fake.detach()).mean(),
    }


def _augmenter(state: Pair, cfg: Config) -> Callable[[Tensor], Tensor]:
    """x -> DiffAugment(x) with `train.augment`'s policy from the pair's stream (identity if none)."""
    policy = parse_policy(cfg.train.augment)

    def aug(x: Tensor) -> Tensor:
        return diff_augment(x, policy, state.aug_stream) if policy else x

    return aug


def train_step(
    state: Pair,
    reals: list[Tensor],
    labels: list[Tensor | None],
    cfg: Config,
) -> dict[str, Tensor]:
    # long: the D updates then the G updates of one step, in the order the RNG streams are drawn;
    # split up, the stream order (which resume exactness depends on) would be spread over functions
    """`len(reals)` (= d_steps) D updates then `cfg.optim.g_steps` G updates, by autograd
    (`optim.simultaneous`: see `simultaneous_step`).

    With `train.augment`, D only ever sees DiffAugment-ed images, real and fake alike, and G's gradient
    flows through the augmentation (Zhao et al. 2020); penalties are taken on what D sees.
    Returns 0-dim detached tensors (not floats): converting costs a device sync per step, so the
    loop sums them and converts only at the logging cadence.
    """
    if cfg.optim.simultaneous:
        return simultaneous_step(state, reals, labels, cfg)
    G, D = state.G, state.D
    g_loss = LOSSES[cfg.loss.name][1]
    aug = _augmenter(state, cfg)

    for j, (real, lab) in enumerate(zip(reals, labels, strict=True)):
        z = state.noise(real.shape[0], cfg, real.device)
        fake_lab = state.fake_labels(lab, cfg)
        last = j == len(reals) - 1
        with torch.set_grad_enabled(last):  # the last fake is reused by the first G update
            fake = G(z, fake_lab)
        real_in, fake_in = aug(real), aug(fake.detach())
        i = state.step * len(reals) + j
        loss_d, d_real, d_fake = _d_objective(state, real_in, fake_in, lab, fake_lab, cfg, i)
        state.opt_d.zero_grad(set_to_none=True)
        state.backward(loss_d)
        state.adam_d.step()
    D.requires_grad_(False)  # G updates need gradients w.r.t. G only
    relativistic = cfg.loss.name in RELATIVISTIC
    for k in range(cfg.optim.g_steps):
        if k > 0:
            z = state.noise(real.shape[0], cfg, real.device)
            fake_lab = state.fake_labels(lab, cfg)
            fake = G(z, fake_lab)
        g_fake = D(aug(fake), fake_lab)
        if relativistic:  # the updated D on the step's last real batch
            with torch.no_grad():
                g_real = D(aug(real), lab)
            loss_g = g_loss(g_fake, g_real)
        else:
            loss_g = g_loss(g_fake)
        state.opt_g.zero_grad(set_to_none=True)
        state.backward(loss_g)
        state.adam_g.step()
    D.requires_grad_(True)
    state.step += 1
    return _logged(loss_d, loss_g, d_real, d_fake)


def simultaneous_step(
    state: Pair,
    reals: list[Tensor],
    labels: list[Tensor | None],
    cfg: Config,
) -> dict[str, Tensor]:
    """One D and one G update on one batch of fakes, both gradients taken before either player
    moves (`optim.simultaneous`): the 2014 GAN code's single SGD update of both players, where
    `train_step` lets G answer the D just updated. G's gradient is taken first (D frozen), then
    D's, then both optimizers step; the RNG streams are drawn as in `train_step`."""
    G, D = state.G, state.D
    g_loss = LOSSES[cfg.loss.name][1]
    aug = _augmenter(state, cfg)

    (real,), (lab,) = reals, labels  # d_steps = g_steps = 1 (checked with the config)
    z = state.noise(real.shape[0], cfg, real.device)
    fake_lab = state.fake_labels(lab, cfg)
    fake = G(z, fake_lab)
    real_in, fake_in = aug(real), aug(fake.detach())
    D.requires_grad_(False)
    g_fake = D(aug(fake), fake_lab)
    if cfg.loss.name in RELATIVISTIC:  # this step's D, before its update
        with torch.no_grad():
            g_real = D(real_in, lab)
        loss_g = g_loss(g_fake, g_real)
    else:
        loss_g = g_loss(g_fake)
    state.opt_g.zero_grad(set_to_none=True)
    state.backward(loss_g)
    D.requires_grad_(True)
    loss_d, d_real, d_fake = _d_objective(state, real_in, fake_in, lab, fake_lab, cfg, state.step)
    state.opt_d.zero_grad(set_to_none=True)
    state.backward(loss_d)
    state.adam_d.step()
    state.adam_g.step()
    state.step += 1
    return _logged(loss_d, loss_g, d_real, d_fake)
