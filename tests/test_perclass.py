"""Per-class training (train.per_class, gankit.schedule.ClassRouting): routing of each class's images to its own pair, the run
directory, the one checkpoint holding every pair, errors, exact resume, NaN and signal handling.

Data: 3 class folders of 14 gray 20x20 PNGs (a hash split leaves 8, 10 and 5 training images),
resized to 16 px, batch 4: an epoch is 2 + 2 + 1 = 5 events; class 0 is used whole, classes 1 and
2 drop leftovers.
"""

from __future__ import annotations

import json
import os
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from gankit import pair as pair_module
from gankit.checkpoint import CheckpointError, load_checkpoint
from gankit.config import load_config
from gankit.data import data_from_config
from gankit.data.images import to_float
from gankit.factory import RunModels
from gankit.losses import LOSSES
from gankit.pair import build_pair
from gankit.sample import generate
from gankit.schedule import epoch_events
from gankit.trainer import NonFiniteLossError, TrainingInterrupted, train
from gankit.utils import GankitError, read_jsonl
from tests.conftest import class_pngs, folder_overrides

TRAIN_COUNTS = [8, 10, 5]  # training images per class after the hash split
PER_EPOCH = 5  # events per epoch at batch 4


@pytest.fixture(scope="module")
def dataset(class_folder):
    return class_folder[0]


@pytest.fixture(scope="module")
def cache(class_folder):
    return class_folder[1]


def _cfg(path, cache, *extra):
    """Per-class pairs on the conftest class folders: 2 epochs, a snapshot per epoch."""
    over = ["train.per_class=true", "train.epochs=2", "train.sample_every=0", *extra]
    return load_config("dcgan_mnist", folder_overrides(path, cache, *over))


@pytest.fixture(scope="module")
def full_run(dataset, cache, tmp_path_factory):
    """Every class, 2 epochs (10 events); returns (run_dir, state)."""
    run = tmp_path_factory.mktemp("full") / "run"
    return run, train(_cfg(dataset, cache), run)  # train() dispatches on train.per_class


def _labels(cfg):
    src = data_from_config(cfg)
    return src, torch.from_numpy(np.asarray(src.images.train_labels, dtype=np.int64))


def _walk(perm, labels, classes, size):
    """The routing rule written as the obvious loop over the permutation."""
    buffers, events = {c: [] for c in classes}, []
    for i in perm.tolist():
        c = int(labels[i])
        if c in buffers:
            buffers[c].append(i)
            if len(buffers[c]) == size:
                events.append((c, buffers[c]))
                buffers[c] = []
    return events


def test_events_route_each_image_once_to_its_class(dataset, cache):
    cfg = _cfg(dataset, cache)
    src, labels = _labels(cfg)
    assert torch.bincount(labels).tolist() == TRAIN_COUNTS
    for epoch in (0, 1):
        perm = src.epoch_indices(epoch)
        events = epoch_events(perm, labels, [0, 1, 2], 4)
        assert [(c, idx.tolist()) for c, idx in events] == _walk(perm, labels, [0, 1, 2], 4)
        assert len(events) == PER_EPOCH
        for c in (0, 1, 2):
            seen = torch.cat([idx for k, idx in events if k == c])
            assert (labels[seen] == c).all()  # only its class
            assert len(set(seen.tolist())) == len(seen) == TRAIN_COUNTS[c] // 4 * 4  # once each
        all_of_0 = torch.cat([idx for k, idx in events if k == 0]).sort().values
        assert torch.equal(all_of_0, (labels == 0).nonzero().squeeze(1))  # every image of class 0
    # a pure function of (seed, epoch): a fresh source gives the same events; epochs differ
    again = epoch_events(_labels(cfg)[0].epoch_indices(1), labels, [0, 1, 2], 4)
    assert [(c, i.tolist()) for c, i in again] == [(c, i.tolist()) for c, i in events]
    first = epoch_events(src.epoch_indices(0), labels, [0, 1, 2], 4)
    assert [i.tolist() for _, i in first] != [i.tolist() for _, i in events]


