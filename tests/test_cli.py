"""The LightningCLI entry point on the real synthetic configs, shrunk."""

import contextlib
import io
import logging
import math
import shlex
import subprocess
import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
import yaml

from l1inf_lightning import L1InfProjection
from l1inf_lightning.cli import fit_cli
from l1inf_lightning.commands import main
from l1inf_lightning.functional import l1inf_norm, sparsity_rate

ROOT = Path(__file__).resolve().parents[1]
SYNTHETIC = {
    "classification": ROOT / "configs" / "synthetic_classification.yaml",
    "regression": ROOT / "configs" / "synthetic_regression.yaml",
}


def shrink(tmp_path: Path, *extra: str) -> list[str]:
    """Overrides that make a real config run in a second or two."""
    return [
        "--trainer.max_epochs=2",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
        "--data.init_args.num_train=100",
        "--data.init_args.num_test=50",
        "--data.init_args.num_val=50",
        "--data.init_args.batch_size=25",
        *extra,
    ]


@pytest.mark.parametrize("task", ["classification", "regression"])
def test_fit_trains_with_projection_and_prints_summary(task, tmp_path, capsys):
    cli = fit_cli(["fit", "--config", str(SYNTHETIC[task]), *shrink(tmp_path, "--projection.radius=0.5")])
    projection = next(cb for cb in cli.trainer.callbacks if isinstance(cb, L1InfProjection))
    assert projection.radius == 0.5
    assert projection.num_projections == cli.trainer.global_step == 2 * 4
    hidden = [m for m in cli.model.net.modules() if isinstance(m, torch.nn.Linear)][:-1]
    assert all(float(l1inf_norm(layer)) <= 0.5 * (1 + 1e-6) for layer in hidden)
    out = capsys.readouterr().out
    metric = "test/acc" if task == "classification" else "test/mse"
    assert "Final: c=0.5" in out and metric in out
    assert f"sparsity={float(sparsity_rate(cli.model)):.4f}" in out
    assert list((tmp_path / SYNTHETIC[task].stem).glob("version_0/events.out.tfevents.*"))


def test_radius_inf_from_the_command_line_is_the_unconstrained_baseline(tmp_path):
    cli = fit_cli(
        ["--config", str(SYNTHETIC["classification"]), *shrink(tmp_path, "--projection.radius=inf")], run=False
    )
    projection = next(cb for cb in cli.trainer.callbacks if isinstance(cb, L1InfProjection))
    assert math.isinf(projection.radius)


def test_config_without_projection_section_defaults_to_no_constraint(tmp_path):
    config = tmp_path / "plain.yaml"
    lines = SYNTHETIC["classification"].read_text().splitlines()
    projection_keys = ("projection:", "  radius:", "  mode:", "  anneal:")
    text = "\n".join(line for line in lines if not line.startswith(projection_keys))
    assert "projection:" not in text
    config.write_text(text)
    cli = fit_cli(["--config", str(config), *shrink(tmp_path)], run=False)
    projection = next(cb for cb in cli.trainer.callbacks if isinstance(cb, L1InfProjection))
    assert math.isinf(projection.radius)


def test_bad_radius_on_the_command_line_fails_with_the_argument_named(tmp_path):
    with pytest.raises(ValueError, match=r"Expected `radius` to be a positive number or inf, got -1"):
        fit_cli(["fit", "--config", str(SYNTHETIC["classification"]), *shrink(tmp_path, "--projection.radius=-1")])


def test_validate_and_test_subcommands_run_on_a_checkpoint(tmp_path):
    args = shrink(tmp_path, "--projection.radius=1.0")
    fit = fit_cli(["fit", "--config", str(SYNTHETIC["classification"]), *args, "--test_after_fit=false"])
    ckpt = fit.trainer.checkpoint_callback.best_model_path
    assert ckpt and Path(ckpt).exists()
    evaluated = {}
    for command in ("validate", "test"):
        cli = fit_cli([command, "--config", str(SYNTHETIC["classification"]), *args, f"--ckpt_path={ckpt}"])
        evaluated[command] = dict(cli.trainer.callback_metrics)
    assert "val/acc" in evaluated["validate"] and "test/acc" in evaluated["test"]


