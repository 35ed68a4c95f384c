r"""Generalization bounds for regression: Lemma 4, Theorem 5 (squared loss) and Remark 3 (absolute loss).

Wen, Xu, Zheng, Yang and Wang, Statistica Sinica 31 (2021); notation in :mod:`l1inf_lightning.functional.bounds`.
"""

from __future__ import annotations

import math

from l1inf_lightning._checks import check_int, check_radius
from l1inf_lightning.functional.bounds._arithmetic import (
    as_real,
    check_non_negative,
    check_positive_finite,
    check_probability,
    confidence_term,
    power,
    product,
)
from l1inf_lightning.functional.bounds.complexity import complexity_term

__all__ = ["generalization_bound_fixed_output", "mae_generalization_bound", "mse_generalization_bound"]


def generalization_bound_fixed_output(
    a0: float, rho: float, o: float, c: float, k: int, gamma: float, n: int, m1: int, delta: float
) -> float:
    r"""Generalization-error bound for regression over :math:`\mathcal{SN}^{k,d,\sigma}_{c,o}` (fixed :math:`o`).

    With probability at least :math:`1 - \delta`, for a loss with values in :math:`[0, A_0]` that is
    :math:`\rho`-Lipschitz in its first argument,

    .. math::
        \mathcal E_L(f) \le A_0\sqrt{\frac{\log(1/\delta)}{2n}} + \frac{2o\rho}{\sqrt n}\left[\sqrt{(k+1)\log 16}
        \left(\sum_{\ell=0}^{k}(c\gamma)^\ell + (c\gamma)^k\right) + (c\gamma)^k\sqrt{2\log(2m_1)}\right].

    Lemma 4 of Wen et al., Statistica Sinica 31 (2021) (Lemma 3 applied to Theorem 1).

    Args:
        a0: Upper bound :math:`A_0` of the loss.
        rho: Lipschitz constant :math:`\rho` of the loss in its first argument.
        o: Bound on the :math:`L_1` norm of the output layer's column (bias included).
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        k: Number of hidden layers.
        gamma: Lipschitz constant of the activation.
        n: Sample size.
        m1: Input dimension.
        delta: Failure probability :math:`\delta`.

    Returns:
        The bound; ``inf`` when ``c`` is ``inf``, ``k >= 1`` and ``o * rho > 0``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> round(generalization_bound_fixed_output(a0=1.0, rho=1.0, o=2.0, c=1.0, k=1, gamma=1.0, n=100, m1=10,
        ...                                         delta=0.05), 4)
        3.9273
    """
    a0 = check_non_negative(a0, "a0")
    rho = check_non_negative(rho, "rho")
    o = check_non_negative(o, "o")
    n = check_int("n", n, 1)
    delta = check_probability(delta, "delta")
    complexity = complexity_term(c, k, gamma, m1)
    return confidence_term(a0, n, delta) + product(2.0, o, rho, complexity) / math.sqrt(n)


def mse_generalization_bound(
    c: float, k: int, gamma: float, n: int, m1: int, delta: float, b0: float, output_l1: float
) -> float:
    r"""Generalization-error bound of the squared loss :math:`\tfrac12 (y - f(x))^2`, uniform over :math:`c`-nets.

    With probability at least :math:`1 - \delta`, for :math:`|y| \le B_0` and :math:`T = \|T_{k+1}\|_1`,

    .. math::
        \mathcal E_{L_{se}}(f_T) \le \sqrt{\frac{\log(1/\delta) + 2\log(T + 2)}{2n}}
        \left(B_0^2 + (T+1)^2\max\left(1, (\gamma c)^{2k}\right)\right)
        + \frac{2}{\sqrt n}\left(B_0 + (T+1)\max\left(1, (\gamma c)^k\right)\right)(T+1)
        \left[\sqrt{(k+1)\log 16}\left(\sum_{\ell=0}^{k}(\gamma c)^\ell + (\gamma c)^k\right)
        + (\gamma c)^k\sqrt{2\log(2m_1)}\right].

    Theorem 5 of Wen et al., Statistica Sinica 31 (2021). The slide's inner sum reads :math:`\sum_{k=0}^k`; it runs
    over :math:`\ell` from 0 to :math:`k`, as in Theorem 1 and Lemma 4.

    Args:
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        k: Number of hidden layers.
        gamma: Lipschitz constant of the activation.
        n: Sample size.
        m1: Input dimension.
        delta: Failure probability :math:`\delta`.
        b0: Bound :math:`B_0` on :math:`|y|`.
        output_l1: :math:`\|T_{k+1}\|_1`, the :math:`L_1` norm of the output layer's single column, bias included.

    Returns:
        The bound; ``inf`` when ``c`` is ``inf`` and ``k >= 1``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> round(mse_generalization_bound(c=1.0, k=1, gamma=1.0, n=1000, m1=10, delta=0.05, b0=1.0, output_l1=1.0),
        ...       4)
        3.8644
    """
    c = check_radius(c, "c")
    n = check_int("n", n, 1)
    delta = check_probability(delta, "delta")
    b0 = check_non_negative(b0, "b0")
    output_l1 = check_non_negative(output_l1, "output_l1")
    complexity = complexity_term(c, k, gamma, m1)  # validates k, gamma, m1
    gamma_c = gamma * c
    grid_o = output_l1 + 1  # the union bound over integer o replaces ||T_{k+1}||_1 by its ceiling, at most T + 1
    confidence = math.sqrt((math.log(1 / delta) + 2 * math.log(output_l1 + 2)) / (2 * n))
    loss_range = b0**2 + grid_o**2 * max(1.0, power(gamma_c, 2 * k))
    loss_lipschitz = b0 + grid_o * max(1.0, power(gamma_c, k))
    return confidence * loss_range + 2 / math.sqrt(n) * loss_lipschitz * grid_o * complexity


