"""Tests for the batched L1-ball projection, against an independent reference written here.

The reference is the textbook sort-based projection (Duchi et al., ICML 2008, Fig. 1; Algorithm 2 of Wen et al.,
2021), one vector at a time in float64 NumPy. The kernel computes its threshold in float64 and rounds once to
the input's dtype, so results agree to about one unit in the last place of that dtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor, nn

from l1inf_lightning.functional import (
    all_finite,
    check_radius,
    l1inf_norm,
    neuron_vectors,
    project_l1_ball,
    project_l1_ball_,
    project_module_,
    projection_backend,
)

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")],
    ),
]
DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]
HALF_DTYPES = [torch.bfloat16, torch.float16]

# Relative tolerance per dtype: the kernel rounds a float64 result once to the dtype (half an ulp), and the
# reference may land on the other side of a rounding boundary, so about one ulp; float32 a little looser.
RTOL = {torch.float64: 1e-12, torch.float32: 1e-6, torch.bfloat16: 2.0**-7, torch.float16: 2.0**-10}
EPS64 = float(np.finfo(np.float64).eps)

PROPERTY_SETTINGS = settings(max_examples=200, deadline=None, database=None)


def reference_projection(vector: np.ndarray, radius: float) -> np.ndarray:
    """Duchi et al. (2008), Fig. 1, for one vector in float64: sort, find rho, soft-threshold."""
    vector = np.asarray(vector, dtype=np.float64)
    magnitudes = np.abs(vector)
    if math.isinf(radius) or magnitudes.sum() <= radius:
        return vector.copy()
    mu = np.sort(magnitudes)[::-1]
    cumulative = np.cumsum(mu)
    ranks = np.arange(1, mu.size + 1)
    candidates = np.nonzero(mu - (cumulative - radius) / ranks > 0)[0]
    # In exact arithmetic rho >= 1. Rounding empties the set only when radius < ulp(mu[0]); theta = mu[0] is then
    # within radius of the exact answer.
    if candidates.size:
        rho = candidates[-1] + 1
        theta = (cumulative[rho - 1] - radius) / rho
    else:
        theta = mu[0]
    return np.sign(vector) * np.maximum(magnitudes - theta, 0.0)


def smallest_subnormal(dtype: torch.dtype) -> float:
    info = torch.finfo(dtype)
    return info.tiny * info.eps


def bits(tensor: Tensor) -> Tensor:
    """The raw bit pattern, so that -0.0 and 0.0 (and every other value) compare exactly."""
    return tensor.view({1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[tensor.element_size()])


def assert_bitwise_equal(actual: Tensor, expected: Tensor) -> None:
    assert actual.dtype == expected.dtype
    assert torch.equal(bits(actual.cpu()), bits(expected.cpu())), f"{actual} is not bit-for-bit {expected}"


def as_float64(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy()


def per_row(radius: float | Tensor, rows: int) -> np.ndarray:
    if isinstance(radius, Tensor) and radius.numel() > 1:
        return radius.detach().cpu().to(torch.float64).numpy().reshape(-1)
    return np.full(rows, float(radius))


def assert_matches_reference(result: Tensor, vectors: Tensor, radius: float | Tensor) -> None:
    """Elementwise ``|w - w_ref| <= rtol |w_ref| + atol`` with the dtype's rtol and a float64 atol per row."""
    v64, w64 = as_float64(vectors), as_float64(result)
    radii = per_row(radius, v64.shape[0])
    expected = np.stack([reference_projection(row, c) for row, c in zip(v64, radii, strict=True)])
    atol = 1e-12 * np.abs(v64).sum(axis=1, keepdims=True) + smallest_subnormal(vectors.dtype)
    bound = RTOL[vectors.dtype] * np.abs(expected) + atol
    error = np.abs(w64 - expected)
    worst = np.unravel_index(np.argmax(error - bound), error.shape)
    assert np.all(error <= bound), f"at {worst}: got {w64[worst]!r}, reference {expected[worst]!r}"


def assert_feasible(result: Tensor, vectors: Tensor, radius: float | Tensor) -> None:
    """``||w||_1 <= c (1 + rtol)`` per row in float64, plus the float64 rounding of the threshold arithmetic."""
    v64, w64 = as_float64(vectors), as_float64(result)
    radii = per_row(radius, v64.shape[0])
    dims = v64.shape[1]
    slack = dims * EPS64 * np.abs(v64).sum(axis=1) + dims * smallest_subnormal(vectors.dtype)
    norms = np.abs(w64).sum(axis=1)
    assert np.all(norms <= radii * (1 + RTOL[vectors.dtype]) + slack), f"norms {norms} exceed radii {radii}"


