"""Check whether rartsprune handles a model: attach, score, prune, compare outputs.

`check_model` runs the full path a user's model takes — attach scores, α = 1 equivalence, zero the
scores of a random fraction of every group's channels, surgery, exact output equivalence, forward and
backward of the pruned model — on a *copy* of the model, and reports numbers instead of raising.

Examples:
    >>> import torch, torchvision
    >>> from rartsprune.check import check_model
    >>> r = check_model(torchvision.models.resnet18(num_classes=10), torch.randn(2, 3, 32, 32))
    >>> r.ok, r.scored_groups > 0
    (True, True)
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn

from .attach import attach_scores
from .errors import RartsPruneError
from .graph import _call_model
from .scores import ScoreHandle, _map_tensors
from .surgery import apply_surgery

__all__ = ["CheckResult", "check_model", "perturb_parameters", "random_keep"]


@dataclass
class CheckResult:
    """Outcome of `check_model` (all numbers; ``ok`` and ``reason`` summarise)."""

    ok: bool
    reason: str = ""
    groups: int = 0
    scored_groups: int = 0
    scored_channels: int = 0
    removed_channels: int = 0
    params_before: int = 0
    params_after: int = 0
    identity_diff: float = float("nan")
    pruned_diff: float = float("nan")
    output_scale: float = float("nan")
    seconds: float = 0.0
    statuses: dict[str, int] | None = None
    pruned: nn.Module | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """All numbers as a JSON-friendly dict (without the pruned model)."""
        out = asdict(replace(self, pruned=None))
        out.pop("pruned")
        return out


def _flat(out: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _map_tensors(out, found.append)
    return found


def _diff(a: Any, b: Any) -> float:
    fa, fb = _flat(a), _flat(b)
    if len(fa) != len(fb) or any(x.shape != y.shape for x, y in zip(fa, fb)):
        return float("inf")
    return max(((x.float() - y.float()).abs().max().item() for x, y in zip(fa, fb)), default=0.0)


@torch.no_grad()
def perturb_parameters(model: nn.Module, std: float = 0.02, seed: int = 0) -> nn.Module:
    """Add small Gaussian noise to every floating-point parameter.

    Freshly initialised models often have zero-initialised heads or layer scales, which would make
    output comparisons trivially pass; tests perturb the weights first.
    """
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        if p.is_floating_point():
            p.add_(torch.randn(p.shape, generator=gen).to(p) * std)
    return model


def random_keep(handle: ScoreHandle, ratio: float, seed: int = 0) -> dict[str, torch.Tensor]:
    """Kept units per group: a random ``1 - ratio`` of each group's units (at least one)."""
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    for g in handle.groups:
        n = g.num_units
        k = min(n, max(1, round(n * (1.0 - ratio))))
        keep[g.name] = torch.randperm(n, generator=gen)[:k].sort().values
    return keep


def check_model(
    model: nn.Module,
    example_inputs: Any,
    *,
    ratio: float = 0.4,
    seed: int = 0,
    ignored_layers: Sequence[nn.Module | str] | None = None,
    atol_identity: float = 1e-6,
    rtol_pruned: float = 1e-5,
    min_output_scale: float = 1e-3,
    backward: bool = True,
    return_model: bool = False,
) -> CheckResult:
    """Run attach → α=1 equivalence → zero ``ratio`` of each group → surgery → equivalence → backward.

    Works on a deep copy: ``model`` is not modified. Tolerances: the scored model with α = 1 must match
    the original within ``atol_identity``; the pruned model must match the scored model (removed scores
    zero, kept scores random in [0.5, 1.5]) within ``rtol_pruned`` × max(1, output scale), in eval mode.
    With ``return_model`` the pruned copy is kept in ``result.pruned``.

    A model whose outputs are nearly zero (largest magnitude below ``min_output_scale``, typical of fresh
    models with zero-initialised heads) fails the check: no comparison could detect a wrong surgery. Load
    trained weights or perturb them first (`perturb_parameters`).
    """
    t0 = time.perf_counter()
    work = copy.deepcopy(model).eval()
    result = CheckResult(ok=False)
    result.params_before = sum(p.numel() for p in work.parameters())
    try:
        with torch.no_grad():
            original = _call_model(work, example_inputs)
        handle = attach_scores(work, example_inputs, ignored_layers=ignored_layers)
        result.groups = len(handle.all_groups)
        result.scored_groups = len(handle.groups)
        result.scored_channels = handle.num_channels()
        result.statuses = handle.summary()["groups"]
        with torch.no_grad():
            result.identity_diff = _diff(original, _call_model(work, example_inputs))
        if result.identity_diff > atol_identity:
            result.reason = f"scores at 1 change the outputs by {result.identity_diff:.3g}"
            return result
        keep = random_keep(handle, ratio, seed)
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for g, alpha in zip(handle.groups, handle.scores):
                mask = torch.zeros(g.num_units, dtype=torch.bool)
                mask[keep[g.name]] = True
                alpha.copy_((torch.rand(g.num_units, generator=gen) + 0.5).to(alpha))
                alpha[~mask.to(alpha.device)] = 0.0
                result.removed_channels += g.channels - len(g.channels_of_units(keep[g.name].tolist()))
            scored = _call_model(work, example_inputs)
        apply_surgery(work, keep, verify=False)
        with torch.no_grad():
            pruned = _call_model(work, example_inputs)
        result.pruned_diff = _diff(scored, pruned)
        result.output_scale = max((t.float().abs().max().item() for t in _flat(scored)), default=0.0)
        result.params_after = sum(p.numel() for p in work.parameters())
        if result.output_scale < min_output_scale:
            result.reason = (
                f"the outputs are nearly zero (largest magnitude {result.output_scale:.3g}), so comparing them "
                "cannot detect a wrong surgery: load trained weights or perturb them "
                "(rartsprune.check.perturb_parameters)"
            )
            return result
        if result.pruned_diff > rtol_pruned * max(1.0, result.output_scale):
            result.reason = f"pruned outputs differ by {result.pruned_diff:.3g} (scale {result.output_scale:.3g})"
            return result
        if backward:
            work.train()
            out = _call_model(work, example_inputs)
            loss = sum(t.float().sum() for t in _flat(out) if t.requires_grad)
            loss.backward()
            if not any(p.grad is not None for p in work.parameters()):
                result.reason = "the pruned model produced no gradients"
                return result
        result.ok = True
        if return_model:
            result.pruned = work
    except (RartsPruneError, ValueError, TypeError) as exc:
        result.reason = f"{type(exc).__name__}: {exc}"
    except RuntimeError as exc:
        result.reason = f"RuntimeError: {exc}"
    finally:
        result.seconds = time.perf_counter() - t0
    return result
