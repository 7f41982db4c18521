"""Pre-activation bottleneck ResNet for CIFAR, as used by Network Slimming (Liu et al., ICCV 2017).

Depth is ``9n + 2``: a 3x3 stem conv with 16 channels, three stages of ``n`` bottleneck blocks each
(bottleneck planes 16 / 32 / 64, expansion 4, so stage outputs 64 / 128 / 256 channels; stride 2 at the
start of stages 2 and 3), a final BatchNorm + ReLU, global average pooling and a linear classifier.
ResNet-164 (``n = 18``) on CIFAR-10 has 1.70M parameters.

A block computes ``x + conv3(relu(bn3(conv2(relu(bn2(conv1(relu(bn1(x)))))))))``; when the shape changes
the shortcut is a bare 1x1 conv (``downsample``), as in the paper's code. Only plain ``torch.nn`` modules
are used (no channel-selection layers): channel pruning goes through Torch-Pruning's dependency graph.
Activations are not in-place, so forward hooks that keep a normalisation layer's output see the value the
layer produced.

``bn=False`` builds the same network without normalisation: every BatchNorm becomes ``nn.Identity`` (the
module names stay, so the layout is unchanged) and every conv gets a bias. Identity was chosen over a
per-channel affine module because the network then consists of convs, ReLUs and one linear layer only,
which every pruning and FLOP-counting tool handles natively; per-channel scale is then carried by the conv
weights (and by rartsprune's channel scores, which attach to conv layers when no normalisation follows).
To keep such a deep un-normalised net trainable it is initialised the Fixup way (Zhang et al., 2019): the
last conv of every residual branch and the classifier start at zero, the other branch convs are He-init
scaled by ``L ** -0.25`` (``L`` residual branches, three convs per branch), biases start at zero. At
initialisation every block is the identity, so activations neither explode nor vanish with depth.

Examples:
    >>> import torch
    >>> from rartsprune.app.models import preresnet
    >>> model = preresnet(depth=164, num_classes=10)
    >>> sum(p.numel() for p in model.parameters())
    1703258
    >>> model(torch.randn(2, 3, 32, 32)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ._args import check_num_classes

__all__ = ["PreResNet", "PreActBottleneck", "preresnet", "preresnet_depths"]

#: Bottleneck planes of the three stages and the expansion of the last 1x1 conv.
STAGE_PLANES = (16, 32, 64)
EXPANSION = 4
STEM_CHANNELS = 16


def preresnet_depths(max_depth: int = 1001) -> list[int]:
    """All valid depths ``9n + 2`` (``n >= 1``) up to ``max_depth``.

    Examples:
        >>> preresnet_depths(60)
        [11, 20, 29, 38, 47, 56]
        >>> 164 in preresnet_depths()
        True
    """
    if isinstance(max_depth, bool) or not isinstance(max_depth, int):
        raise TypeError(f"max_depth must be an int, got {type(max_depth).__name__}")
    return list(range(11, max_depth + 1, 9))


def _blocks_per_stage(depth: int) -> int:
    if isinstance(depth, bool) or not isinstance(depth, int):
        raise TypeError(f"depth must be an int, got {type(depth).__name__}")
    if depth < 11 or (depth - 2) % 9 != 0:
        raise ValueError(
            f"invalid PreResNet depth {depth}: depth must be 9n+2 with n >= 1 blocks per stage "
            f"(e.g. 11, 20, 29, 56, 110, 164); see preresnet_depths()"
        )
    return (depth - 2) // 9


def _norm(channels: int, bn: bool) -> nn.Module:
    return nn.BatchNorm2d(channels) if bn else nn.Identity()


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck block: BN-ReLU-conv1x1, BN-ReLU-conv3x3, BN-ReLU-conv1x1, plus shortcut.

    Examples:
        >>> import torch
        >>> block = PreActBottleneck(64, 32, stride=2)
        >>> block(torch.randn(1, 64, 16, 16)).shape
        torch.Size([1, 128, 8, 8])
    """

    def __init__(self, in_channels: int, planes: int, stride: int = 1, *, bn: bool = True) -> None:
        super().__init__()
        out_channels = planes * EXPANSION
        bias = not bn
        self.bn1 = _norm(in_channels, bn)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_channels, planes, kernel_size=1, bias=bias)
        self.bn2 = _norm(planes, bn)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1, bias=bias)
        self.bn3 = _norm(planes, bn)
        self.relu3 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out_channels, kernel_size=1, bias=bias)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu1(self.bn1(x)))
        out = self.conv2(self.relu2(self.bn2(out)))
        out = self.conv3(self.relu3(self.bn3(out)))
        shortcut = x if self.downsample is None else self.downsample(x)
        return out + shortcut


