"""Shared fixtures: tiny configs that train in well under a second on CPU, the tiny image datasets,
and `mode_cfg`, one tiny config per training mode for the contract tests."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


TINY = [
    "train.steps=8",
    "train.log_every=2",
    "train.sample_every=4",
    "train.sample_n=64",
    "train.ckpt_every=4",
    "train.progress=false",
    "train.threads=1",
    "data.batch_size=16",
    "model.g.hidden=[16,16]",
    "model.d.hidden=[16,16]",
    "eval.n_samples=256",
    "loss.r1_weight=0",  # the toy presets' stabilisers off: tiny runs take the fast MLP step
    "model.d.pack=1",
]


@pytest.fixture
def tiny_overrides() -> list[str]:
    return list(TINY)


@pytest.fixture
def tiny_cfg():
    from gankit.config import load_config

    return load_config("toy_ring", TINY)


@pytest.fixture
def split_resume(tmp_path):
    """`split_resume(preset, overrides)`: train 8 steps at once and 4 + resume + 4 (overrides must
    give train.steps=8); asserts G and D are bit-identical and returns both final checkpoints."""
    from gankit.checkpoint import load_checkpoint
    from gankit.config import load_config
    from gankit.trainer import train

    def run(preset: str, overrides: list[str]) -> tuple[dict, dict]:
        train(load_config(preset, overrides), tmp_path / "full")
        train(load_config(preset, [*overrides, "train.steps=4"]), tmp_path / "half")
        train(load_config(preset, overrides), tmp_path / "half", resume=True)
        a = load_checkpoint(tmp_path / "full" / "checkpoints" / "last.pt")
        b = load_checkpoint(tmp_path / "half" / "checkpoints" / "last.pt")
        for ea, eb in zip(a["pairs"], b["pairs"], strict=True):
            for key in ("G", "D"):
                for name in ea[key]:
                    assert torch.equal(ea[key][name], eb[key][name]), f"{key}.{name}"
        return a, b

    return run


def class_pngs(root, folders):
    """14 gray 20x20 PNGs per class folder, class c about 80 * c brighter (a hash split with
    test_fraction 0.25 leaves 8, 10 and 5 training images in three folders)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(folders):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(14):
            img = (rng.random((20, 20)) * 60 + 80 * c).astype(np.uint8)  # class = brightness
            Image.fromarray(img).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def class_folder(tmp_path_factory):
    """(three class folders of PNGs, an image cache directory)."""
    return class_pngs(tmp_path_factory.mktemp("classes"), ["a", "b", "c"]), tmp_path_factory.mktemp(
        "class-cache"
    )


# the tiny image runs are a plain DCGAN whatever the image presets' stabilisers (tested on their own):
# one thread, fp32 on every CPU (not train.amp=auto's pick), no R1, no EMA of G
PLAIN_DCGAN = ["train.threads=1", "train.amp=false", "loss.r1_weight=0", "train.ema_decay=0"]


def folder_overrides(path, cache, *extra: str) -> list[str]:
    """A 16 px gray DCGAN (width 4) on `class_pngs` folders, batch 4, 8 steps."""
    return [
        "data.name=folder", f"data.params.path={path}", "data.params.test_fraction=0.25",
        f"data.cache_dir={cache}", "data.img_size=16", "data.channels=1", "data.batch_size=4",
        "model.name=dcgan", "model.z_dim=8", "model.g={ngf: 4}", "model.d={ndf: 4}",
        "train.epochs=0", "train.steps=8", "train.log_every=2", "train.sample_every=4",
        "train.sample_n=16", "train.dstats_n=8", "train.ckpt_every=4", "train.progress=false",
        *PLAIN_DCGAN, *extra,
    ]  # fmt: skip


MODES = ("toy", "toy_autograd_ema", "image", "per_class")  # the loop's modes, for contract tests


@pytest.fixture(params=MODES)
def mode(request) -> str:
    """Each training mode in turn (a test taking `mode` runs once per mode; see `mode_cfg`)."""
    return request.param


