"""Faults around the happy path: the quickstart import, file modes, killed and out-of-space writes,
foreign or damaged checkpoints, read-only run directories, image caches that cannot fit, broken
symlinks, and restarting a run killed before its first checkpoint."""

from __future__ import annotations

import errno
import logging
import os
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gankit import utils
from gankit.checkpoint import CheckpointError, load_checkpoint, pair_entry, save_checkpoint
from gankit.cli import main
from gankit.config import load_config
from gankit.data import images, readers
from gankit.data.images import DataError
from gankit.evaluate import eval_run
from gankit.factory import load_generator
from gankit.rundir import check_new_run_dir
from gankit.utils import GankitError, NoSpaceError, atomic_save, atomic_write, write_json
from tests.conftest import TINY

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def ring(tmp_path_factory):
    """A finished toy run (8 steps), trained through the quickstart's `from gankit import train`."""
    from gankit import train

    run = tmp_path_factory.mktemp("faults") / "ring"
    train(load_config("toy_ring", TINY), run)
    return run


def _one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


# ---- 1. the quickstart import


def test_quickstart_import_gives_a_callable_train_and_import_gankit_stays_light():
    code = (
        "import gankit, sys, inspect\n"
        "assert 'torch' not in sys.modules, 'import gankit imported torch'\n"
        "from gankit import load_config, train, load_generator\n"
        "assert callable(train) and callable(load_generator)\n"
        "assert inspect.isfunction(train), train\n"
        "assert list(inspect.signature(train).parameters)[:2] == ['cfg', 'run_dir']\n"
        "import gankit.trainer as module\n"
        "assert module.train is train\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_train_is_the_function_when_the_trainer_module_was_imported_first(ring):
    import gankit.trainer
    from gankit import train

    assert train is gankit.trainer.train  # the module is gankit.trainer: no name clash
    assert (ring / "checkpoints" / "last.pt").is_file()  # the fixture called it


# ---- 2. file modes


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_atomically_written_files_follow_the_umask(tmp_path, umask, mode):
    from gankit.plots import save_grid

    old = os.umask(umask)
    try:
        paths = [
            write_json({"a": 1}, tmp_path / "env.json"),
            atomic_save({"w": torch.zeros(2)}, tmp_path / "last.pt"),
            save_grid(torch.zeros(4, 1, 4, 4), tmp_path / "grid.png"),
        ]
        rows = np.zeros((2, 1, 2, 2), np.uint8)  # 2 of 3 rows: the cut copy path of write_npy
        readers.write_npy(tmp_path / "x.npy", 3, (1, 2, 2), iter([rows]))
        paths.append(tmp_path / "x.npy")
    finally:
        os.umask(old)
    assert {p.name: p.stat().st_mode & 0o777 for p in paths} == {p.name: mode for p in paths}


# ---- 3. temp files of killed saves


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names no process
    return child.pid


def test_save_checkpoint_removes_temp_files_of_killed_saves(tmp_path, ring):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    stale = [
        ckpt_dir / f".last.pt.{_dead_pid()}.ab12cd34.tmp",  # its writer is gone
        ckpt_dir / ".last.pt.x9y8z7w6.tmp",  # legacy name without a pid
        ckpt_dir / f".last.pt.{os.getpid()}.qwertyui.tmp",  # ours, but no save in progress
    ]
    kept = [
        ckpt_dir / f".last.pt.{os.getppid()}.livelive.tmp",  # a live process's: maybe in use
        ckpt_dir / f".step_000004.pt.{_dead_pid()}.ab12cd34.tmp",  # another target's
        ckpt_dir / "notes.tmp",
    ]
    for p in stale + kept:
        p.write_bytes(b"partial")
    ckpt = load_checkpoint(ring / "checkpoints" / "last.pt")
    G = torch.nn.Linear(2, 2)
    entry = pair_entry(None, 1, {"G": G, "D": G}, {}, {})
    save_checkpoint(ckpt_dir / "last.pt", step=1, config=ckpt["config"], pairs=[entry],
                    data_shape=[2])  # fmt: skip
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    assert load_checkpoint(ckpt_dir / "last.pt")["step"] == 1


# ---- 4. out of space


@pytest.mark.parametrize(
    "error",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1984 vs 1856"),
    ],
)
def test_a_full_disk_keeps_the_previous_file_and_says_so(tmp_path, monkeypatch, error):
    target = tmp_path / "last.pt"
    target.write_bytes(b"previous checkpoint")

    def fail(obj, f):
        Path(f).write_bytes(b"half")
        raise error

    monkeypatch.setattr(torch, "save", fail)
    with pytest.raises(NoSpaceError) as e:
        atomic_save({"w": torch.zeros(3 * 10**6, dtype=torch.uint8)}, target)
    msg = _one_line(e)
    assert (
        msg
        == f"no space left on device writing {target} (need about 3 MB free; the previous file is intact)"
    )
    assert target.read_bytes() == b"previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # the temp file is gone


