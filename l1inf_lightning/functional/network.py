r"""Measure a network for the paper's bounds: depth, widths, activation and the norms of its layers.

The theorems cover fully connected nets :math:`f = T_{k+1} \circ \sigma \circ T_k \circ \dots \circ \sigma \circ T_1`
with one activation :math:`\sigma`. :func:`measure_network` reads that structure off a module's leaves in
registration order and says why when a module falls outside it (convolutions, pooling, normalization,
an activation the bounds do not cover).
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from torch import nn
from torchmetrics import Metric

from l1inf_lightning.functional.activations import activation_name, check_activation
from l1inf_lightning.functional.norms import is_affine, neuron_l1_norms

__all__ = ["NetworkMeasure", "affine_layers", "measure_network"]

# Leaves that do not change what the theorems see: dropout is the identity in eval mode.
_TRANSPARENT = (nn.Dropout, nn.Flatten, nn.Identity)
# Containers with nothing in them are leaves too (a regression SupervisedModule's empty ModuleDict); exactly these
# types, since a subclass may compute something of its own.
_EMPTY_CONTAINERS = (nn.ModuleDict, nn.ModuleList, nn.Sequential)


def affine_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, layer)`` for every Linear/Conv layer of ``module`` in registration order."""
    return [(name, m) for name, m in module.named_modules() if is_affine(m)]


@dataclass(frozen=True)
class NetworkMeasure:
    """What the bounds need to know about a network (names are ``named_modules()`` names).

    Attributes:
        hidden: The hidden layers T_1 … T_k.
        output: The output layer T_{k+1}.
        m1: Input dimension (``in_features`` of T_1).
        m2: Output dimension (``out_features`` of T_{k+1}).
        activation: ``"relu"``, ``"tanh"`` or ``"sigmoid"``, or ``None`` when not found.
        layer_norms: The L1,inf norm (with bias) of every affine layer.
        output_column_l1: o_j, the L1 norm of each output unit's (bias + weights), of the *effective* output layer:
            an output scale the layer applies (``ScaledLinear.output_scale``, set by the radius-aware mode) is
            included, since the bounds are about the function the net computes.
        outside_reason: Why the bounds do not apply to this network, or ``None`` when they do.
        widths: d_0 (= m1), d_1, …, d_{k+1} (= m2).
    """

    hidden: list[str]
    output: str
    m1: int
    m2: int
    activation: str | None
    layer_norms: dict[str, float] = field(default_factory=dict)
    output_column_l1: list[float] = field(default_factory=list)
    outside_reason: str | None = None
    widths: tuple[int, ...] = ()

    @property
    def k(self) -> int:
        """Number of hidden layers."""
        return len(self.hidden)

    @property
    def in_theorem_class(self) -> bool:
        """Whether the paper's bounds apply to this network."""
        return self.outside_reason is None

    @property
    def architecture(self) -> str:
        """The widths as ``"m1-d1-...-m2"``."""
        return "-".join(str(w) for w in self.widths)


def _output_scale(layer: nn.Module) -> float:
    """The factor a layer multiplies its output by (``ScaledLinear.output_scale``); 1 for a plain layer."""
    scale = getattr(layer, "output_scale", None)
    return 1.0 if scale is None else abs(float(scale))


def _leaves(module: nn.Module) -> list[tuple[str, nn.Module]]:
    # torchmetrics objects hold no weights of the net; skip them and everything below them.
    leaves = []
    skip: list[str] = []
    for name, child in module.named_modules():
        if any(name.startswith(prefix + ".") or name == prefix for prefix in skip):
            continue
        if isinstance(child, Metric):
            skip.append(name)
            continue
        if not any(True for _ in child.children()):
            leaves.append((name, child))
    return leaves


def measure_network(module: nn.Module, activation: str | None = None) -> NetworkMeasure:
    """Read depth, widths, activation and layer norms off ``module``.

    The last affine layer in registration order is the output layer. The network is inside the theorems'
    class when its leaves are Linear layers and one activation (plus dropout, flatten, identity), with
    consecutive widths that chain.

    Args:
        module: Any module, a LightningModule included.
        activation: The activation, for nets that call it functionally rather than as a module.

    Example:
        >>> from l1inf_lightning.models import MLP
        >>> m = measure_network(MLP(500, [100, 50, 20], 2))
        >>> m.k, m.m1, m.m2, m.activation, m.architecture, m.in_theorem_class
        (3, 500, 2, 'relu', '500-100-50-20-2', True)
    """
    layers = affine_layers(module)
    if not layers:
        raise ValueError(f"Expected `module` to contain an nn.Linear or nn.Conv layer, got {type(module).__name__}")
    found: set[str] = set()
    reason = None
    for name, leaf in _leaves(module):
        if isinstance(leaf, (nn.Linear, *_TRANSPARENT)) or type(leaf) in _EMPTY_CONTAINERS:
            continue
        kind = activation_name(leaf)
        if kind is not None:
            found.add(kind)
        elif reason is None:
            reason = (
                f"layer {name!r} ({type(leaf).__name__}) is outside the theorems' class of fully connected "
                "networks (no convolution, pooling or normalization layers)"
            )
    if activation is None and len(found) == 1:
        activation = found.pop()
    elif reason is None and activation is None:
        reason = (
            f"the network mixes activations {sorted(found)}"
            if found
            else "no activation module found; pass `activation` if the network calls it functionally"
        )
    if activation is not None:
        activation = check_activation(activation)

    first, last = layers[0][1], layers[-1][1]
    widths = (first.weight.shape[1], *(layer.weight.shape[0] for _, layer in layers))
    if reason is None:
        for (name_a, a), (name_b, b) in itertools.pairwise(layers):
            if a.weight.shape[0] != b.weight.shape[1]:
                reason = f"layers {name_a!r} and {name_b!r} do not chain ({a.weight.shape[0]} -> {b.weight.shape[1]})"
                break
    return NetworkMeasure(
        hidden=[name for name, _ in layers[:-1]],
        output=layers[-1][0],
        m1=int(first.weight[0].numel()),
        m2=int(last.weight.shape[0]),
        activation=activation,
        layer_norms={name: float(neuron_l1_norms(layer).max()) for name, layer in layers},
        output_column_l1=[float(v) * _output_scale(last) for v in neuron_l1_norms(last)],
        outside_reason=reason,
        widths=tuple(int(w) for w in widths),
    )
