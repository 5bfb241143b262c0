"""FID, KID, Inception Score and precision/recall through torch-fidelity, from a local weights file.

The numbers are torch-fidelity's own: its "inception-v3-compat" extractor (the TF-Inception port that
published FIDs use) and its `*_features_to_metric` functions, with its published defaults (KID: 100
subsets of 1000, polynomial kernel; IS: 10 splits; PRC: k = 3). gankit only adds the offline part:
the weights come from a path the user gives (never a download), are checked against the official
file's sha256 prefix; the fid/kid/is/prc adapters (gankit.metric_adapters) record each result
with the protocol it was computed under.
References: Heusel et al. 2017 (FID), Binkowski et al. 2018 (KID), Salimans et al. 2016 (IS),
Kynkaanniemi et al. 2019 (precision/recall).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from gankit.utils import GankitError, get_device

# torch-fidelity's release file (`URL_INCEPTION_V3` in torch_fidelity/feature_extractor_inceptionv3.py).
# Torch hub names files `name-<first 8+ hex of sha256>.ext`, so the official file's sha256 starts with
# the 8 hex digits in its name; that prefix is all an offline check can know.
INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
INCEPTION_URL = (
    f"https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/{INCEPTION_FILE}"
)
INCEPTION_SHA256_PREFIX = "6726825d"
ENV_VAR = "GANKIT_INCEPTION_WEIGHTS"

_FEATURES = (
    "2048",
    "logits_unbiased",
)  # pool features (fid, kid, prc) and logits without bias (is)
_PRC_BATCH = 1024  # rows of a distance block: bounds PRC memory at 1024 * N floats, same result


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    except OSError as e:
        raise GankitError(f"cannot read Inception weights {path}: {e.strerror or e}") from e
    return h.hexdigest()


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The file as a dict of tensors, loaded with weights_only=True so a pickle cannot run code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise GankitError(
            f"Inception weights {path} are not a readable PyTorch state dict ({_one_line(e)})"
        ) from e
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise GankitError(
            f"Inception weights {path} hold a {type(state).__name__}, not a state dict of tensors"
        )
    return dict(state)


def resolve_inception_weights(
    path: str | os.PathLike | None = None, *, verify: bool = True
) -> tuple[Path, str]:
    """Find, hash and check the Inception-v3 weights file; nothing is ever downloaded.

    Args:
        path: the file; None reads $GANKIT_INCEPTION_WEIGHTS.
        verify: require the official file (sha256 starting with INCEPTION_SHA256_PREFIX). With
            False any state dict that fits the architecture is accepted, but the numbers are then
            not comparable to published ones.

    Returns:
        (path, full sha256 hex digest), the digest to record with every result.
    """
    source = "--inception-weights"
    if not path:
        path, source = os.environ.get(ENV_VAR) or None, ENV_VAR
    if path is None:
        raise GankitError(
            f"fid/kid/is/prc need Inception-v3 weights: download {INCEPTION_URL} and pass "
            f"--inception-weights FILE or set {ENV_VAR}"
        )
    p = Path(path).expanduser()
    if not p.is_file():
        what = "is a directory, not a file" if p.is_dir() else "does not exist"
        raise GankitError(
            f"Inception weights {str(p)!r} (from {source}) {what}; download {INCEPTION_URL} "
            f"and pass its path with --inception-weights FILE or {ENV_VAR}"
        )
    digest = _sha256(p)
    if verify and not digest.startswith(INCEPTION_SHA256_PREFIX):
        raise GankitError(
            f"Inception weights {p} have sha256 {digest[:8]}..., expected {INCEPTION_SHA256_PREFIX}... "
            f"(the official {INCEPTION_FILE} from {INCEPTION_URL}); use that file, or pass "
            f"--inception-unverified to accept other weights (numbers then not comparable to "
            f"published ones)"
        )
    if not verify:
        _read_state_dict(p)  # the official file is known-good; any other must at least load
    return p, digest


def _load_extractor(weights: Path | str, device: torch.device) -> nn.Module:
    """torch-fidelity's InceptionV3 extractor with `weights`, in eval mode on `device`."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    weights = Path(weights).expanduser()
    # torch-fidelity loads the file with weights_only=False (arbitrary pickle), so it only sees
    # files that already loaded as plain tensors here.
    _read_state_dict(weights)
    try:
        extractor = FeatureExtractorInceptionV3(
            "inception-v3-compat", list(_FEATURES), feature_extractor_weights_path=str(weights)
        )
    except RuntimeError as e:  # load_state_dict(strict=True): missing/unexpected keys, bad shapes
        msg = " ".join(str(e).split())
        raise GankitError(
            f"Inception weights {weights} do not fit torch-fidelity's Inception-v3 ({msg[:300]})"
        ) from e
    return extractor.to(device)


