from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.utils.data import Dataset, IterableDataset, Subset, TensorDataset

from l1inf_lightning.data import FoldedDataModule, check_fold_args, derive_seed, fold_indices


def _all_folds(num_samples: int, num_folds: int, seed: int = 0, labels=None) -> list[tuple[np.ndarray, np.ndarray]]:
    return [fold_indices(num_samples, num_folds, k, seed, labels) for k in range(num_folds)]


# ---------------------------------------------------------------------------------------------------------------------
# fold_indices
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stratified", [False, True])
@pytest.mark.parametrize(("num_samples", "num_folds"), [(10, 2), (103, 10), (500, 20), (7, 7)])
def test_folds_partition_the_training_set(num_samples: int, num_folds: int, stratified: bool) -> None:
    labels = np.arange(num_samples) % 2 if stratified and num_samples // 2 >= num_folds else None
    folds = _all_folds(num_samples, num_folds, labels=labels)
    val_parts = [val for _, val in folds]
    # Validation parts are disjoint and together cover the training set exactly.
    assert sorted(np.concatenate(val_parts).tolist()) == list(range(num_samples))
    for train, val in folds:
        assert train.dtype == np.int64 and val.dtype == np.int64
        assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)  # sorted, no repeats
        assert np.intersect1d(train, val).size == 0
        assert train.size + val.size == num_samples
        assert num_samples // num_folds <= val.size <= -(-num_samples // num_folds)


def test_stratified_folds_keep_class_proportions() -> None:
    labels = np.repeat([0, 1, 2], [61, 27, 12])
    np.random.default_rng(0).shuffle(labels)
    num_folds = 10
    for train, val in _all_folds(labels.size, num_folds, seed=3, labels=labels):
        for cls in (0, 1, 2):
            total = int((labels == cls).sum())
            in_val = int((labels[val] == cls).sum())
            assert abs(in_val - total / num_folds) < 1, (cls, in_val)
            assert in_val + int((labels[train] == cls).sum()) == total


def test_unstratified_folds_ignore_labels() -> None:
    # A strongly ordered label vector: plain KFold would put very unequal class counts in some folds.
    labels = np.repeat([0, 1], [90, 10])
    plain = _all_folds(100, 10, seed=1)
    stratified = _all_folds(100, 10, seed=1, labels=labels)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(plain, stratified, strict=True))
    assert all(int((labels[val] == 1).sum()) == 1 for _, val in stratified)


@pytest.mark.parametrize("labels", [None, np.arange(60) % 3])
def test_folds_are_reproducible_and_depend_on_seed(labels: np.ndarray | None) -> None:
    first = _all_folds(60, 6, seed=5, labels=labels)
    again = _all_folds(60, 6, seed=5, labels=labels)
    other = _all_folds(60, 6, seed=6, labels=labels)
    for (t1, v1), (t2, v2) in zip(first, again, strict=True):
        assert np.array_equal(t1, t2) and np.array_equal(v1, v2)
    assert any(not np.array_equal(v1, v3) for (_, v1), (_, v3) in zip(first, other, strict=True))


def test_labels_may_be_a_tensor_or_a_list() -> None:
    labels = np.arange(30) % 2
    expected = fold_indices(30, 3, 1, 0, labels)
    for other in (torch.from_numpy(labels), labels.tolist()):
        got = fold_indices(30, 3, 1, 0, other)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1])


