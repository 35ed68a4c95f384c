"""`make bench`: the projection's cost, measured side by side in one run, in one table against its goals.

It runs the kernel benchmark of ``benchmarks/projection.py`` (every path against a clone and the per-neuron loop of
Algorithm 1, per shape and dtype; CPU-time ratios of one thread) and the paired training-time benchmark of
``benchmarks/epoch_overhead.py`` (the paper's MLP and the Fashion-MNIST VGG, with the projection and without), and
``benchmarks/startup.py`` (the first projection in a new process, from an empty cache and cached; the import),
prints their tables, then one table of the figures the project holds itself to: measured, goal, and whether it is
met. A CUDA column is measured where a GPU is present and says "not measured" where not.

    python benchmarks/bench.py [--repeats 11] [--pairs 3] [--mlp-steps 300] [--vgg-steps 200] [--startup-runs 5]
        [--quick]
"""

from __future__ import annotations

import argparse
import logging
import statistics
from pathlib import Path

import epoch_overhead  # benchmarks/: the script's own directory is on sys.path
import projection
import startup
import torch

from l1inf_lightning.functional import projection_backend

ROOT = Path(__file__).resolve().parents[1]
# (what, shape, goal): kernel time / clone time at these shapes (float32), and the loop / kernel at the 21x21 conv.
KERNEL_GOALS = [
    ("100x501", (100, 501), 10.0),
    ("512x4609 (a VGG conv)", (512, 4609), 3.0),
    ("64x28225 (the paper's 21x21 conv)", (64, 28225), 3.0),
    ("4096x4097", (4096, 4097), 3.0),
]
LOOP_GOAL = ((64, 28225), 20.0)
EPOCH_GOAL = 1.05
# Seconds, in a new process: with an empty cache (the kernel's object code built), and with the cache it left.
FIRST_PROJECTION_GOALS = {"building": ("empty cache", 2.0), "cached": ("cached", 0.2)}
IMPORT_GOAL = 1.2  # import l1inf_lightning / import of the modules it brings in, without its own


def kernel_rows(device: torch.device, args: argparse.Namespace) -> dict[tuple[int, int], dict[str, object]]:
    """The kernel benchmark at the goals' shapes (float32), on ``device``; prints its own table."""
    results = {}
    print(f"\nProjection on {device.type}, float32: CPU-time ratios of one thread (wall-clock in brackets)")
    print(f"{'shape':>12} {'path':>6} {'ms':>9} {'clone ms':>9} {'path/clone':>19} {'loop/path':>19}")
    for _, shape, _ in KERNEL_GOALS:
        result = projection.benchmark_shape(*shape, torch.float32, device, args)
        results[shape] = result
        cpu, wall = result["cpu"], result["wall"]
        for path in result["paths"]:
            print(
                f"{result['shape']:>12} {path:>6} {cpu[path]:>9.3f} {cpu['clone']:>9.3f}"
                f" {cpu[path] / cpu['clone']:>8.1f}x ({wall[path] / wall['clone']:>7.1f}x)"
                f" {cpu['loop'] / cpu[path]:>8.1f}x ({wall['loop'] / wall[path]:>6.1f}x)",
                flush=True,
            )
    return results


def epoch_ratios(args: argparse.Namespace) -> list[tuple[str, float, float, list[float]]]:
    """Median with/without training-time ratios (CPU, wall) per config of ``epoch_overhead.RUNS``, paired."""
    ratios = []
    for (label, config, radius, extra), steps in zip(
        epoch_overhead.RUNS, [args.mlp_steps, args.vgg_steps], strict=True
    ):
        runs = epoch_overhead.paired(config, radius, steps, [*extra, str(ROOT / "data")] if extra else [], args.pairs)
        cpu, wall = statistics.median(runs["cpu"]), statistics.median(runs["wall"])
        ratios.append((f"{label.split(',')[0]}, {steps} steps", cpu, wall, runs["cpu"]))
        print(
            f"{label}: with/without {cpu:.3f}x CPU time, {wall:.3f}x wall time"
            f" (CPU pairs {', '.join(f'{r:.3f}' for r in runs['cpu'])};"
            f" wall pairs {', '.join(f'{r:.3f}' for r in runs['wall'])})"
        )
    return ratios


