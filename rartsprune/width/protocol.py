"""The one small interface a width search drives: a search of the scores or a one-shot baseline's trainer.

`WidthPruner` calls only these members, so a search optimizer (`rartsprune.optim.SearchOptimizer`: RARTS,
DARTS-1/2, MiLeNAS) and a baseline's trainer (`rartsprune.width.baselines.BaselineTrainer`: plain training, or
Network Slimming's sparsity training) are interchangeable behind ``WidthPruner.search``.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from rartsprune.optim import RARTS
    >>> net = nn.Linear(4, 2)
    >>> gate = nn.Parameter(torch.ones(4))
    >>> isinstance(RARTS(net, [gate]), Searcher)
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["Searcher"]


@runtime_checkable
class Searcher(Protocol):
    """What `WidthPruner` needs from ``search``: one step on a (D_t, D_v) batch pair, schedulers, checkpoints."""

    @property
    def num_steps(self) -> int:
        """Completed steps."""
        ...

    def step(self, batch_t: Any, batch_v: Any) -> dict[str, float]:
        """One iteration on a batch of D_t and one of D_v; returns its statistics (losses, learning rates)."""
        ...

    def step_schedulers(self) -> None:
        """Step the learning-rate schedulers once."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume."""
        ...

    def load_state_dict(self, state: Mapping[str, Any], *, restore_rng: bool = True) -> None:
        """Restore `state_dict`."""
        ...
