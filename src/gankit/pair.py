"""One G/D pair and its update: `Pair` (G, D, G_ema, both optimizers, its noise streams, its step
count) and `Pair.update()`, the one place that owns the learning-rate schedule, channels_last, the
update itself (autograd `train_step` or `simultaneous_step` of gankit.steps, the closed-form MLP step,
or Lightning's counted optimizer step) and the EMA update. `Pair.state_dict()` / `load_state_dict()` are what every checkpoint writer and
restorer uses.

Unit of time: one step = `optim.d_steps` discriminator updates, then `optim.g_steps` generator updates.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from gankit.checkpoint import pair_entry
from gankit.config import Config, g_bias_from_data
from gankit.distributed import SINGLE, AllReduceStep, RankRows, World, convert_sync_batchnorm
from gankit.factory import models_from_config
from gankit.fastmlp import AdamKernel
from gankit.sample import sample_z
from gankit.steps import train_step
from gankit.utils import make_generator, seed_everything

log = logging.getLogger(__name__)
LOG_KEYS = ("loss_d", "loss_g", "d_real", "d_fake")  # d_real/d_fake: mean sigmoid(D(.)) of the step

Update = Callable[["Pair", list[Tensor], list[Tensor | None], Config], dict[str, Tensor]]


@dataclass
class Pair:
    """A G/D pair with what training it needs. `key` is None for the pair of an ordinary run, the
    class id for `train.per_class` pairs; `step` counts this pair's own steps."""

    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    z_gen: torch.Generator  # stream of the training noise
    step: int = 0
    G_ema: nn.Module | None = None  # moving average of G (train.ema_decay > 0)
    aug_gen: torch.Generator | None = None  # stream of DiffAugment's random transforms
    key: int | None = None
    world: World = SINGLE  # the processes sharing this pair's steps (gankit.distributed)
    adam_g: Any = field(init=False)  # .step(): opt_g's update without its Python overhead
    adam_d: Any = field(init=False)
    update_fn: Update = field(init=False)  # the update: train_step, or the closed-form MLP step
    # loss.backward(), or Lightning's manual_backward (which scales losses for 16-mixed precision)
    backward: Callable[[Tensor], None] = field(init=False)
    scaler: Any = None  # torch.amp.GradScaler of train.amp=fp16

    def __post_init__(self) -> None:
        self.set_steps(AdamKernel(self.opt_g), AdamKernel(self.opt_d))
        self.update_fn = train_step
        self.backward = _backward

    def set_steps(self, step_g: Any, step_d: Any) -> None:
        """The objects whose `.step()` updates G and D (the fused Adam kernel, a GradScaler's step,
        Lightning's counted step); with several processes the gradients are averaged across ranks
        first."""
        if self.world.size > 1:
            step_g = AllReduceStep(step_g, self.opt_g, self.world)
            step_d = AllReduceStep(step_d, self.opt_d, self.world)
        self.adam_g, self.adam_d = step_g, step_d

    def use_scaler(self, device: torch.device) -> None:
        """float16 autocast (train.amp=fp16): losses scaled before backward, steps unscaled and
        skipped on inf/NaN gradients, the scale updated once per step."""
        scaler = self.scaler = torch.amp.GradScaler(device.type)
        self.backward = lambda loss: scaler.scale(loss).backward()
        self.set_steps(_ScaledStep(scaler, self.opt_g), _ScaledStep(scaler, self.opt_d))

    def noise(self, n: int, cfg: Config, device: torch.device) -> Tensor:
        """(n, z_dim) training noise: this rank's rows of the global batch's draw."""
        m, w = cfg.model, self.world
        z = sample_z(n * w.size, m.z_dim, m.z_dist, self.z_gen, device)
        return z if w.size == 1 else z[w.rows(n * w.size)]

    def fake_labels(self, real_labels: Tensor | None, cfg: Config) -> Tensor | None:
        """Classes of a batch of fakes (see `fake_labels`), this rank's rows of the global draw."""
        if self.world.size == 1 or real_labels is None:
            return fake_labels(
                real_labels, cfg.model.num_classes, cfg.train.fake_labels, self.z_gen
            )
        w, n = self.world, real_labels.shape[0]
        full = real_labels.new_empty(n * w.size)  # only its length matters to "uniform"
        out = fake_labels(full, cfg.model.num_classes, cfg.train.fake_labels, self.z_gen)
        return real_labels if cfg.train.fake_labels == "data" else out[w.rows(n * w.size)]

    @property
    def aug_stream(self) -> Any:
        """DiffAugment's stream: this rank's rows of the global batch's draws."""
        return self.aug_gen if self.world.size == 1 else RankRows(self.aug_gen, self.world)

    @property
    def sampler(self) -> nn.Module:
        """The generator to snapshot, sample and evaluate: G_ema when kept, else G."""
        return self.G if self.G_ema is None else self.G_ema

    def update(
        self,
        reals: list[Tensor],
        labels: list[Tensor | None],
        cfg: Config,
        clock: int,
        total: int,
        autocast: Any = None,
    ) -> dict[str, Tensor]:
        """One step on `reals` (d_steps batches) at the run's step `clock` of `total`: learning
        rates of the clock, channels_last images, the update (under `autocast` if given), then the
        EMA of G. Returns 0-dim detached tensors (see `train_step`)."""
        set_lr(self, cfg, clock, total)
        if cfg.train.channels_last and reals[0].dim() == 4:
            reals = [r.contiguous(memory_format=torch.channels_last) for r in reals]
        if autocast is None:
            out = self.update_fn(self, reals, labels, cfg)
        else:
            with autocast:
                out = self.update_fn(self, reals, labels, cfg)
        if self.scaler is not None:
            self.scaler.update()
        if self.G_ema is not None:
            ema_update(self.G_ema, self.G, cfg.train.ema_decay)
        return out

    def generators(self, cfg: Config) -> dict[str, torch.Generator]:
        """The pair's checkpointed RNG streams (DiffAugment's only when used: older checkpoints
        keep loading)."""
        gens = {"z": self.z_gen}
        if cfg.train.augment and self.aug_gen is not None:
            gens["augment"] = self.aug_gen
        return gens

    def state_dict(self, cfg: Config) -> dict[str, Any]:
        """The pair's checkpoint entry (gankit.checkpoint.pair_entry)."""
        entry = pair_entry(
            self.key, self.step,
            {"G": self.G, "D": self.D, "G_ema": self.G_ema},
            {"opt_g": self.opt_g, "opt_d": self.opt_d},
            self.generators(cfg),
        )  # fmt: skip
        if self.scaler is not None:
            entry["scaler"] = self.scaler.state_dict()
        return entry

    def load_state_dict(self, entry: dict[str, Any], cfg: Config) -> None:
        """Restore weights, optimizer states, step and RNG streams from a checkpoint entry."""
        self.G.load_state_dict(entry["G"])
        self.D.load_state_dict(entry["D"])
        if self.G_ema is not None:
            self.G_ema.load_state_dict(entry["G_ema"])
        self.opt_g.load_state_dict(entry["opt_g"])
        self.opt_d.load_state_dict(entry["opt_d"])
        self.step = entry["step"]
        if self.scaler is not None and entry.get("scaler"):
            self.scaler.load_state_dict(entry["scaler"])
        for name, g in self.generators(cfg).items():
            g.set_state(entry["rng"][name])

    def finite(self) -> bool:
        """Whether every weight and Adam moment is finite (a checkpoint worth keeping: a finite loss
        can hide inf in Adam's second moments, which would diverge again on resume)."""
        tensors = [t for m in (self.G, self.D, self.G_ema) if m is not None
                   for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]  # fmt: skip
        for opt in (self.opt_g, self.opt_d):
            tensors += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
        return all(bool(torch.isfinite(t).all()) for t in tensors)


