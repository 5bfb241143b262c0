"""FID/KID/IS/PRC through torch-fidelity: closed forms on hand-built features, offline weight
resolution, and the Inception plumbing on generated (random-init) weights, never a download."""

from __future__ import annotations

import hashlib
import math
import socket
import urllib.request

import numpy as np
import pytest
import torch
from scipy import linalg
from torch import nn

from gankit.metrics import fidelity
from gankit.metrics.fidelity import (
    frechet_distance,
    inception_score,
    kernel_inception_distance,
    precision_recall,
    resolve_inception_weights,
)
from gankit.utils import GankitError


def _no_network(*args, **kwargs):
    raise AssertionError("gankit tried the network")


@pytest.fixture
def no_network(monkeypatch):
    """Every way the code under test could fetch weights raises instead."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    monkeypatch.setattr(socket.socket, "connect", _no_network)
    monkeypatch.setattr(urllib.request, "urlopen", _no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", _no_network)
    monkeypatch.setattr(fe, "load_state_dict_from_url", _no_network)  # bound at its import


def _write_random_inception_weights(path, seed: int = 0) -> None:
    """A random-init state dict with exactly the keys/shapes torch-fidelity's InceptionV3 loads.

    The extractor always loads weights in its constructor; a subclass whose load_state_dict keeps
    the random init builds the modules from an empty file without touching the network.
    """
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Untrained(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None

    empty = path.with_suffix(".empty")
    torch.save({}, empty)
    net = Untrained("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(empty))
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            # He init keeps activations O(1) through ~40 conv+BN(identity)+ReLU layers, so the
            # features are not vanishingly small (PyTorch's default init shrinks them ~6x a layer).
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=g)
    torch.save(net.state_dict(), path)


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("inception") / "random-inception.pth"
    _write_random_inception_weights(path)
    return path


def _with_moments(n: int, mean: np.ndarray, cov: np.ndarray, seed: int) -> torch.Tensor:
    """(n, D) points whose sample mean and unbiased sample covariance are exactly mean and cov."""
    z = np.random.default_rng(seed).standard_normal((n, len(mean)))
    z -= z.mean(0)
    z = (
        z @ np.linalg.inv(np.linalg.cholesky(np.atleast_2d(np.cov(z, rowvar=False)))).T
    )  # sample cov = I
    return torch.from_numpy(mean + z @ np.linalg.cholesky(cov).T)


def _fid_closed_form(mu1, s1, mu2, s2) -> float:
    covmean = linalg.sqrtm(s1 @ s2).real  # scipy's Schur-based sqrt, independent of torch-fidelity
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * covmean))


# --- Fréchet distance ------------------------------------------------------------------------------


def test_frechet_distance_exact_on_given_moments():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((4, 4)))
    a, b = np.array([1.0, 2.0, 0.5, 3.0]), np.array([4.0, 0.25, 1.0, 2.0])
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T  # commuting: sqrt(S1 S2) = Q sqrt(ab) Q^T
    mu1, mu2 = np.array([0.0, 1.0, -1.0, 2.0]), np.array([1.0, 1.0, 0.0, 0.0])
    x1, x2 = _with_moments(50, mu1, s1, 1), _with_moments(80, mu2, s2, 2)
    expected = float(((mu1 - mu2) ** 2).sum() + (a + b - 2 * np.sqrt(a * b)).sum())
    assert _fid_closed_form(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-10)
    assert frechet_distance(x1, x2) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(x2, x1) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_approaches_closed_form_for_large_n():
    g = torch.Generator().manual_seed(0)
    mu1, mu2 = torch.tensor([0.0, 0.0, 1.0]), torch.tensor([1.0, -1.0, 1.0])
    sd1, sd2 = torch.tensor([1.0, 2.0, 0.5]), torch.tensor([0.5, 2.0, 1.5])
    n = 200_000
    x1 = mu1 + sd1 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    x2 = mu2 + sd2 * torch.randn(n, 3, generator=g, dtype=torch.float64)
    expected = ((mu1 - mu2) ** 2).sum() + ((sd1 - sd2) ** 2).sum()  # diagonal: sqrt is elementwise
    assert float(expected) == pytest.approx(2.0 + 0.25 + 1.0 + 0.0)
    assert frechet_distance(x1, x2) == pytest.approx(float(expected), abs=0.03)


def test_frechet_distance_identical_symmetric_and_1d():
    x = torch.randn(100, 8, dtype=torch.float64)
    y = torch.randn(120, 8, dtype=torch.float64) * 1.5 + 0.3
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(x, y) == pytest.approx(frechet_distance(y, x), rel=1e-9)
    assert frechet_distance(x, y) > 1.0
    a, b = (
        _with_moments(10, np.array([1.0]), np.array([[4.0]]), 0),
        torch.full((5, 1), 3.0, dtype=torch.float64),
    )
    b[:2] = 1.0  # mean 2.2, std of b known: compare to (m1-m2)^2 + (s1-s2)^2
    sb = float(b.std())
    assert frechet_distance(a, b) == pytest.approx((1 - 2.2) ** 2 + (2 - sb) ** 2, rel=1e-9)
    assert frechet_distance(a.float(), b.float()) == pytest.approx(frechet_distance(a, b), rel=1e-5)


def test_frechet_distance_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same D"):
        frechet_distance(torch.randn(5, 3), torch.randn(5, 4))
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(torch.randn(1, 3), torch.randn(5, 3))


# --- KID, IS, precision/recall ---------------------------------------------------------------------


def test_kid_point_masses_closed_form():
    # All mass at u = 0 vs v = 1: k(x, y) = (x.y / d + 1)^3, so MMD^2 = k(u,u) + k(v,v) - 2 k(u,v)
    # = 1 + 8 - 2 = 7 exactly, whatever the subsets.
    d = 16
    mean, std = kernel_inception_distance(torch.zeros(30, d), torch.ones(40, d), subset_size=10)
    assert mean == pytest.approx(7.0, rel=1e-12) and std == pytest.approx(0.0, abs=1e-12)


def test_kid_same_vs_shifted_and_seeded():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(200, 16, generator=g), torch.randn(200, 16, generator=g)
    kid = [kernel_inception_distance(a, b + s, subset_size=100, subsets=20)[0] for s in (0, 0.3, 1)]
    assert abs(kid[0]) < 0.05 < 0.15 < kid[1] < kid[2] and kid[2] > 5  # ~0, ~0.3, ~7
    assert kernel_inception_distance(a, b, subset_size=100, seed=3) == kernel_inception_distance(
        a, b, subset_size=100, seed=3
    )
    assert kernel_inception_distance(a, b, subset_size=100, seed=3) != kernel_inception_distance(
        a, b, subset_size=100, seed=4
    )
    # subset_size 1000 > n is clipped to n: every subset is the whole set, so std is 0
    full_mean, full_std = kernel_inception_distance(a[:50], b[:50])
    assert math.isfinite(full_mean) and full_std == pytest.approx(0.0, abs=1e-12)


def test_inception_score_closed_forms():
    k, dim = 5, 1008
    labels = torch.arange(100) % k
    # p(y|x) one-hot up to e^-40: exact zeros would make log p(y) = -inf for the unused classes
    # (0 * inf = nan in torch-fidelity's formula), and real Inception logits never give them.
    onehot = 40.0 * torch.nn.functional.one_hot(labels, dim).double()
    mean, std = inception_score(onehot, splits=1)
    assert mean == pytest.approx(k, rel=1e-12) and std == 0.0
    # 10 shuffled splits of 10: each split's marginal is a little uneven, so IS <= K per split
    mean10, _ = inception_score(onehot, splits=10, seed=0)
    assert 3.0 < mean10 <= k + 1e-9
    assert inception_score(onehot, splits=10, seed=0) == inception_score(onehot, seed=0)
    assert inception_score(onehot, seed=0) != inception_score(onehot, seed=1)
    assert inception_score(torch.randn(1, dim).repeat(40, 1), splits=4) == pytest.approx((1.0, 0.0))
    with pytest.raises(ValueError, match="N >= splits"):
        inception_score(torch.randn(5, dim), splits=10)


def test_precision_recall_point_clouds():
    line = torch.stack(
        [torch.arange(10.0), torch.zeros(10)], dim=1
    ).double()  # real: 0..9 on a line
    assert precision_recall(line, line) == {"precision": 1.0, "recall": 1.0, "f_score": 1.0}
    far = precision_recall(line + 100.0, line)
    assert far == {"precision": 0.0, "recall": 0.0, "f_score": 0.0}
    # Fakes: copies of real 0..4 plus 5 points far away. Precision = 5/10. Fake k=3 radii are 3, 2,
    # 2, 2, 3 (at 0..4), so the fake balls cover real 0..7: recall = 8/10.
    fake = torch.cat([line[:5], line[:5] + torch.tensor([0.0, 100.0])])
    out = precision_recall(fake, line, k=3)
    # torch-fidelity averages the 0/1 hits in float32
    assert out["precision"] == 0.5 and out["recall"] == pytest.approx(0.8, abs=1e-7)
    assert out["f_score"] == pytest.approx(2 * 0.5 * 0.8 / 1.3)
    with pytest.raises(ValueError, match="at least 4 samples"):
        precision_recall(line[:3], line)


# --- weights resolution: offline, loud, one line ----------------------------------------------------


def test_constants_match_torch_fidelity():
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    assert fidelity.INCEPTION_URL == URL_INCEPTION_V3
    assert URL_INCEPTION_V3.endswith("/" + fidelity.INCEPTION_FILE)
    assert f"-{fidelity.INCEPTION_SHA256_PREFIX}." in fidelity.INCEPTION_FILE  # torch hub naming


def _error(fn, *args, **kwargs) -> str:
    with pytest.raises(GankitError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


@pytest.mark.usefixtures("no_network")
def test_resolve_errors(monkeypatch, tmp_path):
    monkeypatch.delenv("GANKIT_INCEPTION_WEIGHTS", raising=False)
    with pytest.raises(AssertionError, match="network"):  # the guard is live
        torch.hub.load_state_dict_from_url(fidelity.INCEPTION_URL)
    assert _error(resolve_inception_weights) == (
        f"fid/kid/is/prc need Inception-v3 weights: download {fidelity.INCEPTION_URL} and pass "
        "--inception-weights FILE or set GANKIT_INCEPTION_WEIGHTS"
    )
    missing = tmp_path / "nope.pth"
    msg = _error(resolve_inception_weights, str(missing))
    assert str(missing) in msg and fidelity.INCEPTION_URL in msg and "does not exist" in msg
    assert "is a directory" in _error(resolve_inception_weights, str(tmp_path))

    other = tmp_path / "other.pth"
    torch.save({"w": torch.ones(3)}, other)
    digest = hashlib.sha256(other.read_bytes()).hexdigest()
    msg = _error(resolve_inception_weights, str(other))
    assert str(other) in msg and digest[:8] in msg and "6726825d" in msg
    assert "--inception-unverified" in msg and fidelity.INCEPTION_URL in msg
    assert resolve_inception_weights(str(other), verify=False) == (other, digest)

    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a torch file at all")
    assert "not a readable PyTorch state dict" in _error(
        resolve_inception_weights, str(junk), verify=False
    )
    listfile = tmp_path / "list.pth"
    torch.save([torch.ones(1)], listfile)
    assert "not a state dict" in _error(resolve_inception_weights, str(listfile), verify=False)


@pytest.mark.usefixtures("no_network")
def test_resolve_env_var(monkeypatch, tmp_path):
    env_file, arg_file = tmp_path / "env.pth", tmp_path / "arg.pth"
    torch.save({"a": torch.zeros(2)}, env_file)
    torch.save({"b": torch.zeros(2)}, arg_file)
    monkeypatch.setenv("GANKIT_INCEPTION_WEIGHTS", str(env_file))
    path, digest = resolve_inception_weights(verify=False)
    assert path == env_file and digest == hashlib.sha256(env_file.read_bytes()).hexdigest()
    assert resolve_inception_weights(str(arg_file), verify=False)[0] == arg_file  # flag wins
    monkeypatch.setenv("GANKIT_INCEPTION_WEIGHTS", str(tmp_path / "gone.pth"))
    assert "(from GANKIT_INCEPTION_WEIGHTS)" in _error(resolve_inception_weights)


@pytest.mark.usefixtures("no_network")
def test_weights_that_do_not_fit_and_bad_inputs(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(1008, 2048)}, bad)
    img = torch.zeros(2, 1, 8, 8, dtype=torch.uint8)
    assert "do not fit torch-fidelity's Inception-v3" in _error(
        fidelity.inception_features, img, bad
    )
    with pytest.raises(ValueError, match="uint8 images"):
        fidelity.inception_features(torch.zeros(2, 3, 8, 8), bad)
    with pytest.raises(ValueError, match="C = 1 or 3"):
        fidelity.inception_features(torch.zeros(2, 2, 8, 8, dtype=torch.uint8), bad)


# --- the fid/kid/is/prc adapters through an EvalContext ------------------------------------------


class _PixelFeatures(nn.Module):
    """Stands in for InceptionV3 (same input contract and output tuple, small feature sizes): the
    real network makes FID cost a 2048 x 2048 eigendecomposition, tens of seconds on this CPU."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.proj = nn.Parameter(torch.randn(3 * 8 * 8, 16 + 10, generator=g) / 64)
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x):
        assert x.dtype == torch.uint8 and x.shape[1] == 3  # torch-fidelity's input contract
        self.calls.append(tuple(x.shape))
        f = x.double().flatten(1) @ self.proj.double()
        return f[:, :16], f[:, 16:]  # ("2048", "logits_unbiased")


