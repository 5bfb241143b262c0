"""Image datasets decoded once into a uint8 cache on disk, then batched straight from a memory map.

Each builder (`mnist`, `fashion_mnist`, `cifar10`, `celeba`, `folder`) reads its files with
`gankit.data.readers`, writes `{name}-{key}-train.npy` / `-test.npy` ((N, C, H, W) uint8), `-labels.npz`
and `-meta.json` under the cache directory, and returns an `ImageSet` of read-only memory maps: a
200k-image CelebA never has to fit in RAM and no image is decoded twice. The key hashes the settings and
the source files' names, sizes and mtimes, so changing either builds a new cache. `ImageSource` turns an
ImageSet into the trainer's batches: batch i is a function of (seed, i).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from gankit.data import readers
from gankit.data.readers import DataError
from gankit.utils import atomic_write, make_generator, write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the decoded pixels of any builder change
SIZE_PROBES = 16  # image headers read to check data.img_size before decoding a folder
COMMON_OPTIONS = ("root", "img_size", "channels", "download", "skip_bad", "cache_dir")

__all__ = ["COMMON_OPTIONS", "DataError", "ImageSet", "ImageSource", "to_float", "to_uint8"]


@dataclass
class ImageSet:
    """Decoded images of one dataset: (N, C, H, W) uint8 arrays (np.memmap when loaded from the cache)."""

    train: np.ndarray  # (N, C, H, W) uint8
    train_labels: np.ndarray  # (N,) int64, zeros if unlabelled
    test: np.ndarray  # (M, C, H, W) uint8: the official test split, or a hash split of a folder
    test_labels: np.ndarray  # (M,) int64
    num_classes: int  # 0 when the data has no labels
    classes: list[str]  # class names, [] if none
    skipped: list[str]  # files skipped by skip_bad (relative paths)
    cache_path: str  # the train .npy
    # training images left out by data.params.n_train (MNIST train[n_train:]): Parzen's validation
    unused_train: np.ndarray | None = None


def to_float(u8: Tensor) -> Tensor:
    """uint8 images in [0, 255] -> float32 in [-1, 1]."""
    return u8.float() / 127.5 - 1


def to_uint8(x: Tensor) -> Tensor:
    """Float images in [-1, 1] -> uint8 in [0, 255] (rounded, clamped): the inverse of `to_float`."""
    return ((x + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)


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


def _cached(
    name: str, settings: dict, base: Path, sources: list[Path], cache_dir: str, build: Callable
) -> ImageSet:
    """The ImageSet of `name`: loaded from the cache, or first built there by `build(train, test)`.

    `build` writes the train and test .npy files and returns a dict with train_labels, test_labels,
    classes and skipped. Nothing is decoded on a cache hit.
    """
    key = hashlib.sha256(json.dumps([name, settings, CACHE_VERSION], sort_keys=True).encode())
    for p in sources:  # fingerprint: a changed, added or removed file gives a new key
        try:
            st = p.stat()
            stamp = f"{st.st_size}\0{st.st_mtime_ns}"
        except OSError as e:  # a dangling symlink or a loop: the decoder skips or reports it
            stamp = f"unreadable {e.errno}"
        key.update(f"{os.path.relpath(p, base)}\0{stamp}\n".encode())
    cache = Path(cache_dir or os.environ.get("GANKIT_CACHE") or "~/.cache/gankit").expanduser()
    prefix = f"{cache / name}-{key.hexdigest()[:16]}"
    files = {s: Path(f"{prefix}-{s}") for s in ("train.npy", "test.npy", "labels.npz", "meta.json")}
    if not all(p.exists() for p in files.values()):
        try:
            cache.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise DataError(f"cannot create the cache {cache} ({e}); set data.cache_dir") from None
        t0 = time.perf_counter()
        try:
            info = build(files["train.npy"], files["test.npy"])
        except BaseException:
            files["train.npy"].unlink(missing_ok=True)
            files["test.npy"].unlink(missing_ok=True)
            raise

        def write_labels(tmp: str) -> None:
            with open(tmp, "wb") as f:  # a file object: given a name, np.savez appends ".npz"
                np.savez(f, train=info["train_labels"], test=info["test_labels"])

        atomic_write(files["labels.npz"], write_labels)
        seconds = round(time.perf_counter() - t0, 2)
        meta = {"name": name, "source": str(base), "settings": settings, "version": CACHE_VERSION}
        meta |= {"classes": info["classes"], "skipped": sorted(info["skipped"]), "seconds": seconds}
        write_json(meta, files["meta.json"])  # written last: its presence marks a complete cache
        log.info("decoded %s into %s in %.1f s", name, prefix, seconds)
    meta = json.loads(files["meta.json"].read_text())
    with np.load(files["labels.npz"]) as z:
        train_labels, test_labels = z["train"].astype(np.int64), z["test"].astype(np.int64)
    if meta["skipped"]:
        n, first = len(meta["skipped"]), meta["skipped"][0]
        log.warning("skipped %d bad files in %s (first: %s)", n, base, first)
    return ImageSet(
        train=np.load(files["train.npy"], mmap_mode="r"),
        train_labels=train_labels,
        test=np.load(files["test.npy"], mmap_mode="r"),
        test_labels=test_labels,
        num_classes=len(meta["classes"]),
        classes=meta["classes"],
        skipped=meta["skipped"],
        cache_path=str(files["train.npy"]),
    )


def _gb(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e7 else f"{n / 1e6:.2f} MB"


def _check_free_space(cache: Path, n: int, channels: int, size: int) -> None:
    """A one-line DataError, before anything is decoded, when n images of (channels, size, size)
    uint8 will not fit in the free space of the cache's filesystem."""
    need = n * channels * size * size
    free = shutil.disk_usage(cache).free
    # 5 % + 1 MiB of margin: labels, metadata, filesystem overhead, and room for everything else
    if need + need // 20 + 2**20 > free:
        raise DataError(
            f"data.img_size {size}: the cache of {n} images ({channels}x{size}x{size}) needs about "
            f"{_gb(need)} but {cache} has {_gb(free)} free; lower data.img_size, free disk space "
            "or set data.cache_dir to a larger disk"
        )


