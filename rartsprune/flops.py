"""Multiply-accumulate (MAC) and parameter counts of a model, per module, on top of fvcore.

fvcore's `fvcore.nn.FlopCountAnalysis` traces the model with ``torch.jit`` and counts one unit
per fused multiply-add, so every number here is labelled **MACs** (1 MAC ~ 2 FLOPs). On top of fvcore
this module

* counts ``aten::scaled_dot_product_attention`` (fvcore skips it): for ``q (..., L, E)``, ``k (..., S, E)``,
  ``v (..., S, Ev)`` it adds ``prod(batch dims of q) * L * S * (E + Ev)`` MACs (``q k^T`` and ``attn v``;
  softmax, scaling and masking are not MACs and are left out, as fvcore does for softmax);
* counts ``aten::_native_multi_head_attention``, the fused path of ``nn.MultiheadAttention`` in eval mode
  (fvcore counts 0 for it: a torchvision ViT-B/16 read 11.29 instead of 17.58 GMACs), as its projections
  plus attention (`mha_mac_handle`);
* turns fvcore's own logging of unsupported ops and uncalled modules off, and keeps the list in
  `FlopsReport.unsupported_ops` instead;
* traces in eval mode under ``torch.no_grad`` and restores every module's own ``training`` flag, every
  parameter's ``requires_grad`` and the module hooks afterwards, also when tracing fails;
* raises `rartsprune.errors.UnsupportedModelError` naming the model class and the original error
  when the model cannot be traced;
* counts a two-stage torchvision detector (Faster / Mask / Keypoint R-CNN) at a fixed number of boxes
  (`rartsprune.tasks.TwoStageMacsView`: the RPN's post-NMS proposal count for the box head, the detections per
  image for the mask / keypoint heads), not at the weight- and image-dependent number its own forward keeps.

Examples:
    >>> import torch, torchvision
    >>> from rartsprune.flops import flops_report, format_count
    >>> report = flops_report(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
    >>> format_count(report.macs), format_count(report.params)
    ('1.82G', '11.69M')
    >>> print(report.table(max_depth=1))  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import ModuleType
from typing import Any

import torch
import torch.nn as nn

from .errors import UnsupportedModelError
from .tasks import TwoStageMacsView, is_two_stage_detector

__all__ = [
    "FlopsReport",
    "flops_report",
    "compare_reports",
    "format_count",
    "sdpa_mac_handle",
    "mha_mac_handle",
]

#: Signature of an fvcore op handle: (list of jit input values, list of jit output values) -> count.
OpHandle = Callable[[list[Any], list[Any]], Any]

_SDPA_OP = "aten::scaled_dot_product_attention"
_MHA_OP = "aten::_native_multi_head_attention"
_UNITS = ("", "K", "M", "G", "T", "P", "E")


@cache
def _fvcore() -> ModuleType:
    """Import ``fvcore.nn`` once, silencing the FutureWarnings its import triggers (locally only)."""
    with warnings.catch_warnings():
        # fvcore decorates helpers with torch.jit.script, which torch deprecates with a FutureWarning.
        warnings.simplefilter("ignore", FutureWarning)
        import fvcore.nn as fvnn
    return fvnn


def _jit_shape(value: Any) -> list[int]:
    """Shape of a jit graph value; raises when the trace did not record it."""
    if not value.isCompleteTensor():
        raise UnsupportedModelError(f"{_SDPA_OP}: the trace did not record the shape of an input")
    return list(value.type().sizes())


def sdpa_mac_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore op handle for ``aten::scaled_dot_product_attention``: MACs of ``q k^T`` and ``attn v``.

    For ``q (..., L, E)``, ``k (..., S, E)``, ``v (..., S, Ev)`` the count is
    ``prod(q.shape[:-2]) * L * S * (E + Ev)`` (grouped-query attention included: the query heads set
    the count).

    Examples:
        >>> # used internally: analysis.set_op_handle("aten::scaled_dot_product_attention", sdpa_mac_handle)
    """
    q, k, v = (_jit_shape(x) for x in inputs[:3])
    *batch, length, e = q
    s = k[-2]
    ev = v[-1]
    return int(math.prod(batch)) * length * s * (e + ev)


