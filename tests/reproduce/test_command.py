"""`reproduce NAME --quick` end to end: the files it writes, the talk's numbers in them, resuming and rerunning."""

import csv
import math
import shlex
from pathlib import Path

import pytest

from l1inf_lightning.commands import COMMANDS
from l1inf_lightning.commands import main as cli_main
from l1inf_lightning.reproduce import EXPERIMENTS, runner
from l1inf_lightning.reproduce.command import build_parser
from l1inf_lightning.reproduce.talk import TALK_DEPTH, TALK_SAMPLE_SIZE


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as file:
        return list(csv.DictReader(file))


def quick(name: str, output: Path, *extra: str) -> None:
    cli_main(["reproduce", name, "--quick", "--output", str(output), "--no-progress", *extra])


@pytest.fixture(scope="module")
def quick_depth(tmp_path_factory):
    output = tmp_path_factory.mktemp("reproduce")
    quick("depth", output)
    return output


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


@pytest.mark.parametrize("name", ["regression", "classification", "weight-image", "regularizers", "cv"])
def test_a_name_not_built_yet_exits_2_and_lists_those_that_are(name, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli_main(["reproduce", name, "--quick"])
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert f"`reproduce {name}` is not implemented yet; implemented: depth, sample-size" in error


def test_an_unknown_name_exits_2_and_lists_the_talks_names(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli_main(["reproduce", "depht"])
    assert stopped.value.code == 2
    assert "regression" in capsys.readouterr().err and "reproduce" in COMMANDS


def test_quick_depth_writes_our_finite_numbers_beside_the_talks(quick_depth):
    output = quick_depth
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


def test_rerunning_a_finished_reproduction_trains_nothing_and_rewrites_the_same_tables(quick_depth, monkeypatch):
    output = quick_depth
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


def test_a_reproduction_missing_a_result_reruns_that_run_only(quick_depth, monkeypatch):
    output = quick_depth
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


def test_another_protocol_in_the_same_directory_is_refused_before_training(quick_depth, capsys):
    output = quick_depth
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
        assert parsed.name in EXPERIMENTS, args
