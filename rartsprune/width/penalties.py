"""Penalties on the channel scores: ℓ1 sparsity, its proximal step, and the width cost (MACs or latency).

The width cost is the channel analogue of the latency term ⟨softmax(α), Lat⟩ of RARTS' Eq. (5): every
unit of every group has a cost ``c_u``, a fraction of the whole model's cost, and the penalty is

    cost_weight * Σ_groups Σ_units |α_u| * c_u

By default (and with a MACs budget) ``c_u = MACs_u / MACs_model``, the multiply-accumulates (counted by
fvcore) that the unit's channels cause in the layers producing and consuming them: its *marginal* cost, what
removing it alone saves (a conv's MACs divided by its output channels for the group producing them, plus its
MACs divided by its input channels for the group feeding it). ``cost_weight`` is dimensionless: at α = 1 the
sum is at most 2 (each conv's MACs are counted once through its inputs and once through its outputs), and a
larger ``cost_weight`` trades accuracy for fewer MACs.

With a parameter budget (``kind="params"``) ``c_u = params_u / params_model`` likewise: the weights and biases
that removing the unit alone deletes (a conv's weight entries divided by its output channels plus its bias
entry for the producing group, its weight entries divided by its input channels for the consuming group, a
normalisation's affine entries divided by its channels), `unit_params`. A channel of a late, narrow-map layer
costs few MACs but many parameters, so the two pressures push different layers.

With a latency budget the costs are the units' share of the *predicted latency* instead
(`rartsprune.width.latency.LatencyModel.unit_costs`, passed as ``unit_costs=``), on the same dimensionless
scale.

Examples:
    >>> penalty = WidthPenalty(handle, l1=1e-4, cost_weight=0.5)  # doctest: +SKIP
    >>> float(penalty())  # doctest: +SKIP
    >>> params_pressure = WidthPenalty(handle, cost_weight=2, kind="params")  # doctest: +SKIP
    >>> latency_pressure = WidthPenalty(handle, cost_weight=2, unit_costs=latency_model.unit_costs())  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from ..flops import flops_report
from ..graph import ChannelGroup, side_width
from ..scores import ScoreHandle, _check_inputs

__all__ = ["unit_macs", "unit_params", "WidthPenalty", "soft_threshold_"]

#: The costs `WidthPenalty` computes itself (``unit_costs`` passes any other).
PENALTY_KINDS = ("macs", "params")


def _per_channel_macs(group: ChannelGroup, by_module: dict[str, dict[str, int]], modules: dict) -> torch.Tensor:
    """MACs caused by each root channel of ``group`` in its producing and consuming conv/linear layers."""
    cost = torch.zeros(group.channels, dtype=torch.float64)
    for m in group.members:
        if m.op not in ("conv", "dwconv", "linear"):
            continue
        macs = by_module.get(m.name, {}).get("macs", 0)
        module = modules.get(m.name)
        if not macs or module is None:
            continue
        if m.op == "linear":
            width = module.out_features if m.side == "out" else module.in_features
        else:
            width = module.out_channels if (m.side == "out" or m.op == "dwconv") else module.in_channels
        per = macs / max(width, 1)
        for r in m.root_idxs:
            cost[r] += per
    return cost


def _weight_and_bias(module: torch.nn.Module) -> tuple[int, int]:
    """Entries of the module's ``weight`` and 1-d ``bias`` (read through any parametrization; 0 when absent)."""
    weight, bias = getattr(module, "weight", None), getattr(module, "bias", None)
    return (weight.numel() if isinstance(weight, torch.Tensor) else 0,
            bias.numel() if isinstance(bias, torch.Tensor) and bias.dim() == 1 else 0)


def _per_channel_params(group: ChannelGroup, modules: dict) -> torch.Tensor:
    """Weight and bias entries that each root channel of ``group`` owns in its layers (what removing it deletes)."""
    cost = torch.zeros(group.channels, dtype=torch.float64)
    seen: set[tuple[str, str]] = set()
    for m in group.members:
        module = modules.get(m.name)
        if module is None or m.op == "param":
            continue
        # a depthwise conv or a normalisation has one set of weights for both sides: counted once
        side = m.side if m.op in ("conv", "linear") else "both"
        if (m.name, side) in seen:
            continue
        seen.add((m.name, side))
        weight_n, bias_n = _weight_and_bias(module)
        if m.op in ("conv", "linear"):
            width = max(side_width(module, m.op, m.side, 0) or 1, 1)
            per = (weight_n + (bias_n if m.side == "out" else 0)) / width
        else:
            per = (weight_n + bias_n) / max(side_width(module, m.op, "out", 0) or 1, 1)
        for r in m.root_idxs:
            cost[r] += per
    return cost


def _per_unit(group: ChannelGroup, per_channel: torch.Tensor) -> torch.Tensor:
    per_unit = torch.zeros(group.num_units, dtype=torch.float64)
    per_unit.index_add_(0, torch.tensor(group.unit_of_channel), per_channel)
    return per_unit.float()


def unit_params(handle: ScoreHandle) -> tuple[dict[str, torch.Tensor], int]:
    """Parameters per unit of every scored group (what removing that unit alone deletes) and the model's total
    parameters (fvcore, the scores not counted).

    Examples:
        >>> per_unit, total = unit_params(handle)  # doctest: +SKIP
        >>> float(per_unit["conv1"][0]) / total  # the first unit's share of the parameters  # doctest: +SKIP
    """
    model = handle.model
    report = flops_report(model, _check_inputs(model, handle.example_inputs))
    modules = dict(model.named_modules())
    total = int(report.params) - sum(a.numel() for a in handle.scores)
    return {g.name: _per_unit(g, _per_channel_params(g, modules)) for g in handle.groups}, max(total, 1)


