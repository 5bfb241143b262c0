"""File formats behind `gankit.data.images`: IDX (MNIST), pickled CIFAR batches, folders of images.

Everything here turns files into uint8 arrays (N, C, H, W), or streams such arrays into an .npy, and
raises a one-line `DataError` naming the file when it cannot. The cache is `image_cache.py`, the
batching `image_source.py`.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import multiprocessing
import os
import pickle
import struct
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from tqdm import tqdm

from gankit.utils import GankitError, atomic_write, file_mode

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
CHUNK = 1024  # images per chunk when converting arrays or streaming decoded images to the cache
POOL_MIN = 256  # fewer files than this decode in-process: starting workers would cost more
SKIP_HINT = "set data.skip_bad=true to skip bad files"
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
CIFAR_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta")
MNIST_CLASSES = [
    f"{i} - {w}" for i, w in enumerate("zero one two three four five six seven eight nine".split())
]
FASHION_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


class DataError(GankitError):
    """Missing, empty, unreadable or unsuitable data."""


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The uint8 array of an IDX file (gzip or raw): magic 2051 -> (N, H, W) images, 2049 -> (N,) labels."""
    try:
        with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot read ({e}); delete it and download it again") from None
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        raise DataError(f"{path}: not an IDX file (magic number {found}, expected {magic})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim]) if len(data) >= 4 + 4 * ndim else ()
    expected = 4 + 4 * ndim + int(np.prod(dims))
    if len(dims) != ndim or len(data) != expected:
        raise DataError(
            f"{path}: {len(data)} bytes but its header {list(dims)} says {expected}; the file is truncated or corrupt"
        )
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def read_idx_pair(images: Path, labels: Path) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, H, W) uint8 images and (N,) int64 labels of an IDX image/label file pair."""
    x, y = read_idx(images, 2051), read_idx(labels, 2049)
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels")
    return x[:, None], y.astype(np.int64)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(n, 3, 32, 32) uint8 images and (n,) int64 labels of one pickled CIFAR-10 batch.

    Each row of b"data" holds 1024 red, then 1024 green, then 1024 blue values of a 32x32 image in
    row-major order, so a reshape to (n, 3, 32, 32) is exactly NCHW.
    """
    try:
        with open(path, "rb") as f:
            d = pickle.load(
                f, encoding="bytes"
            )  # the official format is a pickle; only read trusted files
        x, y = np.asarray(d[b"data"], dtype=np.uint8), np.asarray(d[b"labels"], dtype=np.int64)
    except Exception as e:  # noqa: BLE001 (any unpickling failure means the same thing to the user)
        raise DataError(f"{path}: not a CIFAR-10 batch ({type(e).__name__}: {e})") from None
    if x.ndim != 2 or x.shape[1] != 3072 or y.shape != (len(x),):
        raise DataError(f"{path}: data {x.shape} / labels {y.shape}, expected (n, 3072) / (n,)")
    return x.reshape(-1, 3, 32, 32), y


def read_cifar_names(path: Path) -> list[str]:
    """Class names from a CIFAR-10 batches.meta pickle."""
    try:
        with open(path, "rb") as f:
            return [n.decode() for n in pickle.load(f, encoding="bytes")[b"label_names"]]
    except Exception as e:  # noqa: BLE001
        raise DataError(f"{path}: not a CIFAR-10 batches.meta ({type(e).__name__}: {e})") from None


def convert_channels(x: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) uint8 with C in {1, 3} -> (N, channels, H, W): gray replicated, or RGB -> PIL's "L" luma."""
    if x.shape[1] == channels:
        return x
    if channels == 3:
        return np.repeat(x, 3, axis=1)
    w = np.array([299, 587, 114], dtype=np.uint32).reshape(1, 3, 1, 1)
    luma = ((x.astype(np.uint32) * w).sum(1, keepdims=True) + 500) // 1000  # ITU-R 601-2, rounded
    return luma.astype(np.uint8)


