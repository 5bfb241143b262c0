"""The handlers of the `gankit` subcommands: each converts its parsed arguments, calls the library
and prints the outcome. The parser that routes to them is `gankit.cli`.

Library imports happen inside the handlers, so importing this module (and `gankit --help`) stays
cheap: no torch until a command needs it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gankit.layout import RunLayout


def _train_config(args: argparse.Namespace) -> tuple:
    """(config, run directory) of `gankit train`'s arguments: a run to resume, or a new one."""
    from gankit.config import config_from_dict, load_config
    from gankit.distributed import env_world
    from gankit.errors import UsageError
    from gankit.rundir import check_new_run_dir, new_run_dir
    from gankit.utils import GankitError

    if args.resume:
        run_dir = Path(args.run_dir or args.config or "")
        if not RunLayout(run_dir).config.is_file():
            raise GankitError(f"--resume needs an existing run directory, got {str(run_dir)!r}")
        if args.config and Path(args.config) != run_dir:
            cfg = load_config(args.config, args.set)
        else:
            import yaml

            from gankit.config import apply_overrides

            raw = yaml.safe_load(RunLayout(run_dir).config.read_text())
            cfg = config_from_dict(apply_overrides(raw, args.set))
    else:
        if not args.config:
            raise GankitError(
                "train needs a preset name or a YAML file (see `gankit list presets`)"
            )
        cfg = load_config(args.config, args.set)
        if not args.run_dir and env_world().size > 1:
            raise UsageError(
                "several processes (torchrun) need --run-dir: each would pick its own "
                "runs/NNNNN (gankit train --nproc N picks one for all)"
            )
        run_dir = (
            Path(args.run_dir)
            if args.run_dir
            else new_run_dir(Path(args.config).stem, create=not args.dry_run)
        )
        check_new_run_dir(run_dir, clear=False)  # train() clears a restartable one
    return cfg, run_dir


def cmd_train(args: argparse.Namespace) -> int:
    from gankit.config import to_yaml

    cfg, run_dir = _train_config(args)
    if args.dry_run:
        print(to_yaml(cfg), end="")
        print(f"# run directory: {run_dir}")
        return 0
    from gankit.distributed import World, check_batch, env_world, launch

    world = env_world()
    if args.nproc > 1 and world.size == 1:  # start the ranks; each runs this command
        check_batch(cfg.data.batch_size, World(0, args.nproc))
        print(f"run directory: {run_dir} ({args.nproc} processes)", flush=True)
        return launch(args.nproc, _worker_argv(args, run_dir))
    from gankit.trainer import TrainingInterrupted, train

    if world.main:
        print(f"run directory: {run_dir}", flush=True)
    try:
        state = train(cfg, run_dir, resume=args.resume)
    except TrainingInterrupted:
        if world.main:
            _image_plots(run_dir)  # what was trained so far, before exiting 130/143
        raise
    if not world.main:
        return 0
    _image_plots(run_dir)
    print(train_summary(run_dir, state.step))
    if args.report:
        from gankit.report import write_report

        print(f"report: {write_report(run_dir)}")
    return 0


def _worker_argv(args: argparse.Namespace, run_dir: Path) -> list[str]:
    """The `gankit` command line each rank of `--nproc` runs: this one, in `run_dir`."""
    argv = (["-v"] if args.verbose else []) + ["train"]
    argv += [args.config] if args.config else []
    argv += [a for s in args.set for a in ("--set", s)] + ["--run-dir", str(run_dir)]
    return argv + (["--resume"] if args.resume else []) + (["--report"] if args.report else [])


def _image_plots(run_dir: Path) -> None:
    """plots/ of an image run (the GIF and D-statistics are cheap); toys: `gankit plot RUN_DIR`."""
    if any(RunLayout(run_dir).samples.glob("*.png")):
        from gankit.run import plot_run

        plot_run(run_dir)


def train_summary(run_dir: Path, steps: int) -> str:
    """The lines `gankit train` ends with: what was trained, how it ended, what to run next."""
    from gankit.diagnose import verdict
    from gankit.utils import read_jsonl

    history = read_jsonl(RunLayout(run_dir).metrics)
    last = next((r for r in reversed(history) if "d_real" in r), {})
    wall = next((r["time_s"] for r in reversed(history) if "time_s" in r), 0.0)
    lines = [
        f"trained {steps:,} steps in {wall:.1f} s; checkpoint: {run_dir / 'checkpoints' / 'last.pt'}"
    ]
    if last:
        lines.append(f"last window: D(real) {last['d_real']:.3f}, D(fake) {last['d_fake']:.3f}, "
                     f"loss_d {last['loss_d']:.3f}, loss_g {last['loss_g']:.3f}")  # fmt: skip
    lines.append(f"verdict: {verdict(history)}")
    if any(RunLayout(run_dir).plots.glob("*.png")):
        lines.append(f"plots: {run_dir / 'plots'}")
    lines.append(f"next: gankit eval {run_dir} | gankit report {run_dir} | "
                 f"gankit sample {run_dir} --n 64 --out samples.png")  # fmt: skip
    return "\n".join(lines)


