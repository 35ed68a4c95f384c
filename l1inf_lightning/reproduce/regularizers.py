"""``reproduce regularizers``: the talk's comparison of regularizers, ours with c chosen by 10-fold cross-validation.

Per dataset and seed: one fit per regularizer (none, L1 and L2 at four λ, dropout 0.5), all at c = inf, and ours: a
k-fold cross-validation of c on the training set (the ``cv`` machinery's runs), then a fit on the whole training set
at the c with the best mean validation accuracy. Every fit is an ordinary ``fit`` of the dataset's config with only
the regularizer's options, the radius, the seed and the folds changed. A dataset whose files are not here is a
column that says so ("not run: no data here"); nothing is downloaded.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from matplotlib.figure import Figure

from l1inf_lightning.cv.backends import LocalBackend
from l1inf_lightning.cv.settings import LOGS_DIR, RunSpec, SweepError, radius_label
from l1inf_lightning.cv.statistics import mean_std, summarize
from l1inf_lightning.cv.store import is_finished, prepare_output
from l1inf_lightning.reproduce.experiments import _QUICK_DATA, _QUIET, CONFIGS, INF, Protocol
from l1inf_lightning.reproduce.runner import run_specs
from l1inf_lightning.reproduce.tables import pm
from l1inf_lightning.reproduce.talk import REGULARIZER_DATASETS, TALK_REGULARIZERS

__all__ = ["DATASETS", "OURS", "REGULARIZERS", "Dataset", "Regularizer", "reproduce_regularizers"]

NAME = "regularizers"
FIGURE = "regularizers.png"
OURS = "Our approach"
_LAMBDAS = (0.1, 0.01, 0.001, 0.0001)
_METRIC, _MODE = "val/acc", "max"  # how the cross-validation chooses c
_NOT_HERE = "not run: no data here"


@dataclass(frozen=True)
class Regularizer:
    """One row of the talk's table: its header as printed, a run-id-safe key, and the fit options that make it."""

    header: str
    key: str
    overrides: tuple[str, ...]


REGULARIZERS: tuple[Regularizer, ...] = (
    Regularizer("No", "none", ()),
    *(Regularizer(f"L1, λ = {lam:g}", f"l1-{lam:g}", (f"--model.init_args.l1_penalty={lam!r}",)) for lam in _LAMBDAS),
    *(Regularizer(f"L2, λ = {lam:g}", f"l2-{lam:g}", (f"--model.init_args.l2_penalty={lam!r}",)) for lam in _LAMBDAS),
    Regularizer("Dropout, r_d = 0.5", "dropout", ("--model.init_args.net.init_args.dropout=0.5",)),
)


@dataclass(frozen=True)
class Dataset:
    """One column of the talk's table and how we run it.

    Args:
        header: The talk's column header.
        key: Prefix of its runs' ids.
        config: The config every fit of the column uses.
        radii: The c the cross-validation chooses from.
        seeds: Default number of seeds (data, initialization, shuffle, folds).
        epochs: Epochs of every fit; None for the config's.
        folder: For an image dataset, the torchvision class whose files must be under the data directory.
        quick_radii: The c of ``--quick``.
        quick_overrides: Extra options of ``--quick``.
        quick_rows: The regularizers ``--quick`` runs (ours always); None for all.
    """

    header: str
    key: str
    config: Path
    radii: tuple[float, ...]
    seeds: int
    epochs: int | None
    folder: str | None = None
    quick_radii: tuple[float, ...] = ()
    quick_overrides: tuple[str, ...] = field(default=())
    quick_rows: tuple[str, ...] | None = None


