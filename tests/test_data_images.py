"""Image datasets: IDX / CIFAR / folder readers on tiny generated files, the uint8 cache, ImageSource.

Everything is written under tmp_path (data root and cache dir); tests marked `data` use the real
files under ../shared/datasets and skip when they are absent.
"""

from __future__ import annotations

import gzip
import inspect
import logging
import os
import pickle
import time
import typing
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit.data import images, readers
from gankit.data.image_source import ImageSet, ImageSource, to_float, to_uint8
from gankit.data.readers import DataError
from tests.conftest import make_celeba, make_cifar, make_mnist, save, write_idx

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
rng = np.random.default_rng(0)


def gray(value: int, size: tuple[int, int] = (20, 20)) -> Image.Image:
    return Image.new("L", size, value)


def values(x: np.ndarray) -> list[int]:
    """The (rounded) constant value of each image of (N, C, H, W)."""
    return [round(float(v)) for v in x.reshape(len(x), -1).mean(1)]


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# ---- MNIST / Fashion-MNIST (IDX)


@pytest.mark.parametrize("gz", [True, False])
def test_mnist_round_trip_exact(tmp_path, gz):
    tx, ty, vx, vy = make_mnist(tmp_path / "data", gz=gz)
    before = sorted(p for p in (tmp_path / "data").rglob("*"))
    s = images.mnist(str(tmp_path / "data"), download=False, cache_dir=str(tmp_path / "cache"))
    assert isinstance(s.train, np.memmap) and isinstance(s.test, np.memmap)
    assert s.train.shape == (6, 1, 28, 28) and s.train.dtype == np.uint8
    np.testing.assert_array_equal(s.train[:, 0], tx)
    np.testing.assert_array_equal(s.test[:, 0], vx)
    assert s.train_labels.dtype == np.int64
    np.testing.assert_array_equal(s.train_labels, ty)
    np.testing.assert_array_equal(s.test_labels, vy)
    assert s.num_classes == 10 and s.classes[0] == "0 - zero" and s.classes[9] == "9 - nine"
    assert s.skipped == [] and Path(s.cache_path).parent == tmp_path / "cache"
    assert sorted(p for p in (tmp_path / "data").rglob("*")) == before  # nothing written under root


def test_fashion_mnist_layout_and_classes(tmp_path):
    tx, *_ = make_mnist(tmp_path, "FashionMNIST")
    s = images.fashion_mnist(str(tmp_path), download=False, cache_dir=str(tmp_path / "c"))
    np.testing.assert_array_equal(s.train[:, 0], tx)
    assert s.classes[0] == "T-shirt/top" and s.classes[-1] == "Ankle boot"
    assert "fashion_mnist-" in Path(s.cache_path).name


