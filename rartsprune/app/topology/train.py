"""Loop bodies that train and evaluate a DARTS evaluation network (``recipes/darts_train.py`` drives them).

Data-parallel (``torchrun``): wrap ``WithAux(net)`` in DistributedDataParallel and pass it to `train_epoch`
with each rank's part of every global batch (``net.drop_path_shard = (rank, world)`` draws drop-path for the
global batch); `evaluate_shares` evaluates each rank's `eval_share` and sums the counts, so every rank gets
the numbers of the whole test set.

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
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import Dataset, Subset

from ...optim import distributed as ddp
from ...topology.network import DartsEvalNetwork
from .. import loop
from ..launch import Ranks

__all__ = ["WithAux", "train_epoch", "evaluate", "eval_share", "evaluate_shares"]


class WithAux(nn.Module):
    """A DARTS evaluation network whose ``forward`` is its ``forward_with_aux`` (``(logits, aux_logits)``), so
    that DistributedDataParallel, which hooks ``forward`` only, can wrap the network `train_epoch` trains.

    Examples:
        >>> import torch
        >>> from rartsprune.topology import DARTS_V2, DartsEvalNetwork
        >>> model = WithAux(DartsEvalNetwork(DARTS_V2, C=4, layers=3)).train()
        >>> logits, aux = model(torch.randn(2, 3, 32, 32))
        >>> logits.shape, aux.shape
        (torch.Size([2, 10]), torch.Size([2, 10]))
    """

    def __init__(self, net: DartsEvalNetwork) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.net.forward_with_aux(x)


def train_epoch(
    net: DartsEvalNetwork | WithAux | DistributedDataParallel,
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
    ``net``: the network, or ``DistributedDataParallel(WithAux(net))`` with this rank's parts of the batches
    (the gradients averaged over the ranks; the returned means are this rank's).

    Raises:
        TypeError: a DistributedDataParallel that does not wrap a `WithAux`.
    """
    if not 0.0 <= label_smoothing < 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
    if isinstance(net, DistributedDataParallel) and not isinstance(net.module, WithAux):
        raise TypeError(f"train_epoch trains DistributedDataParallel(WithAux(net)), got a "
                        f"DistributedDataParallel of {type(net.module).__name__}")
    model = net if isinstance(net, (WithAux, DistributedDataParallel)) else WithAux(net)

    def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits, aux = model(x)
        loss = F.cross_entropy(logits, y, label_smoothing=label_smoothing)
        if aux is not None and auxiliary_weight > 0:
            loss = loss + auxiliary_weight * F.cross_entropy(aux, y, label_smoothing=label_smoothing)
        return loss, logits

    if augment is not None:
        batches = ((augment(x), y) for x, y in batches)
    stats = loop.train_epoch(model, batches, optimizer, loss_fn=loss_fn, grad_clip=grad_clip, on_step=on_step,
                             desc="train_epoch")  # ValueError "train_epoch: no batches"
    return {"loss": stats["loss"], "accuracy": stats["acc"]}


def evaluate(net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (%) of ``net`` in eval mode (mode restored afterwards)."""
    stats = loop.evaluate(net, batches)  # ValueError "evaluate: no batches"
    return {"loss": stats["loss"], "accuracy": stats["acc"]}


def eval_share(dataset: Dataset, ranks: Ranks) -> Dataset:
    """The test images rank ``ranks.rank`` evaluates: all of them in one process, else a contiguous share (the
    shares of the ranks are disjoint and cover the set; a share may be empty).

    Examples:
        >>> len(eval_share(list(range(10)), Ranks(rank=2, world=3)))
        4
    """
    if not ranks.distributed:
        return dataset
    n = len(dataset)  # type: ignore[arg-type]
    return Subset(dataset, range(n * ranks.rank // ranks.world, n * (ranks.rank + 1) // ranks.world))


def evaluate_shares(
    net: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], count: int, device: torch.device
) -> dict[str, float]:
    """`evaluate` of the whole test set when every rank passes the ``batches`` of its `eval_share` (``count``
    images, possibly none): each rank's sums are added up, so every rank gets the same numbers, those of one
    process on the whole set. In one process: `evaluate`.

    Examples:
        >>> import torch
        >>> evaluate_shares(torch.nn.Linear(4, 3), [(torch.randn(2, 4), torch.tensor([0, 1]))], 2,
        ...                 torch.device("cpu"))["loss"] > 0
        True
    """
    if ddp.world_size() == 1:
        return evaluate(net, batches)
    stats = evaluate(net, batches) if count else {"loss": 0.0, "accuracy": 0.0}
    sums = torch.tensor([stats["loss"] * count, round(stats["accuracy"] * count / 100.0), count],
                        dtype=torch.float64, device=device)
    dist.all_reduce(sums)
    total = float(sums[2])
    if total == 0:
        raise ValueError("evaluate_shares: no test images on any rank")
    return {"loss": float(sums[0]) / total, "accuracy": 100.0 * float(sums[1]) / total}