def _backward(loss: Tensor) -> None:
    loss.backward()


class _ScaledStep:
    """Stands in for `Pair.adam_g/adam_d` under a GradScaler: `scaler.step(optimizer)` unscales
    the gradients and skips the step when they hold inf/NaN."""

    def __init__(self, scaler: Any, optimizer: torch.optim.Optimizer) -> None:
        self.scaler, self.optimizer = scaler, optimizer

    def step(self) -> None:
        self.scaler.step(self.optimizer)


def build_pair(
    cfg: Config,
    data_shape: tuple[int, ...],
    device: torch.device,
    key: int | None = None,
    world: World = SINGLE,
    data_mean: Tensor | None = None,
) -> Pair:
    """The pair `key` of `cfg` on `device`: the run's pair (key None) is seeded from `cfg.seed`;
    per-class pair k from (seed, "pair", k), with noise streams (seed, "z", k) and (seed, "augment",
    k), so it trains the same whatever other classes the run holds. `data_mean` (the training
    data's mean sample, see `data_mean`) starts G's output bias when model.g.output_bias is data."""
    if key is None:
        seed, streams = cfg.seed, ()
    else:
        seed, streams = make_generator(cfg.seed, "pair", key).initial_seed(), (key,)
    seed_everything(seed)
    G, D = models_from_config(cfg, data_shape)
    if g_bias_from_data(cfg):
        if data_mean is None:
            raise ValueError("model.g.output_bias=data: build_pair needs the data's mean sample")
        G.init_output_bias(data_mean)
    if world.size > 1 and cfg.train.sync_bn:  # the global batch's BatchNorm statistics
        G, D = convert_sync_batchnorm(G), convert_sync_batchnorm(D)
    G, D = G.to(device), D.to(device)
    if cfg.train.channels_last and len(data_shape) == 3:  # NHWC convolutions (faster on most CPUs)
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g, opt_d = (
        make_optimizer(G, cfg.optim.lr_g, cfg.optim.betas_g, cfg, device),
        make_optimizer(D, cfg.optim.lr_d, cfg.optim.betas_d, cfg, device),
    )
    z_gen = make_generator(cfg.seed, "z", *streams, device=device)
    aug_gen = make_generator(cfg.seed, "augment", *streams, device=device)
    G_ema = copy.deepcopy(G).requires_grad_(False) if cfg.train.ema_decay else None
    return Pair(G, D, opt_g, opt_d, z_gen, G_ema=G_ema, aug_gen=aug_gen, key=key, world=world)


