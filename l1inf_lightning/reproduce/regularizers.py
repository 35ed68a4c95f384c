"""``reproduce regularizers``, what is compared and how: the regularizers, the datasets, the protocol and the runs.

The talk's comparison of regularizers, ours with c chosen by 10-fold cross-validation. Per dataset and seed: one fit
per regularizer (none, L1 and L2 at four λ, dropout 0.5), all at c = inf, and ours: a k-fold cross-validation of c on
the training set (the ``cv`` machinery's runs), then a fit on the whole training set at the c with the best mean
validation accuracy. Every fit is an ordinary ``fit`` of the dataset's config with only the regularizer's options, the
radius, the seed and the folds changed. A dataset whose files are not here is a column that says so ("not run: no
data here"); nothing is downloaded. ``regularizer_report`` runs them and writes the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from l1inf_lightning.cv.settings import LOGS_DIR, RunSpec, radius_label
from l1inf_lightning.cv.statistics import summarize
from l1inf_lightning.cv.store import is_finished
from l1inf_lightning.reproduce.experiments import _QUICK_DATA, _QUIET, CONFIGS, INF, Protocol
from l1inf_lightning.reproduce.talk import REGULARIZER_DATASETS

__all__ = [
    "DATASETS",
    "NOT_HERE",
    "OURS",
    "REGULARIZERS",
    "Dataset",
    "Regularizer",
    "RegularizerProtocol",
    "chosen_radii",
    "data_present",
    "first_runs",
    "make_regularizer_protocol",
    "our_runs",
]

NAME = "regularizers"
OURS = "Our approach"
_LAMBDAS = (0.1, 0.01, 0.001, 0.0001)
METRIC, _MODE = "val/acc", "max"  # how the cross-validation chooses c
NOT_HERE = "not run: no data here"


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
            chosen[key, seed] = summarize(folds, results, METRIC, _MODE).best if complete else None
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
