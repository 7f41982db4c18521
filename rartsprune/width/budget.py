"""Selection to a cost budget: keep a fraction of the model's MACs (or parameters), least important units first.

`select_by_ratio` removes a fraction of *channels*; what a user pays for is MACs (or parameters), and
channels differ widely in what they cost (a channel of a 56x56 layer costs 16x one of a 14x14 layer).
`select_by_budget` removes units in order of importance until the model's predicted cost is at most
``budget`` times the unpruned cost:

* the cost of a set of kept units is *predicted* layer by layer from the widths the surgery would produce
  (`rartsprune.surgery.plan_from_scores`, so ``round_to`` is included): each layer's fvcore MACs (batch 1)
  scale with its kept input and output fractions (a convolution between two pruned groups with both, a
  depthwise convolution or a normalisation with one), and its parameters likewise. Layers without channel
  widths (pooling, activations) keep their MACs. The prediction is checked against fvcore after surgery in
  the tests (within 2% on torchvision and timm models);
* ``scope="global"``: units are ranked together (every group's best unit protected, or its
  ``ceil((1 - max_pruning_ratio) * units)`` best with a cap), and the number of removed units is the smallest
  that meets the budget (bisection: the cost only falls as units go);
* ``scope="layer"``: every group loses the same fraction of its units, the smallest fraction that meets it;
* the reachable minimum is the cost with one unit per group (or the cap's floor; after ``round_to``); a budget
  below it raises ``ValueError`` naming it.

Examples:
    >>> cost = CostModel(handle)  # doctest: +SKIP
    >>> sel = select_by_budget(handle, 0.5, importance=imp, cost=cost)  # doctest: +SKIP
    >>> cost.fraction(sel.keep, "macs") <= 0.5  # doctest: +SKIP
    True
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import torch
import torch.nn as nn

from ..flops import flops_report
from ..scores import ScoreHandle, _check_inputs
from ..surgery import layer_widths, plan_from_scores
from .selection import (
    Selection,
    _check_importance,
    _finish,
    check_max_pruning_ratio,
    protected_units,
    select_by_ratio,
)

__all__ = ["BUDGET_KINDS", "BudgetCost", "CostModel", "check_budget", "resolve_budget", "select_by_budget"]

#: The costs a budget can be given in (``"latency"``: measured on the target device, `rartsprune.width.latency`).
BUDGET_KINDS = ("macs", "params", "latency")


def check_budget(value: Any, kind: str) -> float:
    """Validate a budget fraction: a real number strictly between 0 and 1 (raises ``ValueError``)."""
    if kind not in BUDGET_KINDS:
        raise ValueError(f"budget kind must be one of {BUDGET_KINDS}, got {kind!r}")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0.0 < value < 1.0:
        raise ValueError(
            f"{kind} must be a number strictly between 0 and 1 (the fraction of the model's {_WHAT[kind]} to keep), "
            f"got {value!r}"
        )
    return float(value)


_WHAT = {"macs": "MACs", "params": "parameters", "latency": "measured latency"}


def resolve_budget(macs: Any = None, params: Any = None, *, mode: str = "ratio",
                   latency: Any = None) -> tuple[str, float] | None:
    """The ``(kind, fraction)`` budget of ``macs=`` / ``params=`` / ``latency=`` (at most one), or ``None``.

    Shared by `rartsprune.prune` and `rartsprune.app.pipeline.PruneJob` so both refuse the same inputs with the
    same messages: two given, a value outside (0, 1), or a budget with ``mode="l1"`` (whose threshold decides
    the size).

    Examples:
        >>> resolve_budget(latency=0.6)
        ('latency', 0.6)
        >>> resolve_budget(macs=0.5, latency=0.6)  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: pass one of macs=, params= or latency=, not macs and latency
    """
    given = [(kind, value) for kind, value in (("macs", macs), ("params", params), ("latency", latency))
             if value is not None]
    if len(given) > 1:
        if latency is None:
            raise ValueError("pass one of macs= or params=, not macs and params")
        raise ValueError(f"pass one of macs=, params= or latency=, not {given[0][0]} and {given[1][0]}")
    if not given:
        return None
    kind, value = given[0]
    budget = (kind, check_budget(value, kind))
    if mode != "ratio":
        raise ValueError(f"{kind}= is a budget for mode='ratio'; mode={mode!r} decides the size by its threshold")
    return budget


def _scale_rules(module: nn.Module, width: Mapping[str, Any]) -> Callable[[Mapping[str, Any]], float]:
    """How a layer's MACs scale with its new widths (``new -> fraction``)."""
    is_dw = isinstance(module, nn.modules.conv._ConvNd) and module.groups > 1 and module.groups == module.in_channels
    has_in = "in" in width and not is_dw

    def scale(new: Mapping[str, Any]) -> float:
        f = new["out"] / max(width["out"], 1)
        if has_in:
            f *= new["in"] / max(width["in"], 1)
        return f

    return scale


