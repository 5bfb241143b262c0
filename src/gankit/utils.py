"""Small helpers shared across gankit: seeding, devices, atomic writes, environment facts."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn


class GankitError(Exception):
    """An error caused by the user's input or environment; the CLI prints it as one line."""


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) global generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)  # noqa: NPY002 (seeding the global state is the point)
    torch.manual_seed(seed)


def get_device(name: str = "auto") -> torch.device:
    """Resolve "auto" | "cpu" | "cuda" | "cuda:N" | "mps" to a torch.device, with a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise GankitError(f"device {name!r} requested but CUDA is not available; use device=cpu")
    try:
        return torch.device(name)
    except RuntimeError as e:
        raise GankitError(f"unknown device {name!r}; choose from: auto, cpu, cuda, cuda:N") from e


def unwrap_model(model: nn.Module) -> nn.Module:
    """Strip torch.compile's `_orig_mod` and DDP's `.module` wrappers so state_dict keys are clean."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def atomic_write(path: str | os.PathLike, write: Any) -> Path:
    """Call `write(tmp_path)` then rename over `path`, so a crash never leaves a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save `obj` atomically (temp file in the same directory + os.replace)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


@contextlib.contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Put modules in eval mode (BatchNorm uses running stats, no dropout) and restore their modes."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)


def cpu_model() -> str:
    """The CPU model name, for benchmark reports."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def env_info(device: torch.device | None = None) -> dict[str, Any]:
    """Versions and machine facts recorded in every run directory (env.json)."""
    from gankit import __version__

    info: dict[str, Any] = {
        "gankit": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "argv": sys.argv,
    }
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
    return info


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, default=str) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Records of a JSON-lines file; a missing file is an empty list, a torn last line is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a kill mid-write
    return records


def append_jsonl(record: dict[str, Any], path: str | os.PathLike) -> None:
    """Append one JSON object as a line."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")


def make_generator(
    seed: int, *stream: int | str, device: str | torch.device = "cpu"
) -> torch.Generator:
    """A torch.Generator for the random stream `(seed, *stream)`, independent of global RNG state.

    Separate streams (data order, fixed sample noise, evaluation noise) never perturb each other, so
    changing e.g. the evaluation sample size cannot change training.
    """
    key = (seed, *stream)
    # tuple hashing of ints/strs is not salted for ints; strs are folded in by a stable byte sum.
    folded = tuple(sum(s.encode()) * 1_000_003 + len(s) if isinstance(s, str) else s for s in key)
    return torch.Generator(device).manual_seed(hash(folded) & 0x7FFF_FFFF_FFFF_FFFF)
