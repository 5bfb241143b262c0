"""Several processes, one run: torch.distributed (gloo on CPU, nccl on CUDA) under torchrun's elastic
launcher, or `gankit train --nproc N`, which starts the same launcher in-process.

The global batch `data.batch_size` is split across the W ranks: rank r takes rows [r B/W, (r+1) B/W)
of every batch of the run's stream, and draws the noise, fake labels and DiffAugment parameters of the
whole global batch from the run's streams, keeping its rows. The gradients of the update are averaged
across ranks by one all-reduce of the flattened gradients before each optimizer step (StyleGAN3's
way; DDP wrappers are not used: a GAN runs D twice, on real and on fake, before one backward, turns
D's `requires_grad` off during G's update and takes double backwards for R1, each a known DDP
pitfall). Every rank thus applies the same update to the same weights: a W-process run equals the
one-process run up to float rounding (the sum of the ranks' gradients is taken in another order),
given the same global batch. BatchNorm layers see their rank's rows only, unless `train.sync_bn`
replaces them by `SyncBatchNorm2d`, whose batch statistics are all-reduced (torch's SyncBatchNorm is
CUDA-only). Rank 0 alone writes the run directory.

Launch: torchrun sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; `setup()` reads them.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from gankit.errors import GankitError, UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class World:
    """This process's place in the run: rank r of `size` processes (size 1: no torch.distributed)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Whether this process writes the run directory (rank 0)."""
        return self.rank == 0

    def rows(self, n_global: int) -> slice:
        """The rows of a global batch of `n_global` that this rank takes."""
        n = n_global // self.size
        return slice(self.rank * n, (self.rank + 1) * n)


SINGLE = World()


class PeerLost(GankitError):
    """Another process of the run stopped (it crashed or was killed); this one stops too."""


@contextlib.contextmanager
def collective(world: World, what: str) -> Iterator[None]:
    """A collective of `world`; a peer that died turns gloo's / nccl's error into PeerLost."""
    try:
        yield
    except RuntimeError as e:  # DistBackendError and gloo's connection errors are RuntimeErrors
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise PeerLost(
            f"rank {world.rank} of {world.size}: another process of the run stopped ({what}: {first})"
        ) from None


