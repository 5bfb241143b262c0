"""Image datasets by name, decoded once into a uint8 cache on disk, then batched straight from a
memory map.

Each builder (`mnist`, `fashion_mnist`, `stacked_mnist`, `cifar10`, `celeba`, `folder`) finds its
files under data.root (downloading them with torchvision where it can), reads them with
`gankit.data.readers` and returns the `ImageSet` of read-only memory maps that
`gankit.data.image_cache` loads from the cache, decoding into it first on a miss.
`gankit.data.image_source.ImageSource` turns an ImageSet into the trainer's batches: batch i is a
function of (seed, i).
"""

from __future__ import annotations

import logging
import os
import shutil  # noqa: F401 (tests/test_faults.py patches images.shutil.disk_usage; see image_cache)
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from gankit.data import readers
from gankit.data.image_cache import array_set, files_set
from gankit.data.image_source import ImageSet

# re-exported (`as` marks it): gankit.evaluate, observe, schedule and metric_adapters import them
from gankit.data.image_source import gather as gather
from gankit.data.image_source import to_float as to_float
from gankit.data.image_source import to_uint8 as to_uint8
from gankit.data.readers import DataError

log = logging.getLogger(__name__)

COMMON_OPTIONS = ("root", "img_size", "channels", "download", "skip_bad", "cache_dir")


def _data_root(root: str) -> Path:
    return Path(root or os.environ.get("GANKIT_DATA") or "./data").expanduser()


def _check(img_size: int, channels: int) -> None:
    if channels not in (0, 1, 3):
        raise DataError(f"data.channels: {channels} is not valid; choose from: 1, 3 (0 = native)")
    if img_size < 0:
        raise DataError(f"data.img_size must be >= 0 (0 = native), got {img_size}")


def _try_download(what: str, fetch: Callable[[], object]) -> None:
    """Run a torchvision download; any failure (no network, bad mirror) just leaves the files missing."""
    log.info("%s not found; trying to download it with torchvision", what)
    try:
        fetch()
    except Exception as e:  # noqa: BLE001
        log.warning("downloading %s failed (%s: %s)", what, type(e).__name__, e)


def _fetch_hint(download: bool) -> str:
    return "the download failed (see the log)" if download else "or set data.download=true"


def _idx_files(folder: str, root: str, download: bool) -> list[Path]:
    """The four IDX files of {root}/{folder}/raw/{train,t10k}-*-idx?-ubyte[.gz] (torchvision's layout)."""
    raw = _data_root(root) / folder / "raw"

    def find() -> list[Path] | None:
        found = [
            next((p for p in (raw / f, raw / f"{f}.gz") if p.is_file()), None)
            for f in readers.IDX_FILES
        ]
        return None if None in found else found

    files = find()
    if files is None and download:
        import torchvision

        fetch = getattr(torchvision.datasets, folder)
        _try_download(folder, lambda: fetch(str(_data_root(root)), download=True))
        files = find()
    if files is None:
        names = ", ".join(f"{f}.gz" for f in readers.IDX_FILES)
        raise DataError(
            f"{folder} not found: put {names} (gzipped or not) in {raw} or set data.root; {_fetch_hint(download)}"
        )
    return files


def _idx_set(
    name: str,
    folder: str,
    classes: list[str],
    root: str,
    img_size: int,
    channels: int,
    download: bool,
    cache_dir: str,
) -> ImageSet:
    """An IDX dataset in torchvision's layout: {root}/{folder}/raw/{train,t10k}-*-idx?-ubyte[.gz]."""
    _check(img_size, channels)
    files = _idx_files(folder, root, download)

    def load() -> tuple:
        train, test = readers.read_idx_pair(*files[:2]), readers.read_idx_pair(*files[2:])
        return (*train, *test, classes)

    settings = {"img_size": img_size or 28, "channels": channels or 1}
    return array_set(name, files[0].parent, files, load, settings, cache_dir)


