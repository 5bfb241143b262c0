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
    "loss.r1_weight=0",  # the toy presets' stabilisers off: tiny runs take the fast MLP step
    "model.d.pack=1",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_cfg():
    from gankit.config import load_config

    return load_config("toy_ring", TINY)


@pytest.fixture
def split_resume(tmp_path):
    """`split_resume(preset, overrides)`: train 8 steps at once and 4 + resume + 4 (overrides must
    give train.steps=8); asserts G and D are bit-identical and returns both final checkpoints."""
    from gankit.checkpoint import load_checkpoint
    from gankit.config import load_config
    from gankit.trainer import train

    def run(preset: str, overrides: list[str]) -> tuple[dict, dict]:
        train(load_config(preset, overrides), tmp_path / "full")
        train(load_config(preset, [*overrides, "train.steps=4"]), tmp_path / "half")
        train(load_config(preset, overrides), tmp_path / "half", resume=True)
        a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
        b = load_checkpoint(tmp_path / "half" / "checkpoints" / "last.pt")
        for key in ("G", "D"):
            for name in a[key]:
                assert torch.equal(a[key][name], b[key][name]), f"{key}.{name}"
        return a, b

    return run
