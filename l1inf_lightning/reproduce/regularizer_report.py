"""``reproduce regularizers``, run and reported.

The fits not recorded yet, then the table (ours beside the talk's), its figure, and the talk's claim on our means.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from l1inf_lightning.cv.backends import LocalBackend
from l1inf_lightning.cv.settings import RunSpec, SweepError, radius_label
from l1inf_lightning.cv.statistics import mean_std
from l1inf_lightning.cv.store import is_finished, prepare_output
from l1inf_lightning.reproduce.regularizers import (
    DATASETS,
    METRIC,
    NAME,
    NOT_HERE,
    OURS,
    REGULARIZERS,
    Regularizer,
    RegularizerProtocol,
    chosen_radii,
    first_runs,
    make_regularizer_protocol,
    our_runs,
)
from l1inf_lightning.reproduce.runner import run_specs
from l1inf_lightning.reproduce.tables import pm
from l1inf_lightning.reproduce.talk import REGULARIZER_DATASETS, TALK_REGULARIZERS

__all__ = ["FIGURE", "Cell", "claims", "collect_cells", "markdown", "plot", "reproduce_regularizers", "write_csv"]

FIGURE = "regularizers.png"


@dataclass(frozen=True)
class Cell:
    """Our runs of one (regularizer, dataset): test accuracies %, sparsity %, counts and, for ours, the chosen c."""

    accuracy: tuple[float, ...]
    sparsity: tuple[float, ...]
    num_failed: int
    num_missing: int
    num_single_class: int
    chosen: tuple[float, ...] = ()


def _cell(specs: Sequence[RunSpec], results: Mapping[str, Mapping[str, Any]], expected: int) -> Cell:
    stored = [results[spec.run_id] for spec in specs if is_finished(results.get(spec.run_id))]
    ok = [result for result in stored if result["status"] == "ok"]
    return Cell(
        accuracy=tuple(100 * float(result["metrics"]["test/acc"]) for result in ok),
        sparsity=tuple(100 * float(result["sparsity"]) for result in ok),
        num_failed=len(stored) - len(ok),
        num_missing=expected - len(stored),
        num_single_class=sum(float(result["metrics"].get("test/top_class_share", 0.0)) >= 1.0 for result in ok),
        chosen=tuple(float(result["radius"]) for result in ok if "-ours_" in result["run_id"]),
    )


def collect_cells(
    protocol: RegularizerProtocol, specs: Sequence[RunSpec], results: Mapping[str, Mapping[str, Any]]
) -> dict[tuple[str, str], Cell]:
    """``{(row header, dataset key): Cell}`` for every regularizer and ours on every dataset run."""
    cells = {}
    for key in protocol.datasets:
        for row in (*REGULARIZERS, Regularizer(OURS, "ours", ())):
            if row.header == OURS or row.header in protocol.rows[key]:
                mine = [spec for spec in specs if spec.label == f"{key}-{row.key}"]
                cells[row.header, key] = _cell(mine, results, protocol.seeds[key])
    return cells


def claims(protocol: RegularizerProtocol, cells: Mapping[tuple[str, str], Cell]) -> list[str]:
    """The talk's claim per dataset: ours beats no regularization, the best L1, the best L2 and dropout."""
    lines = []
    for key in protocol.datasets:
        header = protocol.protocols[key].columns[0]
        if len(protocol.rows[key]) < len(REGULARIZERS):
            lines.append(f"- {header}: not every regularizer was run (--quick)")
            continue
        ours = mean_std(cells[OURS, key].accuracy)[0]
        rivals = {"no regularization": mean_std(cells["No", key].accuracy)[0]}
        for kind in ("L1", "L2"):
            best = max(
                (regularizer for regularizer in REGULARIZERS if regularizer.header.startswith(kind)),
                key=lambda r: _mean_or(cells[r.header, key].accuracy, -math.inf),
            )
            rivals[f"the best {kind} ({best.header})"] = mean_std(cells[best.header, key].accuracy)[0]
        rivals["dropout"] = mean_std(cells["Dropout, r_d = 0.5", key].accuracy)[0]
        if math.isnan(ours) or any(math.isnan(value) for value in rivals.values()):
            lines.append(f"- {header}: not all measured yet")
            continue
        beaten = [name for name, value in rivals.items() if ours > value]
        shown = ", ".join(f"{name} {value:.2f}" for name, value in rivals.items())
        verdict = "yes" if len(beaten) == len(rivals) else f"no (beats {len(beaten)} of {len(rivals)})"
        lines.append(f"- {header}: ours {ours:.2f} % beats every other: {verdict}; {shown}")
    return lines