def assert_kkt(result: Tensor, vectors: Tensor, radius: float | Tensor) -> None:
    """Optimality of ``w = proj(v)`` on the L1 ball: there is a theta >= 0 with

    * ``v_p - w_p = theta sign(w_p)`` where ``w_p != 0`` (so signs agree),
    * ``|v_p| <= theta`` where ``w_p == 0``,
    * ``theta == 0`` or ``||w||_1 == c``.
    """
    v64, w64 = as_float64(vectors), as_float64(result)
    radii = per_row(radius, v64.shape[0])
    eps, tiny = torch.finfo(vectors.dtype).eps, smallest_subnormal(vectors.dtype)
    dims = v64.shape[1]
    for index, (v, w, c) in enumerate(zip(v64, w64, radii, strict=True)):
        slack = dims * EPS64 * np.abs(v).sum() + tiny  # float64 threshold arithmetic, underflow
        tol = eps * np.abs(v).max(initial=0.0) + slack  # plus rounding w to the dtype
        nonzero = w != 0
        assert np.all(np.sign(w[nonzero]) == np.sign(v[nonzero])), f"row {index}: a sign flipped"
        gaps = np.abs(v[nonzero]) - np.abs(w[nonzero])
        theta = gaps.max() if gaps.size else np.abs(v).max(initial=0.0)
        assert theta >= -tol, f"row {index}: theta {theta} < 0"
        assert np.all(np.abs(gaps - theta) <= 2 * tol), f"row {index}: shrinkage is not one theta: {gaps}"
        assert np.all(np.abs(v[~nonzero]) <= theta + 2 * tol), f"row {index}: a zeroed entry exceeds theta"
        if theta > 2 * tol:
            gap = abs(np.abs(w).sum() - c)
            # Rounding toward zero costs up to eps * c; raising theta until the stored row is inside the ball costs
            # up to two ulps of theta per active entry, at most 2 eps ||v||_1: (dims + 2) slack covers both.
            assert gap <= eps * c + (dims + 2) * slack, f"row {index}: theta {theta} > 0 but ||w||_1 - c = {gap}"


# --------------------------------------------------------------------------------------------------- reference


SHAPES = [(1, 1), (1, 300), (50, 1), (2, 3), (13, 7), (31, 129), (50, 300)]


def random_vectors(shape: tuple[int, int], dtype: torch.dtype, seed: int = 0, scale: float = 1.0) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape, generator=generator, dtype=torch.float64)).to(dtype)


def half_median_norm(vectors: Tensor) -> float:
    """A radius that puts about half the rows outside the ball."""
    return 0.5 * float(vectors.double().abs().sum(dim=1).median())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_project_l1_ball_matches_reference(shape: tuple[int, int], dtype: torch.dtype, device: str) -> None:
    vectors = random_vectors(shape, dtype, seed=shape[0] * 1000 + shape[1]).to(device)
    radius = half_median_norm(vectors)
    result = project_l1_ball(vectors, radius)
    assert result.shape == vectors.shape and result.dtype == dtype and result.device == vectors.device
    assert_matches_reference(result, vectors, radius)
    assert_feasible(result, vectors, radius)
    assert_kkt(result, vectors, radius)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_project_l1_ball_per_row_radius(dtype: torch.dtype, device: str) -> None:
    vectors = random_vectors((40, 57), dtype, seed=7).to(device)
    norms = vectors.double().abs().sum(dim=1)
    factors = torch.tensor([0.01, 0.5, 0.99, 2.0, math.inf], dtype=torch.float64).repeat(8)
    radius = (norms.cpu() * factors).to(torch.float32)  # any float dtype and device is accepted
    result = project_l1_ball(vectors, radius)
    assert_matches_reference(result, vectors, radius)
    assert_feasible(result, vectors, radius)
    assert_kkt(result, vectors, radius)
    untouched = (factors >= 2.0).to(device)
    assert_bitwise_equal(result[untouched], vectors[untouched])
    assert not torch.equal(result[~untouched], vectors[~untouched])


# Exact in every dtype: small dyadic values whose projections are dyadic too.
HAND_CASES = [
    pytest.param([[3.0, -2.0]], 3.0, [[2.0, -1.0]], id="duchi-2d"),
    pytest.param([[1.0, 1.0, 1.0, 1.0]], 2.0, [[0.5, 0.5, 0.5, 0.5]], id="all-ties"),
    pytest.param([[-2.0, 2.0, 1.0, -1.0]], 3.0, [[-1.25, 1.25, 0.25, -0.25]], id="pairs-of-ties"),
    pytest.param([[5.0]], 2.0, [[2.0]], id="one-element"),
    pytest.param([[-5.0]], 2.0, [[-2.0]], id="one-element-negative"),
    pytest.param([[0.0, 0.0, 0.0]], 1.0, [[0.0, 0.0, 0.0]], id="all-zero"),
    pytest.param([[1.0, -2.0, 3.0]], 6.0, [[1.0, -2.0, 3.0]], id="on-the-sphere"),
    pytest.param([[4.0, 0.0, -1.0]], 2.0, [[2.0, 0.0, 0.0]], id="one-survivor"),
    pytest.param(
        [[1.0, 2.0], [8.0, -8.0], [0.0, 0.5]], 4.0, [[1.0, 2.0], [2.0, -2.0], [0.0, 0.5]], id="mixed-inside-outside"
    ),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("values", "radius", "expected"), HAND_CASES)
