"""`gankit sweep`: one config trained and evaluated under several seeds, summarised as mean ± standard
error over seeds, so a comparison of two configs can be told apart from seed noise.

Layout of a sweep directory (default runs/sweep-<preset stem>):
    sweep.json                what this directory holds (preset, overrides, metrics, resolved config);
                              a command with other settings is refused, so runs are never mixed
    seed_<s>/                 an ordinary run directory per seed (gankit eval / plot / report work on it)
    seed_<s>/DONE             written atomically once training finished: the seed is never retrained
    seed_<s>/sweep_eval.json  the evaluations the sweep made (step, n, records), reused when they match
    summary.json summary.md   per metric field: mean ± se, min, max and the per-seed values

Re-running the same command continues where it stopped: finished seeds are skipped, a run with a
checkpoint is resumed, a run killed before its first checkpoint is started again. The summary
(progress lines, tables, summary.json / summary.md) is made by `gankit.sweep_summary`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from gankit.config import ConfigError, load_config, lookup, to_dict
from gankit.layout import RunLayout
from gankit.sweep_summary import SweepResult, seed_line, write_summary
from gankit.utils import GankitError, read_jsonl, write_json

MAX_SEEDS = 1000
SEEDS_FORM = "use e.g. 0-4, 0,2,5 or 3 (seeds >= 0, at most 1000)"
Report = Callable[[str], None]


def parse_seeds(text: str) -> list[int]:
    """`"0-4"` -> [0, 1, 2, 3, 4]; `"0,2,5"` -> [0, 2, 5]; `"3"` -> [3]; parts may mix: `"0-2,7"`.

    Raises ConfigError (one line naming --seeds and the valid form) for an empty list, a negative
    seed, a reversed range, a repeated seed or more than MAX_SEEDS seeds; ranges are counted before
    they are expanded, so `0-99999999` fails at once.
    """
    parts, count = [], 0
    for part in (p.strip() for p in text.split(",")):
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            why = "negative seed" if part.startswith("-") else "empty" if not part else "not a seed"
            raise ConfigError(f"--seeds {text!r}: {why} {part!r}; {SEEDS_FORM}")
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise ConfigError(f"--seeds {text!r}: reversed range {part!r}; {SEEDS_FORM}")
        count += hi - lo + 1
        if count > MAX_SEEDS:
            raise ConfigError(f"--seeds {text!r}: more than {MAX_SEEDS} seeds; {SEEDS_FORM}")
        parts.append((lo, hi))
    seeds = [s for lo, hi in parts for s in range(lo, hi + 1)]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r}: a seed is listed twice; {SEEDS_FORM}")
    return seeds


# ---- one seed ---------------------------------------------------------------------------------------


def _ckpt_step(path: Path) -> int:
    import torch

    return int(torch.load(path, weights_only=True, map_location="cpu", mmap=True)["step"])


def plan_seed(run_dir: Path) -> tuple[str, int | None]:
    """("done", step) for a finished run, ("resume", step) for one with a checkpoint (step None if
    unreadable: resuming then fails with the checkpoint's own error), else ("fresh", 0)."""
    last = RunLayout(run_dir).last
    if (run_dir / "DONE").is_file() and last.is_file():
        return "done", _ckpt_step(last)
    if last.is_file():
        try:
            return "resume", _ckpt_step(last)
        except Exception:  # noqa: BLE001 (train(resume=True) reports it, as this seed's failure)
            return "resume", None
    return "fresh", 0


def eval_names(cfg: Any, metrics: list[str] | None) -> list[str]:
    """The metrics a seed is evaluated under: --metrics, else eval.metrics, else the dataset's."""
    if metrics or cfg.eval.metrics:
        return list(metrics or cfg.eval.metrics)
    from gankit.data import data_from_config
    from gankit.evaluate import default_metrics

    return default_metrics(data_from_config(cfg), cfg.train.per_class)


def run_seed(config: str, overrides: list[str], seed: int, run_dir: str | Path,
             metrics: list[str] | None = None, n: int | None = None) -> dict[str, Any]:  # fmt: skip
    """Train (skip / resume / start) and evaluate one seed's run; returns a JSON-safe result.

    Evaluations are reused when sweep_eval.json holds records of every metric at the checkpoint's
    step for the same `n`; eval.jsonl alone cannot tell, as it records the resulting sample count and
    not whether it was asked for (n = None is each metric's protocol default).
    """
    from gankit.evaluate import eval_run
    from gankit.trainer import train

    cfg = load_config(config, [*overrides, f"seed={seed}"])
    run_dir = Path(run_dir)
    plan, start = plan_seed(run_dir)
    trained, train_s = 0, 0.0
    if plan != "done":
        # a run killed before its first checkpoint is cleared by train() itself, under the run
        # directory's lock (deleting it here could pull the directory from under a live writer)
        t0 = time.perf_counter()
        state = train(cfg, run_dir, resume=plan == "resume")
        trained, train_s = state.step - (start or 0), time.perf_counter() - t0
        write_json({"step": state.step}, run_dir / "DONE")
        start = state.step
    names = eval_names(cfg, metrics)
    evals_path = run_dir / "sweep_eval.json"
    evals = json.loads(evals_path.read_text()) if evals_path.is_file() else []
    kept = {
        r["metric"]: r for e in evals if e["step"] == start and e["n"] == n for r in e["records"]
    }
    missing = [m for m in names if m not in kept]
    if missing:
        options = {"progress": False, "device": cfg.train.device}
        for r in eval_run(run_dir, missing, n, options=options):
            kept[r["metric"]] = r
        evals = [e for e in evals if not (e["step"] == start and e["n"] == n)]
        evals.append({"step": start, "n": n, "records": [kept[m] for m in names if m in kept]})
        write_json(evals, evals_path)
    history = read_jsonl(RunLayout(run_dir).metrics)
    time_s = next((r["time_s"] for r in reversed(history) if "time_s" in r), None)
    return {"seed": seed, "status": "ok", "step": start, "trained": trained,
            "train_s": round(train_s, 3), "time_s": time_s, "eval_reused": not missing,
            "records": [kept[m] for m in names], "error": None}  # fmt: skip


def _failed(seed: int, error: str) -> dict[str, Any]:
    return {"seed": seed, "status": "failed", "records": [], "time_s": None, "error": error}


def _one_line(e: BaseException) -> str:
    msg = str(e) if isinstance(e, GankitError) else f"{type(e).__name__}: {e}"
    return msg.strip().splitlines()[0] if msg.strip() else type(e).__name__


def _run_inline(spec: dict[str, Any]) -> dict[str, Any]:
    """run_seed in this process (--jobs 1): an error fails the seed, Ctrl-C stops the sweep."""
    from gankit.trainer import TrainingInterrupted

    try:
        return run_seed(**spec)
    except TrainingInterrupted as e:  # the checkpoint is saved; the same command continues
        first = str(e).split("; ")[0]
        msg = f"seed {spec['seed']}: {first}; run the same sweep command to continue"
        raise TrainingInterrupted(msg, e.signum) from None
    except Exception as e:  # noqa: BLE001 (a failed seed must not stop the others)
        return _failed(spec["seed"], _one_line(e))


def _child(spec: dict[str, Any], conn: Any) -> None:
    """Body of a --jobs worker process: run_seed, its result (or failure) sent back on `conn`."""
    from gankit.trainer import TrainingInterrupted

    code = 0
    try:
        res = run_seed(**spec)
    except TrainingInterrupted as e:  # Ctrl-C reaches every worker; each saves its checkpoint
        msg = f"interrupted: {str(e).split('; ')[0]}; run the same sweep command to continue"
        res, code = _failed(spec["seed"], msg), 128 + e.signum
    except Exception as e:  # noqa: BLE001 (reported to the parent as this seed's failure)
        res, code = _failed(spec["seed"], _one_line(e)), 1
    conn.send(res)
    conn.close()
    sys.exit(code)


def _context() -> Any:
    """Workers fork from a server that imported gankit once (a fresh interpreter spends seconds on
    torch/scipy/matplotlib per seed); the server never ran torch code, so forking it is safe."""
    import multiprocessing as mp

    if "forkserver" not in mp.get_all_start_methods():
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["gankit.sweep", "gankit.trainer", "gankit.run", "gankit.plots"])
    return ctx


