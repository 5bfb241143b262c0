"""The trainer: `TrainState`, `train_step()` (one D/G update) and `train()` (the loop).

Unit of time: one step = `optim.d_steps` discriminator updates, then `optim.g_steps` generator updates.
Batch `i` of the run is a function of `(seed, i)`, and every RNG state is checkpointed, so a resumed run
is bit-identical to an uninterrupted one on CPU.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from gankit.augment import diff_augment, parse_policy
from gankit.checkpoint import load_checkpoint, save_checkpoint, set_rng_state
from gankit.config import Config, to_dict, to_yaml
from gankit.data import data_from_config
from gankit.diagnose import describe, diagnose, mean_pairwise_distance, persistent, weight_norm
from gankit.fastmlp import AdamKernel
from gankit.losses import LOSSES, RELATIVISTIC, gradient_penalty, r1_penalty
from gankit.metrics.dstats import d_output_stats
from gankit.models import build_models
from gankit.sample import generate, sample_z
from gankit.utils import (
    GankitError,
    append_jsonl,
    env_info,
    get_device,
    make_generator,
    read_jsonl,
    seed_everything,
    use_amp,
    write_atomic_text,
    write_json,
)

log = logging.getLogger(__name__)
LOG_KEYS = ("loss_d", "loss_g", "d_real", "d_fake")  # d_real/d_fake: mean sigmoid(D(.)) of the step
DIAGNOSE_FROM = 100  # first step whose snapshot is diagnosed
SHORT_RUN = 500  # image runs shorter than this get a warning: DCGANs need thousands of steps


class NonFiniteLossError(GankitError):
    """A loss became NaN or infinite."""


class DiagnosedStop(GankitError):
    """A diagnosis listed in train.stop_on held at two snapshots in a row; the run stopped."""


class TrainingInterrupted(GankitError):
    """SIGINT/SIGTERM arrived; a checkpoint was saved. `signum` gives the exit code 128 + signum."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


@dataclass
class TrainState:
    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    z_gen: torch.Generator  # stream of the training noise
    step: int = 0
    G_ema: nn.Module | None = None  # moving average of G (train.ema_decay > 0)
    aug_gen: torch.Generator | None = None  # stream of DiffAugment's random transforms
    adam_g: AdamKernel = field(init=False)  # opt_g.step() without its Python overhead
    adam_d: AdamKernel = field(init=False)

    def __post_init__(self) -> None:
        self.adam_g, self.adam_d = AdamKernel(self.opt_g), AdamKernel(self.opt_d)


def build_state(cfg: Config, data_shape: tuple[int, ...], device: torch.device) -> TrainState:
    """Models and optimizers for `cfg`, seeded from `cfg.seed`, on `device`."""
    seed_everything(cfg.seed)
    m = cfg.model
    G, D = build_models(m.name, m.z_dim, data_shape, m.num_classes, m.g, m.d)
    G, D = G.to(device), D.to(device)
    if cfg.train.channels_last and len(data_shape) == 3:  # NHWC convolutions (faster on most CPUs)
        G, D = G.to(memory_format=torch.channels_last), D.to(memory_format=torch.channels_last)
    opt_g, opt_d = (
        make_optimizer(G, cfg.optim.lr_g, cfg.optim.betas_g, cfg, device),
        make_optimizer(D, cfg.optim.lr_d, cfg.optim.betas_d, cfg, device),
    )
    z_gen = make_generator(cfg.seed, "z", device=device)
    aug_gen = make_generator(cfg.seed, "augment", device=device)
    G_ema = copy.deepcopy(G).requires_grad_(False) if cfg.train.ema_decay else None
    return TrainState(G, D, opt_g, opt_d, z_gen, G_ema=G_ema, aug_gen=aug_gen)


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


