"""Registry-wide model tests and golden loss values."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from gankit.losses import (
    LOSSES,
    RELATIVISTIC,
    d_bce,
    g_minimax,
    g_nonsaturating,
    gradient_penalty,
    r1_penalty,
)
from gankit.models import MODELS, build_models

# tiny widths and the data shapes each family takes (MLPs take any shape; DCGANs square images)
TINY = {"mlp": ({"hidden": (16,)}, {"hidden": (16,)}), "dcgan": ({"ngf": 4}, {"ndf": 4})}
SHAPES = {"mlp": [(2,), (1,), (1, 16, 16)], "dcgan": [(1, 16, 16), (3, 28, 28)]}


def family(name: str) -> str:
    return "mlp" if MODELS[name][0] is MODELS["mlp"][0] else "dcgan"


CASES = [(n, s) for n in MODELS for s in SHAPES[family(n)]]


@pytest.mark.parametrize(("name", "shape"), CASES)
@pytest.mark.parametrize(("num_classes", "cond"), [(0, "concat"), (3, "concat"), (3, "projection")])
def test_every_model_shapes_and_gradients(name, shape, num_classes, cond):
    g_kw, d_kw = TINY[family(name)]
    G, D = build_models(name, 8, shape, num_classes, g_kw, {**d_kw, "cond": cond})
    labels = torch.tensor([0, 1, 2, 2]) if num_classes else None
    z = torch.randn(4, 8)
    x = G(z, labels)
    assert x.shape == (4, *shape)
    logits = D(x, labels)
    assert logits.shape == (4,)
    assert torch.isfinite(logits).all()
    logits.sum().backward()
    for m in (G, D):
        for n, p in m.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), n


def test_conditional_output_changes_with_label():
    G, D = build_models("mlp", 8, (2,), 4, {"hidden": (16,)}, {"hidden": (16,)})
    z = torch.randn(1, 8).repeat(4, 1)
    out = G(z, torch.arange(4))
    assert not torch.allclose(out[0], out[3])  # the last class reaches the network too
    with pytest.raises(ValueError, match="needs labels"):
        G(z)


def test_unconditional_model_rejects_labels():
    G, _ = build_models("mlp", 8, (2,))
    with pytest.raises(ValueError, match="unconditional"):
        G(torch.randn(2, 8), torch.zeros(2, dtype=torch.long))


def test_mlp_options_build_the_requested_layers():
    G, D = build_models(
        "mlp", 4, (2,), 0,
        {"hidden": (8, 8), "batchnorm": True, "output": "tanh"},
        {"hidden": (8,), "dropout": 0.5, "activation": "relu"},
    )  # fmt: skip
    kinds = [type(m) for m in G.net]
    assert kinds.count(nn.BatchNorm1d) == 2 and kinds[-1] is nn.Tanh
    assert any(isinstance(m, nn.Dropout) for m in D.net)
    assert G(torch.randn(5, 4)).abs().max() <= 1


def test_2014_gan_pixels_and_noise_are_that_codes_functions_in_gankits_range():
    """The gan2014_mnist options: G's pixel_sigmoid is 2 sigmoid(a) - 1 and output_bias=data starts
    it at the data's mean sample; D's unit_input scores (x + 1) / 2 (labels untouched); the noise
    uniform_sqrt3 is U(-sqrt 3, sqrt 3)."""
    from gankit.sample import sample_z

    mean = torch.linspace(-1, 1, 12).view(1, 3, 4)  # includes both ends: clipped, not infinite
    G, _ = build_models("mlp", 5, (1, 3, 4), 0, {"hidden": (8,), "output": "pixel_sigmoid",
                                                 "output_bias": "data"})  # fmt: skip
    G.init_output_bias(mean)
    z = torch.randn(6, 5)
    assert torch.equal(G.net(z), 2 * torch.sigmoid(G.net[:-1](z)) - 1)
    with torch.no_grad():
        G.net[G.n_out].weight.zero_()  # zero weights: the output is the mean itself
    torch.testing.assert_close(G(torch.randn(6, 5)), mean.expand(6, 1, 3, 4), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="output_bias"):
        build_models("mlp", 5, (4,), 0, {"output_bias": "marginal"})
    unit = build_models("mlp", 5, (4,), 3, None, {"hidden": (8,), "unit_input": True})[1]
    plain = build_models("mlp", 5, (4,), 3, None, {"hidden": (8,)})[1]
    plain.load_state_dict(unit.state_dict())
    x, y = torch.rand(7, 4) * 2 - 1, torch.arange(7) % 3
    torch.testing.assert_close(unit(x, y), plain((x + 1) / 2, y))
    assert not torch.allclose(unit(x, y), plain(x, y))
    u = sample_z(200_000, 1, "uniform_sqrt3", torch.Generator().manual_seed(0))
    assert u.abs().max() <= math.sqrt(3) and u.abs().max() > 1.7
    assert abs(u.var().item() - 1.0) < 0.01


@pytest.mark.parametrize("name", list(LOSSES))
def test_every_loss_is_scalar_finite_and_differentiable(name):
    d_loss, g_loss = LOSSES[name]
    d_real = torch.randn(6, requires_grad=True)
    d_fake = torch.randn(6, requires_grad=True)
    g = g_loss(d_fake, d_real) if name in RELATIVISTIC else g_loss(d_fake)
    for loss in (d_loss(d_real, d_fake, 0.1), g):
        assert loss.shape == () and torch.isfinite(loss)
        (gr,) = torch.autograd.grad(loss, d_fake)
        assert gr.abs().sum() > 0


def test_bce_golden_values():
    zeros = torch.zeros(5)
    assert d_bce(zeros, zeros).item() == pytest.approx(2 * math.log(2))
    assert g_nonsaturating(zeros).item() == pytest.approx(math.log(2))
    assert g_minimax(zeros).item() == pytest.approx(-math.log(2))
    # one-sided smoothing: real target 0.9 at logit x -> 0.9*softplus(-x) + 0.1*softplus(x)
    x = torch.tensor([2.0])
    sp = torch.nn.functional.softplus
    expected = 0.9 * sp(-x) + 0.1 * sp(x) + sp(torch.tensor([-3.0]))
    assert d_bce(x, torch.tensor([-3.0]), 0.1).item() == pytest.approx(expected.item())


def test_bce_is_stable_at_extreme_logits():
    big = torch.tensor([1e4, -1e4])
    assert torch.isfinite(d_bce(big, -big)) and torch.isfinite(g_nonsaturating(big))


def test_minimax_and_nonsaturating_differ_in_gradient():
    """They share the optimum but not the gradient: saturating vanishes when D rejects fakes."""
    x = torch.tensor([-6.0], requires_grad=True)  # D confidently says 'fake'
    (g_ns,) = torch.autograd.grad(g_nonsaturating(x), x)
    (g_mm,) = torch.autograd.grad(g_minimax(x), x)
    assert g_ns.item() == pytest.approx(torch.sigmoid(x).item() - 1, rel=1e-5)
    assert g_mm.item() == pytest.approx(-torch.sigmoid(x).item(), rel=1e-5)
    assert abs(g_ns.item()) > 100 * abs(g_mm.item())


def test_gradient_penalty_zero_for_unit_lipschitz_linear_critic():
    class Lin(nn.Module):
        def forward(self, x, labels=None):
            return x @ torch.tensor([0.6, 0.8])  # ||w|| = 1

    real, fake = torch.randn(8, 2), torch.randn(8, 2)
    assert gradient_penalty(Lin(), real, fake).item() == pytest.approx(0.0, abs=1e-10)
    # R1 = ||w||^2 / 2
    assert r1_penalty(Lin(), real).item() == pytest.approx(0.5)