class _GrayG(nn.Module):
    """A generator of (1, size, size) images in [-1, 1], a fixed function of z."""

    z_dim = 4

    def __init__(self, size: int = 8):
        super().__init__()
        self.size = size
        g = torch.Generator().manual_seed(1)
        self.w = nn.Parameter(torch.randn(self.z_dim, size * size, generator=g))

    def forward(self, z, labels=None):
        return torch.tanh(z @ self.w).view(-1, 1, self.size, self.size)


class _Images:
    """A data source of image shape whose reference split is the images given (labels None)."""

    def __init__(self, real: torch.Tensor, shape: tuple[int, ...] = (1, 8, 8)):
        self.shape, self._real = shape, real

    def held_out_labeled(self, n, seed):
        return self._real[:n], None


def _context(real, weights, *, n, seed=0, size=8, shape=(1, 8, 8)):
    """A context on a live generator, as training would build one."""
    from gankit.config import Config
    from gankit.evaluate import EvalContext
    from gankit.factory import RunModels

    cfg = Config()
    cfg.model.z_dim = _GrayG.z_dim
    models = RunModels(cfg, (1, size, size), 0, {None: (_GrayG(size), nn.Linear(1, 1))})
    options = {"n": n, "inception_weights": str(weights), "inception_unverified": True}
    return EvalContext.from_models(models, _Images(real, shape), seed=seed, options=options)


