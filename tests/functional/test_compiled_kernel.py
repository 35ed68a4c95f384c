"""Tests for the kernel's object code: compiled once, cached on disk, loaded without numba (``_compiled_kernel``)."""

from __future__ import annotations

import gzip
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from l1inf_lightning.functional import compile_kernel, projection, projection_backend

numba_only = pytest.mark.skipif(projection_backend(torch.ones(1, 1)) != "numba", reason="needs numba")
DTYPES = [np.float32, np.float64]


def rows_case(dtype: type, rows: int, fan_in: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of mixed scales (some far inside the ball, some far outside), a bias, and one radius per row."""
    rng = np.random.default_rng(seed)
    weight = (rng.standard_normal((rows, fan_in)) * rng.choice([1e-4, 0.01, 1.0, 30.0], size=(rows, 1))).astype(dtype)
    bias = rng.standard_normal(rows).astype(dtype)
    radii = rng.choice([0.01, 0.5, 3.0, 1e4], size=rows)
    return weight, bias, radii


def run_both(dtype: type, weight, bias, has_bias: bool, radii, thetas):
    """The object code's and numba's dispatcher's results on copies of the same arrays."""
    from l1inf_lightning.functional import _compiled_kernel, _projection_numba

    results = []
    for kernel in (_compiled_kernel.compiled_rows(np.dtype(dtype)), _projection_numba.project_rows):
        w, b, t = weight.copy(), bias.copy(), thetas.copy()
        count = kernel(b if has_bias else np.empty(0, dtype), w, has_bias, radii, t)
        results.append((count, w, b, t))
    return results


@numba_only
def test_the_projection_loads_the_object_code_not_numbas_dispatcher() -> None:
    from l1inf_lightning.functional._compiled_kernel import CompiledRows

    assert isinstance(projection._kernel_for(torch.float32), CompiledRows)
    assert isinstance(projection._kernel_for(torch.float64), CompiledRows)
    assert compile_kernel() == {torch.float32: "numba", torch.float64: "numba"}


@numba_only
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("has_bias", [True, False])
@pytest.mark.parametrize(("rows", "fan_in"), [(40, 7), (24, 501), (6, 3000)])
def test_the_object_code_projects_bit_for_bit_as_numbas_dispatcher(
    dtype: type, has_bias: bool, rows: int, fan_in: int
) -> None:
    weight, bias, radii = rows_case(dtype, rows, fan_in, seed=rows + fan_in)
    weight[1, 2] = math.nan  # a row left alone and counted
    for radius, thetas in [
        (radii, np.zeros(rows)),  # one radius per row, warm starts kept
        (radii[:1], np.empty(0)),  # one radius for all, cold
        (np.full(1, math.inf), np.empty(0)),  # the finiteness check
    ]:
        (count, w, b, t), (expected, w2, b2, t2) = run_both(dtype, weight, bias, has_bias, radius, thetas)
        assert count == expected == 1
        assert np.array_equal(w, w2, equal_nan=True) and np.array_equal(b, b2) and np.array_equal(t, t2)
        if math.isfinite(radius[0]):
            assert not np.array_equal(w, weight, equal_nan=True)  # something was projected


@numba_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_a_bound_call_is_the_call_with_its_pointers_worked_out_once(dtype: type) -> None:
    from l1inf_lightning.functional import _compiled_kernel

    kernel = _compiled_kernel.compiled_rows(np.dtype(dtype))
    weight, bias, _ = rows_case(dtype, 30, 50, seed=5)
    bound_weight, bound_bias, radius, thetas = weight.copy(), bias.copy(), np.ones(1), np.zeros(30)
    call = kernel.bind(bound_bias, bound_weight, True, radius, thetas)
    expected_thetas = np.zeros(30)
    for value in (2.0, 0.5, 0.1):  # a new radius written into the bound radius array, as a projector does
        radius[0] = value
        assert call() == 0
        assert kernel(bias, weight, True, np.full(1, value), expected_thetas) == 0
        assert np.array_equal(bound_weight, weight) and np.array_equal(thetas, expected_thetas)
    assert np.abs(bound_weight).sum(axis=1).max() > 0  # not everything was zeroed


@numba_only
def test_a_bound_call_keeps_the_code_it_calls_alive() -> None:
    import gc

    from l1inf_lightning.functional import _compiled_kernel

    kernel = _compiled_kernel.compiled_rows.__wrapped__(np.dtype(np.float64))  # a kernel of its own, not cached
    weight = np.array([[3.0, -1.0], [0.1, 0.2]])
    call = kernel.bind(np.empty(0), weight, False, np.ones(1), np.empty(0))
    del kernel
    gc.collect()
    assert call() == 0  # the engine that owns the machine code is still there (freed, this would crash)
    assert weight.tolist() == [[1.0, 0.0], [0.1, 0.2]]


@numba_only
def test_a_used_projector_copies_and_pickles_and_the_copy_projects_its_own_layer() -> None:
    import copy
    import pickle

    from torch import nn

    from l1inf_lightning.functional import ModuleProjector

    torch.manual_seed(0)
    projector = ModuleProjector(nn.Linear(30, 8))
    projector.project_(2.0)  # its arrays and bound calls now point into its layer
    for twin in (copy.deepcopy(projector), pickle.loads(pickle.dumps(projector))):
        before = projector.module.weight.detach().clone()
        twin.project_(0.1)
        assert twin.module.weight.abs().sum(dim=1).add(twin.module.bias.abs()).max() <= 0.1
        assert torch.equal(projector.module.weight, before)  # the original's layer is not touched


@numba_only
def test_read_only_arrays_are_not_written() -> None:
    from l1inf_lightning.functional import _compiled_kernel

    kernel = _compiled_kernel.compiled_rows(np.dtype(np.float64))
    weight = np.frombuffer(np.array([3.0, -1.0, 2.0, 2.0]).tobytes()).reshape(2, 2)  # read-only memory
    assert kernel.bind(np.empty(0), weight, False, np.ones(1), np.empty(0)) is None
    with pytest.raises(Exception, match=r"setitem\(readonly array"):  # numba's dispatcher refuses to type it
        kernel(np.empty(0), weight, False, np.ones(1), np.empty(0))
    assert weight.tolist() == [[3.0, -1.0], [2.0, 2.0]]
    # The finiteness check writes nothing and reads no scratch.
    assert kernel(np.empty(0), weight.copy(), False, np.full(1, math.inf), np.empty(0)) == 0
    assert _compiled_kernel._scratch(weight, False, np.full(1, math.inf)).size == 0


@numba_only
def test_arrays_the_pointer_entry_does_not_take_go_to_numbas_dispatcher() -> None:
    from l1inf_lightning.functional import _compiled_kernel, _projection_numba

    kernel = _compiled_kernel.compiled_rows(np.dtype(np.float64))
    base, _, _ = rows_case(np.float64, 20, 12, seed=9)
    strided = np.asfortranarray(base)  # rows not contiguous
    contiguous = base.copy()
    assert kernel.bind(np.empty(0), strided, False, np.ones(1), np.empty(0)) is None
    assert kernel(np.empty(0), strided, False, np.full(1, 0.3), np.empty(0)) == 0
    _projection_numba.project_rows(np.empty(0), contiguous, False, np.full(1, 0.3), np.empty(0))
    assert np.array_equal(strided, contiguous) and not np.array_equal(strided, base)


@numba_only
def test_radii_neither_one_nor_one_per_row_are_refused_not_read_past() -> None:
    from l1inf_lightning.functional import _compiled_kernel

    kernel = _compiled_kernel.compiled_rows(np.dtype(np.float64))
    weight = np.ones((4, 3))
    for call in (kernel, kernel.bind):
        with pytest.raises(ValueError, match=r"one radius or one per row \(4\), got shape \(2,\)"):
            call(np.empty(0), weight, False, np.ones(2), np.empty(0))


@numba_only
def test_the_scratch_the_loader_gives_is_the_scratch_the_kernel_uses() -> None:
    from l1inf_lightning.functional import _compiled_kernel, _projection_numba

    assert _compiled_kernel.work_size(10) == _projection_numba._WORK_PER_ENTRY * 10 + _projection_numba._PARTIALS


@numba_only
@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_a_damaged_cache_file_is_compiled_again_and_replaced(
    damage: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # LLVM would crash on a damaged object: the file carries the object's hash, checked before it is loaded.
    from l1inf_lightning.functional import _compiled_kernel

    monkeypatch.setenv("L1INF_CACHE_DIR", str(tmp_path))
    dtype = np.dtype(np.float64)
    path = _compiled_kernel.cache_path(dtype)
    assert path.parent == tmp_path
    _compiled_kernel.compiled_rows.__wrapped__(dtype)  # past the per-process cache: compiled and written
    damaged = b"\x7fELF not an object" if damage == "garbage" else path.read_bytes()[:-100]
    path.write_bytes(damaged)
    kernel = _compiled_kernel.compiled_rows.__wrapped__(dtype)
    weight, bias, radii = rows_case(dtype, 10, 20, seed=3)
    (count, w, _, _), (expected, w2, _, _) = run_both(dtype, weight, bias, False, radii, np.empty(0))
    assert kernel(np.empty(0, dtype), weight, False, radii, np.empty(0)) == count == expected == 0
    assert np.array_equal(weight, w) and np.array_equal(weight, w2)
    assert _compiled_kernel._checked(path.read_bytes()) is not None  # written again, whole
    assert _compiled_kernel._checked(damaged) is None
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left


@numba_only
def test_an_unwritable_cache_keeps_the_kernel_in_memory(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from l1inf_lightning.functional import _compiled_kernel

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("L1INF_CACHE_DIR", str(blocker / "cache"))  # under a file: cannot be made
    kernel = _compiled_kernel.compiled_rows.__wrapped__(np.dtype(np.float32))
    weight = np.array([[3.0, -1.0]], np.float32)
    assert kernel(np.empty(0, np.float32), weight, False, np.ones(1), np.empty(0)) == 0
    assert weight.tolist() == [[1.0, 0.0]]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_the_cache_directory_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from l1inf_lightning.functional import _compiled_kernel

    for variable in ("L1INF_CACHE_DIR", "NUMBA_CACHE_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _compiled_kernel.cache_dir() == tmp_path / "home" / ".cache" / "l1inf_lightning"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _compiled_kernel.cache_dir() == tmp_path / "xdg" / "l1inf_lightning"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    assert _compiled_kernel.cache_dir() == tmp_path / "numba"
    monkeypatch.setenv("L1INF_CACHE_DIR", str(tmp_path / "ours"))
    assert _compiled_kernel.cache_dir() == tmp_path / "ours"
    # numba's settings that change its code are part of the key: an object made under others is not loaded.
    path = _compiled_kernel.cache_path(np.dtype(np.float32))
    monkeypatch.setenv("NUMBA_CPU_NAME", "generic")
    assert _compiled_kernel.cache_path(np.dtype(np.float32)) != path


def test_numbas_jit_switch_is_read_without_importing_numba(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "numba", None)  # as if numba were not imported yet
    for value, disabled in (("1", True), ("0", False), ("00", False), ("false", False), ("", False)):
        monkeypatch.setenv("NUMBA_DISABLE_JIT", value)
        assert projection._jit_disabled() is disabled
    monkeypatch.delenv("NUMBA_DISABLE_JIT")
    assert projection._jit_disabled() is False


FIRST_PROJECTION = textwrap.dedent(
    """
    import sys
    import numpy as np
    from l1inf_lightning.functional import ModuleProjector
    from torch import nn
    import torch
    torch.manual_seed(0)
    layer = nn.Linear(300, 40)
    projector = ModuleProjector(layer)
    assert projector.all_finite()
    projector.project_(0.3)
    print(layer.weight.double().sum().item(), layer.bias.double().sum().item(), "numba" in sys.modules)
    """
)


@numba_only
@pytest.mark.parametrize("shipped", [True, False])
def test_a_new_process_builds_the_object_once_and_then_loads_it_without_numba(shipped: bool, tmp_path) -> None:
    # From the shipped IR numba is not needed at all; without it (an edited kernel, say) numba compiles, once.
    env = {**os.environ, "L1INF_CACHE_DIR": str(tmp_path)}
    no_ir = (
        "" if shipped else "from l1inf_lightning.functional import _kernel_ir; _kernel_ir.shipped_ir = lambda d: None"
    )

    def first_projection(prelude: str) -> list[str]:
        code = prelude + "\n" + FIRST_PROJECTION
        process = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
        return process.stdout.split()

    *built, numba_when_building = first_projection(no_ir)
    assert numba_when_building == str(not shipped)
    assert [path.suffix for path in tmp_path.iterdir()] == [".kernel"]
    *loaded, numba_when_loading = first_projection("")
    assert numba_when_loading == "False"
    assert loaded == built


@numba_only
@pytest.mark.parametrize("dtype", DTYPES)
def test_the_shipped_ir_is_the_kernels_and_builds_the_same_code_as_numba(
    dtype: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fails after an edit of `_projection_numba.py` until `make kernel-ir` writes the IR again.
    from l1inf_lightning.functional import _compiled_kernel, _kernel_ir

    assert _kernel_ir.shipped_ir(np.dtype(dtype)) is not None, "the shipped IR is stale: run `make kernel-ir`"
    from_ir = _compiled_kernel.CompiledRows(np.dtype(dtype), _kernel_ir.kernel_object(np.dtype(dtype)))
    monkeypatch.setattr(_kernel_ir, "shipped_ir", lambda dtype: None)
    by_numba = _compiled_kernel.CompiledRows(np.dtype(dtype), _kernel_ir.kernel_object(np.dtype(dtype)))
    for has_bias, (rows, fan_in) in [(True, (40, 7)), (False, (24, 501)), (True, (6, 3000))]:
        weight, bias, radii = rows_case(dtype, rows, fan_in, seed=fan_in)
        results = []
        for kernel in (from_ir, by_numba):
            w, b, t = weight.copy(), bias.copy(), np.zeros(rows)
            results.append((kernel(b, w, has_bias, radii, t), w, b, t))
        (count, w, b, t), (count2, w2, b2, t2) = results
        assert count == count2 == 0
        assert np.array_equal(w, w2) and np.array_equal(b, b2) and np.array_equal(t, t2)
        assert not np.array_equal(w, weight)


def _write_ir(directory, text: str, dtype=np.float32) -> None:
    from l1inf_lightning.functional import _kernel_ir

    (directory / _kernel_ir.shipped_path(np.dtype(dtype)).name).write_bytes(gzip.compress(text.encode()))


@numba_only
def test_shipped_ir_that_does_not_fit_is_not_used(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    from l1inf_lightning.functional import _kernel_ir

    text = _kernel_ir.shipped_ir(np.dtype(np.float32))
    digest = _kernel_ir.source_digest()
    monkeypatch.setattr(_kernel_ir, "SHIPPED", tmp_path)
    assert _kernel_ir.shipped_ir(np.dtype(np.float32)) is None  # none shipped
    _write_ir(tmp_path, text)
    assert _kernel_ir.shipped_ir(np.dtype(np.float32)) == text
    _write_ir(tmp_path, text.replace(digest, "0" * len(digest)))  # made from another kernel
    assert _kernel_ir.shipped_ir(np.dtype(np.float32)) is None
    _write_ir(tmp_path, text.replace(f"; architecture: {_kernel_ir._architecture()}", "; architecture: riscv64"))
    assert _kernel_ir.shipped_ir(np.dtype(np.float32)) is None
    (tmp_path / _kernel_ir.shipped_path(np.dtype(np.float32)).name).write_bytes(b"\x1f\x8b damaged")
    assert _kernel_ir.shipped_ir(np.dtype(np.float32)) is None
    # Fresh, but IR this LLVM cannot read: numba compiles the kernel instead.
    _write_ir(tmp_path, text.split("; ModuleID")[0] + "define i64 @l1inf_project_rows( not IR")
    llvm, machine = _kernel_ir.llvm_and_machine()
    assert _kernel_ir.shipped_ir(np.dtype(np.float32)) is not None
    assert _kernel_ir._from_shipped(llvm, machine, np.dtype(np.float32)) is None
    weight = np.array([[3.0, -1.0]], np.float32)
    from l1inf_lightning.functional._compiled_kernel import CompiledRows

    kernel = CompiledRows(np.dtype(np.float32), _kernel_ir.kernel_object(np.dtype(np.float32)))
    assert kernel(np.empty(0, np.float32), weight, False, np.ones(1), np.empty(0)) == 0
    assert weight.tolist() == [[1.0, 0.0]]


@numba_only
def test_make_kernel_ir_writes_numbas_unoptimized_ir_with_its_digest(tmp_path, monkeypatch) -> None:
    from l1inf_lightning.functional import _kernel_ir

    with pytest.raises(RuntimeError, match="NUMBA_OPT=0"):  # numba here optimizes: not what is shipped
        _kernel_ir.write_shipped(tmp_path, ("float32",))
    arguments = ["--out", str(tmp_path), "--dtypes", "float32"]
    code = f"from l1inf_lightning.functional._kernel_ir import main; main({arguments!r})"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env={**os.environ, "NUMBA_OPT": "3"})
    monkeypatch.setattr(_kernel_ir, "SHIPPED", tmp_path)
    text = _kernel_ir.shipped_ir(np.dtype(np.float32))
    assert text is not None and f"; digest: {_kernel_ir.source_digest()}" in text
    assert "NUMBA_OPT=0" in text.splitlines()[3]
    # Before optimization: numba's helpers are still separate functions, and no loop is vectorized yet.
    assert text.count("\ndefine ") > 5 and "<8 x float>" not in text and "<4 x float>" not in text


def _has_avx2() -> bool:
    from l1inf_lightning.functional._kernel_ir import _binding

    return "+avx2" in _binding().get_host_cpu_features().flatten().split(",")


@numba_only
@pytest.mark.skipif(not _has_avx2(), reason="needs an x86-64 CPU with AVX2")
@pytest.mark.parametrize("dtype", DTYPES)
def test_built_for_avx2_a_long_rows_bits_do_not_depend_on_its_start(dtype: type, monkeypatch) -> None:
    # Built for another vector width, LLVM may order two reductions differently: the threshold must come from the
    # same pass whichever way the search ended (from 0 a long row is compacted; from near its threshold it is not).
    from l1inf_lightning.functional._compiled_kernel import CompiledRows
    from l1inf_lightning.functional._kernel_ir import kernel_object

    monkeypatch.setenv("NUMBA_CPU_NAME", "haswell")
    kernel = CompiledRows(np.dtype(dtype), kernel_object(np.dtype(dtype)))
    rng = np.random.default_rng(0)
    weight = rng.standard_normal((60, 3000)).astype(dtype)
    radius = np.array([0.3 * float(np.median(np.abs(weight).sum(axis=1)))])
    cold_weight, thetas = weight.copy(), np.zeros(60)
    for j in range(60):  # each row alone: from 0
        kernel(np.empty(0, dtype), cold_weight[j : j + 1], False, radius, thetas[j : j + 1])
    for scale in (1 + 1e-9, 0.5, 1.7):
        warm_weight, warm_thetas = weight.copy(), thetas * scale
        kernel(np.empty(0, dtype), warm_weight, False, radius, warm_thetas)
        assert np.array_equal(warm_thetas, thetas) and np.array_equal(warm_weight, cold_weight)
