"""What a new user runs into: every precision, foreign models, bad data, diverged weights, ranks, sharding, compile."""

from __future__ import annotations

import functools
import math
import warnings
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.strategies import FSDPStrategy
from lightning.pytorch.utilities import rank_zero_only
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from l1inf_lightning import L1InfProjection, SparsityMonitor
from l1inf_lightning.callbacks.sparsity_monitor import _histogram
from l1inf_lightning.cli import fit_cli
from l1inf_lightning.functional import is_affine
from l1inf_lightning.models import MLP, SupervisedModule

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_classification.yaml"

make_trainer = functools.partial(
    Trainer, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
    enable_model_summary=False, num_sanity_val_steps=0,
)  # fmt: skip


def exact_row_l1(layer: nn.Module) -> list[Fraction]:
    """Each stored neuron's L1 norm (bias + weights), summed exactly from the stored values."""
    weight = layer.weight.detach().reshape(layer.weight.shape[0], -1).double()  # every float16/bf16/f32 is a double
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros(weight.shape[0]).double()
    return [
        abs(Fraction(float(bias[j]))) + sum((abs(Fraction(float(v))) for v in weight[j].tolist()), Fraction(0))
        for j in range(weight.shape[0])
    ]


# --------------------------------------------------------------------------------------------------------------
# 1, 2: every precision Lightning offers on the CPU, through the shipped config
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("precision", ["32-true", "64-true", "bf16-true", "bf16-mixed", "16-mixed"])
@pytest.mark.parametrize("mode", ["exact", "radius_aware"])
def test_precision_matrix_keeps_the_ball_in_the_stored_dtype_and_the_monitor_logs(tmp_path, precision, mode):
    radius = 0.3
    args = [
        "fit",
        f"--config={CONFIG}",
        f"--trainer.precision={precision}",
        f"--projection.radius={radius}",
        f"--projection.mode={mode}",
        "--trainer.max_epochs=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_checkpointing=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.num_train=100",
        "--data.init_args.num_test=50",
        "--data.init_args.num_val=50",
        "--test_after_fit=false",
    ]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*(precision|AMP|GradScaler|autocast).*")
        cli = fit_cli(args)
    stored = {torch.float32, torch.float64, torch.bfloat16}
    hidden = [m for m in cli.model.net.modules() if is_affine(m)][:-1]
    assert all(layer.weight.dtype in stored for layer in hidden)
    for layer in hidden:
        assert max(exact_row_l1(layer)) <= Fraction(radius)
    monitor = next(cb for cb in cli.trainer.callbacks if isinstance(cb, SparsityMonitor))
    for tag in ("sparsity/overall", "gap/loss", "gap/acc", "bound/generalization"):
        assert math.isfinite(monitor.last_metrics[tag]), tag


# --------------------------------------------------------------------------------------------------------------
# 3, 4: foreign models
# --------------------------------------------------------------------------------------------------------------


def test_a_model_whose_default_selection_is_empty_is_refused_with_its_layers_named():
    with pytest.raises(ValueError, match=r"selects no layer of BoringModel.*layers=\['layer'\]"):
        make_trainer(max_steps=1, callbacks=[L1InfProjection(radius=0.5)]).fit(BoringModel())


def test_a_model_whose_only_layer_is_named_is_projected():
    model = BoringModel()
    make_trainer(max_steps=2, callbacks=[L1InfProjection(radius=0.5, layers=["layer"])]).fit(model)
    assert max(exact_row_l1(model.layer)) <= Fraction(0.5)


def test_unconstrained_baseline_on_a_one_layer_model_is_allowed():
    make_trainer(max_steps=1, callbacks=[L1InfProjection(radius="inf")]).fit(BoringModel())


class AttentionModel(BoringModel):
    def __init__(self) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(32, 4)
        self.hidden = nn.Linear(32, 32)
        del self.layer  # registered again last: the output layer
        self.layer = nn.Linear(32, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        sequence = x.unsqueeze(0)
        attended, _ = self.attention(sequence, sequence, sequence)
        return self.layer(F.relu(self.hidden(attended.squeeze(0))))


def test_neurons_outside_linear_and_conv_layers_are_named_in_one_warning():
    model = AttentionModel()
    with pytest.warns(UserWarning, match=r"left unconstrained: \['attention.in_proj_weight'\]") as record:
        make_trainer(max_steps=2, callbacks=[L1InfProjection(radius=0.5)]).fit(model)
    assert sum("left unconstrained" in str(w.message) for w in record) == 1
    # The attention's output projection is an nn.Linear, so it is constrained; so is the hidden layer.
    assert max(exact_row_l1(model.attention.out_proj)) <= Fraction(0.5)
    assert max(exact_row_l1(model.hidden)) <= Fraction(0.5)


# --------------------------------------------------------------------------------------------------------------
# 5: bad data and diverged weights
# --------------------------------------------------------------------------------------------------------------


def classification_loader(bad_index: int | None = None) -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 6, generator=generator)
    if bad_index is not None:
        x[bad_index, 3] = math.nan
    return DataLoader(TensorDataset(x, (x[:, 0] > 0).long()), batch_size=8)


