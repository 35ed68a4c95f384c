"""The kernel's LLVM IR, shipped with the package or compiled by numba, and the object code made from it.

numba takes about two seconds to compile the kernel. So the package ships its IR as numba lowers it, before any
optimization (``kernel_ir/project_rows-<dtype>.ll.gz``, written by ``make kernel-ir``, which runs this module with
``NUMBA_OPT=0``): a machine without the kernel's object code builds it from that IR with LLVM alone, optimized for its
CPU by the passes numba runs (about half a second), without importing numba. The shipped IR is used only if it was
made from this kernel (the digest of ``_projection_numba.py`` and the adapter, recorded in the file), for this
architecture, and this LLVM reads it; otherwise numba compiles the kernel here. Either way the module holds one C
function, ``ENTRY``, and nothing from numba's or Python's runtime.

No pass may change a result: the kernel's only fast-math flag is ``reassoc`` on sums whose error bound holds in any
order, and the tests check the object code bit for bit against numba's dispatcher.
"""

from __future__ import annotations

import argparse
import functools
import gzip
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

ENTRY = "l1inf_project_rows"
SHIPPED = Path(__file__).with_name("kernel_ir")
_KERNEL_SOURCE = Path(__file__).with_name("_projection_numba.py")
_HEADER = "; l1inf-lightning kernel IR"
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


