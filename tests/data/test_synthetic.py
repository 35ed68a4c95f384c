import math

import pytest
import torch
from torch import Tensor

from l1inf_lightning.data import (
    SyntheticClassificationDataModule,
    SyntheticRegressionDataModule,
    classification_labels,
    make_classification_data,
    make_regression_data,
    neighbour_correlated_features,
    regression_coefficients,
)

# ---------------------------------------------------------------------------------------------------------------------
# Slow references, one Python loop per sample and feature, written from the talk's formulas.
# ---------------------------------------------------------------------------------------------------------------------


def reference_regression(z: Tensor, eps: Tensor, beta: Tensor) -> tuple[list[list[float]], list[float]]:
    """x_1 = z_1, x_j = z_j + 0.2 (z_{j+1} + z_{j-1}) for j >= 2 (z past the end is 0); y = x.beta + eps."""
    zs, num_features = z.double().tolist(), z.shape[1]
    xs, ys = [], []
    for i, row in enumerate(zs):
        x = []
        for j in range(num_features):
            if j == 0:
                x.append(row[0])
            else:
                after = row[j + 1] if j + 1 < num_features else 0.0
                x.append(row[j] + 0.2 * (after + row[j - 1]))
        xs.append(x)
        ys.append(sum(a * b for a, b in zip(x, beta.double().tolist(), strict=True)) + float(eps[i, 0]))
    return xs, ys


def reference_label(x: list[float]) -> int:
    return int(math.exp(x[0]) + x[1] ** 2 + 5 * math.sin(x[2] * x[3]) - 3 > 0)


# ---------------------------------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------------------------------


def test_regression_matches_slow_reference() -> None:
    num_samples, num_features, num_informative = 7, 12, 5
    x, y, beta = make_regression_data(
        num_samples, num_features, num_informative, generator=torch.Generator().manual_seed(3)
    )
    # Replay the documented draw order: beta's uniforms, then z, then eps.
    replay = torch.Generator().manual_seed(3)
    uniform = torch.rand(num_informative, generator=replay)
    z = torch.randn(num_samples, num_features, generator=replay)
    eps = torch.randn(num_samples, 1, generator=replay)
    expected_beta = [0.15 + (150 - 0.15) * float(u) for u in uniform] + [0.0] * (num_features - num_informative)
    torch.testing.assert_close(beta, torch.tensor(expected_beta, dtype=torch.float32))
    xs, ys = reference_regression(z, eps, beta)
    torch.testing.assert_close(x, torch.tensor(xs, dtype=torch.float32), rtol=0, atol=1e-6)
    torch.testing.assert_close(y, torch.tensor(ys, dtype=torch.float32).unsqueeze(1), rtol=1e-6, atol=1e-3)


def test_regression_with_given_beta_draws_only_z_and_eps() -> None:
    beta = torch.linspace(-1, 1, 12)
    x, y, returned = make_regression_data(6, 12, generator=torch.Generator().manual_seed(1), beta=beta)
    replay = torch.Generator().manual_seed(1)
    z = torch.randn(6, 12, generator=replay)
    eps = torch.randn(6, 1, generator=replay)
    xs, ys = reference_regression(z, eps, beta)
    assert torch.equal(returned, beta)
    torch.testing.assert_close(x, torch.tensor(xs, dtype=torch.float32), rtol=0, atol=1e-6)
    torch.testing.assert_close(y, torch.tensor(ys, dtype=torch.float32).unsqueeze(1), rtol=1e-6, atol=1e-5)


def test_neighbour_correlation_boundaries() -> None:
    z = torch.zeros(1, 5)
    z[0, 4] = 1.0  # the last feature only leaks into its left neighbour
    assert neighbour_correlated_features(z).tolist() == [[0.0, 0.0, 0.0, pytest.approx(0.2), 1.0]]
    z = torch.zeros(1, 5)
    z[0, 1] = 1.0  # x_1 = z_1 alone, so z_2 does not leak into the first feature
    assert neighbour_correlated_features(z).tolist() == [[0.0, 1.0, pytest.approx(0.2), 0.0, 0.0]]


