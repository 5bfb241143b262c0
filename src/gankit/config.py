"""Run configuration: nested dataclasses <-> YAML, `--set key.path=value` overrides, validation.

A config is built in layers: a packaged preset (or a YAML file), then `--set` overrides. Every value is
coerced to the field's annotated type (so YAML's `1e-4`, which PyYAML reads as a string, becomes a float)
and an unknown key or a bad value is a one-line `ConfigError` naming the key and the valid choices.
The free-form sections `model.g`, `model.d` and `data.params` are the keyword arguments of the model
and dataset constructors: their signatures are the schema (checked in `validated`, which returns a
checked copy and never changes its argument).

Longer than 400 lines because schema, coercion and validation live together: the dataclasses are the
schema the checks read, and splitting them would split one table of keys over several files.
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from gankit.errors import ConfigError, GankitError
from gankit.registry import lookup

__all__ = ["ConfigError", "lookup"]  # re-exported: the names callers have always imported from here


@dataclass
class DataConfig:
    name: str = "ring"  # a key of gankit.data.DATASETS
    batch_size: int = 128
    # Toy data: >0 draws a finite dataset of this many points once (epochs are passes over it);
    # 0 draws fresh points for every batch.
    n_points: int = 0
    params: dict = field(
        default_factory=dict
    )  # dataset keyword arguments, e.g. {mean: 3.0, std: 1.0} or {path: my/images}
    # Image datasets (ignored by toys). root "" = $GANKIT_DATA or ./data; img_size/channels 0 = native.
    root: str = ""
    img_size: int = 0  # 28, 32, 64 ... (DCGAN depth follows from it)
    channels: int = 0  # 1 (grayscale) or 3 (RGB), converted as asked
    download: bool = True  # fetch with torchvision when the files are missing and a network exists
    skip_bad: bool = False  # skip (and count) unreadable or too-small images instead of stopping
    cache_dir: str = ""  # decoded uint8 cache; "" = $GANKIT_CACHE or ~/.cache/gankit


@dataclass
class ModelConfig:
    name: str = "mlp"  # a key of gankit.models.MODELS
    z_dim: int = 2
    # uniform is U(-1, 1); uniform_sqrt3 is U(-sqrt 3, sqrt 3), the 2014 GAN code's unit-variance noise
    z_dist: Literal["normal", "uniform", "uniform_sqrt3"] = "normal"
    num_classes: int = 0
    g: dict = field(
        default_factory=dict
    )  # generator keyword arguments (its constructor is the schema)
    d: dict = field(default_factory=dict)  # discriminator keyword arguments


@dataclass
class LossConfig:
    name: str = "nonsaturating"  # a key of gankit.losses.LOSSES
    label_smoothing: float = 0.0  # one-sided: real targets become 1 - label_smoothing
    gp_weight: float = 0.0  # WGAN-GP gradient penalty weight
    r1_weight: float = 0.0  # R1 penalty weight (gradient norm on real data)
    r2_weight: float = 0.0  # R2 penalty weight (the same on fakes; R3GAN pairs it with rpgan + R1)
    # lazy regularisation (Karras et al. 2020, StyleGAN2): R1 and R2 on one D update in r1_every,
    # weighted x r1_every so the mean penalty is unchanged; each penalty costs a double backward
    r1_every: int = 1


@dataclass
class OptimConfig:
    lr_g: float = 2.0e-4
    lr_d: float = 2.0e-4
    betas_g: tuple[float, float] = (0.5, 0.999)
    betas_d: tuple[float, float] = (0.5, 0.999)
    # One step = d_steps discriminator updates then g_steps generator updates.
    d_steps: int = 1
    g_steps: int = 1
    # constant; linear decay of both learning rates to 0 at the last step (sharpens the final
    # samples: with a constant rate G keeps jittering around the target by ~lr-sized steps); or
    # exponential: lr / lr_decay**step, floored at lr_min (the 2014 GAN's schedule)
    lr_schedule: Literal["constant", "linear", "exponential"] = "constant"
    lr_decay: float = 1.0  # exponential schedule: divisor per step (e.g. 1.000004)
    lr_min: float = 0.0  # exponential schedule: floor
    # sgd: momentum, ramped linearly from `momentum` to `momentum_end` over `momentum_steps` steps
    momentum: float = 0.5
    momentum_end: float = 0.5
    momentum_steps: int = 0
    # adam, or sgd with momentum (Goodfellow et al. 2014 trained their GAN with SGD + momentum)
    name: Literal["adam", "sgd"] = "adam"
    # true: D and G update together, G's gradient taken against D before this step's D update
    # (the 2014 GAN code's one SGD update of both players); needs d_steps = g_steps = 1
    simultaneous: bool = False


@dataclass
class TrainConfig:
    steps: int = 10000  # number of steps (generator updates when g_steps = 1)
    epochs: int = 0  # >0: train this many passes over a finite dataset instead of `steps`
    log_every: int = 100  # metrics.jsonl cadence (steps)
    # fixed-noise snapshot (GIF frame) and D-output statistics cadence in steps; 0 = once per epoch
    sample_every: int = 1000
    sample_n: int = 1000  # fixed-noise samples per snapshot (images: the grid, e.g. 64)
    dstats_n: int = 256  # real-train / fake / real-test samples of the D-output statistics
    ckpt_every: int = 5000  # checkpoints/last.pt cadence
    keep_every: int = 0  # >0: also keep checkpoints/step_XXXXXX.pt at this cadence
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 keeps torch's default
    progress: bool = True  # tqdm progress bar
    # >0: keep G_ema, an exponential moving average of G's weights (Yazici et al. 2019), used for
    # snapshots, eval and sampling; it averages out the oscillation of the last iterates
    ema_decay: float = 0.0
    fast_path: bool = True  # closed-form MLP step where it is exact (see gankit.fastmlp)
    # conditional models: labels of the fakes, uniform over classes or the real batch's (data frequencies)
    fake_labels: Literal["uniform", "data"] = "uniform"
    # one independent unconditional G/D pair per class (gankit.schedule.ClassRouting), optionally for a subset
    per_class: bool = False
    classes: list[int] = field(default_factory=list)  # [] = every class
    # speed levers for image models; pick them by measurement on your machine (`gankit bench dcgan`)
    channels_last: bool = False  # NHWC memory format for convolutions
    # bfloat16 autocast: true, false, or auto (on where the hardware computes bf16 natively: a CPU
    # with AVX-512-bf16 or AMX, a CUDA GPU with bf16 support)
    # fp16: float16 autocast with a GradScaler (GPUs whose bf16 is slow; bf16 needs no scaler)
    amp: bool | Literal["auto", "bf16", "fp16"] = False
    compile: bool = False  # torch.compile G and D (minutes of compilation first)
    # several processes (torchrun / --nproc): BatchNorm statistics of the global batch (all-reduced
    # across ranks), so the run equals the one-process run; false: each rank's rows only
    sync_bn: bool = False
    # DiffAugment (Zhao et al. 2020) of real and fake images before D: "" or ops from
    # color, translation, cutout, e.g. "color,translation,cutout" (images only)
    augment: str = ""
    # live diagnoses (gankit.diagnose) that stop the run when they hold at two snapshots in a row,
    # keeping the last checkpoint from before them: any of d_won, collapsed, memorising, diverged
    # (default: a diverged run stops instead of finishing "successfully" at loss 1e17)
    stop_on: list[str] = field(default_factory=lambda: ["diverged"])


@dataclass
class EvalConfig:
    metrics: list[str] = field(default_factory=list)  # empty: the dataset's default metrics
    n_samples: int = 2500  # generated samples of the toy metrics (the others follow their protocol)
    seed: int = 0  # seed of the evaluation noise (same checkpoint + seed = same number)


@dataclass
class TrackConfig:
    """Optional mirrors of metrics.jsonl (always written): TensorBoard and Weights & Biases."""

    tensorboard: bool = False  # RUN_DIR/tensorboard: scalars, sample grids, D-statistics
    wandb: Literal["online", "offline", "disabled"] = (
        "disabled"  # offline: RUN_DIR/wandb, no network
    )
    project: str = "gankit"  # W&B project


@dataclass
class Config:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    track: TrackConfig = field(default_factory=TrackConfig)


# ---- coercion -------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert `value` to the annotated type `tp`, or raise ConfigError naming `key`."""
    # long: one branch per kind of annotation (Any, bool, int, float, str, Literal, Union, list,
    # tuple, dict, dataclass), each with its error; apart they would not read as one table
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is inspect.Parameter.empty:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return coerce(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} is not a valid {_type_name(tp)}")
    if origin is Literal:
        if value in args:
            return value
        raise ConfigError(
            f"{key}: {value!r} is not valid; choose from: {', '.join(map(str, args))}"
        )
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)  # also parses YAML's string '1e-4'
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if origin in (list, tuple) or tp in (list, tuple):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool) and origin is list:
            value = [value]  # `--set eval.metrics=modes` means a one-item list
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{key}: expected {len(args)} values, got {list(value)!r}")
            return tuple(
                coerce(v, a, f"{key}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item = args[0] if args else Any
        out = [coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (origin or tp) is tuple else out
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def from_dict(cls: type, raw: dict[str, Any] | None, prefix: str = "") -> Any:
    """Build dataclass `cls` from a nested dict, coercing values and rejecting unknown keys."""
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]!s}; valid keys: "
            + ", ".join(prefix + n for n in names)
        )
    kwargs = {}
    for name, value in raw.items():
        tp = hints[name]
        if dataclasses.is_dataclass(tp):
            kwargs[name] = from_dict(tp, value, f"{prefix}{name}.")
        else:
            kwargs[name] = coerce(value, tp, prefix + name)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict (lists, not tuples) of a config: YAML-safe and checkpoint-safe."""

    def plain(x: Any) -> Any:
        if isinstance(x, dict):
            return {k: plain(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x

    return plain(dataclasses.asdict(cfg))


def to_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, default_flow_style=None)


# ---- presets, files and overrides -------------------------------------------------------------------


def g_bias_from_data(cfg: Config) -> bool:
    """model.g.output_bias is "data": G's output bias starts at the training data's mean sample."""
    return cfg.model.g.get("output_bias") == "data"


def list_presets() -> list[str]:
    """Names of the presets shipped in gankit/configs."""
    root = resources.files("gankit") / "configs"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def _read_yaml(text: str, source: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(f"{source}: invalid YAML{where}: {getattr(e, 'problem', e)}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{source}: expected a mapping of config sections, got {type(raw).__name__}"
        )
    return raw


def read_source(name_or_path: str) -> dict[str, Any]:
    """The raw dict of a preset name or a YAML file path."""
    path = Path(name_or_path)
    presets = list_presets()
    # a preset name means the preset unless a file has that name: a folder named like a preset
    # (e.g. a sweep's --out) does not hide it
    preset = name_or_path in presets and not path.is_file()
    if not preset and (path.suffix in (".yaml", ".yml") or path.exists()):
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        return _read_yaml(path.read_text(), str(path))
    if name_or_path not in presets:
        raise ConfigError(f"unknown preset {name_or_path!r}; choose from: {', '.join(presets)}")
    text = (resources.files("gankit") / "configs" / f"{name_or_path}.yaml").read_text()
    return _read_yaml(text, f"preset {name_or_path}")


def parse_override(text: str) -> tuple[list[str], Any]:
    """`"optim.lr_d=1e-4"` -> (["optim", "lr_d"], 1e-4). The value is parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set expects KEY=VALUE, got {text!r} (e.g. --set optim.lr_d=1e-4)")
    key, value = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"--set: bad key {key!r}")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return parts, parsed


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set each dotted `key=value` in the nested raw dict (new dict; input untouched).

    The last word wins over the source's run length: setting train.steps (and not train.epochs) on
    a config that counts epochs sets train.epochs to 0, so N steps are trained.
    """
    import copy

    raw = copy.deepcopy(raw)
    keys = {".".join(parse_override(o)[0]) for o in overrides}
    if "train.steps" in keys and "train.epochs" not in keys and isinstance(raw.get("train"), dict):
        raw["train"]["epochs"] = 0
    for text in overrides:
        parts, value = parse_override(text)
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"--set {text}: {p} is not a section")
            node = nxt
        node[parts[-1]] = value
    return raw


def load_config(name_or_path: str, overrides: list[str] | None = None) -> Config:
    """Preset name or YAML path, plus `--set` overrides -> a validated Config.

    The user's last word wins over the preset's length: `--set train.steps=N` on a preset that
    counts epochs trains N steps (train.epochs becomes 0), unless train.epochs is also set.
    """
    raw = apply_overrides(read_source(name_or_path), overrides or [])
    return validated(from_dict(Config, raw))


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a Config stored in a checkpoint or run directory. A stored config that this version's
    checks refuse is a runtime error (exit 1), not a usage error: the user typed nothing wrong."""
    try:
        cfg = validated(from_dict(Config, raw))
    except ConfigError as e:
        raise GankitError(f"the run's stored config is not valid for this gankit: {e}") from None
    return cfg