def resize(x: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) uint8 -> (N, C, size, size) uint8 by antialiased bilinear interpolation."""
    if x.shape[2:] == (size, size):
        return x
    x = torch.from_numpy(x.astype(np.float32))  # a writable copy (IDX arrays are read-only buffers)
    y = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True)
    return y.round_().clamp_(0, 255).to(torch.uint8).numpy()


def convert_chunks(x: np.ndarray, img_size: int, channels: int) -> Iterator[np.ndarray]:
    """Chunks of `x` (N, C, H, W) uint8 converted to (k, channels, img_size, img_size) uint8."""
    for i in range(0, len(x), CHUNK):
        c = x[i : i + CHUNK]
        if channels < c.shape[1]:  # reduce channels before resizing, expand after: less work
            yield resize(convert_channels(c, channels), img_size)
        else:
            yield convert_channels(resize(c, img_size), channels)


def list_images(folder: Path) -> list[str]:
    """Sorted relative POSIX paths of the images under `folder`, recursively; DataError if there are none.

    Hidden names (".DS_Store", macOS "._x.jpg" resource forks) are never images, so they are skipped.
    """
    out = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        rel_dir = Path(dirpath).relative_to(folder)
        for name in filenames:
            if not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS):
                out.append((rel_dir / name).as_posix())
    if not out:
        exts = " ".join(IMAGE_EXTENSIONS)
        raise DataError(f"no images in {folder} (looked for {exts}, any case, in all subfolders)")
    return sorted(out)


def hash_split(rels: list[str], test_fraction: float) -> list[bool]:
    """is_test per file: sha1(relative path) mapped to [0, 1) falls below `test_fraction`.

    A file's split never depends on the other files, so adding images keeps every existing
    assignment. With >= 2 files neither split is empty (the smallest / largest hash is moved).
    """
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"data.params.test_fraction must be in (0, 1), got {test_fraction}")
    h = [int(hashlib.sha1(r.encode()).hexdigest()[:15], 16) / 16**15 for r in rels]
    is_test = [x < test_fraction for x in h]
    if len(rels) >= 2 and not any(is_test):
        is_test[h.index(min(h))] = True
    if len(rels) >= 2 and all(is_test):
        is_test[h.index(max(h))] = False
    return is_test


def read_partition(path: Path) -> dict[str, str]:
    """CelebA's list_eval_partition.txt: {"000001.jpg": "0", ...} (0 train, 1 valid, 2 test)."""
    pairs = (line.split() for line in path.read_text().splitlines())
    return {p[0]: p[1] for p in pairs if len(p) >= 2}


def _to_mode(img: Image.Image, channels: int) -> Image.Image:
    """`img` as "L" (channels 1) or "RGB" (3). Transparent pixels are composited on black."""
    if img.mode.startswith("I;16") or img.mode in ("I", "F"):  # 16-bit / float gray -> 8-bit
        a = np.asarray(img, dtype=np.float64) / (1.0 if img.mode == "F" else 257.0)
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (0, 0, 0, 255)), rgba)
    return img.convert("L" if channels == 1 else "RGB")


