"""Decoded images in memory and the trainer's batches of them: `ImageSet` (uint8 arrays, usually
read-only memory maps of the cache that `gankit.data.images` builds) and `ImageSource` (batch i
is a function of (seed, i)), plus the uint8 <-> [-1, 1] float conversions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from gankit.data.readers import DataError
from gankit.utils import make_generator


@dataclass
class ImageSet:
    """Decoded images of one dataset: (N, C, H, W) uint8 arrays (np.memmap when loaded from the cache)."""

    train: np.ndarray  # (N, C, H, W) uint8
    train_labels: np.ndarray  # (N,) int64, zeros if unlabelled
    test: np.ndarray  # (M, C, H, W) uint8: the official test split, or a hash split of a folder
    test_labels: np.ndarray  # (M,) int64
    num_classes: int  # 0 when the data has no labels
    classes: list[str]  # class names, [] if none
    skipped: list[str]  # files skipped by skip_bad (relative paths)
    cache_path: str  # the train .npy
    # training images left out by data.params.n_train (MNIST train[n_train:]): Parzen's validation
    unused_train: np.ndarray | None = None


def to_float(u8: Tensor) -> Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1]."""
    return u8.float() / 127.5 - 1


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [-1, 1] -> uint8 in [0, 255] (rounded, clamped): the inverse of `to_float`."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


def gather(images: np.ndarray, idx: Tensor) -> Tensor:
    """images[idx] as a uint8 tensor, read from the memory map in ascending index order for locality."""
    idx_np = idx.numpy()
    order = np.argsort(idx_np, kind="stable")
    out = np.empty((len(idx_np), *images.shape[1:]), np.uint8)
    out[order] = images[idx_np[order]]
    return torch.from_numpy(out)


class ImageSource:
    """Batches of an ImageSet as float tensors in [-1, 1]; batch i is a function of (seed, i).

    Epoch e visits every training image once, in the order of a permutation drawn from
    make_generator(seed, "epoch", e); the last incomplete batch is dropped (as in DCGAN training).

    Attributes:
        shape: (C, H, W) of one image.
        size: N training images.
        batches_per_epoch: N // batch_size.
        device: where batches land (cpu until `to`).
    """

    def __init__(self, images: ImageSet, seed: int, batch_size: int):
        self.images, self.seed, self.batch_size = images, seed, batch_size
        self.shape: tuple[int, int, int] = tuple(images.train.shape[1:])
        self.num_classes, self.classes = images.num_classes, images.classes
        self.size = len(images.train)
        if not 0 < batch_size <= self.size:
            raise DataError(
                f"data.batch_size {batch_size} does not fit the {self.size} training images of {images.cache_path}"
            )
        self.batches_per_epoch = self.size // batch_size
        self.device = torch.device("cpu")
        self._labels = torch.from_numpy(np.asarray(images.train_labels, dtype=np.int64))
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def to(self, device: torch.device | str) -> ImageSource:
        """Later batches land on `device`; returns self."""
        self.device = torch.device(device)
        return self

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:  # cached: an epoch's batches share it
            g = make_generator(self.seed, "epoch", epoch)
            self._perm = torch.randperm(self.size, generator=g)
            self._epoch = epoch
        return self._perm

    def epoch_indices(self, epoch: int) -> Tensor:
        """(N,) int64: the order in which epoch `epoch` visits the training images."""
        return self._permutation(epoch).clone()

    def batch(self, index: int) -> tuple[Tensor, Tensor]:
        """Batch `index` (counted over the whole run): ((B, C, H, W) float in [-1, 1], (B,) int64 labels)."""
        epoch, i = divmod(index, self.batches_per_epoch)
        idx = self._permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        # move uint8 (4x fewer bytes than float32), convert on the device
        x = gather(self.images.train, idx).to(self.device)
        return to_float(x), self._labels[idx].to(self.device)

    def train_fixed(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """n fixed training images ((n, C, H, W) in [-1, 1], (n,) labels) on the CPU.

        Chosen by `seed` alone, not the training seed, so runs with different seeds see the same images.
        """
        idx = torch.randperm(self.size, generator=make_generator(seed, "train_fixed"))[:n]
        return to_float(gather(self.images.train, idx)), self._labels[idx]

    def held_out_labeled(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """min(n, M) test images ((n, C, H, W) in [-1, 1], (n,) labels) on the CPU, chosen by `seed` alone."""
        m = len(self.images.test)
        if m == 0 and n > 0:
            raise DataError(f"the test split of {self.images.cache_path} is empty")
        idx = torch.randperm(m, generator=make_generator(seed, "held_out"))[:n]
        labels = torch.from_numpy(np.asarray(self.images.test_labels, dtype=np.int64))
        return to_float(gather(self.images.test, idx)), labels[idx]

    def held_out(self, n: int, seed: int = 0) -> Tensor:
        """min(n, M) test images (n, C, H, W) in [-1, 1] on the CPU (the first of `held_out_labeled`)."""
        return self.held_out_labeled(n, seed)[0]
