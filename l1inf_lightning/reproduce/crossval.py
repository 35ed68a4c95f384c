"""The talk's 20-fold cross-validation of c on both synthetic tasks: ``reproduce cv``.

Each task is one :func:`~l1inf_lightning.cv.runner.run_sweep` of its repository config (every (c, fold, seed) an
ordinary ``fit`` on k - 1 folds of the training set, scored on the held-out fold) into ``OUTPUT/cv/<task>/``; this
module only chooses the grids and writes the two tasks side by side: ``OUTPUT/cv/table.csv``, ``table.md`` and
``cv_curves.png`` (the mean validation score against c, the chosen c marked). The talk shows its curves as a figure
only, so there are no numbers of the talk's to set beside ours.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from l1inf_lightning._checks import is_int
from l1inf_lightning.callbacks import L1InfProjection
from l1inf_lightning.cv.backends import LocalBackend
from l1inf_lightning.cv.runner import run_sweep
from l1inf_lightning.cv.settings import SweepError, SweepSettings, list_runs, radius_label
from l1inf_lightning.cv.statistics import RadiusSummary, SweepSummary, mean_std
from l1inf_lightning.cv.store import load_results, prepare_output
from l1inf_lightning.reproduce.experiments import _QUICK_DATA, _QUIET, _defaults, _import, _override
from l1inf_lightning.reproduce.tables import number

__all__ = [
    "CLASSIFICATION_RADII",
    "FIGURE",
    "NUM_FOLDS",
    "QUICK_FOLDS",
    "REGRESSION_RADII",
    "TALK_WORDS",
    "TASKS",
    "CvTask",
    "cv_settings",
    "describe",
    "reproduce_cv",
]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
INF = math.inf
# The grids of c (edit here to change them): the talk's for classification (its tables' rows); for regression, whose
# grid the talk does not print, a half-decade grid around the config's c = 1.
CLASSIFICATION_RADII = (INF, 0.5, 0.16, 0.13, 0.1, 0.07, 0.04, 0.01)
REGRESSION_RADII = (INF, 10.0, 3.0, 1.0, 0.3, 0.1)
NUM_FOLDS = 20  # "We make 20-fold cross validation to choose c in regression and classification experiment."
QUICK_FOLDS = 3
FIGURE = "cv_curves.png"
# Logged by a classification model: the share of predictions in the most predicted class (1.0: a single class).
_SHARE = "val/top_class_share"
# The talk's words, quoted as printed (its OCR), in table.md.
TALK_WORDS = (
    "We use k-fold cross validation to choose the parameter. We divided the training dataset into 10 folds. Each "
    "time we choose one of the 10 folds as test fold and the rest as training fold. Finally, we choose c that has "
    "best average score.",
    "We make 20-fold cross validation to choose c in regression and classification experiment.",
    "Figure: The 20-fold cross validation results on synthesis regression and classification experiments.",
)


@dataclass(frozen=True)
class CvTask:
    """One synthetic task of the talk's cross-validation figure.

    Args:
        name: Its directory under ``OUTPUT/cv`` and its name in the table.
        config: The repository config every run fits.
        metric: The validation metric that chooses c (logged on the held-out fold).
        mode: ``"max"`` or ``"min"``.
        metric_words: What the metric is, for the table.
        radii: The grid of c of the full protocol, in the talk's order (``inf`` first).
        quick_radii: The c of ``--quick``.
        quick_epochs: The epochs of ``--quick``.
    """

    name: str
    config: Path
    metric: str
    mode: str
    metric_words: str
    radii: tuple[float, ...]
    quick_radii: tuple[float, ...]
    quick_epochs: int


TASKS = (
    CvTask(
        name="classification",
        config=CONFIGS / "synthetic_classification.yaml",
        metric="val/acc",
        mode="max",
        metric_words="accuracy on the held-out fold, as a fraction",
        radii=CLASSIFICATION_RADII,
        quick_radii=(INF, 0.1),
        quick_epochs=2,
    ),
    CvTask(
        name="regression",
        config=CONFIGS / "synthetic_regression.yaml",
        metric="val/loss",
        mode="min",
        metric_words="MSE on the held-out fold, in units of the training folds' target variance",
        radii=REGRESSION_RADII,
        quick_radii=(INF, 1.0),
        quick_epochs=20,  # full batch: one step per epoch
    ),
)


def _check_seeds(seeds: int | None) -> int:
    if seeds is not None and (not is_int(seeds) or seeds < 1):
        raise SweepError(f"Expected `--seeds` to be an integer >= 1, got {seeds!r}")
    return seeds or 1


def _load(config: Path) -> dict[str, Any]:
    return yaml.safe_load(config.read_text(encoding="utf-8"))


def _epochs(task: CvTask, quick: bool) -> int:
    return task.quick_epochs if quick else int(_load(task.config)["trainer"]["max_epochs"])


def _overrides(task: CvTask, quick: bool) -> tuple[str, ...]:
    """Every run's options: quiet, the epochs, and whatever must follow the epochs (the lr schedule, validation)."""
    config = _load(task.config)
    epochs = _epochs(task, quick)
    overrides = [*_QUIET, *(_QUICK_DATA if quick else ()), f"--trainer.max_epochs={epochs}"]
    scheduler = config["model"]["init_args"].get("scheduler") or {}
    if "T_max" in scheduler.get("init_args", {}):  # a cosine schedule decays over all the epochs run
        overrides.append(f"--model.init_args.scheduler.init_args.T_max={epochs}")
    every = int(config["trainer"].get("check_val_every_n_epoch", 1))
    if epochs % every:  # the last epoch must validate: the held-out fold's score is the metric
        overrides.append(f"--trainer.check_val_every_n_epoch={epochs}")
    return tuple(overrides)


