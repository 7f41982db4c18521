"""attach_scores: give every prunable channel group of a model a learnable score vector α.

Attaching runs three checks so that later surgery is exact and never surprises the user:

1. *Rules* (`rartsprune.graph.analyze_groups`): output heads are protected, attention internals
   and channels normalised across channels (LayerNorm, GroupNorm) are left alone by default.
2. *Probe*: with a random half of every group's scores at zero, one forward pass checks that the
   zeroed channels reach every consuming layer as exact zeros.
3. *Dry run*: on a copy, the groups are removed one by one with Torch-Pruning, checking after each
   group that every layer has the planned width, and at the end that the outputs did not move
   (bisecting to the responsible groups when they did). Groups that fail (e.g. parts of GhostNet,
   which Torch-Pruning over-prunes) are left unscored.

Groups that fail a check keep their channels and report why (``handle.all_groups[i].reason``).
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn as nn

from .errors import RartsPruneError, UnsupportedModelError
from .graph import ChannelGroup, _call_model, analyze_groups, build_dependency_graph, preserved_state
from .heads import convert_multihead_attention, restore_modules
from .layernorm import original_width
from .scores import (
    ALPHA_PREFIX,
    BANK_ATTR,
    ScoreBank,
    ScoreHandle,
    _check_inputs,
    _detach,
    _install_bank,
    _map_tensors,
    _model_device,
    _place,
    _probe_exactness,
    get_handle,
    has_scores,
)
from .surgery import _expected_widths, _max_diff, _prune_one, layer_widths, replace_layernorms
from .tasks import comparable_outputs

__all__ = ["attach_scores"]


def _zero_half(handle: ScoreHandle, seed: int) -> dict[str, list[int]]:
    """Zero a random half of every group's units; return the removed root channels per group."""
    gen = torch.Generator().manual_seed(seed)
    removed = {}
    with torch.no_grad():
        for g, alpha in zip(handle.groups, handle.scores):
            perm = torch.randperm(g.num_units, generator=gen)
            zero = sorted(perm[: max(1, g.num_units // 2)].tolist())
            alpha[torch.tensor(zero, device=alpha.device)] = 0.0
            removed[g.name] = g.channels_of_units(zero)
    return removed


def _dry_run(
    model: nn.Module, inputs: Any, groups: Sequence[str], seed: int, check_outputs: bool, rtol: float = 1e-4
) -> tuple[dict[str, str], bool]:
    """Remove the listed scored groups one at a time on a copy of ``model``.

    Every group's removal is checked for planned widths; the outputs are compared once at the end.
    Returns ``({group: why it failed}, outputs_unchanged)``. Stops at the first group whose removal
    raises (the copy is then unusable).
    """
    work = copy.deepcopy(model)
    handle = get_handle(work)
    removed = _zero_half(handle, seed)
    by_name = {g.name: g for g in handle.groups}
    heads = {g.name: {"attention": g.attention, "head_dim": g.head_dim} for g in handle.groups if g.attention}
    norms = {ln: original_width(work.get_submodule(ln)) for g in groups for ln in by_name[g].layernorms}
    _detach(work, fold=True)
    bad: dict[str, str] = {}
    with torch.no_grad(), preserved_state(work):
        work.eval()
        reference = comparable_outputs(work, inputs) if check_outputs else None
        graph = build_dependency_graph(work, inputs)
        modules = dict(work.named_modules())
        for name in groups:
            expected = _expected_widths(work, [by_name[name]], {name: removed[name]})
            try:
                _prune_one(graph, modules, work, name, removed[name], heads)
            except Exception as exc:  # noqa: BLE001 - any Torch-Pruning failure
                bad[name] = f"Torch-Pruning cannot remove its channels: {type(exc).__name__}: {exc}"
                return bad, True
            actual = layer_widths(work, list(expected))
            wrong = [n for n in expected if actual.get(n) != expected[n]]
            if wrong:
                bad[name] = (
                    f"Torch-Pruning changes the width of {wrong[0]} to {actual.get(wrong[0])} instead of "
                    f"{expected[wrong[0]]} when removing these channels"
                )
        if not check_outputs or bad:
            return bad, True
        try:
            replace_layernorms(work, norms)
            out = comparable_outputs(work, inputs)
        except Exception:  # noqa: BLE001 - the forward breaks: bisect to the responsible groups like a mismatch
            return bad, False
        diff, scale = _max_diff(reference, out)
    return bad, diff <= rtol * max(1.0, scale)


def _find_failing_groups(model: nn.Module, inputs: Any, names: list[str], seed: int, check_outputs: bool) -> dict[str, str]:
    """Dry-run the removal of ``names``; bisect when the outputs move to find the groups responsible."""
    failed: dict[str, str] = {}
    pending = [list(names)]
    while pending:
        subset = [n for n in pending.pop() if n not in failed]
        if not subset:
            continue
        bad, outputs_ok = _dry_run(model, inputs, subset, seed, check_outputs)
        if bad:
            failed.update(bad)
            pending.append(subset)  # run the rest again without the failed groups
        elif not outputs_ok:
            if len(subset) == 1:
                failed[subset[0]] = "removing its zero-scored channels changes or breaks the model's outputs"
            else:
                half = len(subset) // 2
                pending += [subset[:half], subset[half:]]
    return failed


def _demote(model: nn.Module, groups: list[ChannelGroup], reasons: dict[str, str], status: str) -> ScoreBank:
    """Leave the ``reasons`` groups unscored and re-place the scores of the others."""
    old: ScoreBank = getattr(model, BANK_ATTR)
    _detach(model, fold=False)
    for g in groups:
        if g.name in reasons:
            g.status, g.reason, g.placements, g.in_placements = status, reasons[g.name], [], []
    if not any(g.scorable for g in groups):
        name, why = next(iter(reasons.items()))
        raise UnsupportedModelError(
            f"{type(model).__name__}: no channel group can be removed exactly (e.g. {name}: {why})"
        )
    fresh = ScoreBank(groups, old.example_inputs, old.backend, old.allow_inexact, _model_device(model))
    fresh.converted = set(old.converted)
    _install_bank(model, fresh)
    _place(model, fresh)
    return fresh


@contextlib.contextmanager
def _attached(model: nn.Module, bank: ScoreBank) -> Iterator[None]:
    """Register the bank; on error remove every placement and the bank again."""
    _install_bank(model, bank)
    try:
        yield
    except BaseException:
        if has_scores(model):
            _detach(model, fold=False)
        raise


def attach_scores(
    model: nn.Module,
    example_inputs: Any,
    *,
    ignored_layers: Sequence[nn.Module | str] | None = None,
    allow_inexact: bool = False,
    backend: str = "param",
    validate: bool = True,
    seed: int = 0,
    prune_heads: bool = False,
    prune_layernorm: bool = False,
) -> ScoreHandle:
    """Insert one learnable score vector α into every prunable channel group of ``model``, in place.

    Args:
        model: any ``nn.Module`` (torchvision, timm or your own). Modified in place: the scores are
            registered as ``model.rartsprune_scores`` and applied through parametrizations or hooks.
        example_inputs: inputs for one forward pass (a tensor, a tuple of positional inputs or a dict of
            keyword inputs); moved to the model's device. Used to trace the channel dependencies.
        ignored_layers: modules or dotted module names whose output channels are never scored or pruned
            (a container ignores everything inside it). Output heads are protected automatically.
        allow_inexact: also score groups normalised across channels (LayerNorm / GroupNorm, e.g. a ViT's
            residual stream). Removing such channels changes the normalisation of the others, so the
            pruned model is only approximately equal to the scored one. Off by default.
        backend: ``"param"`` (scale weights and biases; default, cheaper) or ``"hook"`` (scale the
            outputs of plain ``torch.nn`` layers).
        validate: run the probe and the dry-run surgery (see the module docstring) and leave groups that
            fail unscored. Costs a copy of the model and one forward pass per group.
        seed: seed of the random channel subsets used by the checks.
        prune_heads: also score whole attention heads (one score per head, on the output projection's
            input; see `rartsprune.heads`), searched together with the other groups (e.g. a ViT's MLP width).
            Every ``nn.MultiheadAttention`` used as self-attention is replaced, in place, by the equivalent
            `rartsprune.heads.HeadAttention` (outputs checked equal; it stays after `rartsprune.remove`,
            except where none of its heads could be scored). Off by default.
        prune_layernorm: also score channel groups normalised by plain ``nn.LayerNorm`` layers — a vision
            transformer's embedding width, the stream every block reads and writes — and remove them
            exactly: the score also multiplies the bare parameters that write the channels (class token,
            position embedding), and surgery replaces those LayerNorms by
            `rartsprune.layernorm.PrunedLayerNorm`, which keeps the original width's statistics. Off by
            default (`allow_inexact` instead scores them approximately).

    Returns:
        A `rartsprune.scores.ScoreHandle` giving access to the scores and their groups.

    Raises:
        RartsPruneError: the model already has scores attached.
        UnsupportedModelError: the model cannot be traced, is on the meta device, or has no prunable group.
        ValueError / TypeError: malformed arguments or example inputs the model does not accept.

    With all α = 1 the model computes exactly what it computed before. The model's training mode and its
    parameters' ``requires_grad`` flags are unchanged; on any error the model is left as it was.

    Examples:
        >>> import torch, torchvision, rartsprune
        >>> model = torchvision.models.mobilenet_v2(num_classes=10)
        >>> handle = rartsprune.attach_scores(model, torch.randn(1, 3, 32, 32))
        >>> handle.summary()["groups"]
        {'protected': 1, 'scored': 25}
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if backend not in ("param", "hook"):
        raise ValueError(f"backend must be 'param' or 'hook', got {backend!r}")
    if has_scores(model):
        raise RartsPruneError(
            f"{type(model).__name__} already has scores attached; call rartsprune.remove(model) first"
        )
    if hasattr(model, BANK_ATTR) or any(n.startswith(ALPHA_PREFIX) for n, _ in model.named_parameters()):
        raise RartsPruneError(f"the model already has an attribute named {BANK_ATTR!r} or {ALPHA_PREFIX}*")
    inputs = _check_inputs(model, example_inputs)
    try:
        with preserved_state(model), torch.no_grad():
            model.eval()
            _call_model(model, inputs)
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        raise ValueError(f"example_inputs do not fit {type(model).__name__}: {type(exc).__name__}: {exc}") from exc
    originals: dict[str, nn.Module] = {}
    if prune_heads:
        originals, _ = convert_multihead_attention(model, lambda m: _eval_forward(m, inputs))
    try:
        groups = analyze_groups(model, inputs, ignored_layers=ignored_layers, allow_inexact=allow_inexact,
                                prune_heads=prune_heads, prune_layernorm=prune_layernorm)
        if not any(g.scorable for g in groups):
            reasons = sorted({f"{g.status}: {g.reason}" for g in groups})[:6]
            raise UnsupportedModelError(
                f"{type(model).__name__} has no prunable channel group ({len(groups)} groups found: {reasons})"
            )
        cpu_inputs = _map_tensors(inputs, lambda t: t.detach().cpu().clone())
        bank = ScoreBank(groups, cpu_inputs, backend, allow_inexact, _model_device(model))
        bank.converted = set(originals)
        with _attached(model, bank):
            _place(model, bank)
            if validate:
                leaks = _probe_exactness(model, getattr(model, BANK_ATTR), inputs, seed=seed)
                if leaks:
                    _demote(model, groups, leaks, "inexact")
                names = [g.name for g in groups if g.scorable]
                failed = _find_failing_groups(model, inputs, names, seed, check_outputs=not allow_inexact)
                if failed:
                    _demote(model, groups, failed, "unsupported")
    except BaseException:
        restore_modules(model, originals)
        raise
    _restore_unscored(model, originals)
    return ScoreHandle(model)


def _eval_forward(model: nn.Module, inputs: Any) -> Any:
    with preserved_state(model), torch.no_grad():
        model.eval()
        return _call_model(model, inputs)


def _restore_unscored(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Put back the ``nn.MultiheadAttention`` blocks that were replaced for nothing (no scored group touches them)."""
    bank: ScoreBank = getattr(model, BANK_ATTR)
    used = [
        n for g in bank.groups if g.scorable
        for n in [m.name for m in g.members] + [p[0] for p in g.placements + g.in_placements]
    ]
    unused = {
        name: mha for name, mha in originals.items()
        if not any(n == name or n.startswith(name + ".") for n in used)
    }
    restore_modules(model, unused)
    bank.converted -= set(unused)
