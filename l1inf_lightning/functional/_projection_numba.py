r"""Fused per-row L1-ball projection on CPU, compiled with numba (the ``"numba"`` path of ``project_l1_ball_``).

One neuron at a time, in place, on the stored parameters (float32 or float64; the bias may be a separate tensor):

1. one read of the row from memory: :math:`|v_p|` into a float64 scratch row (in cache), and :math:`\|v\|_1`;
2. a row inside the ball is left untouched (decided exactly: a float64 sum with its error bound; within that
   bound of :math:`c`, Rump's split of the row into parts that sum exactly and parts that sum with a tiny error,
   and Shewchuk's exact summation only within that error);
3. :math:`\theta` by Michelot's fixed point (1986), vectorized passes over the cached row, compacting the
   survivors once fewer than half are left (the variant of Condat, Math. Program. 158, 2016);
4. one write: :math:`w_p = \operatorname{sign}(v_p)\,\mathrm{RZ}(|v_p| - \theta)`, rounded toward zero in the
   stored dtype (in registers: the float64 difference, its TwoSum error, and the stored dtype's predecessor
   where rounding to nearest went up, so the pass vectorizes), so no magnitude grows; if the float64 sum of the
   written row cannot certify :math:`\|w\|_1 \le c`, the exact decision of step 2 decides, and :math:`\theta`
   is raised and the row written again until the stored row's exact L1 norm is at most :math:`c` (issue 13,
   item 2). Float32 rows almost never need it.

This module imports numba; ``projection.py`` imports it only on the first projection that takes this path.
"""

from __future__ import annotations

import math

import numba
import numpy as np

_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).smallest_subnormal)
# Sums of magnitudes may be reassociated (SIMD): their error bound below holds for any order of summation.
_REASSOC = {"reassoc"}


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def _load_magnitudes(bias, weight, j, has_bias, a):  # pragma: no cover - compiled
    """``a[:d] = |[bias[j], weight[j]]|`` in float64; returns their (float64, any-order) sum."""
    offset = 0
    total = 0.0
    if has_bias:
        a[0] = abs(np.float64(bias[j]))
        total += a[0]
        offset = 1
    row = weight[j]
    for i in range(row.shape[0]):
        value = abs(np.float64(row[i]))
        a[offset + i] = value
        total += value
    return total


@numba.njit(cache=True, nogil=True)
def _exceeds(a, d, radius, partials):  # pragma: no cover - compiled
    """Whether the exact sum of ``a[:d]`` exceeds ``radius``: Shewchuk's msum (Python's ``math.fsum``).

    The partials are non-overlapping and ordered by magnitude, so the sign of the exact sum of ``a[:d]`` and
    ``-radius`` is the sign of the largest non-zero partial.
    """
    count = 0
    for index in range(d + 1):
        x = a[index] if index < d else -radius
        kept = 0
        for k in range(count):
            y = partials[k]
            if abs(x) < abs(y):
                x, y = y, x
            high = x + y
            low = y - (high - x)
            if low != 0.0:
                partials[kept] = low
                kept += 1
            x = high
        partials[kept] = x
        count = kept + 1
    for k in range(count - 1, -1, -1):
        if partials[k] != 0.0:
            return partials[k] > 0.0
    return False


@numba.njit(cache=True, nogil=True)
def _split(values, n, sigma, high, low):  # pragma: no cover - compiled
    """Rump's ExtractVector: ``values[i] == high[i] + low[i]`` exactly, ``high[i]`` on the grid of ulp(``sigma``).

    For a power of two ``sigma`` at least every ``values[i] >= 0``: ``|low[i]| <= eps sigma`` (Rump, Ogita and
    Oishi, SIAM J. Sci. Comput. 31, 2008, Lemma 3.2). No fastmath here: reassociation would cancel ``sigma``.
    """
    for i in range(n):
        high[i] = (sigma + values[i]) - sigma
        low[i] = values[i] - high[i]


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def _sum(values, n):  # pragma: no cover - compiled
    """The (any-order) float64 sum of ``values[:n]``; vectorizes."""
    total = 0.0
    for i in range(n):
        total += values[i]
    return total