def mae_generalization_bound(
    c: float, k: int, gamma: float, n: int, m1: int, delta: float, b0: float, output_l1: float, delta0: float
) -> float:
    r"""Generalization-error bound of the absolute loss :math:`|y - f(x)|` when :math:`|y| \le B_0` only w.p. 1-δ0.

    With :math:`\mathbb P(|y| \le B_0) \ge 1 - \delta_0` and :math:`T = \|T_{k+1}\|_1`, transcribed from the slides
    as written:

    .. math::
        \mathcal E_{L_{ae}}(f_T) \le (1 - \delta_0)\frac{\left(B_0 + (T+1)(c\gamma)^k\right)^2}{\sqrt n}
        \left(\sqrt{\log\sqrt{2/\delta} + \log(T+2)} + 2\sqrt{(k+3)\log 4} + 2\sqrt{2\log(2m_1)}\right).

    Remark 3 of Wen et al., Statistica Sinica 31 (2021). The slide's formula looks garbled in places, which this
    function does not repair: the loss is 1-Lipschitz, yet :math:`B_0 + (T+1)(c\gamma)^k` enters squared (as for the
    squared loss); the factor :math:`(1 - \delta_0)` makes the bound *smaller* as the assumption on :math:`y` gets
    weaker (it probably belongs to the probability of the event, not to the bound); there is no
    :math:`\max(1, \cdot)` around :math:`(c\gamma)^k`, unlike Theorem 5, and no sum over :math:`\ell`. Prefer
    :func:`mse_generalization_bound` or :func:`generalization_bound_fixed_output` where they apply.

    Args:
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        k: Number of hidden layers.
        gamma: Lipschitz constant of the activation.
        n: Sample size.
        m1: Input dimension.
        delta: Failure probability :math:`\delta`.
        b0: Bound :math:`B_0` on :math:`|y|`, holding with probability :math:`1 - \delta_0`.
        output_l1: :math:`\|T_{k+1}\|_1`, the :math:`L_1` norm of the output layer's single column, bias included.
        delta0: Probability :math:`\delta_0 \in [0, 1)` that :math:`|y| > B_0`.

    Returns:
        The bound; ``inf`` when ``c`` is ``inf`` and ``k >= 1``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> round(mae_generalization_bound(c=1.0, k=1, gamma=1.0, n=1000, m1=10, delta=0.05, b0=1.0, output_l1=1.0,
        ...                                delta0=0.1), 4)
        2.8997
    """
    c = check_radius(c, "c")
    k = check_int("k", k, 0)
    gamma = check_positive_finite(gamma, "gamma")
    n = check_int("n", n, 1)
    m1 = check_int("m1", m1, 1)
    delta = check_probability(delta, "delta")
    b0 = check_non_negative(b0, "b0")
    output_l1 = check_non_negative(output_l1, "output_l1")
    real_delta0 = as_real(delta0)
    if real_delta0 is None or not 0 <= real_delta0 < 1:
        raise ValueError(f"Expected `delta0` to be in [0, 1), got {delta0!r}")
    delta0 = real_delta0
    # As on the slide: squared range, no max(1, .), (1 - delta0) as a factor (see the docstring).
    scale = (1 - delta0) * (b0 + (output_l1 + 1) * power(gamma * c, k)) ** 2 / math.sqrt(n)
    bracket = (
        math.sqrt(math.log(math.sqrt(2 / delta)) + math.log(output_l1 + 2))
        + 2 * math.sqrt((k + 3) * math.log(4))
        + 2 * math.sqrt(2 * math.log(2 * m1))
    )
    return scale * bracket
