"""A closed-form training step for plain MLP GANs: the same update as `gankit.steps.train_step`, faster.

On toy densities the networks are tiny (e.g. 2 -> 100 -> 1), so a step's time is framework overhead,
not arithmetic: autograd records a graph node per op and walks it back. For a stack of Linear layers
with pointwise activations the backward pass is a handful of matrix products, so this module writes it
out (dL/dW = delta^T x, dL/db = sum delta, delta_prev = (delta W) * act'(y)) and hands the gradients
to the same Adam optimizers. It measured 2.2x the steps/s of the autograd step on the toy benchmark.

It applies only where it is exact: MLP models without BatchNorm, dropout or conditioning, the BCE
losses (nonsaturating, minimax, with one-sided label smoothing) and no gradient penalty; `eligible()`
says why not otherwise. tests/test_fastmlp.py checks it against autograd step by step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gankit.models.layers import is_spectral_normed
from gankit.sample import sample_z

if TYPE_CHECKING:
    from gankit.config import Config

_ACTS = {nn.ReLU: "relu", nn.LeakyReLU: "leaky_relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid"}


def _layers(net: nn.Sequential) -> list[tuple[nn.Linear, str, float]] | None:
    """[(linear, activation name, leaky slope)] for Linear/activation stacks, or None."""
    out: list[tuple[nn.Linear, str, float]] = []
    for m in net:
        if isinstance(m, nn.Linear):
            out.append((m, "none", 0.0))
        elif type(m) in _ACTS and out and out[-1][1] == "none":
            slope = m.negative_slope if isinstance(m, nn.LeakyReLU) else 0.0
            out[-1] = (out[-1][0], _ACTS[type(m)], slope)
        else:
            return None
    return out


def eligible(G: nn.Module, D: nn.Module, cfg: Config) -> str | None:
    """None if the fast step computes exactly this config's update, else the reason it does not."""
    if cfg.model.name != "mlp" or cfg.model.num_classes:
        return "only unconditional mlp models"
    if cfg.loss.name not in ("nonsaturating", "minimax"):
        return f"loss {cfg.loss.name!r} (only nonsaturating, minimax)"
    if cfg.loss.gp_weight or cfg.loss.r1_weight:
        return "gradient penalties"
    if cfg.loss.r2_weight:
        return "gradient penalties"
    if cfg.train.augment:
        return "train.augment (DiffAugment)"
    if cfg.train.amp or cfg.train.compile:
        return "train.amp / train.compile"
    if getattr(D, "pack", 1) > 1:
        return "packed discriminator (model.d.pack)"
    if getattr(D, "unit_input", False):
        return "model.d.unit_input"
    if cfg.optim.simultaneous:
        return "optim.simultaneous"
    for name, m in (("G", G), ("D", D)):
        if is_spectral_normed(m):
            return f"{name} is spectrally normalised"
        if _layers(m.net) is None:
            return f"{name} has layers other than Linear and ReLU/LeakyReLU/Tanh/Sigmoid"
    return None


def _act(x: Tensor, kind: str, slope: float) -> Tensor:
    if kind == "relu":
        return torch.relu(x)
    if kind == "leaky_relu":
        return F.leaky_relu(x, slope)
    if kind == "tanh":
        return torch.tanh(x)
    if kind == "sigmoid":
        return torch.sigmoid(x)
    return x


def _act_backward(grad: Tensor, y: Tensor, kind: str, slope: float) -> Tensor:
    """dL/dx from dL/dy and the activation's output y."""
    if kind == "relu":
        return torch.ops.aten.threshold_backward(grad, y, 0.0)
    if kind == "leaky_relu":
        return torch.ops.aten.leaky_relu_backward(grad, y, slope, True)
    if kind == "tanh":
        return torch.ops.aten.tanh_backward(grad, y)
    if kind == "sigmoid":
        return torch.ops.aten.sigmoid_backward(grad, y)
    return grad


class FastMLP:
    """A Linear/activation stack viewed as tensors: forward with cache, closed-form backward."""

    def __init__(self, net: nn.Sequential) -> None:
        layers = _layers(net)
        assert layers is not None, "call eligible() first"
        # the Parameter objects themselves (load_state_dict and the optimizers update them in place);
        # caching them skips nn.Module.__getattr__ on every access.
        self.layers = [(lin.weight, lin.bias, kind, slope) for lin, kind, slope in layers]

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """Output and the cache [input, output of layer 1, ..., output of layer n]."""
        cache = [x]
        for weight, bias, kind, slope in self.layers:
            x = _act(torch.addmm(bias, x, weight.t()), kind, slope)
            cache.append(x)
        return x, cache

    def backward(self, grad: Tensor, cache: list[Tensor], params: bool = True) -> Tensor:
        """Given dL/d(output), set `.grad` of every parameter (if `params`) and return dL/d(input)."""
        for i in range(len(self.layers) - 1, -1, -1):
            weight, bias, kind, slope = self.layers[i]
            grad = _act_backward(grad, cache[i + 1], kind, slope)  # (B, out)
            if params:
                weight.grad = grad.t() @ cache[i]  # (out, in)
                bias.grad = grad.sum(0)
            if i > 0 or not params:
                grad = grad @ weight  # (B, in)
        return grad


