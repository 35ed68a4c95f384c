"""Rerun the talk's tables: the ``l1inf-lightning reproduce NAME`` command.

Each result of the talk is one command that prints our table beside the talk's numbers and writes ``table.csv``,
``table.md`` and a figure under ``OUTPUT/NAME/``. The fits run on the ``cv`` machinery (one atomic result per run,
resumable, parallel). One concern per module:

- ``talk``: the talk's tables, copied as printed;
- ``experiments``: each reproduction's grid, its :class:`Protocol` and its runs (pure data);
- ``tables`` and ``figures``: the stored results as a table (CSV, Markdown) and a figure, the talk's beside ours;
- ``runner`` and ``command``: one reproduction, and its command line.
"""

from l1inf_lightning.reproduce.command import NAMES, main
from l1inf_lightning.reproduce.experiments import EXPERIMENTS, Experiment, Protocol, list_runs, make_protocol
from l1inf_lightning.reproduce.runner import run_reproduction
from l1inf_lightning.reproduce.tables import Row, collect

__all__ = [
    "EXPERIMENTS",
    "NAMES",
    "Experiment",
    "Protocol",
    "Row",
    "collect",
    "list_runs",
    "main",
    "make_protocol",
    "run_reproduction",
]
