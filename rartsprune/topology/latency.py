"""Per-op latency lookup tables and the latency penalty ``<softmax(alpha), Lat>`` (RARTS Eq. 5).

A `LatencyTable` maps an op signature -- op name, input shape and output shape, e.g.
``"nor_conv_3x3:1x16x32x32->1x16x32x32"`` -- to its median latency in milliseconds, measured on one device
by timing the candidate op module of a search network at the input shape it sees there (warm-up runs first,
then the median of repeated runs, inference mode). Tables are saved to / loaded from JSON, so a table
measured on the deployment device can drive a search elsewhere.

From a table and a search network, `latency_matrices` builds ``Lat`` for every alpha tensor: entry
``[e, k]`` is the summed latency of op ``k`` on edge ``e`` over all cells that alpha drives.
`LatencyPenalty` turns it into the ``arch_penalty`` callable of the search optimizers.

Examples:
    >>> import torch
    >>> from rartsprune.topology import NatsSearchNetwork
    >>> net = NatsSearchNetwork(C=4, N=1)
    >>> table = measure_latency_table(net, (1, 3, 32, 32), warmup=1, repeats=3)
    >>> lat = latency_matrices(net, table, (1, 3, 32, 32))
    >>> tuple(lat["cell"].shape)
    (6, 5)
"""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .genotype import DartsGenotype, parse_nats_arch
from .ops import MixedOp

__all__ = [
    "LatencyTable",
    "measure_latency_table",
    "latency_matrices",
    "LatencyPenalty",
    "arch_latency",
    "op_key",
]

_FORMAT = "rartsprune-latency-v1"


def op_key(op_name: str, in_shape: Sequence[int], out_shape: Sequence[int]) -> str:
    """The table key of an op at given input/output shapes.

    Examples:
        >>> op_key("skip_connect", (1, 8, 16, 16), (1, 8, 16, 16))
        'skip_connect:1x8x16x16->1x8x16x16'
    """
    return f"{op_name}:{'x'.join(map(str, in_shape))}->{'x'.join(map(str, out_shape))}"


@dataclass
class LatencyTable:
    """Median latencies (ms) of op signatures measured on ``device``.

    Examples:
        >>> t = LatencyTable({"none:1x4x8x8->1x4x8x8": 0.01}, device="cpu")
        >>> LatencyTable.from_dict(t.to_dict()) == t
        True
    """

    entries: dict[str, float] = field(default_factory=dict)
    device: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> float:
        try:
            return self.entries[key]
        except KeyError:
            raise KeyError(
                f"latency table (device {self.device!r}) has no entry {key!r}; measure it on the target "
                f"device with measure_latency_table(net, input_shape, table=this_table)"
            ) from None

    def __contains__(self, key: object) -> bool:
        return key in self.entries

    def __len__(self) -> int:
        return len(self.entries)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``format``, ``unit``, ``device``, ``meta``, ``entries``)."""
        return {
            "format": _FORMAT,
            "unit": "ms",
            "device": self.device,
            "meta": dict(self.meta),
            "entries": dict(sorted(self.entries.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LatencyTable:
        """Inverse of `to_dict`; ``ValueError`` when the dict is not a latency table."""
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise ValueError(f"not a rartsprune latency table (expected format {_FORMAT!r})")
        entries = data.get("entries")
        if not isinstance(entries, dict):
            raise ValueError("latency table JSON lacks an 'entries' object")
        clean: dict[str, float] = {}
        for k, v in entries.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v >= 0.0:
                raise ValueError(f"latency table entry {k!r} must be a non-negative number, got {v!r}")
            clean[str(k)] = float(v)
        return cls(clean, str(data.get("device", "")), dict(data.get("meta", {})))

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSON; returns the path."""
        return save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> LatencyTable:
        """Read a table written by `save`."""
        return cls.from_dict(load_json(path, "latency table"))


