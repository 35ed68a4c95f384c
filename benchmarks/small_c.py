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

    python benchmarks/small_c.py --regression [--seeds 5] [--regression-radii inf 10 3 1 0.3 0.1] [--epochs 1500]

``--regression`` trains ``configs/synthetic_regression.yaml`` (only the radius and the seeds changed; ``--epochs``
also sets the cosine schedule's length) and prints test MSE and gap in the original units of y, test R², and
sparsity, with scikit-learn's ``LassoCV`` fitted on the same (raw) data beside them.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml
from _fit import EXACT_MODE, fit_quietly  # benchmarks/_fit.py: the script's own directory is on sys.path

from l1inf_lightning.data import SyntheticRegressionDataModule
from l1inf_lightning.functional import sparsity_rate

ROOT = Path(__file__).resolve().parents[1]
CLASSIFICATION = ROOT / "configs" / "synthetic_classification.yaml"
MNIST = ROOT / "configs" / "mnist_mlp.yaml"
REGRESSION = ROOT / "configs" / "synthetic_regression.yaml"

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


def run_all(specs: list[tuple], output: Path, workers: int, train: Callable[..., dict] = train_one) -> dict[str, dict]:
    """``train(*spec)`` for every spec not yet stored in ``output`` (one JSON file per run), ``workers`` at a time."""
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
        futures = {pool.submit(train, *spec): spec for spec in todo}
        for done, future in enumerate(as_completed(futures), start=1):
            spec, result = futures[future], future.result()
            key = run_key(*spec)
            tmp = output / f"{key}.json.part"
            tmp.write_text(json.dumps(result))
            tmp.replace(output / f"{key}.json")
            results[key] = result
            score = f"acc {result['acc']:.3f}" if "acc" in result else f"R² {result['r2']:.4f}"
            print(f"[{done}/{len(todo)}] {key}: {score} ({result['seconds']:.0f} s)", flush=True)
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


@torch.no_grad()
def _evaluate_regression(cli) -> dict:
    """Test MSE and test − train MSE in the original units of y, test R², and sparsity of a trained CLI's model."""
    model, datamodule = cli.model.eval(), cli.datamodule
    mse = {}
    for split, loader in (("train", datamodule.train_dataloader()), ("test", datamodule.test_dataloader())):
        pairs = [(model(x), y) for x, y in loader]
        prediction = datamodule.to_original_units(torch.cat([p for p, _ in pairs]))
        target = datamodule.to_original_units(torch.cat([y for _, y in pairs])).reshape(prediction.shape)
        mse[split] = float(torch.mean((prediction - target) ** 2))
    return {
        "mse": mse["test"],
        "r2": 1 - mse["test"] / float(target.var(correction=0)),
        "gap": mse["test"] - mse["train"],
        "sparsity": float(sparsity_rate(model.net)),
    }


def train_regression(config: str, depth: str, radius: float, mode: str, seed: int, epochs: int) -> dict:
    """One fit of the regression config at ``radius`` and data/init seed ``seed``.

    ``config``, ``depth`` and ``mode`` only name the run in the store (the config's net and mode are used).
    """
    torch.set_num_threads(1)
    overrides = ["--trainer.max_epochs", str(epochs), "--model.init_args.scheduler.init_args.T_max", str(epochs)]
    overrides += [
        "--trainer.limit_val_batches",
        "0",
        "--seed_everything",
        str(seed),
        "--data.init_args.seed",
        str(seed),
    ]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as root:
        result = _evaluate_regression(fit_quietly(REGRESSION, radius, root, overrides))
    return {**result, "seconds": time.perf_counter() - start}


def lasso_one(seed: int) -> dict:
    """scikit-learn's ``LassoCV`` (5 folds) on the config's data at ``seed``, unstandardized: test MSE, R², sparsity."""
    from sklearn.linear_model import LassoCV

    data = {**yaml.safe_load(REGRESSION.read_text())["data"]["init_args"], "seed": seed, "standardize": False}
    datamodule = SyntheticRegressionDataModule(**data)
    datamodule.setup("fit")
    (x, y), (x_test, y_test) = datamodule.train_set.tensors, datamodule.test_set.tensors
    lasso = LassoCV(cv=5, max_iter=10_000, random_state=0).fit(x.double().numpy(), y.double().numpy().ravel())
    mse = float(((lasso.predict(x_test.double().numpy()) - y_test.double().numpy().ravel()) ** 2).mean())
    train_mse = float(((lasso.predict(x.double().numpy()) - y.double().numpy().ravel()) ** 2).mean())
    return {
        "mse": mse,
        "r2": 1 - mse / float(y_test.double().var(correction=0)),
        "gap": mse - train_mse,
        "sparsity": float((lasso.coef_ == 0).mean()),
    }


def regression_table(results: dict, lassos: list[dict], args: argparse.Namespace) -> list[str]:
    lines = [
        f"Synthetic regression, 500 train / 1500 test, {args.seeds} data seeds, configs/synthetic_regression.yaml "
        f"({args.epochs} full-batch epochs; only the radius and the seeds changed). Test MSE and gap (test − train "
        "MSE) in the original units of y; mean ± std over seeds. LassoCV: scikit-learn, 5 folds, on the same raw data.",
        "",
        "| model | c | test MSE | R² | gap | sparsity % | MSE / Lasso's |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    rows = []
    for radius in args.regression_radii:
        keys = [
            run_key("regression", args.regression_depth, radius, "radius_aware", s, args.epochs)
            for s in range(args.seeds)
        ]
        rows.append((f"1000-{args.regression_depth}-1", f"{radius:g}", [results[key] for key in keys]))
    rows.append(("LassoCV", "-", lassos))
    for model, radius, runs in rows:
        ratios = [run["mse"] / lasso["mse"] for run, lasso in zip(runs, lassos, strict=True)]
        lines.append(
            f"| {model} | {radius} | {_mean_std([r['mse'] for r in runs], digits=0)} "
            f"| {_mean_std([r['r2'] for r in runs], digits=4)} | {_mean_std([r['gap'] for r in runs], digits=0)} "
            f"| {_mean_std([r['sparsity'] for r in runs], 100)} | {_mean_std(ratios, digits=0)} |"
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
    parser.add_argument("--regression", action="store_true", help="the regression config, with LassoCV beside it")
    parser.add_argument("--regression-radii", nargs="+", type=float, default=[math.inf, 10.0, 3.0, 1.0, 0.3, 0.1])
    parser.add_argument("--output", type=Path, default=ROOT / "runs" / "small_c")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.mnist:
        args.epochs = args.epochs or 8
        specs = [("mnist", "-", r, "radius_aware", s, args.epochs) for r in args.mnist_radii for s in range(args.seeds)]
        if math.inf not in args.mnist_radii:
            specs += [("mnist", "-", math.inf, "radius_aware", s, args.epochs) for s in range(args.seeds)]
        lines = mnist_table(run_all(specs, args.output, args.workers), args)
    elif args.regression:
        args.epochs = args.epochs or 1500
        args.regression_depth = "300"  # the config's one hidden layer; part of the store's key
        specs = [
            ("regression", args.regression_depth, radius, "radius_aware", seed, args.epochs)
            for radius in args.regression_radii
            for seed in range(args.seeds)
        ]
        results = run_all(specs, args.output, args.workers, train=train_regression)
        lines = regression_table(results, [lasso_one(seed) for seed in range(args.seeds)], args)
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