def train_step(
    state: TrainState,
    reals: list[Tensor],
    labels: list[Tensor | None],
    cfg: Config,
) -> dict[str, Tensor]:
    """`len(reals)` (= d_steps) D updates then `cfg.optim.g_steps` G updates.

    With `train.augment`, D only ever sees DiffAugment-ed images, real and fake alike, and G's gradient
    flows through the augmentation (Zhao et al. 2020); penalties are taken on what D sees.
    Returns 0-dim detached tensors (not floats): converting costs a device sync per step, so the
    loop sums them and converts only at the logging cadence.
    """
    G, D = state.G, state.D
    d_loss, g_loss = LOSSES[cfg.loss.name]
    m, lc = cfg.model, cfg.loss
    policy = parse_policy(cfg.train.augment)

    def aug(x: Tensor) -> Tensor:
        return diff_augment(x, policy, state.aug_gen) if policy else x

    for j, (real, lab) in enumerate(zip(reals, labels, strict=True)):
        z = sample_z(real.shape[0], m.z_dim, m.z_dist, state.z_gen, real.device)
        fake_lab = fake_labels(lab, m.num_classes, cfg.train.fake_labels, state.z_gen)
        last = j == len(reals) - 1
        with torch.set_grad_enabled(last):  # the last fake is reused by the first G update
            fake = G(z, fake_lab)
        real_in, fake_in = aug(real), aug(fake.detach())
        d_real, d_fake = D(real_in, lab), D(fake_in, fake_lab)
        loss_d = d_loss(d_real, d_fake, lc.label_smoothing)
        if lc.gp_weight:  # interpolates carry the real labels
            loss_d = loss_d + lc.gp_weight * gradient_penalty(D, real_in, fake_in, lab)
        if lc.r1_weight:
            loss_d = loss_d + lc.r1_weight * r1_penalty(D, real_in, lab)
        if lc.r2_weight:  # R2: the same penalty on fakes (R3GAN)
            loss_d = loss_d + lc.r2_weight * r1_penalty(D, fake_in, fake_lab)
        state.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        state.adam_d.step()
    D.requires_grad_(False)  # G updates need gradients w.r.t. G only
    relativistic = cfg.loss.name in RELATIVISTIC
    for k in range(cfg.optim.g_steps):
        if k > 0:
            z = sample_z(real.shape[0], m.z_dim, m.z_dist, state.z_gen, real.device)
            fake_lab = fake_labels(lab, m.num_classes, cfg.train.fake_labels, state.z_gen)
            fake = G(z, fake_lab)
        g_fake = D(aug(fake), fake_lab)
        if relativistic:  # the updated D on the step's last real batch
            with torch.no_grad():
                g_real = D(aug(real), lab)
            loss_g = g_loss(g_fake, g_real)
        else:
            loss_g = g_loss(g_fake)
        state.opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        state.adam_g.step()
    D.requires_grad_(True)
    state.step += 1
    return {
        "loss_d": loss_d.detach(),
        "loss_g": loss_g.detach(),
        "d_real": torch.sigmoid(d_real.detach()).mean(),
        "d_fake": torch.sigmoid(d_fake.detach()).mean(),
    }


def total_steps(cfg: Config, batches_per_epoch: int | None) -> int:
    """train.steps, or the steps that make train.epochs passes over a finite dataset."""
    if not cfg.train.epochs:
        return cfg.train.steps
    if batches_per_epoch is None:
        raise GankitError("train.epochs needs a finite dataset: set data.n_points > 0")
    return math.ceil(cfg.train.epochs * batches_per_epoch / cfg.optim.d_steps)


# config keys a resume may change (and every eval.* and track.* key)
RESUMABLE_KEYS = ("train.steps", "train.epochs", "train.log_every", "train.ckpt_every",
                  "train.keep_every", "train.device", "train.threads", "train.progress",
                  "train.stop_on", "optim.lr_g", "optim.lr_d")  # fmt: skip


