"""``round_to="auto"``: the channel rounding chosen by the latency model of a latency budget.

Rounding every kept channel count up to a multiple of ``r`` (Torch-Pruning's ``round_to``) can make kernels
faster, or slower, depending on the device. With a latency budget the per-layer latency table can decide:
for every candidate ``r`` in `ROUND_TO_CANDIDATES` (``None``, 2, 4, 8, 16, 32) that the model's widths
allow (`allowed_roundings`), the units are selected to the budget with that rounding's latency model
(`rartsprune.width.budget.select_by_budget`), and the candidate whose selection **keeps the most total
importance** wins — the budget fixes the predicted latency, and among selections that meet it the best is
the one that keeps the most of the model, which is what the selection itself optimises (least important
units go first). The kept importance is summed over the units that survive the rounding (rounding up gives
units back for the latency it costs). Ties (equal kept importance) go to the lower predicted latency, then to
the larger ``r``.

The table only sees the widths it sampled (`rartsprune.width.latency.measure_width_latency`'s
``fractions``; linear in between): for the choice to reflect a kernel's preference for multiples of 8, the
table must sample widths that resolve it (measure it with finer ``fractions`` and pass it as
``latency_table=``). With the default 25 % grid the interpolation is smooth and the candidates differ only by
how well their rounding fits the budget.

Examples:
    >>> choice = choose_rounding(handle, 0.6, importance=imp, latency=LatencyModel(handle, table))  # doctest: +SKIP
    >>> choice.round_to, [c["kept_importance"] for c in choice.candidates]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..scores import ScoreHandle
from ..surgery import plan_from_scores
from .budget import select_by_budget
from .latency import LatencyModel
from .selection import Selection

__all__ = ["AUTO", "ROUND_TO_CANDIDATES", "RoundingChoice", "allowed_roundings", "choose_rounding"]

#: The ``round_to`` value that asks for the rounding to be chosen by the latency model.
AUTO = "auto"
#: The roundings ``round_to="auto"`` tries (those the model's widths allow, `allowed_roundings`).
ROUND_TO_CANDIDATES: tuple[int | None, ...] = (None, 2, 4, 8, 16, 32)


def allowed_roundings(handle: ScoreHandle,
                      candidates: Sequence[int | None] = ROUND_TO_CANDIDATES) -> list[int | None]:
    """The candidates every scored group's width allows: ``None``, and each ``r`` no larger than the group's
    channel count (a narrower layer holds no multiple of ``r`` but its full width) and, where a unit spans
    several channels (grouped convolutions), a multiple of the unit's size (else the rounded counts are not
    multiples of ``r``).

    Examples:
        >>> allowed_roundings(handle)  # a model whose narrowest scored layer has 16 channels  # doctest: +SKIP
        [None, 2, 4, 8, 16]
    """
    out: list[int | None] = []
    for r in candidates:
        if r is None or all(r <= g.channels and r % max(g.channels // g.num_units, 1) == 0 for g in handle.groups):
            out.append(r)
    return out


@dataclass
class RoundingChoice:
    """What ``round_to="auto"`` chose, and why.

    Attributes:
        round_to: the chosen rounding (``None``: exact widths).
        selection: the chosen candidate's selection (kept units before the rounding, as `Selection` holds them).
        budget: the latency budget (fraction of the unpruned prediction).
        candidates: one dict per candidate tried: ``round_to``, ``predicted_ms``, ``predicted_fraction``,
            ``kept_importance``, ``kept_channels`` (after rounding), ``meets_budget``; a candidate the budget
            cannot be met with has ``error`` instead of the numbers.
    """

    round_to: int | None
    selection: Selection
    budget: float
    candidates: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary (the report's ``rounding`` entry)."""
        return {"chosen": self.round_to, "budget": self.budget, "rule": "most kept importance meeting the "
                "predicted budget; ties: lower predicted latency, then larger round_to",
                "candidates": [dict(c) for c in self.candidates]}


