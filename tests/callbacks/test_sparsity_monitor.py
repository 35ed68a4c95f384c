import glob
import math
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import plugin_data_pb2
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from l1inf_lightning import L1InfProjection, SparsityMonitor
from l1inf_lightning.callbacks.sparsity_monitor import first_layer_image
from l1inf_lightning.data import SyntheticClassificationDataModule, SyntheticRegressionDataModule
from l1inf_lightning.functional import bounds
from l1inf_lightning.models import MLP, SupervisedModule

# The paper's classification MLP on a shrunk copy of its synthetic data.
PAPER_HIDDEN = [100, 50, 20]
RADIUS = 1.0
BOUND_TAGS = ("bound/rademacher", "bound/generalization", "bound/output_sup")
COLLAPSE_WARNING = (
    "`SparsityMonitor`: at the end of training the net predicts class {cls} for all {n} training samples of the gap "
    "pass, which hold several classes: it has not learned, so its sparsity and gap say little about c. A small c is a "
    "training problem, not a limit of the class: the same function in a ball s times smaller needs an output layer "
    "s**-k times larger. Another optimizer, a larger learning rate, more epochs or a larger c may train it."
)


def small_classification_data(**kwargs) -> SyntheticClassificationDataModule:
    return SyntheticClassificationDataModule(num_train=100, num_test=100, num_val=100, batch_size=25, **kwargs)


