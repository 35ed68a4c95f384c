"""Choose the radius c by k-fold cross-validation: the ``l1inf-lightning cv`` command.

The talk ("How to Choose c") splits the training set into k folds, trains on k - 1 of them for every c of a grid,
scores on the held-out fold and keeps the c with the best mean score. Here every (c, fold, seed) is one ordinary
LightningCLI ``fit`` of the user's config, with its own TensorBoard version, run in a child process.

The code is in three separable parts, so that a cluster scheduler or Ray Tune can take over the middle one:

1. :func:`list_runs` lists the runs of a :class:`SweepSettings` as :class:`RunSpec` values (pure, picklable).
2. :func:`run_one` trains one spec and returns its result as a JSON-ready dict; it never raises for a failed fit.
   :func:`write_result` stores a result atomically, one file per run, so no interruption can corrupt one.
3. :func:`summarize` aggregates whatever results exist into a :class:`SweepSummary` (table, box plot, best c).

:func:`run_sweep` ties them together on one machine with a process pool, resuming from the results already
stored in the output directory.

Output directory layout::

    sweep.json              the sweep's settings; another sweep cannot write into this directory
    results/<run_id>.json   one result per finished run (ok or failed), written via a temp file + os.replace
    logs/c<c>/fold<i>_seed<s>/   the run's TensorBoard version, config.yaml and checkpoints
    console/<run_id>.log    the run's stdout and stderr
    summary.csv, summary.md, boxplot.png, refit.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import csv
import hashlib
import json
import logging
import math
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from l1inf_lightning._checks import is_int
from l1inf_lightning.functional.projection import check_radius

__all__ = [
    "RadiusSummary",
    "RunSpec",
    "SweepError",
    "SweepSettings",
    "SweepSummary",
    "inspect_config",
    "list_runs",
    "load_results",
    "main",
    "radius_label",
    "run_one",
    "run_sweep",
    "summarize",
    "write_result",
]

SETTINGS_FILE = "sweep.json"
RESULTS_DIR = "results"
LOGS_DIR = "logs"
CONSOLE_DIR = "console"
RUNNING_DIR = "running"
REFIT_FILE = "refit.json"

# Options every run gets from the sweep itself; an override of one would silently break the grid.
_SWEEP_OWNED = ("projection", "projection.radius", "data.num_folds", "data.fold_index", "data.fold_seed")
_SWEEP_OWNED += ("seed_everything", "test_after_fit")
# numpy's legacy RandomState, which scikit-learn's KFold seeds from `fold_seed`, accepts seeds below 2**32.
_MAX_SEED = 2**32 - 1
# Name fragments that say whether a metric is better low or high, for `--mode` when it is not given.
_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "err", "nll", "perplexity")
_HIGHER_IS_BETTER = ("acc", "f1", "auroc", "auc", "precision", "recall", "r2", "iou", "dice")
_TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"


class SweepError(ValueError):
    """Bad arguments or settings of a sweep, found before any training; the message names the argument."""


def radius_label(radius: float) -> str:
    """The shortest text that reads back as exactly ``radius`` (``repr``), used in run ids, paths and tables.

    >>> radius_label(0.1), radius_label(1), radius_label(float("inf"))
    ('0.1', '1.0', 'inf')
    """
    return repr(float(radius))


# ---------------------------------------------------------------------------------------------------------------------
# What to run
# ---------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SweepSettings:
    """What a sweep trains; the output directory stores them and refuses a sweep with other settings.

    Args:
        config: Path of the LightningCLI config (the same file ``fit --config`` takes).
        radii: The grid of radii c, each a positive number or ``inf`` (the unconstrained baseline); kept sorted.
        num_folds: Number of folds k of the training set, at least 2.
        seeds: Repeats: each seed reshuffles the folds (``fold_seed``) and the model's initialization
            (``seed_everything``); the training set itself stays the same.
        overrides: Extra LightningCLI arguments for every run, e.g. ``("--trainer.max_epochs", "5")``.
    """

    config: str
    radii: tuple[float, ...]
    num_folds: int
    seeds: tuple[int, ...] = (0,)
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        config = Path(self.config)
        if not config.is_file():
            raise SweepError(f"Expected `--config` to be an existing file, got {self.config!r}")
        object.__setattr__(self, "config", str(config.resolve()))
        if isinstance(self.radii, (str, bytes)) or not len(self.radii):
            raise SweepError(
                f"Expected `--radii` to list at least one radius (a positive number or inf), got {self.radii!r}"
            )
        try:
            radii = [check_radius(radius, "--radii") for radius in self.radii]
        except ValueError as error:
            raise SweepError(str(error)) from None
        duplicates = sorted({radius_label(r) for r in radii if radii.count(r) > 1})
        if duplicates:
            raise SweepError(f"Expected `--radii` to be distinct, got {', '.join(duplicates)} more than once")
        object.__setattr__(self, "radii", tuple(sorted(radii)))
        if not is_int(self.num_folds) or self.num_folds < 2:
            raise SweepError(f"Expected `--folds` to be an integer >= 2, got {self.num_folds!r}")
        if isinstance(self.seeds, (str, bytes)) or not len(self.seeds):
            raise SweepError(f"Expected `--seeds` to list at least one seed, got {self.seeds!r}")
        for seed in self.seeds:
            if not is_int(seed) or not 0 <= seed <= _MAX_SEED:
                raise SweepError(f"Expected `--seeds` to be integers in [0, {_MAX_SEED}], got {seed!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise SweepError(f"Expected `--seeds` to be distinct, got {list(self.seeds)}")
        object.__setattr__(self, "seeds", tuple(self.seeds))
        overrides = tuple(str(token) for token in self.overrides)
        for token in overrides:
            key = _option_key(token)
            if key in _SWEEP_OWNED:
                raise SweepError(
                    f"The sweep sets `--{key}` of every run itself (from --radii, --folds and --seeds); remove "
                    f"{token!r} from the overrides after `--`"
                )
        object.__setattr__(self, "overrides", overrides)

    @property
    def num_runs(self) -> int:
        """Number of (c, fold, seed) runs."""
        return len(self.radii) * self.num_folds * len(self.seeds)

    def to_json(self) -> dict[str, Any]:
        """The settings as stored in ``sweep.json``, with a hash of the config file's contents."""
        return {
            "config": self.config,
            "config_sha256": hashlib.sha256(Path(self.config).read_bytes()).hexdigest(),
            "radii": [radius_label(r) for r in self.radii],
            "num_folds": self.num_folds,
            "seeds": list(self.seeds),
            "overrides": list(self.overrides),
        }


