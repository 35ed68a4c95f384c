"""A reproduction's table: our numbers per (column, c) from the stored results, the talk's beside them.

The table is a pure function of the stored results, so a rerun that trains nothing rewrites the same files.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l1inf_lightning.cv.settings import RunSpec, radius_label
from l1inf_lightning.cv.statistics import mean_std
from l1inf_lightning.reproduce.experiments import Experiment, Protocol
from l1inf_lightning.reproduce.talk import TalkCell

__all__ = ["Row", "collect", "markdown", "write_csv"]

# The test accuracy run_one records for a run on the whole training set.
_ACCURACY = "test/acc"


@dataclass(frozen=True)
class Row:
    """One (column, c) cell of the table: our runs' values and the talk's.

    Attributes:
        column: The column's header, as the talk prints it.
        radius: The radius c.
        accuracy: Test accuracy in % of every run that ended ok.
        gap: Generalization gap of every run that ended ok (see ``gap_sources``).
        sparsity: Sparsity rate in % of every run that ended ok.
        num_failed: Runs that failed: the fit raised, or a loss was not finite.
        num_missing: Runs not recorded yet (not run, or interrupted).
        gap_sources: How the gaps were measured (``gap/loss``: validation − training loss on the final weights).
        talk: The talk's (gap, acc %), None where it prints "-" (did not converge).
    """

    column: str
    radius: float
    accuracy: tuple[float, ...]
    gap: tuple[float, ...]
    sparsity: tuple[float, ...]
    num_failed: int
    num_missing: int
    gap_sources: tuple[str, ...]
    talk: TalkCell

    def to_csv(self) -> dict[str, Any]:
        """The row for ``table.csv``: means and standard deviations (empty where undefined), counts, the talk's."""
        cells: dict[str, Any] = {"column": self.column, "c": radius_label(self.radius)}
        for name, values in (("acc", self.accuracy), ("gap", self.gap), ("sparsity", self.sparsity)):
            mean, std = mean_std(values)
            cells[f"{name}_mean"] = _number(mean)
            cells[f"{name}_std"] = _number(std)
        cells["runs_ok"] = len(self.accuracy)
        cells["runs_failed"] = self.num_failed
        cells["runs_missing"] = self.num_missing
        cells["talk_gap"] = "-" if self.talk is None else self.talk[0]
        cells["talk_acc"] = "-" if self.talk is None else self.talk[1]
        return cells


def _number(value: float) -> float | str:
    return "" if math.isnan(value) else round(value, 6)


def collect(
    experiment: Experiment, protocol: Protocol, specs: Sequence[RunSpec], results: Mapping[str, Mapping[str, Any]]
) -> list[Row]:
    """The table's rows, c by c in the talk's order, each c's columns in the talk's order."""
    headers = {column.key: column.header for column in experiment.columns}
    rows = []
    for radius in protocol.radii:
        for header in protocol.columns:
            mine = [spec for spec in specs if spec.radius == radius and headers[spec.label] == header]
            stored = [results[spec.run_id] for spec in mine if spec.run_id in results]
            ok = [result for result in stored if result["status"] == "ok"]
            rows.append(
                Row(
                    column=header,
                    radius=radius,
                    accuracy=tuple(100 * float(result["metrics"][_ACCURACY]) for result in ok),
                    gap=tuple(float(result["gap"]) for result in ok if result["gap"] is not None),
                    sparsity=tuple(100 * float(result["sparsity"]) for result in ok),
                    num_failed=sum(result["status"] == "failed" for result in stored),
                    num_missing=len(mine) - sum(result["status"] in ("ok", "failed") for result in stored),
                    gap_sources=tuple(sorted({str(result["gap_source"]) for result in ok})),
                    talk=experiment.talk[header][radius],
                )
            )
    return rows


def write_csv(rows: Sequence[Row], path: str | Path) -> None:
    """``table.csv``: one line per (c, column)."""
    lines = [row.to_csv() for row in rows]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)


def _pm(values: Sequence[float], digits: int) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown(experiment: Experiment, protocol: Protocol, rows: Sequence[Row]) -> str:
    """``table.md`` (also printed): the title, the protocol, and one line per (c, column) with the talk's beside."""
    sources = sorted({source for row in rows for source in row.gap_sources})
    gap_words = {
        "gap/loss": "validation − training cross entropy on the final weights in eval mode (SparsityMonitor)",
        "val/loss - train/loss": "validation loss − the last epoch's mean training loss",
    }
    lines = [
        f"## {experiment.title}",
        "",
        f"Protocol: {protocol.describe()}.",
        "",
        "Ours: mean ± std over the runs that ended ok; acc = test accuracy %; gap = "
        + ("; ".join(gap_words.get(source, source) for source in sources) or "not measured")
        + "; failed = runs whose fit raised or whose loss was not finite. Talk: as printed, “-” = did not converge.",
        "",
        f"| c | {experiment.column_title} | acc % (ours) | acc % (talk) | gap (ours) | gap (talk) | sparsity % (ours) "
        "| runs ok / failed / missing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        talk_acc, talk_gap = ("-", "-") if row.talk is None else (f"{row.talk[1]:.2f}", f"{row.talk[0]:.3f}")
        lines.append(
            f"| {radius_label(row.radius)} | {row.column} | {_pm(row.accuracy, 2)} | {talk_acc} | {_pm(row.gap, 3)} "
            f"| {talk_gap} | {_pm(row.sparsity, 1)} | {len(row.accuracy)} / {row.num_failed} / {row.num_missing} |"
        )
    missing = sum(row.num_missing for row in rows)
    if missing:
        lines += ["", f"{missing} run(s) are not recorded yet: rerun the command to finish them."]
    return "\n".join(lines) + "\n"
