"""The `cv` command end to end: choosing c by k-fold cross-validation, on the real synthetic config shrunk."""

import contextlib
import csv
import io
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from l1inf_lightning import cv
from l1inf_lightning.commands import main as cli_main
from l1inf_lightning.cv import RunSpec, SweepSettings, list_runs, refit_spec, run_one, summarize
from l1inf_lightning.cv.reports import markdown

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "configs" / "synthetic_classification.yaml"
# The paper's 500-100-50-20-2 MLP on 60 samples, one epoch of two batches: about a second per fit.
SHRINK = (
    "--trainer.max_epochs=1",
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--data.init_args.num_train=60",
    "--data.init_args.num_test=20",
    "--data.init_args.num_val=0",
    "--trainer.enable_checkpointing=false",
)


def cv_args(output: Path, radii=("0.5", "inf"), folds=3, *extra: str, overrides=()) -> list[str]:
    return [
        "--config",
        str(CONFIG),
        "--radii",
        *radii,
        "--folds",
        str(folds),
        "--output",
        str(output),
        "--no-progress",
        *extra,
        "--",
        *SHRINK,
        *overrides,
    ]


def run_cv(args: list[str]) -> tuple[object, str]:
    """`l1inf-lightning cv ARGS` in this process (`cv.main`, which returns the summary) and what it printed."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = cv.main(args)
    return summary, out.getvalue()


def result_files(output: Path) -> dict[str, bytes]:
    return {path.stem: path.read_bytes() for path in sorted((output / "results").glob("*.json"))}


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


# ---------------------------------------------------------------------------------------------------------------------
# The pure parts: listing runs and aggregating
# ---------------------------------------------------------------------------------------------------------------------


def test_list_runs_covers_the_grid_once_with_each_run_its_own_fit_arguments(tmp_path):
    settings = SweepSettings(str(CONFIG), (1.0, 0.1, math.inf), 3, (0, 7), ("--trainer.max_epochs=2",))
    specs = list_runs(settings, tmp_path)
    assert specs == list_runs(settings, tmp_path)
    assert [spec.index for spec in specs] == list(range(18)) and settings.num_runs == 18
    grid = {(spec.radius, spec.fold, spec.seed) for spec in specs}
    assert grid == {(c, fold, seed) for c in (0.1, 1.0, math.inf) for fold in range(3) for seed in (0, 7)}
    # Folds vary slower than radii: every c gets fold 0 first.
    assert [(s.radius, s.fold, s.seed) for s in specs[:3]] == [(0.1, 0, 0), (1.0, 0, 0), (math.inf, 0, 0)]
    assert len({spec.run_id for spec in specs}) == len({spec.log_dir for spec in specs}) == 18

    spec = specs[-1]
    assert spec.run_id == "cinf_fold2_seed7"
    assert spec.log_dir == tmp_path / "logs" / "cinf" / "fold2_seed7"
    args = spec.fit_args()
    assert args[:3] == ["fit", "--config", str(CONFIG)]
    for expected in (
        "--projection.radius=inf",
        "--data.init_args.num_folds=3",
        "--data.init_args.fold_index=2",
        "--data.init_args.fold_seed=7",
        "--seed_everything=7",
        "--test_after_fit=false",
        f"--trainer.logger.init_args.save_dir={tmp_path / 'logs'}",
        "--trainer.logger.init_args.name=cinf",
        "--trainer.logger.init_args.version=fold2_seed7",
    ):
        assert expected in args
    # The user's overrides come before the sweep's, so they cannot undo the grid.
    assert args.index("--trainer.max_epochs=2") < args.index("--projection.radius=inf")

    refit = refit_spec(settings, tmp_path, 1.0)
    assert refit.fold is None and refit.run_id == "c1.0_refit_seed0"
    assert "--data.init_args.num_folds=null" in refit.fit_args()
    assert cv.store.result_path(tmp_path, refit) == tmp_path / "refit.json"


def test_a_labelled_run_on_the_whole_training_set_is_a_run_of_its_own_not_a_refit(tmp_path):
    """Grids that are not cross-validations (``reproduce``) store runs with fold None beside each other."""
    spec = RunSpec(3, 0.1, None, None, 2, str(CONFIG), (), str(tmp_path / "logs"), label="depth100-20")
    assert not spec.is_refit and spec.run_id == "depth100-20_c0.1_all_seed2"
    assert spec.log_dir == tmp_path / "logs" / "depth100-20_c0.1" / "all_seed2"
    assert cv.store.result_path(tmp_path, spec) == tmp_path / "results" / "depth100-20_c0.1_all_seed2.json"
    other = RunSpec(4, 0.1, None, None, 2, str(CONFIG), (), str(tmp_path / "logs"), label="depth100-50-20")
    assert other.run_id != spec.run_id and other.log_dir != spec.log_dir
    assert "--data.init_args.num_folds=null" in spec.fit_args()


def fake_result(spec: RunSpec, acc: float, status: str = "ok") -> dict:
    return {
        "run_id": spec.run_id,
        "status": status,
        "error": None if status == "ok" else "boom",
        "metrics": {"val/acc": acc, "val/loss": 1 - acc} if status == "ok" else {},
        "sparsity": 1 / spec.radius if math.isfinite(spec.radius) else 0.0,
        "gap": 0.1,
    }


def test_summarize_picks_the_best_mean_ties_go_to_the_smaller_c_and_failed_c_are_not_chosen(tmp_path):
    specs = list_runs(SweepSettings(str(CONFIG), (0.1, 1.0, 10.0, math.inf), 2), tmp_path)
    accuracy = {0.1: (0.6, 0.8), 1.0: (0.8, 0.6), 10.0: (0.5, 0.6), math.inf: (0.9, 0.9)}
    results = {s.run_id: fake_result(s, accuracy[s.radius][s.fold]) for s in specs}
    failed = next(s for s in specs if s.radius == math.inf)
    results[failed.run_id] = fake_result(failed, 0.0, status="failed")

    summary = summarize(specs, results, "val/acc", "max")
    assert summary.best == 0.1  # 0.1 and 1.0 tie at 0.7; inf is better but failed once
    rows = {row.radius: row for row in summary.rows}
    assert (rows[math.inf].num_ok, rows[math.inf].num_failed, rows[math.inf].errors) == (1, 1, ["boom"])
    assert summary.complete
    assert summarize(specs, results, "val/loss", "min").best == 0.1

    # A partial sweep still summarizes, and says what is missing: without its 0.8, c = 0.1 falls behind c = 1.
    del results[next(s for s in specs if (s.radius, s.fold) == (0.1, 1)).run_id]
    partial = summarize(specs, results, "val/acc", "max")
    assert not partial.complete and partial.rows[0].num_missing == 1 and partial.best == 1.0
    assert "missing" in markdown(partial)

    with pytest.raises(cv.SweepError, match=r"Expected `--metric` to be a metric the runs log, got 'val/f1'"):
        summarize(specs, results, "val/f1", "max")


# ---------------------------------------------------------------------------------------------------------------------
# A tiny sweep, end to end
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_sweep(tmp_path_factory):
    output = tmp_path_factory.mktemp("cv") / "tiny"
    summary, printed = run_cv(cv_args(output, ("0.5", "inf"), 3, "--refit"))
    return output, summary, printed


def test_tiny_sweep_writes_csv_markdown_png_and_names_the_best_mean(tiny_sweep):
    output, summary, printed = tiny_sweep
    rows = read_csv(output / "summary.csv")
    assert [row["c"] for row in rows] == ["0.5", "inf"]
    assert all((row["ok"], row["failed"], row["missing"]) == ("3", "0", "0") for row in rows)
    means = {float(row["c"]): float(row["val/acc mean"]) for row in rows}
    best = max(means, key=lambda c: (means[c], -c))
    assert summary.best == best
    assert [row["best"] for row in rows] == [str(float(row["c"]) == best) for row in rows]
    # Each run's own values, averaged, are the table's.
    results = cv.load_results(output)
    assert len(results) == 6 and all(r["status"] == "ok" for r in results.values())
    for c in means:
        values = [r["metrics"]["val/acc"] for r in results.values() if float(r["radius"]) == c]
        assert means[c] == pytest.approx(sum(values) / 3)

    markdown = (output / "summary.md").read_text()
    assert "| c | val/acc (mean ± std) | sparsity | gap/loss | ok | failed |" in markdown
    assert f"Best c = {cv.radius_label(best)}" in markdown
    assert markdown in printed

    png = (output / "boxplot.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    import matplotlib.image

    assert matplotlib.image.imread(output / "boxplot.png").shape[:2] == (420, 1300)


def test_refit_trains_the_best_c_on_the_whole_training_set_and_tests_it(tiny_sweep):
    output, summary, printed = tiny_sweep
    refit = json.loads((output / "refit.json").read_text())
    assert refit["status"] == "ok" and refit["radius"] == cv.radius_label(summary.best)
    assert refit["fold"] is None and refit["num_folds"] is None
    assert {"test/acc", "test/loss"} <= set(refit["metrics"])
    config = (Path(refit["log_dir"]) / "config.yaml").read_text()
    assert "num_folds: null" in config
    assert f"Refit c = {refit['radius']}: test/acc = {refit['metrics']['test/acc']:.4f}" in printed


def test_each_run_is_a_lightningcli_fit_with_its_own_tensorboard_version(tiny_sweep):
    output, _, _ = tiny_sweep
    for result in cv.load_results(output).values():
        log_dir = Path(result["log_dir"])
        assert log_dir.parent.parent == output.resolve() / "logs"
        assert len(list(log_dir.glob("events.out.tfevents.*"))) == 1
        config = (log_dir / "config.yaml").read_text()
        assert f"fold_index: {result['fold']}" in config and "num_folds: 3" in config
        assert result["metrics"]["sparsity/overall"] == pytest.approx(result["sparsity"])
        assert result["gap_source"] == "gap/loss" and result["gap"] == result["metrics"]["gap/loss"]
        assert result["wall_time_s"] > 0
    constrained = [r for r in cv.load_results(output).values() if r["radius"] == "0.5"]
    assert all(r["metrics"]["norm/net.layers.0"] <= 0.5 * (1 + 1e-6) for r in constrained)


def test_rerun_with_the_same_settings_trains_nothing_and_another_metric_only_reaggregates(tiny_sweep):
    output, summary, _ = tiny_sweep
    before = result_files(output)
    again, printed = run_cv(cv_args(output))
    assert "6 already recorded, 0 to run" in printed
    assert result_files(output) == before and again.best == summary.best

    by_loss, _ = run_cv(cv_args(output, ("0.5", "inf"), 3, "--metric", "val/loss"))
    assert by_loss.metric == "val/loss" and by_loss.mode == "min"
    losses = {row.radius: sum(row.metric) / len(row.metric) for row in by_loss.rows}
    assert by_loss.best == min(losses, key=lambda c: (losses[c], c))
    assert result_files(output) == before


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"radii": ("0.5", "1")}, "radii"),
        ({"folds": 2}, "num_folds"),
        ({"overrides": ("--trainer.max_epochs=3",)}, "overrides"),
    ],
)
def test_resuming_into_the_same_directory_with_other_settings_is_refused(tiny_sweep, capsys, change, named):
    output, _, _ = tiny_sweep
    before = result_files(output)
    args = cv_args(
        output, change.get("radii", ("0.5", "inf")), change.get("folds", 3), overrides=change.get("overrides", ())
    )
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["cv", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"Expected `--output` {str(output.resolve())!r} to be a new directory or to hold this same sweep" in err
    assert f"{named}:" in err
    assert result_files(output) == before


# ---------------------------------------------------------------------------------------------------------------------
# Nothing lost: kill and resume, failed runs
# ---------------------------------------------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (the sweep's pool workers), from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers in /proc")
def test_a_killed_sweep_resumes_without_redoing_finished_runs(tmp_path):
    output = tmp_path / "killed"
    args = cv_args(output, ("0.5", "1"), 2)
    process = subprocess.Popen(
        [sys.executable, "-m", "l1inf_lightning", "cv", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 120
    try:
        while not result_files(output) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        workers = _children(process.pid)
        os.kill(process.pid, signal.SIGKILL)
    finally:
        process.kill()
        process.wait()
    first = result_files(output)
    assert len(first) == 1, "the sweep must be killed after its first run and before its last"
    assert workers, "the sweep runs its fits in child processes"
    # Its worker notices the parent is gone and stops, rather than training on into the directory.
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    # A worker may finish (and atomically record) the run it was on before it notices, within half a second,
    # that the sweep is gone: what counts is that every recorded run is kept and the rest are run.
    recorded = result_files(output)
    assert first.items() <= recorded.items()

    summary, printed = run_cv(args)
    assert f"{len(recorded)} already recorded, {4 - len(recorded)} to run" in printed
    files = result_files(output)
    assert len(files) == 4 and summary.complete
    for run_id, content in recorded.items():
        assert files[run_id] == content  # byte for byte: not redone
    results = [json.loads(content) for content in files.values()]
    assert all(result["status"] == "ok" for result in results)
    # A run that was cut off half-way started again from scratch: one TensorBoard event file per run.
    assert all(len(list(Path(r["log_dir"]).glob("events.out.tfevents.*"))) == 1 for r in results)
    assert not list((output / "results").glob(".*.tmp"))


def test_a_diverging_run_is_recorded_as_failed_and_the_sweep_goes_on(tmp_path):
    output = tmp_path / "diverge"
    # With lr = 1e10 the unconstrained net overflows to NaN; the projection keeps c = 0.5 finite.
    lr = ("--model.init_args.optimizer.init_args.lr=1e10",)
    summary, printed = run_cv(cv_args(output, ("0.5", "inf"), 2, overrides=lr))
    results = cv.load_results(output)
    assert len(results) == 4
    for result in results.values():
        if result["radius"] == "inf":
            assert result["status"] == "failed"
            assert result["error"].startswith("FloatingPointError: training diverged: ")
            assert "val/loss=nan" in result["error"] and result["metrics"]["val/loss"] == "nan"
            assert "Traceback" in result["traceback"]
        else:
            assert result["status"] == "ok" and result["error"] is None
    rows = {row["c"]: row for row in read_csv(output / "summary.csv")}
    assert (rows["inf"]["ok"], rows["inf"]["failed"]) == ("0", "2")
    assert (rows["0.5"]["ok"], rows["0.5"]["failed"]) == ("2", "0")
    assert summary.best == 0.5
    assert "| inf | – | – | – | 0 | 2 |" in printed


def test_run_one_records_an_exception_from_the_fit_instead_of_raising(tmp_path):
    settings = SweepSettings(str(CONFIG), (0.5,), 2, overrides=(*SHRINK, "--data.init_args.batch_size=0"))
    result = run_one(list_runs(settings, tmp_path)[0])
    assert result["status"] == "failed"
    assert result["error"].startswith("ValueError: ")
    assert "Expected `batch_size` to be an integer >= 1, got 0" in result["error"]
    assert json.loads(json.dumps(result, allow_nan=False)) == result


CRASHER = '''
import os, signal
from lightning.pytorch.callbacks import Callback

class DieOnFold(Callback):
    """Kill the process, as the OOM killer would, when training fold `fold`."""

    def __init__(self, fold: int) -> None:
        self.fold = fold

    def on_train_start(self, trainer, pl_module):
        if trainer.datamodule.fold_index == self.fold:
            os.kill(os.getpid(), signal.SIGKILL)
'''


@pytest.mark.slow
def test_a_worker_that_dies_fails_only_its_own_run(tmp_path, monkeypatch):
    (tmp_path / "crasher.py").write_text(CRASHER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    output = tmp_path / "crash"
    die = ('--trainer.callbacks+={"class_path": "crasher.DieOnFold", "init_args": {"fold": 1}}',)
    summary, _ = run_cv(cv_args(output, ("0.5",), 3, overrides=die))
    results = cv.load_results(output)
    assert {r["fold"]: r["status"] for r in results.values()} == {0: "ok", 1: "failed", 2: "ok"}
    assert "worker process died" in next(r["error"] for r in results.values() if r["fold"] == 1)
    assert summary.rows[0].num_failed == 1


# ---------------------------------------------------------------------------------------------------------------------
# Building blocks for a cluster: --list-runs and --only-run
# ---------------------------------------------------------------------------------------------------------------------


def test_list_runs_and_only_run_execute_one_run_in_process(tmp_path, capsys):
    output = tmp_path / "array"

    def cv(*extra: str) -> str:
        cli_main(["cv", *cv_args(output, ("0.5", "inf"), 2, *extra)])
        return capsys.readouterr().out

    specs = list_runs(SweepSettings(str(CONFIG), (0.5, math.inf), 2), output)
    assert cv("--list-runs").splitlines() == [f"{s.index}\t{s.run_id}\tpending" for s in specs]
    assert not output.exists()  # listing writes nothing

    assert "Run 3 (cinf_fold1_seed0): ok" in cv("--only-run", "3")
    stored = result_files(output)
    assert list(stored) == ["cinf_fold1_seed0"]
    assert json.loads(stored["cinf_fold1_seed0"])["index"] == 3
    assert cv("--list-runs").splitlines()[2:] == ["2\tc0.5_fold1_seed0\tpending", "3\tcinf_fold1_seed0\tok"]

    assert "already recorded" in cv("--only-run", "3")
    assert result_files(output) == stored
    with pytest.raises(SystemExit):
        cv("--only-run", "4")
    assert "Expected `--only-run` to be in [0, 4) for this sweep, got 4" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------------

NOT_FOLDABLE = """
model:
  class_path: l1inf_lightning.models.SupervisedModule
  init_args:
    net:
      class_path: l1inf_lightning.models.MLP
      init_args: {in_features: 32, hidden: [4], out_features: 2}