def _option_key(token: str) -> str | None:
    """``--data.init_args.num_folds=3`` -> ``data.num_folds``; None for a value rather than an option."""
    if not token.startswith("--"):
        return None
    key = token[2:].split("=", 1)[0]
    return ".".join(part for part in key.split(".") if part != "init_args")


@dataclass(frozen=True)
class RunSpec:
    """One fit of a sweep: everything a worker on any machine needs, picklable and JSON-ready (``asdict``).

    ``fold`` None is the refit: the whole training set (no folds), followed by a test on the test set.

    Args:
        index: Position in :func:`list_runs` (``--only-run INDEX``); -1 for the refit.
        radius: The radius c.
        fold: The validation fold, or None for the refit.
        num_folds: Number of folds k, or None for the refit.
        seed: ``fold_seed`` and ``seed_everything`` of the run.
        config: Absolute path of the LightningCLI config.
        overrides: The user's extra LightningCLI arguments.
        log_root: Directory that holds every run's TensorBoard logs.
    """

    index: int
    radius: float
    fold: int | None
    num_folds: int | None
    seed: int
    config: str
    overrides: tuple[str, ...]
    log_root: str

    @property
    def run_id(self) -> str:
        """A name unique within the sweep, e.g. ``c0.1_fold3_seed0`` or ``c0.1_refit_seed0``."""
        part = "refit" if self.fold is None else f"fold{self.fold}"
        return f"c{radius_label(self.radius)}_{part}_seed{self.seed}"

    @property
    def log_dir(self) -> Path:
        """The run's TensorBoard version directory: ``<log_root>/c<c>/fold<i>_seed<s>``."""
        version = "refit" if self.fold is None else f"fold{self.fold}"
        return Path(self.log_root) / f"c{radius_label(self.radius)}" / f"{version}_seed{self.seed}"

    def fit_args(self) -> list[str]:
        """The ``l1inf-lightning fit`` arguments of this run; the sweep's own come last, so they win."""
        folds = ["null", "0"] if self.fold is None else [str(self.num_folds), str(self.fold)]
        return [
            "fit",
            "--config",
            self.config,
            *self.overrides,
            f"--projection.radius={radius_label(self.radius)}",
            f"--data.init_args.num_folds={folds[0]}",
            f"--data.init_args.fold_index={folds[1]}",
            f"--data.init_args.fold_seed={self.seed}",
            f"--seed_everything={self.seed}",
            "--test_after_fit=false",
            f"--trainer.default_root_dir={self.log_dir}",
            # Naming the class again keeps the config's other TensorBoardLogger arguments (jsonargparse merges).
            f"--trainer.logger={_TENSORBOARD}",
            f"--trainer.logger.init_args.save_dir={self.log_root}",
            f"--trainer.logger.init_args.name={self.log_dir.parent.name}",
            f"--trainer.logger.init_args.version={self.log_dir.name}",
        ]