class AdamKernel:
    """`opt.step()` for a fused, single-group Adam, minus the ~85 us of Python around the kernel.

    Calls the same `torch._fused_adam_` kernel on the optimizer's own state tensors, so the update is
    bit-identical and `opt.state_dict()` stays the standard one. Falls back to `opt.step()` whenever
    the optimizer is not in that simple form or its state is not yet created / was replaced.
    """

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.opt, self._state, self._lists = opt, None, None
        g = opt.param_groups[0] if len(opt.param_groups) == 1 else {}
        self.simple = (
            isinstance(opt, torch.optim.Adam)
            and g.get("fused") is True
            and not g.get("amsgrad")
            and not g.get("maximize")
            and not g.get("decoupled_weight_decay", False)
            and hasattr(torch, "_fused_adam_")
        )

    def step(self) -> None:
        opt = self.opt
        if not self.simple:
            opt.step()
            return
        params = opt.param_groups[0]["params"]
        if self._state is not opt.state or self._lists is None:
            if len(opt.state) < len(params):  # first step creates the state: let Adam do it
                opt.step()
                return
            st = [opt.state[p] for p in params]
            self._lists = ([s["exp_avg"] for s in st], [s["exp_avg_sq"] for s in st],
                           [s["step"] for s in st])  # fmt: skip
            self._state = opt.state
        g = opt.param_groups[0]
        exp_avgs, exp_avg_sqs, steps = self._lists
        torch._foreach_add_(steps, 1)
        torch._fused_adam_(
            params, [p.grad for p in params], exp_avgs, exp_avg_sqs, [], steps,
            amsgrad=False, lr=g["lr"], beta1=g["betas"][0], beta2=g["betas"][1],
            weight_decay=g["weight_decay"], eps=g["eps"], maximize=False,
            grad_scale=None, found_inf=None,
        )  # fmt: skip


def make_fast_step(state, cfg: Config):
    """A `train_step`-compatible function for `state`'s MLP pair (check `eligible` first)."""
    g, d = FastMLP(state.G.net), FastMLP(state.D.net)
    t_real = 1.0 - cfg.loss.label_smoothing
    minimax = cfg.loss.name == "minimax"
    m = cfg.model
    targets: dict[tuple[int, torch.device], Tensor] = {}

    @torch.no_grad()  # gradients are computed here, not recorded by autograd
    def step(state, reals: list[Tensor], labels: list[Tensor | None], cfg: Config) -> dict:
        for real in reals:
            b = real.shape[0]
            key = (b, real.device)
            if key not in targets:  # (2B, 1): real targets then fake targets
                targets[key] = torch.cat([torch.full((b, 1), t_real), torch.zeros(b, 1)]).to(
                    real.device
                )
            t = targets[key]
            z = sample_z(b, m.z_dim, m.z_dist, state.z_gen, real.device)
            fake, g_cache = g.forward(z)
            x = torch.cat([real.reshape(b, -1), fake])  # (2B, D): one D pass for real and fake
            logits, d_cache = d.forward(x)  # (2B, 1)
            s = torch.sigmoid(logits)
            # d/dx [t softplus(-x) + (1 - t) softplus(x)] / b = (sigmoid(x) - t) / b
            loss_d = F.binary_cross_entropy_with_logits(logits, t, reduction="sum") / b
            d.backward((s - t) / b, d_cache)
            state.adam_d.step()
        for k in range(cfg.optim.g_steps):
            if k > 0:
                z = sample_z(b, m.z_dim, m.z_dist, state.z_gen, real.device)
                fake, g_cache = g.forward(z)
            logits_g, dg_cache = d.forward(fake)  # (B, 1), with the updated D
            if minimax:  # minimise log(1 - sigmoid(x)) = -softplus(x)
                loss_g = -F.softplus(logits_g).mean()
                grad = -torch.sigmoid(logits_g) / b
            else:  # minimise -log sigmoid(x) = softplus(-x)
                loss_g = F.softplus(-logits_g).mean()
                grad = (torch.sigmoid(logits_g) - 1) / b
            g.backward(d.backward(grad, dg_cache, params=False), g_cache)
            state.adam_g.step()
        state.step += 1
        d_real, d_fake = s.view(2, b).mean(1)
        return {"loss_d": loss_d, "loss_g": loss_g, "d_real": d_real, "d_fake": d_fake}

    return step
