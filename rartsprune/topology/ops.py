"""Candidate operations of the DARTS CNN and NATS-Bench topology search spaces.

Every op maps ``(N, C_in, H, W)`` to ``(N, C_out, H // stride, W // stride)`` (rounded up). Ops carry batch
norms without affine parameters during the search (``affine=False``), as in DARTS and NATS-Bench.

Examples:
    >>> import torch
    >>> op = DARTS_OPS["sep_conv_3x3"](8, 1, False, True)
    >>> op(torch.zeros(2, 8, 16, 16)).shape
    torch.Size([2, 8, 16, 16])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

__all__ = [
    "DARTS_PRIMITIVES",
    "NATS_PRIMITIVES",
    "DARTS_OPS",
    "NATS_OPS",
    "ReLUConvBN",
    "SepConv",
    "DilConv",
    "Identity",
    "Zero",
    "FactorizedReduce",
    "Pooling",
    "ResNetBasicBlock",
    "MixedOp",
    "drop_path",
]

DARTS_PRIMITIVES: tuple[str, ...] = (
    "none",
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "dil_conv_3x3",
    "dil_conv_5x5",
)
"""The eight DARTS primitives, in the order of the original code (index = column of alpha)."""

NATS_PRIMITIVES: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
"""The five NATS-Bench topology-space ops, in the benchmark's order (index = column of alpha)."""


def _bn(channels: int, affine: bool, track_running_stats: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=affine, track_running_stats=track_running_stats)


class ReLUConvBN(nn.Sequential):
    """ReLU -> Conv2d (no bias) -> BatchNorm2d."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int = 1,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, kernel_size, stride, padding, dilation=dilation, bias=False),
            _bn(c_out, affine, track_running_stats),
        )


class DilConv(nn.Sequential):
    """ReLU -> depthwise (dilated) conv -> pointwise conv -> BN (DARTS ``dil_conv``)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        dilation: int,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, kernel_size, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            _bn(c_out, affine, track_running_stats),
        )


class SepConv(nn.Sequential):
    """Two stacked ``DilConv`` blocks with dilation 1, the first one strided (DARTS ``sep_conv``)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel_size: int,
        stride: int,
        padding: int,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__(
            DilConv(c_in, c_in, kernel_size, stride, padding, 1, affine, track_running_stats),
            DilConv(c_in, c_out, kernel_size, 1, padding, 1, affine, track_running_stats),
        )


class Identity(nn.Module):
    """Identity op (``skip_connect`` with stride 1). Drop-path is never applied to it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class Zero(nn.Module):
    """The ``none`` op: zeros of the output shape (kept so that its alpha has a well-defined meaning)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.c_in, self.c_out, self.stride = c_in, c_out, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.c_out == self.c_in:
            return x.mul(0.0)
        shape = (x.shape[0], self.c_out, x.shape[2], x.shape[3])
        return x.new_zeros(shape)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset 1x1 stride-2 convs whose outputs are concatenated, then BN.

    Also used with stride 1 as a 1x1 ReLU-Conv-BN channel adapter (NATS-Bench convention).
    """

    def __init__(
        self, c_in: int, c_out: int, stride: int = 2, affine: bool = True, track_running_stats: bool = True
    ) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"FactorizedReduce supports stride 1 or 2, got {stride}")
        self.stride = stride
        self.relu = nn.ReLU(inplace=False)
        if stride == 2:
            half = c_out // 2
            self.convs = nn.ModuleList(
                [nn.Conv2d(c_in, half, 1, 2, bias=False), nn.Conv2d(c_in, c_out - half, 1, 2, bias=False)]
            )
            self.pad = nn.ConstantPad2d((0, 1, 0, 1), 0.0)
        else:
            self.convs = nn.ModuleList([nn.Conv2d(c_in, c_out, 1, 1, bias=False)])
        self.bn = _bn(c_out, affine, track_running_stats)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        if self.stride == 2:
            shifted = self.pad(x)[:, :, 1:, 1:]
            out = torch.cat([self.convs[0](x), self.convs[1](shifted)], dim=1)
        else:
            out = self.convs[0](x)
        return self.bn(out)