def cmd_eval(args: argparse.Namespace) -> int:
    from gankit.evaluate import eval_run

    metrics = [m for m in args.metrics.split(",") if m] if args.metrics else None
    options = {"inception_weights": args.inception_weights, "device": args.device,
               "inception_unverified": args.inception_unverified,
               "progress": not args.json and sys.stderr.isatty()}  # fmt: skip
    records = eval_run(args.path, metrics, args.n, args.seed, floor=args.floor, options=options)
    if args.json:
        print(json.dumps(records[0] if len(records) == 1 else {"results": records}))
        return 0
    from gankit.diagnose import verdict
    from gankit.rundir import resolve
    from gankit.utils import read_jsonl

    run_dir, ckpt = resolve(args.path)
    run_dir = run_dir or (ckpt.parent.parent if ckpt.parent.name == "checkpoints" else None)
    if run_dir is not None and not args.floor:  # the run's diagnoses up to the evaluated step
        upto = records[0].get("step") if records else None
        print(f"verdict: {verdict(read_jsonl(run_dir / 'metrics.jsonl'), upto)}")
    skip = (
        "metric",
        "time",
        "gankit_version",
        "dataset",
        "checkpoint",
        "sigmas",
        "val_ll",
        "class_hist",
    )
    for r in records:
        vals = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in r.items() if k not in skip)  # fmt: skip
        print(f"{r['metric']}{' (floor: real train vs real test)' if r['floor'] else ''}: {vals}")
    return 0


def cmd_classifier(args: argparse.Namespace) -> int:
    from gankit.data import build_data
    from gankit.metrics.classifier import PACKAGED_SHA256, classifier_info, fit_and_cache

    cache_dir, name = args.cache_dir or "", args.dataset
    # without --force: the classifier the metrics use (packaged or an earlier local refit), no data
    info = None if args.force else classifier_info(name, cache_dir)
    refitted = info is None
    if refitted:
        options = {"root": args.data_root or "", "cache_dir": cache_dir}
        data = build_data(name, {}, args.seed, 128, options=options)
        command = (f"gankit classifier fit {name} --epochs {args.epochs} --seed {args.seed} "
                   f"--device {args.device} --threads {args.threads} --force")  # fmt: skip
        info = fit_and_cache(name, data, epochs=args.epochs, seed=args.seed, cache_dir=cache_dir,
                             force=True, device=args.device, threads=args.threads,
                             command=command)  # fmt: skip
    acc = f"{name} classifier: test accuracy {100 * info['test_acc']:.2f} %"
    sha = f"sha256 {info['sha256'][:16]}..."
    if info["source"] == "packaged":
        print(f"{acc}, {sha} (packaged; --force refits locally)\nfile: {info['path']}")
        return 0
    state = "fitted now" if refitted else "an earlier local refit; --force refits again"
    print(f"{acc}, {sha} ({state})\ncached: {info['path']}")
    if name in PACKAGED_SHA256:
        same = " (identical to the packaged one)" if info["sha256"] == PACKAGED_SHA256[name] else ""
        print(f"records now use this local refit (source local){same} instead of the packaged "
              f"classifier; to go back to it, delete {info['path']}")  # fmt: skip
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    from gankit.run import sample_to_file
    from gankit.sample import parse_seeds

    seeds = parse_seeds(args.seeds) if args.seeds else None
    out = sample_to_file(
        args.ckpt, args.out, n=args.n, seeds=seeds, seed=args.seed, klass=args.klass
    )
    print(f"wrote {out}")
    return 0


def cmd_interpolate(args: argparse.Namespace) -> int:
    from gankit.latent import interpolate_to_file
    from gankit.rundir import resolve
    from gankit.sample import parse_seeds

    out = interpolate_to_file(resolve(args.ckpt)[1], args.out, parse_seeds(args.seeds), args.steps,
                              args.mode, args.klass)  # fmt: skip
    print(f"wrote {out}")
    return 0


def cmd_nn(args: argparse.Namespace) -> int:
    from gankit.neighbours import nn_to_file
    from gankit.rundir import resolve

    out, st = nn_to_file(resolve(args.ckpt)[1], args.out, args.n, args.k, args.space, args.seed)
    print(
        f"wrote {out}: each row is a sample, then its {args.k} nearest training images ({args.space} distance)"
    )
    print(
        f"mean nearest-neighbour distance to the training set: {st['n_stats']} samples {st['fake_nn']:.4g}, "
        f"{st['n_test']} real test images {st['test_nn']:.4g} (ratio {st['ratio']:.3f}; well below 1 suggests memorisation)"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from gankit.compare import compare_runs

    out, table = compare_runs(args.runs, args.out)
    print(table)
    print(f"wrote {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from gankit.report import write_report

    print(f"wrote {write_report(args.run_dir)}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from gankit.run import plot_run

    for p in plot_run(args.run_dir):
        print(f"wrote {p}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what == "presets":  # read from the YAML files alone: no torch import
        from gankit.presets import preset_table

        rows = preset_table()
        wide = max(len(r.name) for r in rows)
        for r in rows:
            print(f"{r.name:<{wide}}  {r.dataset} ({r.data}): {r.description}")
        return 0
    if what == "metrics":  # names and one line each, without importing the evaluation code
        from gankit.metrics import NAMES

        wide = max(map(len, NAMES))
        print("\n".join(f"{name:<{wide}}  {about}" for name, about in NAMES.items()))
        return 0
    import importlib

    module, table = {
        "models": ("gankit.models", "MODELS"),
        "datasets": ("gankit.data", "DATASETS"),
        "losses": ("gankit.losses", "LOSSES"),
        "benches": ("gankit.bench", "BENCHES"),
    }[what]
    print("\n".join(getattr(importlib.import_module(module), table)))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from gankit.bench import BENCHES
    from gankit.registry import lookup

    lookup(BENCHES, args.name, "benchmark")(args)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from gankit.sweep import parse_seeds, run_sweep

    seeds = parse_seeds(args.seeds)  # a bad --seeds fails before anything is loaded
    metrics = [m for m in args.metrics.split(",") if m] if args.metrics else None
    result = run_sweep(args.config, seeds, args.set, metrics, args.out, jobs=args.jobs, n=args.n,
                       report=lambda line: print(line, flush=True))  # fmt: skip
    print(result.table)
    print(f"wrote {result.out / 'summary.json'} and summary.md")
    return 1 if result.failed else 0