def test_derive_seed_is_process_independent() -> None:
    # A pinned value: the derivation must not depend on anything per process (such as Python's salted `hash`).
    assert derive_seed(0, 1) == 5836529245451711556
    assert derive_seed(0, 1) != derive_seed(1, 1)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_folds": 1}, r"`num_folds` to be None or an integer >= 2, got 1"),
        ({"num_folds": 0}, r"`num_folds` to be None or an integer >= 2, got 0"),
        ({"num_folds": True}, r"`num_folds` to be None or an integer >= 2, got True"),
        ({"num_folds": 2.5}, r"`num_folds` to be None or an integer >= 2, got 2.5"),
        ({"num_folds": None}, r"`num_folds` to be an integer >= 2, got None"),
        ({"num_folds": 11}, r"`num_folds` to be at most the size of the training set \(10\), got 11"),
        ({"fold_index": 5}, r"`fold_index` to be in \[0, 5\) for `num_folds`=5, got 5"),
        ({"fold_index": -1}, r"`fold_index` to be in \[0, 5\) for `num_folds`=5, got -1"),
        ({"seed": -1}, r"`fold_seed` to be an integer in \[0, 4294967295\], got -1"),
        ({"labels": np.zeros(9)}, r"`labels` to be one-dimensional with one label per sample \(10\), got shape \(9,\)"),
        ({"labels": np.zeros((10, 1))}, r"`labels` to be one-dimensional .* got shape \(10, 1\)"),
        (
            {"labels": np.array([0] * 8 + [1] * 2)},
            r"every class to have at least `num_folds`=5 members .* got class 1 with 2",
        ),
    ],
)
def test_fold_indices_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    arguments = {"num_samples": 10, "num_folds": 5, "fold_index": 0, "seed": 0, "labels": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        fold_indices(**arguments)


def test_fold_index_without_folds_is_an_error() -> None:
    check_fold_args(None, 0, 0)
    with pytest.raises(ValueError, match=r"`fold_index` to be 0 when `num_folds` is None, got 3"):
        check_fold_args(None, 3, 0)


# ---------------------------------------------------------------------------------------------------------------------
# FoldedDataModule
# ---------------------------------------------------------------------------------------------------------------------


def _dataset(num_samples: int, offset: float = 0.0) -> TensorDataset:
    x = torch.arange(num_samples, dtype=torch.float32).unsqueeze(1) + offset
    return TensorDataset(x, torch.arange(num_samples) % 2)


def test_folded_datamodule_uses_fold_indices_and_leaves_test_alone() -> None:
    train, test = _dataset(40), _dataset(15, offset=1000.0)
    dm = FoldedDataModule(train, num_folds=4, fold_index=2, fold_seed=7, test_dataset=test, batch_size=8)
    dm.setup("fit")
    expected_train, expected_val = fold_indices(40, 4, 2, 7)
    assert isinstance(dm.train_set, Subset) and isinstance(dm.val_set, Subset)
    assert dm.train_set.indices == expected_train.tolist()
    assert dm.val_set.indices == expected_val.tolist()
    assert dm.test_set is test
    assert dm.full_train_size() == 40
    assert dm.fold_info == {
        "num_folds": 4,
        "fold_index": 2,
        "fold_seed": 7,
        "stratified": False,
        "train_size": 30,
        "val_size": 10,
    }
    assert sum(len(x) for x, _ in dm.train_dataloader()) == 30
    val_x = torch.cat([x for x, _ in dm.val_dataloader()]).squeeze(1)
    assert val_x.tolist() == expected_val.astype(float).tolist()
    test_x = torch.cat([x for x, _ in dm.test_dataloader()])
    assert torch.equal(test_x, test.tensors[0])


def test_folded_datamodule_stratifies_with_labels() -> None:
    data = _dataset(40)
    dm = FoldedDataModule(data, num_folds=4, fold_index=0, labels=data.tensors[1])
    dm.setup("fit")
    assert dm.fold_info["stratified"] is True
    val_labels = data.tensors[1][dm.val_set.indices]
    assert int(val_labels.sum()) == 5


def test_folded_datamodule_shuffle_is_seeded() -> None:
    def first_batch(seed: int) -> torch.Tensor:
        dm = FoldedDataModule(_dataset(50), num_folds=5, batch_size=10, seed=seed)
        dm.setup("fit")
        return next(iter(dm.train_dataloader()))[0]

    assert torch.equal(first_batch(0), first_batch(0))
    assert not torch.equal(first_batch(0), first_batch(1))


def test_folded_datamodule_without_folds_has_no_validation() -> None:
    data = _dataset(12)
    dm = FoldedDataModule(data)
    dm.setup("fit")
    assert dm.train_set is data and dm.val_set is None
    assert dm.val_dataloader() == []
    assert dm.fold_info == {
        "num_folds": None,
        "fold_index": None,
        "fold_seed": None,
        "stratified": False,
        "train_size": 12,
        "val_size": 0,
    }
    with pytest.raises(RuntimeError, match="has no test set"):
        dm.test_dataloader()


def test_folded_datamodule_needs_setup_first() -> None:
    dm = FoldedDataModule(_dataset(12), num_folds=3)
    with pytest.raises(RuntimeError, match=r"fold_info` is known after `setup\(\)`"):
        _ = dm.fold_info
    with pytest.raises(RuntimeError, match=r"before asking for a DataLoader"):
        dm.train_dataloader()


class _NoLength(IterableDataset):
    def __iter__(self):
        yield from range(3)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_folds": 1}, r"`num_folds` to be None or an integer >= 2, got 1"),
        ({"num_folds": 13}, r"`num_folds` to be at most the size of the training set \(12\), got 13"),
        ({"num_folds": 3, "fold_index": 3}, r"`fold_index` to be in \[0, 3\) for `num_folds`=3, got 3"),
        ({"fold_index": 1}, r"`fold_index` to be 0 when `num_folds` is None, got 1"),
        ({"fold_seed": -2}, r"`fold_seed` to be an integer in \[0, 4294967295\], got -2"),
        ({"batch_size": 0}, r"`batch_size` to be an integer >= 1, got 0"),
        ({"num_workers": -1}, r"`num_workers` to be an integer >= 0, got -1"),
        ({"seed": -1}, r"`seed` to be an integer >= 0, got -1"),
        ({"test_dataset": _NoLength()}, r"`test_dataset` to be a map-style dataset with `__len__`, got _NoLength"),
    ],
)
def test_folded_datamodule_rejects_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FoldedDataModule(_dataset(12), **kwargs)