def _check_source_size(
    img_dir: Path, rels: list[str], size: int, crop: int, skip_bad: bool
) -> None:
    """A one-line DataError, before decoding, when the images are smaller than img_size (or crop).

    Reads the headers of up to SIZE_PROBES files spread over `rels`. Without skip_bad one image too
    small is the error decoding would stop at later; with skip_bad it takes all of them, since
    decoding would skip every file and only then fail. Unreadable files are left to the decoder.
    """
    need = max(size, crop)
    key, value = ("data.params.crop", crop) if crop > size else ("data.img_size", size)
    want = f"{key.split('.')[-1]} {value}"  # decode_image's words: "crop 101", "img_size 64"
    k = min(len(rels), SIZE_PROBES)
    picks = sorted({round(i * (len(rels) - 1) / max(k - 1, 1)) for i in range(k)})
    small, sides = [], []
    for i in picks:
        try:
            with Image.open(img_dir / rels[i]) as img:
                w, h = img.size
        except Exception:  # noqa: BLE001 (a bad file is the decoder's to report or skip)
            continue
        sides.append(min(w, h))
        if min(w, h) < need:
            small.append(f"{rels[i]} is {w}x{h}, too small for {want}")
    if small and not skip_bad:
        raise DataError(
            f"{key} {value} is larger than the source images: in {img_dir}, {small[0]}; use "
            f"{key} <= {min(sides)} or set data.skip_bad=true to skip small images"
        )
    if small and len(small) == len(sides):
        raise DataError(
            f"no usable training images in {img_dir}: {key} {value} is larger than every image "
            f"checked ({len(sides)} of {len(rels)}; e.g. {small[0]}); use {key} <= {max(sides)}"
        )


def _array_set(
    name: str, base: Path, sources: list[Path], load: Callable, settings: dict, cache_dir: str
) -> ImageSet:
    """Cache `load() -> (train, train_labels, test, test_labels, classes)`, resized and converted."""
    size, channels = settings["img_size"], settings["channels"]

    def build(train_path: Path, test_path: Path) -> dict:
        tx, ty, vx, vy, classes = load()  # (N, C, h, w) uint8 at native size
        _check_free_space(train_path.parent, len(tx) + len(vx), channels, size)
        for path, x in ((train_path, tx), (test_path, vx)):
            chunks = readers.convert_chunks(x, size, channels)
            readers.write_npy(path, len(x), (channels, size, size), chunks)
        return {"train_labels": ty, "test_labels": vy, "classes": classes, "skipped": []}

    return _cached(name, settings, base, sources, cache_dir, build)


