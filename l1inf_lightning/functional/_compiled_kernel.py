"""The compiled kernel as object code, cached on disk and loaded without numba.

The object code holds the kernel as one C function of pointers (``_kernel_ir.kernel_object``: LLVM optimizes the
IR shipped with the package for this CPU in about half a second, or numba compiles the kernel where that IR does not
fit, about two seconds). It is written into a cache directory once per dtype and machine; a later process loads it
with llvmlite's MCJIT, a few milliseconds, and calls it through ctypes: numba is imported only where it compiles, or
for arrays the pointer entry does not take (the dispatcher's ``project_rows`` takes those).

The cache directory: ``L1INF_CACHE_DIR``, else ``NUMBA_CACHE_DIR``, else ``$XDG_CACHE_HOME/l1inf_lightning``
(``~/.cache/l1inf_lightning``). An object is keyed by the kernel's source and shipped IR, the numba and llvmlite
versions and numba's code-generation settings, the target and the host CPU with its features; one that cannot be
written is used from memory.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import importlib.metadata
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from l1inf_lightning.functional import _kernel_ir
from l1inf_lightning.functional._kernel_ir import ENTRY, kernel_object, llvm_and_machine

# A cache file: this, the SHA-256 of the object code, the object code.
_MAGIC = b"l1inf-lightning kernel object\n"
# What the object code is built from: the kernel, the IR's making and optimizing, and this module's loading of it.
_SOURCES = (Path(__file__).with_name("_projection_numba.py"), Path(_kernel_ir.__file__), Path(__file__))
# numba's settings that change the code it generates.
_NUMBA_SETTINGS = ("NUMBA_OPT", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_LOOP_VECTORIZE", "NUMBA_SLP_VECTORIZE")
# The kernel's float64 scratch for rows of d entries (`_projection_numba._WORK_PER_ENTRY` and `_PARTIALS`).
_WORK_PER_ENTRY, _WORK_PARTIALS = 5, 2200
_P, _N = ctypes.c_void_p, ctypes.c_int64
_SIGNATURE = ctypes.CFUNCTYPE(_N, _P, _P, _N, _N, _N, _P, _N, _P, _N, _P)
_BYTE = ctypes.c_char
_INF = float("inf")
_NONE = np.empty(0)


def work_size(d: int) -> int:
    """The float64 scratch entries the kernel needs for rows of ``d`` entries."""
    return _WORK_PER_ENTRY * d + _WORK_PARTIALS


def _scratch(weight: np.ndarray, has_bias: bool, radii: np.ndarray) -> np.ndarray:
    """The kernel's scratch for these rows: none for the finiteness check (one infinite radius reads no scratch)."""
    if radii.shape[0] == 1 and float(radii[0]) == _INF:
        return _NONE
    return np.empty(work_size(weight.shape[1] + bool(has_bias)))


def _address(array: np.ndarray) -> int:
    """The address of a C-contiguous array's data; 0 for an empty one, which the kernel does not read.

    A quarter of ``array.ctypes.data``'s cost where the array is writable (the kernel's call pays it five times).
    """
    if array.size == 0:
        return 0
    if array.flags.writeable:
        return ctypes.addressof(_BYTE.from_buffer(array))
    return array.ctypes.data