def cv_settings(task: CvTask, *, quick: bool, seeds: int | None) -> SweepSettings:
    """The sweep of one task: 20 folds, the task's grid and the config's epochs, or the ``--quick`` smoke test.

    Args:
        task: One of :data:`TASKS`.
        quick: 3 folds, two values of c, a few epochs, smaller test and validation sets.
        seeds: Seeds 0 .. seeds - 1 (each reshuffles the folds and the initialization; the data stay the config's);
            None for 1.

    Raises:
        SweepError: If ``seeds`` is not a positive integer.
    """
    count = _check_seeds(seeds)
    return SweepSettings(
        config=str(task.config),
        radii=task.quick_radii if quick else task.radii,
        num_folds=QUICK_FOLDS if quick else NUM_FOLDS,
        seeds=tuple(range(count)),
        overrides=_overrides(task, quick),
    )


def reproduce_cv(*, quick: bool, seeds: int | None, output: str | Path, workers: int, progress: bool = True) -> str:
    """Cross-validate c on both synthetic tasks, then write, print and return the table of the two.

    Every run not yet recorded under ``OUTPUT/cv/<task>/`` is trained (on one pool of ``workers`` processes);
    a finished reproduction trains nothing and rewrites the same ``table.csv``, ``table.md`` and figure.

    Args:
        quick: A smoke test of the whole pipeline (3 folds, two values of c, a few epochs), not a measurement.
        seeds: Fold shuffles (and initializations) 0 .. seeds - 1; None for 1.
        output: The parent directory; this reproduction lives in ``output/cv``.
        workers: Fits at once.
        progress: Show a progress bar.

    Returns:
        The table as Markdown (``OUTPUT/cv/table.md``).

    Raises:
        SweepError: On bad ``seeds`` or ``workers``, or a directory that holds another protocol; before any training.
        SweepInterrupted: On SIGINT or SIGTERM; the runs already finished are kept.
    """
    count = _check_seeds(seeds)
    backend = LocalBackend(workers)  # checks `workers` before anything is written
    directory = Path(output).resolve() / "cv"
    settings = {task.name: cv_settings(task, quick=quick, seeds=count) for task in TASKS}
    for task in TASKS:  # refuse another protocol in either directory before training either task
        prepare_output(directory / task.name, settings[task.name])
    summaries = {}
    with backend:
        for task in TASKS:
            summaries[task.name] = run_sweep(
                settings[task.name],
                directory / task.name,
                backend,
                metric=task.metric,
                mode=task.mode,
                progress=progress,
            )
    single = {task.name: _single_class(directory / task.name, settings[task.name]) for task in TASKS}
    rows = _rows(summaries, single)
    _write_csv(rows, directory / "table.csv")
    text = _markdown(settings, summaries, single, rows, quick=quick)
    (directory / "table.md").write_text(text, encoding="utf-8")
    _plot(summaries, directory / FIGURE)
    print()
    print(text, end="")
    return text


def _ordered(summary: SweepSummary) -> list[RadiusSummary]:
    """The summary's rows in the talk's order (``inf`` first, then decreasing c)."""
    return sorted(summary.rows, key=lambda row: -row.radius)