def test_folded_datamodule_rejects_iterable_dataset() -> None:
    with pytest.raises(ValueError, match=r"`dataset` to be a map-style dataset with `__len__`, got _NoLength"):
        FoldedDataModule(_NoLength(), num_folds=2)


def test_stratified_setup_rejects_a_small_class() -> None:
    data = _dataset(12)
    labels = torch.tensor([0] * 10 + [1] * 2)
    dm = FoldedDataModule(data, num_folds=3, labels=labels)
    with pytest.raises(ValueError, match=r"at least `num_folds`=3 members .* got class 1 with 2"):
        dm.setup("fit")


# ---------------------------------------------------------------------------------------------------------------------
# With a Trainer: fold info reaches the logged hyperparameters, and "no validation set" is accepted.
# ---------------------------------------------------------------------------------------------------------------------


class _Regressor(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Linear(1, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        return nn.functional.mse_loss(self.layer(x).squeeze(1), y.float())

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.log("val/loss", nn.functional.mse_loss(self.layer(x).squeeze(1), y.float()))

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _fit(dm: FoldedDataModule, root: Path) -> Trainer:
    trainer = Trainer(
        max_epochs=1,
        logger=CSVLogger(root),
        accelerator="cpu",
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(_Regressor(), datamodule=dm)
    return trainer


def test_fold_info_is_logged_as_hyperparameters(tmp_path: Path) -> None:
    dm = FoldedDataModule(_dataset(20), num_folds=4, fold_index=1, batch_size=5)
    trainer = _fit(dm, tmp_path)
    hparams = yaml.safe_load(Path(trainer.logger.log_dir, "hparams.yaml").read_text())
    assert hparams["num_folds"] == 4 and hparams["fold_index"] == 1
    assert hparams["fold_info"]["train_size"] == 15 and hparams["fold_info"]["val_size"] == 5
    assert "dataset" not in hparams and "labels" not in hparams
    assert trainer.num_val_batches == [1]


@pytest.mark.filterwarnings("ignore:Total length of `list` across ranks is zero")
def test_fit_without_validation_set(tmp_path: Path) -> None:
    dm = FoldedDataModule(_dataset(20), batch_size=5)
    trainer = _fit(dm, tmp_path)
    assert trainer.num_training_batches == 4
    assert sum(trainer.num_val_batches) == 0
    assert "val/loss" not in trainer.callback_metrics


def test_map_style_dataset_without_tensors() -> None:
    class Squares(Dataset):
        def __len__(self) -> int:
            return 9

        def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
            return torch.tensor([float(index)]), torch.tensor(float(index**2))

    dm = FoldedDataModule(Squares(), num_folds=3, fold_index=2, batch_size=9)
    dm.setup("fit")
    x, y = next(iter(dm.val_dataloader()))
    assert torch.equal(y, x.squeeze(1) ** 2) and len(x) == 3
