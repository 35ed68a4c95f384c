"""LightningCLI's ``fit``/``validate``/``test``/``predict`` with the projection (``commands.py`` dispatches to it).

``l1inf-lightning fit --config configs/synthetic_classification.yaml --projection.radius 0.1`` trains with
c = 0.1; ``--projection.radius inf`` trains the unconstrained baseline.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import TensorBoardLogger
from typing_extensions import override

from l1inf_lightning.callbacks import L1InfProjection
from l1inf_lightning.functional import sparsity_rate
from l1inf_lightning.models import SupervisedModule

__all__ = ["L1InfCLI", "fit_cli", "next_steps", "quiet_lightning_notices", "summary_line"]


class L1InfCLI(LightningCLI):
    """LightningCLI with an :class:`L1InfProjection` under the ``projection`` key and a test run after ``fit``.

    The projection's radius defaults to ``inf`` (no constraint), so a config without a ``projection``
    section trains the baseline; configs set ``projection.radius``. Every ``ModelCheckpoint`` that leaves
    ``save_last`` unset (Lightning's default one included) saves a ``last.ckpt``, the file to resume or test from.
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
    def instantiate_trainer(self, **kwargs: Any) -> pl.Trainer:
        """Build the Trainer, with ``save_last=True`` on every checkpoint callback that left it unset."""
        trainer = super().instantiate_trainer(**kwargs)
        # Lightning's default ModelCheckpoint keeps only `epoch=E-step=S.ckpt`, a name nobody can type before the
        # run ends; `last.ckpt` is the stable path the README and the printed next steps resume and test from. The
        # default checkpoint is built inside the Trainer, so no argument reaches it: set it here. An explicit
        # `save_last: false` in a config is kept.
        for checkpoint in trainer.checkpoint_callbacks:
            if checkpoint.save_last is None:
                checkpoint.save_last = True
        return trainer

    @override
    def after_fit(self) -> None:
        """Test the final weights and print test metrics with the sparsity rate."""
        if not self.config[self.subcommand].get("test_after_fit", True) or self.trainer.fast_dev_run:
            return
        datamodule = self.datamodule
        if datamodule is None or not _has_test_data(datamodule):
            return
        results = self.trainer.test(self.model, datamodule=datamodule, verbose=False)
        # Under DDP every rank runs this hook; the summary is printed once.
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


def next_steps(trainer: pl.Trainer, config: Any) -> str:
    """Where a finished ``fit`` left its TensorBoard logs and checkpoint, and the commands that use them.

    Args:
        trainer: the Trainer after ``fit``.
        config: the ``fit`` subcommand's parsed config; its ``config`` files are named in the ``test`` command when
            the run saved no ``config.yaml`` of its own.

    Returns:
        Lines ``Logs:``, ``TensorBoard:``, ``Checkpoint:`` and ``Test it:`` (each only where it applies), or ``""``
        when the run wrote neither (``fast_dev_run``, no logger and no checkpointing).
    """
    lines = []
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            log_dir = _display_path(logger.log_dir)
            lines += [f"Logs:        {log_dir}", f"TensorBoard: tensorboard --logdir {shlex.quote(log_dir)}"]
    checkpoint = trainer.checkpoint_callback
    ckpt_path = (checkpoint.last_model_path or checkpoint.best_model_path) if checkpoint is not None else ""
    if ckpt_path and os.path.exists(ckpt_path):
        ckpt_path = _display_path(ckpt_path)
        config_args = " ".join(f"--config {shlex.quote(path)}" for path in _config_files(trainer, config))
        lines += [
            f"Checkpoint:  {ckpt_path}",
            f"Test it:     l1inf-lightning test {config_args} --ckpt_path {shlex.quote(ckpt_path)}",
        ]
    return "\n".join(lines)


def _config_files(trainer: pl.Trainer, config: Any) -> list[str]:
    """The run's own saved ``config.yaml`` (every override included), else the ``--config`` files it was given."""
    for callback in trainer.callbacks:
        if isinstance(callback, SaveConfigCallback) and trainer.log_dir is not None:
            saved = os.path.join(trainer.log_dir, callback.config_filename)
            if os.path.isfile(saved):
                return [_display_path(saved)]
    given = config.get("config") if hasattr(config, "get") else None
    return [_display_path(str(path)) for path in given or []]


def _display_path(path: str) -> str:
    """``path`` relative to the working directory when it lies under it (what a user types), else absolute."""
    absolute = os.path.abspath(path)
    relative = os.path.relpath(absolute)
    return absolute if relative.startswith(os.pardir) else relative


# Lightning's advertisements for its cloud products (logged on every fit, once per rank-zero process) and a
# deprecation warning from inside Lightning that a user cannot act on. Matched exactly, so nothing else is hidden.
_LIGHTNING_TIP = "💡 Tip: For seamless cloud"
_LEAFSPEC_DEPRECATION = r"`isinstance\(treespec, LeafSpec\)` is deprecated"
_RANK_ZERO_LOGGERS = ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropLightningTips(logging.Filter):
    """Drop the records of Lightning's "💡 Tip: For seamless cloud ..." messages."""

    @override
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(_LIGHTNING_TIP)


@contextmanager
def quiet_lightning_notices() -> Iterator[None]:
    """Within the block, hide Lightning's cloud tips and the ``LeafSpec`` deprecation warning, nothing else.

    The entry point (``commands.main``) runs in it, so a user of the command sees only what concerns the run; the
    library's import changes no logging or warning state, so a user's own program still sees them.
    """
    tips = _DropLightningTips()
    # rank_zero_info logs on the logger of whichever of Lightning's rank_zero modules was imported last: filter both.
    loggers = [logging.getLogger(name) for name in _RANK_ZERO_LOGGERS]
    for logger in loggers:
        logger.addFilter(tips)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=_LEAFSPEC_DEPRECATION, category=FutureWarning)
            yield
    finally:
        for logger in loggers:
            logger.removeFilter(tips)


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