class BudgetCost(Protocol):
    """What `select_by_budget` needs of a cost model: the surgery's ``round_to`` and the kept fraction."""

    round_to: int | None

    def fraction(self, keep: Mapping[str, Any], kind: str = ...) -> float:
        """Predicted fraction of the unpruned model's ``kind`` cost kept with ``keep``."""
        ...


class CostModel:
    """Predicted MACs and parameters of a scored model for any choice of kept units.

    Args:
        handle: the scored model's handle (its example inputs are used at batch size 1 as given).
        round_to: the ``round_to`` the surgery will use (kept counts are rounded up before costing).

    Attributes:
        macs, params: the unpruned model's counts (fvcore; the scores are not counted as parameters).
    """

    def __init__(self, handle: ScoreHandle, *, round_to: int | None = None) -> None:
        self.handle = handle
        self.round_to = round_to
        model = handle.model
        report = flops_report(model, _check_inputs(model, handle.example_inputs))
        widths = layer_widths(model)
        modules = dict(model.named_modules())
        alpha_params = sum(a.numel() for a in handle.scores)
        self.macs = int(report.macs)
        self.params = int(report.params) - alpha_params
        # (layer, MACs, weight entries that scale like the MACs, bias entries that scale with "out", scale rule)
        self._layers: list[tuple[str, int, int, int, Callable[[Mapping[str, Any]], float]]] = []
        for name, w in widths.items():
            if "out" not in w:
                continue
            module = modules[name]
            macs = int(report.by_module.get(name, {}).get("macs", 0))
            params = sum(p.numel() for n, p in module.named_parameters(recurse=True)
                         if not n.split(".")[-1].startswith("rartsprune_alpha_"))
            bias = getattr(module, "bias", None)
            bias_n = bias.numel() if isinstance(bias, torch.Tensor) and bias.dim() == 1 else 0
            if macs or params:
                self._layers.append((name, macs, params - bias_n, bias_n, _scale_rules(module, w)))
        self._fixed_macs = self.macs - sum(layer[1] for layer in self._layers)
        self._fixed_params = self.params - sum(layer[2] + layer[3] for layer in self._layers)
        self._widths = widths

    def counts(self, keep: Mapping[str, Any]) -> tuple[float, float]:
        """Predicted (MACs, parameters) after keeping ``keep`` (group -> kept units), ``round_to`` applied."""
        plan = plan_from_scores(self.handle.model, keep, round_to=self.round_to)
        macs = float(self._fixed_macs)
        params = float(self._fixed_params)
        for name, layer_macs, weight_n, bias_n, scale in self._layers:
            new = plan.widths.get(name, self._widths[name])
            f = scale(new)
            macs += layer_macs * f
            params += weight_n * f + bias_n * new["out"] / max(self._widths[name]["out"], 1)
        return macs, params

    def fraction(self, keep: Mapping[str, Any], kind: str = "macs") -> float:
        """Predicted fraction of the unpruned MACs (``kind="macs"``) or parameters (``"params"``) kept."""
        macs, params = self.counts(keep)
        return macs / max(self.macs, 1) if kind == "macs" else params / max(self.params, 1)


