"""Tests for the per-neuron views and norms of Linear and Conv layers, against by-hand layouts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from l1inf_lightning.functional import (
    check_affine,
    compute_dtype,
    dead_neurons,
    is_affine,
    l1inf_norm,
    load_neuron_vectors_,
    neuron_l1_norms,
    neuron_vectors,
    sparsity_rate,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]

LAYERS = {
    "linear": lambda: nn.Linear(7, 5),
    "linear-no-bias": lambda: nn.Linear(7, 5, bias=False),
    "conv1d": lambda: nn.Conv1d(3, 4, 5),
    "conv1d-no-bias": lambda: nn.Conv1d(3, 4, 5, bias=False),
    "conv2d": lambda: nn.Conv2d(3, 4, (3, 2)),
    "conv2d-grouped": lambda: nn.Conv2d(4, 6, 3, groups=2),
    "conv2d-grouped-no-bias": lambda: nn.Conv2d(4, 6, 3, groups=2, bias=False),
    "conv3d": lambda: nn.Conv3d(2, 3, 2),
    "conv3d-no-bias": lambda: nn.Conv3d(2, 3, (1, 2, 3), bias=False),
}
NON_AFFINE = [
    nn.ReLU(),
    nn.BatchNorm2d(3),
    nn.ConvTranspose2d(2, 2, 3),
    nn.Embedding(4, 3),
    nn.Sequential(nn.Linear(2, 2)),
]


def make_layer(name: str, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = LAYERS[name]()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_()
    return layer.to(device=device, dtype=dtype)


def neuron_by_hand(layer: nn.Module, j: int) -> list[float]:
    """``[bias[j], weight[j].flatten()]`` read element by element, in float64."""
    weights = layer.weight.detach()[j].flatten().tolist()
    return weights if layer.bias is None else [float(layer.bias.detach()[j]), *weights]


def fan_in(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.in_features
    return layer.in_channels // layer.groups * int(torch.tensor(layer.kernel_size).prod())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_neuron_vectors_layout(name: str, dtype: torch.dtype, device: str) -> None:
    layer = make_layer(name, dtype, device)
    vectors = neuron_vectors(layer)
    out_features = layer.weight.shape[0]
    assert vectors.shape == (out_features, fan_in(layer) + (layer.bias is not None))
    # Half precision is upcast (exactly) to float32; other dtypes are kept.
    assert vectors.dtype == (torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype)
    assert vectors.device == layer.weight.device
    assert not vectors.requires_grad
    for j in range(out_features):
        assert vectors[j].tolist() == neuron_by_hand(layer, j)


def test_neuron_vectors_of_a_linear_layer_by_hand() -> None:
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
        layer.bias.copy_(torch.tensor([-1.0, -2.0]))
    assert neuron_vectors(layer).tolist() == [[-1.0, 1.0, 2.0, 3.0], [-2.0, 4.0, 5.0, 6.0]]


def test_neuron_vectors_of_a_grouped_conv_by_hand() -> None:
    # Output channel j of a grouped conv sees only its group's inputs: weight[j] is (in / groups, *kernel).
    layer = nn.Conv1d(4, 2, kernel_size=2, groups=2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.arange(8.0).reshape(2, 2, 2))
    assert neuron_vectors(layer).tolist() == [[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]]


@pytest.mark.parametrize("name", ["linear", "linear-no-bias", "conv2d-grouped-no-bias"])
def test_neuron_vectors_is_a_copy(name: str) -> None:
    layer = make_layer(name)
    before = [parameter.detach().clone() for parameter in layer.parameters()]
    neuron_vectors(layer).add_(1.0)
    for parameter, value in zip(layer.parameters(), before, strict=True):
        assert torch.equal(parameter, value)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_load_neuron_vectors_writes_bias_then_weights(name: str, dtype: torch.dtype, device: str) -> None:
    layer = make_layer(name, dtype, device)
    parameters = list(layer.parameters())
    pointers = [parameter.data_ptr() for parameter in parameters]
    rows, cols = neuron_vectors(layer).shape
    values = torch.arange(rows * cols, dtype=torch.float32, device=device).reshape(rows, cols)  # exact in half

    assert load_neuron_vectors_(layer, values) is layer
    offset = 0
    if layer.bias is not None:
        assert torch.equal(layer.bias, values[:, 0].to(dtype))
        offset = 1
    assert torch.equal(layer.weight, values[:, offset:].reshape(layer.weight.shape).to(dtype))
    assert torch.equal(neuron_vectors(layer), values.to(neuron_vectors(layer).dtype))
    assert all(a is b for a, b in zip(layer.parameters(), parameters, strict=True))
    assert [parameter.data_ptr() for parameter in layer.parameters()] == pointers
    assert all(parameter.dtype == dtype for parameter in layer.parameters())


@pytest.mark.parametrize("name", LAYERS)
def test_load_neuron_vectors_round_trips(name: str) -> None:
    layer = make_layer(name)
    before = [parameter.detach().clone() for parameter in layer.parameters()]
    load_neuron_vectors_(layer, neuron_vectors(layer))
    for parameter, value in zip(layer.parameters(), before, strict=True):
        assert torch.equal(parameter, value)


@pytest.mark.parametrize("shape", [(5, 7), (5, 9), (4, 8), (5,)], ids=str)
def test_load_neuron_vectors_rejects_wrong_shape(shape: tuple[int, ...]) -> None:
    layer = nn.Linear(7, 5)  # neuron vectors are (5, 8)
    with pytest.raises(ValueError, match=r"Expected `vectors` of shape \(5, 8\)"):
        load_neuron_vectors_(layer, torch.zeros(shape))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_l1_norms_by_hand(name: str, dtype: torch.dtype, device: str) -> None:
    layer = make_layer(name, dtype, device)
    by_hand = [sum(abs(x) for x in neuron_by_hand(layer, j)) for j in range(layer.weight.shape[0])]
    norms = neuron_l1_norms(layer)
    assert norms.dtype == (torch.float32 if dtype in (torch.bfloat16, torch.float16) else dtype)
    assert norms.shape == (layer.weight.shape[0],)
    expected = torch.tensor(by_hand, dtype=torch.float64)
    torch.testing.assert_close(norms.cpu().double(), expected, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(l1inf_norm(layer).cpu().double(), expected.max(), rtol=1e-6, atol=0.0)
    assert l1inf_norm(layer).ndim == 0


def test_l1inf_norm_counts_the_bias() -> None:
    layer = nn.Linear(2, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -1.0], [0.5, 0.5], [0.0, -3.0]]))
        layer.bias.copy_(torch.tensor([-4.0, 0.0, 0.5]))
    assert neuron_l1_norms(layer).tolist() == [6.0, 1.0, 3.5]
    assert float(l1inf_norm(layer)) == 6.0  # the bias decides: without it the max would be 3


def test_l1_norms_in_half_precision_do_not_overflow() -> None:
    layer = nn.Linear(4, 1, bias=False).half()
    with torch.no_grad():
        layer.weight.fill_(60000.0)  # each entry fits float16 (max 65504); their sum does not
    assert float(l1inf_norm(layer)) == 240000.0


def sparsity_by_hand(model: nn.Module) -> float:
    weights = [m.weight for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def test_sparsity_rate_counts_weights_of_every_affine_layer_but_not_biases() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 2), nn.ReLU(), nn.Flatten(), nn.Linear(8, 3), nn.BatchNorm1d(3))
    with torch.no_grad():
        model[0].weight.zero_()  # 8 zeros
        model[0].bias.zero_()  # biases are not counted
        model[3].weight.fill_(1.0)
        model[3].weight[0, :4] = 0.0  # 4 zeros
        model[4].weight.zero_()  # not an affine layer
    rate = sparsity_rate(model)
    assert rate.ndim == 0
    assert float(rate) == pytest.approx(12 / 32)
    assert float(rate) == pytest.approx(sparsity_by_hand(model))


def test_sparsity_rate_of_one_layer_is_that_layers_exact_ratio_in_float64() -> None:
    layer = nn.Linear(3000, 1000, bias=False)
    with torch.no_grad():
        layer.weight.fill_(1.0)
        layer.weight.view(-1)[:1_234_567] = 0.0
    rate = sparsity_rate(layer)
    assert rate.dtype == torch.float64
    assert float(rate) == 1_234_567 / 3_000_000  # the ratio rounded once, as Python divides two ints


@pytest.mark.parametrize("name", LAYERS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_dead_neurons_counts_neurons_whose_weights_are_all_zero(name: str, dtype: torch.dtype) -> None:
    layer = make_layer(name, dtype)
    with torch.no_grad():
        layer.weight[0].zero_()  # dead, even if its bias is not zero
        layer.weight[2].zero_()
        layer.weight[1].zero_()
        layer.weight[1].view(-1)[-1] = 1.0  # one live weight keeps neuron 1 alive
    dead = [j for j in range(layer.weight.shape[0]) if all(w == 0 for w in layer.weight[j].flatten().tolist())]
    assert dead == [0, 2]
    assert int(dead_neurons(layer)) == 2


def test_dead_neurons_needs_an_affine_layer() -> None:
    with pytest.raises(TypeError, match=r"Expected an affine layer"):
        dead_neurons(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize(
    ("dtype", "expected"),
    [
        (torch.float16, torch.float32),
        (torch.bfloat16, torch.float32),
        (torch.float32, torch.float32),
        (torch.float64, torch.float64),
    ],
)
def test_one_half_precision_rule_for_rows_and_norms(dtype: torch.dtype, expected: torch.dtype) -> None:
    layer = nn.Linear(3, 2).to(dtype)
    assert compute_dtype(dtype) == expected
    assert neuron_vectors(layer).dtype == expected
    assert neuron_l1_norms(layer).dtype == expected


def test_sparsity_rate_without_affine_layers_raises() -> None:
    with pytest.raises(ValueError, match=r"`module` to contain an nn.Linear or nn.Conv layer"):
        sparsity_rate(nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3)))


@pytest.mark.parametrize("name", LAYERS)
def test_affine_layers_are_recognized(name: str) -> None:
    layer = make_layer(name)
    assert is_affine(layer)
    check_affine(layer)


@pytest.mark.parametrize("module", NON_AFFINE, ids=lambda module: type(module).__name__)
@pytest.mark.parametrize("function", [check_affine, neuron_vectors, neuron_l1_norms, l1inf_norm])
def test_non_affine_modules_raise_type_error(module: nn.Module, function: object) -> None:
    assert not is_affine(module)
    with pytest.raises(TypeError, match=rf"Expected an affine layer .*, got {type(module).__name__}"):
        function(module)  # type: ignore[operator]


@pytest.mark.parametrize("module", NON_AFFINE, ids=lambda module: type(module).__name__)
def test_load_into_non_affine_module_raises_type_error(module: nn.Module) -> None:
    with pytest.raises(TypeError, match=r"Expected an affine layer"):
        load_neuron_vectors_(module, torch.zeros(2, 2))
