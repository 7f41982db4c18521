"""The settings of a width search as two validated objects: how the scores are searched and which units survive.

* `WidthSearchConfig` — the search: the method, RARTS' λ and β, the exact or fused update, the pressures on
  the scores, the learning rates and the optimizer / scheduler factories;
* `SelectionConfig` — the selection: the size of the pruned model (ratio, MACs / parameter budget or the
  ℓ1 threshold), scope, ``round_to`` and the ranking criterion.

`rartsprune.prune` builds both from its keywords, or takes them whole as ``search_config=`` / ``selection=``. Each
is checked when it is constructed, so a bad setting is refused before anything touches the model.

Examples:
    >>> sel = SelectionConfig(macs=0.5, round_to=8)
    >>> sel.budget, sel.ratio
    (('macs', 0.5), None)
    >>> SelectionConfig(latency=0.6, latency_batch=8).budget  # a fraction of the measured latency at batch 8
    ('latency', 0.6)
    >>> SelectionConfig().ratio  # no size given: the default ratio of channels
    0.4
    >>> SelectionConfig(scope="row")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: scope must be 'global' or 'layer', got 'row'
    >>> WidthSearchConfig(update="fused", weight_lr=0.01).resolved(sel).cost_weight  # a budget's pressure
    2.0
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

from ..optim import METHODS
from ..surgery import KEPT_SCORES, check_kept_scores
from .baselines import BASELINES
from .budget import resolve_budget
from .importance import Importance, get_importance
from .selection import check_max_pruning_ratio

__all__ = ["BUDGET_DEFAULTS", "GRADUAL_DEFAULTS", "DEFAULTS", "default_importance", "DEFAULT_RATIO", "KEPT_SCORES", "MODES", "SCOPES", "SEARCH_METHODS", "BASELINE_METHODS",
           "UPDATES", "SelectionConfig", "WidthSearchConfig"]

#: The pruning ratio of channels when neither ``ratio`` nor a budget is given (ratio mode).
DEFAULT_RATIO = 0.4
#: ``"ratio"``: a fixed size (ratio or budget); ``"l1"``: a sparsity penalty and a threshold on |α| decide it.
MODES = ("ratio", "l1")
#: ``"global"``: units ranked across all groups; ``"layer"``: every group loses the same fraction.
SCOPES = ("global", "layer")
#: Searches of the scores (`rartsprune.optim.METHODS`) and the one-shot baselines (`rartsprune.width.baselines`).
SEARCH_METHODS = METHODS
BASELINE_METHODS = BASELINES
#: RARTS' update: ``"exact"`` (Eq. 7, four passes per step) or ``"fused"`` (two passes, an approximation).
UPDATES = ("exact", "fused")

#: Score-search defaults per mode (``WidthSearchConfig(l1=None, arch_lr=None)``). ``"ratio"``: chosen on the
#: criterion diagnostic (``bench/criterion_quality.py``, training images only, one search epoch): Adam at ``1e-1``
#: with an ℓ1 pressure of ``4e-3`` gives a ranking that agrees with the oracle (Spearman 0.30, vs 0.06 for the
#: former ``arch_lr=3e-4`` without pressure and 0.16 for the ℓ1-norm of the weights) and the best accuracy right
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
#: seeds) 57.37 / 56.13 at 0.6x / 0.35x vs 56.20 / 54.65 with the ratio-mode pressure (docs/width.md). With a
#: latency budget the same defaults apply, each unit's cost being its share of the predicted latency (not measured
#: for quality yet).
BUDGET_DEFAULTS: dict[str, float] = {"l1": 0.0, "cost_weight": 2.0}

#: What changes when a budget is reached gradually during the search (a budget and ``gradual_steps > 0``): a
#: gentler score LR and the ranking by the weights' magnitude with the scores folded in (|α|·‖W‖,
#: ``importance="l1_norm"``). Chosen on the criterion diagnostic (training images only, 2026-12-05; the 4k-image
#: PreResNet-20, one search epoch, the budget reached during its first half): right after pruning to 0.6x / 0.35x
#: MACs 66.0 / 62.8 vs 61.0 / 57.1 with the budget's other defaults, and after 10 fine-tuning epochs 67.5 / 67.0
#: vs 67.9 / 64.2 for one-shot ℓ1-norm pruning and 66.8 / 62.5 for the one-shot search (docs/width.md).
GRADUAL_DEFAULTS: dict[str, Any] = {"arch_lr": 1e-2, "importance": "l1_norm"}


def default_importance(selection: SelectionConfig, method: str, is_search: bool) -> str:
    """The ranking's name when ``importance`` is not given: a baseline ranks by its own criterion; a search by
    `GRADUAL_DEFAULTS` when it reaches a budget gradually, else by its mode's `DEFAULTS`.

    Examples:
        >>> default_importance(SelectionConfig(), "rarts", True), default_importance(SelectionConfig(), "random", False)
        ('alpha_gamma', 'random')
        >>> default_importance(SelectionConfig(macs=0.5, gradual_steps=10), "rarts", True)
        'l1_norm'
    """
    if not is_search:
        return method
    if _gradual_budget(selection):
        return str(GRADUAL_DEFAULTS["importance"])
    return str(DEFAULTS[selection.mode]["importance"])


def _gradual_budget(selection: SelectionConfig) -> bool:
    return selection.budget is not None and bool(selection.gradual_steps)


def _number(name: str, value: Any, *, positive: bool = False, optional: bool = False) -> None:
    """ValueError unless ``value`` is a finite non-negative (``positive``: > 0) number (``optional``: or None)."""
    if value is None and optional:
        return
    if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0
            or (positive and value == 0)):
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value!r}")


def _changed(cls: type, settings: dict[str, Any]) -> list[str]:
    defaults = {f.name: f.default for f in fields(cls) if f.init}
    return sorted(k for k, v in settings.items() if v != defaults[k])


@dataclass(frozen=True)
class SelectionConfig:
    """Which units survive `WidthPruner.finalize`.

    Attributes:
        mode: ``"ratio"`` (default) or ``"l1"`` (see `MODES`).
        ratio: ratio mode: the fraction of prunable channels removed, in [0, 1); default `DEFAULT_RATIO`
            when no budget is given, ``None`` with a budget.
        macs, params: ratio mode: keep this fraction (0, 1) of the model's MACs or parameters instead
            (exclusive with each other and with ``ratio``).
        latency: ratio mode: keep this fraction (0, 1) of the model's latency measured on its device at
            batch size ``latency_batch`` (`rartsprune.width.latency`; exclusive with ``ratio``, ``macs``,
            ``params``).
        latency_batch: the batch size the latency is measured at (a positive integer; default 1).
        latency_table: a JSON path of the per-layer latency table: loaded when it exists (and refused when
            measured on another device, batch size or input shape), written after measuring otherwise
            (``None``: measured and not saved).
        threshold: ℓ1 mode: units with |α| <= threshold are removed.
        scope: ``"global"`` or ``"layer"`` ranking (ratio mode).
        max_pruning_ratio: the largest fraction of any one group's units that may be removed, in (0, 1]
            (Torch-Pruning's name; default 1: no cap, every group keeps at least its best unit). Each group keeps
            at least ``ceil((1 - max_pruning_ratio) * units)`` of its most important units, in every mode and
            scope, so a global ranking cannot collapse a layer (Network Slimming's |γ| threshold keeps 1 of
            MobileNetV2's 1,280 last-conv channels at 0.35x MACs without one). A budget below what the cap lets
            go raises ``ValueError`` naming the reachable minimum.
        round_to: round every group's kept channel count up to a multiple of this (``None``: no rounding), or
            ``"auto"`` with a latency budget: the rounding among ``None, 2, 4, 8, 16, 32`` whose selection keeps the
            most importance within the predicted budget (`rartsprune.width.rounding`).
        importance: a built-in criterion name or an `Importance` (``None``: the method's default).
        gradual_steps: ratio mode: reach the size gradually during the first ``gradual_steps`` search steps
            (0: off, the size is applied once at `finalize`). After step ``t`` the units outside the selection at
            the fraction ``s = 1 - (1 - t / gradual_steps)**3`` of the final pruning (Zhu & Gupta's cubic
            schedule: removed ratio ``s * ratio``, kept budget ``1 - s * (1 - budget)``) have their scores set
            to zero and held there, so the rest of the search trains the network it will become and the scores
            of the survivors are learned without the removed units (`rartsprune.width.pruner.gradual_fraction`).
        kept_scores: ``"fold"`` (default): `finalize` multiplies the kept scores into the weights, so the pruned
            model computes exactly what the scored model computes with the removed scores at zero. ``"reset"``:
            the kept scores are set to ±1 (their sign) first, so each kept channel returns to the scale of its
            own weights and the pruned model is the searched network without the scores' scaling (re-estimate
            BatchNorm statistics and fine-tune after it). A search shrinks the scores (a median of 0.18–0.41 in
            seven of VGG-11's eight convs after one epoch), and folded into a normalisation's affine parameters
            they make the same fine-tuning LR move a kept channel's scale 1/α² further than during the search.
            The selection is the same either way; docs/width.md ("What finalize does with the kept scores") has
            the measurements.
    """

    mode: str = "ratio"
    ratio: float | None = None
    macs: float | None = None
    params: float | None = None
    latency: float | None = None
    latency_batch: int = 1
    latency_table: str | None = None
    threshold: float = 1e-2
    scope: str = "global"
    max_pruning_ratio: float = 1.0
    round_to: int | str | None = None
    importance: str | Importance | None = None
    gradual_steps: int = 0
    kept_scores: str = "fold"
    budget: tuple[str, float] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        ratio = self.ratio
        if ratio is not None and (self.macs is not None or self.params is not None or self.latency is not None):
            other = "macs" if self.macs is not None else "params" if self.params is not None else "latency"
            sizes = "ratio=, macs=, params= or latency=" if self.latency is not None else "ratio=, macs= or params="
            raise ValueError(f"pass one of {sizes}, not ratio and {other}")
        budget = resolve_budget(self.macs, self.params, mode=self.mode, latency=self.latency)  # ValueError: why
        batch = self.latency_batch
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"latency_batch must be a positive integer (the batch size timed), got {batch!r}")
        table = self.latency_table
        if table is not None:
            if not isinstance(table, (str, os.PathLike)) or not str(table):
                raise ValueError(f"latency_table must be a JSON file path or None, got {table!r}")
            object.__setattr__(self, "latency_table", os.fspath(table))
        if self.latency is None and (batch != 1 or table is not None):
            raise ValueError("latency_batch= and latency_table= belong to a latency budget: pass latency= too")
        if ratio is None and budget is None:
            ratio = DEFAULT_RATIO
        if self.mode == "ratio" and budget is None and (
            isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0.0 <= ratio < 1.0
        ):
            raise ValueError(f"ratio must be a number in [0, 1) (the fraction of channels removed), got {ratio!r}")
        _number("threshold", self.threshold)  # the |score| cut of mode='l1'
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be 'global' or 'layer', got {self.scope!r}")
        check_max_pruning_ratio(self.max_pruning_ratio)
        if self.round_to == "auto":
            if budget is None or budget[0] != "latency":
                raise ValueError("round_to='auto' chooses the rounding with the latency model of a latency budget: "
                                 f"pass latency= too (got {'no budget' if budget is None else budget[0] + '='}), "
                                 "or an integer round_to")
        elif self.round_to is not None and (
            isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1
        ):
            raise ValueError(f"round_to must be a positive integer, 'auto' or None, got {self.round_to!r}")
        if self.importance is not None:
            get_importance(self.importance)  # ValueError / TypeError naming the criterion
        steps = self.gradual_steps
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f"gradual_steps must be a non-negative integer (search steps; 0: off), got {steps!r}")
        if steps and self.mode != "ratio":
            raise ValueError("gradual_steps needs a fixed size (ratio, macs, params or latency in mode='ratio'); "
                             "in mode='l1' the penalty decides the size")
        check_kept_scores(self.kept_scores)
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "budget", budget)

    @classmethod
    def changed(cls, **settings: Any) -> list[str]:
        """The names among ``settings`` (this object's fields, as `rartsprune.prune` keywords) not at their defaults.

        Examples:
            >>> SelectionConfig.changed(ratio=None, scope="layer", round_to=None)
            ['scope']
        """
        return _changed(cls, settings)


Factory = Callable[[Any], Any]


@dataclass(frozen=True)
class WidthSearchConfig:
    """How the scores of a width search learn (`rartsprune.prune`'s search keywords as one object).

    Attributes:
        method: a search of the scores (`SEARCH_METHODS`: ``"rarts"``, ``"darts1"``, ``"darts2"``,
            ``"milenas"``) or a one-shot baseline (`BASELINE_METHODS`: ``"l1_norm"``, ``"random"``,
            ``"slimming"``).
        lam, beta: RARTS' λ (weight of L_t; also MiLeNAS') and β (coupling of y and w).
        update: RARTS' update, ``"exact"`` or ``"fused"`` (`UPDATES`).
        l1: ℓ1 pressure ``l1 * Σ|α|`` on the scores (``None``: the mode's default, `DEFAULTS`; 0 with a budget,
            `BUDGET_DEFAULTS`).
        cost_weight: cost-weighted pressure ``Σ|α_u| MACs_u / MACs`` (``None``: 2 with a budget, else 0); with a
            parameter budget each unit's share of the parameters replaces ``MACs_u / MACs``
            (`rartsprune.width.penalties.unit_params`), with a latency budget its share of the predicted latency
            (`rartsprune.width.latency.LatencyModel.unit_costs`).
        prox: ℓ1 mode: a proximal soft-threshold step after each search step (exact zeros).
        sparsity: Network Slimming's ``s`` (``method="slimming"``).
        weight_lr, weight_decay: SGD (momentum 0.9) of the network weights during the search.
        arch_lr, arch_weight_decay: Adam of the scores (``arch_lr=None``: the mode's default, `DEFAULTS`).
        weight_optimizer, arch_optimizer: factories ``f(params) -> Optimizer`` that replace those.
        weight_scheduler, arch_scheduler: factories ``f(optimizer) -> LRScheduler``.
        grad_clip: max gradient norm of each weight update (``None``: off).

    Raises:
        ValueError: an unknown method or update, a negative or non-finite number, a non-positive learning rate.
        TypeError: a factory that is not callable.

    Examples:
        >>> WidthSearchConfig(method="darts2", lam=0.5).method
        'darts2'
        >>> WidthSearchConfig(update="slow")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ValueError: update must be 'exact' or 'fused', got 'slow'
    """

    method: str = "rarts"
    lam: float = 1.0
    beta: float = 1.0
    update: str = "exact"
    l1: float | None = None
    cost_weight: float | None = None
    prox: bool = False
    sparsity: float = 1e-4
    weight_lr: float = 0.025
    weight_decay: float = 3e-4
    arch_lr: float | None = None
    arch_weight_decay: float = 1e-3
    weight_optimizer: Factory | None = field(default=None, compare=False)
    arch_optimizer: Factory | None = field(default=None, compare=False)
    weight_scheduler: Factory | None = field(default=None, compare=False)
    arch_scheduler: Factory | None = field(default=None, compare=False)
    grad_clip: float | None = 5.0

    def __post_init__(self) -> None:
        if self.method not in SEARCH_METHODS + BASELINE_METHODS:
            raise ValueError(f"unknown method {self.method!r}; valid methods: "
                             f"{', '.join(SEARCH_METHODS + BASELINE_METHODS)}")
        if self.update not in UPDATES:
            raise ValueError(f"update must be 'exact' or 'fused', got {self.update!r}")
        for name in ("lam", "beta", "sparsity", "weight_decay", "arch_weight_decay"):
            _number(name, getattr(self, name))
        for name in ("l1", "cost_weight"):
            _number(name, getattr(self, name), optional=True)
        _number("weight_lr", self.weight_lr, positive=True)
        _number("arch_lr", self.arch_lr, positive=True, optional=True)
        _number("grad_clip", self.grad_clip, positive=True, optional=True)
        if not isinstance(self.prox, bool):
            raise TypeError(f"prox must be True or False, got {self.prox!r}")
        for name in ("weight_optimizer", "arch_optimizer", "weight_scheduler", "arch_scheduler"):
            value = getattr(self, name)
            if value is not None and not callable(value):
                raise TypeError(f"{name} must be a callable factory or None, got {type(value).__name__}")

    @property
    def is_search(self) -> bool:
        """True for a search of the scores, False for a one-shot baseline."""
        return self.method in SEARCH_METHODS

    def resolved(self, selection: SelectionConfig) -> WidthSearchConfig:
        """This config with the defaults that depend on the selection filled in (``l1``, ``cost_weight``,
        ``arch_lr``: `DEFAULTS` per mode, `BUDGET_DEFAULTS` with a budget, `GRADUAL_DEFAULTS` with a budget
        reached gradually).

        Raises:
            ValueError: ``mode="l1"`` with a one-shot baseline (the ℓ1 mode needs a search).
        """
        if selection.mode == "l1" and not self.is_search:
            raise ValueError(f"mode='l1' needs a search method ({', '.join(SEARCH_METHODS)}); {self.method!r} is one-shot")
        l1, cost_weight = self.l1, self.cost_weight
        if selection.budget is not None:  # a cost budget: the pressure is in the budget's units
            l1 = BUDGET_DEFAULTS["l1"] if l1 is None else l1
            cost_weight = BUDGET_DEFAULTS["cost_weight"] if cost_weight is None else cost_weight
        defaults = DEFAULTS[selection.mode]
        arch_lr = GRADUAL_DEFAULTS["arch_lr"] if _gradual_budget(selection) else defaults["arch_lr"]
        return replace(self, l1=float(defaults["l1"] if l1 is None else l1),
                       cost_weight=float(0.0 if cost_weight is None else cost_weight),
                       arch_lr=float(arch_lr if self.arch_lr is None else self.arch_lr))

    @classmethod
    def changed(cls, **settings: Any) -> list[str]:
        """The names among ``settings`` not at their defaults (see `SelectionConfig.changed`).

        Examples:
            >>> WidthSearchConfig.changed(lam=1.0, update="fused")
            ['update']
        """
        return _changed(cls, settings)
