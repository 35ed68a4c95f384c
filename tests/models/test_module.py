import lightning.pytorch as pl
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from l1inf_lightning.models import MLP, SupervisedModule


def loaders(task: str, n: int = 64):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=generator)
    y = (x[:, 0] > 0).long() if task == "classification" else x[:, :1] * 2.0
    loader = DataLoader(TensorDataset(x, y), batch_size=16)
    return loader, loader


def fit(model, task, **trainer_kwargs):
    trainer = pl.Trainer(
        max_epochs=3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **trainer_kwargs,
    )
    train, val = loaders(task)
    trainer.fit(model, train, val)
    metrics = dict(trainer.callback_metrics)  # `test` resets them
    trainer.test(model, val, verbose=False)
    return trainer, {**metrics, **trainer.callback_metrics}


@pytest.mark.parametrize(("task", "metric", "out"), [("classification", "acc", 2), ("regression", "mse", 1)])
def test_logs_loss_and_metric_per_split(task, metric, out):
    _, metrics = fit(SupervisedModule(MLP(6, [8], out), task=task), task)
    for key in ("train/loss", "val/loss", f"val/{metric}", "test/loss", f"test/{metric}"):
        assert key in metrics, key
        assert torch.isfinite(metrics[key])


def test_classification_learns_a_separable_problem():
    model = SupervisedModule(MLP(6, [16], 2), optimizer=lambda p: torch.optim.Adam(p, lr=0.05))
    _, metrics = fit(model, "classification")
    assert metrics["test/acc"] > 0.9


def test_regression_mse_metric_equals_the_loss_on_a_single_batch():
    model = SupervisedModule(MLP(6, [8], 1), task="regression")
    x, y = next(iter(loaders("regression", n=16)[0]))
    expected = torch.mean((model(x) - y) ** 2)
    assert torch.allclose(model.loss(model(x), y), expected)


def test_penalties_are_added_to_training_objective_and_logged():
    model = SupervisedModule(MLP(6, [8], 2), l1_penalty=0.01, l2_penalty=0.001)
    layers = [m for m in model.net.modules() if isinstance(m, torch.nn.Linear)]
    expected = sum(0.01 * m.weight.abs().sum() + 0.001 * m.weight.pow(2).sum() for m in layers)
    assert torch.allclose(model.penalty(), expected)
    _, metrics = fit(model, "classification")
    assert metrics["train/penalty"] > 0


def test_output_l1_penalty_acts_on_the_stored_output_weights_alone_and_is_logged():
    net = MLP(6, [8], 2, output_bias=False)
    net.layers[-1].output_scale.fill_(3.0)  # as the radius-aware mode sets it: not part of the penalty
    model = SupervisedModule(net, output_l1_penalty=0.01)
    hidden, output = net.layers[0], net.layers[-1]
    assert torch.allclose(model.penalty(), 0.01 * output.weight.abs().sum())
    model.penalty().backward()
    assert hidden.weight.grad is None or not hidden.weight.grad.any()
    torch.testing.assert_close(output.weight.grad, 0.01 * output.weight.sign())
    _, metrics = fit(model, "classification")
    assert metrics["train/penalty"] > 0


def test_scheduler_is_configured_with_val_loss_monitor():
    model = SupervisedModule(
        MLP(6, [8], 2),
        optimizer=lambda p: torch.optim.SGD(p, lr=0.1),
        scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=1, gamma=0.5),
    )
    trainer, _ = fit(model, "classification")
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.1 * 0.5**3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task": "ranking"}, r"`task`.*got 'ranking'"),
        ({"l1_penalty": -1.0}, r"`l1_penalty`.*got -1.0"),
        ({"output_l1_penalty": -0.5}, r"`output_l1_penalty`.*got -0.5"),
        ({"num_classes": 1}, r"`num_classes` >= 2.*got 1"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SupervisedModule(MLP(6, [8], 2), **kwargs)


def test_net_without_affine_layer_is_rejected():
    with pytest.raises(ValueError, match=r"nn\.Linear or nn\.Conv"):
        SupervisedModule(torch.nn.Sequential(torch.nn.ReLU()))


def test_top_class_share_is_the_share_of_predictions_in_the_most_predicted_class():
    model = SupervisedModule(MLP(6, [8], 3))
    with torch.no_grad():  # every logit of class 2 wins: a network that predicts a single class
        model.net.layers[-1].weight.zero_()
        model.net.layers[-1].bias.copy_(torch.tensor([0.0, 0.0, 5.0]))
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    y = torch.arange(40) % 3
    loader = DataLoader(TensorDataset(x, y), batch_size=16)  # 3 batches: the counts add up over the epoch
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert trainer.test(model, loader, verbose=False)[0]["test/top_class_share"] == 1.0
    with torch.no_grad():  # now the first input's sign decides between classes 0 and 1
        model.net.layers[-1].bias.zero_()
        model.net.layers[0].weight.zero_()
        model.net.layers[0].weight[0, 0] = 1.0
        model.net.layers[0].weight[1, 0] = -1.0
        model.net.layers[0].bias.zero_()
        model.net.layers[-1].weight[0, 0] = 1.0
        model.net.layers[-1].weight[1, 1] = 1.0
    share = trainer.test(model, loader, verbose=False)[0]["test/top_class_share"]
    expected = max((x[:, 0] > 0).sum().item(), (x[:, 0] < 0).sum().item()) / 40
    assert share == pytest.approx(expected)
    assert share < 1.0
    assert trainer.validate(model, loader, verbose=False)[0]["val/top_class_share"] == pytest.approx(expected)


def test_regression_logs_no_top_class_share():
    _, metrics = fit(SupervisedModule(MLP(6, [8], 1), task="regression"), "regression")
    assert not any("top_class_share" in key for key in metrics)
