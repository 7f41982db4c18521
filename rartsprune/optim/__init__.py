"""Relaxed architecture-search optimizers: RARTS and the DARTS / MiLeNAS baselines behind one interface.

All methods take the same constructor arguments and the same ``step(batch_t, batch_v)`` call, so width
search (channel scores) and topology search (op logits) switch method with one argument::

    from rartsprune.optim import make_search_optimizer
    opt = make_search_optimizer("rarts", model, [alpha], lam=1.0, beta=1.0, update="exact")
    for batch_t, batch_v in loader:          # e.g. rartsprune.split.split_loaders(train_set)
        stats = opt.step(batch_t, batch_v)  # {"loss_t", "loss_v", "penalty", "dist", "lr", "lr_arch"}
    opt.step_schedulers()                   # once per epoch

Methods (``METHODS``): ``"rarts"`` (`RARTS`, exact or fused), ``"darts1"`` / ``"darts2"``
(`DARTS`), ``"milenas"`` (`MiLeNAS`).
"""

from __future__ import annotations

from .base import (
    LossFn,
    OptimizerFactory,
    SchedulerFactory,
    SearchOptimizer,
    default_arch_optimizer,
    default_loss,
    default_weight_optimizer,
)
from .darts import DARTS
from .factory import METHOD_ONLY_KWARGS, METHODS, make_search_optimizer
from .milenas import MiLeNAS
from .rarts import RARTS, RARTS_MODES
from .state import get_rng_state, set_rng_state

__all__ = [
    "RARTS",
    "RARTS_MODES",
    "DARTS",
    "MiLeNAS",
    "METHODS",
    "METHOD_ONLY_KWARGS",
    "make_search_optimizer",
    "SearchOptimizer",
    "LossFn",
    "OptimizerFactory",
    "SchedulerFactory",
    "default_loss",
    "default_weight_optimizer",
    "default_arch_optimizer",
    "get_rng_state",
    "set_rng_state",
]
