"""The report of a run: one self-contained HTML file, RUN_DIR/report.html.

Every image is embedded as a data: URI and the only style is a small inline sheet (no scripts, no
fonts, no links out), so the file opens offline and can be mailed or archived on its own. Pieces a
run does not have yet (no eval, no snapshots) are left out or marked "none yet", never an error.
"""

from __future__ import annotations

import base64
import html
import json
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from gankit.layout import RunLayout
from gankit.utils import GankitError, atomic_write, read_jsonl

MAX_GRIDS = 12  # snapshot grids shown besides the last: a 500-snapshot run stays a few MB
# eval.jsonl keys that describe how a number was measured: the last columns of an eval table
PROTOCOL = ("n_fake", "n_real", "reference", "validation", "seed", "floor", "extractor",
            "weights_sha256", "dataset", "checkpoint", "step", "gankit_version", "seconds",
            "time")  # fmt: skip
TOY_PLOTS = ("scatter", "density", "decision", "moments")
MIME = {".png": "image/png", ".gif": "image/gif"}
CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; margin-bottom: .2em; }
h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; }
table { border-collapse: collapse; margin: .5em 0; }
td, th { border: 1px solid #ddd; padding: 2px 8px; }
th { background: #f3f3f3; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; } pre { background: #f7f7f7; padding: .8em; overflow-x: auto; }
figure { display: inline-block; margin: 4px; text-align: center; vertical-align: top; }
figcaption { font-size: .85em; color: #555; }
img { max-width: 100%; min-width: 128px; image-rendering: pixelated; }  /* tiny grids scaled up */
.muted { color: #777; }
.verdict { padding: .5em .8em; border-radius: 4px; } .ok { background: #e8f5e9; }
.bad { background: #fdecea; }
"""


def esc(value: Any) -> str:
    """Text safe inside HTML elements and quoted attributes."""
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A table cell (unescaped): floats to 4 significant digits, lists shortened, None as a dash."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        head = ", ".join(fmt(v) for v in value[:4])
        return f"[{head}, … {len(value)} values]" if len(value) > 4 else f"[{head}]"
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return "–" if value is None else str(value)


def duration(seconds: float | None) -> str:
    """12.3 s | 4 min 05 s | 2 h 03 min; "unknown" for None."""
    if seconds is None:
        return "unknown"
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m} min {s:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def train_seconds(history: list[dict[str, Any]]) -> float | None:
    """Wall-clock training time: the last `time_s` of metrics.jsonl (summed over resumed processes).

    Runs written before `time_s` existed fall back to the log windows' steps / it_s (loop time only).
    """
    stamped = [r["time_s"] for r in history if "time_s" in r]
    if stamped:
        return max(stamped)
    total, prev, seen = 0.0, 0, False
    for r in sorted((r for r in history if r.get("it_s")), key=lambda r: r["step"]):
        total, prev, seen = total + (r["step"] - prev) / r["it_s"], r["step"], True
    return total if seen else None


def data_uri(path: Path) -> str:
    return f"data:{MIME[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode()}"


def figure(path: Path, caption: str) -> str:
    return (f'<figure><img src="{data_uri(path)}" alt="{esc(caption)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")  # fmt: skip


def table(rows: Sequence[Sequence[Any]], header: Sequence[str] | None = None) -> str:
    """An HTML table of already-formatted cells (escaped here); numbers are right-aligned."""

    def cell(v: Any, tag: str = "td") -> str:
        num = tag == "td" and isinstance(v, int | float) and not isinstance(v, bool)
        return f"<{tag}{' class=num' if num else ''}>{esc(fmt(v))}</{tag}>"

    head = "<tr>" + "".join(cell(h, "th") for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return f'<div class="scroll"><table>{head}{body}</table></div>'


def pick_grids(paths: Sequence[Path], k: int = MAX_GRIDS) -> list[Path]:
    """At most `k` evenly spaced snapshots plus the last one, in step order."""
    paths = sorted(paths)
    if len(paths) <= k + 1:
        return paths
    return [paths[i * (len(paths) - 1) // k] for i in range(k)] + [paths[-1]]


def ensure_plots(run_dir: Path, history: list[dict[str, Any]]) -> str:
    """Run `plot_run` when a plot the run should have is missing; returns a note when that fails."""
    plots = RunLayout(run_dir).plots
    samples = RunLayout(run_dir).samples
    wanted = ["losses.png"]
    if any("dstat_train_mean" in r for r in history):
        wanted.append("dstats.png")
    if samples.is_dir() and any(samples.glob("*.*")):
        wanted.append("samples.gif")
    logged = any(
        "loss_d" in r for r in history
    )  # before the first log line there is nothing to plot
    if not logged or all((plots / f).is_file() for f in wanted):
        return ""
    from gankit.run import plot_run

    try:
        plot_run(run_dir)
    except GankitError as e:  # e.g. a toy run that has no checkpoint yet: report what there is
        return f"plots could not be made: {e}"
    return ""


def eval_tables(records: list[dict[str, Any]]) -> str:
    """One table per metric, one row per record: metric values first, then the protocol columns."""
    by_metric: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        by_metric.setdefault(str(r.get("metric", "?")), []).append(r)
    out = []
    for name, rows in by_metric.items():
        keys = list(dict.fromkeys(k for r in rows for k in r if k != "metric"))
        cols = [k for k in keys if k not in PROTOCOL] + [k for k in PROTOCOL if k in keys]
        cells = [[short(k, r.get(k)) for k in cols] for r in rows]
        out.append(f"<h3>{esc(name)}</h3>" + table(cells, cols))
    return "".join(out)


def short(key: str, value: Any) -> Any:
    """Shorten values that are long by nature: a weights hash, a checkpoint path."""
    if key == "weights_sha256" and isinstance(value, str):
        return value[:12]
    if key == "checkpoint" and isinstance(value, str):
        return Path(value).name
    return value


def _summary(
    run_dir: Path, cfg: dict[str, Any], history: list[dict], env: dict, wall: str
) -> list[str]:
    """The report's head: the run's name, the verdict on its training and a table of what it is."""
    from gankit.diagnose import verdict
    from gankit.version import __version__

    def section(name: str) -> dict[str, Any]:
        return cfg.get(name) or {}

    steps = max((r.get("step", 0) for r in history), default=0)
    tc = section("train")
    target = None if tc.get("epochs") else tc.get("steps")  # an epoch count has no fixed step total
    header = [
        ("dataset", section("data").get("name")),
        ("model", f"{section('model').get('name')} (loss {section('loss').get('name')})"),
        ("steps trained", f"{steps} of {target}" if target else steps),
        ("wall time", f"{wall} (training, from metrics.jsonl)"),
        ("trained with gankit", env.get("gankit", "unknown")),
        ("report by gankit", __version__),
    ]
    line = verdict(history)
    kind = "ok" if "no collapse, D has not won" in line else "bad"
    if not any("diagnoses" in r for r in history):
        kind = "muted"  # nothing was diagnosed (a checkpoint alone, or an older run)
    return [f"<h1>{esc(run_dir.resolve().name)}</h1>",
            f'<p class="verdict {kind}"><strong>Verdict:</strong> {esc(line)}</p>',
            table(header)]  # fmt: skip


def _samples(run_dir: Path) -> list[str]:
    """The "Samples" section: the fixed-noise GIF, the real images and the snapshot grids."""
    plots, samples = RunLayout(run_dir).plots, RunLayout(run_dir).samples
    parts = ["<h2>Samples</h2>"]
    gif = plots / "samples.gif"
    grids = pick_grids([p for p in samples.glob("*.png") if p.stem.isdigit()])
    if gif.is_file():
        parts.append(figure(gif, "fixed noise over training (animated)"))
    if RunLayout(run_dir).reals.is_file():
        parts.append(figure(RunLayout(run_dir).reals, "real images"))
    if grids:
        parts.append("<h3>Fixed-noise grid per snapshot</h3><div>")
        parts += [figure(p, f"step {int(p.stem)}") for p in grids]
        parts.append("</div>")
    if not gif.is_file() and not grids:
        parts.append('<p class="muted">none yet</p>')
    return parts


def render_report(run_dir: str | Path) -> str:
    """The report of `run_dir` as one HTML string (plots are made first when missing)."""
    run_dir = Path(run_dir)
    cfg_path = RunLayout(run_dir).config
    if not cfg_path.is_file():
        raise GankitError(f"{run_dir}: no config.yaml (is it a gankit run directory?)")
    cfg_text = cfg_path.read_text(encoding="utf-8")
    cfg = yaml.safe_load(cfg_text) or {}
    history = read_jsonl(RunLayout(run_dir).metrics)
    env_path = RunLayout(run_dir).env
    env = json.loads(env_path.read_text(encoding="utf-8")) if env_path.is_file() else {}
    note = ensure_plots(run_dir, history)
    plots = RunLayout(run_dir).plots
    wall = duration(train_seconds(history))
    parts = _summary(run_dir, cfg, history, env, wall)
    if note:
        parts.append(f'<p class="muted">{esc(note)}</p>')

    parts.append("<h2>Training curves</h2>")
    curves = [figure(plots / f, f) for f in ("losses.png", "dstats.png") if (plots / f).is_file()]
    parts.append("".join(curves) or '<p class="muted">none yet</p>')

    toy = [figure(plots / f"{n}.png", n) for n in TOY_PLOTS if (plots / f"{n}.png").is_file()]
    if toy:
        parts += ["<h2>Samples against the data</h2>", "".join(toy)]
    parts += _samples(run_dir)

    parts.append("<h2>Evaluation</h2>")
    records = read_jsonl(RunLayout(run_dir).evals)
    none = '<p class="muted">none yet (gankit eval RUN_DIR)</p>'
    parts.append(eval_tables(records) if records else none)

    parts.append("<h2>Configuration</h2>")
    parts.append(f"<pre>{esc(cfg_text)}</pre>")

    parts.append("<h2>Environment</h2>")
    if env:
        rows = [(k, shlex.join(map(str, v)) if k == "argv" and isinstance(v, list) else v)
                for k, v in env.items()]  # fmt: skip
        parts.append(table([*rows, ("wall time (training)", wall)]))
    else:
        parts.append('<p class="muted">no env.json</p>')

    title = esc(f"gankit report: {run_dir.resolve().name}")
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head>\n<body>\n{body}\n</body></html>\n")  # fmt: skip


def checkpoint_view(ckpt_path: Path, into: Path) -> Path:
    """A run directory made from a checkpoint file alone (e.g. a Lightning module's
    `save_gankit_checkpoint`): config.yaml, the checkpoint, and a sample grid for image models."""
    from gankit.checkpoint import load_checkpoint
    from gankit.config import config_from_dict, to_yaml

    ckpt = load_checkpoint(ckpt_path)
    RunLayout(into).checkpoints.mkdir(parents=True)
    RunLayout(into).config.write_text(to_yaml(config_from_dict(ckpt["config"])))
    RunLayout(into).last.symlink_to(ckpt_path.resolve())
    if len(ckpt.get("data_shape", [])) == 3:  # what `gankit sample CKPT --out grid.png` draws
        from gankit.plots import save_grid
        from gankit.run import draw

        x, nrow, ids = draw(ckpt, 64)
        save_grid(x, RunLayout(into).samples / f"{ckpt['step']:06d}.png", nrow if ids else 0)
    else:  # toys: scatter, density and D's decision surface from the checkpoint's G and D
        from gankit.run import plot_run

        plot_run(into)
    return into


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.html (atomically) and return its path; for a checkpoint file CKPT (no
    run directory: a Lightning module's export, a downloaded file), CKPT's stem + .report.html."""
    path = Path(run_dir)
    if path.is_file():
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            view = checkpoint_view(path, Path(tmp) / path.stem)
            text = render_report(view)
        out = path.with_name(f"{path.stem}.report.html")
        return atomic_write(out, lambda t: Path(t).write_text(text, encoding="utf-8"))
    text = render_report(run_dir)
    path = atomic_write(
        Path(run_dir) / "report.html", lambda tmp: Path(tmp).write_text(text, encoding="utf-8")
    )
    return path
