"""``rartsprune.prune``: width search (channel pruning) inside the user's own training loop.

Shaped like ``torch.nn.utils.prune``: a module goes in and the same module comes out, changed in place::

    import rartsprune
    pruner = rartsprune.prune(model, ratio=0.4)          # attaches scores, builds the auxiliary copy
    for (x_t, t_t), (x_v, t_v) in rartsprune.split_loaders(train_set, batch_size=64):
        stats = pruner.step((x_t, t_t), (x_v, t_v))      # one RARTS iteration
    model = pruner.finalize()                            # select channels, surgery, hooks gone
    # fine-tune ``model`` as any plain nn.Module

``model`` is the primary network y of RARTS (it sees D_v); the auxiliary network w (sees D_t) is a deep
copy sharing the scores. After `WidthPruner.finalize` only ``model`` remains, physically smaller.

Pruning ratio semantics (``mode="ratio"``): ``ratio`` is the *pruning ratio of channels* (PRC), the
fraction of the prunable channels (those of scored groups; heads, attention internals and ignored layers
are not prunable) that are removed — not a fraction of parameters or MACs. With ``scope="global"`` the
channels are ranked across all layers; with ``scope="layer"`` every group loses the same fraction (as
Torch-Pruning's ``pruning_ratio`` with ``global_pruning=False``). No group is ever emptied.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.nn.parallel import DistributedDataParallel

from .._version import __version__
from ..attach import attach_scores
from ..errors import RartsPruneError, SearchError
from ..graph import _call_model, preserved_state
from ..optim import METHODS, make_search_optimizer
from ..scores import ScoreHandle, _detach, _map_tensors, _model_device, has_scores
from ..surgery import PruningPlan, apply_surgery, plan_from_scores
from .baselines import BASELINES, BaselineTrainer, slimming_layers
from .budget import CostModel, select_by_budget
from .config import DEFAULT_RATIO, MODES, SelectionConfig
from .importance import Importance, get_importance
from .penalties import WidthPenalty, soft_threshold_
from .selection import Selection, select_by_ratio, select_by_threshold

__all__ = ["prune", "WidthPruner", "MODES", "ALL_METHODS", "DEFAULTS", "BUDGET_DEFAULTS", "DEFAULT_RATIO", "COLLAPSED_SCORE"]

#: Mean |α| below which a finished search's scores count as collapsed (`WidthPruner.finalize` warns).
COLLAPSED_SCORE = 0.05

#: Score-search defaults per mode (``prune(l1=None, arch_lr=None)``). ``"ratio"``: chosen on the criterion
#: diagnostic (``bench/criterion_quality.py``, training images only, one search epoch): Adam at ``1e-1`` with an
#: ℓ1 pressure of ``4e-3`` gives a ranking that agrees with the oracle (Spearman 0.30, vs 0.06 for the former
#: ``arch_lr=3e-4`` without pressure and 0.16 for the ℓ1-norm of the weights) and the best accuracy right
#: after pruning to 0.6x / 0.35x MACs among the settings tried (docs/width.md). The ranking reads |α|·|γ|
#: (``importance="alpha_gamma"``, scale-invariant where a score follows a BatchNorm): Spearman 0.32 vs 0.28
#: for |α| after one epoch, 0.27 vs 0.23 after three. ``"l1"``: unchanged (there the penalty decides the
#: size and the threshold is on |α|; a slow search keeps it stable).
DEFAULTS: dict[str, dict[str, Any]] = {
    "ratio": {"l1": 4e-3, "arch_lr": 1e-1, "importance": "alpha_gamma"},
    "l1": {"l1": 1e-4, "arch_lr": 3e-4, "importance": "alpha"},
}

#: What changes when the size is a MACs / parameter budget (``prune(macs=...)`` / ``params=``): the pressure
#: on the scores is the budget's own cost — every score pushed down in proportion to the MACs its unit costs
#: (``cost_weight=2``) instead of the same ℓ1 pressure on every score (``l1=0``). On the criterion diagnostic
#: (training images only) it gave the best accuracy right after pruning among the RARTS settings at 0.6x
#: (50.7 vs 49.0) and tied at 0.35x (43.1 vs 43.0); at equal MACs after fine-tuning (bench/equal_macs.py, 3
#: seeds) 57.37 / 56.13 at 0.6x / 0.35x vs 56.20 / 54.65 with the ratio-mode pressure (docs/width.md).
BUDGET_DEFAULTS: dict[str, float] = {"l1": 0.0, "cost_weight": 2.0}

#: Config keys a resumed search must share with the saved one, and the keys of the selection (may differ).
_SEARCH_KEYS = ("lam", "beta", "rarts_mode", "l1", "prox", "cost_weight", "sparsity")
_SELECTION_KEYS = ("ratio", "budget", "importance", "scope", "round_to", "threshold")
ALL_METHODS = METHODS + BASELINES
_STATE_FORMAT = "rartsprune-pruner/1"


def _infer_example_inputs(model: nn.Module) -> torch.Tensor:
    """A batch-1 input for an image classifier, from timm's config or the first layer."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    if isinstance(cfg, Mapping) and cfg.get("input_size"):
        return torch.randn(1, *cfg["input_size"])
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            return torch.randn(1, m.in_channels, 224, 224)
        if isinstance(m, nn.Conv1d):
            return torch.randn(1, m.in_channels, 128)
        if isinstance(m, nn.Linear):
            return torch.randn(1, m.in_features)
        if isinstance(m, (nn.Conv3d, nn.Embedding, nn.RNNBase, nn.MultiheadAttention)):
            break
    raise ValueError(
        f"cannot infer example inputs for {type(model).__name__}; pass example_inputs= (one batch the model accepts)"
    )