def test_project_l1_ball_hand_cases(
    values: list[list[float]], radius: float, expected: list[list[float]], dtype: torch.dtype, device: str
) -> None:
    vectors = torch.tensor(values, dtype=dtype, device=device)
    result = project_l1_ball(vectors, radius)
    assert torch.equal(result, torch.tensor(expected, dtype=dtype, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_radius_is_within_radius_of_the_exact_projection(device: str) -> None:
    vectors = torch.tensor([[3.0, 1.0, -1.0], [1.0, 1.0, 1.0]], dtype=torch.float64, device=device)
    radius = 1e-30
    result = project_l1_ball(vectors, radius)
    exact = torch.tensor([[radius, 0.0, 0.0], [radius / 3, radius / 3, radius / 3]], dtype=torch.float64)
    assert float(result.abs().sum(dim=1).max()) <= radius
    torch.testing.assert_close(result.cpu(), exact, rtol=0.0, atol=2 * radius)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_huge_values_and_radius(dtype: torch.dtype, device: str) -> None:
    vectors = torch.tensor([[1e30, -1e30, 1e30], [1e29, 0.0, -1e29]], dtype=dtype, device=device)
    result = project_l1_ball(vectors, 1.5e30)
    assert_matches_reference(result, vectors, 1.5e30)
    torch.testing.assert_close(result[0].double().cpu(), torch.tensor([0.5e30, -0.5e30, 0.5e30], dtype=torch.float64))
    assert_bitwise_equal(result[1], vectors[1])
    assert_bitwise_equal(project_l1_ball(vectors, 1e30 * 10), vectors)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_zeros_stay_zero_when_sum_and_sorted_cumsum_round_apart(dtype: torch.dtype, device: str) -> None:
    # Regression: `sum` adds the small entries together (norm 1 + 2^-47 > c) while the sorted cumsum absorbs
    # each into 1.0 (norm 1 <= c). The threshold then came out negative and filled the exact zeros with 1e-17.
    vectors = torch.tensor([[1.0] + [2.0**-53] * 64 + [0.0] * 64], dtype=dtype, device=device)
    radius = 1.0 + 2.0**-50
    result = project_l1_ball(vectors, radius)
    assert torch.all(result[vectors == 0] == 0)
    assert torch.all(result.abs() <= vectors.abs())
    assert_feasible(result, vectors, radius)


def test_project_l1_ball_handles_empty_and_strided_inputs() -> None:
    for shape in [(0, 5), (3, 0)]:
        empty = torch.empty(shape)
        assert project_l1_ball(empty, 1.0).shape == shape
    base = random_vectors((60, 20), torch.float32, seed=3)
    expected = project_l1_ball(base.t().contiguous(), 2.0)
    view = base.t()  # a non-contiguous view: rows are strided columns of `base`
    project_l1_ball_(view, 2.0)
    assert_bitwise_equal(base.t(), expected)


# -------------------------------------------------------------------------------------------------- properties

KINDS = ("normal", "ties", "sparse", "spread", "one_hot", "constant", "zeros")
# Scales 2^k, |k| <= bound, that keep every value and every row sum finite and not below the dtype's normals.
SCALE_EXPONENT = {torch.float64: 300, torch.float32: 80, torch.bfloat16: 80, torch.float16: 4}


def make_row(kind: str, dims: int, rng: np.random.Generator) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(dims)
    if kind == "ties":  # small integers: many ties and zeros, and exact row sums
        return rng.integers(-3, 4, dims).astype(np.float64)
    if kind == "sparse":  # mostly zeros, half of them -0.0
        return rng.standard_normal(dims) * (rng.random(dims) < 0.1)
    if kind == "spread":  # six decades of magnitude
        return rng.choice([-1.0, 1.0], dims) * 10.0 ** rng.uniform(-3, 3, dims)
    if kind == "one_hot":
        row = np.zeros(dims)
        row[rng.integers(dims)] = rng.standard_normal()
        return row
    if kind == "constant":  # every entry tied
        return rng.choice([-1.0, 1.0], dims) * rng.uniform(0.5, 2.0)
    return np.zeros(dims)


@dataclass
class Case:
    vectors: Tensor
    radius: float | Tensor
    on_sphere: list[int]  # rows whose norm equals their radius exactly


@st.composite
def cases(draw: st.DrawFn) -> Case:
    dtype = draw(st.sampled_from(DTYPES))
    rows, dims = draw(st.integers(1, 50)), draw(st.integers(1, 300))
    kinds = draw(st.lists(st.sampled_from(KINDS), min_size=1, max_size=3, unique=True))
    exponent = draw(st.integers(-SCALE_EXPONENT[dtype], SCALE_EXPONENT[dtype]))
    mode = draw(st.sampled_from(["relative", "tiny", "huge", "on_sphere"]))
    factor = draw(st.sampled_from([1e-6, 0.1, 0.5, 0.9, 1.0, 2.0]))
    radius_per_row = draw(st.booleans())
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))

    values = np.stack([make_row(kinds[rng.integers(len(kinds))], dims, rng) for _ in range(rows)])
    on_sphere = []
    if mode == "on_sphere":
        values[0] = make_row("ties", dims, rng)
        values[0, rng.integers(dims)] = 3.0  # nonzero, so that the radius is positive
        on_sphere = [0]
    vectors = torch.from_numpy(values * 2.0**exponent).to(dtype)
    norms = np.abs(as_float64(vectors)).sum(axis=1)
    if mode == "tiny":
        radius = 1e-30
    elif mode == "huge":
        radius = 1e30
    elif mode == "on_sphere":
        radius = float(norms[0])  # exact: small integers times a power of two
    else:
        positive = norms[norms > 0]
        radius = factor * float(np.median(positive)) if positive.size else factor
    if radius_per_row:
        radii = radius * 2.0 ** rng.integers(-2, 3, rows)
        radii[rng.random(rows) < 0.2] = math.inf
        if on_sphere:
            radii[0] = radius
        return Case(vectors, torch.from_numpy(radii), on_sphere)
    return Case(vectors, radius, on_sphere)


@pytest.mark.parametrize("device", DEVICES)
@PROPERTY_SETTINGS
@given(case=cases())
def test_projection_is_feasible_optimal_and_matches_reference(case: Case, device: str) -> None:
    vectors = case.vectors.to(device)
    result = project_l1_ball(vectors, case.radius)
    assert_feasible(result, vectors, case.radius)
    assert_kkt(result, vectors, case.radius)
    assert_matches_reference(result, vectors, case.radius)