# ---- validation against the registries --------------------------------------------------------------


def check_kwargs(
    fn: Any, kwargs: dict[str, Any], key: str, reserved: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Coerce `kwargs` to `fn`'s annotated signature; unknown names list the valid ones."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = {
        n: p
        for n, p in inspect.signature(target).parameters.items()
        if n not in ("self", *reserved) and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }
    hints = typing.get_type_hints(target)
    out = {}
    for name, value in kwargs.items():
        if name not in params:
            valid = ", ".join(f"{key}.{n}" for n in params) or "(none)"
            raise ConfigError(f"unknown config key {key}.{name}; valid keys: {valid}")
        out[name] = coerce(value, hints.get(name, Any), f"{key}.{name}")
    return out


def validated(cfg: Config) -> Config:
    """A checked copy of `cfg` (which is left as it is): names checked against the registries,
    model and dataset kwargs coerced to their constructors' annotations, value ranges checked.
    Raises ConfigError naming the key and the valid choices."""
    from gankit.data import DATASETS, RESERVED
    from gankit.losses import LOSSES
    from gankit.metrics import NAMES
    from gankit.models import MODELS

    cfg = copy.deepcopy(cfg)
    builder = lookup(DATASETS, cfg.data.name, "dataset (data.name)")
    cfg.data.params = check_kwargs(builder, cfg.data.params, "data.params", RESERVED)
    G, D, _ = lookup(MODELS, cfg.model.name, "model (model.name)")
    reserved = ("z_dim", "data_shape", "num_classes")
    cfg.model.g = check_kwargs(G, cfg.model.g, "model.g", reserved)
    cfg.model.d = check_kwargs(D, cfg.model.d, "model.d", reserved)
    lookup(LOSSES, cfg.loss.name, "loss (loss.name)")
    for m in cfg.eval.metrics:
        lookup(NAMES, m, "metric (eval.metrics)")
    _validate_ranges(cfg)
    _validate_model_sizes(cfg)
    _validate_data(cfg, builder)
    _validate_stabilisers(cfg)
    from gankit.diagnose import DIAGNOSES

    for name in cfg.train.stop_on:
        lookup(dict.fromkeys(DIAGNOSES), name, "diagnosis (train.stop_on)")
    return cfg


