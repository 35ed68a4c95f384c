"""Tests for the `L1InfProjection` callback, run on user-written LightningModules (CPU, small random data)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins import MixedPrecision
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from l1inf_lightning.callbacks.l1inf_projection import L1InfProjection
from l1inf_lightning.functional import l1inf_norm

F32_TOL = 1e-6  # DESIGN.md: ||v||_1 <= c (1 + 1e-6) in float32
# Projected in float32, then each entry rounded to the parameter dtype (relative error 2^-9 bf16, 2^-11 fp16).
HALF_TOL = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-10}


# --------------------------------------------------------------------------------------------------------------
# User-style modules: each builds its layers its own way, none comes from the package.
# --------------------------------------------------------------------------------------------------------------


class Regressor(pl.LightningModule):
    """An MLP kept in an ``nn.Sequential`` attribute, followed by its own output layer ``head``."""

    def __init__(self, in_features: int = 8, hidden: int = 16, lr: float = 0.1, optimizer: str = "sgd") -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 1)
        self.lr = lr
        self.optimizer_name = optimizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if self.optimizer_name == "adam":
            return torch.optim.Adam(self.parameters(), lr=self.lr)
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class ConvClassifier(pl.LightningModule):
    """A conv block (the second conv without bias), pooling and a linear classifier."""

    def __init__(self, lr: float = 0.2) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 4, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(4, 6, kernel_size=3, bias=False),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(6, 3)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class Tower(pl.LightningModule):
    """Hidden layers created in a loop into an ``nn.ModuleList`` (the middle one without bias), tanh applied
    functionally, and an output layer ``out``."""

    def __init__(self, widths: tuple[int, ...] = (8, 12, 12, 6), lr: float = 0.2) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(a, b, bias=i != 1) for i, (a, b) in enumerate(itertools.pairwise(widths)))
        self.out = nn.Linear(widths[-1], 1)
        self.lr = lr

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = torch.tanh(block(x))
        return self.out(x)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self(x), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9)


class TwoOptimizerModule(pl.LightningModule):
    """Manual optimization: ``encoder`` and ``decoder`` have their own optimizers; the decoder steps every other
    batch."""

    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.encoder = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def training_step(self, batch: Any, batch_idx: int) -> None:
        encoder_opt, decoder_opt = self.optimizers()
        x, y = batch
        loss = F.mse_loss(self(x), y)
        encoder_opt.zero_grad()
        decoder_opt.zero_grad()
        self.manual_backward(loss)
        encoder_opt.step()
        if batch_idx % 2 == 0:
            decoder_opt.step()

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [
            torch.optim.SGD(self.encoder.parameters(), lr=0.2),
            torch.optim.Adam(self.decoder.parameters(), lr=0.05),
        ]


class NoAffineModule(pl.LightningModule):
    """A module with a parameter but no Linear/Conv layer."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(8))
        self.norm = nn.LayerNorm(8)

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        x, y = batch
        return F.mse_loss(self.norm(x * self.scale).sum(1, keepdim=True), y)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def regression_loader(n: int = 40, batch_size: int = 4, in_features: int = 8, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_features, generator=generator)
    y = 3 * x[:, :1] - 2 * x[:, 1:2] + 0.1 * torch.randn(n, 1, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def image_loader(n: int = 24, batch_size: int = 4, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 6, 6, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


def make_trainer(**kwargs: Any) -> Trainer:
    options: dict[str, Any] = {
        "accelerator": "cpu",
        "devices": 1,
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "num_sanity_val_steps": 0,
    }
    options.update(kwargs)
    return Trainer(**options)


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in module.named_parameters()}


def max_norms(module: nn.Module, names: list[str]) -> dict[str, float]:
    layers = dict(module.named_modules())
    return {name: float(l1inf_norm(layers[name])) for name in names}


class NormRecorder(Callback):
    """Records the largest neuron L1 norm of the named layers after every real optimizer step (its own
    ``register_step_post_hook``, registered in ``on_fit_start``) and at every ``on_train_batch_end``.

    Placed after the projection callback, its hook runs after the projection's; placed before, it sees the
    weights the optimizer produced, before projection.
    """

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.after_step: list[dict[str, float]] = []
        self.at_batch_end: list[dict[str, float]] = []
        self._handles: list[Any] = []

    def on_fit_start(self, trainer: Trainer, pl_module: pl.LightningModule) -> None:
        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self.after_step.append(max_norms(pl_module, self.names))

        self._handles = [optimizer.register_step_post_hook(hook) for optimizer in trainer.optimizers]

    def on_train_batch_end(self, trainer: Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        self.at_batch_end.append(max_norms(pl_module, self.names))

    def on_fit_end(self, trainer: Trainer, pl_module: pl.LightningModule) -> None:
        for handle in self._handles:
            handle.remove()


# --------------------------------------------------------------------------------------------------------------
# After every optimizer step, and once at fit start
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make_module", "make_loader", "selected"),
    [
        (Regressor, regression_loader, ["encoder.0", "encoder.2"]),
        (ConvClassifier, image_loader, ["features.0", "features.2"]),
        (Tower, regression_loader, ["blocks.0", "blocks.1", "blocks.2"]),
    ],
    ids=["sequential-attribute", "conv-block", "module-list-no-bias"],
)
def test_every_selected_layer_is_feasible_after_every_step(make_module, make_loader, selected):
    seed_everything(0)
    model = make_module()
    radius = 0.4
    assert all(norm > radius for norm in max_norms(model, selected).values())  # starts outside the ball
    before, after = NormRecorder(selected), NormRecorder(selected)
    projection = L1InfProjection(radius=radius)
    trainer = make_trainer(max_steps=8, callbacks=[before, projection, after])
    trainer.fit(model, make_loader())

    assert projection.radii == dict.fromkeys(selected, radius)
    assert trainer.global_step == 8
    assert projection.num_projections == len(after.after_step) == 8
    for record in after.after_step + after.at_batch_end:
        assert all(norm <= radius * (1 + F32_TOL) for norm in record.values()), record
    # The optimizer does push the layers out of the ball, so the checks above would fail without a projection.
    assert any(norm > radius * (1 + 1e-3) for record in before.after_step for norm in record.values())
    # And the projection puts them on the sphere, not well inside it (a projection, not a blunt shrink).
    assert all(max(record.values()) >= radius * (1 - 1e-4) for record in after.after_step)


class ValidatedRegressor(Regressor):
    """The regressor with a validation loop."""

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        x, y = batch
        self.log("val_loss", F.mse_loss(self(x), y))


class SanityProbe(Callback):
    """Records the selected layers' norms when the first (sanity-check) validation starts."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.norms: list[dict[str, float]] = []
        self.projections_then: list[int] = []

    def on_validation_start(self, trainer: Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            self.norms.append(max_norms(pl_module, self.names))
            projection = next(cb for cb in trainer.callbacks if isinstance(cb, L1InfProjection))
            self.projections_then.append(projection.num_projections)


def test_projects_once_at_fit_start_so_the_sanity_check_sees_a_feasible_model():
    seed_everything(0)
    model = ValidatedRegressor()
    names = ["encoder.0", "encoder.2"]
    assert all(norm > 0.3 for norm in max_norms(model, names).values())
    # The probe comes first: it runs before anything the projection callback might do at validation start.
    probe = SanityProbe(names)
    projection = L1InfProjection(radius=0.3)
    trainer = make_trainer(max_steps=2, num_sanity_val_steps=1, callbacks=[probe, projection])
    trainer.fit(model, regression_loader(), regression_loader(n=8, seed=1))

    assert len(probe.norms) == 1
    assert all(norm <= 0.3 * (1 + F32_TOL) for norm in probe.norms[0].values())
    assert probe.projections_then == [0]  # the fit-start projection is not a step projection
    assert projection.num_projections == 2


# --------------------------------------------------------------------------------------------------------------
# Exactly once per real optimizer step
# --------------------------------------------------------------------------------------------------------------


def test_gradient_accumulation_projects_once_per_accumulated_step():
    seed_everything(0)
    model = Regressor()
    after = NormRecorder(["encoder.0", "encoder.2"])
    projection = L1InfProjection(radius=0.5)
    trainer = make_trainer(max_epochs=2, accumulate_grad_batches=3, callbacks=[projection, after])
    trainer.fit(model, regression_loader(n=40, batch_size=4))  # 10 batches per epoch

    # 3 + 3 + 3 + 1 (the epoch's last batch steps) batches per step: 4 steps per epoch.
    assert trainer.global_step == 8
    assert projection.num_projections == trainer.global_step == len(after.after_step)
    assert len(after.at_batch_end) == 20  # not once per batch
    for record in after.after_step + after.at_batch_end:
        assert all(norm <= 0.5 * (1 + F32_TOL) for norm in record.values())


def test_manual_optimization_projects_after_each_step_only_the_layers_of_that_optimizer(monkeypatch):
    seed_everything(0)
    model = TwoOptimizerModule()
    projection = L1InfProjection(radius=0.3)
    projected: list[list[str]] = []
    real_project = projection._project

    def spy(layers: dict[str, Any], step: int) -> None:
        projected.append(list(layers))
        real_project(layers, step)

    monkeypatch.setattr(projection, "_project", spy)
    after = NormRecorder(["encoder.0", "encoder.2", "decoder.0"])
    trainer = make_trainer(max_epochs=1, callbacks=[projection, after])
    trainer.fit(model, regression_loader(n=24, batch_size=4))  # 6 batches: 6 encoder steps, 3 decoder steps

    assert projection.radii == {"encoder.0": 0.3, "encoder.2": 0.3, "decoder.0": 0.3}  # decoder.2 is the output
    encoder, decoder = ["encoder.0", "encoder.2"], ["decoder.0"]
    assert projected[0] == [*encoder, *decoder]  # fit start: every selected layer
    assert projected[1:] == [encoder, decoder, encoder, encoder, decoder, encoder, encoder, decoder, encoder]
    assert projection.num_projections == 9 == len(after.after_step)
    for record in after.after_step + after.at_batch_end:
        assert all(norm <= 0.3 * (1 + F32_TOL) for norm in record.values())


def test_a_step_skipped_by_the_grad_scaler_is_not_projected():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    projection = L1InfProjection(radius=0.2)
    projection.on_fit_start(SimpleNamespace(optimizers=[optimizer]), net)  # registers the step hook
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0)
    x = torch.randn(16, 4)

    def scaled_step(scale_loss_by: float) -> None:
        optimizer.zero_grad()
        scaler.scale(net(x).pow(2).mean() * scale_loss_by).backward()
        scaler.step(optimizer)
        scaler.update()

    scaled_step(1.0)
    assert projection.num_projections == 1
    weights = snapshot(net)
    scaled_step(math.inf)  # non-finite gradients: the scaler skips optimizer.step
    assert projection.num_projections == 1
    assert all(torch.equal(weights[name], p) for name, p in net.named_parameters())
    scaled_step(1.0)
    assert projection.num_projections == 2
    assert float(l1inf_norm(net[0])) <= 0.2 * (1 + F32_TOL)
    projection._remove_hooks()


class OverflowingRegressor(Regressor):
    """Makes the loss infinite on some batches, as an fp16 overflow would, so the grad scaler skips those steps."""

    def __init__(self, overflow_at: set[int]) -> None:
        super().__init__()
        self.overflow_at = overflow_at

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
        loss = super().training_step(batch, batch_idx)
        return loss * math.inf if batch_idx in self.overflow_at else loss


def test_mixed_precision_in_a_trainer_projects_only_the_steps_the_scaler_took():
    seed_everything(0)
    model = OverflowingRegressor(overflow_at={2, 5})
    projection = L1InfProjection(radius=0.5)
    after = NormRecorder(["encoder.0", "encoder.2"])  # its hook fires on the real steps only
    scaler = torch.amp.GradScaler("cpu", init_scale=1.0, growth_interval=10_000)
    trainer = make_trainer(
        max_steps=8, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)], callbacks=[projection, after]
    )
    trainer.fit(model, regression_loader())

    assert trainer.global_step == 8  # Lightning counts the skipped steps too
    assert projection.num_projections == 6 == len(after.after_step)
    for record in after.after_step + after.at_batch_end:
        assert all(norm <= 0.5 * (1 + F32_TOL) for norm in record.values())


# --------------------------------------------------------------------------------------------------------------
# Which layers, which radius
# --------------------------------------------------------------------------------------------------------------


class FrozenRegressor(Regressor):
    """Freezes the named submodules; the optimizer still gets every parameter (frozen ones get no gradient)."""

    def __init__(self, frozen: list[str]) -> None:
        super().__init__(lr=0.2)
        for name in frozen:
            self.get_submodule(name).requires_grad_(False)


class BiasTuningRegressor(Regressor):
    """Freezes the first layer's weight and trains its bias, giving the optimizer only trainable parameters."""

    def __init__(self) -> None:
        super().__init__(lr=0.5)
        self.encoder[0].weight.requires_grad_(False)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=self.lr, momentum=0.9)


