"""Shared fixtures: tiny configs that train in well under a second on CPU."""

from __future__ import annotations

import matplotlib
import pytest
import torch

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


TINY = [
    "train.steps=8",
    "train.log_every=2",
    "train.sample_every=4",
    "train.sample_n=64",
    "train.ckpt_every=4",
    "train.progress=false",
    "train.threads=1",
    "data.batch_size=16",
    "model.g.hidden=[16,16]",
    "model.d.hidden=[16,16]",
    "eval.n_samples=256",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_cfg():
    from gankit.config import load_config

    return load_config("toy_ring", TINY)
