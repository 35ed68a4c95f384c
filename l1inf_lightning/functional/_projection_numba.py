r"""Fused per-row L1-ball projection on CPU, compiled with numba (the ``"numba"`` path of ``project_l1_ball_``).

One neuron at a time, in place, on the stored parameters (float32 or float64; the bias may be a separate tensor):

1. one read of the row from memory: :math:`|v_p|` into a float64 scratch row (in cache), and :math:`\|v\|_1`;
2. a row inside the ball is left untouched (decided exactly: a float64 sum with its error bound, and Shewchuk's
   exact summation when the sum is within that bound of :math:`c`);
3. :math:`\theta` by Condat's algorithm (Condat, "Fast projection onto the simplex and the l1 ball", Math.
   Program. 158, 2016), recomputed from its active set, on the cached row;
4. one write: :math:`w_p = \operatorname{sign}(v_p)\,\mathrm{RZ}(|v_p| - \theta)`, rounded toward zero in the
   stored dtype, so no magnitude grows; if the float64 sum of the written row cannot certify
   :math:`\|w\|_1 \le c`, the exact sum decides, and :math:`\theta` is raised and the row written again until
   the stored row's exact L1 norm is at most :math:`c` (issue 13, item 2). Float32 rows almost never need it.

This module imports numba; ``projection.py`` imports it only on the first projection that takes this path.
"""

from __future__ import annotations

import numba
import numpy as np

_EPS = float(np.finfo(np.float64).eps)
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _condat_threshold(a, d, radius, buffer):  # pragma: no cover - compiled
    """Condat's (2016) threshold for ``a[:d] >= 0`` with ``sum(a) > radius``, recomputed from its active set.

    ``buffer`` (length 2d) holds the candidate set ``v`` at ``[start, end)`` and the set ``v~`` of discarded
    candidates before it, so "move v into v~" is ``start = end``.
    """
    buffer[0] = a[0]
    start, end = 0, 1
    rho = a[0] - radius
    for n in range(1, d):
        y = a[n]
        if y > rho:
            rho += (y - rho) / (end - start + 1)
            if rho > y - radius:
                buffer[end] = y
                end += 1
            else:
                start = end
                buffer[end] = y
                end += 1
                rho = y - radius
    for i in range(start):  # candidates discarded too early
        y = buffer[i]
        if y > rho:
            buffer[end] = y
            end += 1
            rho += (y - rho) / (end - start)
    while True:  # drop candidates at or below the threshold until none is
        size = end - start
        kept = start
        for i in range(start, end):
            y = buffer[i]
            if y > rho:
                buffer[kept] = y
                kept += 1
            else:
                size -= 1
                if size > 0:
                    rho += (rho - y) / size
        if kept == end:
            break
        end = kept
    if end == start:
        # Only when radius < ulp(max a) rounds every entry to the threshold: zeroing the row is then within
        # radius of the exact projection, and inside the ball.
        top = 0.0
        for i in range(d):
            top = max(top, a[i])
        return top
    # rho was updated incrementally; the active set's own formula is as exact as float64 allows.
    total = 0.0
    for i in range(start, end):
        total += buffer[i]
    return (total - radius) / (end - start)


@numba.njit(cache=True, nogil=True)
def _write_shrunk(values, bits, index, magnitude, theta):  # pragma: no cover - compiled
    """``values[index] = sign * RZ(magnitude - theta)`` in the array's dtype (the sign is the stored value's).

    Returns the magnitude written, in float64.
    """
    sign = values[index]
    difference = magnitude - theta
    if difference <= 0.0:
        values[index] = np.copysign(0.0, sign)
        return 0.0
    # TwoSum: magnitude - theta == difference + error exactly.
    virtual = difference - magnitude
    error = (magnitude - (difference - virtual)) + (-theta - virtual)
    values[index] = np.copysign(difference, sign)  # rounds to nearest in the stored dtype
    stored = abs(np.float64(values[index]))
    if stored > difference or (stored == difference and error < 0.0):
        # Rounded away from zero: step back one ulp. Floats are sign-magnitude, so bits - 1 shrinks |value|.
        bits[index] -= 1
        stored = abs(np.float64(values[index]))
    return stored


@numba.njit(cache=True, nogil=True)
def _write_row(bias, bias_bits, weight, weight_bits, j, has_bias, a, theta, written):  # pragma: no cover
    """Write row ``j`` shrunk by ``theta``; ``written[:d]`` gets the stored magnitudes. Returns (sum, nonzeros)."""
    total = 0.0
    offset = 0
    if has_bias:
        written[0] = _write_shrunk(bias, bias_bits, j, a[0], theta)
        total += written[0]
        offset = 1
    row, row_bits = weight[j], weight_bits[j]
    for i in range(row.shape[0]):
        value = _write_shrunk(row, row_bits, i, a[offset + i], theta)
        written[offset + i] = value
        total += value
    nonzeros = 0
    for i in range(offset + row.shape[0]):
        nonzeros += written[i] != 0.0
    return total, nonzeros


@numba.njit(cache=True, nogil=True)
def project_rows(bias, bias_bits, weight, weight_bits, has_bias, radii):  # pragma: no cover - compiled
    """Project every row ``[bias[j], weight[j]]`` onto the L1 ball of ``radii[j]`` in place (see module doc)."""
    rows, fan_in = weight.shape
    d = fan_in + (1 if has_bias else 0)
    a = np.empty(d, np.float64)
    buffer = np.empty(2 * d, np.float64)
    partials = np.empty(2200, np.float64)  # msum's non-overlapping partials span at most 2098 bits
    margin = (d + 2) * _EPS
    for j in range(rows):
        radius = radii[j]
        if radius == np.inf:
            continue
        total = _load_magnitudes(bias, weight, j, has_bias, a)
        if total * (1.0 + margin) <= radius or not np.isfinite(total):
            continue  # inside the ball; non-finite rows are left as they are (the callback reports them)
        if total * (1.0 - margin) <= radius and not _exceeds(a, d, radius, partials):
            continue
        theta = max(_condat_threshold(a, d, radius, buffer), 0.0)
        # Rounded toward zero, the row is almost always inside; the exact check settles the rest. Each miss raises
        # theta by the measured excess per nonzero entry plus a step that starts at an ulp of c and doubles.
        extra = _EPS * radius
        for _ in range(1100):
            total, nonzeros = _write_row(bias, bias_bits, weight, weight_bits, j, has_bias, a, theta, buffer)
            if total * (1.0 + margin) <= radius or not _exceeds(buffer, d, radius, partials):
                break
            theta += (max(total - radius, 0.0) + extra) / max(nonzeros, 1)
            extra *= 2.0
