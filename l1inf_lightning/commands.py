"""The ``l1inf-lightning`` command: our own commands (``cv``, ``reproduce``) by name, everything else to LightningCLI.

The one place that dispatches. ``cli.py`` knows nothing of ``cv`` or ``reproduce``, so they can build fits with it.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from l1inf_lightning import cv, reproduce
from l1inf_lightning.cli import fit_cli, next_steps, quiet_lightning_notices

__all__ = ["COMMANDS", "main"]

# Commands beyond LightningCLI's subcommands: name -> function of the remaining arguments.
COMMANDS: dict[str, Callable[[list[str]], Any]] = {"cv": cv.main, "reproduce": reproduce.main}
# The exit statuses of a command stopped by SIGINT or SIGTERM (128 + the signal's number).
_STOPPED_BY_SIGNAL = (128 + signal.SIGINT, 128 + signal.SIGTERM)


def main(args: Sequence[str] | None = None) -> None:
    """Entry point of ``l1inf-lightning`` and ``python -m l1inf_lightning``.

    Lightning's cloud tips and a deprecation warning from inside Lightning are hidden for the command's duration
    (:func:`~l1inf_lightning.cli.quiet_lightning_notices`), so a newcomer's output holds only what concerns the run.
    A ``fit`` ends with what to do next (:func:`~l1inf_lightning.cli.next_steps`): printed here, not by the CLI, so
    the fits that ``cv`` builds with :func:`~l1inf_lightning.cli.fit_cli` do not print it once per run.
    """
    argv = list(sys.argv[1:] if args is None else args)
    with quiet_lightning_notices():
        if argv and argv[0] in COMMANDS:
            try:
                COMMANDS[argv[0]](argv[1:])
            except SystemExit as stop:
                if args is None and stop.code in _STOPPED_BY_SIGNAL:
                    # The program was stopped by Ctrl-C or SIGTERM and has recorded everything (backends shut down):
                    # leave without tearing torch down, which takes seconds, so that the stop is prompt.
                    sys.stdout.flush()
                    sys.stderr.flush()
                    os._exit(stop.code)
                raise
            return
        if not argv or argv[0] in ("-h", "--help"):
            print(
                f"Commands beyond LightningCLI's: {', '.join(sorted(COMMANDS))} "
                "(see `l1inf-lightning <command> --help`).\n"
            )
        cli = fit_cli(None if args is None else argv)
        # Under DDP every rank runs the command; the next steps are printed once.
        if cli.subcommand == "fit" and cli.trainer.is_global_zero:
            steps = next_steps(cli.trainer, cli.config["fit"])
            if steps:
                print(steps)
