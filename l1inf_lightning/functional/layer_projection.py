r"""A layer's neurons projected in place, once (:func:`project_module_`) or every step (:class:`ModuleProjector`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor, nn

from l1inf_lightning.functional.norms import check_affine, load_neuron_vectors_, neuron_vectors
from l1inf_lightning.functional.projection import (
    _NO_BIAS,
    BACKENDS,
    Backend,
    KernelArrays,
    _kernel_arrays,
    _project_arrays_,
    _radii,
    all_finite,
    project_l1_ball_,
    projection_backend,
)

__all__ = ["ModuleProjector", "project_compiled_layers_", "project_module_"]


class ModuleProjector:
    """Projects one Linear/Conv layer's neurons in place, step after step: what ``L1InfProjection`` runs.

    :func:`project_module_` works out on every call how to project a layer (the path; on the numba path, the
    parameters as arrays the kernel reads and writes where they are). A projector works it out once and again only
    when the layer's parameters change (other tensors, storage, shape, dtype, device or layout), so a step costs the
    kernel and a few microseconds of Python. On the numba path it also keeps each neuron's threshold, where the next
    projection's search starts. Both give the same result, bit for bit, except where a neuron's threshold equals one
    of its entries: the two searches may then end on the active sets with and without that entry, whose thresholds
    agree exactly but round apart, and the written rows differ by an ulp (both inside the ball).

    Args:
        module: An ``nn.Linear`` or ``nn.Conv1d/2d/3d``.
        backend: The path, ``"auto"``, ``"numba"`` or ``"torch"`` (see :func:`projection_backend`).

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> projector = ModuleProjector(layer)
        >>> projector.all_finite()
        True
        >>> projector.project_(0.1)
        >>> bool(layer.weight.abs().sum(dim=1).add(layer.bias.abs()).max() <= 0.1)
        True
    """

    def __init__(self, module: nn.Module, backend: Backend = "auto") -> None:
        check_affine(module)
        if backend not in BACKENDS:
            raise ValueError(f"Expected `backend` to be one of {BACKENDS}, got {backend!r}")
        self.module = module
        self.backend = backend
        self._key: tuple | None = None
        # On the numba path: the kernel's arrays and bound calls (see `_layer_arrays`); None on the torch path.
        self._arrays: KernelArrays | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.module).__name__}, backend={self.backend!r})"

    def __getstate__(self) -> dict:
        # The kernel's arrays and bound calls point into this layer's memory: a copy (deepcopy, pickle) works them
        # out again for its own layer. Its neurons' thresholds start cold.
        return {**self.__dict__, "_key": None, "_arrays": None}

    def _refresh(self) -> KernelArrays | None:
        """The kernel's arrays for the parameters as they are now (rebuilt if they changed), or None."""
        # The registered parameters, read without nn.Module.__getattr__ (a microsecond each, at every step).
        parameters = self.module._parameters
        weight = parameters["weight"] if "weight" in parameters else self.module.weight
        bias = parameters["bias"] if "bias" in parameters else self.module.bias
        key = (id(weight), weight.data_ptr(), weight.shape, weight.stride(), weight.dtype, weight.device)
        if bias is not None:
            key += (id(bias), bias.data_ptr(), bias.shape, bias.stride(), bias.dtype)
        if key != self._key:
            self._arrays = _layer_arrays(weight, bias, self.backend)
            self._key = key
        return self._arrays

    def compiled(self) -> bool:
        """Whether the compiled kernel projects the layer in place (else the torch path, on a copy of its rows)."""
        return self._refresh() is not None

    def all_finite(self) -> bool:
        """Whether every weight and bias entry of the layer is finite (one kernel call on the numba path)."""
        arrays = self._refresh()
        if arrays is None:
            return all_finite(self.module.parameters(recurse=False))
        return arrays.check() == 0

    def project_(self, radius: float | Tensor) -> None:
        """Project every neuron onto the L1 ball of ``radius`` (a positive number or inf, or one per neuron)."""
        self._project_(self._refresh(), radius)

    def _project_(self, arrays: KernelArrays | None, radius: float | Tensor) -> None:
        """``project_`` with the layer's arrays as ``_refresh`` returned them."""
        if arrays is not None:
            # A positive finite float (the callback's radius, at every step) needs no checks.
            if type(radius) is not float or not 0.0 < radius < math.inf:
                radius = _radii(torch.from_numpy(arrays.rows), radius)  # checked; None for an infinite radius
            if radius is not None:
                _project_arrays_(arrays, radius)
            return
        # Anything else (CUDA, half precision, channels-last weights): the rows as a copy in the stored dtype, so
        # that the rounding toward zero happens in the dtype the parameters keep.
        with torch.no_grad():
            vectors = neuron_vectors(self.module).to(self.module.weight.dtype)
            backend = "torch" if self.backend == "auto" else self.backend
            load_neuron_vectors_(self.module, project_l1_ball_(vectors, radius, backend))


