"""The benchmark scripts run, and the rescaling argument behind ``benchmarks/rescaled_radius.py`` holds."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest
import torch

from l1inf_lightning.functional import neuron_l1_norms
from l1inf_lightning.models import MLP

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def rescaled_radius(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("rescaled_radius")
    yield module
    sys.modules.pop("rescaled_radius", None)


@pytest.mark.parametrize("scale", [1.0, 0.5, 0.1, 0.01])
def test_rescaling_keeps_the_function_and_shrinks_every_hidden_neuron(rescaled_radius, scale: float) -> None:
    torch.manual_seed(0)
    net = MLP(12, [9, 7, 5], 3, activation="relu").double()
    x = torch.randn(64, 12, dtype=torch.float64)
    before = net(x)
    hidden_norms = [neuron_l1_norms(layer) for layer in net.layers if isinstance(layer, torch.nn.Linear)][:-1]

    rescaled_radius.rescale_hidden_layers_(net, scale)

    torch.testing.assert_close(net(x), before, rtol=1e-9, atol=1e-9)
    linears = [layer for layer in net.layers if isinstance(layer, torch.nn.Linear)]
    for depth, (layer, norms) in enumerate(zip(linears[:-1], hidden_norms, strict=True), start=1):
        # |s w| + |s^l b| <= s (|w| + |b|) for s <= 1, with equality for the first layer.
        assert torch.all(neuron_l1_norms(layer) <= scale * norms * (1 + 1e-12))
        if depth == 1:
            torch.testing.assert_close(neuron_l1_norms(layer), scale * norms)


def test_rescaling_needs_a_hidden_layer(rescaled_radius) -> None:
    with pytest.raises(ValueError, match="at least one hidden layer"):
        rescaled_radius.rescale_hidden_layers_(torch.nn.Linear(3, 2), 0.5)


def test_rescaled_radius_script(rescaled_radius, capsys: pytest.CaptureFixture[str]) -> None:
    large, small, rescaled = rescaled_radius.main(["--epochs", "2", "--large", "1", "--small", "0.1"])
    out = capsys.readouterr().out
    assert "c=1 net rescaled" in out and "max o_j" in out
    assert (large["radius"], small["radius"], rescaled["radius"]) == (1.0, 0.1, 0.1)
    assert large["max_hidden_norm"] <= 1.0 * (1 + 1e-6)
    assert small["max_hidden_norm"] <= 0.1 * (1 + 1e-6)
    # The rescaled net is in the small ball and is the same function as the large one.
    assert rescaled["max_hidden_norm"] <= 0.1 * (1 + 1e-6)
    assert rescaled["acc"] == large["acc"]
    assert rescaled["loss"] == pytest.approx(large["loss"], rel=1e-4)
    assert rescaled["sparsity"] == large["sparsity"]
    assert rescaled["output_norm"] > large["output_norm"] * 100


def test_rescaled_radius_refuses_bad_radii(rescaled_radius) -> None:
    with pytest.raises(SystemExit):
        rescaled_radius.main(["--large", "0.1", "--small", "1"])


@pytest.mark.slow
def test_make_bench_prints_every_goal_measured_in_one_table(monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    bench = importlib.import_module("bench")
    try:
        rows = bench.main(["--quick"])
    finally:
        for name in ("bench", "projection", "epoch_overhead", "_fit", "startup"):
            sys.modules.pop(name, None)
    out = capsys.readouterr().out
    assert [row[0] for row in rows] == [
        "kernel / clone at 100x501",
        "kernel / clone at 512x4609 (a VGG conv)",
        "kernel / clone at 64x28225 (the paper's 21x21 conv)",
        "kernel / clone at 4096x4097",
        "per-neuron loop / kernel at 64x28225",
        "training time, with / without: paper MLP 500-100-50-20-2, 5 steps",
        "training time, with / without: Fashion-MNIST VGG, 5 steps",
        "first projection in a new process, empty cache",
        "first projection in a new process, cached",
        "import l1inf_lightning / the modules it imports",
    ]
    for what, measured, goal, met in rows:
        assert (
            float(measured.split()[0].rstrip("xs")) > 0
            and goal.split()[0] in ("<", "<=", ">=")
            and met in ("yes", "no")
        ), what
    assert "QUICK: not a measurement" in out
    assert ("not measured (no GPU)" in out) == (not torch.cuda.is_available())


def test_step_overhead_times_the_callbacks_projection_in_a_plain_loop(monkeypatch, capsys) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    step_overhead = importlib.import_module("step_overhead")
    try:
        result = step_overhead.main(["--steps", "20"])
    finally:
        sys.modules.pop("step_overhead", None)
    assert result["projection_us"] > 0 and result["step_us"] > 0 and result["ratio"] > 1.0
    assert "paper MLP, batch 50, c = 1, 20 steps" in capsys.readouterr().out