def _validate_ranges(cfg: Config) -> None:
    # long: a table of every key's range, one line each, then the checks
    positive = {
        "data.batch_size": cfg.data.batch_size,
        "model.z_dim": cfg.model.z_dim,
        "optim.d_steps": cfg.optim.d_steps,
        "optim.g_steps": cfg.optim.g_steps,
        "loss.r1_every": cfg.loss.r1_every,
        "train.log_every": cfg.train.log_every,
        "train.ckpt_every": cfg.train.ckpt_every,
        "train.dstats_n": cfg.train.dstats_n,
        "eval.n_samples": cfg.eval.n_samples,
    }
    non_negative = {
        "data.n_points": cfg.data.n_points,
        "model.num_classes": cfg.model.num_classes,
        "train.steps": cfg.train.steps,
        "train.epochs": cfg.train.epochs,
        "train.keep_every": cfg.train.keep_every,
        "train.threads": cfg.train.threads,
        "train.sample_n": cfg.train.sample_n,
        "train.sample_every": cfg.train.sample_every,
        "data.img_size": cfg.data.img_size,
        "optim.lr_g": cfg.optim.lr_g,
        "optim.lr_d": cfg.optim.lr_d,
        "loss.gp_weight": cfg.loss.gp_weight,
        "loss.r1_weight": cfg.loss.r1_weight,
        "loss.r2_weight": cfg.loss.r2_weight,
    }
    for key, v in positive.items():
        if not v > 0:  # also NaN
            raise ConfigError(f"{key} must be > 0, got {v}")
    for key, v in non_negative.items():
        if not v >= 0 or v == math.inf:  # NaN and inf too
            raise ConfigError(f"{key} must be a finite number >= 0, got {v}")
    for key, v, hi in (("optim.d_steps", cfg.optim.d_steps, MAX_UPDATES),
                       ("optim.g_steps", cfg.optim.g_steps, MAX_UPDATES),
                       ("data.batch_size", cfg.data.batch_size, MAX_BATCH),
                       ("data.img_size", cfg.data.img_size, MAX_IMG_SIZE)):  # fmt: skip
        if v > hi:
            raise ConfigError(f"{key} must be in [1, {hi}], got {v}")
    o = cfg.optim
    if not (o.lr_decay >= 1.0 and math.isfinite(o.lr_decay)):
        raise ConfigError(f"optim.lr_decay must be a finite number >= 1, got {o.lr_decay}")
    for key, v in (("optim.momentum", o.momentum), ("optim.momentum_end", o.momentum_end)):
        if not 0.0 <= v < 1.0:
            raise ConfigError(f"{key} must be in [0, 1), got {v}")
    if o.momentum_steps < 0 or not (0 <= o.lr_min < math.inf):
        raise ConfigError("optim.momentum_steps and optim.lr_min must be >= 0")
    if o.simultaneous and (o.d_steps, o.g_steps) != (1, 1):
        raise ConfigError(
            f"optim.simultaneous needs optim.d_steps=1 and optim.g_steps=1, got {o.d_steps} "
            f"and {o.g_steps}"
        )
    if g_bias_from_data(cfg) and cfg.train.per_class:
        raise ConfigError(
            "model.g.output_bias=data starts G at the whole training set's mean, not a class's: "
            "unset it or train.per_class"
        )
    if not 0 <= cfg.seed < 2**63:
        raise ConfigError(f"seed must be in [0, 2**63 - 1], got {cfg.seed}")
    if cfg.data.channels not in (0, 1, 3):
        raise ConfigError(
            f"data.channels: {cfg.data.channels} is not valid; choose from: 1, 3 (0 = native)"
        )
    if not 0.0 <= cfg.train.ema_decay < 1.0:
        raise ConfigError(f"train.ema_decay must be in [0, 1), got {cfg.train.ema_decay}")
    if not 0.0 <= cfg.loss.label_smoothing < 1.0:
        raise ConfigError(f"loss.label_smoothing must be in [0, 1), got {cfg.loss.label_smoothing}")
    for key, betas in (("optim.betas_g", cfg.optim.betas_g), ("optim.betas_d", cfg.optim.betas_d)):
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ConfigError(f"{key} must be in [0, 1), got {list(betas)}")


