"""Run directories: finding their checkpoint, plotting and sampling them (evaluating them:
`gankit.evaluate`).

Layout of a run directory:
    config.yaml env.json metrics.jsonl eval.jsonl samples/STEP.npy checkpoints/last.pt plots/*.png|gif
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from gankit.checkpoint import load_checkpoint
from gankit.evaluate import load_run
from gankit.layout import RunLayout
from gankit.rundir import resolve
from gankit.utils import UsageError, make_generator, read_jsonl


def plot_run(run_dir: str | Path, n: int = 2500) -> list[Path]:
    """Write the run's plots into run_dir/plots; returns the files written."""
    from gankit import plots

    run_dir = Path(run_dir)
    history = read_jsonl(RunLayout(run_dir).metrics)
    out = RunLayout(run_dir).plots
    written = []
    if any("loss_d" in r for r in history):  # a checkpoint alone (no metrics.jsonl) has no curves
        written.append(plots.save_figure(plots.loss_curves(history), out / "losses.png"))
    if any("dstat_train_mean" in r for r in history):
        written.append(plots.save_figure(plots.dstats(history), out / "dstats.png"))
    grids = sorted(RunLayout(run_dir).samples.glob("*.png"))
    if grids:  # image runs: the GIF of the fixed-noise grids and the last grid
        written.append(plots.save_gif(plots.grid_frames(grids), out / "samples.gif"))
        (out / "samples.png").write_bytes(grids[-1].read_bytes())
        return [*written, out / "samples.png"]
    _, ckpt, cfg, data, G, D = load_run(run_dir)
    from gankit.sample import sample
    from gankit.utils import eval_mode

    fake = sample(G, n, z_dist=cfg.model.z_dist, generator=make_generator(cfg.eval.seed, "eval"))
    real = data.held_out(n, cfg.eval.seed).numpy()
    fake = fake.numpy()
    dim = data.shape[0]
    if dim == 1:
        d = data.density
        pdf = (lambda x: d.pdf(torch.as_tensor(x)).numpy()) if hasattr(d, "pdf") else None
        written.append(plots.save_figure(plots.density1d(fake, pdf, real), out / "density.png"))
        if hasattr(d, "pdf"):
            fig = plots.moments1d(history, d.mean, d.std)
            written.append(plots.save_figure(fig, out / "moments.png"))
    elif dim == 2:
        written.append(plots.save_figure(plots.scatter2d(real, fake), out / "scatter.png"))
        written.append(plots.save_figure(plots.density2d(fake, real), out / "density.png"))
        both = np.concatenate([real, fake])
        lo, hi = np.percentile(both, 0.5, axis=0), np.percentile(both, 99.5, axis=0)
        pad = 0.15 * (hi - lo) + 1e-3
        xs, ys, pts = plots.grid_points(
            (lo[0] - pad[0], hi[0] + pad[0], lo[1] - pad[1], hi[1] + pad[1])
        )
        grid = torch.from_numpy(pts)
        pack = getattr(D, "pack", 1)  # a packed D scores a pack of copies of each point
        with torch.no_grad(), eval_mode(D):
            logits = D(grid.repeat_interleave(pack, dim=0) if pack > 1 else grid)
            prob = torch.sigmoid(logits).numpy().reshape(len(ys), len(xs))
        fig = plots.decision_surface(xs, ys, prob, real[:500], fake[:500])
        written.append(plots.save_figure(fig, out / "decision.png"))
    snaps = sorted(RunLayout(run_dir).samples.glob("*.npy"))
    if snaps:
        frames = plots.toy_frames([(int(p.stem), np.load(p)) for p in snaps], real[:1000])
        written.append(plots.save_gif(frames, out / "samples.gif"))
    return written


def class_range(classes: list[int]) -> str | list[int]:
    """How an error names the valid classes: "0-9" when contiguous, else the list."""
    contiguous = classes == list(range(classes[0], classes[-1] + 1))
    return f"{classes[0]}-{classes[-1]}" if contiguous else classes


def _class_ids(spec: str | None, classes: list[int]) -> list[int] | None:
    """--class K | all -> the class ids to draw, or None; a one-line error for an unknown class."""
    if spec is None:
        return None
    if spec == "all":
        return list(classes)
    if not spec.lstrip("-").isdigit() or int(spec) not in classes:
        raise UsageError(
            f"--class {spec}: not a class of this model; choose from {class_range(classes)} or all"
        )
    return [int(spec)]