def test_other_write_errors_pass_through(tmp_path):
    def fail(tmp):
        raise OSError(errno.EIO, "Input/output error")

    with pytest.raises(OSError, match="Input/output error"):
        atomic_write(tmp_path / "x.json", fail)

    def full(tmp):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(NoSpaceError, match=r"x\.json was not created"):
        atomic_write(tmp_path / "x.json", full)
    assert list(tmp_path.iterdir()) == []


# ---- 5. checkpoint messages


def _saved(tmp_path: Path, obj, name: str = "c.pt") -> Path:
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def test_foreign_files_are_not_gankit_checkpoints_and_torch_advice_is_never_shown(tmp_path):
    bad = tmp_path / "random.pt"
    bad.write_bytes(b"definitely not a checkpoint")
    cases = {
        bad: f"{bad}: not a readable gankit checkpoint (not a PyTorch file)",
        _saved(tmp_path, torch.nn.Linear(2, 2), "module.pt"): "is not a gankit checkpoint (it "
        "pickles the Python object torch.nn.modules.linear.Linear",
        _saved(tmp_path, torch.zeros(2), "tensor.pt"): "is not a gankit checkpoint (it holds a "
        "Tensor, not a dict)",
        _saved(tmp_path, {"weight": torch.zeros(2)}, "sd.pt"): "is not a gankit checkpoint (no "
        "'format' or 'config'; keys: weight)",
    }
    for path, expected in cases.items():
        with pytest.raises(CheckpointError) as e:
            load_checkpoint(path)
        msg = _one_line(e)
        assert expected in msg and msg.startswith(str(path))
        assert "weights_only" not in msg


def test_missing_and_mistyped_entries_name_the_entry(tmp_path, ring):
    ckpt = torch.load(ring / "checkpoints" / "last.pt", weights_only=True)
    (entry,) = ckpt["pairs"]
    no_g = {k: v for k, v in entry.items() if k != "G"}
    cases = [
        ({**ckpt, "pairs": [no_g]}, r": checkpoint has no 'pairs\[key=None\].G' \(keys: key, "),
        ({**ckpt, "format": "1"}, r": bad 'format' '1' \(expected an integer"),
        ({**ckpt, "step": "8"}, r": bad 'step' '8' \(expected an integer >= 0\)"),
        ({**ckpt, "pairs": [{**entry, "D": None}]},
         r": bad 'pairs\[key=None\].D' \(a NoneType, not a state dict of tensors\)"),
        ({**ckpt, "pairs": {}}, r": bad 'pairs' \(expected a non-empty list of pair entries\)"),
        ({k: v for k, v in ckpt.items() if k != "data_shape"}, r": checkpoint has no 'data_shape'"),
    ]  # fmt: skip
    # format 1 (gankit before the one checkpoint layout): flat keys, named as the file names them
    old = {"format": 1, "config": ckpt["config"], "step": 8, "data_shape": [2]}
    cases.append(({**old, "D": entry["D"]}, r": checkpoint has no 'G' \(keys: format, "))
    per_class = {**old, "per_class": [0, 3], "G/0": {}, "D/0": {}, "G/3": {}}
    cases.append((per_class, r": checkpoint has no 'D/3' \(keys: "))
    for i, (obj, pattern) in enumerate(cases):
        path = _saved(tmp_path, obj, f"{i}.pt")
        with pytest.raises(CheckpointError, match=pattern) as e:
            load_checkpoint(path)
        assert _one_line(e).startswith(f"{path}: ")


def test_weights_of_another_architecture_name_the_parameter_and_both_shapes(tmp_path, ring):
    ckpt = torch.load(ring / "checkpoints" / "last.pt", weights_only=True)
    ckpt["config"]["model"]["g"]["hidden"] = [24, 16]
    path = _saved(tmp_path, ckpt)
    with pytest.raises(CheckpointError) as e:
        load_generator(path)
    msg = _one_line(e)
    g = ckpt["pairs"][0]["G"]
    name = next(k for k, v in g.items() if v.shape[0] == 16)  # the first layer's weight
    stored = tuple(g[name].shape)
    assert msg.startswith(f"{path}: 'G' does not fit the MLPGenerator")
    assert f"'{name}' is {stored} in the checkpoint but {(24, *stored[1:])} in the model" in msg
    assert "..." not in msg


