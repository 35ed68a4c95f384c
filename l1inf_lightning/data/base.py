"""DataModules that can hold out one of k folds of their training set for validation.

The fold logic is written once, in :class:`FoldableDataModule`; a concrete DataModule only says how to load its data
(``_load_datasets``), how to validate when no folds are asked for (``_default_split``) and, for stratified folds,
what the labels are (``_labels``). :class:`FoldedDataModule` adds folds to any map-style dataset.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence, Sized
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities.parsing import AttributeDict
from torch.utils.data import DataLoader, Dataset, Subset
from typing_extensions import override

from l1inf_lightning._checks import check_int
from l1inf_lightning.data.folds import check_fold_args, fold_indices

__all__ = ["FoldableDataModule", "FoldedDataModule", "derive_seed"]

LabelArray = np.ndarray | torch.Tensor | Sequence[int]

# Named random streams, so that e.g. the shuffle order does not depend on how much data was generated before it.
_SHUFFLE_STREAM = 0


def derive_seed(seed: int, stream: int) -> int:
    """An independent seed for one random stream, derived from a user seed.

    Uses numpy's ``SeedSequence``, so streams are statistically independent, and the result depends on nothing but
    ``(seed, stream)``: it is the same in every process and on every platform.

    Args:
        seed: The user's seed, a non-negative integer.
        stream: Which stream, a non-negative integer.

    Returns:
        A seed in ``[0, 2**63)`` for ``torch.Generator.manual_seed``.

    Example:
        >>> derive_seed(0, 1) == derive_seed(0, 1), derive_seed(0, 1) == derive_seed(0, 2)
        (True, False)
    """
    state = np.random.SeedSequence([seed, stream]).generate_state(1, dtype=np.uint64)[0]
    return int(state) & (2**63 - 1)


class FoldableDataModule(LightningDataModule, ABC):
    """A DataModule whose validation set is either its own default or one fold of its training set.

    With ``num_folds=None`` the sets are ``_default_split(train_full)`` and the test set. With ``num_folds=k`` the full
    training set is split by :func:`~l1inf_lightning.data.folds.fold_indices` (stratified when ``_labels`` returns
    labels) and fold ``fold_index`` is the validation set; the test set is never touched by folds.

    Subclasses implement ``_load_datasets`` and ``_default_split``, may implement ``_labels``, and should call
    ``self.save_hyperparameters()`` in their ``__init__`` so their arguments reach the logger. After ``setup`` the
    datamodule's ``fold_info`` is added to its hyperparameters under the key ``"fold_info"``.

    Args:
        batch_size: Samples per batch, for every split.
        num_folds: Number of cross-validation folds k (at least 2), or None for the default validation set.
        fold_index: The fold held out for validation, in ``[0, num_folds)``; must be 0 when ``num_folds`` is None.
        fold_seed: Seed of the assignment of samples to folds.
        num_workers: Worker processes per DataLoader.
        seed: Seed of the training shuffle (subclasses also use it for their data).
    """

    def __init__(
        self,
        *,
        batch_size: int = 50,
        num_folds: int | None = None,
        fold_index: int = 0,
        fold_seed: int = 0,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        check_int("batch_size", batch_size, minimum=1)
        check_int("num_workers", num_workers)
        check_int("seed", seed)
        check_fold_args(num_folds, fold_index, fold_seed)
        self.batch_size = batch_size
        self.num_folds = num_folds
        self.fold_index = fold_index
        self.fold_seed = fold_seed
        self.num_workers = num_workers
        self.seed = seed
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self._train_full: Dataset | None = None
        self._test_full: Dataset | None = None
        self._loaded = False
        self._fold_info: dict[str, Any] | None = None

    # ----------------------------------------------------------------------------------------------------------------
    # Override points
    # ----------------------------------------------------------------------------------------------------------------

    @abstractmethod
    def _load_datasets(self) -> tuple[Dataset, Dataset | None]:
        """Load the full training set and the test set (None if there is none)."""

    @abstractmethod
    def _default_split(self, train_full: Dataset) -> tuple[Dataset, Dataset | None]:
        """The training and validation sets used when no folds are requested (validation may be None)."""

    def _labels(self, train_full: Dataset) -> LabelArray | None:
        """One class label per sample of ``train_full`` for stratified folds, or None for plain folds."""
        return None

    # ----------------------------------------------------------------------------------------------------------------
    # Data
    # ----------------------------------------------------------------------------------------------------------------

    def _ensure_loaded(self) -> tuple[Dataset, Dataset | None]:
        if not self._loaded:
            self._train_full, self._test_full = self._load_datasets()
            self._loaded = True
        assert self._train_full is not None
        return self._train_full, self._test_full

    def full_train_size(self) -> int:
        """Size of the full training set, the set that folds split; loads the data if needed.

        Lets a command line check ``num_folds`` against the data before training. Subclasses that know the size
        without loading (e.g. generated data) may override it.
        """
        train_full, _ = self._ensure_loaded()
        return len(train_full)  # type: ignore[arg-type]

    def full_train_labels(self) -> LabelArray | None:
        """The class label of each sample of the full training set (None for plain folds); loads the data if needed.

        Lets a command line check that every class can be spread over the folds before training.
        """
        train_full, _ = self._ensure_loaded()
        return self._labels(train_full)

    def _check_num_folds_fit(self, num_samples: int) -> None:
        if self.num_folds is not None and self.num_folds > num_samples:
            raise ValueError(
                f"Expected `num_folds` to be at most the size of the training set ({num_samples}), got {self.num_folds}"
            )

    @override
    def setup(self, stage: str) -> None:
        """Build ``train_set``, ``val_set`` and ``test_set`` (once; later calls do nothing)."""
        if self._fold_info is not None:
            return
        train_full, self.test_set = self._ensure_loaded()
        stratified = False
        if self.num_folds is None:
            self.train_set, self.val_set = self._default_split(train_full)
        else:
            num_samples = len(train_full)  # type: ignore[arg-type]
            self._check_num_folds_fit(num_samples)
            labels = self._labels(train_full)
            stratified = labels is not None
            train_idx, val_idx = fold_indices(num_samples, self.num_folds, self.fold_index, self.fold_seed, labels)
            self.train_set = Subset(train_full, train_idx.tolist())
            self.val_set = Subset(train_full, val_idx.tolist())
        folded = self.num_folds is not None
        self._fold_info = {
            "num_folds": self.num_folds,
            "fold_index": self.fold_index if folded else None,
            "fold_seed": self.fold_seed if folded else None,
            "stratified": stratified,
            "train_size": len(self.train_set),  # type: ignore[arg-type]
            "val_size": 0 if self.val_set is None else len(self.val_set),  # type: ignore[arg-type]
        }
        self.hparams["fold_info"] = dict(self._fold_info)
        # The Trainer logs `hparams_initial`, frozen by `save_hyperparameters`, and logs it after `setup`: the fold
        # sizes are only known now, so they are added there too. Private API: Lightning has no public way to extend
        # `hparams_initial` after `__init__`, and calling `save_hyperparameters` here would search the call stack
        # for constructor arguments.
        if not hasattr(self, "_hparams_initial"):
            self._hparams_initial = AttributeDict()
        self._hparams_initial["fold_info"] = dict(self._fold_info)

    @property
    def fold_info(self) -> dict[str, Any]:
        """``num_folds``, ``fold_index``, ``fold_seed``, ``stratified``, ``train_size`` and ``val_size``.

        ``fold_index`` and ``fold_seed`` are None when there are no folds. Available after ``setup``.
        """
        if self._fold_info is None:
            raise RuntimeError(f"`{type(self).__name__}.fold_info` is known after `setup()`; call it first")
        return dict(self._fold_info)

    # ----------------------------------------------------------------------------------------------------------------
    # DataLoaders
    # ----------------------------------------------------------------------------------------------------------------

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _SHUFFLE_STREAM)) if shuffle else None
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _require_setup(self) -> None:
        if self._fold_info is None:
            raise RuntimeError(f"Call `{type(self).__name__}.setup()` before asking for a DataLoader")

    @override
    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches; the shuffle is seeded by ``seed``, a new order each epoch."""
        self._require_setup()
        assert self.train_set is not None
        return self._loader(self.train_set, shuffle=True)

    @override
    def val_dataloader(self) -> DataLoader | list:
        """Validation batches in order, or an empty list (no validation) when there is no validation set."""
        self._require_setup()
        return [] if self.val_set is None else self._loader(self.val_set, shuffle=False)

    @override
    def test_dataloader(self) -> DataLoader:
        """Test batches in order."""
        self._require_setup()
        if self.test_set is None:
            raise RuntimeError(f"`{type(self).__name__}` has no test set")
        return self._loader(self.test_set, shuffle=False)