def test_a_layer_whose_optimizer_holds_only_its_bias_is_projected_after_every_step():
    seed_everything(0)
    model = BiasTuningRegressor()
    before, after = NormRecorder(["encoder.0"]), NormRecorder(["encoder.0"])
    projection = L1InfProjection(radius=0.5)
    trainer = make_trainer(max_steps=8, callbacks=[before, projection, after])
    trainer.fit(model, regression_loader())

    assert any(record["encoder.0"] > 0.5 * (1 + 1e-3) for record in before.after_step)  # the bias steps leave the ball
    assert all(record["encoder.0"] <= 0.5 * (1 + F32_TOL) for record in after.after_step)


@pytest.mark.parametrize(
    ("layers", "frozen", "projected"),
    [
        (None, ["head"], ["encoder.0", "encoder.2"]),
        (["encoder.2"], ["head", "encoder.0"], ["encoder.2"]),
        (["encoder.[0]"], ["head", "encoder.2"], ["encoder.0"]),
    ],
    ids=["default-skips-output", "pattern-subset", "glob-class"],
)
def test_output_and_unselected_layers_are_left_untouched(layers, frozen, projected):
    seed_everything(0)
    model = FrozenRegressor(frozen)
    radius = 1e-3  # any projection of a frozen layer would be obvious
    initial = snapshot(model)
    projection = L1InfProjection(radius=radius, layers=layers)
    trainer = make_trainer(max_steps=4, callbacks=[projection])
    trainer.fit(model, regression_loader())

    assert list(projection.radii) == projected
    for name in frozen:
        for param_name, param in model.get_submodule(name).named_parameters():
            assert torch.equal(param, initial[f"{name}.{param_name}"]), f"{name}.{param_name} was modified"
    for name in projected:
        layer = model.get_submodule(name)
        assert float(l1inf_norm(layer)) <= radius * (1 + F32_TOL)
        assert float((layer.weight == 0).float().mean()) > 0.5  # soft-thresholding made it sparse


