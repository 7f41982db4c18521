"""The application's one training loop, one evaluation and one atomic checkpoint write.

The width-search job runner (`rartsprune.app.pipeline`) and the DARTS evaluation-network trainer
(`rartsprune.app.topology.train`, ``recipes/darts_train.py``) both run `train_epoch` and `evaluate`; they differ
only in how a batch becomes a loss (``loss_fn``) and in how batches are made. Every checkpoint, cache and
result file is written with `atomic_save`: a crash mid-write never leaves a truncated file.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Linear(4, 3)
    >>> batches = [(torch.randn(8, 4), torch.randint(0, 3, (8,)))]
    >>> opt = torch.optim.SGD(net.parameters(), lr=0.1)
    >>> sorted(train_epoch(net, batches, opt))
    ['acc', 'loss']
    >>> sorted(evaluate(net, batches))
    ['acc', 'loss']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

__all__ = ["atomic_save", "evaluate", "map_batches", "train_epoch", "LossFn"]

#: ``loss_fn(model, inputs, targets) -> (loss, logits)``: the loss to minimise and the logits counted for accuracy.
LossFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], "tuple[torch.Tensor, torch.Tensor]"]


class map_batches:  # noqa: N801 - used like map()
    """``fn`` applied to each batch of ``batches`` lazily, keeping ``len`` (for progress bars).

    Examples:
        >>> m = map_batches([1, 2, 3], lambda b: 2 * b)
        >>> len(m), list(m)
        (3, [2, 4, 6])
    """

    def __init__(self, batches: Iterable[Any], fn: Callable[[Any], Any]) -> None:
        self.batches, self.fn = batches, fn

    def __iter__(self) -> Any:
        return (self.fn(b) for b in self.batches)

    def __len__(self) -> int:
        return len(self.batches)  # type: ignore[arg-type]


def _cross_entropy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = model(x)
    return F.cross_entropy(out, y), out


def train_epoch(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    *,
    loss_fn: LossFn | None = None,
    autocast: Callable[[], AbstractContextManager[Any]] | None = None,
    scaler: torch.amp.GradScaler | None = None,
    grad_clip: float | None = None,
    on_step: Callable[[float], None] | None = None,
    desc: str = "train",
    progress: bool = False,
) -> dict[str, float]:
    """One epoch of supervised training over ``batches`` (on the model's device); mean loss and accuracy (%).

    Args:
        loss_fn: how a batch becomes ``(loss, logits)`` (default: cross-entropy of ``model(x)``).
        autocast: a factory of the context entered around each forward pass (mixed precision), e.g.
            ``lambda: torch.autocast("cuda", torch.bfloat16)``.
        scaler: a ``GradScaler`` for float16 (scales the loss, steps and updates).
        grad_clip: clip the total gradient norm to this before the step.
        on_step: called with each batch's loss.
        desc, progress: the progress bar (hidden when output is not a terminal).

    Raises:
        FloatingPointError: a non-finite loss (the step is not taken).
        ValueError: no batches.
    """
    loss_fn = loss_fn or _cross_entropy
    model.train()
    loss_sum = correct = total = 0.0
    for x, y in tqdm(batches, desc=desc, leave=False, disable=None if progress else True, unit="batch"):
        with autocast() if autocast is not None else nullcontext():
            loss, logits = loss_fn(model, x, y)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite training loss ({float(loss.detach())}) in {desc}; lower the learning rate")
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            if grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            optimizer.step()
        n = y.shape[0]
        loss_sum += float(loss.detach()) * n
        correct += float((logits.detach().argmax(1) == y).sum())
        total += n
        if on_step is not None:
            on_step(float(loss.detach()))
    if total == 0:
        raise ValueError(f"{desc}: no batches")
    return {"loss": loss_sum / total, "acc": 100.0 * correct / total}


@torch.no_grad()
def evaluate(model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], *,
             autocast: Callable[[], AbstractContextManager[Any]] | None = None) -> dict[str, float]:
    """Mean cross-entropy and top-1 accuracy (%) of ``model`` in eval mode (its mode is restored).

    ``autocast``: as for `train_epoch`.

    Raises:
        ValueError: no batches.
    """
    was = model.training
    model.eval()
    loss_sum = correct = total = 0.0
    try:
        for x, y in batches:
            with autocast() if autocast is not None else nullcontext():
                out = model(x)
            loss_sum += float(F.cross_entropy(out.float(), y, reduction="sum"))
            correct += int((out.argmax(1) == y).sum())
            total += int(y.shape[0])
    finally:
        model.train(was)
    if total == 0:
        raise ValueError("evaluate: no batches")
    return {"loss": loss_sum / total, "acc": 100.0 * correct / total}


def atomic_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)`` through a temporary file in the same folder and ``os.replace``.

    Either the old file or the complete new one exists at every moment; the temporary file is removed when
    saving fails (and the error re-raised).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
