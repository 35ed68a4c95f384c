import pytest
import torch
from torch import nn

from l1inf_lightning.functional import bounds
from l1inf_lightning.functional.activations import ACTIVATIONS, activation_name, check_activation
from l1inf_lightning.functional.network import measure_network
from l1inf_lightning.models import MLP


@pytest.mark.parametrize(
    ("name", "module", "reference", "gamma"),
    [
        ("relu", nn.ReLU, torch.relu, 1.0),
        ("tanh", nn.Tanh, torch.tanh, 1.0),
        ("sigmoid", nn.Sigmoid, torch.sigmoid, 0.25),
    ],
)
def test_one_table_builds_reads_back_and_bounds_every_activation(name, module, reference, gamma):
    assert ACTIVATIONS[name] == (module, gamma)
    net = MLP(3, [4], 2, activation=name)
    built = [m for m in net.modules() if not isinstance(m, (nn.Linear, nn.Sequential, MLP))]
    assert [type(m) for m in built] == [module]
    x = torch.linspace(-3, 3, 13)
    assert torch.equal(built[0](x), reference(x))
    assert activation_name(built[0]) == name
    assert measure_network(net).activation == name
    assert bounds.lipschitz_constant(name) == gamma


def test_the_lipschitz_constant_bounds_the_slope_of_the_module():
    # An independent check of gamma: the largest finite-difference slope on a fine grid, never above the table's.
    x = torch.linspace(-6, 6, 20001, dtype=torch.float64)
    for entry in ACTIVATIONS.values():
        y = entry.module()(x)
        slope = float(((y[1:] - y[:-1]) / (x[1:] - x[:-1])).abs().max())
        assert slope <= entry.lipschitz * (1 + 1e-9)
        assert slope >= entry.lipschitz * 0.999  # and it is tight


@pytest.mark.parametrize("spelling", ["ReLU", "TANH", "sigmoid"])
def test_names_are_case_insensitive_everywhere(spelling):
    assert check_activation(spelling) == spelling.lower()
    assert MLP(3, [4], 2, activation=spelling).activation == spelling.lower()
    assert bounds.lipschitz_constant(spelling) == ACTIVATIONS[spelling.lower()].lipschitz


@pytest.mark.parametrize("bad", ["gelu", "", None, 1])
def test_unknown_activations_are_refused_with_one_message(bad):
    message = f"^Expected `activation` to be one of 'relu', 'sigmoid', 'tanh', got {bad!r}$"
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_activation(bad)


def test_a_subclass_is_not_taken_for_the_activation():
    class LeakyTanh(nn.Tanh):
        def forward(self, x):
            return super().forward(x) + 0.01 * x

    assert activation_name(LeakyTanh()) is None
    assert activation_name(nn.GELU()) is None
