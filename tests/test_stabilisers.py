"""Stabilisers: spectral norm, PacGAN packing, minibatch std, the relativistic loss + R2, and the
independent random streams of make_generator."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from gankit.config import ConfigError, load_config
from gankit.losses import LOSSES, RELATIVISTIC, d_rpgan, g_rpgan
from gankit.models import MODELS, build_models
from gankit.models.layers import is_spectral_normed, minibatch_std, pack_samples
from gankit.utils import make_generator, stream_seed

TINY = {"mlp": ({"hidden": (16,)}, {"hidden": (16,)}), "dcgan": ({"ngf": 4}, {"ndf": 4})}
SHAPE = {"mlp": (2,), "dcgan": (3, 16, 16)}
FAMILIES = {"mlp": "mlp", "dcgan": "dcgan", "dcgan_upsample": "dcgan", "dcgan_linear": "dcgan"}


def test_stream_keys_are_distinct_and_stable():
    keys = [(0, "fixed_noise"), (0, "train_fixed"), (0, "z"), (1, "z"), (0, "z", 1), (0, 1, "z"),
            (0, "1", "z"), (0, "epoch", 12), (0, "epoch", 21)]  # fmt: skip
    seeds = [stream_seed(*k) for k in keys]
    assert len(set(seeds)) == len(seeds)  # anagrams and reordered keys no longer collide
    assert all(0 <= s < 2**63 for s in seeds)
    assert stream_seed(0, "z") == stream_seed(0, "z")  # a pure function of the key
    with pytest.raises(TypeError):
        stream_seed(0, 1.5)


def test_anagram_streams_are_independent():
    a = torch.randn(20000, generator=make_generator(0, "fixed_noise"))
    b = torch.randn(20000, generator=make_generator(0, "train_fixed"))
    assert not torch.equal(a, b)
    corr = torch.corrcoef(torch.stack([a, b]))[0, 1].item()
    assert abs(corr) < 0.03  # 4.2 standard errors of independent draws at n = 20,000
    torch.testing.assert_close(torch.randn(20000, generator=make_generator(0, "fixed_noise")), a)


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("num_classes", [0, 3])
def test_stabilisers_every_family_shapes_and_gradients(name, num_classes):
    fam = FAMILIES[name]
    g_kw, d_kw = TINY[fam]
    d_kw = {**d_kw, "spectral_norm": True, "pack": 2, "minibatch_std": 2}
    G, D = build_models(name, 8, SHAPE[fam], num_classes, {**g_kw, "spectral_norm": True}, d_kw)
    assert is_spectral_normed(G) and is_spectral_normed(D)
    labels = torch.tensor([0, 1, 2, 2]) if num_classes else None
    x = G(torch.randn(4, 8), labels)
    logits = D(x, labels)
    assert logits.shape == (2,)  # 4 samples in packs of 2
    logits.sum().backward()
    for m in (G, D):
        for n, p in m.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), n
    with pytest.raises(ValueError, match="divisible"):
        D(x[:3], None if labels is None else labels[:3])


def test_spectral_norm_bounds_each_layer():
    _, D = build_models("mlp", 8, (2,), 0, None, {"hidden": (64, 64), "spectral_norm": True})
    with torch.no_grad():
        for p in D.parameters():
            p.mul_(10)  # far from 1-Lipschitz before normalisation
    for _ in range(30):  # power iterations run in training-mode forward passes
        D(torch.randn(8, 2))
    D.eval()
    for m in D.modules():
        if isinstance(m, nn.Linear):
            assert torch.linalg.matrix_norm(m.weight, ord=2).item() == pytest.approx(1.0, rel=1e-3)


def test_spectral_norm_conv_transpose_uses_output_channels():
    G, _ = build_models("dcgan", 8, (1, 16, 16), 0, {"ngf": 4, "spectral_norm": True}, None)
    for _ in range(30):
        G(torch.randn(4, 8))
    G.eval()
    conv_t = [m for m in G.modules() if isinstance(m, nn.ConvTranspose2d)][1]
    w = conv_t.weight  # (in, out, k, k): the normalised matrix is out x (in * k * k)
    mat = w.transpose(0, 1).reshape(w.shape[1], -1)
    assert torch.linalg.matrix_norm(mat, ord=2).item() == pytest.approx(1.0, rel=1e-3)


def test_pack_concatenates_consecutive_samples():
    x = torch.arange(4 * 2 * 3 * 3, dtype=torch.float).view(4, 2, 3, 3)
    p = pack_samples(x, 2)
    assert p.shape == (2, 4, 3, 3)
    torch.testing.assert_close(p[1, 2:], x[3])  # pack 1 = samples 2, 3 along channels
    torch.testing.assert_close(p[1, :2], x[2])


def test_packed_d_scores_packs_jointly():
    _, D = build_models("mlp", 8, (2,), 0, None, {"hidden": (16,), "pack": 2})
    x = torch.randn(4, 2)
    out = D(x)
    swapped = D(x[[0, 1, 3, 2]])  # within-pack order matters, other packs unaffected
    assert out[0].item() == swapped[0].item() and out[1].item() != swapped[1].item()
    assert D.net[0].in_features == 4


def test_minibatch_std_golden_value():
    x = torch.tensor([[0.0, 0.0], [2.0, 4.0], [0.0, 0.0], [2.0, 4.0]])
    # group 2: members (0, 2) and (1, 3) are identical pairs -> std 0; group 4 over all: std 1, 2
    out = minibatch_std(x, 4)
    torch.testing.assert_close(out[:, 2], torch.full((4,), 1.5), atol=1e-3, rtol=0)
    out2 = minibatch_std(torch.tensor([[0.0], [0.0], [2.0], [4.0]]), 2)
    # groups pair sample i with i + 2: (0, 2) std 1, (0, 4) std 2
    torch.testing.assert_close(out2[:, 1], torch.tensor([1.0, 2.0, 1.0, 2.0]), atol=1e-3, rtol=0)
    img = minibatch_std(torch.randn(6, 3, 4, 4), 4)  # group 4 does not divide 6: 3 is used
    assert img.shape == (6, 4, 4, 4) and torch.all(img[:, 3] == img[:, 3, :1, :1])


def test_minibatch_std_separates_collapsed_batches():
    _, D = build_models("mlp", 8, (2,), 0, None, {"hidden": (16,), "minibatch_std": 4})
    feats = D.net[:-1]
    same = feats(torch.ones(8, 2))[:, -1]
    spread = feats(torch.randn(8, 2) * 3)[:, -1]
    assert same.max().item() < 1e-3 < spread.min().item()


def test_rpgan_golden_values_and_gradients():
    d_loss, g_loss = LOSSES["rpgan"]
    assert "rpgan" in RELATIVISTIC and d_loss is d_rpgan and g_loss is g_rpgan
    zero = torch.zeros(3)
    assert d_rpgan(zero, zero).item() == pytest.approx(torch.log(torch.tensor(2.0)).item())
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    assert d_rpgan(real, fake).item() == pytest.approx(
        torch.nn.functional.softplus(torch.tensor(-3.0)).item()
    )
    assert g_rpgan(fake, real).item() == pytest.approx(
        torch.nn.functional.softplus(torch.tensor(3.0)).item()
    )
    f = fake.clone().requires_grad_(True)
    r = real.clone().requires_grad_(True)
    g_rpgan(f, r).backward()
    assert f.grad.item() < 0 and r.grad is None  # G raises its fakes' logits; D(x) held fixed


@pytest.mark.parametrize("overrides", [
    ["model.d.spectral_norm=true", "model.g.spectral_norm=true"],
    ["model.d.pack=2"],
    ["model.d.minibatch_std=4"],
    ["loss.name=rpgan", "loss.r1_weight=0.1", "loss.r2_weight=0.1"],
])  # fmt: skip
def test_stabilised_toy_runs_train_and_resume_exactly(split_resume, tiny_overrides, overrides):
    split_resume("toy_ring", [*tiny_overrides, "optim.lr_schedule=constant", *overrides])


def test_stabilised_runs_leave_the_fast_path(tiny_cfg):
    from gankit.fastmlp import eligible
    from gankit.models import build_models as build

    for d_kw, loss in (({"pack": 2}, {}), ({"spectral_norm": True}, {}), ({}, {"r2_weight": 1.0})):
        cfg = load_config("toy_ring", [f"model.d.{k}={v}" for k, v in d_kw.items()]
                          + [f"loss.{k}={v}" for k, v in loss.items()])  # fmt: skip
        G, D = build("mlp", cfg.model.z_dim, (2,), 0, cfg.model.g, cfg.model.d)
        assert eligible(G, D, cfg) is not None
    G, D = build("mlp", tiny_cfg.model.z_dim, (2,), 0, tiny_cfg.model.g, tiny_cfg.model.d)
    assert eligible(G, D, tiny_cfg) is None


@pytest.mark.parametrize(("overrides", "match"), [
    (["model.d.pack=3"], "data.batch_size .* multiple of model.d.pack"),
    (["model.d.pack=0"], "model.d.pack must be >= 1"),
    (["model.d.minibatch_std=1"], "model.d.minibatch_std"),
    (["loss.r2_weight=-1"], "loss.r2_weight"),
    (["train.augment=color,flip"], "train.augment"),
])  # fmt: skip
def test_stabiliser_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match):
        load_config("toy_ring", overrides)


def test_augment_on_toy_data_is_refused_before_any_work(tiny_overrides):
    with pytest.raises(ConfigError, match="needs image data; ring is a toy density"):
        load_config("toy_ring", [*tiny_overrides, "train.augment=color"])


def test_minibatch_std_group_must_divide_the_batch_d_sees():
    with pytest.raises(ConfigError, match="minibatch_std=4 must divide .* = 50"):
        load_config(
            "toy_ring", ["data.batch_size=100", "model.d.pack=2", "model.d.minibatch_std=4"]
        )


def test_pairs_of_stream_keys_never_collide_on_small_grids():
    seeds = {
        stream_seed(s, k, i) for s, k, i in itertools.product(range(4), ("z", "epoch"), range(50))
    }
    assert len(seeds) == 4 * 2 * 50
