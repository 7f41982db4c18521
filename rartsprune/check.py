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
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
import torch.nn as nn

from .attach import attach_scores
from .errors import RartsPruneError
from .scores import ScoreHandle, _map_tensors
from .surgery import apply_surgery
from .tasks import comparable_outputs

__all__ = ["CheckResult", "check_model", "perturb_parameters", "random_keep"]


@dataclass
class CheckResult:
    """Outcome of `check_model` (all numbers; ``ok`` and ``reason`` summarise).

    ``statuses`` counts the channel groups by status; ``unscored`` maps every group left unscored to
    ``"status: reason"`` (e.g. ``"protected: its channels reach the model output"``); ``layernorm_groups``
    counts the scored groups removed exactly through their LayerNorms (``prune_layernorm=True``).
    """

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
    loss: float = float("nan")
    score_grad_norm: float = float("nan")
    scores_without_grad: int = 0
    layernorm_groups: int = 0
    statuses: dict[str, int] | None = None
    unscored: dict[str, str] | None = None
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
    outputs_fn: Callable[[nn.Module, Any], Any] | None = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    train_batch: Any = None,
    prune_heads: bool = False,
    prune_layernorm: bool = False,
) -> CheckResult:
    """Run attach → α=1 equivalence → zero ``ratio`` of each group → surgery → equivalence → backward.

    Works on a deep copy: ``model`` is not modified. Tolerances: the scored model with α = 1 must match
    the original within ``atol_identity``; the pruned model must match the scored model (removed scores
    zero, kept scores random in [0.5, 1.5]) within ``rtol_pruned`` × max(1, output scale), in eval mode.
    With ``return_model`` the pruned copy is kept in ``result.pruned``.

    A model whose outputs are nearly zero (largest magnitude below ``min_output_scale``, typical of fresh
    models with zero-initialised heads) fails the check: no comparison could detect a wrong surgery. Load
    trained weights or perturb them first (`perturb_parameters`).

    Models that are not classifiers (see `rartsprune.tasks`):

    * ``outputs_fn(model, example_inputs)``: what is compared, in eval mode; default
      `rartsprune.tasks.comparable_outputs`: the model's outputs, or for a torchvision detector its raw head
      outputs (`rartsprune.tasks.detection_outputs`: post-processed boxes are not a continuous function of
      the weights).
    * ``loss_fn(net, batch)`` with ``train_batch`` (default ``example_inputs``): the training-mode check. With
      α = 1 the scored model's loss must be finite and give finite, nonzero gradients on the scores
      (``result.loss``, ``result.score_grad_norm``; ``result.scores_without_grad`` counts the score vectors
      the loss does not reach, e.g. of layers used only in eval mode); after surgery the pruned model's loss must be finite with
      gradients on its weights. Without ``loss_fn`` the pruned model's backward uses the sum of its (compared)
      outputs, in training mode.

    ``prune_heads`` / ``prune_layernorm``: as for `rartsprune.attach_scores` (whole attention heads; channels
    normalised by LayerNorms, e.g. a vision transformer's embedding width).

    Examples:
        >>> import torch, torchvision
        >>> from rartsprune.tasks import segmentation_loss
        >>> net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(num_classes=3, weights_backbone=None)
        >>> x, y = torch.randn(2, 3, 32, 32), torch.randint(0, 3, (2, 32, 32))
        >>> r = check_model(perturb_parameters(net), x, loss_fn=segmentation_loss, train_batch=(x, y))
        >>> r.ok, r.score_grad_norm > 0
        (True, True)
    """
    outputs = outputs_fn or comparable_outputs
    batch = example_inputs if train_batch is None else train_batch
    t0 = time.perf_counter()
    work = copy.deepcopy(model).eval()
    result = CheckResult(ok=False)
    result.params_before = sum(p.numel() for p in work.parameters())
    try:
        with torch.no_grad():
            original = outputs(work, example_inputs)
        handle = attach_scores(work, example_inputs, ignored_layers=ignored_layers, prune_heads=prune_heads,
                               prune_layernorm=prune_layernorm)
        result.groups = len(handle.all_groups)
        result.scored_groups = len(handle.groups)
        result.scored_channels = handle.num_channels()
        result.layernorm_groups = sum(bool(g.layernorms) for g in handle.groups)
        result.statuses = handle.summary()["groups"]
        result.unscored = {g.name: f"{g.status}: {g.reason}" for g in handle.all_groups if not g.scorable}
        with torch.no_grad():
            result.identity_diff = _diff(original, outputs(work, example_inputs))
        if result.identity_diff > atol_identity:
            result.reason = f"scores at 1 change the outputs by {result.identity_diff:.3g}"
            return result
        if loss_fn is not None:
            result.loss, result.score_grad_norm, result.scores_without_grad, why = _score_gradients(
                work, handle, loss_fn, batch
            )
            if why:
                result.reason = why
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
            scored = outputs(work, example_inputs)
        apply_surgery(work, keep, verify=False)
        with torch.no_grad():
            pruned = outputs(work, example_inputs)
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
            if loss_fn is not None:
                loss = loss_fn(work, batch)
                if not bool(torch.isfinite(loss)):
                    result.reason = f"the pruned model's training loss is {loss.item()}"
                    return result
            else:
                out = outputs(work, example_inputs)
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


def _score_gradients(
    model: nn.Module, handle: ScoreHandle, loss_fn: Callable[[nn.Module, Any], torch.Tensor], batch: Any
) -> tuple[float, float, int, str]:
    """One training-mode forward + backward of the scored model.

    Returns (loss, norm of the score gradients, number of score vectors the loss does not reach, error).

    The model's modes, its BatchNorm statistics and every gradient are restored afterwards.
    """
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in model.modules()]
    params = list(model.parameters())
    try:
        model.train()
        loss = loss_fn(model, batch)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            return math.nan, math.nan, 0, f"loss_fn returned {type(loss).__name__}, not a scalar tensor"
        if not bool(torch.isfinite(loss)):
            return float(loss.item()), math.nan, 0, f"the scored model's training loss is {loss.item()}"
        grads = torch.autograd.grad(loss, handle.scores, allow_unused=True)
        found = [g for g in grads if g is not None]
        norm = float(torch.linalg.vector_norm(torch.stack([g.norm() for g in found]))) if found else 0.0
        missing = len(grads) - len(found)
        if not math.isfinite(norm):
            return float(loss.item()), norm, missing, "the scores' gradients are not finite"
        if norm == 0.0:
            return float(loss.item()), norm, missing, "the training loss gives no gradient to any score"
        return float(loss.item()), norm, missing, ""
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                b.copy_(saved)
        for m, mode in modes:
            m.training = mode
        for p in params:
            p.grad = None