_QUICK_IMAGES = (
    "--trainer.limit_train_batches=3",
    "--trainer.limit_val_batches=2",
    "--trainer.limit_test_batches=2",
)
DATASETS: tuple[Dataset, ...] = (
    Dataset(
        REGULARIZER_DATASETS[0],
        "synthetic",
        CONFIGS / "synthetic_classification.yaml",
        radii=(0.5, 0.16, 0.1, 0.04, 0.01),
        seeds=5,
        epochs=None,
        quick_radii=(0.5, 0.04),
        quick_overrides=_QUICK_DATA,
    ),
    # MNIST for 5 epochs (the config's 20 would take the comparison past the time budget on two cores), one seed.
    Dataset(
        REGULARIZER_DATASETS[1],
        "mnist",
        CONFIGS / "mnist_mlp.yaml",
        radii=(1.0, 2.0, 4.0),
        seeds=1,
        epochs=5,
        folder="MNIST",
        quick_radii=(2.0, 4.0),
        quick_overrides=_QUICK_IMAGES,
        quick_rows=("No", "Dropout, r_d = 0.5"),  # each fit scans the 55,000 training images once (the monitor)
    ),
    Dataset(
        REGULARIZER_DATASETS[2],
        "cifar10",
        CONFIGS / "cifar10_vgg16_21x21.yaml",
        radii=(10.0, 20.0, 40.0),
        seeds=1,
        epochs=None,
        folder="CIFAR10",
        quick_radii=(20.0, 40.0),
        quick_overrides=(*_QUICK_IMAGES, "--data.init_args.num_workers=0"),
        quick_rows=("No",),
    ),
)
_QUICK_FOLDS, _FOLDS = 2, 10


def data_present(dataset: Dataset, data_dir: Path) -> bool:
    """Whether ``dataset``'s files are under ``data_dir``; asked of torchvision's loader, which downloads nothing here.

    A synthetic dataset is always present.
    """
    if dataset.folder is None:
        return True
    import torchvision.datasets

    try:
        getattr(torchvision.datasets, dataset.folder)(str(data_dir), train=True, download=False)
    except RuntimeError:  # torchvision: "Dataset not found ..."
        return False
    return True


@dataclass(frozen=True)
class RegularizerProtocol:
    """How ``reproduce regularizers`` is run; its output directory stores it and refuses another.

    Args:
        datasets: Keys of the datasets run (those whose data is here).
        seeds: Seeds per dataset key.
        epochs: Epochs per dataset key.
        radii: The c of the cross-validation per dataset key.
        rows: The regularizers run per dataset key (ours is always run).
        folds: Folds of the cross-validation.
        quick: Whether this is ``--quick``.
        data_dir: Where the image datasets are read from.
        protocols: Per dataset key, the protocol in words (optimizer, lr, batch size, mode ...).
    """

    datasets: tuple[str, ...]
    seeds: Mapping[str, int]
    epochs: Mapping[str, int]
    radii: Mapping[str, tuple[float, ...]]
    rows: Mapping[str, tuple[str, ...]]
    folds: int
    quick: bool
    data_dir: str
    protocols: Mapping[str, Protocol]

    def to_json(self) -> dict[str, Any]:
        """The protocol as stored in the output directory (each dataset's includes its config's hash)."""
        return {
            "experiment": NAME,
            "datasets": list(self.datasets),
            "seeds": dict(self.seeds),
            "epochs": dict(self.epochs),
            "radii": {key: [radius_label(r) for r in radii] for key, radii in self.radii.items()},
            "rows": {key: list(rows) for key, rows in self.rows.items()},
            "folds": self.folds,
            "quick": self.quick,
            "data_dir": self.data_dir,
            "protocols": {key: protocol.to_json() for key, protocol in self.protocols.items()},
        }


