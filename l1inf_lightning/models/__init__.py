"""LightningModules and their networks."""

from l1inf_lightning.models.components import MLP
from l1inf_lightning.models.module import SupervisedModule

__all__ = ["MLP", "SupervisedModule"]
