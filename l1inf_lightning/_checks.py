"""Argument checks shared across the package."""

from __future__ import annotations

from numbers import Integral


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (Python or numpy), not a bool (``True`` as a count is a mistake)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int = 0) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) >= ``minimum``, else raise naming ``name``.

    >>> check_int("num_folds", 3, minimum=2)
    3
    """
    if not is_int(value) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}, got {value!r}")
    return int(value)
