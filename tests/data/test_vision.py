"""The torchvision DataModules: MNIST and Fashion-MNIST on the real files, CIFAR-10 on files the tests write."""

import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from l1inf_lightning.data import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule

ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = ROOT / "data"

MNIST_LIKE = {
    "MNIST": (MNISTDataModule, (0.1307, 0.3081)),
    "FashionMNIST": (FashionMNISTDataModule, (0.2860, 0.3530)),
}


def _needs_files(folder: str):
    return pytest.mark.skipif(
        # Where the shared archives exist, `make data` (run by `make test`) unpacks them: a missing folder is a failure.
        not (DATA_DIR / folder / "raw").is_dir() and not (ROOT.parent / "shared" / "data").is_dir(),
        reason=f"{DATA_DIR / folder / 'raw'} is absent: run `make data` (as `make test` does) to unpack it",
    )


def _split_indices(split) -> list[int]:
    """The indices into the full training set of a split (a transformed Subset)."""
    return list(split.dataset.indices)


# ------------------------------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST, on the real files
# ------------------------------------------------------------------------------------------------------------------

mnist_like = pytest.mark.parametrize(
    "folder", [pytest.param(name, marks=_needs_files(name)) for name in MNIST_LIKE], ids=list(MNIST_LIKE)
)


@mnist_like
def test_mnist_like_shapes_sizes_and_normalization(folder):
    cls, (mean, std) = MNIST_LIKE[folder]
    dm = cls(data_dir=str(DATA_DIR), batch_size=2000)
    assert (dm.input_shape, dm.num_classes, dm.task) == ((1, 28, 28), 10, "classification")
    assert (dm.mean, dm.std) == ((mean,), (std,))
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (55_000, 5_000, 10_000)
    assert dm.fold_info["train_size"] == 55_000 and dm.fold_info["val_size"] == 5_000
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2000, 1, 28, 28) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    # Standardized with the training set's statistics: close to mean 0, std 1 on a random batch.
    assert abs(float(x.mean())) < 0.05 and abs(float(x.std()) - 1) < 0.05
    # The background pixel (0) maps to -mean/std exactly.
    assert float(x.min()) == pytest.approx(-mean / std, abs=1e-6)
    x_test, _ = next(iter(dm.test_dataloader()))
    assert x_test.shape == (2000, 1, 28, 28) and abs(float(x_test.mean())) < 0.1


@mnist_like
def test_mnist_like_default_split_is_seeded_disjoint_and_covers_the_training_set(folder):
    cls, _ = MNIST_LIKE[folder]
    splits = {}
    for seed in (0, 0, 1):
        dm = cls(data_dir=str(DATA_DIR), val_size=1000, seed=seed)
        dm.setup("fit")
        train_idx, val_idx = _split_indices(dm.train_set), _split_indices(dm.val_set)
        assert len(val_idx) == 1000 and not set(train_idx) & set(val_idx)
        assert sorted(train_idx + val_idx) == list(range(60_000))
        splits.setdefault(seed, []).append(val_idx)
    assert splits[0][0] == splits[0][1]
    assert splits[0][0] != splits[1][0]


@mnist_like
def test_mnist_like_validation_uses_the_real_images_and_labels(folder):
    cls, (mean, std) = MNIST_LIKE[folder]
    dm = cls(data_dir=str(DATA_DIR), val_size=100)
    dm.setup("fit")
    index = _split_indices(dm.val_set)[0]
    raw = dm._train_full.data[index]  # uint8 (28, 28), as torchvision read it from the idx file
    x, y = dm.val_set[0]
    torch.testing.assert_close(x, ((raw.float() / 255 - mean) / std).unsqueeze(0))
    assert y == int(dm._train_full.targets[index])


