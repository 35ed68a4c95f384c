"""The projection's cost per training step of the paper's MLP, in a plain PyTorch loop (no Lightning around it).

Two copies of the 500-100-50-20-2 ReLU net train on the same batches of 50 (Adam, lr 1e-3): one is projected after
every optimizer step by ``L1InfProjection``'s own step (c = 1: the finiteness check of every hidden layer, then each
layer's projection), the other is not. Their steps alternate, so a drift in the machine's speed hits both alike. It
prints the median time of the projection inside the loop, and the ratio of the two nets' step times (CPU time of this
thread; one torch thread).

    python benchmarks/step_overhead.py [--steps 1500]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
from torch import nn

from l1inf_lightning import L1InfProjection
from l1inf_lightning.functional import projection_backend


def make_net(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    widths = [500, 100, 50, 20]
    for fan_in, fan_out in itertools.pairwise(widths):
        layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(20, 2))
    return net, torch.optim.Adam(net.parameters(), lr=1e-3)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--radius", type=float, default=1.0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(500, 500, generator=generator)
    y = (x[:, 0] > 0).long()
    projected, projected_optimizer = make_net(0)
    free, free_optimizer = make_net(0)
    projection = L1InfProjection(radius=args.radius)
    layers = projection.select_layers(projected)
    projection._project(layers, 0)  # the callback's projection at fit start (and the kernel's compilation)
    loss_function = nn.CrossEntropyLoss()

    def step(net: nn.Module, optimizer: torch.optim.Optimizer, index: int) -> None:
        batch = slice((index % 10) * 50, (index % 10 + 1) * 50)
        optimizer.zero_grad()
        loss_function(net(x[batch]), y[batch]).backward()
        optimizer.step()

    hook, with_projection, without = [], 0.0, 0.0
    for index in range(args.steps):
        start = time.thread_time()
        step(projected, projected_optimizer, index)
        middle = time.thread_time()
        projection._project(layers, index + 1)  # what the callback's optimizer hook runs after each step
        end = time.thread_time()
        step(free, free_optimizer, index)
        with_projection += end - start
        without += time.thread_time() - end
        hook.append(end - middle)
    result = {
        "projection_us": statistics.median(hook) * 1e6,
        "step_us": without / args.steps * 1e6,
        "ratio": with_projection / without,
    }
    print(
        f"paper MLP, batch 50, c = {args.radius:g}, {args.steps} steps (path: {projection_backend(x)}): projection "
        f"{result['projection_us']:.0f} us a step (median), step without it {result['step_us']:.0f} us; "
        f"with / without {result['ratio']:.3f}x"
    )
    return result


if __name__ == "__main__":
    main()