def mha_mac_handle(inputs: list[Any], outputs: list[Any]) -> int:
    """fvcore op handle for ``aten::_native_multi_head_attention``, the fused fast path that
    ``nn.MultiheadAttention`` takes in eval mode under ``no_grad`` (fvcore counts it as 0).

    The fast path runs batch-first only: for ``query (B, L, E)`` and ``key``/``value (B, S, E)`` the count is
    ``B*L*E*E`` (query projection) + ``2*B*S*E*E`` (key and value projections) + ``2*B*L*S*E`` (``q k^T``
    and ``attn v`` over all heads) + ``B*L*E*E`` (output projection): what the unfused path counts.

    Examples:
        >>> # used internally: analysis.set_op_handle("aten::_native_multi_head_attention", mha_mac_handle)
    """
    q, k = _jit_shape(inputs[0]), _jit_shape(inputs[1])
    if len(q) != 3 or len(k) != 3:
        raise UnsupportedModelError(f"{_MHA_OP}: expected 3-d batch-first query and key, got {q} and {k}")
    b, length, e = q
    s = k[1]
    return b * length * e * e * 2 + 2 * b * s * e * e + 2 * b * length * s * e


def format_count(n: float) -> str:
    """Human-readable count with K/M/G/T suffixes (powers of 1000).

    Below 1000 the integer is printed as is; otherwise two decimals below 100 of the unit, one above.

    Examples:
        >>> format_count(1703258), format_count(255_400_000), format_count(1_818_558_976), format_count(512)
        ('1.70M', '255.4M', '1.82G', '512')
    """
    if isinstance(n, bool) or not isinstance(n, (int, float)):
        raise TypeError(f"format_count expects an int or float, got {type(n).__name__}")
    if not math.isfinite(n):
        return str(n)
    sign = "-" if n < 0 else ""
    value = abs(n)
    if value < 1000:
        return f"{sign}{value:g}" if isinstance(n, float) and value != int(value) else f"{sign}{int(value)}"
    unit = 0
    while value >= 1000 and unit < len(_UNITS) - 1:
        value /= 1000.0
        unit += 1
    text = f"{value:.2f}" if value < 100 else f"{value:.1f}"
    if float(text) >= 1000 and unit < len(_UNITS) - 1:  # 999.96K rounds to 1000.0K: move up a unit
        value /= 1000.0
        unit += 1
        text = f"{value:.2f}"
    return f"{sign}{text}{_UNITS[unit]}"