def make_regularizer_protocol(*, quick: bool, seeds: int | None, data_dir: str | Path) -> RegularizerProtocol:
    """The full protocol (each dataset's seeds, epochs and c) or the ``--quick`` one; datasets not here are left out.

    Raises:
        SweepError: If ``seeds`` is not a positive integer.
    """
    data_dir = Path(data_dir).resolve()
    present = [dataset for dataset in DATASETS if data_present(dataset, data_dir)]
    protocols = {}
    for dataset in present:
        config = yaml.safe_load(dataset.config.read_text(encoding="utf-8"))
        epochs = 1 if quick and dataset.folder else dataset.epochs or int(config["trainer"]["max_epochs"])
        overrides = _QUIET + (dataset.quick_overrides if quick else ())
        if dataset.folder:
            overrides += (f"--data.init_args.data_dir={data_dir}",)
        protocols[dataset.key] = Protocol(
            experiment=NAME,
            config=str(dataset.config),
            columns=(dataset.header,),
            radii=dataset.quick_radii if quick else dataset.radii,
            seeds=seeds or (1 if quick else dataset.seeds),
            epochs=2 if quick and not dataset.folder else epochs,
            quick=quick,
            overrides=overrides,
        )
    return RegularizerProtocol(
        datasets=tuple(protocols),
        seeds={key: protocol.seeds for key, protocol in protocols.items()},
        epochs={key: protocol.epochs for key, protocol in protocols.items()},
        radii={key: protocol.radii for key, protocol in protocols.items()},
        rows={dataset.key: _rows(dataset, quick) for dataset in present},
        folds=_QUICK_FOLDS if quick else _FOLDS,
        quick=quick,
        data_dir=str(data_dir),
        protocols=protocols,
    )


def _rows(dataset: Dataset, quick: bool) -> tuple[str, ...]:
    rows = dataset.quick_rows if quick and dataset.quick_rows is not None else [r.header for r in REGULARIZERS]
    return tuple(rows)


def _seeded(protocol: Protocol, seed: int, extra: Sequence[str] = ()) -> tuple[str, ...]:
    return (*protocol.overrides, f"--trainer.max_epochs={protocol.epochs}", f"--data.init_args.seed={seed}", *extra)


def first_runs(protocol: RegularizerProtocol, directory: Path) -> list[RunSpec]:
    """The runs that need no other run: every regularizer at c = inf, and every fold × c of the cross-validations."""
    log_root = str(directory.resolve() / LOGS_DIR)
    specs: list[RunSpec] = []
    for key in protocol.datasets:
        dataset_protocol = protocol.protocols[key]
        config = dataset_protocol.config
        for seed in range(protocol.seeds[key]):
            for regularizer in (r for r in REGULARIZERS if r.header in protocol.rows[key]):
                overrides = _seeded(dataset_protocol, seed, regularizer.overrides)
                specs.append(
                    RunSpec(len(specs), INF, None, None, seed, config, overrides, log_root, f"{key}-{regularizer.key}")
                )
            for fold in range(protocol.folds):
                for radius in protocol.radii[key]:
                    overrides = _seeded(dataset_protocol, seed)
                    specs.append(
                        RunSpec(
                            len(specs), radius, fold, protocol.folds, seed, config, overrides, log_root, f"{key}-cv"
                        )
                    )
    return specs


def chosen_radii(
    protocol: RegularizerProtocol, specs: Sequence[RunSpec], results: Mapping[str, Mapping[str, Any]]
) -> dict[tuple[str, int], float | None]:
    """Per (dataset key, seed): the c of the best mean validation accuracy over the folds, None until all are in."""
    chosen: dict[tuple[str, int], float | None] = {}
    for key in protocol.datasets:
        for seed in range(protocol.seeds[key]):
            folds = [spec for spec in specs if spec.label == f"{key}-cv" and spec.seed == seed]
            complete = all(is_finished(results.get(spec.run_id)) for spec in folds)
            chosen[key, seed] = summarize(folds, results, _METRIC, _MODE).best if complete else None
    return chosen


def our_runs(
    protocol: RegularizerProtocol, directory: Path, chosen: Mapping[tuple[str, int], float | None], start: int
) -> list[RunSpec]:
    """Ours: per (dataset, seed) whose c is chosen, a fit at that c on the whole training set, then a test."""
    log_root = str(directory.resolve() / LOGS_DIR)
    specs = []
    for (key, seed), radius in chosen.items():
        if radius is not None:
            dataset_protocol = protocol.protocols[key]
            overrides = _seeded(dataset_protocol, seed)
            specs.append(
                RunSpec(
                    start + len(specs),
                    radius,
                    None,
                    None,
                    seed,
                    dataset_protocol.config,
                    overrides,
                    log_root,
                    f"{key}-ours",
                )
            )
    return specs


