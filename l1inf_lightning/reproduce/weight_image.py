"""The talk's picture of the first hidden layer's first twenty input columns, with and without projection.

The talk ("A Synthesis Classification Experiment") shows |W| of the first twenty columns of the first hidden layer's
weight matrix of the 500-100-50-20-2 net, trained with and without the L1,∞ projection, and says the first four
columns are dense and the others sparse, since only x1..x4 enter the true model. ``reproduce weight-image`` fits the
classification config at c = inf and at the config's c, seed by seed, keeps each run's ``last.ckpt``, and measures
the first layer from it: the share of its L1 mass on x1..x4, the share of nonzero weights in columns 1–4 and 5–500,
its sparsity. The measures (and the first twenty columns of |W|) are stored once per run in ``weights/<run_id>.json``,
so a rerun trains nothing, reads no checkpoint, and rewrites the same tables.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from matplotlib.figure import Figure

from l1inf_lightning._checks import is_int
from l1inf_lightning.cv.backends import LocalBackend
from l1inf_lightning.cv.settings import LOGS_DIR, RunSpec, SweepError, radius_label
from l1inf_lightning.cv.statistics import mean_std
from l1inf_lightning.cv.store import load_results, prepare_output, result_path, write_json_atomic
from l1inf_lightning.reproduce.experiments import _QUICK_DATA, Protocol
from l1inf_lightning.reproduce.runner import run_specs
from l1inf_lightning.reproduce.tables import number

__all__ = [
    "CONFIG",
    "FIGURE",
    "INFORMATIVE",
    "NAME",
    "SHOWN",
    "TALK_WORDS",
    "WeightRow",
    "first_layer_weight",
    "list_weight_runs",
    "measure_first_layer",
    "reproduce_weight_image",
    "weight_protocol",
]

NAME = "weight-image"
CONFIG = Path(__file__).resolve().parents[2] / "configs" / "synthetic_classification.yaml"
FIGURE = "weight_image.png"
LABEL = "weights"
MEASURES_DIR = "weights"
INFORMATIVE = 4  # y depends on x1..x4 only
SHOWN = 20  # the talk's figure: the first twenty columns
DEFAULT_SEEDS = 5
# Options of every run: nothing that only a person at a terminal reads. Checkpointing stays on: the figure and the
# measures are read from each run's last.ckpt.
_QUIET = ("--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false")
_QUICK_EPOCHS = 2
TALK_WORDS = (
    "Figure: Visualization of the first twenty columns of the resulting weight matrix representing the first hidden "
    "layer with/without  $L_{1,\\infty}$ -weight normalization.",
    "We also observe that the first 4 columns of the resulting weight matrix are dense, while the others are sparse. "
    "It is because that only the first four elements of the input are included in the true model.",
)


def weight_protocol(*, quick: bool, seeds: int | None) -> Protocol:
    """The runs' protocol: the config at c = inf and at its own c, the config's epochs, seeds 0 .. seeds - 1.

    Args:
        quick: A smoke test: one seed, 2 epochs, smaller test and validation sets.
        seeds: Seeds (data, initialization and shuffle); None for 5 (``--quick``: 1).

    Raises:
        SweepError: If ``seeds`` is not a positive integer.
    """
    if seeds is not None and (not is_int(seeds) or seeds < 1):
        raise SweepError(f"Expected `--seeds` to be an integer >= 1, got {seeds!r}")
    config = yaml.safe_load(CONFIG.read_text(encoding="utf-8"))
    net = config["model"]["init_args"]["net"]["init_args"]
    widths = [net["in_features"], *net["hidden"], net["out_features"]]
    return Protocol(
        experiment=NAME,
        config=str(CONFIG),
        columns=("-".join(str(width) for width in widths),),
        radii=(math.inf, float(config["projection"]["radius"])),
        seeds=seeds or (1 if quick else DEFAULT_SEEDS),
        epochs=_QUICK_EPOCHS if quick else int(config["trainer"]["max_epochs"]),
        quick=quick,
        overrides=_QUIET + (_QUICK_DATA if quick else ()),
    )


def list_weight_runs(protocol: Protocol, output: str | Path) -> list[RunSpec]:
    """Every run, seed by seed: the config on the whole training set at each c, then a test (``fold`` None).

    Args:
        protocol: :func:`weight_protocol`.
        output: The reproduction's directory (its runs log under ``<output>/logs``).
    """
    log_root = str(Path(output).resolve() / LOGS_DIR)
    specs = []
    for seed in range(protocol.seeds):
        overrides = (*protocol.overrides, f"--trainer.max_epochs={protocol.epochs}", f"--data.init_args.seed={seed}")
        for radius in protocol.radii:
            specs.append(RunSpec(len(specs), radius, None, None, seed, protocol.config, overrides, log_root, LABEL))
    return specs


def first_layer_weight(checkpoint: str | Path) -> tuple[str, torch.Tensor]:
    """The first hidden layer's weight in a Lightning checkpoint: the first 2-D ``*.weight`` of its state dict.

    Returns:
        Its state-dict key and the weight (out_features × in_features, on the CPU, float32).

    Raises:
        ValueError: If the state dict has no 2-D weight.
    """
    # Our own file; Lightning checkpoints hold the hyperparameters as plain Python objects, not only tensors.
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    for key, value in state.items():  # registration order: the first layer first
        if key.endswith("weight") and value.ndim == 2:
            return key, value.detach().float()
    raise ValueError(f"Expected the state dict of {str(checkpoint)!r} to hold a 2-D weight, got {list(state)}")


def measure_first_layer(weight: torch.Tensor, informative: int = INFORMATIVE) -> dict[str, float]:
    """How the first layer's weights split between the informative inputs (the first ``informative``) and the rest.

    Example:
        >>> w = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 2.0, 0.0, 0.0]])
        >>> m = measure_first_layer(w, informative=1)
        >>> m["l1_share_informative"], m["nonzero_informative"], round(m["nonzero_rest"], 4), m["sparsity"]
        (0.5, 1.0, 0.1667, 0.625)

    Args:
        weight: ``(out_features, in_features)``, one row per hidden neuron (``nn.Linear``'s layout).
        informative: How many leading inputs the true model uses.

    Returns:
        ``l1_share_informative``: Σ|W[:, :informative]| / Σ|W| (weights only; uniform would be informative / inputs),
        NaN for an all-zero layer; ``nonzero_informative`` and ``nonzero_rest``: the share of nonzero weights in the
        first ``informative`` columns and in the others; ``sparsity``: the share of zero weights of the layer.
    """
    magnitude = weight.abs().double()
    total = float(magnitude.sum())
    nonzero = (weight != 0).double()
    return {
        "l1_share_informative": float(magnitude[:, :informative].sum()) / total if total else math.nan,
        "nonzero_informative": float(nonzero[:, :informative].mean()),
        "nonzero_rest": float(nonzero[:, informative:].mean()),
        "sparsity": 1.0 - float(nonzero.mean()),
    }


def _checkpoint(result: Mapping[str, Any]) -> Path | None:
    log_dir = Path(result["log_dir"])
    default = log_dir / "checkpoints" / "last.ckpt"  # where Lightning's default ModelCheckpoint puts it
    if default.is_file():
        return default
    return next(iter(sorted(log_dir.rglob("last.ckpt"))), None)


def _measures_path(directory: Path, spec: RunSpec) -> Path:
    return directory / MEASURES_DIR / f"{spec.run_id}.json"


def _forget_unmeasurable(directory: Path, specs: Sequence[RunSpec]) -> None:
    """Delete the result of an ok run whose measures were never stored and whose checkpoint is gone: it runs again."""
    results = load_results(directory)
    for spec in specs:
        result = results.get(spec.run_id)
        if result is None or result["status"] != "ok" or _measures_path(directory, spec).exists():
            continue
        if _checkpoint(result) is None:
            print(f"Run {spec.run_id} has no stored measures and no checkpoint left: it will be run again.")
            result_path(directory, spec).unlink()


def _measures(directory: Path, spec: RunSpec, result: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The stored measures of an ok run, measured from its checkpoint (and stored) the first time."""
    if result is None or result["status"] != "ok":
        return None
    path = _measures_path(directory, spec)
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    checkpoint = _checkpoint(result)
    if checkpoint is None:  # only if it went away during this very call
        return None
    key, weight = first_layer_weight(checkpoint)
    if weight.shape[1] < SHOWN:
        raise ValueError(f"Expected the first layer of {checkpoint} to have >= {SHOWN} inputs, got {weight.shape}")
    measures = {
        "run_id": spec.run_id,
        "radius": radius_label(spec.radius),
        "seed": spec.seed,
        "checkpoint": str(checkpoint.relative_to(directory))
        if checkpoint.is_relative_to(directory)
        else str(checkpoint),
        "key": key,
        "shape": list(weight.shape),
        **measure_first_layer(weight),
        "first_columns_abs": weight[:, :SHOWN].abs().tolist(),
    }
    write_json_atomic(path, measures)
    return measures


@dataclass(frozen=True)
class WeightRow:
    """One c of the table: the values of every run that ended ok, and counts.

    Attributes:
        radius: The radius c.
        l1_share: Share of the first layer's L1 mass on x1..x4, per run.
        nonzero_informative: Share of nonzero weights in columns 1–4, per run.
        nonzero_rest: Share of nonzero weights in columns 5–500, per run.
        sparsity: Share of zero weights of the first layer, per run.
        accuracy: Test accuracy (fraction), per run.
        num_single_class: Runs that predicted one class for every test sample.
        num_failed: Runs that failed.
        num_missing: Runs not recorded yet.
    """

    radius: float
    l1_share: tuple[float, ...]
    nonzero_informative: tuple[float, ...]
    nonzero_rest: tuple[float, ...]
    sparsity: tuple[float, ...]
    accuracy: tuple[float, ...]
    num_single_class: int
    num_failed: int
    num_missing: int

    @property
    def num_ok(self) -> int:
        """Runs that ended ok and were measured."""
        return len(self.sparsity)


def _collect(
    protocol: Protocol,
    specs: Sequence[RunSpec],
    results: Mapping[str, Mapping[str, Any]],
    measures: Mapping[str, Mapping[str, Any] | None],
) -> list[WeightRow]:
    rows = []
    for radius in protocol.radii:
        mine = [spec for spec in specs if spec.radius == radius]
        stored = [results[spec.run_id] for spec in mine if spec.run_id in results]
        measured = [(results[s.run_id], measures[s.run_id]) for s in mine if measures.get(s.run_id) is not None]
        rows.append(
            WeightRow(
                radius=radius,
                l1_share=tuple(float(m["l1_share_informative"]) for _, m in measured),
                nonzero_informative=tuple(float(m["nonzero_informative"]) for _, m in measured),
                nonzero_rest=tuple(float(m["nonzero_rest"]) for _, m in measured),
                sparsity=tuple(float(m["sparsity"]) for _, m in measured),
                accuracy=tuple(float(r["metrics"]["test/acc"]) for r, _ in measured),
                num_single_class=sum(float(r["metrics"].get("test/top_class_share", 0.0)) >= 1.0 for r, _ in measured),
                num_failed=sum(result["status"] == "failed" for result in stored),
                num_missing=len(mine) - len(measured) - sum(result["status"] == "failed" for result in stored),
            )
        )
    return rows


def _write_csv(rows: Sequence[WeightRow], path: Path) -> None:
    lines = []
    for row in rows:
        line: dict[str, Any] = {"c": radius_label(row.radius)}
        for name in ("l1_share", "nonzero_informative", "nonzero_rest", "sparsity", "accuracy"):
            mean, std = mean_std(getattr(row, name))
            line[f"{name}_mean"], line[f"{name}_std"] = number(mean), number(std)
        line["runs_single_class"] = row.num_single_class
        line["runs_ok"], line["runs_failed"], line["runs_missing"] = row.num_ok, row.num_failed, row.num_missing
        lines.append(line)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(lines[0]))
        writer.writeheader()
        writer.writerows(lines)


def _percent(values: Sequence[float], digits: int = 1) -> str:
    mean, std = mean_std(values)
    if math.isnan(mean):
        return "–"
    return f"{100 * mean:.{digits}f}" if math.isnan(std) else f"{100 * mean:.{digits}f} ± {100 * std:.{digits}f}"


def _markdown(protocol: Protocol, rows: Sequence[WeightRow], inputs: int | None) -> str:
    uniform = f"{100 * INFORMATIVE / inputs:.1f} %" if inputs else "4 / inputs"
    lines = [
        f"## First hidden layer, first {SHOWN} input columns, with and without projection (synthetic classification)",
        "",
        f"Protocol: {protocol.describe()}.",
        "",
        f"The talk: “{TALK_WORDS[0]}” — “{TALK_WORDS[1]}” It prints no numbers: the rows below measure its statement "
        f"on our runs, and `{FIGURE}` draws |W| of the first {SHOWN} columns (seed 0).",
        "",
        f"Ours: mean ± std over the runs that ended ok, in %. L1 share x1–x{INFORMATIVE} = Σ|W[:, 1..{INFORMATIVE}]| / "
        f"Σ|W| of the first layer's weights (bias not counted; spread evenly it would be {uniform}); nonzero = share "
        f"of nonzero weights in columns 1–{INFORMATIVE} and in the other columns; sparsity = zero weights of the "
        "first layer; single class = runs that predict one class for every test sample.",
        "",
        f"| c | L1 share x1–x{INFORMATIVE} % | nonzero cols 1–{INFORMATIVE} % | nonzero other cols % | sparsity % "
        "| test acc % | single class | runs ok / failed / missing |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {radius_label(row.radius)} | {_percent(row.l1_share)} | {_percent(row.nonzero_informative)} "
            f"| {_percent(row.nonzero_rest)} | {_percent(row.sparsity)} | {_percent(row.accuracy, 2)} "
            f"| {row.num_single_class} | {row.num_ok} / {row.num_failed} / {row.num_missing} |"
        )
    missing = sum(row.num_missing for row in rows)
    if missing:
        lines += ["", f"{missing} run(s) are not recorded yet: rerun the command to finish them."]
    return "\n".join(lines) + "\n"


