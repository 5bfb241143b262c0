"""A small CNN trained on a dataset's train split, the domain feature extractor for MNIST-like data.

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
import math
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gankit.data.images import gather, to_float
from gankit.utils import GankitError, atomic_save, eval_mode, make_generator, write_json

FORMAT = "gankit-classifier"
FORMAT_VERSION = 1
FEATURES = 128  # width of the penultimate layer, the "fid_clf" feature dimension

# sha256 of the packaged classifiers (gankit/weights/classifier_<dataset>.pt), made with
# `gankit classifier fit DATASET --threads 1 --force` (4 epochs, seed 0) and `export_packaged`;
# their sidecars record the accuracy and the command. stacked_mnist uses mnist's.
PACKAGED_SHA256 = {
    "mnist": "3c8dcde93a091a61db2dbb81c79b7c80ec63d9289726757ec9a0ef9330553fcc",
    "fashion_mnist": "13cc318a85ef22c6966e473d4c8e2e765188d46563bb32b58ce6ea410f84903e",
}


class Classifier(nn.Module):
    """conv32/2-conv64/2-conv64-fc128-fc10 with BatchNorm, dropout before the last layer (~0.46 M
    parameters at 28 px).

    Strided convolutions instead of conv + max-pool at full resolution: on CPU a 1-channel 3x3
    convolution plus pooling at 28x28 costs more than the rest of the network (conv32-pool-conv64-
    pool took 1.0 ms per image per training step on one core, this net 0.4 ms), and the third
    convolution at 7x7 buys back the accuracy (98.75 % -> 99.14 % on MNIST without it / with it).
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, img_size: int = 28):
        super().__init__()
        if img_size < 4 or img_size % 4:
            raise GankitError(
                f"classifier img_size must be a multiple of 4 (two stride-2 convs), got {img_size}"
            )
        if num_classes < 2:
            raise GankitError(
                f"classifier needs a labelled dataset (num_classes >= 2), got {num_classes}"
            )
        self.in_channels, self.num_classes, self.img_size = in_channels, num_classes, img_size
        s = img_size // 4
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),  # (B, 32, S/2, S/2)
            nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),  # (B, 64, S/4, S/4)
            nn.Conv2d(64, 64, 3, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),  # (B, 64, S/4, S/4)
            nn.Flatten(),
            nn.Linear(64 * s * s, FEATURES),
            nn.ReLU(),  # (B, 128): the features
        )
        self.head = nn.Sequential(nn.Dropout(0.25), nn.Linear(FEATURES, num_classes))

    def kwargs(self) -> dict[str, int]:
        """The constructor arguments: the model's config, stored in the saved file."""
        return {
            "in_channels": self.in_channels,
            "num_classes": self.num_classes,
            "img_size": self.img_size,
        }

    def _check(self, x: Tensor) -> None:
        want = (self.in_channels, self.img_size, self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != want:
            raise GankitError(
                f"classifier expects images (B, {', '.join(map(str, want))}), got {tuple(x.shape)}"
            )

    def features(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, 128) penultimate activations (>= 0, after ReLU)."""
        self._check(x)
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        """(B, C, H, W) images in [-1, 1] -> (B, K) class logits."""
        return self.head(self.features(x))


# ---- training


@torch.no_grad()
def _accuracy(
    model: Classifier, images: np.ndarray, labels: np.ndarray, device: torch.device
) -> float:
    """Top-1 accuracy of `model` on uint8 (N, C, H, W) `images`, in eval mode."""
    correct = 0
    with eval_mode(model):
        for i in range(0, len(images), 1000):
            # np.array copies: torch warns on read-only memmap slices
            x = to_float(torch.from_numpy(np.array(images[i : i + 1000])).to(device))
            y = torch.from_numpy(np.asarray(labels[i : i + 1000], dtype=np.int64)).to(device)
            correct += (model(x).argmax(1) == y).sum().item()
    return correct / max(len(images), 1)


def _train(
    model: Classifier,
    data: Any,
    *,
    epochs: int,
    seed: int,
    batch_size: int,
    lr: float,
    device: torch.device,
    progress: bool,
) -> float:
    """Train `model` in place with Adam and a cosine learning-rate decay; returns the last epoch's loss."""
    images = data.images
    labels = torch.from_numpy(np.asarray(images.train_labels, dtype=np.int64))
    n = len(images.train)
    # the last incomplete batch is dropped (BatchNorm dislikes tiny ones)
    steps_per_epoch = n // batch_size
    total = epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    t0, step = time.perf_counter(), 0
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=make_generator(seed, "classifier", epoch))
        loss_sum = 0.0
        for i in range(steps_per_epoch):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            x = to_float(gather(images.train, idx).to(device))  # (B, C, H, W) in [-1, 1]
            y = labels[idx].to(device)
            # cosine decay to 0: the last steps are small, which settles the weights for the test
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item()
            step += 1
        if progress:
            acc = _accuracy(model, images.test, images.test_labels, device)
            print(
                f"classifier epoch {epoch + 1}/{epochs}: loss {loss_sum / steps_per_epoch:.4f}, "
                f"test acc {100 * acc:.2f} %, {time.perf_counter() - t0:.1f} s",
                file=sys.stderr,
            )
    return loss_sum / steps_per_epoch