@pytest.mark.parametrize("damage", ["magic", "truncated", "not_gzip", "count"])
def test_corrupt_idx_names_the_file(tmp_path, damage):
    make_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    bad = raw / "train-images-idx3-ubyte.gz"
    data = gzip.decompress(bad.read_bytes())
    if damage == "magic":
        bad.write_bytes(gzip.compress(b"\x00\x00\x08\x01" + data[4:]))
    elif damage == "truncated":
        bad.write_bytes(gzip.compress(data[:-10]))
    elif damage == "not_gzip":
        bad.write_bytes(b"<html>404</html>")
    else:  # 5 labels for 6 images
        bad = raw / "train-labels-idx1-ubyte.gz"
        write_idx(raw / "train-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(DataError) as e:
        images.mnist(str(tmp_path), download=False, cache_dir=str(tmp_path / "c"))
    assert str(bad) in one_line(e)
    assert not list((tmp_path / "c").glob("*.npy"))  # no half-built cache left behind


def test_missing_mnist_error_says_where_and_what(tmp_path):
    with pytest.raises(DataError) as e:
        images.mnist(str(tmp_path), download=False, cache_dir=str(tmp_path / "c"))
    msg = one_line(e)
    assert str(tmp_path / "MNIST" / "raw") in msg and "data.download" in msg
    assert "train-images-idx3-ubyte" in msg and "t10k-labels-idx1-ubyte" in msg


def test_failed_download_falls_through_to_the_error(tmp_path, monkeypatch):
    import torchvision

    calls = []

    def offline(root, download):
        calls.append((root, download))
        raise RuntimeError("no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="MNIST not found"):
        images.mnist(str(tmp_path), download=True, cache_dir=str(tmp_path / "c"))
    assert calls == [(str(tmp_path), True)]


@pytest.mark.parametrize("size", [32, 64])
def test_resize_shapes_and_constant_images(tmp_path, size):
    make_mnist(tmp_path)
    raw = tmp_path / "MNIST" / "raw"
    x = np.full((3, 28, 28), 77, np.uint8)
    x[1:] = 0
    x[2, :, 14:] = 255  # a vertical edge: bilinear keeps the halves ordered
    write_idx(raw / "train-images-idx3-ubyte", x)
    write_idx(raw / "train-labels-idx1-ubyte", np.arange(3, dtype=np.uint8))
    s = images.mnist(str(tmp_path), img_size=size, download=False, cache_dir=str(tmp_path / "c"))
    assert s.train.shape == (3, 1, size, size) and s.test.shape == (4, 1, size, size)
    assert (s.train[0] == 77).all() and (s.train[1] == 0).all()
    assert s.train[2, 0, :, 0].max() == 0 and s.train[2, 0, :, -1].min() == 255


def test_channels_gray_to_rgb_replicates(tmp_path):
    tx, *_ = make_mnist(tmp_path)
    s = images.mnist(str(tmp_path), channels=3, download=False, cache_dir=str(tmp_path / "c"))
    assert s.train.shape == (6, 3, 28, 28)
    for c in range(3):
        np.testing.assert_array_equal(s.train[:, c], tx)


def test_channels_rgb_to_gray_uses_luma(tmp_path):
    batches, _ = make_cifar(tmp_path)
    s = images.cifar10(str(tmp_path), channels=1, download=False, cache_dir=str(tmp_path / "c"))
    rgb = batches[0][b"data"].reshape(-1, 3, 32, 32).astype(np.int64)
    want = (299 * rgb[:, 0] + 587 * rgb[:, 1] + 114 * rgb[:, 2] + 500) // 1000
    np.testing.assert_array_equal(s.train[:2, 0], want)
    pil = np.asarray(Image.fromarray(rgb[0].transpose(1, 2, 0).astype(np.uint8)).convert("L"))
    assert np.abs(pil.astype(int) - s.train[0, 0]).max() <= 1  # same weights as PIL's "L"


@pytest.mark.parametrize("channels", [2, 4, -1])
def test_invalid_channels_lists_choices(tmp_path, channels):
    make_mnist(tmp_path)
    with pytest.raises(DataError, match="choose from: 1, 3"):
        images.mnist(
            str(tmp_path), channels=channels, download=False, cache_dir=str(tmp_path / "c")
        )


# ---- CIFAR-10


def test_cifar_round_trip_plane_order(tmp_path):
    batches, names = make_cifar(tmp_path)
    s = images.cifar10(str(tmp_path), download=False, cache_dir=str(tmp_path / "c"))
    assert s.train.shape == (10, 3, 32, 32) and s.test.shape == (2, 3, 32, 32)
    data = np.concatenate([b[b"data"] for b in batches[:5]])
    # pixel (c, y, x) of image i is byte c*1024 + y*32 + x of its row: R plane, G plane, B plane
    for i, c, y, x in [(0, 0, 0, 0), (3, 1, 5, 7), (9, 2, 31, 30), (4, 2, 0, 31)]:
        assert s.train[i, c, y, x] == data[i, c * 1024 + y * 32 + x]
    np.testing.assert_array_equal(s.train.reshape(10, -1), data)
    np.testing.assert_array_equal(s.test.reshape(2, -1), batches[5][b"data"])
    np.testing.assert_array_equal(s.train_labels, sum((b[b"labels"] for b in batches[:5]), []))
    np.testing.assert_array_equal(s.test_labels, batches[5][b"labels"])
    assert s.classes == names and s.num_classes == 10


def test_missing_cifar_names_dir_and_files(tmp_path):
    make_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").unlink()
    with pytest.raises(DataError) as e:
        images.cifar10(str(tmp_path), download=False, cache_dir=str(tmp_path / "c"))
    msg = one_line(e)
    assert str(tmp_path / "cifar-10-batches-py") in msg and "lacks test_batch" in msg


def test_corrupt_cifar_batch_names_the_file(tmp_path):
    make_cifar(tmp_path)
    bad = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    bad.write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match="data_batch_3"):
        images.cifar10(str(tmp_path), download=False, cache_dir=str(tmp_path / "c"))


# ---- folders of images


def make_classes(top: Path) -> None:
    """cat/ (value 60) and dog/ (value 200) in mixed modes and sizes."""
    save(top / "cat" / "a.png", gray(60, (20, 20)))
    save(top / "cat" / "b.PNG", Image.new("RGBA", (24, 30), (60, 60, 60, 255)))
    p = Image.new("P", (30, 24), 0)
    p.putpalette([60, 60, 60] + [0] * 765)
    save(top / "cat" / "deep" / "c.png", p)
    save(top / "dog" / "d.png", Image.new("RGB", (20, 20), (200, 200, 200)))
    save(top / "dog" / "e.bmp", gray(200, (17, 23)))
    save(top / "dog" / "f.png", Image.fromarray(np.full((20, 20), 200 * 257, np.uint16)))  # I;16
    (top / "dog" / "notes.txt").write_text("not an image")
    save(top / "dog" / ".hidden.png", gray(0))


def test_folder_classes_modes_and_sizes(tmp_path):
    make_classes(tmp_path / "imgs")
    s = images.folder(path=str(tmp_path / "imgs"), img_size=16, cache_dir=str(tmp_path / "c"))
    assert s.classes == ["cat", "dog"] and s.num_classes == 2
    assert len(s.train) + len(s.test) == 6 and len(s.test) >= 1
    assert s.train.shape[1:] == (3, 16, 16)
    x = np.concatenate([s.train, s.test])
    y = np.concatenate([s.train_labels, s.test_labels])
    assert values(x) == [[60, 200][label] for label in y]  # labels aligned with their images
    assert sorted(y.tolist()) == [0, 0, 0, 1, 1, 1]
    g = images.folder(
        path=str(tmp_path / "imgs"), img_size=16, channels=1, cache_dir=str(tmp_path / "c")
    )
    assert g.train.shape[1:] == (1, 16, 16) and g.cache_path != s.cache_path


def test_folder_transparency_is_composited_on_black(tmp_path):
    save(tmp_path / "i" / "clear.png", Image.new("RGBA", (16, 16), (255, 255, 255, 0)))
    save(tmp_path / "i" / "half.png", Image.new("LA", (16, 16), (200, 128)))
    p = Image.new("P", (16, 16), 1)
    p.putpalette([0, 0, 0, 250, 250, 250] + [0] * 762)
    save(tmp_path / "i" / "p.png", p, transparency=1)
    s = images.folder(path=str(tmp_path / "i"), img_size=16, cache_dir=str(tmp_path / "c"))
    x = np.concatenate([s.train, s.test])
    assert sorted(values(x)) == [0, 0, 100]


def test_folder_without_class_dirs_is_unlabelled(tmp_path):
    save(tmp_path / "flat" / "a.png", gray(10))
    save(tmp_path / "flat" / "b.png", gray(20))
    save(tmp_path / "flat" / "sub" / "c.png", gray(30))  # mixed: not every image is in a subdir
    save(tmp_path / "one" / "only" / "a.jpg", gray(10))
    save(tmp_path / "one" / "only" / "b.jpg", gray(10))  # a single subdir is not a class split
    for top in ("flat", "one"):
        s = images.folder(path=str(tmp_path / top), img_size=16, cache_dir=str(tmp_path / "c"))
        assert s.num_classes == 0 and s.classes == [] and not s.train_labels.any()


def test_folder_split_is_deterministic_and_stable(tmp_path):
    top = tmp_path / "imgs"
    for i in range(24):
        save(top / f"{i:02d}.png", gray(10 * i, (8, 8)))

    def split(cache: str) -> tuple[set[int], set[int]]:
        s = images.folder(
            path=str(top), img_size=8, test_fraction=0.25, cache_dir=str(tmp_path / cache)
        )
        return set(values(s.train)), set(values(s.test))

    train, test = split("c1")
    assert len(train) + len(test) == 24 and train and test
    assert split("c2") == (train, test)  # rebuilt from scratch: same split
    save(top / "new.png", gray(255, (8, 8)))
    train2, test2 = split("c3")
    assert train <= train2 and test <= test2  # a new file never moves the others


def test_hash_split_properties():
    names = [f"img_{i}.jpg" for i in range(2000)]
    is_test = readers.hash_split(names, 0.1)
    assert 150 < sum(is_test) < 250
    assert readers.hash_split(names + ["extra.jpg"], 0.1)[:2000] == is_test
    assert readers.hash_split(["a", "b"], 1e-9).count(True) == 1  # never an empty test split
    assert readers.hash_split(["a", "b"], 1 - 1e-9).count(True) == 1  # nor an empty train split
    with pytest.raises(DataError, match="test_fraction"):
        readers.hash_split(names, 1.0)


def test_cache_hit_decodes_nothing(tmp_path, monkeypatch):
    make_classes(tmp_path / "imgs")
    make_mnist(tmp_path / "data")
    kw = {"img_size": 16, "cache_dir": str(tmp_path / "c")}
    first = images.folder(path=str(tmp_path / "imgs"), **kw)
    m1 = images.mnist(str(tmp_path / "data"), download=False, cache_dir=kw["cache_dir"])

    def boom(*args, **kwargs):
        raise AssertionError("decoded on a cache hit")

    for name in ("decode_image", "decode_files", "read_idx", "read_idx_pair", "write_npy"):
        monkeypatch.setattr(readers, name, boom)
    again = images.folder(path=str(tmp_path / "imgs"), **kw)
    np.testing.assert_array_equal(again.train, first.train)
    assert again.classes == first.classes and again.cache_path == first.cache_path
    m2 = images.mnist(str(tmp_path / "data"), download=False, cache_dir=kw["cache_dir"])
    np.testing.assert_array_equal(m2.train, m1.train)
    np.testing.assert_array_equal(m2.train_labels, m1.train_labels)


def test_cache_key_follows_settings_and_files(tmp_path):
    make_classes(tmp_path / "imgs")
    kw = {"path": str(tmp_path / "imgs"), "cache_dir": str(tmp_path / "c")}
    a = images.folder(img_size=16, **kw)
    b = images.folder(img_size=8, **kw)
    assert a.cache_path != b.cache_path and b.train.shape[2:] == (8, 8)
    assert images.folder(img_size=16, **kw).cache_path == a.cache_path
    f = tmp_path / "imgs" / "cat" / "a.png"
    save(f, gray(61, (20, 20)))
    os.utime(f, ns=(time.time_ns(), time.time_ns() + 10**9))  # a changed file, whatever the clock
    c = images.folder(img_size=16, **kw)
    assert c.cache_path != a.cache_path and 61 in values(np.concatenate([c.train, c.test]))
    names = sorted(p.name for p in (tmp_path / "c").iterdir())
    assert all(n.startswith("folder-") for n in names) and len(names) == 3 * 4
    assert all(n.endswith(("-train.npy", "-test.npy", "-labels.npz", "-meta.json")) for n in names)


def test_env_vars_give_root_and_cache(tmp_path, monkeypatch):
    make_mnist(tmp_path / "d")
    monkeypatch.setenv("GANKIT_DATA", str(tmp_path / "d"))
    monkeypatch.setenv("GANKIT_CACHE", str(tmp_path / "envcache"))
    s = images.mnist(download=False)
    assert Path(s.cache_path).parent == tmp_path / "envcache"


def test_folder_path_errors(tmp_path):
    with pytest.raises(DataError, match="data.params.path"):
        images.folder(cache_dir=str(tmp_path / "c"))
    with pytest.raises(DataError, match="does not exist"):
        images.folder(path=str(tmp_path / "nope"), cache_dir=str(tmp_path / "c"))
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "readme.txt").write_text("x")
    with pytest.raises(DataError) as e:
        images.folder(path=str(tmp_path / "empty"), cache_dir=str(tmp_path / "c"))
    assert "no images in" in one_line(e) and ".png" in str(e.value) and ".jpeg" in str(e.value)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_names_the_file(tmp_path, fmt):
    top = tmp_path / "imgs"
    save(top / "a" / "ok.png", gray(1))
    noise = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
    bad = save(top / "b" / f"bad.{fmt.lower()}", noise, format=fmt)
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    with pytest.raises(DataError) as e:
        images.folder(path=str(top), img_size=16, cache_dir=str(tmp_path / "c"))
    msg = one_line(e)
    assert f"b/bad.{fmt.lower()}" in msg and "data.skip_bad=true" in msg
    assert not list((tmp_path / "c").glob("*.npy"))