@pytest.mark.parametrize("device", DEVICES)
@PROPERTY_SETTINGS
@given(case=cases())
def test_projection_keeps_inside_rows_signs_zeros_and_input(case: Case, device: str) -> None:
    vectors = case.vectors.to(device)
    original = vectors.clone()
    result = project_l1_ball(vectors, case.radius)
    assert result.data_ptr() != vectors.data_ptr()
    assert_bitwise_equal(vectors, original)  # the input is not modified

    # Rows inside the ball, and rows exactly on the sphere, come back bit for bit (including -0.0).
    radii = per_row(case.radius, vectors.shape[0])
    norms = np.abs(as_float64(vectors)).sum(axis=1)
    inside = torch.from_numpy(norms <= radii * (1 - 1e-9)).to(device)
    inside[case.on_sphere] = True
    assert_bitwise_equal(result[inside], vectors[inside])

    # Soft-thresholding: signs kept, magnitudes never grow, zeros stay zero. These hold exactly.
    assert torch.all(result.double() * vectors.double() >= 0)
    nonzero = result != 0
    assert torch.equal(torch.sign(result[nonzero]), torch.sign(vectors[nonzero]))
    assert torch.all(result.abs() <= vectors.abs())
    assert torch.all(result[vectors == 0] == 0)

    # The in-place variant writes the same values into, and returns, the very tensor it was given.
    in_place = vectors.clone()
    returned = project_l1_ball_(in_place, case.radius)
    assert returned is in_place
    assert_bitwise_equal(in_place, result)


@PROPERTY_SETTINGS
@given(case=cases())
def test_projection_is_idempotent(case: Case) -> None:
    once = project_l1_ball(case.vectors, case.radius)
    # Every projected row is inside the ball exactly, in its dtype, so a second pass leaves it bit for bit.
    assert_bitwise_equal(project_l1_ball(once, case.radius), once)


@PROPERTY_SETTINGS
@given(case=cases(), exponent=st.integers(-20, 20), seed=st.integers(0, 2**32 - 1))
def test_projection_commutes_with_sign_flips_permutations_and_power_of_two_scaling(
    case: Case, exponent: int, seed: int
) -> None:
    vectors, radius = case.vectors, case.radius
    result = project_l1_ball(vectors, radius)
    assert_bitwise_equal(project_l1_ball(-vectors, radius), -result)
    permutation = torch.randperm(vectors.shape[1], generator=torch.Generator().manual_seed(seed))
    # Sums run in index order, so a permutation changes theta only by float64 summation error (which scales with
    # dims * ||v||_1) and the result by one rounding to the dtype.
    permuted = as_float64(project_l1_ball(vectors[:, permutation], radius))
    expected = as_float64(result[:, permutation])
    eps = torch.finfo(vectors.dtype).eps
    dims = vectors.shape[1]
    l1 = np.abs(as_float64(vectors)).sum(axis=1, keepdims=True)
    radii = per_row(radius, vectors.shape[0])[:, None]
    bound = 4 * eps * (np.minimum(radii, l1) + np.abs(expected)) + 2 * dims * EPS64 * l1
    assert np.all(np.abs(permuted - expected) <= bound + smallest_subnormal(vectors.dtype))
    if vectors.dtype == torch.float64:
        # Scaling by 2^k is exact in float64 here (values stay within 2^-400..2^400, far from subnormals), so
        # the result must scale exactly: the kernel has no hidden absolute epsilon.
        scale = 2.0**exponent
        scaled = project_l1_ball(vectors * scale, radius * scale)
        assert_bitwise_equal(scaled, result * scale)


# ------------------------------------------------------------------------------------------------- radius checks


@pytest.mark.parametrize(
    "radius", [math.inf, "inf", "Infinity", torch.tensor(math.inf), yaml.safe_load("c: .inf")["c"]]
)
def test_infinite_radius_returns_equal_values(radius: object) -> None:
    vectors = random_vectors((5, 9), torch.float32, scale=100.0)
    result = project_l1_ball(vectors, radius)
    assert result is not vectors
    assert_bitwise_equal(result, vectors)
    assert project_l1_ball_(vectors, radius) is vectors


@pytest.mark.parametrize(
    ("radius", "expected"),
    [
        (0.5, 0.5),
        (3, 3.0),
        ("0.25", 0.25),
        ("1e-3", 1e-3),
        (torch.tensor(2.0), 2.0),
        (np.float64(0.1), 0.1),
        (np.float32(0.5), 0.5),
        (np.int64(2), 2.0),
        (Fraction(1, 4), 0.25),
    ],
)
def test_check_radius_accepts_positive_numbers(radius: object, expected: float) -> None:
    assert check_radius(radius) == expected


BAD_RADII = [0, 0.0, -1.0, -math.inf, math.nan, "abc", "", "nan", None, True, np.bool_(True), [1.0]]
BAD_RADII += [torch.tensor(-1.0), np.float64(-0.5), np.float32("nan"), 1j]


@pytest.mark.parametrize("radius", BAD_RADII, ids=repr)
def test_bad_radius_raises_and_leaves_input_alone(radius: object) -> None:
    vectors = random_vectors((4, 6), torch.float32, scale=10.0)
    original = vectors.clone()
    with pytest.raises(ValueError, match=r"`radius`"):
        project_l1_ball_(vectors, radius)
    with pytest.raises(ValueError, match=r"`radius`"):
        project_l1_ball(vectors, radius)
    assert_bitwise_equal(vectors, original)


def test_check_radius_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"Expected `c` to be a positive number or inf, got -2"):
        check_radius(-2, name="c")


