"""A VGG for CIFAR (32x32 inputs) with BatchNorm, as in Network Slimming's VGG experiments, at a chosen width.

A plain chain: ``conv3x3-BN-ReLU`` layers with 2x2 max pooling between the stages, then global average
pooling and one linear classifier (Network Slimming's CIFAR VGG pools 2x2 at the end before its classifier;
pooling globally lets any input size work). Unlike a ResNet, no two layers share their output channels: every
conv can be pruned on its own, so this is the second, structurally different model of the width benchmarks.

``width`` scales every layer's channels (rounded, at least 1): ``vgg(11, width=0.5)`` is VGG-11 with 32 to 256
channels, 38.8M MACs on a 32x32 image, about as many as PreResNet-20 (34.5M).

Examples:
    >>> import torch
    >>> from rartsprune.app.models import vgg
    >>> model = vgg(depth=11, num_classes=10, width=0.5)
    >>> [m.out_channels for m in model.features if isinstance(m, torch.nn.Conv2d)]
    [32, 64, 128, 128, 256, 256, 256, 256]
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._args import check_num_classes, check_width

__all__ = ["VGG", "vgg", "VGG_CONFIGS"]

#: Channels per conv layer, ``"M"`` a 2x2 max pool (Simonyan & Zisserman's configurations A, B, D, E; the
#: CIFAR versions drop the last pool, as Network Slimming's code does).
VGG_CONFIGS: dict[int, tuple[int | str, ...]] = {
    11: (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    13: (64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512),
    16: (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512),
    19: (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512),
}


class VGG(nn.Module):
    """VGG-``depth`` for CIFAR: ``features`` (an ``nn.Sequential`` of conv-BN-ReLU and max pools), ``avgpool``,
    ``classifier`` (one ``nn.Linear``).

    Examples:
        >>> import torch
        >>> model = VGG(depth=13, num_classes=100, width=0.25)
        >>> model(torch.randn(1, 3, 32, 32)).shape
        torch.Size([1, 100])
    """

    def __init__(self, depth: int = 11, num_classes: int = 10, *, width: float = 1.0) -> None:
        super().__init__()
        if isinstance(depth, bool) or not isinstance(depth, int) or depth not in VGG_CONFIGS:
            raise ValueError(f"invalid VGG depth {depth!r}: choose one of {sorted(VGG_CONFIGS)}")
        self.depth = depth
        self.num_classes = check_num_classes(num_classes)
        self.width = check_width(width)
        layers: list[nn.Module] = []
        in_channels = 3
        for item in VGG_CONFIGS[depth]:
            if item == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out_channels = max(1, round(int(item) * width))
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
                       nn.BatchNorm2d(out_channels), nn.ReLU()]
            in_channels = out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(in_channels, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)  # Network Slimming's initial BN scale
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    def extra_repr(self) -> str:
        return f"depth={self.depth}, num_classes={self.num_classes}, width={self.width:g}"


def vgg(depth: int = 11, num_classes: int = 10, width: float = 1.0) -> VGG:
    """Build a CIFAR VGG (see the module docstring).

    Args:
        depth: 11, 13, 16 or 19: the VGG paper's names, which count its three fully connected layers (here
            ``depth - 3`` convs and one linear classifier).
        num_classes: classifier outputs.
        width: multiplier of every layer's channels (rounded, at least 1).

    Raises:
        ValueError: an unknown depth, a non-positive ``num_classes`` or ``width``.

    Examples:
        >>> sum(p.numel() for p in vgg(11, width=0.5).parameters())
        2310186
    """
    return VGG(depth=depth, num_classes=num_classes, width=width)
