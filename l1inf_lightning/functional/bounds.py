r"""Rademacher-complexity and generalization bounds for L1,inf-normalized networks, as pure scalar functions.

The formulas are those of Wen, Xu, Zheng, Yang and Wang, "Sparse deep neural networks using
:math:`L_{1,\infty}`-weight normalization", Statistica Sinica 31 (2021). A network
:math:`f = T_{k+1} \circ \sigma \circ T_k \circ \cdots \circ \sigma \circ T_1` has :math:`k` hidden layers, each with
:math:`\|\tilde V_\ell\|_{1,\infty} \le c`; :math:`\gamma` is the Lipschitz constant of :math:`\sigma`
(:func:`lipschitz_constant`), :math:`n` the sample size, :math:`m_1` the input dimension and :math:`m_2` the number of
classes. Every bound shares the bracket

.. math::
    C(c, k, \gamma, m_1) = \sqrt{(k+1)\log 16}\left(\sum_{\ell=0}^{k}(\gamma c)^\ell + (\gamma c)^k\right)
    + (\gamma c)^k\sqrt{2\log(2m_1)},

computed once by :func:`complexity_term`.

**Inputs must lie in** :math:`[-1, 1]^{m_1}`. All theorems assume it. Data with :math:`s = \max_i \|x_i\|_\infty > 1`
must be rescaled by the caller: the net :math:`f` on :math:`x` equals the net :math:`f'` on :math:`x / s` whose first
layer has weights :math:`s W_1` and the same bias, so the bounds apply to :math:`f'` with the first layer's
:math:`L_{1,\infty}` norm measured on :math:`(b_1, s W_1)`; :func:`rescaled_l1inf_norm` computes it. When
:math:`s \le 1` the data already lie in the cube and the norm is used as measured (the conservative choice: shrinking
it would only hold for data no larger than the training maximum). The caller then passes the largest of the rescaled
first-layer norm and the other hidden layers' norms as ``c``.

``c = math.inf`` (or ``"inf"``, as YAML and the command line write it) is the unconstrained baseline: every bound is
then ``inf`` for ``k >= 1``, while for ``k = 0`` (no hidden layer) :math:`(\gamma c)^0 = 1` and the bound is finite.
A zero factor (``o = 0``, ``rho = 0``) makes its term zero even when ``c = inf``: the class then holds only the zero
function (or the loss ignores it), so the bound is 0 for every finite ``c`` and we keep that limit instead of
returning ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from numbers import Real

from l1inf_lightning._checks import check_int, check_radius
from l1inf_lightning.functional.activations import ACTIVATIONS, check_activation

__all__ = [
    "asymptotic_depth_factor",
    "classification_generalization_bound_fixed_output",
    "complexity_term",
    "cross_entropy_generalization_bound",
    "depth_regime",
    "generalization_bound_fixed_output",
    "lipschitz_constant",
    "mae_generalization_bound",
    "mse_generalization_bound",
    "output_sup_bound",
    "rademacher_bound",
    "rescaled_l1inf_norm",
]

# Relative slack when checking that a given norm is at least the max / sum of its per-class parts, so that norms
# reduced in float32 by the caller are not rejected for rounding.
_NORM_CONSISTENCY_RTOL = 1e-6


# --------------------------------------------------------------------------------------------------------------------
# Argument checks. Messages name the argument in backticks and echo the bad value.
# --------------------------------------------------------------------------------------------------------------------


def _as_real(value: object) -> float | None:
    # A real number as a float, or None for bools, nan and anything that is not a real number.
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        return None
    return float(value)


def _check_positive_finite(value: object, name: str) -> float:
    real = _as_real(value)
    if real is None or not 0 < real < math.inf:
        raise ValueError(f"Expected `{name}` to be a positive finite number, got {value!r}")
    return real


def _check_non_negative(value: object, name: str) -> float:
    real = _as_real(value)
    if real is None or real < 0:
        raise ValueError(f"Expected `{name}` to be a non-negative number, got {value!r}")
    return real


def _check_probability(value: object, name: str) -> float:
    real = _as_real(value)
    if real is None or not 0 < real < 1:
        raise ValueError(f"Expected `{name}` to be in (0, 1), got {value!r}")
    return real


def _as_list(values: object) -> list[object] | None:
    return list(values) if isinstance(values, Iterable) else None


def _check_non_negative_sequence(values: Sequence[float], name: str, min_length: int = 1) -> list[float]:
    # Any iterable but a string is accepted, so that NumPy arrays and ``tensor.tolist()`` both work.
    items = None if isinstance(values, (str, bytes)) else _as_list(values)
    if items is None or len(items) < min_length:
        raise ValueError(f"Expected `{name}` to be a sequence of at least {min_length} numbers, got {values!r}")
    reals: list[float] = []
    for value in items:
        real = _as_real(value)
        if real is None or real < 0:
            raise ValueError(f"Expected every entry of `{name}` to be a non-negative number, got {value!r}")
        reals.append(real)
    return reals


# --------------------------------------------------------------------------------------------------------------------
# Arithmetic that stays exact at c = inf: inf ** 0 == 1, overflow -> inf, and 0 * inf == 0 (never nan).
# --------------------------------------------------------------------------------------------------------------------


def _power(base: float, exponent: int) -> float:
    if exponent == 0:
        return 1.0
    try:
        return base**exponent
    except OverflowError:  # float ** int raises instead of returning inf
        return math.inf


def _product(*factors: float) -> float:
    # A zero factor wins over an infinite one: see the module docstring.
    if any(factor == 0 for factor in factors):
        return 0.0
    return math.prod(factors)


def _geometric_sum(ratio: float, k: int) -> float:
    # Summed term by term: exact at ratio == 1 and ratio == inf, where the closed form is 0/0 or inf/inf.
    return math.fsum(_power(ratio, ell) for ell in range(k + 1))


def _confidence_term(a0: float, n: int, delta: float) -> float:
    # Lemma 3: the McDiarmid term A0 * sqrt(log(1/delta) / (2n)) of a loss bounded by A0.
    return _product(a0, math.sqrt(math.log(1 / delta) / (2 * n)))


# --------------------------------------------------------------------------------------------------------------------
# Public functions.
# --------------------------------------------------------------------------------------------------------------------


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
    gamma = _check_positive_finite(gamma, "gamma")
    m1 = check_int("m1", m1, 1)
    gamma_c = gamma * c
    deepest = _power(gamma_c, k)
    # Theorem 5's slide writes this sum as \sum_{k=0}^{k}; the index is ell, from 0 to k, as in Theorem 1.
    depth_sum = _geometric_sum(gamma_c, k) + deepest
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
    o = _check_non_negative(o, "o")
    n = check_int("n", n, 1)
    return _product(o, complexity_term(c, k, gamma, m1)) / math.sqrt(n)


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
    o_max = _check_non_negative(o_max, "o_max")
    c = check_radius(c, "c")
    k = check_int("k", k, 0)
    gamma = _check_positive_finite(gamma, "gamma")
    return _product(o_max, max(1.0, _power(gamma * c, k)))


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
    a0 = _check_non_negative(a0, "a0")
    rho = _check_non_negative(rho, "rho")
    o = _check_non_negative(o, "o")
    n = check_int("n", n, 1)
    delta = _check_probability(delta, "delta")
    complexity = complexity_term(c, k, gamma, m1)
    return _confidence_term(a0, n, delta) + _product(2.0, o, rho, complexity) / math.sqrt(n)


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
    delta = _check_probability(delta, "delta")
    b0 = _check_non_negative(b0, "b0")
    output_l1 = _check_non_negative(output_l1, "output_l1")
    complexity = complexity_term(c, k, gamma, m1)  # validates k, gamma, m1
    gamma_c = gamma * c
    grid_o = output_l1 + 1  # the union bound over integer o replaces ||T_{k+1}||_1 by its ceiling, at most T + 1
    confidence = math.sqrt((math.log(1 / delta) + 2 * math.log(output_l1 + 2)) / (2 * n))
    loss_range = b0**2 + grid_o**2 * max(1.0, _power(gamma_c, 2 * k))
    loss_lipschitz = b0 + grid_o * max(1.0, _power(gamma_c, k))
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
    gamma = _check_positive_finite(gamma, "gamma")
    n = check_int("n", n, 1)
    m1 = check_int("m1", m1, 1)
    delta = _check_probability(delta, "delta")
    b0 = _check_non_negative(b0, "b0")
    output_l1 = _check_non_negative(output_l1, "output_l1")
    real_delta0 = _as_real(delta0)
    if real_delta0 is None or not 0 <= real_delta0 < 1:
        raise ValueError(f"Expected `delta0` to be in [0, 1), got {delta0!r}")
    delta0 = real_delta0
    # As on the slide: squared range, no max(1, .), (1 - delta0) as a factor (see the docstring).
    scale = (1 - delta0) * (b0 + (output_l1 + 1) * _power(gamma * c, k)) ** 2 / math.sqrt(n)
    bracket = (
        math.sqrt(math.log(math.sqrt(2 / delta)) + math.log(output_l1 + 2))
        + 2 * math.sqrt((k + 3) * math.log(4))
        + 2 * math.sqrt(2 * math.log(2 * m1))
    )
    return scale * bracket


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
    a0 = _check_non_negative(a0, "a0")
    rho = _check_non_negative(rho, "rho")
    o_sum = math.fsum(_check_non_negative_sequence(o, "o", min_length=2))
    n = check_int("n", n, 1)
    delta = _check_probability(delta, "delta")
    complexity = complexity_term(c, k, gamma, m1)
    return _confidence_term(a0, n, delta) + _product(2 * math.sqrt(2), rho, o_sum, complexity) / math.sqrt(n)


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
    delta = _check_probability(delta, "delta")
    output_l1inf = _check_non_negative(output_l1inf, "output_l1inf")
    output_l11 = _check_non_negative(output_l11, "output_l11")
    columns = _check_non_negative_sequence(output_column_l1, "output_column_l1")
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
    logit_bound = (output_l1inf + 1 / m2) * max(1.0, _power(gamma * c, k))
    confidence = math.sqrt((math.log(1 / delta) + 2 * math.fsum(math.log(m2 * norm + 2) for norm in columns)) / (2 * n))
    # Lipschitz constant of cross entropy in the logits: 1 + sqrt(m2 - 1) times the largest softmax probability
    # that logits bounded by B allow, 1 / (1 + (m2 - 1) e^{-2B}).
    loss_lipschitz = 1 + math.sqrt(m2 - 1) / (1 + (m2 - 1) * math.exp(-2 * logit_bound))
    return (2 * logit_bound + math.log(m2)) * confidence + 2 * math.sqrt(2) / math.sqrt(n) * (
        output_l11 + 1
    ) * loss_lipschitz * complexity


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
    gamma_c = _check_positive_finite(gamma, "gamma") * check_radius(c, "c")
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
    return _product(math.sqrt(k), _geometric_sum(gamma * float(c), k))


def rescaled_l1inf_norm(weight_row_l1: Sequence[float], bias_abs: Sequence[float], input_scale: float) -> float:
    r"""The first layer's :math:`L_{1,\infty}` norm after folding the input scale into its weights.

    A net on data with :math:`s = \max_i \|x_i\|_\infty` equals the net on :math:`x / s \in [-1, 1]^{m_1}` whose
    first layer has weights :math:`s W_1` and the same bias, so the theorems apply with

    .. math::
        \|\tilde V_1'\|_{1,\infty} = \max_j \left(|b_j| + \max(s, 1)\,\|W_j\|_1\right).

    For :math:`s \le 1` the data already lie in the cube the theorems assume (Theorem 1 of Wen et al., Statistica
    Sinica 31 (2021)) and the norm is left as measured.

    Args:
        weight_row_l1: :math:`\|W_j\|_1` for each neuron :math:`j` of the first layer (its incoming weights).
        bias_abs: :math:`|b_j|` for each neuron; zeros for a layer without bias.
        input_scale: :math:`s`, the largest absolute input value on the data.

    Returns:
        The rescaled :math:`L_{1,\infty}` norm.

    Raises:
        ValueError: If the sequences are empty, differ in length or hold negative values, or ``input_scale < 0``.

    Example:
        >>> rescaled_l1inf_norm(weight_row_l1=[1.0, 2.0], bias_abs=[3.0, 0.5], input_scale=4.0)
        8.5
    """
    weights = _check_non_negative_sequence(weight_row_l1, "weight_row_l1")
    biases = _check_non_negative_sequence(bias_abs, "bias_abs")
    if len(weights) != len(biases):
        raise ValueError(
            f"Expected `weight_row_l1` and `bias_abs` to have the same length, got {len(weights)} and {len(biases)}"
        )
    scale = max(1.0, _check_non_negative(input_scale, "input_scale"))
    return max(bias + _product(scale, weight) for weight, bias in zip(weights, biases, strict=True))