@dataclass(frozen=True)
class Cell:
    """Our runs of one (regularizer, dataset): test accuracies %, sparsity %, counts and, for ours, the chosen c."""

    accuracy: tuple[float, ...]
    sparsity: tuple[float, ...]
    num_failed: int
    num_missing: int
    num_single_class: int
    chosen: tuple[float, ...] = ()


def _cell(specs: Sequence[RunSpec], results: Mapping[str, Mapping[str, Any]], expected: int) -> Cell:
    stored = [results[spec.run_id] for spec in specs if is_finished(results.get(spec.run_id))]
    ok = [result for result in stored if result["status"] == "ok"]
    return Cell(
        accuracy=tuple(100 * float(result["metrics"]["test/acc"]) for result in ok),
        sparsity=tuple(100 * float(result["sparsity"]) for result in ok),
        num_failed=len(stored) - len(ok),
        num_missing=expected - len(stored),
        num_single_class=sum(float(result["metrics"].get("test/top_class_share", 0.0)) >= 1.0 for result in ok),
        chosen=tuple(float(result["radius"]) for result in ok if "-ours_" in result["run_id"]),
    )


def collect_cells(
    protocol: RegularizerProtocol, specs: Sequence[RunSpec], results: Mapping[str, Mapping[str, Any]]
) -> dict[tuple[str, str], Cell]:
    """``{(row header, dataset key): Cell}`` for every regularizer and ours on every dataset run."""
    cells = {}
    for key in protocol.datasets:
        for row in (*REGULARIZERS, Regularizer(OURS, "ours", ())):
            if row.header == OURS or row.header in protocol.rows[key]:
                mine = [spec for spec in specs if spec.label == f"{key}-{row.key}"]
                cells[row.header, key] = _cell(mine, results, protocol.seeds[key])
    return cells


def claims(protocol: RegularizerProtocol, cells: Mapping[tuple[str, str], Cell]) -> list[str]:
    """The talk's claim per dataset: ours beats no regularization, the best L1, the best L2 and dropout."""
    lines = []
    for key in protocol.datasets:
        header = protocol.protocols[key].columns[0]
        if len(protocol.rows[key]) < len(REGULARIZERS):
            lines.append(f"- {header}: not every regularizer was run (--quick)")
            continue
        ours = mean_std(cells[OURS, key].accuracy)[0]
        rivals = {"no regularization": mean_std(cells["No", key].accuracy)[0]}
        for kind in ("L1", "L2"):
            best = max(
                (regularizer for regularizer in REGULARIZERS if regularizer.header.startswith(kind)),
                key=lambda r: _mean_or(cells[r.header, key].accuracy, -math.inf),
            )
            rivals[f"the best {kind} ({best.header})"] = mean_std(cells[best.header, key].accuracy)[0]
        rivals["dropout"] = mean_std(cells["Dropout, r_d = 0.5", key].accuracy)[0]
        if math.isnan(ours) or any(math.isnan(value) for value in rivals.values()):
            lines.append(f"- {header}: not all measured yet")
            continue
        beaten = [name for name, value in rivals.items() if ours > value]
        shown = ", ".join(f"{name} {value:.2f}" for name, value in rivals.items())
        verdict = "yes" if len(beaten) == len(rivals) else f"no (beats {len(beaten)} of {len(rivals)})"
        lines.append(f"- {header}: ours {ours:.2f} % beats every other: {verdict}; {shown}")
    return lines


def _mean_or(values: Sequence[float], default: float) -> float:
    mean = mean_std(values)[0]
    return default if math.isnan(mean) else mean


