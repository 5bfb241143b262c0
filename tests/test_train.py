"""The pair's update: D and G updates, G:D ratios, the fast MLP path, the checkpoint, EMA (the
loop's contract, resume / NaN / signals for every mode, is tests/test_contract.py)."""

from __future__ import annotations

import copy

import pytest
import torch

from gankit.checkpoint import load_checkpoint
from gankit.config import ConfigError, load_config
from gankit.fastmlp import AdamKernel, eligible, make_fast_step
from gankit.pair import build_pair, ema_update
from gankit.steps import train_step
from gankit.trainer import train


def _params(m):
    return [p.detach().clone() for p in m.parameters()]


def _batches(cfg, n):
    from gankit.data import build_data

    src = build_data(cfg.data.name, cfg.data.params, cfg.seed, cfg.data.batch_size, 64)
    return [src.batch(i)[0] for i in range(n)], src.shape


def test_train_step_updates_both_networks(tiny_cfg):
    reals, shape = _batches(tiny_cfg, 1)
    state = build_pair(tiny_cfg, shape, torch.device("cpu"))
    g0, d0 = _params(state.G), _params(state.D)
    out = train_step(state, reals, [None], tiny_cfg)
    assert set(out) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert all(torch.isfinite(v) for v in out.values())
    assert all(not torch.equal(a, b) for a, b in zip(g0, state.G.parameters(), strict=True))
    assert all(not torch.equal(a, b) for a, b in zip(d0, state.D.parameters(), strict=True))
    assert state.step == 1
    assert all(p.requires_grad for p in state.D.parameters())  # re-enabled after the G update


@pytest.mark.parametrize(("d_steps", "g_steps"), [(3, 1), (1, 2)])
def test_update_ratio_is_honoured(tiny_overrides, d_steps, g_steps):
    cfg = load_config("toy_ring", [*tiny_overrides, f"optim.d_steps={d_steps}",
                                   f"optim.g_steps={g_steps}"])  # fmt: skip
    reals, shape = _batches(cfg, d_steps)
    state = build_pair(cfg, shape, torch.device("cpu"))
    train_step(state, reals, [None] * d_steps, cfg)
    step_of = lambda opt: int(next(iter(opt.state.values()))["step"])  # noqa: E731
    assert step_of(state.opt_d) == d_steps
    assert step_of(state.opt_g) == g_steps


