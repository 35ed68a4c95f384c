"""A LightningModule for supervised classification or regression with any ``nn.Module`` as the network."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn
from torchmetrics import Accuracy, MeanSquaredError, Metric
from torchmetrics.classification import MulticlassStatScores
from typing_extensions import override

from l1inf_lightning.functional import is_affine

__all__ = ["SupervisedModule"]

Task = Literal["classification", "regression"]


def _adam(params: Any) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=1e-3)


class SupervisedModule(pl.LightningModule):
    """Train ``net`` with cross entropy (classification) or mean squared error (regression).

    Logs ``train/loss``, ``val/loss``, ``test/loss`` and ``{split}/acc`` or ``{split}/mse``; for classification also
    ``val/top_class_share`` and ``test/top_class_share``, the share of the predictions that go to the most predicted
    class (1.0: the network predicts a single class, i.e. it did not learn). The logged losses are the data loss
    alone; optional L1/L2 weight penalties (for the paper's comparison of regularizers) are added to the training
    objective and logged as ``train/penalty``.

    Args:
        net: The network; its last ``nn.Linear``/``nn.Conv`` is taken as the output layer.
        task: ``"classification"`` or ``"regression"``.
        num_classes: Classes for the accuracy metric; read from the output layer when omitted.
        optimizer: Builds the optimizer from the parameters (from YAML: ``class_path`` + ``init_args``).
        scheduler: Optional learning-rate scheduler built from the optimizer; stepped per epoch and given
            ``val/loss`` for schedulers that monitor a metric.
        l1_penalty: λ of the penalty λ Σ|w| over the weights of every Linear/Conv layer.
        l2_penalty: λ of the penalty λ Σ w² over the same weights.
        compile: Compile the network's forward pass with ``torch.compile`` for training (the network alone: logging
            and the metrics stay outside the compiled region, which would otherwise recompile at every step). The
            parameters and the checkpoints are the uncompiled network's.
        output_l1_penalty: λ of the penalty λ Σ|w| over the output layer's weights alone, as stored (a
            ``ScaledLinear``'s output scale not included). With every hidden neuron on its L1 ball, an L1 penalty on
            the output weights alone controls the path norm, the quantity the bounds grow with.

    Example:
        >>> from l1inf_lightning.models.components import MLP
        >>> model = SupervisedModule(MLP(4, [8], 3))
        >>> model(torch.zeros(2, 4)).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        net: nn.Module,
        task: Task = "classification",
        num_classes: int | None = None,
        optimizer: OptimizerCallable = _adam,
        scheduler: LRSchedulerCallable | None = None,
        l1_penalty: float = 0.0,
        l2_penalty: float = 0.0,
        compile: bool = False,
        output_l1_penalty: float = 0.0,
    ) -> None:
        super().__init__()
        if task not in ("classification", "regression"):
            raise ValueError(f"Expected `task` to be 'classification' or 'regression', got {task!r}")
        for name, value in (
            ("l1_penalty", l1_penalty),
            ("l2_penalty", l2_penalty),
            ("output_l1_penalty", output_l1_penalty),
        ):
            if not value >= 0:
                raise ValueError(f"Expected `{name}` to be a non-negative number, got {value!r}")
        # Under LightningCLI the hyperparameters are the parsed config (class paths, serializable), which
        # `validate`/`test --ckpt_path` read back; elsewhere `net` etc. are live objects and are left out. Private API:
        # Lightning has no public way to ask whether LightningCLI is instantiating the module; this context variable
        # is how it hands the parsed config to `save_hyperparameters`, which applies `ignore` to that config too.
        under_cli = _given_hyperparameters.get() is not None
        self.save_hyperparameters(ignore=[] if under_cli else ["net", "optimizer", "scheduler"])
        self.net = net
        self.task = task
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.l1_penalty = l1_penalty
        self.l2_penalty = l2_penalty
        self.compile = compile
        self._compiled_net: Any = None
        self.output_l1_penalty = output_l1_penalty
        self.affine_layers = [m for m in net.modules() if is_affine(m)]
        if not self.affine_layers:
            raise ValueError(f"Expected `net` to contain an nn.Linear or nn.Conv layer, got {type(net).__name__}")
        if task == "classification":
            num_classes = num_classes or self.affine_layers[-1].weight.shape[0]
            if num_classes < 2:
                raise ValueError(f"Expected `num_classes` >= 2 for classification, got {num_classes}")
            self.num_classes = num_classes
            self.metric_name = "acc"
            make_metric: Any = lambda: Accuracy(task="multiclass", num_classes=num_classes)  # noqa: E731
        else:
            self.num_classes = None
            self.metric_name = "mse"
            make_metric = MeanSquaredError
        # One metric object per split, as torchmetrics requires for correct accumulation.
        self.metrics = nn.ModuleDict({f"{split}_metric": make_metric() for split in ("train", "val", "test")})
        # Per-class prediction counts (true + false positives) on the evaluation splits, for `{split}/top_class_share`.
        self.prediction_counts = nn.ModuleDict(
            {}
            if task == "regression"
            else {split: MulticlassStatScores(num_classes, average=None) for split in ("val", "test")}
        )

    @override
    def setup(self, stage: str) -> None:
        if self.compile and stage == "fit" and self._compiled_net is None:
            # Kept out of the module tree (a plain attribute, not a submodule), so parameter names and state dict
            # keys stay those of `net` and checkpoints load into an uncompiled module.
            self.__dict__["_compiled_net"] = torch.compile(self.net)

    @override
    def forward(self, x: Tensor) -> Tensor:
        """Network output: logits for classification, predictions for regression."""
        net = self._compiled_net if self._compiled_net is not None and self.training else self.net
        return net(x)

    def loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The data loss: cross entropy, or mean squared error."""
        if self.task == "classification":
            return F.cross_entropy(output, target)
        return F.mse_loss(output, target.reshape(output.shape))

    def penalty(self) -> Tensor:
        """λ1 Σ|w| + λ2 Σ w² over the weights of every Linear/Conv layer, plus λ_out Σ|w| over the output layer's."""
        total = torch.zeros((), device=self.device)
        for layer in self.affine_layers:
            if self.l1_penalty:
                total = total + self.l1_penalty * layer.weight.abs().sum()
            if self.l2_penalty:
                total = total + self.l2_penalty * layer.weight.pow(2).sum()
        if self.output_l1_penalty:
            total = total + self.output_l1_penalty * self.affine_layers[-1].weight.abs().sum()
        return total

    def model_step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        """Forward, loss and metric update for one batch of ``split``; logs ``{split}/loss`` and the metric."""
        x, y = batch
        output = self(x)
        loss = self.loss(output, y)
        metric: Metric = self.metrics[f"{split}_metric"]
        if self.task == "classification":
            predictions = output.argmax(dim=1)
            metric(predictions, y)
            if split in self.prediction_counts:
                self.prediction_counts[split].update(predictions, y)
        else:
            metric(output, y.reshape(output.shape))
        self.log(f"{split}/loss", loss, on_step=False, on_epoch=True, prog_bar=split != "train")
        self.log(f"{split}/{self.metric_name}", metric, on_step=False, on_epoch=True, prog_bar=split != "train")
        return loss

    @override
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self.model_step(batch, "train")
        if self.l1_penalty or self.l2_penalty or self.output_l1_penalty:
            penalty = self.penalty()
            self.log("train/penalty", penalty, on_step=False, on_epoch=True)
            loss = loss + penalty
        return loss

    @override
    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.model_step(batch, "val")

    @override
    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        return self.model_step(batch, "test")

    def _log_top_class_share(self, split: str) -> None:
        if split not in self.prediction_counts:
            return
        counts = self.prediction_counts[split]
        if not counts.update_called:  # e.g. a sanity check that was skipped
            return
        scores = counts.compute()  # (num_classes, 5): tp, fp, tn, fn, support
        predicted = (scores[:, 0] + scores[:, 1]).float()
        self.log(f"{split}/top_class_share", predicted.max() / predicted.sum().clamp_min(1.0))
        counts.reset()

    @override
    def on_validation_epoch_end(self) -> None:
        self._log_top_class_share("val")

    @override
    def on_test_epoch_end(self) -> None:
        self._log_top_class_share("test")

    @override
    def configure_optimizers(self) -> Any:
        optimizer = self.optimizer(self.parameters())
        if self.scheduler is None:
            return optimizer
        scheduler = self.scheduler(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "monitor": "val/loss"}}
