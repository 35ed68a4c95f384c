"""What the projection costs a new process: the first projection with an empty cache (the kernel's object code built
from the shipped IR), the same from the cached object code, and what ``import l1inf_lightning`` adds to the import
of the packages it builds on.

Each figure is the median over fresh Python processes. The first projection is the callback's first step on the
paper's first layer (500 -> 100, float32): the finiteness check and the projection, from ``ModuleProjector``. A
"building" process gets an empty cache of its own (``L1INF_CACHE_DIR`` for the kernel's object code, and
``NUMBA_CACHE_DIR``); a "cached" one the cache a building one left. Each says whether it imported numba.

    python benchmarks/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

FIRST_PROJECTION = """
import sys, time
from torch import nn
from l1inf_lightning.functional import ModuleProjector, projection_backend
layer = nn.Linear(500, 100)
start = time.perf_counter()
projector = ModuleProjector(layer)
assert projector.all_finite()
projector.project_(0.5)
print(time.perf_counter() - start, projection_backend(layer.weight), "numba" in sys.modules)
"""
IMPORT = """
import sys, time
start = time.perf_counter()
import l1inf_lightning
print(time.perf_counter() - start, "numba" in sys.modules)
print(" ".join(name for name in sys.modules if name.split(".")[0] != "l1inf_lightning"))
"""
# The same modules, but for the package's own, imported in the same order.
DEPENDENCIES = """
import importlib, sys, time
names = sys.stdin.read().split()
start = time.perf_counter()
for name in names:
    try:
        importlib.import_module(name)
    except Exception:  # aliases and the like that are not importable by name
        pass
print(time.perf_counter() - start)
"""


def _run(code: str, env: dict[str, str] | None = None, stdin: str | None = None) -> list[str]:
    process = subprocess.run(
        [sys.executable, "-c", code], env=env, input=stdin, capture_output=True, text=True, check=True
    )
    first, _, rest = process.stdout.partition("\n")
    return [*first.split(), rest]


def first_projection_seconds(runs: int) -> dict[str, object]:
    """Median seconds of the first projection, building and cached, over ``runs`` pairs of processes."""
    seconds = {"building": [], "cached": []}
    numba = {"building": False, "cached": False}
    path = ""
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as cache:
            env = {**os.environ, "L1INF_CACHE_DIR": cache, "NUMBA_CACHE_DIR": cache}
            for kind in seconds:
                taken, path, imported, _ = _run(FIRST_PROJECTION, env)
                seconds[kind].append(float(taken))
                numba[kind] = numba[kind] or imported == "True"
    return {
        **{kind: statistics.median(taken) for kind, taken in seconds.items()},
        "path": path,
        **{f"{kind}_numba": imported for kind, imported in numba.items()},
    }


def import_seconds(runs: int) -> dict[str, object]:
    """Median seconds of ``import l1inf_lightning``, and of every other module it imports without its own, in turn.

    Also whether numba came in (it should not: the kernel is imported at the first projection).
    """
    ours, theirs, numba = [], [], False
    for _ in range(runs):
        seconds, imported, modules = _run(IMPORT)
        ours.append(float(seconds))
        numba = numba or imported == "True"
        theirs.append(float(_run(DEPENDENCIES, stdin=modules)[0]))
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    return {
        "ours": statistics.median(ours),
        "dependencies": statistics.median(theirs),
        "ratio": statistics.median(ratios),
        "numba": numba,
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, object]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5, help="processes per figure (median)")
    args = parser.parse_args(argv)
    first, imports = first_projection_seconds(args.runs), import_seconds(args.runs)
    print(f"\nA new process (median of {args.runs}; projection path: {first['path']})")
    for kind in ("building", "cached"):
        label = f"first projection, {kind}:"
        print(f"  {label:<30}{first[kind]:.3f} s; numba imported: {'yes' if first[f'{kind}_numba'] else 'no'}")
    print(
        f"  import l1inf_lightning:       {imports['ours']:.3f} s; the modules it imports, without its own,"
        f" {imports['dependencies']:.3f} s ({imports['ratio']:.3f}x, paired); numba imported: "
        f"{'yes' if imports['numba'] else 'no'}"
    )
    return {"first": first, "import": imports}


if __name__ == "__main__":
    main()
