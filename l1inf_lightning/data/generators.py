"""The generators of the talk's two synthetic data sets ("A Synthesis Regression / Classification Experiment").

They are pure functions of a ``torch.Generator``: the same generator state gives the same tensors. Each documents the
order of its random draws, so a test can replay them. Everything is drawn on the CPU in float32; values are identical
across processes on one machine and torch build (torch's CPU normal sampler is vectorized per CPU type, so other
machines may differ in the last bits).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from l1inf_lightning._checks import check_int

__all__ = [
    "ZETA_MODES",
    "ZetaMode",
    "classification_labels",
    "make_classification_data",
    "make_regression_data",
    "neighbour_correlated_features",
    "regression_coefficients",
]

ZetaMode = Literal["per_sample", "per_dataset"]
ZETA_MODES = ("per_sample", "per_dataset")

# Bounds of the non-zero coefficients, beta_i ~ U(0.15, 150) (talk, "A Synthesis Regression Experiment").
_BETA_LOW, _BETA_HIGH = 0.15, 150.0
# Weight of each neighbour in x_j = z_j + 0.2 (z_{j+1} + z_{j-1}).
_NEIGHBOUR_WEIGHT = 0.2


def _check_generator(generator: object) -> None:
    if not isinstance(generator, torch.Generator):
        raise ValueError(f"Expected `generator` to be a torch.Generator, got {type(generator).__name__}")


# ---------------------------------------------------------------------------------------------------------------------
# Regression
# ---------------------------------------------------------------------------------------------------------------------


def regression_coefficients(
    num_features: int = 1000, num_informative: int = 100, *, generator: torch.Generator
) -> Tensor:
    r"""The sparse true coefficients of the regression experiment.

    .. math::
        \beta_i \sim \mathrm{U}(0.15, 150) \text{ for } i \le \text{num\_informative}, \qquad \beta_i = 0 \text{ else.}

    Draws ``torch.rand(num_informative)`` once from ``generator``.

    Args:
        num_features: Length of beta (the input dimension).
        num_informative: How many leading coefficients are non-zero.
        generator: Source of randomness.

    Returns:
        beta, float32 of shape ``(num_features,)``.

    Example:
        >>> beta = regression_coefficients(generator=torch.Generator().manual_seed(0))
        >>> beta.shape, int((beta != 0).sum())
        (torch.Size([1000]), 100)
    """
    _check_generator(generator)
    check_int("num_features", num_features, minimum=1)
    check_int("num_informative", num_informative)
    if num_informative > num_features:
        raise ValueError(
            f"Expected `num_informative` to be at most `num_features` ({num_features}), got {num_informative}"
        )
    beta = torch.zeros(num_features, dtype=torch.float32)
    uniform = torch.rand(num_informative, generator=generator, dtype=torch.float32)
    beta[:num_informative] = _BETA_LOW + (_BETA_HIGH - _BETA_LOW) * uniform
    return beta


def neighbour_correlated_features(z: Tensor) -> Tensor:
    r"""Correlate each feature with its neighbours, as in the regression experiment.

    .. math::
        x_1 = z_1, \qquad x_j = z_j + 0.2\,(z_{j+1} + z_{j-1}) \quad (j \ge 2), \qquad z_{m+1} := 0.

    The talk leaves ``z_{1001}`` (past the last feature) undefined; it is taken as 0 here. The first feature is
    ``z_1`` alone, exactly as the talk writes it.

    Args:
        z: Independent standard normal draws, shape ``(num_samples, num_features)``.

    Returns:
        x, same shape and dtype as ``z``.

    Example:
        >>> neighbour_correlated_features(torch.ones(2, 4))
        tensor([[1.0000, 1.4000, 1.4000, 1.2000],
                [1.0000, 1.4000, 1.4000, 1.2000]])
    """
    if z.ndim != 2:
        raise ValueError(f"Expected `z` to have shape (num_samples, num_features), got {tuple(z.shape)}")
    padded = F.pad(z, (1, 1))  # padded[:, j + 1] == z[:, j], zeros at both ends
    x = z + _NEIGHBOUR_WEIGHT * (padded[:, 2:] + padded[:, :-2])
    x[:, 0] = z[:, 0]
    return x


def make_regression_data(
    num_samples: int,
    num_features: int = 1000,
    num_informative: int = 100,
    *,
    generator: torch.Generator,
    beta: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Samples of the talk's sparse linear regression, :math:`y = x^\top \beta + \varepsilon`.

    :math:`z \sim N(0, I)`, ``x = neighbour_correlated_features(z)``, :math:`\varepsilon \sim N(0, 1)`, and beta from
    :func:`regression_coefficients` unless given. beta is the true model: draw it once and pass it to every split.

    Random draws, in this order: beta (only when ``beta`` is None, see :func:`regression_coefficients`), then
    ``z = torch.randn(num_samples, num_features)``, then ``eps = torch.randn(num_samples, 1)``.

    Args:
        num_samples: Number of samples n.
        num_features: Input dimension m.
        num_informative: Non-zero coefficients, used only when ``beta`` is None.
        generator: Source of randomness.
        beta: The true coefficients, shape ``(num_features,)``, or None to draw them.

    Returns:
        x (float32, ``(n, m)``), y (float32, ``(n, 1)``) and beta (float32, ``(m,)``).

    Example:
        >>> x, y, beta = make_regression_data(8, generator=torch.Generator().manual_seed(0))
        >>> x.shape, y.shape, beta.shape, x.dtype, y.dtype
        (torch.Size([8, 1000]), torch.Size([8, 1]), torch.Size([1000]), torch.float32, torch.float32)
    """
    _check_generator(generator)
    check_int("num_samples", num_samples)
    check_int("num_features", num_features, minimum=1)
    if beta is None:
        beta = regression_coefficients(num_features, num_informative, generator=generator)
    elif beta.shape != (num_features,):
        raise ValueError(f"Expected `beta` to have shape ({num_features},), got {tuple(beta.shape)}")
    beta = beta.to(device="cpu", dtype=torch.float32)
    z = torch.randn(num_samples, num_features, generator=generator, dtype=torch.float32)
    eps = torch.randn(num_samples, 1, generator=generator, dtype=torch.float32)
    x = neighbour_correlated_features(z)
    y = x @ beta.unsqueeze(1) + eps
    return x, y, beta