def test_mapping_radius_selects_by_glob_and_the_first_matching_pattern_wins():
    seed_everything(0)
    model = Tower()
    projection = L1InfProjection(radius={"blocks.0": 0.5, "blocks.*": 2.0, "out": "inf"})
    after = NormRecorder(["blocks.0", "blocks.1", "blocks.2"])
    trainer = make_trainer(max_steps=6, callbacks=[projection, after])
    trainer.fit(model, regression_loader())

    assert projection.radii == {"blocks.0": 0.5, "blocks.1": 2.0, "blocks.2": 2.0, "out": math.inf}
    assert all(record["blocks.0"] <= 0.5 * (1 + F32_TOL) for record in after.after_step)
    assert all(record["blocks.1"] <= 2.0 * (1 + F32_TOL) for record in after.after_step)
    assert all(record["blocks.2"] <= 2.0 * (1 + F32_TOL) for record in after.after_step)
    # Layer 0 took 0.5, not the 2.0 of the later pattern it also matches: the constraint binds at 0.5.
    assert after.after_step[-1]["blocks.0"] >= 0.5 * (1 - 1e-4)
    assert float(l1inf_norm(model.out)) > 2.0  # the output layer, given inf, was not constrained


def test_select_layers_on_a_plain_module_resolves_the_patterns_in_registration_order():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Sequential(nn.Conv1d(1, 2, 3), nn.Linear(4, 2)))
    selected = L1InfProjection(radius={"2.*": 0.25, "0": 1.5}).select_layers(net)
    assert list(selected) == ["0", "2.0", "2.1"]
    assert {name: radius for name, (_, radius) in selected.items()} == {"0": 1.5, "2.0": 0.25, "2.1": 0.25}
    assert selected["2.0"][0] is net[2][0]
    default = L1InfProjection(radius=0.7).select_layers(net)
    assert list(default) == ["0", "2.0"]  # "2.1" is the output layer


