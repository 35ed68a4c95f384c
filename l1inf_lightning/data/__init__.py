"""Data: the talk's synthetic data sets and k-fold cross-validation of any training set."""

from l1inf_lightning.data.base import FoldableDataModule, FoldedDataModule, derive_seed
from l1inf_lightning.data.folds import check_class_sizes, check_fold_args, fold_indices
from l1inf_lightning.data.synthetic import (
    SyntheticClassificationDataModule,
    SyntheticRegressionDataModule,
    classification_labels,
    make_classification_data,
    make_regression_data,
    neighbour_correlated_features,
    regression_coefficients,
)
from l1inf_lightning.data.vision import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule, VisionDataModule

__all__ = [
    "CIFAR10DataModule",
    "FashionMNISTDataModule",
    "FoldableDataModule",
    "FoldedDataModule",
    "MNISTDataModule",
    "SyntheticClassificationDataModule",
    "SyntheticRegressionDataModule",
    "VisionDataModule",
    "check_class_sizes",
    "check_fold_args",
    "classification_labels",
    "derive_seed",
    "fold_indices",
    "make_classification_data",
    "make_regression_data",
    "neighbour_correlated_features",
    "regression_coefficients",
]
