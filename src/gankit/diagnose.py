"""Live diagnostics: is this GAN failing, and how? Computed at the snapshot cadence from what the
training loop already measures, written to metrics.jsonl, shown on the progress line, and summed up
as one verdict line by `gankit eval` and the HTML report.

Each diagnosis is a rule on numbers the loop has anyway:
- `d_won`: D separates real from fake almost perfectly (mean sigmoid D(fake) < 0.05 and D(real-train)
  > 0.95 on the snapshot's D-statistics; BCE losses only): the minimax G loss then saturates and
  the non-saturating one gives unstable, uninformative updates (Goodfellow et al. 2014, Sec. 3;
  Arjovsky & Bottou 2017).
- `collapsed`: G covers too little of the data: toys with modes (ring, grid): fewer than half of
  the modes captured; labelled images with a domain classifier:
  fewer than half of the classes among the snapshot's fakes; any data: the fakes' mean pairwise
  distance below 30 % of the real samples' (mode collapse makes samples alike).
- `memorising`: D scores real training images well above held-out real ones (train - test gap of
  mean sigmoid(D) above 0.15): D overfits the training set, which precedes G copying it
  (Karras et al. 2020, ADA, Fig. 1).
- `diverged`: finite but exploding numbers: a logged loss above 1e4 in absolute value, or a weight
  norm above 1e6 or not finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

DIAGNOSES = ("d_won", "collapsed", "memorising", "diverged")
D_WON_FAKE, D_WON_REAL = 0.05, 0.95
MEMORISING_GAP = 0.15
COLLAPSE_SHARE = 0.5  # of modes, of high-quality samples, of classes
DIVERSITY_RATIO = 0.3  # fakes' mean pairwise distance / reals'
LOSS_LIMIT, WEIGHT_LIMIT = 1e4, 1e6


def mean_pairwise_distance(x: Tensor, n: int = 256) -> float:
    """Mean Euclidean distance between distinct pairs of the first `n` samples of x (N, ...)."""
    x = x[:n].flatten(1).float()
    if x.shape[0] < 2:
        return 0.0
    d = torch.cdist(x, x)
    k = x.shape[0]
    return (d.sum() / (k * (k - 1))).item()


def weight_norm(*modules: nn.Module) -> float:
    """The L2 norm of all parameters of `modules` together (inf/nan if any weight is)."""
    total = 0.0
    for m in modules:
        for p in m.parameters():
            total += p.detach().float().pow(2).sum().item()
    return math.sqrt(total) if math.isfinite(total) else total


BCE_LOSSES = ("nonsaturating", "minimax")  # sigmoid(D) is a probability only for these


def diagnose(rec: dict[str, Any], loss: str = "nonsaturating") -> list[str]:
    """The diagnoses (names from DIAGNOSES) that the metrics.jsonl fields of `rec` support.

    `d_won` and `memorising` read sigmoid(D) as a probability, which holds for the BCE losses only
    (for lsgan, hinge, wgan and rpgan, D's outputs have no fixed offset or scale): other losses get
    the coverage and divergence rules.

    Reads whichever of these fields are present: loss_d, loss_g, dstat_{train,fake,test}_mean,
    modes / num_modes / high_quality (toys), classes_seen / num_classes (labelled images),
    diversity_ratio, weight_norm.
    """
    out = []
    fake, real, test = (rec.get(f"dstat_{k}_mean") for k in ("fake", "train", "test"))
    if loss not in BCE_LOSSES:
        fake = real = test = None
    if fake is not None and real is not None and fake < D_WON_FAKE and real > D_WON_REAL:
        out.append("d_won")
    collapsed = False
    if rec.get("num_modes"):  # (few high-quality samples over all modes is blur, not collapse)
        collapsed |= rec["modes"] < COLLAPSE_SHARE * rec["num_modes"]
    if rec.get("num_classes_clf"):
        collapsed |= rec["classes_seen"] < COLLAPSE_SHARE * rec["num_classes_clf"]
    if rec.get("diversity_ratio") is not None:
        collapsed |= rec["diversity_ratio"] < DIVERSITY_RATIO
    if collapsed:
        out.append("collapsed")
    if real is not None and test is not None and real - test > MEMORISING_GAP:
        out.append("memorising")
    losses = [rec[k] for k in ("loss_d", "loss_g") if isinstance(rec.get(k), float)]
    norm = rec.get("weight_norm")
    if any(abs(v) > LOSS_LIMIT for v in losses) or (
        norm is not None and not (norm <= WEIGHT_LIMIT)
    ):
        out.append("diverged")
    return out


def describe(diagnoses: Iterable[str], rec: dict[str, Any]) -> str:
    """One human line for the diagnoses of `rec` (a metrics.jsonl record with its step)."""
    step = rec.get("step", "?")
    parts = []
    for d in diagnoses:
        if d == "d_won":
            parts.append(
                f"D won at step {step:,}: D(fake) {rec['dstat_fake_mean']:.3f}, D(real) "
                f"{rec['dstat_train_mean']:.3f}; G's updates carry little information (try "
                "loss.r1_weight, model.d.spectral_norm, a lower optim.lr_d or train.augment)"
            )
        elif d == "collapsed":
            parts.append(f"mode collapse at step {step:,}: {coverage(rec)}")
        elif d == "memorising":
            gap = rec["dstat_train_mean"] - rec["dstat_test_mean"]
            parts.append(
                f"D memorises the training set at step {step:,} (train - test gap {gap:.2f}; "
                "try train.augment or fewer epochs)"
            )
        elif d == "diverged":
            parts.append(
                f"training diverged at step {step:,} (loss_d {rec.get('loss_d', float('nan')):.3g}, "
                f"loss_g {rec.get('loss_g', float('nan')):.3g}); lower optim.lr_d / optim.lr_g"
            )
    return "; ".join(parts)


def coverage(rec: dict[str, Any]) -> str:
    """'8/8 modes, 95 % high quality' / '7/10 classes' / 'diversity 0.21 of real' from `rec`."""
    bits = []
    if rec.get("num_modes"):
        bits.append(f"{rec['modes']}/{rec['num_modes']} modes")
        if "high_quality" in rec:
            bits.append(f"{100 * rec['high_quality']:.0f} % high quality")
    if rec.get("num_classes_clf"):
        bits.append(f"{rec['classes_seen']}/{rec['num_classes_clf']} classes")
    if rec.get("diversity_ratio") is not None:
        bits.append(f"diversity {rec['diversity_ratio']:.2f} of real")
    return ", ".join(bits)


def _since(snaps: list[dict[str, Any]], name: str) -> int:
    """The step from which diagnosis `name` held at every later snapshot."""
    step = snaps[-1]["step"]
    for r in reversed(snaps):
        if name not in r["diagnoses"]:
            break
        step = r["step"]
    return step


def verdict(history: list[dict[str, Any]], upto: int | None = None) -> str:
    """The one-line verdict of a run from its metrics.jsonl records (those up to step `upto`, e.g.
    an evaluated checkpoint's): what the last snapshot's diagnoses say (and since which step they
    hold), or that nothing went wrong."""
    snaps = [r for r in history if "diagnoses" in r and (upto is None or r["step"] <= upto)]
    if not snaps:
        return "no diagnostics recorded (run made by an older gankit, or no snapshot after step 0)"
    last = snaps[-1]
    if last["diagnoses"]:
        return "; ".join(
            describe([d], {**last, "step": _since(snaps, d)}) for d in last["diagnoses"]
        )
    cov = coverage(last)
    earlier = sorted({d for r in snaps for d in r["diagnoses"]})
    cured = f" (seen earlier: {', '.join(earlier)})" if earlier else ""
    return f"{cov + ': ' if cov else ''}no collapse, D has not won, no divergence{cured}"


def persistent(
    history: list[dict[str, Any]], rec: dict[str, Any], names: Iterable[str]
) -> list[str]:
    """Diagnoses among `names` present in `rec` and in the snapshot before it (two in a row: a
    transient wobble early in training does not stop a run)."""
    prev = next((r for r in reversed(history) if "diagnoses" in r), None)
    if prev is None:
        return []
    return [d for d in rec.get("diagnoses", []) if d in names and d in prev["diagnoses"]]
