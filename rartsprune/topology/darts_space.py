"""DARTS CNN search space: cells of 4 intermediate nodes and 14 mixed edges, normal and reduction cells.

Search network (DARTS defaults): stem of ``3C`` channels, ``layers`` cells with reductions at 1/3 and 2/3 of
the depth (channels doubled there), each cell's output = concatenation of its 4 intermediate nodes. Two alpha
tensors of shape ``(14, 8)`` -- ``alpha_normal`` shared by all normal cells and ``alpha_reduce`` shared by
the reduction cells. BN inside the ops has no affine parameters.

Examples:
    >>> import torch
    >>> net = DartsSearchNetwork(C=4, layers=3, num_classes=10)
    >>> net(torch.zeros(2, 3, 16, 16)).shape
    torch.Size([2, 10])
    >>> [tuple(a.shape) for a in net.arch_parameters()]
    [(14, 8), (14, 8)]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .genotype import DartsGenotype, darts_edge_count, derive_darts_genotype
from .ops import DARTS_OPS, DARTS_PRIMITIVES, FactorizedReduce, MixedOp, ReLUConvBN, op_names_checked

__all__ = ["DartsSearchCell", "DartsSearchNetwork", "reduction_layers"]


def reduction_layers(layers: int) -> tuple[int, ...]:
    """Indices of the reduction cells of a ``layers``-cell DARTS network (1/3 and 2/3 of the depth).

    Examples:
        >>> reduction_layers(8), reduction_layers(20)
        ((2, 5), (6, 13))
    """
    if layers < 1:
        raise ValueError(f"layers must be >= 1, got {layers}")
    return tuple(sorted({layers // 3, 2 * layers // 3}))


class DartsSearchCell(nn.Module):
    """A DARTS search cell with mixed edges; inputs are the two previous cells' outputs."""

    def __init__(
        self,
        steps: int,
        multiplier: int,
        c_pp: int,
        c_p: int,
        c: int,
        reduction: bool,
        reduction_prev: bool,
        op_names: Sequence[str] = DARTS_PRIMITIVES,
        *,
        affine: bool = False,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.reduction = reduction
        self.steps, self.multiplier = steps, multiplier
        if reduction_prev:
            self.preprocess0: nn.Module = FactorizedReduce(c_pp, c, 2, affine, track_running_stats)
        else:
            self.preprocess0 = ReLUConvBN(c_pp, c, 1, 1, 0, 1, affine, track_running_stats)
        self.preprocess1 = ReLUConvBN(c_p, c, 1, 1, 0, 1, affine, track_running_stats)
        arch_name = "reduce" if reduction else "normal"
        self.edges = nn.ModuleList()
        e = 0
        for i in range(steps):
            for j in range(2 + i):
                stride = 2 if reduction and j < 2 else 1
                ops: dict[str, nn.Module] = {}
                for name in op_names:
                    op = DARTS_OPS[name](c, stride, affine, track_running_stats)
                    if "pool" in name:
                        op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False, track_running_stats=track_running_stats))
                    ops[name] = op
                self.edges.append(MixedOp(ops, arch_name=arch_name, edge_index=e))
                e += 1

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.preprocess0(s0), self.preprocess1(s1)]
        offset = 0
        for _ in range(self.steps):
            s = None
            for j, h in enumerate(states):
                out = self.edges[offset + j](h, weights[offset + j])
                s = out if s is None else s + out
            offset += len(states)
            states.append(s)
        return torch.cat(states[-self.multiplier :], dim=1)


class DartsSearchNetwork(nn.Module):
    """The DARTS CIFAR search supernet (defaults: ``C=16``, 8 cells, 4 steps, multiplier 4, stem x3).

    ``alpha_normal`` and ``alpha_reduce`` are registered parameters (``arch_parameters()``); all other
    parameters are weights (``weight_parameters()``). ``genotype()`` derives the discrete cell pair.

    Examples:
        >>> net = DartsSearchNetwork(C=4, layers=3)
        >>> net.genotype().steps
        4
    """

    def __init__(
        self,
        C: int = 16,
        layers: int = 8,
        num_classes: int = 10,
        op_names: Sequence[str] = DARTS_PRIMITIVES,
        *,
        steps: int = 4,
        multiplier: int = 4,
        stem_multiplier: int = 3,
        affine: bool = False,
        track_running_stats: bool = True,
        alpha_init_std: float = 1e-3,
    ) -> None:
        super().__init__()
        if C < 1 or layers < 1 or num_classes < 1 or steps < 1:
            raise ValueError(
                f"C, layers, num_classes and steps must be >= 1, got C={C}, layers={layers}, "
                f"num_classes={num_classes}, steps={steps}"
            )
        if not 1 <= multiplier <= steps:
            raise ValueError(f"multiplier must be in [1, steps={steps}], got {multiplier}")
        self.op_names = op_names_checked(op_names, DARTS_PRIMITIVES, "DARTS")
        self.C, self.layers, self.num_classes = C, layers, num_classes
        self.steps, self.multiplier = steps, multiplier
        c_curr = stem_multiplier * C
        self.stem = nn.Sequential(nn.Conv2d(3, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_pp, c_p, c_curr = c_curr, c_curr, C
        reductions = reduction_layers(layers)
        self.cells = nn.ModuleList()
        reduction_prev = False
        for i in range(layers):
            reduction = i in reductions
            if reduction:
                c_curr *= 2
            cell = DartsSearchCell(
                steps,
                multiplier,
                c_pp,
                c_p,
                c_curr,
                reduction,
                reduction_prev,
                self.op_names,
                affine=affine,
                track_running_stats=track_running_stats,
            )
            self.cells.append(cell)
            reduction_prev = reduction
            c_pp, c_p = c_p, multiplier * c_curr
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_p, num_classes)
        n_edges = darts_edge_count(steps)
        self.alpha_normal = nn.Parameter(alpha_init_std * torch.randn(n_edges, len(self.op_names)))
        self.alpha_reduce = nn.Parameter(alpha_init_std * torch.randn(n_edges, len(self.op_names)))

    def arch_parameters(self) -> list[nn.Parameter]:
        """``[alpha_normal, alpha_reduce]``."""
        return [self.alpha_normal, self.alpha_reduce]

    def named_arch_parameters(self) -> dict[str, nn.Parameter]:
        """``{"normal": alpha_normal, "reduce": alpha_reduce}`` (keys = ``arch_name`` of the mixed edges)."""
        return {"normal": self.alpha_normal, "reduce": self.alpha_reduce}

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter except the alphas."""
        arch = {id(a) for a in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def genotype(self) -> DartsGenotype:
        """The DARTS discretisation of the current alphas."""
        return derive_darts_genotype(
            self.alpha_normal, self.alpha_reduce, self.op_names, steps=self.steps, multiplier=self.multiplier
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w_normal = F.softmax(self.alpha_normal, dim=-1)
        w_reduce = F.softmax(self.alpha_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, w_reduce if cell.reduction else w_normal)
        return self.classifier(self.global_pool(s1).flatten(1))