def unit_macs(handle: ScoreHandle) -> tuple[dict[str, torch.Tensor], int]:
    """MACs per unit of every scored group, and the model's total MACs (fvcore, batch 1)."""
    model = handle.model
    inputs = _check_inputs(model, handle.example_inputs)
    report = flops_report(model, inputs)
    modules = dict(model.named_modules())
    out = {}
    for g in handle.groups:
        out[g.name] = _per_unit(g, _per_channel_macs(g, report.by_module, modules))
    return out, max(int(report.macs), 1)


def _checked_costs(unit_costs: Mapping[str, torch.Tensor], handle: ScoreHandle) -> dict[str, torch.Tensor]:
    """``unit_costs`` as float tensors, one per scored group; ``ValueError`` naming a group that lacks one or has
    a wrong length, a negative or a non-finite entry."""
    out = {}
    for g in handle.groups:
        c = unit_costs.get(g.name)
        if not isinstance(c, torch.Tensor) or c.dim() != 1 or c.numel() != g.num_units:
            got = "none" if c is None else f"shape {tuple(c.shape)}" if isinstance(c, torch.Tensor) else type(c).__name__
            raise ValueError(f"unit_costs[{g.name!r}] must be a 1-d tensor of {g.num_units} per-unit costs, got {got}")
        c = c.detach().double().cpu()
        if not bool(torch.isfinite(c).all()) or bool((c < 0).any()):
            raise ValueError(f"unit_costs[{g.name!r}] must be finite and non-negative")
        out[g.name] = c.float()
    return out


class WidthPenalty:
    """α-only penalty for the search: ``l1 * Σ|α| + cost_weight * Σ|α_u| c_u`` (see the module docstring).

    Args:
        handle: the scored model's handle.
        l1: strength of the ℓ1 term (summed over every scored unit, like Network Slimming's
            ``s * Σ|γ|``). With ``prox=True`` in `rartsprune.prune` the ℓ1 term is applied by
            soft-thresholding instead and this class leaves it out.
        cost_weight: strength of the width cost (dimensionless, see the module docstring).
        include_l1: add the ℓ1 term to the penalty (False when a proximal step applies it).
        unit_costs: group name -> per-unit cost ``c_u`` as a fraction of the model's cost (non-negative, one
            entry per unit of every scored group), e.g. `rartsprune.width.latency.LatencyModel.unit_costs`.
            ``None``: the costs of ``kind``.
        kind: without ``unit_costs``, what the cost counts: ``"macs"`` (``MACs_u / MACs_model``, `unit_macs`)
            or ``"params"`` (``params_u / params_model``, `unit_params`).

    Attributes:
        costs: the per-unit costs ``c_u`` of the scored groups, in the order of ``handle.groups`` (empty when
            ``cost_weight`` is 0).
        cost_kind: ``"macs"``, ``"params"`` or ``"given"`` (``unit_costs`` passed).

    Examples:
        >>> penalty = WidthPenalty(handle, cost_weight=2.0)  # doctest: +SKIP
        >>> penalty.state()["cost_fraction"]  # Σ|α_u| c_u  # doctest: +SKIP
    """

    def __init__(self, handle: ScoreHandle, *, l1: float = 0.0, cost_weight: float = 0.0, include_l1: bool = True,
                 unit_costs: Mapping[str, torch.Tensor] | None = None, kind: str = "macs") -> None:
        for name, v in (("l1", l1), ("cost_weight", cost_weight)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a non-negative number, got {v!r}")
        if kind not in PENALTY_KINDS:
            raise ValueError(f"kind must be one of {PENALTY_KINDS} (pass unit_costs= for any other cost), got {kind!r}")
        given = _checked_costs(unit_costs, handle) if unit_costs is not None else None
        self.scores: Sequence[torch.nn.Parameter] = handle.scores
        self.l1 = float(l1) if include_l1 else 0.0
        self.cost_weight = float(cost_weight)
        self.cost_kind = kind if given is None else "given"
        self.costs: list[torch.Tensor] = []
        if self.cost_weight > 0:
            if given is None:
                per_unit, total = (unit_params if kind == "params" else unit_macs)(handle)
                given = {name: c / total for name, c in per_unit.items()}
            self.costs = [given[g.name].to(a.device) for g, a in zip(handle.groups, self.scores)]

    @property
    def active(self) -> bool:
        return self.l1 > 0 or self.cost_weight > 0

    def _cost(self) -> torch.Tensor:
        """``Σ|α_u| c_u`` (0 without costs)."""
        device = self.scores[0].device
        return sum(((a.abs() * c.to(a.device)).sum() for a, c in zip(self.scores, self.costs)),
                   torch.zeros((), device=device))

    def __call__(self) -> torch.Tensor:
        device = self.scores[0].device
        total = torch.zeros((), device=device)
        if self.l1 > 0:
            total = total + self.l1 * sum(a.abs().sum() for a in self.scores)
        if self.cost_weight > 0:
            total = total + self.cost_weight * self._cost()
        return total

    def state(self) -> dict[str, float]:
        """The current value of each term (for logging): ``l1_sum`` = Σ|α|, ``cost_fraction`` = Σ|α_u| c_u."""
        with torch.no_grad():
            l1 = float(sum(a.abs().sum() for a in self.scores))
            return {"l1_sum": l1, "cost_fraction": float(self._cost())}


@torch.no_grad()
def soft_threshold_(scores: Sequence[torch.Tensor], amount: float) -> None:
    """Proximal step of the ℓ1 norm, in place: ``α <- sign(α) * max(|α| - amount, 0)``."""
    if amount <= 0:
        return
    for a in scores:
        a.copy_(torch.sign(a) * (a.abs() - amount).clamp(min=0))
