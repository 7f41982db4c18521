"""Which channels survive: from per-unit importances to the kept units of every group.

Two ways to decide, matching the two width-search modes:

* `select_by_ratio` — remove a fixed fraction of the prunable channels (the *pruning ratio of
  channels*, PRC). ``scope="global"`` ranks every unit of every group together (Network Slimming's global
  threshold); ``scope="layer"`` removes the same fraction from every group.
* `select_by_threshold` — remove every unit whose importance is at most a threshold (ℓ1 mode: the
  sparsity penalty decides how many).

Both never empty a group (its best unit always survives) and report the achieved PRC. ``max_pruning_ratio``
(Torch-Pruning's name) caps what any one group loses: each keeps at least ``ceil((1 - max_pruning_ratio) * units)``
of its most important units (`protected_units`), so a global ranking cannot collapse a layer.

Importance criteria (`unit_importance`), all computed from the scores α of a scored model:

* ``"alpha"`` — |α|. Every α starts at 1 and is trained with one learning rate, so the raw values are
  comparable across layers. The ℓ1 mode's threshold is on |α|.
* ``"alpha_gamma"`` — |α| × |γ|, γ the BatchNorm scale the score sits next to: the channel's effective
  output scale. Where a score follows a BatchNorm, α and γ are one degree of freedom (α·γ is all the network
  sees), and an ℓ1 pressure on α alone moves scale from α into γ; the product is invariant to that trade.
  Units without a BatchNorm next to them use |α| times the median |γ| of the model's BN units, so a global
  ranking compares like with like (a model without BatchNorm gets plain |α|). Default in ratio mode
  (``width.DEFAULTS``): it agrees better with the oracle than |α| (``bench/criterion_quality.py``).
* ``"normalized"`` — |α| divided by the mean |α| of its group: removes the same *relative* weakness
  everywhere, closer to a per-layer ratio.

The quality benchmark (``bench/pruning_quality.py``) compares them.

Examples:
    >>> sel = select_by_ratio(handle, 0.4)  # doctest: +SKIP
    >>> sel.prc, len(sel.keep)  # doctest: +SKIP
    (0.4, 12)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..scores import ScoreHandle

__all__ = ["Selection", "CRITERIA", "unit_importance", "select_by_ratio", "select_by_threshold", "check_max_pruning_ratio",
           "min_units", "protected_units"]

CRITERIA = ("alpha", "alpha_gamma", "normalized")


@dataclass
class Selection:
    """Kept units per group and the resulting pruning ratio.

    Attributes:
        keep: group name -> kept unit indices (sorted).
        channels: group name -> (kept channels, channels).
    """

    keep: dict[str, list[int]]
    channels: dict[str, tuple[int, int]] = field(default_factory=dict)

    @property
    def total_channels(self) -> int:
        return sum(c for _, c in self.channels.values())

    @property
    def removed_channels(self) -> int:
        return sum(c - k for k, c in self.channels.values())

    @property
    def prc(self) -> float:
        """Pruning ratio of channels: removed / prunable channels."""
        total = self.total_channels
        return 0.0 if total == 0 else self.removed_channels / total

    def summary(self) -> dict[str, object]:
        return {
            "prc": self.prc,
            "removed_channels": self.removed_channels,
            "prunable_channels": self.total_channels,
            "widths": {n: {"kept": k, "channels": c} for n, (k, c) in self.channels.items()},
        }


def _raw_weight(module: nn.Module) -> torch.Tensor | None:
    """A layer's weight without the score parametrization."""
    if parametrize.is_parametrized(module, "weight"):
        return module.parametrizations["weight"].original
    return getattr(module, "weight", None)


