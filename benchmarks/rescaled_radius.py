"""Is a small c too small to express a good net, or too hard to train? One table on the synthetic classification task.

For a ReLU MLP whose output layer is free (the talk's class), multiplying hidden layer l's weights by s and its bias by
s**l, and the output layer's weights by s**-k, computes exactly the same function (ReLU is positively homogeneous).
With s = c_small / c_large and 0 < s <= 1, every neuron of a net trained in the c_large ball lands in the c_small
ball. So the c_small class holds a net exactly as accurate as the c_large one; when training at c_small ends at the
majority class instead, that is the optimizer failing to grow the output layer, not the constraint.

The script trains the config at c_large and at c_small (same seed, data and order) with Algorithm 1 exactly as the
talk writes it (the exact mode, output bias on), then rescales the c_large net into the c_small ball and tests all
three:

    python benchmarks/rescaled_radius.py [--large 1] [--small 0.1] [--epochs 100] [--config PATH] [-- OVERRIDES]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch
from _fit import EXACT_MODE, fit_quietly  # benchmarks/_fit.py: the script's own directory is on sys.path
from torch import nn

from l1inf_lightning.functional import sparsity_rate
from l1inf_lightning.functional.network import affine_layers, measure_network

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "synthetic_classification.yaml"


@torch.no_grad()
def rescale_hidden_layers_(net: nn.Module, scale: float) -> nn.Module:
    """Scale hidden layer l by ``scale`` (its bias by ``scale**l``) and the output layer by ``scale**-k``, in place.

    For a ReLU MLP (affine layers in order, positively homogeneous activations between them) the function is
    unchanged up to float rounding, and each hidden neuron's L1 norm (bias included) shrinks at least by ``scale``
    when ``scale <= 1``.
    """
    layers = [module for _, module in affine_layers(net)]
    if len(layers) < 2:
        raise ValueError(f"Expected a net with at least one hidden layer, got {len(layers)} affine layer(s)")
    *hidden, output = layers
    for depth, layer in enumerate(hidden, start=1):
        layer.weight.mul_(scale)
        if layer.bias is not None:
            layer.bias.mul_(scale**depth)
    output.weight.div_(scale ** len(hidden))
    return net


def _row(name: str, radius: float, cli) -> dict:
    """Test ``cli``'s model and return one table row."""
    results = cli.trainer.test(cli.model, cli.datamodule, verbose=False)[0]
    net = cli.model.net
    measure = measure_network(net)
    return {
        "name": name,
        "radius": radius,
        "acc": results["test/acc"],
        "loss": results["test/loss"],
        "sparsity": float(sparsity_rate(net)),
        "max_hidden_norm": max(measure.layer_norms[name] for name in measure.hidden),
        "output_norm": max(measure.output_column_l1),
    }


def main(argv: list[str] | None = None) -> list[dict]:
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=CONFIG)
    parser.add_argument("--large", type=float, default=1.0, help="c of the net that is rescaled (1)")
    parser.add_argument("--small", type=float, default=0.1, help="c it is rescaled into, also trained directly (0.1)")
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args(argv[:split])
    overrides = ["--trainer.max_epochs", str(args.epochs), *EXACT_MODE, *argv[split + 1 :]]
    if not 0 < args.small <= args.large < math.inf:
        parser.error(f"expected 0 < --small <= --large < inf, got {args.small} and {args.large}")

    with tempfile.TemporaryDirectory() as root:
        large = fit_quietly(args.config, args.large, root, overrides)
        rows = [_row("trained", args.large, large)]
        small = fit_quietly(args.config, args.small, root, overrides)
        rows.append(_row("trained", args.small, small))
        rescale_hidden_layers_(large.model.net, args.small / args.large)
        rows.append(_row(f"c={args.large:g} net rescaled", args.small, large))

    print()
    print(f"{args.config.name}, {args.epochs} epochs, same seed and data for both fits")
    header = f"{'net':<20} {'c':>6} {'test acc':>9} {'test loss':>10} {'sparsity':>9} {'max ||V||_1,inf':>16}"
    header += f" {'max o_j':>10}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['name']:<20} {row['radius']:>6g} {row['acc']:>9.4f} {row['loss']:>10.4f} {row['sparsity']:>9.4f} "
            f"{row['max_hidden_norm']:>16.4f} {row['output_norm']:>10.1f}"
        )
    print("max ||V||_1,inf: over the hidden layers; max o_j: largest L1 norm of an output unit's (bias + weights)")
    return rows


if __name__ == "__main__":
    main()
