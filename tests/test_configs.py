"""The real-data configs, shrunk to one step on the CPU: MNIST MLP, Fashion-MNIST VGG, CIFAR-10 VGG-16 21×21.

MNIST and Fashion-MNIST run on the files `make data` unpacks into data/; CIFAR-10 runs on CIFAR-format files written
by the tests (tests/conftest.py), since CIFAR-10 is not available here.
"""

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from l1inf_lightning import L1InfProjection, SparsityMonitor
from l1inf_lightning.cli import fit_cli
from l1inf_lightning.data import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from l1inf_lightning.functional import is_affine, l1inf_norm
from l1inf_lightning.models import MLP, VGG

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
DATA_DIR = ROOT / "data"


def _needs(folder: str):
    return pytest.mark.skipif(
        # Where the shared archives exist, `make data` (run by `make test`) unpacks them: a missing folder is a failure.
        not (DATA_DIR / folder / "raw").is_dir() and not (ROOT.parent / "shared" / "data").is_dir(),
        reason=f"{DATA_DIR / folder / 'raw'} is absent: run `make data` (as `make test` does) to unpack it",
    )


def fast_dev_args(config: str, tmp_path: Path, data_dir: Path, *extra: str) -> list[str]:
    """One training and one validation batch of a real config, on the CPU, writing only under tmp_path."""
    return [
        "fit",
        "--config",
        str(CONFIGS / config),
        "--trainer.fast_dev_run=true",
        "--trainer.accelerator=cpu",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.default_root_dir={tmp_path}",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--data.init_args.data_dir={data_dir}",
        *extra,
    ]


# MNIST-like data: hold out 55,000 of the 60,000 training images, so that the SparsityMonitor's pass over the training
# set at fit start reads 5,000 images; fast_dev_run uses one validation batch either way.
SMALL_TRAIN_SET = "--data.init_args.val_size=55000"


def _projection(cli) -> L1InfProjection:
    return next(cb for cb in cli.trainer.callbacks if isinstance(cb, L1InfProjection))


def _monitor(cli) -> SparsityMonitor:
    return next(cb for cb in cli.trainer.callbacks if isinstance(cb, SparsityMonitor))


def _check_one_projected_step(cli, net_type: type[nn.Module], data_type: type) -> None:
    assert isinstance(cli.model.net, net_type) and isinstance(cli.datamodule, data_type)
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    projection = _projection(cli)
    assert math.isfinite(projection.radius) and projection.num_projections >= 1
    layers = [name for name, m in cli.model.named_modules() if is_affine(m)]
    # Every conv output channel and hidden neuron is in the ball in force after the step (the radius-aware mode anneals
    # it from start_radius); the output layer is not constrained.
    assert list(projection.radii) == layers[:-1]
    modules = dict(cli.model.named_modules())
    for name, radius in projection.radii.items():
        assert projection.radius <= radius and float(l1inf_norm(modules[name])) <= radius * (1 + 1e-6)
    assert "sparsity/overall" in _monitor(cli).last_metrics
    assert "train/penalty" not in cli.trainer.callback_metrics  # the configs train with the projection alone


@_needs("MNIST")
def test_mnist_mlp_config_runs_one_projected_step_with_the_bounds(tmp_path):
    cli = fit_cli(fast_dev_args("mnist_mlp.yaml", tmp_path, DATA_DIR, SMALL_TRAIN_SET))
    _check_one_projected_step(cli, MLP, MNISTDataModule)
    assert [m.out_features for m in cli.model.net.modules() if isinstance(m, nn.Linear)] == [300, 100, 10]
    # A ReLU MLP is inside the theorems: the monitor logs the bounds with the configured radius.
    assert "bound/rademacher" in _monitor(cli).last_metrics


