"""Speed benchmarks by name: each times gankit against a textbook reference loop in the same run."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

from gankit.bench import dcgan, ddp, parzen, per_class, toy


@contextlib.contextmanager
def _trainer_quiet() -> Iterator[None]:
    """Benchmarks train short runs on purpose: the trainer's short-run warning and its live
    diagnoses of a barely trained G are noise in their output."""
    logger = logging.getLogger("gankit.trainer")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _quiet(run: Callable[[Any], dict]) -> Callable[[Any], dict]:
    def quiet_run(args: Any) -> dict:
        with _trainer_quiet():
            return run(args)

    return quiet_run


BENCHES = {
    "toy": _quiet(toy.run),
    "dcgan": _quiet(dcgan.run),
    "per_class": _quiet(per_class.run),
    "ddp": _quiet(ddp.run),
    "parzen": _quiet(parzen.run),
}
