"""Metrics: pure functions of tensors or features (toy, parzen, classifier, fidelity, dstats), and
`NAMES`, the metric names with one line each. Running a metric on a run, `gankit.evaluate.METRICS[name]`
of an `EvalContext`, returns its values plus the protocol fields (n_fake, n_real, reference split,
feature extractor and weights hash).

This package imports nothing of gankit's outside itself at import time, so config validation can
check `eval.metrics` names against `NAMES` without importing checkpoints, runs or models.

Each metric has a published protocol and uses it unless `--n` overrides the sample count:

    modes, dist1d, sliced_w1  toy densities, eval.n_samples generated samples (2,500: PacGAN's protocol)
    dstats                    D's scores on real-train / fake / real-test (D in eval mode), train.dstats_n each
    parzen                    Gaussian Parzen-window log-likelihood of the test split (Goodfellow et al. 2014):
                              10,000 samples, sigma from logspace(-1, 0, 10) on 1,000 images of the
                              last 10,000 training images (MNIST: train[50000:60000], as in the paper)
    classifier                a domain classifier's view: classes covered, KL(class histogram || uniform),
                              classifier Inception Score, accuracy of the requested class (conditional models)
    fid_clf                   Frechet distance on the domain classifier's features, fake vs test split
    stacked_mnist             modes covered of 1,000 and KL to uniform over 26,000 samples, each channel
                              labelled by the MNIST classifier (VEEGAN / PacGAN protocol)
    fid, kid, is, prc         Inception-v3 (torch-fidelity, local weights file) on 10,000 samples vs test split

`--floor` replaces the generated samples by real training images: the same metric between real train
and real test at the same n, the best value a perfect generator could reach under that protocol.
"""

from __future__ import annotations

# name -> one line for `gankit list metrics`; in `gankit.evaluate.METRICS`' order (a test checks)
NAMES: dict[str, str] = {
    "modes": "toy mixtures: modes covered, high-quality fraction, reverse KL",
    "dist1d": "1-D Gaussian: mean, std, KS and exact W1 against the target law",
    "sliced_w1": "toy densities: sliced Wasserstein-1 distance, fake vs held-out real points",
    "dstats": "D's mean/std score on real train, fake and real test (train-test gap: memorising)",
    "parzen": "Parzen-window log-likelihood of the test split (Goodfellow et al. 2014)",
    "classifier": "domain classifier: classes covered, class KL, classifier IS, class accuracy",
    "fid_clf": "Frechet distance on the domain classifier's features, fake vs test",
    "stacked_mnist": "Stacked MNIST: modes covered of 1,000 and KL to uniform (VEEGAN / PacGAN)",
    "fid": "Frechet Inception distance, fake vs test (torch-fidelity, local weights)",
    "kid": "kernel Inception distance, fake vs test (torch-fidelity, local weights)",
    "is": "Inception Score of the fakes (torch-fidelity, local weights)",
    "prc": "precision/recall on Inception pool features, fake vs test (k = 3)",
}
