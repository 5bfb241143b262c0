"""The on-disk cache of decoded images: `{name}-{key}-train.npy` / `-test.npy` ((N, C, H, W)
uint8), `-labels.npz` and `-meta.json` under the cache directory, loaded back as an `ImageSet` of
read-only memory maps, so a 200k-image CelebA never has to fit in RAM and no image is decoded
twice. The key hashes the settings and the source files' names, sizes and mtimes, so changing
either builds a new cache.

Before anything is decoded, a cache that would not fit on its disk, or images smaller than
img_size, are one-line `DataError`s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from gankit.data import readers
from gankit.data.image_source import ImageSet
from gankit.data.readers import DataError
from gankit.utils import atomic_write, write_json

log = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the decoded pixels of any builder change
SIZE_PROBES = 16  # image headers read to check data.img_size before decoding a folder


def cached_set(
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


def array_set(
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

    return cached_set(name, settings, base, sources, cache_dir, build)


def files_set(
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
    return cached_set(name, settings, img_dir, sources, cache_dir, build)