@pytest.fixture
def stub(monkeypatch, tmp_path):
    """(stand-in extractor, a weights file it is "loaded" from): everything else is production."""
    extractor = _PixelFeatures()
    monkeypatch.setattr(fidelity, "_load_extractor", lambda weights, device: extractor)
    weights = tmp_path / "w.pth"
    torch.save({"w": torch.zeros(1)}, weights)
    return extractor, weights


VALUES = ["fid", "kid_mean", "kid_std", "is_mean", "is_std", "precision", "recall", "f_score"]
NAMES = ["fid", "kid", "is", "prc"]


def _records(ctx) -> dict[str, dict]:
    from gankit.evaluate import evaluate

    return {
        name: {k: v for k, v in evaluate(ctx, name).items() if k != "seconds"} for name in NAMES
    }


def test_fidelity_adapters_protocol_and_seeds_with_stub_extractor(stub):
    extractor, weights = stub
    g = torch.Generator().manual_seed(0)
    real = torch.rand(9, 3, 8, 8, generator=g) * 2 - 1  # RGB references, 9 < n: all of them
    digest = hashlib.sha256(weights.read_bytes()).hexdigest()
    ctx = _context(real, weights, n=12)
    out = _records(ctx)
    # one extraction per image set for the four metrics, gray fakes repeated to RGB
    assert extractor.calls == [(12, 3, 8, 8), (9, 3, 8, 8)]
    flat = {k: v for r in out.values() for k, v in r.items()}
    assert all(math.isfinite(flat[k]) for k in VALUES) and flat["fid"] > 0
    for name, r in out.items():
        assert r["metric"] == name and r["seed"] == 0 and r["floor"] is False
        assert r["n_fake"] == 12 and r["weights_sha256"] == digest
        assert r["extractor"].startswith("inception-v3-compat (torch-fidelity 0.")
        if name != "is":
            assert r["n_real"] == 9 and r["reference"] == "test"
    assert out["kid"]["kid_subset_size"] == 9 and out["is"]["is_splits"] == 10
    assert out["prc"]["prc_k"] == 3 and out["prc"]["prc_features"] == "inception-v3 pool"
    assert _records(_context(real, weights, n=12)) == out  # a fresh context, the same seed

    reseeded = _context(real, weights, n=12, seed=1)
    kid = _records(reseeded)["kid"]
    assert kid["seed"] == 1 and kid["kid_mean"] != out["kid"]["kid_mean"]
    # the seed reaches KID's subset draw, not only the noise: the record is KID of its own
    # features under seed 1, which differs from the same features under seed 0
    fake_f, real_f = (reseeded.cache[("inception", w)]["2048"] for w in ("fake", "real"))
    assert kid["kid_mean"] == kernel_inception_distance(fake_f, real_f, subset_size=9, seed=1)[0]
    assert kid["kid_mean"] != kernel_inception_distance(fake_f, real_f, subset_size=9, seed=0)[0]


