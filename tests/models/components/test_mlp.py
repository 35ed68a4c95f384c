import pytest
import torch
from torch import nn

from l1inf_lightning.models.components import MLP


def test_paper_architecture_layers_in_order_with_output_last():
    net = MLP(500, [100, 50, 20], 2)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(500, 100), (100, 50), (50, 20), (20, 2)]
    assert net(torch.randn(7, 500)).shape == (7, 2)


@pytest.mark.parametrize(("activation", "kind"), [("relu", nn.ReLU), ("tanh", nn.Tanh), ("sigmoid", nn.Sigmoid)])
def test_activation_and_dropout_are_placed_after_every_hidden_layer(activation, kind):
    net = MLP(4, [8, 6], 3, activation=activation, dropout=0.5)
    assert sum(isinstance(m, kind) for m in net.modules()) == 2
    assert sum(isinstance(m, nn.Dropout) for m in net.modules()) == 2
    assert not isinstance(net.layers[-1], (kind, nn.Dropout))


def test_no_hidden_layer_is_a_linear_model_and_inputs_are_flattened():
    net = MLP(12, [], 1)
    assert isinstance(net.layers[0], nn.Linear) and len(net.layers) == 1
    assert net(torch.randn(5, 3, 4)).shape == (5, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"in_features": 0}, r"positive integers.*in_features=0"),
        ({"hidden": [10, -1]}, r"positive integers.*hidden=\[10, -1\]"),
        ({"activation": "gelu"}, r"`activation`.*'relu'.*got 'gelu'"),
        ({"dropout": 1.0}, r"`dropout` to be in \[0, 1\), got 1.0"),
    ],
)
def test_bad_arguments_name_the_argument_and_value(kwargs, match):
    args = {"in_features": 4, "hidden": [3], "out_features": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        MLP(**args)
