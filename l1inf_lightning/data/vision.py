"""The paper's real image data sets, MNIST and CIFAR-10, plus Fashion-MNIST, as foldable DataModules.

Each DataModule wraps a torchvision dataset (the real torchvision loading code, files in torchvision's layout under
``data_dir``) and its standard normalization. The full training set is loaded once without a transform; the
training split gets the training transform (for CIFAR-10 a random crop and horizontal flip) and the validation
split, whether the default hold-out or a cross-validation fold, gets the deterministic evaluation transform, as the
test set does. Without folds, ``val_size`` samples of the training set, drawn with a seed, are held out.
"""

from __future__ import annotations

import os
from abc import abstractmethod
from collections.abc import Callable, Sized
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import Dataset, Subset
from torchvision import datasets, transforms
from typing_extensions import override

from l1inf_lightning._checks import check_int
from l1inf_lightning.data.base import FoldableDataModule, derive_seed

__all__ = ["CIFAR10DataModule", "FashionMNISTDataModule", "MNISTDataModule", "VisionDataModule"]

# Sub-seed stream of the default train/validation split (see `derive_seed`); the shuffle uses stream 0.
_SPLIT_STREAM = 1

Transform = Callable[[Any], Any]


class _Transformed(Dataset):
    """Applies ``transform`` to the input of every ``(input, target)`` sample of ``dataset``.

    Lets the training and validation splits of one loaded training set use different transforms.
    """

    def __init__(self, dataset: Dataset, transform: Transform) -> None:
        self.dataset = dataset
        self.transform = transform

    def __len__(self) -> int:
        assert isinstance(self.dataset, Sized)
        return len(self.dataset)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        x, y = self.dataset[index]
        return self.transform(x), y


