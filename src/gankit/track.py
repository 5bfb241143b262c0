"""Optional experiment tracking: mirrors of metrics.jsonl to TensorBoard event files and/or a W&B run.

metrics.jsonl stays the record (written by the trainer, always on); a `Tracker` only copies numbers
and snapshot grids to RUN_DIR/tensorboard (`tensorboard --logdir RUN_DIR`) and RUN_DIR/wandb
(offline: `wandb sync RUN_DIR/wandb/offline-run-*` uploads it later). Both back-ends are optional
extras, imported only when switched on. Offline W&B never touches the network.

Resuming at step S: the TensorBoard writer purges the events of steps > S that the interrupted run
wrote after its last checkpoint (they are logged again, identically, like metrics.jsonl lines); W&B
starts a new run (a new id) holding steps > S, in the same group (the run directory's name) as the
runs before it, so the pieces of one gankit run show up together.
"""

from __future__ import annotations

import importlib
import numbers
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from gankit.layout import RunLayout
from gankit.utils import GankitError

WANDB_MODES = ("disabled", "offline", "online")


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import an optional dependency, or a one-line GankitError naming the extra that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise GankitError(
            f"{what} needs the {module} package: pip install 'gankit[{extra}]'"
        ) from e


def to_hwc_uint8(grid: Tensor | np.ndarray) -> np.ndarray:
    """An image as a (H, W, C) uint8 array.

    Args:
        grid: (C, H, W) float in [0, 1] (clamped), e.g. torchvision's `make_grid(..., normalize=True)`,
            or uint8 (H, W, C) / (H, W), e.g. `np.asarray(gankit.plots.image_grid(x))`.
    """
    if isinstance(grid, Tensor):
        grid = grid.detach().cpu()
        grid = grid if grid.dtype == torch.uint8 else grid.float()  # numpy has no bfloat16
    a = np.asarray(grid)
    if a.dtype != np.uint8:
        if a.ndim != 3 or a.shape[0] not in (1, 3) or not np.issubdtype(a.dtype, np.floating):
            raise GankitError(
                "image: expected (C, H, W) float in [0, 1] with C = 1 or 3, or uint8 (H, W[, C]); "
                f"got {a.dtype} {a.shape}"
            )
        a = (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)  # rounded
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise GankitError(f"image: expected uint8 (H, W) or (H, W, 1|3|4), got shape {a.shape}")
    return np.ascontiguousarray(a)


def numeric(values: dict[str, Any]) -> dict[str, float]:
    """The real-number entries of a record as floats; "step", strings, bools, lists and None dropped
    (eval records carry their protocol, e.g. split="test", next to the numbers)."""
    out = {}
    for k, v in values.items():
        if isinstance(v, Tensor) and v.numel() == 1:
            v = v.item()
        if k != "step" and isinstance(v, numbers.Real) and not isinstance(v, bool):
            out[k] = float(v)
    return out