class PreResNet(nn.Module):
    """Pre-activation bottleneck ResNet of depth ``9n + 2`` for 32x32 inputs (any size works).

    Attributes ``conv1``, ``layer1``..``layer3`` (``nn.Sequential`` of `PreActBottleneck`), ``bn``,
    ``relu``, ``avgpool``, ``fc`` mirror the Network Slimming code.

    Examples:
        >>> import torch
        >>> model = PreResNet(depth=20, num_classes=100)
        >>> model(torch.randn(2, 3, 32, 32)).shape
        torch.Size([2, 100])
    """

    def __init__(self, depth: int = 164, num_classes: int = 10, *, bn: bool = True) -> None:
        super().__init__()
        n = _blocks_per_stage(depth)
        check_num_classes(num_classes)
        if not isinstance(bn, bool):
            raise TypeError(f"bn must be a bool, got {type(bn).__name__}")
        self.depth = depth
        self.num_classes = num_classes
        self.has_bn = bn
        self.conv1 = nn.Conv2d(3, STEM_CHANNELS, kernel_size=3, padding=1, bias=not bn)
        in_channels = STEM_CHANNELS
        stages = []
        for i, planes in enumerate(STAGE_PLANES):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(PreActBottleneck(in_channels, planes, stride, bn=bn))
                in_channels = planes * EXPANSION
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = _norm(in_channels, bn)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_channels, num_classes)
        self._init_weights(num_branches=3 * n)

    def _init_weights(self, num_branches: int) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He init over fan-out, as in the Network Slimming code: N(0, sqrt(2 / (k*k*out))).
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                # Network Slimming initialises every BN scale to 0.5.
                nn.init.constant_(m.weight, 0.5)
                nn.init.zeros_(m.bias)
        if self.has_bn:
            return
        # Fixup: identity blocks at init, inner convs scaled by L^(-1/(2m-2)) with m = 3 convs per branch.
        scale = num_branches ** (-1.0 / (2 * 3 - 2))
        for block in self.blocks():
            with torch.no_grad():
                block.conv1.weight.mul_(scale)
                block.conv2.weight.mul_(scale)
            nn.init.zeros_(block.conv3.weight)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def blocks(self) -> list[PreActBottleneck]:
        """All bottleneck blocks in forward order."""
        return [b for stage in (self.layer1, self.layer2, self.layer3) for b in stage]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(x)
        out = self.layer3(self.layer2(self.layer1(out)))
        out = self.relu(self.bn(out))
        out = torch.flatten(self.avgpool(out), 1)
        return self.fc(out)

    def extra_repr(self) -> str:
        return f"depth={self.depth}, num_classes={self.num_classes}, bn={self.has_bn}"


def preresnet(depth: int = 164, num_classes: int = 10, bn: bool = True) -> PreResNet:
    """Build the Network Slimming pre-activation ResNet (``depth = 9n + 2``).

    Args:
        depth: total depth, ``9n + 2`` with ``n >= 1`` bottleneck blocks per stage (164 -> 18).
        num_classes: classifier outputs.
        bn: ``False`` replaces every BatchNorm by ``nn.Identity``, turns conv biases on and uses a Fixup
            initialisation (see the module docstring).

    Raises:
        ValueError: the depth is not ``9n + 2`` or ``num_classes`` is not positive.

    Examples:
        >>> model = preresnet(164)
        >>> round(sum(p.numel() for p in model.parameters()) / 1e6, 2)
        1.7
    """
    return PreResNet(depth=depth, num_classes=num_classes, bn=bn)
