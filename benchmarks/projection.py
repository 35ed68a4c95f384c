"""Speed of the projection paths against the paper's per-neuron loop and a clone, printed as ratios.

For each layer shape (rows = neurons, columns = 1 + fan_in) and dtype it times, interleaved in one run:

* numba: ``project_l1_ball_(..., backend="numba")``, the fused per-row CPU kernel (float32/float64 only);
* torch: ``project_l1_ball_(..., backend="torch")``, the pure-torch reference path (the CUDA path too);
* loop: Algorithm 1 of Wen et al. (2021) as written: for each neuron whose L1 norm exceeds c, Algorithm 2 (the
  sort-based projection of Duchi et al., 2008) on that one vector, in torch;
* clone: one ``clone()`` of the same tensor, the floor for any method that reads and writes every weight;

each path on a fresh copy (made outside the timed region), checks that every path agrees with the loop, and
prints the medians with path/clone and loop/path. One torch thread (``--threads``), so every contender runs on
one core, and the figure is that thread's CPU seconds (``time.thread_time``): on a shared machine it does not
count time spent waiting for a core; wall-clock ratios are printed beside them. On a GPU: ``--device cuda``.

    python benchmarks/projection.py [--device cpu|cuda] [--repeats N] [--loop-repeats N] [--loop-max-rows N]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable

import torch
from torch import Tensor

from l1inf_lightning.functional import project_l1_ball_, projection_backend

# (neurons, 1 + fan_in): MLP layers of the paper's experiments, a VGG conv (512 x 3x3x512), a 21x21 conv
# (64 x 21x21x64), and a large square Linear.
SHAPES = [(100, 501), (300, 1001), (512, 4609), (64, 28225), (4096, 4097)]


def project_vector_sorted(vector: Tensor, radius: float) -> Tensor:
    """Algorithm 2 for one vector: sort magnitudes, find rho, soft-threshold by theta."""
    magnitudes = vector.abs()
    mu = torch.sort(magnitudes, descending=True).values
    cumulative = torch.cumsum(mu, dim=0)
    ranks = torch.arange(1, vector.numel() + 1, device=vector.device, dtype=vector.dtype)
    rho = int(torch.nonzero(mu - (cumulative - radius) / ranks > 0)[-1]) + 1
    theta = (cumulative[rho - 1] - radius) / rho
    return torch.sign(vector) * (magnitudes - theta).clamp_min(0)


def project_rows_loop_(weights: Tensor, radius: float, max_rows: int) -> Tensor:
    """Algorithm 1: a Python loop over neurons, projecting each one outside the ball on its own."""
    for j in range(min(max_rows, weights.shape[0])):
        if float(weights[j].abs().sum()) > radius:
            weights[j] = project_vector_sorted(weights[j], radius)
    return weights


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ms(function: Callable[[], object], device: torch.device) -> tuple[float, float]:
    """(CPU ms of this thread, wall ms) of one call."""
    synchronize(device)
    cpu, wall = time.thread_time(), time.perf_counter()
    function()
    synchronize(device)
    return 1000 * (time.thread_time() - cpu), 1000 * (time.perf_counter() - wall)


def make_layer(rows: int, cols: int, device: torch.device, dtype: torch.dtype, seed: int) -> tuple[Tensor, float]:
    """Gaussian weights at the usual 1/sqrt(fan_in) scale and a radius that leaves most rows outside."""
    generator = torch.Generator().manual_seed(seed)
    weights = (torch.randn(rows, cols, generator=generator) / math.sqrt(cols)).to(device=device, dtype=dtype)
    radius = 0.5 * float(weights.double().abs().sum(dim=1).median())
    return weights, radius


def paths_for(weights: Tensor) -> list[str]:
    paths = ["torch"]
    if weights.device.type == "cpu" and weights.dtype in (torch.float32, torch.float64):
        if projection_backend(weights) == "numba":
            paths.insert(0, "numba")
    return paths


def benchmark_shape(
    rows: int, cols: int, dtype: torch.dtype, device: torch.device, args: argparse.Namespace
) -> dict[str, object]:
    weights, radius = make_layer(rows, cols, device, dtype, seed=rows * cols)
    loop_rows = min(rows, args.loop_max_rows)
    paths = paths_for(weights)

    # Agreement first; these calls double as the warm-up (and the numba compilation).
    loop_result = project_rows_loop_(weights.clone(), radius, loop_rows)[:loop_rows].double()
    scale = float(weights.abs().max())
    rtol = {torch.float64: 1e-9, torch.float32: 1e-4}.get(dtype, 2e-2)
    for path in paths:
        result = project_l1_ball_(weights.clone(), radius, backend=path)[:loop_rows].double()
        if not torch.allclose(result, loop_result, rtol=rtol, atol=rtol * scale):
            difference = float((result - loop_result).abs().max())
            raise AssertionError(f"{path} and loop disagree on {rows}x{cols} {dtype}: max difference {difference:.3g}")
    outside = float((weights.double().abs().sum(dim=1) > radius).float().mean())

    times: dict[str, list[tuple[float, float]]] = {name: [] for name in [*paths, "loop", "clone"]}
    for repeat in range(args.repeats):  # interleaved, so drift in clock or load hits all alike
        for path in paths:
            fresh = weights.clone()
            times[path].append(time_ms(lambda fresh=fresh, path=path: project_l1_ball_(fresh, radius, path), device))
        if repeat < args.loop_repeats:
            fresh = weights.clone()
            times["loop"].append(time_ms(lambda fresh=fresh: project_rows_loop_(fresh, radius, loop_rows), device))
        times["clone"].append(time_ms(weights.clone, device))

    def median(name: str, index: int) -> float:
        value = statistics.median(t[index] for t in times[name])
        return value * rows / loop_rows if name == "loop" else value  # the loop's cost per row is flat

    return {
        "shape": f"{rows}x{cols}",
        "dtype": str(dtype).removeprefix("torch."),
        "outside": outside,
        "extrapolated": loop_rows < rows,
        "cpu": {name: max(median(name, 0), 1e-3) for name in times},
        "wall": {name: max(median(name, 1), 1e-3) for name in times},
        "paths": paths,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=11, help="timed repeats of each path and the clone")
    parser.add_argument("--loop-repeats", type=int, default=2, help="timed repeats of the (slow) Python loop")
    parser.add_argument(
        "--loop-max-rows",
        type=int,
        default=64,
        help="loop over at most this many rows and extrapolate its time to all rows (marked *)",
    )
    parser.add_argument("--dtypes", nargs="+", default=["float32", "float64", "bfloat16"])
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (the numba kernel uses one)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"torch {torch.__version__}, {device.type} ({name}), {torch.get_num_threads()} threads")
    print(f"median of {args.repeats} repeats (loop: {args.loop_repeats}); radius = 0.5 x median row L1 norm")
    where = "" if torch.cuda.is_available() else "; GPU: not measured (no CUDA device here)"
    print(f"ratios of CPU seconds (wall-clock ratio in brackets){where}")
    print()
    header = (
        f"{'shape':>12} {'dtype':>9} {'outside':>8} {'path':>6} {'ms':>9} {'clone ms':>9} "
        f"{'path/clone':>19} {'loop/path':>19}"
    )
    print(header)
    print("-" * len(header))
    for rows, cols in SHAPES:
        for dtype_name in args.dtypes:
            result = benchmark_shape(rows, cols, getattr(torch, dtype_name), device, args)
            cpu, wall = result["cpu"], result["wall"]
            star = "*" if result["extrapolated"] else " "
            for path in result["paths"]:
                print(
                    f"{result['shape']:>12} {result['dtype']:>9} {result['outside']:>8.0%} {path:>6}"
                    f" {cpu[path]:>9.3f} {cpu['clone']:>9.3f}"
                    f" {cpu[path] / cpu['clone']:>8.1f}x ({wall[path] / wall['clone']:>7.1f}x)"
                    f" {cpu['loop'] / cpu[path]:>8.1f}x{star}({wall['loop'] / wall[path]:>6.1f}x)",
                    flush=True,
                )
    print("\nevery path agrees with the loop (torch.allclose) on every shape; * loop time extrapolated from its rows")


if __name__ == "__main__":
    main()