class FoldedDataModule(FoldableDataModule):
    """Adds k-fold cross-validation to a user's map-style dataset.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> data = TensorDataset(torch.randn(20, 3), torch.arange(20) % 2)
        >>> dm = FoldedDataModule(data, num_folds=5, fold_index=1, labels=data.tensors[1])
        >>> dm.setup("fit")
        >>> dm.fold_info["train_size"], dm.fold_info["val_size"], dm.fold_info["stratified"]
        (16, 4, True)

    Args:
        dataset: The full training set, map-style (it has ``__len__`` and ``__getitem__``).
        num_folds: Number of folds k (at least 2), or None to train on all of ``dataset`` without validation.
        fold_index: The fold held out for validation, in ``[0, num_folds)``; must be 0 when ``num_folds`` is None.
        fold_seed: Seed of the assignment of samples to folds.
        test_dataset: The test set, never touched by folds, or None.
        labels: One class label per sample of ``dataset`` for stratified folds, or None for plain folds.
        batch_size: Samples per batch, for every split.
        num_workers: Worker processes per DataLoader.
        seed: Seed of the training shuffle.
    """

    def __init__(
        self,
        dataset: Dataset,
        num_folds: int | None = None,
        fold_index: int = 0,
        fold_seed: int = 0,
        test_dataset: Dataset | None = None,
        labels: LabelArray | None = None,
        batch_size: int = 50,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_folds=num_folds,
            fold_index=fold_index,
            fold_seed=fold_seed,
            num_workers=num_workers,
            seed=seed,
        )
        for name, value in (("dataset", dataset), ("test_dataset", test_dataset)):
            if value is not None and not isinstance(value, Sized):
                raise ValueError(
                    f"Expected `{name}` to be a map-style dataset with `__len__`, got {type(value).__name__}"
                )
        self._check_num_folds_fit(len(dataset))  # type: ignore[arg-type]
        self.save_hyperparameters(ignore=["dataset", "test_dataset", "labels"])
        self.dataset = dataset
        self.test_dataset = test_dataset
        self.labels = labels

    @override
    def _load_datasets(self) -> tuple[Dataset, Dataset | None]:
        return self.dataset, self.test_dataset

    @override
    def _default_split(self, train_full: Dataset) -> tuple[Dataset, Dataset | None]:
        return train_full, None

    @override
    def _labels(self, train_full: Dataset) -> LabelArray | None:
        return self.labels