def _sgd(lr: float, weight_decay: float) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    def factory(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=weight_decay)

    return factory


def _adam(lr: float, weight_decay: float) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    def factory(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), weight_decay=weight_decay)

    return factory


class WidthPruner:
    """A width search in progress (returned by `prune`).

    Attributes:
        model: the user's model (the primary network y), scored until `finalize`.
        handle: the `rartsprune.scores.ScoreHandle` of its scores.
        search: the search optimizer (`rartsprune.optim`) or, for one-shot baselines, the trainer.
        result: after `finalize`, a dict with the achieved PRC, widths and the plan.
    """

    def __init__(self, model: nn.Module, handle: ScoreHandle, search: Any, config: dict[str, Any], *,
                 cost: CostModel | None = None) -> None:
        self.model = model
        self.handle = handle
        self.search = search
        self.config = config
        self.finalized = False
        self.result: dict[str, Any] | None = None
        self._plan: PruningPlan | None = None
        self._final_steps = 0
        self._penalty: WidthPenalty | None = None
        self._cost = cost  # built on first use when a budget did not need it already
        self._input_spec = _input_spec(handle.example_inputs)
        self._num_classes = _num_classes(model, handle.example_inputs) if config["loss_fn"] is None else None

    # ------------------------------------------------------------------ the loop
    @property
    def num_steps(self) -> int:
        """Completed search steps."""
        return self._final_steps if self.search is None else int(self.search.num_steps)

    def _alive(self, what: str) -> None:
        if self.finalized:
            raise SearchError(f"{what} after finalize(): the search is over and the model is already pruned")
        if not has_scores(self.model):
            raise SearchError(f"{what}: the scores were removed from the model (rartsprune.remove); the search is over")

    def _prepare(self, batch: Any, which: str) -> Any:
        device = _model_device(self.model)
        batch = _map_tensors(batch, lambda t: t.to(device, non_blocking=True))
        empty = [t for t in _tensors(batch) if t.dim() >= 1 and t.shape[0] == 0]
        if empty:
            raise ValueError(f"{which} is empty (a tensor of shape {tuple(empty[0].shape)}): nothing to learn from")
        if self.config["loss_fn"] is None:
            _check_batch(batch, self._input_spec, which, self._num_classes)
        return batch

    def step(self, batch_t: Any, batch_v: Any) -> dict[str, float]:
        """One search iteration: ``batch_t`` from D_t (auxiliary net), ``batch_v`` from D_v (the model).

        Batches are moved to the model's device. Returns the optimizer's statistics (losses, ``dist`` =
        ||y - w|| for RARTS, the penalty, learning rates).

        Raises:
            SearchError: after `finalize`, after ``rartsprune.remove``, or on a non-finite loss (the
                step is undone: the model, the scores and the optimizer states are as before the call).
            SearchError: called inside ``torch.no_grad()`` / ``torch.inference_mode()``.
            ValueError: an empty batch; (default loss) a batch of the wrong shape or dtype, or labels outside
                the model's classes. Nothing is changed.
        """
        self._alive("step()")
        if not torch.is_grad_enabled() or torch.is_inference_mode_enabled():
            raise SearchError("step() was called with gradients disabled (inside torch.no_grad() or "
                              "torch.inference_mode()): a search step trains; call it outside that block")
        batch_t = self._prepare(batch_t, "batch_t")
        batch_v = self._prepare(batch_v, "batch_v")
        try:
            stats = self.search.step(batch_t, batch_v)
        except SearchError as exc:
            raise SearchError(f"{exc} — the search state was restored to before this step; lower the learning "
                              "rates or check the data, then continue or reload a checkpoint") from exc
        if self.config["mode"] == "l1" and self.config["prox"] and self._is_search:
            lr = self.search.optimizers["arch"].param_groups[0]["lr"]
            soft_threshold_(self.handle.scores, lr * self.config["l1"])
        return stats

    @property
    def _is_search(self) -> bool:
        return self.config["method"] in METHODS

    def step_schedulers(self) -> None:
        """Step the LR schedulers once (per epoch or per step, your choice)."""
        self._alive("step_schedulers()")
        self.search.step_schedulers()

    # ------------------------------------------------------------------ decisions
    def importance(self) -> dict[str, torch.Tensor]:
        """Per-unit importance used for the selection: the ``importance`` criterion (an `Importance`) applied now."""
        return self.config["ranking"](self.handle)

    def selection(self) -> Selection:
        """Which units `finalize` would keep now (the model is not changed)."""
        self._alive("selection()")
        if self.config["mode"] == "l1":
            if self._is_search:
                return select_by_threshold(self.handle, self.config["threshold"])
            raise ValueError("mode='l1' needs a search method (rarts, darts1, darts2, milenas)")
        if self.config["budget"] is not None:
            kind, fraction = self.config["budget"]
            return select_by_budget(self.handle, fraction, kind=kind, importance=self.importance(),
                                    scope=self.config["scope"], cost=self.cost_model())
        return select_by_ratio(self.handle, self.config["ratio"], importance=self.importance(), scope=self.config["scope"])

    def cost_model(self) -> CostModel:
        """The `rartsprune.width.budget.CostModel` of the scored model (built once, with ``round_to``)."""
        if self._cost is None:
            self._cost = CostModel(self.handle, round_to=self.config["round_to"])
        return self._cost

    def plan(self) -> PruningPlan:
        """The pruning plan: a preview before `finalize`, the executed plan after."""
        if self.finalized:
            assert self._plan is not None
            return self._plan
        return plan_from_scores(self.model, self.selection().keep, round_to=self.config["round_to"])

    def finalize(self) -> nn.Module:
        """Select the channels, remove the others physically and return the (same) model, now plain.

        The kept scores are folded into the weights; the auxiliary network and the optimizer state are
        released. ``self.result`` holds the achieved PRC, the widths and the plan.

        Raises:
            SearchError: called twice, or after ``rartsprune.remove``.
            SurgeryError: the surgery failed (the model is left scored and the search can go on).
        """
        self._alive("finalize()")
        collapsed = self.collapsed()
        if collapsed is not None:
            warnings.warn(collapsed, RuntimeWarning, stacklevel=2)
        selection = self.selection()
        groups = {g.name: g for g in self.handle.groups}
        before = sum(p.numel() for n, p in self.model.named_parameters() if not n.startswith("rartsprune_alpha_"))
        plan = apply_surgery(self.model, selection.keep, round_to=self.config["round_to"])
        kept = sum(len(v) for v in plan.groups.values())
        total = sum(plan.channels.values())
        self._plan = plan
        self.finalized = True
        self.result = {
            "method": self.config["method"],
            "mode": self.config["mode"],
            "requested_ratio": self.config["ratio"] if self.config["mode"] == "ratio" else None,
            "budget": dict([self.config["budget"]]) if self.config["budget"] is not None else None,
            "prc": 1.0 - kept / total if total else 0.0,
            "prunable_channels": total,
            "removed_channels": total - kept,
            "params_before": before,
            "params_after": sum(p.numel() for p in self.model.parameters()),
            "widths": {n: {"kept": len(plan.groups[n]), "channels": groups[n].channels} for n in plan.groups},
            "steps": self.num_steps,
        }
        self._final_steps = self.num_steps
        self.search = None  # release w, the optimizer states and the snapshots
        return self.model

    def collapsed(self) -> str | None:
        """Ratio mode: a message when the scores have collapsed towards 0 (mean |α| < `COLLAPSED_SCORE`), else None.

        The ℓ1 pressure then outweighed the loss (a search much longer than the one epoch the ratio-mode
        defaults were chosen for): the ranking carries little information and the network behind the scores is
        damaged. `finalize` warns with this message.
        """
        if not self._is_search or self.config["mode"] != "ratio" or not self.handle.scores:
            return None  # in mode="l1" scores at 0 are the point: the threshold decides the size
        mean = float(torch.cat([a.detach().abs().flatten() for a in self.handle.scores]).mean())
        if mean >= COLLAPSED_SCORE:
            return None
        return (f"the channel scores collapsed during the search (mean |score| {mean:.4f} < {COLLAPSED_SCORE}): the l1 "
                f"pressure outweighed the loss over {self.num_steps} steps; lower arch_lr (e.g. so that arch_lr x "
                "search steps is about 3) or l1")

    def remove(self) -> nn.Module:
        """Stop the search without pruning: fold the scores into the weights (like ``rartsprune.remove``)."""
        self._alive("remove()")
        _detach(self.model, fold=True)
        self._final_steps = self.num_steps
        self.search = None
        self.finalized = True
        return self.model

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the search exactly (use with a pruner built by the same call)."""
        self._alive("state_dict()")
        return {
            "format": _STATE_FORMAT,
            "version": __version__,
            "config": {k: v for k, v in self.config.items() if _plain(v)},
            "groups": [g.name for g in self.handle.groups],
            "search": self.search.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, other_selection: bool = False) -> None:
        """Restore `state_dict` into a pruner created by the same ``prune`` call on a fresh model.

        The search settings (method, mode, λ, β, the penalties) must match: a mismatch raises ValueError
        naming the setting. The selection (ratio or budget, importance, scope, round_to, threshold) may
        differ — one search can be finalized at several sizes — and this pruner's selection applies; a
        UserWarning names the differences unless ``other_selection=True`` says that is intended.
        """
        self._alive("load_state_dict()")
        if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a rartsprune pruner state (format {_STATE_FORMAT!r} expected)")
        if state["groups"] != [g.name for g in self.handle.groups]:
            raise ValueError("the checkpoint was made for a model with other channel groups")
        # the search settings must match; the selection (ratio / budget, importance, scope) may differ: one
        # search can be finalized at several sizes
        for key in ("method", "mode"):
            if state["config"].get(key) != self.config[key]:
                raise ValueError(f"checkpoint {key}={state['config'].get(key)!r}, this pruner {key}={self.config[key]!r}")
        for key in _SEARCH_KEYS:  # what the search optimizes: a resumed search with other settings is another search
            if key in state["config"] and state["config"][key] != self.config[key]:
                raise ValueError(f"the checkpoint's search used {key}={state['config'][key]!r}, this pruner "
                                 f"{key}={self.config[key]!r}: build the pruner with the checkpoint's setting")
        self.search.load_state_dict(state["search"])
        differ = [f"{k}={state['config'][k]!r} -> {self.config[k]!r}" for k in _SELECTION_KEYS
                  if k in state["config"] and state["config"][k] != self.config[k]]
        if differ and not other_selection:
            warnings.warn("the checkpoint was saved by a pruner with another selection (" + ", ".join(differ)
                          + "); this pruner's selection applies at finalize()", UserWarning, stacklevel=2)

    def report(self) -> dict[str, Any]:
        """Current numbers: steps, PRC the selection would reach, score statistics, widths."""
        if self.finalized:
            return dict(self.result or {})
        sel = self.selection()
        scores = torch.cat([a.detach().flatten().cpu() for a in self.handle.scores])
        return {
            "steps": self.num_steps,
            "prc_if_finalized": sel.prc,
            "scores": {"min": float(scores.min()), "mean": float(scores.mean()), "max": float(scores.max()),
                       "zeros": int((scores == 0).sum())},
            "widths": {n: {"kept": k, "channels": c} for n, (k, c) in sel.channels.items()},
        }

    def __repr__(self) -> str:
        state = "finalized" if self.finalized else f"{self.num_steps} steps"
        return f"WidthPruner({type(self.model).__name__}, method={self.config['method']}, mode={self.config['mode']}, {state})"


def _plain(v: Any) -> bool:
    return v is None or isinstance(v, (bool, int, float, str)) or (
        isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v)
    )


def _input_spec(example_inputs: Any) -> tuple[int, int | None] | None:
    """(ndim, channels) of a single-tensor example input, for checking batches."""
    if isinstance(example_inputs, torch.Tensor) and example_inputs.dim() >= 2:
        return example_inputs.dim(), int(example_inputs.shape[1])
    return None


def _tensors(batch: Any) -> list[torch.Tensor]:
    found: list[torch.Tensor] = []
    _map_tensors(batch, found.append)
    return found


def _num_classes(model: nn.Module, example_inputs: Any) -> int | None:
    """Classes of a classifier (the last dim of its 2-d output on the example), else None."""
    with preserved_state(model), torch.no_grad():
        model.eval()
        out = _call_model(model, example_inputs)
    return int(out.shape[-1]) if isinstance(out, torch.Tensor) and out.dim() == 2 else None


def _check_batch(batch: Any, spec: tuple[int, int | None] | None, which: str, classes: int | None = None) -> None:
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"{which} must be (inputs, targets) for the default loss; got {type(batch).__name__}")
    x, t = batch
    if not isinstance(x, torch.Tensor) or not isinstance(t, torch.Tensor):
        raise ValueError(f"{which} must hold tensors (inputs, targets)")
    if not x.is_floating_point():
        raise ValueError(f"{which} inputs have dtype {x.dtype}; convert them to float (e.g. x.float() / 255)")
    if spec is not None and (x.dim() != spec[0] or x.shape[1] != spec[1]):
        raise ValueError(
            f"{which} inputs have shape {tuple(x.shape)}; the model was traced with {spec[0]}-d inputs with "
            f"{spec[1]} channels"
        )
    if t.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or t.dim() != 1 or t.shape[0] != x.shape[0]:
        raise ValueError(
            f"{which} targets must be a 1-d integer tensor of class indices with one entry per input, got "
            f"{t.dtype} of shape {tuple(t.shape)}"
        )
    if classes is not None:
        low, high = int(t.min()), int(t.max())
        if low < 0 or high >= classes:
            raise ValueError(f"{which} has labels from {low} to {high}, but the model's head has {classes} classes "
                             f"(0 to {classes - 1}): check the dataset's labels or the head's size")


def prune(
    model: nn.Module,
    ratio: float | None = None,
    *,
    macs: float | None = None,
    params: float | None = None,
    mode: str = "ratio",
    method: str = "rarts",
    criterion: nn.Module | None = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    example_inputs: Any = None,
    ignored_layers: Sequence[nn.Module | str] | None = None,
    lam: float = 1.0,
    beta: float = 1.0,
    rarts_mode: str = "exact",
    round_to: int | None = None,
    scope: str = "global",
    importance: str | Importance | None = None,
    l1: float | None = None,
    prox: bool = False,
    threshold: float = 1e-2,
    cost_weight: float | None = None,
    sparsity: float = 1e-4,
    lr: float = 0.025,
    weight_decay: float = 3e-4,
    arch_lr: float | None = None,
    arch_weight_decay: float = 1e-3,
    weight_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
    arch_optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None = None,
    weight_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    arch_scheduler: Callable[[torch.optim.Optimizer], Any] | None = None,
    grad_clip: float | None = 5.0,
    amp_dtype: torch.dtype | None = None,
    grad_scaler: torch.amp.GradScaler | None = None,
    distributed: bool = False,
    backend: str = "param",
    allow_inexact: bool = False,
    prune_heads: bool = False,
    selection: SelectionConfig | None = None,
    seed: int = 0,
) -> WidthPruner:
    """Start a width search on ``model`` (scores are attached in place) and return the pruner.

    Args:
        model: a classifier (torchvision, timm, your own). It becomes the primary network y of RARTS.
            A ``DistributedDataParallel`` model is unwrapped and searched with ``distributed=True``.
        ratio: ``mode="ratio"``: the pruning ratio of channels (PRC) to remove, in [0, 1) (see the module
            docstring); 0.4 when neither ``macs`` nor ``params`` is given. Ignored by ``mode="l1"``.
        macs: instead of ``ratio``, keep this fraction (in (0, 1)) of the model's MACs (fvcore, batch 1):
            the least important units go first, each counted with the MACs it causes
            (`rartsprune.width.budget`); with ``round_to`` the MACs after surgery stay within 2% of it.
        params: likewise, a fraction of the model's parameters to keep. ``ratio``, ``macs`` and ``params``
            are exclusive.
        mode: ``"ratio"`` (fixed PRC) or ``"l1"`` (an ℓ1 penalty of strength ``l1`` on the scores decides;
            channels with |α| <= ``threshold`` are removed, optionally with a proximal soft-threshold step,
            ``prox=True``, which makes scores exactly zero).
        method: ``"rarts"`` (default), ``"darts1"``, ``"darts2"``, ``"milenas"`` (searches of the scores), or
            the one-shot baselines ``"l1_norm"``, ``"random"``, ``"slimming"`` (Network Slimming: ℓ1
            ``sparsity`` on BN scales while training, then a global |γ| threshold; needs BatchNorm).
        criterion: loss module applied as ``criterion(model(x), targets)`` (default cross-entropy).
        loss_fn: ``loss_fn(net, batch) -> scalar`` for other batch layouts (overrides ``criterion``).
        example_inputs: one batch the model accepts (inferred for image classifiers if omitted).
        ignored_layers: modules or names whose channels are never pruned (heads are protected anyway).
        lam, beta: RARTS' λ (weight of L_t) and β (coupling of y and w); ``lam`` also weights MiLeNAS.
        rarts_mode: ``"exact"`` (Eq. 7, four passes) or ``"fused"`` (two passes, an approximation).
        round_to: round each group's kept channel count up to a multiple of this (faster kernels).
        scope: ``"global"`` or ``"layer"`` ranking for ``mode="ratio"``.
        importance: what the ranking uses: an `rartsprune.width.importance.Importance` (your own criterion
            too) or a built-in name: ``"alpha"``, ``"alpha_gamma"``, ``"normalized"`` (score-based, see
            `rartsprune.width.selection`), ``"l1_norm"``, ``"slimming"``, ``"random"``. Default: a search
            ranks by ``"alpha_gamma"`` in ratio mode and ``"alpha"`` in ℓ1 mode (``DEFAULTS``; ℓ1 mode's
            threshold is always on |α|), a baseline by its own criterion (``method="l1_norm"`` by
            `MagnitudeImportance`, ...).
        l1: strength of the ℓ1 penalty ``l1 * Σ|α|`` on the scores, in both modes. ``mode="l1"``: it decides
            the size (default ``1e-4``). ``mode="ratio"``: a sparsity pressure that makes the scores of
            channels the loss does not need fall fast, so the ranking separates within one epoch (default
            ``4e-3``, see ``DEFAULTS``; 0 turns it off). Searches only.
        prox, threshold: ℓ1 mode settings (proximal soft-threshold step; the |α| cut).
        cost_weight: weight of the MACs-weighted pressure ``Σ|α_u| MACs_u / MACs`` on the scores (searches).
            Default: ``2`` with a ``macs`` / ``params`` budget (where ``l1`` defaults to 0,
            ``BUDGET_DEFAULTS``), else 0.
        sparsity: Network Slimming's ``s`` (``method="slimming"``).
        lr, weight_decay: SGD (momentum 0.9) of the network weights; ``arch_lr``, ``arch_weight_decay``: Adam
            of the scores (``arch_lr`` default: ``1e-1`` in ratio mode, ``3e-4`` in ℓ1 mode, see
            ``DEFAULTS``). ``weight_optimizer`` / ``arch_optimizer`` factories override them.
        weight_scheduler, arch_scheduler: LR scheduler factories (step them with ``step_schedulers``).
        grad_clip, amp_dtype, grad_scaler, distributed: passed to the search optimizer.
        backend, allow_inexact: passed to `rartsprune.attach_scores`.
        selection: all selection settings as one `rartsprune.width.config.SelectionConfig` (then leave
            ``ratio``, ``macs``, ``params``, ``mode``, ``threshold``, ``scope``, ``round_to`` and ``importance``
            at their defaults).
        prune_heads: also score and remove whole attention heads of the supported vision transformers
            (`rartsprune.attach_scores`'s ``prune_heads``; see docs/width.md, "Attention heads").
        seed: seed of the checks, the random baseline and the auxiliary copy.

    Returns:
        A `WidthPruner`: call ``step(batch_t, batch_v)`` in your loop, then ``finalize()``.

    Raises:
        ValueError: bad ratio (outside [0, 1) or one that would empty the model), unknown mode, method or
            importance, frozen model, example inputs the model rejects.
        RartsPruneError: the model is already under search or scored.
        UnsupportedModelError: no prunable layer, or the model is on the meta device.

    On any error the model is left exactly as it was. A ``torch.compile``d model is searched through its
    original module (``model._orig_mod``: its layers change under the search, which would recompile at every
    step); `WidthPruner.finalize` returns that module — compile the pruned model afterwards.

    Examples:
        >>> import torch, torchvision, rartsprune
        >>> model = torchvision.models.resnet18(num_classes=10)
        >>> pruner = rartsprune.prune(model, ratio=0.4, example_inputs=torch.randn(1, 3, 32, 32))
        >>> batch = (torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,)))
        >>> stats = pruner.step(batch, batch)
        >>> model = pruner.finalize()
        >>> round(pruner.result["prc"], 2)
        0.4
    """
    if isinstance(model, DistributedDataParallel):
        model, distributed = model.module, True
    if type(model).__name__ == "OptimizedModule" and isinstance(getattr(model, "_orig_mod", None), nn.Module):
        model = model._orig_mod  # torch.compile's wrapper: score, probe and search the original module
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r}; valid methods: {', '.join(ALL_METHODS)}")
    if selection is None:  # the selection keywords, checked as one object (nothing is touched yet)
        selection = SelectionConfig(mode=mode, ratio=ratio, macs=macs, params=params, threshold=threshold, scope=scope,
                                    round_to=round_to, importance=importance)
    elif not isinstance(selection, SelectionConfig):
        raise TypeError(f"selection must be a SelectionConfig, got {type(selection).__name__}")
    else:
        given = SelectionConfig.changed(mode=mode, ratio=ratio, macs=macs, params=params, threshold=threshold,
                                        scope=scope, round_to=round_to, importance=importance)
        if given:
            raise ValueError(f"pass the selection either as selection= or as keywords, not both (got {given})")
    mode, ratio, budget = selection.mode, selection.ratio, selection.budget
    threshold, scope, round_to, importance = selection.threshold, selection.scope, selection.round_to, selection.importance
    ranking = None if importance is None else get_importance(importance, seed=seed)  # ValueError / TypeError
    for name, value in (("l1", l1), ("arch_lr", arch_lr)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or value < 0 or (name == "arch_lr" and value == 0)):
            raise ValueError(f"{name} must be a {'positive' if name == 'arch_lr' else 'non-negative'} number, "
                             f"got {value!r}")
    if cost_weight is not None and (isinstance(cost_weight, bool) or not isinstance(cost_weight, (int, float))
                                    or not math.isfinite(cost_weight) or cost_weight < 0):
        raise ValueError(f"cost_weight must be a non-negative number, got {cost_weight!r}")
    if budget is not None:  # a cost budget: the pressure is in the budget's units (BUDGET_DEFAULTS)
        l1 = BUDGET_DEFAULTS["l1"] if l1 is None else l1
        cost_weight = BUDGET_DEFAULTS["cost_weight"] if cost_weight is None else cost_weight
    cost_weight = float(0.0 if cost_weight is None else cost_weight)
    l1 = float(DEFAULTS[mode]["l1"] if l1 is None else l1)
    arch_lr = float(DEFAULTS[mode]["arch_lr"] if arch_lr is None else arch_lr)
    if ranking is None:
        ranking = get_importance(DEFAULTS[mode]["importance"] if method in METHODS else method, seed=seed)
    if mode == "l1" and method in BASELINES:
        raise ValueError(f"mode='l1' needs a search method ({', '.join(METHODS)}); {method!r} is one-shot")
    if rarts_mode not in ("exact", "fused"):
        raise ValueError(f"rarts_mode must be 'exact' or 'fused', got {rarts_mode!r}")
    if criterion is not None and loss_fn is not None:
        raise ValueError("pass either criterion= or loss_fn=, not both")
    if criterion is not None and not callable(criterion):
        raise TypeError("criterion must be callable, e.g. nn.CrossEntropyLoss()")
    if has_scores(model):
        raise RartsPruneError(
            f"{type(model).__name__} is already under search or scored; finalize() or rartsprune.remove() it first"
        )
    if not any(p.requires_grad for p in model.parameters()):
        raise ValueError(f"{type(model).__name__} is frozen (no parameter requires grad): nothing can be trained")

    if not isinstance(prune_heads, bool):
        raise TypeError(f"prune_heads must be True or False, got {prune_heads!r}")
    if example_inputs is None:
        example_inputs = _infer_example_inputs(model)
    handle = attach_scores(
        model, example_inputs, ignored_layers=ignored_layers, allow_inexact=allow_inexact, backend=backend, seed=seed,
        prune_heads=prune_heads,
    )
    try:
        groups = handle.groups
        total = sum(g.channels for g in groups)
        floor = sum(g.channels // g.num_units for g in groups)
        if mode == "ratio" and budget is None and ratio * total > total - floor + 0.5:
            raise ValueError(
                f"ratio={ratio} would empty the model: at most {(total - floor) / total:.3f} of its {total} prunable "
                "channels can go (every layer keeps at least one)"
            )
        if method == "slimming" and not slimming_layers(handle):
            raise ValueError(f"method='slimming' needs BatchNorm layers; {type(model).__name__} has none next to its channels")

        if loss_fn is None and criterion is not None:
            crit = criterion

            def loss_fn_(net: nn.Module, batch: Any) -> torch.Tensor:
                inputs, targets = batch
                return crit(net(inputs), targets)

            resolved_loss: Callable[[nn.Module, Any], torch.Tensor] | None = loss_fn_
        else:
            resolved_loss = loss_fn
        w_opt = weight_optimizer or _sgd(lr, weight_decay)
        config = {
            "ratio": ratio, "budget": budget, "mode": mode, "method": method, "lam": lam, "beta": beta,
            "rarts_mode": rarts_mode,
            "round_to": round_to, "scope": scope, "importance": ranking.name, "ranking": ranking, "l1": l1, "prox": prox,
            "threshold": threshold, "cost_weight": cost_weight, "sparsity": sparsity, "seed": seed,
            "loss_fn": resolved_loss,
        }
        cost = None
        if budget is not None:  # refuse a budget below the reachable minimum before anything is built
            cost = CostModel(handle, round_to=round_to)
            select_by_budget(handle, budget[1], kind=budget[0], scope=scope, cost=cost,
                             importance={g.name: torch.ones(g.num_units) for g in groups}, check_only=True)
        if method in METHODS:
            penalty = WidthPenalty(handle, l1=l1, cost_weight=cost_weight, include_l1=not (prox and mode == "l1"))
            search = make_search_optimizer(
                method, model, handle.scores,
                loss_fn=resolved_loss, lam=lam, beta=beta, mode=rarts_mode,
                weight_optimizer=w_opt, arch_optimizer=arch_optimizer or _adam(arch_lr, arch_weight_decay),
                weight_scheduler=weight_scheduler, arch_scheduler=arch_scheduler,
                arch_penalty=penalty if penalty.active else None,
                grad_clip=grad_clip, amp_dtype=amp_dtype, grad_scaler=grad_scaler, distributed=distributed,
            )
        else:
            for a in handle.scores:
                a.requires_grad_(False)
            alpha_ids = {id(a) for a in handle.scores}
            weights = [p for p in model.parameters() if p.requires_grad and id(p) not in alpha_ids]
            if distributed:
                raise ValueError(f"distributed=True is supported by the searches ({', '.join(METHODS)}), not by {method!r}")
            search = BaselineTrainer(
                model, weights, loss_fn=resolved_loss, optimizer=w_opt, scheduler=weight_scheduler,
                grad_clip=grad_clip, amp_dtype=amp_dtype,
                sparsity=sparsity if method == "slimming" else 0.0,
                bn_layers=slimming_layers(handle) if method == "slimming" else None,
            )
    except BaseException:
        _detach(model, fold=False)
        raise
    return WidthPruner(model, handle, search, config, cost=cost)

