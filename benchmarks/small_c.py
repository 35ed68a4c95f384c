"""Does a small c train? The talk's depths × c over several data seeds, exact and radius-aware mode, beside the talk.

Every run is ``l1inf-lightning fit --config configs/synthetic_classification.yaml`` with only these changed: the
radius (``--projection.radius``), the data seed and ``seed_everything`` (the seed), the hidden widths (the depth),
and, for the exact mode, ``--projection.mode exact --model.init_args.net.init_args.output_bias true`` (Algorithm 1
on the net as it was before the radius-aware mode: what the config trained until then). Validation is skipped
(``limit_val_batches 0``) and no logger is kept; after training the script measures test accuracy, the generalization
gap (test loss − training loss, eval mode, the paper's definition) and the sparsity rate (zeros / size of every
weight matrix). Each run's result is stored in ``--output`` as it finishes, so an interrupted run resumes.

    python benchmarks/small_c.py [--seeds 5] [--workers 2] [--depths 100-20 100-50-20 100-100-50-20]
        [--radii inf 0.5 0.16 0.1 0.04 0.01] [--modes radius_aware exact] [--epochs 100] [--output DIR]
    python benchmarks/small_c.py --mnist [--seeds 5] [--epochs 8] [--mnist-radii inf 2]

``--mnist`` trains ``configs/mnist_mlp.yaml`` instead, with and without projection, and prints the paired differences.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
import torch.nn.functional as F
from _fit import EXACT_MODE, fit_quietly  # benchmarks/_fit.py: the script's own directory is on sys.path

from l1inf_lightning.functional import sparsity_rate

ROOT = Path(__file__).resolve().parents[1]
CLASSIFICATION = ROOT / "configs" / "synthetic_classification.yaml"
MNIST = ROOT / "configs" / "mnist_mlp.yaml"

# The talk's depth table (test accuracy %, generalization error), 500 training samples; "-": did not converge.
TALK = {
    "100-20": {math.inf: (70.30, 1.535), 0.5: (83.14, 0.461), 0.16: (84.67, 0.351), 0.13: (85.35, 0.322),
               0.1: (86.10, 0.312), 0.07: (88.42, 0.245), 0.04: (89.12, 0.103), 0.01: (87.74, 0.072)},
    "100-50-20": {math.inf: (69.90, 1.674), 0.5: (84.78, 0.478), 0.16: (87.03, 0.441), 0.13: (87.23, 0.376),
                  0.1: (87.78, 0.324), 0.07: (88.34, 0.260), 0.04: (89.57, 0.134), 0.01: (88.48, 0.068)},
    "100-100-50-20": {math.inf: (69.10, 1.510), 0.5: (82.42, 0.542), 0.16: (84.41, 0.456), 0.13: (84.89, 0.431),
                      0.1: (86.03, 0.383), 0.07: (87.98, 0.274), 0.04: (88.33, 0.131), 0.01: None},
}  # fmt: skip
TALK_MNIST = {math.inf: 97.85, "projected": 98.03}


def run_key(config: str, depth: str, radius: float, mode: str, seed: int, epochs: int) -> str:
    return f"{config}_{depth}_c{radius:g}_{mode}_s{seed}_e{epochs}"


@torch.no_grad()
def _evaluate(cli) -> dict:
    """Test accuracy, test − train loss (eval mode) and sparsity of a trained CLI's model."""
    model, datamodule = cli.model.eval(), cli.datamodule
    losses, accs = {}, {}
    for split, loader in (("train", datamodule.train_dataloader()), ("test", datamodule.test_dataloader())):
        total, correct, count = 0.0, 0, 0
        for x, y in loader:
            output = model(x)
            total += float(F.cross_entropy(output, y, reduction="sum"))
            correct += int((output.argmax(1) == y).sum())
            count += len(y)
        losses[split], accs[split] = total / count, correct / count
        if split == "test":
            predicted = {int(c) for x, _ in loader for c in model(x).argmax(1).unique()}
    return {
        "acc": accs["test"],
        "gap": losses["test"] - losses["train"],
        "sparsity": float(sparsity_rate(model.net)),
        "single_class": len(predicted) == 1,
    }


def train_one(config: str, depth: str, radius: float, mode: str, seed: int, epochs: int) -> dict:
    torch.set_num_threads(1)  # one core per worker
    overrides = ["--trainer.max_epochs", str(epochs), "--trainer.limit_val_batches", "0"]
    overrides += ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
    if config == "mnist":
        overrides += ["--data.init_args.data_dir", str(ROOT / "data")]
    else:
        overrides += ["--model.init_args.net.init_args.hidden", f"[{depth.replace('-', ',')}]"]
    if mode == "exact":
        overrides += EXACT_MODE
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        cli = fit_quietly(MNIST if config == "mnist" else CLASSIFICATION, radius, root, overrides)
        result = _evaluate(cli)
    return {**result, "seconds": time.perf_counter() - start}


