"""One fit of a sweep: an ordinary LightningCLI ``fit`` in this process, its outcome as a JSON-ready dict."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import socket
import time
import traceback
import warnings
from collections.abc import Iterator, Mapping
from datetime import datetime, timezone
from typing import Any

from l1inf_lightning.cli import fit_cli
from l1inf_lightning.cv.settings import RunSpec, radius_label
from l1inf_lightning.functional import sparsity_rate

__all__ = ["new_result", "now", "quiet_cli", "run_one"]


@contextlib.contextmanager
def quiet_cli(hide_info: bool = True) -> Iterator[None]:
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


def now() -> str:
    """The current UTC time in ISO 8601, to the millisecond, as results store it."""
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
        ``seed``, ``status`` (``"ok"`` or ``"failed"``; the sweep stores ``"interrupted"`` for a run it stopped),
        ``error`` and ``traceback`` (None when ok), ``metrics``, ``sparsity``, ``gap``, ``gap_source``, ``log_dir``,
        ``started_at``, ``finished_at``, ``wall_time_s``, ``host`` and ``pid``.
    """
    shutil.rmtree(spec.log_dir, ignore_errors=True)
    result = new_result(spec)
    result["started_at"], result["pid"] = now(), os.getpid()
    start = time.perf_counter()
    try:
        with quiet_cli(hide_info=False):
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
    result["finished_at"] = now()
    result["wall_time_s"] = round(time.perf_counter() - start, 3)
    return result


def new_result(spec: RunSpec) -> dict[str, Any]:
    """A result of ``spec`` with every field: status ``"ok"`` and no values yet (see :func:`run_one`)."""
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
