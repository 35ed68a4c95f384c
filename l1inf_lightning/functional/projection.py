"""Euclidean projection onto L1 balls, batched over rows.

The kernel of the method: Algorithm 2 of Wen et al. (Statistica Sinica 31, 2021), which is the
sort-based projection of Duchi et al. (ICML 2008), applied to every row of a matrix at once.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import math
import os
import platform
import sys
import warnings
from collections.abc import Callable, Iterable
from typing import Literal, NamedTuple

import numpy as np
import torch
from torch import Tensor

from l1inf_lightning._checks import check_radius
from l1inf_lightning.functional import _compiled_kernel

__all__ = [
    "BACKENDS",
    "all_finite",
    "check_radius",
    "compile_kernel",
    "project_l1_ball",
    "project_l1_ball_",
    "projection_backend",
]


Backend = Literal["auto", "torch", "numba"]
BACKENDS: tuple[str, ...] = ("auto", "torch", "numba")
# The dtypes the compiled kernel takes, and their numpy types.
_NUMBA_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_TORCH_DTYPES = {np.dtype(np_dtype): dtype for dtype, np_dtype in _NUMBA_DTYPES.items()}
_BITS = {2: torch.int16, 4: torch.int32, 8: torch.int64}
_EPS64 = torch.finfo(torch.float64).eps
_TINY64 = math.ulp(0.0)  # the least subnormal float64
# Where LLVM lowers `llvm.set.rounding`, which the compiled kernel needs (`platform.machine()` names).
_KERNEL_MACHINES = ("x86_64", "AMD64", "aarch64", "arm64")
_CPU_BLOCK_ELEMENTS = 1 << 16  # the torch path's rows per block: 512 KiB of float64, so a block stays in cache
# The kernel's bias argument for layers without one (an empty array of the weight's dtype).
_NO_BIAS = {np.dtype(np_dtype): np.empty(0, np_dtype) for np_dtype in _NUMBA_DTYPES.values()}
# The kernel's thresholds argument for projections that start cold (no previous threshold per row).
_COLD = np.empty(0)
# The kernel's radius argument that checks finiteness alone: rows projected onto infinite balls are not written.
_INFINITE = np.full(1, np.inf)
_INFINITE.setflags(write=False)  # never a radius to write into (see `_project_arrays_`)


def _jit_disabled() -> bool:
    """Whether numba's JIT is off (``NUMBA_DISABLE_JIT``), read without importing numba where it is not imported."""
    numba = sys.modules.get("numba")
    if numba is not None:
        return bool(numba.config.DISABLE_JIT)
    try:  # as numba reads it: an integer, and 0 where it is not one
        return bool(int(os.environ.get("NUMBA_DISABLE_JIT", "0")))
    except ValueError:
        return False


@functools.cache
def _numba_installed() -> bool:
    """Whether numba is installed (looked up once: a search of ``sys.path`` costs ~50 us while it is not imported)."""
    return importlib.util.find_spec("numba") is not None


@functools.cache
def _kernel_available() -> bool:
    """Whether the compiled kernel can run here: numba installed, its JIT on, and a CPU whose rounding mode it sets.

    The kernel writes under rounding toward zero, set by an LLVM intrinsic that LLVM lowers on x86-64 and AArch64;
    and it has no pure-Python version (``NUMBA_DISABLE_JIT=1``).
    """
    return _numba_installed() and platform.machine() in _KERNEL_MACHINES and not _jit_disabled()