def list_runs(settings: SweepSettings, output: str | Path) -> list[RunSpec]:
    """Every (c, fold, seed) run of a sweep, in the order they are started.

    Folds vary slower than radii, so every c gets its first folds early and "best c so far" is a fair comparison
    while the sweep runs. The list depends on nothing but its arguments.

    Args:
        settings: The sweep.
        output: The sweep's output directory (the runs log under ``<output>/logs``).

    Returns:
        ``settings.num_runs`` specs; ``spec.index`` is the position in the list.
    """
    log_root = str(Path(output).resolve() / LOGS_DIR)
    grid = [
        (seed, fold, radius)
        for seed in settings.seeds
        for fold in range(settings.num_folds)
        for radius in settings.radii
    ]
    return [
        RunSpec(index, radius, fold, settings.num_folds, seed, settings.config, settings.overrides, log_root)
        for index, (seed, fold, radius) in enumerate(grid)
    ]


def refit_spec(settings: SweepSettings, output: str | Path, radius: float) -> RunSpec:
    """The refit: c = ``radius`` on the whole training set (no folds), seeded by the first seed."""
    log_root = str(Path(output).resolve() / LOGS_DIR)
    return RunSpec(-1, radius, None, None, settings.seeds[0], settings.config, settings.overrides, log_root)


# ---------------------------------------------------------------------------------------------------------------------
# Checking the config
# ---------------------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_cli(hide_info: bool = True) -> Iterator[None]:
    """Hide the warning about passing ``args`` while the sweep builds a CLI itself, and Lightning's info lines."""
    names = ("lightning.pytorch", "lightning.fabric", "lightning_fabric") if hide_info else ()
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.WARNING)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def inspect_config(settings: SweepSettings) -> dict[str, Any]:
    """Build the config once (no training) and check that it can be cross-validated with ``settings.num_folds``.

    Returns:
        ``task`` (the model's ``task`` attribute, or None), ``train_size`` (the full training set) and ``data``
        (the data module's class name).

    Raises:
        SweepError: If the data module is not a :class:`~l1inf_lightning.data.FoldableDataModule`, or ``num_folds``
            exceeds the size of its training set.
    """
    from l1inf_lightning.cli import fit_cli
    from l1inf_lightning.data import FoldableDataModule

    with _quiet_cli():
        cli = fit_cli(["--config", settings.config, *settings.overrides], run=False)
    datamodule = cli.datamodule
    if not isinstance(datamodule, FoldableDataModule):
        raise SweepError(
            f"Expected the data module of `--config` {settings.config!r} to be a FoldableDataModule (with "
            f"`num_folds` and `fold_index`), got {type(datamodule).__name__}: it has no folds to cross-validate. "
            "Wrap a map-style dataset in `l1inf_lightning.data.FoldedDataModule`."
        )
    train_size = datamodule.full_train_size()
    if settings.num_folds > train_size:
        raise SweepError(
            f"Expected `--folds` to be at most the size of the training set ({train_size}), got {settings.num_folds}"
        )
    return {"task": getattr(cli.model, "task", None), "train_size": train_size, "data": type(datamodule).__name__}


def default_metric(task: str | None) -> tuple[str, str]:
    """The validation metric and mode for a model task: ``val/acc`` (max) for classification, else ``val/loss`` (min).

    >>> default_metric("classification"), default_metric("regression")
    (('val/acc', 'max'), ('val/loss', 'min'))
    """
    return ("val/acc", "max") if task == "classification" else ("val/loss", "min")


def infer_mode(metric: str) -> str:
    """``"min"`` or ``"max"`` from a metric's name (``val/loss`` -> min, ``val/acc`` -> max), else raise.

    >>> infer_mode("val/mse"), infer_mode("val/acc")
    ('min', 'max')
    """
    name = metric.rsplit("/", 1)[-1].lower()
    if any(fragment in name for fragment in _LOWER_IS_BETTER):
        return "min"
    if any(fragment in name for fragment in _HIGHER_IS_BETTER):
        return "max"
    raise SweepError(
        f"Cannot tell whether `--metric` {metric!r} is better low or high; give `--mode min` or `--mode max`"
    )


# ---------------------------------------------------------------------------------------------------------------------
# Running one fit
# ---------------------------------------------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _json_number(value: float) -> float | str:
    """Finite floats as they are; NaN and inf as text, so the files stay strict JSON (``float()`` reads them back)."""
    return value if math.isfinite(value) else repr(value)