# ---------------------------------------------------------------------------------------------------------------------
# Classification
# ---------------------------------------------------------------------------------------------------------------------


def classification_labels(x: Tensor) -> Tensor:
    r"""Labels of the classification experiment; only the first four features matter.

    .. math::
        y = 1 \iff e^{x_1} + x_2^2 + 5 \sin(x_3 x_4) - 3 > 0.

    Args:
        x: Inputs, shape ``(num_samples, num_features)`` with ``num_features >= 4``.

    Returns:
        y, int64 of shape ``(num_samples,)`` with values in {0, 1}.

    Example:
        >>> classification_labels(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]))
        tensor([0, 1])
    """
    if x.ndim != 2 or x.shape[1] < 4:
        raise ValueError(f"Expected `x` to have shape (num_samples, num_features >= 4), got {tuple(x.shape)}")
    score = torch.exp(x[:, 0]) + x[:, 1] ** 2 + 5 * torch.sin(x[:, 2] * x[:, 3]) - 3
    return (score > 0).long()


def make_classification_data(
    num_samples: int,
    num_features: int = 500,
    *,
    generator: torch.Generator,
    zeta_mode: ZetaMode = "per_sample",
    zeta: float | None = None,
) -> tuple[Tensor, Tensor]:
    r"""Samples of the talk's binary classification experiment.

    .. math::
        \zeta \sim N(0, 1), \qquad x_{ij} \sim N(\zeta / 2,\ 1/4) \text{ (standard deviation 1/2)}, \qquad
        y_i = \mathbb{1}[e^{x_{i1}} + x_{i2}^2 + 5 \sin(x_{i3} x_{i4}) - 3 > 0].

    The talk does not say whether ζ is drawn once per sample or once per data set. ``"per_sample"`` (the default)
    draws one ζ per sample, a latent factor shared by that sample's features (about 35% positives);
    ``"per_dataset"`` draws one ζ for the whole set, so the class balance depends on that one draw. In
    ``"per_dataset"`` mode, pass the same ``zeta`` to every split so they come from one distribution.

    Random draws, in this order: ζ (``torch.randn(num_samples, 1)`` per sample, or ``torch.randn(1)`` per data set
    unless ``zeta`` is given), then ``noise = torch.randn(num_samples, num_features)``; ``x = ζ / 2 + noise / 2``.

    Args:
        num_samples: Number of samples n.
        num_features: Input dimension m, at least 4.
        generator: Source of randomness.
        zeta_mode: ``"per_sample"`` or ``"per_dataset"``.
        zeta: The data set's ζ in ``"per_dataset"`` mode, or None to draw it.

    Returns:
        x (float32, ``(n, m)``) and y (int64, ``(n,)``).

    Example:
        >>> x, y = make_classification_data(8, generator=torch.Generator().manual_seed(0))
        >>> x.shape, y.shape, x.dtype, y.dtype
        (torch.Size([8, 500]), torch.Size([8]), torch.float32, torch.int64)
    """
    _check_generator(generator)
    check_int("num_samples", num_samples)
    check_int("num_features", num_features, minimum=4)
    if zeta_mode not in ZETA_MODES:
        raise ValueError(f"Expected `zeta_mode` to be one of {ZETA_MODES}, got {zeta_mode!r}")
    if zeta is not None and zeta_mode != "per_dataset":
        raise ValueError(f"Expected `zeta` to be None unless `zeta_mode` is 'per_dataset', got {zeta!r}")
    if zeta is not None:
        latent = torch.full((1,), float(zeta), dtype=torch.float32)
    elif zeta_mode == "per_sample":
        latent = torch.randn(num_samples, 1, generator=generator, dtype=torch.float32)
    else:
        latent = torch.randn(1, generator=generator, dtype=torch.float32)
    noise = torch.randn(num_samples, num_features, generator=generator, dtype=torch.float32)
    x = latent / 2 + noise / 2
    return x, classification_labels(x)


# ---------------------------------------------------------------------------------------------------------------------
# DataModules
# ---------------------------------------------------------------------------------------------------------------------