@pytest.fixture
def mode_cfg(class_folder):
    """`mode_cfg(mode, *overrides)`: the tiny 8-step config of a training mode: a toy MLP pair (fast
    step), a toy pair by autograd with EMA, an unconditional image pair, one image pair per class."""
    from gankit.config import load_config

    def make(mode: str, *extra: str):
        if mode == "toy":
            return load_config("toy_ring", [*TINY, *extra])
        if mode == "toy_autograd_ema":
            return load_config("toy_ring", [*TINY, "train.fast_path=false", "train.ema_decay=0.9",
                                            *extra])  # fmt: skip
        per_class = ["train.per_class=true"] if mode == "per_class" else []
        return load_config("dcgan_mnist", folder_overrides(*class_folder, *per_class, *extra))

    return make


def make_stripes(root):
    """40 RGB 20x20 PNGs of coloured stripes in two class folders (a kind of image new to the tests)."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(40):
        cls = "vertical" if i % 2 else "horizontal"
        img = np.zeros((20, 20, 3), np.uint8)
        color = rng.integers(64, 256, 3)
        if cls == "vertical":
            img[:, ::4] = color
        else:
            img[::4, :] = color
        (root / cls).mkdir(exist_ok=True)
        Image.fromarray(img).save(root / cls / f"{i:03d}.png")
    return root


def image_overrides(path, cache) -> list[str]:
    return [
        "data.name=folder", f"data.params.path={path}", f"data.cache_dir={cache}",
        "data.img_size=16", "data.channels=3", "data.batch_size=8", "model.name=dcgan",
        "model.z_dim=8", "model.g={ngf: 4}", "model.d={ndf: 4}", "train.epochs=0",
        "train.steps=8", "train.log_every=2", "train.sample_every=4", "train.sample_n=16",
        "train.dstats_n=8", "train.ckpt_every=4", "train.progress=false", *PLAIN_DCGAN,
    ]  # fmt: skip


@pytest.fixture(scope="session")
def stripes(tmp_path_factory):
    return make_stripes(tmp_path_factory.mktemp("stripes"))


# files in the layouts of the standard datasets (tiny, random pixels)
_files_rng = np.random.default_rng(0)


def write_idx(path: Path, arr: np.ndarray, gz: bool = True) -> None:
    """An IDX file of uint8 `arr`: magic 0x0000 08 ndim, big-endian dims, data."""
    header = struct.pack(f">4B{arr.ndim}I", 0, 0, 8, arr.ndim, *arr.shape)
    data = header + arr.astype(np.uint8).tobytes()
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def make_mnist(root: Path, folder: str = "MNIST", n: tuple[int, int] = (6, 4), gz: bool = True):
    """Tiny MNIST-layout files; returns (train_x, train_y, test_x, test_y) as written."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    out = []
    for prefix, k in (("train", n[0]), ("t10k", n[1])):
        x = _files_rng.integers(0, 256, (k, 28, 28), dtype=np.uint8)
        y = _files_rng.integers(0, 10, k, dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x, gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, gz)
        out += [x, y]
    return out


def make_cifar(root: Path, per_batch: int = 2) -> tuple[list[dict], list[str]]:
    """Tiny cifar-10-batches-py pickles; returns the batch dicts (5 train + test) and class names."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    batches = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            b"data": _files_rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"labels": _files_rng.integers(0, 10, per_batch).tolist(),
        }
        (d / name).write_bytes(pickle.dumps(batch))
        batches.append(batch)
    names = [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ]
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [n.encode() for n in names]}))
    return batches, names


def save(path: Path, img: Image.Image, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, **kw)
    return path


def make_celeba(root: Path, n: int = 6, size: tuple[int, int] = (100, 120)) -> Path:
    img_dir = root / "celeba" / "img_align_celeba"
    for i in range(1, n + 1):
        save(img_dir / f"{i:06d}.jpg", Image.new("RGB", size, (40 * i,) * 3), quality=95)
    return img_dir
