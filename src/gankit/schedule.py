"""Schedules: which pair takes which batch at each step of the run's clock.

`Stream` is the ordinary run: one pair (key None) takes batch `i` of the data source's stream, a
function of (seed, i). `ClassRouting` is `train.per_class` ("classDCGAN"): one unconditional pair
per class, fed by one data pass. Epoch e walks the permutation `ImageSource.epoch_indices(e)` once
and appends each image to its class's buffer; a buffer that holds `data.batch_size * optim.d_steps`
images is an *event*: that class's pair takes one step on it. Leftover partial buffers are dropped at
the epoch's end (as drop_last does), so each pair sees each image of its class at most once per
epoch. Both are pure functions of (seed, step), so `--resume` is bit-identical on CPU.

Pairs take their steps one after another, not vectorised: stacking them (torch.func vmap or grouped
convolutions) measured slower on the 2-core CPU this was written on, but a vectorised/grouped path
could pay on a GPU, where one pair's batch of 128 small images leaves most of the device idle.
"""

from __future__ import annotations

import ctypes
import math
import sys

import numpy as np
import torch
from torch import Tensor

from gankit.config import Config
from gankit.data import DataSource
from gankit.data.image_source import ImageSource
from gankit.data.images import gather, to_float
from gankit.errors import GankitError

Batch = tuple[int | None, list[Tensor], list[Tensor | None]]  # (pair key, d_steps reals, labels)


def total_steps(cfg: Config, batches_per_epoch: int | None) -> int:
    """train.steps, or the steps that make train.epochs passes over a finite dataset."""
    if not cfg.train.epochs:
        return cfg.train.steps
    if batches_per_epoch is None:
        raise GankitError("train.epochs needs a finite dataset: set data.n_points > 0")
    return math.ceil(cfg.train.epochs * batches_per_epoch / cfg.optim.d_steps)


class Stream:
    """One pair, the data source's batch stream: step s takes batches s * d_steps + j.

    Attributes:
        keys: [None], the one pair.
        steps: the run's length in steps.
        sample_every: the snapshot cadence (train.sample_every, 0 = once per epoch).
    """

    def __init__(self, cfg: Config, data: DataSource) -> None:
        self.cfg, self.data, self.keys = cfg, data, [None]
        self.steps = total_steps(cfg, data.batches_per_epoch)
        if not cfg.train.sample_every and data.batches_per_epoch is None:
            raise GankitError(
                "train.sample_every=0 (once per epoch) needs a finite dataset (data.n_points > 0)"
            )
        self.sample_every = cfg.train.sample_every or max(
            1, (data.batches_per_epoch or 1) // cfg.optim.d_steps
        )
        self.pair_steps = self.steps  # steps each pair takes (for the short-run warning)

    def batch(self, step: int) -> Batch:
        d_steps = self.cfg.optim.d_steps
        batches = [self.data.batch(step * d_steps + j) for j in range(d_steps)]
        labels = [b[1] if self.cfg.model.num_classes else None for b in batches]
        return None, [b[0] for b in batches], labels