def fit_classifier(
    data: Any,
    *,
    epochs: int = 4,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 2e-3,
    device: str | torch.device = "cpu",
    threads: int = 0,
    progress: bool = False,
) -> tuple[Classifier, dict[str, Any]]:
    """Train a Classifier on `data`'s train split and measure it on the whole test split.

    Adam with a cosine learning-rate decay to 0, no augmentation (random shifts changed test accuracy
    by +0.08 % on MNIST and -0.24 % on Fashion-MNIST in 3 epochs). The result is a function of `seed` alone (weights, dropout and data order; `data`'s own
    seed and batch size are not used), for a fixed torch build, device and thread count.

    Args:
        data: a gankit ImageSource (labelled: `.images.train`/`.test` uint8 (N, C, H, W) with labels).
        threads: torch CPU threads while fitting (0: leave the setting alone). 1 is the safe choice
            on shared cores: next to other busy processes 2 OpenMP threads ran ~10x slower than 1.
        progress: print one line per epoch (loss, test accuracy, time) to stderr.

    Returns:
        The model in eval mode on `device`, and info: {"test_acc" in [0, 1], "train_time_s", "epochs",
        "seed", "batch_size", "lr", "n_train", "n_test", "shape", "num_classes", "classes",
        "data_cache", "train_loss", "device", "threads"}.
    """
    images = getattr(data, "images", None)
    if images is None:
        raise GankitError(f"a classifier needs an image dataset, not {type(data).__name__}")
    if data.num_classes < 2:
        raise GankitError(
            f"a classifier needs a labelled dataset; {images.cache_path} has no classes"
        )
    n = len(images.train)
    if not 0 < batch_size <= n or epochs < 1:
        raise GankitError(
            f"classifier fit needs epochs >= 1 and 1 <= batch_size <= {n}, got {epochs}, {batch_size}"
        )
    c, h, w = data.shape
    if h != w:
        raise GankitError(f"classifier needs square images, got {h}x{w}")
    device = torch.device(device)
    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        t0 = time.perf_counter()
        # weights and dropout from `seed`; the caller's global RNG state is left untouched
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Classifier(c, data.num_classes, h).to(device)
            args = dict(epochs=epochs, seed=seed, batch_size=batch_size, lr=lr, device=device)
            train_loss = _train(model, data, **args, progress=progress)
        train_time = time.perf_counter() - t0
        model.eval()
        acc = _accuracy(model, images.test, images.test_labels, device)
        used_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old_threads)
    info = {
        "test_acc": acc,
        "train_time_s": round(train_time, 2),
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "n_train": n,
        "n_test": len(images.test),
        "shape": [c, h, w],
        "num_classes": data.num_classes,
        "classes": list(data.classes),
        "data_cache": str(images.cache_path),
        "train_loss": train_loss,
        "device": str(device),
        "threads": used_threads,
    }
    return model, info


