"""Euclidean projection onto L1 balls, batched over rows.

The kernel of the method: Algorithm 2 of Wen et al. (Statistica Sinica 31, 2021), which is the
sort-based projection of Duchi et al. (ICML 2008), applied to every row of a matrix at once.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from l1inf_lightning.functional.norms import load_neuron_vectors_, neuron_vectors

__all__ = ["check_radius", "project_l1_ball", "project_l1_ball_", "project_module_"]


def check_radius(radius: object, name: str = "radius") -> float:
    """Return ``radius`` as a float if it is a positive number or inf, else raise.

    Strings are accepted when they spell a number (``"inf"``, ``"0.5"``) since YAML and the command line
    deliver them that way.

    >>> check_radius("inf")
    inf
    """
    value: float | None = None
    if isinstance(radius, bool):
        value = None
    elif isinstance(radius, (int, float)):
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
    """Soft-threshold level theta per row for rows whose L1 norm exceeds ``radius``.

    ``magnitudes`` is (rows, d), non-negative, in float64; ``radius`` broadcasts to (rows,).
    Duchi et al.: with mu sorted decreasingly, p* = max{p : mu_p - (sum_{q<=p} mu_q - c) / p > 0}
    and theta = (sum_{q<=p*} mu_q - c) / p*.
    """
    mu = torch.sort(magnitudes, dim=1, descending=True).values
    excess = torch.cumsum(mu, dim=1) - radius.unsqueeze(1)
    ranks = torch.arange(1, mu.shape[1] + 1, device=mu.device, dtype=mu.dtype)
    # Rank of the last entry that stays positive after thresholding. The condition holds on a prefix in
    # exact arithmetic; taking the largest rank where it holds is Duchi's definition and is robust to ties.
    active = mu * ranks > excess
    p_star = torch.where(active, ranks, torch.zeros_like(ranks)).amax(dim=1)
    # p_star >= 1 whenever the row lies outside the ball (mu_1 > mu_1 - c), so the gather is safe.
    index = (p_star.long() - 1).clamp_min(0).unsqueeze(1)
    return excess.gather(1, index).squeeze(1) / p_star.clamp_min(1)


def project_l1_ball_(vectors: Tensor, radius: float | Tensor) -> Tensor:
    """Project each row of ``vectors`` onto the L1 ball of ``radius`` in place and return it.

    Rows already inside the ball are left bit-for-bit unchanged. The threshold is computed in float64
    and the result written back in the input's dtype, so float16 and bfloat16 rows are projected in
    (at least) float32 precision.

    Args:
        vectors: A 2-D floating tensor, one vector per row.
        radius: A positive number or ``inf``, or a 1-D tensor with one radius per row.

    Returns:
        ``vectors``, modified in place.
    """
    if vectors.ndim != 2:
        raise ValueError(f"Expected `vectors` to be a 2-D tensor (one vector per row), got shape {tuple(vectors.shape)}")
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

    magnitudes = vectors.abs().to(torch.float64)
    norms = magnitudes.sum(dim=1)
    outside = norms > radii
    if not bool(outside.any()):
        return vectors
    if bool(outside.all()):
        theta = _threshold(magnitudes, radii)
        shrunk = (magnitudes - theta.unsqueeze(1)).clamp_min_(0)
        vectors.copy_(shrunk.copysign_(vectors.to(torch.float64)))
        return vectors
    rows = outside.nonzero().squeeze(1)
    theta = _threshold(magnitudes[rows], radii[rows])
    shrunk = (magnitudes[rows] - theta.unsqueeze(1)).clamp_min_(0)
    vectors[rows] = shrunk.copysign_(vectors[rows].to(torch.float64)).to(vectors.dtype)
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
    """Project every neuron of a Linear or Conv layer onto the L1 ball of ``radius``, in place.

    A neuron is one output unit: the vector ``[bias[j], weight[j].flatten()]`` (the weights alone when the
    layer has no bias), as in the paper's bias-augmented matrix :math:`\\tilde V_\\ell`. Parameters in half
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