def mnist(
    root: str = "",
    img_size: int = 0,
    channels: int = 0,
    *,
    download: bool = True,
    skip_bad: bool = False,
    cache_dir: str = "",
    n_train: int = 0,
) -> ImageSet:
    """MNIST digits (LeCun et al. 1998): 60,000 train / 10,000 test, 28x28 gray, 10 classes.

    Resized with antialiased bilinear interpolation when img_size != 28. `skip_bad` does not apply: a
    corrupt IDX file is always an error. `n_train` > 0 trains on the first n_train training images
    only (Goodfellow et al. 2014 trained on train[:50000] and kept the rest for validation).
    """
    images = _idx_set(
        "mnist", "MNIST", readers.MNIST_CLASSES, root, img_size, channels, download, cache_dir
    )
    if not 0 <= n_train <= len(images.train):
        raise DataError(f"data.params.n_train must be in [0, {len(images.train)}], got {n_train}")
    if n_train:
        images = replace(images, train=images.train[:n_train], unused_train=images.train[n_train:],
                         train_labels=images.train_labels[:n_train])  # fmt: skip
    return images


def fashion_mnist(
    root: str = "",
    img_size: int = 0,
    channels: int = 0,
    *,
    download: bool = True,
    skip_bad: bool = False,
    cache_dir: str = "",
) -> ImageSet:
    """Fashion-MNIST (Xiao et al. 2017): 60,000 train / 10,000 test, 28x28 gray, 10 classes."""
    classes = readers.FASHION_CLASSES
    return _idx_set(
        "fashion_mnist", "FashionMNIST", classes, root, img_size, channels, download, cache_dir
    )


def stacked_mnist(
    root: str = "",
    img_size: int = 0,
    channels: int = 0,
    *,
    download: bool = True,
    skip_bad: bool = False,
    cache_dir: str = "",
    n_train: int = 128_000,
    n_test: int = 10_000,
    seed: int = 0,
) -> ImageSet:
    """Stacked MNIST, the 1,000-mode benchmark (Metz et al. 2017; VEEGAN; PacGAN): three MNIST digits drawn
    uniformly at random are stacked as the R, G and B channels of one 28x28 image; the class is the
    three-digit number 100*R + 10*G + B (1,000 classes).

    Train images stack digits of the MNIST train split, test images digits of the test split; which digits
    is fixed by `seed` (data.params.seed), so the set is the same for every run.
    """
    _check(img_size, channels)
    if channels not in (0, 3):
        raise DataError(
            f"stacked_mnist has 3 channels (one digit each); data.channels={channels} is not valid"
        )
    files = _idx_files("MNIST", root, download)

    def load() -> tuple:
        rng = np.random.default_rng(seed)
        out = []
        for (x, y), n in (
            (readers.read_idx_pair(*files[:2]), n_train),
            (readers.read_idx_pair(*files[2:]), n_test),
        ):
            idx = rng.integers(0, len(x), size=(n, 3))  # (n, 3) digit indices: R, G, B
            out += [x[idx, 0], y[idx] @ np.array([100, 10, 1])]  # (n, 3, 28, 28) uint8, (n,) labels
        return (*out, [f"{k:03d}" for k in range(1000)])

    settings = {
        "img_size": img_size or 28,
        "channels": 3,
        "n_train": n_train,
        "n_test": n_test,
        "seed": seed,
    }
    return array_set("stacked_mnist", files[0].parent, files, load, settings, cache_dir)


def cifar10(
    root: str = "",
    img_size: int = 0,
    channels: int = 0,
    *,
    download: bool = True,
    skip_bad: bool = False,
    cache_dir: str = "",
) -> ImageSet:
    """CIFAR-10 (Krizhevsky 2009): 50,000 train / 10,000 test, 32x32 RGB, 10 classes.

    Reads the pickles of {root}/cifar-10-batches-py directly; torchvision's class is only used to
    download (it checks the official files' md5s). `skip_bad` does not apply.
    """
    _check(img_size, channels)
    batch_dir = _data_root(root) / "cifar-10-batches-py"
    files = [batch_dir / f for f in readers.CIFAR_FILES]
    if download and not all(f.is_file() for f in files):
        import torchvision

        fetch = torchvision.datasets.CIFAR10
        _try_download("CIFAR-10", lambda: fetch(str(_data_root(root)), download=True))
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise DataError(
            f"CIFAR-10 not found: {batch_dir} lacks {', '.join(missing)}; extract cifar-10-python.tar.gz there or set data.root; {_fetch_hint(download)}"
        )

    def load() -> tuple:
        train = [readers.read_cifar_batch(f) for f in files[:5]]
        tx, ty = np.concatenate([x for x, _ in train]), np.concatenate([y for _, y in train])
        return (tx, ty, *readers.read_cifar_batch(files[5]), readers.read_cifar_names(files[6]))

    settings = {"img_size": img_size or 32, "channels": channels or 3}
    return array_set("cifar10", batch_dir, files, load, settings, cache_dir)