def save_json(data: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write a latency table's dict as JSON (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))
    return path


def load_json(path: str | os.PathLike[str], what: str) -> Any:
    """The JSON of a latency table file: ``FileNotFoundError`` / ``ValueError`` naming ``what`` and the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from exc


# ---- tracing the shapes each mixed edge sees --------------------------------------------------------------


def _mixed_ops(net: nn.Module) -> list[MixedOp]:
    ops = [m for m in net.modules() if isinstance(m, MixedOp)]
    if not ops:
        raise ValueError(f"{type(net).__name__} has no MixedOp edges: not a topology search network")
    return ops


def _device_of(net: nn.Module) -> torch.device:
    for p in net.parameters():
        return p.device
    return torch.device("cpu")


def _trace_input_shapes(net: nn.Module, input_shape: Sequence[int]) -> list[tuple[MixedOp, torch.Size]]:
    """Run one inference pass and record the input shape of every mixed edge (model state untouched)."""
    seen: list[tuple[MixedOp, torch.Size]] = []

    def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
        seen.append((mod, args[0].shape))  # type: ignore[arg-type]

    handles = [m.register_forward_pre_hook(hook) for m in _mixed_ops(net)]
    modes = {m: m.training for m in net.modules()}
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros(tuple(input_shape), device=_device_of(net)))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return seen


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_module(mod: nn.Module, x: torch.Tensor, warmup: int, repeats: int) -> tuple[float, torch.Size]:
    device = x.device
    with torch.no_grad():
        out = mod(x)
        for _ in range(warmup):
            mod(x)
        _sync(device)
        times = []
        for _ in range(repeats):
            _sync(device)
            t0 = time.perf_counter()
            mod(x)
            _sync(device)
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times), out.shape


def measure_latency_table(
    net: nn.Module,
    input_shape: Sequence[int] = (1, 3, 32, 32),
    *,
    warmup: int = 10,
    repeats: int = 50,
    table: LatencyTable | None = None,
    progress: Callable[[str], None] | None = None,
) -> LatencyTable:
    """Time every candidate op of every mixed edge of ``net`` at the input shape it sees there.

    Ops run on the network's device, in eval mode, without gradients; each distinct signature is timed
    once (``warmup`` untimed runs, then the median of ``repeats`` timed runs). Entries already in ``table``
    are kept (a new table is returned; ``table`` is not modified). ``net`` is left as it was.

    Example in the module docstring.
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    if len(input_shape) != 4:
        raise ValueError(f"input_shape must be (N, C, H, W), got {tuple(input_shape)}")
    device = _device_of(net)
    entries = dict(table.entries) if table is not None else {}
    modes = {m: m.training for m in net.modules()}
    try:
        for mixed, shape in _trace_input_shapes(net, input_shape):
            for name, op in zip(mixed.op_names, mixed.ops):
                x = torch.randn(tuple(shape), device=device)
                with torch.no_grad():
                    op.eval()
                    out_shape = op(x).shape
                key = op_key(name, shape, out_shape)
                if key in entries:
                    continue
                ms, _ = _time_module(op, x, warmup, repeats)
                entries[key] = ms
                if progress is not None:
                    progress(f"{key}: {ms:.4f} ms")
    finally:
        for m, mode in modes.items():
            m.training = mode
    dev_name = str(device)
    if device.type == "cuda":
        dev_name = f"{device} ({torch.cuda.get_device_name(device)})"
    meta = dict(table.meta) if table is not None else {}
    meta.update({"warmup": warmup, "repeats": repeats, "torch": torch.__version__, "statistic": "median"})
    return LatencyTable(entries, dev_name if table is None or not table.device else table.device, meta)


def _edge_keys(net: nn.Module, input_shape: Sequence[int]) -> Iterator[tuple[MixedOp, list[str]]]:
    device = _device_of(net)
    modes = {m: m.training for m in net.modules()}
    try:
        for mixed, shape in _trace_input_shapes(net, input_shape):
            keys = []
            x = torch.zeros(tuple(shape), device=device)
            for name, op in zip(mixed.op_names, mixed.ops):
                op.eval()
                with torch.no_grad():
                    keys.append(op_key(name, shape, op(x).shape))
            yield mixed, keys
    finally:
        for m, mode in modes.items():
            m.training = mode


def latency_matrices(
    net: nn.Module, table: LatencyTable, input_shape: Sequence[int] = (1, 3, 32, 32)
) -> dict[str, torch.Tensor]:
    """``Lat`` per alpha tensor: ``{arch_name: (edges, ops)}`` summed over the cells each alpha drives.

    ``net`` must expose ``named_arch_parameters()``; missing table entries raise ``KeyError`` naming them.
    Tensors are float32 on the device of the alphas.
    """
    if not hasattr(net, "named_arch_parameters"):
        raise TypeError(f"{type(net).__name__} has no named_arch_parameters(): not a topology search network")
    alphas: dict[str, torch.Tensor] = dict(net.named_arch_parameters())
    lat = {name: torch.zeros(a.shape, dtype=torch.float32) for name, a in alphas.items()}
    for mixed, keys in _edge_keys(net, input_shape):
        if mixed.arch_name not in lat:
            raise ValueError(f"mixed edge driven by unknown alpha {mixed.arch_name!r}")
        for k, key in enumerate(keys):
            lat[mixed.arch_name][mixed.edge_index, k] += table[key]
    return {name: m.to(alphas[name].device) for name, m in lat.items()}


class LatencyPenalty:
    """``weight * sum_alpha <softmax(alpha), Lat>`` -- pass it as ``arch_penalty`` to a search optimizer.

    Examples:
        >>> import torch
        >>> from rartsprune.topology import NatsSearchNetwork
        >>> net = NatsSearchNetwork(C=4, N=1)
        >>> table = measure_latency_table(net, (1, 3, 32, 32), warmup=0, repeats=1)
        >>> pen = LatencyPenalty(net, table, weight=0.1)
        >>> bool(pen().requires_grad)
        True
    """

    def __init__(
        self,
        net: nn.Module,
        table: LatencyTable,
        *,
        weight: float = 1.0,
        input_shape: Sequence[int] = (1, 3, 32, 32),
    ) -> None:
        if not weight >= 0.0:
            raise ValueError(f"latency weight must be >= 0, got {weight}")
        self.weight = float(weight)
        self.alphas: dict[str, torch.Tensor] = dict(net.named_arch_parameters())
        self.lat = latency_matrices(net, table, input_shape)

    def expected_latency(self) -> torch.Tensor:
        """``sum_alpha <softmax(alpha), Lat>`` in ms (differentiable, no weight)."""
        total = None
        for name, a in self.alphas.items():
            term = (F.softmax(a, dim=-1) * self.lat[name].to(a.device, a.dtype)).sum()
            total = term if total is None else total + term
        assert total is not None
        return total

    def __call__(self) -> torch.Tensor:
        return self.weight * self.expected_latency()


def arch_latency(
    net: nn.Module,
    table: LatencyTable,
    arch: str | DartsGenotype,
    input_shape: Sequence[int] = (1, 3, 32, 32),
) -> float:
    """Latency (ms) of a derived architecture: the sum, over all cells, of the chosen ops' table entries.

    ``arch`` is a NATS-Bench arch string (for a `NatsSearchNetwork`) or a `DartsGenotype`
    (for a `DartsSearchNetwork`); the op latencies come from the shapes ``net`` sees.
    """
    lat = latency_matrices(net, table, input_shape)
    op_names = tuple(net.op_names)  # type: ignore[attr-defined]

    def col(op: str) -> int:
        if op not in op_names:
            raise ValueError(f"op {op!r} is not a candidate of this network ({', '.join(op_names)})")
        return op_names.index(op)

    if isinstance(arch, str):
        if set(lat) != {"cell"}:
            raise TypeError("an arch string needs a NATS search network")
        ops = parse_nats_arch(arch)
        return float(sum(lat["cell"][e, col(op)] for e, op in enumerate(ops)))
    if isinstance(arch, DartsGenotype):
        if set(lat) != {"normal", "reduce"}:
            raise TypeError("a DartsGenotype needs a DARTS search network")
        total = 0.0
        for name, gene in (("normal", arch.normal), ("reduce", arch.reduce)):
            for k, (op, src) in enumerate(gene):
                node = k // 2
                edge = sum(2 + i for i in range(node)) + src
                total += float(lat[name][edge, col(op)])
        return total
    raise TypeError(f"arch must be a NATS arch string or a DartsGenotype, got {type(arch).__name__}")
