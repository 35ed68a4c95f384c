"""Tests for ``ModuleProjector`` (a layer projected step after step) and the kernel's warm start."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from l1inf_lightning.functional import (
    ModuleProjector,
    l1inf_norm,
    neuron_vectors,
    project_module_,
    projection_backend,
)
from l1inf_lightning.functional.layer_projection import project_compiled_layers_

numba_only = pytest.mark.skipif(projection_backend(torch.ones(1, 1)) != "numba", reason="needs numba")
LAYERS = {
    "linear": lambda: nn.Linear(40, 12),
    "linear-no-bias": lambda: nn.Linear(40, 12, bias=False),
    "conv2d": lambda: nn.Conv2d(3, 6, 3),
}


def make_layer(name: str, dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return LAYERS[name]().to(dtype)


def inside_exactly(layer: nn.Module, radius: float) -> bool:
    """Whether every stored neuron's exact L1 norm (sum of its stored values as fractions) is at most ``radius``."""
    rows = neuron_vectors(layer).double().abs().tolist()
    return all(sum(map(Fraction, row)) <= Fraction(radius) for row in rows)


def bits_equal(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def sgd_like_step_(layer: nn.Module, generator: torch.Generator, size: float) -> None:
    """What an optimizer step does to a projected layer: every entry moves a little, zeros included."""
    with torch.no_grad():
        for param in layer.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float64)
            param.add_((size * noise).to(param.dtype))


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_a_projector_step_after_step_writes_what_project_module_writes(name: str, dtype: torch.dtype) -> None:
    # The projector keeps each neuron's threshold and starts the next projection from it (on the numba path); a
    # fresh project_module_ starts cold. Same bits at every step, as the training loop would take them.
    stepped, fresh = make_layer(name, dtype), make_layer(name, dtype)
    projector = ModuleProjector(stepped)
    generator = torch.Generator().manual_seed(1)
    radius = 0.3 * float(neuron_vectors(stepped).float().abs().sum(dim=1).median())
    for _ in range(25):
        projector.project_(radius)
        project_module_(fresh, radius)
        assert bits_equal(stepped, fresh)
        assert inside_exactly(stepped, radius)
        sgd_like_step_(stepped, generator, 0.01)
        fresh.load_state_dict(stepped.state_dict())


@numba_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_kernel_from_any_start_writes_the_cold_starts_bits(dtype: type) -> None:
    # Michelot's step from any threshold with an entry above it lands at or below theta*, so a start above, below,
    # at or beyond every entry, or from another row's threshold, changes the passes taken, not the result.
    from l1inf_lightning.functional import _projection_numba as kernel

    rng = np.random.default_rng(3)
    rows, fan_in = 64, 300
    sparse = rng.standard_normal((rows, fan_in)) * (rng.random((rows, fan_in)) < 0.2)
    for weight in (rng.standard_normal((rows, fan_in)), sparse + 1e-3 * rng.standard_normal((rows, fan_in))):
        weight = weight.astype(dtype)
        bias = rng.standard_normal(rows).astype(dtype)
        radius = np.array([0.25 * float(np.median(np.abs(weight).sum(axis=1)))])
        cold_bias, cold_weight = bias.copy(), weight.copy()
        thetas = np.zeros(rows)
        kernel.project_rows(cold_bias, cold_weight, True, radius, thetas)
        largest = np.abs(np.concatenate([bias[:, None], weight], axis=1)).max(axis=1)
        starts = [
            thetas * (1 + 1e-9),
            thetas * (1 - 1e-9),
            thetas * 0.5,
            thetas * 1.7,
            largest,  # nothing above: a cold start
            largest * 1e3,
            rng.permutation(thetas),
            np.full(rows, 1e-300),
        ]
        for start in starts:
            warm_bias, warm_weight, warm_thetas = bias.copy(), weight.copy(), start.astype(np.float64)
            kernel.project_rows(warm_bias, warm_weight, True, radius, warm_thetas)
            assert np.array_equal(warm_weight, cold_weight) and np.array_equal(warm_bias, cold_bias)
            assert np.array_equal(warm_thetas, thetas)


