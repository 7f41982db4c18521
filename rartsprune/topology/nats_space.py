"""NATS-Bench topology search space (NAS-Bench-201): 4-node cells with 6 mixed edges in a residual macro net.

Macro network: stem (3x3 conv + BN, ``C`` channels), three stages of ``N`` search cells with ``C``, ``2C``,
``4C`` channels separated by residual reduction blocks, then BN-ReLU, global pooling and a linear classifier.
All cells share one alpha tensor of shape ``(6, len(op_names))``; edge ``e`` follows the benchmark's edge
order ``1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2``.

Examples:
    >>> import torch
    >>> net = NatsSearchNetwork(C=4, N=1, num_classes=10)
    >>> net(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    >>> len(net.derive_arch().split("+"))
    3
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .genotype import NATS_EDGES, derive_nats_arch
from .ops import NATS_OPS, NATS_PRIMITIVES, MixedOp, ResNetBasicBlock, op_names_checked

__all__ = ["NatsSearchCell", "NatsSearchNetwork"]


class NatsSearchCell(nn.Module):
    """A NATS-Bench search cell: node ``i`` (1..3) sums the mixed edges from every earlier node."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        op_names: Sequence[str] = NATS_PRIMITIVES,
        *,
        affine: bool = False,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.edges = nn.ModuleList()
        for e, (_dst, src) in enumerate(NATS_EDGES):
            ci = c_in if src == 0 else c_out
            ops = {name: NATS_OPS[name](ci, c_out, 1, affine, track_running_stats) for name in op_names}
            self.edges.append(MixedOp(ops, arch_name="cell", edge_index=e))

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        nodes = [x]
        for dst in range(1, 4):
            acc = None
            for e, (d, src) in enumerate(NATS_EDGES):
                if d != dst:
                    continue
                out = self.edges[e](nodes[src], weights[e])
                acc = out if acc is None else acc + out
            nodes.append(acc)
        return nodes[-1]


class NatsSearchNetwork(nn.Module):
    """The NATS-Bench topology-space supernet used by DARTS-style searches.

    Args:
        C: channels of the first stage (benchmark: 16).
        N: search cells per stage (benchmark: 5).
        num_classes: classifier outputs.
        op_names: candidate ops (subset of `NATS_PRIMITIVES`, in that order by default).
        affine: BN affine parameters inside the cells (search default: False).
        track_running_stats: BN running statistics inside the cells.
        alpha_init_std: alpha starts as ``alpha_init_std * randn`` (DARTS: 1e-3).

    The alpha tensor is a registered parameter (``net.alpha``), so deep copies made with a memo that maps it
    to itself share it. ``arch_parameters()`` returns ``[alpha]``; ``weight_parameters()`` the rest.

    Examples:
        >>> net = NatsSearchNetwork(C=4, N=1)
        >>> [tuple(a.shape) for a in net.arch_parameters()]
        [(6, 5)]
    """

    def __init__(
        self,
        C: int = 16,
        N: int = 5,
        num_classes: int = 10,
        op_names: Sequence[str] = NATS_PRIMITIVES,
        *,
        affine: bool = False,
        track_running_stats: bool = True,
        alpha_init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        if C < 1 or N < 1 or num_classes < 1:
            raise ValueError(f"C, N and num_classes must be >= 1, got C={C}, N={N}, num_classes={num_classes}")
        self.op_names = op_names_checked(op_names, NATS_PRIMITIVES, "NATS")
        self.C, self.N, self.num_classes = C, N, num_classes
        self.stem = nn.Sequential(nn.Conv2d(3, C, 3, padding=1, bias=False), nn.BatchNorm2d(C))
        channels = [C] * N + [2 * C] + [2 * C] * N + [4 * C] + [4 * C] * N
        reductions = [False] * N + [True] + [False] * N + [True] + [False] * N
        self.cells = nn.ModuleList()
        c_prev = C
        for c, red in zip(channels, reductions):
            if red:
                self.cells.append(ResNetBasicBlock(c_prev, c, 2))
            else:
                self.cells.append(
                    NatsSearchCell(
                        c_prev, c, self.op_names, affine=affine, track_running_stats=track_running_stats
                    )
                )
            c_prev = c
        self.lastact = nn.Sequential(nn.BatchNorm2d(c_prev), nn.ReLU(inplace=True))
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self.alpha = nn.Parameter(alpha_init_std * torch.randn(len(NATS_EDGES), len(self.op_names)))

    # -- architecture parameters --------------------------------------------------------------------------
    def arch_parameters(self) -> list[nn.Parameter]:
        """The alpha tensors, ``[alpha]`` of shape ``(6, num_ops)``."""
        return [self.alpha]

    def named_arch_parameters(self) -> dict[str, nn.Parameter]:
        """``{"cell": alpha}``: the alpha tensors by the ``arch_name`` of the mixed edges they drive."""
        return {"cell": self.alpha}

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except alpha."""
        arch = {id(a) for a in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_weights(self) -> torch.Tensor:
        """``softmax(alpha)`` over the ops of each edge, shape ``(6, num_ops)``."""
        return F.softmax(self.alpha, dim=-1)

    def derive_arch(self, *, exclude_none: bool = False) -> str:
        """The benchmark arch string of the current alpha (argmax per edge; ``none`` allowed unless
        ``exclude_none``, see `rartsprune.topology.derive_nats_arch`)."""
        return derive_nats_arch(self.alpha.detach(), self.op_names, exclude_none=exclude_none)

    # -- forward ---------------------------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.arch_weights()
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h, weights) if isinstance(cell, NatsSearchCell) else cell(h)
        h = self.global_pool(self.lastact(h)).flatten(1)
        return self.classifier(h)
