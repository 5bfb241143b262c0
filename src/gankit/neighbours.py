"""The memorisation check: generated samples beside their nearest training images.

A generator that copies its training set puts samples much closer to a training image than real
held-out images are; so next to the picture, the check reports the nearest-neighbour distances of the
samples and, as the yardstick, of the same number of real test images.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from gankit.utils import GankitError, UsageError

SPACES = ("pixel", "classifier")


def nearest(queries: Tensor, key_chunks: Iterable[Tensor], k: int) -> tuple[Tensor, Tensor]:
    """Each query's k nearest keys: Euclidean distances (Q, k) ascending and key indices (Q, k).

    queries (Q, d); the keys (N, d) arrive in chunks, so a large training set is never held whole.
    """
    q = queries.double()
    q2 = (q**2).sum(1, keepdim=True)  # (Q, 1)
    best_d = torch.zeros((len(q), 0), dtype=torch.float64)
    best_i = torch.zeros((len(q), 0), dtype=torch.long)
    offset = 0
    for kc in key_chunks:
        kc = kc.double()
        d2 = (q2 + (kc**2).sum(1) - 2 * q @ kc.T).clamp_min(0)  # (Q, chunk)
        ids = torch.arange(offset, offset + len(kc)).expand(len(q), -1)
        d, i = torch.cat([best_d, d2], 1), torch.cat([best_i, ids], 1)
        best_d, pos = d.topk(min(k, d.shape[1]), dim=1, largest=False)
        best_i, offset = i.gather(1, pos), offset + len(kc)
    return best_d.sqrt(), best_i


def _embed(x: Tensor, space: str, classifier: torch.nn.Module | None) -> Tensor:
    """(N, C, H, W) in [-1, 1] -> (N, d) vectors of the chosen space."""
    if space == "pixel":
        return x.flatten(1)
    from gankit.metrics.classifier_model import predict

    return predict(classifier, x)[1]


def nn_check(
    ckpt: dict, n: int = 8, k: int = 5, space: str = "pixel", seed: int = 0, stats_n: int = 1000
) -> tuple[Tensor, dict]:
    """((n * (k + 1), C, H, W) grid images: each row a sample then its k nearest training images, stats).

    stats: mean nearest-neighbour distance to the training set of max(n, stats_n) samples ("fake_nn")
    and of as many real test images ("test_nn", the yardstick; fewer if the test split is smaller),
    their ratio, and the k distances of each grid row.
    """
    from gankit.data.image_source import gather, to_float
    from gankit.evaluate import EvalContext

    if space not in SPACES:
        raise UsageError(f"--space {space}: choose from: {', '.join(SPACES)}")
    ctx = EvalContext.from_checkpoint(ckpt, seed=seed, options={"device": "cpu"})
    cfg, data = ctx.cfg, ctx.data
    if len(data.shape) != 3:
        raise GankitError("the nearest-neighbour check needs an image model")
    classifier = None
    if space == "classifier":
        from gankit.metrics.classifier import get_classifier

        classifier = get_classifier(cfg.data.name, cfg.data.cache_dir)[0]
    # the grid shows the first n of stats_n samples; the distances average over all of them
    fake = ctx.fake(max(n, stats_n))[0]
    test = data.held_out(max(n, stats_n), seed)
    train = data.images.train

    def chunks() -> Iterator[Tensor]:  # the training set embedded chunk by chunk (a uint8 memmap)
        for s in range(0, len(train), 8192):
            idx = torch.arange(s, min(s + 8192, len(train)))
            yield _embed(to_float(gather(train, idx)), space, classifier)

    # one pass over the training set answers the samples and the test images together
    queries = torch.cat([_embed(fake, space, classifier), _embed(test, space, classifier)])
    both_dist, both_idx = nearest(queries, chunks(), k)
    dist, idx, test_dist = both_dist[: len(fake)], both_idx[: len(fake)], both_dist[len(fake) :, :1]
    rows = [torch.cat([f[None], to_float(gather(train, i))])
            for f, i in zip(fake[:n], idx[:n], strict=True)]  # fmt: skip
    stats = {"fake_nn": dist[:, 0].mean().item(), "test_nn": test_dist[:, 0].mean().item(),
             "space": space, "n": n, "k": k, "n_stats": len(fake), "n_test": len(test),
             "distances": dist[:n].tolist()}  # fmt: skip
    stats["ratio"] = stats["fake_nn"] / max(stats["test_nn"], 1e-12)
    return torch.cat(rows), stats


MAX_ROWS, MAX_K = 64, 32  # the grid is (n rows) x (k + 1) images


def nn_to_file(
    ckpt_path: str | Path,
    out: str | Path,
    n: int = 8,
    k: int = 5,
    space: str = "pixel",
    seed: int = 0,
) -> tuple[Path, dict]:
    """Write the check as a PNG grid (row: sample | its k nearest training images); returns (path, stats)."""
    from gankit.checkpoint import load_checkpoint
    from gankit.plots import save_grid

    out = Path(out)
    if out.suffix.lower() != ".png":
        raise UsageError(f"--out {out.name}: unsupported output; use .png")
    if not (1 <= n <= MAX_ROWS and 1 <= k <= MAX_K):
        raise UsageError(
            f"nn: --n must be in [1, {MAX_ROWS}] and --k in [1, {MAX_K}], got {n}, {k}"
        )
    x, stats = nn_check(load_checkpoint(ckpt_path), n, k, space, seed)
    out.parent.mkdir(parents=True, exist_ok=True)
    return save_grid(x, out, k + 1), stats