def run_one(spec: RunSpec) -> dict[str, Any]:
    """Train one run of a sweep in this process and return its result; a failed fit is a result, not an exception.

    The run's log directory is deleted first, so a run that was interrupted half-way starts again from scratch.
    A run fails when the fit raises (e.g. :class:`~l1inf_lightning.callbacks.L1InfProjection` on non-finite weights)
    or when it ends with a non-finite loss (diverged). ``KeyboardInterrupt`` and ``SystemExit`` propagate: an
    interrupted run is not finished, so it is not recorded.

    The result holds ``metrics``, every scalar in ``trainer.callback_metrics`` after the fit (for the refit also the
    test metrics), and:

    - ``sparsity``: :func:`~l1inf_lightning.functional.sparsity_rate` of the final weights;
    - ``gap``: the generalization gap in loss, the ``gap/loss`` of a
      :class:`~l1inf_lightning.callbacks.SparsityMonitor` when the config has one (validation loss - training loss,
      both on the final weights), else ``val/loss - train/loss`` from the logged epoch means (the training mean is
      taken over the last epoch's steps, so it lags the final weights a little); ``gap_source`` says which.

    Args:
        spec: The run.

    Returns:
        A JSON-ready dict: ``run_id``, ``index``, ``radius`` (text, see :func:`radius_label`), ``fold``, ``num_folds``,
        ``seed``, ``status`` (``"ok"`` or ``"failed"``), ``error`` and ``traceback`` (None when ok), ``metrics``,
        ``sparsity``, ``gap``, ``gap_source``, ``log_dir``, ``started_at``, ``finished_at``, ``wall_time_s``,
        ``host`` and ``pid``.
    """
    from l1inf_lightning.cli import fit_cli
    from l1inf_lightning.functional import sparsity_rate

    shutil.rmtree(spec.log_dir, ignore_errors=True)
    result = _new_result(spec)
    result["started_at"], result["pid"] = _now(), os.getpid()
    start = time.perf_counter()
    try:
        with _quiet_cli(hide_info=False):
            cli = fit_cli(spec.fit_args())
            metrics = _scalars(cli.trainer.callback_metrics)
            if spec.fold is None:
                tested = cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
                metrics.update(_scalars(tested[0] if tested else {}))
        result["metrics"] = {key: _json_number(value) for key, value in sorted(metrics.items())}
        result["sparsity"] = float(sparsity_rate(cli.model))
        gap, result["gap_source"] = _gap(metrics)
        result["gap"] = None if gap is None else _json_number(gap)
        diverged = {key: value for key, value in metrics.items() if key.endswith("loss") and not math.isfinite(value)}
        if diverged:
            shown = ", ".join(f"{key}={value}" for key, value in sorted(diverged.items()))
            raise FloatingPointError(f"training diverged: {shown}")
    except Exception as error:  # any failure of a fit is recorded; the sweep goes on
        result["status"] = "failed"
        result["error"] = f"{type(error).__name__}: {error}"
        result["traceback"] = traceback.format_exc()
    result["finished_at"] = _now()
    result["wall_time_s"] = round(time.perf_counter() - start, 3)
    return result


def _new_result(spec: RunSpec) -> dict[str, Any]:
    return {
        "run_id": spec.run_id,
        "index": spec.index,
        "radius": radius_label(spec.radius),
        "fold": spec.fold,
        "num_folds": spec.num_folds,
        "seed": spec.seed,
        "status": "ok",
        "error": None,
        "traceback": None,
        "metrics": {},
        "sparsity": None,
        "gap": None,
        "gap_source": None,
        "log_dir": str(spec.log_dir),
        "started_at": None,
        "finished_at": None,
        "wall_time_s": None,
        "host": socket.gethostname(),
        "pid": None,
    }


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    scalars = {}
    for key, value in metrics.items():
        if hasattr(value, "numel") and value.numel() != 1:
            continue
        scalars[key] = float(value)
    return scalars


def _gap(metrics: Mapping[str, float]) -> tuple[float | None, str | None]:
    if "gap/loss" in metrics:
        return metrics["gap/loss"], "gap/loss"
    if "val/loss" in metrics and "train/loss" in metrics:
        return metrics["val/loss"] - metrics["train/loss"], "val/loss - train/loss"
    return None, None


# ---------------------------------------------------------------------------------------------------------------------
# Storing results
# ---------------------------------------------------------------------------------------------------------------------


