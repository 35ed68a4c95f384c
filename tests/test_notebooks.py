"""The notebooks run top to bottom in quick mode, and are stored without outputs."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stripped_of_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    assert all(
        not cell.get("outputs") and not cell.get("execution_count")
        for cell in notebook.cells
        if cell.cell_type == "code"
    )


def execute(path: Path, directory: Path) -> nbformat.NotebookNode:
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(directory)}}
    ).execute()
    return notebook


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("name") == "stdout"
    )


@pytest.mark.parametrize("path", [p for p in NOTEBOOKS if p.name != "reproduce.ipynb"], ids=lambda p: p.name)
def test_notebook_executes_in_quick_mode(path, monkeypatch, tmp_path):
    monkeypatch.setenv("L1INF_QUICK", "1")
    notebook = execute(path, tmp_path)
    assert any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")


def test_reproduce_notebook_shows_every_table_and_figure_of_the_quick_reproductions(
    quick_reproductions, monkeypatch, tmp_path
):
    # The quick reproductions the tests made (every `reproduce NAME --quick`) stand for the results directory.
    monkeypatch.setenv("L1INF_RESULTS", str(quick_reproductions))
    monkeypatch.delenv("L1INF_QUICK", raising=False)
    notebook = execute(NOTEBOOK_DIR / "reproduce.ipynb", tmp_path)
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    tables = [output["data"]["text/markdown"] for output in outputs if "text/markdown" in output.get("data", {})]
    assert len(images) == len(tables) == 7
    assert all("QUICK" in table for table in tables)  # it read the quick results, and says so
    text = printed(notebook)
    assert "running" not in text  # nothing was trained: every result was there
    mnist = (NOTEBOOK_DIR.parent / "data" / "MNIST").is_dir()  # `make test` unpacks it; the column says so if not
    for words in (
        "Unconstrained: test MSE",
        "radius-aware: gap",
        "of the L1 mass on x1..x4",
        "500-100-20-2:",
        "c = inf: accuracy",
        "MNIST: ours" if mnist else "MNIST: not run: no data here",
        "CIFAR10: not run: no data here",
        "classification: c =",
    ):
        assert words in text, words


def test_reproduce_notebook_runs_a_missing_reproduction_in_quick_mode(quick_reproductions, monkeypatch, tmp_path):
    # A results directory with only `depth` missing: the notebook runs that one with --quick and reads the rest.
    results = tmp_path / "results"
    results.mkdir()
    for name in ("regression", "classification", "weight-image", "sample-size", "regularizers", "cv"):
        (results / name).symlink_to(quick_reproductions / name)
    monkeypatch.setenv("L1INF_RESULTS", str(results))
    monkeypatch.delenv("L1INF_QUICK", raising=False)
    notebook = execute(NOTEBOOK_DIR / "reproduce.ipynb", tmp_path)
    text = printed(notebook)
    assert "depth: no results in" in text and "running `l1inf-lightning reproduce depth --quick`" in text
    assert text.count("no results in") == 1


def test_there_is_a_notebook():
    assert NOTEBOOKS
