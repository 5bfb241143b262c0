"""The layout of a run directory, in one place (a leaf module: every writer and reader asks it).

RUN_DIR/
    config.yaml     the resolved config, written before step 0 (updated on resume)
    env.json        machine, versions, argv; a `resumes` list
    metrics.jsonl   one line per log window / snapshot
    eval.jsonl      one record per metric evaluation
    reals.png       real training images (image runs)
    samples/        fixed-noise snapshots STEP.png (images) or STEP.npy (toys); class_K/ per class
    plots/          losses.png, dstats.png, samples.gif, ...
    checkpoints/    last.pt, and step_NNNNNN.pt with train.keep_every
    tensorboard/ wandb/   mirrors (track.*)
    .lock           held while a process trains into the directory (gankit.rundir)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunLayout:
    """Paths of the run directory `root` (nothing is created by asking)."""

    root: Path

    def __init__(self, root: str | os.PathLike) -> None:
        object.__setattr__(self, "root", Path(root))

    config = property(lambda self: self.root / "config.yaml")
    env = property(lambda self: self.root / "env.json")
    metrics = property(lambda self: self.root / "metrics.jsonl")
    evals = property(lambda self: self.root / "eval.jsonl")
    reals = property(lambda self: self.root / "reals.png")
    samples = property(lambda self: self.root / "samples")
    plots = property(lambda self: self.root / "plots")
    checkpoints = property(lambda self: self.root / "checkpoints")
    last = property(lambda self: self.root / "checkpoints" / "last.pt")
    tensorboard = property(lambda self: self.root / "tensorboard")
    wandb = property(lambda self: self.root / "wandb")
    lock = property(lambda self: self.root / LOCK_NAME)

    def kept(self, step: int) -> Path:
        """The checkpoint that train.keep_every keeps at `step`."""
        return self.checkpoints / f"step_{step:06d}.pt"

    def snapshot(self, step: int, suffix: str = ".png") -> Path:
        return self.samples / f"{step:06d}{suffix}"


LOCK_NAME = ".lock"
# what a run writes before its first checkpoint (a run killed then has nothing to lose)
RUN_FILES = frozenset({"config.yaml", "env.json", "metrics.jsonl", "eval.jsonl", "reals.png",
                       "samples", "plots", "checkpoints", "tensorboard", "wandb"})  # fmt: skip
