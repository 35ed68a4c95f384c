"""`reproduce NAME --quick` end to end: the files it writes, the talk's numbers in them, resuming and rerunning."""

import csv
import dataclasses
import json
import math
import shlex
import shutil
from pathlib import Path

import pytest

from l1inf_lightning.commands import COMMANDS
from l1inf_lightning.commands import main as cli_main
from l1inf_lightning.cv.settings import SweepError
from l1inf_lightning.cv.store import prepare_output
from l1inf_lightning.reproduce import EXPERIMENTS, make_protocol, runner
from l1inf_lightning.reproduce.command import BUILT, NAMES, build_parser
from l1inf_lightning.reproduce.talk import TALK_DEPTH, TALK_SAMPLE_SIZE


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as file:
        return list(csv.DictReader(file))


def quick(name: str, output: Path, *extra: str) -> None:
    cli_main(["reproduce", name, "--quick", "--output", str(output), "--no-progress", *extra])


def test_the_talk_tables_are_copied_as_printed():
    assert TALK_DEPTH["500-100-20-2"][math.inf] == (1.535, 70.30)
    assert TALK_DEPTH["500-100-100-50-20-2"][0.04] == (0.131, 88.33)
    assert TALK_DEPTH["500-100-100-50-20-2"][0.01] is None  # "-": did not converge
    assert TALK_SAMPLE_SIZE["2500"][0.01] == (0.024, 91.47)
    assert TALK_SAMPLE_SIZE["1000"][0.13] == (0.334, 87.80)
    # The 500-100-50-20-2 net at n = 500 is the same setting in both of the talk's tables.
    assert set(TALK_SAMPLE_SIZE["500"]) == set(TALK_DEPTH["500-100-50-20-2"]) - {0.5}
    for c, cell in TALK_SAMPLE_SIZE["500"].items():
        assert TALK_DEPTH["500-100-50-20-2"][c] == cell
    assert sorted(TALK_DEPTH["500-100-20-2"]) == [0.01, 0.04, 0.07, 0.1, 0.13, 0.16, 0.5, math.inf]


def test_every_result_of_the_talk_has_a_command():
    assert (
        BUILT == NAMES == ("regression", "classification", "weight-image", "depth", "sample-size", "regularizers", "cv")
    )