def _cell_text(cell: Cell | None, run: bool, digits: int = 2) -> str:
    if cell is None:
        return "not run in --quick" if run else _NOT_HERE
    text = pm(cell.accuracy, digits)
    if cell.num_single_class or cell.num_failed:
        text += f" ({cell.num_single_class + cell.num_failed} of {len(cell.accuracy) + cell.num_failed} not converged)"
    if cell.chosen:
        text += f"; c = {', '.join(radius_label(c) for c in cell.chosen)}"
    if cell.num_missing:
        text += f"; {cell.num_missing} missing"
    return text


def markdown(protocol: RegularizerProtocol, cells: Mapping[tuple[str, str], Cell]) -> str:
    """``table.md``: one line per regularizer, per dataset ours beside the talk's, the protocols, the claims."""
    keys = {dataset.header: dataset.key for dataset in DATASETS}
    lines = ["## Comparison with other regularizers: test accuracy %", ""]
    for key in protocol.datasets:
        words = protocol.protocols[key].describe()
        lines.append(
            f"- {protocol.protocols[key].columns[0]}: {words}; c = inf for every regularizer; ours: c chosen by "
            f"{protocol.folds}-fold cross-validation of {_METRIC} over c ∈ "
            f"{{{', '.join(radius_label(r) for r in protocol.radii[key])}}} on the training set, then a fit on the "
            "whole training set at that c."
        )
    lines += [
        "",
        "Ours: mean ± std over the seeds; “not converged” = runs that failed or predict one class on the whole test "
        f"set (in the means); “{_NOT_HERE}” = the dataset's files are not in the data directory (nothing is "
        "downloaded). Talk: as printed.",
        "",
        "| regularizer | " + " | ".join(f"{header} (ours) | {header} (talk)" for header in REGULARIZER_DATASETS) + " |",
        "|---|" + "---|---|" * len(REGULARIZER_DATASETS),
    ]
    for header in (*(r.header for r in REGULARIZERS), OURS):
        parts = []
        for dataset_header in REGULARIZER_DATASETS:
            cell = cells.get((header, keys[dataset_header]))
            run = keys[dataset_header] in protocol.datasets
            parts.append(f"{_cell_text(cell, run)} | {TALK_REGULARIZERS[header][dataset_header]:.2f}")
        lines.append(f"| {header} | " + " | ".join(parts) + " |")
    sparsity = [
        f"{protocol.protocols[key].columns[0]} {pm(cells[OURS, key].sparsity, 1)} %" for key in protocol.datasets
    ]
    lines += ["", f"Sparsity of ours: {'; '.join(sparsity)}.", "", "The talk's claim, on our means:", ""]
    lines += claims(protocol, cells)
    missing = sum(cell.num_missing for cell in cells.values())
    if missing:
        lines += ["", f"{missing} run(s) are not recorded yet: rerun the command to finish them."]
    return "\n".join(lines) + "\n"