def select_by_budget(
    handle: ScoreHandle,
    budget: float,
    *,
    kind: str = "macs",
    importance: Mapping[str, torch.Tensor],
    scope: str = "global",
    cost: BudgetCost | None = None,
    round_to: int | None = None,
    check_only: bool = False,
    max_pruning_ratio: float = 1.0,
) -> Selection | None:
    """Remove the least important units until the predicted ``kind`` cost is at most ``budget`` of the model's.

    Args:
        handle: the scored model's handle.
        budget: fraction of the unpruned model's MACs (``kind="macs"``), parameters (``"params"``) or
            measured latency (``"latency"``) to keep, strictly between 0 and 1.
        importance: per-group unit importances (higher = keep).
        scope: ``"global"`` (rank every unit together) or ``"layer"`` (the same fraction from every group).
        cost: a `CostModel` of ``handle`` (built if omitted; pass one to reuse it); for ``kind="latency"``
            a `rartsprune.width.latency.LatencyModel` (required).
        round_to: the surgery's ``round_to`` (ignored when ``cost`` is given: the cost model's is used).
        check_only: only check that the budget is valid and reachable; returns ``None``.
        max_pruning_ratio: the largest fraction of any group's units removed
            (`rartsprune.width.selection.protected_units`; 1: no cap, every group keeps at least one unit).

    Raises:
        ValueError: a budget that is not a number in (0, 1) or is below the reachable minimum (every group
            keeps one unit, or the cap's floor); the message names the minimum.
    """
    budget = check_budget(budget, kind)
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    max_pruning_ratio = check_max_pruning_ratio(max_pruning_ratio)
    imp = dict(importance)
    _check_importance(handle, imp)
    if cost is None and kind == "latency":
        raise ValueError("a latency budget needs its cost model: pass cost=LatencyModel(handle, table)")
    cost = cost if cost is not None else CostModel(handle, round_to=round_to)
    protected = protected_units(handle, imp, max_pruning_ratio)
    minimum = cost.fraction(protected, kind)
    if minimum > budget:
        floor = ("one unit kept per layer" if max_pruning_ratio == 1.0 else
                 f"max_pruning_ratio={max_pruning_ratio:g} (every layer keeps at least {1 - max_pruning_ratio:.3g} "
                 "of its units)")
        raise ValueError(
            f"{kind}={budget} is below the reachable minimum: with {floor} the model keeps "
            f"{minimum:.4f} of its {_WHAT[kind]} (round_to={cost.round_to}); pass {kind} >= {math.ceil(minimum * 1e4) / 1e4}"
        )
    if check_only and scope == "global":
        return None
    if scope == "layer":
        def keep_at(step: int) -> dict[str, list[int]]:
            return select_by_ratio(handle, step / _LAYER_STEPS, importance=imp, scope="layer",
                                   max_pruning_ratio=max_pruning_ratio).keep

        n = _LAYER_STEPS - 1
    else:
        candidates: list[tuple[float, str, int]] = []
        for g in handle.groups:
            safe = set(protected[g.name])
            candidates += [(float(imp[g.name][u]), g.name, u) for u in range(g.num_units) if u not in safe]
        candidates.sort()
        n = len(candidates)

        def keep_at(step: int) -> dict[str, list[int]]:
            gone: dict[str, set[int]] = {g.name: set() for g in handle.groups}
            for _, name, unit in candidates[:step]:
                gone[name].add(unit)
            return {g.name: [u for u in range(g.num_units) if u not in gone[g.name]] for g in handle.groups}

    lo, hi = 0, n  # the cost at hi meets the budget (hi = n is the minimum, checked above for "global")
    if scope == "layer" and cost.fraction(keep_at(hi), kind) > budget:
        raise ValueError(
            f"{kind}={budget} cannot be met with scope='layer' (removing the same fraction from every layer reaches "
            f"{cost.fraction(keep_at(hi), kind):.4f} at most); use scope='global' or a larger budget"
        )
    if check_only:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if cost.fraction(keep_at(mid), kind) <= budget:
            hi = mid
        else:
            lo = mid + 1
    keep = keep_at(hi)
    if scope == "global" and cost.round_to is not None and hi > 0:
        keep = _fill_back(keep, candidates[:hi], cost, budget, kind)
    return _finish(handle, keep)


def _fill_back(keep: dict[str, list[int]], removed: list[tuple[float, str, int]], cost: BudgetCost,
               budget: float, kind: str) -> dict[str, list[int]]:
    """Give back removed units, most important first, while the budget still holds.

    With ``round_to`` the cost falls in steps of a whole block of channels, so the bisection can stop one
    block of an expensive layer below the budget; units of cheaper layers that still fit are returned.
    Once a unit of a group does not fit, no later unit of that group is tried (the cost only grows).
    """
    kept = {name: set(units) for name, units in keep.items()}
    current = cost.fraction(keep, kind)
    full: set[str] = set()  # groups where one more unit broke the budget: the cost only grows, skip them
    for _, name, unit in reversed(removed):  # the most important removed unit first
        if budget - current < 1e-6:
            break
        if name in full:
            continue
        kept[name].add(unit)
        value = cost.fraction({n: sorted(u) for n, u in kept.items()}, kind)
        if value <= budget:
            current = value
        else:
            kept[name].discard(unit)
            full.add(name)
    return {n: sorted(u) for n, u in kept.items()}


#: Resolution of the per-layer fraction for ``scope="layer"`` budgets (fractions k / _LAYER_STEPS).
_LAYER_STEPS = 1000
