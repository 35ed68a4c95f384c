r"""Keep chosen layers inside the :math:`L_{1,\infty}` ball after every optimizer step (Algorithm 1)."""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from l1inf_lightning.functional import check_radius, load_neuron_vectors_, neuron_vectors, project_l1_ball_
from l1inf_lightning.functional.network import affine_layers

__all__ = ["L1InfProjection"]

Radius = float | str | Mapping[str, float | str]


class L1InfProjection(Callback):
    r"""Project each hidden neuron's (bias + incoming weights) onto the L1 ball of radius ``c``.

    After every real optimizer step, each selected ``nn.Linear`` / ``nn.Conv1d/2d/3d`` layer is projected so
    that its bias-augmented :math:`L_{1,\infty}` norm is at most its radius:

    .. math::

        \tilde V_\ell \leftarrow \operatorname{proj}_{\|\cdot\|_{1,\infty} \le c}(\tilde V_\ell),

    one exact Euclidean projection per neuron (Algorithms 1 and 2 of Wen et al., 2021). The model is also
    projected once at fit start, so it is feasible from the first validation on.

    The projection is attached to the optimizers themselves (``Optimizer.register_step_post_hook``), so it
    runs once per accumulated step under gradient accumulation, after each ``step()`` under manual
    optimization with several optimizers (projecting the layers that optimizer owns), and not at all for a
    step the AMP grad scaler skipped.

    Args:
        radius: ``c``, a positive number or ``inf`` (no constraint, the baseline; YAML ``.inf`` or ``inf``).
            A mapping from layer-name glob pattern to radius selects the layers by its keys, and each layer
            takes the radius of the first pattern it matches.
        layers: Glob patterns over ``named_modules()`` names selecting the layers to project. Default: every
            Linear/Conv layer except the output layer (the last one in registration order). Give either
            this or a mapping ``radius``, not both.

    Example:
        >>> L1InfProjection(radius=0.5)
        L1InfProjection(radius=0.5, layers=None)
        >>> L1InfProjection(radius={"net.0": 1.0, "net.*": "inf"})
        L1InfProjection(radius={'net.0': 1.0, 'net.*': inf}, layers=None)
    """

    def __init__(self, radius: Radius = 1.0, layers: Sequence[str] | None = None) -> None:
        if isinstance(radius, Mapping):
            if not radius:
                raise ValueError("Expected `radius` to map at least one layer pattern to a radius, got {}")
            if layers is not None:
                raise ValueError(
                    f"Give the layer patterns either in `layers` or as the keys of `radius`, not both; got "
                    f"`layers`={list(layers)!r} and `radius`={dict(radius)!r}"
                )
            for pattern in radius:
                if not isinstance(pattern, str) or not pattern:
                    raise ValueError(f"Expected the keys of `radius` to be layer-name patterns, got {pattern!r}")
            self.radius: float | dict[str, float] = {p: check_radius(r, f"radius[{p!r}]") for p, r in radius.items()}
        else:
            self.radius = check_radius(radius)
        if layers is not None:
            if isinstance(layers, str) or not all(isinstance(p, str) and p for p in layers) or not layers:
                raise ValueError(f"Expected `layers` to be a non-empty list of layer-name patterns, got {layers!r}")
            layers = list(layers)
        self.layers = layers
        self.num_projections = 0
        self._selected: dict[str, tuple[nn.Module, float]] = {}
        self._handles: list[RemovableHandle] = []

    def __repr__(self) -> str:
        return f"{type(self).__name__}(radius={self.radius!r}, layers={self.layers!r})"

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(radius=self.radius, layers=self.layers)

    @property
    def radii(self) -> dict[str, float]:
        """The radius of every selected layer by name (known from fit start on), ``inf`` included."""
        return {name: radius for name, (_, radius) in self._selected.items()}

    def select_layers(self, pl_module: nn.Module) -> dict[str, tuple[nn.Module, float]]:
        """Resolve the patterns against ``pl_module``: ``{name: (layer, radius)}``, in registration order.

        Raises:
            ValueError: When the module has no Linear/Conv layer, or a pattern matches none of its layers
                (the message lists the layer names).
        """
        affine = affine_layers(pl_module)
        if not affine:
            raise ValueError(
                f"`{type(self).__name__}` found no nn.Linear or nn.Conv1d/2d/3d layer in "
                f"{type(pl_module).__name__}: there is nothing to project"
            )
        names = [name for name, _ in affine]
        if isinstance(self.radius, dict):
            rules = list(self.radius.items())
        elif self.layers is not None:
            rules = [(pattern, self.radius) for pattern in self.layers]
        else:
            # The output layer T_{k+1} is left free: its norms enter the bounds instead.
            return {name: (module, self.radius) for name, module in affine[:-1]}

        unmatched = [pattern for pattern, _ in rules if not fnmatch.filter(names, pattern)]
        if unmatched:
            raise ValueError(
                f"Expected every layer pattern to match a Linear/Conv layer of {type(pl_module).__name__}, but "
                f"{unmatched!r} matched none. Its layers are: {names}"
            )
        selected = {}
        for name, module in affine:
            radius = next((r for pattern, r in rules if fnmatch.fnmatchcase(name, pattern)), None)
            if radius is not None:
                selected[name] = (module, radius)
        return selected

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._selected = self.select_layers(pl_module)
        constrained = {name: entry for name, entry in self._selected.items() if not math.isinf(entry[1])}
        self._project(constrained)
        self._remove_hooks()
        for optimizer in trainer.optimizers:
            owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
            # A layer is this optimizer's when it steps any of the layer's parameters (a frozen weight with a
            # trained bias still moves the neuron).
            layers = {
                name: entry
                for name, entry in constrained.items()
                if any(id(p) in owned for p in entry[0].parameters(recurse=False))
            }
            if layers:
                self._handles.append(optimizer.register_step_post_hook(self._make_step_hook(layers)))

    def _make_step_hook(self, layers: dict[str, tuple[nn.Module, float]]) -> Any:
        def hook(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            self._project(layers)
            self.num_projections += 1

        return hook

    @torch.no_grad()
    def _project(self, layers: dict[str, tuple[nn.Module, float]]) -> None:
        if not layers:
            return
        vectors = {name: neuron_vectors(module) for name, (module, _) in layers.items()}
        # Check every layer before writing any, so a failure leaves the model as it was.
        finite = [torch.isfinite(v).all() for v in vectors.values()]
        if not bool(torch.stack([f.to(finite[0].device) for f in finite]).all()):
            bad = [name for name, ok in zip(vectors, finite, strict=True) if not bool(ok)]
            raise ValueError(
                f"`{type(self).__name__}` cannot project layers {bad}: their weights are not finite (NaN or inf)"
                f" after {self.num_projections} projected steps. Training has diverged; lower the learning rate."
            )
        for name, (module, radius) in layers.items():
            load_neuron_vectors_(module, project_l1_ball_(vectors[name], radius))

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"num_projections": self.num_projections}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_projections = int(state_dict["num_projections"])