class _Workers:
    """The running --jobs worker processes. A SIGTERM to the sweep is passed on to each of them, so
    each saves its checkpoint and stops (as Ctrl-C in a terminal reaches them all), and no queued
    seed starts after it; without this, `kill` of the sweep left its workers training unseen."""

    def __init__(self) -> None:
        self.procs: set[Any] = set()
        self.lock = threading.Lock()
        self.signum = 0

    def start(self, proc: Any) -> bool:
        """Start `proc` unless the sweep is stopping (False)."""
        with self.lock:
            if self.signum:
                return False
            proc.start()
            self.procs.add(proc)
            return True

    def finished(self, proc: Any) -> None:
        with self.lock:
            self.procs.discard(proc)

    def stop(self, signum: int, frame: Any) -> None:
        """SIGTERM handler (main thread): forward the signal to every running worker."""
        self.signum = self.signum or signum
        with self.lock:
            for proc in self.procs:
                try:
                    os.kill(proc.pid, signum)
                except ProcessLookupError:  # it has just ended
                    pass


def _run_process(ctx: Any, spec: dict[str, Any], workers: _Workers) -> dict[str, Any]:
    """run_seed in a process of its own: a crash (even a segfault or an OOM kill) fails this seed only."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(spec, send), name=f"gankit-sweep-seed-{spec['seed']}")
    if not workers.start(proc):
        send.close()
        recv.close()
        return _failed(spec["seed"], "not started: the sweep was stopped")
    send.close()
    try:
        res = recv.recv()
    except EOFError:
        res = None
    finally:
        recv.close()
        proc.join()
        workers.finished(proc)
    return res or _failed(spec["seed"], f"worker process died (exit code {proc.exitcode})")


# ---- the sweep --------------------------------------------------------------------------------------


def _keys(overrides: list[str]) -> list[str]:
    return [o.split("=", 1)[0].strip() for o in overrides]


def _check_request(
    seeds: list[int], overrides: list[str], metrics: list[str] | None, jobs: int, n: int | None
) -> None:
    """A one-line ConfigError for a bad seed list, `jobs` or `n`, a --set seed=..., or an unknown
    metric name, before any config is loaded."""
    from gankit.metrics import NAMES

    if not seeds:
        raise ConfigError(f"--seeds: no seeds given; {SEEDS_FORM}")
    if len(seeds) > MAX_SEEDS or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds: {len(seeds)} seeds, min {min(seeds)}; {SEEDS_FORM}")
    if jobs < 1 or (n is not None and n < 1):
        raise ConfigError(f"--jobs and --n must be >= 1, got {jobs} and {n}")
    if "seed" in _keys(overrides):
        raise ConfigError("--set seed=... conflicts with --seeds: the sweep sets each run's seed")
    for m in metrics or []:
        lookup(NAMES, m, "metric (--metrics)")


def _worker_overrides(overrides: list[str], jobs: int) -> list[str]:
    """`overrides` as each seed's run gets them: with `jobs` > 1 also train.threads and
    train.progress, unless `overrides` set them."""
    keys, worker_overrides = _keys(overrides), list(overrides)
    if jobs > 1:
        if "train.threads" not in keys:  # J processes x threads <= cores
            worker_overrides.append(f"train.threads={max(1, (os.cpu_count() or 1) // jobs)}")
        if "train.progress" not in keys:  # parallel progress bars would only interleave
            worker_overrides.append("train.progress=false")
    return worker_overrides


def _check_sweep_dir(out: Path, meta: dict[str, Any]) -> list[int]:
    """Refuse a directory that holds another sweep; returns the seeds it already lists."""
    path = out / "sweep.json"
    if not path.is_file():
        if out.exists() and any(p.name.startswith("seed_") for p in out.iterdir()):
            raise ConfigError(f"{out} holds seed_* runs but no sweep.json; choose another --out")
        return []
    old = json.loads(path.read_text())
    diff = [k for k in ("preset", "overrides", "metrics", "config") if old.get(k) != meta[k]]
    if diff:
        shown = "; ".join(f"{k}: {old.get(k)!r} there, {meta[k]!r} now" for k in diff
                          if k != "config") or "the resolved config differs"  # fmt: skip
        raise ConfigError(f"{out} holds a different sweep ({shown}); a sweep directory is never "
                          "mixed: use the same settings to continue it, or another --out")  # fmt: skip
    return old.get("seeds", [])


def run_sweep(config: str, seeds: list[int], overrides: list[str], metrics: list[str] | None,
              out: str | Path | None = None, jobs: int = 1, n: int | None = None,
              report: Report | None = None) -> SweepResult:  # fmt: skip
    """Train and evaluate `config` once per seed (seed_<s>/ under `out`) and summarise over seeds.

    Everything is validated before any training: each seed's config, the metric names, `jobs`, `n`
    and the directory (see the module docstring). `jobs` > 1 runs that many seeds at once, each in
    its own process, with train.threads = cpu_count // jobs unless `overrides` set it. A failed seed
    does not stop the others: it is listed in the result's `failed`. `report` gets progress lines.
    """
    report = report or (lambda line: None)
    _check_request(seeds, overrides, metrics, jobs, n)
    by_seed = {s: load_config(config, [*overrides, f"seed={s}"]) for s in seeds}  # all validated
    base = to_dict(by_seed[seeds[0]])
    base.pop("seed")
    stem = Path(config).stem
    out = Path(out) if out else Path("runs") / f"sweep-{stem}"
    meta = {"format": 1, "preset": stem, "source": config, "overrides": list(overrides),
            "metrics": metrics, "n": n, "config": base}  # fmt: skip
    known = _check_sweep_dir(out, meta)
    out.mkdir(parents=True, exist_ok=True)
    write_json({**meta, "seeds": sorted({*known, *seeds})}, out / "sweep.json")
    worker_overrides = _worker_overrides(overrides, jobs)

    def one(seed: int) -> dict[str, Any]:
        run_dir = out / f"seed_{seed}"
        plan, step = plan_seed(run_dir)
        tc = by_seed[seed].train
        length = f"{tc.epochs} epochs" if tc.epochs else f"{tc.steps} steps"
        report(f"seed {seed}: " + {"done": "finished run", "resume": f"resuming at step {step}",
                                   "fresh": f"training {length}"}[plan])  # fmt: skip
        spec = {"config": config, "overrides": worker_overrides, "seed": seed,
                "run_dir": str(run_dir), "metrics": metrics, "n": n}  # fmt: skip
        res = _run_process(ctx, spec, workers) if jobs > 1 else _run_inline(spec)
        report(seed_line(seed, res))
        return res

    if jobs > 1:
        ctx, workers = _context(), _Workers()
        main = threading.current_thread() is threading.main_thread()
        old = signal.signal(signal.SIGTERM, workers.stop) if main else None
        pool = ThreadPoolExecutor(max_workers=jobs)  # each thread waits on one worker process
        try:
            results = dict(zip(seeds, pool.map(one, seeds), strict=True))
        finally:  # on Ctrl-C (which the workers also get) no queued seed is started
            pool.shutdown(wait=True, cancel_futures=True)
            if main:
                signal.signal(signal.SIGTERM, old)
        if workers.signum:
            from gankit.trainer import TrainingInterrupted

            raise TrainingInterrupted(
                f"{signal.Signals(workers.signum).name}: each running seed saved its checkpoint; "
                "run the same sweep command to continue",
                workers.signum,
            )
    else:
        results = {s: one(s) for s in seeds}
    return write_summary(out, meta, seeds, results)