def _write_json_atomic(path: Path, data: Any) -> None:
    """Write ``data`` so that ``path`` holds either its old contents or all of the new ones, even across a kill."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        json.dump(data, file, indent=1, allow_nan=False)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)
    with contextlib.suppress(OSError):  # persist the rename itself; not every platform can open a directory
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)


def result_path(output: str | Path, spec: RunSpec) -> Path:
    """Where the result of ``spec`` is stored: ``<output>/results/<run_id>.json`` (``refit.json`` for the refit)."""
    output = Path(output)
    return output / REFIT_FILE if spec.fold is None else output / RESULTS_DIR / f"{spec.run_id}.json"


def write_result(output: str | Path, spec: RunSpec, result: Mapping[str, Any]) -> Path:
    """Store the result of one run atomically (temp file, fsync, ``os.replace``); safe from concurrent workers."""
    path = result_path(output, spec)
    _write_json_atomic(path, dict(result))
    return path


def load_results(output: str | Path) -> dict[str, dict[str, Any]]:
    """Every stored run result of a sweep, by run id (an empty dict for a new sweep).

    Raises:
        ValueError: If a result file does not parse, which atomic writes rule out unless it was edited by hand.
    """
    results = {}
    for path in sorted((Path(output) / RESULTS_DIR).glob("*.json")):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(
                f"Result file {str(path)!r} does not parse ({error}); delete it to redo that run"
            ) from error
        results[result["run_id"]] = result
    return results


def prepare_output(output: str | Path, settings: SweepSettings) -> Path:
    """Create the output directory with ``sweep.json``, or check that the one there holds the same settings.

    Raises:
        SweepError: If the directory holds a sweep with other settings (the message lists the differences).
    """
    output = Path(output).resolve()
    path = output / SETTINGS_FILE
    current = settings.to_json()
    if path.exists():
        stored = json.loads(path.read_text(encoding="utf-8"))
        differences = [
            f"{key}: {stored.get(key)!r} there, {current[key]!r} now"
            for key in current
            if stored.get(key) != current[key]
        ]
        if differences:
            raise SweepError(
                f"Expected `--output` {str(output)!r} to be a new directory or to hold this same sweep, but its "
                f"{SETTINGS_FILE} differs: "
                + "; ".join(differences)
                + ". Use another `--output`, or the same settings "
                "to resume."
            )
    else:
        _write_json_atomic(path, current)
    return output


# ---------------------------------------------------------------------------------------------------------------------
# Running many fits on one machine
# ---------------------------------------------------------------------------------------------------------------------


def _init_worker(parent_pid: int, num_threads: int) -> None:
    """Pool worker set-up: share the cores, leave Ctrl-C to the parent, and die with the parent."""
    import torch

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops the workers; no tracebacks from idle ones
    torch.set_num_threads(num_threads)

    def exit_with_parent() -> None:
        # A killed parent cannot stop its workers; an orphan would train on into a directory a resumed sweep reuses.
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


@contextlib.contextmanager
def _redirect_output(path: Path) -> Iterator[None]:
    """Send this process's stdout and stderr (file descriptors 1 and 2, so C libraries too) to ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with open(path, "w", encoding="utf-8") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for descriptor in saved:
                os.close(descriptor)


def _pool_task(spec: RunSpec, output: str) -> dict[str, Any]:
    """What a pool worker does per run: mark it running, train with the console in a file, store the result."""
    marker = Path(output) / RUNNING_DIR / spec.run_id
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(str(os.getpid()))
    with _redirect_output(Path(output) / CONSOLE_DIR / f"{spec.run_id}.log"):
        result = run_one(spec)
    write_result(output, spec, result)
    marker.unlink(missing_ok=True)
    return result


def _crash_result(spec: RunSpec, output: Path) -> dict[str, Any]:
    result = _new_result(spec)
    result["status"], result["finished_at"] = "failed", _now()
    console = output / CONSOLE_DIR / f"{spec.run_id}.log"
    result["error"] = f"the worker process died during the run (killed, e.g. out of memory, or crashed); see {console}"
    return result


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _run_pool(
    specs: Sequence[RunSpec], output: Path, workers: int, on_result: Callable[[dict[str, Any]], None]
) -> list[RunSpec]:
    """Run ``specs`` in a pool of ``workers`` spawned processes; return those lost to a broken pool (none normally)."""
    workers = min(workers, len(specs))
    threads = max(1, _usable_cpus() // workers)
    pool = concurrent.futures.ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(os.getpid(), threads),
    )
    lost = []
    try:
        futures = {pool.submit(_pool_task, spec, str(output)): spec for spec in specs}
        for future in concurrent.futures.as_completed(futures):
            spec, error = futures[future], future.exception()  # done: returns at once
            if isinstance(error, BrokenProcessPool):
                lost.append(spec)
            elif error is not None:  # e.g. SystemExit inside the fit: not finished, so not recorded
                print(f"Run {spec.run_id} stopped without a result ({type(error).__name__}: {error})", file=sys.stderr)
            else:
                on_result(future.result())
    except BaseException:
        # Ctrl-C or an error here: stop the workers now (the executor has no public way to), or exiting would wait for
        # their fits to end.
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    return lost


def execute(
    specs: Sequence[RunSpec], output: str | Path, workers: int, on_result: Callable[[dict[str, Any]], None]
) -> None:
    """Run ``specs`` in ``workers`` parallel child processes; each child stores its result as soon as it finishes.

    A child that dies (a segfault, the OOM killer) breaks the whole pool. The runs that were in flight are then rerun
    one at a time, and one whose worker dies alone is recorded as failed; runs not yet started go on as before.

    Args:
        specs: The runs.
        output: The sweep's output directory.
        workers: Parallel processes, at least 1.
        on_result: Called in this process with each result, in the order they finish.
    """
    output = Path(output)
    running = output / RUNNING_DIR
    shutil.rmtree(running, ignore_errors=True)  # markers of a previous, killed sweep
    queue = list(specs)
    while queue:
        lost = [spec for spec in _run_pool(queue, output, workers, on_result) if not _pick_up(output, spec, on_result)]
        in_flight = [spec for spec in lost if (running / spec.run_id).exists()]
        if lost and not in_flight:
            raise RuntimeError("The sweep's worker processes died before starting a run; see the messages above")
        queue = [spec for spec in lost if spec not in in_flight]
        for spec in in_flight:
            (running / spec.run_id).unlink(missing_ok=True)
            if len(in_flight) > 1:  # which one killed the pool? Each alone tells.
                lost_alone = _run_pool([spec], output, 1, on_result)
                if not lost_alone or _pick_up(output, spec, on_result):
                    continue
            crash = _crash_result(spec, output)
            write_result(output, spec, crash)
            on_result(crash)
    with contextlib.suppress(OSError):
        running.rmdir()


