"""The sweep's output directory: its settings and one JSON result per run, written atomically.

Layout::

    sweep.json              the sweep's settings; another sweep cannot write into this directory
    results/<run_id>.json   one result per run that ended (ok, failed or interrupted), via a temp file + os.replace
    logs/c<c>/fold<i>_seed<s>/   the run's TensorBoard version, config.yaml and checkpoints
    console/<run_id>.log    the run's stdout and stderr
    summary.csv, summary.md, boxplot.png, refit.json
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from l1inf_lightning.cv.settings import RunSpec, SweepError

__all__ = [
    "CONSOLE_DIR",
    "FINISHED",
    "JsonSettings",
    "is_finished",
    "load_results",
    "prepare_output",
    "read_result",
    "result_path",
    "write_json_atomic",
    "write_result",
]

SETTINGS_FILE = "sweep.json"
RESULTS_DIR = "results"
CONSOLE_DIR = "console"
REFIT_FILE = "refit.json"
# Statuses of a run that is done; an "interrupted" run (stopped by a signal) is stored too, but is run again.
FINISHED = ("ok", "failed")


class JsonSettings(Protocol):
    """Settings of any grid of runs kept in one output directory (a reproduction's, besides a sweep's)."""

    def to_json(self) -> dict[str, Any]:
        """The settings as stored in ``sweep.json``; another grid cannot write into the same directory."""


def is_finished(result: Mapping[str, Any] | None) -> bool:
    """Whether a stored result is final (ok or failed), so that resuming keeps it rather than redoing the run.

    >>> is_finished({"status": "failed"}), is_finished({"status": "interrupted"}), is_finished(None)
    (True, False, False)
    """
    return result is not None and result["status"] in FINISHED


def write_json_atomic(path: Path, data: Any) -> None:
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
    return output / REFIT_FILE if spec.is_refit else output / RESULTS_DIR / f"{spec.run_id}.json"


def write_result(output: str | Path, spec: RunSpec, result: Mapping[str, Any]) -> Path:
    """Store the result of one run atomically (temp file, fsync, ``os.replace``); safe from concurrent workers."""
    path = result_path(output, spec)
    write_json_atomic(path, dict(result))
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


def prepare_output(output: str | Path, settings: JsonSettings) -> Path:
    """Create the output directory with ``sweep.json``, or check that the one there holds the same settings.

    Raises:
        SweepError: If the directory holds a sweep with other settings (the message lists the differences).
    """
    output = Path(output).resolve()
    path = output / SETTINGS_FILE
    current = settings.to_json()
    if path.exists():
        stored = _config_by_name(json.loads(path.read_text(encoding="utf-8")))
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
        write_json_atomic(path, current)
    return output


def _config_by_name(settings: Any) -> Any:
    """``settings`` with every ``config`` path reduced to its file name, as ``to_json`` stores it now.

    Directories written before stored the absolute path; the name and the contents' hash beside it say the same.
    """
    if isinstance(settings, dict):
        return {
            key: Path(value).name if key == "config" and isinstance(value, str) else _config_by_name(value)
            for key, value in settings.items()
        }
    if isinstance(settings, list):
        return [_config_by_name(value) for value in settings]
    return settings


def read_result(output: str | Path, spec: RunSpec) -> dict[str, Any] | None:
    """The stored result of ``spec``, or None if there is none yet."""
    path = result_path(output, spec)
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None