def project_compiled_layers_(projectors: Sequence[ModuleProjector], radii: Sequence[float | Tensor]) -> bool | None:
    """Check that every layer is finite, then project each onto its radius, where the kernel projects them all.

    What ``L1InfProjection`` runs after each optimizer step on CPU: the same as ``all_finite`` of every projector, then
    ``project_`` of each, with each layer's arrays worked out once for both (nothing can change the layers between).

    Returns:
        None, with nothing done, where a layer is not on the kernel's path (the caller checks and projects it another
        way); False, with nothing written, where a layer has a weight or bias that is not finite; True once projected.
    """
    layers = [projector._refresh() for projector in projectors]
    if None in layers:
        return None
    if any(arrays.check() for arrays in layers):  # every layer checked before any is written
        return False
    for projector, arrays, radius in zip(projectors, layers, radii, strict=True):
        projector._project_(arrays, radius)
    return True


def _layer_arrays(weight: Tensor, bias: Tensor | None, backend: Backend) -> KernelArrays | None:
    """The layer's parameters as arrays the kernel projects in place (``KernelArrays``); None: the torch path.

    The kernel needs the weight and bias contiguous and of one dtype (float32 or float64, on CPU); anything else
    (CUDA, half precision, channels-last weights) is projected as a copy of the rows by the torch path.
    """
    if not weight.is_contiguous() or (bias is not None and (bias.dtype != weight.dtype or not bias.is_contiguous())):
        return None
    if projection_backend(weight, backend) != "numba":
        return None
    rows = weight.detach().reshape(weight.shape[0], math.prod(weight.shape[1:])).numpy()
    bias_array = _NO_BIAS[rows.dtype] if bias is None else bias.detach().numpy()
    # Each neuron's last threshold, where the next projection's passes start (0: none yet).
    return _kernel_arrays(bias_array, rows, bias is not None, np.zeros(rows.shape[0]))


@torch.no_grad()
def project_module_(module: nn.Module, radius: float | Tensor, backend: Backend = "auto") -> nn.Module:
    r"""Project every neuron of a Linear or Conv layer onto the L1 ball of ``radius``, in place.

    A neuron is one output unit: the vector ``[bias[j], weight[j].flatten()]`` (the weights alone when the
    layer has no bias), as in the paper's bias-augmented matrix :math:`\tilde V_\ell` (Algorithm 1 of Wen et al.,
    2021, one Euclidean projection per neuron). On the numba path the kernel reads and writes ``bias`` and
    ``weight`` where they are, with no concatenated copy. Parameters in half precision are projected with a
    float64 threshold and written back rounded toward zero, so the stored neurons are inside the ball.

    Args:
        module: An ``nn.Linear`` or ``nn.Conv1d/2d/3d``.
        radius: A positive number or ``inf``, or one radius per output neuron.
        backend: The path, ``"auto"``, ``"numba"`` or ``"torch"`` (see :func:`projection_backend`).

    Returns:
        ``module``.

    Example:
        >>> layer = nn.Linear(3, 2)
        >>> with torch.no_grad():
        ...     _ = layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [0.1, 0.0, 0.1]]))
        ...     _ = layer.bias.copy_(torch.tensor([0.5, 0.1]))
        >>> _ = project_module_(layer, 2.0)
        >>> layer.weight
        Parameter containing:
        tensor([[ 0.5000, -1.5000,  0.0000],
                [ 0.1000,  0.0000,  0.1000]], requires_grad=True)
        >>> layer.bias
        Parameter containing:
        tensor([0.0000, 0.1000], requires_grad=True)
    """
    ModuleProjector(module, backend).project_(radius)
    return module
