"""One self-describing checkpoint file: models, optimizers, step, every RNG state and the config.

Only plain containers and tensors are stored, so `torch.load(path, weights_only=True)` reads it and
no code is unpickled. Files are written atomically (temp file + rename).
"""

from __future__ import annotations

import logging
import os
import random
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gankit.utils import GankitError, atomic_save, remove_stale_temps, unwrap_model

log = logging.getLogger(__name__)

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
    """Write the checkpoint atomically; models are saved unwrapped (no compile/DDP prefixes).

    First removes the temp files that saves of `path` killed mid-write left behind (a run directory
    has one writer, so no other process can be writing them). A full disk is a NoSpaceError.
    """
    from gankit import __version__

    for tmp in remove_stale_temps(path):
        log.info("removed %s, left by a save that was killed", tmp)
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


def _unreadable_reason(e: Exception, path: Path) -> str:
    """Why torch.load failed, in a few words, without torch's advice to set weights_only=False
    (a gankit checkpoint never needs it, and it runs whatever code the file holds)."""
    text = str(e)
    if "Weights only load failed" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if (
            found
        ):  # a pickle of Python objects (a whole model, a Namespace...), not plain containers
            return f"it pickles the Python object {found.group(1)}"
        return "not a PyTorch file"
    if isinstance(e, EOFError) or not text.strip():
        return "the file is empty" if path.stat().st_size == 0 else "the file is truncated"
    first = text.strip().splitlines()[0].split(". ")[0]
    return re.sub(r"\s*\(?weights_only.*", "", first)[:200] or type(e).__name__


def _keys(ckpt: dict, limit: int = 24) -> str:
    keys = [str(k) for k in ckpt]
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def _is_per_class(ckpt: dict) -> bool:
    train = ckpt["config"].get("train")
    return "per_class" in ckpt or (isinstance(train, dict) and bool(train.get("per_class")))


def _check_entries(ckpt: Any, path: Path) -> None:
    """CheckpointError naming `path` and the first entry that is missing or of the wrong type."""
    if not isinstance(ckpt, dict):
        raise CheckpointError(
            f"{path} is not a gankit checkpoint (it holds a {type(ckpt).__name__}, not a dict)"
        )
    missing = [k for k in ("format", "config") if k not in ckpt]
    if missing:
        raise CheckpointError(
            f"{path} is not a gankit checkpoint (no {' or '.join(map(repr, missing))}; "
            f"keys: {_keys(ckpt)})"
        )
    fmt = ckpt["format"]
    if type(fmt) is not int or fmt < 1:
        raise CheckpointError(
            f"{path}: bad 'format' {fmt!r} (expected an integer from 1 to {FORMAT})"
        )
    if fmt > FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {fmt} is newer than this gankit supports ({FORMAT}); "
            "upgrade gankit"
        )
    if not isinstance(ckpt["config"], dict):
        raise CheckpointError(
            f"{path}: bad 'config' (a {type(ckpt['config']).__name__}, not a dict)"
        )
    if "step" not in ckpt:
        raise CheckpointError(f"{path}: checkpoint has no 'step' (keys: {_keys(ckpt)})")
    step = ckpt["step"]
    if type(step) is not int or step < 0:
        raise CheckpointError(f"{path}: bad 'step' {step!r} (expected an integer >= 0)")
    weights = ["G", "D"]
    if _is_per_class(ckpt):  # perclass.py's layout: "G/K", "D/K" for each class K in "per_class"
        for key in ("per_class", "data_shape"):
            if key not in ckpt:
                raise CheckpointError(f"{path}: checkpoint has no {key!r} (keys: {_keys(ckpt)})")
        classes = ckpt["per_class"]
        if not isinstance(classes, list) or not all(type(k) is int for k in classes):
            raise CheckpointError(
                f"{path}: bad 'per_class' {classes!r} (expected a list of class ids)"
            )
        weights = [f"{w}/{k}" for k in classes for w in ("G", "D")]
    for key in weights:
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} (keys: {_keys(ckpt)})")
        if not isinstance(ckpt[key], dict):
            raise CheckpointError(
                f"{path}: bad {key!r} (a {type(ckpt[key]).__name__}, not a state dict of tensors)"
            )


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint with weights_only=True; a one-line CheckpointError naming the file and the
    problem if it is not one, or lacks an entry that loading its models needs."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4": noise before the error
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated/foreign files
        reason = _unreadable_reason(e, path)
        if reason.startswith("it pickles"):
            raise CheckpointError(
                f"{path} is not a gankit checkpoint ({reason}; gankit checkpoints hold only "
                "tensors and plain containers)"
            ) from None
        raise CheckpointError(f"{path}: not a readable gankit checkpoint ({reason})") from None
    _check_entries(ckpt, path)
    _check_generators_finite(ckpt, path)
    return ckpt