class VisionDataModule(FoldableDataModule):
    """Base of the torchvision image DataModules: loading, normalization, default split and the missing-data error.

    Subclasses set the class attributes (``dataset_class``, ``dataset_name``, ``mean``, ``std``, ``input_shape``)
    and say where the files live (``_data_folder``) and which files are expected (``_expected_files``); they may
    override ``train_transform`` for augmentation.

    Args:
        data_dir: The root directory given to torchvision (``root``).
        download: Download the files into ``data_dir`` if they are missing (needs network).
        val_size: Training samples held out for validation when ``num_folds`` is None, drawn with ``seed``
            (0: no validation).
        batch_size: Samples per batch, for every split.
        num_folds: Number of cross-validation folds of the training set (stratified by label), or None.
        fold_index: The fold held out for validation; must be 0 when ``num_folds`` is None.
        fold_seed: Seed of the assignment of samples to folds.
        num_workers: Worker processes per DataLoader.
        seed: Seed of the default validation split and of the training shuffle.
    """

    dataset_class: ClassVar[Callable[..., Dataset]]
    dataset_name: ClassVar[str]
    mean: ClassVar[tuple[float, ...]]
    std: ClassVar[tuple[float, ...]]
    input_shape: ClassVar[tuple[int, int, int]]
    num_classes: int | None = 10
    task = "classification"

    def __init__(
        self,
        data_dir: str = "data",
        download: bool = False,
        val_size: int = 5000,
        batch_size: int = 128,
        num_folds: int | None = None,
        fold_index: int = 0,
        fold_seed: int = 0,
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
        check_int("val_size", val_size)
        self.save_hyperparameters()
        self.data_dir = str(data_dir)
        self.download = download
        self.val_size = val_size
        self._transforms_applied = False

    # ----------------------------------------------------------------------------------------------------------------
    # Override points
    # ----------------------------------------------------------------------------------------------------------------

    @abstractmethod
    def _data_folder(self) -> str:
        """The folder under ``data_dir`` that torchvision reads the files from."""

    @abstractmethod
    def _expected_files(self) -> list[str]:
        """The file names torchvision expects in ``_data_folder()``."""

    def _how_to_get(self) -> str:
        """How a user gets the files, for the missing-data error."""
        return f"set `download: true` (`--data.init_args.download true`) to fetch them into {self.data_dir!r}"

    def eval_transform(self) -> Transform:
        """The deterministic transform of validation and test images: to a tensor, then normalize."""
        return transforms.Compose([transforms.ToTensor(), transforms.Normalize(self.mean, self.std)])

    def train_transform(self) -> Transform:
        """The transform of training images; the evaluation transform unless a subclass augments."""
        return self.eval_transform()

    # ----------------------------------------------------------------------------------------------------------------
    # Data
    # ----------------------------------------------------------------------------------------------------------------

    def _dataset(self, train: bool, transform: Transform | None) -> Dataset:
        try:
            return self.dataset_class(root=self.data_dir, train=train, transform=transform, download=self.download)
        except RuntimeError as error:
            if "not found" not in str(error):
                raise
            raise FileNotFoundError(self._missing_message()) from error

    def _missing_message(self) -> str:
        folder = self._data_folder()
        expected = self._expected_files()
        missing = [name for name in expected if not os.path.isfile(os.path.join(folder, name))]
        if len(missing) == len(expected):
            state = "none of them is there"
        elif missing:
            state = f"missing: {', '.join(missing)}"
        else:
            state = "all are there, but torchvision rejected them as incomplete or corrupt"
        return (
            f"{self.dataset_name} was not found in {folder!r}: expected the files {', '.join(expected)} ({state}). "
            f"To get them, {self._how_to_get()}."
        )

    @override
    def prepare_data(self) -> None:
        """Download the files once (on one process per node) when ``download`` is set."""
        if self.download:
            self._dataset(train=True, transform=None)
            self._dataset(train=False, transform=None)

    @override
    def _load_datasets(self) -> tuple[Dataset, Dataset | None]:
        # The training set is loaded untransformed; `setup` gives each split its own transform.
        return self._dataset(train=True, transform=None), self._dataset(train=False, transform=self.eval_transform())

    @override
    def _default_split(self, train_full: Dataset) -> tuple[Dataset, Dataset | None]:
        num_samples = len(train_full)  # type: ignore[arg-type]
        if self.val_size == 0:
            return train_full, None
        if self.val_size >= num_samples:
            raise ValueError(
                f"Expected `val_size` to be smaller than the training set ({num_samples}), got {self.val_size}"
            )
        generator = torch.Generator().manual_seed(derive_seed(self.seed, _SPLIT_STREAM))
        order = torch.randperm(num_samples, generator=generator)
        val_idx, train_idx = order[: self.val_size].sort().values, order[self.val_size :].sort().values
        return Subset(train_full, train_idx.tolist()), Subset(train_full, val_idx.tolist())

    @override
    def _labels(self, train_full: Dataset) -> Tensor:
        return torch.as_tensor(train_full.targets)  # type: ignore[attr-defined]

    @override
    def setup(self, stage: str) -> None:
        """Build the splits (see :class:`FoldableDataModule`), then give each its transform (once)."""
        super().setup(stage)
        if self._transforms_applied:
            return
        assert self.train_set is not None
        self.train_set = _Transformed(self.train_set, self.train_transform())
        if self.val_set is not None:
            self.val_set = _Transformed(self.val_set, self.eval_transform())
        self._transforms_applied = True


class _MNISTLikeDataModule(VisionDataModule):
    """MNIST-format data (idx files) in ``<data_dir>/<ClassName>/raw``; ``make data`` unpacks both here."""

    input_shape = (1, 28, 28)

    @override
    def _data_folder(self) -> str:
        return os.path.join(self.data_dir, self.dataset_class.__name__, "raw")  # type: ignore[attr-defined]

    @override
    def _expected_files(self) -> list[str]:
        return [f"{split}-{kind}" for split in ("train", "t10k") for kind in ("images-idx3-ubyte", "labels-idx1-ubyte")]

    @override
    def _how_to_get(self) -> str:
        return (
            "run `make data` in this project (it unpacks the copies in ../shared/data; use `make data DATA_DIR=...` "
            f"for another directory), or {super()._how_to_get()} (needs network)"
        )


class MNISTDataModule(_MNISTLikeDataModule):
    """MNIST handwritten digits: 60,000 training and 10,000 test images, 1×28×28, 10 classes.

    Normalized with the training set's mean 0.1307 and standard deviation 0.3081. Reads
    ``<data_dir>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``.

    Example:
        >>> dm = MNISTDataModule(data_dir="data", val_size=5000)
        >>> dm.input_shape, dm.num_classes, dm.task
        ((1, 28, 28), 10, 'classification')

    Args:
        data_dir: The root directory given to torchvision (``root``).
        download: Download the files into ``data_dir`` if they are missing (needs network).
        val_size: Training samples held out for validation when ``num_folds`` is None (0: no validation).
        batch_size: Samples per batch, for every split.
        num_folds: Number of cross-validation folds of the training set (stratified by label), or None.
        fold_index: The fold held out for validation; must be 0 when ``num_folds`` is None.
        fold_seed: Seed of the assignment of samples to folds.
        num_workers: Worker processes per DataLoader.
        seed: Seed of the default validation split and of the training shuffle.
    """

    dataset_class = datasets.MNIST
    dataset_name = "MNIST"
    mean = (0.1307,)
    std = (0.3081,)


class FashionMNISTDataModule(_MNISTLikeDataModule):
    """Fashion-MNIST (Zalando): 60,000 training and 10,000 test images of clothing, 1×28×28, 10 classes.

    Normalized with mean 0.2860 and standard deviation 0.3530. Reads
    ``<data_dir>/FashionMNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte``.

    Args:
        data_dir: The root directory given to torchvision (``root``).
        download: Download the files into ``data_dir`` if they are missing (needs network).
        val_size: Training samples held out for validation when ``num_folds`` is None (0: no validation).
        batch_size: Samples per batch, for every split.
        num_folds: Number of cross-validation folds of the training set (stratified by label), or None.
        fold_index: The fold held out for validation; must be 0 when ``num_folds`` is None.
        fold_seed: Seed of the assignment of samples to folds.
        num_workers: Worker processes per DataLoader.
        seed: Seed of the default validation split and of the training shuffle.
    """

    dataset_class = datasets.FashionMNIST
    dataset_name = "Fashion-MNIST"
    mean = (0.2860,)
    std = (0.3530,)


class CIFAR10DataModule(VisionDataModule):
    """CIFAR-10: 50,000 training and 10,000 test colour images, 3×32×32, 10 classes.

    Normalized per channel with mean (0.4914, 0.4822, 0.4465) and standard deviation (0.2470, 0.2435, 0.2616).
    Training images are augmented with a random 32×32 crop of the image padded by 4 pixels and a random horizontal
    flip; validation and test images are not. Reads the Python version of the data set,
    ``<data_dir>/cifar-10-batches-py/{data_batch_1, ..., data_batch_5, test_batch, batches.meta}``.

    Args:
        data_dir: The root directory given to torchvision (``root``).
        download: Download and unpack ``cifar-10-python.tar.gz`` into ``data_dir`` if missing (needs network).
        val_size: Training samples held out for validation when ``num_folds`` is None (0: no validation).
        batch_size: Samples per batch, for every split.
        num_folds: Number of cross-validation folds of the training set (stratified by label), or None.
        fold_index: The fold held out for validation; must be 0 when ``num_folds`` is None.
        fold_seed: Seed of the assignment of samples to folds.
        num_workers: Worker processes per DataLoader.
        seed: Seed of the default validation split and of the training shuffle.
    """

    dataset_class = datasets.CIFAR10
    dataset_name = "CIFAR-10"
    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)
    input_shape = (3, 32, 32)

    @override
    def _data_folder(self) -> str:
        return os.path.join(self.data_dir, datasets.CIFAR10.base_folder)

    @override
    def _expected_files(self) -> list[str]:
        return [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"]

    @override
    def _how_to_get(self) -> str:
        return (
            f"{super()._how_to_get()} (needs network), or download {datasets.CIFAR10.url} and unpack it into "
            f"{self.data_dir!r}"
        )

    @override
    def train_transform(self) -> Transform:
        """Random crop with 4-pixel zero padding and random horizontal flip, then the evaluation transform."""
        return transforms.Compose(
            [
                transforms.RandomCrop(32, padding=4),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize(self.mean, self.std),
            ]
        )
