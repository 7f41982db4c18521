"""Width search: learn which channels to keep with RARTS (or a baseline), then remove the others."""

from .baselines import BASELINES, baseline_importance
from .budget import BUDGET_KINDS, BudgetCost, CostModel, check_budget, resolve_budget, select_by_budget
from .config import KEPT_SCORES, SCOPES, SelectionConfig, WidthSearchConfig
from .importance import (
    IMPORTANCES,
    AlphaGammaImportance,
    AlphaImportance,
    BNScaleImportance,
    FunctionImportance,
    Importance,
    MagnitudeImportance,
    NormalizedAlphaImportance,
    RandomImportance,
    get_importance,
)
from .latency import (
    LatencyModel,
    LayerLatency,
    WidthLatencyTable,
    latency_report,
    measure_width_latency,
    time_model,
)
from .latency_fit import fit_measured_latency, measured_fraction
from .penalties import WidthPenalty, soft_threshold_, unit_macs, unit_params
from .protocol import Searcher
from .pruner import (
    ALL_METHODS,
    BUDGET_DEFAULTS,
    COLLAPSED_SCORE,
    DEFAULT_RATIO,
    DEFAULTS,
    GRADUAL_DEFAULTS,
    MODES,
    WidthPruner,
    gradual_fraction,
    prune,
)
from .rounding import ROUND_TO_CANDIDATES, RoundingChoice, allowed_roundings, choose_rounding
from .selection import CRITERIA, Selection, select_by_ratio, select_by_threshold, unit_importance

__all__ = [
    "fit_measured_latency",
    "measured_fraction",
    "KEPT_SCORES",
    "SCOPES",
    "SelectionConfig",
    "WidthSearchConfig",
    "Searcher",
    "IMPORTANCES",
    "Importance",
    "AlphaImportance",
    "AlphaGammaImportance",
    "NormalizedAlphaImportance",
    "MagnitudeImportance",
    "BNScaleImportance",
    "RandomImportance",
    "FunctionImportance",
    "get_importance",
    "ALL_METHODS",
    "BUDGET_DEFAULTS",
    "GRADUAL_DEFAULTS",
    "BASELINES",
    "BUDGET_KINDS",
    "COLLAPSED_SCORE",
    "CRITERIA",
    "DEFAULT_RATIO",
    "DEFAULTS",
    "BudgetCost",
    "CostModel",
    "LatencyModel",
    "LayerLatency",
    "WidthLatencyTable",
    "latency_report",
    "measure_width_latency",
    "time_model",
    "MODES",
    "ROUND_TO_CANDIDATES",
    "RoundingChoice",
    "allowed_roundings",
    "choose_rounding",
    "Selection",
    "WidthPenalty",
    "WidthPruner",
    "baseline_importance",
    "check_budget",
    "gradual_fraction",
    "prune",
    "resolve_budget",
    "select_by_budget",
    "select_by_ratio",
    "select_by_threshold",
    "soft_threshold_",
    "unit_importance",
    "unit_macs",
    "unit_params",
]
