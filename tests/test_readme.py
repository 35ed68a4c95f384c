"""The README's code examples run as written (shrunk to a few epochs), so they cannot drift from the package."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
import torch

from l1inf_lightning.functional import l1inf_norm

README = Path(__file__).resolve().parents[1] / "README.md"


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