def _check_generators_finite(ckpt: dict, path: Path) -> None:
    """A checkpoint whose generator weights hold NaN/inf (a diverged run saved by an older gankit)
    samples garbage: a CheckpointError, so eval and sample never report numbers from it."""
    for key, state in ckpt.items():
        generator = key in ("G", "G_ema") or key.startswith(("G/", "G_ema/"))
        if not generator or not isinstance(state, dict):
            continue
        for name, t in state.items():
            if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                raise CheckpointError(
                    f"{path}: generator weights contain NaN/inf ({key}.{name}, step "
                    f"{ckpt.get('step')}); use an earlier checkpoint"
                )


def load_generator(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> nn.Module:
    """Rebuild the generator (its moving average G_ema when stored) from the checkpoint alone, in
    eval mode. A generator with NaN/inf weights (a diverged run) is a CheckpointError."""
    ckpt = load_checkpoint(path, map_location)
    return load_models(ckpt, path=path)[0].eval()


def load_weights(module: nn.Module, state: dict, key: str, where: str | os.PathLike) -> None:
    """`module.load_state_dict(state)`, but a mismatch is a CheckpointError naming the first
    parameter that differs and both shapes in full (torch's message lists every one, cut short).

    Args:
        key: the checkpoint entry `state` came from ("G", "G_ema", "D/3", ...).
        where: the checkpoint's path, for the message.
    """
    own = module.state_dict()
    problems = []
    for name, t in own.items():
        if name not in state:
            problems.append(f"{name!r} is missing from the checkpoint")
        elif not isinstance(state[name], torch.Tensor):
            problems.append(f"{name!r} is a {type(state[name]).__name__}, not a tensor")
        elif tuple(state[name].shape) != tuple(t.shape):
            problems.append(
                f"{name!r} is {tuple(state[name].shape)} in the checkpoint but {tuple(t.shape)} "
                "in the model"
            )
    problems += [
        f"the checkpoint has {name!r}, which the model lacks" for name in state if name not in own
    ]
    if problems:
        more = f" ({len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
        raise CheckpointError(
            f"{where}: {key!r} does not fit the {type(module).__name__} built from the "
            f"checkpoint's config: {problems[0]}{more}; was it saved by other model code?"
        )
    module.load_state_dict(state)


def load_models(
    ckpt: dict, *, path: str | os.PathLike | None = None
) -> tuple[nn.Module, nn.Module]:
    """(G, D) rebuilt from a loaded checkpoint dict (CPU, train mode). G holds G_ema's weights when the
    run kept a moving average: that is the generator to sample and evaluate. `path` names the file in
    errors."""
    from gankit.config import config_from_dict
    from gankit.data import data_from_config
    from gankit.models import build_models

    where = path if path is not None else f"checkpoint (step {ckpt.get('step')})"
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
    g_key = "G_ema" if ckpt.get("G_ema") is not None else "G"
    load_weights(G, ckpt[g_key], g_key, where)
    load_weights(D, ckpt["D"], "D", where)
    return G, D
