"""Importance criteria as objects (as Torch-Pruning's ``Importance``): what the selection ranks units by.

An `Importance` is called with the `ScoreHandle` of a scored model and returns, for every scored group, a
CPU float tensor with one value per unit (higher = keep; ``+inf`` = always keep). `rartsprune.prune` takes
one as ``importance=`` (or the name of a built-in one), for the searches and the one-shot baselines alike:

* score-based: `AlphaImportance` (|α|), `AlphaGammaImportance` (|α·γ|, the ratio-mode default),
  `NormalizedAlphaImportance` (|α| over its group's mean |α|) — see `rartsprune.width.selection`;
* weight-based: `MagnitudeImportance` (Torch-Pruning's group ℓ1 norm: the ``l1_norm`` baseline),
  `BNScaleImportance` (|γ|·|α| of units with a BatchNorm, others always kept: Network Slimming),
  `RandomImportance` (seeded).

A criterion of your own subclasses `Importance` (or is any callable with the same signature wrapped in one):

    >>> import torch
    >>> class Fisher(Importance):
    ...     name = "fisher"
    ...     def __call__(self, handle):
    ...         return {g.name: a.grad.detach().abs().cpu() ** 2 for g, a in zip(handle.groups, handle.scores)}
    >>> get_importance("alpha_gamma").name, get_importance(Fisher()).name
    ('alpha_gamma', 'fisher')
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import torch

from ..scores import ScoreHandle
from .baselines import baseline_importance
from .selection import unit_importance

__all__ = [
    "Importance",
    "AlphaImportance",
    "AlphaGammaImportance",
    "NormalizedAlphaImportance",
    "MagnitudeImportance",
    "BNScaleImportance",
    "RandomImportance",
    "FunctionImportance",
    "IMPORTANCES",
    "get_importance",
]


class Importance(abc.ABC):
    """Per-unit importance of a scored model (higher = keep). Subclass it and set ``name``."""

    #: A short name: recorded in the pruner's state and results, compared when a search is resumed.
    name: str = "custom"

    @abc.abstractmethod
    def __call__(self, handle: ScoreHandle) -> dict[str, torch.Tensor]:
        """Group name -> one importance per unit of that group."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class AlphaImportance(Importance):
    """|α|: the raw learned scores (the ℓ1 mode's criterion)."""

    name = "alpha"

    def __call__(self, handle: ScoreHandle) -> dict[str, torch.Tensor]:
        return unit_importance(handle, "alpha")


class AlphaGammaImportance(Importance):
    """|α|·|γ| with the BatchNorm scale γ next to the score (units without one: the median |γ|)."""

    name = "alpha_gamma"

    def __call__(self, handle: ScoreHandle) -> dict[str, torch.Tensor]:
        return unit_importance(handle, "alpha_gamma")


class NormalizedAlphaImportance(Importance):
    """|α| divided by the mean |α| of its group (the same relative weakness everywhere)."""

    name = "normalized"

    def __call__(self, handle: ScoreHandle) -> dict[str, torch.Tensor]:
        return unit_importance(handle, "normalized")


class MagnitudeImportance(Importance):
    """Torch-Pruning's group ℓ1 magnitude (``GroupMagnitudeImportance(p=1)``), per unit, scores folded in."""

    name = "l1_norm"

    def __call__(self, handle: ScoreHandle) -> dict[str, torch.Tensor]:
        return baseline_importance(handle, "l1_norm")


class BNScaleImportance(Importance):
    """Network Slimming's criterion: |γ|·|α| of units next to a BatchNorm; groups without one are kept."""

    name = "slimming"

    def __call__(self, handle: ScoreHandle) -> dict[str, torch.Tensor]:
        return baseline_importance(handle, "slimming")


class RandomImportance(Importance):
    """Uniform random importance from a seeded generator (the same seed ranks the same way)."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = seed

    def __call__(self, handle: ScoreHandle) -> dict[str, torch.Tensor]:
        return baseline_importance(handle, "random", self.seed)

    def __repr__(self) -> str:
        return f"RandomImportance(seed={self.seed})"


class FunctionImportance(Importance):
    """Wrap a plain function ``handle -> {group: tensor}`` as an `Importance` called ``name``."""

    def __init__(self, fn: Callable[[ScoreHandle], dict[str, torch.Tensor]], name: str | None = None) -> None:
        if not callable(fn):
            raise TypeError(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.name = name or getattr(fn, "__name__", "custom")

    def __call__(self, handle: ScoreHandle) -> dict[str, torch.Tensor]:
        return self.fn(handle)

    def __repr__(self) -> str:
        return f"FunctionImportance({self.name!r})"


#: The built-in criteria by name (``prune(importance=NAME)``; the baselines' names are their methods').
IMPORTANCES: dict[str, Callable[[], Importance]] = {
    "alpha": AlphaImportance,
    "alpha_gamma": AlphaGammaImportance,
    "normalized": NormalizedAlphaImportance,
    "l1_norm": MagnitudeImportance,
    "slimming": BNScaleImportance,
    "random": RandomImportance,
}


def get_importance(spec: str | Importance | Callable[[ScoreHandle], dict[str, torch.Tensor]], *, seed: int = 0) -> Importance:
    """An `Importance` from a built-in name, an `Importance` (returned as is) or a plain function.

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        TypeError: anything else.
    """
    if isinstance(spec, Importance):
        return spec
    if isinstance(spec, str):
        if spec not in IMPORTANCES:
            raise ValueError(f"unknown importance {spec!r}; valid: {', '.join(IMPORTANCES)} or an Importance object")
        return RandomImportance(seed) if spec == "random" else IMPORTANCES[spec]()
    if callable(spec):
        return FunctionImportance(spec)
    raise TypeError(f"importance must be a name, an Importance or a function, got {type(spec).__name__}")
