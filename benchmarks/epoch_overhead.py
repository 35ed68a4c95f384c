"""Training time with the projection (c from the config, or --radius) against without (c = inf), paired.

For each config it trains the same number of steps twice per pair, with and without the projection, in turn
(A B A B ...), through the command line's own entry point, and prints the median of the per-pair ratios of the
training time (from the start of the first training batch to the end of the last: no set-up, no teardown), in wall
time and in the process's CPU time (one torch thread; what the process ran, whatever else the machine ran).
Validation, the logger, checkpoints and the ``SparsityMonitor`` are off in both arms, so the ratio is the
projection's cost per step.

    make data   # once, for Fashion-MNIST
    python benchmarks/epoch_overhead.py [--pairs 3] [--mlp-steps 300] [--vgg-steps 200]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import lightning.pytorch as pl
import torch
from _fit import fit_quietly  # benchmarks/_fit.py: the script's own directory is on sys.path

from l1inf_lightning.functional import projection_backend

ROOT = Path(__file__).resolve().parents[1]
# (label, config, radius, extra overrides): the paper's 500-100-50-20-2 MLP at batch 50 and c = 1, and the
# Fashion-MNIST VGG at the config's c.
RUNS = [
    ("paper MLP 500-100-50-20-2, batch 50, c=1", ROOT / "configs" / "synthetic_classification.yaml", 1.0, []),
    (
        "Fashion-MNIST VGG, batch 128, c=5",
        ROOT / "configs" / "fashion_mnist_vgg.yaml",
        5.0,
        ["--data.init_args.data_dir"],
    ),
]


class TrainClock(pl.Callback):
    """Wall and process CPU time from the first training batch's start to the last one's end.

    CPU time counts what this process ran, not the time other tenants of a shared machine took from it.
    """

    def __init__(self) -> None:
        self.start = self.end = self.cpu_start = self.cpu_end = 0.0

    def on_train_batch_start(self, trainer: pl.Trainer, *args: object) -> None:
        if not self.start:
            self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, trainer: pl.Trainer, *args: object) -> None:
        self.end, self.cpu_end = time.perf_counter(), time.process_time()


def train_seconds(config: Path, radius: float, steps: int, overrides: list[str], root: Path) -> tuple[float, float]:
    """Wall and CPU seconds of training (no validation) for ``steps`` optimizer steps of ``config`` at ``radius``."""
    args = [
        "--trainer.max_steps",
        str(steps),
        "--trainer.max_epochs",
        "-1",
        "--trainer.limit_val_batches",
        "0",
        "--trainer.accelerator",
        "cpu",
        # The config's callbacks (the monitor) replaced by a timer alone, in both arms.
        "--trainer.callbacks",
        # Importable by this name: the script's own directory is on sys.path.
        '[{"class_path": "epoch_overhead.TrainClock"}]',
        *overrides,
    ]
    cli = fit_quietly(config, radius, root, args)
    clock = next(callback for callback in cli.trainer.callbacks if type(callback).__name__ == "TrainClock")
    assert cli.trainer.global_step == steps, f"trained {cli.trainer.global_step} steps, not {steps}"
    return clock.end - clock.start, clock.cpu_end - clock.cpu_start


def paired(config: Path, radius: float, steps: int, overrides: list[str], pairs: int) -> dict[str, list[float]]:
    """``pairs`` trainings with the projection and without, in turn, after a warm-up (imports, compilation).

    Returns each arm's wall and CPU seconds and the per-pair ratios, with / without.
    """
    runs: dict[str, list[float]] = {key: [] for key in ("with", "without", "wall", "cpu")}
    with tempfile.TemporaryDirectory() as root:
        train_seconds(config, radius, min(steps, 20), overrides, Path(root))
        for _ in range(pairs):
            with_s, with_cpu = train_seconds(config, radius, steps, overrides, Path(root))
            without_s, without_cpu = train_seconds(config, float("inf"), steps, overrides, Path(root))
            runs["with"].append(with_s)
            runs["without"].append(without_s)
            runs["wall"].append(with_s / without_s)
            runs["cpu"].append(with_cpu / without_cpu)
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=3, help="paired runs (with, without) per config")
    parser.add_argument("--mlp-steps", type=int, default=300)
    parser.add_argument("--vgg-steps", type=int, default=200)
    parser.add_argument("--data-dir", default=str(ROOT / "data"))
    args = parser.parse_args()
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric"):  # "GPU available", tips, seeds
        logging.getLogger(name).setLevel(logging.ERROR)
    path = projection_backend(torch.ones(1, 1))
    print(f"\nTraining time with projection / without, paired ({args.pairs} pairs, median; projection path: {path})")
    header = f"{'model':<44} {'steps':>6} {'with s':>8} {'without s':>10} {'wall ratio':>11} {'CPU ratio':>10}"
    print(header)
    print("-" * len(header))
    for (label, config, radius, extra), steps in zip(RUNS, [args.mlp_steps, args.vgg_steps], strict=True):
        runs = paired(config, radius, steps, [*extra, args.data_dir] if extra else [], args.pairs)
        with_s, without_s = statistics.median(runs["with"]), statistics.median(runs["without"])
        print(
            f"{label:<44} {steps:>6} {with_s:>8.2f} {without_s:>10.2f}"
            f" {statistics.median(runs['wall']):>10.3f}x {statistics.median(runs['cpu']):>9.3f}x"
            f"   (CPU pairs: {', '.join(f'{r:.3f}' for r in runs['cpu'])})",
            flush=True,
        )


if __name__ == "__main__":
    main()
