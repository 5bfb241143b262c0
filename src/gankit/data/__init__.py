"""Datasets by name. `DATASETS[name]` builds a toy density or an image set from `data.params`;
`build_data` wraps it in a source that yields batch number `i` deterministically from `(seed, i)`, so
resuming replays the same batches without saving loader state.

Every source is a `DataSource`: shape, num_classes, classes, size (None: infinite),
batches_per_epoch, device, to(device), batch(i) -> (x, labels | None), train_fixed(n) and held_out(n)
/ held_out_labeled(n) (real test data). A `ToySource` also has its `density`; an `ImageSource` its
`images` (the uint8 ImageSet) and `epoch_indices(e)`.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

from gankit.data import images, toy
from gankit.data.image_source import ImageSource
from gankit.data.images import COMMON_OPTIONS
from gankit.utils import make_generator

DATASETS = {
    "gauss1d": toy.gauss1d,
    "split_normal": toy.split_normal,
    "heart": toy.heart,
    "ring": toy.ring,
    "grid": toy.grid,
    "mnist": images.mnist,
    "fashion_mnist": images.fashion_mnist,
    "stacked_mnist": images.stacked_mnist,
    "cifar10": images.cifar10,
    "celeba": images.celeba,
    "folder": images.folder,
}
RESERVED = ("n_points", *COMMON_OPTIONS)  # set by data.* fields, not data.params


@runtime_checkable
class DataSource(Protocol):
    """What the trainer, the snapshots and the metrics ask of a training data source."""

    shape: tuple[int, ...]  # one sample, e.g. (2,) or (1, 28, 28)
    num_classes: int  # 0: unlabelled
    classes: list[str]
    size: int | None  # training samples; None: drawn afresh (toy densities)
    batches_per_epoch: int | None
    device: torch.device

    def to(self, device: torch.device) -> DataSource: ...

    def batch(self, index: int) -> tuple[Tensor, Tensor | None]: ...

    def train_fixed(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor | None]: ...

    def held_out(self, n: int, seed: int = 0) -> Tensor: ...

    def held_out_labeled(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor | None]: ...


class ToySource:
    """Batches of a toy density: a finite set of `n_points` shuffled per epoch, or fresh draws.

    Attributes:
        shape: shape of one sample, e.g. (2,).
        size: number of points of the finite set, or None for infinite sampling.
        batches_per_epoch: ceil(size / batch_size) (the last batch may be smaller), or None.
    """

    num_classes = 0
    classes: list[str] = []

    def __init__(self, density: toy.ToyDensity, seed: int, batch_size: int, n_points: int = 0):
        self.density, self.seed, self.batch_size = density, seed, batch_size
        self.shape = (density.dim,)
        self.size = n_points or None
        self.device = torch.device("cpu")
        self.data = density.sample(n_points, make_generator(seed, "data")) if n_points else None
        self.batches_per_epoch = math.ceil(n_points / batch_size) if n_points else None
        self._epoch, self._shuffled = -1, self.data

    def to(self, device: torch.device) -> ToySource:
        self.device = torch.device(device)
        if self.data is not None:
            self.data = self.data.to(self.device)
            self._epoch = -1
        return self

    def batch(self, index: int) -> tuple[Tensor, Tensor | None]:
        """Batch number `index` (0-based, counted over the whole run): ((B, dim) points, None)."""
        if self.data is None:
            g = make_generator(self.seed, "batch", index)
            return self.density.sample(self.batch_size, g).to(self.device), None
        epoch, i = divmod(index, self.batches_per_epoch)
        if epoch != self._epoch:  # one permutation per epoch, a function of (seed, epoch)
            perm = torch.randperm(self.size, generator=make_generator(self.seed, "epoch", epoch))
            self._shuffled, self._epoch = self.data[perm.to(self.device)], epoch
        return self._shuffled[i * self.batch_size : (i + 1) * self.batch_size], None

    def held_out(self, n: int, seed: int = 0) -> Tensor:
        """(n, dim) fresh points from the density, from a stream disjoint from training data."""
        return self.density.sample(n, make_generator(self.seed, "held_out", seed))

    def held_out_labeled(self, n: int, seed: int = 0) -> tuple[Tensor, None]:
        return self.held_out(n, seed), None

    def train_fixed(self, n: int, seed: int = 0) -> tuple[Tensor, None]:
        """(n, dim) fixed training points: from the finite set if there is one, else a fixed draw."""
        if self.data is None:
            return self.density.sample(n, make_generator(self.seed, "train_fixed", seed)), None
        g = make_generator(self.seed, "train_fixed", seed)
        idx = torch.randperm(self.size, generator=g)[:n]
        return self.data.cpu()[idx], None


def build_data(
    name: str,
    params: dict,
    seed: int,
    batch_size: int,
    n_points: int = 0,
    options: dict | None = None,
) -> ToySource | ImageSource:
    """The data source of `data.name` with keyword arguments `data.params`.

    `options` are the image options of COMMON_OPTIONS (root, img_size, channels, ...), ignored by toys.
    """
    from gankit.registry import lookup

    builder = lookup(DATASETS, name, "dataset (data.name)")
    if name in TOYS:
        return ToySource(builder(**params), seed, batch_size, n_points)
    return ImageSource(builder(**(options or {}), **params), seed, batch_size)


TOYS = ("gauss1d", "split_normal", "heart", "ring", "grid")


def data_from_config(cfg) -> DataSource:  # noqa: ANN001 (gankit.config.Config)
    """The training data source of a Config."""
    d = cfg.data
    options = {k: getattr(d, k) for k in COMMON_OPTIONS}
    return build_data(d.name, d.params, cfg.seed, d.batch_size, d.n_points, options)
