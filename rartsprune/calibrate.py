"""Re-estimate BatchNorm running statistics, e.g. right after surgery.

Removing channels changes what every later layer sees, so the running means and variances that BatchNorm
layers learned on the unpruned network no longer match: the pruned network can look far worse in eval mode
than it is. A few forward passes in training mode over training batches (no gradients, no weight change)
re-estimate them; this is ``torch.optim.swa_utils.update_bn`` limited to a number of batches, made
all-or-nothing (a failing batch leaves the model as it was) and keeping each module's train/eval flag.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())
    >>> batches = [torch.randn(8, 3, 16, 16) + 2.0 for _ in range(5)]
    >>> net = recalibrate_bn(net, batches, num_batches=3)
    >>> int(net[1].num_batches_tracked)
    3
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["has_running_stats", "recalibrate_bn"]


def _tracking_layers(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def has_running_stats(model: nn.Module) -> bool:
    """True if ``model`` has a BatchNorm layer that tracks running statistics (what `recalibrate_bn` updates)."""
    return bool(_tracking_layers(model))


def recalibrate_bn(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    num_batches: int | None = 50,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Reset and re-estimate the running statistics of every BatchNorm layer of ``model``.

    The statistics become the plain average over the batches seen (momentum ``None`` while it runs; each
    layer's momentum is restored afterwards). Weights are not changed and no gradients are computed.

    Args:
        model: the network (changed in place and returned).
        batches: an iterable of input tensors, or of ``(inputs, ...)`` tuples/lists whose first element is the
            input (a DataLoader of ``(image, label)`` works). Feed *training* data with the transforms used in
            training (normalisation included).
        num_batches: how many batches to use at most (``None``: all of ``batches``).
        device: where to move each input (default: the inputs stay where they are).

    Returns:
        ``model``.

    Raises:
        ValueError: ``model`` has no BatchNorm layer with running statistics, ``num_batches`` is not a
            positive integer, or ``batches`` yielded nothing. Any error (also from the model's forward) leaves
            the statistics, momenta and train/eval flags as they were.

    Examples:
        >>> import torch, torchvision
        >>> net = torchvision.models.resnet18(num_classes=10)
        >>> data = [(torch.randn(4, 3, 32, 32), torch.zeros(4, dtype=torch.long)) for _ in range(2)]
        >>> net = recalibrate_bn(net, data)
        >>> int(net.bn1.num_batches_tracked), net.training
        (2, True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int)
                                    or num_batches < 1):
        raise ValueError(f"num_batches must be a positive integer or None, got {num_batches!r}")
    layers = _tracking_layers(model)
    if not layers:
        raise ValueError("model has no BatchNorm layer that tracks running statistics; nothing to recalibrate")
    saved_stats = [{k: b.detach().clone() for k, b in m.named_buffers(recurse=False)} for m in layers]
    saved_momentum = [m.momentum for m in layers]
    saved_modes = [(m, m.training) for m in model.modules()]
    limited = batches if num_batches is None else itertools.islice(batches, num_batches)
    ok = False
    try:
        torch.optim.swa_utils.update_bn(limited, model, device=device)
        # update_bn zeroes each layer's batch counter, then every forward in training mode adds one
        if all(int(m.num_batches_tracked) == 0 for m in layers):
            raise ValueError("batches yielded no batch; the running statistics were left as they were")
        ok = True
    finally:
        for m, mode in saved_modes:
            m.training = mode
        for m, momentum in zip(layers, saved_momentum):
            m.momentum = momentum
        if not ok:
            with torch.no_grad():
                for m, stats in zip(layers, saved_stats):
                    for k, v in stats.items():
                        getattr(m, k).copy_(v)
    return model