@pytest.mark.parametrize("radius", [math.inf, "inf", {"encoder.*": "inf"}], ids=["float", "string", "mapping"])
def test_infinite_radius_is_bit_for_bit_the_run_without_the_callback(radius):
    def train(callbacks: list[Callback]) -> dict[str, torch.Tensor]:
        seed_everything(0)
        model = Regressor(lr=0.3)
        make_trainer(max_steps=6, callbacks=callbacks).fit(model, regression_loader())
        return snapshot(model)

    baseline = train([])
    projection = L1InfProjection(radius=radius)
    unconstrained = train([projection])
    assert baseline.keys() == unconstrained.keys()
    assert all(torch.equal(baseline[name], unconstrained[name]) for name in baseline)
    assert projection.num_projections == 0
    assert set(projection.radii.values()) == {math.inf}
    # A finite radius does change the run, so the comparison above can fail.
    constrained = train([L1InfProjection(radius=0.5)])
    assert not torch.equal(baseline["encoder.0.weight"], constrained["encoder.0.weight"])


@pytest.mark.parametrize(("precision", "dtype"), [("bf16-true", torch.bfloat16), ("16-true", torch.float16)])
def test_half_precision_parameters_are_projected(precision, dtype):
    seed_everything(0)
    model = Regressor(lr=0.1)
    names = ["encoder.0", "encoder.2"]
    after = NormRecorder(names)
    projection = L1InfProjection(radius=0.5)
    trainer = make_trainer(max_steps=5, precision=precision, callbacks=[projection, after])
    trainer.fit(model, regression_loader())

    assert model.encoder[0].weight.dtype == dtype
    assert projection.num_projections == 5 == len(after.after_step)
    for record in after.after_step + after.at_batch_end:
        assert all(norm <= 0.5 * (1 + HALF_TOL[dtype]) for norm in record.values()), record
    assert all(max(record.values()) >= 0.5 * (1 - HALF_TOL[dtype]) for record in after.after_step)