@numba_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_rows_projection_does_not_depend_on_the_rows_projected_before_it(dtype: type) -> None:
    # A row with no threshold of its own starts from the previous row's: a start far above its entries, far below,
    # or after a row left inside or not finite, must give the bits of the row projected alone (from 0).
    from l1inf_lightning.functional import _projection_numba as kernel

    rng = np.random.default_rng(11)
    rows, fan_in = 40, 120
    scales = 10.0 ** rng.uniform(-3, 3, rows)
    weight = (rng.standard_normal((rows, fan_in)) * (rng.random((rows, fan_in)) < 0.6) * scales[:, None]).astype(dtype)
    bias = (rng.standard_normal(rows) * scales).astype(dtype)
    weight[5], bias[5] = 0.0, 0.0  # inside
    weight[9, 3] = np.nan  # left as it is
    radius = np.array([0.2 * float(np.nanmedian(np.abs(weight).sum(axis=1)))])
    alone_bias, alone_weight = bias.copy(), weight.copy()
    for j in range(rows):
        kernel.project_rows(alone_bias[j : j + 1], alone_weight[j : j + 1], True, radius, np.zeros(0))
    inside = np.abs(weight).sum(axis=1) + np.abs(bias) <= radius[0]
    assert 0 < inside.sum() < rows - 5  # rows inside and outside, so the starts vary
    for thetas in (np.zeros(0), np.zeros(rows)):
        together_bias, together_weight = bias.copy(), weight.copy()
        assert kernel.project_rows(together_bias, together_weight, True, radius, thetas) == 1
        assert np.array_equal(together_weight, alone_weight, equal_nan=True)
        assert np.array_equal(together_bias, alone_bias)


@numba_only
@settings(max_examples=100, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    fan_in=st.integers(1, 60),
    density=st.floats(0.05, 1.0),
    fraction=st.floats(0.01, 0.99),
    start_scale=st.floats(0.0, 4.0),
)
def test_warm_and_cold_starts_agree_on_random_rows(
    seed: int, fan_in: int, density: float, fraction: float, start_scale: float
) -> None:
    from l1inf_lightning.functional import _projection_numba as kernel

    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((8, fan_in)) * (rng.random((8, fan_in)) < density)).astype(np.float32)
    bias = rng.standard_normal(8).astype(np.float32)
    norms = np.abs(weight).sum(axis=1) + np.abs(bias)
    radius = np.array([max(fraction * float(norms.max()), 1e-6)])
    cold_bias, cold_weight, thetas = bias.copy(), weight.copy(), np.zeros(8)
    kernel.project_rows(cold_bias, cold_weight, True, radius, thetas)
    starts = start_scale * np.abs(rng.standard_normal(8)) * max(float(thetas.max()), 1e-3)
    kernel.project_rows(bias, weight, True, radius, starts)
    assert np.array_equal(weight, cold_weight) and np.array_equal(bias, cold_bias)


@numba_only
def test_the_kernel_keeps_each_projected_rows_threshold_and_leaves_inside_rows_entry() -> None:
    from l1inf_lightning.functional import _projection_numba as kernel

    rng = np.random.default_rng(5)
    weight = rng.standard_normal((6, 50))
    weight[:2] *= 1e-3  # inside the ball
    original = weight.copy()
    thetas = np.full(6, 0.125)
    kernel.project_rows(np.empty(0), weight, False, np.array([5.0]), thetas)
    assert np.array_equal(thetas[:2], [0.125, 0.125]) and np.array_equal(weight[:2], original[:2])
    for row, theta in zip(original[2:], thetas[2:], strict=True):
        # theta* solves sum (|v| - theta)_+ = c; the sorted formula, in float64.
        mu = np.sort(np.abs(row))[::-1]
        expected = max((np.cumsum(mu) - 5.0) / np.arange(1, mu.size + 1))
        assert theta == pytest.approx(expected, rel=1e-12)


@numba_only
def test_a_projector_follows_parameters_that_are_replaced() -> None:
    layer = nn.Linear(30, 8)
    projector = ModuleProjector(layer)
    projector.project_(0.5)
    # A new Parameter object, a new storage of another dtype, a module moved to float64, a half-precision module:
    # each projection writes the parameters as they are then.
    changes = [
        lambda: setattr(layer, "weight", nn.Parameter(torch.randn(8, 30))),
        lambda: setattr(layer.bias, "data", 3 * torch.randn(8)),
        lambda: layer.to(torch.float64),
        lambda: setattr(layer.weight, "data", torch.randn(8, 30, dtype=torch.float64).t().contiguous().t()),
        lambda: layer.half(),
    ]
    for change in changes:
        with torch.no_grad():
            change()
            for param in layer.parameters():
                param.mul_(4)
        assert float(l1inf_norm(layer)) > 0.5
        projector.project_(0.5)
        assert inside_exactly(layer, 0.5), change
    assert layer.weight.dtype == torch.float16


def test_a_projector_checks_finiteness_of_weight_and_bias() -> None:
    layer = nn.Linear(5, 3)
    projector = ModuleProjector(layer)
    assert projector.all_finite()
    with torch.no_grad():
        layer.bias[1] = math.inf
    assert not projector.all_finite()
    with torch.no_grad():
        layer.bias[1] = 0.0
        layer.weight[2, 4] = math.nan
    assert not projector.all_finite()


