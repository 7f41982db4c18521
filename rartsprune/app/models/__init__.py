"""Reference models used by the recipes and benchmarks.

Examples:
    >>> from rartsprune.app.models import preresnet, preresnet_depths
    >>> preresnet(depth=20, num_classes=10).depth
    20
"""

from __future__ import annotations

from .preresnet import PreActBottleneck, PreResNet, preresnet, preresnet_depths

__all__ = ["PreActBottleneck", "PreResNet", "preresnet", "preresnet_depths"]