# --------------------------------------------------------------------------------------------------------------
# Checkpointing and reuse
# --------------------------------------------------------------------------------------------------------------


def test_stop_and_resume_gives_the_weights_of_an_uninterrupted_run(tmp_path: Path):
    def fit(max_epochs: int, seed: int, ckpt_path: Path | None = None) -> tuple[Regressor, Trainer, L1InfProjection]:
        seed_everything(seed)
        model = Regressor(lr=0.05, optimizer="adam")
        projection = L1InfProjection(radius=0.3)
        trainer = make_trainer(max_epochs=max_epochs, callbacks=[projection])
        trainer.fit(model, regression_loader(n=20), ckpt_path=ckpt_path)
        return model, trainer, projection

    straight, straight_trainer, straight_projection = fit(max_epochs=4, seed=0)
    _, first_half, _ = fit(max_epochs=2, seed=0)
    first_half.save_checkpoint(tmp_path / "half.ckpt")
    # Another seed: the resumed model's initial weights differ, so everything must come from the checkpoint.
    resumed, resumed_trainer, resumed_projection = fit(max_epochs=4, seed=1, ckpt_path=tmp_path / "half.ckpt")

    assert resumed_trainer.global_step == straight_trainer.global_step == 20
    for (name, expected), (_, actual) in zip(straight.named_parameters(), resumed.named_parameters(), strict=True):
        assert torch.equal(expected, actual), f"{name} differs after resuming"
    assert resumed_projection.num_projections == straight_projection.num_projections == 20
    assert float(l1inf_norm(resumed.encoder[0])) <= 0.3 * (1 + F32_TOL)