@mnist_like
def test_mnist_like_three_folds_are_disjoint_stratified_and_cover_the_training_set(folder):
    cls, _ = MNIST_LIKE[folder]
    val_parts = []
    for fold_index in range(3):
        dm = cls(data_dir=str(DATA_DIR), num_folds=3, fold_index=fold_index, fold_seed=7, batch_size=500)
        dm.setup("fit")
        assert dm.fold_info["stratified"] and dm.fold_info["num_folds"] == 3
        assert len(dm.train_set) + len(dm.val_set) == 60_000 and len(dm.val_set) == 20_000
        val_idx = _split_indices(dm.val_set)
        assert not set(val_idx) & set(_split_indices(dm.train_set))
        # Stratified: each class's share in the fold matches its share in the whole training set.
        targets = dm._train_full.targets
        fold_counts = torch.bincount(targets[val_idx], minlength=10)
        torch.testing.assert_close(fold_counts * 3, torch.bincount(targets, minlength=10), atol=3, rtol=0)
        x, _ = next(iter(dm.val_dataloader()))
        assert x.shape == (500, 1, 28, 28)
        val_parts.append(set(val_idx))
    assert not (val_parts[0] & val_parts[1] or val_parts[0] & val_parts[2] or val_parts[1] & val_parts[2])
    assert set().union(*val_parts) == set(range(60_000))


@mnist_like
def test_mnist_like_val_size_zero_means_no_validation(folder):
    cls, _ = MNIST_LIKE[folder]
    dm = cls(data_dir=str(DATA_DIR), val_size=0)
    dm.setup("fit")
    assert len(dm.train_set) == 60_000 and dm.val_dataloader() == []


@_needs_files("MNIST")
def test_val_size_as_large_as_the_training_set_is_refused():
    dm = MNISTDataModule(data_dir=str(DATA_DIR), val_size=60_000)
    with pytest.raises(ValueError, match=r"Expected `val_size` to be smaller than the training set \(60000\)"):
        dm.setup("fit")


def test_bad_val_size_is_refused_at_construction():
    with pytest.raises(ValueError, match=r"Expected `val_size` to be an integer >= 0, got -1"):
        MNISTDataModule(val_size=-1)


@pytest.mark.parametrize(("cls", "folder"), [(MNISTDataModule, "MNIST"), (FashionMNISTDataModule, "FashionMNIST")])
def test_missing_mnist_files_name_the_directory_the_files_and_make_data(cls, folder, tmp_path):
    dm = cls(data_dir=str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        dm.setup("fit")
    message = str(info.value)
    assert str(tmp_path / folder / "raw") in message
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"):
        assert name in message
    assert "make data" in message and "download: true" in message


# ------------------------------------------------------------------------------------------------------------------
# CIFAR-10, on files in the real format written by the tests (tests/conftest.py)
# ------------------------------------------------------------------------------------------------------------------

CIFAR_MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(3, 1, 1)
CIFAR_STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(3, 1, 1)


def _written_cifar(data_dir: Path, name: str) -> tuple[np.ndarray, list[int]]:
    with open(data_dir / "cifar-10-batches-py" / name, "rb") as file:
        entry = pickle.load(file)
    return entry["data"], entry["labels"]


def _normalized(row: np.ndarray) -> torch.Tensor:
    """What the evaluation transform must give for one stored row of 3072 bytes (channel-major)."""
    image = torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32)) / 255
    return (image - CIFAR_MEAN) / CIFAR_STD


def test_cifar10_shapes_sizes_labels_and_pixels_match_the_written_files(fake_cifar10_dir):
    dm = CIFAR10DataModule(data_dir=str(fake_cifar10_dir), val_size=20, batch_size=8)
    assert (dm.input_shape, dm.num_classes) == ((3, 32, 32), 10)
    dm.setup("fit")
    assert (len(dm.train_set), len(dm.val_set), len(dm.test_set)) == (80, 20, 20)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    # The test set in order: the images and labels of `test_batch`, decoded channel-major and normalized.
    data, labels = _written_cifar(fake_cifar10_dir, "test_batch")
    xs, ys = zip(*(batch for batch in DataLoader(dm.test_set, batch_size=20)), strict=True)
    assert ys[0].tolist() == labels
    for i in range(20):
        torch.testing.assert_close(xs[0][i], _normalized(data[i]))
    # The training labels are the five batches' labels, split by the seeded permutation.
    all_labels = [label for i in range(1, 6) for label in _written_cifar(fake_cifar10_dir, f"data_batch_{i}")[1]]
    val_idx = _split_indices(dm.val_set)
    assert [dm.val_set[i][1] for i in range(20)] == [all_labels[j] for j in val_idx]


