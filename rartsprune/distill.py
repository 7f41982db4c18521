"""Knowledge distillation from the unpruned network: a ``loss_fn`` for the width search (and any training loop).

A trained network's own training images carry little signal for a search: after long training the
cross-entropy on them is near zero whichever channels a score turns down. What pruning must preserve is the
network's *function*, and the unpruned network states it on every image: `DistillationLoss` mixes the
cross-entropy with the KL divergence from a frozen copy of the network before pruning (Hinton, Vinyals and
Dean, "Distilling the Knowledge in a Neural Network", 2015):

    loss = (1 - weight) * CE(net(x), y) + weight * T^2 * KL(softmax(teacher(x) / T) || softmax(net(x) / T))

with the classes on dimension 1 as in ``F.cross_entropy`` (``(N, C)`` logits, or ``(N, C, H, W)`` maps: the KL
term is then the mean over pixels).

It has the signature of the search optimizers' ``loss_fn(net, batch)``, so it goes straight into
`rartsprune.prune(loss_fn=...)` and `RARTS(loss_fn=...)`; `DistillationLoss.loss_and_logits` serves loops
that also count the logits.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> teacher = nn.Linear(4, 3)
    >>> kd = DistillationLoss(teacher, weight=1.0)
    >>> batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    >>> kd(teacher, batch).item() < 1e-6          # the teacher itself is at zero distillation loss
    True
    >>> _ = teacher.weight.data.zero_()             # training the model later ...
    >>> kd(teacher, batch).item() > 0              # ... does not change kd's frozen copy
    True
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DistillationLoss"]


class DistillationLoss:
    """``loss_fn(net, (inputs, targets))``: cross-entropy mixed with distillation from a frozen teacher.

    Args:
        teacher: the network to distil from, typically the model *before* `rartsprune.prune` (its outputs
            must be logits of the same shape as the student's). It is deep-copied (``copy_teacher=True``), put in
            eval mode and frozen, so the search changing the model later does not change the teacher.
        weight: the share of the distillation term, in [0, 1] (default 0.5; 1: distillation only, the labels
            unused; 0: plain cross-entropy).
        temperature: T > 0 of the softened distributions (default 4.0); the KL term is scaled by T² so its
            gradients keep the cross-entropy's magnitude.
        copy_teacher: deep-copy the teacher (default). ``False`` uses it as given (still frozen and put in eval
            mode): for a teacher too large to copy that nothing else changes.

    The teacher is moved to the inputs' device on first use. Its logits for the last few batches are kept, so
    a search that passes the same batch twice (RARTS's exact update: a weight pass and a score pass) runs the
    teacher once per batch.

    Raises:
        TypeError: ``teacher`` is not an ``nn.Module``; (on a call) a batch that is not ``(inputs, targets)``.
        ValueError: ``weight`` outside [0, 1], ``temperature`` not a finite positive number; (on a call) student
            and teacher logits of different shapes.

    Examples:
        >>> import torch, rartsprune
        >>> from torch import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
        >>> kd = DistillationLoss(model, weight=0.9)      # before prune: the teacher is the unpruned model
        >>> pruner = rartsprune.prune(model, ratio=0.25, loss_fn=kd, example_inputs=torch.zeros(1, 3, 8, 8))
        >>> batch = (torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))
        >>> stats = pruner.step(batch, batch)
    """

    _CACHE = 4

    def __init__(self, teacher: nn.Module, *, weight: float = 0.5, temperature: float = 4.0,
                 copy_teacher: bool = True) -> None:
        if not isinstance(teacher, nn.Module):
            raise TypeError(f"teacher must be an nn.Module, got {type(teacher).__name__}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must be a number in [0, 1], got {weight!r}")
        if (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                or not math.isfinite(temperature) or temperature <= 0):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        self.weight = float(weight)
        self.temperature = float(temperature)
        self.teacher = copy.deepcopy(teacher) if copy_teacher else teacher
        self.teacher.eval()
        self.teacher.requires_grad_(False)
        self._cache: list[tuple[Tensor, int, Tensor]] = []  # (inputs, their version, teacher logits)

    def __repr__(self) -> str:
        return (f"DistillationLoss(teacher={type(self.teacher).__name__}, weight={self.weight:g}, "
                f"temperature={self.temperature:g})")

    @torch.no_grad()
    def teacher_logits(self, inputs: Tensor) -> Tensor:
        """The frozen teacher's logits for ``inputs`` (from the cache when this very tensor was seen last)."""
        for x, version, logits in self._cache:
            if x is inputs and x._version == version:
                return logits
        first = next(self.teacher.parameters(), None)
        if first is not None and first.device != inputs.device:
            self.teacher.to(inputs.device)
        self.teacher.eval()  # a caller may have switched every module to train mode
        logits = self.teacher(inputs)
        # the cache holds the inputs themselves, so no other tensor can take their id while they are cached
        self._cache = [*self._cache[-(self._CACHE - 1):], (inputs, inputs._version, logits)]
        return logits

    def loss(self, logits: Tensor, targets: Tensor, inputs: Tensor) -> Tensor:
        """The mixed loss of the student's ``logits`` for ``inputs`` against ``targets``."""
        soft = self.teacher_logits(inputs)
        if soft.shape != logits.shape:
            raise ValueError(f"the teacher's logits have shape {tuple(soft.shape)}, the student's "
                             f"{tuple(logits.shape)}; distillation needs the same outputs")
        t = self.temperature
        log_p = F.log_softmax(soft.float() / t, dim=1)  # classes on dim 1, as F.cross_entropy (dense maps too)
        kl = (log_p.exp() * (log_p - F.log_softmax(logits.float() / t, dim=1))).sum(1)
        kd = kl.mean() * (t * t)  # per image (per pixel of a dense prediction)
        if self.weight == 1.0:
            return kd
        return (1.0 - self.weight) * F.cross_entropy(logits, targets) + self.weight * kd

    def loss_and_logits(self, net: nn.Module, batch: Any) -> tuple[Tensor, Tensor]:
        """``(loss, logits)`` of ``net`` on ``batch = (inputs, targets)``."""
        try:
            inputs, targets = batch
        except (TypeError, ValueError) as exc:
            raise TypeError("DistillationLoss wants batches (inputs, targets)") from exc
        logits = net(inputs)
        return self.loss(logits, targets, inputs), logits

    def __call__(self, net: nn.Module, batch: Any) -> Tensor:
        return self.loss_and_logits(net, batch)[0]