class Pooling(nn.Module):
    """3x3 average / max pooling (padding 1); a 1x1 ReLU-Conv-BN first when the channel count changes."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        stride: int,
        mode: str,
        affine: bool = True,
        track_running_stats: bool = True,
    ) -> None:
        super().__init__()
        self.preprocess = (
            None if c_in == c_out else ReLUConvBN(c_in, c_out, 1, 1, 0, 1, affine, track_running_stats)
        )
        if mode == "avg":
            self.pool: nn.Module = nn.AvgPool2d(3, stride=stride, padding=1, count_include_pad=False)
        elif mode == "max":
            self.pool = nn.MaxPool2d(3, stride=stride, padding=1)
        else:
            raise ValueError(f"pooling mode must be 'avg' or 'max', got {mode!r}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.preprocess is not None:
            x = self.preprocess(x)
        return self.pool(x)


class ResNetBasicBlock(nn.Module):
    """Residual reduction block of the NATS-Bench macro network (two 3x3 ReLU-Conv-BN + pooled shortcut)."""

    def __init__(self, c_in: int, c_out: int, stride: int, affine: bool = True) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"ResNetBasicBlock supports stride 1 or 2, got {stride}")
        self.conv_a = ReLUConvBN(c_in, c_out, 3, stride, 1, 1, affine)
        self.conv_b = ReLUConvBN(c_out, c_out, 3, 1, 1, 1, affine)
        if stride == 2:
            self.downsample: nn.Module | None = nn.Sequential(
                nn.AvgPool2d(2, 2, 0, ceil_mode=True), nn.Conv2d(c_in, c_out, 1, 1, 0, bias=False)
            )
        elif c_in != c_out:
            self.downsample = ReLUConvBN(c_in, c_out, 1, 1, 0, 1, affine)
        else:
            self.downsample = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_b(self.conv_a(x))
        residual = x if self.downsample is None else self.downsample(x)
        return residual + out


# ---- op tables -----------------------------------------------------------------------------------------

DartsOpFactory = Callable[[int, int, bool, bool], nn.Module]
"""``factory(C, stride, affine, track_running_stats) -> module`` (channels in == channels out)."""

DARTS_OPS: dict[str, DartsOpFactory] = {
    "none": lambda c, s, a, t: Zero(c, c, s),
    "avg_pool_3x3": lambda c, s, a, t: Pooling(c, c, s, "avg", a, t),
    "max_pool_3x3": lambda c, s, a, t: Pooling(c, c, s, "max", a, t),
    "skip_connect": lambda c, s, a, t: Identity() if s == 1 else FactorizedReduce(c, c, 2, a, t),
    "sep_conv_3x3": lambda c, s, a, t: SepConv(c, c, 3, s, 1, a, t),
    "sep_conv_5x5": lambda c, s, a, t: SepConv(c, c, 5, s, 2, a, t),
    "dil_conv_3x3": lambda c, s, a, t: DilConv(c, c, 3, s, 2, 2, a, t),
    "dil_conv_5x5": lambda c, s, a, t: DilConv(c, c, 5, s, 4, 2, a, t),
}
"""DARTS op factories, keyed by primitive name."""

NatsOpFactory = Callable[[int, int, int, bool, bool], nn.Module]
"""``factory(C_in, C_out, stride, affine, track_running_stats) -> module``."""


def _nats_skip(ci: int, co: int, s: int, a: bool, t: bool) -> nn.Module:
    if s == 1 and ci == co:
        return Identity()
    return FactorizedReduce(ci, co, s, a, t)


NATS_OPS: dict[str, NatsOpFactory] = {
    "none": lambda ci, co, s, a, t: Zero(ci, co, s),
    "skip_connect": _nats_skip,
    "nor_conv_1x1": lambda ci, co, s, a, t: ReLUConvBN(ci, co, 1, s, 0, 1, a, t),
    "nor_conv_3x3": lambda ci, co, s, a, t: ReLUConvBN(ci, co, 3, s, 1, 1, a, t),
    "avg_pool_3x3": lambda ci, co, s, a, t: Pooling(ci, co, s, "avg", a, t),
}
"""NATS-Bench op factories, keyed by op name (conv = ReLU-Conv-BN)."""


class MixedOp(nn.Module):
    """A mixed edge: ``sum_k w_k * op_k(x)`` over the candidate ops, with weights given at call time.

    The ``none`` candidate contributes exactly zero to the output and to every gradient, so it is skipped
    in the forward pass (same result, less work). ``edge_index`` and ``arch_name`` say which row of which
    alpha tensor drives the edge (used by latency tables and reports).

    Examples:
        >>> import torch
        >>> ops = {name: DARTS_OPS[name](4, 1, False, True) for name in ("none", "skip_connect")}
        >>> m = MixedOp(ops, arch_name="normal", edge_index=0)
        >>> x = torch.ones(1, 4, 2, 2)
        >>> bool(torch.allclose(m(x, torch.tensor([0.25, 0.75])), 0.75 * x))
        True
    """

    def __init__(self, candidates: dict[str, nn.Module], *, arch_name: str, edge_index: int) -> None:
        super().__init__()
        if not candidates:
            raise ValueError("MixedOp needs at least one candidate op")
        self.op_names: tuple[str, ...] = tuple(candidates)
        self.ops = nn.ModuleList(candidates.values())
        self.arch_name = arch_name
        self.edge_index = edge_index
        self._live = [i for i, name in enumerate(self.op_names) if name != "none"]
        self._zero_index = [i for i, name in enumerate(self.op_names) if name == "none"]

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        if weights.shape != (len(self.ops),):
            raise ValueError(
                f"MixedOp {self.arch_name}[{self.edge_index}] expects {len(self.ops)} weights, "
                f"got shape {tuple(weights.shape)}"
            )
        if not self._live:
            return self.ops[self._zero_index[0]](x)
        out = None
        for i in self._live:
            term = weights[i] * self.ops[i](x)
            out = term if out is None else out + term
        return out


def drop_path(x: torch.Tensor, drop_prob: float, shard: tuple[int, int] | None = None) -> torch.Tensor:
    """Zero whole samples with probability ``drop_prob`` and rescale the rest (DARTS drop-path).

    ``shard=(index, count)``: ``x`` is part ``index`` of ``count`` equal parts of a batch (a rank's share of a
    global batch under DistributedDataParallel): the masks are drawn for the whole batch and this part's used,
    so ranks drawing from the same random state drop the samples one process would.

    Examples:
        >>> import torch
        >>> drop_path(torch.ones(3, 2), 0.0).sum().item()
        6.0
        >>> _ = torch.manual_seed(0); whole = drop_path(torch.ones(4, 2), 0.5)
        >>> _ = torch.manual_seed(0); part = drop_path(torch.ones(2, 2), 0.5, shard=(1, 2))
        >>> torch.equal(whole[2:], part)
        True
    """
    if drop_prob <= 0.0:
        return x
    if drop_prob >= 1.0:
        raise ValueError(f"drop_prob must be < 1, got {drop_prob}")
    index, count = (0, 1) if shard is None else shard
    if not 0 <= index < count:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")
    keep = 1.0 - drop_prob
    n = x.shape[0]
    mask = torch.empty((n * count,) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x / keep * mask[index * n:(index + 1) * n]


def op_names_checked(names: Sequence[str], valid: Sequence[str], space: str) -> tuple[str, ...]:
    """Return ``names`` as a tuple after checking each is one of ``valid``.

    Examples:
        >>> op_names_checked(["none"], NATS_PRIMITIVES, "NATS")
        ('none',)
    """
    names = tuple(names)
    if not names:
        raise ValueError(f"{space} search space needs at least one op")
    for name in names:
        if name not in valid:
            raise ValueError(f"unknown {space} op {name!r}; valid ops: {', '.join(valid)}")
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate op names in {list(names)}")
    return names