def _mean_or(values: Sequence[float], default: float) -> float:
    mean = mean_std(values)[0]
    return default if math.isnan(mean) else mean


def _cell_text(cell: Cell | None, run: bool, digits: int = 2) -> str:
    if cell is None:
        return "not run in --quick" if run else NOT_HERE
    text = pm(cell.accuracy, digits)
    if cell.num_single_class or cell.num_failed:
        text += f" ({cell.num_single_class + cell.num_failed} of {len(cell.accuracy) + cell.num_failed} not converged)"
    if cell.chosen:
        text += f"; c = {', '.join(radius_label(c) for c in cell.chosen)}"
    if cell.num_missing:
        text += f"; {cell.num_missing} missing"
    return text


def markdown(protocol: RegularizerProtocol, cells: Mapping[tuple[str, str], Cell]) -> str:
    """``table.md``: one line per regularizer, per dataset ours beside the talk's, the protocols, the claims."""
    keys = {dataset.header: dataset.key for dataset in DATASETS}
    lines = ["## Comparison with other regularizers: test accuracy %", ""]
    for key in protocol.datasets:
        words = protocol.protocols[key].describe()
        lines.append(
            f"- {protocol.protocols[key].columns[0]}: {words}; c = inf for every regularizer; ours: c chosen by "
            f"{protocol.folds}-fold cross-validation of {METRIC} over c ∈ "
            f"{{{', '.join(radius_label(r) for r in protocol.radii[key])}}} on the training set, then a fit on the "
            "whole training set at that c."
        )
    lines += [
        "",
        "Ours: mean ± std over the seeds; “not converged” = runs that failed or predict one class on the whole test "
        f"set (in the means); “{NOT_HERE}” = the dataset's files are not in the data directory (nothing is "
        "downloaded). Talk: as printed.",
        "",
        "| regularizer | " + " | ".join(f"{header} (ours) | {header} (talk)" for header in REGULARIZER_DATASETS) + " |",
        "|---|" + "---|---|" * len(REGULARIZER_DATASETS),
    ]
    for header in (*(r.header for r in REGULARIZERS), OURS):
        parts = []
        for dataset_header in REGULARIZER_DATASETS:
            cell = cells.get((header, keys[dataset_header]))
            run = keys[dataset_header] in protocol.datasets
            parts.append(f"{_cell_text(cell, run)} | {TALK_REGULARIZERS[header][dataset_header]:.2f}")
        lines.append(f"| {header} | " + " | ".join(parts) + " |")
    sparsity = [
        f"{protocol.protocols[key].columns[0]} {pm(cells[OURS, key].sparsity, 1)} %" for key in protocol.datasets
    ]
    lines += ["", f"Sparsity of ours: {'; '.join(sparsity)}.", "", "The talk's claim, on our means:", ""]
    lines += claims(protocol, cells)
    missing = sum(cell.num_missing for cell in cells.values())
    if missing:
        lines += ["", f"{missing} run(s) are not recorded yet: rerun the command to finish them."]
    return "\n".join(lines) + "\n"