def test_too_small_image_names_file_and_size(tmp_path):
    save(tmp_path / "i" / "big.png", gray(1, (20, 20)))
    save(tmp_path / "i" / "small.png", gray(1, (10, 12)))
    with pytest.raises(DataError) as e:
        images.folder(path=str(tmp_path / "i"), img_size=16, cache_dir=str(tmp_path / "c"))
    assert "small.png" in one_line(e) and "10x12" in str(e.value)


def test_skip_bad_counts_and_warns(tmp_path, caplog):
    top = tmp_path / "imgs"
    for i in range(6):
        save(top / f"ok{i}.png", gray(10 * i))
    save(top / "tiny.png", gray(1, (4, 4)))
    (top / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with caplog.at_level(logging.WARNING, logger="gankit.data.image_cache"):
        s = images.folder(path=str(top), img_size=16, skip_bad=True, cache_dir=str(tmp_path / "c"))
    assert s.skipped == ["broken.jpg", "tiny.png"]
    assert len(s.train) + len(s.test) == 6 and len(s.train_labels) == len(s.train)
    assert sorted(values(np.concatenate([s.train, s.test]))) == [0, 10, 20, 30, 40, 50]
    assert "skipped 2 bad files" in caplog.text
    assert (
        images.folder(
            path=str(top), img_size=16, skip_bad=True, cache_dir=str(tmp_path / "c")
        ).skipped
        == s.skipped
    )


def test_write_npy_cuts_to_the_rows_written(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "CHUNK", 2)  # several chunks in the copy
    rows = np.arange(5 * 6, dtype=np.uint8).reshape(5, 1, 2, 3)
    n = readers.write_npy(tmp_path / "x.npy", 8, (1, 2, 3), iter([rows[:3], rows[3:]]))
    out = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert n == 5 and out.shape == (5, 1, 2, 3)
    np.testing.assert_array_equal(out, rows)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]  # no temp files left


