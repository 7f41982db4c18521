"""Latency-aware width selection: a per-layer latency model measured on the target device.

At batch size 1 a depthwise network is memory-bound and MACs are the wrong cost to prune by. This module
measures what the pruned model will cost in milliseconds instead:

* every *prunable layer* — a convolution (``nn.Conv1d/2d/3d``, plain or depthwise) or an ``nn.Linear`` whose
  input or output channels the surgery changes — is timed **alone**, as a fresh layer of the same kind,
  at a few widths: ``fractions`` (default 25/50/75/100 %) of its output channels, and of its input
  channels where those are pruned too (a grid), plus one channel (so that any width lies inside the grid).
  It runs at the input shape it sees in the model (found by a forward hook on ``example_inputs``) with the
  batch dimension set to ``batch``, in eval mode without gradients, on the model's device: warm-up runs,
  then the median of ``repeats`` timed runs (`rartsprune.topology.latency`'s timer);
* a layer's latency at any (in, out) width is the bilinear interpolation of its samples (after making them
  non-decreasing in both widths, so that timing noise never makes a wider layer predict faster);
* the model's predicted latency is the sum of its layers' predictions plus a *remainder*: the measured
  whole-model latency minus the sum of the layers at full width (normalisations, activations, residual
  additions, pooling, the head and the layers that are not pruned; at least 0), constant by default. Much of it
  is elementwise work on the pruned layers' outputs, which shrinks with them: ``calibrate=True`` splits it in
  two, a part proportional to the *activation fraction* — the timed layers' output elements kept,
  ``sum(out_width * elements per channel) / the same at full width`` — and a constant part, from a second
  whole-model timing of a copy with every channel group cut to half its units. Measured on ResNet-50 and
  MobileNetV2 (``bench/latency_model.py``, 12 pruned models, predicted both ways) the split fixed ResNet-50 at
  batch 1 (within 5 % where the constant remainder was 16 % off at 0.4 of the latency) but made ResNet-50 at
  batch 32 worse (predicted 11-19 % too fast against 5-9 %), and 4 of 12 models were within 10 % against 8 of
  12 with the constant remainder: it stays an option, not the default.

The table is saved as JSON (`WidthLatencyTable.save`) with the device name, the torch version, the batch
size and the input shape, and reloaded with `WidthLatencyTable.load`; `WidthLatencyTable.check` refuses a
table measured on another device, batch size or input shape. `LatencyModel` is the cost model of
`rartsprune.width.budget.select_by_budget` for ``kind="latency"`` (``rartsprune.prune(model, latency=0.6)``),
and `latency_report` compares the prediction with the measured latency of a (pruned) model.

Examples:
    >>> import torch, torch.nn as nn
    >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1))
    >>> table = measure_width_latency(net, torch.randn(1, 3, 16, 16), warmup=1, repeats=3)
    >>> sorted(table.layers), table.batch, table.input_shape
    (['0', '2'], 1, [1, 3, 16, 16])
    >>> table.layers["2"].predict(8, 8) <= table.layers["2"].predict(16, 16)
    True
"""

from __future__ import annotations

import bisect
import copy
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..graph import preserved_state
from ..scores import ScoreHandle, _model_device, has_scores, remove
from ..surgery import apply_surgery, layer_widths, plan_from_scores
from ..topology.latency import _time_module, load_json, save_json

__all__ = [
    "DEFAULT_FRACTIONS",
    "LatencyModel",
    "LayerLatency",
    "ALLOCATOR_ENV",
    "WidthLatencyTable",
    "allocator_settings",
    "device_name",
    "half_width_reference",
    "latency_report",
    "measure_width_latency",
    "prunable_layers",
    "time_model",
]

_FORMAT = "rartsprune-width-latency-v1"
#: Fractions of a layer's channels it is timed at (one channel is always added).
DEFAULT_FRACTIONS: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
#: Untimed runs, then timed runs (their median) per sample, when `rartsprune.prune` measures a table.
DEFAULT_WARMUP = 5
DEFAULT_REPEATS = 20
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
#: Environment variables that change how the C allocator returns freed memory to the system (glibc's malloc
#: tunables, and a preloaded jemalloc / tcmalloc): on a CPU they change the latency of large layers.
ALLOCATOR_ENV: tuple[str, ...] = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                                  "MALLOC_ARENA_MAX", "LD_PRELOAD")


def allocator_settings() -> dict[str, str]:
    """This process's C-allocator settings that change CPU latency: those of `ALLOCATOR_ENV` that are set.

    A CPU latency depends on them as much as on the widths: with glibc's defaults a large tensor freed after a
    layer can be handed back to the system and page-faulted in afresh by the next call, so the same forward
    pass costs more in one process than in another. (Measured on this project's 2-core VM, one thread:
    torchvision's ResNet-50 at batch 32 took 4.7 s per forward with the defaults and 3.0 s with
    ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_MMAP_THRESHOLD_`` raised; a lone 1x1 convolution 16→64 at batch 16,
    32x32, took 62 ms vs 0.76 ms.) A CPU table records them (``meta["allocator"]``) and `WidthLatencyTable.check`
    refuses it under other settings.

    Examples:
        >>> isinstance(allocator_settings(), dict)
        True
    """
    return {k: os.environ[k] for k in ALLOCATOR_ENV if os.environ.get(k)}


