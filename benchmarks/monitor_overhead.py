"""Wall time the SparsityMonitor adds to an epoch of the paper's MLP, printed as a ratio.

Trains the talk's synthetic classification setup (500 training, 500 validation samples in R^500, batches of 50, the
500-100-50-20-2 ReLU MLP, Adam) for ``--epochs`` epochs, with and without ``SparsityMonitor()`` at its default
interval (scalars every epoch, histograms and the weight image at epoch 1 and every 10 epochs). Both runs have
``L1InfProjection(radius=1.0)`` and a ``TensorBoardLogger`` writing to a temporary directory, no progress bar, no
checkpointing. Repeats run in pairs in one process, alternating which goes first; one untimed warm-up pair pays the
one-off imports (matplotlib, TensorBoard's writers) first.

The epoch time is (end of ``on_train_end`` − start of ``on_train_start``) / epochs, measured by callbacks placed
first and last, so it holds everything the monitor does: its scan of the training data, the metrics and the gap
pass at each epoch end, histograms and images, the hparams at the end; it leaves out the Trainer's setup and the
sanity check, which the monitor does not touch (the total ``fit`` time is printed too).

    python benchmarks/monitor_overhead.py [--epochs 20] [--pairs 3] [--accelerator cpu|gpu|auto] [--threads N]
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import tempfile
import time
import warnings

import lightning.pytorch as pl
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from l1inf_lightning import L1InfProjection, SparsityMonitor
from l1inf_lightning.data import SyntheticClassificationDataModule
from l1inf_lightning.models import MLP, SupervisedModule


class Clock(pl.Callback):
    """Records when training starts (placed first) or ends (placed last among the callbacks)."""

    def __init__(self) -> None:
        self.started = self.ended = 0.0

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.started = time.perf_counter()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.ended = time.perf_counter()


def train(monitor: bool, epochs: int, accelerator: str, log_dir: str) -> tuple[float, float]:
    """Mean epoch wall time and total ``fit`` wall time, in seconds."""
    pl.seed_everything(0, verbose=False)
    data = SyntheticClassificationDataModule()  # the paper's sizes: 500 train, 500 val, 1000 test, batch 50
    model = SupervisedModule(MLP(500, [100, 50, 20], 2))
    first, last = Clock(), Clock()
    callbacks: list[pl.Callback] = [first, L1InfProjection(radius=1.0)]
    if monitor:
        callbacks.append(SparsityMonitor())
    callbacks.append(last)
    trainer = pl.Trainer(
        max_epochs=epochs,
        accelerator=accelerator,
        devices=1,
        logger=TensorBoardLogger(log_dir, name="monitor" if monitor else "plain"),
        callbacks=callbacks,
        log_every_n_steps=10,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
    )
    start = time.perf_counter()
    trainer.fit(model, datamodule=data)
    total = time.perf_counter() - start
    return (last.ended - first.started) / epochs, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")

    print(
        f"torch {torch.__version__}, lightning {pl.__version__}, {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads, accelerator={args.accelerator}, {args.epochs} epochs, "
        f"{args.pairs} pairs"
    )
    times: dict[bool, list[float]] = {False: [], True: []}
    totals: dict[bool, list[float]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as log_dir:
        for monitor in (True, False):  # warm-up, untimed
            train(monitor, 2, args.accelerator, log_dir)
        for pair in range(args.pairs):
            order = (False, True) if pair % 2 == 0 else (True, False)
            for monitor in order:
                epoch, total = train(monitor, args.epochs, args.accelerator, log_dir)
                times[monitor].append(epoch)
                totals[monitor].append(total)
            print(
                f"pair {pair + 1} ({'plain first' if order[0] is False else 'monitor first'}): "
                f"plain {1000 * times[False][-1]:7.1f} ms/epoch   monitor {1000 * times[True][-1]:7.1f} ms/epoch   "
                f"ratio {times[True][-1] / times[False][-1]:.3f}"
            )

    plain, monitored = statistics.mean(times[False]), statistics.mean(times[True])
    print()
    print(f"{'':24}{'no monitor':>12}{'monitor':>12}{'ratio':>8}")
    print(f"{'mean epoch (ms)':24}{1000 * plain:12.1f}{1000 * monitored:12.1f}{monitored / plain:8.3f}")
    plain_fit, monitored_fit = statistics.mean(totals[False]), statistics.mean(totals[True])
    print(f"{'mean fit() total (s)':24}{plain_fit:12.2f}{monitored_fit:12.2f}{monitored_fit / plain_fit:8.3f}")
    print(f"monitor overhead per epoch: {100 * (monitored / plain - 1):+.1f}% (target < 10%)")


if __name__ == "__main__":
    main()