def test_the_loop_feeds_each_pair_its_events_batches(dataset, cache, tmp_path, monkeypatch):
    calls = []

    def recording_step(state, reals, labels, cfg):
        calls.append((state, reals[0].clone(), labels))
        return real_step(state, reals, labels, cfg)

    real_step = pair_module.train_step
    monkeypatch.setattr(pair_module, "train_step", recording_step)
    cfg = _cfg(dataset, cache, "train.epochs=1")
    state = train(cfg, tmp_path / "r")
    src, labels = _labels(cfg)
    events = epoch_events(src.epoch_indices(0), labels, [0, 1, 2], 4)
    owner = {id(p): c for c, p in state.pairs.items()}
    assert [owner[id(s)] for s, _, _ in calls] == [c for c, _ in events]
    for (_, x, lab), (_, idx) in zip(calls, events, strict=True):
        assert lab == [None]  # unconditional pairs
        assert torch.equal(x, to_float(torch.from_numpy(src.images.train[idx.numpy()])))
    assert {c: p.step for c, p in state.pairs.items()} == {0: 2, 1: 2, 2: 1}
    assert state.step == PER_EPOCH


def test_run_directory_grids_and_metrics(full_run):
    run, state = full_run
    for f in ("config.yaml", "env.json", "metrics.jsonl", "eval.jsonl", "reals.png",
              "checkpoints/last.pt"):  # fmt: skip
        assert (run / f).is_file(), f
    assert state.step == 2 * PER_EPOCH
    steps = ["000000.png", "000005.png", "000010.png"]  # sample_every=0: once per epoch
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == steps
    for c in (0, 1, 2):
        assert sorted(p.name for p in (run / "samples" / f"class_{c}").glob("*.png")) == steps
        assert Image.open(run / "samples" / f"class_{c}" / steps[-1]).size == (74, 74)  # 4x4 of 16
    assert Image.open(run / "samples" / steps[-1]).size == (8 * 16 + 9 * 2, 3 * 16 + 4 * 2)
    rows = read_jsonl(run / "metrics.jsonl")
    logs = [r for r in rows if "loss_d" in r]
    assert [r["step"] for r in logs] == [2, 4, 6, 8, 10]
    for r in logs:
        per = r["loss_d_per_class"]
        assert len(per) == 3 and r["it_s"] > 0
        known = [v for v in per if v is not None]
        assert known and all(np.isfinite(known))
    stats = [r for r in rows if "dstat_train_mean" in r]
    assert [r["step"] for r in stats] == [0, 5, 10]
    for r in stats:
        for part in ("train", "fake", "test"):
            for s in ("mean", "std"):
                per = r[f"dstat_{part}_{s}_per_class"]
                assert len(per) == 3 and all(v is not None for v in per)
                assert r[f"dstat_{part}_{s}"] == pytest.approx(np.mean(per))
            assert all(0 <= v <= 1 for v in r[f"dstat_{part}_mean_per_class"])


def test_plot_makes_a_gif_of_the_class_grids(full_run):
    from gankit.run import plot_run

    run, _ = full_run
    plot_run(run)
    assert Image.open(run / "plots" / "samples.gif").n_frames == 3
    assert (run / "plots" / "dstats.png").is_file()


def test_checkpoint_holds_every_pair_and_run_models_round_trip(full_run):
    run, state = full_run
    ckpt = torch.load(run / "checkpoints" / "last.pt", weights_only=True)
    assert ckpt["format"] == 2 and ckpt["step"] == 10 and ckpt["data_shape"] == [1, 16, 16]
    entries = ckpt["pairs"]
    assert [e["key"] for e in entries] == [0, 1, 2]
    assert [e["step"] for e in entries] == [p.step for p in state.pairs.values()] == [4, 4, 2]
    for e in entries:
        assert {"G", "D", "opt_g", "opt_d"} <= set(e) and set(e["rng"]) == {"z"}
    models = RunModels.from_checkpoint(ckpt)
    assert models.per_class and models.classes == [0, 1, 2]
    z, x = torch.randn(5, 8), torch.rand(5, 1, 16, 16) * 2 - 1
    for c, pair in state.pairs.items():
        G, D = models.generator(c), models.discriminator(c)
        assert G.training and D.training
        _assert_same(D.state_dict(), pair.D.state_dict())
        torch.testing.assert_close(generate(G, z), generate(pair.G, z))
        with torch.no_grad():  # the trained D is channels_last: same weights, other conv kernels
            torch.testing.assert_close(D.eval()(x), pair.D.eval()(x))
        pair.D.train()
    # pairs differ from each other (seeded per class and trained on their own class)
    assert not torch.equal(entries[0]["G"]["net.0.weight"], entries[1]["G"]["net.0.weight"])
    with pytest.raises(CheckpointError, match=r"class 7 has no pair .*choose from: 0, 1, 2$"):
        models.generator(7)
    with pytest.raises(CheckpointError, match="one G/D pair per class"):
        models.generator()


