"""The README's code examples run as written (shrunk to a few epochs), so they cannot drift from the package."""

from __future__ import annotations

import logging
import math
import re
import shlex
from pathlib import Path

import pytest
import torch
import yaml

from l1inf_lightning.commands import main
from l1inf_lightning.functional import l1inf_norm

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
MAKEFILE = ROOT / "Makefile"


def python_block_after(marker: str) -> str:
    """The first ```python block after the line holding ``marker``."""
    text = README.read_text()
    start = text.index(marker)
    match = re.search(r"```python\n(.*?)```", text[start:], flags=re.DOTALL)
    assert match, f"no python block after {marker!r}"
    return match.group(1)


def test_radius_aware_example_trains_a_user_module_inside_the_annealed_ball(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = python_block_after("<!-- radius-aware example")
    assert "max_epochs=100" in code
    namespace: dict = {}
    exec(compile(code.replace("max_epochs=100", "max_epochs=3"), "README.md", "exec"), namespace)
    model, projection = namespace["model"], namespace["projection"]
    hidden, output = [model.net[0], model.net[2]], model.net[4]
    c = projection.radii["net.0"]
    assert projection.mode == "radius_aware" and c == 0.01  # annealed over the first quarter of the 30 steps
    assert all(float(l1inf_norm(layer)) <= c * (1 + 1e-6) for layer in hidden)
    assert float(output.output_scale) == pytest.approx(c**-2, rel=1e-6)
    assert math.isfinite(float(output.weight.abs().sum())) and torch.any(output.weight != 0)


# Shrinking a README command: epochs ÷ 50 (the configs' 100 and 200 become 2 and 4, the examples' 50 and 150 become
# 1 and 3, so a resume still goes past the run it resumes) and two batches per loop.
EPOCH_DIVISOR = 50
SHRINK = [
    "--trainer.limit_train_batches=2",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
]
TRAINING_SUBCOMMANDS = ("fit", "validate", "test", "predict")


def bash_commands() -> list[str]:
    """Every command of the README's ```bash blocks, in order, continuation lines joined and comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.DOTALL):
        for command in block.replace("\\\n", " ").splitlines():
            words = shlex.split(command, comments=True)
            if words:
                commands.append(shlex.join(words))
    return commands


def make_recipe(target: str) -> str:
    """The first command of the Makefile's ``target`` (or ""), ``?=`` defaults filled in, ``$(BIN)/`` dropped."""
    text = MAKEFILE.read_text()
    defaults = dict(re.findall(r"^(\w+) \?= (.+)$", text, flags=re.MULTILINE))
    recipe = re.search(rf"^{re.escape(target)}:.*\n\t(.+)$", text, flags=re.MULTILINE)
    if recipe is None:
        return ""
    command = recipe.group(1).replace("$(BIN)/", "")
    return re.sub(r"\$\((\w+)\)", lambda match: defaults.get(match.group(1), match.group(0)), command)


def training_commands() -> list[list[str]]:
    """The README's commands that train or evaluate, as arguments of ``l1inf-lightning``, in the README's order.

    ``make run`` counts as the command its recipe runs. ``cv`` commands are left out: the README's sweeps are 50
    fits, or need Ray (``tests/cv`` runs the sweep itself on shrunk settings).
    """
    commands = []
    for command in bash_commands():
        if command.startswith("make "):
            command = make_recipe(command.split()[1])
        words = shlex.split(command)
        if len(words) > 1 and words[0] == "l1inf-lightning" and words[1] in TRAINING_SUBCOMMANDS:
            commands.append(words[1:])
    return commands


def shrunk(args: list[str]) -> list[str]:
    """``args`` with fewer epochs and batches (``--print_config`` commands as they are: they train nothing)."""
    if "--print_config" in args:
        return args
    args = list(args)
    if args[0] == "fit":
        if "--trainer.max_epochs" in args:
            index = args.index("--trainer.max_epochs") + 1
            args[index] = str(max(1, int(args[index]) // EPOCH_DIVISOR))
        else:
            config = yaml.safe_load(Path(args[args.index("--config") + 1]).read_text())
            args += ["--trainer.max_epochs", str(config["trainer"]["max_epochs"] // EPOCH_DIVISOR)]
    return [*args, *SHRINK]


def printed(out: str, label: str) -> str:
    """The value of the line ``label: value`` in ``out``."""
    (line,) = [line for line in out.splitlines() if line.startswith(f"{label}:")]
    return line.split(":", 1)[1].strip()


def test_readme_training_commands_run_as_written_shrunk(tmp_path, monkeypatch, capsys, caplog):
    # A fresh checkout: the configs where the README's paths expect them, no logs yet.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    # `make run` first, the resume (the command that names a version) last, the others in the README's order.
    make_run, *others = training_commands()
    (resume,) = [args for args in others if "--trainer.logger.init_args.version" in args]
    command_line = [args for args in others if args is not resume]
    assert make_run == ["fit", "--config", "configs/synthetic_classification.yaml"]
    assert "--ckpt_path" in resume and any(args[0] == "test" for args in command_line)

    def run(args: list[str]) -> str:
        if "--print_config" in args:
            with pytest.raises(SystemExit, match="0"):
                main(shrunk(args))
        else:
            main(shrunk(args))
        return capsys.readouterr().out

    outputs = [run(args) for args in [make_run, *command_line]]
    logs = tmp_path / "logs" / "synthetic_classification"
    versions = sorted(path.name for path in logs.iterdir())

    # `make run` ends as the README's "Two commands" section shows (the metrics aside).
    shown = re.search(r"```text\n(.*?)```", README.read_text(), flags=re.DOTALL).group(1).strip().splitlines()
    tail = outputs[0].strip().splitlines()[-len(shown) :]
    assert tail[0].startswith("Final: c=0.04  test/acc=") and tail[1:] == shown[1:]
    for args, out in zip([make_run, *command_line], outputs, strict=True):
        if args[0] == "fit" and "--print_config" not in args:
            assert Path(printed(out, "Checkpoint")).is_file(), out

    # The resumed run starts from the checkpoint, goes on in version_0 up to its own epochs and makes no new version.
    with caplog.at_level(logging.INFO, logger="lightning.pytorch"):
        # Lightning's logger does not propagate to caplog's root handler: hand it caplog's handler directly.
        logging.getLogger("lightning.pytorch").addHandler(caplog.handler)
        try:
            out = run(resume)
        finally:
            logging.getLogger("lightning.pytorch").removeHandler(caplog.handler)
    assert "Restored all states from the checkpoint at logs/synthetic_classification/version_0" in caplog.text
    assert printed(out, "Logs") == "logs/synthetic_classification/version_0"
    assert sorted(path.name for path in logs.iterdir()) == versions
    checkpoint = torch.load(printed(out, "Checkpoint"), map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] + 1 == int(shrunk(resume)[resume.index("--trainer.max_epochs") + 1])