def _crops_and_flips(row: np.ndarray) -> torch.Tensor:
    """Every output RandomCrop(32, padding=4) + RandomHorizontalFlip can give for one image, normalized."""
    image = torch.from_numpy(row.reshape(3, 32, 32).astype(np.float32)) / 255
    padded = (F.pad(image, (4, 4, 4, 4), value=0.0) - CIFAR_MEAN) / CIFAR_STD
    crops = [padded[:, i : i + 32, j : j + 32] for i in range(9) for j in range(9)]
    return torch.stack(crops + [crop.flip(-1) for crop in crops])


def test_cifar10_training_images_are_random_crops_and_flips_validation_and_test_are_fixed(fake_cifar10_dir):
    dm = CIFAR10DataModule(data_dir=str(fake_cifar10_dir), val_size=20, batch_size=4)
    dm.setup("fit")
    data = np.concatenate([_written_cifar(fake_cifar10_dir, f"data_batch_{i}")[0] for i in range(1, 6)])
    index = _split_indices(dm.train_set)[0]
    candidates = _crops_and_flips(data[index])
    torch.manual_seed(0)
    draws = [dm.train_set[0][0] for _ in range(8)]
    for draw in draws:  # each draw is one of the 162 crops/flips of the stored image ...
        assert torch.isclose(candidates, draw, atol=1e-5).flatten(1).all(dim=1).any()
    assert len({tuple(d.flatten().tolist()) for d in draws}) > 1  # ... and they are not all the same one
    # Through the DataLoader too: two epochs give different pixels for the same samples.
    torch.manual_seed(1)
    first = torch.cat([x for x, _ in dm.train_dataloader()])
    second = torch.cat([x for x, _ in dm.train_dataloader()])  # same shuffle order seed, new crops
    assert not torch.equal(first, second)
    # Validation and test use the evaluation transform: deterministic and exactly the stored image.
    val_index = _split_indices(dm.val_set)[0]
    torch.testing.assert_close(dm.val_set[0][0], _normalized(data[val_index]))
    assert torch.equal(torch.cat([x for x, _ in dm.val_dataloader()]), torch.cat([x for x, _ in dm.val_dataloader()]))
    assert torch.equal(torch.cat([x for x, _ in dm.test_dataloader()]), torch.cat([x for x, _ in dm.test_dataloader()]))


def test_cifar10_folds_validate_on_an_unaugmented_stratified_fold(fake_cifar10_dir):
    dm = CIFAR10DataModule(data_dir=str(fake_cifar10_dir), num_folds=5, fold_index=2, batch_size=10)
    dm.setup("fit")
    assert dm.fold_info["stratified"] and (len(dm.train_set), len(dm.val_set)) == (80, 20)
    data = np.concatenate([_written_cifar(fake_cifar10_dir, f"data_batch_{i}")[0] for i in range(1, 6)])
    val_idx = _split_indices(dm.val_set)
    for position in range(3):
        torch.testing.assert_close(dm.val_set[position][0], _normalized(data[val_idx[position]]))
    assert sorted(dm.val_set[i][1] for i in range(20)) == sorted(list(range(10)) * 2)


def test_missing_cifar10_names_the_directory_and_files(tmp_path):
    # No patch here: torchvision's own integrity check fails, and the DataModule turns it into a clear error.
    dm = CIFAR10DataModule(data_dir=str(tmp_path))
    folder = str(tmp_path / "cifar-10-batches-py")
    with pytest.raises(FileNotFoundError, match=re.escape(folder)) as info:
        dm.setup("fit")
    message = str(info.value)
    assert "data_batch_1" in message and "data_batch_5" in message and "test_batch" in message
    assert "download: true" in message and "none of them is there" in message


def test_partly_missing_cifar10_lists_the_missing_file(fake_cifar10_dir):
    (fake_cifar10_dir / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing: data_batch_3\)"):
        CIFAR10DataModule(data_dir=str(fake_cifar10_dir), val_size=10).setup("fit")


def test_download_true_with_the_files_present_reads_them_without_downloading(fake_cifar10_dir, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download although the files are there")

    monkeypatch.setattr("torchvision.datasets.cifar.download_and_extract_archive", no_network)
    dm = CIFAR10DataModule(data_dir=str(fake_cifar10_dir), download=True, val_size=10)
    dm.prepare_data()
    dm.setup("fit")
    assert len(dm.test_set) == 20
