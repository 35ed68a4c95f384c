"""Lightning callbacks: the projection and the monitor."""

from l1inf_lightning.callbacks.l1inf_projection import L1InfProjection
from l1inf_lightning.callbacks.sparsity_monitor import SparsityMonitor

__all__ = ["L1InfProjection", "SparsityMonitor"]
