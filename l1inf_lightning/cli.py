"""LightningCLI's ``fit``/``validate``/``test``/``predict`` with the projection (``commands.py`` dispatches to it).

``l1inf-lightning fit --config configs/synthetic_classification.yaml --projection.radius 0.1`` trains with
c = 0.1; ``--projection.radius inf`` trains the unconstrained baseline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from typing_extensions import override

from l1inf_lightning.callbacks import L1InfProjection
from l1inf_lightning.functional import sparsity_rate
from l1inf_lightning.models import SupervisedModule

__all__ = ["L1InfCLI", "fit_cli", "summary_line"]


class L1InfCLI(LightningCLI):
    """LightningCLI with an :class:`L1InfProjection` under the ``projection`` key and a test run after ``fit``.

    The projection's radius defaults to ``inf`` (no constraint), so a config without a ``projection``
    section trains the baseline; configs set ``projection.radius``.
    """

    @override
    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(L1InfProjection, "projection")
        parser.set_defaults({"projection.radius": math.inf})
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After `fit`, evaluate the final weights on the test set and print a summary.",
        )

    @override
    def after_fit(self) -> None:
        """Test the final weights and print test metrics with the sparsity rate."""
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.fast_dev_run:
            return
        datamodule = self.datamodule
        if datamodule is None or not _has_test_data(datamodule):
            return
        results = self.trainer.test(self.model, datamodule=datamodule, verbose=False)
        if self.trainer.is_global_zero:
            print(summary_line(self.model, results[0] if results else {}, self.config[self.subcommand]))


def _has_test_data(datamodule: pl.LightningDataModule) -> bool:
    return type(datamodule).test_dataloader is not pl.LightningDataModule.test_dataloader


def summary_line(model: pl.LightningModule, metrics: dict[str, float], config: Any) -> str:
    """One line with the radius, the test metrics and the sparsity rate of ``model``'s weights."""
    radius = config.get("projection", {}).get("radius") if hasattr(config, "get") else None
    parts = [f"c={radius}"] if radius is not None else []
    parts += [f"{key}={value:.4f}" for key, value in sorted(metrics.items())]
    parts.append(f"sparsity={float(sparsity_rate(model)):.4f}")
    return "Final: " + "  ".join(parts)


def fit_cli(args: Sequence[str] | None = None, run: bool = True, **kwargs: Any) -> L1InfCLI:
    """Build the LightningCLI over any LightningModule/LightningDataModule (``class_path`` in the config)."""
    return L1InfCLI(
        SupervisedModule,
        pl.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        args=list(args) if args is not None else None,
        run=run,
        **kwargs,
    )
