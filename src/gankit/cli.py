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


EXAMPLES_EVAL = """examples:
  gankit eval runs/00001-toy_ring --json
  gankit eval runs/00002-gan_mlp_mnist --metrics parzen,dstats
  gankit eval runs/00002-gan_mlp_mnist --metrics parzen --floor
  gankit eval RUN --metrics classifier,fid_clf   # the packaged MNIST/Fashion-MNIST classifier
  gankit eval RUN --metrics fid,kid,is,prc --inception-weights weights-inception-2015-12-05-6726825d.pth
"""


def positive(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def cmd_train(args: argparse.Namespace) -> int:
    from gankit.config import config_from_dict, load_config, to_yaml
    from gankit.rundir import check_new_run_dir, new_run_dir
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
        run_dir = (
            Path(args.run_dir)
            if args.run_dir
            else new_run_dir(Path(args.config).stem, create=not args.dry_run)
        )
        check_new_run_dir(run_dir, clear=False)  # train() clears a restartable one
    if args.dry_run:
        print(to_yaml(cfg), end="")
        print(f"# run directory: {run_dir}")
        return 0
    from gankit.trainer import TrainingInterrupted, train

    print(f"run directory: {run_dir}", flush=True)
    try:
        state = train(cfg, run_dir, resume=args.resume)
    except TrainingInterrupted:
        _image_plots(run_dir)  # what was trained so far, before exiting 130/143
        raise
    _image_plots(run_dir)
    print(train_summary(run_dir, state.step))
    if args.report:
        from gankit.report import write_report

        print(f"report: {write_report(run_dir)}")
    return 0


def _image_plots(run_dir: Path) -> None:
    """plots/ of an image run (the GIF and D-statistics are cheap); toys: `gankit plot RUN_DIR`."""
    if any((run_dir / "samples").glob("*.png")):
        from gankit.run import plot_run

        plot_run(run_dir)


def train_summary(run_dir: Path, steps: int) -> str:
    """The lines `gankit train` ends with: what was trained, how it ended, what to run next."""
    from gankit.diagnose import verdict
    from gankit.utils import read_jsonl

    history = read_jsonl(run_dir / "metrics.jsonl")
    last = next((r for r in reversed(history) if "d_real" in r), {})
    wall = next((r["time_s"] for r in reversed(history) if "time_s" in r), 0.0)
    lines = [
        f"trained {steps:,} steps in {wall:.1f} s; checkpoint: {run_dir / 'checkpoints' / 'last.pt'}"
    ]
    if last:
        lines.append(f"last window: D(real) {last['d_real']:.3f}, D(fake) {last['d_fake']:.3f}, "
                     f"loss_d {last['loss_d']:.3f}, loss_g {last['loss_g']:.3f}")  # fmt: skip
    lines.append(f"verdict: {verdict(history)}")
    if any((run_dir / "plots").glob("*.png")):
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


def build_parser() -> argparse.ArgumentParser:
    from gankit.version import __version__

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
    t.add_argument("--report", action="store_true", help="write RUN_DIR/report.html at the end")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="evaluate a run's checkpoint (appends to eval.jsonl)",
                       epilog=EXAMPLES_EVAL, formatter_class=raw)  # fmt: skip
    e.add_argument("path", metavar="RUN_DIR|CKPT")
    e.add_argument("--metrics", help="comma-separated metric names (gankit list metrics; "
                   "default: eval.metrics, else the dataset's)")  # fmt: skip
    e.add_argument("--n", type=positive, help="generated samples (default: each metric's protocol)")
    e.add_argument("--seed", type=int, help="evaluation noise seed (default: eval.seed)")
    e.add_argument("--floor", action="store_true",
                   help="real-vs-real floor: the same metrics with real training images in place of "
                        "generated ones, against the same reference at the same n")  # fmt: skip
    e.add_argument("--inception-weights", metavar="FILE",
                   help="fid/kid/is/prc: local Inception-v3 weights (default: $GANKIT_INCEPTION_WEIGHTS)")  # fmt: skip
    e.add_argument("--inception-unverified", action="store_true",
                   help="accept Inception weights whose sha256 is not the official file's")  # fmt: skip
    e.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps (default auto)")
    e.add_argument("--json", action="store_true", help="print one JSON object (no progress bars)")
    e.set_defaults(func=cmd_eval)

    c = sub.add_parser("classifier", help="fit the domain classifier of an MNIST-like dataset",
                       epilog="example: gankit classifier fit mnist --data-root ../shared/datasets",
                       formatter_class=raw)  # fmt: skip
    c.add_argument("action", choices=["fit"])
    c.add_argument("dataset", help="mnist or fashion_mnist (stacked_mnist uses mnist's)")
    c.add_argument("--data-root", help="folder holding MNIST/raw (default: $GANKIT_DATA or ./data)")
    c.add_argument(
        "--cache-dir",
        help="where classifiers are cached (default: $GANKIT_CACHE or ~/.cache/gankit)",
    )
    c.add_argument("--epochs", type=int, default=4, help="training epochs (default 4)")
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--device", default="cpu")
    c.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0: torch's default; 1 is faster on cores shared with other jobs)")  # fmt: skip
    c.add_argument("--force", action="store_true", help="refit even if a cached classifier exists")
    c.set_defaults(func=cmd_classifier)

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

    it = sub.add_parser("interpolate", help="a latent walk between seeds, as a PNG grid or a GIF",
                        epilog="examples:\n  gankit interpolate RUN --seeds 1,2,3 --steps 10 --out walk.png\n"
                               "  gankit interpolate RUN --seeds 0-7 --class sweep --out sweep.gif",
                        formatter_class=raw)  # fmt: skip
    it.add_argument("ckpt", metavar="CKPT|RUN_DIR")
    it.add_argument(
        "--seeds",
        required=True,
        help="noise seeds to walk through, e.g. 1,2,3 (as in gankit sample)",
    )
    it.add_argument(
        "--steps", type=int, default=8, help="images per seed pair, ends included (default 8)"
    )
    it.add_argument("--mode", default="slerp", choices=["slerp", "lerp"], help="default slerp")
    it.add_argument("--class", dest="klass", metavar="K|sweep",
                    help="conditional models: a fixed class K, or sweep (noise fixed, one column per class)")  # fmt: skip
    it.add_argument(
        "--out", required=True, help="FILE.png (grid: one row per seed pair) or FILE.gif"
    )
    it.set_defaults(func=cmd_interpolate)

    nn_ = sub.add_parser(
        "nn", help="memorisation check: samples beside their nearest training images"
    )
    nn_.add_argument("ckpt", metavar="CKPT|RUN_DIR")
    nn_.add_argument("--n", type=positive, default=8, help="samples (rows, default 8)")
    nn_.add_argument("--k", type=positive, default=5, help="neighbours per sample (default 5)")
    nn_.add_argument("--space", default="pixel", choices=["pixel", "classifier"],
                     help="pixel distance, or the domain classifier's features (gankit classifier fit)")  # fmt: skip
    nn_.add_argument("--seed", type=int, default=0, help="evaluation noise seed (default 0)")
    nn_.add_argument("--out", required=True, help="FILE.png")
    nn_.set_defaults(func=cmd_nn)

    cmp = sub.add_parser("compare", help="overlay the curves and evaluations of several runs",
                         epilog="example: gankit compare runs/00001-gan_mlp_mnist runs/00002-dcgan_mnist --out cmp.png",
                         formatter_class=raw)  # fmt: skip
    cmp.add_argument("runs", nargs="+", metavar="RUN_DIR")
    cmp.add_argument("--out", required=True, help="FILE.png, .pdf or .svg")
    cmp.set_defaults(func=cmd_compare)

    rep = sub.add_parser(
        "report", help="write RUN_DIR/report.html: one self-contained page of the run"
    )
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.set_defaults(func=cmd_report)

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
        help="dcgan, per_class, parzen: folder holding MNIST/raw (default: $GANKIT_DATA or ./data)",
    )
    b.add_argument("--out", help="also write the results as JSON to this file")
    b.set_defaults(func=cmd_bench)

    sw = sub.add_parser("sweep", help="train and evaluate one config under several seeds; mean ± se",
                        epilog="examples:\n"
                               "  gankit sweep toy_ring --seeds 0-4\n"
                               "  gankit sweep toy_ring --seeds 0-9 --set optim.lr_d=1e-4 --jobs 2\n"
                               "  gankit sweep my.yaml --seeds 0,2,5 --metrics modes,sliced_w1 --n 1000\n"
                               "\nRe-running the same command continues an interrupted sweep: finished "
                               "seeds are not\nretrained, interrupted ones resume from their checkpoint, "
                               "matching evaluations are reused.\n"
                               "Layout: DIR/sweep.json, DIR/seed_<s>/ (a run directory each), "
                               "DIR/summary.json, DIR/summary.md",
                        formatter_class=raw)  # fmt: skip
    sw.add_argument("config", metavar="PRESET|FILE.yaml")
    sw.add_argument("--seeds", required=True,
                    help="seeds to run, e.g. 0-4, 0,2,5 or 3 (at most 1000)")  # fmt: skip
    sw.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config value for every seed (repeatable)")  # fmt: skip
    sw.add_argument("--metrics", help="comma-separated metric names (default: eval.metrics, "
                    "else the dataset's)")  # fmt: skip
    sw.add_argument(
        "--n", type=positive, help="generated samples (default: each metric's protocol)"
    )
    sw.add_argument("--jobs", type=positive, default=1,
                    help="seeds run at once, each in its own process (default 1); train.threads "
                         "becomes cpu_count // jobs unless --set")  # fmt: skip
    sw.add_argument("--out", metavar="DIR",
                    help="sweep directory (default: runs/sweep-<preset name>)")  # fmt: skip
    sw.set_defaults(func=cmd_sweep)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")  # fmt: skip
    from gankit.errors import GankitError, UsageError

    try:
        return args.func(args)
    except UsageError as e:  # config errors included
        if args.verbose:
            raise
        print(f"gankit: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from gankit.trainer import TrainingInterrupted

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