MAX_UPDATES = 100  # optim.d_steps / g_steps: each D update holds its own batch in memory
MAX_BATCH = 65536
MAX_IMG_SIZE = 1024
# class counts of the labelled standard datasets, known without reading them
DATASET_CLASSES = {"mnist": 10, "fashion_mnist": 10, "cifar10": 10, "stacked_mnist": 1000}
# native image sizes: upscaling past 4x makes a huge cache of blurred pixels (28 -> 1000 px: 60 GB)
DATASET_NATIVE = {"mnist": 28, "fashion_mnist": 28, "cifar10": 32, "stacked_mnist": 28}


def _validate_model_sizes(cfg: Config) -> None:
    """Layer sizes, dropout and the DCGAN image size, checked before any data is read."""
    for part in ("g", "d"):
        kw = getattr(cfg.model, part)
        hidden = kw.get("hidden")
        if hidden is not None and (not hidden or any(h < 1 for h in hidden)):
            raise ConfigError(f"model.{part}.hidden: layer sizes must be >= 1, got {list(hidden)}")
        for key in ("ngf", "ndf"):
            if key in kw and kw[key] < 1:
                raise ConfigError(f"model.{part}.{key} must be >= 1, got {kw[key]}")
        for key in ("dropout", "input_dropout"):
            if not 0.0 <= kw.get(key, 0.0) < 1.0:
                raise ConfigError(f"model.{part}.{key} must be in [0, 1), got {kw[key]}")
        if kw.get("pieces", 1) < 1:
            raise ConfigError(f"model.{part}.pieces must be >= 1, got {kw['pieces']}")
    if cfg.model.name.startswith("dcgan") and cfg.data.img_size:
        from gankit.models.dcgan import _layout

        try:
            _layout((1, cfg.data.img_size, cfg.data.img_size))
        except ValueError:
            raise ConfigError(
                f"data.img_size={cfg.data.img_size}: DCGAN models need 7 or 4 times a power of "
                "two, e.g. 28, 32, 64, 128"
            ) from None


