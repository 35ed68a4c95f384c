"""Fully connected networks: the paper's f = T_{k+1} ∘ σ ∘ T_k ∘ … ∘ σ ∘ T_1."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from torch import Tensor, nn

from l1inf_lightning.functional.activations import ACTIVATIONS, check_activation
from l1inf_lightning.models.components.scaled_linear import ScaledLinear

__all__ = ["MLP"]


class MLP(nn.Module):
    """A multilayer perceptron with ``len(hidden)`` hidden layers of one activation.

    Layers are registered in order, so the output layer is the last ``nn.Linear``: the one
    :class:`~l1inf_lightning.L1InfProjection` leaves unconstrained by default. It is a
    :class:`~l1inf_lightning.models.components.ScaledLinear` (an ``nn.Linear`` with an output scale, 1 unless the
    projection's radius-aware mode sets it). Inputs of any shape are flattened from dimension 1 on.

    Args:
        in_features: Input dimension ``d_0`` (``m_1`` in the paper).
        hidden: Widths ``d_1, ..., d_k`` of the hidden layers; empty for a linear model.
        out_features: Output dimension ``d_{k+1}`` (classes, or 1 for regression).
        activation: ``"relu"``, ``"tanh"`` or ``"sigmoid"`` (case-insensitive): the activations the bounds cover
            (:data:`~l1inf_lightning.functional.activations.ACTIVATIONS`).
        dropout: Dropout probability after every hidden activation; 0 disables it.
        output_bias: Whether the output layer has a bias. The radius-aware mode trains best without one: the bias
            is not scaled by c like the signal it is added to, and wins against it at small c.

    Example:
        >>> net = MLP(500, [100, 50, 20], 2)
        >>> net
        MLP(
          (layers): Sequential(
            (0): Linear(in_features=500, out_features=100, bias=True)
            (1): ReLU()
            (2): Linear(in_features=100, out_features=50, bias=True)
            (3): ReLU()
            (4): Linear(in_features=50, out_features=20, bias=True)
            (5): ReLU()
            (6): ScaledLinear(in_features=20, out_features=2, bias=True, output_scale=1)
          )
        )
    """

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int] = (100, 50, 20),
        out_features: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
        output_bias: bool = True,
    ) -> None:
        super().__init__()
        widths = [in_features, *hidden, out_features]
        if any(not isinstance(w, int) or isinstance(w, bool) or w < 1 for w in widths):
            raise ValueError(
                f"Expected `in_features`, `hidden` and `out_features` to be positive integers, got "
                f"in_features={in_features!r}, hidden={list(hidden)!r}, out_features={out_features!r}"
            )
        activation = check_activation(activation)
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"Expected `dropout` to be in [0, 1), got {dropout!r}")
        self.activation = activation
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(widths[:-1]):
            layers += [nn.Linear(fan_in, fan_out), ACTIVATIONS[activation].module()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
        layers.append(ScaledLinear(widths[-2], widths[-1], bias=output_bias))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Map a batch ``(B, ...)`` to ``(B, out_features)``."""
        return self.layers(x.flatten(1))
