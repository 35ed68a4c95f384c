import pytest
import torch
import torch.nn.functional as F
from torch import nn

from l1inf_lightning.functional import bounds
from l1inf_lightning.functional.network import affine_layers, measure_network
from l1inf_lightning.models import MLP, SupervisedModule


def row_l1(layer: nn.Module) -> list[float]:
    """|b_j| + ||w_j||_1 for every neuron j, summed by hand in float64 (the reference)."""
    weight = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
    out = []
    for j in range(weight.shape[0]):
        total = sum(abs(float(v)) for v in weight[j])
        if layer.bias is not None:
            total += abs(float(layer.bias.detach()[j]))
        out.append(total)
    return out


def test_paper_mlp_structure():
    torch.manual_seed(0)
    net = MLP(500, [100, 50, 20], 2)
    measure = measure_network(net)
    assert measure.k == 3
    assert (measure.m1, measure.m2) == (500, 2)
    assert measure.activation == "relu"
    assert measure.architecture == "500-100-50-20-2"
    assert measure.widths == (500, 100, 50, 20, 2)
    assert measure.hidden == ["layers.0", "layers.2", "layers.4"]
    assert measure.output == "layers.6"
    assert measure.outside_reason is None and measure.in_theorem_class


def test_output_column_l1_and_layer_norms_equal_a_hand_computation():
    torch.manual_seed(0)
    net = MLP(12, [7, 5], 3)
    with torch.no_grad():
        net.layers[-1].bias.copy_(torch.tensor([-2.0, 0.5, 0.0]))  # signs must not cancel
    measure = measure_network(net)
    assert measure.output_column_l1 == pytest.approx(row_l1(net.layers[-1]), rel=1e-6)
    assert set(measure.layer_norms) == {"layers.0", "layers.2", "layers.4"}
    for name, layer in affine_layers(net):
        assert measure.layer_norms[name] == pytest.approx(max(row_l1(layer)), rel=1e-6), name


def test_layer_without_bias_counts_the_weights_alone():
    net = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2, bias=False))
    with torch.no_grad():
        net[2].weight.copy_(torch.tensor([[1.0, -2.0, 0.0, 0.5], [0.0, 0.0, -1.0, 0.0]]))
    assert measure_network(net).output_column_l1 == [3.5, 1.0]


@pytest.mark.parametrize(("activation", "gamma"), [("relu", 1.0), ("tanh", 1.0), ("sigmoid", 0.25)])
def test_activation_is_read_off_the_modules(activation, gamma):
    measure = measure_network(MLP(6, [5, 4], 3, activation=activation))
    assert measure.activation == activation
    assert measure.in_theorem_class
    assert bounds.lipschitz_constant(measure.activation) == gamma


def test_dropout_flatten_and_identity_are_transparent():
    net = nn.Sequential(nn.Flatten(), nn.Linear(6, 5), nn.Tanh(), nn.Dropout(0.5), nn.Identity(), nn.Linear(5, 2))
    measure = measure_network(net)
    assert measure.in_theorem_class and measure.activation == "tanh" and measure.k == 1


def test_lightning_module_is_measured_through_its_net_and_its_metrics_are_ignored():
    measure = measure_network(SupervisedModule(MLP(6, [5], 2)))
    assert measure.hidden == ["net.layers.0"] and measure.output == "net.layers.2"
    assert measure.in_theorem_class


def test_empty_containers_are_not_layers():
    # A regression SupervisedModule holds an empty ModuleDict of prediction counts: a leaf with nothing in it.
    measure = measure_network(SupervisedModule(MLP(6, [5], 1), task="regression"))
    assert measure.in_theorem_class, measure.outside_reason
    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.ModuleList(), nn.Sequential(), nn.Linear(5, 2))
    assert measure_network(net).in_theorem_class

    class Doubling(nn.Sequential):  # a subclass with a forward of its own is a layer, empty or not
        def forward(self, x):
            return 2 * x

    net = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), Doubling(), nn.Linear(5, 2))
    assert not measure_network(net).in_theorem_class


def test_mixed_activations_are_outside():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 8), nn.Tanh(), nn.Linear(8, 2))
    measure = measure_network(net)
    assert not measure.in_theorem_class
    assert measure.activation is None
    assert "mixes activations" in measure.outside_reason
    assert "relu" in measure.outside_reason and "tanh" in measure.outside_reason


def test_conv_net_is_outside_and_the_reason_names_the_conv_layer():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(64, 2))
    measure = measure_network(net)
    assert not measure.in_theorem_class
    assert "'0'" in measure.outside_reason and "Conv2d" in measure.outside_reason
    assert measure.hidden == ["0"] and measure.output == "3"
    assert measure.m1 == 9  # one output channel's fan-in: 1 x 3 x 3


@pytest.mark.parametrize(
    ("layer", "name"),
    [(nn.BatchNorm1d(8), "BatchNorm1d"), (nn.LayerNorm(8), "LayerNorm"), (nn.MaxPool1d(1), "MaxPool1d")],
)
def test_normalization_and_pooling_are_outside(layer, name):
    net = nn.Sequential(nn.Linear(4, 8), layer, nn.ReLU(), nn.Linear(8, 2))
    measure = measure_network(net)
    assert not measure.in_theorem_class
    assert "'1'" in measure.outside_reason and name in measure.outside_reason
    assert measure.activation == "relu"


class FunctionalNet(nn.Module):
    """Calls its activation as a function: no activation module to find."""

    def __init__(self) -> None:
        super().__init__()
        self.hidden = nn.Linear(4, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        return self.out(F.relu(self.hidden(x)))


def test_functional_activation_needs_to_be_given():
    measure = measure_network(FunctionalNet())
    assert not measure.in_theorem_class
    assert "pass `activation`" in measure.outside_reason
    measure = measure_network(FunctionalNet(), activation="relu")
    assert measure.in_theorem_class
    assert measure.activation == "relu" and measure.hidden == ["hidden"] and measure.output == "out"


def test_unknown_activation_name_raises():
    with pytest.raises(ValueError, match=r"`activation` to be one of 'relu', 'sigmoid', 'tanh', got 'gelu'"):
        measure_network(FunctionalNet(), activation="gelu")


def test_module_without_affine_layer_raises():
    with pytest.raises(ValueError, match=r"nn.Linear or nn.Conv layer, got Sequential"):
        measure_network(nn.Sequential(nn.ReLU(), nn.Tanh()))


def test_widths_that_do_not_chain_are_outside():
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(6, 2))
    measure = measure_network(net)
    assert not measure.in_theorem_class
    assert "'0'" in measure.outside_reason and "'2'" in measure.outside_reason
    assert "(8 -> 6)" in measure.outside_reason