def _check_resume_config(stored: dict, cfg: Config) -> None:
    """Resuming with a different model/data/optimiser would silently train something else."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    from gankit.config import from_dict

    # keys added by later gankit versions take their defaults in an older run's stored config
    old, new = flat(to_dict(from_dict(Config, stored))), flat(to_dict(cfg))
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    resumable = lambda k: k in RESUMABLE_KEYS or k.startswith(("eval.", "track."))  # noqa: E731
    diff = [k for k in diff if not resumable(k)]
    if diff:
        raise GankitError(
            f"--resume: config differs from the run's in {', '.join(diff)}; only "
            "train.steps/epochs/cadences/device/stop_on, optim.lr_g/lr_d (to recover from a "
            "divergence), eval.* and track.* may change on resume"
        )


class _SignalGuard:
    """Turn SIGINT/SIGTERM into a flag the loop checks between steps (main thread only)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def _handle(self, signum: int, frame: object) -> None:
        if self.signum is not None:  # second Ctrl-C: stop now
            raise KeyboardInterrupt
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


@dataclass
class Probes:
    """What the loop looks at every `sample_every` steps: fixed noise (+ labels) for the snapshot
    grid, fixed real-train / real-test batches for the D-output statistics, and what the live
    diagnostics compare the snapshot with (gankit.diagnose)."""

    z: Tensor
    labels: Tensor | None
    nrow: (
        int  # images per grid row: a conditional grid has one row per class, fixed noise per column
    )
    train_x: Tensor
    train_y: Tensor | None
    test_x: Tensor
    test_y: Tensor | None
    real_diversity: float = 0.0  # mean pairwise distance of train_x
    modes: object | None = None  # toy mixture with centers / std (ring, grid), for mode coverage
    classifier: nn.Module | None = None  # the domain classifier of labelled images, if shipped

    @classmethod
    def build(cls, cfg: Config, data) -> Probes:  # noqa: ANN001 (a data source)
        m, n, g = cfg.model, cfg.train.dstats_n, make_generator(cfg.seed, "fixed_noise")
        if m.num_classes:
            nrow = math.ceil(cfg.train.sample_n / m.num_classes)
            z = sample_z(nrow, m.z_dim, m.z_dist, g).repeat(m.num_classes, 1)  # (K * nrow, z_dim)
            labels = torch.arange(m.num_classes).repeat_interleave(nrow)  # row k: class k
        else:
            nrow, labels = 0, None
            z = sample_z(cfg.train.sample_n, m.z_dim, m.z_dist, g)
        train_x, train_y = data.train_fixed(n, cfg.seed)
        test_x, test_y = data.held_out_labeled(n, cfg.seed)
        if not m.num_classes:
            train_y = test_y = None
        density = getattr(data, "density", None)
        modes = density if hasattr(density, "centers") else None
        return cls(z, labels, nrow, train_x, train_y, test_x, test_y,
                   mean_pairwise_distance(train_x), modes, _watch_classifier(cfg))  # fmt: skip


def _watch_classifier(cfg: Config) -> nn.Module | None:
    """The shipped domain classifier for the class coverage of MNIST / Fashion-MNIST snapshots."""
    if cfg.data.name not in ("mnist", "fashion_mnist") or cfg.data.channels not in (0, 1):
        return None
    from gankit.metrics.classifier import classifier_info, get_classifier

    if classifier_info(cfg.data.name, cfg.data.cache_dir) is None:
        return None
    return get_classifier(cfg.data.name, cfg.data.cache_dir)[0]


