"""The radius-aware mode of `L1InfProjection`: step scaling, annealing, output scale, and the exact mode unchanged."""

from __future__ import annotations

import copy
import functools
import itertools
import math
from typing import Any

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Trainer, seed_everything
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from l1inf_lightning.callbacks.l1inf_projection import L1InfProjection
from l1inf_lightning.functional import l1inf_norm
from l1inf_lightning.functional.network import measure_network
from l1inf_lightning.functional.schedule import annealed_radius
from l1inf_lightning.models import MLP, ScaledLinear, SupervisedModule

F32_TOL = 1e-6


def loader(n: int = 64, batch_size: int = 8, seed: int = 0) -> DataLoader:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] * x[:, 1] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=False)


# A quiet CPU Trainer: no logger, checkpoint, progress bar, summary or sanity check.
make_trainer = functools.partial(
    Trainer, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
    enable_model_summary=False, num_sanity_val_steps=0,
)  # fmt: skip


def mlp_module(optimizer: str = "sgd", lr: float = 0.05, output_bias: bool = False) -> SupervisedModule:
    def make_optimizer(params: Any) -> torch.optim.Optimizer:
        if optimizer == "sgd":
            return torch.optim.SGD(params, lr=lr)
        return torch.optim.Adam(params, lr=lr)

    return SupervisedModule(MLP(6, [16, 8], 2, output_bias=output_bias), optimizer=make_optimizer)


class StepSpy(pl.Callback):
    """Records, after every optimizer step (after the projection's hook), the hidden norms and the output scale."""

    def __init__(self) -> None:
        self.records: list[dict[str, float]] = []

    def on_fit_start(self, trainer: Trainer, pl_module: pl.LightningModule) -> None:
        net = pl_module.net

        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            self.records.append(
                {
                    "layers.0": float(l1inf_norm(net.layers[0])),
                    "layers.2": float(l1inf_norm(net.layers[2])),
                    "scale": float(net.layers[4].output_scale),
                }
            )

        self.handles = [optimizer.register_step_post_hook(hook) for optimizer in trainer.optimizers]


# --------------------------------------------------------------------------------------------------------------
# ScaledLinear
# --------------------------------------------------------------------------------------------------------------


def test_scaled_linear_with_scale_one_is_nn_linear_bit_for_bit_forward_and_backward():
    torch.manual_seed(0)
    plain = nn.Linear(5, 3)
    torch.manual_seed(0)
    scaled = ScaledLinear(5, 3)
    assert torch.equal(plain.weight, scaled.weight) and torch.equal(plain.bias, scaled.bias)  # same init stream
    x = torch.randn(7, 5) * 1e3
    plain(x).square().sum().backward()
    scaled(x).square().sum().backward()
    assert torch.equal(plain(x), scaled(x))
    assert torch.equal(plain.weight.grad, scaled.weight.grad)


def test_scaled_linear_scales_the_output_and_reports_its_effective_weights():
    layer = ScaledLinear(4, 2, bias=True)
    layer.output_scale.fill_(1e3)
    x = torch.randn(3, 4)
    weight, bias = layer.effective_weight()
    torch.testing.assert_close(layer(x), F.linear(x, weight, bias))
    assert "output_scale=1000" in repr(layer)


def test_scaled_linear_loads_a_plain_linear_state_dict_with_scale_one_and_keeps_its_scale_in_its_own():
    plain = nn.Linear(4, 2)
    layer = ScaledLinear(4, 2)
    layer.output_scale.fill_(8.0)
    layer.load_state_dict(plain.state_dict())
    assert float(layer.output_scale) == 1.0
    layer.output_scale.fill_(8.0)
    other = ScaledLinear(4, 2)
    other.load_state_dict(layer.state_dict())
    assert float(other.output_scale) == 8.0


def test_from_linear_shares_the_parameters():
    plain = nn.Linear(4, 2, bias=False)
    layer = ScaledLinear.from_linear(plain)
    assert layer.weight is plain.weight and layer.bias is None


def test_measure_network_uses_the_effective_output_layer():
    net = MLP(6, [4], 3, output_bias=False)
    before = measure_network(net).output_column_l1
    net.layers[-1].output_scale.fill_(10.0)
    after = measure_network(net).output_column_l1
    assert after == pytest.approx([10 * o for o in before])


# --------------------------------------------------------------------------------------------------------------
# The schedule and the arguments
# --------------------------------------------------------------------------------------------------------------


