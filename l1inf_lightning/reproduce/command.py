"""The ``l1inf-lightning reproduce NAME`` command line."""

from __future__ import annotations

import argparse
import shlex
import signal
from collections.abc import Callable, Sequence

from l1inf_lightning.cv.execution import SweepInterrupted
from l1inf_lightning.cv.settings import SweepError
from l1inf_lightning.reproduce.crossval import reproduce_cv
from l1inf_lightning.reproduce.experiments import EXPERIMENTS, make_protocol
from l1inf_lightning.reproduce.regularizer_report import reproduce_regularizers
from l1inf_lightning.reproduce.runner import run_reproduction
from l1inf_lightning.reproduce.tables import Row
from l1inf_lightning.reproduce.weight_image import reproduce_weight_image

__all__ = ["BUILT", "NAMES", "OTHERS", "build_parser", "main"]

# Every result of the talk, in its order; those in EXPERIMENTS or OTHERS are built, the others say so.
NAMES = ("regression", "classification", "weight-image", "depth", "sample-size", "regularizers", "cv")
# The reproductions that are not a grid of columns × c: each writes its own table and returns its Markdown.
OTHERS: dict[str, Callable[..., str]] = {
    "weight-image": reproduce_weight_image,
    "regularizers": reproduce_regularizers,
    "cv": reproduce_cv,
}
BUILT = tuple(name for name in NAMES if name in EXPERIMENTS or name in OTHERS)

_EPILOG = """\
Each run is an ordinary `l1inf-lightning fit` of the experiment's config on the whole training set, then a test,
run by the `cv` machinery: one result file per run, written atomically as it ends, under OUTPUT/NAME/results. Ctrl-C
stops at once; the same command resumes, and once every run is recorded it trains nothing and rewrites the tables.
--quick is a smoke test of the whole pipeline (2 epochs, 1 seed, two values of c, smaller test and validation sets),
not a measurement.

examples:
  l1inf-lightning reproduce depth --quick
  l1inf-lightning reproduce depth --workers 2 --output results
  l1inf-lightning reproduce sample-size --seeds 3
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``l1inf-lightning reproduce``."""
    parser = argparse.ArgumentParser(
        prog="l1inf-lightning reproduce",
        description="Rerun one table of the talk and print ours beside the talk's numbers.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "name", choices=NAMES, metavar="NAME", help=f"One of {', '.join(NAMES)} (built: {', '.join(BUILT)})."
    )
    parser.add_argument("--quick", action="store_true", help="A tiny smoke-test version (minutes, not a measurement).")
    parser.add_argument("--output", default="results", help="Parent directory; files go to OUTPUT/NAME (results).")
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="Fits at once (1).")
    parser.add_argument("--seeds", type=int, metavar="N", help="Seeds 0 .. N-1 per cell (default 5; --quick: 1).")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    parser.add_argument(
        "--data-dir", default="data", help="Where MNIST and CIFAR-10 are read from, for `regularizers` (data)."
    )
    return parser


def main(argv: Sequence[str]) -> list[Row] | str | None:
    """Entry point of ``l1inf-lightning reproduce``: ``argv`` are the arguments after the word ``reproduce``.

    A name of the talk that is not built yet, or a bad argument, exits with status 2 and a message; SIGINT and SIGTERM
    exit with 128 + the signal number and say how to resume.
    """
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.name not in BUILT:
        parser.error(f"`reproduce {args.name}` is not implemented yet; implemented: {', '.join(BUILT)}")
    try:
        if args.name in OTHERS:
            options = {"data_dir": args.data_dir} if args.name == "regularizers" else {}
            run = OTHERS[args.name]
            return run(
                quick=args.quick,
                seeds=args.seeds,
                output=args.output,
                workers=args.workers,
                progress=not args.no_progress,
                **options,
            )
        experiment = EXPERIMENTS[args.name]
        protocol = make_protocol(experiment, quick=args.quick, seeds=args.seeds)
        return run_reproduction(experiment, protocol, args.output, args.workers, progress=not args.no_progress)
    except SweepError as error:
        parser.error(str(error))
    except SweepInterrupted as stopped:
        again = shlex.join(["l1inf-lightning", "reproduce", *argv])
        print(
            f"\nInterrupted by {signal.Signals(stopped.signum).name}: {len(stopped.interrupted)} run(s) in flight were "
            f"stopped; finished runs are kept. To resume, run the same command again:\n  {again}",
            flush=True,
        )
        raise SystemExit(128 + stopped.signum) from None
    return None