def _task(name: str) -> CvTask:
    return next(task for task in TASKS if task.name == name)


def _single_class(directory: Path, settings: SweepSettings) -> dict[float, int] | None:
    """Per c, the ok runs that predicted one class for the whole held-out fold; None for a task without classes."""
    counts = dict.fromkeys(settings.radii, 0)
    logged = False
    results = load_results(directory)
    for spec in list_runs(settings, directory):
        result = results.get(spec.run_id)
        if result is None or result["status"] != "ok" or _SHARE not in result["metrics"]:
            continue
        logged = True
        counts[spec.radius] += float(result["metrics"][_SHARE]) >= 1.0
    return counts if logged else None


def _rows(summaries: dict[str, SweepSummary], single: dict[str, dict[float, int] | None]) -> list[dict[str, Any]]:
    """One line per (task, c): mean and std of the metric, gap and sparsity over the ok runs, counts, the choice."""
    rows = []
    for name, summary in summaries.items():
        for row in _ordered(summary):
            line: dict[str, Any] = {"task": name, "c": radius_label(row.radius), "metric": summary.metric}
            for key, values in (("metric", row.metric), ("gap", row.gap), ("sparsity", row.sparsity)):
                mean, std = mean_std(values)
                line[f"{key}_mean"], line[f"{key}_std"] = number(mean), number(std)
            line["runs_single_class"] = "" if single[name] is None else single[name][row.radius]
            line["runs_ok"], line["runs_failed"], line["runs_missing"] = row.num_ok, row.num_failed, row.num_missing
            line["chosen"] = summary.best is not None and row.radius == summary.best
            rows.append(line)
    return rows


def _write_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _pm(values: Sequence[float], digits: int, scale: float = 1.0) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "–"
    if math.isnan(std):
        return f"{scale * mean:.{digits}f}"
    return f"{scale * mean:.{digits}f} ± {scale * std:.{digits}f}"


def _class_with_args(spec: dict[str, Any], overrides: Sequence[str], prefix: str) -> str:
    """``SGD (lr 0.5, momentum 0.9)`` from a config's ``class_path`` / ``init_args`` and the runs' overrides."""
    args = {key: _override(overrides, f"{prefix}.init_args.{key}", value) for key, value in spec["init_args"].items()}
    shown = ", ".join(f"{key} {value}" for key, value in args.items())
    return f"{spec['class_path'].rsplit('.', 1)[-1]} ({shown})"


def describe(task: CvTask, settings: SweepSettings, *, quick: bool) -> str:
    """One task's protocol in words: config, optimizer, lr, epochs, batch size, folds, seeds, projection mode."""
    config = _load(task.config)
    model = config["model"]["init_args"]
    data = {**_defaults(_import(config["data"]["class_path"])), **config["data"].get("init_args", {})}
    projection = {**_defaults(L1InfProjection), **config.get("projection", {})}
    mode = projection["mode"]
    if mode == "radius_aware":
        mode += f" (c shrinks from {projection['start_radius']} over the first {projection['anneal']:.0%} of the steps)"
    optimizer = _class_with_args(model["optimizer"], settings.overrides, "model.init_args.optimizer")
    scheduler = model.get("scheduler")
    schedule = ""
    if scheduler:
        schedule = f", scheduler {_class_with_args(scheduler, settings.overrides, 'model.init_args.scheduler')}"
    seeds = settings.seeds
    seed_words = "seed 0" if len(seeds) == 1 else f"seeds {seeds[0]}–{seeds[-1]}"
    num_train = int(data["num_train"])
    return (
        f"{'QUICK (a smoke test, not a measurement): ' if quick else ''}"
        f"config {task.config.name}; optimizer {optimizer}{schedule}; "
        f"{_override(settings.overrides, 'trainer.max_epochs', config['trainer']['max_epochs'])} epochs; "
        f"batch size {data['batch_size']}; {settings.num_folds} folds of the {num_train} training samples (each run "
        f"trains on {settings.num_folds - 1} folds, about {num_train * (settings.num_folds - 1) // settings.num_folds}"
        f" samples, and is scored on the held-out one); {seed_words} (fold assignment and initialization; the data "
        f"set is the config's, data seed {data['seed']}); projection mode {mode}; c chosen by the "
        f"{'highest' if task.mode == 'max' else 'lowest'} mean {task.metric} over the folds ({task.metric_words}); "
        "ties go to the smaller c, and a c with a failed run is not chosen"
    )