@dataclass
class FlopsReport:
    """MACs and parameters of a model, in total and per module (module name ``""`` is the model).

    Attributes:
        macs: total multiply-accumulates of one forward pass on the example inputs.
        params: total parameters (shared parameters counted once).
        by_module: module name -> ``{"macs": int, "params": int}``, for every module in
            ``named_modules()`` order (a module's count includes its children).
        by_operator: op name (fvcore's short name, e.g. ``"conv"``, ``"linear"``,
            ``"scaled_dot_product_attention"``) -> MACs.
        unsupported_ops: op -> number of calls of ops that were seen but not counted.
        uncalled_modules: modules that hold parameters or ops but were not called by the trace.
        model_name: class name of the model.
        input_shapes: shapes of the example inputs.

    Examples:
        >>> import torch
        >>> r = flops_report(torch.nn.Conv2d(3, 8, 3, padding=1), torch.randn(1, 3, 4, 4))
        >>> r.macs, r.params  # 8*4*4 outputs x 27 MACs; 8*27 + 8 params
        (3456, 224)
    """

    macs: int
    params: int
    by_module: dict[str, dict[str, int]]
    by_operator: dict[str, int] = field(default_factory=dict)
    unsupported_ops: dict[str, int] = field(default_factory=dict)
    uncalled_modules: list[str] = field(default_factory=list)
    model_name: str = ""
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)

    def table(self, max_depth: int = 2) -> str:
        """Markdown table of params and MACs for modules up to ``max_depth`` levels below the model.

        Modules with neither parameters nor MACs (activations, pooling without MACs) are left out.

        Examples:
            >>> import torch
            >>> r = flops_report(torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.randn(1, 4))
            >>> print(r.table())
            | module | params | MACs |
            |:--|--:|--:|
            | model | 10 | 8 |
            | &nbsp;&nbsp;0 | 10 | 8 |
        """
        _check_depth(max_depth)
        lines = ["| module | params | MACs |", "|:--|--:|--:|"]
        for name, depth in _rows(self.by_module, max_depth):
            stats = self.by_module[name]
            if name and stats["params"] == 0 and stats["macs"] == 0:
                continue
            lines.append(
                f"| {_label(name, depth)} | {format_count(stats['params'])} | {format_count(stats['macs'])} |"
            )
        if self.unsupported_ops:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.unsupported_ops.items()))
            lines.append("")
            lines.append(f"Not counted (no MAC handle): {ops}")
        return "\n".join(lines)

    def text(self, max_depth: int = 2) -> str:
        """Aligned plain-text tree of params and MACs (for a terminal; `table` is the markdown form).

        Examples:
            >>> import torch
            >>> r = flops_report(torch.nn.Sequential(torch.nn.Linear(4, 2)), torch.randn(1, 4))
            >>> print(r.text())
            module  params  MACs
            model       10     8
              0         10     8
        """
        _check_depth(max_depth)
        rows = [("module", "params", "MACs")]
        for name, depth in _rows(self.by_module, max_depth):
            stats = self.by_module[name]
            if name and stats["params"] == 0 and stats["macs"] == 0:
                continue
            label = "model" if name == "" else "  " * depth + name
            rows.append((label, format_count(stats["params"]), format_count(stats["macs"])))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        w2 = max(len(r[2]) for r in rows)
        lines = [f"{a:<{w0}}  {b:>{w1}}  {c:>{w2}}".rstrip() for a, b, c in rows]
        if self.unsupported_ops:
            ops = ", ".join(f"{op} x{n}" for op, n in sorted(self.unsupported_ops.items()))
            lines.append(f"not counted (no MAC handle): {ops}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict: totals, per-module counts and the ops that were not counted."""
        return {"model": self.model_name, "macs": self.macs, "params": self.params,
                "by_module": {k: dict(v) for k, v in self.by_module.items()}, "unsupported_ops": dict(self.unsupported_ops)}

    def __str__(self) -> str:
        return f"{self.model_name}: {format_count(self.macs)} MACs, {format_count(self.params)} params"


def _check_depth(max_depth: int) -> None:
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 0:
        raise ValueError(f"max_depth must be a non-negative int, got {max_depth!r}")


def _depth(name: str) -> int:
    return 0 if name == "" else name.count(".") + 1


def _rows(by_module: Mapping[str, Any], max_depth: int) -> list[tuple[str, int]]:
    return [(name, _depth(name)) for name in by_module if _depth(name) <= max_depth]


def _label(name: str, depth: int) -> str:
    return "model" if name == "" else "&nbsp;" * (2 * depth) + name


def _ratio(before: int | None, after: int | None) -> str:
    if before is None or after is None:
        return "—"
    if before == 0:
        return "—" if after == 0 else "new"
    return f"{after / before:.3f}x"


def compare_reports(before: FlopsReport, after: FlopsReport, *, max_depth: int = 1) -> str:
    """Markdown table comparing two reports (e.g. before and after pruning), with after/before ratios.

    Modules present in only one report show ``—`` on the other side.

    Examples:
        >>> import torch
        >>> x = torch.randn(1, 3, 8, 8)
        >>> a = flops_report(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)), x)
        >>> b = flops_report(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), x)
        >>> print(compare_reports(a, b).splitlines()[2])
        | model | 224 | 112 | 0.500x | 7.78K | 3.89K | 0.500x |
    """
    if not isinstance(before, FlopsReport) or not isinstance(after, FlopsReport):
        raise TypeError("compare_reports expects two FlopsReport objects")
    _check_depth(max_depth)
    names = [n for n, _ in _rows(before.by_module, max_depth)]
    names += [n for n, _ in _rows(after.by_module, max_depth) if n not in before.by_module]
    lines = [
        "| module | params before | params after | params ratio | MACs before | MACs after | MACs ratio |",
        "|:--|--:|--:|--:|--:|--:|--:|",
    ]
    for name in names:
        b = before.by_module.get(name)
        a = after.by_module.get(name)
        if name and all(s is None or (s["params"] == 0 and s["macs"] == 0) for s in (a, b)):
            continue
        cells = [_label(name, _depth(name))]
        for key in ("params", "macs"):
            vb = None if b is None else b[key]
            va = None if a is None else a[key]
            cells += [
                "—" if vb is None else format_count(vb),
                "—" if va is None else format_count(va),
                _ratio(vb, va),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _tensors_only(x: Any) -> bool:
    """A tensor, or a non-empty list / tuple of tensors (nested)."""
    if isinstance(x, torch.Tensor):
        return True
    return isinstance(x, (tuple, list)) and bool(x) and all(_tensors_only(v) for v in x)


def _flat_tensors(x: Any) -> list[torch.Tensor]:
    """The tensors of a (nested) list / tuple, in order."""
    if isinstance(x, torch.Tensor):
        return [x]
    return [t for v in x for t in _flat_tensors(v)]


def _as_input_tuple(example_inputs: Any) -> tuple[torch.Tensor, ...]:
    if isinstance(example_inputs, torch.Tensor):
        return (example_inputs,)
    if isinstance(example_inputs, (tuple, list)) and example_inputs:
        # a list of tensors as one argument (a torchvision detector's images) traces too
        bad = [type(x).__name__ for x in example_inputs if not _tensors_only(x)]
        if not bad:
            return tuple(example_inputs)
        raise TypeError(
            f"example_inputs must be tensors or lists of tensors (fvcore traces model(*inputs)); got {', '.join(bad)}. "
            "Wrap the model in a module whose forward takes tensors only."
        )
    raise TypeError(
        f"example_inputs must be a Tensor or a non-empty tuple of Tensors, got {type(example_inputs).__name__}"
    )


_HOOK_DICTS = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


@contextlib.contextmanager
def _traced_state(model: nn.Module) -> Iterator[None]:
    """Eval mode + no_grad for the trace; restores modes, requires_grad flags and hooks afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    hooks = [(m, {attr: set(getattr(m, attr, {}).keys()) for attr in _HOOK_DICTS}) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in flags:
            if p.requires_grad != flag:
                p.requires_grad_(flag)
        # fvcore registers scope hooks on every module and removes them only when the trace succeeds.
        for m, before in hooks:
            for attr, keys in before.items():
                hook_dict = getattr(m, attr, None)
                if hook_dict is None:
                    continue
                for key in [k for k in hook_dict if k not in keys]:
                    del hook_dict[key]


def flops_report(
    model: nn.Module,
    example_inputs: torch.Tensor | Sequence[torch.Tensor],
    *,
    handles: Mapping[str, OpHandle | None] | None = None,
) -> FlopsReport:
    """Count MACs (per fvcore: one per multiply-add) and parameters of ``model(*example_inputs)``.

    Args:
        model: any ``nn.Module`` that ``torch.jit`` can trace with these inputs.
        example_inputs: a tensor or tuple of tensors on the model's device; the batch size counts
            (use batch 1 for per-image MACs).
        handles: extra or replacement fvcore op handles, e.g. ``{"aten::gelu": None}`` to ignore an op
            or ``{"aten::my_op": fn}``; ``scaled_dot_product_attention`` is handled by default.

    Returns:
        a `FlopsReport`. The model's ``training`` flags, ``requires_grad`` flags and hooks are as
        before the call.

    Raises:
        TypeError: the inputs are not tensors.
        UnsupportedModelError: tracing failed (message names the model class and the original error).

    Examples:
        >>> import torch
        >>> r = flops_report(torch.nn.Linear(10, 5), torch.randn(3, 10))
        >>> r.macs, r.params
        (150, 55)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    inputs = _as_input_tuple(example_inputs)
    fvnn = _fvcore()
    name = type(model).__name__
    op_handles: dict[str, OpHandle | None] = {_SDPA_OP: sdpa_mac_handle, _MHA_OP: mha_mac_handle}
    if handles is not None:
        op_handles.update(handles)
    # a two-stage detector's own forward runs its heads on as many boxes as survive NMS: count a fixed number
    traced = TwoStageMacsView(model) if is_two_stage_detector(model) else model
    with _traced_state(model):
        traced.eval()
        analysis = fvnn.FlopCountAnalysis(traced, inputs)
        analysis.set_op_handle(**op_handles)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
        try:
            total = int(analysis.total())
            per_module = analysis.by_module()
            per_op = analysis.by_operator()
            unsupported = analysis.unsupported_ops()
            uncalled = analysis.uncalled_modules()
        except UnsupportedModelError:
            raise
        except Exception as exc:  # tracing can fail with any error type raised by user code
            raise UnsupportedModelError(
                f"cannot trace {name} to count MACs (torch.jit.trace via fvcore failed): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
    param_counts = fvnn.parameter_count(model)
    by_module: dict[str, dict[str, int]] = {}
    for mod_name in per_module:
        by_module[mod_name] = {
            "macs": int(per_module[mod_name]),
            "params": int(param_counts.get(mod_name, 0)),
        }
    return FlopsReport(
        macs=total,
        params=int(param_counts.get("", 0)),
        by_module=by_module,
        by_operator={op: int(n) for op, n in per_op.items()},
        unsupported_ops=dict(unsupported),
        uncalled_modules=sorted(uncalled),
        model_name=name,
        input_shapes=[tuple(x.shape) for x in _flat_tensors(inputs)],
    )
