"""Choose the radius c by k-fold cross-validation: the ``l1inf-lightning cv`` command.

The talk ("How to Choose c") splits the training set into k folds, trains on k - 1 of them for every c of a grid,
scores on the held-out fold and keeps the c with the best mean score. Here every (c, fold, seed) is one ordinary
LightningCLI ``fit`` of the user's config, with its own TensorBoard version, run by a worker of a backend.

One concern per module, each usable alone (e.g. by a cluster scheduler that owns the middle steps):

- ``settings``: :class:`SweepSettings` and :func:`list_runs`, the runs as :class:`RunSpec` values (pure, picklable);
- ``inspection``: the checks before any training (the config has folds, every class fits in them) and the metric;
- ``fit``: :func:`run_one` trains one spec and returns its result as a JSON-ready dict, never raising for a failure;
- ``store``: the output directory, one result file per run written atomically (:func:`write_result`);
- ``execution`` and ``backends``: running many fits on a loky pool or on Ray, stopped promptly by a signal;
- ``statistics``: :func:`summarize` aggregates whatever results exist into a :class:`SweepSummary`;
- ``reports``: the summary as CSV, Markdown and a box plot;
- ``runner`` and ``command``: the whole sweep, and its command line.
"""

from l1inf_lightning.cv.backends import LocalBackend, RayBackend, make_backend
from l1inf_lightning.cv.command import main
from l1inf_lightning.cv.fit import run_one
from l1inf_lightning.cv.runner import run_sweep
from l1inf_lightning.cv.settings import RunSpec, SweepError, SweepSettings, list_runs, radius_label, refit_spec
from l1inf_lightning.cv.statistics import RadiusSummary, SweepSummary, summarize
from l1inf_lightning.cv.store import load_results, write_result

__all__ = [
    "LocalBackend",
    "RadiusSummary",
    "RayBackend",
    "RunSpec",
    "SweepError",
    "SweepSettings",
    "SweepSummary",
    "list_runs",
    "load_results",
    "main",
    "make_backend",
    "radius_label",
    "refit_spec",
    "run_one",
    "run_sweep",
    "summarize",
    "write_result",
]
