"""A run directory has one writer: `RunLock` holds an exclusive advisory lock on RUN_DIR/.lock while a
process trains into it, so a second `gankit train` (or a `--resume` while the run still trains) fails
at once with a one-line error instead of interleaving metrics and checkpoints.

The lock is `fcntl.flock` on an open file: the kernel drops it when the process dies, however it dies,
so a crashed run never leaves a stale lock behind. The file keeps the holder's pid for the message.
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from types import TracebackType

from gankit.utils import GankitError

log = logging.getLogger(__name__)
LOCK_NAME = ".lock"


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
