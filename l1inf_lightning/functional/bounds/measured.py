r"""From a measured network to its bounds: the input scale folded into the first layer, then the theorems.

Wen, Xu, Zheng, Yang and Wang, Statistica Sinica 31 (2021); notation in :mod:`l1inf_lightning.functional.bounds`.
"""

from __future__ import annotations

from collections.abc import Sequence

from l1inf_lightning._checks import check_int, check_radius
from l1inf_lightning.functional.bounds._arithmetic import (
    check_non_negative,
    check_non_negative_sequence,
    check_probability,
    product,
)
from l1inf_lightning.functional.bounds.classification import cross_entropy_generalization_bound
from l1inf_lightning.functional.bounds.complexity import lipschitz_constant, output_sup_bound, rademacher_bound
from l1inf_lightning.functional.bounds.regression import mse_generalization_bound
from l1inf_lightning.functional.network import NetworkMeasure

__all__ = ["network_bounds", "rescaled_l1inf_norm"]


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
    weights = check_non_negative_sequence(weight_row_l1, "weight_row_l1")
    biases = check_non_negative_sequence(bias_abs, "bias_abs")
    if len(weights) != len(biases):
        raise ValueError(
            f"Expected `weight_row_l1` and `bias_abs` to have the same length, got {len(weights)} and {len(biases)}"
        )
    scale = max(1.0, check_non_negative(input_scale, "input_scale"))
    return max(bias + product(scale, weight) for weight, bias in zip(weights, biases, strict=True))


def network_bounds(
    measure: NetworkMeasure, c: float, n: int, input_scale: float, target_max: float, delta: float
) -> dict[str, float]:
    r"""The paper's bounds for a measured network whose hidden layers lie in the ball of radius ``c``.

    With :math:`s` the input scale, the bounds take :math:`c' = \max(1, s)\,c`, the largest rescaled norm
    (:func:`rescaled_l1inf_norm`) a first-layer neuron of the ball can have, all of its :math:`L_1` mass on the
    weights: one conservative radius for every hidden layer on inputs folded into :math:`[-1, 1]^{m_1}`. The output
    layer's column norms :math:`o_j` are those of ``measure`` (the effective output layer, its scale included).

    - ``"rademacher"``: Theorem 1, for the output unit with the largest :math:`o_j` (the theorem has one output);
    - ``"output_sup"``: Lemma 2, with :math:`\|o\|_\infty`;
    - ``"generalization"``: for one output, twice Theorem 5: the theorem bounds the gap of
      :math:`L_{se} = (y - f)^2 / 2`, and twice that is the gap of the mean squared error :math:`(y - f)^2` that
      models train and report; for several outputs, Theorem 7 (cross entropy);
    - ``"c"``: the radius :math:`c'` the bounds used.

    Theorems of Wen et al., Statistica Sinica 31 (2021).

    Args:
        measure: The network, as :func:`~l1inf_lightning.functional.network.measure_network` measures it.
        c: The radius of every hidden layer's :math:`L_{1,\infty}` ball; ``math.inf`` for no constraint.
        n: Training sample size.
        input_scale: :math:`s = \max_i \|x_i\|_\infty` on the training data.
        target_max: :math:`B_0 = \max_i |y_i|` on the training data (used for one output only).
        delta: Failure probability :math:`\delta`.

    Returns:
        The four values, keyed as above; ``inf`` bounds when ``c`` is ``inf`` and the net has a hidden layer.

    Raises:
        ValueError: If the network is outside the theorems' class (``measure.outside_reason`` says why), or an
            argument is out of range.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from l1inf_lightning.functional.network import measure_network
        >>> net = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2))
        >>> with torch.no_grad():
        ...     _ = [p.fill_(0.25) for p in net.parameters()]
        >>> values = network_bounds(measure_network(net), c=1.0, n=100, input_scale=2.0, target_max=1.0, delta=0.05)
        >>> values["c"], round(values["output_sup"], 4), round(values["rademacher"], 4)
        (2.0, 2.0, 1.5104)
    """
    if measure.outside_reason is not None or measure.activation is None:
        reason = measure.outside_reason or "no activation"
        raise ValueError(f"Expected `measure` to be of a network inside the theorems' class, got one outside: {reason}")
    c = check_radius(c, "c")
    n = check_int("n", n, 1)
    delta = check_probability(delta, "delta")
    # Every other hidden layer's norm is at most c <= c', so c' bounds them all.
    c_eff = rescaled_l1inf_norm([c], [0.0], input_scale)
    gamma = lipschitz_constant(measure.activation)
    k, m1, m2, o = measure.k, measure.m1, measure.m2, measure.output_column_l1
    values = {
        "rademacher": rademacher_bound(c_eff, k, max(o), gamma, n, m1),
        "output_sup": output_sup_bound(max(o), c_eff, k, gamma),
        "c": c_eff,
    }
    if m2 == 1:
        b0 = check_non_negative(target_max, "target_max")
        values["generalization"] = 2 * mse_generalization_bound(c_eff, k, gamma, n, m1, delta, b0, o[0])
    else:
        values["generalization"] = cross_entropy_generalization_bound(
            c_eff, k, gamma, n, m1, m2, delta, max(o), o, sum(o)
        )
    return values