def test_everything_skipped_is_an_error(tmp_path):
    save(tmp_path / "i" / "a.png", gray(1, (4, 4)))
    save(tmp_path / "i" / "b.png", gray(1, (5, 5)))
    with pytest.raises(DataError, match="no usable training images"):
        images.folder(
            path=str(tmp_path / "i"), img_size=16, skip_bad=True, cache_dir=str(tmp_path / "c")
        )


def test_parallel_decode_keeps_order(tmp_path, monkeypatch):
    monkeypatch.setattr(readers, "POOL_MIN", 4)  # use the worker pool even for a few files
    for i in range(40):
        save(tmp_path / "i" / f"{i:02d}.png", gray(5 * i, (8, 8)))
    s = images.folder(path=str(tmp_path / "i"), img_size=8, cache_dir=str(tmp_path / "c"))
    assert values(s.train) == sorted(values(s.train)) and len(s.train) + len(s.test) == 40


# ---- CelebA


def test_celeba_official_partition_and_draft_decode(tmp_path):
    img_dir = make_celeba(tmp_path)
    parts = {1: 0, 2: 0, 3: 1, 4: 2, 5: 2, 6: 0}
    (img_dir.parent / "list_eval_partition.txt").write_text(
        "".join(f"{i:06d}.jpg {p}\n" for i, p in parts.items())
    )
    s = images.celeba(str(tmp_path), img_size=16, download=False, cache_dir=str(tmp_path / "c"))
    assert s.train.shape == (4, 3, 16, 16) and s.test.shape == (2, 3, 16, 16)
    assert [round(v / 40) for v in values(s.test)] == [4, 5] and s.num_classes == 0
    assert [round(v / 40) for v in values(s.train)] == [1, 2, 3, 6]


