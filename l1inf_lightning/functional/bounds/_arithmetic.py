"""Argument checks and arithmetic shared by the bounds.

The checks' messages name the argument in backticks and echo the bad value. The arithmetic stays exact at
``c = inf``: ``inf ** 0 == 1``, overflow gives ``inf``, and ``0 * inf == 0`` (never ``nan``; see the package
docstring).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Real


def as_real(value: object) -> float | None:
    # A real number as a float, or None for bools, nan and anything that is not a real number.
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        return None
    return float(value)


def check_positive_finite(value: object, name: str) -> float:
    real = as_real(value)
    if real is None or not 0 < real < math.inf:
        raise ValueError(f"Expected `{name}` to be a positive finite number, got {value!r}")
    return real


def check_non_negative(value: object, name: str) -> float:
    real = as_real(value)
    if real is None or real < 0:
        raise ValueError(f"Expected `{name}` to be a non-negative number, got {value!r}")
    return real


def check_probability(value: object, name: str) -> float:
    real = as_real(value)
    if real is None or not 0 < real < 1:
        raise ValueError(f"Expected `{name}` to be in (0, 1), got {value!r}")
    return real


def as_list(values: object) -> list[object] | None:
    return list(values) if isinstance(values, Iterable) else None


def check_non_negative_sequence(values: Sequence[float], name: str, min_length: int = 1) -> list[float]:
    # Any iterable but a string is accepted, so that NumPy arrays and ``tensor.tolist()`` both work.
    items = None if isinstance(values, (str, bytes)) else as_list(values)
    if items is None or len(items) < min_length:
        raise ValueError(f"Expected `{name}` to be a sequence of at least {min_length} numbers, got {values!r}")
    reals: list[float] = []
    for value in items:
        real = as_real(value)
        if real is None or real < 0:
            raise ValueError(f"Expected every entry of `{name}` to be a non-negative number, got {value!r}")
        reals.append(real)
    return reals


def power(base: float, exponent: int) -> float:
    if exponent == 0:
        return 1.0
    try:
        return base**exponent
    except OverflowError:  # float ** int raises instead of returning inf
        return math.inf


def product(*factors: float) -> float:
    # A zero factor wins over an infinite one: see the module docstring.
    if any(factor == 0 for factor in factors):
        return 0.0
    return math.prod(factors)


def geometric_sum(ratio: float, k: int) -> float:
    # Summed term by term: exact at ratio == 1 and ratio == inf, where the closed form is 0/0 or inf/inf.
    return math.fsum(power(ratio, ell) for ell in range(k + 1))


def confidence_term(a0: float, n: int, delta: float) -> float:
    # Lemma 3: the McDiarmid term A0 * sqrt(log(1/delta) / (2n)) of a loss bounded by A0.
    return product(a0, math.sqrt(math.log(1 / delta) / (2 * n)))
