r"""From a measured network to the bounds: the input scale folded into the first layer.

Wen, Xu, Zheng, Yang and Wang, Statistica Sinica 31 (2021); notation in :mod:`l1inf_lightning.functional.bounds`.
"""

from __future__ import annotations

from collections.abc import Sequence

from l1inf_lightning.functional.bounds._arithmetic import (
    check_non_negative,
    check_non_negative_sequence,
    product,
)

__all__ = ["rescaled_l1inf_norm"]


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