def test_celeba_crop_and_fraction_split(tmp_path):
    img_dir = make_celeba(tmp_path, n=5)
    kw = {"path": str(img_dir), "img_size": 16, "cache_dir": str(tmp_path / "c")}
    s = images.celeba(crop=80, test_fraction=0.4, **kw)
    assert len(s.train) + len(s.test) == 5 and len(s.test) >= 1
    with pytest.raises(DataError, match="crop 8 is smaller"):
        images.celeba(crop=8, **kw)
    with pytest.raises(DataError, match="100x120, too small for crop 101"):
        images.celeba(crop=101, **kw)


def test_celeba_missing(tmp_path):
    with pytest.raises(DataError) as e:
        images.celeba(str(tmp_path), download=False, cache_dir=str(tmp_path / "c"))
    assert "img_align_celeba" in one_line(e) and "data.params.path" in str(e.value)


def test_builders_annotate_every_parameter():
    """The config system coerces data.params with typing.get_type_hints: every type must be real."""
    for builder in (
        images.mnist,
        images.fashion_mnist,
        images.cifar10,
        images.celeba,
        images.folder,
    ):
        hints = typing.get_type_hints(builder)
        params = list(inspect.signature(builder).parameters)
        assert params[:6] == list(images.COMMON_OPTIONS)
        assert all(hints[p] in (str, int, float, bool) for p in params), builder.__name__