def unit_importance(handle: ScoreHandle, criterion: str = "alpha") -> dict[str, torch.Tensor]:
    """Importance of every unit of every scored group (a CPU float tensor per group)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    modules = dict(handle.model.named_modules())
    out: dict[str, torch.Tensor] = {}
    bn: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # group -> (mean |γ| per unit, unit has a BN)
    for g, alpha in zip(handle.groups, handle.scores):
        imp = alpha.detach().abs().float().cpu()
        if criterion == "alpha_gamma":
            gamma = torch.zeros(g.num_units)
            count = torch.zeros(g.num_units)
            for name, idxs, units in g.placements:
                module = modules.get(name)  # None for a bare parameter (a class token)
                if not isinstance(module, nn.modules.batchnorm._NormBase):
                    continue
                w = _raw_weight(module)
                if w is None:
                    continue
                vals = w.detach().abs().float().cpu()[list(idxs)]
                gamma.index_add_(0, torch.tensor(units), vals)
                count.index_add_(0, torch.tensor(units), torch.ones(len(units)))
            has = count > 0
            bn[g.name] = (gamma / count.clamp(min=1), has)
        elif criterion == "normalized":
            imp = imp / imp.mean().clamp(min=1e-12)
        out[g.name] = imp
    if criterion == "alpha_gamma":
        seen = [gamma[has] for gamma, has in bn.values() if bool(has.any())]
        neutral = float(torch.cat(seen).median()) if seen else 1.0
        for name, (gamma, has) in bn.items():
            out[name] = out[name] * torch.where(has, gamma, torch.full_like(gamma, neutral))
    return out


def _check_importance(handle: ScoreHandle, importance: Mapping[str, torch.Tensor]) -> None:
    for g in handle.groups:
        v = importance.get(g.name)
        if v is None or v.numel() != g.num_units:
            raise ValueError(f"importance for group {g.name!r} must have {g.num_units} entries")
        if torch.isnan(v).any() or (v == float("-inf")).any():
            raise ValueError(f"importance for group {g.name!r} has NaN or -inf values (+inf means: always keep)")


def check_max_pruning_ratio(value: object) -> float:
    """``value`` if it is a number in (0, 1] (the largest fraction of a group's units that may go), else ValueError.

    Examples:
        >>> check_max_pruning_ratio(0.9)
        0.9
    """
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value)
            or not 0.0 < value <= 1.0):
        raise ValueError("max_pruning_ratio must be a number in (0, 1] (the largest fraction of any layer's channels "
                         f"that may be removed; 1: no cap), got {value!r}")
    return float(value)


def min_units(num_units: int, max_pruning_ratio: float = 1.0) -> int:
    """The fewest units a group of ``num_units`` keeps: ``ceil((1 - max_pruning_ratio) * num_units)``, at least 1.

    Examples:
        >>> min_units(64), min_units(64, 0.9), min_units(1280, 0.75), min_units(3, 0.5)
        (1, 7, 320, 2)
    """
    return min(num_units, max(1, math.ceil((1.0 - max_pruning_ratio) * num_units - 1e-9)))


def protected_units(handle: ScoreHandle, importance: Mapping[str, torch.Tensor],
                    max_pruning_ratio: float = 1.0) -> dict[str, list[int]]:
    """Every group's `min_units` most important units (ties: the lower index), which no selection removes.

    With ``max_pruning_ratio=1`` this is each group's best unit (``argmax``), the floor every selection keeps.
    """
    out = {}
    for g in handle.groups:
        k = min_units(g.num_units, max_pruning_ratio)
        order = torch.argsort(importance[g.name], descending=True, stable=True)
        out[g.name] = sorted(order[:k].tolist())
    return out


def _finish(handle: ScoreHandle, keep_units: dict[str, list[int]]) -> Selection:
    sel = Selection({})
    for g in handle.groups:
        units = sorted(keep_units[g.name])
        sel.keep[g.name] = units
        sel.channels[g.name] = (len(g.channels_of_units(units)), g.channels)
    return sel


def select_by_ratio(
    handle: ScoreHandle,
    ratio: float,
    *,
    importance: Mapping[str, torch.Tensor] | None = None,
    criterion: str = "alpha",
    scope: str = "global",
    max_pruning_ratio: float = 1.0,
) -> Selection:
    """Remove ``ratio`` of the prunable channels, least important first.

    Args:
        handle: the scored model's handle.
        ratio: fraction of prunable channels to remove, in [0, 1).
        importance: per-group unit importances (default: `unit_importance` with ``criterion``).
        scope: ``"global"`` (rank all units together) or ``"layer"`` (the same fraction in every group).
        max_pruning_ratio: the largest fraction of any group's units removed (`protected_units`; 1: no cap).

    The achieved PRC differs from ``ratio`` by less than one unit per group (units are single channels
    except behind grouped convolutions); every group keeps at least its most important unit. Where the cap
    leaves fewer removable channels than ``ratio`` asks, the selection removes all it may.
    """
    if not isinstance(ratio, (int, float)) or not 0.0 <= ratio < 1.0 or math.isnan(ratio):
        raise ValueError(f"ratio must be in [0, 1), got {ratio!r}")
    if scope not in ("global", "layer"):
        raise ValueError(f"scope must be 'global' or 'layer', got {scope!r}")
    max_pruning_ratio = check_max_pruning_ratio(max_pruning_ratio)
    imp = dict(importance) if importance is not None else unit_importance(handle, criterion)
    _check_importance(handle, imp)
    groups = handle.groups
    keep: dict[str, set[int]] = {g.name: set(range(g.num_units)) for g in groups}
    if scope == "layer":
        for g in groups:
            n_remove = min(g.num_units - min_units(g.num_units, max_pruning_ratio), round(ratio * g.num_units))
            order = torch.argsort(imp[g.name], stable=True).tolist()
            keep[g.name] -= set(order[:n_remove])
        return _finish(handle, {k: sorted(v) for k, v in keep.items()})
    total = sum(g.channels for g in groups)
    target = round(ratio * total)
    # the protected units of every group (its best, or more under a cap) stay; the rest compete globally
    protected = protected_units(handle, imp, max_pruning_ratio)
    candidates = []
    for g in groups:
        size = g.channels // g.num_units
        safe = set(protected[g.name])
        for u in range(g.num_units):
            if u not in safe:
                candidates.append((float(imp[g.name][u]), g.name, u, size))
    candidates.sort(key=lambda c: (c[0], c[1], c[2]))
    removed = 0
    for _, name, unit, size in candidates:
        if removed >= target:
            break
        if removed + size > target and removed + size - target > target - removed:
            continue  # a big unit that would overshoot more than it helps
        keep[name].discard(unit)
        removed += size
    return _finish(handle, {k: sorted(v) for k, v in keep.items()})


def select_by_threshold(
    handle: ScoreHandle,
    threshold: float = 0.0,
    *,
    importance: Mapping[str, torch.Tensor] | None = None,
    max_pruning_ratio: float = 1.0,
) -> Selection:
    """Remove every unit whose importance (default |α|) is ``<= threshold``; keep each group's best unit (its
    `protected_units` under ``max_pruning_ratio`` < 1)."""
    if not isinstance(threshold, (int, float)) or threshold < 0 or math.isnan(threshold):
        raise ValueError(f"threshold must be a non-negative number, got {threshold!r}")
    max_pruning_ratio = check_max_pruning_ratio(max_pruning_ratio)
    imp = dict(importance) if importance is not None else unit_importance(handle, "alpha")
    _check_importance(handle, imp)
    protected = protected_units(handle, imp, max_pruning_ratio)
    keep = {}
    for g in handle.groups:
        v = imp[g.name]
        kept = set((v > threshold).nonzero().flatten().tolist())
        kept.update(protected[g.name])
        keep[g.name] = sorted(kept)
    return _finish(handle, keep)
