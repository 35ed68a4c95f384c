"""The backends of `cv`: the same results as the sweep recorded before the split, on loky and on a real local Ray
instance; a sweep resumes on the other backend; SIGINT and SIGTERM stop it at once, and it resumes from there."""

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

ROOT = Path(__file__).resolve().parents[2]
RECORDED = Path(__file__).parent / "recorded"
RECORDED_ARGS = json.loads((RECORDED / "args.json").read_text())
# The deterministic fields of a run; the bound/* metrics are left out: they are the SparsityMonitor's to change.
RUN_FIELDS = ("index", "radius", "fold", "num_folds", "seed", "status", "error", "sparsity", "gap", "gap_source")
RUN_METRICS = ("val/acc", "val/loss", "train/acc", "train/loss", "gap/loss", "sparsity/overall")
NUM_RUNS = 6


def recorded_args(output: Path, *extra: str) -> list[str]:
    """The recorded sweep's arguments (see recorded/README.md), into ``output``."""
    a = RECORDED_ARGS
    own = ["--config", str(ROOT / a["config"]), "--radii", *a["radii"], "--folds", str(a["folds"])]
    return [*own, "--output", str(output), "--no-progress", *extra, "--", *a["overrides"]]


def run_cv(args: list[str]) -> tuple[cv.SweepSummary, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        summary = cv.main(args)
    return summary, out.getvalue()


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def assert_same_as_recorded(output: Path) -> None:
    """summary.csv, summary.md and every run's values are those the code before the split wrote."""
    recorded, now = read_csv(RECORDED / "summary.csv"), read_csv(output / "summary.csv")
    assert [list(row) for row in now] == [list(row) for row in recorded]
    for new_row, old_row in zip(now, recorded, strict=True):
        for key, old in old_row.items():
            if key in ("c", "ok", "failed", "missing", "best"):
                assert new_row[key] == old, key
            else:
                assert float(new_row[key]) == pytest.approx(float(old), rel=1e-6, abs=1e-9, nan_ok=True), key
    assert (output / "summary.md").read_text() == (RECORDED / "summary.md").read_text()
    runs = json.loads((RECORDED / "runs.json").read_text())
    results = cv.load_results(output)
    assert sorted(results) == sorted(runs)
    for run_id, old in runs.items():
        new = results[run_id]
        assert {k: new[k] for k in RUN_FIELDS if k not in ("sparsity", "gap")} == {
            k: old[k] for k in RUN_FIELDS if k not in ("sparsity", "gap")
        }
        assert (new["sparsity"], new["gap"]) == pytest.approx((old["sparsity"], old["gap"]), rel=1e-6, abs=1e-9)
        for key in RUN_METRICS:
            assert new["metrics"][key] == pytest.approx(old["metrics"][key], rel=1e-6, abs=1e-9), (run_id, key)


def test_the_local_backend_gives_the_results_recorded_before_the_split(tmp_path):
    output = tmp_path / "local"
    summary, printed = run_cv(recorded_args(output, "--workers", "2"))
    assert "on 2 worker(s) on this machine" in printed
    assert_same_as_recorded(output)
    assert summary.best == math.inf


def test_a_local_ray_instance_gives_the_same_summary_csv_as_the_local_backend(tmp_path):
    output = tmp_path / "ray"
    _, printed = run_cv(recorded_args(output, "--backend", "ray", "--workers", "2"))
    assert "2 Ray task(s) at a time on a local Ray instance" in printed
    assert_same_as_recorded(output)
    # Each fit ran in a Ray worker process, not in this one nor in a child of it.
    pids = {result["pid"] for result in cv.load_results(output).values()}
    assert os.getpid() not in pids and len(pids) >= 1


def test_a_ray_sweep_needs_ray_installed_or_says_how_to_get_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(SystemExit) as exit_info:
        cv.main(recorded_args(tmp_path / "out", "--backend", "ray"))
    assert exit_info.value.code == 2
    assert "pip install 'l1inf-lightning[ray]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_an_address_without_ray_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit):
        cv.main(recorded_args(tmp_path / "out", "--address", "auto"))
    assert "Expected `--address` only with `--backend ray`, got 'auto'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------------
# Signals: stop at once, record the runs in flight, resume (on the other backend)
# ---------------------------------------------------------------------------------------------------------------------


def files(folder: Path, suffix: str) -> set[str]:
    """Names of the files ending in ``suffix`` in ``folder``, without it; not the hidden temporary ones."""
    return {path.stem for path in folder.glob(f"[!.]*{suffix}")}


def stop_while_a_run_is_in_flight(args: list[str], signum: int, cwd: Path) -> dict:
    """Start ``l1inf-lightning cv ARGS``, send ``signum`` once a run is stored and another running; what happened."""
    output = Path(args[args.index("--output") + 1])
    process = subprocess.Popen(
        [sys.executable, "-m", "l1inf_lightning", "cv", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=cwd,
    )
    try:
        deadline = time.monotonic() + 240
        running_since: dict[str, float] = {}
        first_recorded: float | None = None
        while process.poll() is None and time.monotonic() < deadline:
            recorded = files(output / "results", ".json")
            running = files(output / "console", ".log") - recorded
            now = time.monotonic()
            if recorded and first_recorded is None:
                first_recorded = now
            for run_id in running:
                running_since.setdefault(run_id, now)
            # One run stored, and another seen starting after it: that one has its whole run ahead of it (not one
            # that started with the first and ends with it; a tiny run here takes well under a second).
            if first_recorded is not None and any(running_since[run_id] > first_recorded for run_id in running):
                break
            time.sleep(0.02)
        assert process.poll() is None, "the sweep ended before it could be interrupted"
        at_signal = {
            name: json.loads((output / "results" / f"{name}.json").read_text())
            for name in files(output / "results", ".json")
        }
        sent = time.monotonic()
        os.kill(process.pid, signum)
        lines, message_s = [], None
        for line in process.stdout:  # ends when the process exits
            lines.append(line)
            if message_s is None and line.startswith("Interrupted by"):
                message_s = time.monotonic() - sent
        process.wait(timeout=30)
        exit_s = time.monotonic() - sent
    finally:
        process.kill()
        process.wait()
    out = "".join(lines)
    report = {"output": output, "out": out, "code": process.returncode, "at_signal": at_signal}
    return report | {"message_s": message_s, "exit_s": exit_s}


def check_stopped(stopped: dict, signum: int, workers: int, exit_within_s: float) -> dict[str, dict]:
    """The three promises of a stop: within 3 s, no run started after the signal, runs in flight interrupted."""
    output = stopped["output"]
    name = signal.Signals(signum).name
    # Stopped, recorded and said so within 3 s; the process then exits once Python has torn torch (and Ray) down.
    assert stopped["message_s"] is not None and stopped["message_s"] < 3.0, stopped["out"]
    assert stopped["exit_s"] < exit_within_s, f"{name}: the sweep took {stopped['exit_s']:.1f} s to exit"
    assert stopped["code"] == 128 + signum, stopped["out"]
    results = cv.load_results(output)
    started = files(output / "console", ".log")  # a worker opens its run's console log as it starts the run
    # Every run that started is recorded: finished, or interrupted by the signal.
    assert started == set(results)
    interrupted = {run_id for run_id, r in results.items() if r["status"] == "interrupted"}
    assert interrupted, ("the signal came while a run was in flight", stopped)
    assert all(results[run_id]["error"] == f"stopped by {name}" for run_id in interrupted)
    # No run started after the signal: at most the runs in flight then (one per worker) ended or were stopped since.
    assert len(started) <= len(stopped["at_signal"]) + workers < NUM_RUNS
    message = stopped["out"]
    assert f"Interrupted by {name}: no run was started after it" in message
    assert f"{len(interrupted)} run(s) in flight were stopped and recorded as interrupted" in message
    assert "run the same command again:\n  l1inf-lightning cv --config" in message
    return results


def check_resumed(output: Path, before: dict[str, dict], printed: str) -> None:
    """Finished runs are kept as they were, interrupted ones and the rest are run, and the results are the same."""
    finished = {run_id: r for run_id, r in before.items() if r["status"] != "interrupted"}
    assert f"{len(finished)} already recorded, {NUM_RUNS - len(finished)} to run" in printed
    after = cv.load_results(output)
    assert all(after[run_id] == result for run_id, result in finished.items())
    assert all(r["status"] == "ok" for r in after.values())
    assert_same_as_recorded(output)


def test_sigint_stops_a_local_sweep_at_once_and_it_resumes_on_ray(tmp_path):
    args = recorded_args(tmp_path / "sigint", "--workers", "2")
    stopped = stop_while_a_run_is_in_flight(args, signal.SIGINT, tmp_path)
    before = check_stopped(stopped, signal.SIGINT, workers=2, exit_within_s=3.0)
    _, printed = run_cv([*args[: args.index("--")], "--backend", "ray", *args[args.index("--") :]])
    check_resumed(stopped["output"], before, printed)


def test_sigterm_stops_a_ray_sweep_at_once_and_it_resumes_locally(tmp_path):
    args = recorded_args(tmp_path / "sigterm", "--workers", "2")
    ray_args = [*args[: args.index("--")], "--backend", "ray", *args[args.index("--") :]]
    stopped = stop_while_a_run_is_in_flight(ray_args, signal.SIGTERM, tmp_path)
    # ray.shutdown() takes 1.4 s here and the interpreter's teardown with torch and Ray loaded 2 s more (measured):
    # the runs are stopped and recorded at once, the process is gone in about 4 s.
    before = check_stopped(stopped, signal.SIGTERM, workers=2, exit_within_s=8.0)
    _, printed = run_cv(args)
    check_resumed(stopped["output"], before, printed)
