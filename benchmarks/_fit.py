"""Train a config through the command line's own entry point, quietly: no logger, checkpoint, progress bar or test."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from l1inf_lightning.cli import L1InfCLI, fit_cli

# Algorithm 1 exactly as the talk writes it, on the MLP as it was before the radius-aware mode (output bias on): the
# overrides that turn the synthetic configs back into it.
EXACT_MODE = ("--projection.mode", "exact", "--model.init_args.net.init_args.output_bias", "true")


def fit_quietly(config: Path | str, radius: float, root: Path | str, overrides: Sequence[str] = ()) -> L1InfCLI:
    """``l1inf-lightning fit --config CONFIG --projection.radius RADIUS OVERRIDES...``, writing only under ``root``.

    Returns the CLI, whose ``model``, ``datamodule`` and ``trainer`` are the trained ones.
    """
    args = [
        "fit",
        "--config",
        str(config),
        "--projection.radius",
        str(radius),
        "--trainer.logger",
        "false",
        "--trainer.enable_checkpointing",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.default_root_dir",
        str(root),
        "--test_after_fit",
        "false",
        *overrides,
    ]
    with warnings.catch_warnings():
        # fit_cli is given its arguments; LightningCLI would otherwise warn that the script's own argv is ignored.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return fit_cli(args)
