"""Writing a sweep's summary: ``summary.csv``, ``summary.md`` (also printed) and ``boxplot.png``."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from l1inf_lightning.cv.settings import radius_label
from l1inf_lightning.cv.statistics import SweepSummary, mean_std

__all__ = ["best_line", "markdown", "plot_boxes", "write_csv", "write_reports"]


def best_line(summary: SweepSummary) -> str:
    """One sentence naming the chosen c and why."""
    if summary.best is None:
        return "No c can be chosen: every c has failed or missing runs only."
    row = next(r for r in summary.rows if r.radius == summary.best)
    mean, std = mean_std(row.metric)
    word = "highest" if summary.mode == "max" else "lowest"
    return (
        f"Best c = {radius_label(summary.best)}: {word} mean {summary.metric} = {mean:.4f} ± {std:.4f} over "
        f"{row.num_ok} runs (ties go to the smaller c; a c with a failed run is not chosen)."
    )


def markdown(summary: SweepSummary) -> str:
    """The table as Markdown, followed by the best-c sentence; a ``missing`` column while runs are missing."""
    header = ["c", f"{summary.metric} (mean ± std)", "sparsity", "gap/loss", "ok", "failed"]
    if not summary.complete:
        header.append("missing")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in summary.rows:
        label = radius_label(row.radius)
        cells = [f"**{label}**" if row.radius == summary.best else label]
        cells += [_pm(row.metric), _pm(row.sparsity), _pm(row.gap), str(row.num_ok), str(row.num_failed)]
        if not summary.complete:
            cells.append(str(row.num_missing))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n\n" + best_line(summary) + "\n"


def _pm(values: Sequence[float]) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "–"
    return f"{mean:.4f}" if math.isnan(std) else f"{mean:.4f} ± {std:.4f}"


def write_csv(summary: SweepSummary, path: str | Path) -> None:
    """Write :meth:`SweepSummary.table` as CSV, one row per c."""
    rows = summary.table()
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot_boxes(summary: SweepSummary, path: str | Path) -> None:
    """Box plots per c of the metric, the gap and the sparsity, side by side, as a PNG."""
    figure = Figure(figsize=(13, 4.2))  # no pyplot: no global state, no display needed (Agg)
    axes = figure.subplots(1, 3)
    labels = [radius_label(row.radius) for row in summary.rows]
    panels = ((summary.metric, "metric"), ("gap/loss (val - train)", "gap"), ("sparsity rate", "sparsity"))
    for axis, (title, attribute) in zip(axes, panels, strict=True):
        data = [getattr(row, attribute) or [math.nan] for row in summary.rows]
        axis.boxplot(data, tick_labels=labels)
        axis.set_title(title)
        axis.set_xlabel("c")
        axis.grid(axis="y", alpha=0.3)
    chosen = "none" if summary.best is None else radius_label(summary.best)
    figure.suptitle(f"Cross-validation of c (best c = {chosen} by {summary.mode} mean {summary.metric})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def write_reports(summary: SweepSummary, output: str | Path) -> None:
    """Write ``summary.csv``, ``summary.md`` and ``boxplot.png`` into ``output``."""
    output = Path(output)
    write_csv(summary, output / "summary.csv")
    (output / "summary.md").write_text(markdown(summary), encoding="utf-8")
    plot_boxes(summary, output / "boxplot.png")
