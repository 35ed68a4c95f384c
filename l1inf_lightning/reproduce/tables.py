"""A reproduction's table: our numbers per (column, c) from the stored results, the talk's beside them.

The table is a pure function of the stored results, so a rerun that trains nothing rewrites the same files.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l1inf_lightning.cv.settings import RunSpec, radius_label
from l1inf_lightning.cv.statistics import mean_std
from l1inf_lightning.reproduce.experiments import Experiment, Protocol
from l1inf_lightning.reproduce.talk import TalkCell

__all__ = ["Row", "collect", "markdown", "number", "pm", "trend", "write_csv"]

# A run that predicts one class on the whole test set did not learn: the talk's "cannot converge".
_SINGLE_CLASS = "test/top_class_share"


@dataclass(frozen=True)
class Row:
    """One (column, c) cell of the table: our runs' values and the talk's.

    Attributes:
        column: The column's header, as the talk prints it.
        radius: The radius c.
        metric: The test metric of every run that ended ok (accuracy in %).
        gap: Generalization gap of every run that ended ok (see ``gap_sources``).
        sparsity: Sparsity rate in % of every run that ended ok.
        num_failed: Runs that failed: the fit raised, or a loss was not finite.
        num_missing: Runs not recorded yet (not run, or interrupted).
        gap_sources: How the gaps were measured (``gap/loss``: validation − training loss on the final weights).
        talk: The talk's (gap, acc %), None where it prints "-" (did not converge) or prints no numbers.
        num_single_class: Runs that ended ok but predict a single class on the whole test set (they are in the
            means; with the failed runs they are the runs that did not converge).
    """

    column: str
    radius: float
    metric: tuple[float, ...]
    gap: tuple[float, ...]
    sparsity: tuple[float, ...]
    num_failed: int
    num_missing: int
    gap_sources: tuple[str, ...]
    talk: TalkCell
    num_single_class: int = 0

    @property
    def num_not_converged(self) -> int:
        """Runs that failed or predict a single class."""
        return self.num_failed + self.num_single_class

    def to_csv(self, metric_name: str = "acc", with_talk: bool = True) -> dict[str, Any]:
        """The row for ``table.csv``: means and standard deviations (empty where undefined), counts, the talk's."""
        cells: dict[str, Any] = {"column": self.column, "c": radius_label(self.radius)}
        for name, values in ((metric_name, self.metric), ("gap", self.gap), ("sparsity", self.sparsity)):
            mean, std = mean_std(values)
            cells[f"{name}_mean"] = number(mean)
            cells[f"{name}_std"] = number(std)
        cells["runs_ok"] = len(self.metric)
        cells["runs_failed"] = self.num_failed
        cells["runs_missing"] = self.num_missing
        cells["runs_single_class"] = self.num_single_class
        if with_talk:
            cells["talk_gap"] = "-" if self.talk is None else self.talk[0]
            cells["talk_acc"] = "-" if self.talk is None else self.talk[1]
        return cells


def number(value: float) -> float | str:
    """A CSV cell: the value rounded to 6 decimals, empty for NaN."""
    return "" if math.isnan(value) else round(value, 6)


def _single_class(result: Mapping[str, Any]) -> bool:
    share = result["metrics"].get(_SINGLE_CLASS)
    return share is not None and float(share) >= 1.0


def collect(
    experiment: Experiment, protocol: Protocol, specs: Sequence[RunSpec], results: Mapping[str, Mapping[str, Any]]
) -> list[Row]:
    """The table's rows, c by c in the talk's order, each c's columns in the talk's order."""
    headers = {column.key: column.header for column in experiment.columns}
    scale = 100.0 if experiment.percent else 1.0
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
                    metric=tuple(scale * float(result["metrics"][experiment.metric]) for result in ok),
                    gap=tuple(float(result["gap"]) for result in ok if result["gap"] is not None),
                    sparsity=tuple(100 * float(result["sparsity"]) for result in ok),
                    num_failed=sum(result["status"] == "failed" for result in stored),
                    num_missing=len(mine) - sum(result["status"] in ("ok", "failed") for result in stored),
                    gap_sources=tuple(sorted({str(result["gap_source"]) for result in ok})),
                    talk=None if experiment.talk is None else experiment.talk[header][radius],
                    num_single_class=sum(_single_class(result) for result in ok),
                )
            )
    return rows


def write_csv(rows: Sequence[Row], path: str | Path, metric_name: str = "acc", with_talk: bool = True) -> None:
    """``table.csv``: one line per (c, column)."""
    lines = [row.to_csv(metric_name, with_talk) for row in rows]
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)


