"""A reproduction's figure: ours beside the talk's against c, or box plots over our runs where the talk shows those.

Lines: accuracy and gap against c, ours (solid) beside the talk's (dashed), per column. Boxes: the metric, the gap
and the sparsity per c over our runs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.figure import Figure

from l1inf_lightning.cv.settings import radius_label
from l1inf_lightning.cv.statistics import mean_std
from l1inf_lightning.reproduce.experiments import Experiment
from l1inf_lightning.reproduce.tables import Row

__all__ = ["plot_against_talk", "plot_boxes"]


def plot_against_talk(experiment: Experiment, rows: Sequence[Row], path: str | Path) -> None:
    """Two panels (test accuracy %, gap) over the c of the table, one colour per column; error bars are ± std."""
    figure = Figure(figsize=(12, 4.5))  # no pyplot: no global state, no display needed (Agg)
    axes = figure.subplots(1, 2)
    radii = list(dict.fromkeys(row.radius for row in rows))
    columns = list(dict.fromkeys(row.column for row in rows))
    positions = range(len(radii))
    for colour, column in enumerate(columns):
        mine = {row.radius: row for row in rows if row.column == column}
        for axis, (ours, talk_index) in zip(axes, (("metric", 1), ("gap", 0)), strict=True):
            statistics = [mean_std(getattr(mine[radius], ours)) for radius in radii]
            means = [mean for mean, _ in statistics]
            errors = [0.0 if math.isnan(std) else std for _, std in statistics]
            axis.errorbar(positions, means, yerr=errors, color=f"C{colour}", marker="o", capsize=3, label=f"{column}")
            talk = [math.nan if mine[r].talk is None else mine[r].talk[talk_index] for r in radii]  # type: ignore[index]
            axis.plot(positions, talk, color=f"C{colour}", linestyle="--", marker="x", label=f"{column} (talk)")
    for axis, title in zip(axes, ("test accuracy %", "generalization gap"), strict=True):
        axis.set_xticks(list(positions), [radius_label(radius) for radius in radii])
        axis.set_xlabel("c")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    axes[0].legend(title=experiment.column_title, fontsize="small")
    figure.suptitle(f"{experiment.title}: ours (solid) and the talk's (dashed)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def plot_boxes(experiment: Experiment, rows: Sequence[Row], path: str | Path) -> None:
    """Three panels (test metric, gap, sparsity %): per c one box over the runs of each column, side by side."""
    figure = Figure(figsize=(15, 4.5))
    axes = figure.subplots(1, 3)
    radii = list(dict.fromkeys(row.radius for row in rows))
    columns = list(dict.fromkeys(row.column for row in rows))
    width = 0.8 / len(columns)
    panels = (("metric", experiment.metric_header), ("gap", "generalization gap"), ("sparsity", "sparsity rate %"))
    for axis, (attribute, title) in zip(axes, panels, strict=True):
        for colour, column in enumerate(columns):
            mine = {row.radius: row for row in rows if row.column == column}
            data = [list(getattr(mine[radius], attribute)) or [math.nan] for radius in radii]
            offsets = [i + (colour - (len(columns) - 1) / 2) * width for i in range(len(radii))]
            boxes = axis.boxplot(data, positions=offsets, widths=width * 0.9, patch_artist=True, manage_ticks=False)
            for box in boxes["boxes"]:
                box.set_facecolor(f"C{colour}")
                box.set_alpha(0.6)
            boxes["boxes"][0].set_label(column)
        axis.set_xticks(range(len(radii)), [radius_label(radius) for radius in radii])
        axis.set_xlabel("c")
        axis.set_title(title)
        axis.grid(axis="y", alpha=0.3)
    if len(columns) > 1:
        axes[0].legend(title=experiment.column_title, fontsize="small")
    figure.suptitle(f"{experiment.title}: our runs (the talk shows the same kind of figure, without numbers)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