@numba.njit(cache=True, nogil=True)
def _exceeds_radius(values, n, radius, total, margin, scratch, partials):  # pragma: no cover - compiled
    r"""Whether the exact sum of ``values[:n] >= 0`` exceeds ``radius``, given their float64 sum ``total``.

    ``total (1 \pm margin)`` brackets the exact sum; within that bracket of ``radius``, the row is split on the grid of
    a power of two ``sigma`` above the sum (``_split``): the high parts sum exactly in any order (multiples of
    ulp(sigma) below 2 sigma), their difference with ``radius`` is exact (Sterbenz), and the low parts' sum is off by
    at most ``n^2 eps^2 sigma`` (plus underflow). Only a sum within that of ``radius`` takes Shewchuk's exact sum.
    """
    upper = total * (1.0 + margin)
    if upper <= radius:
        return False
    if total * (1.0 - margin) > radius:
        return True
    sigma = math.ldexp(1.0, math.frexp(upper * (1.0 + 2.0 * _EPS))[1])
    if not np.isfinite(sigma):
        return _exceeds(values, n, radius, partials)
    _split(values, n, sigma, scratch[:n], scratch[n : 2 * n])
    gap = (_sum(scratch[:n], n) - radius) + _sum(scratch[n : 2 * n], n)
    bound = n * n * _EPS * _EPS * sigma + n * _TINY + 2.0 * _EPS * abs(gap)
    if gap > bound:
        return True
    if gap < -bound:
        return False
    return _exceeds(values, n, radius, partials)


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def _keep_above(source, n, theta, target):  # pragma: no cover - compiled
    """Copy the entries of ``source[:n]`` above ``theta`` to the front of ``target`` (may be ``source``).

    Returns their count and (any-order) sum. Branch-free, so it streams through the cached row.
    """
    count = 0
    total = 0.0
    for i in range(n):
        y = source[i]
        above = y > theta
        target[count] = y
        count += above
        total += y if above else 0.0
    return count, total


@numba.njit(cache=True, nogil=True, fastmath=_REASSOC)
def _sum_above(values, n, theta):  # pragma: no cover - compiled
    """Count and (any-order) sum of the entries of ``values[:n]`` above ``theta``; vectorizes."""
    count = 0
    total = 0.0
    for i in range(n):
        y = values[i]
        above = y > theta
        count += above
        total += y if above else 0.0
    return count, total


@numba.njit(cache=True, nogil=True)
def _michelot_threshold(a, d, radius, total, buffer):  # pragma: no cover - compiled
    r"""Michelot's (1986) fixed point :math:`\theta \leftarrow (\sum_{a_p > \theta} a_p - c) / \#\{a_p > \theta\}`.

    From :math:`\theta_0 = (\|a\|_1 - c) / d` the iterates increase and the active sets shrink (nested); it ends
    when a pass keeps every entry of the previous active set. The passes vectorize over the whole cached row while
    at least half of it is active (a Gaussian row at half its norm: four passes, 60 % active, no copy); once fewer
    survive, they are compacted into ``buffer`` (Condat's variant) and the later passes run over those.
    """
    theta = (total - radius) / d
    count = d
    while True:
        active, kept = _sum_above(a, d, theta)
        if active == count or active == 0:
            return theta
        count = active
        # Rounding may nudge theta down; keeping it monotone keeps the active sets nested, so the loop ends.
        theta = max(theta, (kept - radius) / count)
        if 2 * count < d:
            break
    n, kept = _keep_above(a, d, theta, buffer)  # everything else is at or below theta from now on
    if n == 0:  # theta rounded up to the largest entry (a radius far below an ulp of it)
        return theta
    count = n
    while True:
        theta = max(theta, (kept - radius) / count)
        active, kept = _sum_above(buffer, n, theta)
        if active == count or active == 0:
            return theta
        count = active
        if 4 * count < n:  # most survivors are gone: compact again, so that later passes are short
            n, kept = _keep_above(buffer, n, theta, buffer)


