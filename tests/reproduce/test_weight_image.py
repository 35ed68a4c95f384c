"""`reproduce_weight_image(quick=True)` end to end: the runs, their checkpoints, the measures, table and figure."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from l1inf_lightning.cv import backends
from l1inf_lightning.cv.backends import LocalBackend
from l1inf_lightning.cv.settings import SweepError
from l1inf_lightning.reproduce import runner, weight_image
from l1inf_lightning.reproduce.weight_image import (
    FIGURE,
    NAME,
    SHOWN,
    TALK_WORDS,
    first_layer_weight,
    measure_first_layer,
    reproduce_weight_image,
    weight_protocol,
)

SHARES = ("l1_share", "nonzero_informative", "nonzero_rest", "sparsity", "accuracy")


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as file:
        return list(csv.DictReader(file))


def no_training(*args, **kwargs):
    raise AssertionError("a finished reproduction started a fit")


def quick(output: Path) -> str:
    return reproduce_weight_image(quick=True, seeds=None, output=output, workers=1, progress=False)


@pytest.fixture(scope="module")
def quick_image(quick_reproductions):
    return quick_reproductions, (quick_reproductions / NAME / "table.md").read_text(encoding="utf-8")


def test_measures_split_the_layer_between_the_informative_inputs_and_the_rest():
    uniform = measure_first_layer(torch.ones(100, 500))
    assert uniform["l1_share_informative"] == pytest.approx(4 / 500)
    assert uniform["nonzero_informative"] == uniform["nonzero_rest"] == 1.0 and uniform["sparsity"] == 0.0
    weight = torch.zeros(10, 500)
    weight[:, :4] = -2.0  # signs do not matter
    weight[0, 100] = 8.0
    measured = measure_first_layer(weight)
    assert measured["l1_share_informative"] == pytest.approx(80 / 88)
    assert measured["nonzero_informative"] == 1.0 and measured["nonzero_rest"] == pytest.approx(1 / 4960)
    assert measured["sparsity"] == pytest.approx(1 - 41 / 5000)
    assert math.isnan(measure_first_layer(torch.zeros(3, 500))["l1_share_informative"])


def test_the_protocol_is_the_config_at_inf_and_at_its_own_c():
    full = weight_protocol(quick=False, seeds=None)
    assert full.radii == (math.inf, 0.04) and full.seeds == 5 and full.epochs == 100 and not full.quick
    assert not any("checkpointing" in token for token in full.overrides)  # the checkpoints are read afterwards
    assert full.columns == ("500-100-50-20-2",)
    assert weight_protocol(quick=True, seeds=3).seeds == 3


@pytest.mark.parametrize(
    ("seeds", "workers", "argument"),
    [(0, 1, "--seeds"), (-2, 1, "--seeds"), (True, 1, "--seeds"), (None, 0, "--workers")],
)
def test_bad_arguments_are_refused_before_anything_is_written(tmp_path, seeds, workers, argument):
    with pytest.raises(SweepError, match=f"Expected `{argument}` to be an integer >= 1"):
        reproduce_weight_image(quick=True, seeds=seeds, output=tmp_path, workers=workers, progress=False)
    assert not (tmp_path / NAME).exists()


def test_quick_weight_image_writes_shares_per_c_and_quotes_the_talk(quick_image):
    output, text = quick_image
    directory = output / NAME
    assert (directory / "table.md").read_text(encoding="utf-8") == text
    table = read_csv(directory / "table.csv")
    assert [row["c"] for row in table] == ["inf", "0.04"]
    for row in table:
        assert (row["runs_ok"], row["runs_failed"], row["runs_missing"]) == ("1", "0", "0")
        for name in SHARES:
            assert 0 <= float(row[f"{name}_mean"]) <= 1, name
    unconstrained, projected = table
    assert float(unconstrained["sparsity_mean"]) == 0 and float(projected["sparsity_mean"]) > 0.1
    for words in TALK_WORDS:
        assert words in text
    for words in ("QUICK", "2 epochs", "seed 0", "optimizer Adam", "0.8 %", "| inf |", "| 0.04 |"):
        assert words in text
    data = (directory / FIGURE).read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 10_000


def test_each_run_keeps_its_checkpoint_and_stores_its_first_layer_measured_from_it(quick_image):
    output, _ = quick_image
    directory = output / NAME
    for radius in ("inf", "0.04"):
        stored = json.loads((directory / "weights" / f"weights_c{radius}_all_seed0.json").read_text(encoding="utf-8"))
        checkpoint = directory / stored["checkpoint"]
        assert checkpoint.name == "last.ckpt" and checkpoint.is_file()
        key, weight = first_layer_weight(checkpoint)
        assert key == stored["key"] and list(weight.shape) == stored["shape"] == [100, 500]
        assert {name: stored[name] for name in measure_first_layer(weight)} == measure_first_layer(weight)
        assert torch.equal(torch.tensor(stored["first_columns_abs"]), weight[:, :SHOWN].abs())
        if radius == "0.04":  # every neuron's weights (its bias aside) lie in the L1 ball of radius c
            assert float(weight.abs().sum(dim=1).max()) <= 0.04 * (1 + 1e-5)


def test_rerunning_trains_nothing_reads_no_checkpoint_and_rewrites_the_same_tables(quick_image, monkeypatch):
    output, text = quick_image
    directory = output / NAME
    before = {name: (directory / name).read_bytes() for name in ("table.csv", "table.md")}
    stored = {path: path.stat().st_mtime_ns for path in directory.glob("*/*.json")}
    (directory / "table.csv").unlink()
    monkeypatch.setattr(LocalBackend, "submit", no_training)
    monkeypatch.setattr(weight_image, "first_layer_weight", no_training)
    assert quick(output) == text
    assert {name: (directory / name).read_bytes() for name in before} == before
    assert {path: path.stat().st_mtime_ns for path in stored} == stored


def test_lost_measures_are_measured_again_from_the_checkpoint_without_training(quick_image, monkeypatch):
    output, text = quick_image
    directory = output / NAME
    lost = directory / "weights" / "weights_c0.04_all_seed0.json"
    kept = lost.read_bytes()
    lost.unlink()
    monkeypatch.setattr(LocalBackend, "submit", no_training)
    assert quick(output) == text
    assert lost.read_bytes() == kept


def test_a_run_without_measures_or_checkpoint_is_run_again_alone(quick_image, monkeypatch):
    output, _ = quick_image
    directory = output / NAME
    (directory / "weights" / "weights_c0.04_all_seed0.json").unlink()
    shutil.rmtree(directory / "logs" / "weights_c0.04")
    started = []
    real = runner.execute

    def recording(specs, *args, **kwargs):
        started.extend(spec.run_id for spec in specs)
        return real(specs, *args, **kwargs)

    monkeypatch.setattr(runner, "execute", recording)
    monkeypatch.setattr(backends, "_usable_cpus", lambda: 1)
    quick(output)
    assert started == ["weights_c0.04_all_seed0"]
    assert (directory / "weights" / "weights_c0.04_all_seed0.json").exists()
    assert read_csv(directory / "table.csv")[1]["runs_ok"] == "1"


def test_another_protocol_in_the_same_directory_is_refused_before_training(quick_image, monkeypatch):
    output, _ = quick_image
    monkeypatch.setattr(LocalBackend, "submit", no_training)
    with pytest.raises(SweepError, match="quick: True there, False now"):
        reproduce_weight_image(quick=False, seeds=None, output=output, workers=1, progress=False)
