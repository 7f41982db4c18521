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

import os
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
from .config import (
    BUDGET_DEFAULTS,
    DEFAULT_RATIO,
    DEFAULTS,
    GRADUAL_DEFAULTS,
    MODES,
    SelectionConfig,
    WidthSearchConfig,
    default_importance,
)
from .importance import Importance, get_importance
from .latency import (
    DEFAULT_REPEATS,
    DEFAULT_WARMUP,
    LatencyModel,
    WidthLatencyTable,
    allocator_settings,
    device_name,
    measure_width_latency,
    prunable_layers,
    time_model,
)
from .penalties import WidthPenalty, soft_threshold_
from .protocol import Searcher
from .rounding import AUTO, RoundingChoice, choose_rounding
from .selection import Selection, _finish, min_units, select_by_ratio, select_by_threshold

__all__ = ["prune", "WidthPruner", "MODES", "ALL_METHODS", "DEFAULTS", "BUDGET_DEFAULTS", "GRADUAL_DEFAULTS", "DEFAULT_RATIO", "COLLAPSED_SCORE",
           "gradual_fraction"]

#: Mean |α| below which a finished search's scores count as collapsed (`WidthPruner.finalize` warns).
COLLAPSED_SCORE = 0.05

#: ``DEFAULTS`` / ``BUDGET_DEFAULTS`` (the search settings that depend on the selection) live in `.config`.

#: Config keys a resumed search must share with the saved one, and the keys of the selection (may differ).
_SEARCH_KEYS = ("lam", "beta", "update", "l1", "prox", "cost_weight", "sparsity", "gradual_steps")
_SELECTION_KEYS = ("ratio", "budget", "importance", "scope", "round_to", "threshold", "latency_batch", "max_pruning_ratio")
ALL_METHODS = METHODS + BASELINES
_STATE_FORMAT = "rartsprune-pruner/1"


