"""The `gankit` command: parsing and printing only; the work happens in the library.

Exit codes: 0 success, 1 runtime error, 2 usage or config error, 130/143 interrupted by SIGINT/SIGTERM
(after saving a checkpoint). Errors are one line; `--verbose` shows the traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXAMPLES_TRAIN = """examples:
  gankit train toy_ring
  gankit train gauss1d --set train.steps=2000 --set optim.lr_d=1e-4
  gankit train my_config.yaml --run-dir runs/mine
  gankit train --resume runs/00001-toy_ring
"""


def cmd_train(args: argparse.Namespace) -> int:
    from gankit.config import config_from_dict, load_config, to_yaml
    from gankit.run import check_new_run_dir, new_run_dir
    from gankit.utils import GankitError

    if args.resume:
        run_dir = Path(args.run_dir or args.config or "")
        if not (run_dir / "config.yaml").is_file():
            raise GankitError(f"--resume needs an existing run directory, got {str(run_dir)!r}")
        if args.config and Path(args.config) != run_dir:
            cfg = load_config(args.config, args.set)
        else:
            import yaml

            from gankit.config import apply_overrides

            raw = yaml.safe_load((run_dir / "config.yaml").read_text())
            cfg = config_from_dict(apply_overrides(raw, args.set))
    else:
        if not args.config:
            raise GankitError(
                "train needs a preset name or a YAML file (see `gankit list presets`)"
            )
        cfg = load_config(args.config, args.set)
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(Path(args.config).stem)
        check_new_run_dir(run_dir)
    if args.dry_run:
        print(to_yaml(cfg), end="")
        print(f"# run directory: {run_dir}")
        return 0
    from gankit.train import train

    print(f"run directory: {run_dir}", flush=True)
    state = train(cfg, run_dir, resume=args.resume)
    print(f"trained {state.step} steps; checkpoint: {run_dir / 'checkpoints' / 'last.pt'}")
    if any((run_dir / "samples").glob("*.png")):  # image run: the GIF and D-statistics are cheap
        from gankit.run import plot_run

        plot_run(run_dir)
        print(f"plots: {run_dir / 'plots'} (samples.gif, samples.png, dstats.png, losses.png)")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from gankit.run import eval_run

    metrics = [m for m in args.metrics.split(",") if m] if args.metrics else None
    records = eval_run(args.path, metrics, args.n, args.seed)
    if args.json:
        print(json.dumps(records[0] if len(records) == 1 else {"results": records}))
        return 0
    for r in records:
        skip = ("metric", "time", "gankit_version", "dataset")
        vals = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                         for k, v in r.items() if k not in skip)  # fmt: skip
        print(f"{r['metric']}: {vals}")
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


def cmd_plot(args: argparse.Namespace) -> int:
    from gankit.run import plot_run

    for p in plot_run(args.run_dir):
        print(f"wrote {p}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    what = args.what
    if what == "presets":
        from gankit.config import list_presets

        names = list_presets()
    else:
        import importlib

        module, table = {
            "models": ("gankit.models", "MODELS"),
            "datasets": ("gankit.data", "DATASETS"),
            "losses": ("gankit.losses", "LOSSES"),
            "metrics": ("gankit.metrics", "METRICS"),
            "benches": ("gankit.bench", "BENCHES"),
        }[what]
        names = list(getattr(importlib.import_module(module), table))
    print("\n".join(names))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from gankit.bench import BENCHES
    from gankit.config import lookup

    lookup(BENCHES, args.name, "benchmark")(args)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from gankit import __version__

    p = argparse.ArgumentParser(prog="gankit", description="Train, evaluate and visualise GANs.")
    p.add_argument("--version", action="version", version=f"gankit {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    raw = argparse.RawDescriptionHelpFormatter

    t = sub.add_parser("train", help="train a GAN from a preset or YAML file", epilog=EXAMPLES_TRAIN,
                       formatter_class=raw)  # fmt: skip
    t.add_argument("config", nargs="?", help="preset name (gankit list presets) or YAML file")
    t.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. optim.lr_d=1e-4 (repeatable)")  # fmt: skip
    t.add_argument("--run-dir", help="run directory (default: runs/NNNNN-<config name>)")
    t.add_argument(
        "--resume", action="store_true", help="continue the run in --run-dir (or CONFIG)"
    )
    t.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint (appends to eval.jsonl)",
                       epilog="example: gankit eval runs/00001-toy_ring --json", formatter_class=raw)  # fmt: skip
    e.add_argument("path", metavar="RUN_DIR|CKPT")
    e.add_argument("--metrics", help="comma-separated metric names (default: the dataset's)")
    e.add_argument("--n", type=int, help="number of generated samples (default: eval.n_samples)")
    e.add_argument("--seed", type=int, help="evaluation noise seed (default: eval.seed)")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.set_defaults(func=cmd_eval)

    s = sub.add_parser("sample", help="write samples of a checkpoint to a file",
                       epilog="example: gankit sample runs/00001-toy_ring --seeds 0-63 --out s.npy",
                       formatter_class=raw)  # fmt: skip
    s.add_argument("ckpt", metavar="CKPT|RUN_DIR")
    s.add_argument("--n", type=int, default=64, help="number of samples (default 64)")
    s.add_argument("--seeds", help="one sample per seed, e.g. 0-63 or 1,5,9 (overrides --n)")
    s.add_argument("--seed", type=int, default=0, help="noise seed for --n (default 0)")
    s.add_argument("--class", dest="klass", metavar="K|all",
                   help="conditional or per-class models: draw class K, or all (a class grid: one row "
                        "per class, the same noise in each column)")  # fmt: skip
    s.add_argument("--out", required=True,
                   help="output file: .npy, .csv, .pt or .png (a grid for images), or a directory "
                        "(images: one PNG per sample)")  # fmt: skip
    s.set_defaults(func=cmd_sample)

    pl = sub.add_parser("plot", help="write a run's plots into RUN_DIR/plots")
    pl.add_argument("run_dir", metavar="RUN_DIR")
    pl.set_defaults(func=cmd_plot)

    ls = sub.add_parser("list", help="list presets, models, datasets, losses, metrics or benches")
    ls.add_argument("what", nargs="?", default="presets",
                    choices=["presets", "models", "datasets", "losses", "metrics", "benches"])  # fmt: skip
    ls.set_defaults(func=cmd_list)

    b = sub.add_parser("bench", help="speed benchmark against a textbook reference loop")
    b.add_argument("name", help="benchmark name (gankit list benches)")
    b.add_argument(
        "--steps", type=int, help="gankit steps to time (default: the benchmark's workload)"
    )
    b.add_argument(
        "--ref-steps", type=int, help="reference loop steps to time (default: per benchmark)"
    )
    b.add_argument(
        "--sizes",
        type=lambda t: [int(v) for v in t.split(",")],
        default=[28, 64],
        help="dcgan: image sizes, e.g. 28,64 (default)",
    )
    b.add_argument(
        "--data-root",
        help="dcgan, per_class: folder holding MNIST/raw (default: $GANKIT_DATA or ./data)",
    )
    b.add_argument("--out", help="also write the results as JSON to this file")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    from gankit.config import ConfigError
    from gankit.utils import GankitError

    try:
        return args.func(args)
    except ConfigError as e:
        if args.verbose:
            raise
        print(f"gankit: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from gankit.train import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            print(f"gankit: {e}", file=sys.stderr)
            return 128 + e.signum
        if args.verbose:
            raise
        known = (GankitError, ValueError, KeyError, FileNotFoundError, OSError)
        msg = str(e) if isinstance(e, known) else f"{type(e).__name__}: {e}"
        print(f"gankit: error: {msg.strip().splitlines()[0] if msg.strip() else type(e).__name__}",
              file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("gankit: interrupted", file=sys.stderr)
        return 130
