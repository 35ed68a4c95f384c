"""The ``l1inf-lightning`` command: our own commands (``cv``) by name, everything else to LightningCLI.

The one place that dispatches. ``cli.py`` knows nothing of ``cv``, so ``cv`` can build fits with it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

from l1inf_lightning import cv
from l1inf_lightning.cli import fit_cli

__all__ = ["COMMANDS", "main"]

# Commands beyond LightningCLI's subcommands: name -> function of the remaining arguments.
COMMANDS: dict[str, Callable[[list[str]], Any]] = {"cv": cv.main}


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``l1inf-lightning`` and ``python -m l1inf_lightning``."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in COMMANDS:
        COMMANDS[argv[0]](argv[1:])
        return
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"Commands beyond LightningCLI's: {', '.join(sorted(COMMANDS))} (see `l1inf-lightning <command> --help`).\n"
        )
    fit_cli(None if args is None else argv)
