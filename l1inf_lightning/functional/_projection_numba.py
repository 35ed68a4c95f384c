r"""Fused per-row L1-ball projection on CPU, compiled with numba (the ``"numba"`` path of ``project_l1_ball_``).

One neuron at a time, in place, on the stored parameters (float32 or float64; the bias may be a separate tensor):

1. one read of the row from memory: :math:`|v_p|` into a float64 scratch row (in cache), and :math:`\|v\|_1`;
2. a row inside the ball is left untouched (decided exactly: a float64 sum with its error bound; within that
   bound of :math:`c`, Rump's split of the row into parts that sum exactly and parts that sum with a tiny error,
   and Shewchuk's exact summation only within that error);
3. :math:`\theta` by Michelot's fixed point (1986), vectorized passes over the cached row, compacting the
   survivors once fewer than half are left (the variant of Condat, Math. Program. 158, 2016);
4. one write: :math:`w_p = \operatorname{sign}(v_p)\,\mathrm{RZ}(|v_p| - \theta)`, rounded toward zero in the
   stored dtype, so no magnitude grows: the pass runs with the thread's rounding mode set toward zero
   (``llvm.set.rounding``), which makes a subtraction and a conversion exactly that, and sums what it stored. If
   that sum cannot certify :math:`\|w\|_1 \le c`, the exact decision of step 2 decides on the stored row, and
   :math:`\theta` is raised and the row written again until the stored row's exact L1 norm is at most :math:`c`
   (issue 13, item 2). Float32 rows almost never need it.

This module imports numba; ``_compiled_kernel`` imports it only to compile the kernel (a new process loads the
compiled kernel from its cache without numba). For a short compilation the helpers have no Python wrapper, and the
code uses conditional expressions where ``max``/``min`` would be: their first use makes numba compile its generic
implementations (0.2 s).
"""

from __future__ import annotations

import numba
import numpy as np
from llvmlite import ir
from numba.core import types
from numba.extending import intrinsic

_EPS = float(np.finfo(np.float64).eps)
_TINY = float(np.finfo(np.float64).smallest_subnormal)
# Sums of magnitudes may be reassociated (SIMD): their error bound below holds for any order of summation.
_REASSOC = {"reassoc"}
_I32 = ir.IntType(32)
_NO_ENTRY = np.iinfo(np.int64).max
# Michelot passes over the whole row before the survivors are compacted (one compacting pass costs about eight)...
_FULL_PASSES = 8
# ... unless the row's float64 magnitudes overflow the first-level cache (16 KiB): then as soon as half are gone.
_CACHED_ROW = 2048
# Functions called from compiled code alone have no Python wrapper (a shorter compilation): calling one from
# Python crashes the interpreter. The entry points, and the helpers the tests call, have theirs. No function raises
# (numpy's error model: a float division by zero gives inf or NaN), so the kernel needs no exception handling.
_CALLABLE = {"nogil": True, "error_model": "numpy"}
_INNER = {**_CALLABLE, "no_cpython_wrapper": True}
# The kernel's float64 scratch for rows of d entries: the magnitudes (d), the compacted survivors (2 d), Rump's split
# (2 d), and Shewchuk's partials, which span at most 2098 bits: fewer than 2200 of them. `_compiled_kernel` copies it.
_WORK_PER_ENTRY = 5
_PARTIALS = 2200


@numba.njit(**_INNER, fastmath=_REASSOC)
def _load_magnitudes(bias, weight, j, has_bias, a, start):  # pragma: no cover - compiled
    """``a[:d] = |[bias[j], weight[j]]|`` in float64.

    Returns their (float64, any-order) sum, and the count and sum of those above ``start`` (Michelot's first pass
    from a warm start, in the same read of the row).
    """
    offset = 0
    total = 0.0
    count = 0
    kept = 0.0
    if has_bias:
        a[0] = abs(np.float64(bias[j]))
        total += a[0]
        above = a[0] > start
        count += above
        kept += a[0] if above else 0.0
        offset = 1
    row = weight[j]
    for i in range(row.shape[0]):
        value = abs(np.float64(row[i]))
        a[offset + i] = value
        total += value
        above = value > start
        count += above
        kept += value if above else 0.0
    return total, count, kept