def celeba(
    root: str = "",
    img_size: int = 0,
    channels: int = 0,
    *,
    download: bool = True,
    skip_bad: bool = False,
    cache_dir: str = "",
    path: str = "",
    crop: int = 0,
    test_fraction: float = 0.05,
) -> ImageSet:
    """Aligned CelebA faces (Liu et al. 2015): centre square of side `crop` (0 = short side), 64 px.

    Images come from `path`, else the first of {root}/celeba/img_align_celeba, {root}/img_align_celeba,
    {root}/celeba_sample. With list_eval_partition.txt in the image folder's parent the official split
    is used (test = partition 2, train = partitions 0 and 1), else a `test_fraction` hash split.
    """
    _check(img_size, channels)
    base = _data_root(root)
    candidates = [
        base / "celeba" / "img_align_celeba",
        base / "img_align_celeba",
        base / "celeba_sample",
    ]
    if path and not Path(path).expanduser().is_dir():
        raise DataError(f"CelebA folder {path} (data.params.path) does not exist")
    if not path and download and not any(c.is_dir() for c in candidates):
        import torchvision

        fetch = torchvision.datasets.CelebA
        _try_download("CelebA", lambda: fetch(str(base), split="all", download=True))
    img_dir = Path(path).expanduser() if path else next((c for c in candidates if c.is_dir()), None)
    if img_dir is None:
        tried = ", ".join(str(c) for c in candidates)
        raise DataError(
            f"CelebA not found in any of {tried}; put the aligned JPEGs there or set data.params.path"
        )
    rels = readers.list_images(img_dir)
    partition = img_dir.parent / "list_eval_partition.txt"
    settings = dict(img_size=img_size or 64, channels=channels or 3, crop=crop, skip_bad=skip_bad)
    if partition.is_file():
        parts = readers.read_partition(partition)
        is_test = [parts.get(Path(r).name) == "2" for r in rels]
        if any(is_test) and not all(is_test):
            labels = np.zeros(len(rels), np.int64)
            settings["split"] = "official"
            return files_set(
                "celeba", img_dir, rels, is_test, labels, [], settings, cache_dir, (partition,)
            )
        log.warning(
            "%s leaves a split of %s empty; using test_fraction instead", partition, img_dir
        )
    is_test = readers.hash_split(rels, test_fraction)
    settings["test_fraction"] = test_fraction
    return files_set(
        "celeba", img_dir, rels, is_test, np.zeros(len(rels), np.int64), [], settings, cache_dir
    )


def folder(
    root: str = "",
    img_size: int = 0,
    channels: int = 0,
    *,
    download: bool = True,
    skip_bad: bool = False,
    cache_dir: str = "",
    path: str = "",
    test_fraction: float = 0.1,
    crop: int = 0,
) -> ImageSet:
    """Every image under the directory `path`, recursively: centre square of side `crop` (0 = short), 64 px.

    If all images sit in >= 2 first-level subdirectories, their sorted names are the classes (like
    torchvision's ImageFolder); otherwise there are no labels. Any mode is converted to `channels`;
    transparent pixels are composited on black. The test split is a `test_fraction` hash split of the
    relative paths. `root` and `download` do not apply.
    """
    _check(img_size, channels)
    if not path:
        raise DataError("dataset 'folder' needs a directory: set data.params.path=/path/to/images")
    top = Path(path).expanduser()
    if not top.is_dir():
        raise DataError(f"image folder {top} (data.params.path) does not exist")
    rels = readers.list_images(top)
    firsts = [r.split("/")[0] if "/" in r else "" for r in rels]
    classes = sorted(set(firsts)) if "" not in firsts and len(set(firsts)) >= 2 else []
    labels = np.array([classes.index(f) for f in firsts] if classes else [0] * len(rels), np.int64)
    is_test = readers.hash_split(rels, test_fraction)
    settings = dict(img_size=img_size or 64, channels=channels or 3, crop=crop, skip_bad=skip_bad)
    settings["test_fraction"] = test_fraction  # in the key: it decides the split
    return files_set("folder", top, rels, is_test, labels, classes, settings, cache_dir)