@_needs("FashionMNIST")
def test_fashion_mnist_vgg_config_runs_one_projected_step(tmp_path):
    with pytest.warns(UserWarning, match="does not log the bounds"):  # conv and pooling: outside the theorems
        cli = fit_cli(fast_dev_args("fashion_mnist_vgg.yaml", tmp_path, DATA_DIR, SMALL_TRAIN_SET))
    _check_one_projected_step(cli, VGG, FashionMNISTDataModule)
    assert any(isinstance(m, nn.Conv2d) for m in cli.model.net.modules())


def test_cifar10_vgg16_21x21_config_runs_one_projected_step_on_test_made_cifar10(tmp_path, fake_cifar10_dir):
    # The config as written but for the batch (128 → 4), the held-out part of the 100 fake images (so the
    # monitor's training-loss pass is short), worker processes and CPU precision.
    shrink = [
        "--data.init_args.batch_size=4",
        "--data.init_args.val_size=80",
        "--data.init_args.num_workers=0",
        "--trainer.precision=32-true",
    ]
    with pytest.warns(UserWarning, match="does not log the bounds"):
        cli = fit_cli(fast_dev_args("cifar10_vgg16_21x21.yaml", tmp_path, fake_cifar10_dir, *shrink))
    _check_one_projected_step(cli, VGG, CIFAR10DataModule)
    convs = [m for m in cli.model.net.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 13 and [c.kernel_size for c in convs[:3]] == [(21, 21), (21, 21), (3, 3)]
    assert any(isinstance(m, nn.BatchNorm2d) for m in cli.model.net.modules())
    assert isinstance(cli.model.optimizers().optimizer, torch.optim.SGD)
    assert isinstance(cli.trainer.lr_scheduler_configs[0].scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)


# ------------------------------------------------------------------------------------------------------------------
# The other regularizers of the paper's comparison, from the command line
# ------------------------------------------------------------------------------------------------------------------


@_needs("MNIST")
def test_l1_l2_penalties_and_dropout_are_set_from_the_command_line_and_act(tmp_path):
    extra = [
        SMALL_TRAIN_SET,
        "--projection.radius=inf",
        "--model.init_args.l1_penalty=0.001",
        "--model.init_args.l2_penalty=0.0001",
        "--model.init_args.net.init_args.dropout=0.5",
    ]
    cli = fit_cli(fast_dev_args("mnist_mlp.yaml", tmp_path, DATA_DIR, *extra))
    model = cli.model
    assert (model.l1_penalty, model.l2_penalty) == (0.001, 0.0001)
    assert math.isinf(_projection(cli).radius)
    dropouts = [m for m in model.net.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 2 and all(m.p == 0.5 for m in dropouts)  # after each of the two hidden layers
    # The step's objective included λ1 Σ|w| + λ2 Σw² of the initial weights (the same seed rebuilds them).
    initial = fit_cli(fast_dev_args("mnist_mlp.yaml", tmp_path, DATA_DIR, *extra)[1:], run=False).model
    expected = sum(
        0.001 * layer.weight.detach().abs().sum() + 0.0001 * layer.weight.detach().pow(2).sum()
        for layer in initial.net.modules()
        if isinstance(layer, nn.Linear)
    )
    assert float(expected) > 1.0
    assert float(cli.trainer.callback_metrics["train/penalty"]) == pytest.approx(float(expected), rel=1e-5)


def test_vgg_dropout_is_set_from_the_command_line(tmp_path):
    extra = ["--model.init_args.net.init_args.dropout=0.5", "--model.init_args.l2_penalty=0.0005"]
    cli = fit_cli(fast_dev_args("fashion_mnist_vgg.yaml", tmp_path, DATA_DIR, *extra)[1:], run=False)
    dropouts = [m for m in cli.model.net.modules() if isinstance(m, nn.Dropout)]
    assert len(dropouts) == 2 and all(m.p == 0.5 for m in dropouts)
    assert cli.model.l2_penalty == 0.0005
    baseline = fit_cli(fast_dev_args("fashion_mnist_vgg.yaml", tmp_path, DATA_DIR)[1:], run=False)
    assert all(m.p == 0.0 for m in baseline.model.net.modules() if isinstance(m, nn.Dropout))
