"""From a config (or a checkpoint) to objects: the models of a pair, and `RunModels`, the answer to
"which generator draws class k" for any run, ordinary, conditional or one pair per class.

The layer above the components (config, models, checkpoint files): the trainer, evaluation, sampling
and the CLI build their models here, so there is one way to rebuild a run, and none of them builds
a dataset to learn a shape (checkpoints store `data_shape`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from torch import nn

from gankit.checkpoint import CheckpointError, load_checkpoint, load_weights
from gankit.config import Config, config_from_dict
from gankit.models import build_models


def models_from_config(cfg: Config, data_shape: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    """(G, D) of `cfg.model` for samples of `data_shape`, freshly initialised (global RNG). G
    carries its noise distribution (`G.z_dist`), so `sample(G, n)` feeds it the noise it was
    trained on."""
    m = cfg.model
    G, D = build_models(m.name, m.z_dim, tuple(data_shape), m.num_classes, m.g, m.d)
    G.z_dist = m.z_dist
    return G, D


@dataclass
class RunModels:
    """The G/D pairs of a run, by key: None for the one pair of an ordinary (or conditional) run,
    the class id for `train.per_class` runs. Each G is the one to sample and evaluate: the moving
    average G_ema when the run kept one.

    Attributes:
        cfg: the run's config.
        data_shape: shape of one sample, e.g. (2,) or (1, 28, 28).
        step: the run's step (its clock) when the models were taken.
        pairs: key -> (G, D), on the CPU in train mode when rebuilt from a checkpoint.
    """

    cfg: Config
    data_shape: tuple[int, ...]
    step: int
    pairs: dict[int | None, tuple[nn.Module, nn.Module]]

    @property
    def per_class(self) -> bool:
        return None not in self.pairs

    @property
    def classes(self) -> list[int]:
        """The classes a caller can ask for: the pairs' classes, a conditional model's classes, or
        [] for an unconditional model."""
        if self.per_class:
            return sorted(self.pairs)
        return list(range(self.cfg.model.num_classes))

    def _key(self, k: int | None) -> int | None:
        if not self.per_class:
            return None  # one shared G draws every class (or none)
        if k not in self.pairs:
            choose = ", ".join(map(str, self.classes))
            raise CheckpointError(
                f"class {k} has no pair in this run; choose from: {choose}"
                if k is not None
                else "this run holds one G/D pair per class (train.per_class): pick a pair, "
                f"e.g. `gankit sample RUN --class K`; classes: {choose}"
            )
        return k

    def generator(self, k: int | None = None) -> nn.Module:
        """The generator that draws class k (per-class runs: pair k's; otherwise the one G, which a
        conditional model asks for class k through its labels)."""
        return self.pairs[self._key(k)][0]

    def discriminator(self, k: int | None = None) -> nn.Module:
        return self.pairs[self._key(k)][1]

    @classmethod
    def from_checkpoint(cls, ckpt: dict, *, path: str | os.PathLike | None = None) -> RunModels:
        """The pairs of a loaded checkpoint dict (`load_checkpoint`), rebuilt from its config and
        `data_shape`. `path` names the file in errors."""
        where = path if path is not None else f"checkpoint (step {ckpt.get('step')})"
        cfg = config_from_dict(ckpt["config"])
        shape = tuple(ckpt["data_shape"])
        pairs = {}
        for entry in ckpt["pairs"]:
            G, D = models_from_config(cfg, shape)
            g_key = "G_ema" if entry.get("G_ema") is not None else "G"
            suffix = "" if entry["key"] is None else f" of class {entry['key']}"
            load_weights(G, entry[g_key], g_key + suffix, where)
            load_weights(D, entry["D"], "D" + suffix, where)
            pairs[entry["key"]] = (G, D)
        return cls(cfg, shape, ckpt["step"], pairs)

    @classmethod
    def load(cls, path: str | os.PathLike) -> RunModels:
        """`from_checkpoint` of the checkpoint file at `path`."""
        return cls.from_checkpoint(load_checkpoint(path), path=path)


def load_generator(path: str | os.PathLike, map_location: str = "cpu") -> nn.Module:
    """Rebuild the generator (its moving average G_ema when stored) from the checkpoint alone, in
    eval mode. A generator with NaN/inf weights (a diverged run) is a CheckpointError, and so is a
    per-class checkpoint (use `RunModels.load(path).generator(k)`)."""
    ckpt = load_checkpoint(path, map_location)
    return RunModels.from_checkpoint(ckpt, path=path).generator().eval()