def test_annealed_radius_is_geometric_from_start_to_target_and_constant_after():
    radii = [annealed_radius(0.01, 1.0, t, 4) for t in range(7)]
    assert radii[0] == 1.0 and radii[4:] == [0.01] * 3
    ratios = [b / a for a, b in itertools.pairwise(radii[:5])]
    assert ratios == pytest.approx([0.01**0.25] * 4)
    assert annealed_radius(2.0, 1.0, 0, 4) == 2.0  # a radius above the start is never annealed
    assert annealed_radius(0.5, 1.0, 3, 0) == 0.5  # no annealing
    assert annealed_radius(math.inf, 1.0, 0, 4) == math.inf


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"mode": "fast"}, "mode"),
        ({"anneal": 1.5}, "anneal"),
        ({"anneal": True}, "anneal"),
        ({"start_radius": 0}, "start_radius"),
        ({"start_radius": "inf"}, "start_radius"),
    ],
)
def test_bad_arguments_are_rejected_with_the_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        L1InfProjection(radius=0.1, **kwargs)


# --------------------------------------------------------------------------------------------------------------
# Training in the radius-aware mode
# --------------------------------------------------------------------------------------------------------------


def test_radius_aware_anneals_the_ball_and_the_output_scale_follows_it():
    seed_everything(0)
    model = mlp_module()
    projection = L1InfProjection(radius=0.01, mode="radius_aware", anneal=0.5)
    spy = StepSpy()
    make_trainer(max_epochs=2, callbacks=[projection, spy]).fit(model, loader())
    steps = 16
    assert len(spy.records) == steps
    for t, record in enumerate(spy.records, start=1):
        c = annealed_radius(0.01, 1.0, t, 0.5 * steps)
        assert record["layers.0"] <= c * (1 + F32_TOL) and record["layers.2"] <= c * (1 + F32_TOL)
        assert record["scale"] == pytest.approx(c**-2, rel=1e-6)
    assert projection.radii == {"net.layers.0": 0.01, "net.layers.2": 0.01}
    assert float(model.net.layers[4].output_scale) == pytest.approx(1e4)


def reference_gradients(model: SupervisedModule, output_scale: float) -> nn.Module:
    """A copy of ``model.net`` at its current weights, with the gradients of one full batch of ``loader``."""
    net = copy.deepcopy(model.net)
    net.layers[4].output_scale.fill_(output_scale)
    x, y = next(iter(loader(batch_size=64)))
    F.cross_entropy(net(x), y).backward()
    return net


def test_radius_aware_runs_the_optimizer_on_the_normalized_weights():
    """With SGD and no projection in the way, one step moves W by lr * s**2 * dL/dW, and a bias of the d-th
    projected layer by lr * (s**d)**2 * dL/db, s = c / start_radius: SGD on W / s (and on b / s**d) at rate lr."""
    seed_everything(0)
    lr, c, start = 0.05, 4.0, 16.0  # c above every neuron's norm: the projection leaves the step as it is
    s = c / start
    model = mlp_module(lr=lr)
    old = reference_gradients(model, s**-2).layers
    assert max(float(l1inf_norm(old[i])) for i in (0, 2)) < c
    projection = L1InfProjection(radius=c, mode="radius_aware", anneal=0.0, start_radius=start)
    make_trainer(max_steps=1, callbacks=[projection]).fit(model, loader(batch_size=64))
    layers = model.net.layers
    for index, depth in ((0, 1), (2, 2)):
        expected_weight = old[index].weight - lr * s**2 * old[index].weight.grad
        expected_bias = old[index].bias - lr * s ** (2 * depth) * old[index].bias.grad
        torch.testing.assert_close(layers[index].weight, expected_weight)
        torch.testing.assert_close(layers[index].bias, expected_bias)
    # The output layer is trained as the optimizer sees it (its gradient already carries the output scale).
    torch.testing.assert_close(layers[4].weight, old[4].weight - lr * old[4].weight.grad)
    assert float(layers[4].output_scale) == s**-2


def test_a_radius_at_or_above_start_radius_is_trained_by_algorithm_1_unscaled():
    seed_everything(0)
    model = mlp_module(lr=0.05)
    exact = copy.deepcopy(model)
    make_trainer(max_epochs=1, callbacks=[L1InfProjection(radius=2.0, mode="radius_aware")]).fit(model, loader())
    make_trainer(max_epochs=1, callbacks=[L1InfProjection(radius=2.0)]).fit(exact, loader())
    for a, b in zip(model.parameters(), exact.parameters(), strict=True):
        assert torch.equal(a, b)
    assert float(model.net.layers[4].output_scale) == 1.0