def test_an_unknown_name_exits_2_and_lists_the_talks_names(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli_main(["reproduce", "depht"])
    assert stopped.value.code == 2
    assert "regression" in capsys.readouterr().err and "reproduce" in COMMANDS


def test_quick_depth_writes_our_finite_numbers_beside_the_talks(quick_reproductions):
    output = quick_reproductions
    directory = output / "depth"
    table = read_csv(directory / "table.csv")
    assert [(row["c"], row["column"]) for row in table] == [
        (c, net) for c in ("inf", "0.1") for net in ("500-100-20-2", "500-100-50-20-2", "500-100-100-50-20-2")
    ]
    for row in table:
        talk = TALK_DEPTH[row["column"]][float(row["c"])]
        assert (float(row["talk_gap"]), float(row["talk_acc"])) == talk
        assert row["runs_ok"] == "1" and row["runs_failed"] == "0" and row["runs_missing"] == "0"
        assert 0 <= float(row["acc_mean"]) <= 100 and math.isfinite(float(row["gap_mean"]))
        assert 0 <= float(row["sparsity_mean"]) <= 100
    text = (directory / "table.md").read_text(encoding="utf-8")
    for words in ("QUICK", "optimizer Adam", "lr 0.001", "2 epochs", "batch size 50", "seed 0", "radius_aware"):
        assert words in text
    assert "| inf | 500-100-20-2 |" in text and "| 70.30 |" in text and "| 1.535 |" in text
    assert (directory / runner.FIGURE).stat().st_size > 10_000
    assert len(list((directory / "results").glob("*.json"))) == 6


def test_rerunning_a_finished_reproduction_trains_nothing_and_rewrites_the_same_tables(
    quick_reproductions, monkeypatch
):
    output = quick_reproductions
    directory = output / "depth"
    before = {name: (directory / name).read_bytes() for name in ("table.csv", "table.md")}
    stored = {path: path.stat().st_mtime_ns for path in (directory / "results").glob("*.json")}
    (directory / "table.csv").unlink()

    def no_training(*args, **kwargs):
        raise AssertionError("a finished reproduction started fits")

    monkeypatch.setattr(runner, "execute", no_training)
    quick("depth", output)
    assert {name: (directory / name).read_bytes() for name in before} == before
    assert {path: path.stat().st_mtime_ns for path in stored} == stored


def test_a_reproduction_missing_a_result_reruns_that_run_only(quick_reproductions, monkeypatch):
    output = quick_reproductions
    directory = output / "depth"
    lost = directory / "results" / "depth100-50-20_c0.1_all_seed0.json"
    lost.unlink()
    started = []
    real = runner.execute

    def recording(specs, *args, **kwargs):
        started.extend(spec.run_id for spec in specs)
        return real(specs, *args, **kwargs)

    monkeypatch.setattr(runner, "execute", recording)
    quick("depth", output)
    assert started == ["depth100-50-20_c0.1_all_seed0"] and lost.exists()


def test_another_protocol_in_the_same_directory_is_refused_before_training(quick_reproductions, capsys):
    output = quick_reproductions
    with pytest.raises(SystemExit) as stopped:
        cli_main(["reproduce", "depth", "--output", str(output), "--no-progress"])  # the full protocol
    assert stopped.value.code == 2
    assert "quick: True there, False now" in capsys.readouterr().err


def test_quick_sample_size_writes_the_talks_sample_sizes(tmp_path):
    quick("sample-size", tmp_path)
    table = read_csv(tmp_path / "sample-size" / "table.csv")
    assert [(row["c"], row["column"]) for row in table] == [(c, n) for c in ("inf", "0.1") for n in ("500", "1000")]
    assert [float(row["talk_acc"]) for row in table] == [69.90, 71.00, 87.78, 87.60]
    assert all(math.isfinite(float(row["acc_mean"])) and row["runs_ok"] == "1" for row in table)
    assert "n (training samples)" in (tmp_path / "sample-size" / "table.md").read_text(encoding="utf-8")


def test_seeds_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli_main(["reproduce", "depth", "--quick", "--seeds", "0", "--output", str(tmp_path)])
    assert stopped.value.code == 2 and "Expected `--seeds` to be an integer >= 1, got 0" in capsys.readouterr().err
    assert not (tmp_path / "depth").exists()


def test_the_readmes_reproduce_commands_name_built_experiments_with_valid_arguments():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    commands = [
        shlex.split(line, comments=True)[2:]
        for line in readme.splitlines()
        if line.startswith("l1inf-lightning reproduce ")
    ]
    assert len(commands) >= 3
    for args in commands:
        parsed = build_parser().parse_args(args)
        assert parsed.name in BUILT, args


def test_quick_classification_puts_the_exact_mode_beside_the_radius_aware_one(quick_reproductions):
    directory = quick_reproductions / "classification"
    table = read_csv(directory / "table.csv")
    modes = ("radius-aware", "exact (Algorithm 1)")
    assert [(row["c"], row["column"]) for row in table] == [(c, mode) for c in ("inf", "0.1") for mode in modes]
    for row in table:
        assert row["runs_ok"] == "1" and 0 <= float(row["acc_mean"]) <= 100 and math.isfinite(float(row["gap_mean"]))
        assert row["runs_single_class"] in ("0", "1") and "talk_acc" not in row
    # The exact mode is Algorithm 1 on the net with its output bias; the results say which options made each run.
    results = {path.stem: path.read_text(encoding="utf-8") for path in (directory / "results").glob("*.json")}
    assert len(results) == 4 and sum(name.startswith("exact_") for name in results) == 2
    text = (directory / "table.md").read_text(encoding="utf-8")
    assert "--projection.mode=exact --model.init_args.net.init_args.output_bias=true" in text
    assert "the generalization error decreases as c decreases" in text and "sparsity rises at every step" in text
    assert (directory / runner.BOXES).read_bytes()[:4] == b"\x89PNG"


def test_single_class_runs_are_counted_from_the_logged_share(quick_reproductions):
    directory = quick_reproductions / "classification"
    table = {(row["c"], row["column"]): row for row in read_csv(directory / "table.csv")}
    for path in (directory / "results").glob("*.json"):
        result = json.loads(path.read_text(encoding="utf-8"))
        column = "exact (Algorithm 1)" if path.stem.startswith("exact_") else "radius-aware"
        single = float(result["metrics"]["test/top_class_share"]) == 1.0
        assert table[result["radius"], column]["runs_single_class"] == str(int(single))
    # The claims' trends say, per column, where single-class runs make the gap meaningless.
    text = (directory / "table.md").read_text(encoding="utf-8")
    for column in ("radius-aware", "exact (Algorithm 1)"):
        collapsed = [c for (c, name), row in table.items() if name == column and row["runs_single_class"] != "0"]
        note = f"but {column} has runs that predict a single class"
        assert (note in text) == bool(collapsed), column
        for c in collapsed:
            assert f"1 at c = {c}" in text.split(note)[1].split("\n")[0]


def test_quick_regression_reports_the_test_mse_gap_and_sparsity_per_c(quick_reproductions):
    table = read_csv(quick_reproductions / "regression" / "table.csv")
    assert [(row["c"], row["column"]) for row in table] == [("inf", "1000-300-1"), ("0.3", "1000-300-1")]
    for row in table:
        assert float(row["mse_mean"]) > 0 and math.isfinite(float(row["gap_mean"])) and row["runs_ok"] == "1"
    assert float(table[0]["sparsity_mean"]) == 0 and float(table[1]["sparsity_mean"]) > 0
    text = (quick_reproductions / "regression" / "table.md").read_text(encoding="utf-8")
    assert "test mse" in text and "optimizer SGD" in text and "100 epochs" in text


def test_a_reproduction_resumes_from_another_checkout_of_the_same_config(quick_reproductions, tmp_path):
    # Another clone, or the checkout moved: the same config's contents under another path is the same protocol.
    experiment = EXPERIMENTS["depth"]
    elsewhere = tmp_path / "clone" / "configs" / experiment.config.name
    elsewhere.parent.mkdir(parents=True)
    shutil.copyfile(experiment.config, elsewhere)
    protocol = dataclasses.replace(make_protocol(experiment, quick=True, seeds=None), config=str(elsewhere))
    assert prepare_output(quick_reproductions / "depth", protocol) == (quick_reproductions / "depth").resolve()
    # A directory written before configs were stored by name (an absolute path) resumes too.
    older = tmp_path / "older"
    older.mkdir()
    stored = json.loads((quick_reproductions / "depth" / "sweep.json").read_text(encoding="utf-8"))
    stored["config"] = "/some/old/checkout/configs/" + stored["config"]
    (older / "sweep.json").write_text(json.dumps(stored), encoding="utf-8")
    assert prepare_output(older, protocol) == older.resolve()
    # Another config under the same name is not.
    elsewhere.write_text(experiment.config.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")
    with pytest.raises(SweepError, match="config_sha256"):
        prepare_output(quick_reproductions / "depth", protocol)