def data_mean(cfg: Config, data: Any) -> Tensor | None:
    """The training data's mean sample when model.g.output_bias asks for it (else None): over the
    whole finite set, or 10,000 draws of a toy density."""
    if not g_bias_from_data(cfg):
        return None
    x, _ = data.train_fixed(data.size or 10_000)
    return x.float().mean(0)


def choose_update(pair: Pair, cfg: Config) -> str | None:
    """Give `pair` the closed-form MLP step where it is exact (train.fast_path), else compile G and D
    if train.compile asks; returns why the fast step is off (None: on)."""
    why_not = "train.fast_path=false"
    if pair.world.size > 1:  # its own Adam step and noise draws know no ranks
        why_not = "several processes: the autograd step all-reduces the gradients"
    elif cfg.train.fast_path:
        from gankit.fastmlp import eligible, make_fast_step

        why_not = eligible(pair.G, pair.D, cfg)
        if why_not is None:
            pair.update_fn = make_fast_step(pair, cfg)
    if cfg.train.compile and why_not is not None:
        pair.G.compile()  # in place: state_dict keys (and checkpoints) stay those of the module
        pair.D.compile()
    return why_not


def make_optimizer(
    model: nn.Module, lr: float, betas: tuple[float, float], cfg: Config, device: torch.device
) -> torch.optim.Optimizer:
    """Adam (fused: one kernel per update instead of ~10 multi-tensor ops, 1.3x steps/s on toy
    MLPs), or SGD with momentum (`optim.name=sgd`)."""
    fused = {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr, momentum=cfg.optim.momentum, **fused)
    return torch.optim.Adam(model.parameters(), lr, betas=betas, **fused)


@torch.no_grad()
def ema_update(G_ema: nn.Module, G: nn.Module, decay: float) -> None:
    """G_ema <- decay * G_ema + (1 - decay) * G for parameters; buffers (BatchNorm stats) copied."""
    torch._foreach_lerp_(list(G_ema.parameters()), list(G.parameters()), 1.0 - decay)
    for b_ema, b in zip(G_ema.buffers(), G.buffers(), strict=True):
        b_ema.copy_(b)


def set_lr(pair: Pair, cfg: Config, step: int, steps: int) -> None:
    """The learning rates at `step` of `steps` (a function of the run's step, so resume is exact,
    and a resume with a lowered optim.lr_g / lr_d takes them at once)."""
    o = cfg.optim
    frac = 1.0 - step / steps if o.lr_schedule == "linear" else 1.0
    if o.lr_schedule == "exponential":
        frac = o.lr_decay ** (-step)
    for opt, lr in ((pair.opt_g, o.lr_g), (pair.opt_d, o.lr_d)):
        group = opt.param_groups[0]
        group["lr"] = max(lr * frac, o.lr_min) if o.lr_schedule == "exponential" else lr * frac
        if o.name == "sgd":  # momentum ramp, a function of the step like the learning rate
            ramp = min(step / o.momentum_steps, 1.0) if o.momentum_steps else 1.0
            group["momentum"] = o.momentum + (o.momentum_end - o.momentum) * ramp


def fake_labels(
    real_labels: Tensor | None, num_classes: int, mode: str, generator: torch.Generator
) -> Tensor | None:
    """Class labels for a batch of fakes: uniform over all `num_classes` classes, or ("data") the real
    batch's labels, i.e. the data's class frequencies. None for unconditional models."""
    if not num_classes or real_labels is None:
        return None
    if mode == "data":
        return real_labels
    n, device = real_labels.shape[0], real_labels.device
    return torch.randint(num_classes, (n,), generator=generator, device=generator.device).to(device)
