"""The ``l1inf-lightning cv`` command line: its arguments, and the steps a cluster scheduler can call one by one."""

from __future__ import annotations

import argparse
import shlex
import signal
from collections.abc import Sequence
from pathlib import Path

from l1inf_lightning.cv.backends import BACKENDS, make_backend
from l1inf_lightning.cv.execution import SweepInterrupted
from l1inf_lightning.cv.fit import run_one
from l1inf_lightning.cv.inspection import inspect_config
from l1inf_lightning.cv.runner import run_sweep
from l1inf_lightning.cv.settings import SweepError, SweepSettings, list_runs
from l1inf_lightning.cv.statistics import SweepSummary
from l1inf_lightning.cv.store import is_finished, load_results, prepare_output, read_result, result_path, write_result

__all__ = ["build_parser", "main"]

_EPILOG = """\
Every (c, fold, seed) is an ordinary `l1inf-lightning fit` of CONFIG with --projection.radius c and the data module's
num_folds/fold_index/fold_seed set, run in a worker process (a loky pool here, or a Ray task with --backend ray)
with its own TensorBoard version under OUTPUT/logs. Ctrl-C or SIGTERM stops the sweep at once and records the runs
in flight as interrupted. Rerunning the same command resumes, on either backend: finished runs (ok or failed) are
kept, interrupted ones are redone. To redo a run, delete its OUTPUT/results/<run_id>.json. Extra LightningCLI
arguments for every run go after `--`.

examples:
  l1inf-lightning cv --config configs/synthetic_classification.yaml --radii 0.1 0.3 1 inf --folds 10 --workers 2
  l1inf-lightning cv --config CONFIG --radii 0.1 1 --folds 5 --seeds 0 1 2 --refit -- --trainer.max_epochs 20
  l1inf-lightning cv ... --backend ray --address auto   # each fit a Ray task on a running Ray cluster
  l1inf-lightning cv ... --list-runs           # one line per run: index, run id, status
  l1inf-lightning cv ... --only-run 7          # just run 7, in this process (one task of a cluster job array)
"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``l1inf-lightning cv`` (LightningCLI overrides are split off at ``--`` first)."""
    parser = argparse.ArgumentParser(
        prog="l1inf-lightning cv",
        description="Choose the radius c by k-fold cross-validation on the training set.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="%(prog)s --config CONFIG --radii C [C ...] --folds K [options] [-- LIGHTNINGCLI_OVERRIDES ...]",
    )
    parser.add_argument("--config", required=True, help="The LightningCLI config (as for `fit --config`).")
    parser.add_argument(
        "--radii", nargs="*", required=True, metavar="C", help="The grid of radii c: positive numbers or inf."
    )
    parser.add_argument("--folds", type=int, required=True, metavar="K", help="Number of folds k (>= 2).")
    parser.add_argument(
        "--seeds", type=int, nargs="+", default=[0], metavar="S", help="Repeats: fold shuffle and init seeds (0)."
    )
    parser.add_argument(
        "--backend", choices=BACKENDS, default="local", help="Where the fits run: a process pool here, or Ray (local)."
    )
    parser.add_argument(
        "--workers", type=int, metavar="N", help="Parallel fits (default: 1 locally, the cluster's CPUs with Ray)."
    )
    parser.add_argument(
        "--address", help="With --backend ray: a running cluster (e.g. auto); default: start Ray on this machine."
    )
    parser.add_argument("--output", help="Output directory (default: runs/cv/<config name>).")
    parser.add_argument(
        "--metric", help="Validation metric that chooses c (default: val/acc for classification, else val/loss)."
    )
    parser.add_argument("--mode", choices=("min", "max"), help="Whether the metric is better low or high.")
    parser.add_argument("--refit", action="store_true", help="Retrain with the best c on the whole training set, test.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    parser.add_argument("--list-runs", action="store_true", help="Print the runs (index, run id, status) and exit.")
    parser.add_argument("--only-run", type=int, metavar="INDEX", help="Run only this run, in this process, and exit.")
    return parser


def main(argv: Sequence[str]) -> SweepSummary | None:
    """Entry point of ``l1inf-lightning cv``: ``argv`` are the arguments after the word ``cv``.

    Bad arguments exit with status 2 and a message naming the argument; SIGINT (Ctrl-C) and SIGTERM stop the sweep
    within moments and exit with status 128 + the signal number (130, 143) and a message that says how to resume.
    """
    argv = list(argv)
    split = argv.index("--") if "--" in argv else len(argv)
    own, overrides = argv[:split], argv[split + 1 :]
    parser = build_parser()
    args, unknown = parser.parse_known_args(own)
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)} (LightningCLI overrides go after `--`)")
    output = Path(args.output or Path("runs") / "cv" / Path(args.config).stem)
    try:
        settings = SweepSettings(args.config, tuple(args.radii), args.folds, tuple(args.seeds), tuple(overrides))
        if args.list_runs or args.only_run is not None:
            return _single_step(settings, output, args)
        with make_backend(args.backend, args.workers, args.address) as backend:
            return run_sweep(
                settings,
                output,
                backend,
                metric=args.metric,
                mode=args.mode,
                refit=args.refit,
                progress=not args.no_progress,
            )
    except SweepError as error:
        parser.error(str(error))
    except SweepInterrupted as stopped:
        again = shlex.join(["l1inf-lightning", "cv", *argv])
        print(
            f"\nInterrupted by {signal.Signals(stopped.signum).name}: no run was started after it; "
            f"{len(stopped.interrupted)} run(s) in flight were stopped and recorded as interrupted "
            f"({', '.join(stopped.interrupted) or 'none'}). Finished runs are stored in {output}. "
            f"To resume (interrupted runs are redone), run the same command again:\n  {again}",
            flush=True,
        )
        raise SystemExit(128 + stopped.signum) from None
    return None


def _single_step(settings: SweepSettings, output: Path, args: argparse.Namespace) -> None:
    """``--list-runs`` and ``--only-run``: the building blocks for a cluster scheduler."""
    if args.list_runs:
        results = load_results(output)
        for spec in list_runs(settings, output):
            status = results[spec.run_id]["status"] if spec.run_id in results else "pending"
            print(f"{spec.index}\t{spec.run_id}\t{status}")
        return
    inspect_config(settings)
    output = prepare_output(output, settings)
    specs = list_runs(settings, output)
    if not 0 <= args.only_run < len(specs):
        raise SweepError(f"Expected `--only-run` to be in [0, {len(specs)}) for this sweep, got {args.only_run}")
    spec = specs[args.only_run]
    if is_finished(read_result(output, spec)):
        print(f"Run {spec.index} ({spec.run_id}) is already recorded; delete {result_path(output, spec)} to redo it.")
        return
    result = run_one(spec)
    write_result(output, spec, result)
    shown = result["error"] if result["status"] != "ok" else f"{result['wall_time_s']:.1f} s"
    print(f"Run {spec.index} ({spec.run_id}): {result['status']} ({shown}); stored in {result_path(output, spec)}")
