"""DistributedDataParallel plumbing for the search optimizers.

The nets (y, and w for RARTS) are wrapped in `torch.nn.parallel.DistributedDataParallel` with the
architecture parameters excluded from DDP, so weight gradients are averaged by DDP during ``backward`` while
the optimizer averages the alpha gradients itself with one all-reduce per step (`all_reduce_mean_`).

Example (inside an initialised process group)::

    ddp_net = wrap_ddp(net, ignore=[alpha])
    all_reduce_mean_(alpha_grads)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors
from torch.nn.parallel import DistributedDataParallel

from ..errors import SearchError

__all__ = ["is_initialized", "rank", "world_size", "wrap_ddp", "all_reduce_mean_", "broadcast_",
           "any_rank_max"]


def is_initialized() -> bool:
    """True when ``torch.distributed`` is available and a default process group exists."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """Number of ranks (1 without a process group)."""
    return dist.get_world_size() if is_initialized() else 1


def wrap_ddp(
    module: nn.Module, ignore: Sequence[Tensor], ddp_kwargs: Mapping[str, Any] | None = None
) -> DistributedDataParallel:
    """Wrap ``module`` in DDP, leaving the parameters in ``ignore`` (by identity) out of DDP's reduction.

    On CUDA the module's device is passed as ``device_ids``; on CPU (gloo) none is.

    Raises:
        SearchError: no process group is initialised.
    """
    if not is_initialized():
        raise SearchError(
            "distributed=True needs an initialised torch.distributed process group "
            "(call torch.distributed.init_process_group first)"
        )
    ignore_ids = {id(t) for t in ignore}
    names = [n for n, p in module.named_parameters(remove_duplicate=False) if id(p) in ignore_ids]
    if names:
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, names)
    kwargs = dict(ddp_kwargs or {})
    first = next((p for p in module.parameters() if id(p) not in ignore_ids), None)
    if first is not None and first.device.type == "cuda" and "device_ids" not in kwargs:
        kwargs["device_ids"] = [first.device.index]
    return DistributedDataParallel(module, **kwargs)


def _groups(tensors: Sequence[Tensor]) -> dict[tuple[torch.dtype, torch.device], list[int]]:
    groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault((t.dtype, t.device), []).append(i)
    return groups


def all_reduce_mean_(tensors: Sequence[Tensor]) -> None:
    """Average ``tensors`` in place across ranks (one flattened all-reduce per dtype/device group)."""
    if not is_initialized() or dist.get_world_size() == 1 or not tensors:
        return
    n = dist.get_world_size()
    for idx in _groups(tensors).values():
        group = [tensors[i] for i in idx]
        flat = _flatten_dense_tensors(group)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(n)
        for t, r in zip(group, _unflatten_dense_tensors(flat, group)):
            t.copy_(r)


def broadcast_(tensors: Sequence[Tensor], src: int = 0) -> None:
    """Copy ``tensors`` from rank ``src`` to every rank, in place."""
    if not is_initialized() or dist.get_world_size() == 1:
        return
    with torch.no_grad():
        for idx in _groups(tensors).values():
            group = [tensors[i].detach() for i in idx]
            flat = _flatten_dense_tensors(group)
            dist.broadcast(flat, src=src)
            for t, r in zip(group, _unflatten_dense_tensors(flat, group)):
                t.copy_(r)


def any_rank_max(flags: Tensor) -> Tensor:
    """Element-wise maximum of ``flags`` over ranks (so every rank takes the same decision)."""
    if not is_initialized() or dist.get_world_size() == 1:
        return flags
    flags = flags.clone()
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return flags
