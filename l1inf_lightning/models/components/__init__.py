"""Plain ``nn.Module`` networks, independent of Lightning."""

from l1inf_lightning.models.components.mlp import ACTIVATIONS, MLP

__all__ = ["ACTIVATIONS", "MLP"]