def pm(values: Sequence[float], digits: int) -> str:
    """``mean ± std`` of ``values`` (the mean alone for one value, ``–`` for none)."""
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "–"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"


_GAP_WORDS = {
    "gap/loss": "validation − training loss on the final weights in eval mode (SparsityMonitor)",
    "val/loss - train/loss": "validation loss − the last epoch's mean training loss",
}


def trend(rows: Sequence[Row], column: str, attribute: str, falls: bool) -> str:
    """Whether the mean of ``attribute`` falls (or rises) at every step from the largest c to the smallest."""
    mine = sorted((row for row in rows if row.column == column), key=lambda row: -row.radius)
    means = [mean_std(getattr(row, attribute))[0] for row in mine]
    if any(math.isnan(mean) for mean in means):
        return "not all measured yet"
    steps = [(after < before) if falls else (after > before) for before, after in itertools.pairwise(means)]
    shown = " → ".join(f"{mean:.3g}" for mean in means)
    return f"{'yes' if all(steps) else f'no ({len(steps) - sum(steps)} of {len(steps)} steps not)'} ({shown})"


def markdown(experiment: Experiment, protocol: Protocol, rows: Sequence[Row]) -> str:
    """``table.md`` (also printed): the title, the protocol, and one line per (c, column) with the talk's beside."""
    sources = sorted({source for row in rows for source in row.gap_sources})
    digits = 2 if experiment.percent else 4
    classification = experiment.percent
    lines = [f"## {experiment.title}", "", f"Protocol: {protocol.describe()}."]
    columns = [column for column in experiment.columns if column.header in protocol.columns and column.overrides]
    if columns and experiment.column_title == "mode":
        lines += ["", "Columns: " + "; ".join(f"{c.header} = `{' '.join(c.overrides)}`" for c in columns) + "."]
    lines += [
        "",
        f"Ours: mean ± std over the runs that ended ok; {experiment.metric_header} = {experiment.metric} on the test "
        "set; gap = "
        + ("; ".join(_GAP_WORDS.get(source, source) for source in sources) or "not measured")
        + "; failed = runs whose fit raised or whose loss was not finite"
        + (
            "; single class = runs that predict one class on the whole test set (in the means)"
            if classification
            else ""
        )
        + (". Talk: as printed, “-” = did not converge." if experiment.talk is not None else "."),
        "",
    ]
    single = " / single class" if classification else ""
    if experiment.talk is None:
        lines += [
            f"The talk (figure only): “{experiment.claim}”.",
            "",
            f"| c | {experiment.column_title} | {experiment.metric_header} | gap | sparsity % | runs ok / failed / "
            f"missing{single} |",
            "|---|---|---|---|---|---|",
        ]
    else:
        lines += [
            f"| c | {experiment.column_title} | acc % (ours) | acc % (talk) | gap (ours) | gap (talk) | sparsity % "
            f"(ours) | runs ok / failed / missing{single} |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for row in rows:
        counts = f"{len(row.metric)} / {row.num_failed} / {row.num_missing}"
        counts += f" / {row.num_single_class}" if classification else ""
        ours = f"| {radius_label(row.radius)} | {row.column} | {pm(row.metric, digits)} |"
        if experiment.talk is None:
            lines.append(f"{ours} {pm(row.gap, 3)} | {pm(row.sparsity, 1)} | {counts} |")
            continue
        talk_acc, talk_gap = ("-", "-") if row.talk is None else (f"{row.talk[1]:.2f}", f"{row.talk[0]:.3f}")
        lines.append(f"{ours} {talk_acc} | {pm(row.gap, 3)} | {talk_gap} | {pm(row.sparsity, 1)} | {counts} |")
    if experiment.figure == "boxes":
        lines += ["", "The talk's claims, on our mean values from the largest c to the smallest:", ""]
        for column in protocol.columns:
            lines.append(f"- {column}: gap falls at every step: {trend(rows, column, 'gap', falls=True)}")
            lines.append(f"- {column}: sparsity rises at every step: {trend(rows, column, 'sparsity', falls=False)}")
            collapsed = [row for row in rows if row.column == column and row.num_single_class]
            if collapsed:
                # A net that predicts one class has a gap near zero: it says nothing of c's effect on generalization.
                where = ", ".join(f"{row.num_single_class} at c = {radius_label(row.radius)}" for row in collapsed)
                lines.append(
                    f"  - but {column} has runs that predict a single class ({where}): a net that has not learned "
                    "has no gap to speak of, so these trends say nothing of generalization there"
                )
    missing = sum(row.num_missing for row in rows)
    if missing:
        lines += ["", f"{missing} run(s) are not recorded yet: rerun the command to finish them."]
    return "\n".join(lines) + "\n"