@pytest.mark.parametrize(
    "radius",
    [
        torch.tensor([1.0, 2.0, 3.0]),  # one per row is needed: 4 rows
        torch.ones(5),
        torch.tensor([1.0, -1.0, 1.0, 1.0]),
        torch.tensor([1.0, math.nan, 1.0, 1.0]),
        torch.tensor([1.0, 0.0, 1.0, 1.0]),
    ],
    ids=["too-few", "too-many", "negative", "nan", "zero"],
)
def test_bad_per_row_radius_raises(radius: Tensor) -> None:
    with pytest.raises(ValueError, match=r"`radius`"):
        project_l1_ball(random_vectors((4, 6), torch.float32), radius)


@pytest.mark.parametrize(
    "vectors",
    [torch.ones(5), torch.ones(2, 3, 4), torch.tensor(1.0)],
    ids=["1-d", "3-d", "0-d"],
)
def test_wrong_ndim_raises(vectors: Tensor) -> None:
    with pytest.raises(ValueError, match=r"`vectors` to be a 2-D tensor"):
        project_l1_ball(vectors, 1.0)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.uint8, torch.bool, torch.complex64])
def test_non_floating_dtype_raises(dtype: torch.dtype) -> None:
    with pytest.raises(ValueError, match=r"`vectors` to have a floating dtype"):
        project_l1_ball(torch.ones(2, 3, dtype=dtype), 1.0)


# --------------------------------------------------------------------------------------------------- modules

LAYERS = {
    "linear": lambda: nn.Linear(7, 5),
    "linear-no-bias": lambda: nn.Linear(7, 5, bias=False),
    "conv1d": lambda: nn.Conv1d(3, 4, 5),
    "conv2d": lambda: nn.Conv2d(3, 4, (3, 2)),
    "conv2d-grouped-no-bias": lambda: nn.Conv2d(4, 6, 3, groups=2, bias=False),
    "conv3d": lambda: nn.Conv3d(2, 3, 2),
}


def make_layer(name: str, dtype: torch.dtype = torch.float32, device: str = "cpu", seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    layer = LAYERS[name]()
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.normal_()  # rows well outside small balls, biases included
    return layer.to(device=device, dtype=dtype)


def parameter_values(layer: nn.Module) -> list[Tensor]:
    return [parameter.detach().clone() for parameter in layer.parameters()]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_project_module_projects_each_neuron(name: str, dtype: torch.dtype, device: str) -> None:
    layer = make_layer(name, dtype, device)
    before = neuron_vectors(layer)
    radius = half_median_norm(before)
    parameters = list(layer.parameters())
    pointers = [parameter.data_ptr() for parameter in parameters]

    assert project_module_(layer, radius) is layer

    # The optimizer's parameters are the same objects, storage and dtype, still trainable leaves.
    assert all(a is b for a, b in zip(layer.parameters(), parameters, strict=True))
    assert [parameter.data_ptr() for parameter in layer.parameters()] == pointers
    assert all(p.dtype == dtype and p.requires_grad and p.is_leaf for p in layer.parameters())

    assert float(l1inf_norm(layer)) <= radius * (1 + RTOL[dtype])
    after = neuron_vectors(layer)
    assert_matches_reference(after, before.to(dtype), radius)
    # Parameters are written back exactly as projecting the neuron vectors in the dtype they are stored in.
    expected = project_l1_ball(before.to(dtype), radius)
    assert_bitwise_equal(after.to(dtype), expected)


@pytest.mark.parametrize("dtype", HALF_DTYPES)
def test_project_module_writes_half_parameters_rounded_toward_zero(dtype: torch.dtype) -> None:
    layer = make_layer("linear", dtype)
    vectors = torch.cat([layer.bias[:, None], layer.weight], dim=1).detach()
    exact = torch.from_numpy(np.stack([reference_projection(row, 2.0) for row in as_float64(vectors)]))
    project_module_(layer, 2.0)
    stored = torch.cat([layer.bias[:, None], layer.weight], dim=1).detach().double()
    # Never above the exact projection in magnitude, and less than one ulp of the dtype below it (rounding to
    # nearest, as a plain cast does, would sometimes land above).
    assert torch.all(stored.abs() <= exact.abs() * (1 + 1e-12))
    assert torch.all(exact.abs() - stored.abs() <= torch.finfo(dtype).eps * exact.abs() + 1e-12)
    assert torch.all(torch.sign(stored) * torch.sign(exact) >= 0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", LAYERS)
def test_project_module_leaves_a_feasible_layer_bit_for_bit(name: str, dtype: torch.dtype, device: str) -> None:
    layer = make_layer(name, dtype, device)
    values = parameter_values(layer)
    for radius in [2 * float(l1inf_norm(layer)), math.inf, "inf"]:
        project_module_(layer, radius)
        for parameter, value in zip(layer.parameters(), values, strict=True):
            assert_bitwise_equal(parameter.detach(), value)


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_module_leaves_a_layer_on_the_sphere_bit_for_bit(dtype: torch.dtype) -> None:
    layer = nn.Linear(3, 2).to(dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -0.5, 0.25], [-2.0, 0.0, 0.5]]))
        layer.bias.copy_(torch.tensor([-1.25, -0.5]))  # both neurons have L1 norm exactly 3
    values = parameter_values(layer)
    project_module_(layer, 3.0)
    for parameter, value in zip(layer.parameters(), values, strict=True):
        assert_bitwise_equal(parameter.detach(), value)


def test_project_module_per_neuron_radius() -> None:
    layer = make_layer("conv2d")
    before = neuron_vectors(layer)
    radius = torch.tensor([0.5, 1.0, 2.0, math.inf])
    project_module_(layer, radius)
    after = neuron_vectors(layer)
    assert_matches_reference(after, before, radius)
    assert_bitwise_equal(after[3], before[3])
    norms = after.double().abs().sum(dim=1)
    assert torch.all(norms[:3] <= radius[:3].double() * (1 + 1e-6))


