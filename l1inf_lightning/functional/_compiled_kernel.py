"""The compiled kernel as object code, cached on disk and loaded without numba.

numba compiles ``project_rows`` in about two seconds, and even from its own cache a new process pays for importing
numba and building its registries (about 0.4 s). So the kernel is compiled once per dtype and machine as one C
function of pointers (``_projection_numba.pointer_entry``), its LLVM module reduced to that function and what it
calls (no Python or numba runtime left in it), and emitted as object code into a cache directory. A later process
loads that object with llvmlite's MCJIT, a few milliseconds, and calls it through ctypes: numba is imported only to
compile, or for arrays the pointer entry does not take (the dispatcher's ``project_rows`` takes those).

The cache directory: ``L1INF_CACHE_DIR``, else ``NUMBA_CACHE_DIR``, else ``$XDG_CACHE_HOME/l1inf_lightning``
(``~/.cache/l1inf_lightning``). An object is keyed by the kernel's source, the numba and llvmlite versions, the
target and the host CPU with its features; one that cannot be written is used from memory.
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

_ENTRY = "l1inf_project_rows"
# A cache file: this, the SHA-256 of the object code, the object code.
_MAGIC = b"l1inf-lightning kernel object\n"
# What the object code is built from: the kernel, and this module's adapter and reduction of it.
_SOURCES = (Path(__file__).with_name("_projection_numba.py"), Path(__file__))
# numba's settings that change the code it generates.
_NUMBA_SETTINGS = ("NUMBA_OPT", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES", "NUMBA_LOOP_VECTORIZE", "NUMBA_SLP_VECTORIZE")
# The kernel's float64 scratch for rows of d entries (`_projection_numba._WORK_PER_ENTRY` and `_PARTIALS`).
_WORK_PER_ENTRY, _WORK_PARTIALS = 5, 2200
# A C entry with numba's calling convention behind it: numba's function returns a status and writes its result.
# `NRT_MemInfo_call_dtor` is numba's reference counting's last step; arrays on the caller's pointers have no
# reference count, so it is never called: here it traps rather than reach numba's runtime.
_ADAPTER = """
declare i32 @"{inner}"(ptr, ptr, {types})
define void @NRT_MemInfo_call_dtor(ptr %meminfo) {{
  call void @llvm.trap()
  unreachable
}}
declare void @llvm.trap()
define i64 @{entry}({arguments}) {{
entry:
  %result = alloca i64
  %exception = alloca ptr
  store i64 -1, ptr %result
  %status = call i32 @"{inner}"(ptr %result, ptr %exception, {arguments})
  %value = load i64, ptr %result
  %ok = icmp eq i32 %status, 0
  %returned = select i1 %ok, i64 %value, i64 -1
  ret i64 %returned
}}
"""
_P, _N = ctypes.c_void_p, ctypes.c_int64
_SIGNATURE = ctypes.CFUNCTYPE(_N, _P, _P, _N, _N, _N, _P, _N, _P, _N, _P)


def work_size(d: int) -> int:
    """The float64 scratch entries the kernel needs for rows of ``d`` entries."""
    return _WORK_PER_ENTRY * d + _WORK_PARTIALS


def _scratch(weight: np.ndarray, has_bias: bool, radii: np.ndarray) -> np.ndarray:
    """The kernel's scratch for these rows: none for the finiteness check (one infinite radius reads no scratch)."""
    if radii.shape[0] == 1 and radii[0] == np.inf:
        return np.empty(0)
    return np.empty(work_size(weight.shape[1] + bool(has_bias)))


@functools.cache
def _binding():
    """The binding of llvmlite, with the native target ready."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm


def _llvm():
    """The binding of llvmlite and a new target machine for this CPU, with numba's settings.

    A new one each time: an execution engine owns the machine it is given, and frees it with itself.
    """
    llvm = _binding()
    machine = llvm.Target.from_default_triple().create_target_machine(
        cpu=llvm.get_host_cpu_name(),
        features=llvm.get_host_cpu_features().flatten(),
        opt=3,
        reloc="default",
        codemodel="jitdefault",
    )
    return llvm, machine


def cache_dir() -> Path:
    """Where compiled objects are kept (see the module's docstring)."""
    for variable in ("L1INF_CACHE_DIR", "NUMBA_CACHE_DIR"):
        if os.environ.get(variable):
            return Path(os.environ[variable])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "l1inf_lightning"


def cache_path(dtype: np.dtype) -> Path:
    """The object file of the kernel for ``dtype`` on this machine, with these versions of the kernel and compiler."""
    llvm = _binding()
    key = hashlib.sha256()
    for source in _SOURCES:
        key.update(source.read_bytes())
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


def kernel_object(dtype: np.dtype) -> bytes:
    """Compile the kernel for ``dtype`` with numba and return it as object code holding one C function, ``_ENTRY``.

    Raises RuntimeError if the module still needs a symbol from outside (numba's or Python's runtime).
    """
    from l1inf_lightning.functional._projection_numba import pointer_entry

    llvm, machine = _llvm()
    compiled = pointer_entry(np.dtype(dtype))
    module = llvm.parse_assembly(compiled.inspect_llvm())
    # numba's C wrapper ("cfunc.<name>") converts errors to Python exceptions; the adapter calls the function behind.
    inner = compiled.native_name.removeprefix("cfunc.")
    types = [str(argument.type) for argument in list(module.get_function(inner).arguments)[2:]]
    arguments = ", ".join(f"{kind} %a{index}" for index, kind in enumerate(types))  # its parameters, passed on
    text = _ADAPTER.format(inner=inner, entry=_ENTRY, types=", ".join(types), arguments=arguments)
    adapter = llvm.parse_assembly(text)
    adapter.triple, adapter.data_layout = module.triple, module.data_layout
    module.link_in(adapter)
    for value in [*module.functions, *module.global_variables]:
        if not value.is_declaration and value.name != _ENTRY:
            value.linkage = "internal"
    passes = llvm.create_new_module_pass_manager()
    passes.add_global_dead_code_eliminate_pass()
    passes.run(module, llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(speed_level=3)))
    outside = [
        value.name
        for value in [*module.functions, *module.global_variables]
        if value.is_declaration and not value.name.startswith("llvm.")
    ]
    if outside:
        raise RuntimeError(f"The compiled kernel needs symbols from outside: {outside}")
    return machine.emit_object(module)


class CompiledRows:
    """The kernel for one dtype, loaded from object code: ``project_rows`` of ``_projection_numba``, via ctypes.

    Called with the same arguments; arrays it cannot take as pointers (not C-contiguous, other dtypes) go to numba's
    dispatcher.
    """

    def __init__(self, dtype: np.dtype, code: bytes) -> None:
        llvm, machine = _llvm()
        self.dtype = np.dtype(dtype)
        # The engine owns the code's memory: it lives as long as this object.
        self._engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), machine)
        self._engine.add_object_file(llvm.ObjectFileRef.from_data(code))
        self._engine.finalize_object()
        self._function = _SIGNATURE(self._engine.get_function_address(_ENTRY))

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
            bias.ctypes.data,
            weight.ctypes.data,
            rows,
            fan_in,
            int(bool(has_bias)),
            radii.ctypes.data,
            radii.shape[0],
            thetas.ctypes.data,
            thetas.shape[0],
            work.ctypes.data,
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
