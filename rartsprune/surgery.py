"""Surgery: physically remove channels, through Torch-Pruning, and pruning plans.

A `PruningPlan` says which output channels of each group's root layer are kept (plus the widths
every layer must have afterwards and the library version). `apply_surgery` builds the plan from a
scored model and executes it; `apply_plan` re-applies a saved plan to a freshly built model of the
same architecture, so a pruned checkpoint is *plan JSON + state_dict*.

Surgery is transactional: it works on a copy of the model and only replaces the user's model when the
copy has exactly the planned widths and (for a scored model) computes the same outputs as the scored
model with the removed channels' scores set to zero. On any failure the model is left untouched.

Examples:
    >>> handle = rartsprune.attach_scores(model, torch.randn(1, 3, 32, 32))  # doctest: +SKIP
    >>> keep = {g.name: range(g.num_units // 2) for g in handle.groups}  # doctest: +SKIP
    >>> plan = rartsprune.apply_surgery(model, keep)  # doctest: +SKIP
    >>> plan.save("plan.json"); torch.save(model.state_dict(), "pruned.pt")  # doctest: +SKIP
    >>> fresh = build_model(); rartsprune.apply_plan(fresh, "plan.json", torch.randn(1, 3, 32, 32))  # doctest: +SKIP
    >>> fresh.load_state_dict(torch.load("pruned.pt", weights_only=True))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ._version import __version__
from .errors import SurgeryError
from .graph import (
    ChannelGroup,
    _bounded_group_expansion,
    analyze_groups,
    build_dependency_graph,
    preserved_state,
    safe_index_mapping,
)
from .heads import (
    HeadAttention,
    HeadSpec,
    _set_module,
    head_of_qkv_channel,
    per_head_parameter_names,
    remove_heads,
)
from .layernorm import PrunedLayerNorm, is_exact_layernorm, original_width, sync_embed_width
from .scores import (
    BANK_ATTR,
    _check_inputs,
    _detach,
    _map_tensors,
    get_handle,
    has_scores,
)
from .tasks import comparable_outputs

__all__ = ["PruningPlan", "plan_from_scores", "apply_surgery", "apply_plan", "layer_widths", "replace_layernorms"]

PLAN_FORMAT = "rartsprune-plan/1"


@dataclass
class PruningPlan:
    """Which channels survive, per group, and the widths every layer must have afterwards.

    Attributes:
        groups: root layer name -> kept output channel indices of that layer (sorted).
        channels: root layer name -> number of output channels before pruning.
        widths: layer name -> expected widths after pruning (``{"out": n, "in": m}`` or
            ``{"shape": [...]}`` for bare parameters).
        version: rartsprune version that wrote the plan.
        model: class name of the model the plan was made for (informational).
        heads: head groups (``prune_heads=True``): root layer name -> ``{"attention": module name,
            "head_dim": int, "heads": heads kept, "convert": bool}`` (``convert``: the block was an
            ``nn.MultiheadAttention``, replaced by `rartsprune.heads.HeadAttention`).
        layernorms: LayerNorms of groups removed exactly (``prune_layernorm=True``): module name -> the width
            whose statistics it keeps (surgery replaces each by a `rartsprune.layernorm.PrunedLayerNorm`).
    """

    groups: dict[str, list[int]]
    channels: dict[str, int]
    widths: dict[str, dict[str, Any]] = field(default_factory=dict)
    version: str = __version__
    model: str = ""
    heads: dict[str, dict[str, Any]] = field(default_factory=dict)
    layernorms: dict[str, int] = field(default_factory=dict)

    def removed(self) -> dict[str, list[int]]:
        """Root layer name -> removed channel indices (only groups that lose channels)."""
        out = {}
        for name, kept in self.groups.items():
            gone = sorted(set(range(self.channels[name])) - set(kept))
            if gone:
                out[name] = gone
        return out

    def pruned_fraction(self) -> float:
        """Fraction of the planned groups' channels that are removed (the PRC over these groups)."""
        total = sum(self.channels.values())
        kept = sum(len(v) for v in self.groups.values())
        return 0.0 if total == 0 else 1.0 - kept / total

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": PLAN_FORMAT,
            "rartsprune_version": self.version,
            "model": self.model,
            "groups": {k: {"channels": self.channels[k], "kept": list(v)} for k, v in self.groups.items()},
            "widths": self.widths,
            **({"heads": self.heads} if self.heads else {}),
            **({"layernorms": self.layernorms} if self.layernorms else {}),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the plan as JSON."""
        with open(path, "w", encoding="utf-8") as f:
            f.write(self.to_json())

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PruningPlan:
        if not isinstance(data, Mapping) or data.get("format") != PLAN_FORMAT:
            raise ValueError(f"not a rartsprune pruning plan (expected format {PLAN_FORMAT!r})")
        groups, channels = {}, {}
        for name, entry in data["groups"].items():
            kept = [int(i) for i in entry["kept"]]
            n = int(entry["channels"])
            if not kept or min(kept) < 0 or max(kept) >= n or len(set(kept)) != len(kept):
                raise ValueError(f"plan entry {name!r}: kept indices must be distinct, in [0, {n}) and non-empty")
            groups[name], channels[name] = sorted(kept), n
        heads = {str(k): dict(v) for k, v in dict(data.get("heads", {})).items()}
        unknown = sorted(set(heads) - set(groups))
        if unknown:
            raise ValueError(f"plan heads entries {unknown[:3]} are not groups of the plan")
        try:
            layernorms = {str(k): int(v) for k, v in dict(data.get("layernorms", {})).items()}
        except (TypeError, ValueError) as exc:
            raise ValueError(f"plan layernorms must map LayerNorm names to widths: {exc}") from exc
        return cls(groups, channels, dict(data.get("widths", {})), str(data.get("rartsprune_version", "")),
                   str(data.get("model", "")), heads, layernorms)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PruningPlan:
        """Read a plan written by `save`."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))


