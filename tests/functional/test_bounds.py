"""Tests for the scalar bounds of Wen et al. (2021).

Every expected value is worked out by hand below with plain ``math`` arithmetic, term by term as the slides write
it, never through the functions under test or their helpers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from l1inf_lightning.functional.bounds import (
    asymptotic_depth_factor,
    classification_generalization_bound_fixed_output,
    complexity_term,
    cross_entropy_generalization_bound,
    depth_regime,
    generalization_bound_fixed_output,
    lipschitz_constant,
    mae_generalization_bound,
    mse_generalization_bound,
    output_sup_bound,
    rademacher_bound,
    rescaled_l1inf_norm,
)

REL = 1e-12
LOG16 = math.log(16)


# ---------------------------------------------------------------------------------------------------------------------
# lipschitz_constant
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("activation", "expected"), [("relu", 1.0), ("tanh", 1.0), ("sigmoid", 0.25), ("ReLU", 1.0), ("Sigmoid", 0.25)]
)
def test_lipschitz_constant(activation: str, expected: float) -> None:
    assert lipschitz_constant(activation) == expected


@pytest.mark.parametrize("activation", ["gelu", "identity", "", 1])
def test_lipschitz_constant_rejects_unknown(activation: object) -> None:
    expected = f"Expected `activation` to be one of 'relu', 'sigmoid', 'tanh', got {activation!r}"
    with pytest.raises(ValueError, match=f"^{expected}$"):
        lipschitz_constant(activation)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# complexity_term: the bracket [sqrt((k+1) log 16) (sum_l (gc)^l + (gc)^k) + (gc)^k sqrt(2 log(2 m1))]
# ---------------------------------------------------------------------------------------------------------------------


def test_complexity_term_contracting() -> None:
    # c = 0.5, ReLU (gamma = 1), k = 2, m1 = 10: gamma * c = 0.5 < 1.
    geometric = 1 + 0.5 + 0.25  # (0.5)^0 + (0.5)^1 + (0.5)^2
    deepest = 0.25  # (0.5)^2
    expected = math.sqrt(3 * LOG16) * (geometric + deepest) + deepest * math.sqrt(2 * math.log(20))
    assert complexity_term(c=0.5, k=2, gamma=1.0, m1=10) == pytest.approx(expected, rel=REL)


def test_complexity_term_critical_sigmoid() -> None:
    # c = 4, sigmoid (gamma = 0.25), k = 3, m1 = 5: gamma * c = 1, every power is 1.
    geometric = 1 + 1 + 1 + 1
    deepest = 1
    expected = math.sqrt(4 * LOG16) * (geometric + deepest) + deepest * math.sqrt(2 * math.log(10))
    assert complexity_term(c=4.0, k=3, gamma=0.25, m1=5) == pytest.approx(expected, rel=REL)


def test_complexity_term_expanding() -> None:
    # c = 2, tanh (gamma = 1), k = 3, m1 = 100: gamma * c = 2 > 1.
    geometric = 1 + 2 + 4 + 8
    deepest = 8
    expected = math.sqrt(4 * LOG16) * (geometric + deepest) + deepest * math.sqrt(2 * math.log(200))
    assert complexity_term(c=2.0, k=3, gamma=1.0, m1=100) == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("c", [0.1, 1.0, 1e300, math.inf])
def test_complexity_term_no_hidden_layer_is_finite_for_any_c(c: float) -> None:
    # k = 0: (gamma c)^0 = 1 even for c = inf, so the bracket is sqrt(log 16) * (1 + 1) + sqrt(2 log(2 m1)).
    expected = math.sqrt(LOG16) * 2 + math.sqrt(2 * math.log(2 * 7))
    assert complexity_term(c=c, k=0, gamma=1.0, m1=7) == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize("k", [1, 2, 10])
def test_complexity_term_unconstrained_is_inf(k: int) -> None:
    assert complexity_term(c=math.inf, k=k, gamma=0.25, m1=3) == math.inf


def test_complexity_term_overflow_is_inf_not_error() -> None:
    assert complexity_term(c=1e200, k=3, gamma=1.0, m1=3) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"c": 0.0}, "Expected `c` to be a positive number or inf, got 0.0"),
        ({"c": -1.0}, "Expected `c` to be a positive number or inf, got -1.0"),
        ({"c": math.nan}, "Expected `c` to be a positive number or inf, got nan"),
        ({"c": "abc"}, "Expected `c` to be a positive number or inf, got 'abc'"),
        ({"c": True}, "Expected `c` to be a positive number or inf, got True"),
        ({"k": -1}, "Expected `k` to be an integer >= 0, got -1"),
        ({"k": 1.5}, "Expected `k` to be an integer >= 0, got 1.5"),
        ({"k": True}, "Expected `k` to be an integer >= 0, got True"),
        ({"gamma": 0.0}, "Expected `gamma` to be a positive finite number, got 0.0"),
        ({"gamma": math.inf}, "Expected `gamma` to be a positive finite number, got inf"),
        ({"m1": 0}, "Expected `m1` to be an integer >= 1, got 0"),
    ],
)
def test_complexity_term_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"c": 1.0, "k": 1, "gamma": 1.0, "m1": 4, **kwargs}
    with pytest.raises(ValueError, match=f"^{message}$"):
        complexity_term(**arguments)


@pytest.mark.parametrize(("spelled", "value"), [("inf", math.inf), ("0.5", 0.5)])
def test_bounds_take_c_spelled_as_the_projection_takes_its_radius(spelled: str, value: float) -> None:
    # One radius check for the projection and the bounds: c from YAML or the command line ("inf") is accepted by both.
    assert complexity_term(c=spelled, k=2, gamma=1.0, m1=4) == complexity_term(c=value, k=2, gamma=1.0, m1=4)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------------------------------
# rademacher_bound (Theorem 1)
# ---------------------------------------------------------------------------------------------------------------------


def test_rademacher_bound_contracting() -> None:
    # c = 0.5, k = 2, o = 3, ReLU, n = 100, m1 = 10: gamma * c = 0.5.
    first = 3 * math.sqrt(3 * LOG16 / 100) * ((1 + 0.5 + 0.25) + 0.25)
    second = 3 * 0.25 * math.sqrt(2 * math.log(20) / 100)
    assert rademacher_bound(c=0.5, k=2, o=3.0, gamma=1.0, n=100, m1=10) == pytest.approx(first + second, rel=REL)


def test_rademacher_bound_critical_sigmoid() -> None:
    # c = 4, k = 3, o = 1.5, sigmoid, n = 500, m1 = 1000: gamma * c = 1.
    first = 1.5 * math.sqrt(4 * LOG16 / 500) * ((1 + 1 + 1 + 1) + 1)
    second = 1.5 * 1 * math.sqrt(2 * math.log(2000) / 500)
    assert rademacher_bound(c=4.0, k=3, o=1.5, gamma=0.25, n=500, m1=1000) == pytest.approx(first + second, rel=REL)


def test_rademacher_bound_expanding() -> None:
    # c = 2, k = 3, o = 0.5, tanh, n = 2500, m1 = 100: gamma * c = 2.
    first = 0.5 * math.sqrt(4 * LOG16 / 2500) * ((1 + 2 + 4 + 8) + 8)
    second = 0.5 * 8 * math.sqrt(2 * math.log(200) / 2500)
    assert rademacher_bound(c=2.0, k=3, o=0.5, gamma=1.0, n=2500, m1=100) == pytest.approx(first + second, rel=REL)


def test_rademacher_bound_no_hidden_layer_unconstrained_is_finite() -> None:
    # k = 0, c = inf, o = 2, n = 50, m1 = 3: (gamma c)^0 = 1.
    expected = 2 * math.sqrt(LOG16 / 50) * (1 + 1) + 2 * 1 * math.sqrt(2 * math.log(6) / 50)
    assert rademacher_bound(c=math.inf, k=0, o=2.0, gamma=1.0, n=50, m1=3) == pytest.approx(expected, rel=REL)


def test_rademacher_bound_unconstrained_is_inf() -> None:
    assert rademacher_bound(c=math.inf, k=2, o=1.0, gamma=0.25, n=10, m1=3) == math.inf


def test_rademacher_bound_zero_output_layer_is_zero_even_unconstrained() -> None:
    # o = 0 leaves only the zero function: complexity 0 for every c, so 0 * inf is taken as 0, not nan.
    assert rademacher_bound(c=math.inf, k=2, o=0.0, gamma=1.0, n=10, m1=3) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"o": -1.0}, "Expected `o` to be a non-negative number, got -1.0"),
        ({"o": math.nan}, "Expected `o` to be a non-negative number, got nan"),
        ({"n": 0}, "Expected `n` to be an integer >= 1, got 0"),
        ({"n": 10.0}, "Expected `n` to be an integer >= 1, got 10.0"),
        ({"c": -2}, "Expected `c` to be a positive number or inf, got -2"),
        ({"m1": 0}, "Expected `m1` to be an integer >= 1, got 0"),
    ],
)
def test_rademacher_bound_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"c": 1.0, "k": 1, "o": 1.0, "gamma": 1.0, "n": 10, "m1": 4, **kwargs}
    with pytest.raises(ValueError, match=f"^{message}$"):
        rademacher_bound(**arguments)


# ---------------------------------------------------------------------------------------------------------------------
# output_sup_bound (Lemma 2)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("o_max", "c", "k", "gamma", "expected"),
    [
        (3.0, 0.5, 2, 1.0, 3.0 * max(1, 0.5**2)),  # contracting: max(1, 0.25) = 1
        (2.0, 4.0, 5, 0.25, 2.0 * max(1, 1.0**5)),  # critical, sigmoid
        (1.5, 3.0, 2, 1.0, 1.5 * max(1, 3.0**2)),  # expanding: 1.5 * 9
        (0.7, math.inf, 0, 1.0, 0.7 * 1),  # k = 0: (gamma c)^0 = 1
    ],
)
def test_output_sup_bound(o_max: float, c: float, k: int, gamma: float, expected: float) -> None:
    assert output_sup_bound(o_max=o_max, c=c, k=k, gamma=gamma) == pytest.approx(expected, rel=REL)


def test_output_sup_bound_unconstrained() -> None:
    assert output_sup_bound(o_max=1.0, c=math.inf, k=1, gamma=1.0) == math.inf
    assert output_sup_bound(o_max=0.0, c=math.inf, k=1, gamma=1.0) == 0.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"o_max": -0.5}, "Expected `o_max` to be a non-negative number, got -0.5"),
        ({"c": 0}, "Expected `c` to be a positive number or inf, got 0"),
        ({"k": -2}, "Expected `k` to be an integer >= 0, got -2"),
        ({"gamma": -1.0}, "Expected `gamma` to be a positive finite number, got -1.0"),
    ],
)
def test_output_sup_bound_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"o_max": 1.0, "c": 1.0, "k": 1, "gamma": 1.0, **kwargs}
    with pytest.raises(ValueError, match=f"^{message}$"):
        output_sup_bound(**arguments)


# ---------------------------------------------------------------------------------------------------------------------
# generalization_bound_fixed_output (Lemma 4)
# ---------------------------------------------------------------------------------------------------------------------


def test_generalization_bound_fixed_output_contracting() -> None:
    # A0 = 2, rho = 1.5, o = 3, c = 0.5, k = 2, ReLU, n = 100, m1 = 10, delta = 0.05.
    confidence = 2 * math.sqrt(math.log(1 / 0.05) / (2 * 100))
    bracket = math.sqrt(3 * LOG16) * ((1 + 0.5 + 0.25) + 0.25) + 0.25 * math.sqrt(2 * math.log(20))
    expected = confidence + 2 * 3 * 1.5 / math.sqrt(100) * bracket
    actual = generalization_bound_fixed_output(a0=2.0, rho=1.5, o=3.0, c=0.5, k=2, gamma=1.0, n=100, m1=10, delta=0.05)
    assert actual == pytest.approx(expected, rel=REL)


def test_generalization_bound_fixed_output_critical_sigmoid() -> None:
    # A0 = 1, rho = 1, o = 1, c = 4, k = 1, sigmoid, n = 1000, m1 = 50, delta = 0.1.
    confidence = 1 * math.sqrt(math.log(10) / 2000)
    bracket = math.sqrt(2 * LOG16) * ((1 + 1) + 1) + 1 * math.sqrt(2 * math.log(100))
    expected = confidence + 2 * 1 * 1 / math.sqrt(1000) * bracket
    actual = generalization_bound_fixed_output(a0=1.0, rho=1.0, o=1.0, c=4.0, k=1, gamma=0.25, n=1000, m1=50, delta=0.1)
    assert actual == pytest.approx(expected, rel=REL)


def test_generalization_bound_fixed_output_expanding() -> None:
    # A0 = 5, rho = 0.5, o = 2, c = 3, k = 2, tanh, n = 2000, m1 = 20, delta = 0.01.
    confidence = 5 * math.sqrt(math.log(100) / 4000)
    bracket = math.sqrt(3 * LOG16) * ((1 + 3 + 9) + 9) + 9 * math.sqrt(2 * math.log(40))
    expected = confidence + 2 * 2 * 0.5 / math.sqrt(2000) * bracket
    actual = generalization_bound_fixed_output(a0=5.0, rho=0.5, o=2.0, c=3.0, k=2, gamma=1.0, n=2000, m1=20, delta=0.01)
    assert actual == pytest.approx(expected, rel=REL)


def test_generalization_bound_fixed_output_no_hidden_layer_and_unconstrained() -> None:
    # k = 0, c = inf: bracket = sqrt(log 16) * 2 + sqrt(2 log(2 m1)).
    confidence = 1 * math.sqrt(math.log(20) / 200)
    bracket = math.sqrt(LOG16) * 2 + math.sqrt(2 * math.log(8))
    expected = confidence + 2 * 1 * 1 / math.sqrt(100) * bracket
    kwargs = {"a0": 1.0, "rho": 1.0, "o": 1.0, "gamma": 1.0, "n": 100, "m1": 4, "delta": 0.05}
    assert generalization_bound_fixed_output(c=math.inf, k=0, **kwargs) == pytest.approx(expected, rel=REL)
    assert generalization_bound_fixed_output(c=math.inf, k=1, **kwargs) == math.inf
    # A loss that ignores f (rho = 0) keeps only the confidence term, even unconstrained.
    kwargs["rho"] = 0.0
    assert generalization_bound_fixed_output(c=math.inf, k=3, **kwargs) == pytest.approx(confidence, rel=REL)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"a0": -1.0}, "Expected `a0` to be a non-negative number, got -1.0"),
        ({"rho": -1.0}, "Expected `rho` to be a non-negative number, got -1.0"),
        ({"o": -3}, "Expected `o` to be a non-negative number, got -3"),
        ({"delta": 0.0}, r"Expected `delta` to be in \(0, 1\), got 0.0"),
        ({"delta": 1.0}, r"Expected `delta` to be in \(0, 1\), got 1.0"),
        ({"n": -5}, "Expected `n` to be an integer >= 1, got -5"),
        ({"gamma": 0}, "Expected `gamma` to be a positive finite number, got 0"),
    ],
)
def test_generalization_bound_fixed_output_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"a0": 1.0, "rho": 1.0, "o": 1.0, "c": 1.0, "k": 1, "gamma": 1.0, "n": 10, "m1": 4, "delta": 0.05}
    with pytest.raises(ValueError, match=f"^{message}$"):
        generalization_bound_fixed_output(**{**arguments, **kwargs})


# ---------------------------------------------------------------------------------------------------------------------
# mse_generalization_bound (Theorem 5)
# ---------------------------------------------------------------------------------------------------------------------


def test_mse_generalization_bound_contracting() -> None:
    # c = 0.5, k = 2, ReLU, n = 500, m1 = 1000, delta = 0.05, B0 = 10, ||T||_1 = 2.5: gamma c = 0.5.
    first = math.sqrt((math.log(20) + 2 * math.log(4.5)) / 1000) * (10**2 + 3.5**2 * max(1, 0.5**4))
    bracket = math.sqrt(3 * LOG16) * ((1 + 0.5 + 0.25) + 0.25) + 0.25 * math.sqrt(2 * math.log(2000))
    second = 2 / math.sqrt(500) * (10 + 3.5 * max(1, 0.25)) * 3.5 * bracket
    actual = mse_generalization_bound(c=0.5, k=2, gamma=1.0, n=500, m1=1000, delta=0.05, b0=10.0, output_l1=2.5)
    assert actual == pytest.approx(first + second, rel=REL)


def test_mse_generalization_bound_critical_sigmoid() -> None:
    # c = 4, k = 1, sigmoid, n = 1000, m1 = 20, delta = 0.1, B0 = 1, ||T||_1 = 0: gamma c = 1.
    first = math.sqrt((math.log(10) + 2 * math.log(2)) / 2000) * (1 + 1**2 * 1)
    bracket = math.sqrt(2 * LOG16) * ((1 + 1) + 1) + 1 * math.sqrt(2 * math.log(40))
    second = 2 / math.sqrt(1000) * (1 + 1 * 1) * 1 * bracket
    actual = mse_generalization_bound(c=4.0, k=1, gamma=0.25, n=1000, m1=20, delta=0.1, b0=1.0, output_l1=0.0)
    assert actual == pytest.approx(first + second, rel=REL)


def test_mse_generalization_bound_expanding() -> None:
    # c = 1.5, k = 2, tanh, n = 2000, m1 = 50, delta = 0.01, B0 = 3, ||T||_1 = 1: gamma c = 1.5.
    # max(1, 1.5^4) = 5.0625 and max(1, 1.5^2) = 2.25.
    first = math.sqrt((math.log(100) + 2 * math.log(3)) / 4000) * (9 + 2**2 * 5.0625)
    bracket = math.sqrt(3 * LOG16) * ((1 + 1.5 + 2.25) + 2.25) + 2.25 * math.sqrt(2 * math.log(100))
    second = 2 / math.sqrt(2000) * (3 + 2 * 2.25) * 2 * bracket
    actual = mse_generalization_bound(c=1.5, k=2, gamma=1.0, n=2000, m1=50, delta=0.01, b0=3.0, output_l1=1.0)
    assert actual == pytest.approx(first + second, rel=REL)


def test_mse_generalization_bound_no_hidden_layer_and_unconstrained() -> None:
    # k = 0, c = inf, n = 100, m1 = 4, delta = 0.05, B0 = 2, ||T||_1 = 1: every power of gamma c is 1.
    first = math.sqrt((math.log(20) + 2 * math.log(3)) / 200) * (4 + 4 * 1)
    bracket = math.sqrt(LOG16) * 2 + math.sqrt(2 * math.log(8))
    second = 2 / math.sqrt(100) * (2 + 2 * 1) * 2 * bracket
    kwargs = {"gamma": 1.0, "n": 100, "m1": 4, "delta": 0.05, "b0": 2.0, "output_l1": 1.0}
    assert mse_generalization_bound(c=math.inf, k=0, **kwargs) == pytest.approx(first + second, rel=REL)
    assert mse_generalization_bound(c=math.inf, k=1, **kwargs) == math.inf
    assert mse_generalization_bound(c=math.inf, k=1, **{**kwargs, "output_l1": 0.0, "b0": 0.0}) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"b0": -1.0}, "Expected `b0` to be a non-negative number, got -1.0"),
        ({"output_l1": -0.1}, "Expected `output_l1` to be a non-negative number, got -0.1"),
        ({"delta": 1.5}, r"Expected `delta` to be in \(0, 1\), got 1.5"),
        ({"c": -1.0}, "Expected `c` to be a positive number or inf, got -1.0"),
        ({"k": 2.0}, "Expected `k` to be an integer >= 0, got 2.0"),
        ({"n": 0}, "Expected `n` to be an integer >= 1, got 0"),
    ],
)
def test_mse_generalization_bound_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {"c": 1.0, "k": 1, "gamma": 1.0, "n": 10, "m1": 4, "delta": 0.05, "b0": 1.0, "output_l1": 1.0}
    with pytest.raises(ValueError, match=f"^{message}$"):
        mse_generalization_bound(**{**arguments, **kwargs})


# ---------------------------------------------------------------------------------------------------------------------
# mae_generalization_bound (Remark 3, as transcribed)
# ---------------------------------------------------------------------------------------------------------------------


def test_mae_generalization_bound_contracting() -> None:
    # c = 0.5, k = 2, ReLU, n = 500, m1 = 1000, delta = 0.05, B0 = 10, ||T||_1 = 2.5, delta0 = 0.05.
    scale = (1 - 0.05) * (10 + 3.5 * 0.25) ** 2 / math.sqrt(500)
    bracket = (
        math.sqrt(0.5 * math.log(40) + math.log(4.5))
        + 2 * math.sqrt(5 * math.log(4))
        + 2 * math.sqrt(2 * math.log(2000))
    )
    actual = mae_generalization_bound(
        c=0.5, k=2, gamma=1.0, n=500, m1=1000, delta=0.05, b0=10.0, output_l1=2.5, delta0=0.05
    )
    assert actual == pytest.approx(scale * bracket, rel=REL)


def test_mae_generalization_bound_critical_sigmoid() -> None:
    # c = 4, k = 1, sigmoid, n = 1000, m1 = 20, delta = 0.1, B0 = 1, ||T||_1 = 0, delta0 = 0: (c gamma)^1 = 1.
    scale = 1 * (1 + 1 * 1) ** 2 / math.sqrt(1000)
    bracket = (
        math.sqrt(0.5 * math.log(20) + math.log(2)) + 2 * math.sqrt(4 * math.log(4)) + 2 * math.sqrt(2 * math.log(40))
    )
    actual = mae_generalization_bound(
        c=4.0, k=1, gamma=0.25, n=1000, m1=20, delta=0.1, b0=1.0, output_l1=0.0, delta0=0.0
    )
    assert actual == pytest.approx(scale * bracket, rel=REL)


def test_mae_generalization_bound_expanding() -> None:
    # c = 2, k = 3, tanh, n = 2000, m1 = 50, delta = 0.01, B0 = 3, ||T||_1 = 1, delta0 = 0.2: (c gamma)^3 = 8.
    scale = 0.8 * (3 + 2 * 8) ** 2 / math.sqrt(2000)
    bracket = (
        math.sqrt(0.5 * math.log(200) + math.log(3)) + 2 * math.sqrt(6 * math.log(4)) + 2 * math.sqrt(2 * math.log(100))
    )
    actual = mae_generalization_bound(
        c=2.0, k=3, gamma=1.0, n=2000, m1=50, delta=0.01, b0=3.0, output_l1=1.0, delta0=0.2
    )
    assert actual == pytest.approx(scale * bracket, rel=REL)


def test_mae_generalization_bound_no_hidden_layer_and_unconstrained() -> None:
    # k = 0, c = inf, n = 100, m1 = 4, delta = 0.05, B0 = 2, ||T||_1 = 1, delta0 = 0.1: (c gamma)^0 = 1.
    scale = 0.9 * (2 + 2 * 1) ** 2 / math.sqrt(100)
    bracket = (
        math.sqrt(0.5 * math.log(40) + math.log(3)) + 2 * math.sqrt(3 * math.log(4)) + 2 * math.sqrt(2 * math.log(8))
    )
    kwargs = {"gamma": 1.0, "n": 100, "m1": 4, "delta": 0.05, "b0": 2.0, "output_l1": 1.0, "delta0": 0.1}
    assert mae_generalization_bound(c=math.inf, k=0, **kwargs) == pytest.approx(scale * bracket, rel=REL)
    assert mae_generalization_bound(c=math.inf, k=2, **kwargs) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"delta0": 1.0}, r"Expected `delta0` to be in \[0, 1\), got 1.0"),
        ({"delta0": -0.1}, r"Expected `delta0` to be in \[0, 1\), got -0.1"),
        ({"b0": -2.0}, "Expected `b0` to be a non-negative number, got -2.0"),
        ({"output_l1": math.nan}, "Expected `output_l1` to be a non-negative number, got nan"),
        ({"m1": 0}, "Expected `m1` to be an integer >= 1, got 0"),
        ({"delta": 0}, r"Expected `delta` to be in \(0, 1\), got 0"),
    ],
)
def test_mae_generalization_bound_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {
        "c": 1.0,
        "k": 1,
        "gamma": 1.0,
        "n": 10,
        "m1": 4,
        "delta": 0.05,
        "b0": 1.0,
        "output_l1": 1.0,
        "delta0": 0.1,
    }
    with pytest.raises(ValueError, match=f"^{message}$"):
        mae_generalization_bound(**{**arguments, **kwargs})


# ---------------------------------------------------------------------------------------------------------------------
# classification_generalization_bound_fixed_output (Lemma 6)
# ---------------------------------------------------------------------------------------------------------------------


def test_classification_bound_fixed_output_contracting() -> None:
    # A0 = 2, rho = 1, o = (1, 2, 0.5), c = 0.5, k = 2, ReLU, n = 100, m1 = 10, delta = 0.05.
    confidence = 2 * math.sqrt(math.log(20) / 200)
    bracket = math.sqrt(3 * LOG16) * ((1 + 0.5 + 0.25) + 0.25) + 0.25 * math.sqrt(2 * math.log(20))
    expected = confidence + 2 * math.sqrt(2) * 1 / math.sqrt(100) * (1 + 2 + 0.5) * bracket
    actual = classification_generalization_bound_fixed_output(
        a0=2.0, rho=1.0, o=[1.0, 2.0, 0.5], c=0.5, k=2, gamma=1.0, n=100, m1=10, delta=0.05
    )
    assert actual == pytest.approx(expected, rel=REL)


def test_classification_bound_fixed_output_critical_sigmoid() -> None:
    # A0 = 1, rho = 2, o = (0.5, 0.5), c = 4, k = 2, sigmoid, n = 1000, m1 = 500, delta = 0.1.
    confidence = 1 * math.sqrt(math.log(10) / 2000)
    bracket = math.sqrt(3 * LOG16) * ((1 + 1 + 1) + 1) + 1 * math.sqrt(2 * math.log(1000))
    expected = confidence + 2 * math.sqrt(2) * 2 / math.sqrt(1000) * (0.5 + 0.5) * bracket
    actual = classification_generalization_bound_fixed_output(
        a0=1.0, rho=2.0, o=(0.5, 0.5), c=4.0, k=2, gamma=0.25, n=1000, m1=500, delta=0.1
    )
    assert actual == pytest.approx(expected, rel=REL)


def test_classification_bound_fixed_output_expanding() -> None:
    # A0 = 3, rho = 0.5, o = (1, 1, 1, 1), c = 2, k = 3, tanh, n = 2500, m1 = 100, delta = 0.01.
    confidence = 3 * math.sqrt(math.log(100) / 5000)
    bracket = math.sqrt(4 * LOG16) * ((1 + 2 + 4 + 8) + 8) + 8 * math.sqrt(2 * math.log(200))
    expected = confidence + 2 * math.sqrt(2) * 0.5 / math.sqrt(2500) * 4 * bracket
    actual = classification_generalization_bound_fixed_output(
        a0=3.0, rho=0.5, o=[1.0, 1.0, 1.0, 1.0], c=2.0, k=3, gamma=1.0, n=2500, m1=100, delta=0.01
    )
    assert actual == pytest.approx(expected, rel=REL)


def test_classification_bound_fixed_output_no_hidden_layer_and_unconstrained() -> None:
    # k = 0, c = inf, A0 = 1, rho = 1, o = (1, 1), n = 100, m1 = 4, delta = 0.05.
    confidence = 1 * math.sqrt(math.log(20) / 200)
    bracket = math.sqrt(LOG16) * 2 + math.sqrt(2 * math.log(8))
    expected = confidence + 2 * math.sqrt(2) / math.sqrt(100) * 2 * bracket
    kwargs = {"a0": 1.0, "rho": 1.0, "o": [1.0, 1.0], "gamma": 1.0, "n": 100, "m1": 4, "delta": 0.05}
    assert classification_generalization_bound_fixed_output(c=math.inf, k=0, **kwargs) == pytest.approx(
        expected, rel=REL
    )
    assert classification_generalization_bound_fixed_output(c=math.inf, k=1, **kwargs) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"o": [1.0]}, r"Expected `o` to be a sequence of at least 2 numbers, got \[1.0\]"),
        ({"o": 1.0}, "Expected `o` to be a sequence of at least 2 numbers, got 1.0"),
        ({"o": [1.0, -1.0]}, "Expected every entry of `o` to be a non-negative number, got -1.0"),
        ({"rho": -1}, "Expected `rho` to be a non-negative number, got -1"),
        ({"delta": 2.0}, r"Expected `delta` to be in \(0, 1\), got 2.0"),
        ({"k": -1}, "Expected `k` to be an integer >= 0, got -1"),
    ],
)
def test_classification_bound_fixed_output_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {
        "a0": 1.0,
        "rho": 1.0,
        "o": [1.0, 1.0],
        "c": 1.0,
        "k": 1,
        "gamma": 1.0,
        "n": 10,
        "m1": 4,
        "delta": 0.05,
    }
    with pytest.raises(ValueError, match=f"^{message}$"):
        classification_generalization_bound_fixed_output(**{**arguments, **kwargs})


# ---------------------------------------------------------------------------------------------------------------------
# cross_entropy_generalization_bound (Theorem 7)
# ---------------------------------------------------------------------------------------------------------------------


def test_cross_entropy_bound_contracting() -> None:
    # c = 0.5, k = 2, ReLU, n = 500, m1 = 500, m2 = 2, delta = 0.05, columns (1.2, 0.8).
    logit_bound = (1.2 + 1 / 2) * max(1, 0.25)  # = 1.7
    first = (2 * logit_bound + math.log(2)) * math.sqrt(
        (math.log(20) + 2 * (math.log(2 * 1.2 + 2) + math.log(2 * 0.8 + 2))) / 1000
    )
    lipschitz = 1 + math.sqrt(1) / (1 + 1 * math.exp(-2 * logit_bound))
    bracket = math.sqrt(3 * LOG16) * ((1 + 0.5 + 0.25) + 0.25) + 0.25 * math.sqrt(2 * math.log(1000))
    second = 2 * math.sqrt(2) / math.sqrt(500) * (2.0 + 1) * lipschitz * bracket
    actual = cross_entropy_generalization_bound(
        c=0.5,
        k=2,
        gamma=1.0,
        n=500,
        m1=500,
        m2=2,
        delta=0.05,
        output_l1inf=1.2,
        output_column_l1=[1.2, 0.8],
        output_l11=2.0,
    )
    assert actual == pytest.approx(first + second, rel=REL)


def test_cross_entropy_bound_critical_sigmoid() -> None:
    # c = 4, k = 3, sigmoid, n = 1000, m1 = 100, m2 = 10, delta = 0.1, columns 0.1 * j for j = 1..10.
    logit_bound = (1.0 + 1 / 10) * 1  # = 1.1
    log_terms = sum(math.log(10 * 0.1 * j + 2) for j in range(1, 11))
    first = (2 * logit_bound + math.log(10)) * math.sqrt((math.log(10) + 2 * log_terms) / 2000)
    lipschitz = 1 + math.sqrt(9) / (1 + 9 * math.exp(-2 * logit_bound))
    bracket = math.sqrt(4 * LOG16) * ((1 + 1 + 1 + 1) + 1) + 1 * math.sqrt(2 * math.log(200))
    second = 2 * math.sqrt(2) / math.sqrt(1000) * (5.5 + 1) * lipschitz * bracket
    actual = cross_entropy_generalization_bound(
        c=4.0,
        k=3,
        gamma=0.25,
        n=1000,
        m1=100,
        m2=10,
        delta=0.1,
        output_l1inf=1.0,
        output_column_l1=[0.1 * j for j in range(1, 11)],
        output_l11=5.5,
    )
    assert actual == pytest.approx(first + second, rel=REL)


def test_cross_entropy_bound_expanding() -> None:
    # c = 2, k = 2, tanh, n = 2000, m1 = 20, m2 = 3, delta = 0.01, columns (0.5, 2, 1): max(1, 2^2) = 4.
    logit_bound = (2.0 + 1 / 3) * 4
    first = (2 * logit_bound + math.log(3)) * math.sqrt(
        (math.log(100) + 2 * (math.log(3 * 0.5 + 2) + math.log(3 * 2.0 + 2) + math.log(3 * 1.0 + 2))) / 4000
    )
    lipschitz = 1 + math.sqrt(2) / (1 + 2 * math.exp(-2 * logit_bound))
    bracket = math.sqrt(3 * LOG16) * ((1 + 2 + 4) + 4) + 4 * math.sqrt(2 * math.log(40))
    second = 2 * math.sqrt(2) / math.sqrt(2000) * (3.5 + 1) * lipschitz * bracket
    actual = cross_entropy_generalization_bound(
        c=2.0,
        k=2,
        gamma=1.0,
        n=2000,
        m1=20,
        m2=3,
        delta=0.01,
        output_l1inf=2.0,
        output_column_l1=(0.5, 2.0, 1.0),
        output_l11=3.5,
    )
    assert actual == pytest.approx(first + second, rel=REL)


def test_cross_entropy_bound_no_hidden_layer_and_unconstrained() -> None:
    # k = 0, c = inf, n = 100, m1 = 4, m2 = 2, delta = 0.05, columns (1, 1): every power of gamma c is 1.
    logit_bound = (1.0 + 0.5) * 1
    first = (2 * logit_bound + math.log(2)) * math.sqrt((math.log(20) + 2 * 2 * math.log(4)) / 200)
    lipschitz = 1 + 1 / (1 + math.exp(-3))
    bracket = math.sqrt(LOG16) * 2 + math.sqrt(2 * math.log(8))
    second = 2 * math.sqrt(2) / math.sqrt(100) * 3 * lipschitz * bracket
    kwargs = {
        "gamma": 1.0,
        "n": 100,
        "m1": 4,
        "m2": 2,
        "delta": 0.05,
        "output_l1inf": 1.0,
        "output_column_l1": [1.0, 1.0],
        "output_l11": 2.0,
    }
    assert cross_entropy_generalization_bound(c=math.inf, k=0, **kwargs) == pytest.approx(first + second, rel=REL)
    assert cross_entropy_generalization_bound(c=math.inf, k=1, **kwargs) == math.inf
    zero_output = {**kwargs, "output_l1inf": 0.0, "output_column_l1": [0.0, 0.0], "output_l11": 0.0}
    assert cross_entropy_generalization_bound(c=math.inf, k=1, **zero_output) == math.inf


def test_cross_entropy_bound_accepts_norms_rounded_in_float32() -> None:
    columns = [0.1, 0.2, 0.3]
    kwargs = {"c": 1.0, "k": 1, "gamma": 1.0, "n": 100, "m1": 4, "m2": 3, "delta": 0.05}
    exact = cross_entropy_generalization_bound(
        output_l1inf=0.3, output_column_l1=columns, output_l11=0.6000000000000001, **kwargs
    )
    rounded = cross_entropy_generalization_bound(output_l1inf=0.3, output_column_l1=columns, output_l11=0.6, **kwargs)
    assert rounded == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"m2": 1, "output_column_l1": [1.0], "output_l11": 1.0},
            "Expected `m2` to be an integer >= 2, got 1",
        ),
        ({"output_column_l1": [1.0, 0.5, 0.5]}, "Expected `output_column_l1` to hold `m2` = 2 norms, got 3"),
        ({"output_column_l1": []}, r"Expected `output_column_l1` to be a sequence of at least 1 numbers, got \[\]"),
        (
            {"output_column_l1": [1.0, -0.5]},
            "Expected every entry of `output_column_l1` to be a non-negative number, got -0.5",
        ),
        # ||T||_{1,inf} and ||T||_{1,1} swapped.
        (
            {"output_l1inf": 1.5, "output_l11": 1.0},
            r"Expected `output_l11` to be at least the sum of `output_column_l1` \(1.5\), got 1.0",
        ),
        (
            {"output_l1inf": 0.5},
            r"Expected `output_l1inf` to be at least the largest of `output_column_l1` \(1.0\), got 0.5",
        ),
        ({"output_l1inf": -1.0}, "Expected `output_l1inf` to be a non-negative number, got -1.0"),
        ({"delta": 0.0}, r"Expected `delta` to be in \(0, 1\), got 0.0"),
        ({"c": 0.0}, "Expected `c` to be a positive number or inf, got 0.0"),
    ],
)
def test_cross_entropy_bound_rejects_bad_input(kwargs: dict, message: str) -> None:
    arguments = {
        "c": 1.0,
        "k": 1,
        "gamma": 1.0,
        "n": 10,
        "m1": 4,
        "m2": 2,
        "delta": 0.05,
        "output_l1inf": 1.0,
        "output_column_l1": [1.0, 0.5],
        "output_l11": 1.5,
    }
    with pytest.raises(ValueError, match=f"^{message}$"):
        cross_entropy_generalization_bound(**{**arguments, **kwargs})


# ---------------------------------------------------------------------------------------------------------------------
# depth_regime and asymptotic_depth_factor (Remark 1)
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("c", "gamma", "expected"),
    [
        (0.5, 1.0, "contracting"),
        (3.9, 0.25, "contracting"),
        (1.0, 1.0, "critical"),
        (4.0, 0.25, "critical"),
        (1.0 + 1e-12, 1.0, "critical"),  # equal up to rounding
        (4.1, 0.25, "expanding"),
        (2.0, 1.0, "expanding"),
        (math.inf, 0.25, "expanding"),
    ],
)
def test_depth_regime(c: float, gamma: float, expected: str) -> None:
    assert depth_regime(c=c, gamma=gamma) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"c": -1.0}, "Expected `c` to be a positive number or inf, got -1.0"),
        ({"gamma": 0.0}, "Expected `gamma` to be a positive finite number, got 0.0"),
    ],
)
def test_depth_regime_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        depth_regime(**{"c": 1.0, "gamma": 1.0, **kwargs})


@pytest.mark.parametrize(
    ("c", "k", "gamma", "expected"),
    [
        (0.5, 4, 1.0, math.sqrt(4) * (1 - 0.5**5) / (1 - 0.5)),  # contracting: 2 * 0.96875 / 0.5
        (2.0, 6, 0.25, math.sqrt(6) * (1 - 0.5**7) / (1 - 0.5)),  # contracting, sigmoid
        (4.0, 4, 0.25, 4**1.5),  # critical, sigmoid
        (1.0, 9, 1.0, 27.0),  # critical: 9^{3/2}
        (3.0, 2, 1.0, math.sqrt(2) * (3**3 - 1) / (3 - 1)),  # expanding: 13 sqrt(2)
        (1e300, 0, 1.0, 0.0),  # k = 0: sqrt(0) * 1
        (math.inf, 0, 1.0, 0.0),
    ],
)
def test_asymptotic_depth_factor(c: float, k: int, gamma: float, expected: float) -> None:
    assert asymptotic_depth_factor(c=c, k=k, gamma=gamma) == pytest.approx(expected, rel=REL)


def test_asymptotic_depth_factor_unconstrained_is_inf() -> None:
    assert asymptotic_depth_factor(c=math.inf, k=3, gamma=1.0) == math.inf
    assert asymptotic_depth_factor(c=1e200, k=3, gamma=1.0) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"k": -1}, "Expected `k` to be an integer >= 0, got -1"),
        ({"c": math.nan}, "Expected `c` to be a positive number or inf, got nan"),
        ({"gamma": -0.25}, "Expected `gamma` to be a positive finite number, got -0.25"),
    ],
)
def test_asymptotic_depth_factor_rejects_bad_input(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        asymptotic_depth_factor(**{"c": 1.0, "k": 2, "gamma": 1.0, **kwargs})


# ---------------------------------------------------------------------------------------------------------------------
# rescaled_l1inf_norm
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("weights", "biases", "scale", "expected"),
    [
        ([1.0, 2.0], [3.0, 0.5], 4.0, max(3.0 + 4 * 1.0, 0.5 + 4 * 2.0)),  # 8.5: scaling changes the argmax
        ([1.0, 2.0], [3.0, 0.5], 0.5, max(3.0 + 1.0, 0.5 + 2.0)),  # s < 1: left as measured
        ([1.0, 2.0], [3.0, 0.5], 1.0, 4.0),
        ([0.25, 0.75, 0.5], [0.0, 0.0, 0.0], 10.0, 7.5),  # no bias
        ([0.0], [2.0], math.inf, 2.0),  # a neuron with no weights ignores the scale
    ],
)
def test_rescaled_l1inf_norm(weights: list[float], biases: list[float], scale: float, expected: float) -> None:
    assert rescaled_l1inf_norm(weights, biases, scale) == pytest.approx(expected, rel=REL)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (([1.0], [1.0, 2.0], 2.0), "Expected `weight_row_l1` and `bias_abs` to have the same length, got 1 and 2"),
        (([], [], 2.0), r"Expected `weight_row_l1` to be a sequence of at least 1 numbers, got \[\]"),
        (([-1.0], [0.0], 2.0), "Expected every entry of `weight_row_l1` to be a non-negative number, got -1.0"),
        (([1.0], [-0.5], 2.0), "Expected every entry of `bias_abs` to be a non-negative number, got -0.5"),
        (([1.0], [0.5], -2.0), "Expected `input_scale` to be a non-negative number, got -2.0"),
    ],
)
def test_rescaled_l1inf_norm_rejects_bad_input(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=f"^{message}$"):
        rescaled_l1inf_norm(*args)


# ---------------------------------------------------------------------------------------------------------------------
# Monotonicity: every bound grows with c and shrinks with n
# ---------------------------------------------------------------------------------------------------------------------

BoundOfCN = Callable[[float, int, int], float]

BOUNDS_OF_C_N_K: dict[str, BoundOfCN] = {
    "rademacher": lambda c, n, k: rademacher_bound(c=c, k=k, o=1.5, gamma=1.0, n=n, m1=20),
    "fixed_output": lambda c, n, k: generalization_bound_fixed_output(
        a0=1.0, rho=2.0, o=1.5, c=c, k=k, gamma=1.0, n=n, m1=20, delta=0.05
    ),
    "mse": lambda c, n, k: mse_generalization_bound(
        c=c, k=k, gamma=0.25, n=n, m1=20, delta=0.05, b0=2.0, output_l1=1.5
    ),
    "mae": lambda c, n, k: mae_generalization_bound(
        c=c, k=k, gamma=1.0, n=n, m1=20, delta=0.05, b0=2.0, output_l1=1.5, delta0=0.1
    ),
    "classification_fixed_output": lambda c, n, k: classification_generalization_bound_fixed_output(
        a0=1.0, rho=1.0, o=[1.0, 0.5, 2.0], c=c, k=k, gamma=1.0, n=n, m1=20, delta=0.05
    ),
    "cross_entropy": lambda c, n, k: cross_entropy_generalization_bound(
        c=c,
        k=k,
        gamma=1.0,
        n=n,
        m1=20,
        m2=3,
        delta=0.05,
        output_l1inf=2.0,
        output_column_l1=[1.0, 0.5, 2.0],
        output_l11=3.5,
    ),
}

RADII = [0.05, 0.5, 1.0, 1.5, 4.0, 50.0, math.inf]
SAMPLE_SIZES = [1, 10, 500, 10_000, 10**9]


@pytest.mark.parametrize("name", sorted(BOUNDS_OF_C_N_K))
@pytest.mark.parametrize("k", [1, 2, 5])
def test_bounds_increase_strictly_with_c(name: str, k: int) -> None:
    bound = BOUNDS_OF_C_N_K[name]
    values = [bound(c, 100, k) for c in RADII]
    assert all(small < large for small, large in itertools.pairwise(values)), values
    assert values[-1] == math.inf


@pytest.mark.parametrize("name", sorted(BOUNDS_OF_C_N_K))
def test_bounds_without_hidden_layer_ignore_c(name: str) -> None:
    bound = BOUNDS_OF_C_N_K[name]
    values = [bound(c, 100, 0) for c in RADII]
    assert all(math.isfinite(value) for value in values)
    assert values == pytest.approx([values[0]] * len(values), rel=REL)


@pytest.mark.parametrize("name", sorted(BOUNDS_OF_C_N_K))
@pytest.mark.parametrize("k", [0, 1, 3])
@pytest.mark.parametrize("c", [0.5, 1.0, 2.0])
def test_bounds_decrease_strictly_with_n(name: str, k: int, c: float) -> None:
    bound = BOUNDS_OF_C_N_K[name]
    values = [bound(c, n, k) for n in SAMPLE_SIZES]
    assert all(large > small for large, small in itertools.pairwise(values)), values


@pytest.mark.parametrize("name", sorted(BOUNDS_OF_C_N_K))
@settings(max_examples=60, deadline=None)
@given(
    radii=st.lists(st.floats(min_value=1e-3, max_value=1e3), min_size=2, max_size=2),
    sizes=st.lists(st.integers(min_value=1, max_value=10**8), min_size=2, max_size=2),
    k=st.integers(min_value=0, max_value=8),
)
def test_bounds_are_monotone_property(name: str, radii: list[float], sizes: list[int], k: int) -> None:
    bound = BOUNDS_OF_C_N_K[name]
    c_small, c_large = sorted(radii)
    n_small, n_large = sorted(sizes)
    for n in (n_small, n_large):
        assert bound(c_small, n, k) <= bound(c_large, n, k) * (1 + 1e-12)
    for c in (c_small, c_large):
        assert bound(c, n_large, k) <= bound(c, n_small, k) * (1 + 1e-12)