def test_a_gray_image_is_its_rgb_repetition_and_is_needs_no_real_images(stub):
    from gankit.evaluate import evaluate

    extractor, weights = stub
    fake = _context(None, weights, n=12).fake(12)[0]
    other = torch.rand(12, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    yardstick = evaluate(_context(other, weights, n=12), "fid")["fid"]
    as_rgb = _context(fake.repeat(1, 3, 1, 1), weights, n=12)  # the fakes themselves, in RGB
    fid, prc = evaluate(as_rgb, "fid")["fid"], evaluate(as_rgb, "prc")
    # the same features, so FID 0 up to round-off of a rank-deficient 16-d covariance
    assert yardstick > 0 and abs(fid) < 1e-6 * yardstick
    assert (prc["precision"], prc["recall"]) == (1.0, 1.0)

    extractor.calls.clear()
    only_is = evaluate(_context(None, weights, n=4, seed=1), "is")  # no reference images at all
    assert extractor.calls == [(4, 3, 8, 8)]  # IS needs no real images
    assert only_is["is_splits"] == 4 and only_is["reference"] == "none" and "n_real" not in only_is
    assert only_is["is_mean"] >= 1.0 - 1e-9 and only_is["seed"] == 1


def test_unknown_names_and_toy_data_are_one_line_errors(stub):
    from gankit.evaluate import evaluate

    _, weights = stub
    ctx = _context(torch.zeros(4, 3, 8, 8), weights, n=4)
    with pytest.raises(
        GankitError, match="unknown metric 'lpips'; choose from: .*fid, kid, is, prc"
    ):
        evaluate(ctx, "lpips")
    toy = _context(torch.zeros(4, 2), weights, n=4, shape=(2,))
    for name in NAMES:
        assert "needs an image dataset" in _error(evaluate, toy, name)


@pytest.mark.slow
@pytest.mark.usefixtures("no_network")
def test_fidelity_adapters_real_architecture_on_generated_weights(random_weights):
    # ~1 min on 2 shared cores: 8 images through the 299-px network and one 2048-d FID.
    from gankit.data.image_source import to_uint8

    digest = hashlib.sha256(random_weights.read_bytes()).hexdigest()
    g = torch.Generator().manual_seed(0)
    real = torch.rand(4, 3, 20, 20, generator=g) * 2 - 1  # RGB, another size than the fakes
    ctx = _context(real, random_weights, n=4, size=16, shape=(1, 16, 16))  # gray 16 px fakes
    out = {k: v for r in _records(ctx).values() for k, v in r.items()}
    assert all(math.isfinite(out[k]) for k in VALUES), out
    assert out["fid"] > 0 and out["is_mean"] >= 1.0 - 1e-9
    assert (out["n_fake"], out["n_real"], out["kid_subset_size"], out["is_splits"]) == (4, 4, 4, 4)
    assert out["weights_sha256"] == digest and out["prc_k"] == 3

    # Same images again, in other batches: the same features, so the same Inception Score.
    feats = fidelity.inception_features(to_uint8(ctx.fake(4)[0]), random_weights, batch_size=3)
    assert feats["2048"].shape == (4, 2048) and feats["logits_unbiased"].shape == (4, 1008)
    assert feats["2048"].dtype == torch.float64 and feats["2048"].std(0).mean() > 1e-3
    is_again = inception_score(feats["logits_unbiased"], splits=4)
    assert is_again == pytest.approx((out["is_mean"], out["is_std"]), rel=1e-6, abs=1e-12)
