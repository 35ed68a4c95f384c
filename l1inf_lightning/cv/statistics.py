"""Aggregating a sweep: per c, the values of its finished runs, and the choice of the best c."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from l1inf_lightning.cv.settings import RunSpec, SweepError, radius_label
from l1inf_lightning.cv.store import is_finished

__all__ = ["RadiusSummary", "SweepSummary", "mean_std", "summarize"]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); NaN where undefined.

    >>> mean_std([1.0, 2.0, 3.0]), mean_std([1.0])
    ((2.0, 1.0), (1.0, nan))
    """
    if not values:
        return math.nan, math.nan
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


@dataclass
class RadiusSummary:
    """The runs of one c: values of the finished runs and counts.

    Args:
        radius: The radius c.
        metric: The validation metric of each ok run.
        sparsity: The sparsity rate of each ok run.
        gap: The generalization gap in loss of each ok run that has one.
        num_ok: Runs that finished.
        num_failed: Runs that failed.
        num_missing: Runs not recorded yet.
        errors: The error of each failed run.
    """

    radius: float
    metric: list[float] = field(default_factory=list)
    sparsity: list[float] = field(default_factory=list)
    gap: list[float] = field(default_factory=list)
    num_ok: int = 0
    num_failed: int = 0
    num_missing: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class SweepSummary:
    """The table per c and the best c (``reports.py`` writes them).

    Args:
        metric: The validation metric that chooses c.
        mode: ``"max"`` or ``"min"``.
        rows: One :class:`RadiusSummary` per c, by increasing c.
        best: The chosen c, or None when no c has all its recorded runs ok.
    """

    metric: str
    mode: str
    rows: list[RadiusSummary]
    best: float | None

    @property
    def complete(self) -> bool:
        """Whether every run of the sweep is recorded."""
        return all(row.num_missing == 0 for row in self.rows)

    def table(self) -> list[dict[str, Any]]:
        """The rows of ``summary.csv``: c, counts, and mean and standard deviation of metric, sparsity and gap."""
        rows = []
        for row in self.rows:
            entry: dict[str, Any] = {"c": radius_label(row.radius), "ok": row.num_ok, "failed": row.num_failed}
            entry["missing"] = row.num_missing
            for name, values in ((self.metric, row.metric), ("sparsity", row.sparsity), ("gap/loss", row.gap)):
                entry[f"{name} mean"], entry[f"{name} std"] = mean_std(values)
            entry["best"] = self.best is not None and row.radius == self.best
            rows.append(entry)
        return rows


def _float(value: Any) -> float:
    return float(value)  # results store NaN/inf as text; float() reads both


def summarize(
    specs: Sequence[RunSpec], results: Mapping[str, Mapping[str, Any]], metric: str, mode: str
) -> SweepSummary:
    """Aggregate the stored results of ``specs`` per c and choose the best c.

    The best c has the best mean ``metric`` over its runs; ties (equal up to 1e-9 relative) go to the smaller c,
    which gives the sparser model. A c with a failed run is not chosen (it diverges on some folds); runs not recorded
    yet (or interrupted) are left out, so a partial sweep can be summarized too.

    Args:
        specs: The sweep's runs (:func:`list_runs`).
        results: Stored results by run id (:func:`load_results`); others are ignored.
        metric: The validation metric, a key of each result's ``metrics``.
        mode: ``"max"`` or ``"min"``.

    Raises:
        SweepError: If ``mode`` is neither, or a finished run did not log ``metric``.
    """
    if mode not in ("min", "max"):
        raise SweepError(f"Expected `--mode` to be 'min' or 'max', got {mode!r}")
    rows = {radius: RadiusSummary(radius) for radius in sorted({spec.radius for spec in specs})}
    for spec in specs:
        row = rows[spec.radius]
        result = results.get(spec.run_id)
        if not is_finished(result):  # not run yet, or interrupted: it will be run again
            row.num_missing += 1
        elif result["status"] != "ok":
            row.num_failed += 1
            row.errors.append(str(result.get("error")))
        else:
            if metric not in result["metrics"]:
                logged = ", ".join(sorted(result["metrics"])) or "nothing"
                raise SweepError(
                    f"Expected `--metric` to be a metric the runs log, got {metric!r}; {spec.run_id} logged: {logged}"
                )
            row.num_ok += 1
            row.metric.append(_float(result["metrics"][metric]))
            row.sparsity.append(_float(result["sparsity"]))
            if result.get("gap") is not None:
                row.gap.append(_float(result["gap"]))
    best: float | None = None
    best_mean = math.nan
    for radius, row in rows.items():  # increasing c: a later c must be strictly better to win
        if row.num_failed or not row.num_ok:
            continue
        mean = mean_std(row.metric)[0]
        tie = not math.isnan(best_mean) and math.isclose(mean, best_mean, rel_tol=1e-9, abs_tol=1e-12)
        better = mean > best_mean if mode == "max" else mean < best_mean
        if best is None or (better and not tie):
            best, best_mean = radius, mean
    return SweepSummary(metric, mode, list(rows.values()), best)