def _observe(state: TrainState, probes: Probes, cfg: Config, run_dir: Path) -> dict[str, float]:
    """Snapshot G(fixed noise) to samples/ (STEP.png grid for images, STEP.npy for toys, a GIF frame),
    measure D's outputs on real-train, fresh fake and real-test data, and diagnose the run; returns
    metrics.jsonl fields."""
    from gankit.plots import save_grid

    G = state.G if state.G_ema is None else state.G_ema
    fake = generate(G, probes.z, probes.labels)  # eval mode, train mode restored
    if fake.dim() == 4:
        save_grid(fake, run_dir / "samples" / f"{state.step:06d}.png", probes.nrow)
    else:
        np.save(run_dir / "samples" / f"{state.step:06d}.npy", fake.numpy())
    rec = {"fake_mean": fake.mean().item(), "fake_std": fake.std(dim=0).mean().item()}
    # fresh fakes from the G that D is trained against; noise is a function of the step (resume-exact)
    m, n = cfg.model, probes.train_x.shape[0]
    g = make_generator(cfg.seed, "dstats", state.step)
    fake_y = torch.randint(m.num_classes, (n,), generator=g) if m.num_classes else None
    fresh = generate(state.G, sample_z(n, m.z_dim, m.z_dist, g), fake_y)
    for name, x, y in (("train", probes.train_x, probes.train_y), ("fake", fresh, fake_y),
                       ("test", probes.test_x, probes.test_y)):  # fmt: skip
        stats = d_output_stats(state.D, x, y)
        rec[f"dstat_{name}_mean"], rec[f"dstat_{name}_std"] = stats["mean"], stats["std"]
    if probes.modes is not None:
        from gankit.metrics.toy import mode_stats

        cov = mode_stats(fake.float(), probes.modes.centers, probes.modes.std)
        rec |= {k: cov[k] for k in ("modes", "num_modes", "high_quality")}
    if probes.classifier is not None:
        from gankit.metrics.classifier import predict

        probs, _ = predict(probes.classifier, fake)
        rec["classes_seen"] = int(probs.argmax(1).unique().numel())
        rec["num_classes_clf"] = probs.shape[1]
    if probes.real_diversity > 0:
        rec["diversity_ratio"] = mean_pairwise_distance(fresh) / probes.real_diversity
    rec["weight_norm"] = weight_norm(state.G, state.D)
    if state.step >= DIAGNOSE_FROM:  # G at (or near) its initialisation is not a diagnosis
        rec["diagnoses"] = diagnose(rec, cfg.loss.name)
    return rec


def new_run_dir(run_dir: Path, cfg: Config) -> None:
    """Lay out a fresh run directory; the resolved config is written before the first step."""
    for sub in ("checkpoints", "samples", "plots"):
        (run_dir / sub).mkdir(parents=True, exist_ok=True)
    write_atomic_text(run_dir / "config.yaml", to_yaml(cfg))
    (run_dir / "metrics.jsonl").touch()
    (run_dir / "eval.jsonl").touch()


def record_env(run_dir: Path, cfg: Config, device: torch.device, resumed_at: int | None) -> None:
    """env.json of a new run; on resume the original is kept and the resume appended to its
    `resumes` list, and config.yaml takes the resumed config (e.g. a longer train.steps)."""
    info, path = env_info(device), run_dir / "env.json"
    if resumed_at is not None:
        write_atomic_text(run_dir / "config.yaml", to_yaml(cfg))
        try:
            first = json.loads(path.read_text())
        except (OSError, ValueError):
            first = {}
        if isinstance(first, dict) and first:
            entry = {"step": resumed_at, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
            info = {**first, "resumes": [*first.get("resumes", []), entry]}
    write_json(info, path)


def truncate_log(run_dir: Path, step: int) -> None:
    """On resume, drop metrics.jsonl lines written after the checkpoint's step: they will be
    recomputed identically."""
    kept = [r for r in read_jsonl(run_dir / "metrics.jsonl") if r.get("step", 0) <= step]
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))


def set_lr(state: TrainState, cfg: Config, step: int, steps: int) -> None:
    """The learning rates at `step` of `steps` (a function of the step, so resume is exact, and a
    resume with a lowered optim.lr_g / lr_d takes them at once)."""
    o = cfg.optim
    frac = 1.0 - step / steps if o.lr_schedule == "linear" else 1.0
    if o.lr_schedule == "exponential":
        frac = o.lr_decay ** (-step)
    for opt, lr in ((state.opt_g, o.lr_g), (state.opt_d, o.lr_d)):
        group = opt.param_groups[0]
        group["lr"] = max(lr * frac, o.lr_min) if o.lr_schedule == "exponential" else lr * frac
        if o.name == "sgd":  # momentum ramp, a function of the step like the learning rate
            ramp = min(step / o.momentum_steps, 1.0) if o.momentum_steps else 1.0
            group["momentum"] = o.momentum + (o.momentum_end - o.momentum) * ramp


