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
    net.train()
    total, correct, loss_sum = 0, 0, 0.0
    for x, y in batches:
        if augment is not None:
            x = augment(x)
        logits, aux = net.forward_with_aux(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if aux is not None and auxiliary_weight > 0:
            loss = loss + auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=label_smoothing)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss {float(loss)}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            nn.utils.clip_grad_norm_(net.parameters(), grad_clip)
        optimizer.step()
        n = y.shape[0]
        total += n
        loss_sum += float(loss.detach()) * n
        correct += int((logits.detach().argmax(1) == y).sum())
        if on_step is not None:
            on_step(float(loss.detach()))
    if total == 0:
        raise ValueError("train_epoch got no batches")
    return {"loss": loss_sum / total, "accuracy": 100.0 * correct / total}


@torch.no_grad()
def evaluate(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (%) of ``net`` in eval mode (mode restored afterwards)."""
    was_training = net.training
    net.eval()
    total, correct, loss_sum = 0, 0, 0.0
    try:
        for x, y in batches:
            logits = net(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            total += y.shape[0]
    finally:
        net.train(was_training)
    if total == 0:
        raise ValueError("evaluate got no batches")
    return {"loss": loss_sum / total, "accuracy": 100.0 * correct / total}