@numba.njit(**_INNER)
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


@intrinsic
def _bits(typingctx, value):  # pragma: no cover - compiled
    """The bits of a float64, as an int64."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _from_bits(typingctx, bits):  # pragma: no cover - compiled
    """The float64 with these bits."""

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@numba.njit(**_INNER)
def _split(values, n, sigma, high, low):  # pragma: no cover - compiled
    """Rump's ExtractVector: ``values[i] == high[i] + low[i]`` exactly, ``high[i]`` on the grid of ulp(``sigma``).

    For a power of two ``sigma`` at least every ``values[i] >= 0``: ``|low[i]| <= eps sigma`` (Rump, Ogita and
    Oishi, SIAM J. Sci. Comput. 31, 2008, Lemma 3.2). No fastmath here: reassociation would cancel ``sigma``.
    """
    for i in range(n):
        high[i] = (sigma + values[i]) - sigma
        low[i] = values[i] - high[i]


@numba.njit(**_INNER, fastmath=_REASSOC)
def _sum(values, n):  # pragma: no cover - compiled
    """The (any-order) float64 sum of ``values[:n]``; vectorizes (float64 rows take it after every write)."""
    total = 0.0
    for i in range(n):
        total += values[i]
    return total


@numba.njit(**_CALLABLE)
def _exceeds_radius(values, n, radius, total, margin, scratch, partials):  # pragma: no cover - compiled
    r"""Whether the exact sum of ``values[:n] >= 0`` exceeds ``radius``, given their float64 sum ``total``.

    ``total (1 \pm margin)`` brackets the exact sum; within that bracket of ``radius``, the row is split on the grid of
    a power of two ``sigma`` above the sum (``_split``, into ``scratch``): the high parts sum exactly in any order
    (multiples of ulp(sigma) below 2 sigma), their difference with ``radius`` is exact (Sterbenz), and the low parts'
    sum is off by at most ``n^2 eps^2 sigma`` (plus underflow). Only a sum within that of ``radius`` takes Shewchuk's
    exact sum.
    """
    upper = total * (1.0 + margin)
    if upper <= radius:
        return False
    if total * (1.0 - margin) > radius:
        return True
    # sigma = ldexp(1, frexp(x)[1]), the least power of two above x, from the exponent bits of x: 2^-1021 below
    # that, inf from 2^1023 (no call to numba's frexp and ldexp helpers, which live in its runtime).
    exponent = _bits(upper * (1.0 + 2.0 * _EPS)) >> 52  # the biased exponent: 2^(exponent - 1023) <= x
    exponent = 1 if exponent < 1 else 2046 if exponent > 2046 else exponent
    sigma = _from_bits((exponent + 1) << 52)
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


@numba.njit(**_INNER, fastmath=_REASSOC)
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


@numba.njit(**_INNER, fastmath=_REASSOC)
def _sum_above(values, n, theta):  # pragma: no cover - compiled
    """Count, (any-order) sum and least (its bits; int64 max for none) of the entries of ``values[:n]`` above ``theta``.

    Vectorizes: the entries are at least 0, so their bits as int64 are in their order, an integer minimum, which
    needs no fastmath flag. Every pass uses this one function, so that every sum is added in one order.
    """
    count = 0
    total = 0.0
    least = _NO_ENTRY
    for i in range(n):
        y = values[i]
        above = y > theta
        count += above
        total += y if above else 0.0
        bits = _bits(y) | ((np.int64(above) - 1) & _NO_ENTRY)  # no select here: LLVM's would not vectorize
        least = bits if bits < least else least
    return count, total, least


@numba.njit(**_INNER)
def _michelot_threshold(a, d, radius, total, buffer, start, count, kept):  # pragma: no cover - compiled
    r"""Michelot's (1986) fixed point :math:`\theta \leftarrow (\sum_{a_p > \theta} a_p - c) / \#\{a_p > \theta\}`.

    Each step is Newton's on the convex, decreasing, piecewise linear :math:`f(\theta) = \sum_p (a_p - \theta)_+
    - c`, so from any start with some entry above it the first step lands at or below :math:`\theta^*`, and from there
    the iterates increase and the active sets shrink (nested); it ends when a pass keeps every entry of the previous
    active set. ``start``: where the search starts, any :math:`\theta \ge 0` (``count`` entries of ``a`` above it,
    summing to ``kept``, counted by the load pass): this neuron's threshold of the previous step, or the previous
    row's of this call, or 0 (Newton's step from 0 is :math:`(\|a\|_1 - c)` over the count of nonzero entries).

    Each pass also finds the least entry above :math:`\theta`: where none lies between :math:`\theta` and the step,
    the step is the fixed point, with no pass to confirm it. The passes vectorize over the whole cached row (a
    branch-free pass costs about an eighth of a compacting one): from 0, a Gaussian row takes two or three; from the
    previous row's threshold one or two; from the previous step's, one where the active set did not change. Only a
    row that needs more than ``_FULL_PASSES`` has its survivors compacted into ``buffer`` (Condat's variant), so
    that its later passes run over those alone. The threshold returned is computed from a pass over the whole row,
    whatever the start.
    """
    if count > 0:
        # Newton's step from the start: at or below theta* but for rounding. The sets above the start and above
        # theta are nested (either way), so a first pass that keeps ``count`` entries keeps the same ones.
        theta = (kept - radius) / count
    else:
        theta = (total - radius) / d
        count = -1
    for _ in range(_FULL_PASSES):
        active, kept, least = _sum_above(a, d, theta)
        if active == 0:
            return theta
        step = (kept - radius) / active
        if active == count or step <= theta or _from_bits(least) > step:
            # The entries above the step are this pass's (the last pass kept as many, nested; or none of them lies
            # between theta and the step): the step is the fixed point, computed from this pass's sum over the whole
            # row, so a warm and a cold start end on the same bits. A step below theta is rounding's.
            return step
        count = active
        theta = step  # the iterates increase, the active sets are nested, so the loop ends
        if d > _CACHED_ROW and 2 * count < d:
            break  # a row beyond the first-level cache: its survivors are worth compacting once half are gone
    n, kept = _keep_above(a, d, theta, buffer)  # everything else is at or below theta from now on
    count = n
    while n > 0:  # n == 0: theta rounded up to the largest entry (a radius far below an ulp of it)
        step = (kept - radius) / count
        theta = step if step > theta else theta
        active, kept, _ = _sum_above(buffer, n, theta)
        if active == count or active == 0:
            break
        count = active
        if 4 * count < n:  # most survivors are gone: compact again, so that later passes are short
            n, kept = _keep_above(buffer, n, theta, buffer)
    # The final theta from a pass over the whole row, as above, by the same function (LLVM may vectorize two
    # reductions in different orders, as it does for AVX2, and a start must not change the bits).
    active, kept, _ = _sum_above(a, d, theta)
    return (kept - radius) / active if active > 0 else theta


@intrinsic
def _set_rounding(typingctx, mode):  # pragma: no cover - compiled
    """``llvm.set.rounding(mode)``: the floating-point rounding mode of this thread (0 toward zero, 1 to nearest).

    LLVM lowers it on x86-64 (MXCSR and the x87 control word) and AArch64 (FPCR): ``projection._kernel_available``
    offers the kernel there alone.
    """

    def codegen(context, builder, signature, args):
        function = builder.module.declare_intrinsic("llvm.set.rounding", fnty=ir.FunctionType(ir.VoidType(), [_I32]))
        builder.call(function, [builder.trunc(args[0], _I32)])
        return context.get_dummy_value()

    return types.none(mode), codegen


@intrinsic
def _in_dtype_of(typingctx, values, value):  # pragma: no cover - compiled
    """``value`` converted to the dtype of the array ``values`` (in the thread's rounding mode)."""
    dtype = values.dtype

    def codegen(context, builder, signature, args):
        return context.cast(builder, args[1], signature.args[1], dtype)

    return dtype(values, value), codegen


@numba.njit(**_INNER, fastmath=_REASSOC)
def _write_shrunk(values, magnitudes, theta):  # pragma: no cover - compiled
    r"""``values[i] = sign(values[i]) * (magnitudes[i] - theta)_+`` in the array's dtype; run in rounding toward zero.

    Under rounding toward zero the float64 difference is :math:`\mathrm{RZ}_{64}(|v_i| - \theta)`, and its conversion
    to float32 rounds toward zero again: :math:`\mathrm{RZ}_{32} \circ \mathrm{RZ}_{64} = \mathrm{RZ}_{32}`, since the
    float32 grid is part of the float64 one. So every stored magnitude is the exact :math:`|v_i| - \theta` rounded
    toward zero in the stored dtype, in a few vector instructions per entry. Returns the (float64, any order, rounded
    toward zero) sum of the stored magnitudes.
    """
    total = 0.0
    for i in range(values.shape[0]):
        difference = magnitudes[i] - theta
        stored = _in_dtype_of(values, difference if difference > 0.0 else 0.0)
        values[i] = np.copysign(stored, values[i])  # the sign's bit set in the stored dtype: no conversion of values[i]
        total += np.float64(stored)
    return total


@numba.njit(**_CALLABLE)
def _write_row(bias, weight, j, has_bias, a, theta):  # pragma: no cover - compiled
    """Write row ``j`` shrunk by ``theta`` (``_write_shrunk`` under rounding toward zero); returns its sum."""
    offset = 0
    total = 0.0
    _set_rounding(0)
    if has_bias:
        total = _write_shrunk(bias[j : j + 1], a[:1], theta)
        offset = 1
    total += _write_shrunk(weight[j], a[offset:], theta)
    _set_rounding(1)
    return total


@numba.njit(**_INNER, fastmath=_REASSOC)
def all_finite(values):  # pragma: no cover - compiled
    """Whether every entry of the 1-D ``values`` is finite.

    ``x * 0`` is NaN exactly for NaN and inf, so one vectorized pass with no branch decides it.
    """
    total = 0.0
    for i in range(values.shape[0]):
        total += np.float64(values[i]) * 0.0
    return total == 0.0


@numba.njit(**_CALLABLE, cache=True)
def project_rows(bias, weight, has_bias, radii, thetas):  # pragma: no cover - compiled
    """Project every row ``[bias[j], weight[j]]`` onto the L1 ball of ``radii[j]`` (``radii[0]`` for all), in place.

    ``thetas``: one float64 per row, the threshold of the row's last projection (0: none yet), where Michelot's
    passes start and where the threshold this projection wrote with is kept (a row left inside keeps its entry);
    or an empty array, for cold starts. A row with none starts from the threshold of the row projected before it.

    Returns the number of rows with a NaN or infinite entry, which are left as they are: with an infinite radius
    nothing is written, so it is the finiteness check of the rows.

    This entry takes arrays of any layout (numba's dispatcher, cached by numba); ``pointer_entry`` compiles the same
    kernel for pointers, which ``_compiled_kernel`` turns into the object code it caches and loads without numba.
    """
    d = weight.shape[1] + (1 if has_bias else 0)
    return _project_rows(bias, weight, has_bias, radii, thetas, np.empty(_WORK_PER_ENTRY * d + _PARTIALS, np.float64))


@numba.njit(**_INNER)
def _project_rows(bias, weight, has_bias, radii, thetas, work):  # pragma: no cover - compiled
    """``project_rows`` in the caller's float64 scratch ``work``: allocates nothing.

    ``work``: ``_WORK_PER_ENTRY d + _PARTIALS`` entries, or none where every radius is infinite (the finiteness check
    reads no scratch).
    """
    rows, fan_in = weight.shape
    d = fan_in + (1 if has_bias else 0)
    warm = thetas.shape[0] == rows
    previous = 0.0  # the last threshold of this call: a cold row's search starts there (rows of a layer are alike)
    a = work[:d]
    buffer = work[d : 3 * d]
    scratch = work[3 * d : 5 * d]
    partials = work[5 * d : 5 * d + _PARTIALS]
    margin = (d + 2) * _EPS
    nonfinite = 0
    for j in range(rows):
        radius = radii[j] if radii.shape[0] > 1 else radii[0]  # one radius per row, or one for all
        if radius == np.inf:
            nonfinite += not (all_finite(weight[j]) and (not has_bias or all_finite(bias[j : j + 1])))
            continue
        start = thetas[j] if warm and thetas[j] > 0.0 else previous
        total, count, kept = _load_magnitudes(bias, weight, j, has_bias, a, start)
        if not np.isfinite(total):  # left as it is (the callback reports it)
            nonfinite += not (all_finite(weight[j]) and (not has_bias or all_finite(bias[j : j + 1])))
            continue
        if total * (1.0 + margin) <= radius:
            continue  # inside the ball
        if not _exceeds_radius(a, d, radius, total, margin, scratch, partials):
            continue
        theta = _michelot_threshold(a, d, radius, total, buffer, start, count, kept)
        theta = 0.0 if 0.0 > theta else theta
        # Rounded toward zero, the row is almost always inside; the exact check settles the rest. Each miss raises
        # theta by the measured excess per nonzero entry plus a step that starts at an ulp of c (at least the least
        # subnormal: for a subnormal c, eps c is 0) and doubles.
        extra = _EPS * radius if _EPS * radius > _TINY else _TINY
        for _ in range(1100):
            total = _write_row(bias, weight, j, has_bias, a, theta)
            # Summed toward zero, the float64 sum is within (d - 1) eps of the exact one: `margin` still covers it.
            if total * (1.0 + margin) <= radius:
                break
            stored, nonzeros, _ = _load_magnitudes(bias, weight, j, has_bias, buffer, 0.0)
            if not _exceeds_radius(buffer, d, radius, stored, margin, scratch, partials):
                break
            excess = total - radius if total > radius else 0.0
            theta += (excess + extra) / (nonzeros if nonzeros > 1 else 1)
            extra *= 2.0
        previous = theta
        if warm:
            thetas[j] = theta
    return nonfinite


def _project_pointers(bias, weight, rows, fan_in, has_bias, radii, n_radii, thetas, n_thetas, work):
    """``_project_rows`` on C-contiguous arrays given as pointers and sizes (compiled by ``pointer_entry``)."""
    d = fan_in + (1 if has_bias else 0)
    return _project_rows(
        numba.carray(bias, (rows if has_bias else 0,)),
        numba.carray(weight, (rows, fan_in)),
        has_bias != 0,
        numba.carray(radii, (n_radii,)),
        numba.carray(thetas, (n_thetas,)),
        numba.carray(work, (_WORK_PER_ENTRY * d + _PARTIALS,)),
    )


def pointer_entry(dtype: np.dtype) -> numba.core.ccallback.CFunc:
    """``project_rows`` for ``dtype`` rows, compiled as a C function of pointers (``_project_pointers``).

    Its arguments: bias, weight (``rows x fan_in``, C order), rows, fan_in, has_bias (0/1), radii (float64) and
    their count, thetas (float64) and their count (0 or rows), and the float64 scratch of ``_project_rows``; it
    returns the count of rows with a non-finite entry. ``_compiled_kernel`` turns it into the object code it caches.
    """
    element = types.CPointer(numba.from_dtype(np.dtype(dtype)))
    real = types.CPointer(types.float64)
    size = types.int64
    signature = size(element, element, size, size, size, real, size, real, size, real)
    return numba.cfunc(signature, nogil=True, error_model="numpy")(_project_pointers)
