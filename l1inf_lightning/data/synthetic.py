"""DataModules of the two synthetic data sets of the talk (the generators are in ``data/generators.py``).

The DataModules draw the training, validation
and test sets from independent sub-seeds of one ``seed``, so e.g. changing ``num_test`` leaves the training set as it
was. Everything is drawn on the CPU in float32; values are identical across processes on one machine and torch build
(torch's CPU normal sampler is vectorized per CPU type, so other machines may differ in the last bits).
"""

from __future__ import annotations

from abc import abstractmethod

import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset
from typing_extensions import override

from l1inf_lightning._checks import check_int
from l1inf_lightning.data.base import FoldableDataModule, derive_seed
from l1inf_lightning.data.generators import (
    ZETA_MODES,
    ZetaMode,
    classification_labels,
    make_classification_data,
    make_regression_data,
    neighbour_correlated_features,
    regression_coefficients,
)

__all__ = [
    "SyntheticClassificationDataModule",
    "SyntheticRegressionDataModule",
    "classification_labels",
    "make_classification_data",
    "make_regression_data",
    "neighbour_correlated_features",
    "regression_coefficients",
]

# Sub-seed streams of the DataModules (see `derive_seed`); the shuffle uses stream 0.
_TRAIN_STREAM, _VAL_STREAM, _TEST_STREAM, _MODEL_STREAM = 1, 2, 3, 4


def _stream_generator(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, stream))


class _SyntheticDataModule(FoldableDataModule):
    """Shared checks and the default split of the synthetic DataModules: validation is a fresh draw."""

    def __init__(
        self,
        *,
        num_train: int,
        num_test: int,
        num_features: int,
        num_val: int,
        batch_size: int,
        seed: int,
        num_folds: int | None,
        fold_index: int,
        fold_seed: int,
        num_workers: int,
    ) -> None:
        super().__init__(
            batch_size=batch_size,
            num_folds=num_folds,
            fold_index=fold_index,
            fold_seed=fold_seed,
            num_workers=num_workers,
            seed=seed,
        )
        check_int("num_train", num_train, minimum=1)
        check_int("num_test", num_test, minimum=1)
        check_int("num_val", num_val)
        self._check_num_folds_fit(num_train)
        self.num_train = num_train
        self.num_test = num_test
        self.num_features = num_features
        self.num_val = num_val

    @abstractmethod
    def _draw(self, num_samples: int, generator: torch.Generator) -> TensorDataset:
        """Draw ``num_samples`` samples of this data set's distribution."""

    @override
    def full_train_size(self) -> int:
        return self.num_train

    @override
    def _load_datasets(self) -> tuple[Dataset, Dataset | None]:
        train = self._draw(self.num_train, _stream_generator(self.seed, _TRAIN_STREAM))
        test = self._draw(self.num_test, _stream_generator(self.seed, _TEST_STREAM))
        return train, test

    @override
    def _default_split(self, train_full: Dataset) -> tuple[Dataset, Dataset | None]:
        # Synthetic data is free: validate on an independent draw and keep the paper's training set whole.
        if self.num_val == 0:
            return train_full, None
        return train_full, self._draw(self.num_val, _stream_generator(self.seed, _VAL_STREAM))


