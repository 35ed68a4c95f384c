"""Speed of the batched projection kernel against the paper's per-neuron loop, printed as ratios.

For each layer shape (rows = neurons, columns = 1 + fan_in) it times, interleaved in one run:

* kernel: ``project_l1_ball_`` on a fresh copy, every row at once;
* loop: Algorithm 1 of Wen et al. (2021) as written: for each neuron whose L1 norm exceeds c, Algorithm 2 (the
  sort-based projection of Duchi et al., 2008) on that one vector, in torch;
* clone: one ``clone()`` of the same tensor, the floor for any method that reads and writes every weight;

checks that kernel and loop agree, and prints the medians with loop/kernel and kernel/clone.

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

from l1inf_lightning.functional import project_l1_ball_

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


def time_ms(function: Callable[[], object], device: torch.device) -> float:
    synchronize(device)
    start = time.perf_counter()
    function()
    synchronize(device)
    return 1000 * (time.perf_counter() - start)


def make_layer(rows: int, cols: int, device: torch.device, seed: int) -> tuple[Tensor, float]:
    """Gaussian weights at the usual 1/sqrt(fan_in) scale and a radius that leaves most rows outside."""
    generator = torch.Generator().manual_seed(seed)
    weights = (torch.randn(rows, cols, generator=generator) / math.sqrt(cols)).to(device)
    radius = 0.5 * float(weights.abs().sum(dim=1).median())
    return weights, radius


def benchmark_shape(
    rows: int, cols: int, device: torch.device, repeats: int, loop_repeats: int, loop_max_rows: int
) -> dict[str, float | bool | str]:
    weights, radius = make_layer(rows, cols, device, seed=rows * cols)
    loop_rows = min(rows, loop_max_rows)

    # Agreement first; these calls double as the warm-up.
    kernel_result = project_l1_ball_(weights.clone(), radius)
    loop_result = project_rows_loop_(weights.clone(), radius, loop_rows)
    scale = float(weights.abs().max())
    if not torch.allclose(kernel_result[:loop_rows], loop_result[:loop_rows], rtol=1e-4, atol=1e-5 * scale):
        difference = float((kernel_result[:loop_rows] - loop_result[:loop_rows]).abs().max())
        raise AssertionError(f"kernel and loop disagree on {rows}x{cols}: max difference {difference:.3g}")
    outside = float((weights.abs().sum(dim=1) > radius).float().mean())
    weights.clone()

    kernel_ms, loop_ms, clone_ms = [], [], []
    for repeat in range(repeats):  # interleaved, so drift in clock or load hits all three alike
        fresh = weights.clone()
        kernel_ms.append(time_ms(lambda fresh=fresh: project_l1_ball_(fresh, radius), device))
        if repeat < loop_repeats:
            fresh = weights.clone()
            loop_ms.append(time_ms(lambda fresh=fresh: project_rows_loop_(fresh, radius, loop_rows), device))
        clone_ms.append(time_ms(weights.clone, device))

    kernel, clone = statistics.median(kernel_ms), statistics.median(clone_ms)
    loop = statistics.median(loop_ms) * rows / loop_rows  # per-row cost is flat, so extrapolate linearly
    return {
        "shape": f"{rows}x{cols}",
        "outside": outside,
        "kernel": kernel,
        "loop": loop,
        "clone": clone,
        "extrapolated": loop_rows < rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=15, help="timed repeats of kernel and clone per shape")
    parser.add_argument("--loop-repeats", type=int, default=3, help="timed repeats of the (slow) Python loop")
    parser.add_argument(
        "--loop-max-rows",
        type=int,
        default=1 << 30,
        help="loop over at most this many rows and extrapolate its time to all rows (marked *)",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device")
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"torch {torch.__version__}, {device.type} ({name}), {torch.get_num_threads()} threads, float32")
    print(f"median of {args.repeats} repeats (loop: {args.loop_repeats}); radius = 0.5 x median row L1 norm\n")

    header = f"{'shape':>12} {'outside':>8} {'kernel ms':>10} {'loop ms':>10} {'clone ms':>9} {'loop/kernel':>12} "
    header += f"{'kernel/clone':>13}"
    print(header)
    print("-" * len(header))
    for rows, cols in SHAPES:
        result = benchmark_shape(rows, cols, device, args.repeats, args.loop_repeats, args.loop_max_rows)
        star = "*" if result["extrapolated"] else " "
        print(
            f"{result['shape']:>12} {result['outside']:>8.0%} {result['kernel']:>10.3f} {result['loop']:>9.1f}{star}"
            f" {result['clone']:>9.3f} {result['loop'] / result['kernel']:>11.1f}x"
            f" {result['kernel'] / result['clone']:>12.1f}x",
            flush=True,
        )
    print("\nkernel and loop results agree (torch.allclose) on every shape")


if __name__ == "__main__":
    main()
