"""`gankit compare`: several runs side by side, their training curves overlaid and their latest
evaluation figures as bars (e.g. GAN vs DCGAN on the same dataset)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from gankit.layout import RunLayout
from gankit.utils import GankitError, read_jsonl

# the headline value of each metric's record, and whether higher is better
HEADLINE = {
    "modes": ("modes", True),
    "dist1d": ("w1", False),
    "sliced_w1": ("sliced_w1", False),
    "dstats": ("train_test_gap", False),
    "parzen": ("ll_mean", True),
    "classifier": ("is_clf", True),
    "fid_clf": ("fid_clf", False),
    "stacked_mnist": ("modes", True),
    "fid": ("fid", False),
    "kid": ("kid_mean", False),
    "is": ("is_mean", True),
    "prc": ("recall", True),
}
CURVES = (("loss_d", "D loss"), ("loss_g", "G loss"), ("d_real", "mean sigmoid(D(real))"),
          ("d_fake", "mean sigmoid(D(fake))"))  # fmt: skip


def latest_evals(run_dir: Path) -> dict[str, dict]:
    """metric -> the run's last non-floor record of it in eval.jsonl."""
    out = {}
    for r in read_jsonl(RunLayout(run_dir).evals) if RunLayout(run_dir).evals.exists() else []:
        if not r.get("floor") and r.get("metric") in HEADLINE:
            out[r["metric"]] = r
    return out


def load_runs(run_dirs: list[str | Path]) -> dict[str, tuple[list[dict], dict[str, dict]]]:
    """run label -> (metrics.jsonl records, latest eval record per metric)."""
    runs = {}
    for d in map(Path, run_dirs):
        if not RunLayout(d).metrics.is_file():
            raise GankitError(f"{d}: no metrics.jsonl (is it a gankit run directory?)")
        label = d.name if d.name not in runs else str(d)
        runs[label] = (read_jsonl(RunLayout(d).metrics), latest_evals(d))
    return runs


def _smooth(y: np.ndarray, n: int) -> np.ndarray:
    """Moving average over n points (valid part), so noisy loss curves stay readable when overlaid."""
    return y if len(y) < 2 * n else np.convolve(y, np.ones(n) / n, mode="valid")


def compare_figure(runs: dict[str, tuple[list[dict], dict[str, dict]]], smooth: int = 5) -> Figure:
    """Top: the training curves of every run overlaid; bottom: one bar chart per evaluated metric."""
    metrics = sorted({m for _, evals in runs.values() for m in evals})
    ncols = max(len(CURVES), len(metrics))
    rows = 2 if metrics else 1
    fig = Figure(figsize=(3.6 * ncols, 3.3 * rows), layout="constrained")
    axes = np.atleast_2d(fig.subplots(rows, ncols, squeeze=False))
    for j, (key, title) in enumerate(CURVES):
        ax = axes[0, j]
        for label, (hist, _) in runs.items():
            pts = [(r["step"], r[key]) for r in hist if key in r and "step" in r]
            if pts:
                s, v = np.array(pts, dtype=float).T
                k = min(smooth, max(1, len(v) // 4))
                ax.plot(
                    s[k - 1 :] if len(v) >= 2 * k else s, _smooth(v, k), label=label, linewidth=1.2
                )
        ax.set(title=title, xlabel="step")
        if j == 0 and ax.lines:
            ax.legend(fontsize=8)
    for j in range(len(CURVES), ncols):
        axes[0, j].axis("off")
    for j, metric in enumerate(metrics):
        ax = axes[1, j]
        key, higher = HEADLINE[metric]
        labels = [lab for lab, (_, ev) in runs.items() if metric in ev]
        vals = [float(runs[lab][1][metric].get(key, np.nan)) for lab in labels]
        ax.bar(range(len(labels)), vals, color=[f"C{list(runs).index(lab)}" for lab in labels])
        ns = [runs[lab][1][metric].get("n_fake", "?") for lab in labels]  # each run's own n
        ticks = [f"{lab}\nn={n}" for lab, n in zip(labels, ns, strict=True)]
        ax.set_xticks(range(len(labels)), ticks, rotation=20, ha="right", fontsize=8)
        ax.set_title(f"{metric}: {key} ({'higher' if higher else 'lower'} is better)", fontsize=9)
        for i, v in enumerate(vals):
            ax.annotate(f"{v:.4g}", (i, v), ha="center", va="bottom", fontsize=8)
    for j in range(len(metrics), ncols if metrics else 0):
        axes[1, j].axis("off")
    return fig


def compare_table(runs: dict[str, tuple[list[dict], dict[str, dict]]]) -> str:
    """A plain-text table: one row per run, its last step and each metric's headline value."""
    metrics = sorted({m for _, evals in runs.values() for m in evals})
    head = ["run", "steps", *[f"{m}:{HEADLINE[m][0]}" for m in metrics]]
    rows = []
    for label, (hist, evals) in runs.items():
        steps = max((r.get("step", 0) for r in hist), default=0)
        cells = [
            f"{evals[m].get(HEADLINE[m][0], float('nan')):.4g}" if m in evals else "-"
            for m in metrics
        ]
        rows.append([label, str(steps), *cells])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]
    )


def compare_runs(run_dirs: list[str | Path], out: str | Path) -> tuple[Path, str]:
    """Write the comparison figure to `out` (.png, .pdf or .svg); returns (path, text table)."""
    from gankit.plots import save_figure

    if len(run_dirs) < 1:
        raise GankitError("compare needs at least one run directory")
    if Path(out).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise GankitError(f"unsupported output {Path(out).name!r}; use .png, .pdf or .svg")
    runs = load_runs(run_dirs)
    return save_figure(compare_figure(runs), out), compare_table(runs)