@numba.njit(cache=True, nogil=True)
def _write_shrunk(values, magnitudes, theta, written, rounding):  # pragma: no cover - compiled
    r"""``values[i] = sign(values[i]) * RZ(magnitudes[i] - theta)`` in the array's dtype, for every ``i``.

    ``written[i]`` gets the magnitude stored, in float64. The rounding toward zero happens in registers, so the
    loop vectorizes: the float64 difference is rounded to nearest in the stored dtype, and where that rounded
    away from the exact :math:`|v_i| - \theta` (TwoSum's error tells), the predecessor replaces it.
    ``rounding = (narrow, shrink, smallest_normal, subnormal_step)`` for the stored dtype (see ``rounding``).
    """
    narrow, shrink, smallest_normal, subnormal_step = rounding
    for i in range(values.shape[0]):
        magnitude = magnitudes[i]
        # Branch-free: which entries are zeroed, and which round up, is as unpredictable as a coin toss.
        difference = max(magnitude - theta, 0.0)
        # TwoSum: magnitude - theta == difference + error exactly (error is moot where difference is 0).
        virtual = difference - magnitude
        error = (magnitude - (difference - virtual)) + (-theta - virtual)
        nearest = np.float64(np.float32(difference)) if narrow else difference  # exact in float64
        away = (nearest > difference) | ((nearest == difference) & (error < 0.0) & (difference > 0.0))
        # The stored dtype's predecessor of nearest > 0: x (1 - 2^-p) rounded to nearest for a normal x (the
        # product is exact, and lies in (pred(x), midpoint], at the midpoint only for a power of two, whose
        # predecessor it is); one subnormal step at or below the smallest normal.
        below = nearest - subnormal_step if nearest <= smallest_normal else nearest * shrink
        if narrow:
            below = np.float64(np.float32(below))
        stored = below if away else nearest
        values[i] = np.copysign(stored, values[i])  # exact: stored is a value of the stored dtype
        written[i] = stored


def rounding(dtype: np.dtype) -> tuple[bool, float, float, float]:
    """``(narrow, 1 - 2^-p, smallest normal, smallest subnormal)`` of a float dtype with p significand bits."""
    info = np.finfo(dtype)
    return dtype == np.float32, 1.0 - float(info.epsneg), float(info.smallest_normal), float(info.smallest_subnormal)


@numba.njit(cache=True, nogil=True)
def _write_row(bias, weight, j, has_bias, a, theta, written, rounding):  # pragma: no cover - compiled
    """Write row ``j`` shrunk by ``theta``; ``written[:d]`` gets the stored magnitudes."""
    offset = 0
    if has_bias:
        _write_shrunk(bias[j : j + 1], a[:1], theta, written[:1], rounding)
        offset = 1
    _write_shrunk(weight[j], a[offset:], theta, written[offset:], rounding)


@numba.njit(cache=True, nogil=True)
def project_rows(bias, weight, has_bias, radii, rounding):  # pragma: no cover - compiled
    """Project every row ``[bias[j], weight[j]]`` onto the L1 ball of ``radii[j]`` in place (see module doc)."""
    rows, fan_in = weight.shape
    d = fan_in + (1 if has_bias else 0)
    a = np.empty(d, np.float64)
    buffer = np.empty(2 * d, np.float64)
    scratch = np.empty(2 * d, np.float64)
    partials = np.empty(2200, np.float64)  # msum's non-overlapping partials span at most 2098 bits
    margin = (d + 2) * _EPS
    for j in range(rows):
        radius = radii[j]
        if radius == np.inf:
            continue
        total = _load_magnitudes(bias, weight, j, has_bias, a)
        if total * (1.0 + margin) <= radius or not np.isfinite(total):
            continue  # inside the ball; non-finite rows are left as they are (the callback reports them)
        if not _exceeds_radius(a, d, radius, total, margin, scratch, partials):
            continue
        theta = max(_michelot_threshold(a, d, radius, total, buffer), 0.0)
        # Rounded toward zero, the row is almost always inside; the exact check settles the rest. Each miss raises
        # theta by the measured excess per nonzero entry plus a step that starts at an ulp of c and doubles.
        extra = _EPS * radius
        for _ in range(1100):
            _write_row(bias, weight, j, has_bias, a, theta, buffer, rounding)
            nonzeros, total = _sum_above(buffer, d, 0.0)
            if not _exceeds_radius(buffer, d, radius, total, margin, scratch, partials):
                break
            theta += (max(total - radius, 0.0) + extra) / max(nonzeros, 1)
            extra *= 2.0
