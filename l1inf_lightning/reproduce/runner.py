"""One reproduction: run the fits not yet recorded (on the ``cv`` machinery), then write and print the table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from l1inf_lightning.cv.backends import LocalBackend
from l1inf_lightning.cv.execution import execute
from l1inf_lightning.cv.settings import RunSpec
from l1inf_lightning.cv.store import is_finished, load_results, prepare_output
from l1inf_lightning.reproduce.experiments import Experiment, Protocol, list_runs
from l1inf_lightning.reproduce.figures import plot_against_talk, plot_boxes
from l1inf_lightning.reproduce.tables import Row, collect, markdown, write_csv

__all__ = ["BOXES", "FIGURE", "run_reproduction", "run_specs"]

FIGURE = "accuracy_gap.png"
BOXES = "boxplots.png"


def run_reproduction(
    experiment: Experiment, protocol: Protocol, output: str | Path, workers: int = 1, *, progress: bool = True
) -> list[Row]:
    """Train every run of ``protocol`` not recorded in ``output/<name>``, then write its table and figure there.

    Each fit is a :func:`~l1inf_lightning.cv.execution.fit_and_store` task of a
    :class:`~l1inf_lightning.cv.LocalBackend`: its result is stored atomically as it ends, so rerunning resumes, and
    a finished reproduction trains nothing (no worker is even started) and rewrites the same tables.

    Args:
        experiment: What is reproduced.
        protocol: How (:func:`~l1inf_lightning.reproduce.experiments.make_protocol`).
        output: The parent directory; this reproduction lives in ``output/<experiment.name>``.
        workers: Fits at once.
        progress: Show a progress bar.

    Returns:
        The table's rows, also written as ``table.csv``, ``table.md`` and ``accuracy_gap.png`` (``boxplots.png``
        where the talk shows box plots), and printed.

    Raises:
        SweepError: On a bad worker count, or a directory that holds another protocol; before any training.
        SweepInterrupted: On SIGINT or SIGTERM (:func:`~l1inf_lightning.cv.execution.execute`).
    """
    backend = LocalBackend(workers)  # checks `workers` before anything is written
    directory = prepare_output(Path(output) / experiment.name, protocol)
    specs = list_runs(experiment, protocol, directory)
    results = run_specs(experiment.name, specs, directory, backend, progress=progress)
    rows = collect(experiment, protocol, specs, results)
    text = markdown(experiment, protocol, rows)
    write_csv(rows, directory / "table.csv", experiment.metric_name, with_talk=experiment.talk is not None)
    (directory / "table.md").write_text(text, encoding="utf-8")
    if experiment.figure == "boxes":
        plot_boxes(experiment, rows, directory / BOXES)
    else:
        plot_against_talk(experiment, rows, directory / FIGURE)
    print()
    print(text, end="")
    return rows


def run_specs(
    name: str, specs: Sequence[RunSpec], directory: Path, backend: LocalBackend, *, progress: bool = True
) -> dict[str, dict[str, Any]]:
    """Run the ``specs`` not recorded in ``directory`` on ``backend`` (started and closed here), with a progress bar.

    Each fit is a :func:`~l1inf_lightning.cv.execution.fit_and_store` task: its result is stored atomically as it
    ends, so rerunning resumes, and when every run is recorded no worker is even started.

    Args:
        name: What the progress bar and the first line call the runs.
        specs: Every run (recorded or not); their run ids must be distinct.
        directory: Where the results are stored (made by :func:`~l1inf_lightning.cv.store.prepare_output`).
        backend: Where the fits run.
        progress: Show a progress bar.

    Returns:
        Every stored result of ``directory`` by run id, those of this call included.

    Raises:
        SweepInterrupted: On SIGINT or SIGTERM (:func:`~l1inf_lightning.cv.execution.execute`).
    """
    results = load_results(directory)
    todo = [spec for spec in specs if not is_finished(results.get(spec.run_id))]
    print(
        f"Reproducing `{name}`: {len(specs)} runs in {directory}; {len(specs) - len(todo)} already recorded, "
        f"{len(todo)} to run on {backend.describe()}.",
        flush=True,
    )
    if not todo:
        return results
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc=name, unit="run", disable=not progress)

    def on_result(result: dict[str, Any]) -> None:
        results[result["run_id"]] = result
        if result["status"] != "ok":
            bar.write(f"Run {result['run_id']} failed: {result['error']}")
        bar.update()

    try:
        with backend:
            execute(todo, directory, backend, on_result)
    finally:
        bar.close()
    return results