def test_project_module_bad_radius_leaves_layer_alone() -> None:
    layer = make_layer("linear")
    values = parameter_values(layer)
    with pytest.raises(ValueError, match=r"`radius`"):
        project_module_(layer, -1.0)
    for parameter, value in zip(layer.parameters(), values, strict=True):
        assert_bitwise_equal(parameter.detach(), value)


@pytest.mark.parametrize(
    "module",
    [nn.ReLU(), nn.BatchNorm1d(3), nn.ConvTranspose2d(2, 2, 3), nn.Embedding(4, 3), nn.Sequential(nn.Linear(2, 2))],
    ids=lambda module: type(module).__name__,
)
def test_project_module_rejects_non_affine_modules(module: nn.Module) -> None:
    with pytest.raises(TypeError, match=r"Expected an affine layer \(Linear, Conv1d, Conv2d, Conv3d\), got"):
        project_module_(module, 1.0)


# ------------------------------------------------------------------------------------- the ball in the stored dtype


def exact_l1_norms(tensor: Tensor) -> list[Fraction]:
    """Each row's L1 norm as an exact rational, from the stored values (every float is a dyadic rational)."""
    return [sum((Fraction(abs(x)) for x in row), Fraction(0)) for row in as_float64(tensor).tolist()]


def assert_inside_exactly(tensor: Tensor, radius: float) -> None:
    norms = exact_l1_norms(tensor)
    worst = max(norms)
    assert worst <= Fraction(radius), f"a stored row has L1 norm {float(worst)!r} > c = {radius!r}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_projected_rows_are_inside_the_ball_in_the_stored_dtype(dtype: torch.dtype) -> None:
    # Issue 13, item 2: rounding the float64 projection to nearest left rows a few ulps above c (0.50085 for
    # c = 0.5 in bfloat16); the exact norm of the stored values must be at most c.
    vectors = random_vectors((400, 37), dtype, seed=13)
    for radius in [0.5, 1.0 / 3.0, half_median_norm(vectors)]:
        result = project_l1_ball(vectors, radius)
        assert_inside_exactly(result, radius)
        assert_matches_reference(result, vectors, radius)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["linear", "conv2d", "linear-no-bias"])
def test_project_module_leaves_stored_neurons_inside_the_ball(name: str, dtype: torch.dtype) -> None:
    layer = make_layer(name, dtype, seed=5)
    for radius in [0.5, 0.3, 1.0 / 7.0]:
        project_module_(layer, radius)
        assert_inside_exactly(neuron_vectors(layer), radius)


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_row_a_rounding_above_c_is_projected_and_one_on_it_is_not(dtype: torch.dtype) -> None:
    # [c/2, c/2] sums to c exactly; nudging one entry up by an ulp puts the row just outside. The old rule
    # ("inside up to one rounding") left that row above c; now only the exact sum decides.
    half = torch.tensor([0.375], dtype=dtype)
    bumped = (
        torch.nextafter(half, torch.tensor([1.0], dtype=dtype)) if dtype in (torch.float32, torch.float64) else None
    )
    if bumped is None:  # no nextafter for half types on CPU: step the bits
        bumped = (half.view(torch.int16) + 1).view(dtype)
    on_sphere = torch.cat([half, half]).reshape(1, 2)
    assert_bitwise_equal(project_l1_ball(on_sphere, 0.75), on_sphere)
    outside = torch.cat([bumped, half]).reshape(1, 2)
    result = project_l1_ball(outside, 0.75)
    assert not torch.equal(result, outside)
    assert_inside_exactly(result, 0.75)


# ------------------------------------------------------------------------------------------------------ backends

numba_only = pytest.mark.skipif(projection_backend(torch.ones(1, 1)) != "numba", reason="needs numba")


@numba_only
@PROPERTY_SETTINGS
@given(case=cases())
def test_numba_and_torch_paths_agree_to_one_rounding(case: Case) -> None:
    if case.vectors.dtype not in (torch.float32, torch.float64):
        return  # half precision has the torch path only
    fast = project_l1_ball(case.vectors, case.radius, backend="numba")
    reference = project_l1_ball(case.vectors, case.radius, backend="torch")
    assert_feasible(fast, case.vectors, case.radius)
    assert_kkt(fast, case.vectors, case.radius)
    assert_matches_reference(fast, case.vectors, case.radius)
    # Thresholds a few float64 ulps of ||v||_1 apart (they cancel against |v_p|), each result then rounded toward
    # zero: one ulp of the dtype apart, plus those float64 ulps.
    w_fast, w_reference = as_float64(fast), as_float64(reference)
    l1 = np.abs(as_float64(case.vectors)).sum(axis=1, keepdims=True)
    dims = case.vectors.shape[1]
    eps = torch.finfo(case.vectors.dtype).eps
    bound = eps * np.abs(w_reference) + 4 * (dims + 2) * EPS64 * l1 + smallest_subnormal(case.vectors.dtype)
    assert np.all(np.abs(w_fast - w_reference) <= bound)
    assert np.all(np.sign(w_fast) * np.sign(w_reference) >= 0)
    radii = per_row(case.radius, w_fast.shape[0])
    for result in (fast, reference):
        norms = exact_l1_norms(result)
        assert all(norm <= Fraction(c) for norm, c in zip(norms, radii, strict=True) if math.isfinite(c))


