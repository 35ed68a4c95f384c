"""Shared fixtures: CIFAR-10 in torchvision's on-disk format, written by the tests (no CIFAR-10 here); every
``reproduce NAME --quick`` run once per session."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torchvision.datasets.cifar

from l1inf_lightning.commands import main as cli_main
from l1inf_lightning.cv import backends
from l1inf_lightning.reproduce import NAMES

DATA = Path(__file__).resolve().parents[1] / "data"  # `make test` unpacks MNIST there

CIFAR10_PER_BATCH = 20
CIFAR10_LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_fake_cifar10(root: Path, per_batch: int = CIFAR10_PER_BATCH, seed: int = 0) -> Path:
    """Write the files of the Python version of CIFAR-10 under ``root/cifar-10-batches-py`` with random images.

    The same pickled dicts as the real ``cifar-10-python.tar.gz``: ``data`` a uint8 array (N, 3072) with the
    channels stored one after the other (1024 red, 1024 green, 1024 blue values, row-major), ``labels`` a list of N
    ints, and ``batches.meta`` with ``label_names``. Labels cycle through the 10 classes, so every class has
    ``per_batch // 10`` samples per batch.
    """
    folder = root / torchvision.datasets.CIFAR10.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    for batch_index, name in enumerate(names):
        data = rng.integers(0, 256, size=(per_batch, 3 * 32 * 32), dtype=np.uint8)
        labels = [(batch_index + i) % 10 for i in range(per_batch)]
        entry = {
            "batch_label": f"fake {name}",
            "data": data,
            "labels": labels,
            "filenames": [f"{i}.png" for i in labels],
        }
        with open(folder / name, "wb") as file:
            pickle.dump(entry, file)
    meta = {"label_names": CIFAR10_LABEL_NAMES, "num_cases_per_batch": per_batch, "num_vis": 3 * 32 * 32}
    with open(folder / "batches.meta", "wb") as file:
        pickle.dump(meta, file)
    return root


@pytest.fixture
def accept_test_made_cifar10(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let torchvision's CIFAR10 accept files the tests wrote, whose MD5 sums differ from the real ones.

    Only the checksum comparison is replaced, by an existence check: ``torchvision.datasets.cifar.check_integrity``
    (used by ``CIFAR10._check_integrity`` and ``CIFAR10._load_meta``) is patched in the cifar module alone. The rest
    of the real loading code runs as is, including its "Dataset not found" error when a file is missing.
    """
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


@pytest.fixture
def fake_cifar10_dir(tmp_path: Path, accept_test_made_cifar10: None) -> Path:
    """A ``data_dir`` holding test-made CIFAR-10 files: 5 × 20 training and 20 test images."""
    return write_fake_cifar10(tmp_path / "cifar_data")


@pytest.fixture(scope="session")
def quick_reproductions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One directory holding every ``reproduce NAME --quick`` (all seven), run once per test session.

    The tests of each reproduction and the reproduce notebook read it; a test that deletes a file reruns the command,
    which writes it again, so the directory stays complete.
    """
    output = tmp_path_factory.mktemp("reproductions")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backends, "_usable_cpus", lambda: 1)  # one torch thread per worker
        for name in NAMES:
            cli_main(["reproduce", name, "--quick", "--output", str(output), "--no-progress", "--workers", "2",
                      "--data-dir", str(DATA)])  # fmt: skip
    return output
