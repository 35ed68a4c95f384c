r"""The radius schedule of the radius-aware mode: c annealed geometrically from a start radius to its target."""

from __future__ import annotations

import math

__all__ = ["annealed_radius"]


def annealed_radius(radius: float, start: float, step: int, steps: float) -> float:
    r"""The radius in force after ``step`` optimizer steps, shrinking geometrically from ``start`` to ``radius``.

    .. math::

        c(t) = c_0 \left(\frac{c}{c_0}\right)^{\min(1,\ t / T)}

    so :math:`c(0) = c_0`, :math:`c(t) = c` from :math:`t = T` on, and each step shrinks the ball by the same
    factor. ``steps`` :math:`= T \le 0` (no annealing), ``radius >= start`` or an infinite ``radius`` give ``radius``
    at every step.

    Example:
        >>> [annealed_radius(0.01, 1.0, step, 100) for step in (0, 50, 100, 200)]
        [1.0, 0.1, 0.01, 0.01]
    """
    if steps <= 0 or radius >= start or math.isinf(radius) or step >= steps:
        return radius
    return start * (radius / start) ** (max(step, 0) / steps)
