"""What a sweep trains: its settings and the list of its runs, each one ordinary ``fit`` (pure, picklable)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from l1inf_lightning._checks import is_int
from l1inf_lightning.functional import check_radius

__all__ = ["LOGS_DIR", "RunSpec", "SweepError", "SweepSettings", "list_runs", "radius_label", "refit_spec"]

# The runs log under `<output>/logs`; the rest of the output directory's layout is the store's (`store.py`).
LOGS_DIR = "logs"
# Options every run gets from the sweep itself; an override of one would silently break the grid.
_SWEEP_OWNED = ("projection", "projection.radius", "data.num_folds", "data.fold_index", "data.fold_seed")
_SWEEP_OWNED += ("seed_everything", "test_after_fit")
# numpy's legacy RandomState, which scikit-learn's KFold seeds from `fold_seed`, accepts seeds below 2**32.
_MAX_SEED = 2**32 - 1
_TENSORBOARD = "lightning.pytorch.loggers.TensorBoardLogger"


class SweepError(ValueError):
    """Bad arguments or settings of a sweep, found before any training; the message names the argument."""


def radius_label(radius: float) -> str:
    """The shortest text that reads back as exactly ``radius`` (``repr``), used in run ids, paths and tables.

    >>> radius_label(0.1), radius_label(1), radius_label(float("inf"))
    ('0.1', '1.0', 'inf')
    """
    return repr(float(radius))


@dataclass(frozen=True)
class SweepSettings:
    """What a sweep trains; the output directory stores them and refuses a sweep with other settings.

    Args:
        config: Path of the LightningCLI config (the same file ``fit --config`` takes).
        radii: The grid of radii c, each a positive number or ``inf`` (the unconstrained baseline); kept sorted.
        num_folds: Number of folds k of the training set, at least 2.
        seeds: Repeats: each seed reshuffles the folds (``fold_seed``) and the model's initialization
            (``seed_everything``); the training set itself stays the same.
        overrides: Extra LightningCLI arguments for every run, e.g. ``("--trainer.max_epochs", "5")``.
    """

    config: str
    radii: tuple[float, ...]
    num_folds: int
    seeds: tuple[int, ...] = (0,)
    overrides: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        config = Path(self.config)
        if not config.is_file():
            raise SweepError(f"Expected `--config` to be an existing file, got {self.config!r}")
        object.__setattr__(self, "config", str(config.resolve()))
        if isinstance(self.radii, (str, bytes)) or not len(self.radii):
            raise SweepError(
                f"Expected `--radii` to list at least one radius (a positive number or inf), got {self.radii!r}"
            )
        try:
            radii = [check_radius(radius, "--radii") for radius in self.radii]
        except ValueError as error:
            raise SweepError(str(error)) from None
        duplicates = sorted({radius_label(r) for r in radii if radii.count(r) > 1})
        if duplicates:
            raise SweepError(f"Expected `--radii` to be distinct, got {', '.join(duplicates)} more than once")
        object.__setattr__(self, "radii", tuple(sorted(radii)))
        if not is_int(self.num_folds) or self.num_folds < 2:
            raise SweepError(f"Expected `--folds` to be an integer >= 2, got {self.num_folds!r}")
        if isinstance(self.seeds, (str, bytes)) or not len(self.seeds):
            raise SweepError(f"Expected `--seeds` to list at least one seed, got {self.seeds!r}")
        for seed in self.seeds:
            if not is_int(seed) or not 0 <= seed <= _MAX_SEED:
                raise SweepError(f"Expected `--seeds` to be integers in [0, {_MAX_SEED}], got {seed!r}")
        if len(set(self.seeds)) != len(self.seeds):
            raise SweepError(f"Expected `--seeds` to be distinct, got {list(self.seeds)}")
        object.__setattr__(self, "seeds", tuple(self.seeds))
        overrides = tuple(str(token) for token in self.overrides)
        for token in overrides:
            key = _option_key(token)
            if key in _SWEEP_OWNED:
                raise SweepError(
                    f"The sweep sets `--{key}` of every run itself (from --radii, --folds and --seeds); remove "
                    f"{token!r} from the overrides after `--`"
                )
        object.__setattr__(self, "overrides", overrides)

    @property
    def num_runs(self) -> int:
        """Number of (c, fold, seed) runs."""
        return len(self.radii) * self.num_folds * len(self.seeds)

    def to_json(self) -> dict[str, Any]:
        """The settings as stored in ``sweep.json``: the config by its file name and a hash of its contents.

        Not its absolute path, so that a sweep resumes from another checkout or a moved directory.
        """
        return {
            "config": Path(self.config).name,
            "config_sha256": hashlib.sha256(Path(self.config).read_bytes()).hexdigest(),
            "radii": [radius_label(r) for r in self.radii],
            "num_folds": self.num_folds,
            "seeds": list(self.seeds),
            "overrides": list(self.overrides),
        }


def _option_key(token: str) -> str | None:
    """``--data.init_args.num_folds=3`` -> ``data.num_folds``; None for a value rather than an option."""
    if not token.startswith("--"):
        return None
    key = token[2:].split("=", 1)[0]
    return ".".join(part for part in key.split(".") if part != "init_args")


@dataclass(frozen=True)
class RunSpec:
    """One fit of a sweep: everything a worker on any machine needs, picklable and JSON-ready (``asdict``).

    ``fold`` None trains on the whole training set (no folds) and then tests on the test set: the refit (``index``
    -1), or one run of a grid that is not a cross-validation (a reproduction of the talk, named by ``label``).

    Args:
        index: Position in :func:`list_runs` (``--only-run INDEX``); -1 for the refit.
        radius: The radius c.
        fold: The validation fold, or None for the refit.
        num_folds: Number of folds k, or None for the refit.
        seed: ``fold_seed`` and ``seed_everything`` of the run.
        config: Absolute path of the LightningCLI config.
        overrides: The user's extra LightningCLI arguments.
        log_root: Directory that holds every run's TensorBoard logs.
        label: What else sets this run apart (e.g. ``depth100-20``), prefixed to its run id and log directory.
    """

    index: int
    radius: float
    fold: int | None
    num_folds: int | None
    seed: int
    config: str
    overrides: tuple[str, ...]
    log_root: str
    label: str = ""

    @property
    def is_refit(self) -> bool:
        """Whether this is the refit of a sweep (stored as ``refit.json``, not among the runs' results)."""
        return self.index == -1

    @property
    def run_id(self) -> str:
        """A unique name: ``c0.1_fold3_seed0``, ``c0.1_refit_seed0``, ``depth100-20_c0.1_all_seed0``."""
        prefix = f"{self.label}_" if self.label else ""
        return f"{prefix}c{radius_label(self.radius)}_{self._part}_seed{self.seed}"

    @property
    def log_dir(self) -> Path:
        """The run's TensorBoard version directory: ``<log_root>/[<label>_]c<c>/fold<i>_seed<s>``."""
        prefix = f"{self.label}_" if self.label else ""
        return Path(self.log_root) / f"{prefix}c{radius_label(self.radius)}" / f"{self._part}_seed{self.seed}"

    @property
    def _part(self) -> str:
        """``fold<i>``; ``refit`` for the refit; ``all`` for a run on the whole training set that is not a refit."""
        if self.fold is not None:
            return f"fold{self.fold}"
        return "refit" if self.is_refit else "all"

    def fit_args(self) -> list[str]:
        """The ``l1inf-lightning fit`` arguments of this run; the sweep's own come last, so they win."""
        folds = ["null", "0"] if self.fold is None else [str(self.num_folds), str(self.fold)]
        return [
            "fit",
            "--config",
            self.config,
            *self.overrides,
            f"--projection.radius={radius_label(self.radius)}",
            f"--data.init_args.num_folds={folds[0]}",
            f"--data.init_args.fold_index={folds[1]}",
            f"--data.init_args.fold_seed={self.seed}",
            f"--seed_everything={self.seed}",
            "--test_after_fit=false",
            f"--trainer.default_root_dir={self.log_dir}",
            # Naming the class again keeps the config's other TensorBoardLogger arguments (jsonargparse merges).
            f"--trainer.logger={_TENSORBOARD}",
            f"--trainer.logger.init_args.save_dir={self.log_root}",
            f"--trainer.logger.init_args.name={self.log_dir.parent.name}",
            f"--trainer.logger.init_args.version={self.log_dir.name}",
        ]


def list_runs(settings: SweepSettings, output: str | Path) -> list[RunSpec]:
    """Every (c, fold, seed) run of a sweep, in the order they are started.

    Folds vary slower than radii, so every c gets its first folds early and "best c so far" is a fair comparison
    while the sweep runs. The list depends on nothing but its arguments.

    Args:
        settings: The sweep.
        output: The sweep's output directory (the runs log under ``<output>/logs``).

    Returns:
        ``settings.num_runs`` specs; ``spec.index`` is the position in the list.
    """
    log_root = str(Path(output).resolve() / LOGS_DIR)
    grid = [
        (seed, fold, radius)
        for seed in settings.seeds
        for fold in range(settings.num_folds)
        for radius in settings.radii
    ]
    return [
        RunSpec(index, radius, fold, settings.num_folds, seed, settings.config, settings.overrides, log_root)
        for index, (seed, fold, radius) in enumerate(grid)
    ]


def refit_spec(settings: SweepSettings, output: str | Path, radius: float) -> RunSpec:
    """The refit: c = ``radius`` on the whole training set (no folds), seeded by the first seed."""
    log_root = str(Path(output).resolve() / LOGS_DIR)
    return RunSpec(-1, radius, None, None, settings.seeds[0], settings.config, settings.overrides, log_root)
