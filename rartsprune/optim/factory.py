"""Build a search optimizer from a method name, so a caller switches methods with one argument.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> gate = nn.Parameter(torch.zeros(4))
    >>> net = nn.Linear(4, 3)
    >>> opt = make_search_optimizer("darts2", net, [gate], beta=5.0)  # beta: RARTS-only, dropped here
    >>> type(opt).__name__, opt.order
    ('DARTS', 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .base import SearchOptimizer
from .darts import DARTS
from .milenas import MiLeNAS
from .rarts import RARTS

__all__ = ["METHODS", "make_search_optimizer", "METHOD_ONLY_KWARGS"]

METHODS: tuple[str, ...] = ("rarts", "darts1", "darts2", "milenas")

METHOD_ONLY_KWARGS: dict[str, frozenset[str]] = {
    "lam": frozenset({"rarts", "milenas"}),
    "beta": frozenset({"rarts"}),
    "update": frozenset({"rarts"}),
    "mode": frozenset({"rarts"}),
    "aux_model": frozenset({"rarts"}),
    "aux_init": frozenset({"rarts"}),
    "aux_weight_optimizer": frozenset({"rarts"}),
    "aux_weight_scheduler": frozenset({"rarts"}),
    "xi": frozenset({"darts2"}),
    "fd_radius": frozenset({"darts2"}),
}
"""Keyword arguments that `make_search_optimizer` silently drops for the methods that do not use them
(the keys are the argument names, the values the methods that use them). Every other keyword argument is
passed on, and an unknown one raises ``TypeError``."""


def make_search_optimizer(
    method: str, model: nn.Module, arch_params: Sequence[Tensor], **kwargs: Any
) -> SearchOptimizer:
    """Return ``RARTS``, ``DARTS(order=1)``, ``DARTS(order=2)`` or ``MiLeNAS`` for ``method``.

    Args:
        method: one of `METHODS` (``"rarts"``, ``"darts1"``, ``"darts2"``, ``"milenas"``).
        model, arch_params: as for the classes.
        **kwargs: the classes' keyword arguments. Those listed in `METHOD_ONLY_KWARGS` are dropped for
            methods that do not use them (``lam`` for DARTS; ``beta``, ``update``, ``aux_*`` for one-network
            methods; ``xi``, ``fd_radius`` for all but darts2).

    Raises:
        ValueError: unknown ``method`` (the message lists the valid names), or ``order`` passed.
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"unknown search method {method!r}; valid methods: {', '.join(METHODS)}")
    if "order" in kwargs:
        raise ValueError("do not pass order=: choose 'darts1' or 'darts2' as the method")
    kept = {k: v for k, v in kwargs.items() if k not in METHOD_ONLY_KWARGS or method in METHOD_ONLY_KWARGS[k]}
    if method == "rarts":
        return RARTS(model, arch_params, **kept)
    if method == "milenas":
        return MiLeNAS(model, arch_params, **kept)
    return DARTS(model, arch_params, order=int(method[-1]), **kept)
