"""VGG networks built from a layer list, with configurable per-conv kernel sizes.

The architecture is data (:data:`CFGS`) walked by one builder (:class:`VGG`); the named entry
points :func:`vgg11`, :func:`vgg13`, :func:`vgg16` and :func:`vgg19` are thin wrappers over one
private factory. The paper's CIFAR-10 network (Wen et al. 2021, "VGG-16 with the first two 3×3
convs replaced by 21×21 convs") is ``vgg16(kernel_sizes=[21, 21])``.

Every convolution uses "same" padding (``k // 2`` for odd ``k``), so only the max-pools change
the spatial size. Small inputs are supported: a pool that would take the feature map below 1×1
(e.g. the fifth pool for 28×28 MNIST, 28 → 14 → 7 → 3 → 1) is omitted, and the classifier's
input width is computed from the resulting feature map size while building.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from l1inf_lightning._checks import is_int

__all__ = ["CFGS", "VGG", "vgg11", "vgg13", "vgg16", "vgg19"]

#: Layer lists of the standard VGG configurations (Simonyan & Zisserman 2015, configs A, B, D, E):
#: an integer is a 3×3 (by default) conv with that many output channels followed by ReLU, ``"M"`` a
#: 2×2 max-pool with stride 2.
CFGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg13": [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}

_POOL = "M"
_DEFAULT_KERNEL_SIZE = 3


def _check_positive_int(name: str, value: Any) -> None:
    if not is_int(value) or value < 1:
        raise ValueError(f"Expected `{name}` to be a positive integer, got {value!r}")


def _resolve_cfg(cfg: Sequence[int | str] | str) -> list[int | str]:
    """Turn a configuration name or an explicit layer list into a validated layer list."""
    if isinstance(cfg, str):
        if cfg not in CFGS:
            raise ValueError(
                f"Expected `cfg` to be one of {sorted(CFGS)} or a list of channel counts and {_POOL!r}, got {cfg!r}"
            )
        return list(CFGS[cfg])
    if not isinstance(cfg, Sequence):
        raise ValueError(
            f"Expected `cfg` to be one of {sorted(CFGS)} or a list of channel counts and {_POOL!r}, got {cfg!r}"
        )
    layers = list(cfg)
    for item in layers:
        if item != _POOL and not (is_int(item) and item >= 1):
            raise ValueError(
                f"Expected every entry of `cfg` to be a positive integer (conv output channels) or {_POOL!r} "
                f"(max-pool), got {item!r} in {layers!r}"
            )
    if not any(is_int(item) for item in layers):
        raise ValueError(f"Expected `cfg` to contain at least one conv (a positive integer), got {layers!r}")
    return layers


def _resolve_kernel_sizes(kernel_sizes: Sequence[int] | Mapping[int, int] | None, num_convs: int) -> list[int]:
    """Return one kernel size per conv, checking that each one can keep the spatial size."""
    sizes = [_DEFAULT_KERNEL_SIZE] * num_convs
    if kernel_sizes is None:
        return sizes
    if isinstance(kernel_sizes, Mapping):
        overrides = dict(kernel_sizes)
    elif isinstance(kernel_sizes, Sequence) and not isinstance(kernel_sizes, str):
        if len(kernel_sizes) > num_convs:
            raise ValueError(
                f"Expected `kernel_sizes` to have at most {num_convs} entries (one per conv), "
                f"got {len(kernel_sizes)}: {list(kernel_sizes)!r}"
            )
        overrides = dict(enumerate(kernel_sizes))
    else:
        raise ValueError(
            f"Expected `kernel_sizes` to be a list of sizes, a mapping from conv index to size, or None, "
            f"got {kernel_sizes!r}"
        )
    for index, size in overrides.items():
        if not is_int(index) or not 0 <= index < num_convs:
            raise ValueError(
                f"Expected the conv indices in `kernel_sizes` to lie in [0, {num_convs - 1}], got {index!r}"
            )
        # Symmetric padding k // 2 keeps the size only for odd k; an even k would grow it by one.
        if not is_int(size) or size < 1 or size % 2 == 0:
            raise ValueError(
                f"Expected `kernel_sizes` to hold positive odd integers (1, 3, 5, ...) so that 'same' padding "
                f"keeps the spatial size, got {size!r} for conv {index}"
            )
        sizes[index] = size
    return sizes


def _init_weights(module: nn.Module) -> None:
    """Initialise one module in place, as in torchvision's VGG (applied with ``Module.apply``)."""
    if isinstance(module, nn.Conv2d):
        nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, 0.01)
        nn.init.zeros_(module.bias)