def _chosen_line(name: str, summary: SweepSummary) -> str:
    if summary.best is None:
        return f"- {name}: no c can be chosen (every c has failed or missing runs only)."
    row = next(row for row in summary.rows if row.radius == summary.best)
    missing = sum(r.num_missing for r in summary.rows)
    provisional = f" (provisional: {missing} run(s) not recorded yet)" if missing else ""
    return (
        f"- {name}: **c = {radius_label(summary.best)}**, mean {summary.metric} = {_pm(row.metric, 4)} over "
        f"{row.num_ok} runs{provisional}."
    )


def _markdown(
    settings: dict[str, SweepSettings],
    summaries: dict[str, SweepSummary],
    single: dict[str, dict[float, int] | None],
    rows: Sequence[dict[str, Any]],
    *,
    quick: bool,
) -> str:
    quoted = " … ".join(f"“{words}”" for words in TALK_WORDS)
    lines = [
        f"## {_folds(settings)}-fold cross-validation of c on the synthetic tasks",
        "",
        f"The talk (“How to Choose c”): {quoted} It shows these results as a figure only and prints no numbers, so "
        f"there is nothing of the talk's to set beside ours; ours are plotted in `{FIGURE}`. (Its method slide says "
        "10 folds; its synthetic experiments use 20, as here.)",
        "",
    ]
    for name in summaries:
        lines += [f"Protocol, {name}: {describe(_task(name), settings[name], quick=quick)}.", ""]
    lines += ["Chosen c:", ""]
    lines += [_chosen_line(name, summary) for name, summary in summaries.items()]
    lines += [
        "",
        "Mean ± std over the runs that ended ok (folds × seeds); gap = validation − training loss on the final "
        "weights; sparsity = zero weights / all weights, in %; single class = runs that predicted one class for the "
        "whole held-out fold (a collapsed net); failed = runs whose fit raised or whose loss was not finite.",
        "",
        "| task | c | metric | mean ± std | gap | sparsity % | single class | runs ok / failed / missing | chosen |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, summary in summaries.items():
        for row in _ordered(summary):
            chosen = summary.best is not None and row.radius == summary.best
            label = radius_label(row.radius)
            lines.append(
                f"| {name} | {f'**{label}**' if chosen else label} | {summary.metric} | {_pm(row.metric, 4)} "
                f"| {_pm(row.gap, 4)} | {_pm(row.sparsity, 1, 100.0)} "
                f"| {'–' if single[name] is None else single[name][row.radius]} | {row.num_ok} / {row.num_failed} / "
                f"{row.num_missing} | {'yes' if chosen else ''} |"
            )
    missing = sum(int(row["runs_missing"]) for row in rows)
    if missing:
        lines += ["", f"{missing} run(s) are not recorded yet: rerun the command to finish them."]
    return "\n".join(lines) + "\n"


def _folds(settings: dict[str, SweepSettings]) -> str:
    return "/".join(str(folds) for folds in dict.fromkeys(s.num_folds for s in settings.values()))


def _plot(summaries: dict[str, SweepSummary], path: Path) -> None:
    """One panel per task: mean ± std of the validation metric against c (the talk's order), the chosen c marked."""
    figure = Figure(figsize=(12, 4.5))  # no pyplot: no global state, no display needed (Agg)
    axes = figure.subplots(1, len(summaries))
    for axis, (name, summary) in zip(axes, summaries.items(), strict=True):
        rows = _ordered(summary)
        positions = list(range(len(rows)))
        statistics = [mean_std(row.metric) for row in rows]
        means = [mean for mean, _ in statistics]
        errors = [0.0 if math.isnan(std) else std for _, std in statistics]
        axis.errorbar(positions, means, yerr=errors, color="C0", marker="o", capsize=3, label="mean ± std over folds")
        for position, row in zip(positions, rows, strict=True):
            if summary.best is not None and row.radius == summary.best:
                axis.plot(
                    [position],
                    [means[position]],
                    marker="*",
                    markersize=18,
                    color="C3",
                    linestyle="none",
                    label=f"chosen c = {radius_label(row.radius)}",
                )
                axis.axvline(position, color="C3", alpha=0.3)
        axis.set_xticks(positions, [radius_label(row.radius) for row in rows])
        axis.set_xlabel("c")
        axis.set_ylabel(f"{summary.metric} ({'higher' if summary.mode == 'max' else 'lower'} is better)")
        axis.set_title(f"synthetic {name}")
        axis.grid(alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle("k-fold cross-validation of c: mean validation score over the held-out folds")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
