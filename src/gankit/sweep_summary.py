"""What a sweep reports: the per-seed progress line, the summary rows (mean ± standard error over
seeds per metric field), their text and Markdown tables, and summary.json / summary.md.

Pure functions of the seeds' results (`gankit.sweep.run_seed`'s dicts), apart from
`write_summary`, which writes the two files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gankit.utils import write_json

# numeric record fields that describe the protocol, not the result, are never averaged: these and
# every n_* / num_* count (n_fake, n_real, n_test, num_modes, num_projections, ...)
PROTOCOL = {"n", "d", "seed", "step", "seconds", "sigma", "kid_subset_size", "is_splits", "prc_k"}


def format_seeds(seeds: list[int]) -> str:
    """[0, 1, 2, 3, 7] -> "0-3,7" (the inverse of `gankit.sweep.parse_seeds`)."""
    out: list[str] = []
    i = 0
    while i < len(seeds):
        j = i
        while j + 1 < len(seeds) and seeds[j + 1] == seeds[j] + 1:
            j += 1
        out.append(str(seeds[i]) if i == j else f"{seeds[i]}-{seeds[j]}")
        i = j + 1
    return ",".join(out)


@dataclass
class SweepResult:
    out: Path
    seeds: list[int]
    results: dict[int, dict[str, Any]]  # seed -> run_seed's result (status ok / failed)
    rows: list[dict[str, Any]]  # summarise()
    table: str  # the plain-text table printed by the CLI

    @property
    def failed(self) -> list[int]:
        return [s for s in self.seeds if self.results[s]["status"] != "ok"]


def _headline(record: dict[str, Any]) -> dict[str, float]:
    """The numeric result fields of a metric record (protocol fields, flags, strings, lists dropped)."""
    return {k: v for k, v in record.items() if k not in PROTOCOL and not k.startswith(("n_", "num_"))
            and isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip


def summarise(records_by_seed: dict[int, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One row per "metric.field": mean, se (std with ddof=1 / sqrt(n); None for one value or
    non-finite values), min, max, n and the per-seed values {seed: value}."""
    import numpy as np

    values: dict[str, dict[int, float]] = {}
    for seed, records in records_by_seed.items():
        for r in records:
            for field, v in _headline(r).items():
                values.setdefault(f"{r['metric']}.{field}", {})[seed] = v
    rows = []
    for key, per_seed in values.items():
        x = np.asarray(list(per_seed.values()), dtype=np.float64)
        finite = bool(np.isfinite(x).all())
        se = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 and finite else None
        rows.append({"key": key, "mean": float(x.mean()), "se": se, "min": float(x.min()),
                     "max": float(x.max()), "n": len(x), "values": per_seed})  # fmt: skip
    return rows


def _num(v: float | None) -> str:
    if v is None:
        return "-"
    return str(int(v)) if float(v).is_integer() and abs(v) < 1e15 else f"{v:.4g}"


def format_table(rows: list[dict[str, Any]], seeds: list[int], markdown: bool = False) -> str:
    """The summary rows as aligned text (or a Markdown table): metric, mean ± se, min, max, per seed."""
    head = ["metric", "mean ± se", "min", "max", f"per seed ({format_seeds(seeds)})"]
    body = [[r["key"], f"{r['mean']:.4g} ± " + ("n/a" if r["se"] is None else f"{r['se']:.2g}"),
             _num(r["min"]), _num(r["max"]), " ".join(_num(r["values"].get(s)) for s in seeds)]
            for r in rows]  # fmt: skip
    if markdown:
        lines = [head, ["---"] * len(head), *body]
        return "\n".join("| " + " | ".join(c) + " |" for c in lines)
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)) + "  " + row[-1]
                     for row in [head, *body])  # fmt: skip


def seed_line(seed: int, res: dict[str, Any]) -> str:
    """The progress line of a finished seed."""
    if res["status"] != "ok":
        return f"seed {seed}: FAILED: {res['error']}"
    if res["trained"]:
        what = f"trained {res['trained']} steps in {res['train_s']:.1f} s"
    else:
        what = f"already trained ({res['step']} steps)"
    evals = "eval reused" if res["eval_reused"] else "evaluated"
    from gankit.compare import HEADLINE

    vals = []
    for r in res["records"]:  # each metric's headline value first; three values keep the line short
        fields = _headline(r)
        first = HEADLINE.get(r["metric"], ("", True))[0]
        order = sorted(fields, key=lambda k: k != first)[:3]
        vals += [f"{k}={_num(fields[k])}" for k in order]
    vals = " ".join(vals)
    return f"seed {seed}: {what}; {evals}; {vals}".rstrip("; ")


def write_summary(out: Path, meta: dict[str, Any], seeds: list[int],
                  results: dict[int, dict[str, Any]]) -> SweepResult:  # fmt: skip
    """summary.json and summary.md of the seeds' results; the table is also returned."""
    ok = {s: results[s]["records"] for s in seeds if results[s]["status"] == "ok"}
    rows = summarise(ok)
    times = {s: results[s]["time_s"] for s in seeds if results[s]["time_s"] is not None}
    if times:  # wall time of training, from metrics.jsonl (summed over resumed processes)
        rows += summarise({s: [{"metric": "train", "time_s": t}] for s, t in times.items()})
    failed = [s for s in seeds if results[s]["status"] != "ok"]
    runs = f"{len(seeds)} runs" + (
        f", {len(failed)} failed: {format_seeds(failed)}" if failed else ""
    )
    title = f"sweep {meta['preset']}, seeds {format_seeds(seeds)} ({runs}), {out}"
    table = title + "\n" + format_table(rows, seeds)
    per_seed = {str(s): {k: results[s].get(k) for k in ("status", "step", "time_s", "error")}
                for s in seeds}  # fmt: skip
    write_json({"preset": meta["preset"], "overrides": meta["overrides"], "metrics": meta["metrics"],
                "n": meta["n"], "seeds": seeds, "failed": failed, "runs": per_seed,
                "rows": [{**r, "values": {str(s): v for s, v in r["values"].items()}} for r in rows]},
               out / "summary.json")  # fmt: skip
    sets = ", ".join(f"`{o}`" for o in meta["overrides"]) or "none"
    md = (f"# sweep {meta['preset']}\n\nseeds {format_seeds(seeds)} ({runs}); overrides: {sets}\n\n"
          + format_table(rows, seeds, markdown=True) + "\n")  # fmt: skip
    (out / "summary.md").write_text(md)
    return SweepResult(out, seeds, results, rows, table)
