"""One self-describing checkpoint file: models, optimizers, step, every RNG state and the config.

Only plain containers and tensors are stored, so `torch.load(path, weights_only=True)` reads it and
no code is unpickled. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gankit.utils import GankitError, atomic_save, unwrap_model

FORMAT = 1


class CheckpointError(GankitError):
    """A missing, corrupt or foreign checkpoint file."""


def rng_state(extra: dict[str, torch.Generator]) -> dict[str, Any]:
    """Global RNG states (torch, CUDA, python, numpy) plus the named generators' states."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": _numpy_state(),
        "generators": {k: g.get_state() for k, g in extra.items()},
    }


def set_rng_state(state: dict[str, Any], extra: dict[str, torch.Generator]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_as_tuple(state["python"]))
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002 (restoring the global state user code may rely on)
    for k, g in extra.items():
        g.set_state(state["generators"][k])


def _numpy_state() -> list:
    """numpy's legacy global state as plain Python values (arrays are not weights_only-safe)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return [kind, key.tolist(), int(pos), int(has_gauss), float(cached)]


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def save_checkpoint(
    path: str | os.PathLike,
    *,
    step: int,
    config: dict[str, Any],
    models: dict[str, nn.Module | None],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the checkpoint atomically; models are saved unwrapped (no compile/DDP prefixes)."""
    from gankit import __version__

    ckpt = {
        "format": FORMAT,
        "gankit_version": __version__,
        "step": step,
        "config": config,
        **{k: (None if m is None else unwrap_model(m).state_dict()) for k, m in models.items()},
        **{k: opt.state_dict() for k, opt in optimizers.items()},
        "rng": rng_state(generators),
        **(extra or {}),
    }
    return atomic_save(ckpt, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; a clear CheckpointError if it is not one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated/foreign files
        reason = str(e).strip().splitlines()[0][:120] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable gankit checkpoint ({reason})") from None
    if not isinstance(ckpt, dict) or "format" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not a gankit checkpoint (no format/config entries)")
    if ckpt["format"] > FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['format']} is newer than this gankit supports "
            f"({FORMAT}); upgrade gankit"
        )
    return ckpt


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the generator (its moving average G_ema when stored) from the checkpoint alone, in
    eval mode."""
    return load_models(load_checkpoint(path, map_location))[0].eval()


def load_models(ckpt: dict) -> tuple[nn.Module, nn.Module]:
    """(G, D) rebuilt from a loaded checkpoint dict (CPU, train mode). G holds G_ema's weights when the
    run kept a moving average: that is the generator to sample and evaluate."""
    from gankit.config import config_from_dict
    from gankit.data import data_from_config
    from gankit.models import build_models

    cfg = config_from_dict(ckpt["config"])
    if cfg.train.per_class:
        raise CheckpointError(
            "this checkpoint holds one G/D pair per class (train.per_class): pick a pair, e.g. "
            "`gankit sample RUN --class K`, or gankit.perclass.load_pair(ckpt, K)"
        )
    shape = ckpt.get("data_shape") or data_from_config(cfg).shape
    G, D = build_models(
        cfg.model.name,
        cfg.model.z_dim,
        tuple(shape),
        cfg.model.num_classes,
        cfg.model.g,
        cfg.model.d,
    )
    G.load_state_dict(ckpt["G_ema"] if ckpt.get("G_ema") is not None else ckpt["G"])
    D.load_state_dict(ckpt["D"])
    return G, D
