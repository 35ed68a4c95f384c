r"""Generalization bounds for classification: Lemma 6 and Theorem 7 (cross entropy).

Wen, Xu, Zheng, Yang and Wang, Statistica Sinica 31 (2021); notation in :mod:`l1inf_lightning.functional.bounds`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from l1inf_lightning._checks import check_int, check_radius
from l1inf_lightning.functional.bounds._arithmetic import (
    check_non_negative,
    check_non_negative_sequence,
    check_probability,
    confidence_term,
    power,
    product,
)
from l1inf_lightning.functional.bounds.complexity import complexity_term

__all__ = ["classification_generalization_bound_fixed_output", "cross_entropy_generalization_bound"]

# Relative slack when checking that a given norm is at least the max / sum of its per-class parts, so that norms
# reduced in float32 by the caller are not rejected for rounding.
_NORM_CONSISTENCY_RTOL = 1e-6


def classification_generalization_bound_fixed_output(
    a0: float, rho: float, o: Sequence[float], c: float, k: int, gamma: float, n: int, m1: int, delta: float
) -> float:
    r"""Generalization-error bound for classification over :math:`\mathcal{SN}^{k,d,\sigma}_{c,o}` (fixed :math:`o`).

    With probability at least :math:`1 - \delta`, for a loss with values in :math:`[0, A_0]` that is
    :math:`\rho`-Lipschitz in the Euclidean norm of the :math:`m_2` logits,

    .. math::
        \mathcal E_L(f) \le A_0\sqrt{\frac{\log(1/\delta)}{2n}} + \frac{2\sqrt2\rho}{\sqrt n}
        \left(\sum_{j=1}^{m_2} o_j\right)\left[\sqrt{(k+1)\log 16}\left(\sum_{\ell=0}^{k}(c\gamma)^\ell
        + (c\gamma)^k\right) + (c\gamma)^k\sqrt{2\log(2m_1)}\right].

    Lemma 6 of Wen et al., Statistica Sinica 31 (2021).

    Args:
        a0: Upper bound :math:`A_0` of the loss.
        rho: Lipschitz constant :math:`\rho` of the loss in the logits.
        o: Per-class bounds :math:`o_j` on the :math:`L_1` norm of output-layer column :math:`j` (bias included);
            one per class, so at least two.
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        k: Number of hidden layers.
        gamma: Lipschitz constant of the activation.
        n: Sample size.
        m1: Input dimension.
        delta: Failure probability :math:`\delta`.

    Returns:
        The bound; ``inf`` when ``c`` is ``inf``, ``k >= 1`` and ``rho * sum(o) > 0``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> round(classification_generalization_bound_fixed_output(a0=1.0, rho=1.0, o=[1.0, 1.0], c=1.0, k=1,
        ...                                                        gamma=1.0, n=100, m1=10, delta=0.05), 4)
        5.5033
    """
    a0 = check_non_negative(a0, "a0")
    rho = check_non_negative(rho, "rho")
    o_sum = math.fsum(check_non_negative_sequence(o, "o", min_length=2))
    n = check_int("n", n, 1)
    delta = check_probability(delta, "delta")
    complexity = complexity_term(c, k, gamma, m1)
    return confidence_term(a0, n, delta) + product(2 * math.sqrt(2), rho, o_sum, complexity) / math.sqrt(n)


def cross_entropy_generalization_bound(
    c: float,
    k: int,
    gamma: float,
    n: int,
    m1: int,
    m2: int,
    delta: float,
    output_l1inf: float,
    output_column_l1: Sequence[float],
    output_l11: float,
) -> float:
    r"""Generalization-error bound of the cross-entropy loss, uniform over :math:`c`-nets with :math:`m_2` classes.

    With probability at least :math:`1 - \delta`, writing
    :math:`B = \left(\|T_{k+1}\|_{1,\infty} + \tfrac{1}{m_2}\right)\max\left(1, (\gamma c)^k\right)` for the bound on
    the logits,

    .. math::
        \mathcal E_{L_{ce}}(f_T) \le \left(2B + \log m_2\right)
        \sqrt{\frac{\log(1/\delta) + 2\sum_{j=1}^{m_2}\log\left(m_2\|T_{k+1}[j]\|_1 + 2\right)}{2n}}
        + \frac{2\sqrt2}{\sqrt n}\left(\|T_{k+1}\|_{1,1} + 1\right)
        \left(1 + \frac{\sqrt{m_2 - 1}}{1 + (m_2 - 1)e^{-2B}}\right)
        \left[\sqrt{(k+1)\log 16}\left(\sum_{\ell=0}^{k}(\gamma c)^\ell + (\gamma c)^k\right)
        + (\gamma c)^k\sqrt{2\log(2m_1)}\right].

    Theorem 7 of Wen et al., Statistica Sinica 31 (2021).

    Args:
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        k: Number of hidden layers.
        gamma: Lipschitz constant of the activation.
        n: Sample size.
        m1: Input dimension.
        m2: Number of classes.
        delta: Failure probability :math:`\delta`.
        output_l1inf: :math:`\|T_{k+1}\|_{1,\infty}`, the largest of ``output_column_l1`` (an upper bound is fine:
            the bound grows with it).
        output_column_l1: The :math:`m_2` norms :math:`\|T_{k+1}[j]\|_1`, one per class, bias included.
        output_l11: :math:`\|T_{k+1}\|_{1,1}`, the sum of ``output_column_l1`` (an upper bound is fine).

    Returns:
        The bound; ``inf`` when ``c`` is ``inf`` and ``k >= 1``.

    Raises:
        ValueError: If an argument is out of range, if ``output_column_l1`` does not hold ``m2`` norms, or if
            ``output_l1inf`` / ``output_l11`` are smaller than the max / sum of ``output_column_l1``.

    Example:
        >>> round(cross_entropy_generalization_bound(c=1.0, k=1, gamma=1.0, n=1000, m1=10, m2=2, delta=0.05,
        ...                                          output_l1inf=1.0, output_column_l1=[1.0, 0.5], output_l11=1.5),
        ...       4)
        4.3862
    """
    c = check_radius(c, "c")
    n = check_int("n", n, 1)
    m2 = check_int("m2", m2, 2)
    delta = check_probability(delta, "delta")
    output_l1inf = check_non_negative(output_l1inf, "output_l1inf")
    output_l11 = check_non_negative(output_l11, "output_l11")
    columns = check_non_negative_sequence(output_column_l1, "output_column_l1")
    if len(columns) != m2:
        raise ValueError(f"Expected `output_column_l1` to hold `m2` = {m2} norms, got {len(columns)}")
    largest, total = max(columns), math.fsum(columns)
    if output_l1inf < largest * (1 - _NORM_CONSISTENCY_RTOL):
        raise ValueError(
            f"Expected `output_l1inf` to be at least the largest of `output_column_l1` ({largest!r}), "
            f"got {output_l1inf!r}"
        )
    if output_l11 < total * (1 - _NORM_CONSISTENCY_RTOL):
        raise ValueError(
            f"Expected `output_l11` to be at least the sum of `output_column_l1` ({total!r}), got {output_l11!r}"
        )
    complexity = complexity_term(c, k, gamma, m1)  # validates k, gamma, m1
    # The union bound over a grid of step 1/m2 per class adds 1/m2 to each column norm.
    logit_bound = (output_l1inf + 1 / m2) * max(1.0, power(gamma * c, k))
    confidence = math.sqrt((math.log(1 / delta) + 2 * math.fsum(math.log(m2 * norm + 2) for norm in columns)) / (2 * n))
    # Lipschitz constant of cross entropy in the logits: 1 + sqrt(m2 - 1) times the largest softmax probability
    # that logits bounded by B allow, 1 / (1 + (m2 - 1) e^{-2B}).
    loss_lipschitz = 1 + math.sqrt(m2 - 1) / (1 + (m2 - 1) * math.exp(-2 * logit_bound))
    return (2 * logit_bound + math.log(m2)) * confidence + 2 * math.sqrt(2) / math.sqrt(n) * (
        output_l11 + 1
    ) * loss_lipschitz * complexity