data:
  class_path: lightning.pytorch.demos.boring_classes.BoringDataModule
"""


@pytest.mark.parametrize(
    ("radii", "folds", "extra", "overrides", "message"),
    [
        ((), 3, (), (), r"Expected `--radii` to list at least one radius (a positive number or inf), got ()"),
        (("0.5", "-1"), 3, (), (), r"Expected `--radii` to be a positive number or inf, got '-1'"),
        (("0",), 3, (), (), r"Expected `--radii` to be a positive number or inf, got '0'"),
        (("nan",), 3, (), (), r"Expected `--radii` to be a positive number or inf, got 'nan'"),
        (("big",), 3, (), (), r"Expected `--radii` to be a positive number or inf, got 'big'"),
        (("1", "1.0"), 3, (), (), r"Expected `--radii` to be distinct, got 1.0 more than once"),
        (("1",), 1, (), (), r"Expected `--folds` to be an integer >= 2, got 1"),
        (("1",), 61, (), (), r"Expected `--folds` to be at most the size of the training set (60), got 61"),
        (
            ("1",),
            40,
            (),
            (),
            r"Expected every class to have at least `--folds`=40 members for stratified folds, got class",
        ),
        (("1",), 3, ("--workers", "0"), (), r"Expected `--workers` to be an integer >= 1, got 0"),
        (("1",), 3, ("--seeds", "0", "0"), (), r"Expected `--seeds` to be distinct, got [0, 0]"),
        (("1",), 3, ("--metric", "val/thing"), (), r"Cannot tell whether `--metric` 'val/thing' is better low or high"),
        (("1",), 3, (), ("--projection.radius=2",), r"The sweep sets `--projection.radius` of every run itself"),
        (
            ("1",),
            3,
            (),
            ("--data.init_args.fold_index", "1"),
            r"The sweep sets `--data.fold_index` of every run itself",
        ),
    ],
)
def test_bad_input_is_refused_before_anything_runs(tmp_path, capsys, radii, folds, extra, overrides, message):
    output = tmp_path / "bad"
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["cv", *cv_args(output, radii, folds, *extra, overrides=overrides)])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not output.exists()


def test_a_config_without_folds_is_refused(tmp_path, capsys):
    config = tmp_path / "boring.yaml"
    config.write_text(NOT_FOLDABLE)
    with pytest.raises(SystemExit):
        cli_main(["cv", "--config", str(config), "--radii", "1", "--folds", "3", "--output", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert "Expected the data module of `--config`" in err and "got BoringDataModule: it has no folds" in err
    assert not (tmp_path / "out").exists()


def test_overrides_without_the_separator_are_pointed_at_it(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cli_main(["cv", "--config", str(CONFIG), "--radii", "1", "--folds", "3", "--trainer.max_epochs", "1"])
    assert "LightningCLI overrides go after `--`" in capsys.readouterr().err


def test_cv_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["cv", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--radii", "--folds", "--seeds", "--workers", "--output", "--refit", "--only-run", "--list-runs"):
        assert option in out