def write_csv(protocol: RegularizerProtocol, cells: Mapping[tuple[str, str], Cell], path: Path) -> None:
    """``table.csv``: one line per (regularizer, dataset), the datasets not run included."""
    keys = {dataset.header: dataset.key for dataset in DATASETS}
    rows = []
    for header in (*(r.header for r in REGULARIZERS), OURS):
        for dataset_header in REGULARIZER_DATASETS:
            cell = cells.get((header, keys[dataset_header]))
            row: dict[str, Any] = {"regularizer": header, "dataset": dataset_header}
            mean, std = mean_std(cell.accuracy) if cell else (math.nan, math.nan)
            row["acc_mean"] = "" if math.isnan(mean) else round(mean, 6)
            row["acc_std"] = "" if math.isnan(std) else round(std, 6)
            sparsity = mean_std(cell.sparsity)[0] if cell else math.nan
            row["sparsity_mean"] = "" if math.isnan(sparsity) else round(sparsity, 6)
            row["runs_ok"] = len(cell.accuracy) if cell else 0
            row["runs_failed"] = cell.num_failed if cell else 0
            row["runs_missing"] = cell.num_missing if cell else 0
            row["runs_single_class"] = cell.num_single_class if cell else 0
            row["chosen_c"] = " ".join(radius_label(c) for c in cell.chosen) if cell else ""
            run = keys[dataset_header] in protocol.datasets
            row["status"] = "run" if cell else "not run in --quick" if run else _NOT_HERE
            row["talk_acc"] = TALK_REGULARIZERS[header][dataset_header]
            rows.append(row)
    with open(path, "w", newline="", encoding="utf-8") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def plot(protocol: RegularizerProtocol, cells: Mapping[tuple[str, str], Cell], path: Path) -> None:
    """One panel per dataset run: test accuracy per regularizer, ours (bars, ± std) beside the talk's (crosses)."""
    figure = Figure(figsize=(6 * max(1, len(protocol.datasets)), 5))
    axes = figure.subplots(1, max(1, len(protocol.datasets)), squeeze=False)[0]
    headers = [*(r.header for r in REGULARIZERS), OURS]
    for axis, key in zip(axes, protocol.datasets, strict=False):
        dataset_header = protocol.protocols[key].columns[0]
        statistics = [mean_std(cells[header, key].accuracy if (header, key) in cells else ()) for header in headers]
        means = [mean for mean, _ in statistics]
        errors = [0.0 if math.isnan(std) else std for _, std in statistics]
        positions = range(len(headers))
        axis.bar(positions, means, yerr=errors, color=["C0"] * (len(headers) - 1) + ["C3"], label="ours")
        talk = [TALK_REGULARIZERS[header][dataset_header] for header in headers]
        axis.plot(positions, talk, "kx", markersize=9, label="talk")
        axis.set_xticks(list(positions), headers, rotation=60, ha="right", fontsize="small")
        axis.set_ylabel("test accuracy %")
        axis.set_title(dataset_header)
        axis.grid(axis="y", alpha=0.3)
        axis.legend(fontsize="small")
    figure.suptitle("Comparison with other regularizers: ours (bars) and the talk's (crosses)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def reproduce_regularizers(
    *, quick: bool, seeds: int | None, output: str | Path, workers: int, progress: bool = True, data_dir: str = "data"
) -> str:
    """Run what is not recorded of the comparison of regularizers; write its table and figure, and print the table.

    The files are ``table.csv``, ``table.md`` and ``regularizers.png`` under ``output/regularizers``.
    The regularizers' fits and the cross-validations' folds run first; each (dataset, seed) whose folds are all
    recorded then gets its fit at the chosen c. Rerunning resumes; a finished reproduction trains nothing.

    Args:
        quick: A smoke test (2 folds, two c, 2 epochs on synthetic data; 1 epoch of 3 batches on images).
        seeds: Seeds 0 .. seeds - 1 per dataset (default: 5 on synthetic data, 1 on images; ``--quick`` 1).
        output: The parent directory.
        workers: Fits at once.
        progress: Show progress bars.
        data_dir: Where MNIST and CIFAR-10 are read from (torchvision's layout, as ``make data`` writes it).

    Returns:
        The table's Markdown.

    Raises:
        SweepError: On bad arguments or a directory that holds another protocol; before any training.
        SweepInterrupted: On SIGINT or SIGTERM.
    """
    backend = LocalBackend(workers)
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise SweepError(f"Expected `--seeds` to be an integer >= 1, got {seeds!r}")
    protocol = make_regularizer_protocol(quick=quick, seeds=seeds, data_dir=data_dir)
    directory = prepare_output(Path(output) / NAME, protocol)
    specs = first_runs(protocol, directory)
    results = run_specs(f"{NAME} (regularizers and folds)", specs, directory, backend, progress=progress)
    ours = our_runs(protocol, directory, chosen_radii(protocol, specs, results), len(specs))
    results = run_specs(f"{NAME} (ours at the chosen c)", ours, directory, backend, progress=progress)
    cells = collect_cells(protocol, [*specs, *ours], results)
    text = markdown(protocol, cells)
    write_csv(protocol, cells, directory / "table.csv")
    (directory / "table.md").write_text(text, encoding="utf-8")
    plot(protocol, cells, directory / FIGURE)
    print()
    print(text, end="")
    return text