@numba_only
def test_compiled_layers_are_all_checked_then_projected_as_each_projector_would() -> None:
    layers = [make_layer("linear", seed=1), make_layer("conv2d", seed=2), make_layer("linear-no-bias", seed=3)]
    alone = [make_layer("linear", seed=1), make_layer("conv2d", seed=2), make_layer("linear-no-bias", seed=3)]
    projectors, singles = [ModuleProjector(m) for m in layers], [ModuleProjector(m) for m in alone]
    radii = [0.2, 0.5, 0.3]
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):  # warm starts kept alike, step after step
        assert project_compiled_layers_(projectors, radii) is True
        for projector, radius in zip(singles, radii, strict=True):
            projector.project_(radius)
        assert all(bits_equal(a, b) for a, b in zip(layers, alone, strict=True))
        assert all(inside_exactly(m, r) for m, r in zip(layers, radii, strict=True))
        for a, b in zip(layers, alone, strict=True):
            sgd_like_step_(a, generator, 0.05)
            b.load_state_dict(a.state_dict())
    # A layer that is not finite: nothing written, in any layer (the first is outside its ball).
    with torch.no_grad():
        layers[2].weight[1, 3] = math.nan
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in layers]
    assert float(l1inf_norm(layers[0])) > radii[0]
    assert project_compiled_layers_(projectors, radii) is False
    for module, state in zip(layers, before, strict=True):
        for name, value in module.state_dict().items():
            torch.testing.assert_close(value, state[name], rtol=0, atol=0, equal_nan=True)
    # A layer the kernel does not take (half precision): nothing done, the caller projects another way.
    half = make_layer("linear", torch.float16)
    half_before = half.weight.clone()
    assert project_compiled_layers_([projectors[0], ModuleProjector(half)], [0.2, 0.2]) is None
    assert torch.equal(half.weight, half_before) and float(l1inf_norm(layers[0])) > radii[0]


def test_a_projector_rejects_bad_input_and_leaves_the_layer_alone() -> None:
    with pytest.raises(TypeError, match="Expected an affine layer"):
        ModuleProjector(nn.ReLU())
    with pytest.raises(ValueError, match="`backend`"):
        ModuleProjector(nn.Linear(2, 2), backend="cuda")
    layer = nn.Linear(4, 3)
    before = [p.detach().clone() for p in layer.parameters()]
    projector = ModuleProjector(layer)
    for radius in (-1.0, 0.0, math.nan, "wide"):
        with pytest.raises(ValueError, match="radius"):
            projector.project_(radius)
    assert all(torch.equal(p, q) for p, q in zip(layer.parameters(), before, strict=True))
    projector.project_(math.inf)
    assert all(torch.equal(p, q) for p, q in zip(layer.parameters(), before, strict=True))
    assert repr(projector) == "ModuleProjector(Linear, backend='auto')"


def test_a_projector_takes_one_radius_per_neuron() -> None:
    layer, reference = make_layer("linear"), make_layer("linear")
    radii = torch.linspace(0.1, 2.0, 12)
    ModuleProjector(layer).project_(radii)
    project_module_(reference, radii, backend="torch")
    norms = neuron_vectors(layer).double().abs().sum(dim=1)
    assert bool((norms <= radii.double()).all())
    torch.testing.assert_close(neuron_vectors(layer), neuron_vectors(reference), rtol=0, atol=1e-6)


@numba_only
def test_a_threshold_on_an_entry_may_round_an_ulp_apart_from_a_cold_start_and_stays_inside() -> None:
    # theta* = 0.2 is an entry of the row: the active sets with and without the tied entries give the same threshold
    # in exact arithmetic and round apart; warm and cold starts may end on either.
    row = [[0.4, 0.3, 0.2, 0.4, 0.1, 0.2, 0.2]]
    layer = nn.Linear(7, 1, bias=False, dtype=torch.float64)
    projector = ModuleProjector(layer)
    for _ in range(2):
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(row, dtype=torch.float64))
        projector.project_(0.5)
        assert inside_exactly(layer, 0.5)
        expected = torch.tensor([[0.2, 0.1, 0.0, 0.2, 0.0, 0.0, 0.0]], dtype=torch.float64)
        torch.testing.assert_close(layer.weight.detach(), expected, rtol=0, atol=4 * torch.finfo(torch.float64).eps)


@numba_only
def test_the_kernel_counts_rows_with_a_non_finite_entry_and_leaves_them() -> None:
    from l1inf_lightning.functional import _projection_numba as kernel

    weight = np.array([[1.0, math.nan, 2.0], [3.0, 4.0, 5.0], [1e308, 1e308, 1.0], [math.inf, 0.0, 0.0]])
    original = weight.copy()
    for radius in (1.0, math.inf):
        weight[:] = original
        # The third row's sum overflows float64 but its entries are finite: it is not counted.
        assert kernel.project_rows(np.empty(0), weight, False, np.array([radius]), np.empty(0)) == 2
        assert np.array_equal(weight[[0, 3]], original[[0, 3]], equal_nan=True)
    assert np.array_equal(weight, original, equal_nan=True)  # an infinite radius writes nothing