def test_a_subset_trains_only_its_pairs_and_each_pair_independently(dataset, cache, tmp_path):
    """Pair 2 alone trains exactly as pair 2 among all classes: pairs share nothing."""
    state = train(_cfg(dataset, cache, "train.classes=[2, 0]"), tmp_path / "sub")
    assert list(state.pairs) == [0, 2] and state.step == 2 * (2 + 1)
    assert not (tmp_path / "sub" / "samples" / "class_1").exists()
    ckpt = load_checkpoint(tmp_path / "sub" / "checkpoints" / "last.pt")
    assert [e["key"] for e in ckpt["pairs"]] == [0, 2] == RunModels.from_checkpoint(ckpt).classes
    rows = [r for r in read_jsonl(tmp_path / "sub" / "metrics.jsonl") if "dstat_fake_mean" in r]
    assert all(len(r["dstat_fake_mean_per_class"]) == 2 for r in rows)
    full = train(_cfg(dataset, cache, "train.classes=[2]"), tmp_path / "two")
    for a, b in zip(full.pairs[2].G.parameters(), state.pairs[2].G.parameters(), strict=True):
        assert torch.equal(a, b)


def test_pairs_are_seeded_by_class_alone(dataset, cache):
    cfg, cpu = _cfg(dataset, cache), torch.device("cpu")
    p0, p1, p1_again = (build_pair(cfg, (1, 16, 16), cpu, key=c) for c in (0, 1, 1))
    w = lambda p: torch.cat([q.flatten() for q in p.G.parameters()])  # noqa: E731
    assert not torch.equal(w(p0), w(p1)) and torch.equal(w(p1), w(p1_again))
    z0, z1, z1_again = (torch.randn(4, generator=p.z_gen) for p in (p0, p1, p1_again))
    assert not torch.equal(z0, z1) and torch.equal(z1, z1_again)
    other = build_pair(_cfg(dataset, cache, "seed=1"), (1, 16, 16), cpu, key=1)
    assert not torch.equal(w(other), w(p1))


def test_bad_class_ids_and_unusable_data_are_one_line_errors(dataset, cache, tmp_path):
    valid = r"choose from: 0 \(a\), 1 \(b\), 2 \(c\)$"
    with pytest.raises(GankitError, match=r"train.classes: 5 is not a class of 'folder'; " + valid):
        train(_cfg(dataset, cache, "train.classes=[0, 5]"), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # nothing written
    with pytest.raises(GankitError, match="unconditional pairs: set model.num_classes=0"):
        train(_cfg(dataset, cache, "model.num_classes=3"), tmp_path / "cond")
    with pytest.raises(GankitError, match=r"classes 2 \(5\) have fewer training images"):
        train(_cfg(dataset, cache, "data.batch_size=6"), tmp_path / "small")
    flat = class_pngs(tmp_path / "flat", ["a"]) / "a"  # one folder of images: no labels
    with pytest.raises(
        GankitError, match="needs a labelled image dataset; 'folder' has no classes"
    ):
        train(_cfg(flat, cache), tmp_path / "unlabelled")
    toy = load_config("toy_ring", ["train.per_class=true", "train.progress=false"])
    with pytest.raises(GankitError, match="needs a labelled image dataset; 'ring'"):
        train(toy, tmp_path / "toy")


def _state_dicts(run):
    """({(class, entry name): state} of every pair, the checkpoint)."""
    ckpt = load_checkpoint(run / "checkpoints" / "last.pt")
    return {(e["key"], k): v for e in ckpt["pairs"] for k, v in e.items() if k != "key"}, ckpt


def _assert_same(a, b):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b)
    else:
        assert a == b


def test_resume_is_bit_identical(dataset, cache, tmp_path):
    """12 events at once == 6 (mid-epoch) + resume + 6, for every pair, with G_ema."""
    over = ["train.epochs=0", "train.steps=12", "train.ema_decay=0.9"]
    train(_cfg(dataset, cache, *over), tmp_path / "full")
    train(_cfg(dataset, cache, *over, "train.steps=6"), tmp_path / "half")
    resumed = train(_cfg(dataset, cache, *over), tmp_path / "half", resume=True)
    assert resumed.step == 12
    (full, _), (half, _) = _state_dicts(tmp_path / "full"), _state_dicts(tmp_path / "half")
    assert len(full) == 3 * 7  # G, D, G_ema, opt_g, opt_d, step, rng per class
    _assert_same(full, half)  # weights, optimizer states, steps and noise streams
    # the same lines, none duplicated (the half run also snapshots at its last step, 6)
    losses = lambda d: [(r["step"], r.get("loss_d"), r.get("loss_g_per_class"))  # noqa: E731
                        for r in read_jsonl(d / "metrics.jsonl")]  # fmt: skip
    assert losses(tmp_path / "full") == [
        x for x in losses(tmp_path / "half") if x != (6, None, None)
    ]
    with pytest.raises(GankitError, match="config differs from the run's in train.classes"):
        train(_cfg(dataset, cache, *over, "train.classes=[1]"), tmp_path / "half", resume=True)


