"""Small helpers shared across gankit: seeding, devices, atomic writes, environment facts."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import operator
import os
import platform
import random
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from gankit.errors import GankitError, UsageError

__all__ = ["GankitError", "UsageError"]  # re-exported: errors live in the torch-free gankit.errors


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


class NoSpaceError(GankitError):
    """The disk (or quota) filled up during an atomic write; the previous file is intact."""


# temp files this process is writing right now (see remove_stale_temps)
_IN_FLIGHT: set[str] = set()
# the end of a temp file's name after ".{name}.": [pid.]XXXXXXXX.tmp (8 mkstemp characters)
_TEMP_TAIL = re.compile(r"(?:(\d+)\.)?[a-z0-9_]{8}\.tmp")
# torch.save reports a full disk as a RuntimeError from its zip writer, not as an OSError
_TORCH_WRITE_FAILED = re.compile(
    r"inline_container\.cc.*unexpected pos|PytorchStreamWriter failed writ"
)


def file_mode() -> int:
    """The mode a plain `open(path, "w")` gives a new file: 0o666 minus the process umask."""
    try:  # Linux >= 4.7 shows the umask without changing it
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # elsewhere the only way to read the umask is to set it (process-wide, for an instant)
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


def _is_no_space(e: BaseException) -> bool:
    """A full disk or quota, possibly wrapped by torch's zip writer."""
    codes = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    for _ in range(4):  # the exception and the errors it was raised from
        if isinstance(e, OSError) and e.errno in codes:
            return True
        if isinstance(e, RuntimeError) and _TORCH_WRITE_FAILED.search(str(e)):
            return True
        e = e.__cause__ or e.__context__
        if e is None:
            return False
    return False


def atomic_write(path: str | os.PathLike, write: Any, *, size: int | None = None) -> Path:
    """Call `write(tmp_path)` then rename over `path`, so a crash never leaves a half-written file.

    The file gets the usual permissions (0o666 minus the umask), not mkstemp's 0600. A full disk is
    a NoSpaceError naming `path` and `size` (the expected bytes, when the caller knows them); the
    temp file is removed and an existing `path` is untouched. Temp files are named
    `.{name}.{pid}.XXXXXXXX.tmp` so that `remove_stale_temps` can tell whose they are.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        prefix = f".{path.name}.{os.getpid()}."
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=path.parent)
        _IN_FLIGHT.add(os.path.abspath(tmp))
        os.close(fd)
        os.chmod(tmp, file_mode())
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        written = 0
        if tmp is not None:
            with contextlib.suppress(OSError):
                written = os.path.getsize(tmp)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(e, Exception) and _is_no_space(e):
            raise _no_space(path, max(size or 0, written)) from e
        raise
    finally:
        if tmp is not None:
            _IN_FLIGHT.discard(os.path.abspath(tmp))
    return path


def _no_space(path: Path, size: int) -> NoSpaceError:
    previous = path.stat().st_size if path.is_file() else 0
    need = max(size, previous)  # a rewrite is usually about as large as the file it replaces
    amount = f"need about {max(1, -(-need // 10**6))} MB free; " if need else ""
    kept = "the previous file is intact" if path.exists() else f"{path.name} was not created"
    return NoSpaceError(f"no space left on device writing {path} ({amount}{kept})")


def remove_stale_temps(path: str | os.PathLike) -> list[Path]:
    """Delete the temp files of `atomic_write(path)` calls whose process was killed; returns them.

    A temp file is stale when the pid in its name is not a running process, or is this process but
    not a write in progress. Legacy names without a pid are always removed, so call this only where
    one process writes `path` (a run's checkpoints). Other files are never touched.
    """
    path = Path(path)
    prefix, removed = f".{path.name}.", []
    try:
        names = [e.name for e in os.scandir(path.parent)]
    except OSError:
        return removed
    for name in names:
        m = _TEMP_TAIL.fullmatch(name[len(prefix) :]) if name.startswith(prefix) else None
        tmp = path.parent / name
        if m is None or (m.group(1) is not None and _in_use(int(m.group(1)), str(tmp))):
            continue
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def _in_use(pid: int, tmp: str) -> bool:
    """Whether the temp file `tmp` written by process `pid` may still be being written."""
    if pid == os.getpid():
        return os.path.abspath(tmp) in _IN_FLIGHT
    if os.name != "posix" or pid <= 0:  # os.kill(pid, 0) only probes on POSIX; 0 is a group
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, another user's
        return True
    return True


def _nbytes(obj: Any) -> int:
    """Bytes of the tensors in a nest of dicts/lists/tuples: about what torch.save writes."""
    if isinstance(obj, torch.Tensor):
        return obj.nelement() * obj.element_size()
    if isinstance(obj, dict):
        return sum(_nbytes(v) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(_nbytes(v) for v in obj)
    return 0


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save `obj` atomically (temp file in the same directory + os.replace)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp), size=_nbytes(obj))


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


def bf16_native(device: torch.device) -> bool:
    """Whether `device` computes bfloat16 natively (CUDA with bf16 support, or a CPU with
    AVX-512-bf16 / AMX), where bf16 autocast pays; on other CPUs it is emulated and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = next(
            (ln for ln in Path("/proc/cpuinfo").read_text().splitlines() if ln.startswith("flags")),
            "",
        )
    except OSError:
        return False
    return any(f in flags.split() for f in ("avx512_bf16", "amx_bf16"))


def use_amp(amp: bool | str, device: torch.device) -> bool:
    """Whether train.amp turns autocast on for `device` ("auto": where bf16 is native)."""
    return amp_dtype(amp, device) is not None


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of train.amp on `device`: None (off), bfloat16 (true, "bf16", or "auto"
    where `bf16_native`), or float16 ("fp16": with a GradScaler, for GPUs without fast bf16)."""
    if amp == "fp16":
        return torch.float16
    if amp == "auto":
        return torch.bfloat16 if bf16_native(device) else None
    return torch.bfloat16 if amp else None


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
    from gankit.version import __version__

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


def write_atomic_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write `obj` as indented JSON, atomically."""
    return write_atomic_text(path, json.dumps(obj, indent=2, default=str) + "\n")


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
    return torch.Generator(device).manual_seed(stream_seed(seed, *stream))


def stream_seed(seed: int, *stream: int | str) -> int:
    """A 63-bit seed for the stream `(seed, *stream)`: BLAKE2b of the whole key, type-tagged.

    Every distinct key gives its own seed (no folding: `"fixed_noise"` and `"train_fixed"` differ, and
    `(1, "a")` differs from `("1", "a")`), stable across processes, machines and Python versions.
    """
    parts = []
    for s in (seed, *stream):
        if isinstance(s, str):
            parts.append(f"s{len(s)}:{s}")
        elif isinstance(s, bool) or not hasattr(s, "__index__"):
            raise TypeError(f"stream keys are integers or strings, got {s!r}")
        else:
            parts.append(f"i:{operator.index(s)}")
    digest = hashlib.blake2b("|".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF
