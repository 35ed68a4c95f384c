"""What each reproduction trains: its grid (columns × c), the talk's numbers for it, and its runs (pure data).

Every run is an ordinary ``fit`` of a repository config on the whole training set followed by a test
(a :class:`~l1inf_lightning.cv.RunSpec` with no fold), with only the radius, the seeds and the column's own
options changed, so ``--quick`` and the full protocol differ by epochs, seeds, c and sample sizes alone.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from l1inf_lightning.callbacks import L1InfProjection
from l1inf_lightning.cv.settings import LOGS_DIR, RunSpec, SweepError, radius_label
from l1inf_lightning.reproduce.talk import BOXPLOT_CLAIM, TALK_DEPTH, TALK_SAMPLE_SIZE, TalkCell

__all__ = ["EXACT_MODE", "EXPERIMENTS", "Column", "Experiment", "Protocol", "list_runs", "make_protocol"]

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
INF = math.inf
# Options of every run: nothing that only a person at a terminal reads, and no checkpoint files.
_QUIET = (
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.enable_checkpointing=false",
)
# --quick: a smoke test of the whole pipeline, not a measurement.
_QUICK_DATA = ("--data.init_args.num_test=200", "--data.init_args.num_val=100")


@dataclass(frozen=True)
class Column:
    """One column of a talk's table: its header, a run-id-safe key, and the fit options that make it.

    Args:
        header: As the talk prints it, e.g. ``500-100-20-2`` or ``1000``.
        key: Prefix of its runs' ids and log directories, e.g. ``depth100-20`` or ``n1000``.
        overrides: LightningCLI arguments that make this column (e.g. the hidden widths).
    """

    header: str
    key: str
    overrides: tuple[str, ...]


@dataclass(frozen=True)
class Experiment:
    """A table of the talk: columns × c on one config, and the talk's cells beside ours.

    Args:
        name: The ``reproduce NAME``.
        title: One line for the table's heading.
        config: The config every run fits.
        column_title: What the columns vary, e.g. ``net`` or ``n (training samples)``.
        columns: The talk's columns.
        radii: The talk's rows (c), in its order (``inf`` first).
        talk: ``{column header: {c: (gap, acc %) or None}}``, or None where the talk prints no numbers.
        quick_columns: Headers of the columns ``--quick`` runs.
        quick_radii: The c that ``--quick`` runs.
        metric: The test metric of the table (``test/acc`` is shown in %).
        claim: What the talk says, where it shows a figure and prints no numbers (then ``talk`` is None).
        figure: ``lines`` (ours and the talk's numbers against c) or ``boxes`` (box plots over the runs per c).
        quick_epochs: Epochs of ``--quick``.
    """

    name: str
    title: str
    config: Path
    column_title: str
    columns: tuple[Column, ...]
    radii: tuple[float, ...]
    talk: Mapping[str, Mapping[float, TalkCell]] | None
    quick_columns: tuple[str, ...]
    quick_radii: tuple[float, ...]
    metric: str = "test/acc"
    claim: str = ""
    figure: str = "lines"
    quick_epochs: int = 2

    @property
    def metric_name(self) -> str:
        """The metric's short name in ``table.csv``: ``acc`` or ``mse``."""
        return self.metric.rsplit("/", 1)[-1]

    @property
    def percent(self) -> bool:
        """Whether the metric is an accuracy, shown in % (the talk's unit)."""
        return self.metric_name == "acc"

    @property
    def metric_header(self) -> str:
        """The metric's column header: ``acc %`` or ``test mse``."""
        return "acc %" if self.percent else f"test {self.metric_name}"


def _hidden(widths: str) -> Column:
    hidden = f"--model.init_args.net.init_args.hidden=[{widths.replace('-', ',')}]"
    return Column(f"500-{widths}-2", f"depth{widths}", (hidden,))


def _sample_size(n: int) -> Column:
    return Column(str(n), f"n{n}", (f"--data.init_args.num_train={n}",))


# Algorithm 1 exactly as the talk writes it: projected steps on the net as it is (with its output bias).
EXACT_MODE = ("--projection.mode=exact", "--model.init_args.net.init_args.output_bias=true")
_CLASSIFICATION_COLUMNS = (
    Column("radius-aware", "radius-aware", ()),
    Column("exact (Algorithm 1)", "exact", EXACT_MODE),
)


EXPERIMENTS: dict[str, Experiment] = {
    "depth": Experiment(
        name="depth",
        title="Depth × c on synthetic classification (500 training samples)",
        config=CONFIGS / "synthetic_classification.yaml",
        column_title="net",
        columns=tuple(_hidden(widths) for widths in ("100-20", "100-50-20", "100-100-50-20")),
        radii=(INF, 0.5, 0.16, 0.13, 0.1, 0.07, 0.04, 0.01),
        talk=TALK_DEPTH,
        quick_columns=("500-100-20-2", "500-100-50-20-2", "500-100-100-50-20-2"),
        quick_radii=(INF, 0.1),
    ),
    "sample-size": Experiment(
        name="sample-size",
        title="Training sample size × c on synthetic classification (500-100-50-20-2 net)",
        config=CONFIGS / "synthetic_classification.yaml",
        column_title="n (training samples)",
        columns=tuple(_sample_size(n) for n in (500, 1000, 1500, 2000, 2500)),
        radii=(INF, 0.16, 0.13, 0.1, 0.07, 0.04, 0.01),
        talk=TALK_SAMPLE_SIZE,
        quick_columns=("500", "1000"),
        quick_radii=(INF, 0.1),
    ),
    "regression": Experiment(
        name="regression",
        title="Generalization error and sparsity rate vs c on synthetic regression (1000-300-1 net)",
        config=CONFIGS / "synthetic_regression.yaml",
        column_title="net",
        columns=(Column("1000-300-1", "regression", ()),),
        radii=(INF, 10.0, 3.0, 1.0, 0.3, 0.1),
        talk=None,
        quick_columns=("1000-300-1",),
        quick_radii=(INF, 0.3),
        metric="test/mse",
        claim=BOXPLOT_CLAIM,
        figure="boxes",
        quick_epochs=100,  # the config validates (and so measures the gap) every 100 epochs
    ),
    "classification": Experiment(
        name="classification",
        title="Generalization error and sparsity rate vs c on synthetic classification (500-100-50-20-2 net)",
        config=CONFIGS / "synthetic_classification.yaml",
        column_title="mode",
        columns=_CLASSIFICATION_COLUMNS,
        radii=(INF, 0.5, 0.16, 0.13, 0.1, 0.07, 0.04, 0.01),
        talk=None,
        quick_columns=("radius-aware", "exact (Algorithm 1)"),
        quick_radii=(INF, 0.1),
        claim=BOXPLOT_CLAIM,
        figure="boxes",
    ),
}


@dataclass(frozen=True)
class Protocol:
    """How one reproduction is run; stored in its output directory, which then refuses another protocol.

    Args:
        experiment: The experiment's name.
        config: Absolute path of its config.
        columns: Headers of the columns run.
        radii: The c run, in the talk's order.
        seeds: Seeds 0 .. seeds - 1: data (``data.seed``), initialization and shuffle (``seed_everything``).
        epochs: Training epochs of every run.
        quick: Whether this is ``--quick`` (a smoke test: smaller test and validation sets).
        overrides: LightningCLI arguments of every run.
    """

    experiment: str
    config: str
    columns: tuple[str, ...]
    radii: tuple[float, ...]
    seeds: int
    epochs: int
    quick: bool
    overrides: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """The protocol as stored in the output directory: the config by name and a hash of its contents (see cv)."""
        return {
            "experiment": self.experiment,
            "config": Path(self.config).name,
            "config_sha256": hashlib.sha256(Path(self.config).read_bytes()).hexdigest(),
            "columns": list(self.columns),
            "radii": [radius_label(r) for r in self.radii],
            "seeds": self.seeds,
            "epochs": self.epochs,
            "quick": self.quick,
            "overrides": list(self.overrides),
        }

    def describe(self) -> str:
        """The protocol in words for the table's header: optimizer, lr, epochs, batch size, seeds, mode, data."""
        config = yaml.safe_load(Path(self.config).read_text(encoding="utf-8"))
        optimizer = config["model"]["init_args"]["optimizer"]
        data_class = _import(config["data"]["class_path"])
        data = {**_defaults(data_class), **config["data"].get("init_args", {})}
        projection = {**_defaults(L1InfProjection), **config.get("projection", {})}
        mode = projection["mode"]
        if mode == "radius_aware":
            mode += (
                f" (c shrinks from {projection['start_radius']} over the first {projection['anneal']:.0%} of the steps)"
            )
        seeds = "seed 0" if self.seeds == 1 else f"seeds 0–{self.seeds - 1}"
        return (
            f"{'QUICK (a smoke test, not a measurement): ' if self.quick else ''}"
            f"config {Path(self.config).name}; optimizer {optimizer['class_path'].rsplit('.', 1)[-1]}, "
            f"lr {optimizer['init_args']['lr']}; {self.epochs} epochs; batch size {data['batch_size']}; {seeds} "
            f"(data, initialization and shuffle); projection mode {mode}{_sizes(data, self.overrides)}"
        )


def _sizes(data: Mapping[str, Any], overrides: tuple[str, ...]) -> str:
    """The synthetic data's test and validation sizes, as the overrides leave them; nothing for image datasets."""
    if "num_test" not in data:
        limits = [token[len("--trainer.") :] for token in overrides if token.startswith("--trainer.limit_")]
        return f"; {', '.join(limits)}" if limits else ""
    num_test = _override(overrides, "data.init_args.num_test", data["num_test"])
    num_val = _override(overrides, "data.init_args.num_val", data["num_val"])
    return f"; {num_test} test samples; gap measured on an independent validation draw of {num_val} samples"


def _import(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _defaults(cls: type) -> dict[str, Any]:
    """The default value of each argument of ``cls``'s constructor, as a config that does not set it gets."""
    parameters = inspect.signature(cls).parameters.values()
    return {parameter.name: parameter.default for parameter in parameters if parameter.default is not parameter.empty}


def _override(overrides: tuple[str, ...], key: str, default: Any) -> Any:
    for token in reversed(overrides):
        if token.startswith(f"--{key}="):
            return token.split("=", 1)[1]
    return default


def make_protocol(experiment: Experiment, *, quick: bool, seeds: int | None) -> Protocol:
    """The full protocol (the config's epochs, 5 seeds, the talk's grid) or the ``--quick`` one.

    Raises:
        SweepError: If ``seeds`` is not a positive integer.
    """
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise SweepError(f"Expected `--seeds` to be an integer >= 1, got {seeds!r}")
    config = yaml.safe_load(experiment.config.read_text(encoding="utf-8"))
    columns = experiment.quick_columns if quick else tuple(column.header for column in experiment.columns)
    return Protocol(
        experiment=experiment.name,
        config=str(experiment.config),
        columns=columns,
        radii=experiment.quick_radii if quick else experiment.radii,
        seeds=seeds or (1 if quick else 5),
        epochs=experiment.quick_epochs if quick else int(config["trainer"]["max_epochs"]),
        quick=quick,
        overrides=_QUIET + (_QUICK_DATA if quick else ()),
    )


def list_runs(experiment: Experiment, protocol: Protocol, output: str | Path) -> list[RunSpec]:
    """Every run of a reproduction, seed by seed (so a partial run has whole tables of its first seeds).

    Args:
        experiment: What is reproduced.
        protocol: How.
        output: The reproduction's directory (its runs log under ``<output>/logs``).
    """
    log_root = str(Path(output).resolve() / LOGS_DIR)
    columns = [column for column in experiment.columns if column.header in protocol.columns]
    specs = []
    for seed in range(protocol.seeds):
        for column in columns:
            overrides = (
                *protocol.overrides,
                f"--trainer.max_epochs={protocol.epochs}",
                f"--data.init_args.seed={seed}",
                *column.overrides,
            )
            for radius in protocol.radii:
                specs.append(
                    RunSpec(len(specs), radius, None, None, seed, protocol.config, overrides, log_root, column.key)
                )
    return specs