def epoch_events(
    perm: Tensor, labels: Tensor, classes: list[int], size: int
) -> list[tuple[int, Tensor]]:
    """The events of one epoch in firing order: (class id, (size,) training-image indices).

    Equal to walking `perm` with one buffer per class and firing a buffer when it holds `size`
    indices, without the Python walk: the j-th batch of class c fires at the position in `perm` of
    its (j + 1) * size-th image of class c.

    Args:
        perm: (N,) int64 order of the epoch's images.
        labels: (N,) int64 class of every training image.
    """
    lab = labels[perm]
    fired = []
    for c in classes:
        pos = (lab == c).nonzero().squeeze(1)  # ascending positions in perm
        pos = pos[: len(pos) // size * size].view(-1, size)
        fired += [(int(p[-1]), c, perm[p]) for p in pos]
    fired.sort(key=lambda e: e[0])
    return [(c, idx) for _, c, idx in fired]


def check_classes(cfg: Config, data: DataSource, size: int) -> tuple[list[int], Tensor]:
    """(the classes to train, sorted; (N,) int64 labels of the training images), or a one-line
    GankitError."""
    if cfg.model.num_classes:
        raise GankitError(
            f"train.per_class trains unconditional pairs: set model.num_classes=0 "
            f"(got {cfg.model.num_classes})"
        )
    if not data.num_classes or not isinstance(data, ImageSource):
        raise GankitError(
            f"train.per_class needs a labelled image dataset; {cfg.data.name!r} has no classes "
            "(a folder dataset needs >= 2 class subfolders)"
        )
    names = ", ".join(f"{i} ({n})" for i, n in enumerate(data.classes))
    bad = [c for c in cfg.train.classes if not 0 <= c < data.num_classes]
    if bad:
        raise GankitError(
            f"train.classes: {bad[0]} is not a class of {cfg.data.name!r}; choose from: {names}"
        )
    classes = sorted(set(cfg.train.classes)) or list(range(data.num_classes))
    labels = torch.from_numpy(np.asarray(data.images.train_labels, dtype=np.int64))
    counts = torch.bincount(labels, minlength=data.num_classes).tolist()
    small = [f"{c} ({counts[c]})" for c in classes if counts[c] < size]
    if small:
        raise GankitError(
            f"train.per_class: classes {', '.join(small)} have fewer training images than "
            f"data.batch_size * optim.d_steps = {size}; lower data.batch_size or leave them out "
            "of train.classes"
        )
    return classes, labels


class ClassRouting:
    """One pair per class of `train.classes` ([] = all); step s is the s-th event of the data pass
    (`epoch_events`). `train.epochs` counts passes over the data, `train.steps` and every cadence
    count events (pair-steps of all pairs together)."""

    def __init__(self, cfg: Config, data: ImageSource) -> None:
        self.cfg, self.data = cfg, data
        self.size = cfg.data.batch_size * cfg.optim.d_steps  # images of one event
        self.keys, self.labels = check_classes(cfg, data, self.size)
        counts = torch.bincount(self.labels, minlength=data.num_classes)
        self.per_epoch = sum(int(counts[c]) // self.size for c in self.keys)
        tc = cfg.train
        self.steps = tc.epochs * self.per_epoch if tc.epochs else tc.steps
        self.sample_every = tc.sample_every or self.per_epoch
        self.pair_steps = self.steps // len(self.keys)
        self._epoch, self._events = -1, []

    def batch(self, step: int) -> Batch:
        e, j = divmod(step, self.per_epoch)
        if e != self._epoch:
            self._epoch = e
            self._events = epoch_events(
                self.data.epoch_indices(e), self.labels, self.keys, self.size
            )
        c, idx = self._events[j]
        x = to_float(gather(self.data.images.train, idx).to(self.data.device))  # uint8 moved
        reals = list(x.split(self.cfg.data.batch_size))
        return c, reals, [None] * len(reals)


def schedule_for(cfg: Config, data: DataSource) -> Stream | ClassRouting:
    return ClassRouting(cfg, data) if cfg.train.per_class else Stream(cfg, data)


def keep_freed_memory() -> None:
    """Stop glibc from handing freed heap memory back to the OS after every step (process-wide).

    Each step frees and re-allocates its activations and gradients; with ten pairs' long-lived
    tensors interleaved on the heap, glibc trims the heap top and the next step page-faults it back
    in (system time): a one-pass MNIST run took 1.14-1.22x the single pair's time per image, and
    0.99-1.02x with these settings (`gankit bench per_class`, 2-core CPU). Up to 1 GiB of freed
    memory stays mapped; a no-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    mallopt(m_mmap_threshold, 32 * 2**20)  # the upper end of glibc's own dynamic threshold
    mallopt(m_trim_threshold, 2**30)