def load_inception(weights: Path | str, device: str | torch.device = "cpu") -> nn.Module:
    """The extractor of `weights`, loaded once to serve several `inception_features` calls."""
    return _load_extractor(weights, get_device(str(device)))


def _check_images(x: Tensor | np.ndarray) -> None:
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.dtype not in (torch.uint8, np.uint8):
        raise ValueError(
            f"expected uint8 images (N, C, H, W) with C = 1 or 3, got {tuple(x.shape)} {x.dtype}; "
            "convert [-1, 1] floats with gankit.data.images.to_uint8"
        )
    if x.shape[0] == 0:
        raise ValueError("no images to extract features from (N = 0)")


@torch.inference_mode()
def _extract(
    extractor: nn.Module, x: Tensor | np.ndarray, batch_size: int, progress: bool
) -> dict[str, Tensor]:
    from tqdm.auto import tqdm

    _check_images(x)
    device = next(extractor.parameters()).device
    out: dict[str, list[Tensor]] = {name: [] for name in _FEATURES}
    starts = range(0, x.shape[0], batch_size)
    for i in tqdm(starts, disable=None if progress else True, desc="inception", unit="batch"):
        xb = x[i : i + batch_size]
        if isinstance(xb, np.ndarray):
            xb = torch.from_numpy(np.array(xb))  # a copy: memmaps are read-only
        xb = xb.to(device).expand(-1, 3, -1, -1)  # gray -> RGB; the extractor resizes to 299 itself
        for name, feats in zip(_FEATURES, extractor(xb), strict=True):
            out[name].append(feats.double().cpu())
    return {name: torch.cat(chunks) for name, chunks in out.items()}