def write_csv(protocol: RegularizerProtocol, cells: Mapping[tuple[str, str], Cell], path: Path) -> None:
    """``table.csv``: one line per (regularizer, dataset), the datasets not run included."""
    keys = {dataset.header: dataset.key for dataset in DATASETS}
    rows = []
    for header in (*(r.header for r in REGULARIZERS), OURS):
        for dataset_header in REGULARIZER_DATASETS:
            cell = cells.get((header, keys[dataset_header]))
            row: dict[str, Any] = {"regularizer": header, "dataset": dataset_header}
            mean, std = mean_std(cell.accuracy) if cell else (math.nan, math.nan)
            row["acc_mean"] = "" if math.isnan(mean) else round(mean, 6)
            row["acc_std"] = "" if math.isnan(std) else round(std, 6)
            sparsity = mean_std(cell.sparsity)[0] if cell else math.nan
            row["sparsity_mean"] = "" if math.isnan(sparsity) else round(sparsity, 6)
            row["runs_ok"] = len(cell.accuracy) if cell else 0
            row["runs_failed"] = cell.num_failed if cell else 0
            row["runs_missing"] = cell.num_missing if cell else 0
            row["runs_single_class"] = cell.num_single_class if cell else 0
            row["chosen_c"] = " ".join(radius_label(c) for c in cell.chosen) if cell else ""
            run = keys[dataset_header] in protocol.datasets
            row["status"] = "run" if cell else "not run in --quick" if run else NOT_HERE
            row["talk_acc"] = TALK_REGULARIZERS[header][dataset_header]
            rows.append(row)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(protocol: RegularizerProtocol, cells: Mapping[tuple[str, str], Cell], path: Path) -> None:
    """One panel per dataset run: test accuracy per regularizer, ours (bars, ± std) beside the talk's (crosses)."""
    figure = Figure(figsize=(6 * max(1, len(protocol.datasets)), 5))
    axes = figure.subplots(1, max(1, len(protocol.datasets)), squeeze=False)[0]
    headers = [*(r.header for r in REGULARIZERS), OURS]
    for axis, key in zip(axes, protocol.datasets, strict=False):
        dataset_header = protocol.protocols[key].columns[0]
        statistics = [mean_std(cells[header, key].accuracy if (header, key) in cells else ()) for header in headers]
        means = [mean for mean, _ in statistics]
        errors = [0.0 if math.isnan(std) else std for _, std in statistics]
        positions = range(len(headers))
        axis.bar(positions, means, yerr=errors, color=["C0"] * (len(headers) - 1) + ["C3"], label="ours")
        talk = [TALK_REGULARIZERS[header][dataset_header] for header in headers]
        axis.plot(positions, talk, "kx", markersize=9, label="talk")
        axis.set_xticks(list(positions), headers, rotation=60, ha="right", fontsize="small")
        axis.set_ylabel("test accuracy %")
        axis.set_title(dataset_header)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle("Comparison with other regularizers: ours (bars) and the talk's (crosses)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def reproduce_regularizers(
    *, quick: bool, seeds: int | None, output: str | Path, workers: int, progress: bool = True, data_dir: str = "data"
) -> str:
    """Run what is not recorded of the comparison of regularizers; write its table and figure, and print the table.

    The files are ``table.csv``, ``table.md`` and ``regularizers.png`` under ``output/regularizers``.
    The regularizers' fits and the cross-validations' folds run first; each (dataset, seed) whose folds are all
    recorded then gets its fit at the chosen c. Rerunning resumes; a finished reproduction trains nothing.

    Args:
        quick: A smoke test (2 folds, two c, 2 epochs on synthetic data; 1 epoch of 3 batches on images).
        seeds: Seeds 0 .. seeds - 1 per dataset (default: 5 on synthetic data, 1 on images; ``--quick`` 1).
        output: The parent directory.
        workers: Fits at once.
        progress: Show progress bars.
        data_dir: Where MNIST and CIFAR-10 are read from (torchvision's layout, as ``make data`` writes it).

    Returns:
        The table's Markdown.

    Raises:
        SweepError: On bad arguments or a directory that holds another protocol; before any training.
        SweepInterrupted: On SIGINT or SIGTERM.
    """
    backend = LocalBackend(workers)
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise SweepError(f"Expected `--seeds` to be an integer >= 1, got {seeds!r}")
    protocol = make_regularizer_protocol(quick=quick, seeds=seeds, data_dir=data_dir)
    directory = prepare_output(Path(output) / NAME, protocol)
    specs = first_runs(protocol, directory)
    results = run_specs(f"{NAME} (regularizers and folds)", specs, directory, backend, progress=progress)
    ours = our_runs(protocol, directory, chosen_radii(protocol, specs, results), len(specs))
    results = run_specs(f"{NAME} (ours at the chosen c)", ours, directory, backend, progress=progress)
    cells = collect_cells(protocol, [*specs, *ours], results)
    text = markdown(protocol, cells)
    write_csv(protocol, cells, directory / "table.csv")
    (directory / "table.md").write_text(text, encoding="utf-8")
    plot(protocol, cells, directory / FIGURE)
    print()
    print(text, end="")
    return text