def test_nan_in_one_pair_names_its_class_and_keeps_the_last_good_checkpoint(
    dataset, cache, tmp_path, monkeypatch
):
    calls = {"n": 0}
    d_loss, g_loss = LOSSES["nonsaturating"]

    def poisoned(d_real, d_fake, smoothing=0.0):  # only the 6th D update: one pair diverges
        calls["n"] += 1
        loss = d_loss(d_real, d_fake, smoothing)
        return loss * float("nan") if calls["n"] == 6 else loss

    monkeypatch.setitem(LOSSES, "poisoned", (poisoned, g_loss))
    cfg = _cfg(dataset, cache, "loss.name=poisoned")
    src, labels = _labels(cfg)
    culprit = epoch_events(src.epoch_indices(1), labels, [0, 1, 2], 4)[0][0]  # event 6
    with pytest.raises(NonFiniteLossError) as err:
        train(cfg, tmp_path / "r")
    assert str(err.value).startswith(f"class {culprit}: loss_d became nan between steps 5 and 6")
    assert "last good checkpoint: step 4" in str(err.value) and "\n" not in str(err.value)
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for e in ckpt["pairs"] for sd in (e["G"], e["D"])
               for v in sd.values() if v.is_floating_point())  # fmt: skip


def test_sigint_saves_and_resume_finishes_the_run(dataset, cache, tmp_path, monkeypatch):
    real_step, calls = pair_module.train_step, {"n": 0}

    def interrupted_step(state, reals, labels, cfg):
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(
                os.getpid(), signal.SIGINT
            )  # caught by the loop's guard, handled after the step
        return real_step(state, reals, labels, cfg)

    monkeypatch.setattr(pair_module, "train_step", interrupted_step)
    with pytest.raises(TrainingInterrupted, match="SIGINT at step 3: checkpoint saved") as err:
        train(_cfg(dataset, cache), tmp_path / "r")
    assert err.value.signum == signal.SIGINT
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["step"] == 3
    monkeypatch.setattr(pair_module, "train_step", real_step)
    state = train(_cfg(dataset, cache), tmp_path / "r", resume=True)
    assert state.step == 10
    assert json.loads((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 10


def test_stabilisers_reach_every_pair_and_resume_exactly(dataset, cache, tmp_path):
    over = ["train.epochs=0", "train.steps=8", "train.augment=color,cutout",
            "model.d={ndf: 4, pack: 2, spectral_norm: true}"]  # fmt: skip
    train(_cfg(dataset, cache, *over), tmp_path / "full")
    train(_cfg(dataset, cache, *over, "train.steps=4"), tmp_path / "half")
    train(_cfg(dataset, cache, *over), tmp_path / "half", resume=True)
    (full, c1), (half, _) = _state_dicts(tmp_path / "full"), _state_dicts(tmp_path / "half")
    assert any("parametrizations" in k for k in full[0, "D"])  # spectral norm in the pairs' D
    assert all(set(e["rng"]) == {"z", "augment"} for e in c1["pairs"])
    _assert_same(full, half)


def test_each_pair_is_diagnosed_and_the_run_names_what_any_pair_has(
    full_run, dataset, cache, tmp_path
):
    """Per-class runs get the live diagnoses too: one list per pair, their union for the run."""
    import copy

    from gankit.observe import ClassProbes

    _, state = full_run
    cfg = _cfg(dataset, cache)
    pairs = {c: copy.deepcopy(p) for c, p in state.pairs.items()}
    probes = ClassProbes.build(cfg, data_from_config(cfg), list(pairs))
    early = probes.snapshot(pairs, 99, tmp_path)  # before DIAGNOSE_FROM: G is near its init
    assert "diagnoses" not in early and len(early["weight_norm_per_class"]) == 3
    with torch.no_grad():
        for p in pairs[1].G.parameters():
            p.mul_(1e7)  # pair 1's weights explode
    rec = probes.snapshot(pairs, 100, tmp_path)
    assert "diverged" in rec["diagnoses_per_class"][1]
    assert all("diverged" not in d for k, d in enumerate(rec["diagnoses_per_class"]) if k != 1)
    assert "diverged" in rec["diagnoses"] and rec["weight_norm"] > 1e6
