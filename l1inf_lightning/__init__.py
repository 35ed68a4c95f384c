"""Sparse neural networks by L1,inf-weight normalization, for PyTorch Lightning."""

from l1inf_lightning.callbacks import L1InfProjection, SparsityMonitor

__all__ = ["L1InfProjection", "SparsityMonitor"]
__version__ = "0.1.0"