def run_all(specs: list[tuple], output: Path, workers: int) -> dict[str, dict]:
    """Train every spec not yet stored in ``output`` (one JSON file per run), ``workers`` at a time."""
    output.mkdir(parents=True, exist_ok=True)
    results = {}
    todo = []
    for spec in specs:
        path = output / f"{run_key(*spec)}.json"
        if path.exists():
            results[run_key(*spec)] = json.loads(path.read_text())
        else:
            todo.append(spec)
    print(f"{len(specs)} runs, {len(specs) - len(todo)} already in {output}, {len(todo)} to train", flush=True)
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(train_one, *spec): spec for spec in todo}
        for done, future in enumerate(as_completed(futures), start=1):
            spec, result = futures[future], future.result()
            key = run_key(*spec)
            tmp = output / f"{key}.json.part"
            tmp.write_text(json.dumps(result))
            tmp.replace(output / f"{key}.json")
            results[key] = result
            print(f"[{done}/{len(todo)}] {key}: acc {result['acc']:.3f} ({result['seconds']:.0f} s)", flush=True)
    return results


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def classification_table(results: dict, args: argparse.Namespace) -> list[str]:
    lines = [
        f"Synthetic classification, 500 train / 1000 test, {args.seeds} data seeds, Adam lr 1e-3, batch 50, "
        f"{args.epochs} epochs (configs/synthetic_classification.yaml). acc and gap: mean ± std over seeds.",
        "",
        "| net | mode | c | acc % | talk acc % | gap | talk gap | sparsity % | runs predicting one class |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for depth in args.depths:
        for mode in args.modes:
            for radius in args.radii:
                runs = [results[run_key("synthetic", depth, radius, mode, s, args.epochs)] for s in range(args.seeds)]
                talk = TALK.get(depth, {}).get(radius, "n/a")
                talk_acc, talk_gap = ("-", "-") if talk is None else (("n/a", "n/a") if talk == "n/a" else talk)
                lines.append(
                    f"| 500-{depth}-2 | {mode} | {radius:g} | {_mean_std([r['acc'] for r in runs], 100)} | {talk_acc} "
                    f"| {_mean_std([r['gap'] for r in runs], digits=3)} | {talk_gap} "
                    f"| {_mean_std([r['sparsity'] for r in runs], 100)} | {sum(r['single_class'] for r in runs)} |"
                )
    return lines


def mnist_table(results: dict, args: argparse.Namespace) -> list[str]:
    lines = [
        f"MNIST, configs/mnist_mlp.yaml (784-300-100-10), {args.epochs} epochs, {args.seeds} seeds "
        f"(data split, init and shuffle). Talk: {TALK_MNIST[math.inf]} % unconstrained, {TALK_MNIST['projected']} % "
        "with the method.",
        "",
        "| c | acc % per seed | mean ± std | paired diff vs inf (pts) | sparsity % |",
        "| --- | --- | --- | --- | --- |",
    ]
    base = [results[run_key("mnist", "-", math.inf, "radius_aware", s, args.epochs)]["acc"] for s in range(args.seeds)]
    for radius in args.mnist_radii:
        runs = [results[run_key("mnist", "-", radius, "radius_aware", s, args.epochs)] for s in range(args.seeds)]
        accs = [r["acc"] for r in runs]
        diffs = [a - b for a, b in zip(accs, base, strict=True)]
        paired = "" if math.isinf(radius) else _mean_std(diffs, 100, 2)
        if paired and len(diffs) > 1 and statistics.stdev(diffs) > 0:
            paired += f" (t = {statistics.fmean(diffs) / (statistics.stdev(diffs) / math.sqrt(len(diffs))):.2f})"
        per_seed = ", ".join(f"{100 * a:.2f}" for a in accs)
        lines.append(
            f"| {radius:g} | {per_seed} | {_mean_std(accs, 100, 2)} | {paired} "
            f"| {_mean_std([r['sparsity'] for r in runs], 100)} |"
        )
    return lines


def main(argv: list[str] | None = None) -> list[str]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--depths", nargs="+", default=["100-20", "100-50-20", "100-100-50-20"])
    parser.add_argument("--radii", nargs="+", type=float, default=[math.inf, 0.5, 0.16, 0.1, 0.04, 0.01])
    parser.add_argument("--modes", nargs="+", default=["radius_aware", "exact"], choices=["radius_aware", "exact"])
    parser.add_argument("--epochs", type=int, default=None, help="100 (synthetic) or 8 (MNIST)")
    parser.add_argument("--mnist", action="store_true", help="the MNIST config instead of the synthetic nets")
    parser.add_argument("--mnist-radii", nargs="+", type=float, default=[math.inf, 2.0])
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "small_c")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.mnist:
        args.epochs = args.epochs or 8
        specs = [("mnist", "-", r, "radius_aware", s, args.epochs) for r in args.mnist_radii for s in range(args.seeds)]
        if math.inf not in args.mnist_radii:
            specs += [("mnist", "-", math.inf, "radius_aware", s, args.epochs) for s in range(args.seeds)]
        lines = mnist_table(run_all(specs, args.output, args.workers), args)
    else:
        args.epochs = args.epochs or 100
        specs = [
            ("synthetic", depth, radius, mode, seed, args.epochs)
            for depth in args.depths
            for mode in args.modes
            for radius in args.radii
            for seed in range(args.seeds)
        ]
        lines = classification_table(run_all(specs, args.output, args.workers), args)
    print("\n".join(["", *lines]))
    return lines


if __name__ == "__main__":
    main()
