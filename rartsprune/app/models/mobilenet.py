"""torchvision's MobileNetV2 set up for CIFAR (32x32 inputs): the third, depthwise family of the width benchmarks.

The network is torchvision's `torchvision.models.MobileNetV2` itself, built with a CIFAR stride plan
(`CIFAR_MOBILENETV2_SETTING`): ImageNet's plan downsamples 32x by the last stage, which leaves a 1x1 map of a
32x32 image; here the second stage keeps its resolution (stride 1 instead of 2), so the network downsamples 16x
(the stem's stride 2 and three stride-2 stages) and ends on a 2x2 map. Everything else is torchvision's: inverted
residual blocks (1x1 expansion, 3x3 depthwise, 1x1 projection, BatchNorm after each), ReLU6, dropout 0.2 before
the classifier, its initialisation. Unlike PreResNet and VGG, most of its prunable channels are the expanded
channels inside a block, each feeding one depthwise filter; the block outputs are tied across residual additions.

``mobilenet_v2_cifar(width=0.5)``: 7.5M MACs and 0.70M parameters on a 32x32 image.

Examples:
    >>> import torch
    >>> from rartsprune.app.models import mobilenet_v2_cifar
    >>> model = mobilenet_v2_cifar(num_classes=10, width=0.5)
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> model.features[-1][0].out_channels  # torchvision keeps the last layer at 1280 below width 1
    1280
"""

from __future__ import annotations

from torchvision.models import MobileNetV2

from ._args import check_num_classes, check_width

__all__ = ["CIFAR_MOBILENETV2_SETTING", "mobilenet_v2_cifar"]

#: torchvision's inverted-residual plan ``[expansion t, channels c, blocks n, first stride s]`` with the second
#: stage at stride 1 (ImageNet: 2), for 32x32 inputs.
CIFAR_MOBILENETV2_SETTING: tuple[tuple[int, int, int, int], ...] = (
    (1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def mobilenet_v2_cifar(num_classes: int = 10, width: float = 1.0) -> MobileNetV2:
    """torchvision's MobileNetV2 with the CIFAR stride plan (see the module docstring).

    Args:
        num_classes: classifier outputs.
        width: torchvision's ``width_mult`` (channels rounded to multiples of 8 by torchvision).

    Raises:
        ValueError: a non-positive ``num_classes`` or ``width``.

    Examples:
        >>> sum(p.numel() for p in mobilenet_v2_cifar(width=0.5).parameters())
        700490
    """
    return MobileNetV2(num_classes=check_num_classes(num_classes), width_mult=check_width(width),
                       inverted_residual_setting=[list(row) for row in CIFAR_MOBILENETV2_SETTING])
