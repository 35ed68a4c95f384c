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
    "check_affine",
    "is_affine",
    "l1inf_norm",
    "load_neuron_vectors_",
    "neuron_l1_norms",
    "neuron_vectors",
    "sparsity_rate",
]

AFFINE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


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

    Without a bias the rows are the weights alone. Half-precision parameters are upcast to float32; other
    dtypes are kept, so converting back is exact for untouched entries.

    Example:
        >>> layer = nn.Linear(2, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.fill_(2.0), layer.bias.fill_(-1.0)
        >>> neuron_vectors(layer)
        tensor([[-1.,  2.,  2.]])
    """
    check_affine(module)
    weight = module.weight.detach()
    dtype = torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype
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
    """L1 norm of each neuron's bias-augmented vector, shape ``(out_features,)``.

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
    return norms.to(torch.float32 if weight.dtype in (torch.float16, torch.bfloat16) else weight.dtype)


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

    The paper's sparsity rate: zeros divided by the size of the weight matrices.

    Example:
        >>> layer = nn.Linear(4, 1)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[0.0, 1.0, 0.0, 0.0]]))
        >>> sparsity_rate(layer)
        tensor(0.7500)
    """
    layers = [m for m in module.modules() if is_affine(m)]
    if not layers:
        raise ValueError(f"Expected `module` to contain an nn.Linear or nn.Conv layer, got {type(module).__name__}")
    zeros = sum(int((layer.weight == 0).sum()) for layer in layers)
    size = sum(layer.weight.numel() for layer in layers)
    return torch.tensor(zeros / size)
