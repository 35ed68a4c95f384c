r"""The activations the paper's theorems cover, in one table: the module that applies each, and its Lipschitz constant.

The MLP builds its activations from this table, :func:`~l1inf_lightning.functional.network.measure_network` reads
them back off a module, and the bounds take :math:`\gamma_\sigma` from it, so the three cannot disagree.
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

__all__ = ["ACTIVATIONS", "Activation", "activation_name", "check_activation"]


class Activation(NamedTuple):
    r"""One covered activation.

    Attributes:
        module: The ``nn.Module`` class that applies it.
        lipschitz: Its Lipschitz constant :math:`\gamma_\sigma` (Theorem 1 of Wen et al., Statistica Sinica 31, 2021).
    """

    module: type[nn.Module]
    lipschitz: float


# The theorems also need sigma(0) = 0, which sigmoid does not satisfy; the slides list it among the covered
# activations all the same, so it is kept here.
ACTIVATIONS: dict[str, Activation] = {
    "relu": Activation(nn.ReLU, 1.0),
    "sigmoid": Activation(nn.Sigmoid, 0.25),
    "tanh": Activation(nn.Tanh, 1.0),
}


def check_activation(activation: object) -> str:
    """Return the table's name for ``activation`` (case-insensitive), else raise naming the valid ones.

    Example:
        >>> check_activation("ReLU")
        'relu'
    """
    key = activation.lower() if isinstance(activation, str) else None
    if key not in ACTIVATIONS:
        valid = ", ".join(repr(name) for name in ACTIVATIONS)
        raise ValueError(f"Expected `activation` to be one of {valid}, got {activation!r}")
    return key


def activation_name(module: nn.Module) -> str | None:
    """The table's name of the activation ``module`` applies, or ``None`` when it is not one of the table's.

    The type must match exactly: a subclass may change what the activation computes.

    Example:
        >>> activation_name(nn.Tanh()), activation_name(nn.GELU())
        ('tanh', None)
    """
    return next((name for name, entry in ACTIVATIONS.items() if type(module) is entry.module), None)
