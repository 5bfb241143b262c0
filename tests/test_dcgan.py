"""The DCGAN family: depth from image size, paper layer counts, variants, init, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gankit.models import build_models


def count(module: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in module.modules())


@pytest.mark.parametrize(("size", "layers"), [(28, 3), (32, 4), (64, 5)])
def test_depth_follows_image_size(size, layers):
    G, D = build_models("dcgan", 16, (3, size, size), 0, {"ngf": 4}, {"ndf": 4})
    assert count(G, nn.ConvTranspose2d) == layers  # five transposed convs / five convs at 64 px
    assert count(D, nn.Conv2d) == layers
    assert G(torch.randn(2, 16)).shape == (2, 3, size, size)


def test_64px_widths_128_to_1024_filters():
    G, D = build_models("dcgan", 100, (3, 64, 64), 0, {"ngf": 128}, {"ndf": 128})
    g_out = [m.out_channels for m in G.modules() if isinstance(m, nn.ConvTranspose2d)]
    d_out = [m.out_channels for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert g_out == [1024, 512, 256, 128, 3]
    assert d_out == [128, 256, 512, 1024, 1]


def test_paper_details_tanh_leaky_slope_no_bn_on_d_input():
    G, D = build_models("dcgan", 8, (1, 28, 28), 0, {"ngf": 8}, {"ndf": 8, "slope": 0.1})
    assert isinstance(G.net[-1], nn.Tanh)
    assert G(torch.randn(3, 8) * 100).abs().max() <= 1
    assert {m.negative_slope for m in D.modules() if isinstance(m, nn.LeakyReLU)} == {0.1}
    assert isinstance(D.net[1], nn.LeakyReLU)  # first conv goes straight to the activation
    assert count(D, nn.BatchNorm2d) == 1  # 28 px: conv(no BN) -> conv+BN -> head


def test_normal_002_init():
    G, _ = build_models("dcgan", 100, (3, 64, 64), 0, {"ngf": 64})
    w = torch.cat([m.weight.flatten() for m in G.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert w.mean().abs() < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.02)
    bn = torch.cat([m.weight for m in G.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1.0, abs=0.01)


def test_upsample_variant_uses_bilinear_and_same_convs():
    G, _ = build_models("dcgan_upsample", 8, (3, 32, 32), 0, {"ngf": 4})
    assert count(G, nn.ConvTranspose2d) == 1  # only the z projection
    ups = [m for m in G.modules() if isinstance(m, nn.Upsample)]
    assert len(ups) == 3 and all(u.mode == "bilinear" for u in ups)
    assert all(m.kernel_size == (3, 3) for m in G.modules() if isinstance(m, nn.Conv2d))
    assert G(torch.randn(2, 8)).shape == (2, 3, 32, 32)


def test_linear_projection_to_1024_channels():
    G, _ = build_models("dcgan_linear", 100, (3, 64, 64), 0, {"ngf": 128})
    lin = G.project[0]
    assert isinstance(lin, nn.Linear) and lin.out_features == 1024 * 4 * 4
    assert count(G, nn.ConvTranspose2d) == 4
    assert G(torch.randn(2, 100)).shape == (2, 3, 64, 64)


def test_linear_head_discriminator():
    _, D = build_models("dcgan", 8, (1, 28, 28), 0, None, {"ndf": 4, "head": "linear"})
    assert isinstance(D.head[1], nn.Linear) and D.head[1].in_features == 8 * 7 * 7
    assert count(D, nn.Conv2d) == 2
    assert D(torch.randn(5, 1, 28, 28)).shape == (5,)


def test_conditional_dcgan_uses_the_label():
    G, D = build_models("dcgan", 8, (1, 16, 16), 10, {"ngf": 4}, {"ndf": 4})
    G.eval(), D.eval()
    z = torch.randn(1, 8).repeat(10, 1)
    out = G(z, torch.arange(10))
    assert not torch.allclose(out[0], out[9])
    x = torch.randn(1, 1, 16, 16).repeat(10, 1, 1, 1)
    logits = D(x, torch.arange(10))
    assert logits[0] != logits[9]


@pytest.mark.parametrize("shape", [(1, 48, 48), (1, 28, 32), (784,)])
def test_unsupported_shapes_say_what_is_supported(shape):
    with pytest.raises(ValueError, match="28, 32, 64|square"):
        build_models("dcgan", 8, shape)


@pytest.mark.parametrize(("key", "value"), [("upsample", "nearest"), ("project", "mlp")])
def test_bad_variant_lists_choices(key, value):
    with pytest.raises(ValueError, match="choose from"):
        build_models("dcgan", 8, (1, 28, 28), 0, {key: value})


@pytest.mark.parametrize("name", ["mlp", "dcgan"])
def test_projection_discriminator_adds_the_class_inner_product(name):
    kw = {"hidden": (16,)} if name == "mlp" else {"ndf": 4}
    _, D = build_models(name, 8, (1, 16, 16), 4, None, {**kw, "cond": "projection"})
    D.eval()
    x = torch.randn(3, 1, 16, 16)
    if name == "mlp":
        h = D.net[:-1](x.flatten(1))
        base = D.net[-1](h).squeeze(1)
    else:
        h = D.net(x)
        base = D.head(h)
        h = h.sum((2, 3))
    y = torch.tensor([0, 3, 3])
    expected = base + (D.embed.weight[y] * h).sum(1)
    torch.testing.assert_close(D(x, y), expected)
    assert not torch.allclose(D(x, torch.tensor([3, 3, 3])), D(x, torch.tensor([0, 0, 0])))
    first = D.net[0]  # the image alone goes in: no label planes / one-hot inputs
    assert (first.in_channels if name == "dcgan" else first.in_features) == (
        1 if name == "dcgan" else 256
    )
