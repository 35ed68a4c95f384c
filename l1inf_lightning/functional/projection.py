"""Euclidean projection onto L1 balls, batched over rows.

The kernel of the method: Algorithm 2 of Wen et al. (Statistica Sinica 31, 2021), which is the
sort-based projection of Duchi et al. (ICML 2008), applied to every row of a matrix at once.
"""

from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor, nn

from l1inf_lightning.functional.norms import load_neuron_vectors_, neuron_vectors

__all__ = ["check_radius", "project_l1_ball", "project_l1_ball_", "project_module_"]


def check_radius(radius: object, name: str = "radius") -> float:
    """Return ``radius`` as a float if it is a positive number or inf, else raise.

    Any real number is accepted (``int``, ``float``, numpy scalars, one-element tensors), except ``bool``. Strings
    are accepted when they spell a number (``"inf"``, ``"0.5"``) since YAML and the command line deliver them
    that way.

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


def _threshold(magnitudes: Tensor, radius: Tensor) -> Tensor:
    r"""Soft-threshold level :math:`\theta` per row, for rows whose L1 norm exceeds ``radius``.

    ``magnitudes`` is (rows, d), non-negative, in float64; ``radius`` has shape (rows,). :math:`\theta` is the
    unique root of :math:`\sum_p \max(|v_p| - \theta, 0) = c`, the same value as Duchi et al.'s sort-based
    :math:`\theta = (\sum_{q \le p^*} \mu_q - c) / p^*` (Algorithm 2). It is found without sorting by the
    fixed-point iteration of Michelot (1986), batched over rows:

    .. math::

        \theta \leftarrow \frac{\sum_{|v_p| > \theta} |v_p| - c}{\#\{p : |v_p| > \theta\}},
        \qquad \theta_0 = \frac{\|v\|_1 - c}{d}.

    :math:`\theta` never decreases and the active set never grows, so the loop ends, exactly, once no row's
    active set changes; that takes a handful of O(rows·d) passes in practice (at most d).
    """
    count = torch.full_like(radius, magnitudes.shape[1])
    theta = (magnitudes.sum(dim=1) - radius) / count
    zero = magnitudes.new_zeros(())
    for _ in range(magnitudes.shape[1]):
        active = magnitudes > theta.unsqueeze(1)
        new_count = active.sum(dim=1, dtype=magnitudes.dtype)
        # The largest entry always stays active (theta < max |v_p| since c > 0), so new_count >= 1.
        new_theta = (torch.where(active, magnitudes, zero).sum(dim=1) - radius) / new_count
        if torch.equal(new_count, count):
            break
        # Rounding may nudge theta down; keeping it monotone keeps the active sets nested, so the loop ends.
        theta, count = torch.maximum(new_theta, theta), new_count
    # theta < 0 only when a row on the sphere is rounded to outside it; 0 then leaves the row unchanged.
    return theta.clamp_min(0)


_CPU_BLOCK_ELEMENTS = 1 << 16  # 512 KiB of float64 per block


def _projection_dtype(dtype: torch.dtype) -> torch.dtype:
    """The precision a projection is exact to: half types are projected as float32 (DESIGN: written back after)."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _project_rows_(vectors: Tensor, radii: Tensor) -> None:
    """Project the rows of ``vectors`` that lie outside their ball, in place, computing in float64."""
    magnitudes = vectors.abs().to(torch.float64)
    # A row this function wrote sums to c only up to rounding each entry to the dtype (<= c * eps / 2), so rows
    # within c * eps count as inside: projecting again, or after a restart, then changes nothing.
    outside = magnitudes.sum(dim=1) > radii * (1 + torch.finfo(_projection_dtype(vectors.dtype)).eps)
    if not bool(outside.any()):
        return
    if not bool(outside.all()):
        rows = outside.nonzero().squeeze(1)
        vectors[rows] = _shrink(magnitudes[rows], radii[rows], vectors[rows]).to(vectors.dtype)
        return
    vectors.copy_(_shrink(magnitudes, radii, vectors))


def _shrink(magnitudes: Tensor, radii: Tensor, signs: Tensor) -> Tensor:
    """``sign(v) * max(|v| - theta, 0)`` in float64, reusing ``magnitudes``' memory."""
    theta = _threshold(magnitudes, radii)
    return magnitudes.sub_(theta.unsqueeze(1)).clamp_min_(0).copysign_(signs.to(torch.float64))


def project_l1_ball_(vectors: Tensor, radius: float | Tensor) -> Tensor:
    """Project each row of ``vectors`` onto the L1 ball of ``radius`` in place and return it.

    Rows already inside the ball (up to one rounding of the dtype, ``||v||_1 <= c (1 + eps)``) are left bit-for-bit
    unchanged, so the projection is idempotent. The threshold is computed in float64 and the result written back
    in the input's dtype.

    Args:
        vectors: A 2-D floating tensor, one vector per row.
        radius: A positive number or ``inf``, or a 1-D tensor with one radius per row.

    Returns:
        ``vectors``, modified in place.
    """
    if vectors.ndim != 2:
        raise ValueError(
            f"Expected `vectors` to be a 2-D tensor (one vector per row), got shape {tuple(vectors.shape)}"
        )
    if not vectors.is_floating_point():
        raise ValueError(f"Expected `vectors` to have a floating dtype, got {vectors.dtype}")
    if isinstance(radius, Tensor) and radius.numel() != 1:
        radii = radius.to(device=vectors.device, dtype=torch.float64).reshape(-1)
        if radii.shape[0] != vectors.shape[0]:
            raise ValueError(
                f"Expected `radius` to hold one value per row ({vectors.shape[0]}), got shape {tuple(radius.shape)}"
            )
        if bool(torch.isnan(radii).any()) or bool((radii <= 0).any()):
            raise ValueError(f"Expected `radius` to be positive numbers or inf, got {radius.tolist()}")
    else:
        value = check_radius(radius)
        if math.isinf(value):
            return vectors
        radii = torch.full((vectors.shape[0],), value, device=vectors.device, dtype=torch.float64)
    if vectors.numel() == 0:
        return vectors

    # On CPU, blocks of rows small enough to stay in cache: the threshold search makes several passes over
    # |v|, and on a large layer those passes are bound by memory bandwidth, not arithmetic.
    block = vectors.shape[0] if vectors.is_cuda else max(1, _CPU_BLOCK_ELEMENTS // vectors.shape[1])
    for start in range(0, vectors.shape[0], block):
        _project_rows_(vectors[start : start + block], radii[start : start + block])
    return vectors


def project_l1_ball(vectors: Tensor, radius: float | Tensor) -> Tensor:
    r"""Euclidean projection of each row of a 2-D tensor onto the L1 ball of ``radius``.

    For every row :math:`v` it returns the closest point of the ball,

    .. math::

        \operatorname{proj}(v) = \arg\min_{\|w\|_1 \le c} \|w - v\|_2,
        \qquad w_p = \operatorname{sign}(v_p)\max(|v_p| - \theta, 0),

    with :math:`\theta = 0` for rows inside the ball (Algorithm 2 of Wen et al., 2021; Duchi et al., 2008).
    All rows are handled in one batched pass, with no Python loop over rows.

    Args:
        vectors: A 2-D floating tensor, one vector per row.
        radius: A positive number or ``inf``, or a 1-D tensor with one radius per row.

    Returns:
        A new tensor of the same shape, dtype and device.

    Example:
        >>> v = torch.tensor([[3.0, -2.0], [0.5, 1.0]])
        >>> project_l1_ball(v, 3.0)
        tensor([[ 2.0000, -1.0000],
                [ 0.5000,  1.0000]])
    """
    return project_l1_ball_(vectors.clone(), radius)


@torch.no_grad()
def project_module_(module: nn.Module, radius: float | Tensor) -> nn.Module:
    r"""Project every neuron of a Linear or Conv layer onto the L1 ball of ``radius``, in place.

    A neuron is one output unit: the vector ``[bias[j], weight[j].flatten()]`` (the weights alone when the
    layer has no bias), as in the paper's bias-augmented matrix :math:`\tilde V_\ell`. Parameters in half
    precision are projected in float32 (or better) and written back.

    Args:
        module: An ``nn.Linear`` or ``nn.Conv1d/2d/3d``.
        radius: A positive number or ``inf``, or one radius per output neuron.

    Returns:
        ``module``.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.1, 0.0, 0.1]]))
        ...     _ = layer.bias.copy_(torch.tensor([0.5, 0.1]))
        >>> _ = project_module_(layer, 2.0)
        >>> layer.weight
        Parameter containing:
        tensor([[ 0.5000, -1.5000,  0.0000],
                [ 0.1000,  0.0000,  0.1000]], requires_grad=True)
        >>> layer.bias
        Parameter containing:
        tensor([0.0000, 0.1000], requires_grad=True)
    """
    vectors = neuron_vectors(module)
    load_neuron_vectors_(module, project_l1_ball_(vectors, radius))
    return module