def _pick_up(output: Path, spec: RunSpec, on_result: Callable[[dict[str, Any]], None]) -> bool:
    """Report the result of a run whose future was lost but which stored its result just before the pool broke."""
    path = result_path(output, spec)
    if not path.exists():
        return False
    on_result(json.loads(path.read_text(encoding="utf-8")))
    return True


# ---------------------------------------------------------------------------------------------------------------------
# Aggregating
# ---------------------------------------------------------------------------------------------------------------------


def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); NaN where undefined."""
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass
class RadiusSummary:
    """The runs of one c: values of the finished runs and counts.

    Args:
        radius: The radius c.
        metric: The validation metric of each ok run.
        sparsity: The sparsity rate of each ok run.
        gap: The generalization gap in loss of each ok run that has one.
        num_ok: Runs that finished.
        num_failed: Runs that failed.
        num_missing: Runs not recorded yet.
        errors: The error of each failed run.
    """

    radius: float
    metric: list[float] = field(default_factory=list)
    sparsity: list[float] = field(default_factory=list)
    gap: list[float] = field(default_factory=list)
    num_ok: int = 0
    num_failed: int = 0
    num_missing: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class SweepSummary:
    """The table per c, the best c and how to write them.

    Args:
        metric: The validation metric that chooses c.
        mode: ``"max"`` or ``"min"``.
        rows: One :class:`RadiusSummary` per c, by increasing c.
        best: The chosen c, or None when no c has all its recorded runs ok.
    """

    metric: str
    mode: str
    rows: list[RadiusSummary]
    best: float | None

    @property
    def complete(self) -> bool:
        """Whether every run of the sweep is recorded."""
        return all(row.num_missing == 0 for row in self.rows)

    def table(self) -> list[dict[str, Any]]:
        """The rows of ``summary.csv``: c, counts, and mean and standard deviation of metric, sparsity and gap."""
        rows = []
        for row in self.rows:
            entry: dict[str, Any] = {"c": radius_label(row.radius), "ok": row.num_ok, "failed": row.num_failed}
            entry["missing"] = row.num_missing
            for name, values in ((self.metric, row.metric), ("sparsity", row.sparsity), ("gap/loss", row.gap)):
                entry[f"{name} mean"], entry[f"{name} std"] = _mean_std(values)
            entry["best"] = self.best is not None and row.radius == self.best
            rows.append(entry)
        return rows

    def best_line(self) -> str:
        """One sentence naming the chosen c and why."""
        if self.best is None:
            return "No c can be chosen: every c has failed or missing runs only."
        row = next(r for r in self.rows if r.radius == self.best)
        mean, std = _mean_std(row.metric)
        word = "highest" if self.mode == "max" else "lowest"
        return (
            f"Best c = {radius_label(self.best)}: {word} mean {self.metric} = {mean:.4f} ± {std:.4f} over {row.num_ok} "
            f"runs (ties go to the smaller c; a c with a failed run is not chosen)."
        )

    def markdown(self) -> str:
        """The table as Markdown, followed by the best-c sentence."""
        header = ["c", f"{self.metric} (mean ± std)", "sparsity", "gap/loss", "ok", "failed"]
        if not self.complete:
            header.append("missing")
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        for row in self.rows:
            label = radius_label(row.radius)
            cells = [f"**{label}**" if row.radius == self.best else label]
            cells += [_pm(row.metric), _pm(row.sparsity), _pm(row.gap), str(row.num_ok), str(row.num_failed)]
            if not self.complete:
                cells.append(str(row.num_missing))
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n\n" + self.best_line() + "\n"

    def write(self, output: str | Path) -> None:
        """Write ``summary.csv``, ``summary.md`` and ``boxplot.png`` into ``output``."""
        output = Path(output)
        rows = self.table()
        with open(output / "summary.csv", "w", newline="", encoding="utf-8") as file:
            writer = csv.DictWriter(file, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        (output / "summary.md").write_text(self.markdown(), encoding="utf-8")
        self.plot(output / "boxplot.png")

    def plot(self, path: str | Path) -> None:
        """Box plots per c of the metric, the gap and the sparsity, side by side, as a PNG."""
        from matplotlib.figure import Figure  # no pyplot: no global state, no display needed (Agg)

        figure = Figure(figsize=(13, 4.2))
        axes = figure.subplots(1, 3)
        labels = [radius_label(row.radius) for row in self.rows]
        panels = ((self.metric, "metric"), ("gap/loss (val - train)", "gap"), ("sparsity rate", "sparsity"))
        for axis, (title, attribute) in zip(axes, panels, strict=True):
            data = [getattr(row, attribute) or [math.nan] for row in self.rows]
            axis.boxplot(data, tick_labels=labels)
            axis.set_title(title)
            axis.set_xlabel("c")
            axis.grid(axis="y", alpha=0.3)
        chosen = "none" if self.best is None else radius_label(self.best)
        figure.suptitle(f"Cross-validation of c (best c = {chosen} by {self.mode} mean {self.metric})")
        figure.tight_layout()
        figure.savefig(path, dpi=100)


def _pm(values: Sequence[float]) -> str:
    mean, std = _mean_std(values)
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def _float(value: Any) -> float:
    return float(value)  # results store NaN/inf as text; float() reads both


def summarize(
    specs: Sequence[RunSpec], results: Mapping[str, Mapping[str, Any]], metric: str, mode: str
) -> SweepSummary:
    """Aggregate the stored results of ``specs`` per c and choose the best c.

    The best c has the best mean ``metric`` over its runs; ties (equal up to 1e-9 relative) go to the smaller c,
    which gives the sparser model. A c with a failed run is not chosen (it diverges on some folds); runs not recorded
    yet are left out, so a partial sweep can be summarized too.

    Args:
        specs: The sweep's runs (:func:`list_runs`).
        results: Stored results by run id (:func:`load_results`); others are ignored.
        metric: The validation metric, a key of each result's ``metrics``.
        mode: ``"max"`` or ``"min"``.

    Raises:
        SweepError: If ``mode`` is neither, or a finished run did not log ``metric``.
    """
    if mode not in ("min", "max"):
        raise SweepError(f"Expected `--mode` to be 'min' or 'max', got {mode!r}")
    rows = {radius: RadiusSummary(radius) for radius in sorted({spec.radius for spec in specs})}
    for spec in specs:
        row = rows[spec.radius]
        result = results.get(spec.run_id)
        if result is None:
            row.num_missing += 1
        elif result["status"] != "ok":
            row.num_failed += 1
            row.errors.append(str(result.get("error")))
        else:
            if metric not in result["metrics"]:
                logged = ", ".join(sorted(result["metrics"])) or "nothing"
                raise SweepError(
                    f"Expected `--metric` to be a metric the runs log, got {metric!r}; {spec.run_id} logged: {logged}"
                )
            row.num_ok += 1
            row.metric.append(_float(result["metrics"][metric]))
            row.sparsity.append(_float(result["sparsity"]))
            if result.get("gap") is not None:
                row.gap.append(_float(result["gap"]))
    best: float | None = None
    best_mean = math.nan
    for radius, row in rows.items():  # increasing c: a later c must be strictly better to win
        if row.num_failed or not row.num_ok:
            continue
        mean = _mean_std(row.metric)[0]
        tie = not math.isnan(best_mean) and math.isclose(mean, best_mean, rel_tol=1e-9, abs_tol=1e-12)
        better = mean > best_mean if mode == "max" else mean < best_mean
        if best is None or (better and not tie):
            best, best_mean = radius, mean
    return SweepSummary(metric, mode, list(rows.values()), best)


# ---------------------------------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------------------------------


def run_sweep(
    settings: SweepSettings,
    output: str | Path,
    *,
    workers: int = 1,
    metric: str | None = None,
    mode: str | None = None,
    refit: bool = False,
    progress: bool = True,
) -> SweepSummary:
    """Run every (c, fold, seed) not yet recorded in ``output``, then summarize, write the summary and maybe refit.

    Rerunning with the same settings resumes: recorded runs (ok or failed) are kept, the others are run from scratch.

    Args:
        settings: The sweep.
        output: Its output directory.
        workers: Parallel child processes, at least 1.
        metric: The validation metric that chooses c; by default ``val/acc`` for a classification model, else
            ``val/loss``.
        mode: ``"max"`` or ``"min"``; by default inferred from the metric's name.
        refit: Train with the best c on the whole training set and test it, in this process (``refit.json``).
        progress: Show a progress bar.

    Returns:
        The summary (also written as ``summary.csv``, ``summary.md`` and ``boxplot.png`` and printed).

    Raises:
        SweepError: On bad arguments or a config that cannot be cross-validated; before any training.
    """
    if not is_int(workers) or workers < 1:
        raise SweepError(f"Expected `--workers` to be an integer >= 1, got {workers!r}")
    info = inspect_config(settings)
    metric, mode = _metric_and_mode(metric, mode, info["task"])
    output = prepare_output(output, settings)
    specs = list_runs(settings, output)
    results = load_results(output)
    todo = [spec for spec in specs if spec.run_id not in results]
    print(
        f"Sweep: {len(settings.radii)} radii × {settings.num_folds} folds × {len(settings.seeds)} seed(s) = "
        f"{len(specs)} runs in {output}; {len(specs) - len(todo)} already recorded, {len(todo)} to run on "
        f"{min(workers, max(len(todo), 1))} worker(s). Choosing c by {mode} mean {metric}.",
        flush=True,
    )
    if todo:
        _run_with_progress(specs, todo, results, output, workers, metric, mode, progress)
    summary = summarize(specs, results, metric, mode)
    summary.write(output)
    print()
    print(summary.markdown(), end="")
    if not summary.complete:
        print(
            f"{sum(r.num_missing for r in summary.rows)} runs are not recorded yet: rerun the command to finish them."
        )
    if refit and summary.best is not None:
        _refit(settings, output, summary)
    return summary


def _metric_and_mode(metric: str | None, mode: str | None, task: str | None) -> tuple[str, str]:
    if metric is None:
        default, default_mode = default_metric(task)
        return default, mode or default_mode
    if mode is None:
        mode = infer_mode(metric)
    if mode not in ("min", "max"):
        raise SweepError(f"Expected `--mode` to be 'min' or 'max', got {mode!r}")
    return metric, mode


def _run_with_progress(
    specs: Sequence[RunSpec],
    todo: Sequence[RunSpec],
    results: dict[str, dict[str, Any]],
    output: Path,
    workers: int,
    metric: str,
    mode: str,
    progress: bool,
) -> None:
    from tqdm import tqdm

    bar = tqdm(
        total=len(specs), initial=len(specs) - len(todo), desc="cv", unit="run", disable=not progress, smoothing=0
    )

    def on_result(result: dict[str, Any]) -> None:
        results[result["run_id"]] = result
        if result["status"] != "ok":
            bar.write(f"Run {result['run_id']} failed: {result['error']}")
        try:
            so_far = summarize(specs, results, metric, mode)
        except ValueError:  # e.g. the metric is not logged: said once the sweep ends
            so_far = None
        postfix = {}
        if so_far is not None and so_far.best is not None:
            row = next(r for r in so_far.rows if r.radius == so_far.best)
            postfix["best c"] = f"{radius_label(so_far.best)} ({metric} {_mean_std(row.metric)[0]:.4f})"
        failed = sum(r["status"] != "ok" for r in results.values())
        if failed:
            postfix["failed"] = failed
        bar.set_postfix(postfix, refresh=False)
        bar.update()

    try:
        execute(todo, output, workers, on_result)
    finally:
        bar.close()


def _refit(settings: SweepSettings, output: Path, summary: SweepSummary) -> dict[str, Any]:
    assert summary.best is not None
    spec = refit_spec(settings, output, summary.best)
    path = result_path(output, spec)
    stored = json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
    if stored is not None and stored["run_id"] == spec.run_id and stored["status"] == "ok":
        result = stored
        print(f"\nRefit with c = {radius_label(spec.radius)} already done ({path}).")
    else:
        # One fit, after everything else is stored: it runs here, with its console output shown.
        print(f"\nRefitting c = {radius_label(spec.radius)} on the whole training set ...", flush=True)
        result = run_one(spec)
        write_result(output, spec, result)
    if result["status"] != "ok":
        print(f"Refit failed: {result['error']}")
        return result
    tests = ", ".join(f"{k} = {_float(v):.4f}" for k, v in result["metrics"].items() if k.startswith("test/"))
    print(f"Refit c = {result['radius']}: {tests}, sparsity = {result['sparsity']:.4f} (stored in {path})")
    return result


# ---------------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------------

_EPILOG = """\
Every (c, fold, seed) is an ordinary `l1inf-lightning fit` of CONFIG with --projection.radius c and the data module's
num_folds/fold_index/fold_seed set, run in a child process with its own TensorBoard version under OUTPUT/logs.
Rerunning the same command resumes: recorded runs (ok or failed) are kept. To redo a run, delete its
OUTPUT/results/<run_id>.json. Extra LightningCLI arguments for every run go after `--`.

