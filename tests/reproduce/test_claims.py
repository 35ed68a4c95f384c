"""The talk's central claims, measured on smaller grids of the reproductions' own runs (slow: real training).

Each test runs the reproduction's machinery on a few of its cells, with the full protocol's epochs and data sizes
but fewer seeds and values of c, and checks the claim as the README states it with the full tables' numbers. Where
the full tables contradict the talk, the README says so, and the tests check what we measured instead.
"""

import dataclasses
import math
from pathlib import Path

import pytest

from l1inf_lightning.cv import backends
from l1inf_lightning.cv.statistics import mean_std
from l1inf_lightning.reproduce import EXPERIMENTS, make_protocol, run_reproduction
from l1inf_lightning.reproduce import regularizer_report as report
from l1inf_lightning.reproduce import regularizers as regs
from l1inf_lightning.reproduce.runner import run_specs

pytestmark = pytest.mark.slow
INF = math.inf


@pytest.fixture(autouse=True)
def one_thread_per_worker(monkeypatch):
    monkeypatch.setattr(backends, "_usable_cpus", lambda: 2)


def run(name, tmp_path, *, columns=None, radii, seeds=2):
    experiment = EXPERIMENTS[name]
    full = make_protocol(experiment, quick=False, seeds=seeds)
    protocol = dataclasses.replace(full, radii=radii, columns=columns or full.columns)
    rows = run_reproduction(experiment, protocol, tmp_path, workers=2, progress=False)
    assert all(row.num_failed == row.num_missing == 0 for row in rows)
    return {(row.column, row.radius): row for row in rows}


def mean(values):
    return mean_std(values)[0]


def test_a_smaller_c_gives_a_smaller_gap_and_a_sparse_net_on_synthetic_classification(tmp_path):
    rows = run("classification", tmp_path, columns=("radius-aware",), radii=(INF, 0.5, 0.01))
    gap = {c: mean(rows["radius-aware", c].gap) for c in (INF, 0.5, 0.01)}
    sparsity = {c: mean(rows["radius-aware", c].sparsity) for c in (INF, 0.5, 0.01)}
    print(gap, sparsity)
    assert gap[INF] > gap[0.5] > gap[0.01]
    # Sparse at every finite c (full table: 60-80 %), none unconstrained; it does not keep rising below c = 0.5.
    assert sparsity[INF] == 0 and sparsity[0.5] > 50 and sparsity[0.01] > 50
    assert all(row.num_single_class == 0 for row in rows.values())


def test_a_smaller_c_gives_a_smaller_gap_and_a_sparser_net_on_synthetic_regression(tmp_path):
    rows = run("regression", tmp_path, radii=(INF, 10.0, 0.3))
    gap = {c: mean(rows["1000-300-1", c].gap) for c in (INF, 10.0, 0.3)}
    sparsity = {c: mean(rows["1000-300-1", c].sparsity) for c in (INF, 10.0, 0.3)}
    print(gap, sparsity)
    assert gap[INF] > gap[10.0] > gap[0.3]
    assert sparsity[0.3] > sparsity[10.0] and sparsity[0.3] > 5


def test_ours_beats_no_regularization_l1_l2_and_dropout_on_synthetic_classification(tmp_path):
    # The full protocol's fits (100 epochs, 500 samples) on one seed; c chosen by 3-fold cross-validation over two c.
    full = regs.make_regularizer_protocol(quick=False, seeds=1, data_dir=tmp_path)
    synthetic = full.protocols["synthetic"]
    protocol = dataclasses.replace(
        full,
        datasets=("synthetic",),
        radii={"synthetic": (0.5, 0.04)},
        folds=3,
        protocols={"synthetic": dataclasses.replace(synthetic, radii=(0.5, 0.04))},
    )
    directory = tmp_path / "regularizers"
    directory.mkdir()
    backend = backends.LocalBackend(2)
    specs = regs.first_runs(protocol, directory)
    results = run_specs("regularizers", specs, directory, backend, progress=False)
    ours = regs.our_runs(protocol, directory, regs.chosen_radii(protocol, specs, results), len(specs))
    results = run_specs("ours", ours, directory, backend, progress=False)
    cells = report.collect_cells(protocol, [*specs, *ours], results)
    [claim] = report.claims(protocol, cells)
    print(claim)
    assert "beats every other: yes" in claim
    assert mean(cells[regs.OURS, "synthetic"].accuracy) > 80


def test_a_larger_sample_gives_a_better_accuracy_at_every_c_and_a_smaller_gap_with_the_projection(tmp_path):
    rows = run("sample-size", tmp_path, columns=("500", "2500"), radii=(INF, 0.04))
    accuracy = {key: mean(row.metric) for key, row in rows.items()}
    gap = {key: mean(row.gap) for key, row in rows.items()}
    print(accuracy, gap)
    for c in (INF, 0.04):
        assert accuracy["2500", c] > accuracy["500", c] + 2
    assert gap["2500", 0.04] < gap["500", 0.04]
    # Unconstrained, the gap does not fall with n in the full table (1.6 at n = 500, 1.8 to 2.5 above): not asserted.


def test_ours_is_on_par_with_no_regularization_on_mnist_not_better(tmp_path):
    # The talk: 98.03 % against 97.85 % without regularization. The full reproduction (one seed, 5 epochs, c chosen
    # by 10-fold cross-validation: 4) measured 97.69 against 97.77: on par, not better, and the README says so. Here
    # the same two fits (c = 4 as chosen there), on the full MNIST training set.
    data = Path(__file__).resolve().parents[2] / "data"
    full = regs.make_regularizer_protocol(quick=False, seeds=1, data_dir=data)
    if "mnist" not in full.datasets:
        pytest.skip("MNIST is not unpacked in data/ (make data)")
    protocol = dataclasses.replace(
        full, datasets=("mnist",), rows={"mnist": ("No",)}, folds=0, protocols={"mnist": full.protocols["mnist"]}
    )
    directory = tmp_path / "regularizers"
    directory.mkdir()
    specs = regs.first_runs(protocol, directory)
    specs += regs.our_runs(protocol, directory, {("mnist", 0): 4.0}, len(specs))
    results = run_specs("mnist", specs, directory, backends.LocalBackend(2), progress=False)
    cells = report.collect_cells(protocol, specs, results)
    ours, none = (mean(cells[row, "mnist"].accuracy) for row in (regs.OURS, "No"))
    print(f"ours {ours:.2f} %, no regularization {none:.2f} %")
    assert abs(ours - none) < 0.5 and ours > 97
    assert mean(cells[regs.OURS, "mnist"].sparsity) < 5  # c = 4 leaves this MLP nearly dense in the radius-aware mode