def gradual_fraction(step: int, steps: int) -> float:
    """The fraction of the final pruning reached after search step ``step`` of a gradual schedule of ``steps``.

    Zhu & Gupta's cubic schedule ("To prune, or not to prune", 2017): ``1 - (1 - step / steps)**3``, fast at
    first while the network has redundancy to spare, slow at the end. ``steps=0`` (no schedule) gives 1.

    Examples:
        >>> [round(gradual_fraction(t, 4), 3) for t in range(6)]
        [0.0, 0.578, 0.875, 0.984, 1.0, 1.0]
    """
    if steps <= 0:
        return 1.0
    progress = min(max(step / steps, 0.0), 1.0)
    return 1.0 - (1.0 - progress) ** 3


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
        search: the `rartsprune.width.protocol.Searcher` driven by `step`: the search optimizer (`rartsprune.optim`)
            or, for one-shot baselines, the trainer.
        result: after `finalize`, a dict with the achieved PRC, widths and the plan.
    """

    def __init__(self, model: nn.Module, handle: ScoreHandle, optimizer: Searcher, *,
                 search_config: WidthSearchConfig, selection: SelectionConfig, ranking: Importance,
                 loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None, seed: int = 0,
                 cost: CostModel | None = None, latency: LatencyModel | None = None) -> None:
        self.model = model
        self.handle = handle
        self.search = optimizer
        self.search_config = search_config
        self.selection_config = selection
        self.ranking = ranking
        self.loss_fn = loss_fn
        self.seed = seed
        self.finalized = False
        self.result: dict[str, Any] | None = None
        self._plan: PruningPlan | None = None
        self._final_steps = 0
        self._penalty: WidthPenalty | None = None
        self._cost = cost  # built on first use when a budget did not need it already
        self._latency = latency  # a latency budget's cost model (its table measured or loaded by prune)
        self._rounding: RoundingChoice | None = None  # round_to="auto": the latest choice (made by selection())
        self._input_spec = _input_spec(handle.example_inputs)
        self._num_classes = _num_classes(model, handle.example_inputs) if loss_fn is None else None
        # selection.gradual_steps: the units removed so far (their scores held at zero), per group
        self._gone: dict[str, torch.Tensor] | None = (
            {g.name: torch.zeros(g.num_units, dtype=torch.bool) for g in handle.groups}
            if selection.gradual_steps else None)

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
        if self.loss_fn is None:
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
        if self.selection_config.mode == "l1" and self.search_config.prox and self._is_search:
            lr = self.search.optimizers["arch"].param_groups[0]["lr"]
            soft_threshold_(self.handle.scores, lr * self.search_config.l1)
        if self._gone is not None:
            self._gradual_step()
        return stats

    def _gradual_step(self) -> None:
        """``selection.gradual_steps``: extend the removed set to the schedule's selection, then zero its scores."""
        steps = self.selection_config.gradual_steps
        fraction = gradual_fraction(self.num_steps, steps)
        if self.num_steps <= steps and fraction > 0:
            keep = self._select(fraction).keep
            for g in self.handle.groups:
                gone = torch.ones(g.num_units, dtype=torch.bool)
                gone[keep[g.name]] = False
                self._gone[g.name] |= gone
        self._zero_removed()

    def _zero_removed(self) -> None:
        with torch.no_grad():
            for g, alpha in zip(self.handle.groups, self.handle.scores):
                gone = self._gone[g.name]
                if bool(gone.any()):
                    alpha[gone.to(alpha.device)] = 0.0

    @property
    def removed(self) -> dict[str, list[int]] | None:
        """With ``gradual_steps``: the units removed so far by the schedule (scores held at zero), per group;
        otherwise ``None``."""
        if self._gone is None:
            return None
        return {name: gone.nonzero().flatten().tolist() for name, gone in self._gone.items()}

    @property
    def _is_search(self) -> bool:
        return self.search_config.is_search

    @property
    def config(self) -> dict[str, Any]:
        """The settings as a plain dict (saved in `state_dict`): the search's and the selection's."""
        sel, srch = self.selection_config, self.search_config
        return {
            "ratio": sel.ratio, "budget": sel.budget, "mode": sel.mode, "method": srch.method, "lam": srch.lam,
            "beta": srch.beta, "update": srch.update, "round_to": sel.round_to, "scope": sel.scope,
            "importance": self.ranking.name, "l1": srch.l1, "prox": srch.prox, "threshold": sel.threshold,
            "cost_weight": srch.cost_weight, "sparsity": srch.sparsity, "seed": self.seed,
            "latency_batch": sel.latency_batch, "gradual_steps": sel.gradual_steps,
            "max_pruning_ratio": sel.max_pruning_ratio,
        }

    def step_schedulers(self) -> None:
        """Step the LR schedulers once (per epoch or per step, your choice)."""
        self._alive("step_schedulers()")
        self.search.step_schedulers()

    # ------------------------------------------------------------------ decisions
    def importance(self) -> dict[str, torch.Tensor]:
        """Per-unit importance used for the selection: the ``importance`` criterion (an `Importance`) applied now.

        With ``gradual_steps`` the units the schedule removed rank below every other unit."""
        imp = self.ranking(self.handle)
        if self._gone is None or not any(bool(g.any()) for g in self._gone.values()):
            return imp
        finite = torch.cat([v.detach().flatten().float().cpu() for v in imp.values()])
        finite = finite[torch.isfinite(finite)]
        low = (float(finite.min()) if finite.numel() else 0.0) - 1.0
        return {k: torch.where(self._gone[k].to(v.device), torch.full_like(v, low), v) for k, v in imp.items()}

    def selection(self) -> Selection:
        """Which units `finalize` would keep now (the model is not changed).

        With ``gradual_steps``, once the schedule is over: exactly the units it did not remove."""
        self._alive("selection()")
        steps = self.selection_config.gradual_steps
        if self._gone is not None and self.num_steps >= steps:
            return _finish(self.handle, {k: (~g).nonzero().flatten().tolist() for k, g in self._gone.items()})
        return self._select(1.0)

    def _select(self, fraction: float) -> Selection:
        """The selection at ``fraction`` of the configured size (1: the size itself; the gradual schedule's
        intermediate sizes below 1: ``fraction * ratio`` removed, or ``1 - fraction * (1 - budget)`` kept)."""
        cap = self.selection_config.max_pruning_ratio
        if self.selection_config.mode == "l1":
            if self._is_search:
                return select_by_threshold(self.handle, self.selection_config.threshold, max_pruning_ratio=cap)
            raise ValueError("mode='l1' needs a search method (rarts, darts1, darts2, milenas)")
        if self.selection_config.budget is not None:
            kind, budget = self.selection_config.budget
            budget = 1.0 - fraction * (1.0 - budget)
            if self.selection_config.round_to == AUTO:  # the rounding chosen by the latency model, now
                self._rounding = choose_rounding(self.handle, budget, importance=self.importance(),
                                                 latency=self.latency_model(), scope=self.selection_config.scope,
                                                 max_pruning_ratio=cap)
                return self._rounding.selection
            cost = self.latency_model() if kind == "latency" else self.cost_model()
            return select_by_budget(self.handle, budget, kind=kind, importance=self.importance(),
                                    scope=self.selection_config.scope, cost=cost, max_pruning_ratio=cap)
        return select_by_ratio(self.handle, fraction * self.selection_config.ratio, importance=self.importance(),
                               scope=self.selection_config.scope, max_pruning_ratio=cap)

    @property
    def round_to(self) -> int | None:
        """The ``round_to`` the surgery uses: the configured one, or with ``round_to="auto"`` the rounding the
        latest `selection` chose (``None`` before the first)."""
        if self.selection_config.round_to == AUTO:
            return None if self._rounding is None else self._rounding.round_to
        return self.selection_config.round_to

    def rounding(self) -> RoundingChoice | None:
        """With ``round_to="auto"``: the latest choice (`rartsprune.width.rounding.RoundingChoice`, every
        candidate's predicted latency and kept importance), made by `selection` / `finalize`; else ``None``."""
        return self._rounding

    def cost_model(self) -> CostModel:
        """The `rartsprune.width.budget.CostModel` of the scored model (built once, with ``round_to``)."""
        if self._cost is None:
            self._cost = CostModel(self.handle, round_to=self.selection_config.round_to)
        return self._cost

    def latency_model(self) -> LatencyModel:
        """The `rartsprune.width.latency.LatencyModel` of a latency budget (``prune(latency=...)``), with the
        configured ``round_to`` (``None`` with ``round_to="auto"``: `rounding` holds the choice).

        Raises:
            ValueError: the pruner was not built with a latency budget.
        """
        if self._latency is None:
            raise ValueError("this pruner has no latency budget: build it with rartsprune.prune(model, latency=...)")
        return self._latency

    def plan(self) -> PruningPlan:
        """The pruning plan: a preview before `finalize`, the executed plan after."""
        if self.finalized:
            assert self._plan is not None
            return self._plan
        keep = self.selection().keep  # first: with round_to="auto" it chooses the rounding
        return plan_from_scores(self.model, keep, round_to=self.round_to)

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
        latency = self._latency.rounded(self.round_to) if self._latency is not None else None
        predicted = latency.ms(selection.keep) if latency is not None else None
        plan = apply_surgery(self.model, selection.keep, round_to=self.round_to,
                             kept_scores=self.selection_config.kept_scores)
        kept = sum(len(v) for v in plan.groups.values())
        total = sum(plan.channels.values())
        self._plan = plan
        self.finalized = True
        self.result = {
            "method": self.search_config.method,
            "mode": self.selection_config.mode,
            "requested_ratio": self.selection_config.ratio if self.selection_config.mode == "ratio" else None,
            "budget": dict([self.selection_config.budget]) if self.selection_config.budget is not None else None,
            "prc": 1.0 - kept / total if total else 0.0,
            "prunable_channels": total,
            "removed_channels": total - kept,
            "params_before": before,
            "params_after": sum(p.numel() for p in self.model.parameters()),
            "widths": {n: {"kept": len(plan.groups[n]), "channels": groups[n].channels} for n in plan.groups},
            "steps": self.num_steps,
            "round_to": self.round_to,
            "kept_scores": self.selection_config.kept_scores,
            "max_pruning_ratio": self.selection_config.max_pruning_ratio,
        }
        if self._rounding is not None:
            self.result["rounding"] = self._rounding.to_dict()
        if latency is not None:
            table = latency.table
            self.result["latency"] = {
                "device": table.device, "batch": table.batch, "input_shape": list(table.input_shape),
                "predicted_ms_before": latency.full_ms, "predicted_ms_after": predicted,
                "measured_ms_before": table.whole_ms,  # the unpruned model, timed whole when the table was measured
                "predicted_fraction": predicted / latency.full_ms if latency.full_ms > 0 else float("nan"),
                "budget": self.selection_config.latency,
                "measured_points": len(table.measured),
            }
            if table.measured:  # the budget was a measured fraction: what the points expect the clock to say
                self.result["latency"]["expected_measured_fraction"] = table.measured_fraction(
                    self.result["latency"]["predicted_fraction"])
        self._final_steps = self.num_steps
        self.search = None  # release w, the optimizer states and the snapshots
        return self.model

    def collapsed(self) -> str | None:
        """Ratio mode: a message when the scores have collapsed towards 0 (mean |α| < `COLLAPSED_SCORE`), else None.

        The ℓ1 pressure then outweighed the loss (a search much longer than the one epoch the ratio-mode
        defaults were chosen for): the ranking carries little information and the network behind the scores is
        damaged. `finalize` warns with this message.
        """
        if not self._is_search or self.selection_config.mode != "ratio" or not self.handle.scores:
            return None  # in mode="l1" scores at 0 are the point: the threshold decides the size
        alive = [a.detach().abs().flatten().cpu() for a in self.handle.scores]
        if self._gone is not None:  # the gradual schedule's zeros are not a collapse
            alive = [a[~self._gone[g.name]] for g, a in zip(self.handle.groups, alive)]
        mean = float(torch.cat(alive).mean())
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
            "removed": self.removed,
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
        saved, mine = dict(state["config"]), self.config
        if "rarts_mode" in saved:  # saved before 0.2
            saved.setdefault("update", saved.pop("rarts_mode"))
        for key in ("method", "mode"):
            if saved.get(key) != mine[key]:
                raise ValueError(f"checkpoint {key}={saved.get(key)!r}, this pruner {key}={mine[key]!r}")
        for key in _SEARCH_KEYS:  # what the search optimizes: a resumed search with other settings is another search
            if key in saved and saved[key] != mine[key]:
                raise ValueError(f"the checkpoint's search used {key}={saved[key]!r}, this pruner "
                                 f"{key}={mine[key]!r}: build the pruner with the checkpoint's setting")
        differ = [f"{k}={saved[k]!r} -> {mine[k]!r}" for k in _SELECTION_KEYS if k in saved and saved[k] != mine[k]]
        if differ and self._gone is not None:
            raise ValueError("a gradual search (gradual_steps) removed units for its own selection; resume it with "
                             "the same selection (" + ", ".join(differ) + ")")
        removed = state.get("removed")
        if self._gone is not None:
            if not isinstance(removed, Mapping) or set(removed) != set(self._gone):
                raise ValueError("the checkpoint has no gradual schedule's removed units for these groups")
            for g in self.handle.groups:
                units = list(removed[g.name])
                if any(not isinstance(u, int) or not 0 <= u < g.num_units for u in units):
                    raise ValueError(f"the checkpoint's removed units of group {g.name!r} are out of range")
        self.search.load_state_dict(state["search"])
        if self._gone is not None:
            for g in self.handle.groups:
                self._gone[g.name] = torch.zeros(g.num_units, dtype=torch.bool)
                self._gone[g.name][list(removed[g.name])] = True
        if differ and not other_selection:
            warnings.warn("the checkpoint was saved by a pruner with another selection (" + ", ".join(differ)
                          + "); this pruner's selection applies at finalize()", UserWarning, stacklevel=2)

    def report(self) -> dict[str, Any]:
        """Current numbers: steps, PRC the selection would reach, score statistics, widths."""
        if self.finalized:
            return dict(self.result or {})
        sel = self.selection()
        scores = torch.cat([a.detach().flatten().cpu() for a in self.handle.scores])
        out = {
            "steps": self.num_steps,
            "prc_if_finalized": sel.prc,
            "scores": {"min": float(scores.min()), "mean": float(scores.mean()), "max": float(scores.max()),
                       "zeros": int((scores == 0).sum())},
            "widths": {n: {"kept": k, "channels": c} for n, (k, c) in sel.channels.items()},
        }
        if self._rounding is not None:
            out["rounding"] = self._rounding.to_dict()
        return out

    def __repr__(self) -> str:
        state = "finalized" if self.finalized else f"{self.num_steps} steps"
        return f"WidthPruner({type(self.model).__name__}, method={self.search_config.method}, mode={self.selection_config.mode}, {state})"


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
    latency: float | None = None,
    latency_batch: int = 1,
    latency_table: str | None = None,
    mode: str = "ratio",
    method: str = "rarts",
    criterion: nn.Module | None = None,
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    example_inputs: Any = None,
    ignored_layers: Sequence[nn.Module | str] | None = None,
    lam: float = 1.0,
    beta: float = 1.0,
    update: str = "exact",
    round_to: int | None = None,
    scope: str = "global",
    max_pruning_ratio: float = 1.0,
    importance: str | Importance | None = None,
    gradual_steps: int = 0,
    kept_scores: str = "fold",
    l1: float | None = None,
    prox: bool = False,
    threshold: float = 1e-2,
    cost_weight: float | None = None,
    sparsity: float = 1e-4,
    weight_lr: float = 0.025,
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
    prune_layernorm: bool = False,
    selection: SelectionConfig | None = None,
    search_config: WidthSearchConfig | None = None,
    seed: int = 0,
    lr: float | None = None,
    rarts_mode: str | None = None,
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
        params: likewise, a fraction of the model's parameters to keep.
        latency: likewise, a fraction (in (0, 1)) of the model's latency to keep, measured on the model's
            device at batch size ``latency_batch`` (`rartsprune.width.latency`: every prunable layer timed alone
            at a few widths, the rest of the model as a constant). ``ratio``, ``macs``, ``params`` and
            ``latency`` are exclusive. A search then presses on each score in proportion to its unit's share of
            the predicted latency (``cost_weight``).
        latency_batch: the batch size the latency is measured at (default 1).
        latency_table: a JSON file of the latency table: loaded when it exists (a table measured on another
            device, batch size or input shape raises ``ValueError``), written after measuring otherwise.
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
        update: RARTS' update, ``"exact"`` (Eq. 7, four passes) or ``"fused"`` (two passes, an approximation).
        round_to: round each group's kept channel count up to a multiple of this (faster kernels). With a
            latency budget ``"auto"``: the rounding among ``None, 2, 4, 8, 16, 32`` (those every scored layer's
            width allows) whose selection keeps the most importance within the predicted budget, chosen at
            every `WidthPruner.selection` and recorded in ``result["rounding"]`` (`rartsprune.width.rounding`).
        scope: ``"global"`` or ``"layer"`` ranking for ``mode="ratio"``.
        max_pruning_ratio: the largest fraction of any one layer's channels removed, in (0, 1] (Torch-Pruning's
            name; default 1: no cap). Every group keeps at least ``ceil((1 - max_pruning_ratio) * units)`` of its
            most important units, so a global ranking cannot collapse a layer; a budget below what the cap
            allows raises ``ValueError`` naming the reachable minimum.
        importance: what the ranking uses: an `rartsprune.width.importance.Importance` (your own criterion
            too) or a built-in name: ``"alpha"``, ``"alpha_gamma"``, ``"normalized"`` (score-based, see
            `rartsprune.width.selection`), ``"l1_norm"``, ``"slimming"``, ``"random"``. Default: a search
            ranks by ``"alpha_gamma"`` in ratio mode and ``"alpha"`` in ℓ1 mode (``DEFAULTS``; ℓ1 mode's
            threshold is always on |α|) — and by ``"l1_norm"`` (|α|·‖W‖: the weights' magnitude with the
            scores folded in) when it reaches a budget gradually (``GRADUAL_DEFAULTS``) —, a baseline by its own
            criterion (``method="l1_norm"`` by `MagnitudeImportance`, ...).
        gradual_steps: reach the size gradually over the first ``gradual_steps`` calls of ``step`` (0: off).
            After each step the units outside the selection at a growing fraction of the size (Zhu & Gupta's
            cubic schedule, `gradual_fraction`) have their scores set to zero and held there: the rest of the
            search trains the network it will become, and `finalize` keeps exactly the units the schedule kept
            (`WidthPruner.removed` lists the others). Ratio mode only; any method.
        kept_scores: what ``finalize`` does with the kept scores: ``"fold"`` (default) multiplies them into the
            weights (the pruned model computes exactly what the scored one computes); ``"reset"`` sets them to ±1
            first, so the kept channels return to their weights' own scale (`SelectionConfig.kept_scores`).
        l1: strength of the ℓ1 penalty ``l1 * Σ|α|`` on the scores, in both modes. ``mode="l1"``: it decides
            the size (default ``1e-4``). ``mode="ratio"``: a sparsity pressure that makes the scores of
            channels the loss does not need fall fast, so the ranking separates within one epoch (default
            ``4e-3``, see ``DEFAULTS``; 0 turns it off). Searches only.
        prox, threshold: ℓ1 mode settings (proximal soft-threshold step; the |α| cut).
        cost_weight: weight of the cost-weighted pressure ``Σ|α_u| c_u`` on the scores (searches), ``c_u``
            a unit's share of the model's MACs (``MACs_u / MACs``) or, with a ``params`` budget, of its
            parameters (`rartsprune.width.penalties.unit_params`), with a ``latency`` budget of its predicted
            latency (`rartsprune.width.latency.LatencyModel.unit_costs`). Default: ``2`` with a
            budget (where ``l1`` defaults to 0, ``BUDGET_DEFAULTS``), else 0.
        sparsity: Network Slimming's ``s`` (``method="slimming"``).
        weight_lr, weight_decay: SGD (momentum 0.9) of the network weights; ``arch_lr``, ``arch_weight_decay``: Adam
            of the scores (``arch_lr`` default: ``1e-1`` in ratio mode, ``3e-4`` in ℓ1 mode, see
            ``DEFAULTS``; ``1e-2`` with a budget reached gradually, ``GRADUAL_DEFAULTS``). ``weight_optimizer`` /
            ``arch_optimizer`` factories override them.
        weight_scheduler, arch_scheduler: LR scheduler factories (step them with ``step_schedulers``).
        grad_clip, amp_dtype, grad_scaler, distributed: passed to the search optimizer.
        backend, allow_inexact: passed to `rartsprune.attach_scores`.
        selection: all selection settings as one `rartsprune.width.config.SelectionConfig` (then leave
            ``ratio``, ``macs``, ``params``, the ``latency`` settings, ``mode``, ``threshold``, ``scope``,
            ``max_pruning_ratio``, ``round_to``, ``importance``, ``gradual_steps`` and ``kept_scores`` at their
            defaults).
        search_config: all search settings as one `rartsprune.width.config.WidthSearchConfig` (then leave
            ``method``, ``lam``, ``beta``, ``update``, ``l1``, ``cost_weight``, ``prox``, ``sparsity``, the
            learning rates, weight decays, factories and ``grad_clip`` at their defaults).
        prune_heads: also score and remove whole attention heads of the supported vision transformers
            (`rartsprune.attach_scores`'s ``prune_heads``; see docs/width.md, "Attention heads").
        prune_layernorm: also score and remove, exactly, the channels normalised by LayerNorms — a vision
            transformer's embedding width (`rartsprune.attach_scores`'s ``prune_layernorm``; docs/width.md).
        seed: seed of the checks, the random baseline and the auxiliary copy.
        lr, rarts_mode: deprecated names of ``weight_lr`` and ``update`` (before 0.2; a DeprecationWarning).

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
    for old, new, value in (("lr", "weight_lr", lr), ("rarts_mode", "update", rarts_mode)):
        if value is not None:  # the names before 0.2 ("lr" is the training LR in PruneJob, "mode" ratio / l1)
            warnings.warn(f"prune({old}=) is deprecated, use {new}=", DeprecationWarning, stacklevel=2)
    weight_lr = weight_lr if lr is None else lr
    update = update if rarts_mode is None else rarts_mode
    # the settings, checked as two objects before anything is touched
    selection = _config(SelectionConfig, selection, "selection", mode=mode, ratio=ratio, macs=macs, params=params,
                        latency=latency, latency_batch=latency_batch, latency_table=latency_table,
                        threshold=threshold, scope=scope, max_pruning_ratio=max_pruning_ratio, round_to=round_to,
                        importance=importance, gradual_steps=gradual_steps, kept_scores=kept_scores)
    search = _config(WidthSearchConfig, search_config, "search_config", method=method, lam=lam, beta=beta, update=update, l1=l1,
                     cost_weight=cost_weight, prox=prox, sparsity=sparsity, weight_lr=weight_lr,
                     weight_decay=weight_decay, arch_lr=arch_lr, arch_weight_decay=arch_weight_decay,
                     weight_optimizer=weight_optimizer, arch_optimizer=arch_optimizer,
                     weight_scheduler=weight_scheduler, arch_scheduler=arch_scheduler, grad_clip=grad_clip)
    search = search.resolved(selection)  # the mode's / the budget's defaults filled in
    ranking = get_importance(selection.importance if selection.importance is not None
                             else default_importance(selection, search.method, search.is_search),
                             seed=seed)  # ValueError / TypeError
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

    for flag, value in (("prune_heads", prune_heads), ("prune_layernorm", prune_layernorm)):
        if not isinstance(value, bool):
            raise TypeError(f"{flag} must be True or False, got {value!r}")
    if example_inputs is None:
        example_inputs = _infer_example_inputs(model)
    whole_ms = _whole_latency(model, example_inputs, selection)  # timed before the scores slow the model
    handle = attach_scores(
        model, example_inputs, ignored_layers=ignored_layers, allow_inexact=allow_inexact, backend=backend, seed=seed,
        prune_heads=prune_heads, prune_layernorm=prune_layernorm,
    )
    try:
        groups = handle.groups
        total = sum(g.channels for g in groups)
        cap = selection.max_pruning_ratio
        floor = sum(g.channels // g.num_units * min_units(g.num_units, cap) for g in groups)
        ratio, budget = selection.ratio, selection.budget
        if selection.mode == "ratio" and budget is None and ratio * total > total - floor + 0.5:
            why = (f"would empty the model: at most {(total - floor) / total:.3f} of its {total} prunable channels "
                   "can go (every layer keeps at least one)") if cap == 1.0 else (
                   f"removes more than max_pruning_ratio={cap:g} lets go: at most {(total - floor) / total:.3f} of "
                   f"its {total} prunable channels (every layer keeps at least {1 - cap:.3g} of its channels)")
            raise ValueError(f"ratio={ratio} {why}")
        if search.method == "slimming" and not slimming_layers(handle):
            raise ValueError(f"method='slimming' needs BatchNorm layers; {type(model).__name__} has none next to its channels")

        if loss_fn is None and criterion is not None:
            crit = criterion

            def loss_fn_(net: nn.Module, batch: Any) -> torch.Tensor:
                inputs, targets = batch
                return crit(net(inputs), targets)

            resolved_loss: Callable[[nn.Module, Any], torch.Tensor] | None = loss_fn_
        else:
            resolved_loss = loss_fn
        cost: CostModel | None = None
        latency_model: LatencyModel | None = None
        if budget is not None:  # refuse a budget below the reachable minimum before anything is built
            if budget[0] == "latency":
                latency_model = _latency_model(handle, selection, whole_ms)
            else:
                cost = CostModel(handle, round_to=selection.round_to)
            select_by_budget(handle, budget[1], kind=budget[0], scope=selection.scope,
                             cost=latency_model if latency_model is not None else cost, max_pruning_ratio=cap,
                             importance={g.name: torch.ones(g.num_units) for g in groups}, check_only=True)
        # the search pressure counts the budget's own cost: a latency budget each unit's share of the predicted
        # latency, a parameter budget its share of the parameters, anything else its share of the MACs
        unit_costs = (latency_model.unit_costs() if latency_model is not None and search.is_search
                      and search.cost_weight else None)
        cost_kind = "params" if budget is not None and budget[0] == "params" else "macs"
        optimizer = _search_optimizer(model, handle, search, selection, resolved_loss, amp_dtype=amp_dtype,
                                      grad_scaler=grad_scaler, distributed=distributed, unit_costs=unit_costs,
                                      cost_kind=cost_kind)
    except BaseException:
        _detach(model, fold=False)
        raise
    return WidthPruner(model, handle, optimizer, search_config=search, selection=selection, ranking=ranking,
                       loss_fn=resolved_loss, seed=seed, cost=cost, latency=latency_model)


def _whole_latency(model: nn.Module, example_inputs: Any, selection: SelectionConfig) -> float | None:
    """A latency budget whose table must be measured: the plain model's latency (ms), else ``None`` (a table
    with the calibrated remainder is built with ``measure_width_latency(..., calibrate=True)`` and passed as
    ``latency_table=``)."""
    if selection.budget is None or selection.budget[0] != "latency":
        return None
    if not isinstance(example_inputs, torch.Tensor) or example_inputs.dim() < 2:
        raise ValueError("a latency budget needs example_inputs to be one tensor with a batch dimension, got "
                         f"{type(example_inputs).__name__}")
    if selection.latency_table is not None and os.path.exists(selection.latency_table):
        return None  # loaded, not measured
    return time_model(model, example_inputs, batch=selection.latency_batch, warmup=DEFAULT_WARMUP,
                      repeats=DEFAULT_REPEATS)


def _latency_model(handle: ScoreHandle, selection: SelectionConfig, whole_ms: float | None) -> LatencyModel:
    """The latency budget's cost model: its table loaded (and checked) or measured (and saved)."""
    x = handle.example_inputs
    batch = selection.latency_batch
    device = device_name(_model_device(handle.model))
    path = selection.latency_table
    if whole_ms is None:  # the table exists
        assert path is not None
        table = WidthLatencyTable.load(path)
        table.check(device=device, batch=batch, input_shape=[batch, *x.shape[1:]], source=f"latency table {path}",
                    allocator=allocator_settings() if _model_device(handle.model).type == "cpu" else None)
    else:
        table = measure_width_latency(handle.model, x, batch=batch, layers=prunable_layers(handle), whole_ms=whole_ms)
        if path is not None:
            table.save(path)
    return LatencyModel(handle, table, round_to=None if selection.round_to == AUTO else selection.round_to)


def _config(cls: type, given: Any, name: str, **keywords: Any) -> Any:
    """``given`` (a ``cls``, then every keyword at its default) or a ``cls`` built from the keywords."""
    if given is None:
        return cls(**keywords)
    if not isinstance(given, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(given).__name__}")
    changed = cls.changed(**keywords)
    if changed:
        raise ValueError(f"pass the {name} settings either as {name}= or as keywords, not both (got {changed})")
    return given


def _search_optimizer(model: nn.Module, handle: ScoreHandle, search: WidthSearchConfig, selection: SelectionConfig,
                      loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None, *, amp_dtype: torch.dtype | None,
                      grad_scaler: torch.amp.GradScaler | None, distributed: bool,
                      unit_costs: Mapping[str, torch.Tensor] | None = None, cost_kind: str = "macs") -> Searcher:
    """The optimizer of the search (`rartsprune.optim`) or the trainer of a one-shot baseline, from ``search``
    (``unit_costs``: the width penalty's per-unit costs, `WidthPenalty`; ``None``: those of ``cost_kind``)."""
    weight_optimizer = search.weight_optimizer or _sgd(search.weight_lr, search.weight_decay)
    if search.is_search:
        assert search.l1 is not None and search.cost_weight is not None and search.arch_lr is not None  # resolved
        penalty = WidthPenalty(handle, l1=search.l1, cost_weight=search.cost_weight,
                               include_l1=not (search.prox and selection.mode == "l1"), unit_costs=unit_costs,
                               kind=cost_kind)
        return make_search_optimizer(
            search.method, model, handle.scores,
            loss_fn=loss_fn, lam=search.lam, beta=search.beta, update=search.update,
            weight_optimizer=weight_optimizer,
            arch_optimizer=search.arch_optimizer or _adam(search.arch_lr, search.arch_weight_decay),
            weight_scheduler=search.weight_scheduler, arch_scheduler=search.arch_scheduler,
            arch_penalty=penalty if penalty.active else None,
            grad_clip=search.grad_clip, amp_dtype=amp_dtype, grad_scaler=grad_scaler, distributed=distributed,
        )
    for a in handle.scores:
        a.requires_grad_(False)
    alpha_ids = {id(a) for a in handle.scores}
    weights = [p for p in model.parameters() if p.requires_grad and id(p) not in alpha_ids]
    slimming = search.method == "slimming"
    trainer = BaselineTrainer(
        model, weights, loss_fn=loss_fn, optimizer=weight_optimizer, scheduler=search.weight_scheduler,
        grad_clip=search.grad_clip, amp_dtype=amp_dtype, sparsity=search.sparsity if slimming else 0.0,
        bn_layers=slimming_layers(handle) if slimming else None,
    )
    if distributed:  # data-parallel training of the baseline: every rank keeps the same weights, and channels
        trainer.distribute()
    return trainer