@functools.cache
def _kernel_for(dtype: torch.dtype) -> Callable[..., int] | None:
    r"""The kernel for parameters of ``dtype``, once it has projected one row toward zero in that dtype as it must.

    The kernel is ``project_rows`` of ``_projection_numba``, loaded from cached object code
    (``_compiled_kernel.compiled_rows``; numba's dispatcher where that cannot be built). A self-test of the compiled
    write (the rounding mode is set by an LLVM intrinsic, whose effect the compiler does not order against
    floating-point operations by contract), through the kernel's own entry point, so that it compiles nothing more:
    the row ``[1, -1, 1]`` onto the ball of radius ``3 - 4u`` (``u``: the dtype's unit roundoff) has
    :math:`\theta = 4u/3`, and ``1 - 4u/3`` rounded toward zero is ``1 - 2u``, to nearest ``1 - u``. Written toward
    zero, the row is inside the ball at once and the kernel keeps that theta; to nearest, it is outside, and the
    kernel would raise theta. Rounding to nearest must also be back afterwards. Otherwise the torch path projects,
    with a warning.
    """
    if not _kernel_available() or dtype not in _NUMBA_DTYPES:
        return None
    np_dtype = np.dtype(_NUMBA_DTYPES[dtype])
    try:
        kernel = _compiled_kernel.compiled_rows(np_dtype)
    except Exception as error:  # an llvmlite without what the loader uses, say: numba's own dispatch still works
        from l1inf_lightning.functional._projection_numba import project_rows as kernel

        warnings.warn(
            f"The projection kernel's object code could not be built or loaded ({type(error).__name__}: {error}): "
            "numba's dispatcher runs the kernel instead, compiled in each new process",
            RuntimeWarning,
            stacklevel=2,
        )
    unit = float(np.finfo(np_dtype).eps) / 2
    row, radius, thetas = np.array([[1.0, -1.0, 1.0]], np_dtype), 3.0 - 4 * unit, np.zeros(1)
    kernel(_NO_BIAS[np_dtype], row, False, np.full(1, radius), thetas)
    below = 1.0 - 2 * unit
    one, small = 1.0, 0.75 * _EPS64
    if row.tolist() != [[below, -below, below]] or thetas[0] != (3.0 - radius) / 3 or one + small != 1.0 + _EPS64:
        warnings.warn(
            f"The compiled projection kernel did not round toward zero in {dtype} on this machine (numba "
            f"{importlib.metadata.version('numba')}): the pure-torch path projects instead.",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    return kernel


def projection_backend(vectors: Tensor, backend: Backend = "auto") -> str:
    """The path that projects ``vectors``: ``"numba"`` (fused CPU kernel) or ``"torch"`` (reference, any device).

    ``"auto"`` takes the numba path for float32/float64 CPU tensors when numba is installed (the ``kernel``
    extra), and the torch path otherwise (CUDA, half precision, no numba).

    >>> projection_backend(torch.ones(2, 3, dtype=torch.float16))
    'torch'
    """
    if backend not in BACKENDS:
        raise ValueError(f"Expected `backend` to be one of {BACKENDS}, got {backend!r}")
    numba_fits = vectors.device.type == "cpu" and vectors.dtype in _NUMBA_DTYPES
    if backend == "numba":
        if not numba_fits:
            raise ValueError(
                f"Expected float32 or float64 CPU tensors for `backend='numba'`, got {vectors.dtype} on"
                f" {vectors.device.type}"
            )
        if not _numba_installed():
            raise ValueError("`backend='numba'` needs numba: pip install 'l1inf-lightning[kernel]'")
        if _kernel_for(vectors.dtype) is None:
            raise ValueError(
                f"`backend='numba'` is not available here: it needs an x86-64 or AArch64 CPU ({platform.machine()} "
                "here), numba's JIT (NUMBA_DISABLE_JIT unset) and a write that rounds toward zero"
            )
        return "numba"
    if backend == "auto" and numba_fits and _kernel_for(vectors.dtype) is not None:
        return "numba"
    return "torch"


def compile_kernel(
    dtypes: Iterable[torch.dtype] = (torch.float32, torch.float64),
) -> dict[torch.dtype, str]:
    """Compile the fused kernel for ``dtypes`` now (or load it from its cache), not at the first projection.

    Compiled once per machine (a few seconds each) and kept as object code in a cache directory (``L1INF_CACHE_DIR``,
    else ``NUMBA_CACHE_DIR``, else ``~/.cache/l1inf_lightning``), which later processes load in milliseconds;
    ``make install`` runs it. Returns the path that projects each dtype on CPU (``"numba"``, or ``"torch"`` where
    the kernel is not available).

    >>> compile_kernel([torch.float16])
    {torch.float16: 'torch'}
    """
    return {dtype: projection_backend(torch.empty(0, 1, dtype=dtype)) for dtype in dtypes}


def _exceeds_exactly(magnitudes: Tensor, radii: Tensor) -> Tensor:
    """Per row, whether the exact sum of ``magnitudes`` exceeds the radius (``math.fsum`` is exactly rounded).

    The sign of a correctly rounded sum is the sign of the exact sum, so ``fsum(row + [-c]) > 0`` decides it.
    """
    rows = magnitudes.tolist()
    exceeds = [math.fsum([*row, -c]) > 0 for row, c in zip(rows, radii.tolist(), strict=True)]
    return torch.tensor(exceeds, dtype=torch.bool, device=magnitudes.device)


def _sorted_threshold(magnitudes: Tensor, radii: Tensor) -> tuple[Tensor, Tensor]:
    r"""The soft-threshold level :math:`\theta^*` of each row, and an upper bound on it.

    :math:`\theta^* = \max_k (\sum_{q \le k} \mu_q - c) / k` over the magnitudes sorted in decreasing order
    (Duchi et al., 2008: the maximum is reached at their :math:`\rho`; no search for :math:`\rho`, no branch, so
    no host synchronization on CUDA). The bound raises each term by its float64 error (:math:`4\epsilon
    (\sum_{q \le k} \mu_q + c)` covers the cumulative sum in any order, the difference and the quotient), so
    :math:`\sum_p (|v_p| - \theta)_+ \le c` holds exactly for it.
    """
    mu = magnitudes.sort(dim=1, descending=True).values
    cumulative = mu.cumsum(dim=1)
    ranks = torch.arange(1, mu.shape[1] + 1, device=mu.device, dtype=mu.dtype)
    radii = radii.unsqueeze(1)
    candidates = (cumulative - radii) / ranks
    theta = candidates.amax(dim=1).clamp_min(0)
    # (plus the least subnormal: below the normal range a rounding error is absolute, not relative)
    upper = (candidates + (4 * _EPS64 * (cumulative + radii) + _TINY64)).amax(dim=1).clamp_min(0)
    return theta, upper


def _shrink_toward_zero(magnitudes: Tensor, theta: Tensor, signs: Tensor) -> Tensor:
    """``sign(v) * RZ(|v| - theta)`` in ``signs.dtype``: rounded toward zero, so no stored magnitude grows.

    ``|v| - theta`` is rounded once in float64; TwoSum recovers that rounding error, so the rounding toward zero
    into the stored dtype is of the exact difference.
    """
    theta = theta.unsqueeze(1)
    difference = magnitudes - theta
    virtual = difference - magnitudes
    error = (magnitudes - (difference - virtual)) + (-theta - virtual)
    difference.clamp_min_(0)
    rounded = difference.to(signs.dtype)
    back = rounded.to(torch.float64)
    away = (back > difference) | ((back == difference) & (error < 0) & (difference > 0))
    # Rounded away from zero: one ulp back. Floats are sign-magnitude, so bits - 1 shrinks a positive value.
    rounded.view(_BITS[rounded.element_size()]).sub_(away.to(_BITS[rounded.element_size()]))
    return rounded.copysign_(signs)


def _projected(magnitudes: Tensor, radii: Tensor, signs: Tensor) -> Tensor:
    """The projection of rows outside their ball, in ``signs.dtype``, each stored row's exact L1 norm <= c."""
    theta, upper = _sorted_threshold(magnitudes, radii)
    shrunk = _shrink_toward_zero(magnitudes, theta, signs)
    written = shrunk.abs().to(torch.float64)
    norms = written.sum(dim=1)
    # Rounded toward zero, a row is almost always certainly inside: its float64 norm plus the sum's error bound.
    unsure = norms * (1 + (magnitudes.shape[1] + 2) * _EPS64) > radii
    if magnitudes.is_cuda:
        # The certain bound for the unsure rows, without asking the host which they are.
        return _shrink_toward_zero(magnitudes, torch.where(unsure, upper, theta), signs)
    if not bool(unsure.any()):
        return shrunk
    rows = unsure.nonzero().squeeze(1)
    over = rows[_exceeds_exactly(written[rows], radii[rows])]
    extra = (_EPS64 * radii).clamp_min(_TINY64)  # for a subnormal c, eps c is 0: theta would never rise
    while over.numel():
        # As the numba path: raise theta by the excess per nonzero entry plus a step from an ulp of c, doubling.
        nonzeros = (written[over] != 0).sum(dim=1).clamp_min(1)
        theta[over] += ((norms[over] - radii[over]).clamp_min(0) + extra[over]) / nonzeros
        extra[over] *= 2
        shrunk[over] = _shrink_toward_zero(magnitudes[over], theta[over], signs[over])
        written[over] = shrunk[over].abs().to(torch.float64)
        norms[over] = written[over].sum(dim=1)
        over = over[_exceeds_exactly(written[over], radii[over])]
    return shrunk


def _project_rows_torch_(vectors: Tensor, radii: Tensor) -> None:
    """Project the rows of ``vectors`` that lie outside their ball, in place: the reference path, any device."""
    magnitudes = vectors.abs().to(torch.float64)
    totals = magnitudes.sum(dim=1)
    # A float64 sum of d magnitudes is within (d - 1) u of the exact one, in any order; (d + 2) eps covers it.
    margin = (vectors.shape[1] + 2) * _EPS64
    finite = torch.isfinite(totals)  # rows with a non-finite entry are left alone (the callback reports them)
    outside = (totals * (1 - margin) > radii) & finite
    unsure = ~outside & (totals * (1 + margin) > radii) & finite
    if vectors.is_cuda:
        # No exact tie-break here (it would synchronize with the host): a row whose norm is within the margin of c
        # counts as outside. Were it inside, the projection moves its entries by at most an ulp toward zero.
        outside |= unsure
        vectors.copy_(torch.where(outside.unsqueeze(1), _projected(magnitudes, radii, vectors), vectors))
        return
    if bool(unsure.any()):
        outside[unsure] = _exceeds_exactly(magnitudes[unsure], radii[unsure])
    if not bool(outside.any()):
        return
    if bool(outside.all()):
        vectors.copy_(_projected(magnitudes, radii, vectors))
        return
    rows = outside.nonzero().squeeze(1)
    vectors[rows] = _projected(magnitudes[rows], radii[rows], vectors[rows])


def _radii(vectors: Tensor, radius: float | Tensor) -> float | Tensor | None:
    """The radius, checked: a float, a float64 tensor with one radius per row, or None for one infinite radius.

    The tensor is on ``vectors``' device.
    """
    if isinstance(radius, Tensor) and radius.numel() != 1:
        radii = radius.detach().to(device=vectors.device, dtype=torch.float64).reshape(-1)
        if radii.shape[0] != vectors.shape[0]:
            raise ValueError(
                f"Expected `radius` to hold one value per row ({vectors.shape[0]}), got shape {tuple(radius.shape)}"
            )
        if bool(torch.isnan(radii).any()) or bool((radii <= 0).any()):
            raise ValueError(f"Expected `radius` to be positive numbers or inf, got {radius.tolist()}")
        return radii
    value = check_radius(radius)
    return None if math.isinf(value) else value


def _per_row(vectors: Tensor, radii: float | Tensor) -> Tensor:
    """One float64 radius per row of ``vectors``, on its device."""
    if isinstance(radii, Tensor):
        return radii
    return torch.full((vectors.shape[0],), radii, device=vectors.device, dtype=torch.float64)


class KernelArrays(NamedTuple):
    """A layer's rows ``[bias[j], weight[j]]`` as arrays the compiled kernel projects in place, and its calls on them.

    ``radius``: a 1-element float64 array, where the radius of each projection is written; ``thetas``: each row's
    last threshold (where the next projection's passes start). ``project``: the projection onto ``radius``;
    ``check``: the count of rows with a non-finite entry. Both with their pointers worked out once where the kernel
    can (``CompiledRows.bind``).
    """

    bias: np.ndarray
    rows: np.ndarray
    has_bias: bool
    radius: np.ndarray
    thetas: np.ndarray
    project: Callable[[], int]
    check: Callable[[], int]


def _kernel_arrays(bias: np.ndarray, rows: np.ndarray, has_bias: bool, thetas: np.ndarray) -> KernelArrays:
    """``KernelArrays`` with the kernel's calls bound, for projections step after step (``ModuleProjector``)."""
    kernel, radius = _kernel_of(rows), np.ones(1)
    bind = getattr(kernel, "bind", None)  # numba's dispatcher has none

    def call(radii: np.ndarray, starts: np.ndarray) -> Callable[[], int]:
        bound = bind(bias, rows, has_bias, radii, starts) if bind is not None else None
        return bound or functools.partial(kernel, bias, rows, has_bias, radii, starts)

    # Projected onto an infinite ball, nothing is written: the kernel counts the rows with a non-finite entry.
    return KernelArrays(bias, rows, has_bias, radius, thetas, call(radius, thetas), call(_INFINITE, _COLD))


def _kernel_of(rows: np.ndarray) -> Callable[..., int]:
    """The compiled kernel for rows of this (float32 or float64) array."""
    return _kernel_for(_TORCH_DTYPES[rows.dtype])


def _radius_array(radii: float | Tensor) -> np.ndarray:
    """The kernel's radius argument: one radius, or a float64 CPU tensor with one per row (contiguous)."""
    return np.ascontiguousarray(radii.numpy()) if isinstance(radii, Tensor) else np.array((float(radii),))


def _project_arrays_(arrays: KernelArrays, radii: float | Tensor) -> None:
    """Run the compiled kernel on the rows ``[bias[j], weight[j]]`` of ``arrays``, in place.

    ``radii``: checked and finite, one radius or a float64 CPU tensor with one per row.
    """
    if not arrays.rows.size:
        return
    if isinstance(radii, Tensor):
        _kernel_of(arrays.rows)(arrays.bias, arrays.rows, arrays.has_bias, _radius_array(radii), arrays.thetas)
    else:
        arrays.radius[0] = radii
        arrays.project()


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every entry of every tensor is finite (no NaN, no inf).

    CPU float32/float64 tensors are checked by one compiled pass each where the numba kernel is installed (a few
    microseconds for a small layer, against tens for ``torch.isfinite(t).all()``, which allocates a mask); the others
    by torch, with one host synchronization for all of them.

    >>> all_finite([torch.ones(2, 3), torch.tensor([1.0, float("nan")])])
    False
    """
    checks = []
    for tensor in tensors:
        if tensor.device.type == "cpu" and _kernel_for(tensor.dtype) is not None:
            flat = tensor.detach().reshape(1, -1).numpy()
            # Projected onto an infinite ball, nothing is written: the kernel counts the rows with a non-finite entry.
            if _kernel_of(flat)(_NO_BIAS[flat.dtype], flat, False, _INFINITE, _COLD):
                return False
        else:
            checks.append(torch.isfinite(tensor).all())
    return not checks or bool(torch.stack([check.to(checks[0].device) for check in checks]).all())


def _check_vectors(vectors: Tensor) -> None:
    if vectors.ndim != 2:
        raise ValueError(
            f"Expected `vectors` to be a 2-D tensor (one vector per row), got shape {tuple(vectors.shape)}"
        )
    if not vectors.is_floating_point():
        raise ValueError(f"Expected `vectors` to have a floating dtype, got {vectors.dtype}")


def project_l1_ball_(vectors: Tensor, radius: float | Tensor, backend: Backend = "auto") -> Tensor:
    """Project each row of ``vectors`` onto the L1 ball of ``radius`` in place and return it.

    Rows inside the ball (their exact L1 norm at most ``c``) are left bit-for-bit unchanged. The threshold is
    computed in float64 and every written magnitude is rounded toward zero in the input's dtype, so each
    projected row's exact L1 norm, from its stored values, is at most ``c`` in every dtype; projecting again
    changes nothing (idempotent, bit for bit). Rows with a non-finite entry are left as they are.

    Args:
        vectors: A 2-D floating tensor, one vector per row.
        radius: A positive number or ``inf``, or a 1-D tensor with one radius per row.
        backend: ``"numba"`` (the fused CPU kernel), ``"torch"`` (the reference path, any device) or ``"auto"``
            (see :func:`projection_backend`). Both give the same result to one rounding.

    Returns:
        ``vectors``, modified in place.
    """
    _check_vectors(vectors)
    radii = _radii(vectors, radius)
    path = projection_backend(vectors, backend)
    if radii is None or vectors.numel() == 0:
        return vectors
    if path == "numba":  # autograd records nothing here: no `torch.no_grad` to enter (a microsecond a call)
        rows = (vectors.detach() if vectors.requires_grad else vectors).numpy()
        _kernel_of(rows)(_NO_BIAS[rows.dtype], rows, False, _radius_array(radii), _COLD)
        return vectors
    with torch.no_grad():
        radii = _per_row(vectors, radii)
        # On CPU, blocks of rows small enough to stay in cache: the torch path makes several passes over |v|.
        block = vectors.shape[0] if vectors.is_cuda else max(1, _CPU_BLOCK_ELEMENTS // vectors.shape[1])
        for start in range(0, vectors.shape[0], block):
            _project_rows_torch_(vectors[start : start + block], radii[start : start + block])
    return vectors


def project_l1_ball(vectors: Tensor, radius: float | Tensor, backend: Backend = "auto") -> Tensor:
    r"""Euclidean projection of each row of a 2-D tensor onto the L1 ball of ``radius``.

    For every row :math:`v` it returns the closest point of the ball,

    .. math::

        \operatorname{proj}(v) = \arg\min_{\|w\|_1 \le c} \|w - v\|_2,
        \qquad w_p = \operatorname{sign}(v_p)\max(|v_p| - \theta, 0),

    with :math:`\theta = 0` for rows inside the ball (Algorithm 2 of Wen et al., 2021; Duchi et al., 2008).
    No Python loop over rows; the result is rounded toward zero in the input's dtype (see
    :func:`project_l1_ball_`).

    Args:
        vectors: A 2-D floating tensor, one vector per row.
        radius: A positive number or ``inf``, or a 1-D tensor with one radius per row.
        backend: The path, ``"auto"``, ``"numba"`` or ``"torch"`` (see :func:`projection_backend`).

    Returns:
        A new tensor of the same shape, dtype and device.

    Example:
        >>> v = torch.tensor([[3.0, -2.0], [0.5, 1.0]])
        >>> project_l1_ball(v, 3.0)
        tensor([[ 2.0000, -1.0000],
                [ 0.5000,  1.0000]])
    """
    return project_l1_ball_(vectors.clone(), radius, backend)
