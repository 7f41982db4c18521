"""The job runner in several processes (``torchrun``): who this process is, its device, the process group.

`launch_ranks` reads the process's place in a data-parallel run: the process group a caller initialised, else
``torchrun``'s environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), else one process. `process_group`
initialises the group when ``torchrun`` started the processes and nobody did (``nccl`` on CUDA, ``gloo`` on
the CPU) and destroys it on exit only if it created it. The reductions are `rartsprune.optim.distributed`'s.
`check_batch_split` refuses a global batch the processes cannot split evenly, `agree` checks that every rank
holds the same value (e.g. read the same checkpoint) and `share_rng_from_rank0` gives every rank rank 0's
random state (so they draw the same augmentation for the global batch).

Examples:
    >>> ranks = launch_ranks({})          # no torchrun variables, no process group: one process
    >>> ranks.world, ranks.main, ranks.shard
    (1, True, None)
    >>> launch_ranks({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    Ranks(rank=3, world=4, local_rank=1, launched=True)
    >>> with process_group(torch.device("cpu"), launch_ranks({})) as ranks:  # one process: nothing to do
    ...     ranks.distributed
    False
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from ..optim import distributed as ddp

__all__ = ["Ranks", "launch_ranks", "rank_device", "process_group", "barrier", "same_as_rank0",
           "check_batch_split", "agree", "share_rng_from_rank0"]

_ENV = ("RANK", "WORLD_SIZE")
#: Numbers the process groups `process_group` initialises in this process (their keys in the store).
_GROUPS = itertools.count()


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run (``world == 1``: one process, no process group).

    ``launched``: ``torchrun`` started it (its environment variables are set) and no caller initialised the
    process group, so `process_group` initialises it.
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launched: bool = False

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world > 1

    @property
    def shard(self) -> tuple[int, int] | None:
        """``(rank, world)`` for sharded loaders and augmentation, ``None`` in one process."""
        return (self.rank, self.world) if self.distributed else None


def _env_int(env: Mapping[str, str], name: str, default: int | None = None) -> int:
    value = env.get(name)
    if value is None:
        if default is None:
            raise ValueError(f"torchrun variable {name} is not set")
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise ValueError(f"environment variable {name}={value!r} is not an integer") from exc


def launch_ranks(env: Mapping[str, str] | None = None) -> Ranks:
    """This process's `Ranks`: from the initialised process group, else from ``torchrun``'s variables in
    ``env`` (default ``os.environ``), else one process.

    A ``WORLD_SIZE`` of 1 is one process (no process group is created for it).

    Raises:
        ValueError: ``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` are not integers or out of range.

    Examples:
        >>> launch_ranks({"RANK": "0", "WORLD_SIZE": "1"}).distributed
        False
    """
    env = os.environ if env is None else env
    if ddp.is_initialized():
        local = _env_int(env, "LOCAL_RANK", -1)
        if local < 0:  # a caller's own group without torchrun: its current CUDA device decides (rank_device)
            local = torch.cuda.current_device() if torch.cuda.is_available() else 0
        return Ranks(ddp.rank(), ddp.world_size(), local, launched=False)
    if not all(name in env for name in _ENV):
        return Ranks()
    rank, world = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    local = _env_int(env, "LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ValueError(f"torchrun variables out of range: RANK={rank}, WORLD_SIZE={world}, "
                         f"LOCAL_RANK={local}")
    return Ranks(rank, world, local, launched=world > 1)


def rank_device(device: torch.device, ranks: Ranks) -> torch.device:
    """The device of this rank: ``cuda`` without an index becomes ``cuda:LOCAL_RANK`` in a multi-process run
    (an explicit index is kept: e.g. one visible GPU per process); other devices are returned as they are.

    Examples:
        >>> rank_device(torch.device("cuda"), Ranks(rank=5, world=8, local_rank=1))
        device(type='cuda', index=1)
        >>> rank_device(torch.device("cpu"), Ranks(rank=5, world=8, local_rank=1))
        device(type='cpu')
    """
    if device.type == "cuda" and device.index is None and ranks.distributed:
        return torch.device("cuda", ranks.local_rank)
    return device


@contextmanager
def process_group(device: torch.device, ranks: Ranks) -> Iterator[Ranks]:
    """Inside: the default process group exists whenever ``ranks.distributed``.

    When ``ranks.launched`` (``torchrun`` started the process and no group exists) the group is initialised
    from the environment (``env://``) with ``nccl`` on CUDA (after ``torch.cuda.set_device(device)``) or
    ``gloo``, and destroyed on exit; a group the caller initialised is left alone. One process: nothing
    happens.

    A process may do this several times (a recipe runs one job after another): every group gets keys of its
    own in the rendezvous store (``rartsprune/<n>``, ``n`` counting the groups this process made, the same on
    every rank when the ranks run the same jobs). ``torchrun``'s store outlives the groups, and a new group
    under the keys of the last one would read its stale addresses and fail to connect.

    Examples:
        >>> with process_group(torch.device("cpu"), Ranks()) as ranks:
        ...     ranks.world
        1
    """
    if not ranks.launched:
        yield ranks
        return
    store, _, _ = next(dist.rendezvous("env://", rank=ranks.rank, world_size=ranks.world))
    store = dist.PrefixStore(f"rartsprune/{next(_GROUPS)}", store)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", store=store, rank=ranks.rank, world_size=ranks.world, device_id=device)
    else:
        dist.init_process_group("gloo", store=store, rank=ranks.rank, world_size=ranks.world)
    try:
        yield replace(ranks, launched=False)
    finally:
        dist.destroy_process_group()


def barrier(ranks: Ranks) -> None:
    """Wait until every rank gets here (nothing in one process)."""
    if ranks.distributed:
        dist.barrier()


def same_as_rank0(tensors: Sequence[torch.Tensor]) -> float:
    """Make ``tensors`` rank 0's on every rank (`rartsprune.optim.distributed.broadcast_`) and return the
    largest absolute difference any rank had from them (the same number on every rank; 0.0 in one process).

    Examples:
        >>> same_as_rank0([torch.ones(3)])
        0.0
    """
    if not tensors or ddp.world_size() == 1:
        return 0.0
    mine = [t.detach().clone() for t in tensors]
    ddp.broadcast_(list(tensors))
    diffs = [(a.float() - b.detach().float()).abs().max() for a, b in zip(mine, tensors) if a.numel()]
    local = torch.stack(diffs).max().reshape(1) if diffs else torch.zeros(1, device=tensors[0].device)
    return float(ddp.any_rank_max(local)[0])


def check_batch_split(batch_size: int, world: int) -> None:
    """Refuse a global ``batch_size`` that ``world`` processes cannot split evenly (one process takes any).

    Raises:
        ValueError: ``batch_size`` is not a multiple of ``world``.

    Examples:
        >>> check_batch_split(64, 4)
        >>> check_batch_split(30, 4)
        Traceback (most recent call last):
        ...
        ValueError: batch_size=30 must be a multiple of the 4 processes (the global batch, split evenly)
    """
    if world > 1 and batch_size % world:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the {world} processes "
                         "(the global batch, split evenly)")


def agree(value: int, device: torch.device) -> bool:
    """Whether every rank passed the same integer ``value`` (the same answer on every rank; True in one
    process). ``device``: where the reduction runs (this rank's CUDA device under ``nccl``).

    Examples:
        >>> agree(7, torch.device("cpu"))
        True
    """
    if ddp.world_size() == 1:
        return True
    both = ddp.any_rank_max(torch.tensor([value, -value], dtype=torch.int64, device=device))
    return int(both[0]) == -int(both[1])


def share_rng_from_rank0(device: torch.device) -> None:
    """Give this process rank 0's random state: the CPU generator, and ``device``'s generator when it is a
    CUDA device (nothing in one process). Ranks that then draw alike augment their parts of a global batch as
    one process would (`rartsprune.app.data.BatchAugment`), even after rank 0 alone drew numbers (e.g. timing
    latencies).

    Examples:
        >>> share_rng_from_rank0(torch.device("cpu"))  # one process: nothing to do
    """
    if ddp.world_size() == 1:
        return
    cuda = device.type == "cuda"
    where = device if cuda else torch.device("cpu")
    states = [torch.get_rng_state().to(where)]
    if cuda:
        states.append(torch.cuda.get_rng_state(device).to(where))
    ddp.broadcast_(states)
    torch.set_rng_state(states[0].cpu())
    if cuda:
        torch.cuda.set_rng_state(states[1].cpu(), device)