class VGG(nn.Module):
    """VGG network: conv/ReLU blocks with max-pools, then a three-layer MLP classifier.

    Modules are registered in forward order, ``features`` then ``pre_logits`` then ``head``, so the
    output :class:`~torch.nn.Linear` ``head`` is the last affine layer in ``named_modules()`` order:
    the L1,∞ projection leaves exactly that layer unconstrained by default.

    Args:
        cfg: Name of a configuration in :data:`CFGS` or an explicit layer list: an integer is a conv
            with that many output channels (then ReLU, with batch norm in between if ``batch_norm``),
            ``"M"`` a 2×2 max-pool with stride 2. A pool that would take the feature map below 1×1 is
            omitted, so deep configurations run on small images (28×28 → 14 → 7 → 3 → 1).
        in_channels: Channels of the input images.
        num_classes: Number of outputs of the final linear layer.
        image_size: Height and width of the (square) input images; fixes the classifier's input width.
        batch_norm: Insert ``BatchNorm2d`` after every conv.
        kernel_sizes: Kernel sizes of the convs, which default to 3. A list sets the first ``len(list)``
            convs in order; a mapping sets conv ``index`` (0-based, counting convs only) to a size.
            Sizes must be odd: padding is ``k // 2``, so every conv keeps the spatial size.
        hidden_features: Width of the two hidden layers of the classifier.
        dropout: Dropout probability after each hidden layer of the classifier.

    Raises:
        ValueError: If an argument is out of range; the message names the argument.

    Example:
        >>> model = VGG([8, "M", 16, "M", 16, "M", 16, "M", 16, "M"], in_channels=1, image_size=28,
        ...             hidden_features=32)
        >>> model.feature_size, model.num_features
        (1, 16)
        >>> model(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        cfg: Sequence[int | str] | str = "vgg16",
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        batch_norm: bool = False,
        kernel_sizes: Sequence[int] | Mapping[int, int] | None = None,
        hidden_features: int = 512,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        layers_cfg = _resolve_cfg(cfg)
        _check_positive_int("in_channels", in_channels)
        _check_positive_int("num_classes", num_classes)
        _check_positive_int("image_size", image_size)
        _check_positive_int("hidden_features", hidden_features)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"Expected `dropout` to be a probability in [0, 1), got {dropout!r}")
        num_convs = sum(1 for item in layers_cfg if item != _POOL)
        sizes = iter(_resolve_kernel_sizes(kernel_sizes, num_convs))

        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for item in layers_cfg:
            if item == _POOL:
                if size // 2 < 1:  # the map is already 1×1: pooling it would leave nothing.
                    continue
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                size //= 2
                continue
            kernel_size = next(sizes)
            layers.append(nn.Conv2d(channels, int(item), kernel_size=kernel_size, padding=kernel_size // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(int(item)))
            layers.append(nn.ReLU(inplace=True))
            channels = int(item)

        self.cfg = layers_cfg
        self.num_classes = num_classes
        self.feature_size = size
        self.num_features = channels * size * size
        self.features = nn.Sequential(*layers)
        self.pre_logits = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(self.num_features, hidden_features),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden_features, hidden_features),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )
        # Registered last on purpose: the projection callback treats the last affine layer as the output.
        self.head = nn.Linear(hidden_features, num_classes)
        self.apply(_init_weights)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to the final feature map (N, channels, feature_size, feature_size)."""
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Map a feature map to logits (N, num_classes), or to the last hidden activations if ``pre_logits``."""
        x = self.pre_logits(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map images (N, C, H, W) to logits (N, num_classes)."""
        return self.forward_head(self.forward_features(x))


def _create_vgg(variant: str, batch_norm: bool = False, **kwargs: Any) -> VGG:
    return VGG(cfg=variant, batch_norm=batch_norm, **kwargs)


def vgg11(batch_norm: bool = False, **kwargs: Any) -> VGG:
    """VGG-11 (configuration A).

    Args:
        batch_norm: Insert ``BatchNorm2d`` after every conv.
        **kwargs: Further arguments of :class:`VGG` (not ``cfg``).
    """
    return _create_vgg("vgg11", batch_norm=batch_norm, **kwargs)


def vgg13(batch_norm: bool = False, **kwargs: Any) -> VGG:
    """VGG-13 (configuration B).

    Args:
        batch_norm: Insert ``BatchNorm2d`` after every conv.
        **kwargs: Further arguments of :class:`VGG` (not ``cfg``).
    """
    return _create_vgg("vgg13", batch_norm=batch_norm, **kwargs)


def vgg16(batch_norm: bool = False, **kwargs: Any) -> VGG:
    """VGG-16 (configuration D); ``vgg16(kernel_sizes=[21, 21])`` is the paper's CIFAR-10 network.

    Args:
        batch_norm: Insert ``BatchNorm2d`` after every conv.
        **kwargs: Further arguments of :class:`VGG` (not ``cfg``).

    Example:
        >>> model = vgg16(kernel_sizes=[21, 21])
        >>> model.features[0].weight.shape, model.features[2].weight.shape
        (torch.Size([64, 3, 21, 21]), torch.Size([64, 64, 21, 21]))
        >>> vgg16(in_channels=1, image_size=28).eval()(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """
    return _create_vgg("vgg16", batch_norm=batch_norm, **kwargs)


def vgg19(batch_norm: bool = False, **kwargs: Any) -> VGG:
    """VGG-19 (configuration E).

    Args:
        batch_norm: Insert ``BatchNorm2d`` after every conv.
        **kwargs: Further arguments of :class:`VGG` (not ``cfg``).
    """
    return _create_vgg("vgg19", batch_norm=batch_norm, **kwargs)