def _validate_data(cfg: Config, builder: Any) -> None:
    """Toy parameters (by building the density, which is cheap) and class counts."""
    from gankit.data import TOYS

    if cfg.data.name in TOYS:
        try:
            builder(**cfg.data.params)
        except ValueError as e:
            raise ConfigError(f"data.params: {e}") from None
    native = DATASET_NATIVE.get(cfg.data.name)
    if native and cfg.data.img_size > 4 * native:
        raise ConfigError(
            f"data.img_size={cfg.data.img_size}: {cfg.data.name} images are {native} px; "
            f"choose at most {4 * native} (4x upscaling)"
        )
    known = DATASET_CLASSES.get(cfg.data.name)
    k = cfg.model.num_classes
    if k and known is not None and k != known and not cfg.train.per_class:
        raise ConfigError(
            f"model.num_classes={k} but {cfg.data.name} has {known} classes; set "
            f"model.num_classes={known} (conditional) or 0 (unconditional)"
        )


def _validate_stabilisers(cfg: Config) -> None:
    """Ranges and combinations of the stabiliser keys (model.d.pack, model.d.minibatch_std,
    train.augment, loss.r2_weight), checked before any data is read."""
    from gankit.augment import parse_policy

    try:
        policy = parse_policy(cfg.train.augment)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    from gankit.data import TOYS

    if policy and cfg.data.name in TOYS:
        raise ConfigError(
            f"train.augment={cfg.train.augment!r} needs image data; {cfg.data.name} is a toy "
            "density: unset train.augment"
        )
    from gankit.models.layers import check_stabilisers

    d = cfg.model.d
    pack, group = d.get("pack", 1), d.get("minibatch_std", 0)
    try:  # the discriminators' own checks, as config errors before any data is read
        check_stabilisers(pack, group, d.get("cond", "concat"), cfg.model.num_classes)
    except ValueError as e:
        raise ConfigError(f"model.d.{e}") from None
    for key, n in (
        ("data.batch_size", cfg.data.batch_size),
        ("train.dstats_n", cfg.train.dstats_n),
    ):
        if n % pack:
            raise ConfigError(f"{key} ({n}) must be a multiple of model.d.pack ({pack})")
    if group and (cfg.data.batch_size // pack) % group:
        raise ConfigError(
            f"model.d.minibatch_std={group} must divide the batch D sees: data.batch_size / "
            f"model.d.pack = {cfg.data.batch_size // pack}"
        )