def _files_set(
    name: str,
    img_dir: Path,
    rels: list[str],
    is_test: list[bool],
    labels: np.ndarray,
    classes: list[str],
    settings: dict,
    cache_dir: str,
    extra_sources: tuple[Path, ...] = (),
) -> ImageSet:
    """Decode the image files `rels` under `img_dir` into the cache, split by `is_test`.

    `settings` holds img_size, channels, crop and skip_bad (plus anything else that the key must see).
    """
    size, channels, crop = settings["img_size"], settings["channels"], settings["crop"]
    if crop and crop < size:
        raise DataError(
            f"data.params.crop {crop} is smaller than data.img_size {size}; use 0 or >= {size}"
        )

    def build(train_path: Path, test_path: Path) -> dict:
        _check_source_size(img_dir, rels, size, crop, settings["skip_bad"])
        _check_free_space(train_path.parent, len(rels), channels, size)
        out: dict = {"classes": classes, "skipped": []}
        for split, path in (("train", train_path), ("test", test_path)):
            idx = [i for i, t in enumerate(is_test) if t == (split == "test")]
            kept: list[int] = []  # positions in idx of the files decoded (the others were skipped)
            job = (size, channels, crop, settings["skip_bad"], kept, out["skipped"])
            chunks = readers.decode_files(img_dir, [rels[i] for i in idx], *job)
            readers.write_npy(path, len(idx), (channels, size, size), chunks)
            out[f"{split}_labels"] = labels[idx][kept]
            if split == "train" and not kept:
                raise DataError(
                    f"no usable training images in {img_dir}: all {len(idx)} were skipped"
                )
        return out

    sources = [img_dir / r for r in rels] + list(extra_sources)
    return _cached(name, settings, img_dir, sources, cache_dir, build)


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
    return _array_set(name, files[0].parent, files, load, settings, cache_dir)


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
    return _array_set("stacked_mnist", files[0].parent, files, load, settings, cache_dir)


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
    return _array_set("cifar10", batch_dir, files, load, settings, cache_dir)


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
            return _files_set(
                "celeba", img_dir, rels, is_test, labels, [], settings, cache_dir, (partition,)
            )
        log.warning(
            "%s leaves a split of %s empty; using test_fraction instead", partition, img_dir
        )
    is_test = readers.hash_split(rels, test_fraction)
    settings["test_fraction"] = test_fraction
    return _files_set(
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
    return _files_set("folder", top, rels, is_test, labels, classes, settings, cache_dir)


def gather(images: np.ndarray, idx: Tensor) -> Tensor:
    """images[idx] as a uint8 tensor, read from the memory map in ascending index order for locality."""
    idx_np = idx.numpy()
    order = np.argsort(idx_np, kind="stable")
    out = np.empty((len(idx_np), *images.shape[1:]), np.uint8)
    out[order] = images[idx_np[order]]
    return torch.from_numpy(out)


class ImageSource:
    """Batches of an ImageSet as float tensors in [-1, 1]; batch i is a function of (seed, i).

    Epoch e visits every training image once, in the order of a permutation drawn from
    make_generator(seed, "epoch", e); the last incomplete batch is dropped (as in DCGAN training).

    Attributes:
        shape: (C, H, W) of one image.
        size: N training images.
        batches_per_epoch: N // batch_size.
        device: where batches land (cpu until `to`).
    """

    def __init__(self, images: ImageSet, seed: int, batch_size: int):
        self.images, self.seed, self.batch_size = images, seed, batch_size
        self.shape: tuple[int, int, int] = tuple(images.train.shape[1:])
        self.num_classes, self.classes = images.num_classes, images.classes
        self.size = len(images.train)
        if not 0 < batch_size <= self.size:
            raise DataError(
                f"data.batch_size {batch_size} does not fit the {self.size} training images of {images.cache_path}"
            )
        self.batches_per_epoch = self.size // batch_size
        self.device = torch.device("cpu")
        self._labels = torch.from_numpy(np.asarray(images.train_labels, dtype=np.int64))
        self._epoch, self._perm = -1, torch.empty(0, dtype=torch.int64)

    def to(self, device: torch.device | str) -> ImageSource:
        """Later batches land on `device`; returns self."""
        self.device = torch.device(device)
        return self

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._epoch:  # cached: an epoch's batches share it
            g = make_generator(self.seed, "epoch", epoch)
            self._perm = torch.randperm(self.size, generator=g)
            self._epoch = epoch
        return self._perm

    def epoch_indices(self, epoch: int) -> Tensor:
        """(N,) int64: the order in which epoch `epoch` visits the training images."""
        return self._permutation(epoch).clone()

    def batch(self, index: int) -> tuple[Tensor, Tensor]:
        """Batch `index` (counted over the whole run): ((B, C, H, W) float in [-1, 1], (B,) int64 labels)."""
        epoch, i = divmod(index, self.batches_per_epoch)
        idx = self._permutation(epoch)[i * self.batch_size : (i + 1) * self.batch_size]
        # move uint8 (4x fewer bytes than float32), convert on the device
        x = gather(self.images.train, idx).to(self.device)
        return to_float(x), self._labels[idx].to(self.device)

    def train_fixed(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """n fixed training images ((n, C, H, W) in [-1, 1], (n,) labels) on the CPU.

        Chosen by `seed` alone, not the training seed, so runs with different seeds see the same images.
        """
        idx = torch.randperm(self.size, generator=make_generator(seed, "train_fixed"))[:n]
        return to_float(gather(self.images.train, idx)), self._labels[idx]

    def held_out_labeled(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """min(n, M) test images ((n, C, H, W) in [-1, 1], (n,) labels) on the CPU, chosen by `seed` alone."""
        m = len(self.images.test)
        if m == 0 and n > 0:
            raise DataError(f"the test split of {self.images.cache_path} is empty")
        idx = torch.randperm(m, generator=make_generator(seed, "held_out"))[:n]
        labels = torch.from_numpy(np.asarray(self.images.test_labels, dtype=np.int64))
        return to_float(gather(self.images.test, idx)), labels[idx]

    def held_out(self, n: int, seed: int = 0) -> Tensor:
        """min(n, M) test images (n, C, H, W) in [-1, 1] on the CPU (the first of `held_out_labeled`)."""
        return self.held_out_labeled(n, seed)[0]
