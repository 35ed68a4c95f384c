"""The LightningCLI entry point on the real synthetic configs, shrunk."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

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