def env_world() -> World:
    """The World that torchrun's environment describes (SINGLE outside torchrun)."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def setup(device: torch.device, world: World) -> torch.device:
    """Join the process group of `world` (gloo on CPU, nccl on CUDA); returns this rank's device
    (cuda:LOCAL_RANK when `device` is CUDA). A no-op for one process."""
    if world.size == 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # a dead rank must not hang the others for the default 10 minutes
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=120))
    if dist.get_world_size() != world.size:
        raise GankitError(f"process group has {dist.get_world_size()} ranks, expected {world.size}")
    return device


def teardown(world: World) -> None:
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()


def check_batch(batch_size: int, world: World) -> None:
    """The global batch must split evenly: every rank takes the same number of rows."""
    if world.size > 1 and batch_size % world.size:
        raise UsageError(
            f"data.batch_size {batch_size} does not split over {world.size} processes: choose a "
            f"multiple of {world.size} (the global batch is divided across the ranks)"
        )


class AllReduceStep:
    """Stands in for `Pair.adam_g/adam_d` in a W-process run: averages the gradients of the
    optimizer's parameters across ranks (one all-reduce of their flattened concatenation), then
    takes the step."""

    def __init__(self, kernel: object, optimizer: torch.optim.Optimizer, world: World) -> None:
        self.kernel, self.world = kernel, world
        self.params = [p for g in optimizer.param_groups for p in g["params"]]

    def step(self) -> None:
        grads = [p.grad for p in self.params if p.grad is not None]
        if grads:
            flat = torch.cat([g.reshape(-1) for g in grads])
            with collective(self.world, "gradient all-reduce"):
                dist.all_reduce(flat)
            flat /= self.world.size
            offset = 0
            for g in grads:
                g.copy_(flat[offset : offset + g.numel()].view_as(g))
                offset += g.numel()
        self.kernel.step()


def all_reduce_sum(t: Tensor, world: World) -> Tensor:
    """`t` summed over ranks (in place; a no-op for one process)."""
    if world.size > 1:
        with collective(world, "all-reduce"):
            dist.all_reduce(t)
    return t


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """Whether `flag` holds on any rank (every rank gets the same answer)."""
    if world.size == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    with collective(world, "stop flag"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(world: World) -> None:
    if world.size > 1:
        with collective(world, "barrier"):
            dist.barrier()


def broadcast_error(message: str | None, world: World) -> str | None:
    """Rank 0's error message (or None) on every rank: what rank 0 decided (a diagnosis, a
    failed write) stops every rank at the same step."""
    return broadcast_object(message, world)


def broadcast_object(obj: object, world: World) -> object:
    """Rank 0's `obj` on every rank (e.g. the checkpoint a resume starts from: only rank 0 reads
    the run directory)."""
    if world.size == 1:
        return obj
    box = [obj]
    with collective(world, "broadcast"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


@dataclass(frozen=True)
class RankRows:
    """A random stream seen by one rank: each draw of n numbers is this rank's rows of the draw of
    n * size numbers the one-process run makes (DiffAugment's per-sample parameters)."""

    generator: torch.Generator
    world: World

    @property
    def device(self) -> torch.device:
        return self.generator.device


class _SyncStats:
    """Training-mode statistics of the global batch: the per-channel sums of x and x^2 and the
    count are all-reduced (differentiably) across ranks. On one process, or in eval mode, the layer
    is the BatchNorm it extends. Works on CPU (gloo) and CUDA."""

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        import torch.distributed.nn.functional as dist_nn

        c = x.shape[1]
        dims = (0, *range(2, x.dim()))
        n_local = x.numel() // c
        stats = torch.cat([x.sum(dim=dims), (x * x).sum(dim=dims), x.new_tensor([float(n_local)])])
        stats = dist_nn.all_reduce(stats)  # (2C + 1,), gradients flow back to every rank
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean  # biased, as BatchNorm normalises
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = (
                    self.momentum
                    if self.momentum is not None
                    else 1.0 / float(self.num_batches_tracked)
                )
                self.running_mean.lerp_(mean.detach(), m)
                self.running_var.lerp_((var * (n / (n - 1).clamp(min=1))).detach(), m)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (x - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class SyncBatchNorm1d(_SyncStats, nn.BatchNorm1d):
    """BatchNorm1d with the global batch's statistics (see `_SyncStats`)."""


class SyncBatchNorm2d(_SyncStats, nn.BatchNorm2d):
    """BatchNorm2d with the global batch's statistics (see `_SyncStats`)."""


_SYNC = {nn.BatchNorm1d: SyncBatchNorm1d, nn.BatchNorm2d: SyncBatchNorm2d}


def convert_sync_batchnorm(module: nn.Module) -> nn.Module:
    """`module` with every BatchNorm1d/2d replaced by its Sync form holding the same weights and
    buffers (state_dict keys unchanged, so checkpoints load in either form)."""
    for name, child in module.named_children():
        if type(child) in _SYNC:
            sync = _SYNC[type(child)](child.num_features, child.eps, child.momentum, child.affine,
                                      child.track_running_stats).to(next(child.buffers()).device)  # fmt: skip
            sync.load_state_dict(child.state_dict())
            setattr(module, name, sync)
        else:
            convert_sync_batchnorm(child)
    return module


def launch(nproc: int, argv: list[str]) -> int:
    """Run `gankit ARGV` in `nproc` processes on this machine under torch's elastic launcher (what
    `torchrun --standalone --nproc_per_node NPROC -m gankit ARGV` does); returns the exit code:
    0, the first failed rank's code, or 128 + the signal that stopped the launcher."""
    import sys
    import uuid

    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    config = LaunchConfig(
        min_nodes=1, max_nodes=1, nproc_per_node=nproc, run_id=f"gankit-{uuid.uuid4()}",
        rdzv_backend="c10d", rdzv_endpoint="localhost:0", max_restarts=0, monitor_interval=0.1,
    )  # fmt: skip
    try:
        elastic_launch(config, sys.executable)("-m", "gankit", *argv)
    except ChildFailedError as e:
        code = e.get_first_failure()[1].exitcode
        return 128 - code if code < 0 else code or 1
    except SignalException as e:
        return 128 + int(e.sigval)
    return 0