def main(argv: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=11, help="timed repeats of each projection path and clone")
    parser.add_argument("--loop-repeats", type=int, default=2)
    parser.add_argument("--loop-max-rows", type=int, default=64)
    parser.add_argument("--pairs", type=int, default=3, help="paired training runs per config")
    parser.add_argument("--mlp-steps", type=int, default=300)
    parser.add_argument("--vgg-steps", type=int, default=200)
    parser.add_argument("--startup-runs", type=int, default=5, help="new processes per start-up figure (median)")
    parser.add_argument("--quick", action="store_true", help="a smoke test: 1 repeat, 1 pair of 5 steps")
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats, args.loop_repeats, args.loop_max_rows, args.pairs = 1, 1, 2, 1
        args.mlp_steps = args.vgg_steps = 5
        args.startup_runs = 1
    torch.set_num_threads(1)  # every contender on one core, as the numba kernel
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    path = projection_backend(torch.ones(1, 1))
    print(f"torch {torch.__version__}; CPU projection path: {path}; one torch thread")
    cpu = kernel_rows(torch.device("cpu"), args)
    gpu = kernel_rows(torch.device("cuda"), args) if torch.cuda.is_available() else None
    epochs = epoch_ratios(args)
    start = startup.main(["--runs", str(args.startup_runs)])

    rows = []
    for what, shape, goal in KERNEL_GOALS:
        result = cpu[shape]
        ratio = result["cpu"][path] / result["cpu"]["clone"]
        on_gpu = "not measured (no GPU)"
        if gpu is not None:
            on_gpu = f"{gpu[shape]['wall']['torch'] / gpu[shape]['wall']['clone']:.1f}x"
        rows.append((f"kernel / clone at {what}", f"{ratio:.1f}x", f"<= {goal:g}x", on_gpu, ratio <= goal))
    shape, goal = LOOP_GOAL
    result = cpu[shape]
    speedup = result["cpu"]["loop"] / result["cpu"][path]
    rows.append(
        (f"per-neuron loop / kernel at {shape[0]}x{shape[1]}", f"{speedup:.1f}x", f">= {goal:g}x", "", speedup >= goal)
    )
    for label, cpu_ratio, wall_ratio, _ in epochs:
        what = f"training time, with / without: {label}"
        rows.append(
            (what, f"{cpu_ratio:.3f}x ({wall_ratio:.3f}x wall)", f"<= {EPOCH_GOAL}x", "", cpu_ratio <= EPOCH_GOAL)
        )
    for kind, (label, goal) in FIRST_PROJECTION_GOALS.items():
        seconds = start["first"][kind]
        what = f"first projection in a new process, {label}"
        rows.append((what, f"{seconds:.3f}s", f"< {goal:g}s", "", seconds < goal))
    ratio = start["import"]["ratio"]
    what = "import l1inf_lightning / the modules it imports"
    rows.append((what, f"{ratio:.3f}x", f"<= {IMPORT_GOAL}x", "", ratio <= IMPORT_GOAL))
    width = max(len(row[0]) for row in rows)
    print(f"\nGoals (float32, CPU path {path}; {'QUICK: not a measurement' if args.quick else 'measured in this run'};")
    print("ratios of CPU time, training also in wall time)")
    print(f"{'what':<{width}}  {'measured':>25}  {'goal':>8}  {'met':>4}  {'GPU (torch path)':>22}")
    for what, measured, goal_text, on_gpu, met in rows:
        print(f"{what:<{width}}  {measured:>25}  {goal_text:>8}  {'yes' if met else 'NO':>4}  {on_gpu:>22}")
    return [(what, measured, goal_text, "yes" if met else "no") for what, measured, goal_text, _, met in rows]


if __name__ == "__main__":
    main()
