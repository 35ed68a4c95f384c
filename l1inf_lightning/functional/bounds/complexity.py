r"""The complexity of the class of L1,inf-normalized networks: Theorem 1, Lemma 2 and Remark 1.

Wen, Xu, Zheng, Yang and Wang, Statistica Sinica 31 (2021); notation in :mod:`l1inf_lightning.functional.bounds`.
"""

from __future__ import annotations

import math

from l1inf_lightning._checks import check_int, check_radius
from l1inf_lightning.functional.activations import ACTIVATIONS, check_activation
from l1inf_lightning.functional.bounds._arithmetic import (
    check_non_negative,
    check_positive_finite,
    geometric_sum,
    power,
    product,
)

__all__ = [
    "asymptotic_depth_factor",
    "complexity_term",
    "depth_regime",
    "lipschitz_constant",
    "output_sup_bound",
    "rademacher_bound",
]


def lipschitz_constant(activation: str) -> float:
    r"""The Lipschitz constant :math:`\gamma_\sigma` of an activation the theorems cover.

    .. math::
        \gamma_{\mathrm{ReLU}} = \gamma_{\tanh} = 1, \qquad \gamma_{\mathrm{sigmoid}} = \tfrac14.

    Theorem 1 of Wen et al., Statistica Sinica 31 (2021). The theorems also need :math:`\sigma(0) = 0`; the slides list
    sigmoid among the covered activations all the same, so it is accepted here.

    Args:
        activation: ``"relu"``, ``"sigmoid"`` or ``"tanh"`` (case-insensitive).

    Returns:
        The Lipschitz constant.

    Raises:
        ValueError: If ``activation`` is not one of the three.

    Example:
        >>> lipschitz_constant("sigmoid")
        0.25
    """
    return ACTIVATIONS[check_activation(activation)].lipschitz


def complexity_term(c: float, k: int, gamma: float, m1: int) -> float:
    r"""The bracket shared by every bound, without the :math:`o / \sqrt n` factor.

    .. math::
        C = \sqrt{(k+1)\log 16}\left(\sum_{\ell=0}^{k}(\gamma c)^\ell + (\gamma c)^k\right)
        + (\gamma c)^k\sqrt{2\log(2m_1)}

    Theorem 1, Lemma 4, Theorem 5, Lemma 6 and Theorem 7 of Wen et al., Statistica Sinica 31 (2021).

    Args:
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        k: Number of hidden layers.
        gamma: Lipschitz constant of the activation.
        m1: Input dimension.

    Returns:
        :math:`C`; ``inf`` when ``c`` is ``inf`` and ``k >= 1``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> round(complexity_term(c=1.0, k=1, gamma=1.0, m1=10), 4)
        9.5122
    """
    c = check_radius(c, "c")
    k = check_int("k", k, 0)
    gamma = check_positive_finite(gamma, "gamma")
    m1 = check_int("m1", m1, 1)
    gamma_c = gamma * c
    deepest = power(gamma_c, k)
    # Theorem 5's slide writes this sum as \sum_{k=0}^{k}; the index is ell, from 0 to k, as in Theorem 1.
    depth_sum = geometric_sum(gamma_c, k) + deepest
    return math.sqrt((k + 1) * math.log(16)) * depth_sum + deepest * math.sqrt(2 * math.log(2 * m1))


def rademacher_bound(c: float, k: int, o: float, gamma: float, n: int, m1: int) -> float:
    r"""Bound on the empirical Rademacher complexity of :math:`\mathcal{SN}^{k,d,\sigma}_{c,o}` (one output).

    .. math::
        \widehat{\mathfrak R}_S \le o\sqrt{\frac{(k+1)\log 16}{n}}\left(\sum_{\ell=0}^{k}(\gamma c)^\ell
        + (\gamma c)^k\right) + o(\gamma c)^k\sqrt{\frac{2\log(2m_1)}{n}}

    Theorem 1 of Wen et al., Statistica Sinica 31 (2021), for inputs in :math:`[-1, 1]^{m_1}`.

    Args:
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        k: Number of hidden layers.
        o: Bound on the :math:`L_1` norm of the output layer's column (bias included).
        gamma: Lipschitz constant of the activation.
        n: Sample size.
        m1: Input dimension.

    Returns:
        The bound; ``inf`` when ``c`` is ``inf``, ``k >= 1`` and ``o > 0``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> round(rademacher_bound(c=1.0, k=1, o=2.0, gamma=1.0, n=100, m1=10), 4)
        1.9024
    """
    o = check_non_negative(o, "o")
    n = check_int("n", n, 1)
    return product(o, complexity_term(c, k, gamma, m1)) / math.sqrt(n)


