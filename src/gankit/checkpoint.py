"""One self-describing checkpoint file for N G/D pairs: models, optimizers, steps, every RNG state and
the config.

Layout (format 2): `pairs` is a list with one entry per G/D pair (one for an ordinary run, one per
class for `train.per_class`), each `{"key": None | class id, "step", "G", "D", "G_ema", "opt_g",
"opt_d", "rng": {stream name: generator state}}`, next to `format`, `gankit_version`, `step` (the
run's clock), `config`, `data_shape` and `rng` (the global torch / CUDA / Python / numpy states).
Format 1 files (flat "G", "D", ... keys, or "G/K", "D/K", ... per class) are read into this layout by
`load_checkpoint`, so they still sample, evaluate and resume.

Only plain containers and tensors are stored, so `torch.load(path, weights_only=True)` reads it and
no code is unpickled. Files are written atomically (temp file + rename). Rebuilding models from a
checkpoint is `gankit.factory.RunModels`' job: this module never builds a model or a dataset.
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
from gankit.version import __version__

log = logging.getLogger(__name__)

FORMAT = 2
MODULES = ("G", "D", "G_ema")  # the modules of one pair entry (G_ema may be None)
OPTIMIZERS = ("opt_g", "opt_d")


class CheckpointError(GankitError):
    """A missing, corrupt or foreign checkpoint file."""


def rng_state() -> dict[str, Any]:
    """The global RNG states: torch, CUDA, Python, numpy."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
        "numpy": _numpy_state(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global RNG states of `rng_state()`."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(_as_tuple(state["python"]))
    kind, key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(key, dtype=np.uint32), pos, has_gauss, cached))  # noqa: NPY002 (restoring the global state user code may rely on)


def _numpy_state() -> list:
    """numpy's legacy global state as plain Python values (arrays are not weights_only-safe)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002
    return [kind, key.tolist(), int(pos), int(has_gauss), float(cached)]


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


def pair_entry(
    key: int | None,
    step: int,
    models: dict[str, nn.Module | None],
    optimizers: dict[str, torch.optim.Optimizer],
    generators: dict[str, torch.Generator],
) -> dict[str, Any]:
    """One entry of `pairs`: the pair's modules saved unwrapped (no compile/DDP prefixes), its
    optimizers, its step count and its RNG streams' states."""
    return {
        "key": key,
        "step": step,
        **{k: None if m is None else unwrap_model(m).state_dict() for k, m in models.items()},
        **{k: opt.state_dict() for k, opt in optimizers.items()},
        "rng": {name: g.get_state() for name, g in generators.items()},
    }


def save_checkpoint(
    path: str | os.PathLike,
    *,
    step: int,
    config: dict[str, Any],
    pairs: list[dict[str, Any]],
    data_shape: tuple[int, ...] | list[int],
) -> Path:
    """Write the checkpoint of `pairs` (entries of `pair_entry`) atomically.

    First removes the temp files that saves of `path` killed mid-write left behind (a run directory
    has one writer, so no other process can be writing them). A full disk is a NoSpaceError.
    """
    for tmp in remove_stale_temps(path):
        log.info("removed %s, left by a save that was killed", tmp)
    ckpt = {
        "format": FORMAT,
        "gankit_version": __version__,
        "step": step,
        "config": config,
        "data_shape": list(data_shape),
        "pairs": pairs,
        "rng": rng_state(),
    }
    return atomic_save(ckpt, path)


def upgrade(ckpt: dict) -> dict:
    """A format 1 checkpoint dict in format 2's layout (format 2 is returned as it is)."""
    if ckpt.get("format") != 1:
        return ckpt
    rng = dict(ckpt.get("rng", {}))
    gens = rng.pop("generators", {})
    if "per_class" in ckpt:  # "G/K", "D/K", ... and streams "z/K", "augment/K" for each class K
        steps = ckpt.get("pair_steps") or [ckpt["step"]] * len(ckpt["per_class"])
        keyed = [(k, f"/{k}", n) for k, n in zip(ckpt["per_class"], steps, strict=True)]
    else:
        keyed = [(None, "", ckpt["step"])]
    pairs = []
    for k, suffix, n in keyed:
        entry = {"key": k, "step": n, "rng": {}}
        for name in (*MODULES, *OPTIMIZERS):
            entry[name] = ckpt.get(name + suffix)
        for stream in ("z", "augment"):
            if stream + suffix in gens:
                entry["rng"][stream] = gens[stream + suffix]
        pairs.append(entry)
    out = {k: v for k, v in ckpt.items() if k not in ("per_class", "pair_steps")}
    for _key, suffix, _n in keyed:
        for name in (*MODULES, *OPTIMIZERS):
            out.pop(name + suffix, None)
    return {**out, "format": FORMAT, "pairs": pairs, "rng": rng}


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
    for key in ("step", "data_shape"):
        if key not in ckpt:
            raise CheckpointError(f"{path}: checkpoint has no {key!r} (keys: {_keys(ckpt)})")
    step = ckpt["step"]
    if type(step) is not int or step < 0:
        raise CheckpointError(f"{path}: bad 'step' {step!r} (expected an integer >= 0)")
    if fmt == 1 and "per_class" in ckpt:
        classes = ckpt["per_class"]
        if not isinstance(classes, list) or not all(type(k) is int for k in classes):
            raise CheckpointError(
                f"{path}: bad 'per_class' {classes!r} (expected a list of class ids)"
            )
    if fmt == 1:  # the flat keys, named as the file names them
        suffixes = [f"/{k}" for k in ckpt["per_class"]] if "per_class" in ckpt else [""]
        entries = [(ckpt, sfx) for sfx in suffixes]
    else:
        pairs = ckpt.get("pairs")
        if not isinstance(pairs, list) or not pairs or not all(isinstance(e, dict) for e in pairs):
            raise CheckpointError(
                f"{path}: bad 'pairs' (expected a non-empty list of pair entries)"
            )
        entries = [(e, "") for e in pairs]
    for entry, sfx in entries:
        for key in ("G", "D"):
            where = f"{key}{sfx}" if fmt == 1 else f"pairs[key={entry.get('key')}].{key}"
            if key + sfx not in entry:
                raise CheckpointError(f"{path}: checkpoint has no {where!r} (keys: {_keys(entry)})")
            if not isinstance(entry[key + sfx], dict):
                raise CheckpointError(
                    f"{path}: bad {where!r} (a {type(entry[key + sfx]).__name__}, not a state dict "
                    "of tensors)"
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
    ckpt = upgrade(ckpt)
    _check_generators_finite(ckpt, path)
    return ckpt


def _check_generators_finite(ckpt: dict, path: Path) -> None:
    """A checkpoint whose generator weights hold NaN/inf (a diverged run saved by an older gankit)
    samples garbage: a CheckpointError, so eval and sample never report numbers from it."""
    for entry in ckpt["pairs"]:
        for key in ("G", "G_ema"):
            state = entry.get(key)
            for name, t in (state or {}).items():
                if torch.is_tensor(t) and t.is_floating_point() and not torch.isfinite(t).all():
                    where = key if entry["key"] is None else f"{key} of class {entry['key']}"
                    raise CheckpointError(
                        f"{path}: generator weights contain NaN/inf ({where}.{name}, step "
                        f"{ckpt.get('step')}); use an earlier checkpoint"
                    )


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
