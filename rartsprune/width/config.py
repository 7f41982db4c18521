"""The selection settings of a width search as one validated object: how large the pruned model is and how
its units are ranked.

`SelectionConfig` is what `rartsprune.prune` builds from its ``ratio`` / ``macs`` / ``params`` / ``mode`` /
``threshold`` / ``scope`` / ``round_to`` / ``importance`` keywords, or takes whole as ``selection=``. It is
checked when it is constructed, so a bad setting is refused before anything touches the model.

Examples:
    >>> sel = SelectionConfig(macs=0.5, round_to=8)
    >>> sel.budget, sel.ratio
    (('macs', 0.5), None)
    >>> SelectionConfig().ratio  # no size given: the default ratio of channels
    0.4
    >>> SelectionConfig(scope="row")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: scope must be 'global' or 'layer', got 'row'
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

from .budget import resolve_budget
from .importance import Importance, get_importance

__all__ = ["DEFAULT_RATIO", "MODES", "SCOPES", "SelectionConfig"]

#: The pruning ratio of channels when neither ``ratio`` nor a budget is given (ratio mode).
DEFAULT_RATIO = 0.4
#: ``"ratio"``: a fixed size (ratio or budget); ``"l1"``: a sparsity penalty and a threshold on |α| decide it.
MODES = ("ratio", "l1")
#: ``"global"``: units ranked across all groups; ``"layer"``: every group loses the same fraction.
SCOPES = ("global", "layer")


@dataclass(frozen=True)
class SelectionConfig:
    """Which units survive `WidthPruner.finalize`.

    Attributes:
        mode: ``"ratio"`` (default) or ``"l1"`` (see `MODES`).
        ratio: ratio mode: the fraction of prunable channels removed, in [0, 1); default `DEFAULT_RATIO`
            when no budget is given, ``None`` with a budget.
        macs, params: ratio mode: keep this fraction (0, 1) of the model's MACs or parameters instead
            (exclusive with each other and with ``ratio``).
        threshold: ℓ1 mode: units with |α| <= threshold are removed.
        scope: ``"global"`` or ``"layer"`` ranking (ratio mode).
        round_to: round every group's kept channel count up to a multiple of this (``None``: no rounding).
        importance: a built-in criterion name or an `Importance` (``None``: the method's default).
    """

    mode: str = "ratio"
    ratio: float | None = None
    macs: float | None = None
    params: float | None = None
    threshold: float = 1e-2
    scope: str = "global"
    round_to: int | None = None
    importance: str | Importance | None = None
    budget: tuple[str, float] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}; valid modes: {', '.join(MODES)}")
        ratio = self.ratio
        if ratio is not None and (self.macs is not None or self.params is not None):
            raise ValueError(
                f"pass one of ratio=, macs= or params=, not ratio and {'macs' if self.macs is not None else 'params'}"
            )
        budget = resolve_budget(self.macs, self.params, mode=self.mode)  # ValueError with the reason
        if ratio is None and budget is None:
            ratio = DEFAULT_RATIO
        if self.mode == "ratio" and budget is None and (
            isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or math.isnan(ratio) or not 0.0 <= ratio < 1.0
        ):
            raise ValueError(f"ratio must be a number in [0, 1) (the fraction of channels removed), got {ratio!r}")
        if (isinstance(self.threshold, bool) or not isinstance(self.threshold, (int, float))
                or not math.isfinite(self.threshold) or self.threshold < 0):
            raise ValueError(f"threshold must be a non-negative number (the |score| cut of mode='l1'), got {self.threshold!r}")
        if self.scope not in SCOPES:
            raise ValueError(f"scope must be 'global' or 'layer', got {self.scope!r}")
        if self.round_to is not None and (
            isinstance(self.round_to, bool) or not isinstance(self.round_to, int) or self.round_to < 1
        ):
            raise ValueError(f"round_to must be a positive integer or None, got {self.round_to!r}")
        if self.importance is not None:
            get_importance(self.importance)  # ValueError / TypeError naming the criterion
        object.__setattr__(self, "ratio", ratio)
        object.__setattr__(self, "budget", budget)

    @classmethod
    def changed(cls, **settings: Any) -> list[str]:
        """The names among ``settings`` (this object's fields, as `rartsprune.prune` keywords) not at their defaults.

        Examples:
            >>> SelectionConfig.changed(ratio=None, scope="layer", round_to=None)
            ['scope']
        """
        defaults = {f.name: f.default for f in fields(cls) if f.init}
        return sorted(k for k, v in settings.items() if v != defaults[k])
