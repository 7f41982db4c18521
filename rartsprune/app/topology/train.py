"""Loop bodies that train and evaluate a DARTS evaluation network (``recipes/darts_train.py`` drives them).

Examples:
    >>> import torch
    >>> from rartsprune.topology import DARTS_V2, DartsEvalNetwork
    >>> net = DartsEvalNetwork(DARTS_V2, C=4, layers=3, auxiliary=True)
    >>> batches = [(torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3]))]
    >>> sorted(evaluate(net, batches))
    ['accuracy', 'loss']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ...topology.network import DartsEvalNetwork
from .. import loop

__all__ = ["train_epoch", "evaluate"]


def train_epoch(
    net: DartsEvalNetwork,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    auxiliary_weight: float = 0.4,
    grad_clip: float | None = 5.0,
    augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
    on_step: Callable[[float], None] | None = None,
    label_smoothing: float = 0.0,
) -> dict[str, float]:
    """One training epoch (loss = CE + ``auxiliary_weight`` * auxiliary CE); returns mean loss and accuracy.

    Batches must already be on the network's device; ``augment`` (e.g. crop/flip/cutout) runs per batch.
    ``label_smoothing`` applies to both cross-entropies (DARTS's ImageNet protocol uses 0.1).
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, aux = model.forward_with_aux(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if aux is not None and auxiliary_weight > 0:
            loss = loss + auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=label_smoothing)
        return loss, logits

    if augment is not None:
        batches = ((augment(x), y) for x, y in batches)
    stats = loop.train_epoch(net, batches, optimizer, loss_fn=loss_fn, grad_clip=grad_clip, on_step=on_step,
                             desc="train_epoch")  # ValueError "train_epoch: no batches"
    return {"loss": stats["loss"], "accuracy": stats["acc"]}


def evaluate(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (%) of ``net`` in eval mode (mode restored afterwards)."""
    stats = loop.evaluate(net, batches)  # ValueError "evaluate: no batches"
    return {"loss": stats["loss"], "accuracy": stats["acc"]}