def test_a_diverged_generator_is_refused(tmp_path, ring):
    ckpt = torch.load(ring / "checkpoints" / "last.pt", weights_only=True)
    g = ckpt["pairs"][0]["G"]
    weight = next(k for k, v in g.items() if v.is_floating_point())
    g[weight][0] = float("nan")
    path = _saved(tmp_path, ckpt)
    with pytest.raises(CheckpointError) as e:
        load_generator(path)
    assert _one_line(e) == (
        f"{path}: generator weights contain NaN/inf (G.{weight}, step 8); use an earlier checkpoint"
    )
    assert load_generator(ring / "checkpoints" / "last.pt") is not None  # the finite one loads
    for cmd in (["eval", str(path)], ["sample", str(path), "--out", str(tmp_path / "s.npy")]):
        assert main(cmd) == 1  # eval and sample refuse it too (they used to exit 0)
    assert not (tmp_path / "s.npy").exists()


# ---- 6. a read-only run directory


def test_eval_returns_its_records_when_eval_jsonl_cannot_be_written(ring, monkeypatch, caplog):
    import gankit.evaluate

    def refuse(record, path):
        raise PermissionError(errno.EACCES, "Permission denied", str(path))

    monkeypatch.setattr(gankit.evaluate, "append_jsonl", refuse)
    before = (ring / "eval.jsonl").read_text()
    with caplog.at_level(logging.WARNING, logger="gankit.evaluate"):
        records = eval_run(ring, ["modes", "sliced_w1"], n=256)
    assert [r["metric"] for r in records] == ["modes", "sliced_w1"]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith(
        f"could not append to {ring / 'eval.jsonl'}: [Errno 13] Permission denied"
    )
    assert warnings[0].endswith("; results printed only")
    assert (ring / "eval.jsonl").read_text() == before


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_eval_on_a_chmod_555_run_directory(ring, tmp_path, caplog):
    import shutil

    run = tmp_path / "ro"
    shutil.copytree(ring, run)
    (run / "eval.jsonl").chmod(0o444)
    run.chmod(0o555)
    try:
        with caplog.at_level(logging.WARNING, logger="gankit.evaluate"):
            assert len(eval_run(run, ["modes"], n=256)) == 1
    finally:
        run.chmod(0o755)
    assert "results printed only" in caplog.text


# ---- 7. the image cache


def _pngs(folder: Path, n: int, size: int = 8) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(np.full((size, size), 20 * i, np.uint8)).save(folder / f"{i}.png")
    return folder


def _no_decoding(monkeypatch):
    def decode(*args, **kwargs):
        raise AssertionError("decoded before the check")

    monkeypatch.setattr(readers, "decode_files", decode)


def test_an_img_size_larger_than_the_images_fails_before_decoding(tmp_path, monkeypatch):
    top = _pngs(tmp_path / "imgs", 6)
    _no_decoding(monkeypatch)
    with pytest.raises(DataError) as e:
        images.folder(path=str(top), img_size=16, cache_dir=str(tmp_path / "c"))
    assert _one_line(e) == (
        f"data.img_size 16 is larger than the source images: in {top}, 0.png is 8x8, too small "
        "for img_size 16; use data.img_size <= 8 or set data.skip_bad=true to skip small images"
    )
    with pytest.raises(DataError) as e:
        images.folder(path=str(top), img_size=16, skip_bad=True, cache_dir=str(tmp_path / "c"))
    assert _one_line(e).startswith(f"no usable training images in {top}: data.img_size 16 is")
    assert "larger than every image checked (6 of 6; e.g. 0.png is 8x8" in str(e.value)


def test_a_cache_larger_than_the_free_space_fails_before_decoding(tmp_path, monkeypatch):
    top = _pngs(tmp_path / "imgs", 6)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(images.shutil, "disk_usage", lambda p: usage(10**12, 10**12 - 5000, 5000))
    _no_decoding(monkeypatch)
    with pytest.raises(DataError) as e:
        images.folder(path=str(top), img_size=8, cache_dir=str(tmp_path / "c"))
    msg = _one_line(e)
    assert msg.startswith("data.img_size 8: the cache of 6 images (3x8x8) needs about 0.00 MB")
    assert f"{tmp_path / 'c'} has 0.01 MB free" in msg and "data.cache_dir" in msg


