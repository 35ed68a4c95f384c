r"""Keep chosen layers inside the :math:`L_{1,\infty}` ball after every optimizer step (Algorithm 1)."""

from __future__ import annotations

import fnmatch
import itertools
import math
import operator
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DeepSpeedStrategy, FSDPStrategy
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.utils.hooks import RemovableHandle
from typing_extensions import override

from l1inf_lightning.functional import ModuleProjector, all_finite, check_radius
from l1inf_lightning.functional.layer_projection import project_compiled_layers_
from l1inf_lightning.functional.network import affine_layers
from l1inf_lightning.functional.schedule import annealed_radius
from l1inf_lightning.models.components.scaled_linear import ScaledLinear

__all__ = ["L1InfProjection"]

Radius = float | str | Mapping[str, float | str]
Mode = Literal["exact", "radius_aware"]
MODES = ("exact", "radius_aware")
# Modules whose own parameters hold rows that are neurons (weights times inputs, plus a bias) but that are not
# nn.Linear / nn.Conv: attention's packed input projection, recurrent layers, bilinear maps.
_NEURON_HOLDERS = (nn.MultiheadAttention, nn.RNNBase, nn.Bilinear)


def _refuse_sharded_parameters(trainer: pl.Trainer, name: str) -> None:
    """Raise under strategies that shard parameters: a rank holds a slice of each neuron's row, not the row."""
    strategy = getattr(trainer, "strategy", None)
    sharded = isinstance(strategy, FSDPStrategy) or (
        isinstance(strategy, DeepSpeedStrategy) and getattr(strategy, "zero_stage_3", False)
    )
    if sharded:
        raise RuntimeError(
            f"`{name}` cannot project under {type(strategy).__name__}: it shards each parameter across ranks, so a "
            "rank would project slices of neurons, not neurons. Use DDP (`strategy='ddp'`), or a strategy that keeps "
            "whole parameters on every rank."
        )


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

    **Modes.** ``"exact"`` (the default) is Algorithm 1 as the paper writes it: projected steps, nothing else. At a
    small c it tends to collapse to the majority class: every hidden signal shrinks like :math:`c^k` while the
    optimizer moves each weight by about its learning rate, far more than a small ball holds. ``"radius_aware"``
    trains there by running the optimizer on the weights rescaled to a reference ball, :math:`c_0 W_\ell / c_\ell`,
    where :math:`c_0` = ``start_radius`` (or c, if larger) is the radius the learning rate is meant for. With
    :math:`s_\ell = c_\ell / c_0`:

    - before each step a projected layer's weight gradient is multiplied by :math:`s_\ell`, and after it the
      weight's update is multiplied by :math:`s_\ell` (the step of the rescaled weights, in the units of the
      ball; for Adam this is ``lr × s``, for SGD ``lr × s²``). A bias is added to signals of size
      :math:`\prod_{i \le \ell} s_i`, so its gradient and update are scaled by that product;
    - every :class:`~l1inf_lightning.models.components.ScaledLinear` of the module (the output layer; ``MLP``
      uses one) multiplies its output by :math:`\prod_\ell s_\ell^{-1}` (:math:`(c_0/c)^k`), the factor a ReLU
      net in a ball :math:`c_0/c` times smaller needs to compute the same function. Its effective weights, scale
      included, are what the bounds use;
    - the radius is annealed geometrically from :math:`c_0` to c over the first ``anneal`` fraction of the
      training steps, :math:`c(t) = c_0 (c / c_0)^{\min(1, t / T)}`, and the step scales and the output scale
      follow :math:`c(t)`, so the net finds its features before the ball shrinks. :attr:`radii` is the radius in
      force.

    At :math:`c = c_0` nothing is rescaled: the mode is Algorithm 1 there.
    A ReLU net with a free output layer computes the same functions for every c > 0 (the class does not shrink
    with c); what c changes is where the optimization goes, and the radius-aware mode makes that reachable for
    every c of the paper's grid.

    Args:
        radius: ``c``, a positive number or ``inf`` (no constraint, the baseline; YAML ``.inf`` or ``inf``).
            A mapping from layer-name glob pattern to radius selects the layers by its keys, and each layer
            takes the radius of the first pattern it matches.
        layers: Glob patterns over ``named_modules()`` names selecting the layers to project. Default: every
            Linear/Conv layer except the output layer (the last one in registration order). Give either
            this or a mapping ``radius``, not both.
        mode: ``"exact"`` (Algorithm 1) or ``"radius_aware"`` (see above).
        anneal: Radius-aware mode: the fraction of the training steps over which the radius shrinks from
            ``start_radius`` to c; 0 starts at c.
        start_radius: Radius-aware mode: :math:`c_0`, the radius the optimizer's learning rate is meant for, and
            where the annealing starts (a layer whose c is larger uses its c).

    Example:
        >>> L1InfProjection(radius=0.5)
        L1InfProjection(radius=0.5, layers=None)
        >>> L1InfProjection(radius={"net.0": 1.0, "net.*": "inf"})
        L1InfProjection(radius={'net.0': 1.0, 'net.*': inf}, layers=None)
    """

    def __init__(
        self,
        radius: Radius = 1.0,
        layers: Sequence[str] | None = None,
        mode: Mode = "exact",
        anneal: float = 0.25,
        start_radius: float = 1.0,
    ) -> None:
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
        if mode not in MODES:
            raise ValueError(f"Expected `mode` to be one of {MODES}, got {mode!r}")
        if isinstance(anneal, bool) or not isinstance(anneal, int | float) or not 0 <= anneal <= 1:
            raise ValueError(f"Expected `anneal` to be a fraction of the training steps in [0, 1], got {anneal!r}")
        start_radius = check_radius(start_radius, "start_radius")
        if math.isinf(start_radius):
            raise ValueError(f"Expected `start_radius` to be finite, got {start_radius!r}")
        self.mode = mode
        self.anneal = float(anneal)
        self.start_radius = start_radius
        self.num_projections = 0
        self._selected: dict[str, tuple[nn.Module, float]] = {}
        self._handles: list[RemovableHandle] = []
        self._constrained: dict[str, tuple[nn.Module, float]] = {}
        self._outputs: list[ScaledLinear] = []
        self._anneal_steps = 0.0
        # Radius-aware mode, by optimizer: the parameters whose steps are scaled, and their values before the step.
        self._scaled: dict[int, list[tuple[Tensor, str, int]]] = {}
        self._before_step: dict[int, list[Tensor]] = {}
        self._armed: set[int] = set()
        self._warned: set[str] = set()
        # GPU steps' finiteness checks on their way to the host: (flag, its event, the layers, steps before it).
        self._pending_checks: deque[tuple[Tensor, Any, dict[str, tuple[nn.Module, float]], int]] = deque()
        # Per set of layers projected together (by id, with the set kept alive during the fit): their projectors,
        # which work out the kernel's arrays once, not at every step.
        self._plans: dict[int, tuple[dict[str, tuple[nn.Module, float]], list[ModuleProjector]]] = {}

    def __repr__(self) -> str:
        mode = "" if self.mode == "exact" else f", mode={self.mode!r}, anneal={self.anneal}"
        return f"{type(self).__name__}(radius={self.radius!r}, layers={self.layers!r}{mode})"

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(radius=self.radius, layers=self.layers)

    @property
    def radii(self) -> dict[str, float]:
        """The radius in force for every selected layer by name (known from fit start on), ``inf`` included.

        In the exact mode this is the configured radius; in the radius-aware mode, the annealed :math:`c(t)` after
        the steps taken so far.
        """
        return {name: self._radius_at(radius, self.num_projections) for name, (_, radius) in self._selected.items()}

    @property
    def radius_aware(self) -> bool:
        """Whether the radius-aware mode is on."""
        return self.mode == "radius_aware"

    def _radius_at(self, radius: float, step: int) -> float:
        if not self.radius_aware:
            return radius
        return annealed_radius(radius, max(radius, self.start_radius), step, self._anneal_steps)

    def _shrink_at(self, radius: float, step: int) -> float:
        """How much smaller than its reference the layer's ball is at ``step``: c(t) / max(c, start_radius)."""
        return self._radius_at(radius, step) / max(radius, self.start_radius)

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
            if len(affine) == 1 and not math.isinf(self.radius):
                raise ValueError(
                    f"`{type(self).__name__}(radius={self.radius:g})` selects no layer of {type(pl_module).__name__} "
                    f"by default: its only Linear/Conv layer, {names[0]!r}, is taken as the output layer, which is "
                    f"left free. Name the layers to constrain, e.g. `{type(self).__name__}(radius={self.radius:g}, "
                    f"layers={names!r})`."
                )
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
        _refuse_sharded_parameters(trainer, type(self).__name__)
        self._pending_checks.clear()
        self._plans = {}
        self._selected = self.select_layers(pl_module)
        self._warn_free_neurons(pl_module)
        constrained = {name: entry for name, entry in self._selected.items() if not math.isinf(entry[1])}
        self._constrained = constrained
        if self.radius_aware:
            self._setup_radius_aware(trainer, pl_module, constrained)
        self._project(constrained, self.num_projections)
        self._remove_hooks()
        self._scaled, self._before_step, self._armed, self._warned = {}, {}, set(), set()
        for optimizer in trainer.optimizers:
            owned = {id(p) for group in optimizer.param_groups for p in group["params"]}
            # A layer is this optimizer's when it steps any of the layer's parameters (a frozen weight with a
            # trained bias still moves the neuron).
            layers = {
                name: entry
                for name, entry in constrained.items()
                if any(id(p) in owned for p in entry[0].parameters(recurse=False))
            }
            if not layers:
                continue
            # A layer whose c is at least start_radius is never rescaled (s = 1 at every step): when no layer is,
            # the radius-aware mode is Algorithm 1, and the per-step copies and rescaling are skipped.
            rescaled = self.radius_aware and any(r < self.start_radius for _, r in constrained.values())
            scaled = self._scaled_parameters(constrained, owned) if rescaled else []
            if scaled:
                self._scaled[id(optimizer)] = scaled
            self._handles.append(optimizer.register_step_post_hook(self._make_step_hook(layers, scaled)))

    # ---------------------------------------------------------------- radius-aware mode

    def _setup_radius_aware(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, constrained: dict[str, tuple[nn.Module, float]]
    ) -> None:
        steps = trainer.estimated_stepping_batches
        if self.anneal and math.isinf(steps):
            self._warn("`L1InfProjection`: the number of training steps is unbounded, so the radius is not annealed.")
        # t counts the projected optimizer steps (`num_projections`, kept in checkpoints so a resumed run goes on
        # with the same radius). With several optimizers each one's steps count, and the annealing ends sooner.
        self._anneal_steps = 0.0 if math.isinf(steps) else self.anneal * float(steps)
        projected = {id(module) for module, _ in constrained.values()}
        self._outputs = [m for m in pl_module.modules() if isinstance(m, ScaledLinear) and id(m) not in projected]
        if not self._outputs and constrained:
            self._warn(
                "`L1InfProjection(mode='radius_aware')` found no `ScaledLinear` output layer in "
                f"{type(pl_module).__name__}, so its logits are not scaled by c**-k and a small c may still collapse "
                "to one class. Make the output layer a `l1inf_lightning.models.ScaledLinear` (e.g. "
                "`ScaledLinear.from_linear(layer)`), preferably without a bias."
            )
        self._set_output_scale(constrained, self.num_projections)

    def _scaled_parameters(
        self, constrained: dict[str, tuple[nn.Module, float]], owned: set[int]
    ) -> list[tuple[Tensor, str, int]]:
        """``(parameter, layer name, depth)`` for every parameter of a projected layer that this optimizer steps.

        Depth 0 marks a weight (scaled by its layer's radius); depth d >= 1 a bias of the d-th projected layer,
        scaled by the product of the radii of the first d projected layers.
        """
        scaled = []
        for depth, (name, (module, _)) in enumerate(constrained.items(), start=1):
            for kind, param in (("weight", module.weight), ("bias", module.bias)):
                if param is not None and id(param) in owned:
                    scaled.append((param, name, 0 if kind == "weight" else depth))
        return scaled

    def _step_scales(self, scaled: list[tuple[Tensor, str, int]], step: int) -> list[float]:
        shrink = {name: self._shrink_at(radius, step) for name, (_, radius) in self._constrained.items()}
        products = list(itertools.accumulate(shrink.values(), operator.mul))
        return [shrink[name] if depth == 0 else products[depth - 1] for _, name, depth in scaled]

    def _set_output_scale(self, constrained: dict[str, tuple[nn.Module, float]], step: int) -> None:
        scale = 1.0
        for _, radius in constrained.values():
            scale /= self._shrink_at(radius, step)
        for output in self._outputs:
            output.output_scale.fill_(scale)

    @override
    @torch.no_grad()
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        # Called after the backward pass (and, under AMP, after unscaling), before clipping and the step. Not an
        # optimizer pre-step hook: Lightning evaluates the closure, hence the backward, inside `optimizer.step`.
        scaled = self._scaled.get(id(optimizer))
        if not scaled:
            return
        # The optimizer runs on W / s: its gradient is s * dL/dW, and its step (rescaled after it) is in units of s.
        # The copies are kept from step to step (one allocation per fit, not per step); `_armed` says they are fresh.
        before = self._before_step.get(id(optimizer))
        if before is None:
            self._before_step[id(optimizer)] = [param.detach().clone() for param, _, _ in scaled]
        else:
            for copy, (param, _, _) in zip(before, scaled, strict=True):
                copy.copy_(param.detach())
        self._armed.add(id(optimizer))
        for (param, _, _), scale in zip(scaled, self._step_scales(scaled, self.num_projections), strict=True):
            if param.grad is not None:
                param.grad.mul_(scale)

    # ---------------------------------------------------------------- projection

    def _make_step_hook(self, layers: dict[str, tuple[nn.Module, float]], scaled: list[tuple[Tensor, str, int]]) -> Any:
        def hook(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            before = self._before_step.get(id(optimizer)) if id(optimizer) in self._armed else None
            self._armed.discard(id(optimizer))
            if scaled and before is None:
                self._warn(
                    "`L1InfProjection(mode='radius_aware')`: an optimizer stepped without Lightning's "
                    "`on_before_optimizer_step` (a raw `optimizer.step()` under manual optimization?), so its step was "
                    "not scaled to the ball. Step the optimizers that `self.optimizers()` returns."
                )
            if scaled and before is not None:
                scales = self._step_scales(scaled, self.num_projections)
                with torch.no_grad():
                    for (param, _, _), old, scale in zip(scaled, before, scales, strict=True):
                        param.lerp_(old, 1.0 - scale)  # old + scale * (new - old)
            # The next forward pass sees the radius after this step: c(t + 1).
            self._project(layers, self.num_projections + 1)
            self.num_projections += 1
            if self.radius_aware:
                self._set_output_scale(self._constrained, self.num_projections)

        return hook

    def _warn_free_neurons(self, pl_module: nn.Module) -> None:
        """Warn once about parameters that hold neurons but are not Linear/Conv layers, so they stay free."""
        owned = {id(p) for _, m in affine_layers(pl_module) for p in m.parameters(recurse=False)}
        free = [
            f"{module_name}.{name}" if module_name else name
            for module_name, module in pl_module.named_modules()
            if isinstance(module, _NEURON_HOLDERS)
            for name, param in module.named_parameters(recurse=False)
            if id(param) not in owned and param.ndim >= 2
        ]
        if free:
            self._warn(
                f"`{type(self).__name__}` projects nn.Linear and nn.Conv1d/2d/3d layers only; these weights of "
                f"{type(pl_module).__name__} are neurons of other modules and are left unconstrained: {free}."
            )

    def _warn(self, message: str) -> None:
        if message not in self._warned:  # once per fit, not once per step
            self._warned.add(message)
            rank_zero_warn(message, category=UserWarning, stacklevel=3)

    def _project(self, layers: dict[str, tuple[nn.Module, float]], step: int) -> None:
        # No torch.no_grad() here (microseconds at every step): the kernel writes through arrays, and the torch path
        # and the GPU check below take it themselves.
        if not layers:
            return
        projectors = self._projectors_for(layers)
        radii = [self._radius_at(radius, step) for _, radius in layers.values()]
        projected = project_compiled_layers_(projectors, radii)  # on CPU: the kernel checks, then projects
        if projected is not None:
            if not projected:
                self._raise_not_finite(layers, self.num_projections)
            return
        parameters = [p for module, _ in layers.values() for p in module.parameters(recurse=False)]
        device = next((p.device for p in parameters if p.is_cuda), None)
        if device is not None:
            # Asking the GPU whether the weights are finite would stall the training loop at every step: each step's
            # answer is copied to the host without waiting, and read at a later step once it has arrived (all of
            # them at fit end). The projection leaves non-finite rows as they are, so a diverged layer is reported
            # a step or so late.
            self._raise_if_not_finite(wait=False)
            with torch.no_grad():
                flag = torch.stack([torch.isfinite(p).all().to(device, non_blocking=True) for p in parameters]).all()
            host = torch.empty((), dtype=torch.bool, pin_memory=True)
            host.copy_(flag, non_blocking=True)
            arrived = torch.cuda.Event()
            arrived.record(torch.cuda.current_stream(device))
            self._pending_checks.append((host, arrived, layers, self.num_projections))
        else:
            for projector in projectors:  # every layer checked before any is written: a failure changes nothing
                if not projector.all_finite():
                    self._raise_not_finite(layers, self.num_projections)
        for projector, radius in zip(projectors, radii, strict=True):
            # In place, bias and weight where they are; stored rows end inside the ball in their own dtype.
            projector.project_(radius)

    def _projectors_for(self, layers: dict[str, tuple[nn.Module, float]]) -> list[ModuleProjector]:
        """The layers' projectors, made once per fit (each refreshes itself when its layer's parameters change)."""
        plan = self._plans.get(id(layers))
        if plan is None or plan[0] is not layers:
            plan = self._plans[id(layers)] = (layers, [ModuleProjector(module) for module, _ in layers.values()])
        return plan[1]

    def _raise_if_not_finite(self, wait: bool) -> None:
        """Read the GPU steps' finiteness checks that have arrived, oldest first, and raise at the first that failed.

        ``wait``: read all of them, waiting for those still on their way (at fit end).
        """
        while self._pending_checks:
            host, arrived, layers, num_projections = self._pending_checks[0]
            if wait:
                arrived.synchronize()
            elif not arrived.query():  # not there yet, nor the later ones: no waiting for them
                return
            self._pending_checks.popleft()
            if not bool(host):
                self._pending_checks.clear()
                self._raise_not_finite(layers, num_projections)

    def _raise_not_finite(self, layers: dict[str, tuple[nn.Module, float]], num_projections: int) -> None:
        bad = [name for name, (module, _) in layers.items() if not all_finite(module.parameters(recurse=False))]
        raise ValueError(
            f"`{type(self).__name__}` cannot project layers {bad}: their weights are not finite (NaN or inf)"
            f" after {num_projections} projected steps. Training has diverged (lower the learning rate), or "
            "the training data holds NaN or inf (`SparsityMonitor` checks it and names the first bad sample)."
        )

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @override
    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._remove_hooks()
        self._plans = {}  # the projectors' arrays would keep the parameters' storage alive
        self._raise_if_not_finite(wait=True)

    @override
    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._remove_hooks()
        self._plans = {}
        self._pending_checks.clear()

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"num_projections": self.num_projections}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_projections = int(state_dict["num_projections"])