@pytest.mark.parametrize("loss", ["nonsaturating", "minimax"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize(("d_steps", "g_steps"), [(1, 1), (2, 1), (1, 2)])
def test_fast_mlp_step_matches_autograd(tiny_overrides, loss, smoothing, d_steps, g_steps):
    cfg = load_config("toy_ring", [*tiny_overrides, f"loss.name={loss}",
                                   f"loss.label_smoothing={smoothing}", f"optim.d_steps={d_steps}",
                                   f"optim.g_steps={g_steps}", "model.d.activation=leaky_relu",
                                   "model.g.output=tanh"])  # fmt: skip
    reals, shape = _batches(cfg, 5 * d_steps)
    slow = build_pair(cfg, shape, torch.device("cpu"))
    fast = build_pair(cfg, shape, torch.device("cpu"))
    assert eligible(fast.G, fast.D, cfg) is None
    step = make_fast_step(fast, cfg)
    for i in range(5):
        rs = reals[i * d_steps : (i + 1) * d_steps]
        a = train_step(slow, rs, [None] * d_steps, cfg)
        b = step(fast, rs, [None] * d_steps, cfg)
        for k in a:
            torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6)
    for m_slow, m_fast in ((slow.G, fast.G), (slow.D, fast.D)):
        for p, q in zip(m_slow.parameters(), m_fast.parameters(), strict=True):
            torch.testing.assert_close(p, q, rtol=1e-4, atol=1e-6)


def test_fast_path_declines_what_it_cannot_do_exactly(tiny_overrides):
    for extra, reason in [
        ("model.d.dropout=0.5", "layers other than"),
        ("model.g.batchnorm=true", "layers other than"),
        ("loss.name=hinge", "loss 'hinge'"),
        ("loss.gp_weight=1.0", "penalties"),
        ("model.num_classes=3", "unconditional"),
    ]:
        cfg = load_config("toy_ring", [*tiny_overrides, extra])
        state = build_pair(cfg, (2,), torch.device("cpu"))
        assert reason in eligible(state.G, state.D, cfg)


def test_adam_kernel_is_bit_identical_to_optimizer_step():
    torch.manual_seed(0)
    nets = [torch.nn.Linear(5, 3) for _ in range(2)]
    nets[1].load_state_dict(nets[0].state_dict())
    opts = [torch.optim.Adam(n.parameters(), 1e-2, betas=(0.5, 0.9), fused=True) for n in nets]
    kernel = AdamKernel(opts[1])
    assert kernel.simple
    for _ in range(4):
        x = torch.randn(7, 5)
        for n, o in zip(nets, opts, strict=True):
            o.zero_grad()
            n(x).pow(2).sum().backward()
        opts[0].step()
        kernel.step()
    for p, q in zip(nets[0].parameters(), nets[1].parameters(), strict=True):
        assert torch.equal(p, q)
    assert opts[0].state_dict()["state"][0]["step"] == opts[1].state_dict()["state"][0]["step"]


def test_resume_rejects_a_different_model(tmp_path, tiny_cfg, tiny_overrides):
    train(tiny_cfg, tmp_path / "r")
    other = load_config("toy_ring", [*tiny_overrides, "model.z_dim=3"])
    with pytest.raises(Exception, match="config differs from the run's in model.z_dim"):
        train(other, tmp_path / "r", resume=True)


def test_checkpoint_is_weights_only_loadable_and_complete(tmp_path, tiny_cfg):
    train(tiny_cfg, tmp_path / "r")
    ckpt = torch.load(tmp_path / "r" / "checkpoints" / "last.pt", weights_only=True)
    assert {"format", "gankit_version", "step", "config", "data_shape", "pairs", "rng"} <= set(ckpt)
    assert ckpt["format"] == 2 and ckpt["data_shape"] == [2]
    assert ckpt["step"] == 8 and ckpt["config"]["model"]["z_dim"] == tiny_cfg.model.z_dim
    assert {"torch", "python", "numpy"} <= set(ckpt["rng"])
    (entry,) = ckpt["pairs"]  # an ordinary run: one pair, key None
    assert entry["key"] is None and entry["step"] == 8 and set(entry["rng"]) == {"z"}
    assert {"G", "D", "G_ema", "opt_g", "opt_d"} <= set(entry) and entry["G_ema"] is None
    assert (tmp_path / "r" / "config.yaml").read_text().startswith("seed:")
    assert not list((tmp_path / "r" / "checkpoints").glob(".*tmp"))  # no temp files left


def test_snapshots_do_not_touch_batchnorm_statistics(tmp_path, tiny_overrides):
    from gankit.sample import generate

    cfg = load_config("toy_ring", [*tiny_overrides, "model.g.batchnorm=true"])
    state = build_pair(cfg, (2,), torch.device("cpu"))
    bn = next(m for m in state.G.modules() if isinstance(m, torch.nn.BatchNorm1d))
    before = copy.deepcopy(bn.state_dict())
    generate(state.G, torch.randn(32, cfg.model.z_dim))
    assert state.G.training  # train mode restored
    assert all(torch.equal(before[k], v) for k, v in bn.state_dict().items())


def test_ema_tracks_the_moving_average_and_is_what_gets_sampled(tmp_path, tiny_overrides):
    from gankit.factory import load_generator

    ema, net = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    expected = [0.9 * e + 0.1 * p for e, p in zip(ema.parameters(), net.parameters(), strict=True)]
    ema_update(ema, net, 0.9)
    for e, x in zip(ema.parameters(), expected, strict=True):
        torch.testing.assert_close(e, x)

    cfg = load_config("toy_ring", [*tiny_overrides, "train.ema_decay=0.5"])
    state = train(cfg, tmp_path / "r")
    ckpt = load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")
    (entry,) = ckpt["pairs"]
    assert not torch.equal(entry["G_ema"]["net.0.weight"], entry["G"]["net.0.weight"])
    G = load_generator(tmp_path / "r" / "checkpoints" / "last.pt")
    assert torch.equal(G.net[0].weight, state.G_ema.net[0].weight)


def test_lazy_r1_is_the_full_penalty_every_kth_d_update(tiny_overrides):
    """loss.r1_every = k: D update i carries k x (R1 + R2) when i % k == 0 and no penalty otherwise,
    so the lazy run equals a run whose penalty weights are switched by hand (k = 2 here)."""
    lazy = load_config("toy_ring", [*tiny_overrides, "loss.r1_weight=0.5", "loss.r2_weight=0.3",
                                    "loss.r1_every=2"])  # fmt: skip
    full = load_config("toy_ring", [*tiny_overrides, "loss.r1_weight=1.0", "loss.r2_weight=0.6"])
    none = load_config("toy_ring", [*tiny_overrides, "loss.r1_weight=0", "loss.r2_weight=0"])
    reals, shape = _batches(lazy, 4)
    a = build_pair(lazy, shape, torch.device("cpu"))
    b = build_pair(lazy, shape, torch.device("cpu"))
    for real, by_hand in zip(reals, [full, none, full, none], strict=True):
        train_step(a, [real], [None], lazy)
        train_step(b, [real], [None], by_hand)
    for p, q in zip([*a.G.parameters(), *a.D.parameters()],
                    [*b.G.parameters(), *b.D.parameters()], strict=True):  # fmt: skip
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    c = build_pair(full, shape, torch.device("cpu"))  # and it differs from R1 on every update
    for real in reals:
        train_step(c, [real], [None], full)
    assert not torch.equal(next(a.D.parameters()), next(c.D.parameters()))
    with pytest.raises(ConfigError, match="loss.r1_every"):
        load_config("toy_ring", ["loss.r1_every=0"])


class _NoStep:
    def step(self) -> None:
        pass


def test_simultaneous_step_takes_both_gradients_before_either_player_moves(tiny_overrides):
    """optim.simultaneous: G's update is the one against the D *before* this step's D update (an
    alternating step whose D does not move), and D's update is the alternating step's."""
    sim = load_config("toy_ring", [*tiny_overrides, "optim.simultaneous=true"])
    alt = load_config("toy_ring", tiny_overrides)
    reals, shape = _batches(sim, 1)
    a, frozen_d, b = (build_pair(sim, shape, torch.device("cpu")) for _ in range(3))
    train_step(a, reals, [None], sim)
    frozen_d.adam_d = _NoStep()
    train_step(frozen_d, reals, [None], alt)
    train_step(b, reals, [None], alt)
    for p, q in zip(a.G.parameters(), frozen_d.G.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    for p, q in zip(a.D.parameters(), b.D.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    assert not torch.equal(next(a.G.parameters()), next(b.G.parameters()))  # not alternating
    assert all(p.requires_grad for p in a.D.parameters())
    with pytest.raises(ConfigError, match="optim.simultaneous needs optim.d_steps=1"):
        load_config("toy_ring", ["optim.simultaneous=true", "optim.d_steps=2"])
    with pytest.raises(ConfigError, match="model.g.output_bias=data .* train.per_class"):
        load_config("gan2014_mnist", ["train.per_class=true"])


def test_a_loaded_generator_is_sampled_with_the_noise_it_was_trained_on(tmp_path, tiny_overrides):
    """gauss1d's G maps U(-1, 1): `sample(G, n)` on the loaded G must draw that noise, not the
    default N(0, 1) (which would spread its samples far past the learned range)."""
    from gankit.factory import load_generator
    from gankit.sample import generate, sample, sample_z

    cfg = load_config("gauss1d", [*tiny_overrides, "train.ema_decay=0"])
    train(cfg, tmp_path / "r")
    G = load_generator(tmp_path / "r" / "checkpoints" / "last.pt")
    assert G.z_dist == "uniform"
    drawn = sample(G, 256, generator=torch.Generator().manual_seed(3))
    uniform = generate(G, sample_z(256, 1, "uniform", torch.Generator().manual_seed(3)))
    normal = generate(G, sample_z(256, 1, "normal", torch.Generator().manual_seed(3)))
    assert torch.equal(drawn, uniform) and not torch.equal(drawn, normal)
    forced = sample(G, 256, z_dist="normal", generator=torch.Generator().manual_seed(3))
    assert torch.equal(forced, normal)
