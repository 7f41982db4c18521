"""ImageNet evaluation network of a DARTS genotype (DARTS's "mobile setting").

`DartsImageNetNetwork` is DARTS's ``NetworkImageNet``: two stride-2 stems (``stem0``: conv3x3 s2 to C/2,
BN, ReLU, conv3x3 s2 to C, BN; ``stem1``: ReLU, conv3x3 s2 to C, BN; 224 px -> 28 px), 14 cells of
`rartsprune.topology.network.DartsEvalCell` with ``C=48`` and reductions at 1/3 and 2/3 depth (the first cell
reduces its ``s0`` input with a factorized reduce, as the stems leave it at twice the resolution), the
`AuxiliaryHeadImageNet` after the 2/3-depth reduction cell, global average pooling (7x7 at 224 px) and a
linear classifier. `DartsImageNetTrainConfig` holds DARTS's ImageNet protocol: 250 epochs, batch 128,
SGD lr 0.1 decayed by 0.97 every epoch, momentum 0.9, weight decay 3e-5, label smoothing 0.1, auxiliary
weight 0.4, gradient clipping 5, no drop-path, no cutout. ``recipes/darts_train.py --imagenet`` drives it.

Measured sizes of DARTS-V2 at 224 px, 1000 classes (`rartsprune.flops.flops_report`, i.e. fvcore, which
counts one fused multiply-add as one unit, so these are MACs; batch 1, eval mode, so the auxiliary head
does not run):

* parameters without the auxiliary head (as DARTS reports them): 4,718,752, DARTS reports 4.7M (+0.4%);
  the auxiliary head adds 1,260,776 (769,000 of them in its 1000-way linear layer);
* MACs: 538,228,224 = 538.2M, DARTS reports 574M (-6.2%, outside 2%). Of these, 529.1M are convolutions,
  0.77M the classifier, 8.3M batch norms (fvcore counts 2 per element of an affine BN in eval mode) and
  0.04M the global pooling. fvcore counts nothing for max pooling (1.27M compares), ReLU (5.8M elements)
  and the node sums (1.2M additions); counting them too gives about 546M, still -4.9%. The gap is not in the architecture: DARTS never published how it counted, and
  independent counts of the same network are also below 574M (523M for convolutions and the classifier,
  544.6M with ``ptflops``; github.com/quark0/darts issue 46). The network satisfies the mobile setting's
  "< 600M multiply-adds" either way.

Examples:
    >>> import torch
    >>> from rartsprune.topology.genotype import DARTS_V2
    >>> net = DartsImageNetNetwork(DARTS_V2, C=8, layers=3, num_classes=5)
    >>> logits, aux = net.train().forward_with_aux(torch.zeros(2, 3, 224, 224))
    >>> logits.shape, aux.shape
    (torch.Size([2, 5]), torch.Size([2, 5]))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .genotype import DartsGenotype
from .network import AuxiliaryHeadCIFAR, DartsEvalNetwork, DartsTrainConfig

__all__ = [
    "AuxiliaryHeadImageNet",
    "DartsImageNetNetwork",
    "DartsImageNetTrainConfig",
    "IMAGENET_MIN_AUX_SIZE",
]

#: Smallest input side (px) for which the auxiliary head gets the 7x7 feature map it needs.
IMAGENET_MIN_AUX_SIZE = 224


class AuxiliaryHeadImageNet(AuxiliaryHeadCIFAR):
    """DARTS auxiliary classifier of the ImageNet network.

    ReLU, AvgPool 5 stride 2, conv1x1 to 128, BN, ReLU, conv2x2 to 768, ReLU, linear. Like DARTS it has no BN
    after the 2x2 conv (the DARTS code comments it out "for consistency with the experiments in the paper").
    DARTS's comment says "input size 14x14", but its network calls the head on the output of the 2/3-depth
    reduction cell, which is 7x7 at 224 px (7 -> pool 2x2 -> conv 1x1); this head needs at least 7x7.

    Examples:
        >>> import torch
        >>> AuxiliaryHeadImageNet(16, 10)(torch.zeros(2, 16, 7, 7)).shape
        torch.Size([2, 10])
    """

    pool_stride = 2
    bn_after_768 = False
    min_size, min_input = 7, f"{IMAGENET_MIN_AUX_SIZE} px"


class DartsImageNetNetwork(DartsEvalNetwork):
    """ImageNet evaluation network of a DARTS genotype (defaults: DARTS's mobile setting, 14 cells, C=48).

    Same interface as `DartsEvalNetwork`: ``forward(x)`` returns logits, ``forward_with_aux(x)`` returns
    ``(logits, aux_logits)`` (``aux_logits`` is ``None`` without auxiliary head or in eval mode), and
    ``drop_path_prob`` is read by the cells. Input sides must be multiples of 32 (three stride-2 stem
    convs and two reduction cells); the auxiliary head needs at least 224 px.

    Examples:
        >>> import torch
        >>> from rartsprune.topology.genotype import DARTS_V2
        >>> net = DartsImageNetNetwork(DARTS_V2, C=8, layers=3, num_classes=5, auxiliary=False).eval()
        >>> net(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 5])
    """

    def __init__(
        self,
        genotype: DartsGenotype,
        C: int = 48,
        layers: int = 14,
        num_classes: int = 1000,
        *,
        auxiliary: bool = True,
    ) -> None:
        nn.Module.__init__(self)
        self._check_args(genotype, C, layers, num_classes)
        if C < 2:
            raise ValueError(f"C must be >= 2 (stem0 starts with C // 2 channels), got {C}")
        self.stem0 = nn.Sequential(
            nn.Conv2d(3, C // 2, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C // 2),
            nn.ReLU(inplace=True),
            nn.Conv2d(C // 2, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        self.stem1 = nn.Sequential(
            nn.ReLU(inplace=True),
            nn.Conv2d(C, C, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(C),
        )
        # stem1 halves the resolution of stem0's output: the first cell reduces s0 (reduction_prev=True).
        # Global pooling: DARTS's AvgPool2d(7) on the 7x7 map of a 224 px input; the adaptive pooling of
        # _build_body is the same there and also serves the smaller inputs of quick tests.
        self._build_body(genotype, C, C, layers, num_classes, reduction_prev=True,
                         aux_head=AuxiliaryHeadImageNet if auxiliary else None)

    def _stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s0 = self.stem0(x)
        return s0, self.stem1(s0)


@dataclass
class DartsImageNetTrainConfig(DartsTrainConfig):
    """Hyper-parameters of DARTS's ImageNet (mobile setting) protocol (defaults = the paper's code).

    ``lr`` is multiplied by ``lr_gamma`` after every epoch (``StepLR(step_size=1, gamma=0.97)``); ``lr_min``
    is not used. ``drop_path_prob`` and ``cutout`` are 0 as in DARTS's ``train_imagenet.py``.

    Examples:
        >>> c = DartsImageNetTrainConfig()
        >>> c.epochs, c.batch_size, c.lr, c.lr_gamma, c.label_smoothing, c.C, c.layers
        (250, 128, 0.1, 0.97, 0.1, 48, 14)
    """

    epochs: int = 250
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 3e-5
    C: int = 48
    layers: int = 14
    drop_path_prob: float = 0.0
    cutout: int = 0
    label_smoothing: float = 0.1
    lr_gamma: float = 0.97
    image_size: int = 224