BACKENDS_HERE = ["torch", pytest.param("numba", marks=numba_only)]


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_a_subnormal_radius_ends_with_the_row_exactly_inside(backend: str) -> None:
    # eps c underflows to 0 for a subnormal c: the step that raises theta after a rounding miss must still grow
    # (it did not: the torch path looped forever, the numba path gave up with the row 3 subnormals outside).
    row = torch.tensor(
        [[9.0347018164e-314, 9.40122978e-315, -7.4349924935e-314, -9.217253763e-314, -4.5772582566e-314,
          2.201951235e-314, -1.00961818355e-313, -2.0917557487e-314]],
        dtype=torch.float64,
    )  # fmt: skip
    radius = 2.9636241782e-313
    result = project_l1_ball(row, radius, backend=backend)
    assert exact_l1_norms(result)[0] <= Fraction(radius)
    assert np.all(np.sign(as_float64(result)) * np.sign(as_float64(row)) >= 0)
    assert_matches_reference(result, row, radius)


@pytest.mark.parametrize("backend", BACKENDS_HERE)
def test_radii_and_parameters_that_require_grad_are_projected_without_autograd(backend: str) -> None:
    weight = nn.Parameter(torch.randn(4, 7, generator=torch.Generator().manual_seed(0)))
    radii = torch.tensor([0.5, 1.0, 2.0, 100.0], dtype=torch.float64, requires_grad=True)
    project_l1_ball_(weight, radii, backend=backend)
    assert weight.is_leaf and weight.grad_fn is None and radii.grad is None
    assert all(norm <= Fraction(c) for norm, c in zip(exact_l1_norms(weight.detach()), radii.tolist(), strict=True))
    assert torch.allclose(weight.detach().abs().sum(dim=1)[:3].double(), radii.detach()[:3], rtol=1e-6)


@numba_only
@pytest.mark.parametrize("name", LAYERS)
def test_project_module_numba_path_writes_parameters_in_place(name: str) -> None:
    fast, reference = make_layer(name, seed=2), make_layer(name, seed=2)
    radius = half_median_norm(neuron_vectors(fast))
    project_module_(fast, radius, backend="numba")
    project_module_(reference, radius, backend="torch")
    assert_matches_reference(neuron_vectors(fast), neuron_vectors(make_layer(name, seed=2)), radius)
    for a, b in zip(fast.parameters(), reference.parameters(), strict=True):
        # Float32 values of size ~1 and thresholds float64 ulps apart: at most one float32 ulp apart.
        assert int((bits(a.detach()).long() - bits(b.detach()).long()).abs().max()) <= 1


@numba_only
def test_project_module_channels_last_weights_take_the_torch_path() -> None:
    layer = make_layer("conv2d", seed=4).to(memory_format=torch.channels_last)
    expected = project_l1_ball(neuron_vectors(layer), 1.0, backend="torch")
    project_module_(layer, 1.0)
    assert_bitwise_equal(neuron_vectors(layer), expected)


@numba_only
@pytest.mark.parametrize("ulps", [-3, -1, 0, 1, 3])
@pytest.mark.parametrize("scale", [1e-300, 1e-3, 1.0, 1e250])
def test_numba_exact_decision_near_the_radius_matches_exact_arithmetic(ulps: int, scale: float) -> None:
    # The kernel decides "exact sum > c" for sums within its float64 error bound of c by Rump's split (no exact
    # summation unless within n^2 eps^2 of c): c a few ulps from the exact sum must be decided as fractions do.
    from l1inf_lightning.functional import _projection_numba as kernel

    rng = np.random.default_rng(abs(ulps) + int(math.log10(scale)) + 400)
    values = np.abs(rng.standard_normal(2000)) * scale
    values[rng.random(2000) < 0.3] = 0.0
    exact = sum(Fraction(float(v)) for v in values)
    radius = float(exact)
    radius = radius + ulps * math.ulp(radius)
    total, margin = float(np.sum(values)), (values.size + 2) * EPS64
    got = kernel._exceeds_radius(values, values.size, radius, total, margin, np.empty(2 * values.size), np.empty(2200))
    assert got == (exact > Fraction(radius))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_all_finite_finds_one_bad_entry_anywhere(bad: float, dtype: torch.dtype, device: str) -> None:
    tensors = [torch.randn(7, 33, dtype=dtype, device=device), torch.randn(5, dtype=dtype, device=device)]
    assert all_finite(tensors) and all_finite([]) and all_finite([torch.empty(0, 3, dtype=dtype, device=device)])
    for index in (0, 17, 7 * 33 - 1):  # first, middle (inside a vector lane), last
        poisoned = tensors[0].clone()
        poisoned.view(-1)[index] = bad
        assert not all_finite([tensors[1], poisoned])
        assert not all_finite([poisoned.t()])  # not contiguous
    huge = torch.full((4,), torch.finfo(dtype).max, dtype=dtype, device=device)
    assert all_finite([huge])  # finite however large: the check must not overflow


def round_toward_zero(value: Fraction, dtype: np.dtype) -> float:
    """The value of ``dtype`` nearest ``value`` on the side of zero, for ``value >= 0`` (an exact reference)."""
    info = np.finfo(dtype)
    if value == 0:
        return 0.0
    exponent = max(math.floor(math.log2(value)), int(info.minexp))  # below the smallest normal: the subnormal grid
    if Fraction(2) ** exponent > value:  # log2 rounded across a power of two
        exponent -= 1
    elif Fraction(2) ** (exponent + 1) <= value:
        exponent += 1
    step = Fraction(2) ** (max(exponent, int(info.minexp)) - int(info.nmant))
    return float(math.floor(value / step) * step)


