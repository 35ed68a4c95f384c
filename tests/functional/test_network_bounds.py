"""Tests for network_bounds: a measured network, n, the input scale, max |y| and delta into the paper's bounds.

The references are written out here from the slides' formulas (Theorem 1, Lemma 2, Theorem 5) with the output
norms summed by hand, never through the function under test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from l1inf_lightning.functional import bounds
from l1inf_lightning.functional.network import measure_network
from l1inf_lightning.models import MLP

REL = 1e-12
LOG16 = math.log(16)


def seeded_mlp(in_features: int, hidden: list[int], out_features: int, output_scale: float = 1.0) -> MLP:
    torch.manual_seed(0)
    net = MLP(in_features, hidden, out_features)
    with torch.no_grad():
        net.layers[-1].output_scale.fill_(output_scale)
    return net.double()


def output_column_l1_by_hand(net: MLP) -> list[float]:
    """|s| (|b_j| + sum_i |W_ji|) of every output unit, summed one entry at a time in float64."""
    last = net.layers[-1]
    weight, bias = last.weight.detach(), last.bias.detach()
    scale = abs(float(last.output_scale))
    return [
        scale * (abs(float(bias[j])) + math.fsum(abs(float(w)) for w in weight[j])) for j in range(last.out_features)
    ]


def bracket(gc: float, k: int, m1: int) -> float:
    return math.sqrt((k + 1) * LOG16) * (sum(gc**ell for ell in range(k + 1)) + gc**k) + gc**k * math.sqrt(
        2 * math.log(2 * m1)
    )


def theorem5(gc: float, k: int, n: int, m1: int, delta: float, b0: float, t: float) -> float:
    confidence = math.sqrt((math.log(1 / delta) + 2 * math.log(t + 2)) / (2 * n))
    return confidence * (b0**2 + (t + 1) ** 2 * max(1.0, gc ** (2 * k))) + 2 / math.sqrt(n) * (
        b0 + (t + 1) * max(1.0, gc**k)
    ) * (t + 1) * bracket(gc, k, m1)


@pytest.mark.parametrize(("input_scale", "c_used"), [(0.5, 0.3), (1.0, 0.3), (4.0, 1.2)])
def test_regression_bounds_fold_the_input_scale_and_double_theorem_5(input_scale: float, c_used: float) -> None:
    net = seeded_mlp(6, [5, 4], 1, output_scale=8.0)  # the radius-aware mode's effective output layer
    n, k, m1, delta, b0 = 200, 2, 6, 0.05, 3.5
    (t,) = output_column_l1_by_hand(net)
    values = bounds.network_bounds(measure_network(net), 0.3, n, input_scale, b0, delta)
    assert set(values) == {"rademacher", "output_sup", "generalization", "c"}
    # Inputs inside the cube leave c as it is; larger ones scale it by max |x|.
    assert values["c"] == pytest.approx(c_used, rel=REL)
    gc = 1.0 * c_used  # ReLU
    assert values["rademacher"] == pytest.approx(t * bracket(gc, k, m1) / math.sqrt(n), rel=1e-9)
    assert values["output_sup"] == pytest.approx(t * max(1.0, gc**k), rel=1e-9)
    # Twice Theorem 5: the gap it bounds is of (y - f)^2 / 2, the logged gap of (y - f)^2.
    assert values["generalization"] == pytest.approx(2 * theorem5(gc, k, n, m1, delta, b0, t), rel=1e-9)


def test_the_output_scale_enters_the_bounds() -> None:
    plain = bounds.network_bounds(measure_network(seeded_mlp(6, [5], 1)), 0.5, 100, 1.0, 1.0, 0.05)
    scaled = bounds.network_bounds(measure_network(seeded_mlp(6, [5], 1, output_scale=10.0)), 0.5, 100, 1.0, 1.0, 0.05)
    assert scaled["rademacher"] == pytest.approx(10 * plain["rademacher"], rel=1e-9)
    assert scaled["output_sup"] == pytest.approx(10 * plain["output_sup"], rel=1e-9)


def test_classification_bounds_are_theorem_7_over_every_output_unit() -> None:
    net = seeded_mlp(7, [6, 5, 4], 3, output_scale=2.0)
    o = output_column_l1_by_hand(net)
    assert len(set(o)) == 3  # distinct columns, so max and sum are not interchangeable
    values = bounds.network_bounds(measure_network(net), 0.7, 300, 2.0, 1.0, 0.1)
    c_eff, k, gc = 1.4, 3, 1.4
    assert values["c"] == pytest.approx(c_eff, rel=REL)
    assert values["rademacher"] == pytest.approx(max(o) * bracket(gc, k, 7) / math.sqrt(300), rel=1e-9)
    expected = bounds.cross_entropy_generalization_bound(c_eff, k, 1.0, 300, 7, 3, 0.1, max(o), o, sum(o))
    assert values["generalization"] == pytest.approx(expected, rel=1e-9)


def test_sigmoid_nets_use_a_quarter() -> None:
    torch.manual_seed(0)
    net = MLP(4, [3], 2, activation="sigmoid")
    o = max(output_column_l1_by_hand(net))
    values = bounds.network_bounds(measure_network(net), 2.0, 50, 1.0, 1.0, 0.05)
    assert values["output_sup"] == pytest.approx(o * max(1.0, 0.25 * 2.0), rel=1e-6)
    assert values["rademacher"] == pytest.approx(o * bracket(0.5, 1, 4) / math.sqrt(50), rel=1e-6)


def test_no_constraint_gives_infinite_bounds() -> None:
    values = bounds.network_bounds(measure_network(seeded_mlp(4, [3], 2)), math.inf, 50, 1.0, 1.0, 0.05)
    assert values["c"] == math.inf and values["rademacher"] == math.inf and values["generalization"] == math.inf


def test_networks_outside_the_theorems_are_refused_with_the_reason() -> None:
    conv = nn.Sequential(nn.Conv1d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"outside: layer '0' \(Conv1d\)"):
        bounds.network_bounds(measure_network(conv), 1.0, 10, 1.0, 1.0, 0.05)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"c": 0.0}, "Expected `c` to be a positive number or inf, got 0.0"),
        ({"n": 0}, "Expected `n` to be an integer >= 1, got 0"),
        ({"delta": 1.0}, "Expected `delta` to be in (0, 1), got 1.0"),
        ({"input_scale": -1.0}, "Expected `input_scale` to be a non-negative number, got -1.0"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    arguments = {"c": 1.0, "n": 10, "input_scale": 1.0, "target_max": 1.0, "delta": 0.05, **kwargs}
    with pytest.raises(ValueError, match="^" + message.replace("(", r"\(").replace(")", r"\)") + "$"):
        bounds.network_bounds(measure_network(seeded_mlp(4, [3], 1)), **arguments)
