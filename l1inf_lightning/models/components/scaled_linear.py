r"""An output layer whose logits carry a fixed scale: the free layer :math:`T_{k+1}` of the radius-aware mode."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["ScaledLinear"]


class ScaledLinear(nn.Linear):
    r"""``nn.Linear`` whose output is multiplied by a scale ``s`` kept in a buffer: :math:`y = s\,(Wx + b)`.

    It is the output layer of the radius-aware mode of :class:`~l1inf_lightning.L1InfProjection`, which sets
    :math:`s = \prod_\ell c_\ell^{-1}` (:math:`c^{-k}` for k hidden layers of radius c): a ReLU net in a ball c
    times smaller computes the same function when its output grows by :math:`c^{-k}`, and the scale lets the
    optimizer reach it at the step sizes it uses for c = 1. The function is that of the *effective* output layer
    :math:`(sW, sb)`, whose norms enter the paper's bounds; :meth:`effective_weight` returns it. With
    ``s = 1`` (the default, and always in the exact mode) the layer computes bit for bit what ``nn.Linear`` does.

    The scale is a persistent buffer, so a checkpoint holds the function it was trained as; loading a plain
    ``nn.Linear`` state dict (no ``output_scale`` key) sets it to 1.

    Example:
        >>> layer = ScaledLinear(3, 2, bias=False)
        >>> layer.output_scale.fill_(100.0).item()
        100.0
        >>> x = torch.ones(1, 3)
        >>> torch.equal(layer(x), 100.0 * F.linear(x, layer.weight))
        True
    """

    output_scale: Tensor

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("output_scale", torch.ones((), device=self.weight.device, dtype=self.weight.dtype))

    @classmethod
    def from_linear(cls, layer: nn.Linear) -> ScaledLinear:
        """A ``ScaledLinear`` sharing ``layer``'s parameters (the same tensors), with scale 1."""
        scaled = cls(layer.in_features, layer.out_features, bias=layer.bias is not None)
        scaled.to(device=layer.weight.device)
        scaled.weight = layer.weight
        scaled.bias = layer.bias
        return scaled

    def forward(self, x: Tensor) -> Tensor:
        """``s * (x @ W.T + b)``; exactly ``nn.Linear``'s output while ``s == 1`` (a product by 1 is exact)."""
        # Always multiplied by the tensor, never branched on its value: reading it would sync a GPU every step.
        return F.linear(x, self.weight, self.bias) * self.output_scale

    def effective_weight(self) -> tuple[Tensor, Tensor | None]:
        """The weight and bias of the plain ``nn.Linear`` that computes the same function: ``(sW, sb)``."""
        scale = self.output_scale
        bias = None if self.bias is None else self.bias.detach() * scale
        return self.weight.detach() * scale, bias

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        # A plain nn.Linear's state dict (e.g. a checkpoint from before the scale existed) means scale 1.
        state_dict.setdefault(prefix + "output_scale", torch.ones_like(self.output_scale))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:  # noqa: D102
        return f"{super().extra_repr()}, output_scale={float(self.output_scale):g}"
