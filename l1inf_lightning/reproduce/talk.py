"""The talk's tables on synthetic classification (500 features, 1000 test samples), copied as printed.

Zhouwang Yang, "Sparse Deep Neural Networks Through L1,∞-Weight Normalization" (USTC, June 2021).

Each cell is "generalization error / test accuracy %"; "-" is the talk's "the network cannot converge with projection
stochastic gradient descent". The talk gives no optimizer, learning rate, epochs, batch size or number of runs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["BOXPLOT_CLAIM", "REGULARIZER_DATASETS", "TALK_DEPTH", "TALK_REGULARIZERS", "TALK_SAMPLE_SIZE", "TalkCell"]

# What the talk says of its box plots of generalization error and sparsity rate vs c (it prints no numbers for them).
BOXPLOT_CLAIM = (
    "the generalization error decreases as c decreases. Also, the network becomes sparser with a smaller c "
    "(box plots only; the talk prints no numbers for them)"
)

# (generalization error, test accuracy %), or None where the talk prints "-".
TalkCell = tuple[float, float] | None

# "Generation error and accuracy of different network structure ... in classification problem" (500 training samples).
_DEPTH_COLUMNS = ("500-100-20-2", "500-100-50-20-2", "500-100-100-50-20-2")
_DEPTH_ROWS = """
inf  1.535/70.30 1.674/69.90 1.510/69.10
0.50 0.461/83.14 0.478/84.78 0.542/82.42
0.16 0.351/84.67 0.441/87.03 0.456/84.41
0.13 0.322/85.35 0.376/87.23 0.431/84.89
0.10 0.312/86.10 0.324/87.78 0.383/86.03
0.07 0.245/88.42 0.260/88.34 0.274/87.98
0.04 0.103/89.12 0.134/89.57 0.131/88.33
0.01 0.072/87.74 0.068/88.48 -
"""

# "Generation error and accuracy of different c and sample size in classification problem" (500-100-50-20-2 net).
_SAMPLE_SIZE_COLUMNS = ("500", "1000", "1500", "2000", "2500")
_SAMPLE_SIZE_ROWS = """
inf  1.674/69.90 1.576/71.00 1.528/72.20 1.508/75.70 1.489/76.60
0.16 0.441/87.03 0.343/88.10 0.258/89.30 0.208/91.50 0.199/92.74
0.13 0.376/87.23 0.334/87.80 0.252/89.47 0.171/91.76 0.171/92.80
0.10 0.324/87.78 0.280/87.60 0.223/90.30 0.176/90.70 0.169/90.80
0.07 0.260/88.34 0.241/87.80 0.189/90.80 0.162/91.21 0.133/91.86
0.04 0.134/89.57 0.112/89.94 0.102/91.31 0.084/91.72 0.073/92.24
0.01 0.068/88.48 0.079/89.15 0.034/90.30 0.036/91.00 0.024/91.47
"""


def _parse(columns: tuple[str, ...], rows: str) -> dict[str, dict[float, TalkCell]]:
    """The printed table as ``{column: {c: (gap, acc %) or None}}``."""
    table: dict[str, dict[float, TalkCell]] = {column: {} for column in columns}
    for line in rows.strip().splitlines():
        radius, *cells = line.split()
        if len(cells) != len(columns):
            raise ValueError(f"Expected {len(columns)} cells in the talk's row {line!r}")
        for column, cell in zip(columns, cells, strict=True):
            gap, _, accuracy = cell.partition("/")
            table[column][float(radius)] = None if cell == "-" else (float(gap), float(accuracy))
    return table


TALK_DEPTH: Mapping[str, Mapping[float, TalkCell]] = _parse(_DEPTH_COLUMNS, _DEPTH_ROWS)
TALK_SAMPLE_SIZE: Mapping[str, Mapping[float, TalkCell]] = _parse(_SAMPLE_SIZE_COLUMNS, _SAMPLE_SIZE_ROWS)

# "Comparison with Other Regularizers": test accuracy % on synthetic classification, MNIST and CIFAR-10.
REGULARIZER_DATASETS = ("Cla. (Synthesized Data)", "MNIST", "CIFAR10")
_REGULARIZER_ROWS = """
No                  71.6 97.85 93.34
L1, λ = 0.1         50.0 13.87 48.32
L1, λ = 0.01        50.0 11.35 92.53
L1, λ = 0.001       81.6 97.33 93.43
L1, λ = 0.0001      73.2 97.99 93.64
L2, λ = 0.1         70.8 80.30 80.41
L2, λ = 0.01        73.4 92.30 90.38
L2, λ = 0.001       73.2 94.43 91.41
L2, λ = 0.0001      71.8 97.90 93.72
Dropout, r_d = 0.5  73.5 98.11 93.42
Our approach        91.0 98.03 93.75
"""


def _parse_regularizers(rows: str) -> dict[str, dict[str, float]]:
    """The printed table as ``{row header: {dataset: acc %}}`` (two spaces or more end the header)."""
    table = {}
    for line in rows.strip().splitlines():
        header, numbers = re.split(r"\s{2,}", line, maxsplit=1)
        cells = numbers.split()
        if len(cells) != len(REGULARIZER_DATASETS):
            raise ValueError(f"Expected {len(REGULARIZER_DATASETS)} cells in the talk's row {line!r}")
        table[header] = dict(zip(REGULARIZER_DATASETS, map(float, cells), strict=True))
    return table


TALK_REGULARIZERS: Mapping[str, Mapping[str, float]] = _parse_regularizers(_REGULARIZER_ROWS)
