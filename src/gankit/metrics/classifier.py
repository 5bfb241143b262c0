"""The domain classifier's files: a small CNN trained on a dataset's train split, the domain
feature extractor for MNIST-like data (the network and its statistics: `classifier_model`; the
fit: `classifier_fit`).

Its penultimate activations give an FID on domain features ("fid_clf"); its predictions give class
coverage, the KL of the predicted class histogram to uniform, a classifier-based Inception Score
(Salimans et al. 2016, arXiv:1606.03498) and, for conditional models, the accuracy of the requested
class.

The MNIST and Fashion-MNIST classifiers ship with gankit (gankit/weights/classifier_<dataset>.pt and
a .json sidecar), so their metrics are the same on every machine; the file is checked against
PACKAGED_SHA256 below. `gankit classifier fit DATASET --force` refits one locally into the cache
(<cache>/classifiers/<dataset>.pt + .json); while that local refit exists it is used instead and
the info says "source": "local". Other labelled datasets have only local fits. Every file is
self-describing and its sha256 is checked, so a metric never silently uses a different or damaged
classifier.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from gankit.metrics.classifier_fit import fit_classifier
from gankit.metrics.classifier_model import Classifier

# re-exported (`as` marks it): gankit.metric_adapters and gankit.observe import them from here
from gankit.metrics.classifier_model import class_histogram_stats as class_histogram_stats
from gankit.metrics.classifier_model import classifier_inception_score as classifier_inception_score
from gankit.metrics.classifier_model import conditional_accuracy as conditional_accuracy
from gankit.metrics.classifier_model import predict as predict
from gankit.utils import GankitError, atomic_save, write_json

FORMAT = "gankit-classifier"
FORMAT_VERSION = 1

# sha256 of the packaged classifiers (gankit/weights/classifier_<dataset>.pt), made with
# `gankit classifier fit DATASET --threads 1 --force` (4 epochs, seed 0) and `export_packaged`;
# their sidecars record the accuracy and the command. stacked_mnist uses mnist's.
PACKAGED_SHA256 = {
    "mnist": "3c8dcde93a091a61db2dbb81c79b7c80ec63d9289726757ec9a0ef9330553fcc",
    "fashion_mnist": "13cc318a85ef22c6966e473d4c8e2e765188d46563bb32b58ce6ea410f84903e",
}


def _sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_classifier(model: Classifier, info: dict[str, Any], path: str | os.PathLike) -> str:
    """Write {format, version, kwargs, state_dict, info} atomically to `path`; returns its sha256.

    The file holds only plain containers and tensors, so torch.load(path, weights_only=True) reads it.
    """
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    obj = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "kwargs": model.kwargs(),
        "state_dict": state,
        "info": json.loads(json.dumps(info, default=str)),  # plain types only, for weights_only
    }
    atomic_save(obj, path)
    return _sha256(path)


def load_classifier(
    path: str | os.PathLike, sha256: str | None = None, *, dataset: str = "", advice: str = ""
) -> tuple[Classifier, dict[str, Any]]:
    """The Classifier (eval mode, CPU) and info saved in `path`, checked against `sha256` when given.

    `dataset` only names the dataset in the error messages (default: the file's stem); `advice`
    replaces their default advice (re-run `gankit classifier fit DATASET`).
    """
    path = Path(path)
    refit = advice or f"re-run `gankit classifier fit {dataset or path.stem}`"
    if not path.is_file():
        raise GankitError(f"classifier file {path} does not exist; {refit}")
    if sha256 is not None:
        got = _sha256(path)
        if got != sha256:
            raise GankitError(
                f"classifier {path} is corrupt or was changed (sha256 {got[:12]}..., expected {sha256[:12]}...); {refit}"
            )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if obj.get("format") != FORMAT:
            raise ValueError(f"format {obj.get('format')!r} is not {FORMAT!r}")
        model = Classifier(**obj["kwargs"])
        model.load_state_dict(obj["state_dict"])
    except Exception as e:  # noqa: BLE001 (any failure to read it means the same thing to the user)
        raise GankitError(
            f"cannot read classifier {path} ({type(e).__name__}: {str(e).splitlines()[0]}); {refit}"
        ) from None
    return model.eval(), obj["info"]


def _cache_dir(cache_dir: str = "") -> Path:
    # same rule as the image cache in gankit.data.image_cache.cached_set
    return Path(cache_dir or os.environ.get("GANKIT_CACHE") or "~/.cache/gankit").expanduser()


def classifier_path(dataset: str, cache_dir: str = "") -> Path:
    """<cache>/classifiers/<dataset>.pt, where <cache> is cache_dir, $GANKIT_CACHE or ~/.cache/gankit.

    Its sidecar <dataset>.json records sha256, test accuracy, data cache path, gankit and torch
    versions, the command and the time. While both files exist, this local refit is the classifier
    the metrics use (see `get_classifier`).
    """
    return _cache_dir(cache_dir) / "classifiers" / f"{dataset}.pt"


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".json")


def packaged_path(dataset: str) -> Path:
    """gankit/weights/classifier_<dataset>.pt in the installed package (only mnist and fashion_mnist
    have one, see PACKAGED_SHA256); its sidecar is the same path with .json."""
    return Path(str(resources.files("gankit") / "weights" / f"classifier_{dataset}.pt"))


def _has_local(dataset: str, cache_dir: str) -> bool:
    # the sidecar is written after the file: both present = a complete local refit
    path = classifier_path(dataset, cache_dir)
    return path.is_file() and _sidecar(path).is_file()


def _read_sidecar(side: Path, advice: str) -> dict[str, Any]:
    try:
        meta = json.loads(side.read_text())
        if not isinstance(meta.get("sha256"), str):
            raise KeyError("sha256")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise GankitError(
            f"classifier sidecar {side} is unreadable ({type(e).__name__}); {advice}"
        ) from None
    return meta


def get_classifier(dataset: str, cache_dir: str = "") -> tuple[Classifier, dict[str, Any]]:
    """The classifier the metrics use for `dataset` (eval mode, CPU) and its info.

    A local refit in the cache (`gankit classifier fit DATASET --force`, see `classifier_path`) wins;
    otherwise the packaged classifier of mnist and fashion_mnist. Either file is verified against its
    sha256 (the packaged one against PACKAGED_SHA256): a damaged file is an error, never a silent
    fallback to the other one.

    Returns:
        The model and info: the fit's info plus the sidecar's, with "source" ("local" or "packaged"),
        "dataset", "path", "sha256", "test_acc", "epochs", "seed", ...
    """
    path = classifier_path(dataset, cache_dir)
    if _has_local(dataset, cache_dir):
        advice = f"re-run `gankit classifier fit {dataset} --force`"
        if dataset in PACKAGED_SHA256:
            advice += f", or delete {path} to use the packaged classifier"
        meta = _read_sidecar(_sidecar(path), advice)
        model, info = load_classifier(path, meta["sha256"], dataset=dataset, advice=advice)
        return model, {**info, **meta, "dataset": dataset, "path": str(path), "source": "local"}
    if dataset not in PACKAGED_SHA256:
        raise GankitError(
            f"no {dataset} classifier in {path}; run `gankit classifier fit {dataset}` first"
        )
    packaged = packaged_path(dataset)
    advice = (
        "gankit's packaged classifier is damaged or missing: reinstall gankit, or refit it locally "
        f"with `gankit classifier fit {dataset} --force`"
    )
    sha = PACKAGED_SHA256[dataset]
    model, info = load_classifier(packaged, sha, dataset=dataset, advice=advice)
    meta = _read_sidecar(_sidecar(packaged), advice)
    info = {**info, **meta, "dataset": dataset, "path": str(packaged), "sha256": sha}
    return model, {**info, "source": "packaged"}


def classifier_info(dataset: str, cache_dir: str = "") -> dict[str, Any] | None:
    """The (verified) info of the classifier `get_classifier` returns, or None when `dataset` has no
    local refit and no packaged classifier."""
    if not (_has_local(dataset, cache_dir) or dataset in PACKAGED_SHA256):
        return None
    return get_classifier(dataset, cache_dir)[1]


def _store_local(
    dataset: str, model: Classifier, info: dict[str, Any], path: Path, command: str
) -> dict[str, Any]:
    """Save a fresh fit as the local refit at `path` and write its sidecar; returns the sidecar."""
    from gankit.version import __version__

    side = _sidecar(path)
    side.unlink(missing_ok=True)  # until the new sidecar is written the entry is incomplete
    sha = save_classifier(model, info, path)
    keep = (
        "test_acc train_time_s epochs seed batch_size n_train n_test shape device threads".split()
    )
    meta = {"dataset": dataset, "path": str(path), "sha256": sha, **{k: info[k] for k in keep}}
    meta |= {"data_cache": info["data_cache"], "gankit": __version__, "torch": torch.__version__}
    meta |= {"command": command, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(meta, side)  # written last: the sidecar's presence marks a complete cache entry
    return meta


def fit_and_cache(
    dataset: str,
    data: Any,
    *,
    epochs: int = 4,
    seed: int = 0,
    batch_size: int = 128,
    cache_dir: str = "",
    force: bool = False,
    device: str | torch.device = "cpu",
    threads: int = 0,
    progress: bool = True,
    command: str = "",
) -> dict[str, Any]:
    """Fit the classifier of `dataset` on `data` and cache it as a local refit, unless `dataset`
    already has a classifier (a local refit or a packaged one) and not `force`.

    An existing classifier is reused whatever epochs/seed it was trained with (its info says which).

    Args:
        command: the command line that asked for the fit, recorded in the sidecar.

    Returns:
        The classifier's info (as `get_classifier`'s) plus "reused": whether an existing one was
        kept. A fresh fit returns its sidecar: {"dataset", "path", "sha256", "test_acc",
        "train_time_s", "epochs", "seed", "data_cache", "gankit", "torch", "threads", "command",
        "time", ...} plus "source": "local".
    """
    if not force:
        found = classifier_info(dataset, cache_dir)  # a damaged file is an error, not a reuse
        if found is not None:
            return {**found, "reused": True}
    path = classifier_path(dataset, cache_dir)
    model, info = fit_classifier(
        data,
        epochs=epochs,
        seed=seed,
        device=device,
        threads=threads,
        progress=progress,
        batch_size=batch_size,
    )
    meta = _store_local(dataset, model, info, path, command)
    if progress:
        print(
            f"{dataset} classifier: test acc {100 * info['test_acc']:.2f} % after {epochs} epochs, "
            f"{info['train_time_s']:.1f} s -> {path}",
            file=sys.stderr,
        )
    return {**meta, "source": "local", "reused": False}


def export_packaged(
    dataset: str, cache_dir: str = "", dest: str | os.PathLike = "", command: str = ""
) -> dict[str, Any]:
    """Copy the local refit of `dataset` into the packaged layout (for gankit's maintainers).

    Writes <dest>/classifier_<dataset>.pt (a byte-for-byte copy, so the sha256 is the local one) and
    its .json sidecar, then put the printed sha256 into PACKAGED_SHA256. dest defaults to the
    gankit/weights folder of this installation (the source tree, for an editable install):

        gankit classifier fit mnist --threads 1 --force --cache-dir /tmp/clf
        python -c "from gankit.metrics.classifier import export_packaged as e; e('mnist', '/tmp/clf')"

    Args:
        command: the command that made the file (default: the one the local sidecar recorded).

    Returns:
        The packaged sidecar: {"dataset", "file", "sha256", "test_acc", "epochs", "seed",
        "batch_size", "n_train", "n_test", "shape", "gankit", "torch", "threads", "device",
        "train_time_s", "time", "command"}.
    """
    from gankit.version import __version__

    path = classifier_path(dataset, cache_dir)
    if not _has_local(dataset, cache_dir):
        raise GankitError(f"no local {dataset} classifier in {path} to export")
    _, info = get_classifier(dataset, cache_dir)  # verified against its sidecar
    out = Path(dest) if dest else packaged_path(dataset).parent
    target = out / f"classifier_{dataset}.pt"
    out.mkdir(parents=True, exist_ok=True)
    target.write_bytes(path.read_bytes())
    keep = "test_acc epochs seed batch_size n_train n_test shape threads device train_time_s time"
    meta = {"dataset": dataset, "file": target.name, "sha256": _sha256(target)}
    meta |= {k: info[k] for k in keep.split()}
    # a sidecar from before these fields: the exporting build and version
    meta |= {
        "gankit": info.get("gankit", __version__),
        "torch": info.get("torch", torch.__version__),
    }
    meta["command"] = command or info.get("command", "")
    if meta["sha256"] != info["sha256"]:
        raise GankitError(f"copying {path} to {target} changed its sha256")
    write_json(meta, _sidecar(target))
    _sidecar(target).chmod(0o644)  # package data is world-readable (write_json's temp file is not)
    return meta