def test_nan_in_the_training_data_is_reported_as_data_with_the_first_bad_sample():
    model = SupervisedModule(MLP(6, [8], 2))
    monitor = SparsityMonitor(image_every_n_epochs=0)
    with pytest.raises(ValueError, match="sample 13 of the training set has a NaN or inf input"):
        make_trainer(max_epochs=1, callbacks=[L1InfProjection(radius=0.5), monitor]).fit(
            model, classification_loader(bad_index=13)
        )


def test_histogram_of_diverged_weights_does_not_crash_and_counts_the_finite_values():
    weight = torch.tensor([[1.0, math.nan], [math.inf, -1.0]])
    histogram = _histogram(weight)
    assert histogram["num"] == 2 and histogram["min"] == -1.0 and histogram["max"] == 1.0
    assert _histogram(torch.full((2, 2), math.nan))["num"] == 1  # nothing finite: an empty-looking histogram


def test_monitor_logs_a_run_whose_weights_diverge_without_crashing(tmp_path):
    class Diverging(SupervisedModule):
        def on_train_epoch_end(self) -> None:
            with torch.no_grad():
                self.net.layers[0].weight[0, 0] = math.nan

    model = Diverging(MLP(6, [8], 2))
    monitor = SparsityMonitor(image_every_n_epochs=1)
    logger = pl.loggers.TensorBoardLogger(tmp_path)
    make_trainer(max_epochs=1, callbacks=[monitor], logger=logger).fit(model, classification_loader())
    assert "sparsity/overall" in monitor.last_metrics


# --------------------------------------------------------------------------------------------------------------
# 8: ranks
# --------------------------------------------------------------------------------------------------------------


def test_warnings_come_from_rank_zero_only(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    model = SupervisedModule(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)))
    monitor = SparsityMonitor(image_every_n_epochs=0, gap_samples=0)
    projection = L1InfProjection(radius=0.1, mode="radius_aware")  # warns: no ScaledLinear output
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        make_trainer(max_epochs=1, callbacks=[projection, monitor]).fit(model, classification_loader())
    mine = [str(w.message) for w in record if str(w.message).startswith(("`L1InfProjection", "`SparsityMonitor"))]
    assert mine == []


def test_the_same_warning_on_rank_zero(monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 0)
    model = SupervisedModule(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2)))
    with pytest.warns(UserWarning, match="ScaledLinear"):
        make_trainer(max_epochs=1, callbacks=[L1InfProjection(radius=0.1, mode="radius_aware")]).fit(
            model, classification_loader()
        )


# --------------------------------------------------------------------------------------------------------------
# 9: sharded and compiled models
# --------------------------------------------------------------------------------------------------------------


def test_strategies_that_shard_parameters_are_refused():
    # Lightning builds FSDP only on GPUs; the strategy object is built here and handed to the hook as a Trainer would.
    trainer = SimpleNamespace(strategy=FSDPStrategy(), optimizers=[])
    with pytest.raises(RuntimeError, match="cannot project under FSDPStrategy"):
        L1InfProjection(radius=0.5).on_fit_start(trainer, SupervisedModule(MLP(6, [8], 2)))


@pytest.mark.slow  # about 50 s of compilation on two CPU cores
def test_compile_option_compiles_the_network_alone_and_keeps_the_constraint(tmp_path):
    torch._dynamo.reset()
    args = [
        "fit",
        f"--config={CONFIG}",
        "--model.init_args.compile=true",
        "--projection.radius=0.3",
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.enable_checkpointing=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        "--data.init_args.num_train=100",
        "--data.init_args.num_test=50",
        "--data.init_args.num_val=50",
        "--test_after_fit=false",
    ]
    cli = fit_cli(args)
    model = cli.model
    assert model._compiled_net is not None and model._compiled_net._orig_mod is model.net
    # The state dict is the plain network's, so a checkpoint loads into an uncompiled module.
    assert all("_orig_mod" not in key for key in model.state_dict())
    for layer in [m for m in model.net.modules() if is_affine(m)][:-1]:
        assert max(exact_row_l1(layer)) <= Fraction(0.3)
    # 20 training steps, two batch shapes at most (the last batch of an epoch may be smaller): a handful of graphs,
    # not one per step as when `self.log` and the metric update sit inside the compiled region.
    frames = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert 1 <= frames <= 4
