"""Tracking mirrors: what the Tracker writes is read back with each back-end's own reader."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from gankit.track import Tracker, numeric, open_tracker, to_hwc_uint8
from gankit.utils import GankitError


def tb_events(run_dir: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


def test_disabled_tracker_is_a_no_op_without_the_packages(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # any import of them would fail
    monkeypatch.setitem(sys.modules, "wandb", None)
    with Tracker(tmp_path, {"seed": 0}) as tr:
        assert not tr.enabled
        tr.scalars(1, {"loss_d": 1.0})
        tr.image(1, "samples", torch.rand(3, 4, 4))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("module", "kwargs"), [("tensorboard", {"tensorboard": True}),
                                                 ("wandb", {"wandb": "offline"})])  # fmt: skip
def test_missing_package_names_the_extra(tmp_path, monkeypatch, module, kwargs):
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(
        GankitError, match=rf"needs the {module} package: pip install 'gankit\[{module}\]'"
    ):
        Tracker(tmp_path, {}, **kwargs)


def test_open_tracker_rejects_unknown_wandb_mode(tmp_path):
    track = SimpleNamespace(tensorboard=False, wandb="ofline", project="gankit")
    with pytest.raises(
        GankitError,
        match="track.wandb: 'ofline' is not valid; choose from: disabled, offline, online",
    ):
        open_tracker(tmp_path, {}, track)


def test_numeric_keeps_numbers_only():
    rec = {
        "step": 5,
        "loss_d": 0.25,
        "n": 3,
        "split": "test",
        "ok": True,
        "t": torch.tensor(2.0),
        "x": None,
    }
    assert numeric(rec) == {"loss_d": 0.25, "n": 3.0, "t": 2.0}


def test_to_hwc_uint8_conversions():
    chw = torch.tensor([[[0.0, 0.5], [1.0, 2.0]]])  # (1, 2, 2): 2.0 is clamped
    assert to_hwc_uint8(chw)[:, :, 0].tolist() == [[0, 128], [255, 255]]
    assert to_hwc_uint8(chw.numpy()).shape == (2, 2, 1)
    rgb = torch.rand(3, 5, 7)
    assert to_hwc_uint8(rgb).shape == (5, 7, 3)
    gray = np.arange(6, dtype=np.uint8).reshape(2, 3)  # np.asarray of an "L" PIL image
    assert to_hwc_uint8(gray)[:, :, 0].tolist() == gray.tolist()
    assert to_hwc_uint8(rgb.to(torch.bfloat16)).shape == (5, 7, 3)
    with pytest.raises(
        GankitError, match=r"expected \(C, H, W\) float in \[0, 1\] with C = 1 or 3"
    ):
        to_hwc_uint8(torch.rand(2, 5, 5))
    with pytest.raises(GankitError, match=r"or uint8 \(H, W\[, C\]\); got int64 \(5, 5\)"):
        to_hwc_uint8(np.zeros((5, 5), np.int64))
    with pytest.raises(GankitError, match=r"expected uint8 \(H, W\) or \(H, W, 1\|3\|4\)"):
        to_hwc_uint8(np.zeros((5, 5, 2), np.uint8))


def test_tensorboard_scalars_and_image_read_back(tmp_path):
    from PIL import Image

    grid = torch.rand(3, 6, 10)
    with open_tracker(
        tmp_path, {}, SimpleNamespace(tensorboard=True, wandb="disabled", project="p")
    ) as tr:
        assert tr.enabled
        for s in (1, 2, 3):
            tr.scalars(s, {"step": s, "loss_d": 0.5 * s, "loss_g": float(-s), "split": "test"})
        tr.image(3, "samples", grid)
    ea = tb_events(tmp_path)
    assert sorted(ea.Tags()["scalars"]) == ["loss_d", "loss_g"]  # no "step", no strings
    assert [(e.step, e.value) for e in ea.Scalars("loss_d")] == [(1, 0.5), (2, 1.0), (3, 1.5)]
    assert [e.step for e in ea.Scalars("loss_g")] == [1, 2, 3]
    (img,) = ea.Images("samples")
    assert (img.step, img.width, img.height) == (3, 10, 6)
    decoded = np.asarray(Image.open(io.BytesIO(img.encoded_image_string)))
    np.testing.assert_array_equal(decoded, to_hwc_uint8(grid))  # PNG is lossless


def test_tensorboard_resume_purges_steps_after_the_checkpoint(tmp_path):
    with Tracker(tmp_path, {}, tensorboard=True) as tr:
        for s in (1, 2, 3, 4):  # killed after step 4; last checkpoint at step 2
            tr.scalars(s, {"loss_d": float(s)})
    with Tracker(tmp_path, {}, tensorboard=True, resume_step=2) as tr:
        for s in (3, 4, 5):
            tr.scalars(s, {"loss_d": 10.0 + s})
    got = [(e.step, e.value) for e in tb_events(tmp_path).Scalars("loss_d")]
    assert got == [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0), (5, 15.0)]  # one value per step


# ---- W&B offline ----------------------------------------------------------------------------------


def wandb_records(path: Path) -> list:
    """The protobuf records of a .wandb file. It is a LevelDB-style log (wandb's own format): a
    7-byte header ':W&B' + magic + version, then 32 KiB blocks of chunks, each with a 7-byte header
    (crc32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, records, buf, pos, block = path.read_bytes(), [], b"", 7, 32768
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer padding
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos : pos + 7])
        buf, pos = buf + data[pos + 7 : pos + 7 + n], pos + 7 + n
        if kind in (1, 4):
            records.append(pb.Record.FromString(buf))
            buf = b""
    return records