def _named_param(model: nn.Module, name: str) -> torch.Tensor | None:
    """The parameter ``name`` of ``model`` (its scaled value where a score parametrizes it, e.g. a class
    token), or None."""
    owner_name, _, attr = name.rpartition(".")
    try:
        value = getattr(model.get_submodule(owner_name), attr)
    except AttributeError:
        return None
    return value if isinstance(value, torch.Tensor) else None


def layer_widths(model: nn.Module, names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Current widths of every channel-carrying layer (or of ``names``).

    Examples:
        >>> layer_widths(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3)))
        {'0': {'in': 3, 'out': 8}}
    """
    out: dict[str, dict[str, Any]] = {}
    wanted = None if names is None else set(names)
    for name, m in model.named_modules():
        if wanted is not None and name not in wanted:
            continue
        w = _module_width(m)
        if w is not None:
            out[name] = w
    if wanted is not None:
        for name in wanted - set(out):
            param = _named_param(model, name)
            if param is not None:
                out[name] = {"shape": list(param.shape)}
    return out


def _module_width(m: nn.Module) -> dict[str, Any] | None:
    if isinstance(m, nn.modules.conv._ConvNd):
        return {"in": m.in_channels, "out": m.out_channels}
    if isinstance(m, nn.Linear):
        return {"in": m.in_features, "out": m.out_features}
    if isinstance(m, (nn.modules.batchnorm._NormBase,)):
        return {"out": m.num_features}
    if isinstance(m, nn.LayerNorm):
        return {"out": int(m.normalized_shape[-1])}
    if isinstance(m, nn.GroupNorm):
        return {"out": m.num_channels}
    if isinstance(m, nn.Embedding):
        return {"out": m.embedding_dim}
    if isinstance(m, nn.PReLU):
        return {"out": m.num_parameters}
    return None


def _expected_widths(
    model: nn.Module, groups: Sequence[ChannelGroup], removed: Mapping[str, Sequence[int]]
) -> dict[str, dict[str, Any]]:
    """Widths of every layer after removing ``removed`` (root channels per group)."""
    widths = layer_widths(model)
    by_name = {g.name: g for g in groups}
    for gname, gone in removed.items():
        gone_set = set(gone)
        for m in by_name[gname].members:
            n = sum(1 for r in m.root_idxs if r in gone_set)
            if n == 0:
                continue
            if m.op == "param":
                if m.name not in widths:
                    widths[m.name] = {"shape": list(_named_param(model, m.name).shape)}
                widths[m.name]["shape"][m.dim] -= n
                continue
            w = widths.get(m.name)
            if w is None:
                continue
            if m.op == "dwconv":
                w["out"] -= n
                w["in"] -= n
            elif "in" in w and m.side == "in":
                w["in"] -= n
            else:
                w["out"] -= n
    return widths


def _check_widths(model: nn.Module, expected: Mapping[str, Mapping[str, Any]]) -> None:
    actual = layer_widths(model, list(expected))
    wrong = [f"{n}: expected {dict(expected[n])}, got {actual.get(n)}" for n in expected if actual.get(n) != dict(expected[n])]
    if wrong:
        raise SurgeryError(
            f"after surgery {len(wrong)} layer(s) do not have the planned width (Torch-Pruning pruned them "
            f"differently): {'; '.join(wrong[:5])}{' ...' if len(wrong) > 5 else ''}"
        )


def _normalise_keep(group: ChannelGroup, spec: Any, round_to: int | None, scores: torch.Tensor | None) -> list[int]:
    """Kept units of one group from indices or a boolean mask; applies ``round_to``."""
    if isinstance(spec, torch.Tensor) and spec.dtype == torch.bool:
        if spec.numel() != group.num_units:
            raise ValueError(f"keep mask for {group.name!r} has {spec.numel()} entries, expected {group.num_units}")
        units = spec.nonzero().flatten().tolist()
    else:
        try:
            units = sorted({int(u) for u in (spec.tolist() if isinstance(spec, torch.Tensor) else spec)})
        except (TypeError, ValueError) as exc:
            raise TypeError(f"keep[{group.name!r}] must be unit indices or a boolean mask") from exc
        if units and (units[0] < 0 or units[-1] >= group.num_units):
            raise ValueError(f"keep[{group.name!r}] has indices outside [0, {group.num_units})")
    if not units:
        raise ValueError(
            f"keep[{group.name!r}] keeps no channel; at least one unit per group must survive (layers are never emptied)"
        )
    if round_to is not None and round_to > 1:
        per_unit = group.channels // group.num_units
        target_units = min(group.num_units, math.ceil(len(units) * per_unit / round_to) * round_to // max(per_unit, 1))
        target_units = max(target_units, len(units))
        if target_units > len(units):
            # add back the best-scored removed units (by |score|) to reach a multiple of round_to
            rest = [u for u in range(group.num_units) if u not in set(units)]
            if scores is not None:
                rest.sort(key=lambda u: -abs(float(scores[u])))
            units = sorted(units + rest[: target_units - len(units)])
    return units


def plan_from_scores(
    model: nn.Module, keep: Mapping[str, Any] | None = None, *, round_to: int | None = None
) -> PruningPlan:
    """The plan that keeps ``keep[group]`` units of each scored group of ``model``.

    Args:
        model: a model with scores attached.
        keep: group name -> kept unit indices (positions in the group's score vector) or a boolean mask.
            Groups not listed keep everything. ``None``: keep the units whose score is not exactly zero.
        round_to: round each group's kept channel count up to a multiple of this (kernels often run faster
            on multiples of 8 or 16), adding back the best-scored removed units.
    """
    handle = get_handle(model)
    if round_to is not None and (not isinstance(round_to, int) or round_to < 1):
        raise ValueError(f"round_to must be a positive integer or None, got {round_to!r}")
    names = {g.name for g in handle.groups}
    if keep is None:
        keep = {name: (alpha.detach() != 0) for name, alpha in handle.named_scores()}
    unknown = set(keep) - names
    if unknown:
        raise ValueError(f"keep names unknown or unscored groups: {sorted(unknown)[:5]}")
    groups: dict[str, list[int]] = {}
    channels: dict[str, int] = {}
    for g in handle.groups:
        units = (
            _normalise_keep(g, keep[g.name], round_to, handle.score(g.name).detach())
            if g.name in keep
            else list(range(g.num_units))
        )
        groups[g.name] = g.channels_of_units(units)
        channels[g.name] = g.channels
    removed = {n: sorted(set(range(channels[n])) - set(k)) for n, k in groups.items()}
    removed = {n: v for n, v in removed.items() if v}
    widths = _expected_widths(model, handle.all_groups, removed)
    converted = set(getattr(getattr(model, BANK_ATTR), "converted", ()))
    heads = {
        g.name: {"attention": g.attention, "head_dim": g.head_dim, "heads": len({g.unit_of_channel[c] for c in groups[g.name]}),
                 "convert": g.attention in converted}
        for g in handle.groups if g.attention
    }
    layernorms = {ln: original_width(model.get_submodule(ln))
                  for g in handle.groups if g.name in removed for ln in g.layernorms}
    return PruningPlan(groups, channels, widths, __version__, type(model).__name__, heads, layernorms)


def _prune_one(graph: Any, modules: Mapping[str, nn.Module], work: nn.Module, name: str, gone: Sequence[int],
               heads: Mapping[str, Mapping[str, Any]]) -> None:
    """Remove root channels ``gone`` of group ``name`` with Torch-Pruning; for a head group, also update
    the attention block's ``num_heads`` and per-head parameters (``heads``: the plan's head entries)."""
    root = modules.get(name)
    if root is None or root not in graph.module2node:
        raise SurgeryError(f"layer {name!r} of the plan is not part of the traced model")
    pruner = graph.get_pruner_of_module(root)
    with safe_index_mapping(), _bounded_group_expansion(max(5_000, 20 * len(graph.module2node))):
        group = graph.get_pruning_group(root, pruner.prune_out_channels, list(gone))
    entry = heads.get(name)
    if entry:  # per-head parameters are sliced by remove_heads, not by Torch-Pruning's channel mapping
        per_head = per_head_parameter_names(work, str(entry["attention"]))
        group._group = [it for it in group._group if graph._param_to_name.get(it.dep.target.module) not in per_head]
    group.prune()
    if entry:
        block = work.get_submodule(entry["attention"])
        spec = HeadSpec(entry["attention"], name, "", int(block.num_heads), int(entry["head_dim"]))
        remove_heads(work, spec.name, sorted({head_of_qkv_channel(spec, c) for c in gone}), spec.head_dim)


def _prune_groups(work: nn.Module, removed: Mapping[str, Sequence[int]], inputs: Any,
                  heads: Mapping[str, Mapping[str, Any]] | None = None,
                  layernorms: Mapping[str, int] | None = None) -> None:
    """Remove root channels group by group with Torch-Pruning (index mappings refresh after each group), then
    make the ``layernorms`` keep their original statistics (`replace_layernorms`)."""
    graph = build_dependency_graph(work, inputs)
    modules = dict(work.named_modules())
    for name, gone in removed.items():
        _prune_one(graph, modules, work, name, gone, heads or {})
    replace_layernorms(work, layernorms or {})


def replace_layernorms(work: nn.Module, layernorms: Mapping[str, int]) -> None:
    """Replace each LayerNorm ``name`` of ``work`` (already narrowed by Torch-Pruning) by a
    `rartsprune.layernorm.PrunedLayerNorm` that divides by ``layernorms[name]``, the width it had.

    Raises:
        SurgeryError: a name is not an exact LayerNorm of ``work`` (`rartsprune.layernorm.is_exact_layernorm`).
    """
    for name, full in layernorms.items():
        try:
            norm = work.get_submodule(name)
        except AttributeError as exc:
            raise SurgeryError(f"the plan's LayerNorm {name!r} is not a module of this model") from exc
        if not is_exact_layernorm(norm):
            raise SurgeryError(f"the plan's LayerNorm {name!r} is a {type(norm).__name__}, not an nn.LayerNorm")
        if isinstance(norm, PrunedLayerNorm) and norm.full_width == full:
            continue
        _set_module(work, name, PrunedLayerNorm.from_layernorm(norm, full_width=int(full)))
    if layernorms:
        sync_embed_width(work)


def _transplant(model: nn.Module, work: nn.Module) -> None:
    """Make ``model`` (the user's object) become ``work`` in place."""
    model.__dict__.clear()
    model.__dict__.update(work.__dict__)


def _max_diff(a: Any, b: Any) -> tuple[float, float]:
    fa: list[torch.Tensor] = []
    fb: list[torch.Tensor] = []
    _map_tensors(a, fa.append)
    _map_tensors(b, fb.append)
    if len(fa) != len(fb) or any(x.shape != y.shape for x, y in zip(fa, fb)):
        return math.inf, 1.0
    diff = max((x.float() - y.float()).abs().max().item() for x, y in zip(fa, fb)) if fa else 0.0
    scale = max((x.float().abs().max().item() for x in fa), default=1.0)
    return diff, scale


#: What surgery does with the kept units' scores: ``"fold"`` multiplies them into the weights (the pruned model
#: computes what the scored one computes, the removed scores at zero); ``"reset"`` sets them to ±1 first (their
#: sign), so the kept channels return to their weights' own scale (`rartsprune.width.SelectionConfig.kept_scores`).
KEPT_SCORES = ("fold", "reset")


def check_kept_scores(kept_scores: str) -> None:
    """Raise ValueError naming the valid values when ``kept_scores`` is not one of `KEPT_SCORES`."""
    if kept_scores not in KEPT_SCORES:
        raise ValueError(f"kept_scores must be one of {', '.join(map(repr, KEPT_SCORES))} (what surgery does with "
                         f"the kept units' scores), got {kept_scores!r}")


def apply_surgery(
    model: nn.Module,
    keep: Mapping[str, Any] | None = None,
    *,
    round_to: int | None = None,
    verify: bool = True,
    rtol: float = 1e-4,
    kept_scores: str = "fold",
) -> PruningPlan:
    """Physically remove the channels whose scores are not kept, folding the kept scores into the weights.

    Args:
        model: a model with scores attached (`rartsprune.attach_scores`). Pruned in place; afterwards
            it is a plain ``nn.Module`` with no hooks, parametrizations or scores.
        keep: group name -> kept unit indices or boolean mask (see `plan_from_scores`); ``None`` keeps
            the units whose score is nonzero.
        round_to: round kept channel counts up to a multiple of this.
        verify: check, on the example inputs in eval mode, that the pruned model computes what the scored
            model computes with the removed channels' scores set to zero (relative tolerance ``rtol``; a
            torchvision detector is compared on its raw head outputs, `rartsprune.tasks.comparable_outputs`).
        rtol: the relative tolerance of ``verify``.
        kept_scores: ``"fold"`` folds the kept scores into the weights as they are; ``"reset"`` sets them to ±1
            (their sign) first, so the kept channels keep their weights' own scale and ``verify`` compares with
            the scored model whose kept scores are ±1 (`rartsprune.width.SelectionConfig.kept_scores`).

    Returns:
        The `PruningPlan` that was executed (save it to rebuild the pruned architecture).

    Raises:
        SurgeryError: a layer ends up with another width than planned (e.g. a model Torch-Pruning prunes
            incorrectly) or the outputs differ; the model is left exactly as it was.
        ValueError: a group would lose every channel, or ``keep`` names unknown groups.
    """
    check_kept_scores(kept_scores)
    plan = plan_from_scores(model, keep, round_to=round_to)
    handle = get_handle(model)
    removed = plan.removed()
    inputs = _check_inputs(model, handle.example_inputs)
    work = copy.deepcopy(model)
    work_handle = get_handle(work)
    reference = None
    with torch.no_grad():
        for g in work_handle.groups:
            if kept_scores == "reset":  # the kept channels at their weights' own scale (the sign kept)
                alpha = work_handle.score(g.name)
                alpha.copy_(torch.where(alpha < 0, -1.0, 1.0))
            if g.name in removed:
                alpha = work_handle.score(g.name)
                gone_units = sorted({g.unit_of_channel[c] for c in removed[g.name]})
                alpha[torch.tensor(gone_units, device=alpha.device)] = 0.0
        if verify:
            with preserved_state(work):
                work.eval()
                reference = comparable_outputs(work, inputs)
    allow_inexact = getattr(work, BANK_ATTR).allow_inexact
    _detach(work, fold=True)
    try:
        _prune_groups(work, removed, inputs, plan.heads, plan.layernorms)
    except SurgeryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any Torch-Pruning failure
        raise SurgeryError(f"Torch-Pruning failed while removing channels: {type(exc).__name__}: {exc}") from exc
    _check_widths(work, plan.widths)
    _check_heads(work, plan.heads)
    if verify:
        with torch.no_grad(), preserved_state(work):
            work.eval()
            try:
                out = comparable_outputs(work, inputs)
            except (RuntimeError, ValueError, IndexError) as exc:
                raise SurgeryError(f"the pruned model fails on the example inputs: {exc}") from exc
        diff, scale = _max_diff(reference, out)
        if diff > rtol * max(1.0, scale) and not allow_inexact:
            raise SurgeryError(
                f"the pruned model's outputs differ from the scored model's by {diff:.3g} (scale {scale:.3g}); "
                "some channel group is not removed exactly by Torch-Pruning in this model"
            )
    _transplant(model, work)
    return plan


def apply_plan(
    model: nn.Module,
    plan: PruningPlan | Mapping[str, Any] | str | os.PathLike[str],
    example_inputs: Any,
) -> nn.Module:
    """Re-apply a saved plan to a freshly built (unscored) model of the same architecture, in place.

    Args:
        model: the unpruned model.
        plan: a `PruningPlan`, its dict, or a path to its JSON.
        example_inputs: inputs for one forward pass (to trace the channel dependencies).

    Returns:
        ``model``, pruned, ready for ``load_state_dict`` of the pruned checkpoint.

    Raises:
        ValueError: the plan does not match the model (unknown layer, different channel count).
        SurgeryError: the result does not have the planned widths; the model is left untouched.
    """
    if isinstance(plan, (str, os.PathLike)):
        plan = PruningPlan.load(plan)
    elif isinstance(plan, Mapping):
        plan = PruningPlan.from_dict(plan)
    if not isinstance(plan, PruningPlan):
        raise TypeError(f"plan must be a PruningPlan, a dict or a path, got {type(plan).__name__}")
    if has_scores(model):
        raise ValueError("apply_plan expects a plain model; this one has scores attached (rartsprune.remove it first)")
    inputs = _check_inputs(model, example_inputs)
    work = copy.deepcopy(model)
    _convert_for_plan(work, plan)
    if plan.widths:
        layers = set(layer_widths(work))
        planned = {n for n, w in plan.widths.items() if "shape" not in w}
        if layers != planned:
            extra, missing = sorted(layers - planned), sorted(planned - layers)
            raise ValueError(
                f"the plan was made for another architecture ({plan.model or 'unknown'}): layers not in the plan "
                f"{extra[:3]}, plan layers missing from the model {missing[:3]}"
            )
    groups = {g.name: g for g in analyze_groups(work, inputs, prune_heads=bool(plan.heads),
                                                prune_layernorm=bool(plan.layernorms))}
    for name, n in plan.channels.items():
        if name not in groups:
            raise ValueError(f"the plan prunes layer {name!r}, which is not a channel-group root of this model")
        if groups[name].channels != n:
            raise ValueError(f"layer {name!r} has {groups[name].channels} channels, the plan expects {n}")
    try:
        _prune_groups(work, plan.removed(), inputs, plan.heads, plan.layernorms)
    except SurgeryError:
        raise
    except Exception as exc:  # noqa: BLE001 - any Torch-Pruning failure
        raise SurgeryError(f"Torch-Pruning failed while removing channels: {type(exc).__name__}: {exc}") from exc
    _check_widths(work, plan.widths)
    _check_heads(work, plan.heads)
    _transplant(model, work)
    return model


def _convert_for_plan(work: nn.Module, plan: PruningPlan) -> None:
    """Replace the ``nn.MultiheadAttention`` blocks whose heads the plan prunes by `HeadAttention`."""
    for entry in plan.heads.values():
        if entry.get("convert"):
            name = str(entry["attention"])
            try:
                mha = work.get_submodule(name)
            except AttributeError as exc:
                raise ValueError(f"the plan prunes the heads of {name!r}, which this model does not have") from exc
            if not isinstance(mha, nn.MultiheadAttention):
                raise ValueError(f"the plan expects an nn.MultiheadAttention at {name!r}, found {type(mha).__name__}")
            _set_module(work, name, HeadAttention.from_multihead_attention(mha))


def _check_heads(work: nn.Module, heads: Mapping[str, Mapping[str, Any]]) -> None:
    """Every pruned attention block has the planned number of heads."""
    for entry in heads.values():
        block = work.get_submodule(str(entry["attention"]))
        if int(block.num_heads) != int(entry["heads"]):
            raise SurgeryError(f"after surgery {entry['attention']} has {block.num_heads} heads, the plan keeps {entry['heads']}")
