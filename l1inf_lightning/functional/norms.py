r"""Per-neuron views and norms of affine layers.

For hidden layer :math:`\ell` the paper stacks the bias on top of the weights,
:math:`\tilde V_\ell = (b_\ell, W_\ell^T)^T`, one column per output neuron. In PyTorch's layout a neuron is a
row: ``[bias[j], weight[j].flatten()]`` for ``nn.Linear`` (weight ``(out, in)``) and for ``nn.Conv1d/2d/3d``
(weight ``(out, in / groups, *kernel)``, neuron = output channel).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = [
    "AFFINE_TYPES",
    "HALF_DTYPES",
    "check_affine",
    "compute_dtype",
    "dead_neurons",
    "is_affine",
    "l1inf_norm",
    "load_neuron_vectors_",
    "neuron_l1_norms",
    "neuron_vectors",
    "sparsity_rate",
]

AFFINE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
HALF_DTYPES: tuple[torch.dtype, ...] = (torch.float16, torch.bfloat16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype in which the package computes with parameters stored in ``dtype``: float32 for half precision.

    The one half-precision rule: float16 and bfloat16 parameters are read into float32 (their sums overflow or lose
    every digit in their own dtype); every other dtype is kept, so converting back is exact for untouched entries.

    >>> compute_dtype(torch.bfloat16), compute_dtype(torch.float64)
    (torch.float32, torch.float64)
    """
    return torch.float32 if dtype in HALF_DTYPES else dtype


def is_affine(module: nn.Module) -> bool:
    """Whether ``module`` is a layer the method constrains: ``nn.Linear`` or ``nn.Conv1d/2d/3d``.

    >>> is_affine(nn.Linear(2, 3)), is_affine(nn.ReLU())
    (True, False)
    """
    return isinstance(module, AFFINE_TYPES)


def check_affine(module: nn.Module) -> None:
    """Raise a ``TypeError`` unless ``module`` is a Linear or Conv1d/2d/3d layer."""
    if not is_affine(module):
        names = ", ".join(t.__name__ for t in AFFINE_TYPES)
        raise TypeError(f"Expected an affine layer ({names}), got {type(module).__name__}")


def neuron_vectors(module: nn.Module) -> Tensor:
    """A new ``(out_features, 1 + fan_in)`` tensor whose row ``j`` is ``[bias[j], weight[j].flatten()]``.

    Without a bias the rows are the weights alone. The rows are in :func:`compute_dtype` of the parameters: float32
    for half precision, else their own dtype.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.fill_(2.0), layer.bias.fill_(-1.0)
        >>> neuron_vectors(layer)
        tensor([[-1.,  2.,  2.]])
    """
    check_affine(module)
    weight = module.weight.detach()
    dtype = compute_dtype(weight.dtype)
    rows = weight.reshape(weight.shape[0], -1).to(dtype)
    if module.bias is None:
        return rows.clone()
    return torch.cat([module.bias.detach().to(dtype).unsqueeze(1), rows], dim=1)


@torch.no_grad()
def load_neuron_vectors_(module: nn.Module, vectors: Tensor) -> nn.Module:
    """Write rows laid out as by :func:`neuron_vectors` back into ``module``'s bias and weight, in place.

    Values are cast to the parameters' dtype; the parameters keep their identity (optimizers hold them).
    """
    check_affine(module)
    weight = module.weight
    expected = (weight.shape[0], weight[0].numel() + (module.bias is not None))
    if tuple(vectors.shape) != expected:
        raise ValueError(f"Expected `vectors` of shape {expected} for {module}, got {tuple(vectors.shape)}")
    if module.bias is not None:
        module.bias.copy_(vectors[:, 0])
        vectors = vectors[:, 1:]
    weight.copy_(vectors.reshape(weight.shape))
    return module


def neuron_l1_norms(module: nn.Module) -> Tensor:
    """L1 norm of each neuron's bias-augmented vector, shape ``(out_features,)``, in :func:`compute_dtype`.

    The sums are taken in float64, so a half-precision layer's norms do not overflow.

    >>> layer = nn.Linear(2, 2)
    >>> with torch.no_grad():
    ...     _ = layer.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]])), layer.bias.fill_(0.5)
    >>> neuron_l1_norms(layer)
    tensor([3.5000, 1.0000])
    """
    check_affine(module)
    weight = module.weight.detach()
    norms = weight.reshape(weight.shape[0], -1).abs().sum(dim=1, dtype=torch.float64)
    if module.bias is not None:
        norms = norms + module.bias.detach().abs().to(torch.float64)
    return norms.to(compute_dtype(weight.dtype))


def l1inf_norm(module: nn.Module) -> Tensor:
    r"""The layer's :math:`L_{1,\infty}` norm with its bias: the largest L1 norm of a neuron.

    .. math::

        \|\tilde V\|_{1,\infty} = \max_j \Big(|b_j| + \sum_i |W_{ji}|\Big)

    Example:
        >>> layer = nn.Linear(2, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, -2.0], [0.5, 0.0]])), layer.bias.fill_(0.5)
        >>> l1inf_norm(layer)
        tensor(3.5000)
    """
    return neuron_l1_norms(module).max()


def sparsity_rate(module: nn.Module) -> Tensor:
    """Fraction of exactly-zero weights over every Linear/Conv layer in ``module`` (biases not counted).

    The paper's sparsity rate: zeros divided by the size of the weight matrices. Given one layer, it is that layer's
    sparsity. A float64 scalar: the ratio of two counts, rounded once.

    Example:
        >>> layer = nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
        >>> float(sparsity_rate(layer))
        0.75
    """
    layers = [m for m in module.modules() if is_affine(m)]
    if not layers:
        raise ValueError(f"Expected `module` to contain an nn.Linear or nn.Conv layer, got {type(module).__name__}")
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    size = sum(layer.weight.numel() for layer in layers)
    return torch.tensor(zeros / size, dtype=torch.float64)


def dead_neurons(module: nn.Module) -> Tensor:
    """Number of neurons of a Linear/Conv layer whose incoming weights are all exactly zero (the bias not counted).

    Such a neuron's output is a constant (its activated bias) whatever the input: the projection has switched it off.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [0.0, 1.0, 0.0]]))
        >>> dead_neurons(layer)
        tensor(1)
    """
    check_affine(module)
    weight = module.weight.detach()
    return (weight == 0).reshape(weight.shape[0], -1).all(dim=1).sum()
