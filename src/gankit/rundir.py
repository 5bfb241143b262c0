"""Owning run directories: `new_run_dir` picks runs/NNNNN-name, `check_new_run_dir` refuses one that
holds a run, and `RunLock` makes sure a directory has one writer.

A run directory has one writer: `RunLock` holds an exclusive advisory lock on RUN_DIR/.lock while a
process trains into it, so a second `gankit train` (or a `--resume` while the run still trains) fails
at once with a one-line error instead of interleaving metrics and checkpoints.

The lock is `fcntl.flock` on an open file: the kernel drops it when the process dies, however it dies,
so a crashed run never leaves a stale lock behind. The file keeps the holder's pid for the message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from gankit.checkpoint import CheckpointError
from gankit.config import Config, from_dict, to_dict, to_yaml
from gankit.layout import LOCK_NAME, RUN_FILES, RunLayout
from gankit.utils import GankitError, env_info, read_jsonl, write_atomic_text, write_json

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class RunDirBusy(GankitError):
    """Another process is writing this run directory."""


class RunLock:
    """Context manager: `with RunLock(run_dir): ...` trains with the directory locked."""

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.path = Path(run_dir) / LOCK_NAME
        self._fd: int | None = None
        self._created = False  # the directory did not exist: removed again if left empty

    def __enter__(self) -> RunLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no advisory locks; one writer is then the user's care
            return self
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if not isinstance(e, BlockingIOError):  # e.g. NFS/Lustre without flock support
                os.close(fd)
                log.warning("cannot lock %s (%s): keeping to one writer is up to you", self.path, e)
                return self
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunDirBusy(
                f"run directory {self.path.parent} is in use by another gankit process (pid "
                f"{holder}); wait for it to finish or stop it, then --resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd
        return self

    def __exit__(
        self, exc_type: type | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)  # releases the flock
            self._fd = None
            if self._created and [p.name for p in self.path.parent.iterdir()] == [LOCK_NAME]:
                with contextlib.suppress(OSError):  # a run refused before writing anything
                    self.path.unlink()
                    self.path.parent.rmdir()


def new_run_dir(name: str, root: str | Path = "runs", create: bool = True) -> Path:
    """runs/NNNNN-name with the next free number, created here so that two commands started at
    once never pick the same directory (existing runs are never reused)."""
    root = Path(root)
    if create:
        root.mkdir(parents=True, exist_ok=True)
    taken = [int(m.group(1)) for p in root.glob("*") if (m := re.match(r"(\d{5})-", p.name))]
    number = max(taken, default=0) + 1
    while create:
        path = root / f"{number:05d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            number += 1
    return root / f"{number:05d}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"


def check_new_run_dir(run_dir: Path, *, clear: bool = True) -> None:
    """Refuse to start a run in a directory that holds one, unless it has nothing to lose.

    A run killed before its first checkpoint (config.yaml, metrics.jsonl, env.json, grids, but no
    checkpoints/*.pt and no eval.jsonl records) can be neither resumed nor kept, so it is restarted:
    with `clear` its contents are deleted (a warning says so). Anything else there, a checkpoint or
    a file a run does not write, is a GankitError.
    """
    if not run_dir.exists() or not any(p.name != LOCK_NAME for p in run_dir.iterdir()):
        return
    layout = RunLayout(run_dir)
    ckpts = sorted(layout.checkpoints.glob("*.pt"), key=lambda p: p.name != "last.pt")
    if ckpts:
        raise GankitError(
            f"run directory {run_dir} already exists with a checkpoint (checkpoints/{ckpts[0].name}); "
            "pass --resume to continue it or choose another --run-dir"
        )
    others = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES | {LOCK_NAME})
    if others or not layout.config.is_file() or read_jsonl(layout.evals):
        why = f"it holds {others[0]}" if others else "it is not an unfinished run"
        raise GankitError(
            f"run directory {run_dir} already exists and is not empty ({why}); "
            "pass --resume to continue it or choose another --run-dir"
        )
    log.warning(
        "%s holds a run stopped before its first checkpoint; starting it again from step 0", run_dir
    )
    if clear:
        for p in run_dir.iterdir():
            if p.name == LOCK_NAME:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()


# config keys a resume may change (and every eval.* and track.* key)
RESUMABLE_KEYS = ("train.steps", "train.epochs", "train.log_every", "train.ckpt_every",
                  "train.keep_every", "train.device", "train.threads", "train.progress",
                  "train.stop_on", "train.sync_bn", "optim.lr_g", "optim.lr_d")  # fmt: skip


def check_resume_config(stored: dict, cfg: Config) -> None:
    """Resuming with a different model/data/optimiser would silently train something else."""

    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
        return out

    # keys added by later gankit versions take their defaults in an older run's stored config
    old, new = flat(to_dict(from_dict(Config, stored))), flat(to_dict(cfg))
    diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    resumable = lambda k: k in RESUMABLE_KEYS or k.startswith(("eval.", "track."))  # noqa: E731
    diff = [k for k in diff if not resumable(k)]
    if diff:
        raise GankitError(
            f"--resume: config differs from the run's in {', '.join(diff)}; only "
            "train.steps/epochs/cadences/device/stop_on, optim.lr_g/lr_d (to recover from a "
            "divergence), eval.* and track.* may change on resume"
        )


def record_env(
    layout: RunLayout, cfg: Config, device: torch.device, resumed_at: int | None
) -> None:
    """env.json of a new run; on resume the original is kept and the resume appended to its
    `resumes` list, and config.yaml takes the resumed config (e.g. a longer train.steps)."""
    info, path = env_info(device), layout.env
    if resumed_at is not None:
        write_atomic_text(layout.config, to_yaml(cfg))
        try:
            first = json.loads(path.read_text())
        except (OSError, ValueError):
            first = {}
        if isinstance(first, dict) and first:
            entry = {"step": resumed_at, "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **info}
            info = {**first, "resumes": [*first.get("resumes", []), entry]}
    write_json(info, path)


def truncate_log(layout: RunLayout, step: int) -> None:
    """On resume, drop metrics.jsonl lines written after the checkpoint's step: they will be
    recomputed identically."""
    kept = [r for r in read_jsonl(layout.metrics) if r.get("step", 0) <= step]
    layout.metrics.write_text("".join(json.dumps(r) + "\n" for r in kept))


def resolve(path: str | Path) -> tuple[Path | None, Path]:
    """RUN_DIR or CKPT -> (run_dir or None, checkpoint path)."""
    path = Path(path)
    if path.is_dir():
        ckpt = RunLayout(path).last
        if not ckpt.exists():
            raise CheckpointError(f"{path}: no checkpoints/last.pt (is it a gankit run directory?)")
        return path, ckpt
    if not path.exists():
        raise CheckpointError(f"no such run directory or checkpoint: {path}")
    run_dir = path.parent.parent if path.parent.name == "checkpoints" else None
    return run_dir, path