@functools.cache
def _binding():
    """The binding of llvmlite, with the native target ready."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return llvm


def llvm_and_machine():
    """The binding of llvmlite and a new target machine for this CPU (or numba's ``NUMBA_CPU_NAME``/``_FEATURES``).

    A new one each time: an execution engine owns the machine it is given, and frees it with itself.
    """
    llvm = _binding()
    machine = llvm.Target.from_default_triple().create_target_machine(
        cpu=os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name(),
        features=os.environ.get("NUMBA_CPU_FEATURES") or llvm.get_host_cpu_features().flatten(),
        opt=3,
        reloc="default",
        codemodel="jitdefault",
    )
    return llvm, machine


def source_digest() -> str:
    """The digest of what the shipped IR is made from: the kernel's source and the adapter around it."""
    return hashlib.sha256(_KERNEL_SOURCE.read_bytes() + _ADAPTER.encode() + ENTRY.encode()).hexdigest()


def shipped_path(dtype: np.dtype) -> Path:
    return SHIPPED / f"project_rows-{np.dtype(dtype).name}.ll.gz"


def _architecture() -> str:
    return _binding().get_process_triple().split("-")[0]


def shipped_ir(dtype: np.dtype) -> str | None:
    """The shipped IR for ``dtype`` if it was made from this kernel for this architecture, else None."""
    try:
        text = gzip.decompress(shipped_path(dtype).read_bytes()).decode()
    except (OSError, EOFError, UnicodeDecodeError):  # not shipped, or damaged
        return None
    header = dict(line[2:].split(": ", 1) for line in text.splitlines()[1:4] if line.startswith("; "))
    fresh = text.startswith(_HEADER) and header.get("digest") == source_digest()
    return text if fresh and header.get("architecture") == _architecture() else None


def numba_ir(dtype: np.dtype) -> str:
    """Compile the kernel for ``dtype`` with numba; its IR reduced to ``ENTRY`` and what that calls."""
    from l1inf_lightning.functional._projection_numba import pointer_entry

    llvm, machine = llvm_and_machine()
    compiled = pointer_entry(np.dtype(dtype))
    module = llvm.parse_assembly(compiled.inspect_llvm())
    # numba's C wrapper ("cfunc.<name>") converts errors to Python exceptions; the adapter calls the function behind.
    inner = compiled.native_name.removeprefix("cfunc.")
    types = [str(argument.type) for argument in list(module.get_function(inner).arguments)[2:]]
    arguments = ", ".join(f"{kind} %a{index}" for index, kind in enumerate(types))  # its parameters, passed on
    adapter = llvm.parse_assembly(
        _ADAPTER.format(inner=inner, entry=ENTRY, types=", ".join(types), arguments=arguments)
    )
    adapter.triple, adapter.data_layout = module.triple, module.data_layout
    module.link_in(adapter)
    for value in [*module.functions, *module.global_variables]:
        if not value.is_declaration and value.name != ENTRY:
            value.linkage = "internal"
    passes = llvm.create_new_module_pass_manager()
    passes.add_global_dead_code_eliminate_pass()
    passes.run(module, _pass_builder(llvm, machine, speed=3, loop_vectorize=False))
    return str(module)


def _pass_builder(llvm, machine, speed: int, loop_vectorize: bool):
    options = llvm.create_pipeline_tuning_options(speed_level=speed)
    options.loop_vectorization = loop_vectorize
    options.slp_vectorization = False  # numba's default (NUMBA_SLP_VECTORIZE=0)
    return llvm.create_pass_builder(machine, options)


def _optimize(llvm, machine, module) -> None:
    """The optimization numba runs at its defaults, with its pruning of reference counts in each step.

    Each function's passes; a cheap pass over the module that inlines; the whole module's at -O3.
    """
    for function in module.functions:
        if not function.is_declaration:
            builder = _pass_builder(llvm, machine, speed=3, loop_vectorize=True)
            passes = builder.getFunctionPassManager()
            passes.add_refprune_pass(llvm.RefPruneSubpasses.ALL)
            passes.run(function, builder)
    cheap = _pass_builder(llvm, machine, speed=0, loop_vectorize=False)
    passes = cheap.getModulePassManager()
    passes.add_loop_rotate_pass()  # loops in rotated form early, for the vectorizer
    passes.add_instruction_combine_pass()
    passes.add_jump_threading_pass()
    passes.add_refprune_pass(llvm.RefPruneSubpasses.ALL)
    passes.run(module, cheap)
    full = _pass_builder(llvm, machine, speed=3, loop_vectorize=True)
    passes = full.getModulePassManager()
    passes.add_refprune_pass(llvm.RefPruneSubpasses.ALL)
    passes.run(module, full)


def _from_shipped(llvm, machine, dtype: np.dtype):
    """The shipped IR for ``dtype``, optimized for this machine; None where it cannot be used here."""
    text = shipped_ir(dtype)
    if text is None:
        return None
    try:
        module = llvm.parse_assembly(text)
        module.verify()
    except RuntimeError:  # IR this LLVM cannot read (an older one, say)
        return None
    module.triple, module.data_layout = llvm.get_process_triple(), str(machine.target_data)
    _optimize(llvm, machine, module)
    return module


def kernel_object(dtype: np.dtype) -> bytes:
    """The kernel for ``dtype`` as object code holding one C function, ``ENTRY``: from the shipped IR, else numba.

    Raises RuntimeError if the module still needs a symbol from outside (numba's or Python's runtime).
    """
    llvm, machine = llvm_and_machine()
    module = _from_shipped(llvm, machine, dtype)
    if module is None:
        module = llvm.parse_assembly(numba_ir(dtype))  # optimized by numba
    outside = [
        value.name
        for value in [*module.functions, *module.global_variables]
        if value.is_declaration and not value.name.startswith("llvm.")
    ]
    if outside:
        raise RuntimeError(f"The compiled kernel needs symbols from outside: {outside}")
    return machine.emit_object(module)


def write_shipped(directory: Path, dtypes: tuple[str, ...]) -> list[Path]:
    """Write the kernel's unoptimized IR for ``dtypes`` into ``directory`` (numba must run with ``NUMBA_OPT=0``)."""
    import llvmlite
    import numba

    if numba.config.OPT != 0:
        raise RuntimeError("The shipped IR is numba's before optimization: run with NUMBA_OPT=0")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name in dtypes:
        header = (
            f"{_HEADER}\n; digest: {source_digest()}\n; architecture: {_architecture()}\n"
            f"; made by: numba {numba.__version__}, llvmlite {llvmlite.__version__}, NUMBA_OPT=0\n"
        )
        path = directory / shipped_path(np.dtype(name)).name
        path.write_bytes(gzip.compress((header + numba_ir(np.dtype(name))).encode(), compresslevel=9, mtime=0))
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    """``make kernel-ir``: write the shipped IR again, after the kernel changed."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=SHIPPED, help="where to write it (default: the package's)")
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    arguments = parser.parse_args(argv)
    if "numba" in sys.modules and os.environ.get("NUMBA_OPT") != "0":
        raise SystemExit("numba was imported before NUMBA_OPT=0 could be set: run this module on its own")
    os.environ["NUMBA_OPT"] = "0"
    for path in write_shipped(arguments.out, tuple(arguments.dtypes)):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