def cache_dir() -> Path:
    """Where compiled objects are kept (see the module's docstring)."""
    for variable in ("L1INF_CACHE_DIR", "NUMBA_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "l1inf_lightning"


def cache_path(dtype: np.dtype) -> Path:
    """The object file of the kernel for ``dtype`` on this machine, with these versions of the kernel and compiler."""
    llvm = _kernel_ir._binding()
    key = hashlib.sha256()
    for source in (*_SOURCES, _kernel_ir.shipped_path(dtype)):
        key.update(source.read_bytes() if source.exists() else b"")
    for part in (
        *(f"{name}={os.environ.get(name, '')}" for name in _NUMBA_SETTINGS),
        importlib.metadata.version("numba"),
        importlib.metadata.version("llvmlite"),
        llvm.get_process_triple(),
        llvm.get_host_cpu_name(),
        llvm.get_host_cpu_features().flatten(),
        np.dtype(dtype).name,
    ):
        key.update(b"\0" + part.encode())
    return cache_dir() / f"project_rows-{np.dtype(dtype).name}-{key.hexdigest()[:24]}.kernel"


def _checked(data: bytes) -> bytes | None:
    """The object code in a cache file's ``data``, or None unless it is whole, as written (LLVM would crash on it)."""
    start = len(_MAGIC) + hashlib.sha256().digest_size
    code = data[start:]
    return code if data[:start] == _MAGIC + hashlib.sha256(code).digest() else None


class CompiledRows:
    """The kernel for one dtype, loaded from object code: ``project_rows`` of ``_projection_numba``, via ctypes.

    Called with the same arguments; arrays it cannot take as pointers (not C-contiguous, other dtypes) go to numba's
    dispatcher.
    """

    def __init__(self, dtype: np.dtype, code: bytes) -> None:
        llvm, machine = llvm_and_machine()
        self.dtype = np.dtype(dtype)
        # The engine owns the code's memory: it lives as long as this object.
        self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        self._engine.finalize_object()
        self._function = _SIGNATURE(self._engine.get_function_address(ENTRY))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.dtype.name})"

    def _fits(
        self, bias: np.ndarray, weight: np.ndarray, has_bias: bool, radii: np.ndarray, thetas: np.ndarray
    ) -> bool:
        """Whether the pointer entry takes these arrays: C-contiguous and writable where written, of this dtype.

        Raises ValueError for radii neither one nor one per row, which the kernel would read past.
        """
        if radii.ndim != 1 or (radii.shape[0] != 1 and radii.shape[0] != weight.shape[0]):
            raise ValueError(f"Expected one radius or one per row ({weight.shape[0]}), got shape {radii.shape}")
        return (
            weight.dtype == self.dtype
            and weight.ndim == 2
            and weight.flags.c_contiguous
            and weight.flags.writeable
            and bias.dtype == self.dtype
            and bias.ndim == 1
            and bias.flags.c_contiguous
            and (not has_bias or (bias.shape[0] >= weight.shape[0] and bias.flags.writeable))
            and radii.dtype == np.float64
            and radii.flags.c_contiguous
            and thetas.dtype == np.float64
            and thetas.ndim == 1
            and thetas.flags.c_contiguous
            and thetas.flags.writeable
        )

    def _pointers(self, bias, weight, has_bias, radii, thetas, work) -> tuple[int, ...]:
        rows, fan_in = weight.shape
        return (
            _address(bias),
            _address(weight),
            rows,
            fan_in,
            int(bool(has_bias)),
            _address(radii),
            radii.shape[0],
            _address(thetas),
            thetas.shape[0],
            _address(work),
        )

    def __call__(
        self, bias: np.ndarray, weight: np.ndarray, has_bias: bool, radii: np.ndarray, thetas: np.ndarray
    ) -> int:
        if not self._fits(bias, weight, has_bias, radii, thetas):
            from l1inf_lightning.functional._projection_numba import project_rows

            return int(project_rows(bias, weight, has_bias, radii, thetas))
        work = _scratch(weight, has_bias, radii)  # held here: the call below gets its address alone
        return self._function(*self._pointers(bias, weight, has_bias, radii, thetas, work))

    def bind(
        self, bias: np.ndarray, weight: np.ndarray, has_bias: bool, radii: np.ndarray, thetas: np.ndarray
    ) -> Callable[[], int] | None:
        """The call on these arrays with its pointers worked out once (what a projector runs at every step).

        It reads the arrays' contents at each call (a new radius written into ``radii``, say), and holds them and this
        kernel (whose engine owns the code), so that what the pointers point to lives as long as the call; None where
        the pointer entry does not take the arrays.
        """
        if not self._fits(bias, weight, has_bias, radii, thetas):
            return None
        work = _scratch(weight, has_bias, radii)
        call = functools.partial(self._function, *self._pointers(bias, weight, has_bias, radii, thetas, work))
        call.keep_alive = (self, bias, weight, radii, thetas, work)
        return call


@functools.cache
def compiled_rows(dtype: np.dtype) -> CompiledRows:
    """The kernel for ``dtype``: from the cache directory, else compiled (numba) and written there."""
    path = cache_path(dtype)
    try:
        code = _checked(path.read_bytes())
    except OSError:  # not there yet
        code = None
    if code is not None:
        return CompiledRows(dtype, code)
    code = kernel_object(dtype)
    _write_whole(path, _MAGIC + hashlib.sha256(code).digest() + code)
    return CompiledRows(dtype, code)


def _write_whole(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path``, under another name first so that no process reads half a file.

    Where the directory cannot be written, nothing is (the process keeps the code in memory).
    """
    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False) as file:
            temporary = file.name
            file.write(data)
        os.chmod(temporary, 0o644)  # readable by the others who share the cache, as numba's own files are
        os.replace(temporary, path)
    except OSError:
        if temporary is not None:
            Path(temporary).unlink(missing_ok=True)