def test_beta_support_and_range() -> None:
    beta = regression_coefficients(generator=torch.Generator().manual_seed(0))
    assert beta.shape == (1000,) and beta.dtype == torch.float32
    assert torch.all(beta[:100] >= 0.15) and torch.all(beta[:100] <= 150)
    assert torch.all(beta[100:] == 0)
    assert torch.nonzero(beta).squeeze(1).tolist() == list(range(100))
    assert beta[:100].mean().item() == pytest.approx(75, abs=15)  # U(0.15, 150) has mean ~75


@pytest.mark.parametrize("zeta_mode", ["per_sample", "per_dataset"])
def test_classification_matches_slow_reference(zeta_mode: str) -> None:
    num_samples, num_features = 40, 12
    x, y = make_classification_data(
        num_samples, num_features, generator=torch.Generator().manual_seed(2), zeta_mode=zeta_mode
    )
    replay = torch.Generator().manual_seed(2)
    if zeta_mode == "per_sample":
        zetas = torch.randn(num_samples, 1, generator=replay)[:, 0].tolist()
    else:
        zetas = torch.randn(1, generator=replay).tolist() * num_samples
    noise = torch.randn(num_samples, num_features, generator=replay).tolist()
    # x_ij ~ N(zeta / 2, 1/4): mean zeta / 2, standard deviation 1/2.
    xs = [[zetas[i] / 2 + 0.5 * noise[i][j] for j in range(num_features)] for i in range(num_samples)]
    torch.testing.assert_close(x, torch.tensor(xs), rtol=0, atol=1e-6)
    assert y.tolist() == [reference_label(row) for row in x.double().tolist()]


def test_classification_with_given_zeta() -> None:
    x, _ = make_classification_data(
        4000, 5, generator=torch.Generator().manual_seed(0), zeta_mode="per_dataset", zeta=1.5
    )
    assert x.mean().item() == pytest.approx(0.75, abs=0.02)
    assert x.std().item() == pytest.approx(0.5, abs=0.02)


def test_classification_distribution() -> None:
    x, y = make_classification_data(2000, 50, generator=torch.Generator().manual_seed(0))
    # Within a sample the features share zeta, so their spread is the noise's: variance 1/4.
    assert x.var(dim=1).mean().item() == pytest.approx(0.25, abs=0.01)
    # Across samples the mean zeta / 2 varies with standard deviation 1/2.
    assert x.mean(dim=1).std().item() == pytest.approx(0.5, abs=0.04)
    # Both classes present, about 35% positives under per-sample zeta.
    assert 0.28 < y.float().mean().item() < 0.42


def test_classification_labels_rule() -> None:
    x = torch.randn(300, 6, generator=torch.Generator().manual_seed(4))
    assert classification_labels(x).tolist() == [reference_label(row) for row in x.double().tolist()]