class SyntheticRegressionDataModule(_SyntheticDataModule):
    r"""The talk's sparse linear regression: 500 training and 1500 test samples in R^1000, MSE.

    The true coefficients ``beta`` are drawn once from ``seed`` (available right after construction) and shared by
    the training, validation and test sets. By default nothing is standardized, as in the talk: with beta up to 150
    the targets have a standard deviation of roughly 900.

    With ``standardize=True``, ``setup`` centres and scales every feature and the target by the mean and standard
    deviation of the training split alone (the training folds under cross-validation), and applies these same
    statistics to every split, so no validation or test sample informs them. They are kept as ``input_mean``,
    ``input_std``, ``target_mean`` and ``target_std``. A model then predicts
    :math:`(y - \bar y_{train}) / s_y`, and an MSE in these units converts back to the original ones by
    :math:`\mathrm{MSE}_y = s_y^2\, \mathrm{MSE}` (``target_std ** 2`` times it); :meth:`to_original_units` does
    that for a prediction.

    Example:
        >>> dm = SyntheticRegressionDataModule(num_train=20, num_test=10, num_val=5, num_features=30, num_informative=3)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> x.shape, y.shape, dm.task, dm.num_classes
        (torch.Size([20, 30]), torch.Size([20, 1]), 'regression', None)

    Args:
        num_train: Training samples (the set that folds split).
        num_test: Test samples.
        num_features: Input dimension.
        num_val: Samples of the independent validation draw used when ``num_folds`` is None (0: no validation).
        batch_size: Samples per batch.
        seed: Seed of the data (beta, training, validation and test sets from independent sub-seeds) and shuffle.
        num_folds: Number of cross-validation folds of the training set, or None.
        fold_index: The fold held out for validation; must be 0 when ``num_folds`` is None.
        fold_seed: Seed of the assignment of samples to folds.
        num_workers: Worker processes per DataLoader.
        num_informative: Non-zero coefficients of beta (the first ones).
        standardize: Standardize features and target with the training split's statistics (see above).
    """

    task = "regression"
    num_classes: int | None = None

    def __init__(
        self,
        num_train: int = 500,
        num_test: int = 1500,
        num_features: int = 1000,
        num_val: int = 500,
        batch_size: int = 50,
        seed: int = 0,
        num_folds: int | None = None,
        fold_index: int = 0,
        fold_seed: int = 0,
        num_workers: int = 0,
        num_informative: int = 100,
        standardize: bool = False,
    ) -> None:
        super().__init__(
            num_train=num_train,
            num_test=num_test,
            num_features=num_features,
            num_val=num_val,
            batch_size=batch_size,
            seed=seed,
            num_folds=num_folds,
            fold_index=fold_index,
            fold_seed=fold_seed,
            num_workers=num_workers,
        )
        self.save_hyperparameters()
        self.num_informative = num_informative
        self.beta = regression_coefficients(
            num_features, num_informative, generator=_stream_generator(seed, _MODEL_STREAM)
        )
        if not isinstance(standardize, bool):
            raise ValueError(f"Expected `standardize` to be a bool, got {standardize!r}")
        self.standardize = standardize
        self.input_mean: Tensor | None = None
        self.input_std: Tensor | None = None
        self.target_mean: Tensor | None = None
        self.target_std: Tensor | None = None

    @override
    def _draw(self, num_samples: int, generator: torch.Generator) -> TensorDataset:
        x, y, _ = make_regression_data(num_samples, self.num_features, generator=generator, beta=self.beta)
        return TensorDataset(x, y)

    @override
    def setup(self, stage: str) -> None:
        """Build the splits (see the base class); with ``standardize``, rescale them by the training split's."""
        if self.target_std is not None:  # already set up and standardized
            return
        super().setup(stage)
        if not self.standardize:
            return
        x, y = _tensors(self.train_set)
        self.input_mean, self.input_std = x.mean(0), _nonzero(x.std(0, correction=0))
        self.target_mean, self.target_std = y.mean(0), _nonzero(y.std(0, correction=0))
        self.train_set, self.val_set, self.test_set = (
            None if split is None else self._standardized(split)
            for split in (self.train_set, self.val_set, self.test_set)
        )

    def _standardized(self, split: Dataset) -> TensorDataset:
        x, y = _tensors(split)
        return TensorDataset((x - self.input_mean) / self.input_std, (y - self.target_mean) / self.target_std)

    def to_original_units(self, prediction: Tensor) -> Tensor:
        """A model's prediction in the units of the original target: ``prediction * target_std + target_mean``.

        The identity when ``standardize`` is off.
        """
        if not self.standardize:
            return prediction
        if self.target_std is None or self.target_mean is None:
            raise RuntimeError(f"`{type(self).__name__}` knows the target's statistics after `setup()`; call it first")
        return prediction * self.target_std + self.target_mean