def read_wandb_run(run_dir: Path) -> dict:
    """{"run": the run record, "history": {step: {key: value}}, "summary": {key: value}} of an offline run dir."""
    (path,) = run_dir.glob("*.wandb")
    out: dict = {"history": {}, "summary": {}}
    for r in wandb_records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            out["run"] = r.run
        elif kind == "history":
            row = {
                i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item
            }
            out["history"][row["_step"]] = row
        elif kind == "summary":
            out["summary"].update({i.key or "/".join(i.nested_key): json.loads(i.value_json)
                                   for i in r.summary.update})  # fmt: skip
    return out


# Runs in a fresh interpreter: W&B's usage telemetry only tries the network at interpreter exit.
WANDB_SCRIPT = """
import atexit, json, socket, sys
attempts = []
def refuse(*args, **kwargs):
    attempts.append(repr(args[:2]))
    raise OSError("network refused by the test")
real_connect = socket.socket.connect
def connect(self, address):
    if self.family != socket.AF_UNIX:
        refuse(address)
    return real_connect(self, address)
socket.getaddrinfo, socket.socket.connect = refuse, connect
atexit.register(lambda: open(sys.argv[2], "w").write(json.dumps(attempts)))  # runs after wandb's

import torch
from gankit.track import Tracker
config = {"seed": 3, "model": {"name": "mlp", "z_dim": 2}}
with Tracker(sys.argv[1], config, wandb="offline", project="proj") as tr:
    for s in (1, 2, 3):
        tr.scalars(s, {"step": s, "loss_d": 0.5 * s, "loss_g": float(s), "split": "test"})
    tr.image(3, "samples", torch.full((1, 4, 6), 0.5))
with Tracker(sys.argv[1], config, wandb="offline", project="proj", resume_step=2) as tr:
    tr.scalars(3, {"loss_d": 9.0})
"""


@pytest.mark.slow
def test_wandb_offline_run_reads_back_and_never_touches_the_network(tmp_path):
    run_dir, net_log = tmp_path / "myrun", tmp_path / "net.json"
    env = {"WANDB_CONFIG_DIR": str(tmp_path / "cfg"), "WANDB_CACHE_DIR": str(tmp_path / "cache"),
           "WANDB_DATA_DIR": str(tmp_path / "data"), "HOME": str(tmp_path)}  # fmt: skip
    import os

    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(WANDB_SCRIPT), str(run_dir), str(net_log)],
        env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""  # silent console
    assert json.loads(net_log.read_text()) == []  # no DNS lookup, no non-local connection

    first, resumed = sorted(
        (run_dir / "wandb").glob("offline-run-*"), key=lambda p: p.stat().st_mtime
    )
    a, b = read_wandb_run(first), read_wandb_run(resumed)
    assert a["run"].project == "proj" and a["run"].display_name == "myrun"
    assert a["run"].run_group == b["run"].run_group == "myrun"
    assert (a["run"].job_type, b["run"].job_type) == ("train", "resume")
    assert a["run"].run_id != b["run"].run_id  # a resumed offline run is a new W&B run
    config = {i.key: json.loads(i.value_json) for i in a["run"].config.update}
    assert config["seed"] == 3 and config["model"] == {"name": "mlp", "z_dim": 2}

    hist = a["history"]
    assert sorted(hist) == [1, 2, 3]
    assert [(hist[s]["loss_d"], hist[s]["loss_g"]) for s in (1, 2, 3)] == [
        (0.5, 1),
        (1, 2),
        (1.5, 3),
    ]
    assert "split" not in hist[1] and "step" not in hist[1]
    assert hist[3]["samples/_type"] == "image-file"
    assert (hist[3]["samples/width"], hist[3]["samples/height"]) == (6, 4)
    assert (first / "files" / hist[3]["samples/path"]).is_file()
    assert b["history"][3]["loss_d"] == 9.0 and b["summary"]["resumed_from_step"] == 2


def test_training_with_track_tensorboard_mirrors_metrics_and_grids(tmp_path):
    from gankit.config import load_config
    from gankit.trainer import train
    from gankit.utils import read_jsonl
    from tests.conftest import image_overrides, make_stripes

    over = [
        *image_overrides(make_stripes(tmp_path / "stripes"), tmp_path / "cache"),
        "track.tensorboard=true",
    ]
    train(load_config("dcgan_mnist", over), tmp_path / "r")
    ea = tb_events(tmp_path / "r")
    logged = {r["step"]: r for r in read_jsonl(tmp_path / "r" / "metrics.jsonl") if "loss_d" in r}
    tb = {e.step: e.value for e in ea.Scalars("loss_d")}
    assert sorted(tb) == sorted(logged) and all(np.isclose(tb[s], logged[s]["loss_d"]) for s in tb)
    assert [e.step for e in ea.Images("samples")] == [0, 4, 8]  # every snapshot grid
    assert all(r["time_s"] >= 0 for r in read_jsonl(tmp_path / "r" / "metrics.jsonl"))