def test_a_full_disk_while_writing_the_cache_is_an_error_not_sigbus(tmp_path, monkeypatch):
    top = _pngs(tmp_path / "imgs", 6)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full, raising=False)
    with pytest.raises(GankitError) as e:
        images.folder(path=str(top), img_size=8, cache_dir=str(tmp_path / "c"))
    msg = _one_line(e)
    assert msg.startswith(f"no space left on device writing {tmp_path / 'c'}/folder-")
    assert "-train.npy (need about" in msg
    assert list((tmp_path / "c").iterdir()) == []  # no temp file, no half cache


def test_the_cache_is_written_where_fallocate_is_unsupported(tmp_path, monkeypatch):
    def unsupported(fd, offset, length):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(os, "posix_fallocate", unsupported, raising=False)
    s = images.folder(path=str(_pngs(tmp_path / "imgs", 6)), img_size=8, channels=1,
                      cache_dir=str(tmp_path / "c"))  # fmt: skip
    assert sorted(np.concatenate([s.train, s.test])[:, 0, 0, 0].tolist()) == [
        0,
        20,
        40,
        60,
        80,
        100,
    ]


def test_skip_bad_skips_dangling_symlinks_and_symlink_loops(tmp_path):
    top = _pngs(tmp_path / "imgs", 6)
    (top / "gone.png").symlink_to(top / "missing.png")
    (top / "loop.png").symlink_to(top / "loop.png")
    s = images.folder(path=str(top), img_size=8, skip_bad=True, cache_dir=str(tmp_path / "c"))
    assert s.skipped == ["gone.png", "loop.png"] and len(s.train) + len(s.test) == 6
    with pytest.raises(DataError) as e:
        images.folder(path=str(top), img_size=8, cache_dir=str(tmp_path / "c"))
    msg = _one_line(e)
    assert ("gone.png" in msg or "loop.png" in msg) and "data.skip_bad=true" in msg


# ---- 8. restarting a run killed before its first checkpoint


def _killed_early(run: Path) -> Path:
    """What `gankit train` leaves when killed before its first checkpoint."""
    for sub in ("checkpoints", "samples", "plots"):
        (run / sub).mkdir(parents=True)
    (run / "config.yaml").write_text("seed: 0\n")
    (run / "metrics.jsonl").write_text('{"step": 0, "stale": true}\n')
    (run / "eval.jsonl").touch()
    (run / "env.json").write_text("{}\n")
    (run / "samples" / "000000.npy").write_bytes(b"x")
    (run / "checkpoints" / ".last.pt.12345.abcdefgh.tmp").write_bytes(b"partial")
    return run


def test_a_run_killed_before_its_first_checkpoint_can_be_restarted(tmp_path, caplog):
    run = _killed_early(tmp_path / "r")
    with caplog.at_level(logging.WARNING, logger="gankit.run"):
        check_new_run_dir(run, clear=False)
    assert "stopped before its first checkpoint" in caplog.text
    assert (run / "metrics.jsonl").exists()  # clear=False (e.g. a dry run) deletes nothing
    set_args = [a for o in TINY for a in ("--set", o)]
    assert main(["train", "toy_ring", "--run-dir", str(run), *set_args]) == 0
    log = (run / "metrics.jsonl").read_text()
    assert "stale" not in log and log.startswith('{"step": 0')
    assert not list((run / "checkpoints").glob(".*.tmp"))
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 8


def test_a_directory_with_a_checkpoint_or_other_files_is_still_refused(tmp_path, ring):
    with pytest.raises(
        GankitError,
        match=r"already exists with a checkpoint \(checkpoints/last\.pt\); pass --resume",
    ):
        check_new_run_dir(ring)
    evaluated = _killed_early(tmp_path / "e")
    (evaluated / "eval.jsonl").write_text('{"metric": "modes"}\n')
    foreign = _killed_early(tmp_path / "f")
    (foreign / "thesis.tex").write_text("...")
    for run, why in ((evaluated, "not an unfinished run"), (foreign, "it holds thesis.tex")):
        with pytest.raises(GankitError, match=why):
            check_new_run_dir(run)
        assert (run / "metrics.jsonl").exists()
    check_new_run_dir(tmp_path / "new")  # missing and empty directories are fine
    (tmp_path / "empty").mkdir()
    check_new_run_dir(tmp_path / "empty")


def test_utils_file_mode_matches_a_plain_open(tmp_path):
    (tmp_path / "plain").write_text("x")
    assert utils.file_mode() == (tmp_path / "plain").stat().st_mode & 0o777
