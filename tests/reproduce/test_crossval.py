"""`reproduce_cv(quick=True)` end to end: both tasks' sweeps, the table and figure of the two, and rerunning."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pytest

from l1inf_lightning.cv.backends import LocalBackend
from l1inf_lightning.cv.settings import SweepError
from l1inf_lightning.reproduce.crossval import (
    CLASSIFICATION_RADII,
    FIGURE,
    REGRESSION_RADII,
    TALK_WORDS,
    TASKS,
    cv_settings,
    reproduce_cv,
)

CLASSIFICATION, REGRESSION = TASKS


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as file:
        return list(csv.DictReader(file))


def no_training(*args, **kwargs):
    raise AssertionError("a finished reproduction started a fit")


@pytest.fixture(scope="module")
def quick_cv(quick_reproductions):
    return quick_reproductions, (quick_reproductions / "cv" / "table.md").read_text(encoding="utf-8")


def test_the_full_protocol_is_20_folds_over_the_grids_at_the_configs_epochs():
    classification = cv_settings(CLASSIFICATION, quick=False, seeds=None)
    assert classification.num_folds == 20 and classification.seeds == (0,)
    assert classification.radii == tuple(sorted(CLASSIFICATION_RADII))
    assert CLASSIFICATION_RADII == (math.inf, 0.5, 0.16, 0.13, 0.1, 0.07, 0.04, 0.01)  # the talk's grid
    assert "--trainer.max_epochs=100" in classification.overrides
    assert "--trainer.enable_checkpointing=false" in classification.overrides
    regression = cv_settings(REGRESSION, quick=False, seeds=3)
    assert regression.radii == tuple(sorted(REGRESSION_RADII)) and regression.seeds == (0, 1, 2)
    assert "--model.init_args.scheduler.init_args.T_max=1500" in regression.overrides
    assert not any("check_val_every_n_epoch" in token for token in regression.overrides)  # 1500 % 100 == 0


def test_quick_regression_decays_its_lr_over_its_epochs_and_validates_on_the_last():
    overrides = cv_settings(REGRESSION, quick=True, seeds=None).overrides
    assert "--trainer.max_epochs=20" in overrides
    assert "--model.init_args.scheduler.init_args.T_max=20" in overrides
    assert "--trainer.check_val_every_n_epoch=20" in overrides  # the config validates every 100 epochs


@pytest.mark.parametrize(
    ("seeds", "workers", "argument"),
    [(0, 1, "--seeds"), (-1, 1, "--seeds"), (1.5, 1, "--seeds"), (None, 0, "--workers")],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, seeds, workers, argument):
    with pytest.raises(SweepError, match=f"Expected `{argument}` to be an integer >= 1"):
        reproduce_cv(quick=True, seeds=seeds, output=tmp_path, workers=workers, progress=False)
    assert not (tmp_path / "cv").exists()


def test_quick_cv_writes_each_tasks_finite_scores_and_chosen_c(quick_cv):
    output, text = quick_cv
    directory = output / "cv"
    assert (directory / "table.md").read_text(encoding="utf-8") == text
    table = read_csv(directory / "table.csv")
    assert [(row["task"], row["c"], row["metric"]) for row in table] == [
        ("classification", "inf", "val/acc"),
        ("classification", "0.1", "val/acc"),
        ("regression", "inf", "val/loss"),
        ("regression", "1.0", "val/loss"),
    ]
    for row in table:
        assert (row["runs_ok"], row["runs_failed"], row["runs_missing"]) == ("3", "0", "0")
        assert math.isfinite(float(row["metric_mean"])) and math.isfinite(float(row["metric_std"]))
        assert math.isfinite(float(row["gap_mean"])) and 0 <= float(row["sparsity_mean"]) <= 1
    for task in TASKS:
        rows = [row for row in table if row["task"] == task.name]
        chosen = [row for row in rows if row["chosen"] == "True"]
        assert len(chosen) == 1
        means = [float(row["metric_mean"]) for row in rows]
        assert float(chosen[0]["metric_mean"]) == (max(means) if task.mode == "max" else min(means))
        assert f"- {task.name}: **c = {chosen[0]['c']}**" in text
        assert (directory / task.name / "summary.csv").exists()  # each task is a cv sweep of its own
        assert len(list((directory / task.name / "results").glob("*.json"))) == 6
    assert [row["runs_single_class"] == "" for row in table] == [False, False, True, True]  # regression: no classes


def test_the_table_quotes_the_talk_and_states_both_protocols(quick_cv):
    _, text = quick_cv
    for words in TALK_WORDS:
        assert f"“{words}”" in text
    assert "prints no numbers" in text
    for words in ("QUICK", "3 folds", "optimizer Adam (lr 0.001)", "2 epochs", "batch size 50", "seed 0"):
        assert words in text
    regression = ("optimizer SGD (lr 0.5, momentum 0.9)", "CosineAnnealingLR (T_max 20)", "20 epochs", "batch size 500")
    for words in regression:
        assert words in text
    assert "projection mode radius_aware" in text and "highest mean val/acc" in text and "lowest mean val/loss" in text


def test_the_figure_is_a_png(quick_cv):
    output, _ = quick_cv
    data = (output / "cv" / FIGURE).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_rerunning_trains_nothing_and_rewrites_the_same_tables(quick_cv, monkeypatch):
    output, text = quick_cv
    directory = output / "cv"
    before = {name: (directory / name).read_bytes() for name in ("table.csv", "table.md")}
    stored = {path: path.stat().st_mtime_ns for path in directory.glob("*/results/*.json")}
    (directory / "table.csv").unlink()
    monkeypatch.setattr(LocalBackend, "submit", no_training)
    assert reproduce_cv(quick=True, seeds=None, output=output, workers=1, progress=False) == text
    assert {name: (directory / name).read_bytes() for name in before} == before
    assert {path: path.stat().st_mtime_ns for path in stored} == stored


def test_another_protocol_in_the_same_directory_is_refused_before_training(quick_cv, monkeypatch):
    output, _ = quick_cv
    monkeypatch.setattr(LocalBackend, "submit", no_training)
    with pytest.raises(SweepError, match="differs"):
        reproduce_cv(quick=False, seeds=None, output=output, workers=1, progress=False)
    with pytest.raises(SweepError, match="seeds"):
        reproduce_cv(quick=True, seeds=2, output=output, workers=1, progress=False)