def decode_image(job: tuple[str, int, int, int]) -> tuple[np.ndarray | None, str | None]:
    """Decode one image file to (channels, img_size, img_size) uint8: centre crop to a square, resize.

    Args:
        job: (path, img_size, channels, crop); crop 0 = the short side.

    Returns:
        (array, None), or (None, problem) for an unreadable or too-small file.
    """
    path, img_size, channels, crop = job
    try:
        with Image.open(path) as img:
            w, h = img.size
            side = crop or min(w, h)
            if min(w, h) < img_size or side > min(w, h):
                want = f"crop {crop}" if crop else f"img_size {img_size}"
                return None, f"image is {w}x{h}, too small for {want}"
            if img.format == "JPEG":
                # libjpeg decodes at 1/2, 1/4 or 1/8 scale almost for free: ask for the smallest
                # scale whose crop is still >= img_size (ceil division keeps it large enough)
                want = (-(-w * img_size // side), -(-h * img_size // side))
                img.draft("L" if channels == 1 else None, want)
            img.load()  # decode now, inside the try, so truncated files are caught here
            img = _to_mode(img, channels)
            scale = img.size[0] / w  # < 1 when draft mode decoded a reduced image
            s = side * scale
            left, top = (img.size[0] - s) / 2, (img.size[1] - s) / 2
            if s == img_size:  # no resampling: an exact crop
                l, t = (img.size[0] - img_size) // 2, (img.size[1] - img_size) // 2
                img = img.crop((l, t, l + img_size, t + img_size))
            else:
                box = (left, top, left + s, top + s)
                img = img.resize((img_size, img_size), Image.LANCZOS, box=box, reducing_gap=3.0)
            a = np.asarray(img, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 (PIL raises OSError, SyntaxError, ValueError, ... for bad files)
        return None, f"cannot read image ({type(e).__name__}: {e})"
    return (a[None] if a.ndim == 2 else a.transpose(2, 0, 1)), None


def decode_files(
    folder: Path,
    rels: list[str],
    img_size: int,
    channels: int,
    crop: int,
    skip_bad: bool,
    kept: list[int],
    skipped: list[str],
) -> Iterator[np.ndarray]:
    """Chunks (k, channels, img_size, img_size) uint8 of the images `rels` under `folder`, in order.

    Decodes in a pool of min(2, cpu_count) processes. Appends the indices of decoded files to `kept` and
    the bad files to `skipped` (skip_bad) or raises a DataError naming the first bad file.
    """
    jobs = [(str(folder / r), img_size, channels, crop) for r in rels]
    processes = min(2, os.cpu_count() or 1)
    # fork: workers start instantly (no re-import of torch); they only run PIL and numpy
    ctx = multiprocessing.get_context("fork" if os.name == "posix" else None)
    pool = ctx.Pool(processes) if processes > 1 and len(jobs) >= POOL_MIN else None
    try:
        results = pool.imap(decode_image, jobs, chunksize=64) if pool else map(decode_image, jobs)
        buf: list[np.ndarray] = []
        bar = tqdm(
            results, total=len(jobs), desc=f"decoding {folder.name}", unit="img", disable=None
        )
        for i, (a, problem) in enumerate(bar):
            if problem is not None:
                if not skip_bad:
                    raise DataError(f"{rels[i]} in {folder}: {problem}; {SKIP_HINT}")
                skipped.append(rels[i])
                continue
            kept.append(i)
            buf.append(a)
            if len(buf) == CHUNK:
                yield np.stack(buf)
                buf = []
        if buf:
            yield np.stack(buf)
    finally:
        if pool is not None:
            pool.terminate()


def preallocate(path: str | os.PathLike, start: int, length: int) -> None:
    """Reserve disk blocks for bytes [start, start + length) of the file `path`.

    A memory map over a sparse file that the disk cannot back kills the process with SIGBUS when a
    page is first written; allocating up front turns a full disk into an OSError (ENOSPC) instead.
    Where posix_fallocate is missing or unsupported by the filesystem, zeros are written.
    """
    if length <= 0:
        return
    with open(path, "r+b") as f:
        try:
            os.posix_fallocate(f.fileno(), start, length)
            return
        except AttributeError:  # not on macOS / Windows
            pass
        except OSError as e:
            if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                raise
        f.seek(start)
        zeros = bytes(min(length, 1 << 20))
        for i in range(0, length, len(zeros) or 1):
            f.write(zeros[: min(len(zeros), length - i)])
        f.flush()
        os.fsync(f.fileno())


def _open_npy(path: str, shape: tuple[int, ...]) -> np.memmap:
    """A new uint8 .npy of `shape` at `path`, memory-mapped for writing, its blocks allocated."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=shape)
    preallocate(path, out.offset, out.nbytes)
    return out


def write_npy(path: Path, n: int, item_shape: tuple[int, ...], chunks: Iterable[np.ndarray]) -> int:
    """Stream uint8 chunks (k, *item_shape) into an .npy at `path`, atomically; returns the row count.

    The file is a memory map allocated for `n` rows; when fewer arrive (skipped files) the rows written
    are copied into a file of the right size, chunk by chunk, so RAM use stays at one chunk either way.
    A full disk is a NoSpaceError naming `path`, raised before any row is written.
    """
    count = 0

    def write(tmp: str) -> None:
        nonlocal count
        out = _open_npy(tmp, (n, *item_shape))
        for chunk in chunks:
            out[count : count + len(chunk)] = chunk
            count += len(chunk)
        out.flush()
        del out
        if count < n:
            full = np.load(tmp, mmap_mode="r")
            fd, cut_tmp = tempfile.mkstemp(
                prefix=f"{Path(tmp).name}.", suffix=".tmp", dir=path.parent
            )
            os.close(fd)
            try:
                os.chmod(cut_tmp, file_mode())  # it replaces `tmp`, and so becomes `path`
                cut = _open_npy(cut_tmp, (count, *item_shape))
                for i in range(0, count, CHUNK):
                    j = min(i + CHUNK, count)
                    cut[i:j] = full[i:j]
                cut.flush()
                del cut, full
                os.replace(cut_tmp, tmp)
            except BaseException:
                Path(cut_tmp).unlink(missing_ok=True)
                raise

    atomic_write(path, write, size=n * int(np.prod(item_shape)) + 128)  # 128: the .npy header
    return count
