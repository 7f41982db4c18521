"""Reference models used by the recipes and benchmarks.

Examples:
    >>> from rartsprune.app.models import preresnet, preresnet_depths, vgg
    >>> preresnet(depth=20, num_classes=10).depth
    20
    >>> vgg(depth=11, width=0.5).width
    0.5
"""

from __future__ import annotations

from .preresnet import PreActBottleneck, PreResNet, preresnet, preresnet_depths
from .vgg import VGG, VGG_CONFIGS, vgg

__all__ = ["PreActBottleneck", "PreResNet", "preresnet", "preresnet_depths", "VGG", "VGG_CONFIGS", "vgg"]
