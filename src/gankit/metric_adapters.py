"""The `METRICS` table: one adapter per metric, from an `EvalContext` to a record of values and
protocol fields. Each adapter picks the samples its protocol asks for (`ctx.fake`, `ctx.real`, the
training images) and hands them to the pure functions in `gankit.metrics`.

Kept apart from `gankit.evaluate` (the context and the evaluation loop) only for size: together
they would be ~550 lines, over the ~400 a module should hold. The protocols are described in
`gankit.metrics`' docstring; `gankit.metrics.NAMES` lists the same names (a test checks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from gankit.metrics import toy
from gankit.utils import GankitError, make_generator

if TYPE_CHECKING:
    from gankit.evaluate import EvalContext


def _images(ctx: EvalContext, metric: str) -> None:
    if len(ctx.data.shape) != 3:
        raise GankitError(f"metric {metric!r} needs an image dataset, not {ctx.cfg.data.name!r}")


# ---- toy densities --------------------------------------------------------------------------------


def _toy_n(ctx: EvalContext) -> int:
    return ctx.n(ctx.cfg.eval.n_samples)


def _modes(ctx: EvalContext) -> dict:
    d = getattr(ctx.data, "density", None)
    if not hasattr(d, "centers"):
        raise GankitError(
            f"metric 'modes' needs a mixture dataset (ring, grid), not {ctx.cfg.data.name!r}"
        )
    fake = ctx.fake(_toy_n(ctx))[0]
    return {**toy.mode_stats(fake, d.centers, d.std), "n_fake": len(fake)}


def _dist1d(ctx: EvalContext) -> dict:
    d = getattr(ctx.data, "density", None)
    if not hasattr(d, "pdf"):
        raise GankitError("metric 'dist1d' needs the 1-D Gaussian dataset (gauss1d)")
    fake = ctx.fake(_toy_n(ctx))[0]
    return {**toy.dist1d_stats(fake, d.mean, d.std), "n_fake": len(fake), "reference": "exact"}


def _sliced_w1(ctx: EvalContext) -> dict:
    fake = ctx.fake(_toy_n(ctx))[0]
    real = ctx.real(len(fake))[0]
    w1 = toy.sliced_w1(fake.flatten(1), real.flatten(1), seed=ctx.seed)
    return {**w1, "n_fake": len(fake), "n_real": len(real), "reference": "test"}


# ---- discriminator, Parzen --------------------------------------------------------------------------


def _dstats(ctx: EvalContext) -> dict:
    from gankit.metrics.dstats import d_output_stats

    if ctx.floor:
        raise GankitError("metric 'dstats' scores generated samples with D; it has no --floor")
    if ctx.models.per_class:
        raise GankitError(
            "metric 'dstats' needs a single D; a per-class checkpoint holds one per class"
        )
    n = ctx.n(ctx.cfg.train.dstats_n or 1000)
    D = ctx.models.discriminator().to(ctx.device)
    out = {}
    for split, (x, y) in (("train", ctx.data.train_fixed(n, ctx.seed)), ("fake", ctx.fake(n)),
                          ("test", ctx.real(n))):  # fmt: skip
        y = y if ctx.cfg.model.num_classes else None
        s = d_output_stats(D, x, y)
        out |= {f"{split}_mean": s["mean"], f"{split}_std": s["std"]}
    out["train_test_gap"] = out["train_mean"] - out["test_mean"]  # > 0: D memorises the train set
    return {**out, "n_fake": n, "n_real": n, "reference": "train+test"}


def _unit(x: Tensor, images: bool) -> Tensor:
    """(N, *shape) -> (N, d) float, pixels mapped from [-1, 1] to [0, 1] as in the Parzen protocol."""
    x = x.flatten(1).double()
    return (x + 1) / 2 if images else x


def _parzen(ctx: EvalContext) -> dict:
    from gankit.data.images import gather, to_float
    from gankit.metrics.parzen import parzen

    images = len(ctx.data.shape) == 3
    n = ctx.n(10_000)
    n_val, n_test = 1000, 10_000
    if images:
        # validation: the first 1,000 of the last 10,000 training images (MNIST: train[50000:51000])
        train, unused = ctx.data.images.train, ctx.data.images.unused_train
        g = make_generator(ctx.seed, "parzen")
        tail = len(train) - min(10_000, len(train) // 6)  # small sets: the last sixth, as for MNIST
        # the first 1,000 of the block, as the paper's code (parzen_ll.py, get_valid) takes them
        val = to_float(gather(train, torch.arange(tail, min(tail + n_val, len(train)))))
        if unused is not None and len(unused):  # trained on train[:n_train]: validate on unseen
            tail = len(train)
            val = to_float(gather(unused, torch.arange(min(n_val, len(unused)))))
        if ctx.floor:  # kernel centres from the training images before the validation block
            samples = to_float(gather(train, torch.randperm(tail, generator=g)[:n]))
        else:
            samples = ctx.fake(n)[0]
        test = ctx.real(n_test)[0]
        protocol = {"validation": f"train[{tail}:{tail + len(val)}]", "reference": "test"}
    else:
        samples = ctx.fake(n)[0]
        val, test = ctx.data.held_out(n_val, ctx.seed + 1), ctx.real(n_test)[0]
        protocol = {"validation": f"{n_val} fresh points", "reference": "fresh points"}
    r = parzen(_unit(samples, images), _unit(val, images), _unit(test, images),
               progress=ctx.options.get("progress", False))  # fmt: skip
    return {**r, "n_fake": len(samples), "n_real": len(test), **protocol}


# ---- domain classifier (MNIST-like data) -----------------------------------------------------------

NO_CLASSIFIER = {
    "stacked_mnist": "its channels are labelled by the MNIST classifier: use the metric stacked_mnist"
}


def _classifier_for(ctx: EvalContext, dataset: str | None = None) -> tuple[nn.Module, dict]:
    from gankit.metrics.classifier import get_classifier

    name = dataset or ctx.cfg.data.name
    if name in NO_CLASSIFIER:
        raise GankitError(f"no domain classifier for {name}: {NO_CLASSIFIER[name]}")
    key = ("classifier", name)
    if key not in ctx.cache:
        ctx.cache[key] = get_classifier(name, ctx.cfg.data.cache_dir)
    return ctx.cache[key]


def _clf_protocol(info: dict) -> dict:
    return {
        "extractor": f"gankit classifier ({info['dataset']}, {info['source']}, "
        f"test acc {info['test_acc']:.4f})",
        "weights_sha256": info["sha256"],
        "classifier_source": info["source"],  # packaged, or local (gankit classifier fit --force)
    }


def _predict(ctx: EvalContext, which: str, n: int) -> tuple[Tensor, Tensor, Tensor | None]:
    """(probs, features, labels) of the classifier on `which` = fake | real, cached per n."""
    from gankit.metrics.classifier import predict

    key = ("predict", which, n)
    if key not in ctx.cache:
        x, y = ctx.fake(n) if which == "fake" else ctx.real(n)
        model, _ = _classifier_for(ctx)
        probs, feats = predict(model.to(ctx.device), x)
        ctx.cache[key] = (probs, feats, y)
    return ctx.cache[key]


def _classifier(ctx: EvalContext) -> dict:
    from gankit.metrics import classifier as clf

    _images(ctx, "classifier")
    n = ctx.n(10_000)
    probs, _, labels = _predict(ctx, "fake", n)
    _, info = _classifier_for(ctx)
    hist = clf.class_histogram_stats(probs, probs.shape[1])
    is_mean, is_std = clf.classifier_inception_score(probs, splits=min(10, len(probs)))
    out = {"classes_covered": hist["classes_covered"], "class_kl": hist["class_kl"],
           "is_clf": is_mean, "is_clf_std": is_std}  # fmt: skip
    if labels is not None and (ctx.cfg.model.num_classes or ctx.models.per_class or ctx.floor):
        out["class_acc"] = clf.conditional_accuracy(probs, labels)  # requested (or true) class
    return {**out, "num_classes": probs.shape[1], "n_fake": n, **_clf_protocol(info)}


def _fid_clf(ctx: EvalContext) -> dict:
    from gankit.metrics.fidelity import frechet_distance

    _images(ctx, "fid_clf")
    n = ctx.n(10_000)
    fake, real = _predict(ctx, "fake", n)[1], _predict(ctx, "real", n)[1]
    _, info = _classifier_for(ctx)
    fid = frechet_distance(fake.double(), real.double())
    return {"fid_clf": fid, "n_fake": len(fake), "n_real": len(real), "reference": "test",
            **_clf_protocol(info)}  # fmt: skip


def _stacked_mnist(ctx: EvalContext) -> dict:
    import torch.nn.functional as F

    from gankit.metrics.classifier import predict

    if ctx.cfg.data.name != "stacked_mnist":
        raise GankitError(
            f"metric 'stacked_mnist' needs the stacked_mnist dataset, not {ctx.cfg.data.name!r}"
        )
    n = ctx.n(26_000)
    x = ctx.fake(n)[0]
    model, info = _classifier_for(ctx, "mnist")
    digits = []
    for c in range(3):  # each channel is one digit
        ch = x[:, c : c + 1]
        if ch.shape[-1] != 28:
            ch = F.interpolate(ch, size=28, mode="bilinear", antialias=True, align_corners=False)
        digits.append(predict(model.to(ctx.device), ch)[0].argmax(1))
    modes = digits[0] * 100 + digits[1] * 10 + digits[2]
    return {**toy.mode_histogram_stats(modes, 1000), "n_fake": n, **_clf_protocol(info)}


# ---- Inception-v3 (torch-fidelity) -------------------------------------------------------------------


def _inception(ctx: EvalContext, real: bool = True) -> tuple[dict, dict | None, dict]:
    """(fake features, real features or None, protocol) of Inception-v3; each set extracted once per
    evaluation, the real one only when a metric needs it (IS does not)."""
    from gankit.data.images import to_uint8
    from gankit.metrics import fidelity

    if "inception" not in ctx.cache:  # the weights read, checked and loaded once per evaluation
        path, sha = fidelity.resolve_inception_weights(
            ctx.options.get("inception_weights"), verify=not ctx.options.get("inception_unverified")
        )
        ctx.cache["inception"] = (fidelity.load_inception(path, ctx.device), sha)
    extractor, sha = ctx.cache["inception"]
    n = ctx.n(10_000)
    for which in ("fake", "real") if real else ("fake",):
        if ("inception", which) not in ctx.cache:
            x = ctx.fake(n)[0] if which == "fake" else ctx.real(n)[0]
            ctx.cache[("inception", which)] = fidelity.inception_features(
                to_uint8(x), extractor, progress=ctx.options.get("progress", False)
            )
    import torch_fidelity

    fake, feats_real = ctx.cache[("inception", "fake")], ctx.cache.get(("inception", "real"))
    protocol = {"n_fake": len(fake["2048"]), "extractor": "inception-v3-compat (torch-fidelity "
                f"{torch_fidelity.__version__})", "weights_sha256": sha}  # fmt: skip
    if real:
        protocol |= {"n_real": len(feats_real["2048"]), "reference": "test"}
    return fake, feats_real, protocol


def _fid(ctx: EvalContext) -> dict:
    from gankit.metrics.fidelity import frechet_distance

    _images(ctx, "fid")
    fake, real, protocol = _inception(ctx)
    return {"fid": frechet_distance(fake["2048"], real["2048"]), **protocol}


def _kid(ctx: EvalContext) -> dict:
    from gankit.metrics.fidelity import kernel_inception_distance

    _images(ctx, "kid")
    fake, real, protocol = _inception(ctx)
    subset = min(1000, len(fake["2048"]), len(real["2048"]))
    mean, std = kernel_inception_distance(
        fake["2048"], real["2048"], subset_size=subset, seed=ctx.seed
    )
    return {"kid_mean": mean, "kid_std": std, "kid_subset_size": subset, **protocol}


def _is(ctx: EvalContext) -> dict:
    from gankit.metrics.fidelity import inception_score

    _images(ctx, "is")
    fake, _, protocol = _inception(ctx, real=False)
    splits = min(10, len(fake["logits_unbiased"]))
    mean, std = inception_score(fake["logits_unbiased"], splits=splits, seed=ctx.seed)
    return {"is_mean": mean, "is_std": std, "is_splits": splits, **protocol, "reference": "none"}


def _prc(ctx: EvalContext) -> dict:
    from gankit.metrics.fidelity import precision_recall

    _images(ctx, "prc")
    fake, real, protocol = _inception(ctx)
    # on Inception pool features (torch-fidelity's own prc default is VGG-16): not comparable to
    # Kynkaanniemi et al.'s numbers, which use VGG-16
    return {**precision_recall(fake["2048"], real["2048"], k=3), "prc_k": 3,
            "prc_features": "inception-v3 pool", **protocol}  # fmt: skip


METRICS = {
    "modes": _modes,
    "dist1d": _dist1d,
    "sliced_w1": _sliced_w1,
    "dstats": _dstats,
    "parzen": _parzen,
    "classifier": _classifier,
    "fid_clf": _fid_clf,
    "stacked_mnist": _stacked_mnist,
    "fid": _fid,
    "kid": _kid,
    "is": _is,
    "prc": _prc,
}
