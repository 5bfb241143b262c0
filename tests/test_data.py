from __future__ import annotations

import math

import pytest
import torch

from gankit.data import TOYS, build_data
from gankit.data.toy import grid, ring


@pytest.mark.parametrize("name", TOYS)
def test_every_toy_dataset_is_deterministic_and_shaped(name):
    a = build_data(name, {}, seed=1, batch_size=32)
    b = build_data(name, {}, seed=1, batch_size=32)
    xa, la = a.batch(5)
    assert xa.shape == (32, *a.shape) and la is None
    assert torch.equal(xa, b.batch(5)[0])
    assert not torch.equal(xa, a.batch(6)[0])
    assert not torch.equal(xa, build_data(name, {}, seed=2, batch_size=32).batch(5)[0])


def test_ring_and_grid_centres():
    r = ring()
    assert r.centers.shape == (8, 2)
    assert torch.allclose(r.centers.norm(dim=1), torch.ones(8))
    g = grid()
    assert g.centers.shape == (25, 2)
    assert sorted(set(g.centers[:, 0].tolist())) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    x = r.sample(4000, torch.Generator().manual_seed(0))
    d = torch.cdist(x, r.centers).min(dim=1).values
    assert d.max() < 0.06  # std 0.01: every point within 6 std of a centre


def test_gauss1d_moments_and_params():
    src = build_data("gauss1d", {"mean": 3.0, "std": 1.0}, seed=0, batch_size=20000)
    x, _ = src.batch(0)
    assert x.mean().item() == pytest.approx(3.0, abs=0.03)
    assert x.std().item() == pytest.approx(1.0, abs=0.03)


def test_split_normal_has_a_gap_and_heart_is_bounded():
    x, _ = build_data("split_normal", {}, seed=0, batch_size=5000).batch(0)
    assert (x[:, 0].abs() >= 1.0).all()
    h, _ = build_data("heart", {}, seed=0, batch_size=5000).batch(0)
    assert h.abs().max() < 1.3


def test_finite_dataset_epochs_cover_every_point_once():
    src = build_data("ring", {}, seed=0, batch_size=30, n_points=100)
    assert src.batches_per_epoch == math.ceil(100 / 30) == 4
    epoch0 = torch.cat([src.batch(i)[0] for i in range(4)])
    assert epoch0.shape == (100, 2)  # last batch is the 10 left over
    key = lambda t: sorted(map(tuple, t.tolist()))  # noqa: E731
    assert key(epoch0) == key(src.data)
    epoch1 = torch.cat([src.batch(i)[0] for i in range(4, 8)])
    assert key(epoch1) == key(src.data) and not torch.equal(epoch0, epoch1)  # reshuffled


def test_batch_order_is_a_function_of_index_not_history():
    a = build_data("heart", {}, seed=0, batch_size=16, n_points=64)
    b = build_data("heart", {}, seed=0, batch_size=16, n_points=64)
    seq = [a.batch(i)[0] for i in range(10)]
    assert torch.equal(b.batch(9)[0], seq[9])  # jumped straight to batch 9 (as on resume)


def test_held_out_is_disjoint_from_training_stream():
    src = build_data("gauss1d", {}, seed=0, batch_size=64, n_points=64)
    assert not torch.equal(src.held_out(64), src.data)
    assert torch.equal(src.held_out(64), src.held_out(64))


def test_every_source_is_a_data_source(class_folder):
    """The trainer, snapshots and metrics type their data as gankit.data.DataSource."""
    from gankit.config import load_config
    from gankit.data import DataSource, ToySource, data_from_config
    from gankit.data.image_source import ImageSource
    from tests.conftest import folder_overrides

    toy = data_from_config(load_config("toy_ring"))
    img = data_from_config(load_config("dcgan_mnist", folder_overrides(*class_folder)))
    assert isinstance(toy, ToySource) and isinstance(img, ImageSource)
    for src in (toy, img):
        assert isinstance(src, DataSource)
        x, _ = src.batch(0)
        assert tuple(x.shape[1:]) == tuple(src.shape)
    assert not isinstance(object(), DataSource)