@pytest.mark.parametrize("num_samples", [0, 1, 33])
def test_shapes_and_dtypes(num_samples: int) -> None:
    generator = torch.Generator().manual_seed(0)
    x, y, beta = make_regression_data(num_samples, 20, 4, generator=generator)
    assert (x.shape, y.shape, beta.shape) == ((num_samples, 20), (num_samples, 1), (20,))
    assert x.dtype == y.dtype == beta.dtype == torch.float32
    x, y = make_classification_data(num_samples, 9, generator=generator)
    assert (x.shape, y.shape, x.dtype, y.dtype) == ((num_samples, 9), (num_samples,), torch.float32, torch.int64)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda g: make_regression_data(5, 10, 11, generator=g), r"`num_informative` to be at most `num_features`"),
        (lambda g: make_regression_data(5, 10, generator=g, beta=torch.ones(9)), r"`beta` to have shape \(10,\)"),
        (lambda g: make_regression_data(-1, 10, generator=g), r"`num_samples` to be an integer >= 0, got -1"),
        (lambda g: make_regression_data(5, 10, generator=0), r"`generator` to be a torch.Generator, got int"),
        (lambda g: make_classification_data(5, 3, generator=g), r"`num_features` to be an integer >= 4, got 3"),
        (
            lambda g: make_classification_data(5, generator=g, zeta_mode="once"),
            r"`zeta_mode` to be one of \('per_sample', 'per_dataset'\), got 'once'",
        ),
        (
            lambda g: make_classification_data(5, generator=g, zeta=0.3),
            r"`zeta` to be None unless `zeta_mode` is 'per_dataset', got 0.3",
        ),
        (lambda g: classification_labels(torch.zeros(3, 3)), r"`x` to have shape .* got \(3, 3\)"),
    ],
)
def test_generators_reject_bad_arguments(call, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        call(torch.Generator())


# ---------------------------------------------------------------------------------------------------------------------
# DataModules
# ---------------------------------------------------------------------------------------------------------------------

SMALL_REGRESSION = {"num_train": 60, "num_test": 40, "num_val": 30, "num_features": 16, "num_informative": 4}
SMALL_CLASSIFICATION = {"num_train": 60, "num_test": 40, "num_val": 30, "num_features": 8}


def _tensors(dataset) -> tuple[Tensor, Tensor]:
    xs, ys = zip(*(dataset[i] for i in range(len(dataset))), strict=True)
    return torch.stack(xs), torch.stack(ys)


def _row_matches(a: Tensor, b: Tensor) -> Tensor:
    """matches[i, j] is True when row i of a equals row j of b exactly."""
    return (a.unsqueeze(1) == b.unsqueeze(0)).all(dim=2)


def _splits(dm) -> list[tuple[Tensor, Tensor]]:
    dm.setup("fit")
    return [_tensors(dm.train_set), _tensors(dm.val_set), _tensors(dm.test_set)]


@pytest.mark.parametrize(
    ("cls", "expected"),
    [(SyntheticRegressionDataModule, (500, 1500, 1000)), (SyntheticClassificationDataModule, (500, 1000, 500))],
)
def test_paper_defaults_and_loader_sizes(cls, expected: tuple[int, int, int]) -> None:
    dm = cls()
    num_train, num_test, num_features = expected
    assert (dm.num_train, dm.num_test, dm.num_features) == expected
    dm.setup("fit")
    train = list(dm.train_dataloader())
    assert len(train) == num_train // 50 and all(x.shape == (50, num_features) for x, _ in train)
    assert sum(len(x) for x, _ in dm.val_dataloader()) == 500
    assert sum(len(x) for x, _ in dm.test_dataloader()) == num_test
    assert dm.fold_info["train_size"] == num_train and dm.fold_info["val_size"] == 500


def test_task_attributes() -> None:
    regression = SyntheticRegressionDataModule(**SMALL_REGRESSION)
    classification = SyntheticClassificationDataModule(**SMALL_CLASSIFICATION)
    assert (regression.task, regression.num_classes, regression.num_features) == ("regression", None, 16)
    assert (classification.task, classification.num_classes, classification.num_features) == ("classification", 2, 8)
    regression.setup("fit")
    classification.setup("fit")
    x, y = next(iter(regression.train_dataloader()))
    assert x.dtype == y.dtype == torch.float32 and y.shape == (50, 1)
    x, y = next(iter(classification.train_dataloader()))
    assert x.dtype == torch.float32 and y.dtype == torch.int64 and y.shape == (50,)


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(SyntheticRegressionDataModule, SMALL_REGRESSION), (SyntheticClassificationDataModule, SMALL_CLASSIFICATION)],
)
def test_datamodules_are_reproducible(cls, kwargs: dict) -> None:
    first, again, other = _splits(cls(**kwargs, seed=4)), _splits(cls(**kwargs, seed=4)), _splits(cls(**kwargs, seed=5))
    for (x1, y1), (x2, y2), (x3, _) in zip(first, again, other, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
        assert not torch.equal(x1, x3)
    # Train, validation and test are independent draws, not copies of each other.
    assert not torch.equal(first[0][0][:30], first[1][0])


@pytest.mark.parametrize(
    ("cls", "kwargs"),
    [(SyntheticRegressionDataModule, SMALL_REGRESSION), (SyntheticClassificationDataModule, SMALL_CLASSIFICATION)],
)
def test_split_sizes_do_not_change_other_splits(cls, kwargs: dict) -> None:
    (train, val, test) = _splits(cls(**kwargs))
    (train_2, val_2, test_2) = _splits(cls(**{**kwargs, "num_test": 77}))
    (train_3, val_3, test_3) = _splits(cls(**{**kwargs, "num_val": 11}))
    for (x, y), (x_other, y_other) in [(train, train_2), (val, val_2), (train, train_3), (test, test_3)]:
        assert torch.equal(x, x_other) and torch.equal(y, y_other)
    assert test_2[0].shape[0] == 77 and val_3[0].shape[0] == 11


def test_regression_splits_share_the_true_beta() -> None:
    dm = SyntheticRegressionDataModule(num_train=200, num_test=200, num_val=200, num_features=30, num_informative=5)
    assert torch.equal(dm.beta, SyntheticRegressionDataModule(num_features=30, num_informative=5).beta)
    assert torch.count_nonzero(dm.beta).item() == 5
    for x, y in _splits(dm):
        residual = y.squeeze(1) - x @ dm.beta
        assert residual.std().item() == pytest.approx(1.0, abs=0.15)  # only the N(0, 1) noise is left


@pytest.mark.parametrize("num_folds", [None, 5])
def test_standardize_uses_the_training_split_statistics_for_every_split(num_folds: int | None) -> None:
    kwargs = {**SMALL_REGRESSION, "num_folds": num_folds, "fold_index": 1 if num_folds else 0}
    raw = _splits(SyntheticRegressionDataModule(**kwargs))
    dm = SyntheticRegressionDataModule(**kwargs, standardize=True)
    standardized = _splits(dm)
    train_x, train_y = raw[0]  # the training folds alone under cross-validation
    x_mean, x_std = train_x.double().mean(0), train_x.double().std(0, correction=0)
    y_mean, y_std = train_y.double().mean(0), train_y.double().std(0, correction=0)
    assert y_std.item() > 10  # the raw targets are far from unit scale
    for (x, y), (x_std_split, y_std_split) in zip(raw, standardized, strict=True):
        torch.testing.assert_close(x_std_split.double(), (x - x_mean) / x_std, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(y_std_split.double(), (y - y_mean) / y_std, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(dm.target_std.double(), y_std)
    # Validation and test are not centred on their own statistics: the training split's are applied to them.
    assert abs(standardized[2][1].mean().item()) > 1e-3
    # A prediction maps back to the original units; an MSE there is target_std² times the standardized one.
    test_y = standardized[2][1]
    torch.testing.assert_close(dm.to_original_units(test_y), raw[2][1], rtol=1e-5, atol=1e-3)
    zero = torch.zeros_like(test_y)
    mse_original = torch.mean((dm.to_original_units(zero) - raw[2][1]) ** 2)
    torch.testing.assert_close(
        mse_original, dm.target_std[0] ** 2 * torch.mean((zero - test_y) ** 2), rtol=1e-5, atol=0
    )
    dm.setup("test")  # a second setup leaves the splits as they are (not standardized twice)
    assert torch.equal(_tensors(dm.test_set)[1], test_y)


def test_standardize_is_off_by_default_and_leaves_the_data_raw() -> None:
    dm = SyntheticRegressionDataModule(**SMALL_REGRESSION)
    dm.setup("fit")
    assert dm.target_std is None
    prediction = torch.ones(3, 1)
    assert dm.to_original_units(prediction) is prediction


def test_per_dataset_zeta_is_shared_by_all_splits() -> None:
    dm = SyntheticClassificationDataModule(**{**SMALL_CLASSIFICATION, "num_features": 100}, zeta_mode="per_dataset")
    assert dm.zeta is not None
    for x, _ in _splits(dm):
        assert x.mean().item() == pytest.approx(dm.zeta / 2, abs=0.02)
    assert SyntheticClassificationDataModule(**SMALL_CLASSIFICATION).zeta is None


@pytest.mark.parametrize(
    ("cls", "kwargs", "stratified"),
    [
        (SyntheticRegressionDataModule, SMALL_REGRESSION, False),
        (SyntheticClassificationDataModule, SMALL_CLASSIFICATION, True),
    ],
)
def test_folds_split_the_training_set_and_never_touch_the_test_set(cls, kwargs: dict, stratified: bool) -> None:
    num_folds = 5
    reference = cls(**kwargs)
    train_x, train_y = _splits(reference)[0]
    test_x = _tensors(reference.test_set)[0]
    val_rows = []
    for fold_index in range(num_folds):
        dm = cls(**kwargs, num_folds=num_folds, fold_index=fold_index, fold_seed=3)
        (fold_train_x, _), (fold_val_x, fold_val_y), (fold_test_x, _) = _splits(dm)
        assert dm.fold_info == {
            "num_folds": num_folds,
            "fold_index": fold_index,
            "fold_seed": 3,
            "stratified": stratified,
            "train_size": 48,
            "val_size": 12,
        }
        assert torch.equal(fold_test_x, test_x)
        # No test sample in either part of the fold (compared by content).
        for part in (fold_train_x, fold_val_x):
            assert not _row_matches(part, test_x).any()
        # Every fold sample is exactly one training sample, and the two parts are disjoint.
        assert torch.equal(
            _row_matches(torch.cat([fold_train_x, fold_val_x]), train_x).sum(dim=1), torch.ones(60, dtype=torch.long)
        )
        assert not _row_matches(fold_train_x, fold_val_x).any()
        if stratified:
            positives = int(train_y.sum())
            assert abs(int(fold_val_y.sum()) - positives / num_folds) < 1
        val_rows.append(fold_val_x)
    # The validation folds cover the training set exactly once.
    all_val = torch.cat(val_rows)
    assert all_val.shape == train_x.shape
    assert torch.equal(_row_matches(train_x, all_val).sum(dim=1), torch.ones(60, dtype=torch.long))


def test_hyperparameters_hold_data_and_fold_arguments() -> None:
    dm = SyntheticClassificationDataModule(**SMALL_CLASSIFICATION, num_folds=3, fold_index=2, seed=9)
    assert dm.hparams["num_train"] == 60 and dm.hparams["seed"] == 9 and dm.hparams["zeta_mode"] == "per_sample"
    assert dm.hparams["num_folds"] == 3 and dm.hparams["fold_index"] == 2
    dm.setup("fit")
    assert dm.hparams["fold_info"] == dm.fold_info
    assert dm.hparams_initial["fold_info"]["stratified"] is True
    assert dm.full_train_size() == 60


def test_no_validation_draw() -> None:
    dm = SyntheticRegressionDataModule(**{**SMALL_REGRESSION, "num_val": 0})
    dm.setup("fit")
    assert dm.val_set is None and dm.val_dataloader() == []


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (SyntheticRegressionDataModule, {"num_folds": 61}, r"`num_folds` to be at most .* \(60\), got 61"),
        (SyntheticRegressionDataModule, {"num_folds": 1}, r"`num_folds` to be None or an integer >= 2, got 1"),
        (SyntheticRegressionDataModule, {"fold_index": 2}, r"`fold_index` to be 0 when `num_folds` is None, got 2"),
        (SyntheticRegressionDataModule, {"num_folds": 4, "fold_index": 4}, r"`fold_index` to be in \[0, 4\)"),
        (SyntheticRegressionDataModule, {"num_train": 0}, r"`num_train` to be an integer >= 1, got 0"),
        (SyntheticRegressionDataModule, {"num_val": -1}, r"`num_val` to be an integer >= 0, got -1"),
        (SyntheticRegressionDataModule, {"seed": -3}, r"`seed` to be an integer >= 0, got -3"),
        (SyntheticRegressionDataModule, {"num_informative": 17}, r"`num_informative` to be at most `num_features`"),
        (SyntheticRegressionDataModule, {"standardize": "yes"}, r"`standardize` to be a bool, got 'yes'"),
        (SyntheticClassificationDataModule, {"num_features": 3}, r"`num_features` to be an integer >= 4, got 3"),
        (SyntheticClassificationDataModule, {"zeta_mode": "global"}, r"`zeta_mode` to be one of .* got 'global'"),
    ],
)
def test_datamodules_reject_bad_arguments(cls, kwargs: dict, match: str) -> None:
    base = SMALL_REGRESSION if cls is SyntheticRegressionDataModule else SMALL_CLASSIFICATION
    with pytest.raises(ValueError, match=match):
        cls(**{**base, **kwargs})