def nonfinite_error(
    key: str, value: float, first: int, step: int, last: Path, who: str = ""
) -> NonFiniteLossError:
    """The one-line error for a loss that became NaN/inf between steps `first` and `step`."""
    good = ckpt_step(last)
    return NonFiniteLossError(
        f"{who}{key} became {value} between steps {first} and {step}; stopped without saving "
        f"(last good checkpoint: {good}); lower optim.lr_d/lr_g or try another loss.name"
    )


def finite_state(state: TrainState) -> bool:
    """Whether every weight and Adam moment of the pair is finite (a checkpoint worth keeping: a
    finite loss can hide inf in Adam's second moments, which would diverge again on resume)."""
    tensors = [t for m in (state.G, state.D, state.G_ema) if m is not None
               for t in (*m.parameters(), *m.buffers()) if t.is_floating_point()]  # fmt: skip
    for opt in (state.opt_g, state.opt_d):
        tensors += [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def interrupted(signum: int, step: int, last: Path, saved: bool = True) -> TrainingInterrupted:
    name = signal.Signals(signum).name
    if not saved:  # a train.stop_on diagnosis held: the checkpoint from before it is kept
        return TrainingInterrupted(
            f"{name} at step {step}: not saved while a train.stop_on diagnosis holds; {last} "
            f"keeps {ckpt_step(last)}; continue with --resume", signum
        )  # fmt: skip
    return TrainingInterrupted(
        f"{name} at step {step}: checkpoint saved to {last}; continue with --resume", signum
    )


def ckpt_step(path: Path) -> str:
    """'step N' of the checkpoint at `path`, or 'none'."""
    return f"step {load_checkpoint(path)['step']}" if path.exists() else "none"


def train(cfg: Config, run_dir: str | Path, resume: bool = False) -> TrainState:
    """Run (or resume) training; writes config, metrics.jsonl, snapshots and checkpoints in run_dir.

    A new run refuses a directory that holds another run (`resume=True` continues it); the
    directory is locked while training, so a second writer fails at once (gankit.rundir).
    """
    from gankit.rundir import RunLock

    run_dir = Path(run_dir)
    if resume and not (run_dir / "checkpoints" / "last.pt").is_file():
        raise GankitError(f"--resume: no checkpoint in {run_dir / 'checkpoints'} to continue from")
    with RunLock(run_dir):
        if not resume:
            from gankit.run import check_new_run_dir

            check_new_run_dir(run_dir)
        if cfg.train.per_class:
            from gankit.perclass import train_per_class

            return train_per_class(cfg, run_dir, resume)
        return _train(cfg, run_dir, resume)


def _train(cfg: Config, run_dir: Path, resume: bool) -> TrainState:
    """`train` for one G/D pair, in a locked run directory."""
    ckpt_dir, last = run_dir / "checkpoints", run_dir / "checkpoints" / "last.pt"
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    device = get_device(cfg.train.device)
    data = data_from_config(cfg).to(device)
    steps = total_steps(cfg, data.batches_per_epoch)
    if len(data.shape) == 3 and steps < SHORT_RUN:
        per = (
            f" ({cfg.train.epochs} epochs of {data.batches_per_epoch} batches)"
            if cfg.train.epochs
            else ""
        )
        log.warning(
            "only %d steps%s: far too few for a GAN to learn images (expect grey or noisy "
            "samples); ask for thousands, e.g. --set train.steps=5000",
            steps,
            per,
        )
    state = build_state(cfg, data.shape, device)
    probes = Probes.build(cfg, data)
    if not cfg.train.sample_every and data.batches_per_epoch is None:
        raise GankitError(
            "train.sample_every=0 (once per epoch) needs a finite dataset (data.n_points > 0)"
        )
    sample_every = cfg.train.sample_every or max(
        1, (data.batches_per_epoch or 1) // cfg.optim.d_steps
    )
    gens = {"z": state.z_gen}
    if cfg.train.augment:  # checkpointed only when used: older checkpoints keep loading
        gens["augment"] = state.aug_gen
    if resume:
        # on the CPU: RNG states must be CPU byte tensors; load_state_dict moves weights to the device
        ckpt = load_checkpoint(last)
        _check_resume_config(ckpt["config"], cfg)
        state.G.load_state_dict(ckpt["G"])
        state.D.load_state_dict(ckpt["D"])
        if state.G_ema is not None:
            state.G_ema.load_state_dict(ckpt["G_ema"])
        state.opt_g.load_state_dict(ckpt["opt_g"])
        state.opt_d.load_state_dict(ckpt["opt_d"])
        state.step = ckpt["step"]
        set_rng_state(ckpt["rng"], gens)
        truncate_log(run_dir, state.step)
        log.info("resumed %s at step %d", run_dir, state.step)
    else:
        new_run_dir(run_dir, cfg)
        if len(data.shape) == 3:
            from gankit.plots import save_grid

            save_grid(probes.train_x[: cfg.train.sample_n], run_dir / "reals.png")
    record_env(run_dir, cfg, device, state.step if resume else None)

    snaps = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "diagnoses" in r]
    suspect = False  # a train.stop_on diagnosis holds now: keep the last checkpoint from before it

    def watch(rec: dict) -> None:
        """Warn about new diagnoses; stop when a train.stop_on one holds twice in a row."""
        nonlocal suspect
        if "diagnoses" not in rec:
            return
        seen = snaps[-1]["diagnoses"] if snaps else []
        new = [d for d in rec["diagnoses"] if d not in seen]
        if new:
            log.warning("%s", describe(new, rec))
        stop = persistent(snaps, rec, cfg.train.stop_on)
        snaps.append(rec)
        suspect = any(d in cfg.train.stop_on for d in rec["diagnoses"])
        if stop:
            raise DiagnosedStop(
                f"stopped by train.stop_on at step {rec['step']}: {describe(stop, rec)}; "
                f"last checkpoint kept from before it: {ckpt_step(last)}"
            )

    def checkpoint(path: Path) -> None:
        if not finite_state(state):
            raise NonFiniteLossError(
                f"weights or Adam moments became non-finite by step {state.step}; stopped without "
                f"saving (last good checkpoint: {ckpt_step(last)}); resume it with a lower "
                "optim.lr_d/lr_g"
            )
        save_checkpoint(
            path, step=state.step, config=to_dict(cfg),
            models={"G": state.G, "D": state.D, "G_ema": state.G_ema},
            optimizers={"opt_g": state.opt_g, "opt_d": state.opt_d},
            generators=gens, extra={"data_shape": list(data.shape)},
        )  # fmt: skip

    step_fn = train_step
    if cfg.train.fast_path:
        from gankit.fastmlp import eligible, make_fast_step

        why_not = eligible(state.G, state.D, cfg)
        if why_not is None:
            step_fn = make_fast_step(state, cfg)
        log.info("fast MLP step: %s", "on" if why_not is None else f"off ({why_not})")
    if cfg.train.compile and step_fn is train_step:
        state.G.compile()  # in place: state_dict keys (and checkpoints) stay those of the module
        state.D.compile()
    # bfloat16 autocast: no loss scaling needed; choose it by measurement (`gankit bench dcgan`)
    amp = use_amp(cfg.train.amp, device)
    log.info("bf16 autocast: %s", "on" if amp else "off")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)

    from gankit.track import open_tracker

    # wall-clock seconds of training, summed over the processes of a resumed run
    t_start = time.perf_counter()
    elapsed = next((r["time_s"] for r in reversed(read_jsonl(run_dir / "metrics.jsonl"))
                    if "time_s" in r), 0.0)  # fmt: skip

    def record(rec: dict) -> None:
        """A metrics.jsonl line, mirrored to TensorBoard / W&B when track.* asks for it."""
        rec["time_s"] = round(elapsed + time.perf_counter() - t_start, 3)
        append_jsonl(rec, run_dir / "metrics.jsonl")
        tracker.scalars(rec["step"], rec)
        grid = run_dir / "samples" / f"{rec['step']:06d}.png"
        if tracker.enabled and "fake_mean" in rec and grid.exists():
            tracker.image(rec["step"], "samples", np.asarray(Image.open(grid)))

    with open_tracker(run_dir, to_dict(cfg), cfg.track, resume_step=state.step) as tracker:
        if state.step == 0:
            record({"step": 0, **_observe(state, probes, cfg, run_dir)})

        from tqdm.auto import tqdm

        bar = tqdm(total=steps, initial=state.step, disable=not cfg.train.progress, unit="step",
                   dynamic_ncols=True, mininterval=0.5)  # fmt: skip
        acc = torch.zeros(len(LOG_KEYS), device=device)  # sums since the last log line
        n_acc, t_log, d_steps = 0, time.perf_counter(), cfg.optim.d_steps
        with _SignalGuard() as guard:
            while state.step < steps:
                set_lr(state, cfg, state.step, steps)
                i0 = state.step * d_steps
                batches = [data.batch(i0 + j) for j in range(d_steps)]
                reals = [b[0] for b in batches]
                if cfg.train.channels_last and reals[0].dim() == 4:
                    reals = [r.contiguous(memory_format=torch.channels_last) for r in reals]
                labels = [b[1] if cfg.model.num_classes else None for b in batches]
                with autocast:
                    out = step_fn(state, reals, labels, cfg)
                if state.G_ema is not None:
                    ema_update(state.G_ema, state.G, cfg.train.ema_decay)
                acc += torch.stack([out[k] for k in LOG_KEYS])
                n_acc += 1
                s, tc = state.step, cfg.train
                bar.update(1)
                is_log = s % tc.log_every == 0 or s == steps or guard.signum is not None
                is_ckpt = s % tc.ckpt_every == 0 or s == steps or guard.signum is not None
                if is_log or is_ckpt:
                    means = (acc / n_acc).tolist()  # the one host sync per log window
                    bad = [k for k, v in zip(LOG_KEYS, means, strict=True) if not math.isfinite(v)]
                    if bad:
                        bar.close()
                        value = means[LOG_KEYS.index(bad[0])]
                        raise nonfinite_error(bad[0], value, s - n_acc + 1, s, last)
                    now = time.perf_counter()
                    rec = {"step": s, **dict(zip(LOG_KEYS, means, strict=True)),
                           "it_s": n_acc / max(now - t_log, 1e-9)}  # fmt: skip
                    if s % sample_every == 0 or s == steps:
                        rec.update(_observe(state, probes, cfg, run_dir))
                    record(rec)
                    watch(rec)
                    bar.set_postfix(
                        loss_d=f"{means[0]:.3f}", loss_g=f"{means[1]:.3f}", refresh=False
                    )
                    acc.zero_()
                    n_acc, t_log = 0, now
                elif s % sample_every == 0:
                    record(rec := {"step": s, **_observe(state, probes, cfg, run_dir)})
                    watch(rec)
                if is_ckpt and suspect and s == steps:  # diagnosed at the very end: no good last.pt
                    raise DiagnosedStop(
                        f"stopped by train.stop_on at the last step {s}: "
                        f"{describe([d for d in snaps[-1]['diagnoses'] if d in tc.stop_on], rec)}; "
                        f"last checkpoint kept from before it: {ckpt_step(last)}"
                    )
                if is_ckpt and not suspect:
                    checkpoint(last)
                    if tc.keep_every and s % tc.keep_every == 0:
                        checkpoint(ckpt_dir / f"step_{s:06d}.pt")
                if guard.signum is not None:
                    bar.close()
                    raise interrupted(guard.signum, s, last, saved=not suspect)
        bar.close()
    return state