def _tensors(split: Dataset | None) -> tuple[Tensor, Tensor]:
    """All (x, y) of a TensorDataset or a Subset of one, in order, as two tensors."""
    assert split is not None
    x, y = split[list(range(len(split)))]  # type: ignore[arg-type]
    return x, y


def _nonzero(std: Tensor) -> Tensor:
    """A standard deviation to divide by: 1 where a column is constant (or there is a single sample)."""
    return torch.where(std > 0, std, torch.ones_like(std))


class SyntheticClassificationDataModule(_SyntheticDataModule):
    """The talk's binary classification: 500 training and 1000 test samples in R^500, cross entropy.

    Labels are int64 class indices (for ``cross_entropy`` over 2 logits); folds are stratified by label. In
    ``"per_dataset"`` mode, ζ is drawn once from ``seed`` (attribute ``zeta``) and shared by every split.

    Example:
        >>> dm = SyntheticClassificationDataModule(num_train=20, num_test=10, num_val=5, num_features=8, batch_size=4)
        >>> dm.setup("fit")
        >>> x, y = next(iter(dm.train_dataloader()))
        >>> x.shape, y.dtype, dm.task, dm.num_classes
        (torch.Size([4, 8]), torch.int64, 'classification', 2)

    Args:
        num_train: Training samples (the set that folds split).
        num_test: Test samples.
        num_features: Input dimension, at least 4.
        num_val: Samples of the independent validation draw used when ``num_folds`` is None (0: no validation).
        batch_size: Samples per batch.
        seed: Seed of the data (training, validation and test sets from independent sub-seeds) and shuffle.
        num_folds: Number of cross-validation folds of the training set, or None.
        fold_index: The fold held out for validation; must be 0 when ``num_folds`` is None.
        fold_seed: Seed of the assignment of samples to folds.
        num_workers: Worker processes per DataLoader.
        zeta_mode: ``"per_sample"`` (default) or ``"per_dataset"``; see :func:`make_classification_data`.
    """

    task = "classification"
    num_classes: int | None = 2

    def __init__(
        self,
        num_train: int = 500,
        num_test: int = 1000,
        num_features: int = 500,
        num_val: int = 500,
        batch_size: int = 50,
        seed: int = 0,
        num_folds: int | None = None,
        fold_index: int = 0,
        fold_seed: int = 0,
        num_workers: int = 0,
        zeta_mode: ZetaMode = "per_sample",
    ) -> None:
        super().__init__(
            num_train=num_train,
            num_test=num_test,
            num_features=num_features,
            num_val=num_val,
            batch_size=batch_size,
            seed=seed,
            num_folds=num_folds,
            fold_index=fold_index,
            fold_seed=fold_seed,
            num_workers=num_workers,
        )
        check_int("num_features", num_features, minimum=4)
        if zeta_mode not in ZETA_MODES:
            raise ValueError(f"Expected `zeta_mode` to be one of {ZETA_MODES}, got {zeta_mode!r}")
        self.save_hyperparameters()
        self.zeta_mode = zeta_mode
        self.zeta: float | None = None
        if zeta_mode == "per_dataset":
            self.zeta = torch.randn(1, generator=_stream_generator(seed, _MODEL_STREAM)).item()

    @override
    def _draw(self, num_samples: int, generator: torch.Generator) -> TensorDataset:
        x, y = make_classification_data(
            num_samples, self.num_features, generator=generator, zeta_mode=self.zeta_mode, zeta=self.zeta
        )
        return TensorDataset(x, y)

    @override
    def _labels(self, train_full: Dataset) -> Tensor:
        assert isinstance(train_full, TensorDataset)
        return train_full.tensors[1]