# ---- ImageSource


def tiny_set(n: int = 12, m: int = 5) -> ImageSet:
    """Image i is constant 10 * i (so pixels identify it) with label i % 3."""
    train = np.repeat(np.arange(n, dtype=np.uint8)[:, None, None, None] * 10, 4, 2).repeat(4, 3)
    test = 200 + np.repeat(np.arange(m, dtype=np.uint8)[:, None, None, None], 4, 2).repeat(4, 3)
    return ImageSet(
        train=train.repeat(3, 1),
        train_labels=np.arange(n) % 3,
        test=test.repeat(3, 1),
        test_labels=np.arange(m) % 2,
        num_classes=3,
        classes=["a", "b", "c"],
        skipped=[],
        cache_path="memory",
    )


def ids(x: torch.Tensor) -> list[int]:
    return (to_uint8(x)[:, 0, 0, 0].long() // 10).tolist()


def test_image_source_batches():
    src = ImageSource(tiny_set(), seed=3, batch_size=4)
    assert src.shape == (3, 4, 4) and src.size == 12 and src.batches_per_epoch == 3
    assert src.num_classes == 3 and src.classes == ["a", "b", "c"]
    x, y = src.batch(0)
    assert x.shape == (4, 3, 4, 4) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    assert [i % 3 for i in ids(x)] == y.tolist()  # labels aligned
    for epoch in range(3):
        seen = sum((ids(src.batch(epoch * 3 + i)[0]) for i in range(3)), [])
        assert sorted(seen) == list(range(12))  # every image once per epoch
        assert seen == src.epoch_indices(epoch).tolist()
    assert src.epoch_indices(0).tolist() != src.epoch_indices(1).tolist()


def test_image_source_is_a_function_of_seed_and_index():
    a, b = ImageSource(tiny_set(), 7, 4), ImageSource(tiny_set(), 7, 4)
    for i in (5, 0, 9, 5):  # any order of access
        xa, ya = a.batch(i)
        xb, yb = b.batch(i)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    other = ImageSource(tiny_set(), 8, 4)
    assert any(ids(a.batch(i)[0]) != ids(other.batch(i)[0]) for i in range(3))


def test_image_source_drop_last_and_too_big_batch():
    src = ImageSource(tiny_set(n=10), 0, 4)
    assert src.batches_per_epoch == 2
    assert len(set(ids(src.batch(0)[0]) + ids(src.batch(1)[0]))) == 8
    with pytest.raises(DataError, match="batch_size 11"):
        ImageSource(tiny_set(n=10), 0, 11)


def test_image_source_to_device():
    src = ImageSource(tiny_set(), 0, 4).to(
        "meta"
    )  # a device without data: only placement is checked
    x, y = src.batch(0)
    assert x.device.type == "meta" and y.device.type == "meta" and x.dtype == torch.float32


def test_train_fixed_and_held_out():
    src = ImageSource(tiny_set(), 0, 4)
    x, y = src.train_fixed(5, seed=1)
    assert x.shape == (5, 3, 4, 4) and [i % 3 for i in ids(x)] == y.tolist()
    assert torch.equal(ImageSource(tiny_set(), 99, 4).train_fixed(5, seed=1)[0], x)
    assert not torch.equal(src.train_fixed(5, seed=2)[0], x)
    h = src.held_out(3, seed=1)
    assert h.shape == (3, 3, 4, 4) and h.device.type == "cpu" and h.min() > 0.5  # test images
    assert torch.equal(src.held_out(3, seed=1), h)
    assert src.held_out(100).shape[0] == 5  # capped at M
    hx, hy = src.held_out_labeled(5)
    assert ((to_uint8(hx)[:, 0, 0, 0].long() - 200) % 2).tolist() == hy.tolist()


def test_float_uint8_round_trip():
    u = torch.arange(256, dtype=torch.uint8)
    f = to_float(u)
    assert f[0] == -1 and f[-1] == 1 and f.dtype == torch.float32
    assert torch.equal(to_uint8(f), u)
    assert to_uint8(torch.tensor([-3.0, 3.0])).tolist() == [0, 255]


def test_stacked_mnist_stacks_three_digits_and_labels_them(tmp_path):
    tx, ty, vx, vy = make_mnist(tmp_path, n=(20, 10))
    kw = dict(download=False, cache_dir=str(tmp_path / "c"), n_train=50, n_test=7)
    s = images.stacked_mnist(str(tmp_path), **kw)
    assert s.train.shape == (50, 3, 28, 28) and s.test.shape == (7, 3, 28, 28)
    assert s.num_classes == 1000 and s.classes[42] == "042"
    for x, y, src_x, src_y in ((s.train, s.train_labels, tx, ty), (s.test, s.test_labels, vx, vy)):
        for img, label in zip(
            x, y, strict=True
        ):  # each channel is one source digit, the label spells them
            digits = []
            for c in range(3):
                match = np.flatnonzero((src_x == img[c]).all(axis=(1, 2)))
                assert len(match) >= 1
                digits.append(int(src_y[match[0]]))
            assert label == 100 * digits[0] + 10 * digits[1] + digits[2]
    again = images.stacked_mnist(str(tmp_path), **{**kw, "cache_dir": str(tmp_path / "c2")})
    assert np.array_equal(
        again.train, s.train
    )  # the same stacks for every build: a function of seed
    other = images.stacked_mnist(str(tmp_path), **{**kw, "seed": 1})
    assert not np.array_equal(other.train, s.train)
    with pytest.raises(DataError, match="3 channels"):
        images.stacked_mnist(str(tmp_path), channels=1, **kw)


def test_image_source_on_cached_memmap(tmp_path):
    make_mnist(tmp_path, n=(8, 3))
    s = images.mnist(str(tmp_path), img_size=32, download=False, cache_dir=str(tmp_path / "c"))
    x, y = ImageSource(s, 0, 4).batch(1)
    assert x.shape == (4, 1, 32, 32) and y.shape == (4,)


# ---- real data (skips when ../shared/datasets is absent)


@pytest.mark.data
@pytest.mark.skipif(not (SHARED / "MNIST" / "raw").exists(), reason="no shared MNIST")
def test_real_mnist(tmp_path):
    t0 = time.perf_counter()
    s = images.mnist(str(SHARED), download=False, cache_dir=str(tmp_path))
    built = time.perf_counter() - t0
    assert s.train.shape == (60000, 1, 28, 28) and s.test.shape == (10000, 1, 28, 28)
    assert s.train_labels[0] == 5 and s.classes[5] == "5 - five"
    assert np.bincount(s.test_labels).tolist()[:2] == [980, 1135]
    assert built < 30
    x, _ = ImageSource(s, 0, 64).batch(0)
    assert x.shape == (64, 1, 28, 28)


@pytest.mark.data
@pytest.mark.skipif(not (SHARED / "celeba_sample").exists(), reason="no shared celeba_sample")
def test_real_celeba_sample(tmp_path):
    s = images.celeba(path=str(SHARED / "celeba_sample"), download=False, cache_dir=str(tmp_path))
    assert s.train.shape[1:] == (3, 64, 64) and len(s.train) + len(s.test) == 3974
    assert 0.02 < len(s.test) / 3974 < 0.08 and s.skipped == []
    assert 60 < s.train[:64].mean() < 200  # faces, not black frames
