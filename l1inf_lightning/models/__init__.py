"""LightningModules and their networks."""

from l1inf_lightning.models.components import MLP, VGG, ScaledLinear, vgg11, vgg13, vgg16, vgg19
from l1inf_lightning.models.module import SupervisedModule

__all__ = ["MLP", "VGG", "ScaledLinear", "SupervisedModule", "vgg11", "vgg13", "vgg16", "vgg19"]