def output_sup_bound(o_max: float, c: float, k: int, gamma: float) -> float:
    r"""Bound on the sup norm of a network's output.

    .. math::
        \|f(x)\|_\infty \le \|o\|_\infty \max\left(1, (\gamma c)^k\right)

    Lemma 2 of Wen et al., Statistica Sinica 31 (2021), for :math:`x \in [-1, 1]^{m_1}`.

    Args:
        o_max: :math:`\|o\|_\infty`, the largest :math:`L_1` norm of an output-layer column (bias included).
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        k: Number of hidden layers.
        gamma: Lipschitz constant of the activation.

    Returns:
        The bound; ``inf`` when ``c`` is ``inf``, ``k >= 1`` and ``o_max > 0``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> output_sup_bound(o_max=3.0, c=2.0, k=2, gamma=1.0)
        12.0
    """
    o_max = check_non_negative(o_max, "o_max")
    c = check_radius(c, "c")
    k = check_int("k", k, 0)
    gamma = check_positive_finite(gamma, "gamma")
    return product(o_max, max(1.0, power(gamma * c, k)))


def depth_regime(c: float, gamma: float) -> str:
    r"""Which of Remark 1's regimes a radius falls in.

    .. math::
        \gamma c < 1: \text{contracting}, \qquad \gamma c = 1: \text{critical}, \qquad
        \gamma c > 1: \text{expanding}.

    Remark 1 of Wen et al., Statistica Sinica 31 (2021). Equality is tested with :func:`math.isclose`.

    Args:
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        gamma: Lipschitz constant of the activation.

    Returns:
        ``"contracting"``, ``"critical"`` or ``"expanding"``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> depth_regime(c=4.0, gamma=0.25)
        'critical'
    """
    gamma_c = check_positive_finite(gamma, "gamma") * check_radius(c, "c")
    if math.isclose(gamma_c, 1.0):
        return "critical"
    return "contracting" if gamma_c < 1 else "expanding"


def asymptotic_depth_factor(c: float, k: int, gamma: float) -> float:
    r"""The dependence of Theorem 1's bound on the depth :math:`k`, regime by regime.

    .. math::
        \begin{cases}
            \sqrt k\,\dfrac{1 - (\gamma c)^{k+1}}{1 - \gamma c} & \gamma c < 1, \\
            k^{3/2} & \gamma c = 1, \\
            \sqrt k\,\dfrac{(\gamma c)^{k+1} - 1}{\gamma c - 1} & \gamma c > 1.
        \end{cases}

    Remark 1 of Wen et al., Statistica Sinica 31 (2021) (valid when :math:`\log m_1` is small). Off the critical
    regime both fractions equal :math:`\sum_{\ell=0}^{k}(\gamma c)^\ell`, which is how they are computed, so that
    they stay exact near :math:`\gamma c = 1` and at ``c = inf``. The critical regime follows the remark's
    :math:`k^{3/2}` rather than the sum's limit :math:`\sqrt k (k+1)`, which differs by :math:`O(\sqrt k)`.

    Args:
        c: Bound on every hidden layer's :math:`L_{1,\infty}` norm; ``math.inf`` for no constraint.
        k: Number of hidden layers; ``k = 0`` gives 0.
        gamma: Lipschitz constant of the activation.

    Returns:
        The factor; ``inf`` when ``c`` is ``inf`` and ``k >= 1``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> round(asymptotic_depth_factor(c=0.5, k=4, gamma=1.0), 4)
        3.875
    """
    k = check_int("k", k, 0)
    regime = depth_regime(c, gamma)
    if regime == "critical":
        return float(k) ** 1.5
    return product(math.sqrt(k), geometric_sum(gamma * float(c), k))
