"""Metrics by name. Each entry of METRICS maps (fake samples, data source) to a result dict by calling
a pure function of tensors; `evaluate` adds the protocol (n, seed, step, version) to each record."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from gankit.metrics import toy


def _modes(fake: Tensor, data: Any, seed: int) -> dict:
    d = data.density
    if not hasattr(d, "centers"):
        raise ValueError(
            f"metric 'modes' needs a mixture dataset (ring, grid), not {type(d).__name__}"
        )
    return toy.mode_stats(fake, d.centers, d.std)


def _dist1d(fake: Tensor, data: Any, seed: int) -> dict:
    d = data.density
    if not hasattr(d, "pdf"):
        raise ValueError("metric 'dist1d' needs the 1-D Gaussian dataset (gauss1d)")
    return toy.dist1d_stats(fake, d.mean, d.std)


def _sliced_w1(fake: Tensor, data: Any, seed: int) -> dict:
    return toy.sliced_w1(fake.flatten(1), data.held_out(len(fake), seed).flatten(1), seed=seed)


METRICS = {
    "modes": _modes,
    "dist1d": _dist1d,
    "sliced_w1": _sliced_w1,
}


def default_metrics(data: Any) -> list[str]:
    """The metrics `gankit eval` computes when none are asked for."""
    return list(getattr(getattr(data, "density", None), "metrics", ()))


def evaluate(
    G: nn.Module,
    data: Any,
    names: list[str],
    *,
    n: int,
    seed: int,
    z_dist: str = "normal",
) -> list[dict[str, Any]]:
    """One record per metric: its values plus the protocol (n_fake, seed) it was computed under."""
    from gankit.config import lookup
    from gankit.sample import sample
    from gankit.utils import make_generator

    fns = [lookup(METRICS, name, "metric") for name in names]
    fake = sample(G, n, z_dist=z_dist, generator=make_generator(seed, "eval"))
    records = []
    for name, fn in zip(names, fns, strict=True):
        with torch.no_grad():
            values = fn(fake, data, seed)
        records.append({"metric": name, **values, "n_fake": n, "seed": seed})
    return records
