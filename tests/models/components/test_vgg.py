import math

import lightning.pytorch as pl
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from l1inf_lightning import L1InfProjection
from l1inf_lightning.models.components.vgg import CFGS, VGG, vgg11, vgg13, vgg16, vgg19

ENTRY_POINTS = {"vgg11": vgg11, "vgg13": vgg13, "vgg16": vgg16, "vgg19": vgg19}
AFFINE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


def _pools(model: nn.Module) -> list[nn.MaxPool2d]:
    return [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]


@pytest.mark.parametrize("name", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32)], ids=["mnist", "cifar"])
def test_forward_backward(name, batch_norm, shape):
    torch.manual_seed(0)
    channels, size, _ = shape
    model = ENTRY_POINTS[name](batch_norm=batch_norm, in_channels=channels, image_size=size, num_classes=7)
    model.train()
    x = torch.randn(2, *shape)

    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()

    out.sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None, param_name
        assert torch.isfinite(param.grad).all(), param_name
    assert model.head.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", sorted(CFGS))
def test_layer_counts_match_config(name):
    model = ENTRY_POINTS[name]()
    convs = [item for item in CFGS[name] if item != "M"]
    assert [conv.out_channels for conv in _convs(model)] == convs
    assert len(_pools(model)) == 5
    assert model.feature_size == 1
    assert all(conv.kernel_size == (3, 3) and conv.padding == (1, 1) for conv in _convs(model))


def test_batch_norm_follows_every_conv():
    model = vgg11(batch_norm=True)
    layers = list(model.features)
    for i, layer in enumerate(layers):
        if isinstance(layer, nn.Conv2d):
            assert isinstance(layers[i + 1], nn.BatchNorm2d)
            assert layers[i + 1].num_features == layer.out_channels
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == len(_convs(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in vgg11().modules())


def test_pool_that_would_empty_the_map_is_omitted():
    # 28 -> 14 -> 7 -> 3 -> 1: the fifth pool would give 0x0 and must be dropped.
    model = vgg16(in_channels=1, image_size=28)
    assert len(_pools(model)) == 4
    assert model.feature_size == 1
    assert model.num_features == 512
    features = model.forward_features(torch.randn(1, 1, 28, 28))
    assert features.shape == (1, 512, 1, 1)

    tiny = VGG([4, "M", 4, "M", 4, "M"], in_channels=1, image_size=1, hidden_features=8)
    assert len(_pools(tiny)) == 0
    assert tiny(torch.randn(2, 1, 1, 1)).shape == (2, 10)


def test_classifier_width_follows_feature_map():
    model = VGG([8, "M", 16, "M"], in_channels=1, image_size=28, hidden_features=32)
    assert model.feature_size == 7
    assert model.num_features == 16 * 7 * 7
    assert model.pre_logits[1].in_features == 16 * 7 * 7
    assert model.pre_logits[1].out_features == 32
    assert model.pre_logits[4].in_features == 32
    assert model.head.in_features == 32


def test_forward_is_features_then_head():
    torch.manual_seed(0)
    model = VGG([8, "M", 16, "M"], in_channels=1, image_size=12, hidden_features=16).eval()
    x = torch.randn(3, 1, 12, 12)
    features = model.forward_features(x)
    assert features.shape == (3, 16, 3, 3)
    torch.testing.assert_close(model.forward_head(features), model(x))
    hidden = model.forward_head(features, pre_logits=True)
    assert hidden.shape == (3, 16)
    torch.testing.assert_close(model.head(hidden), model(x))


def test_paper_21x21_variant_keeps_spatial_size():
    model = vgg16(kernel_sizes=[21, 21])
    convs = _convs(model)
    assert convs[0].weight.shape == (64, 3, 21, 21)
    assert convs[1].weight.shape == (64, 64, 21, 21)
    assert all(conv.kernel_size == (3, 3) for conv in convs[2:])

    seen = []
    hooks = [
        conv.register_forward_hook(lambda mod, inp, out: seen.append((inp[0].shape[-2:], out.shape[-2:])))
        for conv in convs[:2]
    ]
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32))
    for hook in hooks:
        hook.remove()
    assert out.shape == (2, 10)
    assert seen == [(torch.Size([32, 32]), torch.Size([32, 32]))] * 2


def test_kernel_sizes_mapping_sets_chosen_convs():
    model = vgg11(kernel_sizes={1: 5, 7: 1}, in_channels=1, image_size=28)
    sizes = [conv.kernel_size[0] for conv in _convs(model)]
    assert sizes == [3, 5, 3, 3, 3, 3, 3, 1]
    assert [conv.padding[0] for conv in _convs(model)] == [1, 2, 1, 1, 1, 1, 1, 0]