def fit(model, data, callbacks, logger=False, max_epochs=2):
    """Train on CPU; ``data`` is a DataModule or a (train, val) pair of DataLoaders."""
    trainer = pl.Trainer(
        max_epochs=max_epochs,
        logger=logger,
        callbacks=callbacks,
        accelerator="cpu",
        log_every_n_steps=1,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    if isinstance(data, pl.LightningDataModule):
        trainer.fit(model, datamodule=data)
    else:
        trainer.fit(model, *data)
    return trainer


def fit_recording_warnings(*args, **kwargs):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        trainer = fit(*args, **kwargs)
    return trainer, [str(w.message) for w in record if str(w.message).startswith("`SparsityMonitor`")]


def linear_names(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]


def row_l1(layer: nn.Module) -> list[float]:
    """|b_j| + ||w_j||_1 of every neuron, summed in float64 one row at a time (the reference)."""
    weight = layer.weight.detach().double().reshape(layer.weight.shape[0], -1)
    bias = layer.bias.detach().double() if layer.bias is not None else torch.zeros(weight.shape[0], dtype=torch.double)
    return [float(bias[j].abs() + weight[j].abs().sum()) for j in range(weight.shape[0])]


def read_events(log_dir: str) -> EventAccumulator:
    accumulator = EventAccumulator(log_dir, size_guidance={"scalars": 0, "images": 0, "histograms": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def hparams_summaries(log_dir: str) -> list[plugin_data_pb2.HParamsPluginData]:
    """Every hparams summary in the run's event files, in write order (read raw, not through the accumulator)."""
    found = []
    for path in sorted(glob.glob(str(Path(log_dir) / "events.out.tfevents.*"))):
        for event in EventFileLoader(path).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    found.append(plugin_data_pb2.HParamsPluginData.FromString(value.metadata.plugin_data.content))
    return found


# ---------------------------------------------------------------------------------------------------------------------
# Two epochs into TensorBoard, read back with tensorboard's own EventAccumulator
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tensorboard_run(tmp_path_factory):
    pl.seed_everything(0)
    model = SupervisedModule(MLP(500, PAPER_HIDDEN, 2))
    monitor = SparsityMonitor(image_every_n_epochs=1)
    logger = TensorBoardLogger(tmp_path_factory.mktemp("tb"), default_hp_metric=False)  # as the configs create it
    _, messages = fit_recording_warnings(
        model, small_classification_data(), [L1InfProjection(radius=RADIUS), monitor], logger=logger
    )
    assert not [m for m in messages if "hparams summary" in m]  # nothing hides the monitor's summary: no warning
    return model, monitor, logger.log_dir, read_events(logger.log_dir)


def test_every_scalar_tag_is_written_with_finite_values_once_per_epoch(tensorboard_run):
    model, _, _, events = tensorboard_run
    layers = linear_names(model)
    assert layers == ["net.layers.0", "net.layers.2", "net.layers.4", "net.layers.6"]
    expected = ["sparsity/overall", "gap/loss", "gap/acc", *BOUND_TAGS, "bound/c"]
    expected += [f"{kind}/{name}" for kind in ("sparsity", "dead", "norm") for name in layers]
    written = set(events.Tags()["scalars"])
    assert not set(expected) - written
    for tag in expected:
        values = [event.value for event in events.Scalars(tag)]
        assert len(values) == 2, tag  # log_every_n_epochs=1, two epochs
        assert all(math.isfinite(v) for v in values), (tag, values)


def test_logged_sparsity_and_dead_neurons_equal_a_direct_count(tensorboard_run):
    model, _, _, events = tensorboard_run
    zeros = total = 0
    for name, layer in model.named_modules():
        if not isinstance(layer, nn.Linear):
            continue
        weight = layer.weight.detach()
        layer_zeros, dead = int((weight == 0).sum()), int((weight == 0).all(dim=1).sum())
        zeros, total = zeros + layer_zeros, total + weight.numel()
        assert events.Scalars(f"sparsity/{name}")[-1].value == pytest.approx(layer_zeros / weight.numel(), rel=1e-6)
        assert events.Scalars(f"dead/{name}")[-1].value == dead
    assert zeros > 0  # the projection made exact zeros, so the comparison is not 0 == 0
    assert events.Scalars("sparsity/overall")[-1].value == pytest.approx(zeros / total, rel=1e-6)


def test_logged_norms_are_the_measured_l1inf_norms_and_hidden_ones_are_inside_the_ball(tensorboard_run):
    model, _, _, events = tensorboard_run
    layers = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    for name, layer in layers:
        logged = events.Scalars(f"norm/{name}")[-1].value
        assert logged == pytest.approx(max(row_l1(layer)), rel=1e-5)
    for name, _ in layers[:-1]:
        assert events.Scalars(f"norm/{name}")[-1].value <= RADIUS * (1 + 1e-6), name
    # The output layer is left free by the projection: its norm is not pinned at the radius.
    assert events.Scalars(f"norm/{layers[-1][0]}")[-1].value > RADIUS


def test_weight_image_and_histograms_are_written(tensorboard_run):
    model, _, _, events = tensorboard_run
    images = events.Images("weights/first_hidden_layer")
    assert len(images) == 2  # image_every_n_epochs=1
    assert images[-1].width > 0 and images[-1].height > 0
    assert images[-1].encoded_image_string.startswith(b"\x89PNG")
    for name, layer in model.named_modules():
        if isinstance(layer, nn.Linear):
            histograms = events.Histograms(f"weights/{name}")
            assert len(histograms) == 2, name
            histogram = histograms[-1].histogram_value
            weight = layer.weight.detach()
            assert histogram.num == weight.numel()
            assert sum(histogram.bucket) == weight.numel()  # every weight falls in a bucket
            assert histogram.min == pytest.approx(float(weight.min()))
            assert histogram.max == pytest.approx(float(weight.max()))
            assert histogram.bucket_limit[-1] == pytest.approx(float(weight.max()))
    # The image is the first layer's first 20 neurons, one 8-pixel column each, one row per input.
    first = next(layer for layer in model.modules() if isinstance(layer, nn.Linear))
    assert (images[-1].height, images[-1].width) == (first.in_features, 20 * 8)


def test_first_layer_image_shows_zeros_white_and_signs_in_red_and_blue():
    weight = torch.tensor([[0.0, 2.0, -1.0], [-2.0, 0.0, 1.0]])  # 2 neurons, 3 inputs
    image = first_layer_image(weight, column_width=2)
    assert image.shape == (3, 3, 4)  # RGB, one row per input, 2 pixels per neuron
    assert torch.equal(image[:, 0, 0], torch.ones(3))  # neuron 0, input 0: exactly zero -> white
    assert torch.equal(image[:, 1, 0], torch.tensor([1.0, 0.0, 0.0]))  # +max -> full red
    assert torch.equal(image[:, 0, 2], torch.tensor([0.0, 0.0, 1.0]))  # -max -> full blue
    assert torch.allclose(image[:, 2, 0], torch.tensor([0.5, 0.5, 1.0]))  # -max/2 -> half blue
    assert torch.equal(image[:, :, 0], image[:, :, 1])  # each neuron's column is repeated
    assert torch.equal(first_layer_image(torch.zeros(2, 3)), torch.ones(3, 3, 16))  # all-zero layer: all white


def test_hparams_and_final_metrics_are_written(tensorboard_run):
    _, monitor, log_dir, events = tensorboard_run
    # Final metrics, as scalars the HPARAMS tab reads: the last logged values.
    for key in ("sparsity/overall", "gap/loss", "gap/acc", "bound/rademacher", "bound/generalization"):
        hp_tag = "hp/" + key.replace("/", "_")
        assert events.Scalars(hp_tag)[-1].value == pytest.approx(events.Scalars(key)[-1].value, rel=1e-6), key
    assert "hp/val_loss" in events.Tags()["scalars"]
    # The monitor's hparams summary: c, architecture and n, with the hp/ metrics declared.
    summaries = hparams_summaries(log_dir)
    starts = [s.session_start_info.hparams for s in summaries if s.HasField("session_start_info")]
    mine = [h for h in starts if "c" in h]
    assert len(mine) == 1
    assert mine[0]["c"].number_value == RADIUS
    assert mine[0]["architecture"].string_value == "500-100-50-20-2"
    assert mine[0]["n"].number_value == 100
    assert mine[0]["k"].number_value == 3
    assert mine[0]["activation"].string_value == "relu"
    declared = {m.name.tag for s in summaries if s.HasField("experiment") for m in s.experiment.metric_infos}
    assert {"hp/sparsity_overall", "hp/gap_loss", "hp/bound_generalization"} <= declared
    assert monitor.last_metrics["sparsity/overall"] == pytest.approx(events.Scalars("sparsity/overall")[-1].value)


def test_tensorboard_hparams_tab_shows_the_monitors_and_the_modules_hparams(tensorboard_run):
    _, _, log_dir, events = tensorboard_run
    # TensorBoard keeps a run's first hparams summary: it must be the monitor's, with the module's hparams too.
    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    shown = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    assert {"c", "architecture", "n", "task", "num_classes"} <= set(shown)
    assert shown["c"].number_value == RADIUS
    starts = [s for s in hparams_summaries(log_dir) if s.HasField("session_start_info")]
    assert len(starts) == 1  # no placeholder hp_metric summary before it
    assert "hp_metric" not in events.Tags()["scalars"]


def test_a_logger_that_writes_the_placeholder_summary_is_warned_about_once(tmp_path):
    pl.seed_everything(0)
    logger = TensorBoardLogger(tmp_path)  # default_hp_metric=True: a placeholder summary at fit start
    monitor = SparsityMonitor(image_every_n_epochs=0)
    _, messages = fit_recording_warnings(
        SupervisedModule(MLP(500, [8], 2)), small_classification_data(), [monitor], logger=logger, max_epochs=2
    )
    warned = [m for m in messages if "hparams summary" in m]
    assert len(warned) == 1 and "`default_hp_metric=False`" in warned[0]
    # The monitor leaves the logger alone: the placeholder is the run's first summary, TensorBoard's choice.
    starts = [s for s in hparams_summaries(logger.log_dir) if s.HasField("session_start_info")]
    assert len(starts) == 2 and "c" not in starts[0].session_start_info.hparams


# ---------------------------------------------------------------------------------------------------------------------
# Intervals and the bounded gap pass
# ---------------------------------------------------------------------------------------------------------------------


def test_logging_intervals(tmp_path):
    pl.seed_everything(0)
    model = SupervisedModule(MLP(500, [20], 2))
    logger = TensorBoardLogger(tmp_path)
    monitor = SparsityMonitor(log_every_n_epochs=2, image_every_n_epochs=2)
    fit(model, small_classification_data(), [L1InfProjection(radius=RADIUS), monitor], logger=logger, max_epochs=3)
    events = read_events(logger.log_dir)
    steps_per_epoch = 4  # 100 samples / 25
    # Scalars every 2 epochs and at the last one; images at epoch 1 and every 2 epochs; both at the global step.
    assert [e.step for e in events.Scalars("sparsity/overall")] == [2 * steps_per_epoch, 3 * steps_per_epoch]
    assert [e.step for e in events.Images("weights/first_hidden_layer")] == [steps_per_epoch, 2 * steps_per_epoch]


def test_no_images_or_histograms_when_disabled(tmp_path):
    pl.seed_everything(0)
    logger = TensorBoardLogger(tmp_path)
    monitor = SparsityMonitor(image_every_n_epochs=0)
    model = SupervisedModule(MLP(500, [20], 2))
    fit(model, small_classification_data(), [L1InfProjection(radius=RADIUS), monitor], logger=logger, max_epochs=1)
    tags = read_events(logger.log_dir).Tags()
    assert tags["images"] == [] and tags["histograms"] == []
    assert "sparsity/overall" in tags["scalars"]


@pytest.mark.parametrize(("gap_samples", "expected_per_log"), [(40, 40), (1000, 100), (0, 0)])
def test_gap_pass_evaluates_at_most_gap_samples_training_samples(gap_samples, expected_per_log):
    pl.seed_everything(0)
    model = SupervisedModule(MLP(500, [20], 2))
    trainer_ref = {}
    seen = []

    def count_eval_samples_during_training(module, args):
        # Validation and the sanity check run with trainer.training False; only the monitor's pass is left.
        trainer = trainer_ref.get("trainer")
        if trainer is not None and trainer.training and not module.training:
            seen.append(args[0].shape[0])

    class RememberTrainer(pl.Callback):
        def on_fit_start(self, trainer, pl_module):
            trainer_ref["trainer"] = trainer

    model.net.register_forward_pre_hook(count_eval_samples_during_training)
    monitor = SparsityMonitor(gap_samples=gap_samples, image_every_n_epochs=0)
    trainer = fit(model, small_classification_data(), [RememberTrainer(), L1InfProjection(radius=RADIUS), monitor])
    assert sum(seen) == 2 * expected_per_log  # two epochs, one gap pass each
    assert ("gap/loss" in trainer.callback_metrics) == (gap_samples > 0)
    assert "sparsity/overall" in trainer.callback_metrics


# ---------------------------------------------------------------------------------------------------------------------
# The generalization gap: validation loss - training loss, both in eval mode on the final weights
# ---------------------------------------------------------------------------------------------------------------------


def test_gap_is_validation_minus_eval_mode_training_loss_on_the_final_weights():
    pl.seed_everything(0)
    # Dropout makes train mode and eval mode differ, so a gap computed in train mode would not match.
    model = SupervisedModule(MLP(500, PAPER_HIDDEN, 2, dropout=0.5))
    data = small_classification_data()
    monitor = SparsityMonitor(gap_samples=1000, image_every_n_epochs=0)  # >= num_train: the whole training set
    trainer = fit(model, data, [L1InfProjection(radius=RADIUS), monitor])

    x_train, y_train = data.train_set.tensors
    x_val, y_val = data.val_set.tensors
    model.eval()
    with torch.no_grad():
        train_out, val_out = model(x_train), model(x_val)
        train_loss = float(F.cross_entropy(train_out, y_train))
        val_loss = float(F.cross_entropy(val_out, y_val))
        train_acc = float((train_out.argmax(1) == y_train).float().mean())
        val_acc = float((val_out.argmax(1) == y_val).float().mean())
        model.train()
        train_mode_loss = float(F.cross_entropy(model(x_train), y_train))

    assert float(trainer.callback_metrics["val/loss"]) == pytest.approx(val_loss, abs=1e-5)
    assert monitor.last_metrics["gap/loss"] == pytest.approx(val_loss - train_loss, abs=1e-5)
    assert float(trainer.callback_metrics["gap/loss"]) == pytest.approx(val_loss - train_loss, abs=1e-5)
    assert monitor.last_metrics["gap/acc"] == pytest.approx(train_acc - val_acc, abs=1e-6)
    assert abs(train_mode_loss - train_loss) > 1e-4  # 10x the tolerance above: it could tell eval from train mode
    assert model.training  # the monitor put the module back in the mode it found it in


# ---------------------------------------------------------------------------------------------------------------------
# Sparsity against c, and c = inf
# ---------------------------------------------------------------------------------------------------------------------


def test_sparsity_rises_as_c_falls_and_c_inf_reports_no_bound():
    # 10 epochs on 100 samples: c >= 1 learn (no collapse warning); c = 0.1 predicts one class, and the monitor
    # says so. Sparsity rises as c falls across both regimes here.
    results = {}
    for c in (0.1, 1.0, 3.0, math.inf):
        pl.seed_everything(0)
        model = SupervisedModule(MLP(500, PAPER_HIDDEN, 2))
        monitor = SparsityMonitor(image_every_n_epochs=0)
        callbacks = [L1InfProjection(radius=c), monitor]
        if math.isinf(c):
            with pytest.warns(UserWarning, match="c = inf") as record:
                trainer = fit(model, small_classification_data(), callbacks, max_epochs=10)
            mine = [str(w.message) for w in record if str(w.message).startswith("`SparsityMonitor`")]
            assert len(mine) == 1 and "c = inf" in mine[0]  # said once, not once per epoch
        else:
            trainer, mine = fit_recording_warnings(model, small_classification_data(), callbacks, max_epochs=10)
            assert mine == ([COLLAPSE_WARNING.format(cls=0, n=100)] if c == 0.1 else []), c
        metrics = trainer.callback_metrics
        results[c] = (float(metrics["sparsity/overall"]), float(metrics["gap/loss"]))
        has_bounds = [tag in metrics for tag in BOUND_TAGS]
        assert has_bounds == [not math.isinf(c)] * 3, c
        print(f"c={c:<4}  sparsity/overall={results[c][0]:.4f}  gap/loss={results[c][1]:+.4f}")
    assert results[0.1][0] > results[1.0][0] > results[3.0][0] > results[math.inf][0] == 0


# ---------------------------------------------------------------------------------------------------------------------
# Regression (Theorem 5), convolutions, modules without a loss
# ---------------------------------------------------------------------------------------------------------------------


def test_regression_logs_the_mse_bound_and_no_accuracy_gap():
    pl.seed_everything(0)
    data = SyntheticRegressionDataModule(
        num_train=100, num_test=100, num_val=100, num_features=50, num_informative=5, batch_size=25
    )
    model = SupervisedModule(MLP(50, [20], 1), task="regression")
    monitor = SparsityMonitor(image_every_n_epochs=0)
    trainer, mine = fit_recording_warnings(model, data, [L1InfProjection(radius=RADIUS), monitor])
    assert mine == []
    metrics = monitor.last_metrics
    assert math.isfinite(metrics["bound/generalization"])
    assert math.isfinite(metrics["gap/loss"])
    assert "gap/acc" not in metrics and "gap/acc" not in trainer.callback_metrics

    # Theorem 5 with the measured quantities: B0 = max |y|, c scaled by max |x| (> 1 for Gaussian inputs).
    x, y = data.train_set.tensors
    c = RADIUS * float(x.abs().max())
    output = model.net.layers[-1]
    theorem5 = bounds.mse_generalization_bound(c, 1, 1.0, 100, 50, 0.05, float(y.abs().max()), row_l1(output)[0])
    assert metrics["bound/c"] == pytest.approx(c, rel=1e-6)
    # Theorem 5 is for L_se = (y - f)^2 / 2; gap/loss is the gap of the module's MSE, (y - f)^2: twice the units.
    assert metrics["bound/generalization"] == pytest.approx(2 * theorem5, rel=1e-6)
    model.eval()
    with torch.no_grad():
        train_mse = float(torch.nn.functional.mse_loss(model(x), y.reshape(-1, 1)))
    val_mse = float(trainer.callback_metrics["val/loss"])
    assert metrics["gap/loss"] == pytest.approx(val_mse - train_mse, rel=1e-5)


def conv_data(n: int = 48):
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 6, 6, generator=generator)
    y = (x[:, 0, 0, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=16), DataLoader(TensorDataset(x, y), batch_size=16)


def test_conv_model_logs_sparsity_and_gap_but_no_bound_with_one_warning():
    pl.seed_everything(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    monitor = SparsityMonitor(image_every_n_epochs=0)
    trainer, mine = fit_recording_warnings(
        SupervisedModule(net), conv_data(), [L1InfProjection(radius=RADIUS), monitor]
    )
    metrics = trainer.callback_metrics
    for key in ("sparsity/overall", "sparsity/net.0", "dead/net.0", "norm/net.0", "gap/loss", "gap/acc"):
        assert key in metrics, key
    assert not [key for key in metrics if key.startswith("bound/")]
    assert len(mine) == 1
    assert "'net.0'" in mine[0] and "Conv2d" in mine[0]


class BareModule(pl.LightningModule):
    """A LightningModule with no ``loss`` method that logs its validation loss under ``val_key``."""

    def __init__(self, val_key: str) -> None:
        super().__init__()
        self.net = MLP(8, [8], 2)
        self.val_key = val_key

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log(self.val_key, F.cross_entropy(self(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def bare_data():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(40, 8, generator=generator) * 2 - 1
    y = (x[:, 0] > 0).long()
    return DataLoader(TensorDataset(x, y), batch_size=10), DataLoader(TensorDataset(x, y), batch_size=10)


def test_without_the_validation_loss_the_warning_names_the_key_it_expected():
    assert not hasattr(BareModule("valid_loss"), "loss")
    monitor = SparsityMonitor(image_every_n_epochs=0)
    trainer, mine = fit_recording_warnings(BareModule("valid_loss"), bare_data(), [L1InfProjection(), monitor])
    assert len(mine) == 1
    assert "'val/loss'" in mine[0] and "val_loss_key" in mine[0]
    assert "gap/loss" not in trainer.callback_metrics
    assert "sparsity/overall" in trainer.callback_metrics  # the rest is still logged


def test_without_a_loss_method_the_warning_asks_for_loss_fn():
    monitor = SparsityMonitor(image_every_n_epochs=0)
    trainer, mine = fit_recording_warnings(BareModule("val/loss"), bare_data(), [L1InfProjection(), monitor])
    assert len(mine) == 1 and "`loss_fn`" in mine[0]
    assert "gap/loss" not in trainer.callback_metrics


def test_loss_fn_and_val_loss_key_make_the_gap_work_for_any_module():
    model = BareModule("valid_loss")
    monitor = SparsityMonitor(image_every_n_epochs=0, val_loss_key="valid_loss", loss_fn=F.cross_entropy)
    trainer, mine = fit_recording_warnings(model, bare_data(), [L1InfProjection(), monitor], max_epochs=10)
    assert mine == []
    # Train and validation sets are the same data here, so the eval-mode gap is zero.
    assert float(trainer.callback_metrics["gap/loss"]) == pytest.approx(0.0, abs=1e-6)
    assert "bound/generalization" in trainer.callback_metrics


class ConstantClassifier(BareModule):
    """Logits that do not depend on the input: ``bias`` for every sample, and nothing to learn."""

    def __init__(self, bias: list[float]) -> None:
        super().__init__("val/loss")
        self.bias = nn.Parameter(torch.tensor(bias), requires_grad=False)
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return self.bias.expand(len(x), -1) + 0 * self.dummy + 0 * self.net(x)

    def configure_optimizers(self):
        return torch.optim.SGD([self.dummy], lr=0.0)


@pytest.mark.parametrize(("bias", "cls"), [([0.0, 1.0], 1), ([2.0, -1.0], 0)])
def test_a_net_that_predicts_one_class_for_every_sample_is_reported_once(bias, cls):
    monitor = SparsityMonitor(image_every_n_epochs=0, loss_fn=F.cross_entropy)
    _, mine = fit_recording_warnings(ConstantClassifier(bias), bare_data(), [monitor], max_epochs=3)
    assert [m for m in mine if "predicts class" in m] == [COLLAPSE_WARNING.format(cls=cls, n=40)]  # once, at the end


def test_no_collapse_warning_when_the_training_data_hold_one_class():
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(40, 8, generator=generator)
    one_class = DataLoader(TensorDataset(x, torch.zeros(40, dtype=torch.long)), batch_size=10)
    monitor = SparsityMonitor(image_every_n_epochs=0, loss_fn=F.cross_entropy)
    trainer, mine = fit_recording_warnings(ConstantClassifier([1.0, 0.0]), (one_class, one_class), [monitor])
    assert [m for m in mine if "predicts class" in m] == []
    assert "gap/loss" in trainer.callback_metrics


def test_no_collapse_warning_when_the_net_predicts_both_classes():
    # The last epoch decides: a net that predicts both classes at the end is not reported.
    monitor = SparsityMonitor(image_every_n_epochs=0, loss_fn=F.cross_entropy)
    model = BareModule("val/loss")
    _, mine = fit_recording_warnings(model, bare_data(), [monitor], max_epochs=10)
    x = torch.cat([batch[0] for batch in bare_data()[0]])
    assert model(x).argmax(dim=1).unique().numel() == 2
    assert [m for m in mine if "predicts class" in m] == []


# ---------------------------------------------------------------------------------------------------------------------
# Input scale and the bounds' arguments
# ---------------------------------------------------------------------------------------------------------------------


def cube_data(scale: float, n: int = 60, m1: int = 10):
    """Inputs uniform in [-1, 1] with max |x| exactly 1, times ``scale``."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, m1, generator=generator) * 2 - 1
    x[0, 0] = 1.0
    y = (x[:, 0] + x[:, 1] > 0).long()
    x = x * scale
    return DataLoader(TensorDataset(x, y), batch_size=20), DataLoader(TensorDataset(x, y), batch_size=20)


@pytest.mark.parametrize(("scale", "expected_c"), [(0.5, 0.5), (1.0, 0.5), (4.0, 2.0)])
def test_input_scale_is_folded_into_c_and_bounds_match_the_functional_calls(scale, expected_c):
    # Data inside [-1, 1] (scale <= 1): the theorems apply as they stand and the bound uses c itself (not a
    # smaller one for data that happen to be smaller). Data with max |x| = s > 1: the net on x is the net on x / s
    # with first-layer weights times s, whose norm is at most s * c, so the bounds use s * c.
    pl.seed_everything(0)
    c = 0.5
    model = SupervisedModule(MLP(10, [8, 8], 2))
    monitor = SparsityMonitor(image_every_n_epochs=0)
    fit(model, cube_data(scale), [L1InfProjection(radius=c), monitor])
    metrics = monitor.last_metrics
    assert metrics["bound/c"] == pytest.approx(expected_c, rel=1e-6)
    if scale == 4.0:
        assert metrics["bound/c"] == pytest.approx(4 * c, rel=1e-6)

    # The same numbers from the pure functions, with quantities measured by hand on the final weights.
    o = row_l1(model.net.layers[-1])
    k, gamma, n, m1 = 2, 1.0, 60, 10
    assert metrics["bound/rademacher"] == pytest.approx(
        bounds.rademacher_bound(expected_c, k, max(o), gamma, n, m1), rel=1e-6
    )
    assert metrics["bound/output_sup"] == pytest.approx(bounds.output_sup_bound(max(o), expected_c, k, gamma), rel=1e-6)
    assert metrics["bound/generalization"] == pytest.approx(
        bounds.cross_entropy_generalization_bound(expected_c, k, gamma, n, m1, 2, 0.05, max(o), o, sum(o)), rel=1e-6
    )


def test_bounds_use_the_largest_configured_radius_and_delta():
    # Per-layer radii: one c for all layers must cover every one of them, so the largest is used.
    pl.seed_everything(0)
    model = SupervisedModule(MLP(10, [8, 8], 2))
    monitor = SparsityMonitor(image_every_n_epochs=0, delta=0.01)
    projection = L1InfProjection(radius={"net.layers.0": 0.5, "net.layers.2": 2.0})
    fit(model, cube_data(1.0), [projection, monitor])
    o = row_l1(model.net.layers[-1])
    assert monitor.last_metrics["bound/c"] == 2.0
    assert monitor.last_metrics["bound/generalization"] == pytest.approx(
        bounds.cross_entropy_generalization_bound(2.0, 2, 1.0, 60, 10, 2, 0.01, max(o), o, sum(o)), rel=1e-6
    )


def test_bounds_are_skipped_when_a_hidden_layer_is_left_free():
    pl.seed_everything(0)
    model = SupervisedModule(MLP(10, [8, 8], 2))
    monitor = SparsityMonitor(image_every_n_epochs=0)
    with pytest.warns(UserWarning, match="c = inf"):
        trainer = fit(model, cube_data(1.0), [L1InfProjection(radius=1.0, layers=["net.layers.0"]), monitor])
    assert not [key for key in trainer.callback_metrics if key.startswith("bound/")]


# ---------------------------------------------------------------------------------------------------------------------
# Arguments and state
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"log_every_n_epochs": 0}, r"`log_every_n_epochs` to be an integer >= 1, got 0"),
        ({"log_every_n_epochs": 1.5}, r"`log_every_n_epochs` to be an integer >= 1, got 1.5"),
        ({"log_every_n_epochs": True}, r"`log_every_n_epochs` to be an integer >= 1, got True"),
        ({"image_every_n_epochs": -1}, r"`image_every_n_epochs` to be an integer >= 0, got -1"),
        ({"gap_samples": -1}, r"`gap_samples` to be an integer >= 0, got -1"),
        ({"delta": 1.5}, r"`delta` to be in \(0, 1\), got 1.5"),
        ({"delta": 0.0}, r"`delta` to be in \(0, 1\), got 0.0"),
    ],
)
def test_bad_arguments_raise_with_the_argument_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SparsityMonitor(**kwargs)


def test_state_dict_round_trip_keeps_the_last_metrics():
    monitor = SparsityMonitor()
    monitor.last_metrics = {"sparsity/overall": 0.25}
    restored = SparsityMonitor()
    restored.load_state_dict(monitor.state_dict())
    assert restored.last_metrics == {"sparsity/overall": 0.25}