def test_callback_state_round_trips_under_its_own_state_key(tmp_path: Path):
    small, large = L1InfProjection(radius=0.5), L1InfProjection(radius=2.0, layers=["encoder.2"])
    assert small.state_key != large.state_key
    assert small.state_key != L1InfProjection(radius=0.5, layers=["encoder.0"]).state_key
    seed_everything(0)
    trainer = make_trainer(max_steps=3, callbacks=[small, large])
    trainer.fit(Regressor(), regression_loader())
    trainer.save_checkpoint(tmp_path / "both.ckpt")

    saved = torch.load(tmp_path / "both.ckpt", weights_only=False)["callbacks"]
    assert saved[small.state_key] == {"num_projections": 3}
    assert saved[large.state_key] == {"num_projections": 3}
    restored = L1InfProjection(radius=0.5)
    restored.load_state_dict(saved[restored.state_key])
    assert restored.num_projections == 3


class CachedOptimizerRegressor(Regressor):
    """Returns the same optimizer object from every ``configure_optimizers`` call, as some user code does."""

    def configure_optimizers(self) -> torch.optim.Optimizer:
        if not hasattr(self, "_optimizer"):
            self._optimizer = torch.optim.SGD(self.parameters(), lr=0.1)
        return self._optimizer


def test_hooks_are_removed_after_fit_so_a_second_fit_does_not_double_count():
    seed_everything(0)
    model = CachedOptimizerRegressor()
    first = L1InfProjection(radius=0.5)
    trainer = make_trainer(max_steps=3, callbacks=[first])
    trainer.fit(model, regression_loader())
    assert first.num_projections == 3

    second = L1InfProjection(radius=0.5)
    make_trainer(max_steps=4, callbacks=[second]).fit(model, regression_loader())
    assert second.num_projections == 4
    assert first.num_projections == 3  # its hook left the (shared) optimizer at the end of the first fit

    # The same instance in a third Trainer keeps counting from where it was, once per step.
    make_trainer(max_steps=2, callbacks=[first]).fit(model, regression_loader())
    assert first.num_projections == 5
    assert second.num_projections == 4
    assert float(l1inf_norm(model.encoder[0])) <= 0.5 * (1 + F32_TOL)


