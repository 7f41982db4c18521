"""The evaluation networks of a DARTS genotype and the DARTS evaluation protocol's settings.

`DartsEvalNetwork` is the CIFAR evaluation network built from a `DartsGenotype` (defaults:
20 cells, ``C=36``, auxiliary head after the 2/3-depth reduction, drop-path on non-identity ops).
`DartsTrainConfig` holds the protocol's hyper-parameters (600 epochs, batch 96, SGD 0.025 cosine,
momentum 0.9, wd 3e-4, auxiliary weight 0.4, drop-path 0.2 ramped linearly, cutout 16, grad clip 5);
the loop bodies that train it are the app's (`rartsprune.app.topology.train`).

Examples:
    >>> import torch
    >>> from rartsprune.topology.genotype import DARTS_V2
    >>> net = DartsEvalNetwork(DARTS_V2, C=4, layers=3, auxiliary=True)
    >>> logits, aux = net.forward_with_aux(torch.zeros(2, 3, 32, 32))
    >>> logits.shape, aux.shape
    (torch.Size([2, 10]), torch.Size([2, 10]))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from .darts_space import reduction_layers
from .genotype import DartsGenotype
from .ops import DARTS_OPS, FactorizedReduce, Identity, ReLUConvBN, drop_path

__all__ = ["DartsEvalCell", "AuxiliaryHeadCIFAR", "DartsEvalNetwork", "DartsTrainConfig"]


class DartsEvalCell(nn.Module):
    """A discrete DARTS cell: two ops per node, chosen by the genotype (BN with affine parameters)."""

    def __init__(
        self, genotype: DartsGenotype, c_pp: int, c_p: int, c: int, reduction: bool, reduction_prev: bool
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.preprocess0: nn.Module = (
            FactorizedReduce(c_pp, c, 2) if reduction_prev else ReLUConvBN(c_pp, c, 1, 1, 0)
        )
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0)
        gene = genotype.reduce if reduction else genotype.normal
        concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.steps = len(gene) // 2
        self.concat = tuple(concat)
        self.multiplier = len(self.concat)
        self.indices = tuple(src for _, src in gene)
        self.ops = nn.ModuleList()
        for op_name, src in gene:
            stride = 2 if reduction and src < 2 else 1
            self.ops.append(DARTS_OPS[op_name](c, stride, True, True))

    def forward(
        self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float, shard: tuple[int, int] | None = None
    ) -> torch.Tensor:
        """The cell's output; ``shard``: the batch is that part of a global batch (see `drop_path`)."""
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        for i in range(self.steps):
            hs = []
            for k in (2 * i, 2 * i + 1):
                op = self.ops[k]
                h = op(states[self.indices[k]])
                if self.training and drop_prob > 0.0 and not isinstance(op, Identity):
                    h = drop_path(h, drop_prob, shard)
                hs.append(h)
            states.append(hs[0] + hs[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHeadCIFAR(nn.Module):
    """DARTS auxiliary classifier for 8x8 feature maps.

    ReLU, AvgPool 5 (stride ``pool_stride``), conv1x1 to 128, BN, ReLU, conv2x2 to 768, BN (if
    ``bn_after_768``), ReLU, global pool, linear; subclasses change the class attributes (see
    `rartsprune.topology.imagenet.AuxiliaryHeadImageNet`).
    """

    pool_stride = 3
    bn_after_768 = True
    #: smallest feature map it accepts, and the input size that gives it
    min_size, min_input = 8, "32 px"

    def __init__(self, c: int, num_classes: int) -> None:
        super().__init__()
        layers: list[nn.Module] = [
            nn.ReLU(inplace=True),
            nn.AvgPool2d(5, stride=self.pool_stride, padding=0, count_include_pad=False),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 768, 2, bias=False),
        ]
        if self.bn_after_768:
            layers.append(nn.BatchNorm2d(768))
        self.features = nn.Sequential(*layers, nn.ReLU(inplace=True))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < self.min_size:
            raise ValueError(
                f"the auxiliary head needs feature maps of at least {self.min_size}x{self.min_size} "
                f"({self.min_input} inputs), got {tuple(x.shape[-2:])}; build the network with auxiliary=False "
                "for smaller images"
            )
        return self.classifier(self.pool(self.features(x)).flatten(1))


class DartsEvalNetwork(nn.Module):
    """CIFAR evaluation network of a DARTS genotype.

    ``forward(x)`` returns logits; ``forward_with_aux(x)`` returns ``(logits, aux_logits)`` (``aux_logits``
    is ``None`` without auxiliary head or in eval mode). Set ``drop_path_prob`` before each epoch (and, when
    each process trains on its part of every global batch, ``drop_path_shard = (rank, world)``).
    """

    def __init__(
        self,
        genotype: DartsGenotype,
        C: int = 36,
        layers: int = 20,
        num_classes: int = 10,
        *,
        auxiliary: bool = True,
        stem_multiplier: int = 3,
    ) -> None:
        super().__init__()
        self._check_args(genotype, C, layers, num_classes)
        c_stem = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, c_stem, 3, padding=1, bias=False), nn.BatchNorm2d(c_stem))
        self._build_body(genotype, c_stem, C, layers, num_classes, reduction_prev=False,
                         aux_head=AuxiliaryHeadCIFAR if auxiliary else None)

    @staticmethod
    def _check_args(genotype: DartsGenotype, C: int, layers: int, num_classes: int) -> None:
        if not isinstance(genotype, DartsGenotype):
            raise TypeError(f"genotype must be a DartsGenotype, got {type(genotype).__name__}")
        if C < 1 or layers < 1 or num_classes < 1:
            raise ValueError(f"C, layers and num_classes must be >= 1, got {C}, {layers}, {num_classes}")

    def _build_body(
        self,
        genotype: DartsGenotype,
        c_stem: int,
        C: int,
        layers: int,
        num_classes: int,
        *,
        reduction_prev: bool,
        aux_head: type[nn.Module] | None,
    ) -> None:
        """Everything after the stems (which output ``c_stem`` channels): cells with reductions at 1/3 and
        2/3 depth, an ``aux_head(channels, num_classes)`` after the 2/3-depth one (``aux_index``; none if
        ``aux_head`` is None), global pooling and the classifier. Also sets ``genotype`` and ``drop_path_prob``.
        """
        self.genotype = genotype
        self.drop_path_prob = 0.0
        #: ``(rank, world)`` when the batches are ranks' parts of global batches (drop-path masks drawn for
        #: the global batch, `drop_path`); ``None`` in one process
        self.drop_path_shard: tuple[int, int] | None = None
        c_pp, c_p, c_curr = c_stem, c_stem, C
        reductions = reduction_layers(layers)
        self.aux_index = max(reductions)
        self.cells = nn.ModuleList()
        c_aux = None
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = DartsEvalCell(genotype, c_pp, c_p, c_curr, reduction, reduction_prev)
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, cell.multiplier * c_curr
            if i == self.aux_index:
                c_aux = c_p
        self.auxiliary_head = aux_head(c_aux, num_classes) if aux_head is not None and c_aux else None
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)

    def _stems(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two inputs ``(s0, s1)`` of the first cell."""
        s = self.stem(x)
        return s, s

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        aux = None
        s0, s1 = self._stems(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob, self.drop_path_shard)
            if i == self.aux_index and self.auxiliary_head is not None and self.training:
                aux = self.auxiliary_head(s1)
        return self.classifier(self.global_pool(s1).flatten(1)), aux

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x)[0]


@dataclass
class DartsTrainConfig:
    """Hyper-parameters of the DARTS CIFAR-10 evaluation protocol (defaults = the paper's)."""

    epochs: int = 600
    batch_size: int = 96
    lr: float = 0.025
    lr_min: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-4
    C: int = 36
    layers: int = 20
    auxiliary: bool = True
    auxiliary_weight: float = 0.4
    drop_path_prob: float = 0.2
    cutout: int = 16
    grad_clip: float = 5.0

    def to_dict(self) -> dict[str, Any]:
        """Plain dict."""
        return asdict(self)