def device_name(device: torch.device | str) -> str:
    """The name a table records for ``device``: ``"cpu"``, or ``"cuda:0 (<GPU name>)"``.

    Examples:
        >>> device_name("cpu")
        'cpu'
    """
    device = torch.device(device)
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def _interp(xs: Sequence[int], x: float) -> tuple[int, int, float]:
    """Indices ``i, j`` of the samples around ``x`` and the weight of ``j`` (clamped at both ends)."""
    if x <= xs[0]:
        return 0, 0, 0.0
    if x >= xs[-1]:
        n = len(xs) - 1
        return n, n, 0.0
    j = bisect.bisect_left(xs, x)
    i = j - 1
    return i, j, (x - xs[i]) / (xs[j] - xs[i])


@dataclass
class LayerLatency:
    """Median latencies (ms) of one layer timed alone at a grid of widths.

    Attributes:
        kind: ``"conv1d"``, ``"conv2d"``, ``"conv3d"`` or ``"linear"``.
        in_channels, out_channels: the unpruned widths.
        depthwise: a depthwise convolution (its input width follows its output width).
        input_shape: the input it sees in the model (batch dimension = the table's batch size).
        in_widths, out_widths: the sampled widths (``in_widths == [in_channels]`` where the input is not
            pruned, or the layer is depthwise).
        ms: ``ms[i][j]``: the median latency at ``in_widths[i]``, ``out_widths[j]``.
        fused: the modules timed together with the layer, in order (``measure_width_latency(fuse=True)``:
            the BatchNorm and activation that directly consume its output, e.g. ``["BatchNorm2d", "ReLU"]``).

    Examples:
        >>> lat = LayerLatency("linear", 8, 8, False, [1, 8], [8], [1, 4, 8], [[1.0, 2.0, 4.0]])
        >>> lat.predict(8, 6), round(lat.predict(8, 2), 4)
        (3.0, 1.3333)
    """

    kind: str
    in_channels: int
    out_channels: int
    depthwise: bool
    input_shape: list[int]
    in_widths: list[int]
    out_widths: list[int]
    ms: list[list[float]]
    fused: list[str] = field(default_factory=list)
    _grid: list[list[float]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.ms) != len(self.in_widths) or any(len(row) != len(self.out_widths) for row in self.ms):
            raise ValueError(f"layer latency samples have shape {[len(r) for r in self.ms]}, expected "
                             f"{len(self.in_widths)} x {len(self.out_widths)}")
        if list(self.in_widths) != sorted(set(self.in_widths)) or list(self.out_widths) != sorted(set(self.out_widths)):
            raise ValueError("layer latency widths must be strictly increasing")
        # the envelope: non-decreasing in the output width, then in the input width (stays so along both)
        grid = [list(_cummax(row)) for row in self.ms]
        for j in range(len(self.out_widths)):
            col = _cummax([grid[i][j] for i in range(len(grid))])
            for i, v in enumerate(col):
                grid[i][j] = v
        self._grid = grid

    @property
    def full_ms(self) -> float:
        """The predicted latency at full width (the largest sample: the envelope's corner)."""
        return float(self._grid[-1][-1])

    def predict(self, in_width: float | None = None, out_width: float | None = None) -> float:
        """Predicted latency (ms) at ``in_width`` input and ``out_width`` output channels (``None``: full).

        Bilinear in the sampled grid, constant beyond its ends; never decreases when a width grows.
        """
        out_w = self.out_channels if out_width is None else out_width
        in_w = self.in_channels if in_width is None else in_width
        i0, i1, a = _interp(self.in_widths, in_w) if len(self.in_widths) > 1 else (0, 0, 0.0)
        j0, j1, b = _interp(self.out_widths, out_w)
        g = self._grid
        low = g[i0][j0] * (1 - b) + g[i0][j1] * b
        high = g[i1][j0] * (1 - b) + g[i1][j1] * b
        return float(low * (1 - a) + high * a)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of the samples."""
        return {"kind": self.kind, "in_channels": self.in_channels, "out_channels": self.out_channels,
                "depthwise": self.depthwise, "input_shape": list(self.input_shape),
                "in_widths": list(self.in_widths), "out_widths": list(self.out_widths),
                "ms": [list(map(float, row)) for row in self.ms], "fused": list(self.fused)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerLatency:
        """Inverse of `to_dict`; ``ValueError`` naming a missing or bad field."""
        try:
            return cls(str(data["kind"]), int(data["in_channels"]), int(data["out_channels"]), bool(data["depthwise"]),
                       [int(v) for v in data["input_shape"]], [int(v) for v in data["in_widths"]],
                       [int(v) for v in data["out_widths"]], [[float(v) for v in row] for row in data["ms"]],
                       [str(v) for v in data.get("fused", [])])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"bad layer entry in a width latency table: {exc!r}") from exc


def _piecewise(xs: Sequence[float], ys: Sequence[float], x: float) -> float:
    """Linear interpolation through ``(xs, ys)`` (``xs`` increasing), extrapolated from the end segments."""
    i = min(max(bisect.bisect_right(xs, x), 1), len(xs) - 1)
    x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def _point(pt: Any) -> list[float]:
    """A measured point ``[predicted fraction, measured fraction]``, both positive numbers."""
    pred, meas = (float(v) for v in pt)
    if not (pred > 0 and meas > 0):
        raise ValueError(f"a measured latency point needs positive fractions, got {list(pt)!r}")
    return [pred, meas]


def _cummax(values: Sequence[float]) -> list[float]:
    out: list[float] = []
    for v in values:
        out.append(v if not out else max(out[-1], v))
    return out


@dataclass
class WidthLatencyTable:
    """Per-layer latency samples of one model on one device, batch size and input shape.

    Attributes:
        device: where it was measured (`device_name`).
        batch: the batch size; ``input_shape``: the model's input (batch first).
        whole_ms: the measured latency of the whole unpruned model.
        rest_ms: the constant part of the remainder (``whole_ms`` minus the layers at full width, at least 0,
            minus ``rest_scaled_ms``), added to every prediction.
        layers: layer name -> `LayerLatency`.
        meta: torch version, warm-up, repeats, statistic, the calibration's timing of the half-width copy.
        rest_scaled_ms: the part of the remainder proportional to the activation fraction (0: constant).
        activations: layer name -> output elements per output channel (at the table's batch size), for the
            activation fraction.
        measured: ``[predicted fraction, measured fraction]`` of pruned models of this model timed on the device
            (`rartsprune.width.fit_measured_latency`); with any, a latency budget is a *measured* fraction:
            `LatencyModel.fraction` maps every predicted fraction through these points (`measured_fraction`;
            the inverse: `predicted_budget`).

    Examples:
        >>> t = WidthLatencyTable("cpu", 1, [1, 8], 2.0, 1.0,
        ...                       {"fc": LayerLatency("linear", 8, 4, False, [1, 8], [8], [1, 4], [[0.5, 1.0]])})
        >>> t.predict({"fc": {"in": 8, "out": 4}}), t.predict({"fc": {"in": 8, "out": 1}})
        (2.0, 1.5)
        >>> WidthLatencyTable.from_dict(t.to_dict()) == t
        True
    """

    device: str
    batch: int
    input_shape: list[int]
    whole_ms: float
    rest_ms: float
    layers: dict[str, LayerLatency] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    rest_scaled_ms: float = 0.0
    activations: dict[str, float] = field(default_factory=dict)
    measured: list[list[float]] = field(default_factory=list)

    def _curve(self) -> tuple[list[float], list[float]]:
        """The measured points as a monotone curve from (0, 0) to (1, 1): predicted fractions strictly
        increasing (points at the same predicted fraction averaged), measured fractions non-decreasing."""
        by_pred: dict[float, list[float]] = {}
        for pred, meas in self.measured:
            if 0.0 < pred < 1.0:
                by_pred.setdefault(float(pred), []).append(float(meas))
        xs = [0.0, *sorted(by_pred), 1.0]
        ys = _cummax([0.0, *(sum(by_pred[x]) / len(by_pred[x]) for x in xs[1:-1]), 1.0])
        return xs, ys

    def measured_fraction(self, predicted: float) -> float:
        """The fraction of the unpruned model's *measured* latency a model predicted at ``predicted`` of it
        keeps, interpolated (piecewise linear) through the ``measured`` points, (0, 0) and (1, 1); without
        points, ``predicted`` itself.

        Examples:
            >>> lat = LayerLatency("linear", 8, 4, False, [1, 8], [8], [1, 4], [[0.5, 1.0]])
            >>> t = WidthLatencyTable("cpu", 1, [1, 8], 2.0, 1.0, {"fc": lat}, measured=[[0.6, 0.45]])
            >>> round(t.measured_fraction(0.6), 4), round(t.measured_fraction(0.8), 4), t.measured_fraction(1.0)
            (0.45, 0.725, 1.0)
            >>> round(t.predicted_budget(0.45), 4), round(t.predicted_budget(0.6), 4)
            (0.6, 0.7091)
        """
        if not self.measured:
            return float(predicted)
        xs, ys = self._curve()
        return _piecewise(xs, ys, float(predicted))

    def predicted_budget(self, measured: float) -> float:
        """The predicted fraction to select to for ``measured`` of the unpruned model's measured latency: the
        largest whose `measured_fraction` is at most ``measured`` (``measured`` itself without points)."""
        if not self.measured:
            return float(measured)
        xs, ys = self._curve()
        target = float(measured)
        best = 0.0
        for i in range(1, len(xs)):  # the right end of the last segment that starts at or below the target
            x0, x1, y0, y1 = xs[i - 1], xs[i], ys[i - 1], ys[i]
            if y0 > target:
                break
            best = x1 if y1 <= target else x0 + (x1 - x0) * (target - y0) / (y1 - y0)
        return best

    @property
    def layers_full_ms(self) -> float:
        """The layers' predicted latencies at full width, summed."""
        return sum(lat.full_ms for lat in self.layers.values())

    @property
    def full_ms(self) -> float:
        """The predicted latency of the unpruned model (the layers at full width plus the remainder)."""
        return self.rest_ms + self.rest_scaled_ms + self.layers_full_ms

    def activation_fraction(self, widths: Mapping[str, Mapping[str, Any]]) -> float:
        """The fraction of the timed layers' output elements that ``widths`` keep (1.0 without activations).

        Examples:
            >>> lat = LayerLatency("linear", 8, 4, False, [1, 8], [8], [1, 4], [[0.5, 1.0]])
            >>> t = WidthLatencyTable("cpu", 1, [1, 8], 2.0, 0.5, {"fc": lat}, rest_scaled_ms=0.5,
            ...                       activations={"fc": 1.0})
            >>> t.activation_fraction({"fc": {"out": 1}}), t.predict({"fc": {"out": 1}})
            (0.25, 1.125)
        """
        full = sum(a * self.layers[n].out_channels for n, a in self.activations.items() if n in self.layers)
        if full <= 0:
            return 1.0
        kept = sum(a * float(widths.get(n, {}).get("out", self.layers[n].out_channels))
                   for n, a in self.activations.items() if n in self.layers)
        return kept / full

    def predict(self, widths: Mapping[str, Mapping[str, Any]]) -> float:
        """Predicted latency (ms) for layer widths (``layer_widths`` / a plan's widths; missing layers: full)."""
        total = self.rest_ms
        if self.rest_scaled_ms:
            total += self.rest_scaled_ms * self.activation_fraction(widths)
        for name, lat in self.layers.items():
            w = widths.get(name, {})
            total += lat.predict(w.get("in"), w.get("out"))
        return float(total)

    def predict_model(self, model: nn.Module) -> float:
        """Predicted latency (ms) of ``model`` (e.g. after surgery) from its current layer widths."""
        widths = layer_widths(model, list(self.layers))
        missing = sorted(set(self.layers) - set(widths))
        if missing:
            raise ValueError(f"the model has no layers {missing[:5]} of the latency table: it was measured on another model")
        return self.predict(widths)

    def check(self, *, device: str | None = None, batch: int | None = None, input_shape: Sequence[int] | None = None,
              source: str = "the latency table", allocator: Mapping[str, str] | None = None) -> None:
        """``ValueError`` naming both values when the table was measured on another device, batch or input shape,
        or (a CPU table that recorded them, ``allocator`` given) under other allocator settings
        (`allocator_settings`)."""
        recorded = self.meta.get("allocator")
        if recorded is None or allocator is None:
            allocator = None
        else:
            allocator, recorded = dict(allocator), dict(recorded)
        for what, mine, asked in (("device", self.device, device), ("batch size", self.batch, batch),
                                  ("input shape", list(self.input_shape), None if input_shape is None else list(input_shape)),
                                  ("allocator settings", recorded, allocator)):
            if asked is not None and mine != asked:
                raise ValueError(f"{source} was measured with {what} {mine!r}, but {asked!r} is asked: measure it "
                                 "again there (remove the file or pass another latency_table=)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict (``format``, ``unit``, device, batch, input shape, remainder, layers, meta)."""
        return {"format": _FORMAT, "unit": "ms", "device": self.device, "batch": self.batch,
                "input_shape": list(self.input_shape), "whole_ms": self.whole_ms, "rest_ms": self.rest_ms,
                "rest_scaled_ms": self.rest_scaled_ms, "activations": dict(sorted(self.activations.items())),
                "measured": [list(map(float, pt)) for pt in self.measured], "meta": dict(self.meta), "layers": {n: lat.to_dict() for n, lat in sorted(self.layers.items())}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WidthLatencyTable:
        """Inverse of `to_dict`; ``ValueError`` when ``data`` is not a width latency table."""
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ValueError(f"not a rartsprune width latency table (expected format {_FORMAT!r})")
        try:
            return cls(str(data["device"]), int(data["batch"]), [int(v) for v in data["input_shape"]],
                       float(data["whole_ms"]), float(data["rest_ms"]),
                       {str(n): LayerLatency.from_dict(v) for n, v in data["layers"].items()}, dict(data.get("meta", {})),
                       float(data.get("rest_scaled_ms", 0.0)),
                       {str(n): float(v) for n, v in data.get("activations", {}).items()},
                       [_point(pt) for pt in data.get("measured", [])])
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"width latency table lacks a field or has a bad one: {exc!r}") from exc

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the table as JSON; returns the path."""
        return save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> WidthLatencyTable:
        """Read a table written by `save` (``FileNotFoundError``, or ``ValueError`` for a file that is not one)."""
        return cls.from_dict(load_json(path, "width latency table"))


# ---- measuring -------------------------------------------------------------------------------------------


def _single_tensor(example_inputs: Any) -> torch.Tensor:
    if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() < 2:
        raise ValueError("a latency budget needs example_inputs to be one tensor with a batch dimension, got "
                         f"{type(example_inputs).__name__}")
    return example_inputs


def _batched(x: torch.Tensor, batch: int, device: torch.device) -> torch.Tensor:
    """``x``'s first sample repeated ``batch`` times, on ``device``."""
    return x[:1].detach().to(device).repeat(batch, *([1] * (x.dim() - 1)))


def _timed_kind(m: nn.Module) -> str | None:
    """The kind of a layer this module can time alone, or ``None`` (its latency stays in the remainder)."""
    if isinstance(m, nn.Linear):
        return "linear"
    for cls in _CONVS:
        if isinstance(m, cls):
            if m.groups > 1 and m.groups != m.in_channels:
                return None  # grouped (not depthwise): left in the remainder
            return cls.__name__.lower()
    return None


def prunable_layers(handle: ScoreHandle) -> dict[str, tuple[bool, bool]]:
    """The timed layers of a scored model: name -> (input pruned, output pruned).

    Those whose input or output width the surgery can change (compared at one unit kept per group), among
    the convolutions and linears `measure_width_latency` can time.
    """
    model = handle.model
    full = layer_widths(model)
    least = plan_from_scores(model, {g.name: [0] for g in handle.groups}).widths
    modules = dict(model.named_modules())
    out: dict[str, tuple[bool, bool]] = {}
    for name, w in full.items():
        if name not in modules or _timed_kind(modules[name]) is None:
            continue
        new = least.get(name, w)
        pin, pout = new.get("in") != w.get("in"), new.get("out") != w.get("out")
        if pin or pout:
            out[name] = (pin, pout)
    return out


def _sample_widths(channels: int, fractions: Sequence[float], step: int = 1) -> list[int]:
    units = channels // step
    return sorted({step * max(1, min(units, round(f * units))) for f in fractions} | {step, channels})


def _fresh_layer(m: nn.Module, kind: str, cin: int, cout: int, device: torch.device, dtype: torch.dtype) -> nn.Module:
    """A new, plain layer like ``m`` with ``cin`` input and ``cout`` output channels."""
    if kind == "linear":
        return nn.Linear(cin, cout, bias=m.bias is not None, device=device, dtype=dtype)
    cls = {c.__name__.lower(): c for c in _CONVS}[kind]
    groups = cin if m.groups > 1 else 1  # depthwise stays depthwise
    return cls(cin, cout, m.kernel_size, stride=m.stride, padding=m.padding, dilation=m.dilation, groups=groups,
               bias=m.bias is not None, padding_mode=m.padding_mode, device=device, dtype=dtype)


#: Activations timed with the layer whose (normalised) output they consume when ``fuse=True``.
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Sigmoid,
                nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Mish)
_BATCHNORMS = {"conv1d": nn.BatchNorm1d, "conv2d": nn.BatchNorm2d, "conv3d": nn.BatchNorm3d, "linear": nn.BatchNorm1d}


def _hooked_pass(model: nn.Module, x: torch.Tensor, handles: Sequence[Any]) -> None:
    """One inference pass of ``model`` on ``x`` (its state kept), then the hook ``handles`` are removed."""
    try:
        with preserved_state(model), torch.no_grad():
            model.eval()
            model(x)
    finally:
        for h in handles:
            h.remove()


def _followers(model: nn.Module, x: torch.Tensor, names: Sequence[str]) -> dict[str, list[str]]:
    """For every layer of ``names``: the modules that directly consume its output, in order — a BatchNorm over
    its channels, then an activation (`_ACTIVATIONS`) — found in one inference pass by matching each module
    call's input tensor with the previous one's output (the model's state kept)."""
    calls: list[tuple[str, nn.Module, tuple[int, tuple[int, ...]], tuple[int, tuple[int, ...]]]] = []
    alive: list[Any] = []  # every output stays allocated, so that no later tensor reuses its address

    def key(t: Any) -> tuple[int, tuple[int, ...]]:
        return (t.data_ptr(), tuple(t.shape)) if isinstance(t, torch.Tensor) else (-1, ())

    def hook_for(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            calls.append((name, mod, key(args[0] if args else None), key(out)))
            alive.append(out)

        return hook

    wanted = set(names)
    leaves = [(n, m) for n, m in model.named_modules()
              if n in wanted or isinstance(m, (nn.modules.batchnorm._BatchNorm, *_ACTIVATIONS))]
    _hooked_pass(model, x, [m.register_forward_hook(hook_for(n)) for n, m in leaves])
    out: dict[str, list[str]] = {}
    for k, (name, _, _, produced) in enumerate(calls):
        if name not in wanted or name in out:
            continue
        chain: list[str] = []
        for later, mod, consumed, result in calls[k + 1:]:
            if consumed != produced or produced[0] == -1:
                continue
            if not chain and isinstance(mod, nn.modules.batchnorm._BatchNorm) and mod.num_features == produced[1][1]:
                chain.append(later)
                produced = result
            elif isinstance(mod, _ACTIVATIONS):
                chain.append(later)
                break
            else:
                break
        out[name] = chain
    return out


def _timed_block(layer: nn.Module, kind: str, cout: int, followers: Sequence[nn.Module]) -> nn.Module:
    """``layer`` followed by fresh copies of ``followers`` (a BatchNorm resized to ``cout``, an activation)."""
    if not followers:
        return layer
    parts: list[nn.Module] = [layer]
    for f in followers:
        if isinstance(f, nn.modules.batchnorm._BatchNorm):
            bn = _BATCHNORMS[kind](cout, eps=f.eps, affine=f.affine, device=layer.weight.device,
                                   dtype=layer.weight.dtype)
            parts.append(bn.eval())
        else:
            parts.append(copy.deepcopy(f))
    return nn.Sequential(*parts).eval()


def _trace_inputs(model: nn.Module, x: torch.Tensor, names: Sequence[str],
                  outputs: dict[str, torch.Size] | None = None) -> dict[str, torch.Size]:
    """The input shape every layer of ``names`` sees on ``x`` (one inference pass; the model's state kept);
    their output shapes go into ``outputs`` when it is given."""
    modules = dict(model.named_modules())
    seen: dict[str, torch.Size] = {}

    def hook_for(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(mod: nn.Module, args: tuple[Any, ...]) -> None:
            if name not in seen and args and isinstance(args[0], torch.Tensor):
                seen[name] = args[0].shape

        return hook

    def out_hook_for(name: str) -> Callable[[nn.Module, tuple[Any, ...], Any], None]:
        def hook(mod: nn.Module, args: tuple[Any, ...], out: Any) -> None:
            if outputs is not None and name not in outputs and isinstance(out, torch.Tensor):
                outputs[name] = out.shape

        return hook

    handles = [modules[n].register_forward_pre_hook(hook_for(n)) for n in names]
    handles += [modules[n].register_forward_hook(out_hook_for(n)) for n in names]
    _hooked_pass(model, x, handles)
    missing = sorted(set(names) - set(seen))
    if missing:
        raise ValueError(f"layers {missing[:5]} did not run on example_inputs: their latency cannot be measured")
    return seen


def time_model(model: nn.Module, example_inputs: torch.Tensor, *, batch: int = 1, warmup: int = DEFAULT_WARMUP,
               repeats: int = DEFAULT_REPEATS) -> float:
    """Median latency (ms) of ``model`` on ``example_inputs``' first sample repeated ``batch`` times.

    Eval mode, no gradients, on the model's device (the model's training flags are restored).

    Examples:
        >>> import torch, torch.nn as nn
        >>> time_model(nn.Linear(4, 2), torch.randn(1, 4), repeats=3) > 0
        True
    """
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    x = _batched(_single_tensor(example_inputs), batch, _model_device(model))
    with preserved_state(model):
        model.eval()
        ms, _ = _time_module(model, x, warmup, repeats)
    return float(ms)


def measure_width_latency(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    batch: int = 1,
    layers: Mapping[str, tuple[bool, bool]] | None = None,
    whole_ms: float | None = None,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    progress: Callable[[str], None] | None = None,
    calibrate: bool = False,
    reference: tuple[float, Mapping[str, Mapping[str, Any]]] | None = None,
    fuse: bool = False,
) -> WidthLatencyTable:
    """Time the prunable layers of ``model`` alone at a few widths, and the whole model (see the module docstring).

    Args:
        model: a plain model (or a scored one with ``layers`` and ``whole_ms`` given: the scores would slow it).
        example_inputs: one input tensor the model accepts (its first sample is used, repeated ``batch`` times).
        batch: the batch size to time at.
        layers: name -> (input pruned, output pruned) (`prunable_layers`); ``None``: found by attaching
            scores to a copy of the model.
        whole_ms: the whole model's latency, already measured (``None``: timed here, `time_model`).
        fractions: fractions (0, 1] of the channels each pruned width is timed at (one channel is added).
        warmup, repeats: untimed runs, then timed runs whose median is kept, per sample.
        progress: called with a line per timed layer.
        calibrate: split the remainder into a constant part and a part proportional to the activation fraction,
            from a timing of a copy with every channel group at half its units (`half_width_reference`; see
            the module docstring). ``False``: a constant remainder.
        reference: that timing, already made: ``(ms, layer widths)`` of a pruned copy (needed for a scored
            model, whose copies cannot be pruned here).
        fuse: time each layer together with the BatchNorm and the activation that directly consume its output
            (conv → BN → ReLU as one block, each resized with the layer's output width), so that their cost
            follows the width instead of staying in the constant remainder (`LayerLatency.fused` lists them).

    The model is left as it was (one inference pass with hooks, then timings in eval mode).
    Example in the module docstring.
    """
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if warmup < 0 or repeats < 1:
        raise ValueError(f"need warmup >= 0 and repeats >= 1, got warmup={warmup}, repeats={repeats}")
    if not fractions or any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 < f <= 1 for f in fractions):
        raise ValueError(f"fractions must be numbers in (0, 1], got {fractions!r}")
    x0 = _single_tensor(example_inputs)
    if layers is None:
        if has_scores(model):
            raise ValueError("pass layers= (rartsprune.width.latency.prunable_layers(handle)) for a scored model")
        from ..attach import attach_scores

        twin = copy.deepcopy(model)
        layers = prunable_layers(attach_scores(twin, x0))
        del twin
    if whole_ms is None:
        if has_scores(model):
            raise ValueError("pass whole_ms= (time_model on the plain model) for a scored model: the scores slow it")
        whole_ms = time_model(model, x0, batch=batch, warmup=warmup, repeats=repeats)
    if calibrate and reference is None and not has_scores(model):
        reference = half_width_reference(model, x0, batch=batch, warmup=warmup, repeats=repeats)
    device = _model_device(model)
    modules = dict(model.named_modules())
    out_shapes: dict[str, torch.Size] = {}
    shapes = _trace_inputs(model, x0.detach().to(device), list(layers), out_shapes)
    follow = _followers(model, x0.detach().to(device), list(layers)) if fuse else {}
    table_layers: dict[str, LayerLatency] = {}
    for name, (pin, pout) in layers.items():
        m = modules[name]
        kind = _timed_kind(m)
        if kind is None:
            raise ValueError(f"layer {name!r} ({type(m).__name__}) cannot be timed alone")
        cin, cout = (m.in_features, m.out_features) if kind == "linear" else (m.in_channels, m.out_channels)
        depthwise = kind != "linear" and m.groups > 1
        mult = cout // cin if depthwise else 1
        out_widths = _sample_widths(cout, fractions, mult) if (pout or depthwise) else [cout]
        in_widths = _sample_widths(cin, fractions) if (pin and not depthwise) else [cin]
        shape = [batch, *shapes[name][1:]]
        cdim = len(shape) - 1 if kind == "linear" else 1
        dtype = m.weight.dtype if m.weight.is_floating_point() else torch.float32
        followers = [modules[f] for f in follow.get(name, [])]
        if kind == "linear" and len(shape) != 2:
            followers = []  # a BatchNorm1d after a token-wise linear normalises another dimension
        ms: list[list[float]] = []
        for wi in in_widths:
            row = []
            for wo in out_widths:
                ci = wo // mult if depthwise else wi
                layer = _timed_block(_fresh_layer(m, kind, ci, wo, device, dtype).eval(), kind, wo, followers)
                shape[cdim] = ci
                t, _ = _time_module(layer, torch.randn(shape, device=device, dtype=dtype), warmup, repeats)
                row.append(float(t))
            ms.append(row)
        table_layers[name] = LayerLatency(kind, cin, cout, depthwise, [batch, *shapes[name][1:]], in_widths,
                                          out_widths, ms, [type(f).__name__ for f in followers])
        if progress is not None:
            progress(f"{name}: {table_layers[name].full_ms:.4f} ms at full width, {len(in_widths) * len(out_widths)} samples")
    layer_sum = sum(lat.full_ms for lat in table_layers.values())
    meta: dict[str, Any] = {"torch": torch.__version__, "warmup": warmup, "repeats": repeats, "statistic": "median",
                            "fractions": list(fractions), "layer_sum_ms": layer_sum, "fuse": bool(fuse)}
    if device.type == "cpu":
        meta["allocator"] = allocator_settings()
    # elements per output channel at the table's batch size (the hooks saw batch 1)
    activations = {n: float(batch * torch.Size(s).numel() / max(1, s[1 if len(s) > 2 else -1]))
                   for n, s in out_shapes.items() if len(s) >= 2}
    table = WidthLatencyTable(device_name(device), batch, [batch, *x0.shape[1:]], float(whole_ms),
                              max(0.0, float(whole_ms) - layer_sum), table_layers, meta, 0.0, activations)
    if reference is not None:
        table = _split_rest(table, *reference)
    return table


def half_width_reference(model: nn.Module, example_inputs: torch.Tensor, *, batch: int = 1,
                         warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS,
                         attach_kwargs: Mapping[str, Any] | None = None,
                         ) -> tuple[float, dict[str, dict[str, Any]]] | None:
    """The latency (ms) and layer widths of a copy of the plain ``model`` with every channel group cut to half its
    units (the calibration of `measure_width_latency`); ``None`` when the model has no channel group.
    ``attach_kwargs``: passed to `rartsprune.attach_scores` (e.g. ``ignored_layers``), so that the copy's groups
    are the pruned model's.

    Examples:
        >>> import torch, torch.nn as nn
        >>> net = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 8, 3, padding=1))
        >>> ms, widths = half_width_reference(net, torch.randn(1, 3, 16, 16), warmup=1, repeats=3)
        >>> ms > 0, widths["0"]["out"]
        (True, 8)
    """
    from ..attach import attach_scores

    x0 = _single_tensor(example_inputs)
    twin = copy.deepcopy(model)
    kwargs = dict(attach_kwargs or {})
    if kwargs.get("ignored_layers"):  # modules of the model: the same modules of the copy
        names = {id(m): n for n, m in model.named_modules()}
        twin_modules = dict(twin.named_modules())
        kwargs["ignored_layers"] = [twin_modules[names[id(m)]] if isinstance(m, nn.Module) else m
                                    for m in kwargs["ignored_layers"]]
    handle = attach_scores(twin, x0.detach().to(_model_device(twin)), **kwargs)
    if not handle.groups:
        remove(twin)
        return None
    apply_surgery(twin, {g.name: list(range(max(1, g.num_units // 2))) for g in handle.groups}, verify=False)
    return time_model(twin, x0, batch=batch, warmup=warmup, repeats=repeats), layer_widths(twin)


def _split_rest(table: WidthLatencyTable, ref_ms: float, ref_widths: Mapping[str, Mapping[str, Any]]
                ) -> WidthLatencyTable:
    """``table`` with its remainder split by a second timing: ``ref_ms`` of a pruned copy whose layer widths are
    ``ref_widths``. With the remainders ``r_full`` (whole model) and ``r_ref`` (the copy, minus its predicted
    layers) and the copy's activation fraction ``f``: ``scaled = (r_full - r_ref) / (1 - f)``, clipped to
    ``[0, r_full]``, and the rest constant."""
    rest_full = table.rest_ms + table.rest_scaled_ms
    frac = table.activation_fraction(ref_widths)
    layers_ref = sum(lat.predict(ref_widths.get(n, {}).get("in"), ref_widths.get(n, {}).get("out"))
                     for n, lat in table.layers.items())
    rest_ref = float(ref_ms) - layers_ref
    scaled = 0.0 if frac >= 1.0 else min(max((rest_full - rest_ref) / (1.0 - frac), 0.0), rest_full)
    meta = {**table.meta, "reference": {"ms": float(ref_ms), "activation_fraction": frac,
                                        "predicted_layers_ms": layers_ref, "rest_ms": rest_ref}}
    return replace(table, rest_ms=rest_full - scaled, rest_scaled_ms=scaled, meta=meta)


# ---- the cost model of a latency budget ------------------------------------------------------------------


class LatencyModel:
    """Predicted latency of a scored model for any choice of kept units (the cost model of a latency budget).

    Args:
        handle: the scored model's handle.
        table: its `WidthLatencyTable` (every prunable layer must be in it).
        round_to: the ``round_to`` the surgery will use.

    Examples:
        >>> cost = LatencyModel(handle, table, round_to=8)  # doctest: +SKIP
        >>> sel = select_by_budget(handle, 0.6, kind="latency", importance=imp, cost=cost)  # doctest: +SKIP
    """

    def __init__(self, handle: ScoreHandle, table: WidthLatencyTable, *, round_to: int | None = None) -> None:
        self.handle = handle
        self.table = table
        self.round_to = round_to
        missing = sorted(set(prunable_layers(handle)) - set(table.layers))
        if missing:
            raise ValueError(f"the latency table has no samples of the prunable layers {missing[:5]}: it was measured "
                             "on another model (remove the file or pass another latency_table=)")
        full = layer_widths(handle.model, list(table.layers))
        for name, lat in table.layers.items():
            w = full.get(name, {})
            if (w.get("in"), w.get("out")) != (lat.in_channels, lat.out_channels):
                raise ValueError(f"layer {name!r} has widths {w.get('in')} -> {w.get('out')}, the latency table "
                                 f"{lat.in_channels} -> {lat.out_channels}: it was measured on another model")
        self.full_ms = table.full_ms

    def ms(self, keep: Mapping[str, Any]) -> float:
        """Predicted latency (ms) after keeping ``keep`` (group -> kept units), ``round_to`` applied."""
        plan = plan_from_scores(self.handle.model, keep, round_to=self.round_to)
        return self.table.predict(plan.widths)

    def fraction(self, keep: Mapping[str, Any], kind: str = "latency") -> float:
        """Fraction of the unpruned model's latency kept (``kind`` must be ``"latency"``): the table's predicted
        fraction, mapped through its measured points when it has any (`WidthLatencyTable.measured_fraction`), so
        that a budget with a fitted table is a fraction of the measured latency."""
        if kind != "latency":
            raise ValueError(f"a LatencyModel predicts latency, not {kind!r}; use a CostModel")
        return self.table.measured_fraction(self.ms(keep) / max(self.full_ms, 1e-12))

    def rounded(self, round_to: int | None) -> LatencyModel:
        """The same model and table with another ``round_to`` (nothing is checked or measured again).

        Examples:
            >>> LatencyModel(handle, table).rounded(8).round_to  # doctest: +SKIP
            8
        """
        if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, int) or round_to < 1):
            raise ValueError(f"round_to must be a positive integer or None, got {round_to!r}")
        other = copy.copy(self)
        other.round_to = round_to
        return other

    def unit_costs(self) -> dict[str, torch.Tensor]:
        """Per-unit latency cost of every scored group, as a fraction of the unpruned model's predicted latency.

        For a group of ``U`` units: the predicted latency saved when the group goes from full width to one
        unit, every other group at full width, per removed unit and over the unpruned prediction::

            c_u = (T(full) - T(group at one unit)) / (U - 1) / T(full)

        ``T`` is the table's prediction, which counts every layer the group's channels leave: the layers
        producing them (their output width), consuming them (their input width) and the depthwise layers
        between. It is the mean saving per unit over the group's whole width range — not the slope at full
        width, which the interpolation makes the last segment only (0 where timing noise left the widest
        samples level) — and for a table whose latency is proportional to the MACs it equals the MACs cost
        ``MACs_u / MACs`` up to the remainder's share. ``round_to`` is not applied. A group of one unit costs 0
        (it cannot be pruned). The costs of `rartsprune.width.penalties.WidthPenalty` with a latency budget.

        Examples:
            >>> costs = LatencyModel(handle, table).unit_costs()  # doctest: +SKIP
            >>> float(costs["layer1.0.conv1"][0])  # share of the latency one of its channels costs  # doctest: +SKIP
        """
        model = self.handle.model
        full = max(self.full_ms, 1e-12)
        out: dict[str, torch.Tensor] = {}
        for g in self.handle.groups:
            if g.num_units < 2:
                out[g.name] = torch.zeros(g.num_units)
                continue
            least = plan_from_scores(model, {g.name: [0]}).widths
            saved = max(0.0, self.full_ms - self.table.predict(least))
            out[g.name] = torch.full((g.num_units,), saved / (g.num_units - 1) / full)
        return out


def latency_report(model: nn.Module, table: WidthLatencyTable, example_inputs: torch.Tensor, *,
                   warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS) -> dict[str, Any]:
    """Predicted vs measured latency of ``model`` (pruned or not) at the table's batch size.

    Returns ``predicted_ms``, ``measured_ms`` (median of ``repeats``), ``ratio`` (measured / predicted),
    ``unpruned_predicted_ms`` / ``unpruned_measured_ms`` (the table's), their fractions, the device and batch.
    ``ValueError`` when the table was measured on another device or input shape.

    Examples:
        >>> report = latency_report(pruned, table, torch.randn(1, 3, 32, 32))  # doctest: +SKIP
        >>> report["predicted_ms"], report["measured_ms"], report["ratio"]  # doctest: +SKIP
    """
    x = _single_tensor(example_inputs)
    table.check(device=device_name(_model_device(model)), input_shape=[table.batch, *x.shape[1:]],
                allocator=allocator_settings() if _model_device(model).type == "cpu" else None)
    predicted = table.predict_model(model)
    measured = time_model(model, x, batch=table.batch, warmup=warmup, repeats=repeats)
    return {"device": table.device, "batch": table.batch, "predicted_ms": predicted, "measured_ms": measured,
            "ratio": measured / predicted if predicted > 0 else float("nan"),
            "unpruned_predicted_ms": table.full_ms, "unpruned_measured_ms": table.whole_ms,
            "predicted_fraction": predicted / table.full_ms if table.full_ms > 0 else float("nan"),
            "measured_fraction": measured / table.whole_ms if table.whole_ms > 0 else float("nan")}
