"""The `gankit` command: the argument parser and `main`; each subcommand's handler is in
`gankit.commands`, and the work happens in the library.

Exit codes: 0 success, 1 runtime error, 2 usage or config error, 130/143 interrupted by SIGINT/SIGTERM
(after saving a checkpoint). Errors are one line; `--verbose` shows the traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from gankit import commands

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


def build_parser() -> argparse.ArgumentParser:
    # long: one declarative table of every subcommand and its flags, read top to bottom like
    # `gankit --help`; a function per subcommand would only scatter it.
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
    t.add_argument("--nproc", type=positive, default=1, metavar="N",
                   help="train in N processes on this machine (torch's elastic launcher, as torchrun "
                        "--standalone --nproc_per_node N); data.batch_size is the global batch")  # fmt: skip
    t.set_defaults(func=commands.cmd_train)

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
    e.set_defaults(func=commands.cmd_eval)

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
    c.set_defaults(func=commands.cmd_classifier)

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
    s.set_defaults(func=commands.cmd_sample)

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
    it.set_defaults(func=commands.cmd_interpolate)

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
    nn_.set_defaults(func=commands.cmd_nn)

    cmp = sub.add_parser("compare", help="overlay the curves and evaluations of several runs",
                         epilog="example: gankit compare runs/00001-gan_mlp_mnist runs/00002-dcgan_mnist --out cmp.png",
                         formatter_class=raw)  # fmt: skip
    cmp.add_argument("runs", nargs="+", metavar="RUN_DIR")
    cmp.add_argument("--out", required=True, help="FILE.png, .pdf or .svg")
    cmp.set_defaults(func=commands.cmd_compare)

    rep = sub.add_parser(
        "report", help="write RUN_DIR/report.html: one self-contained page of the run"
    )
    rep.add_argument("run_dir", metavar="RUN_DIR")
    rep.set_defaults(func=commands.cmd_report)

    pl = sub.add_parser("plot", help="write a run's plots into RUN_DIR/plots")
    pl.add_argument("run_dir", metavar="RUN_DIR")
    pl.set_defaults(func=commands.cmd_plot)

    ls = sub.add_parser("list", help="list presets, models, datasets, losses, metrics or benches")
    ls.add_argument("what", nargs="?", default="presets",
                    choices=["presets", "models", "datasets", "losses", "metrics", "benches"])  # fmt: skip
    ls.set_defaults(func=commands.cmd_list)

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
    b.add_argument("--nproc", type=positive, default=2, help="ddp: processes (default 2)")
    b.add_argument("--device", default="cpu", help="dcgan, ddp: cpu or cuda (default cpu)")
    b.add_argument(
        "--data-root",
        help="dcgan, ddp, per_class, parzen: folder holding MNIST/raw (default: $GANKIT_DATA or ./data)",
    )
    b.add_argument("--out", help="also write the results as JSON to this file")
    b.set_defaults(func=commands.cmd_bench)

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
    sw.set_defaults(func=commands.cmd_sweep)
    return p


def _speaks(e: BaseException) -> bool:
    """Whether this process prints error `e`: one process, rank 0, or another rank's own failure
    (the ranks of a run raise their config, NaN and signal errors together: rank 0 says it once)."""
    rank = int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0
    if rank == 0:
        return True
    from gankit.distributed import PeerLost
    from gankit.errors import GankitError

    return isinstance(e, PeerLost) or not isinstance(e, GankitError)


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
        if _speaks(e):
            print(f"gankit: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        from gankit.trainer import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            if _speaks(e):
                print(f"gankit: {e}", file=sys.stderr)
            return 128 + e.signum
        if args.verbose:
            raise
        known = (GankitError, ValueError, KeyError, FileNotFoundError, OSError)
        msg = str(e) if isinstance(e, known) else f"{type(e).__name__}: {e}"
        if _speaks(e):
            print(f"gankit: error: {msg.strip().splitlines()[0] if msg.strip() else type(e).__name__}",
                  file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:
        print("gankit: interrupted", file=sys.stderr)
        return 130