examples:
  l1inf-lightning cv --config configs/synthetic_classification.yaml --radii 0.1 0.3 1 inf --folds 10 --workers 2
  l1inf-lightning cv --config CONFIG --radii 0.1 1 --folds 5 --seeds 0 1 2 --refit -- --trainer.max_epochs 20
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
    parser.add_argument("--workers", type=int, default=1, metavar="N", help="Parallel fits on this machine (1).")
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

    Bad arguments exit with status 2 and a message naming the argument; Ctrl-C exits with status 130.
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
        return run_sweep(
            settings,
            output,
            workers=args.workers,
            metric=args.metric,
            mode=args.mode,
            refit=args.refit,
            progress=not args.no_progress,
        )
    except SweepError as error:
        parser.error(str(error))
    except KeyboardInterrupt:
        print(f"\nInterrupted. Finished runs are stored in {output}; run the same command again to resume.")
        raise SystemExit(130) from None
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
    if result_path(output, spec).exists():
        print(f"Run {spec.index} ({spec.run_id}) is already recorded; delete {result_path(output, spec)} to redo it.")
        return
    result = run_one(spec)
    write_result(output, spec, result)
    shown = result["error"] if result["status"] != "ok" else f"{result['wall_time_s']:.1f} s"
    print(f"Run {spec.index} ({spec.run_id}): {result['status']} ({shown}); stored in {result_path(output, spec)}")
