"""What `gankit list presets` shows: each packaged preset's one-line description, its dataset and
whether that data is on this machine, read from the YAML files alone (no torch import: instant)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

TOY_DATA = ("gauss1d", "split_normal", "heart", "ring", "grid")
# where gankit's readers look under data.root (torchvision's layouts; gankit.data.images)
DATA_FILES = {
    "mnist": ["MNIST/raw/train-images-idx3-ubyte.gz", "MNIST/raw/train-images-idx3-ubyte"],
    "stacked_mnist": ["MNIST/raw/train-images-idx3-ubyte.gz", "MNIST/raw/train-images-idx3-ubyte"],
    "fashion_mnist": ["FashionMNIST/raw/train-images-idx3-ubyte.gz",
                      "FashionMNIST/raw/train-images-idx3-ubyte"],
    "cifar10": ["cifar-10-batches-py/data_batch_1"],
    "celeba": ["celeba/img_align_celeba", "img_align_celeba", "celeba_sample"],
}  # fmt: skip


@dataclass(frozen=True)
class PresetInfo:
    name: str
    dataset: str
    data: str  # "built in", "present", or "missing (put ... under ROOT)"
    description: str


def describe_yaml(text: str) -> str:
    """The first sentence of a preset's leading comment block."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("#"):
            break
        lines.append(line.lstrip("# ").strip())
    words = " ".join(lines)
    # the first full stop that ends a sentence (not "et al." or "e.g.")
    match = re.search(r"(?<!\bal)(?<!e\.g)(?<!i\.e)\.(\s|$)", words)
    return (words[: match.start() + 1] if match else words).rstrip()


def data_status(dataset: str, root: str = "") -> str:
    """Whether a dataset's files are where `data.root` (or $GANKIT_DATA, else ./data) points."""
    if dataset in TOY_DATA:
        return "built in"
    files = DATA_FILES.get(dataset)
    if files is None:
        return "your files (data.params.path)"
    base = Path(root or os.environ.get("GANKIT_DATA") or "./data").expanduser()
    if any((base / f).exists() for f in files):
        return "present"
    return f"missing: {files[0].split('/')[0]}/ under {base}"


def preset_table() -> list[PresetInfo]:
    """One PresetInfo per packaged preset, sorted by name."""
    out = []
    for entry in sorted(resources.files("gankit").joinpath("configs").iterdir(), key=str):
        if not entry.name.endswith(".yaml"):
            continue
        text = entry.read_text()
        raw = yaml.safe_load(text) or {}
        data = raw.get("data") or {}
        name = data.get("name", "ring")
        out.append(PresetInfo(entry.name[:-5], name, data_status(name, data.get("root", "")),
                              describe_yaml(text)))  # fmt: skip
    return out