def test_radius_aware_with_adam_moves_weights_by_c_times_the_plain_step():
    """Adam's first step is lr * g / (|g| + eps), about lr * sign(g) whatever the scale of g: the radius-aware
    step is c times that."""
    seed_everything(0)
    lr, c = 1e-3, 0.25
    model = mlp_module("adam", lr)
    with torch.no_grad():  # inside the c ball, so the projection does not move them
        for layer in (model.net.layers[0], model.net.layers[2]):
            layer.weight.mul_(c / 8)
            layer.bias.zero_()
    old = reference_gradients(model, c**-2).layers
    projection = L1InfProjection(radius=c, mode="radius_aware", anneal=0.0)
    make_trainer(max_steps=1, callbacks=[projection]).fit(model, loader(batch_size=64))
    grad = old[0].weight.grad
    clear = grad.abs() > 1e-4  # where eps = 1e-8 is negligible
    assert clear.sum() >= 10
    step = model.net.layers[0].weight - old[0].weight
    torch.testing.assert_close(step[clear], -c * lr * grad[clear].sign(), rtol=1e-3, atol=0)


def test_radius_aware_without_a_scaled_output_warns_how_to_add_one():
    seed_everything(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))
    model = SupervisedModule(net)
    with pytest.warns(UserWarning, match="ScaledLinear"):
        make_trainer(max_steps=1, callbacks=[L1InfProjection(radius=0.1, mode="radius_aware")]).fit(model, loader())


def test_resumed_radius_aware_run_goes_on_with_the_annealed_radius(tmp_path):
    seed_everything(0)
    model = mlp_module()
    projection = L1InfProjection(radius=0.01, mode="radius_aware", anneal=0.5)
    trainer = make_trainer(max_epochs=1, callbacks=[projection], enable_checkpointing=True, default_root_dir=tmp_path)
    trainer.fit(model, loader())
    checkpoint = tmp_path / "one.ckpt"
    trainer.save_checkpoint(checkpoint)
    scale_after_one_epoch = float(model.net.layers[4].output_scale)

    resumed_projection = L1InfProjection(radius=0.01, mode="radius_aware", anneal=0.5)
    resumed = mlp_module()
    spy = StepSpy()
    make_trainer(max_epochs=2, callbacks=[resumed_projection, spy]).fit(resumed, loader(), ckpt_path=checkpoint)
    # 8 steps were done; the 9th projects onto c(9) of a 16-step run annealed over 8: the target radius.
    assert resumed_projection.num_projections == 16
    assert scale_after_one_epoch == pytest.approx(annealed_radius(0.01, 1.0, 8, 8) ** -2)
    assert spy.records[0]["scale"] == pytest.approx(1e4)


# --------------------------------------------------------------------------------------------------------------
# The exact mode is Algorithm 1, bit for bit
# --------------------------------------------------------------------------------------------------------------


def test_exact_mode_with_the_scaled_output_layer_trains_bit_for_bit_like_a_plain_linear_output():
    seed_everything(0)
    model = mlp_module("adam", 1e-2, output_bias=True)
    plain = copy.deepcopy(model)
    old = plain.net.layers[4]
    plain.net.layers[4] = nn.Linear(old.in_features, old.out_features)
    plain.net.layers[4].load_state_dict({"weight": old.weight, "bias": old.bias})
    plain.affine_layers[-1] = plain.net.layers[4]
    for module in (model, plain):
        seed_everything(1)
        make_trainer(max_epochs=2, callbacks=[L1InfProjection(radius=0.3)]).fit(module, loader())
    for (name, a), (_, b) in zip(model.net.named_parameters(), plain.net.named_parameters(), strict=True):
        assert torch.equal(a, b), name
    assert float(model.net.layers[4].output_scale) == 1.0


def test_monitor_bounds_use_the_radius_in_force_and_the_effective_output():
    from l1inf_lightning import SparsityMonitor

    seed_everything(0)
    model = mlp_module()
    monitor = SparsityMonitor(image_every_n_epochs=0, gap_samples=0)
    projection = L1InfProjection(radius=0.1, mode="radius_aware", anneal=1.0)
    make_trainer(max_epochs=1, callbacks=[projection, monitor]).fit(model, loader())
    c_now = annealed_radius(0.1, 1.0, 8, 8)
    assert monitor.last_metrics["bound/c"] == pytest.approx(
        c_now * max(1.0, float(loader().dataset.tensors[0].abs().max()))
    )
    measure = measure_network(model.net)
    raw = float(model.net.layers[4].weight.abs().sum(dim=1).max())
    assert max(measure.output_column_l1) == pytest.approx(raw * c_now**-2, rel=1e-5)