def inception_features(
    x: Tensor | np.ndarray,
    weights: Path | str | nn.Module,
    *,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> dict[str, Tensor]:
    """Inception-v3 features of uint8 images, computed by torch-fidelity's "inception-v3-compat".

    Args:
        x: (N, C, H, W) uint8 in [0, 255], C = 1 (repeated to RGB) or 3; any H, W (bilinearly
            resized to 299 the TF-1.x way inside the extractor). A numpy memmap is read per batch.
        weights: state dict file, e.g. from `resolve_inception_weights`, or an extractor from
            `load_inception` (then `device` is the extractor's).

    Returns:
        {"2048": (N, 2048) pool features, "logits_unbiased": (N, 1008) logits without the fc bias},
        float64 on the CPU.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    _check_images(x)
    if isinstance(weights, nn.Module):
        return _extract(weights, x, batch_size, progress)
    extractor = _load_extractor(weights, get_device(str(device)))
    return _extract(extractor, x, batch_size, progress)


def _check_features(a: Tensor, b: Tensor, min_rows: int, what: str) -> tuple[Tensor, Tensor]:
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"{what} needs two (N, D) feature sets with the same D, got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        )
    if min(len(a), len(b)) < min_rows:
        raise ValueError(
            f"{what} needs at least {min_rows} samples per set, got {len(a)} and {len(b)}"
        )
    return a.detach().cpu().double(), b.detach().cpu().double()


def frechet_distance(feats_a: Tensor, feats_b: Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (FID on Inception "2048").

    ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)), by torch-fidelity's statistics and
    metric functions (unbiased covariances, eigenvalue form of the trace of the square root).

    Args:
        feats_a: (N, D) features, N >= 2; any feature space, not only Inception's.
        feats_b: (M, D) features, M >= 2.

    Returns:
        The distance, >= 0 up to round-off (slightly negative for near-identical sets).
    """
    from torch_fidelity.metric_fid import (
        KEY_METRIC_FID,
        fid_features_to_statistics,
        fid_statistics_to_metric,
    )

    feats_a, feats_b = _check_features(feats_a, feats_b, 2, "frechet_distance")
    stats = [fid_features_to_statistics(f) for f in (feats_a, feats_b)]
    for s in stats:
        s["sigma"] = np.atleast_2d(s["sigma"])  # np.cov of one feature is 0-d
    return fid_statistics_to_metric(*stats, verbose=False)[KEY_METRIC_FID]


def kernel_inception_distance(
    feats_a: Tensor,
    feats_b: Tensor,
    *,
    subset_size: int = 1000,
    subsets: int = 100,
    seed: int = 0,
) -> tuple[float, float]:
    """KID: unbiased MMD^2 with the cubic polynomial kernel, over random subsets (torch-fidelity).

    Args:
        feats_a: (N, D) features, N >= 2.
        feats_b: (M, D) features, M >= 2.
        subset_size: samples per subset, clipped to min(N, M) (record the clipped value).
        subsets: number of subsets drawn without replacement, seeded by `seed`.

    Returns:
        (mean, std) of the subset estimates; the mean can be slightly negative for equal laws.
    """
    from torch_fidelity.metric_kid import (
        KEY_METRIC_KID_MEAN,
        KEY_METRIC_KID_STD,
        kid_features_to_metric,
    )

    feats_a, feats_b = _check_features(feats_a, feats_b, 2, "kernel_inception_distance")
    if subset_size < 2 or subsets < 1:
        raise ValueError(
            f"KID needs subset_size >= 2 and subsets >= 1, got {subset_size}, {subsets}"
        )
    out = kid_features_to_metric(
        feats_a,
        feats_b,
        kid_subset_size=min(subset_size, len(feats_a), len(feats_b)),
        kid_subsets=subsets,
        rng_seed=seed % 2**32,  # numpy RandomState's range
        verbose=False,
    )
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


def inception_score(logits: Tensor, *, splits: int = 10, seed: int = 0) -> tuple[float, float]:
    """Inception Score exp(E KL(p(y|x) || p(y))) over `splits` shuffled chunks (torch-fidelity).

    Args:
        logits: (N, K) class logits (Inception's "logits_unbiased"), N >= splits.
        splits: chunks the score is computed on; the shuffle is seeded by `seed`.

    Returns:
        (mean, std) over chunks, each in [1, K].
    """
    from torch_fidelity.metric_isc import (
        KEY_METRIC_ISC_MEAN,
        KEY_METRIC_ISC_STD,
        isc_features_to_metric,
    )

    if logits.ndim != 2 or splits < 1 or len(logits) < splits:
        raise ValueError(
            f"inception_score needs (N, K) logits with N >= splits >= 1, got {tuple(logits.shape)} "
            f"and splits={splits}"
        )
    out = isc_features_to_metric(
        logits.detach().cpu().double(), splits=splits, shuffle=True, rng_seed=seed % 2**32
    )
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


def precision_recall(feats_fake: Tensor, feats_real: Tensor, *, k: int = 3) -> dict[str, float]:
    """Improved precision and recall (k-NN manifolds, Kynkaanniemi et al. 2019; torch-fidelity).

    Precision: fraction of fakes inside some real sample's k-NN ball; recall: fraction of reals
    inside some fake's ball. Order matters: fake first.

    Args:
        feats_fake: (N, D) features of generated samples, N > k.
        feats_real: (M, D) features of real samples, M > k.
        k: neighbourhood size defining each ball's radius.

    Returns:
        {"precision", "recall", "f_score"}, each in [0, 1].
    """
    from torch_fidelity.metric_prc import prc_features_to_metric

    if k < 1:
        raise ValueError(f"precision_recall needs k >= 1, got {k}")
    feats_fake, feats_real = _check_features(feats_fake, feats_real, k + 1, "precision_recall")
    out = prc_features_to_metric(
        feats_fake,
        feats_real,
        prc_neighborhood=k,
        prc_batch_size=_PRC_BATCH,
        save_cpu_ram=True,  # blockwise distances: the full (N, M) matrices do not fit for 50k
        verbose=False,
    )
    return {key: float(out[key]) for key in ("precision", "recall", "f_score")}