# ---- files


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
    # same rule as the image cache in gankit.data.images._cached
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
    from gankit.version import __version__

    if not force:
        found = classifier_info(dataset, cache_dir)  # a damaged file is an error, not a reuse
        if found is not None:
            return {**found, "reused": True}
    path = classifier_path(dataset, cache_dir)
    side = _sidecar(path)
    model, info = fit_classifier(
        data,
        epochs=epochs,
        seed=seed,
        device=device,
        threads=threads,
        progress=progress,
        batch_size=batch_size,
    )
    side.unlink(missing_ok=True)  # until the new sidecar is written the entry is incomplete
    sha = save_classifier(model, info, path)
    keep = (
        "test_acc train_time_s epochs seed batch_size n_train n_test shape device threads".split()
    )
    meta = {"dataset": dataset, "path": str(path), "sha256": sha, **{k: info[k] for k in keep}}
    meta |= {"data_cache": info["data_cache"], "gankit": __version__, "torch": torch.__version__}
    meta |= {"command": command, "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    write_json(meta, side)  # written last: the sidecar's presence marks a complete cache entry
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


# ---- predictions and metrics


@torch.no_grad()
def predict(model: Classifier, x: Tensor, batch_size: int = 1000) -> tuple[Tensor, Tensor]:
    """Class probabilities and features of images x (N, C, H, W) in [-1, 1], in eval mode.

    Images of another square size (e.g. a GAN trained at 32 px) are resized to the classifier's
    img_size with antialiased bilinear interpolation, the way gankit resizes datasets.

    Returns:
        (probs (N, K) in [0, 1] summing to 1 per row, features (N, 128)), float32 on the CPU.
    """
    device = next(model.parameters()).device
    size = model.img_size
    probs, feats = [], []
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size].to(device).float()
            if xb.ndim == 4 and xb.shape[-2:] != (size, size):
                xb = F.interpolate(
                    xb, size=(size, size), mode="bilinear", antialias=True, align_corners=False
                )
            f = model.features(xb)
            probs.append(F.softmax(model.head(f), dim=1).cpu())
            feats.append(f.cpu())
    k = model.num_classes
    if not probs:
        return torch.empty(0, k), torch.empty(0, FEATURES)
    return torch.cat(probs), torch.cat(feats)


def _check_probs(probs: Tensor) -> None:
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ValueError(f"expected probabilities (N, K) with N >= 1, got {tuple(probs.shape)}")


def class_histogram_stats(probs: Tensor, num_classes: int) -> dict[str, Any]:
    """Class coverage of predictions probs (N, K): each sample counts for its argmax class.

    Returns:
        {"classes_covered": classes predicted at least once, in [1, K]; "class_kl": KL(histogram ||
        uniform) in nats, in [0, log K] (0 when every class is predicted equally often); "class_hist":
        the K counts; "num_classes": K; "n": N}.
    """
    _check_probs(probs)
    if probs.shape[1] != num_classes:
        raise ValueError(f"probs has {probs.shape[1]} classes, expected num_classes={num_classes}")
    counts = torch.bincount(probs.argmax(1).cpu(), minlength=num_classes)
    p = counts.double() / counts.sum()
    nz = p > 0  # 0 log 0 = 0
    kl = (p[nz] * (p[nz] * num_classes).log()).sum().item()
    return {
        "classes_covered": int(nz.sum()),
        "class_kl": max(kl, 0.0),  # rounding can give -1e-17 for a uniform histogram
        "class_hist": counts.tolist(),
        "num_classes": num_classes,
        "n": int(probs.shape[0]),
    }


def classifier_inception_score(probs: Tensor, splits: int = 10) -> tuple[float, float]:
    """Inception Score exp(E_x KL(p(y|x) || p(y))) of probs (N, K), mean and std over `splits` chunks.

    Salimans et al. 2016: p(y) is the mean prediction within each chunk. In [1, K]: 1 when every
    prediction is the same, K when predictions are confident and spread evenly over K classes.
    """
    _check_probs(probs)
    if not 1 <= splits <= probs.shape[0]:
        raise ValueError(f"splits must be in [1, N={probs.shape[0]}], got {splits}")
    p = probs.double().cpu()
    scores = []
    for chunk in p.tensor_split(splits):  # exactly `splits` chunks, sizes differ by <= 1
        py = chunk.mean(0, keepdim=True)  # (1, K) marginal of the chunk
        # xlogy: 0 log 0 = 0 for one-hot predictions; where p(y|x) > 0 p(y) > 0 too
        kl = (torch.xlogy(chunk, chunk) - torch.xlogy(chunk, py)).sum(1)  # (n,)
        scores.append(kl.mean().exp().item())
    s = np.array(scores)
    return float(s.mean()), float(s.std())


def conditional_accuracy(probs: Tensor, labels: Tensor) -> float:
    """Fraction in [0, 1] of samples probs (N, K) whose argmax class is the requested label (N,)."""
    _check_probs(probs)
    if labels.shape != (probs.shape[0],):
        raise ValueError(f"expected labels ({probs.shape[0]},), got {tuple(labels.shape)}")
    return (probs.argmax(1).cpu() == labels.cpu()).double().mean().item()
