"""Argument checks shared across the package."""

from __future__ import annotations

import math
import numbers

from torch import Tensor


def is_int(value: object) -> bool:
    """Whether ``value`` is an integer (Python or numpy), not a bool (``True`` as a count is a mistake)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(name: str, value: object, minimum: int = 0) -> int:
    """Return ``value`` as an int if it is an integer (not a bool) >= ``minimum``, else raise naming ``name``.

    >>> check_int("num_folds", 3, minimum=2)
    3
    """
    if not is_int(value) or value < minimum:
        raise ValueError(f"Expected `{name}` to be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_radius(radius: object, name: str = "radius") -> float:
    """Return ``radius`` as a float if it is a positive number or inf, else raise.

    Any real number is accepted (``int``, ``float``, numpy scalars, one-element tensors), except ``bool``. Strings
    are accepted when they spell a number (``"inf"``, ``"0.5"``) since YAML and the command line deliver them
    that way. It is the one radius check of the package: the projection and its callback, ``cv``'s ``--radii``
    and the bounds' ``c`` all go through it, so every place accepts the same spellings of a radius.

    >>> import numpy as np
    >>> check_radius("inf"), check_radius(np.float32(0.5))
    (inf, 0.5)
    """
    value: float | None = None
    if isinstance(radius, bool):
        value = None
    elif isinstance(radius, numbers.Real):  # int, float, numpy scalars, Fraction
        value = float(radius)
    elif isinstance(radius, str):
        try:
            value = float(radius)
        except ValueError:
            value = None
    elif isinstance(radius, Tensor) and radius.numel() == 1:
        value = float(radius.item())
    if value is None or math.isnan(value) or value <= 0:
        raise ValueError(f"Expected `{name}` to be a positive number or inf, got {radius!r}")
    return value