def draw(
    ckpt: dict, n: int = 64, seeds: list[int] | None = None, seed: int = 0, klass: str | None = None
) -> tuple[torch.Tensor, int, list[int] | None]:
    """Samples of a loaded checkpoint: ((N, *shape), grid row length (0 = square), class of each row
    of a class grid or None).

    Noise is per seed (`seeds`) or from `seed`; with classes (conditional models or per-class pairs)
    `klass` is a class id or "all" (a class grid: one row per class, the same noise in each column).
    """
    from gankit.factory import RunModels
    from gankit.sample import generate, sample_seeds, sample_z

    models = RunModels.from_checkpoint(ckpt)
    cfg, classes, gen, per_class = models.cfg, models.classes, models.generator, models.per_class
    if klass is not None and not classes:
        raise UsageError("--class: this model is unconditional (model.num_classes = 0)")
    ids = _class_ids(klass, classes)
    if ids is None and per_class:
        ids = list(classes)  # a per-class checkpoint has no unconditional generator: draw them all
    if ids is not None and len(ids) > 1 and seeds is None:
        n = -(-n // len(ids))  # columns of the class grid

    def run(G: torch.nn.Module, labels: torch.Tensor | None) -> torch.Tensor:
        if seeds is not None:  # one noise vector per seed
            return sample_seeds(G, seeds, z_dist=cfg.model.z_dist, labels=labels)
        z = sample_z(n, G.z_dim, cfg.model.z_dist, torch.Generator().manual_seed(seed))
        return generate(G, z, labels)

    cols = len(seeds) if seeds is not None else n
    if ids is None:  # unconditional, or a conditional model with classes drawn uniformly
        labels = None
        if classes:
            labels = torch.randint(
                len(classes), (cols,), generator=torch.Generator().manual_seed(seed)
            )
        return run(gen(None), labels), 0, None
    rows = []
    for k in ids:
        labels = None if per_class else torch.full((cols,), k, dtype=torch.long)
        rows.append(run(gen(k), labels))
    return torch.cat(rows), cols, ids


SAMPLE_SUFFIXES = ("", ".npy", ".csv", ".pt", ".png")


def sample_to_file(ckpt_path: str | Path, out: str | Path, n: int = 64, seeds: list[int] | None = None,
                   seed: int = 0, klass: str | None = None) -> Path:  # fmt: skip
    """Write samples of a checkpoint to .npy, .csv, .pt, .png (image grid, or toy scatter/histogram),
    or, for images and an `out` without suffix, a directory of one PNG per sample (seed_NNNNNN.png)."""
    from gankit.sample import MAX_SEEDS

    out = Path(out)
    if out.suffix.lower() not in SAMPLE_SUFFIXES:
        raise UsageError(f"--out {out.name}: unsupported output; use .npy, .csv, .pt or .png")
    if seeds is None and not 1 <= n <= MAX_SEEDS:
        raise UsageError(f"--n must be in [1, {MAX_SEEDS:,}], got {n}")
    _, ckpt_path = resolve(ckpt_path)
    x, nrow, ids = draw(load_checkpoint(ckpt_path), n, seeds, seed, klass)
    out.parent.mkdir(parents=True, exist_ok=True)
    suffix = out.suffix.lower()
    if x.dim() == 4 and suffix in ("", ".png"):
        from gankit.plots import save_grid

        if suffix == ".png":
            return save_grid(x, out, nrow if ids is not None and len(ids) > 1 else 0)
        out.mkdir(exist_ok=True)
        names = [f"seed_{i:06d}" for i in (seeds if seeds is not None else range(nrow or len(x)))]
        if ids is not None:  # class_K_seed_S.png
            names = [f"class_{k}_{m}" for k in ids for m in names]
        for name, img in zip(names, x, strict=True):
            save_grid(img[None], out / f"{name}.png", nrow=1, pad=0)
        return out
    if suffix == ".npy":
        np.save(out, x.numpy())
    elif suffix == ".pt":
        torch.save(x, out)
    elif suffix == ".csv":
        np.savetxt(out, x.flatten(1).numpy(), delimiter=",", fmt="%.6g")
    elif suffix == ".png":
        from gankit import plots

        arr = x.flatten(1).numpy()
        fig = plots.scatter2d(np.empty((0, 2)), arr) if arr.shape[1] == 2 else plots.density1d(arr)
        plots.save_figure(fig, out)
    else:
        raise UsageError(f"--out {out.name}: a directory of PNGs needs an image model")
    return out
