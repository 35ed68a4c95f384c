r"""Log sparsity, the generalization gap and the paper's live bounds while training."""

from __future__ import annotations

import glob
import math
import os
from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_warn
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from typing_extensions import override

from l1inf_lightning._checks import check_int
from l1inf_lightning.callbacks.l1inf_projection import L1InfProjection
from l1inf_lightning.functional import bounds
from l1inf_lightning.functional.network import NetworkMeasure, affine_layers, measure_network
from l1inf_lightning.functional.norms import dead_neurons, l1inf_norm, sparsity_rate

__all__ = ["SparsityMonitor", "first_layer_image"]

LossFn = Callable[[Tensor, Tensor], Tensor]
# Final values shown beside the hyperparameters in TensorBoard's HPARAMS tab.
# The gap subset is kept collated in memory up to this size, else it is reloaded at each gap pass.
_GAP_CACHE_BYTES = 64 * 1024 * 1024
_HISTOGRAM_BINS = 64
_HPARAM_METRICS = ("sparsity/overall", "gap/loss", "gap/acc", "bound/rademacher", "bound/generalization")


class SparsityMonitor(Callback):
    r"""Log how sparse the net is, its generalization gap and the paper's bounds, every few epochs.

    Scalars, sent to every logger of the Trainer (and into ``trainer.callback_metrics``) at the end of each training
    epoch:

    - ``sparsity/overall`` and ``sparsity/<layer>``: zeros / size of the weight matrices (biases excluded),
      ``dead/<layer>``: neurons whose incoming weights are all zero, ``norm/<layer>``: the layer's
      :math:`L_{1,\infty}` norm with bias;
    - ``gap/loss``: validation loss − training loss, both on the current weights in eval mode, and
      ``gap/acc`` (training − validation accuracy) for classification. The training loss comes from a
      fixed subset of at most ``gap_samples`` training samples;
    - ``bound/rademacher`` (Theorem 1), ``bound/output_sup`` (Lemma 2) and ``bound/generalization``
      (Theorem 5 for one output, Theorem 7 for cross entropy over several), with c the configured radius of
      the :class:`L1InfProjection` in the same Trainer.

    The theorems assume inputs in :math:`[-1, 1]^{m_1}`. With :math:`s = \max|x| > 1` on the training data,
    the net on x equals the net on x / s whose first layer's weights are multiplied by s, so the first
    layer's norm is at most s·c and the bounds use c·s (a valid, conservative single c for all layers).

    When the bounds do not apply (no projection or c = ∞, convolutions, pooling, normalization, mixed
    activations) the ``bound/*`` tags are not logged and one warning says why. Weight histograms and an
    image of the first hidden layer's first 20 neurons go to TensorBoard every ``image_every_n_epochs``.
    At the end of training the hyperparameters (c, architecture, n, and those the module and datamodule saved)
    are logged with the final metrics so runs over c compare in TensorBoard's HPARAMS tab. TensorBoard shows a run's
    first hparams summary only, and a ``TensorBoardLogger`` writes a placeholder one (``hp_metric``) at fit start
    unless created with ``default_hp_metric=False``, as the configs do; the monitor warns once when it finds one
    there (or cannot read the event files to tell).

    Args:
        log_every_n_epochs: Epochs between scalar logs.
        image_every_n_epochs: Epochs between histograms and the weight image (0 disables them).
        gap_samples: Training samples evaluated in eval mode for the gap (a fixed subset); 0 disables the gap.
        val_loss_key: The key the LightningModule logs its validation loss under with ``self.log``.
        val_acc_key: The key of its validation accuracy (classification), if it logs one.
        loss_fn: ``loss(output, target)`` for the training-loss pass; by default the module's own ``loss``
            method if it has one.
        delta: Confidence parameter δ of the generalization bounds.
        activation: The activation for the bounds when the net calls it functionally.
    """

    def __init__(
        self,
        log_every_n_epochs: int = 1,
        image_every_n_epochs: int = 10,
        gap_samples: int = 1024,
        val_loss_key: str = "val/loss",
        val_acc_key: str | None = "val/acc",
        loss_fn: LossFn | None = None,
        delta: float = 0.05,
        activation: str | None = None,
    ) -> None:
        check_int("log_every_n_epochs", log_every_n_epochs, minimum=1)
        check_int("image_every_n_epochs", image_every_n_epochs)
        check_int("gap_samples", gap_samples)
        if not 0 < delta < 1:
            raise ValueError(f"Expected `delta` to be in (0, 1), got {delta!r}")
        self.log_every_n_epochs = log_every_n_epochs
        self.image_every_n_epochs = image_every_n_epochs
        self.gap_samples = gap_samples
        self.val_loss_key = val_loss_key
        self.val_acc_key = val_acc_key
        self.loss_fn = loss_fn
        self.delta = delta
        self.activation = activation
        self.last_metrics: dict[str, float] = {}
        self._data: dict[str, Any] = {}
        self._warned: set[str] = set()
        self._single_class: tuple[int, int] | None = None

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._data = self._scan_training_data(trainer)
        # The Trainer has logged the initial hyperparameters by now: a summary already in the event files is the one
        # TensorBoard will show in place of ours (the placeholder of a TensorBoardLogger left at default_hp_metric).
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger) and _holds_hparams_summary(logger) is not False:
                self._warn_once(
                    "hp_metric",
                    "`SparsityMonitor` writes its hparams summary (c, architecture, n, final metrics) at the end of "
                    "training, and TensorBoard shows only a run's first one: this TensorBoardLogger has written one "
                    "already, or its event files cannot be read to tell. Create it with `default_hp_metric=False` "
                    "(the configs do) so that the HPARAMS tab shows the monitor's.",
                )

    @override
    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch + 1
        if epoch % self.log_every_n_epochs == 0 or trainer.should_stop or epoch == trainer.max_epochs:
            metrics = self.compute_metrics(trainer, pl_module)
            self.last_metrics = metrics
            self._publish(trainer, metrics)
        if self.image_every_n_epochs and (epoch % self.image_every_n_epochs == 0 or epoch == 1):
            self._log_weights(trainer, pl_module)

    @override
    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        measure = measure_network(pl_module, self.activation)
        if self._single_class is not None:
            self._warn_once(
                "collapsed",
                f"`SparsityMonitor`: at the end of training the net predicts class {self._single_class[0]} for all "
                f"{self._single_class[1]} training samples of the gap pass, which hold several classes: it has not "
                "learned, so its sparsity and gap say little about c. A small c is a training problem, not a limit of "
                "the class: the same function in a ball s times smaller needs an output layer s**-k times larger. "
                "Another optimizer, a larger learning rate, more epochs or a larger c may train it.",
            )
        params = {
            **_initial_hparams(trainer, pl_module),
            "c": self._configured_radius(trainer, measure),
            "architecture": measure.architecture,
            "n": self._data.get("n", -1),
            "k": measure.k,
            "activation": measure.activation or "unknown",
        }
        summary = {key: self.last_metrics[key] for key in _HPARAM_METRICS if key in self.last_metrics}
        for key in (self.val_loss_key, self.val_acc_key):
            if key and key in trainer.callback_metrics:
                summary[key] = float(trainer.callback_metrics[key])
        final = {f"hp/{key.replace('/', '_')}": value for key, value in summary.items()}
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.log_hyperparams(params, metrics=final)
            else:
                logger.log_hyperparams(params)
                logger.log_metrics(final, step=trainer.global_step)

    @staticmethod
    def _publish(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        """Send ``metrics`` to every logger at the current step and make them visible in ``callback_metrics``.

        The values are plain floats computed once per epoch, so they go straight to the loggers: routing about
        twenty of them through ``LightningModule.log`` cost more than computing them. They are also put into
        ``trainer.callback_metrics`` so that ``ModelCheckpoint`` or ``EarlyStopping`` can monitor them.
        """
        trainer.callback_metrics.update({key: torch.tensor(value) for key, value in metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics({**metrics, "epoch": trainer.current_epoch}, step=trainer.global_step)

    # ---------------------------------------------------------------- metrics

    def compute_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        """Every scalar the monitor logs, for the current weights."""
        metrics = self._sparsity_metrics(pl_module)
        if self.gap_samples:
            metrics.update(self._gap_metrics(trainer, pl_module))
        metrics.update(self._bound_metrics(trainer, pl_module))
        return metrics

    @torch.no_grad()
    def _sparsity_metrics(self, pl_module: nn.Module) -> dict[str, float]:
        metrics: dict[str, float] = {}
        for name, layer in affine_layers(pl_module):
            metrics[f"sparsity/{name}"] = float(sparsity_rate(layer))
            metrics[f"dead/{name}"] = float(dead_neurons(layer))
            metrics[f"norm/{name}"] = float(l1inf_norm(layer))
        metrics["sparsity/overall"] = float(sparsity_rate(pl_module))
        return metrics

    def _gap_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        val_loss = trainer.callback_metrics.get(self.val_loss_key)
        if val_loss is None:
            self._warn_once(
                "val_loss",
                f"`SparsityMonitor` expected the LightningModule to log its validation loss as "
                f"`self.log({self.val_loss_key!r}, ...)`; no gap is logged. Set `val_loss_key` to the key it logs.",
            )
            return {}
        loss_fn = self.loss_fn or getattr(pl_module, "loss", None)
        if not callable(loss_fn) or "loader" not in self._data:
            self._warn_once(
                "loss_fn",
                "`SparsityMonitor` needs `loss_fn` (or a `loss(output, target)` method on the LightningModule) "
                "and (input, target) training batches to evaluate the training loss in eval mode; no gap is logged.",
            )
            return {}
        train_loss, train_acc = self._evaluate(trainer, pl_module, loss_fn, self._data["loader"])
        metrics = {"gap/loss": float(val_loss) - train_loss}
        val_acc = trainer.callback_metrics.get(self.val_acc_key) if self.val_acc_key else None
        if train_acc is not None and val_acc is not None:
            metrics["gap/acc"] = train_acc - float(val_acc)
        return metrics

    @torch.no_grad()
    def _evaluate(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss_fn: LossFn, loader: Iterable[Any]
    ) -> tuple[float, float | None]:
        was_training = pl_module.training
        pl_module.eval()
        loss_sum, correct, count, classification = 0.0, 0, 0, True
        predicted: set[int] = set()
        targets: set[int] = set()
        try:
            # The batches as the training loop sees them: cast by the precision plugin (float64 under 64-true, bf16
            # under bf16-true) and run under its autocast context (the mixed precisions).
            precision = trainer.precision_plugin
            for x, y in loader:
                x, y = precision.convert_input((x.to(pl_module.device), y.to(pl_module.device)))
                with precision.forward_context():
                    output = pl_module(x)
                    loss = loss_fn(output, y)
                loss_sum += float(loss) * len(y)
                count += len(y)
                classification = (
                    classification and output.ndim == 2 and output.shape[1] > 1 and not y.is_floating_point()
                )
                if classification:
                    prediction = output.argmax(dim=1)
                    correct += int((prediction == y).sum())
                    predicted.update(prediction.unique().tolist())
                    targets.update(y.unique().tolist())
        finally:
            pl_module.train(was_training)
        # A classifier that predicts one class for the whole subset has collapsed: (that class, samples), else None.
        collapsed = classification and len(predicted) == 1 and len(targets) > 1
        self._single_class = (predicted.pop(), count) if collapsed else None
        return loss_sum / count, (correct / count if classification else None)

    def _bound_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, float]:
        measure = measure_network(pl_module, self.activation)
        c = self._configured_radius(trainer, measure)
        reason = measure.outside_reason
        if reason is None and math.isinf(c):
            reason = "c = inf (no L1InfProjection constrains every hidden layer): the bounds are infinite"
        if reason is None and "n" not in self._data:
            reason = "the training data could not be read as (input, target) batches"
        if reason is not None:
            self._warn_once("bound", f"`SparsityMonitor` does not log the bounds: {reason}.")
            return {}
        values = bounds.network_bounds(
            measure, c, self._data["n"], self._data["input_scale"], self._data["target_max"], self.delta
        )
        return {f"bound/{key}": value for key, value in values.items()}

    @staticmethod
    def _configured_radius(trainer: pl.Trainer, measure: NetworkMeasure) -> float:
        """The largest radius any projection callback gives a hidden layer (inf if one is left free)."""
        radii: dict[str, float] = {}
        for callback in trainer.callbacks:  # type: ignore[attr-defined]
            if isinstance(callback, L1InfProjection):
                for name, radius in callback.radii.items():
                    radii[name] = min(radius, radii.get(name, math.inf))
        return max((radii.get(name, math.inf) for name in measure.hidden), default=math.inf)

    # ---------------------------------------------------------------- data

    def _scan_training_data(self, trainer: pl.Trainer) -> dict[str, Any]:
        """n, max |x|, max |y| over the training set, and a fixed subset loader for the gap."""
        loader = trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        if dataset is None or not hasattr(dataset, "__len__"):
            return {}
        batch_size = getattr(loader, "batch_size", None) or 256
        scan = DataLoader(dataset, batch_size=max(batch_size, 256), shuffle=False)
        input_scale, target_max, seen = 0.0, 0.0, 0
        for batch in scan:
            try:
                x, y = batch
                x.abs(), y.abs()
            except (TypeError, ValueError, AttributeError):
                self._warn_once("batches", "`SparsityMonitor` expects training batches of (input, target) tensors.")
                return {}
            for name, values in (("input", x), ("target", y)):
                finite = torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
                if not bool(finite.all()):
                    index = seen + int((~finite).nonzero()[0])
                    raise ValueError(
                        f"`SparsityMonitor`: the training data is not finite: sample {index} of the training set has "
                        f"a NaN or inf {name}. Clean the data (training on it gives NaN weights)."
                    )
            input_scale = max(input_scale, float(x.abs().max()))
            target_max = max(target_max, float(y.abs().max()))
            seen += len(y)
        n = len(dataset)
        generator = torch.Generator().manual_seed(0)
        subset = torch.randperm(n, generator=generator)[: self.gap_samples].sort().values.tolist()
        gap_loader = DataLoader(Subset(dataset, subset), batch_size=max(batch_size, 256), shuffle=False)
        # The subset is fixed, so it is collated once and kept (on CPU) when it is small: every later gap pass
        # is then forward passes only, with no dataset indexing or collation.
        gap_batches: list[Any] = list(gap_loader) if self._fits_in_cache(dataset, len(subset)) else gap_loader
        return {"n": n, "input_scale": input_scale, "target_max": target_max, "loader": gap_batches}

    @staticmethod
    def _fits_in_cache(dataset: Any, samples: int) -> bool:
        try:
            x, _ = dataset[0]
        except (TypeError, ValueError, IndexError, KeyError):
            return False
        return isinstance(x, Tensor) and x.element_size() * x.numel() * samples <= _GAP_CACHE_BYTES

    # ---------------------------------------------------------------- images

    @torch.no_grad()
    def _log_weights(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]
        if not loggers:
            return
        layers = affine_layers(pl_module)
        image = first_layer_image(layers[0][1].weight)
        histograms = {f"weights/{name}": _histogram(layer.weight) for name, layer in layers}
        for logger in loggers:
            for tag, histogram in histograms.items():
                logger.experiment.add_histogram_raw(tag, global_step=trainer.global_step, **histogram)
            logger.experiment.add_image("weights/first_hidden_layer", image, trainer.global_step)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            rank_zero_warn(message, category=UserWarning, stacklevel=3)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"last_metrics": dict(self.last_metrics)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_metrics = dict(state_dict.get("last_metrics", {}))


def _holds_hparams_summary(logger: TensorBoardLogger) -> bool | None:
    """Whether ``logger``'s local event files already hold an hparams summary; ``None`` when none can be read.

    Read back through TensorBoard's own event-file loader, after a flush: Lightning has no public way to ask a
    ``TensorBoardLogger`` whether it writes the placeholder (``default_hp_metric`` is stored privately).
    """
    logger.experiment.flush()
    paths = sorted(glob.glob(os.path.join(glob.escape(str(logger.log_dir)), "events.out.tfevents.*")))
    if not paths:
        return None  # e.g. a remote log_dir
    return any(
        value.metadata.plugin_data.plugin_name == "hparams"
        for path in paths
        for event in EventFileLoader(path).Load()
        for value in event.summary.value
    )


def _initial_hparams(trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
    """The module's and the datamodule's saved hyperparameters, so one HPARAMS row shows them with c and n."""
    params = dict(pl_module.hparams_initial)
    datamodule = getattr(trainer, "datamodule", None)
    if datamodule is not None:
        params.update(datamodule.hparams_initial)
    return params


def _histogram(weight: Tensor, bins: int = _HISTOGRAM_BINS) -> dict[str, Any]:
    """The fields of a TensorBoard histogram of ``weight``, computed in torch.

    Equal-width bins over [min, max] keep each event small; computing them in torch avoids a float64 numpy copy of
    every weight matrix, which measurably slowed the training epoch after each histogram.
    """
    values = weight.detach().reshape(-1).float().cpu()
    # Diverged weights (NaN, inf) are left out of the histogram rather than crash the logging of a run.
    values = values[torch.isfinite(values)]
    if values.numel() == 0:
        values = torch.zeros(1)
    low, high = float(values.min()), float(values.max())
    if low == high:
        low, high = low - 0.5, high + 0.5
    counts, edges = torch.histogram(values, bins=bins, range=(low, high))
    return {
        "min": float(values.min()),
        "max": float(values.max()),
        "num": values.numel(),
        "sum": float(values.sum()),
        "sum_squares": float(torch.dot(values, values)),
        "bucket_limits": edges[1:].tolist(),
        "bucket_counts": counts.tolist(),
    }


def first_layer_image(weight: Tensor, neurons: int = 20, column_width: int = 8) -> Tensor:
    """The talk's figure as a (3, H, W) image in [0, 1]: one column per neuron of the first hidden layer.

    Row i of column j is neuron j's weight on input i (its first ``neurons`` neurons), on a diverging scale: white
    is exactly zero, red positive, blue negative, full colour at the layer's largest magnitude. Each neuron is
    ``column_width`` pixels wide so that narrow layers stay visible.
    """
    columns = weight.detach().float().cpu().reshape(weight.shape[0], -1)[:neurons].T
    scale = float(columns.abs().max()) or 1.0
    value = (columns / scale).clamp(-1, 1).repeat_interleave(column_width, dim=1)
    positive, negative = value.clamp(min=0), (-value).clamp(min=0)
    return torch.stack((1 - negative, 1 - positive - negative, 1 - positive))
