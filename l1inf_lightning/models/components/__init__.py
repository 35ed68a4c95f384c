"""Plain ``nn.Module`` networks, independent of Lightning."""

from l1inf_lightning.models.components.mlp import MLP
from l1inf_lightning.models.components.scaled_linear import ScaledLinear
from l1inf_lightning.models.components.vgg import VGG, vgg11, vgg13, vgg16, vgg19

__all__ = ["MLP", "VGG", "ScaledLinear", "vgg11", "vgg13", "vgg16", "vgg19"]