@numba_only
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numba_write_rounds_the_exact_difference_toward_zero_and_restores_rounding(dtype: type) -> None:
    # The write pass runs under rounding toward zero: each stored magnitude must be RZ(|v| - theta) of the exact
    # difference, in the stored dtype, subnormals and differences a float64 rounding from the grid included.
    from l1inf_lightning.functional import _projection_numba as kernel

    rng = np.random.default_rng(7)
    scales = [1e-40, 1e-30, 1e-5, 1.0] if dtype == np.float32 else [1e-310, 1e-300, 1e-5, 1.0]
    for scale in scales:
        values = (rng.standard_normal(3000) * scale).astype(dtype)
        magnitudes = np.abs(values.astype(np.float64))
        theta = float(np.quantile(magnitudes, 0.4))
        # Thresholds a few float64 ulps from the stored grid: the subtraction's own rounding decides there.
        theta += math.ulp(theta) * int(rng.integers(-3, 4))
        # The first entry as the neuron's bias, written by the same pass as its weights.
        bias, weight = values[:1].copy(), values[1:].reshape(1, -1).copy()
        total = kernel._write_row(bias, weight, 0, True, magnitudes, theta)
        expected = [round_toward_zero(max(Fraction(m) - Fraction(theta), Fraction(0)), dtype) for m in magnitudes]
        written = np.concatenate([bias, weight[0]])
        stored = np.abs(written.astype(np.float64))
        assert np.array_equal(stored, np.array(expected)), scale
        assert np.array_equal(np.sign(written)[stored > 0], np.sign(values)[stored > 0])
        exact = sum(Fraction(float(m)) for m in stored)
        assert abs(Fraction(total) - exact) <= 3000 * EPS64 * exact
    one, small = 1.0, 0.75 * EPS64
    assert one + small == 1.0 + EPS64  # back to rounding to nearest (toward zero would give 1.0)


@pytest.fixture
def kernel_choice(monkeypatch: pytest.MonkeyPatch):
    """The projection module, with its cached choice of kernel forgotten before and after the test."""
    from l1inf_lightning.functional import projection

    caches = (projection._numba_installed, projection._kernel_available, projection._kernel_for)
    for cache in caches:
        cache.cache_clear()
    yield projection
    for cache in caches:
        cache.cache_clear()


def test_auto_falls_back_to_torch_without_numba(kernel_choice, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find_spec = kernel_choice.importlib.util.find_spec
    monkeypatch.setattr(
        kernel_choice.importlib.util, "find_spec", lambda name: None if name == "numba" else real_find_spec(name)
    )
    vectors = random_vectors((20, 30), torch.float32, seed=1)
    assert projection_backend(vectors) == "torch"
    assert_bitwise_equal(project_l1_ball(vectors, 1.0), project_l1_ball(vectors, 1.0, backend="torch"))
    with pytest.raises(ValueError, match=r"`backend='numba'` needs numba"):
        project_l1_ball(vectors, 1.0, backend="numba")


@pytest.mark.parametrize("cause", ["machine", "no-jit"])
def test_no_kernel_where_llvm_cannot_set_the_rounding_mode_or_jit_is_off(
    kernel_choice, monkeypatch: pytest.MonkeyPatch, cause: str
) -> None:
    if cause == "machine":
        monkeypatch.setattr(kernel_choice.platform, "machine", lambda: "s390x")
    else:
        numba = pytest.importorskip("numba")
        monkeypatch.setattr(numba.config, "DISABLE_JIT", True)
    vectors = random_vectors((20, 30), torch.float64, seed=2)
    assert projection_backend(vectors) == "torch"
    assert_bitwise_equal(project_l1_ball(vectors, 0.5), project_l1_ball(vectors, 0.5, backend="torch"))
    with pytest.raises(ValueError, match=r"not available here: it needs an x86-64 or AArch64 CPU"):
        project_l1_ball(vectors, 0.5, backend="numba")


@numba_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_kernel_whose_write_does_not_round_toward_zero_is_not_used(
    kernel_choice, monkeypatch: pytest.MonkeyPatch, dtype: torch.dtype
) -> None:
    assert kernel_choice._kernel_for(dtype) is not None  # the real kernel passes its self-test here
    kernel_choice._kernel_for.cache_clear()

    def to_nearest(bias, weight, has_bias, radii, thetas):  # the projection written rounding to nearest
        magnitudes = np.abs(weight.astype(np.float64))
        theta = (magnitudes.sum(axis=1) - radii[0]) / weight.shape[1]  # the self-test's rows: every entry active
        weight[:] = np.sign(weight) * (magnitudes - theta[:, None])
        thetas[:] = theta
        return 0

    monkeypatch.setattr(kernel_choice._compiled_kernel, "compiled_rows", lambda dtype: to_nearest)
    with pytest.warns(RuntimeWarning, match="did not round toward zero"):
        assert projection_backend(random_vectors((4, 5), dtype, seed=3)) == "torch"


@pytest.mark.parametrize(
    ("vectors", "backend", "message"),
    [
        (torch.ones(2, 3), "triton", r"Expected `backend` to be one of"),
        (torch.ones(2, 3, dtype=torch.float16), "numba", r"float32 or float64 CPU tensors for `backend='numba'`"),
    ],
)
def test_bad_backend_raises(vectors: Tensor, backend: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        project_l1_ball(vectors, 1.0, backend=backend)  # type: ignore[arg-type]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_projection_does_not_synchronize_with_the_host(dtype: torch.dtype) -> None:
    layer = make_layer("conv2d", dtype, "cuda")
    project_module_(layer, 0.5)  # warm-up: lazy initialization may synchronize once
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(3):
            with torch.no_grad():
                layer.weight.add_(0.01)
            project_module_(layer, 0.5)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert float(l1inf_norm(layer)) <= 0.5