def _plot(protocol: Protocol, specs: Sequence[RunSpec], measures: Mapping[str, Any], path: Path) -> None:
    """|W| of the first columns of the first layer, one panel per c (seed 0), each with its own colour bar."""
    figure = Figure(figsize=(12, 5))  # no pyplot: no global state, no display needed (Agg)
    axes = figure.subplots(1, len(protocol.radii))
    for axis, radius in zip(axes, protocol.radii, strict=True):
        spec = next(spec for spec in specs if spec.radius == radius and spec.seed == 0)
        measured = measures.get(spec.run_id)
        words = "without projection" if math.isinf(radius) else "with projection"
        axis.set_title(f"{words} (c = {radius_label(radius)}, seed 0)")
        axis.set_xlabel("input j (column of W)")
        axis.set_ylabel("hidden neuron (row of W)")
        if measured is None:
            axis.text(0.5, 0.5, "not run yet, or failed", ha="center", va="center", transform=axis.transAxes)
            continue
        magnitude = torch.tensor(measured["first_columns_abs"])
        rows, columns = magnitude.shape
        image = axis.imshow(
            magnitude.numpy(),
            aspect="auto",
            cmap="Blues",  # zero is white: the projection's exact zeros show as blank
            interpolation="nearest",
            extent=(0.5, columns + 0.5, rows + 0.5, 0.5),
        )
        axis.axvline(INFORMATIVE + 0.5, color="C3", linewidth=1, linestyle="--")
        axis.set_xticks(range(1, columns + 1))
        figure.colorbar(image, ax=axis, label="|w|")
    figure.suptitle(
        f"First hidden layer, first {SHOWN} input columns (only x1..x{INFORMATIVE} enter the true model: left of the "
        "dashed line)"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def reproduce_weight_image(
    *, quick: bool, seeds: int | None, output: str | Path, workers: int, progress: bool = True
) -> str:
    """Fit the classification config with and without projection, then write, print and return the table.

    Every run not recorded under ``OUTPUT/weight-image/`` is trained; each ok run's first layer is measured once
    from its ``last.ckpt`` into ``weights/<run_id>.json``. A finished reproduction trains nothing and rewrites the
    same ``table.csv``, ``table.md`` and ``weight_image.png``.

    Args:
        quick: A smoke test (1 seed, 2 epochs, smaller test and validation sets), not a measurement.
        seeds: Seeds 0 .. seeds - 1 (data, initialization and shuffle); None for 5 (``quick``: 1).
        output: The parent directory; this reproduction lives in ``output/weight-image``.
        workers: Fits at once.
        progress: Show a progress bar.

    Returns:
        The table as Markdown (``table.md``).

    Raises:
        SweepError: On bad ``seeds`` or ``workers``, or a directory that holds another protocol; before any training.
        SweepInterrupted: On SIGINT or SIGTERM; the runs already finished are kept.
    """
    protocol = weight_protocol(quick=quick, seeds=seeds)
    backend = LocalBackend(workers)  # checks `workers` before anything is written
    directory = prepare_output(Path(output) / NAME, protocol)
    specs = list_weight_runs(protocol, directory)
    _forget_unmeasurable(directory, specs)
    results = run_specs(NAME, specs, directory, backend, progress=progress)
    measures = {spec.run_id: _measures(directory, spec, results.get(spec.run_id)) for spec in specs}
    rows = _collect(protocol, specs, results, measures)
    inputs = next((int(m["shape"][1]) for m in measures.values() if m is not None), None)
    text = _markdown(protocol, rows, inputs)
    _write_csv(rows, directory / "table.csv")
    (directory / "table.md").write_text(text, encoding="utf-8")
    _plot(protocol, specs, measures, directory / FIGURE)
    print()
    print(text, end="")
    return text