def test_explicit_list_cfg():
    cfg = [16, "M", 32, 32, "M"]
    model = VGG(cfg, in_channels=3, image_size=32, num_classes=4, hidden_features=24)
    assert model.cfg == cfg
    assert [conv.out_channels for conv in _convs(model)] == [16, 32, 32]
    assert len(_pools(model)) == 2
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_cfg_from_yaml():
    jsonargparse = pytest.importorskip("jsonargparse")
    parser = jsonargparse.ArgumentParser()
    parser.add_class_arguments(VGG, "model")
    config = parser.parse_string(
        "model:\n  cfg: [8, M, 16, M]\n  in_channels: 1\n  image_size: 28\n  kernel_sizes: {0: 5}\n"
        "  hidden_features: 16\n"
    )
    model = VGG(**config.model.as_dict())
    assert [conv.kernel_size[0] for conv in _convs(model)] == [5, 3]
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_last_affine_module_is_output_layer():
    for batch_norm in (False, True):
        model = vgg16(batch_norm=batch_norm, num_classes=13)
        affine = [m for _, m in model.named_modules() if isinstance(m, AFFINE)]
        last = affine[-1]
        assert last is model.head
        assert isinstance(last, nn.Linear)
        assert last.out_features == 13
        assert sum(isinstance(m, nn.Linear) for m in affine) == 3


def test_weight_init():
    torch.manual_seed(0)
    model = vgg11(batch_norm=True)
    for conv in _convs(model):
        assert torch.count_nonzero(conv.bias) == 0
        fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2.0 / fan_out), rel=0.1)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
        assert torch.equal(bn.weight, torch.ones_like(bn.weight))
        assert torch.count_nonzero(bn.bias) == 0
    for linear in (m for m in model.modules() if isinstance(m, nn.Linear)):
        assert torch.count_nonzero(linear.bias) == 0
        assert linear.weight.std().item() == pytest.approx(0.01, rel=0.1)


def test_entry_points_use_their_config():
    for name, entry in ENTRY_POINTS.items():
        assert entry(image_size=1).cfg == CFGS[name]
    with pytest.raises(TypeError):
        vgg16(cfg="vgg11")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"cfg": "vgg17"}, r"`cfg`.*\['vgg11', 'vgg13', 'vgg16', 'vgg19'\].*'vgg17'"),
        ({"cfg": 16}, r"`cfg`.*got 16"),
        ({"cfg": [64, "X"]}, r"`cfg`.*'X'"),
        ({"cfg": [64, 0]}, r"`cfg`.*got 0"),
        ({"cfg": [True, "M"]}, r"`cfg`.*True"),
        ({"cfg": ["M", "M"]}, r"`cfg`.*at least one conv"),
        ({"cfg": []}, r"`cfg`.*at least one conv"),
        ({"kernel_sizes": [3, 4]}, r"`kernel_sizes`.*odd.*got 4 for conv 1"),
        ({"kernel_sizes": {0: 0}}, r"`kernel_sizes`.*odd.*got 0 for conv 0"),
        ({"kernel_sizes": {5: 3}}, r"`kernel_sizes`.*\[0, 4\].*got 5"),
        ({"kernel_sizes": [3] * 6}, r"`kernel_sizes`.*at most 5.*got 6"),
        ({"kernel_sizes": 3}, r"`kernel_sizes`.*got 3"),
        ({"in_channels": 0}, r"`in_channels`.*got 0"),
        ({"num_classes": -1}, r"`num_classes`.*got -1"),
        ({"image_size": 2.5}, r"`image_size`.*got 2.5"),
        ({"hidden_features": 0}, r"`hidden_features`.*got 0"),
        ({"dropout": 1.0}, r"`dropout`.*\[0, 1\).*got 1.0"),
        ({"dropout": -0.1}, r"`dropout`.*got -0.1"),
    ],
)
def test_bad_arguments_raise(kwargs, match):
    kwargs = {"cfg": [8, "M", 8, 8, "M", 8, 8], "image_size": 8, "hidden_features": 8, **kwargs}
    with pytest.raises(ValueError, match=match):
        VGG(**kwargs)


class _ImageClassifier(pl.LightningModule):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("vgg11", {"batch_norm": True}),
        ("vgg13", {}),
        ("vgg16", {"kernel_sizes": [21, 21]}),  # the paper's variant
        ("vgg19", {"batch_norm": True}),
    ],
)
def test_every_conv_output_channel_is_in_the_ball_after_projected_steps(name, kwargs):
    pl.seed_everything(0, verbose=False)
    radius = 1.0
    net = ENTRY_POINTS[name](in_channels=1, image_size=28, num_classes=10, **kwargs)
    data = TensorDataset(torch.randn(12, 1, 28, 28), torch.arange(12) % 10)
    projection = L1InfProjection(radius=radius)
    trainer = pl.Trainer(
        max_steps=3,
        accelerator="cpu",
        callbacks=[projection],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_ImageClassifier(net), DataLoader(data, batch_size=4))

    assert projection.num_projections == 3
    affine = [m for m in net.modules() if isinstance(m, AFFINE)]
    for layer in affine[:-1]:
        # One vector per output channel / neuron: [bias_j, weight[j].flatten()].
        rows = layer.weight.detach().double().reshape(layer.weight.shape[0], -1).abs().sum(dim=1)
        if layer.bias is not None:
            rows = rows + layer.bias.detach().double().abs()
        assert float(rows.max()) <= radius * (1 + 1e-6), layer
    assert affine[-1] is net.head  # the output layer is left free
    head = net.head.weight.detach().double().abs().sum(dim=1) + net.head.bias.detach().double().abs()
    assert float(head.max()) > radius