def test_print_config_shows_the_projection_radius(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(SYNTHETIC["classification"]), "--projection.radius=0.25", "--print_config"])
    out = capsys.readouterr().out
    assert "projection:" in out and "radius: 0.25" in out


def test_python_dash_m_entry_point_answers_help():
    result = subprocess.run(
        [sys.executable, "-m", "l1inf_lightning", "fit", "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--projection.radius" in result.stdout


class _Records(logging.Handler):
    """Keeps every record that reaches it."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture(scope="module")
def entry_point_fit(tmp_path_factory):
    """One shrunk ``l1inf-lightning fit`` through the entry point: its stdout, Lightning's log records, its warnings."""
    tmp_path = tmp_path_factory.mktemp("entry_point_fit")
    records = _Records()
    # Lightning's loggers do not propagate to the root logger (caplog's), so listen on them directly.
    lightning_loggers = [logging.getLogger(name) for name in ("lightning.pytorch", "lightning.fabric")]
    for logger in lightning_loggers:
        logger.addHandler(records)
    stdout = io.StringIO()
    try:
        with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(stdout):
            warnings.simplefilter("always")
            main(["fit", "--config", str(SYNTHETIC["classification"]), *shrink(tmp_path)])
    finally:
        for logger in lightning_loggers:
            logger.removeHandler(records)
    return {"out": stdout.getvalue(), "records": records.messages, "warnings": [str(w.message) for w in caught]}


def printed(out: str, label: str) -> str:
    """The value of the line ``label: value`` in ``out``."""
    lines = [line for line in out.splitlines() if line.startswith(f"{label}:")]
    assert len(lines) == 1, f"expected one {label!r} line in:\n{out}"
    return lines[0].split(":", 1)[1].strip()


def test_fit_ends_with_the_logs_the_checkpoint_and_the_commands_that_use_them(entry_point_fit):
    out = entry_point_fit["out"]
    tail = [line.split(":", 1)[0] for line in out.strip().splitlines()[-5:]]
    assert tail == ["Final", "Logs", "TensorBoard", "Checkpoint", "Test it"]
    log_dir = Path(printed(out, "Logs"))
    assert log_dir.name == "version_0" and list(log_dir.glob("events.out.tfevents.*"))
    assert printed(out, "TensorBoard") == f"tensorboard --logdir {shlex.quote(str(log_dir))}"
    checkpoint = Path(printed(out, "Checkpoint"))
    assert checkpoint == log_dir / "checkpoints" / "last.ckpt" and checkpoint.is_file()
    command = shlex.split(printed(out, "Test it"))
    assert command[:2] == ["l1inf-lightning", "test"]
    assert command[2:] == ["--config", str(log_dir / "config.yaml"), "--ckpt_path", str(checkpoint)]


def test_the_printed_test_command_reproduces_the_final_test_metrics(entry_point_fit, capsys):
    out = entry_point_fit["out"]
    final_acc = float(printed(out, "Final").split("test/acc=")[1].split()[0])
    command = shlex.split(printed(out, "Test it"))
    main([*command[1:], "--trainer.enable_progress_bar=false"])
    metrics = capsys.readouterr().out
    assert "test/acc" in metrics
    assert float(metrics.split("test/acc")[1].split()[0]) == pytest.approx(final_acc, abs=1e-4)


def test_entry_point_hides_lightning_tips_and_the_leafspec_warning_and_nothing_else(entry_point_fit):
    assert not [message for message in entry_point_fit["records"] if "Tip:" in message]
    assert any(message.startswith("GPU available") for message in entry_point_fit["records"])  # other info stays
    assert not [message for message in entry_point_fit["warnings"] if "LeafSpec" in message]
    # Scoped to the command: afterwards Lightning's loggers filter nothing and the warning shows again.
    assert not logging.getLogger("lightning.pytorch.utilities.rank_zero").filters
    leafspec = "`isinstance(treespec, LeafSpec)` is deprecated, use `isinstance(treespec, TreeSpec)` instead."
    with pytest.warns(FutureWarning, match="LeafSpec"):
        warnings.warn(leafspec, FutureWarning, stacklevel=1)


def test_default_checkpoint_saves_last_unless_the_config_says_otherwise(tmp_path):
    config = ["--config", str(SYNTHETIC["classification"]), *shrink(tmp_path)]
    assert fit_cli(config, run=False).trainer.checkpoint_callback.save_last is True
    explicit = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.save_last=false"]
    checkpoints = fit_cli([*config, *explicit], run=False).trainer.checkpoint_callbacks
    assert [checkpoint.save_last for checkpoint in checkpoints] == [False]


def test_summary_and_next_steps_are_printed_by_rank_zero_only(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pl.Trainer, "is_global_zero", property(lambda self: False))
    main(["fit", "--config", str(SYNTHETIC["classification"]), *shrink(tmp_path, "--trainer.max_epochs=1")])
    out = capsys.readouterr().out
    assert "Final:" not in out and "Logs:" not in out and "Test it:" not in out


def test_regression_config_trains_standardized_full_batch_sgd_in_radius_aware_mode_with_the_output_penalty(tmp_path):
    args = ["--config", str(SYNTHETIC["regression"]), *shrink(tmp_path, "--data.init_args.batch_size=100")]
    cli = fit_cli(["fit", *args, "--trainer.max_epochs=3", "--test_after_fit=false"])  # test would reset the metrics
    projection = next(cb for cb in cli.trainer.callbacks if isinstance(cb, L1InfProjection))
    assert projection.radius_aware and projection.num_projections == cli.trainer.global_step == 3  # full batch
    datamodule = cli.datamodule
    train_y = datamodule.train_set.tensors[1]
    assert abs(float(train_y.mean())) < 1e-5 and float(train_y.std(correction=0)) == pytest.approx(1.0, abs=1e-5)
    assert float(datamodule.target_std) > 100  # the raw targets; MSE in original units is target_std² times test/mse
    assert cli.model.net.layers[-1].bias is None and cli.model.output_l1_penalty > 0
    assert float(cli.trainer.callback_metrics["train/penalty"]) > 0
    optimizer = cli.trainer.optimizers[0]
    assert isinstance(optimizer, torch.optim.SGD) and optimizer.defaults["momentum"] > 0
    scheduler = cli.trainer.lr_scheduler_configs[0].scheduler
    assert isinstance(scheduler, torch.optim.lr_scheduler.CosineAnnealingLR)
    config = yaml.safe_load(SYNTHETIC["regression"].read_text())
    assert scheduler.T_max == config["trainer"]["max_epochs"]  # the config's lr decays over all its epochs


@pytest.mark.slow
def test_regression_config_explains_most_of_the_test_variance(tmp_path):
    # The config as shipped (1,500 full-batch epochs, about a minute on one core), data seed 0, c = 1. Before the
    # standardized radius-aware protocol, the config's test MSE at c = 10 was a third of Var(y) (R² ≈ 0.67).
    args = [
        "fit",
        "--config",
        str(SYNTHETIC["regression"]),
        "--projection.radius=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        f"--trainer.logger.init_args.save_dir={tmp_path}",
        f"--trainer.default_root_dir={tmp_path}",
    ]
    cli = fit_cli(args)
    test_y = cli.datamodule.test_set.tensors[1]
    r2 = 1 - float(cli.trainer.callback_metrics["test/mse"]) / float(test_y.var(correction=0))
    assert r2 >= 0.95