class Tracker:
    """Optional mirrors of what the trainer writes to metrics.jsonl: TensorBoard event files and/or
    a W&B run. JSONL logging stays in the trainer and is always on.

    Args:
        run_dir: the run directory; writes RUN_DIR/tensorboard and RUN_DIR/wandb.
        config: the run config as a plain dict (`gankit.config.to_dict(cfg)`), stored in the W&B run.
        tensorboard: write TensorBoard event files.
        wandb: "disabled" (W&B is not imported), "offline" (local files only) or "online".
        project: W&B project.
        name: W&B run name (and group); default: the run directory's name.
        resume_step: the checkpoint step a resumed run continues from (0: a new run).

    `enabled` is False when both back-ends are off: then every method is a cheap no-op.
    """

    def __init__(
        self,
        run_dir: str | Path,
        config: dict,
        *,
        tensorboard: bool = False,
        wandb: str = "disabled",
        project: str = "gankit",
        name: str | None = None,
        resume_step: int = 0,
    ) -> None:
        if wandb not in WANDB_MODES:
            raise GankitError(
                f"track.wandb: {wandb!r} is not valid; choose from: {', '.join(WANDB_MODES)}"
            )
        run_dir = Path(run_dir)
        name = name or run_dir.resolve().name
        self.tb: Any = None  # torch.utils.tensorboard.SummaryWriter
        self.run: Any = None  # wandb.Run
        self._wandb: ModuleType | None = None
        if tensorboard:
            require("tensorboard", "tensorboard", "track.tensorboard")
            from torch.utils.tensorboard import SummaryWriter

            # events of steps > resume_step were written after the checkpoint and are logged again:
            # purge them (the checkpoint's own step was logged before it was saved, so it stays)
            purge = resume_step + 1 if resume_step > 0 else None
            self.tb = SummaryWriter(str(RunLayout(run_dir).tensorboard), purge_step=purge)
        if wandb != "disabled":
            self._wandb = wb = require("wandb", "wandb", f"track.wandb={wandb}")
            settings = dict(
                mode=wandb, silent=True, console="off", save_code=False, disable_code=True,
                disable_git=True, disable_job_creation=True, x_disable_stats=True,
                x_disable_meta=True, x_disable_machine_info=True,
            )  # fmt: skip
            if wandb == "offline":
                # process-wide settings too: W&B's usage telemetry reads them, not the run's, and
                # would otherwise try to reach the server even from an offline run
                wb.setup(settings=wb.Settings(mode="offline"))
            try:
                self.run = wb.init(
                    dir=str(run_dir), project=project, name=name, group=name, config=config,
                    job_type="resume" if resume_step else "train", reinit="create_new",
                    settings=wb.Settings(**settings),
                )  # fmt: skip
            except Exception as e:  # noqa: BLE001 (wandb raises many types; one line for the user)
                if self.tb is not None:
                    self.tb.close()
                hint = "run `wandb login` or use track.wandb=offline" if wandb == "online" else ""
                raise GankitError(
                    f"track.wandb={wandb}: wandb.init failed: {e} {hint}".strip()
                ) from e
            if resume_step:
                self.run.summary["resumed_from_step"] = resume_step
        self.enabled = self.tb is not None or self.run is not None

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        """Log the numbers of a metrics.jsonl / eval.jsonl record at `step` (other entries skipped)."""
        if not self.enabled:
            return
        values = numeric(values)
        if self.tb is not None:
            for k, v in values.items():
                self.tb.add_scalar(k, v, step)
        if self.run is not None and values:
            self.run.log(values, step=step)

    def image(self, step: int, tag: str, grid: Tensor | np.ndarray) -> None:
        """Log one image: (C, H, W) float in [0, 1], or uint8 (H, W, C) / (H, W)."""
        if not self.enabled:
            return
        a = to_hwc_uint8(grid)
        if self.tb is not None:
            self.tb.add_image(tag, a, step, dataformats="HWC")
        if self.run is not None:
            self.run.log({tag: self._wandb.Image(a[:, :, 0] if a.shape[2] == 1 else a)}, step=step)

    def close(self) -> None:
        """Flush and close both back-ends (idempotent)."""
        if self.tb is not None:
            self.tb.close()
            self.tb = None
        if self.run is not None:
            self.run.finish()
            self.run = None
        self.enabled = False

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_tracker(
    run_dir: str | Path, cfg_dict: dict, track_cfg: Any, *, resume_step: int = 0
) -> Tracker:
    """The Tracker a run's `track` config section asks for.

    Args:
        track_cfg: has `tensorboard` (bool), `wandb` ("online" | "offline" | "disabled") and
            `project` (str) attributes, e.g. `cfg.track`.
        resume_step: the step of the checkpoint a resumed run continues from; 0 for a new run.
    """
    return Tracker(
        run_dir, cfg_dict, tensorboard=bool(track_cfg.tensorboard), wandb=str(track_cfg.wandb),
        project=str(track_cfg.project), resume_step=resume_step,
    )  # fmt: skip
