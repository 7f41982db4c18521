"""Reference models used by the recipes and benchmarks.

Examples:
    >>> from rartsprune.app.models import mobilenet_v2_cifar, preresnet, preresnet_depths, vgg
    >>> preresnet(depth=20, num_classes=10).depth
    20
    >>> vgg(depth=11, width=0.5).width
    0.5
"""

from __future__ import annotations

from .mobilenet import CIFAR_MOBILENETV2_SETTING, mobilenet_v2_cifar
from .preresnet import PreActBottleneck, PreResNet, preresnet, preresnet_depths
from .vgg import VGG, VGG_CONFIGS, vgg

__all__ = ["CIFAR_MOBILENETV2_SETTING", "mobilenet_v2_cifar", "PreActBottleneck", "PreResNet", "preresnet", "preresnet_depths", "VGG", "VGG_CONFIGS", "vgg"]