def _kept_after_rounding(handle: ScoreHandle, keep: Mapping[str, Sequence[int]],
                         round_to: int | None) -> dict[str, list[int]]:
    """The units that survive ``round_to`` (the surgery adds units back to reach a multiple)."""
    plan = plan_from_scores(handle.model, keep, round_to=round_to)
    groups = {g.name: g for g in handle.groups}
    return {name: sorted({groups[name].unit_of_channel[c] for c in chans}) for name, chans in plan.groups.items()}


def choose_rounding(handle: ScoreHandle, budget: float, *, importance: Mapping[str, torch.Tensor],
                    latency: LatencyModel, scope: str = "global",
                    candidates: Sequence[int | None] | None = None,
                    max_pruning_ratio: float = 1.0) -> RoundingChoice:
    """Select to a latency ``budget`` with every allowed rounding and keep the best (see the module docstring).

    Args:
        handle: the scored model's handle.
        budget: the fraction of the unpruned model's predicted latency to keep, in (0, 1).
        importance: per-group unit importances (higher = keep).
        latency: the latency budget's cost model (its own ``round_to`` is ignored: each candidate's is used).
        scope: ``"global"`` or ``"layer"``, as in `select_by_budget`.
        candidates: the roundings to try (default `ROUND_TO_CANDIDATES`), filtered by `allowed_roundings`.
        max_pruning_ratio: the largest fraction of any group's units removed, as in `select_by_budget`.

    Raises:
        ValueError: no candidate can meet the budget (the message of ``None``'s attempt, which has the lowest
            reachable minimum, names why), or ``latency`` is not a `LatencyModel`.

    Examples:
        >>> choice = choose_rounding(handle, 0.6, importance=imp, latency=cost)  # doctest: +SKIP
        >>> choice.round_to, choice.to_dict()["candidates"][0]["kept_importance"]  # doctest: +SKIP
    """
    if not isinstance(latency, LatencyModel):
        raise ValueError(f"round_to='auto' chooses with the latency model of a latency budget; got "
                         f"{type(latency).__name__}")
    tried: list[dict[str, Any]] = []
    best: tuple[tuple[float, float, int], int | None, Selection] | None = None
    first_error: ValueError | None = None
    for r in allowed_roundings(handle, ROUND_TO_CANDIDATES if candidates is None else candidates):
        model = latency.rounded(r)
        try:
            sel = select_by_budget(handle, budget, kind="latency", importance=importance, scope=scope, cost=model,
                                   max_pruning_ratio=max_pruning_ratio)
        except ValueError as exc:  # this rounding's minimum is above the budget
            first_error = first_error or exc
            tried.append({"round_to": r, "error": str(exc)})
            continue
        assert sel is not None
        kept = _kept_after_rounding(handle, sel.keep, r)
        value = float(sum(float(importance[name][units].sum()) for name, units in kept.items()))
        ms = model.ms(sel.keep)
        fraction = model.fraction(sel.keep)  # measured, through a fitted table's points
        groups = {g.name: g for g in handle.groups}
        channels = sum(len(groups[name].channels_of_units(units)) for name, units in kept.items())
        tried.append({"round_to": r, "predicted_ms": ms, "predicted_fraction": fraction, "kept_importance": value,
                      "kept_channels": channels, "meets_budget": fraction <= budget + 1e-9})
        if fraction > budget + 1e-9:
            continue
        key = (value, -ms, 0 if r is None else r)
        if best is None or _better(key, best[0]):
            best = (key, r, sel)
    if best is None:
        raise first_error or ValueError(f"no rounding among {list(candidates or ROUND_TO_CANDIDATES)} meets "
                                        f"latency={budget}")
    return RoundingChoice(best[1], best[2], budget, tried)


def _better(key: tuple[float, float, int], than: tuple[float, float, int]) -> bool:
    """More kept importance; at equal importance (relative 1e-9) lower latency, then the larger rounding."""
    value, other = key[0], than[0]
    if not math.isclose(value, other, rel_tol=1e-9, abs_tol=1e-12):
        return value > other
    if not math.isclose(key[1], than[1], rel_tol=1e-9, abs_tol=1e-12):
        return key[1] > than[1]
    return key[2] > than[2]
