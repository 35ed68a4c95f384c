"""`reproduce regularizers --quick`: every regularizer at c = inf, ours at the c its cross-validation chose."""

import csv
import json
import math
from pathlib import Path

import pytest

from l1inf_lightning.commands import main as cli_main
from l1inf_lightning.cv.statistics import mean_std
from l1inf_lightning.reproduce import regularizer_report, regularizers, runner
from l1inf_lightning.reproduce.talk import REGULARIZER_DATASETS, TALK_REGULARIZERS

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data"
SYNTHETIC, MNIST, CIFAR = REGULARIZER_DATASETS


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8") as file:
        return list(csv.DictReader(file))


def mnist_here() -> bool:
    present = regularizers.data_present(regularizers.DATASETS[1], DATA)
    # Where the shared archives exist, `make data` (run by `make test`) unpacks them: missing MNIST is a failure there.
    assert present or not (ROOT.parent / "shared" / "data" / "mnist").is_dir()
    return present


def run_quick(output: Path) -> None:
    cli_main(["reproduce", "regularizers", "--quick", "--output", str(output), "--no-progress", "--workers", "2",
              "--data-dir", str(DATA)])  # fmt: skip


def test_the_talks_comparison_is_copied_as_printed():
    assert list(TALK_REGULARIZERS)[::10] == ["No", "Our approach"]
    assert len(TALK_REGULARIZERS) == 11
    assert TALK_REGULARIZERS["No"] == {SYNTHETIC: 71.6, MNIST: 97.85, CIFAR: 93.34}
    assert TALK_REGULARIZERS["L1, λ = 0.001"][SYNTHETIC] == 81.6
    assert TALK_REGULARIZERS["L2, λ = 0.01"][SYNTHETIC] == 73.4
    assert TALK_REGULARIZERS["Dropout, r_d = 0.5"] == {SYNTHETIC: 73.5, MNIST: 98.11, CIFAR: 93.42}
    assert TALK_REGULARIZERS["Our approach"] == {SYNTHETIC: 91.0, MNIST: 98.03, CIFAR: 93.75}
    assert [r.header for r in regularizers.REGULARIZERS] == list(TALK_REGULARIZERS)[:-1]


def test_quick_writes_every_row_with_the_talks_numbers_and_ours_where_run(quick_reproductions):
    directory = quick_reproductions / "regularizers"
    table = read_csv(directory / "table.csv")
    assert [(row["regularizer"], row["dataset"]) for row in table] == [
        (header, dataset) for header in TALK_REGULARIZERS for dataset in REGULARIZER_DATASETS
    ]
    mnist = mnist_here()
    for row in table:
        assert float(row["talk_acc"]) == TALK_REGULARIZERS[row["regularizer"]][row["dataset"]]
        run = row["dataset"] == SYNTHETIC or (
            row["dataset"] == MNIST and mnist and row["regularizer"] in ("No", "Dropout, r_d = 0.5", "Our approach")
        )
        if run:
            assert row["status"] == "run" and row["runs_ok"] == "1", row
            assert 0 <= float(row["acc_mean"]) <= 100
        else:
            assert row["acc_mean"] == "" and row["runs_ok"] == "0"
    statuses = {row["status"] for row in table if row["dataset"] == CIFAR}
    assert statuses == {"not run: no data here"}  # no CIFAR-10 files under data/
    text = (directory / "table.md").read_text(encoding="utf-8")
    assert "| No | " in text and "| 71.60 |" in text and "not run: no data here" in text
    assert "2-fold cross-validation of val/acc" in text and "c = inf for every regularizer" in text
    assert (directory / regularizer_report.FIGURE).read_bytes()[:4] == b"\x89PNG"


def test_ours_is_fitted_at_the_c_with_the_best_mean_fold_accuracy(quick_reproductions):
    directory = quick_reproductions / "regularizers"
    results = [json.loads(path.read_text(encoding="utf-8")) for path in (directory / "results").glob("*.json")]
    keys = ["synthetic", "mnist"] if mnist_here() else ["synthetic"]
    table = {(row["regularizer"], row["dataset"]): row for row in read_csv(directory / "table.csv")}
    for key, dataset in zip(keys, (SYNTHETIC, MNIST), strict=False):
        folds = [r for r in results if r["run_id"].startswith(f"{key}-cv_")]
        assert len(folds) == 2 * 2  # two c × two folds
        means = {}
        for radius in {r["radius"] for r in folds}:
            means[radius] = mean_std([r["metrics"]["val/acc"] for r in folds if r["radius"] == radius])[0]
        best = max(means.values())
        chosen = min(float(radius) for radius, mean in means.items() if math.isclose(mean, best, rel_tol=1e-9))
        ours = [r for r in results if r["run_id"].startswith(f"{key}-ours_")]
        assert [float(r["radius"]) for r in ours] == [chosen]
        assert "test/acc" in ours[0]["metrics"] and ours[0]["fold"] is None
        assert table["Our approach", dataset]["chosen_c"] == repr(chosen)


def test_the_regularizers_run_unconstrained_with_their_own_option_alone(quick_reproductions):
    directory = quick_reproductions / "regularizers"
    results = {path.stem: json.loads(path.read_text(encoding="utf-8")) for path in (directory / "results").glob("*")}
    l1 = results["synthetic-l1-0.001_cinf_all_seed0"]
    assert l1["radius"] == "inf" and l1["metrics"]["train/penalty"] > 0
    assert "train/penalty" not in results["synthetic-dropout_cinf_all_seed0"]["metrics"]
    assert results["synthetic-none_cinf_all_seed0"]["sparsity"] == 0.0


def test_rerunning_trains_nothing_and_rewrites_the_same_tables(quick_reproductions, monkeypatch):
    directory = quick_reproductions / "regularizers"
    before = {name: (directory / name).read_bytes() for name in ("table.csv", "table.md")}

    def no_training(*args, **kwargs):
        raise AssertionError("a finished reproduction started fits")

    monkeypatch.setattr(runner, "execute", no_training)
    run_quick(quick_reproductions)
    assert {name: (directory / name).read_bytes() for name in before} == before


def test_cifar10_is_run_where_its_files_are(fake_cifar10_dir, tmp_path):
    cifar = regularizers.DATASETS[2]
    assert not regularizers.data_present(cifar, tmp_path / "empty")
    assert regularizers.data_present(cifar, fake_cifar10_dir)
    protocol = regularizers.make_regularizer_protocol(quick=True, seeds=None, data_dir=fake_cifar10_dir)
    assert "cifar10" in protocol.datasets
    assert f"--data.init_args.data_dir={fake_cifar10_dir.resolve()}" in protocol.protocols["cifar10"].overrides


def test_bad_seeds_are_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli_main(["reproduce", "regularizers", "--quick", "--seeds", "0", "--output", str(tmp_path)])
    assert stopped.value.code == 2 and "Expected `--seeds` to be an integer >= 1" in capsys.readouterr().err
    assert not (tmp_path / "regularizers").exists()
