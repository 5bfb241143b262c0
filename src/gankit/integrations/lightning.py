"""PyTorch Lightning wrappers around gankit's own models, losses and `train_step`.

    import lightning
    from gankit.config import load_config
    from gankit.integrations.lightning import GANDataModule, GANModule

    cfg = load_config("toy_ring", ["train.steps=50"])
    lightning.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False).fit(
        GANModule(cfg), GANDataModule(cfg))

Steps: a gankit step is `optim.d_steps` D updates then `optim.g_steps` G updates, and GANModule stops
the Trainer after `train.steps` (or `train.epochs`) of them, as `gankit train` does. Lightning's
`global_step` counts optimizer steps instead, `d_steps + g_steps` per gankit step (2 by default), so
`Trainer(max_steps=N)` stops after N / (d_steps + g_steps) gankit steps: use
`max_steps=lightning_steps(cfg, n)` to stop after `n` gankit steps.

Same numbers as gankit: the models, optimizers and noise stream come from `gankit.pair.build_pair`,
the batches from the config's data source (batch `i` is a function of `(seed, i)`), and each step is
`gankit.pair.Pair.update`, the trainer's own step, so on CPU a run equals `gankit train`'s autograd
step applied to the same batches, bit for bit
(tests/test_lightning.py), and a run resumed from a Lightning checkpoint equals an uninterrupted one.
It is not `gankit train`'s fast MLP path (`train.fast_path`, same update up to float rounding), and
`train.amp` / `train.compile` are ignored: use `Trainer(precision="bf16-mixed")` (or `"16-mixed"`,
whose loss scaling goes through `manual_backward`).

Several devices: `Trainer(devices=N, strategy="ddp")` runs the step as `gankit train --nproc N`
does (gankit.distributed): every rank takes its rows of the global batch (`data.batch_size`), draws
the global batch's noise, and the gradients are averaged by gankit's all-reduce before each
optimizer step (DDP's own gradient hooks are blocked: a GAN's several backward passes per step are
what DDP's reducer does not expect), so a Lightning N-device run equals gankit's N-process run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from gankit.utils import GankitError

try:
    import lightning as L
except ImportError as e:
    raise GankitError(
        "gankit.integrations.lightning needs the lightning package: pip install 'gankit[lightning]'"
    ) from e

from gankit.config import Config, config_from_dict, g_bias_from_data, to_dict
from gankit.data import data_from_config
from gankit.distributed import SINGLE, World
from gankit.pair import Pair, build_pair
from gankit.sample import generate, sample_z
from gankit.schedule import total_steps
from gankit.utils import make_generator


def lightning_steps(cfg: Config, steps: int) -> int:
    """The `Trainer(max_steps=...)` that stops after `steps` gankit steps (Lightning counts every
    optimizer.step(): d_steps + g_steps per gankit step)."""
    return steps * (cfg.optim.d_steps + cfg.optim.g_steps)


class _LightningStep:
    """Stands in for `Pair.adam_g/adam_d`. gankit's `AdamKernel` runs the fused Adam kernel
    directly, past `optimizer.step()`; Lightning counts `global_step` (and runs its precision plugin
    and `on_before_optimizer_step` hook) only inside its optimizer wrapper's `step()`, so that is
    what gets called here: the same update, counted."""

    def __init__(self, optimizer: Any) -> None:
        self.optimizer = optimizer

    def step(self) -> None:
        self.optimizer.step()


class GANModule(L.LightningModule):
    """A gankit G/D pair trained by `gankit.pair.Pair.update` under Lightning's manual optimization.

    Args:
        cfg: a gankit Config (or its `to_dict` form, as stored in the checkpoint's hyper-parameters).
        data_shape: shape of one sample, e.g. (2,) or (1, 28, 28); None reads it from the data source.
        steps: the run's length in gankit steps; None: `train.steps`, or `train.epochs` passes over
            the data.

    Attributes:
        G, D, G_ema: gankit models (`gankit.models`); G_ema is None unless `train.ema_decay > 0`.
        step: gankit steps done (saved in Lightning checkpoints with the noise stream's state).
    """

    def __init__(
        self,
        cfg: Config | dict,
        data_shape: Sequence[int] | None = None,
        steps: int | None = None,
    ) -> None:
        super().__init__()
        cfg = config_from_dict(cfg) if isinstance(cfg, dict) else cfg
        if cfg.train.per_class:
            raise GankitError("GANModule trains one G/D pair: set train.per_class=false")
        if cfg.train.augment:
            raise GankitError(
                "GANModule does not checkpoint DiffAugment's stream: unset train.augment"
            )
        if g_bias_from_data(cfg):
            raise GankitError(
                "GANModule does not initialise G from the data: unset model.g.output_bias"
            )
        if data_shape is None or steps is None:
            data = data_from_config(cfg)
            data_shape = data.shape if data_shape is None else data_shape
            steps = total_steps(cfg, data.batches_per_epoch) if steps is None else steps
        self.cfg, self.data_shape, self.total_steps = cfg, tuple(data_shape), steps
        # plain containers only: load_from_checkpoint rebuilds the module from them
        self.save_hyperparameters(
            {"cfg": to_dict(cfg), "data_shape": list(data_shape), "steps": steps}
        )
        self.automatic_optimization = False
        s = build_pair(cfg, self.data_shape, torch.device("cpu"))  # seeds G, D like `gankit train`
        self.G, self.D, self.G_ema = s.G, s.D, s.G_ema
        self._optimizers = (s.opt_g, s.opt_d)
        self.step = 0
        self.world = SINGLE  # this process's rank among the fit's devices (on_fit_start)
        self._z_state: Tensor | None = None  # noise stream state from a checkpoint
        self.state: Pair | None = None  # built on the fit's device in on_fit_start

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        """[opt_g, opt_d]: gankit's two optimizers (optim.name: fused Adam with lr_g/lr_d and
        betas_g/betas_d, or SGD with momentum)."""
        return list(self._optimizers)

    def on_fit_start(self) -> None:
        t = self.trainer
        self.world = (
            SINGLE if t.world_size == 1 else World(t.global_rank, t.world_size, t.local_rank)
        )
        if self.cfg.data.batch_size % self.world.size:
            raise GankitError(
                f"data.batch_size {self.cfg.data.batch_size} does not split over {self.world.size} "
                f"devices: choose a multiple of {self.world.size} (it is the global batch)"
            )
        # the noise stream lives on the training device, as in gankit.pair.build_pair; it goes
        # on from a checkpoint just loaded, else from an earlier fit of this module
        z_gen = make_generator(self.cfg.seed, "z", device=self.device)
        if self._z_state is None and self.state is not None:
            self._z_state = self.state.z_gen.get_state()
        if self._z_state is not None:
            z_gen.set_state(self._z_state)
            self._z_state = None
        if self.cfg.train.threads:  # as `gankit train` does: tiny MLPs run fastest on 1 thread
            torch.set_num_threads(self.cfg.train.threads)
        opt_g, opt_d = self.optimizers()
        # DiffAugment's stream is not carried across Lightning checkpoints: refused in __init__
        aug_gen = make_generator(self.cfg.seed, "augment", device=self.device)
        self.state = Pair(self.G, self.D, opt_g, opt_d, z_gen, self.step, self.G_ema, aug_gen,
                          world=self.world)  # fmt: skip
        # Lightning's counted step (after gankit's all-reduce of the gradients, several devices)
        self.state.set_steps(_LightningStep(opt_g), _LightningStep(opt_d))
        self.state.backward = self.manual_backward

    def training_step(self, batch: Sequence[Any], batch_idx: int) -> None:
        """One gankit step on `batch` = (step index, d_steps real batches, their labels)."""
        index, reals, labels = batch
        state, cfg = self.state, self.cfg
        if int(index) != state.step:
            raise GankitError(
                f"GANModule is at step {state.step} but got the batch of step {int(index)}: "
                "train with GANDataModule(cfg), which resumes from the checkpoint's step"
            )
        labels = [y if cfg.model.num_classes else None for y in labels]
        if self.world.size > 1:  # this rank's rows of the global batch
            rows = self.world.rows(reals[0].shape[0])
            reals = [r[rows] for r in reals]
            labels = [None if y is None else y[rows] for y in labels]
        strategy = self.trainer.strategy
        block = getattr(strategy, "block_backward_sync", contextlib.nullcontext)
        with block():  # gankit all-reduces the gradients itself (see the module doc)
            out = state.update(list(reals), labels, cfg, state.step, self.total_steps)
        self.step = state.step
        if self.step % cfg.train.log_every == 0 or self.step >= self.total_steps:
            # at gankit's log cadence: logging every step costs a host sync and Lightning's
            # bookkeeping per step, which dominates a toy step; pair it with
            # Trainer(log_every_n_steps=2 * train.log_every) (two optimizer steps per gankit step)
            self.log_dict(
                out, prog_bar=True, on_step=True, on_epoch=False, batch_size=reals[0].shape[0]
            )
        if self.step >= self.total_steps:
            self.trainer.should_stop = True  # like `gankit train`: stop after train.steps

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        z = self.state.z_gen if self.state is not None else None
        checkpoint["gankit"] = {"step": self.step,
                                "z_gen": z.get_state() if z is not None else self._z_state}  # fmt: skip

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        g = checkpoint.get("gankit", {})
        self.step, self._z_state = g.get("step", 0), g.get("z_gen")

    @torch.no_grad()
    def sample(self, n: int, seed: int = 0, labels: Tensor | None = None) -> Tensor:
        """(n, *data_shape) samples on CPU, in the data's range, from G_ema if kept, else G.

        The same noise (and, for conditional models, uniform labels) as `gankit sample --n n --seed
        seed` draws, so a module and its `save_gankit_checkpoint` file give the same samples.
        """
        m = self.cfg.model
        z = sample_z(n, m.z_dim, m.z_dist, torch.Generator().manual_seed(seed))
        if labels is None and m.num_classes:
            labels = torch.randint(
                m.num_classes, (n,), generator=torch.Generator().manual_seed(seed)
            )
        return generate(self.G if self.G_ema is None else self.G_ema, z, labels)

    def save_gankit_checkpoint(self, path: str | Path) -> Path:
        """Write a gankit checkpoint (`gankit sample` / `gankit eval` / `load_generator` read it)."""
        from gankit.checkpoint import pair_entry, save_checkpoint

        z = self.state.z_gen if self.state is not None else make_generator(self.cfg.seed, "z")
        entry = pair_entry(
            None, self.step, {"G": self.G, "D": self.D, "G_ema": self.G_ema},
            {"opt_g": self._optimizers[0], "opt_d": self._optimizers[1]}, {"z": z},
        )  # fmt: skip
        return save_checkpoint(path, step=self.step, config=to_dict(self.cfg), pairs=[entry],
                               data_shape=self.data_shape)  # fmt: skip


class GANSteps(IterableDataset):
    """The batches of gankit steps `start, ..., stop - 1`: items `(i, reals, labels)` where `reals`
    and `labels` are the `d_steps` batches `source.batch(i * d_steps + j)` (labels None for
    unconditional data). With DataLoader workers, worker w yields the steps i = w (mod workers);
    the DataLoader takes one item from each worker in turn, so the order is unchanged."""

    def __init__(self, source: Any, d_steps: int, start: int, stop: int) -> None:
        self.source, self.d_steps, self.start, self.stop = source, d_steps, start, stop

    def __iter__(self) -> Iterator[tuple[int, list[Tensor], list[Tensor | None]]]:
        info = get_worker_info()
        first, every = (0, 1) if info is None else (info.id, info.num_workers)
        for i in range(self.start + first, self.stop, every):
            batches = [self.source.batch(i * self.d_steps + j) for j in range(self.d_steps)]
            yield i, [b[0] for b in batches], [b[1] for b in batches]


class GANDataModule(L.LightningDataModule):
    """The training batches of a gankit config, in `gankit train`'s order, for `GANModule`.

    Batches are built on the CPU (Lightning moves them to the device). Training starts at the
    GANModule's step: 0, the step of the checkpoint a fit resumes from, or where an earlier fit of
    the same module stopped.

    Args:
        num_workers: DataLoader worker processes (0: batches are made in the training process).
    """

    def __init__(self, cfg: Config, num_workers: int = 0) -> None:
        super().__init__()
        self.cfg, self.num_workers = cfg, num_workers
        self.source: Any = None

    def setup(self, stage: str | None = None) -> None:
        if self.source is None:
            self.source = data_from_config(self.cfg)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        cfg = self.cfg
        # the module's step: restored from the checkpoint before this is called, and it counts
        # the steps of earlier fits of the same module too (a new Trainer's global_step does not)
        module = self.trainer.lightning_module if self.trainer is not None else None
        start = module.step if isinstance(module, GANModule) else 0
        stop = total_steps(cfg, self.source.batches_per_epoch)
        steps = GANSteps(self.source, cfg.optim.d_steps, start, stop)
        return DataLoader(steps, batch_size=None, num_workers=self.num_workers)