# --------------------------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"radius": 0}, r"`radius`.*got 0"),
        ({"radius": -1.0}, r"`radius`.*got -1\.0"),
        ({"radius": math.nan}, r"`radius`.*got nan"),
        ({"radius": "abc"}, r"`radius`.*got 'abc'"),
        ({"radius": "-inf"}, r"`radius`.*got '-inf'"),
        ({"radius": True}, r"`radius`.*got True"),
        ({"radius": {}}, r"`radius`.*got \{\}"),
        ({"radius": {"encoder.0": -2.0}}, r"`radius\['encoder\.0'\]`.*got -2\.0"),
        ({"radius": {"encoder.0": 1.0}, "layers": ["encoder.2"]}, r"`layers`.*encoder\.2.*`radius`.*encoder\.0"),
        ({"layers": "encoder.0"}, r"`layers`.*got 'encoder\.0'"),
        ({"layers": []}, r"`layers`.*got \[\]"),
        ({"layers": ["encoder.0", ""]}, r"`layers`.*got \['encoder\.0', ''\]"),
    ],
)
def test_bad_arguments_are_rejected_at_construction(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L1InfProjection(**kwargs)


def test_a_pattern_matching_no_layer_names_it_and_lists_the_layers():
    model = Regressor()
    with pytest.raises(ValueError, match=r"\['encoder\.9'\] matched none.*'encoder\.0', 'encoder\.2', 'head'"):
        make_trainer(max_steps=1, callbacks=[L1InfProjection(layers=["encoder.*", "encoder.9"])]).fit(
            model, regression_loader()
        )
    with pytest.raises(ValueError, match=r"\['decoder\*'\] matched none.*'encoder\.0'"):
        L1InfProjection(radius={"decoder*": 1.0}).select_layers(model)


def test_a_module_without_affine_layers_is_rejected_at_fit_start():
    with pytest.raises(ValueError, match=r"found no nn\.Linear.*NoAffineModule"):
        make_trainer(max_steps=1, callbacks=[L1InfProjection()]).fit(NoAffineModule(), regression_loader())


class PoisonedRegressor(Regressor):
    """Writes a NaN into ``encoder.2`` between backward and the optimizer step of step ``poison_at``."""

    def __init__(self, poison_at: int) -> None:
        super().__init__()
        self.poison_at = poison_at

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.trainer.global_step == self.poison_at:
            with torch.no_grad():
                self.encoder[2].weight[0, 0] = math.nan


class PreProjectionSnapshot(Callback):
    """Placed before the projection callback: keeps the weights the optimizer produced, before projection."""

    def __init__(self) -> None:
        self.weights: dict[str, torch.Tensor] = {}

    def on_fit_start(self, trainer: Trainer, pl_module: pl.LightningModule) -> None:
        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self.weights = snapshot(pl_module)

        self.handle = trainer.optimizers[0].register_step_post_hook(hook)


def test_non_finite_weights_raise_naming_the_layer_and_leave_every_layer_as_it_was():
    seed_everything(0)
    model = PoisonedRegressor(poison_at=2)
    before = PreProjectionSnapshot()
    projection = L1InfProjection(radius=0.05)
    trainer = make_trainer(max_steps=5, callbacks=[before, projection])
    with pytest.raises(ValueError, match=r"cannot project layers \['encoder\.2'\].*not finite.*after 2 projected"):
        trainer.fit(model, regression_loader())
    before.handle.remove()

    assert projection.num_projections == 2
    # encoder.0 is registered first and lies outside the ball, yet the failed projection did not write it.
    assert float(l1inf_norm(model.encoder[0])) > 0.05 * (1 + 1e-3)
    for name, param in model.named_parameters():
        torch.testing.assert_close(param, before.weights[name], rtol=0, atol=0, equal_nan=True, msg=name)
    # The hooks left with the exception: stepping the optimizer again neither projects nor raises.
    trainer.optimizers[0].step()
    assert projection.num_projections == 2


def test_project_checks_every_layer_before_writing_any():
    torch.manual_seed(0)
    first, second = nn.Linear(6, 4), nn.Linear(4, 2)
    with torch.no_grad():
        second.bias[1] = math.inf
    first_before = snapshot(first)
    assert float(l1inf_norm(first)) > 0.1
    projection = L1InfProjection(radius=0.1)
    with pytest.raises(ValueError, match=r"\['second'\].*not finite"):
        projection._project({"first": (first, 0.1), "second": (second, 0.1)}, step=0)
    assert all(torch.equal(first_before[name], p) for name, p in first.named_parameters())


def test_package_level_import():
    from l1inf_lightning import L1InfProjection as exported
    from l1inf_lightning.callbacks import L1InfProjection as from_callbacks

    assert exported is from_callbacks is L1InfProjection
    assert repr(exported(radius="inf")) == "L1InfProjection(radius=inf, layers=None)"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_steps_do_not_synchronize_with_the_host_and_divergence_is_reported_a_step_late():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 10), nn.ReLU(), nn.Linear(10, 2)).cuda()
    projection = L1InfProjection(radius=0.5)
    layers = projection.select_layers(model)
    assert list(layers) == ["0", "2"]
    projection._project(layers, 0)  # the first step allocates (pinned memory, the caching allocators)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 6):  # the steady state: an optimizer's update, then the projection
            with torch.no_grad():
                for param in model.parameters():
                    param.add_(0.05 * torch.randn_like(param))
            projection._project(layers, step)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    for module, radius in layers.values():
        assert float(l1inf_norm(module)) <= radius * (1 + 1e-6)
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    projection._project(layers, 6)  # its check is on its way to the host
    torch.cuda.synchronize()
    with pytest.raises(ValueError, match=r"cannot project layers \['2'\].*not finite"):
        projection._project(layers, 7)
