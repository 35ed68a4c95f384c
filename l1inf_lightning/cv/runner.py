"""A whole sweep: run what is not recorded yet, summarize, write the reports, and maybe refit the best c."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from l1inf_lightning.cv.execution import Backend, execute
from l1inf_lightning.cv.fit import run_one
from l1inf_lightning.cv.inspection import inspect_config, metric_and_mode
from l1inf_lightning.cv.reports import markdown, write_reports
from l1inf_lightning.cv.settings import RunSpec, SweepSettings, list_runs, radius_label, refit_spec
from l1inf_lightning.cv.statistics import SweepSummary, mean_std, summarize
from l1inf_lightning.cv.store import is_finished, load_results, prepare_output, read_result, result_path, write_result

__all__ = ["run_sweep"]


def run_sweep(
    settings: SweepSettings,
    output: str | Path,
    backend: Backend,
    *,
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
        backend: Where the fits run (:func:`~l1inf_lightning.cv.backends.make_backend`); not closed here.
        metric: The validation metric that chooses c; by default ``val/acc`` for a classification model, else
            ``val/loss``.
        mode: ``"max"`` or ``"min"``; by default inferred from the metric's name.
        refit: Train with the best c on the whole training set and test it, in this process (``refit.json``).
        progress: Show a progress bar.

    Returns:
        The summary (also written as ``summary.csv``, ``summary.md`` and ``boxplot.png`` and printed).

    Raises:
        SweepError: On bad arguments or a config that cannot be cross-validated; before any training.
        SweepInterrupted: On SIGINT or SIGTERM (:func:`~l1inf_lightning.cv.execution.execute`).
    """
    info = inspect_config(settings)
    metric, mode = metric_and_mode(metric, mode, info["task"])
    output = prepare_output(output, settings)
    specs = list_runs(settings, output)
    results = load_results(output)
    todo = [spec for spec in specs if not is_finished(results.get(spec.run_id))]
    print(
        f"Sweep: {len(settings.radii)} radii × {settings.num_folds} folds × {len(settings.seeds)} seed(s) = "
        f"{len(specs)} runs in {output}; {len(specs) - len(todo)} already recorded, {len(todo)} to run on "
        f"{backend.describe()}. Choosing c by {mode} mean {metric}.",
        flush=True,
    )
    if todo:
        _run_with_progress(specs, todo, results, output, backend, metric, mode, progress)
    summary = summarize(specs, results, metric, mode)
    write_reports(summary, output)
    print()
    print(markdown(summary), end="")
    if not summary.complete:
        print(
            f"{sum(r.num_missing for r in summary.rows)} runs are not recorded yet: rerun the command to finish them."
        )
    if refit and summary.best is not None:
        _refit(settings, output, summary)
    return summary


def _run_with_progress(
    specs: Sequence[RunSpec],
    todo: Sequence[RunSpec],
    results: dict[str, dict[str, Any]],
    output: Path,
    backend: Backend,
    metric: str,
    mode: str,
    progress: bool,
) -> None:
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
            postfix["best c"] = f"{radius_label(so_far.best)} ({metric} {mean_std(row.metric)[0]:.4f})"
        failed = sum(r["status"] == "failed" for r in results.values())
        if failed:
            postfix["failed"] = failed
        bar.set_postfix(postfix, refresh=False)
        bar.update()

    try:
        execute(todo, output, backend, on_result)
    finally:
        bar.close()


def _refit(settings: SweepSettings, output: Path, summary: SweepSummary) -> dict[str, Any]:
    assert summary.best is not None
    spec = refit_spec(settings, output, summary.best)
    path = result_path(output, spec)
    stored = read_result(output, spec)
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
    tests = ", ".join(f"{k} = {float(v):.4f}" for k, v in result["metrics"].items() if k.startswith("test/"))
    print(f"Refit c = {result['radius']}: {tests}, sparsity = {result['sparsity']:.4f} (stored in {path})")
    return result
