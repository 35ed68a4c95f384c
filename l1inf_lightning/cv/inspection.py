"""What a sweep checks before it trains: that the config can be cross-validated, and which metric chooses c."""

from __future__ import annotations

from typing import Any

from l1inf_lightning.cli import fit_cli
from l1inf_lightning.cv.fit import quiet_cli
from l1inf_lightning.cv.settings import SweepError, SweepSettings
from l1inf_lightning.data import FoldableDataModule, check_class_sizes

__all__ = ["default_metric", "infer_mode", "inspect_config", "metric_and_mode"]

# Name fragments that say whether a metric is better low or high, for `--mode` when it is not given.
_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "err", "nll", "perplexity")
_HIGHER_IS_BETTER = ("acc", "f1", "auroc", "auc", "precision", "recall", "r2", "iou", "dice")


def inspect_config(settings: SweepSettings) -> dict[str, Any]:
    """Build the config once (no training) and check that it can be cross-validated with ``settings.num_folds``.

    Returns:
        ``task`` (the model's ``task`` attribute, or None), ``train_size`` (the full training set) and ``data``
        (the data module's class name).

    Raises:
        SweepError: If the data module is not a :class:`~l1inf_lightning.data.FoldableDataModule`, or ``num_folds``
            exceeds the size of its training set, or a class has fewer than ``num_folds`` samples (stratified folds).
    """
    with quiet_cli():
        cli = fit_cli(["--config", settings.config, *settings.overrides], run=False)
    datamodule = cli.datamodule
    if not isinstance(datamodule, FoldableDataModule):
        raise SweepError(
            f"Expected the data module of `--config` {settings.config!r} to be a FoldableDataModule (with "
            f"`num_folds` and `fold_index`), got {type(datamodule).__name__}: it has no folds to cross-validate. "
            "Wrap a map-style dataset in `l1inf_lightning.data.FoldedDataModule`."
        )
    train_size = datamodule.full_train_size()
    if settings.num_folds > train_size:
        raise SweepError(
            f"Expected `--folds` to be at most the size of the training set ({train_size}), got {settings.num_folds}"
        )
    labels = datamodule.full_train_labels()
    if labels is not None:  # stratified folds: a class smaller than k would fail every fit of the grid
        try:
            check_class_sizes(labels, settings.num_folds, name="--folds")
        except ValueError as error:
            raise SweepError(str(error)) from None
    return {"task": getattr(cli.model, "task", None), "train_size": train_size, "data": type(datamodule).__name__}


def default_metric(task: str | None) -> tuple[str, str]:
    """The validation metric and mode for a model task: ``val/acc`` (max) for classification, else ``val/loss`` (min).

    >>> default_metric("classification"), default_metric("regression")
    (('val/acc', 'max'), ('val/loss', 'min'))
    """
    return ("val/acc", "max") if task == "classification" else ("val/loss", "min")


def infer_mode(metric: str) -> str:
    """``"min"`` or ``"max"`` from a metric's name (``val/loss`` -> min, ``val/acc`` -> max), else raise.

    >>> infer_mode("val/mse"), infer_mode("val/acc")
    ('min', 'max')
    """
    name = metric.rsplit("/", 1)[-1].lower()
    if any(fragment in name for fragment in _LOWER_IS_BETTER):
        return "min"
    if any(fragment in name for fragment in _HIGHER_IS_BETTER):
        return "max"
    raise SweepError(
        f"Cannot tell whether `--metric` {metric!r} is better low or high; give `--mode min` or `--mode max`"
    )


def metric_and_mode(metric: str | None, mode: str | None, task: str | None) -> tuple[str, str]:
    """The metric that chooses c and its mode, from the user's (either may be None) and the model's ``task``.

    >>> metric_and_mode(None, None, "classification"), metric_and_mode("val/mse", None, None)
    (('val/acc', 'max'), ('val/mse', 'min'))
    """
    if metric is None:
        default, default_mode = default_metric(task)
        return default, mode or default_mode
    if mode is None:
        mode = infer_mode(metric)
    if mode not in ("min", "max"):
        raise SweepError(f"Expected `--mode` to be 'min' or 'max', got {mode!r}")
    return metric, mode
