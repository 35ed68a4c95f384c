"""K-fold splits of a training set, used to choose the radius ``c`` by cross-validation.

The talk ("How to Choose c") splits the *training* set into k folds (10 or 20), trains on k - 1 of them, scores on
the held-out fold and keeps the ``c`` with the best mean score. The test set takes no part in it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold

from l1inf_lightning._checks import is_int

__all__ = ["check_class_sizes", "check_fold_args", "fold_indices"]

# numpy's legacy RandomState, which scikit-learn seeds from `random_state`, accepts 0 <= seed < 2**32.
_MAX_SEED = 2**32 - 1


def check_fold_args(num_folds: int | None, fold_index: int, fold_seed: int) -> None:
    """Check the fold arguments that can be checked without knowing the data.

    ``fold_index`` must be 0 when ``num_folds`` is None: a non-zero index without folds is almost surely a
    cross-validation loop that forgot ``num_folds``, and silently ignoring it would train the same model k times.

    Args:
        num_folds: Number of folds, at least 2, or None for no folds.
        fold_index: Which fold is the validation fold, in ``[0, num_folds)``.
        fold_seed: Seed of the shuffle that assigns samples to folds, in ``[0, 2**32 - 1]``.

    Raises:
        ValueError: If an argument is out of range.

    Example:
        >>> check_fold_args(num_folds=10, fold_index=3, fold_seed=0)
        >>> check_fold_args(num_folds=None, fold_index=0, fold_seed=0)
    """
    if not is_int(fold_seed) or not 0 <= fold_seed <= _MAX_SEED:
        raise ValueError(f"Expected `fold_seed` to be an integer in [0, {_MAX_SEED}], got {fold_seed!r}")
    if not is_int(fold_index):
        raise ValueError(f"Expected `fold_index` to be an integer, got {fold_index!r}")
    if num_folds is None:
        if fold_index != 0:
            raise ValueError(
                f"Expected `fold_index` to be 0 when `num_folds` is None, got {fold_index!r}; "
                "set `num_folds` to cross-validate"
            )
        return
    if not is_int(num_folds) or num_folds < 2:
        raise ValueError(f"Expected `num_folds` to be None or an integer >= 2, got {num_folds!r}")
    if not 0 <= fold_index < num_folds:
        raise ValueError(
            f"Expected `fold_index` to be in [0, {num_folds}) for `num_folds`={num_folds}, got {fold_index!r}"
        )


def _as_label_array(labels: np.ndarray | torch.Tensor | Sequence[int], num_samples: int) -> np.ndarray:
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if array.ndim != 1 or array.shape[0] != num_samples:
        raise ValueError(
            f"Expected `labels` to be one-dimensional with one label per sample ({num_samples}), "
            f"got shape {tuple(array.shape)}"
        )
    return array


def check_class_sizes(
    labels: np.ndarray | torch.Tensor | Sequence[int], num_folds: int, name: str = "num_folds"
) -> None:
    """Check that every class has at least ``num_folds`` members, as stratified folds need.

    scikit-learn's ``StratifiedKFold`` only warns when a class is smaller (or raises a terse error when every class
    is): a fold without a class is not stratified, so this says so plainly.

    Args:
        labels: One class label per sample.
        num_folds: Number of folds k.
        name: The argument that set ``num_folds``, named in the error (``--folds`` for the ``cv`` command).

    Raises:
        ValueError: If a class has fewer than ``num_folds`` members; the message names the smallest.

    Example:
        >>> check_class_sizes([0, 0, 1, 1, 1], num_folds=2)
        >>> check_class_sizes([0, 0, 1, 1, 1], num_folds=3)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: Expected every class to have at least `num_folds`=3 ... got class 0 with 2; lower `num_folds`
    """
    array = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    classes, counts = np.unique(array, return_counts=True)
    smallest = int(np.argmin(counts))
    if counts[smallest] < num_folds:
        raise ValueError(
            f"Expected every class to have at least `{name}`={num_folds} members for stratified folds, "
            f"got class {classes[smallest].item()!r} with {counts[smallest]}; lower `{name}`"
        )


def fold_indices(
    num_samples: int,
    num_folds: int,
    fold_index: int,
    seed: int = 0,
    labels: np.ndarray | torch.Tensor | Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and validation parts of one fold.

    Uses scikit-learn's ``KFold(shuffle=True, random_state=seed)``, or ``StratifiedKFold`` with the same arguments
    when ``labels`` are given, so every fold keeps the class proportions of the whole set (per class, fold sizes
    differ by at most one sample). The validation parts of the ``num_folds`` folds are disjoint and cover
    ``range(num_samples)`` exactly. The same arguments always give the same split.

    Args:
        num_samples: Size of the set to split (the full training set).
        num_folds: Number of folds k, in ``[2, num_samples]``.
        fold_index: Which fold is held out for validation, in ``[0, num_folds)``.
        seed: Seed of the shuffle that assigns samples to folds.
        labels: One class label per sample for stratified folds, or None for plain folds.

    Returns:
        The training indices and the validation indices, each a sorted ``int64`` numpy array.

    Raises:
        ValueError: If an argument is out of range, or a class has fewer than ``num_folds`` members.

    Example:
        >>> train_idx, val_idx = fold_indices(10, num_folds=5, fold_index=0, seed=0)
        >>> train_idx.shape, val_idx.shape
        ((8,), (2,))
        >>> sorted(set(train_idx) | set(val_idx)) == list(range(10))
        True
    """
    if num_folds is None:
        raise ValueError("Expected `num_folds` to be an integer >= 2, got None")
    check_fold_args(num_folds, fold_index, seed)
    if not is_int(num_samples) or num_samples < 0:
        raise ValueError(f"Expected `num_samples` to be a non-negative integer, got {num_samples!r}")
    if num_folds > num_samples:
        raise ValueError(
            f"Expected `num_folds` to be at most the size of the training set ({num_samples}), got {num_folds}"
        )
    placeholder = np.zeros((num_samples, 1))
    if labels is None:
        splits = KFold(n_splits=num_folds, shuffle=True, random_state=seed).split(placeholder)
    else:
        label_array = _as_label_array(labels, num_samples)
        check_class_sizes(label_array, num_folds)
        splits = StratifiedKFold(n_splits=num_folds, shuffle=True, random_state=seed).split(placeholder, label_array)
    for index, (train_idx, val_idx) in enumerate(splits):
        if index == fold_index:
            return np.sort(train_idx).astype(np.int64), np.sort(val_idx).astype(np.int64)
    raise AssertionError("unreachable: `fold_index` was checked against `num_folds`")
