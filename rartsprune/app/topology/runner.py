"""Plumbing shared by the topology recipes: device choice, search data, the checkpointed epoch loop, torchrun.

* `resolve_device` -- ``"auto"`` -> CUDA when available, else CPU.
* `load_search_data` -- load a training set (`rartsprune.app.data.load_dataset`), split it into the
  halves D_t / D_v (`rartsprune.split.split_dataset`), keep in-memory images on the device, and
  yield ``((x_t, t_t), (x_v, t_v))`` device batches per epoch, reshuffled deterministically from
  ``(seed, epoch)`` so a resumed run sees the same batches as an uninterrupted one.
* `run_search` -- run the remaining epochs of a `TopologySearch`, checkpointing after each.
* `check_search_launch` / `search_launch` -- the recipes under ``torchrun`` (below).

Under ``torchrun --nproc_per_node N`` (`rartsprune.app.launch`) the recipes run data-parallel: `search_launch`
creates the process group when nobody has (and destroys it), each rank runs on its own device
(``cuda:LOCAL_RANK``); `load_search_data` with ``ranks`` gives each rank ``batch_size / N`` images of every
seeded global batch of D_t and D_v (``make_loader(..., num_replicas=, rank=)``), augmented as one process
augments the whole batch; the search is built with ``TopologySearch(..., distributed=True)`` (DDP with alpha
excluded, alpha gradients averaged, the epoch log averaged over the ranks); a latency table is measured by
rank 0 only and handed to the others; only rank 0 writes files and shows progress; ``resume`` reads rank 0's
checkpoint on every rank. One process (no ``torchrun``, or ``--nproc_per_node 1``) runs exactly as before.

Examples:
    >>> data = load_search_data("fake", subset=128, batch_size=32, device="cpu")  # doctest: +SKIP
    >>> data.steps_per_epoch  # doctest: +SKIP
    2
    >>> with search_launch("cpu", batch_size=32) as (ranks, device):  # no torchrun: one process
    ...     ranks.world, device
    (1, device(type='cpu'))
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Subset

from ...devices import resolve_device
from ...topology.search import TopologySearch
from ..data.augment import Shard
from ..launch import (
    Ranks,
    agree,
    barrier,
    check_batch_split,
    launch_ranks,
    process_group,
    rank_device,
    same_as_rank0,
    share_rng_from_rank0,
)

__all__ = ["resolve_device", "SearchData", "load_search_data", "run_search", "check_search_launch",
           "run_search_recipe",
           "search_launch"]

Batch = tuple[torch.Tensor, torch.Tensor]


def _as_in_memory(half: Subset) -> Dataset:
    """A Subset of an in-memory dataset as an in-memory dataset (fast batch slicing), else unchanged."""
    from ..data import InMemoryImageDataset

    base = half.dataset
    if isinstance(base, InMemoryImageDataset):
        return base.subset(list(half.indices))
    return half


@dataclass
class SearchData:
    """The two halves of a search's training data and how to batch them (see `load_search_data`)."""

    train_t: Dataset
    train_v: Dataset
    batch_size: int
    device: torch.device
    augment: nn.Module
    seed: int
    num_classes: int
    spec: str
    #: ``(rank, world)``: the batches are this rank's parts of the global batches; None: one process
    shard: Shard | None = None

    @property
    def steps_per_epoch(self) -> int:
        """Pairs per epoch (the longer half's batch count; the shorter half is cycled)."""
        return max(len(self.train_t), len(self.train_v)) // self.batch_size

    def pairs(self, epoch: int) -> Iterator[tuple[Batch, Batch]]:
        """Augmented device batch pairs of ``epoch`` (the same for the same ``(seed, epoch)``).

        With a ``shard`` each batch is this rank's part of the global batch one process would get, augmented
        as that whole batch would be (the ranks must draw from the same random state).
        """
        from ...split import epoch_seed, pair_loaders
        from ..data import make_loader, to_device_batch

        rank, world = (0, 1) if self.shard is None else self.shard
        # seeded by (seed, epoch): a new order every epoch (a pair_loaders(seed=...) made afresh each epoch would
        # count its epochs from 0 and reseed every epoch alike)
        lt = make_loader(self.train_t, self.batch_size, train=True, seed=epoch_seed(self.seed, epoch, "search t"),
                         num_workers=0, pin_memory=False, num_replicas=world, rank=rank)
        lv = make_loader(self.train_v, self.batch_size, train=True, seed=epoch_seed(self.seed, epoch, "search v"),
                         num_workers=0, pin_memory=False, num_replicas=world, rank=rank)
        for bt, bv in pair_loaders(lt, lv):
            yield (
                to_device_batch(bt, self.device, self.augment, shard=self.shard),
                to_device_batch(bv, self.device, self.augment, shard=self.shard),
            )


def load_search_data(
    spec: str,
    *,
    subset: int | None = None,
    seed: int = 0,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    root: str | os.PathLike[str] | None = None,
    download: bool = False,
    cutout: bool = False,
    ranks: Ranks | None = None,
) -> SearchData:
    """Load the training split of ``spec`` (``cifar10``, ``cifar100``, ``fake`` or an ImageFolder path),
    keep a ``subset`` (class-stratified, seeded) if asked, split it 50/50 into D_t / D_v (stratified), and
    return a `SearchData`. Batches get the dataset's standard augmentation (crop, flip, normalise).

    ``ranks`` (a data-parallel run, `search_launch`): ``batch_size`` is the global batch, each rank gets its
    ``batch_size / world`` part of every batch; rank 0 loads first (it downloads or writes a decode cache),
    the others after it.

    Raises:
        ValueError: too few images for two halves of ``batch_size``, or a ``batch_size`` the ranks cannot
            split evenly.
    """
    from ...split import split_dataset
    from ..data import default_augment, load_dataset, num_classes

    ranks = ranks if ranks is not None else Ranks()
    check_batch_split(batch_size, ranks.world)
    device = torch.device(device)
    if not ranks.main:
        barrier(ranks)  # rank 0 first: it downloads / writes the decode cache, the others read them
    ds = load_dataset(spec, "train", root=root, download=download, subset=subset, seed=seed)
    if ranks.main:
        barrier(ranks)
    n = len(ds)
    if n < 2 * batch_size:
        raise ValueError(
            f"{spec}: {n} training images cannot fill two halves of batch_size={batch_size}; "
            f"raise --train-subset or lower --batch-size"
        )
    half_t, half_v = split_dataset(ds, 0.5, seed=seed, stratify=True)
    train_t, train_v = _as_in_memory(half_t), _as_in_memory(half_v)
    if getattr(train_t, "in_memory", False) and device.type != "cpu":
        train_t, train_v = train_t.to(device), train_v.to(device)  # type: ignore[attr-defined]
    augment = default_augment(ds, train=True, cutout=cutout).to(device)
    return SearchData(train_t, train_v, batch_size, device, augment, seed, num_classes(ds), str(spec),
                      shard=ranks.shard)


def run_search(
    search: TopologySearch,
    data: SearchData,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    resume: bool = False,
    progress: bool = True,
    max_steps: int | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
    ranks: Ranks | None = None,
) -> TopologySearch:
    """Run the remaining epochs of ``search`` on ``data``; save ``checkpoint`` after every epoch.

    With ``resume=True`` and an existing checkpoint, the search continues from it (same batches, same
    random numbers as an uninterrupted run). ``on_epoch`` gets each epoch's log entry. ``stop_after``
    ends the run after that epoch (the checkpoint then resumes it).

    ``ranks`` (a data-parallel run; ``search`` built with ``distributed=True``, ``data`` with the same
    ``ranks``): every rank starts from rank 0's random state, only rank 0 shows progress and writes the
    checkpoint (the BatchNorm statistics made rank 0's first), and ``resume`` reads rank 0's checkpoint on
    every rank (put it on a filesystem every node sees; the ranks check that they read the same file).

    Raises:
        ValueError: ``resume`` without ``checkpoint``; ``ranks`` and ``search.distributed`` disagree.
        RuntimeError: the ranks do not see the same checkpoint.

    Examples:
        >>> run_search(search, data, checkpoint="runs/s/checkpoint.pt", resume=True)  # doctest: +SKIP
    """
    from tqdm.auto import tqdm

    ranks = ranks if ranks is not None else Ranks()
    if ranks.distributed != search.distributed:
        raise ValueError(
            f"the search runs on {ranks.world} process(es) but was built with "
            f"distributed={search.distributed}: build TopologySearch(..., distributed={ranks.distributed})"
        )
    progress = progress and ranks.main
    device = data.device  # the batches' device: the rank's, where its collectives run
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume:
        if ckpt is None:
            raise ValueError("resume=True needs a checkpoint path")
        _resume(search, ckpt, ranks, device, tqdm.write if ranks.main else None)
    share_rng_from_rank0(device)  # e.g. after rank 0 alone timed latencies, or a checkpoint of one process
    while not search.done and (stop_after is None or search.epoch < stop_after):
        entry = search.run_epoch(data.pairs(search.epoch), progress=progress, max_steps=max_steps)
        if ranks.distributed:  # DDP leaves each rank the BatchNorm statistics of its own batches
            same_as_rank0(_buffers(search))
        if ckpt is not None and ranks.main:
            search.save(ckpt)
        if progress:
            arch = entry["arch"] if isinstance(entry["arch"], str) else "(DARTS genotype)"
            tqdm.write(
                f"epoch {entry['epoch']}/{search.config.epochs} loss_t {entry['loss_t']:.3f} "
                f"loss_v {entry['loss_v']:.3f} ({entry['seconds']:.1f}s) {arch}"
            )
        if on_epoch is not None:
            on_epoch(entry)
    return search


def _buffers(search: TopologySearch) -> list[torch.Tensor]:
    """The buffers of the search's nets (y, and w for RARTS)."""
    nets = [search.net] + ([search.optimizer.aux_model] if search.optimizer.aux_model is not None else [])
    return [b for net in nets for b in net.buffers()]


def _device_of(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def _resume(search: TopologySearch, ckpt: Path, ranks: Ranks, device: torch.device,
            say: Callable[[str], None] | None) -> None:
    """Load ``ckpt`` if it exists (every rank reads rank 0's file; none goes on before all have read it)."""
    exists = ckpt.is_file()
    if not agree(int(exists), device):
        raise RuntimeError(f"the ranks do not all see {ckpt}: put --out on a filesystem every node shares "
                           "(rank 0 writes the checkpoint, every rank reads it when resuming)")
    if exists:
        state = torch.load(ckpt, map_location=_device_of(search.net), weights_only=True)
        digest = hashlib.blake2b(json.dumps([state.get("epoch"), state.get("log")], sort_keys=True).encode(),
                                 digest_size=7).digest()
        if not agree(int.from_bytes(digest, "little"), device):
            raise RuntimeError(f"the ranks read different files at {ckpt}: put --out on a filesystem every "
                               "node shares")
        search.load_state_dict(state)  # then run_search gives every rank rank 0's random state
        if say is not None:
            say(f"resumed from {ckpt} after epoch {search.epoch}")
    elif say is not None:
        say(f"no checkpoint at {ckpt}: starting from scratch")
    barrier(ranks)  # every rank has read the checkpoint before rank 0 writes the next one


def check_search_launch(batch_size: int, world: int | None = None) -> None:
    """Refuse a search that cannot run data-parallel on ``world`` processes (default: this launch's,
    `rartsprune.app.launch.launch_ranks`); the recipes call it on every rank before anything else.

    Raises:
        ValueError: ``batch_size`` (the global batch) is not divisible by the number of processes.

    Examples:
        >>> check_search_launch(64, world=4)
        >>> check_search_launch(30, world=4)
        Traceback (most recent call last):
        ...
        ValueError: batch_size=30 must be a multiple of the 4 processes (the global batch, split evenly)
    """
    check_batch_split(batch_size, launch_ranks().world if world is None else world)


@contextmanager
def search_launch(device: torch.device | str = "auto", batch_size: int | None = None
                  ) -> Iterator[tuple[Ranks, torch.device]]:
    """``(ranks, device)`` of this process, inside the process group of a ``torchrun`` launch.

    The group is created when ``torchrun`` started several processes and nobody created it (``nccl`` on CUDA,
    each rank on ``cuda:LOCAL_RANK``; ``gloo`` on the CPU) and destroyed on exit; a caller's group is used and
    left alone; one process gets ``Ranks()`` and no group. The body's end is a barrier (rank 0's files are
    written when any rank leaves). ``batch_size``: checked first (`check_search_launch`).

    Raises:
        ValueError: ``batch_size`` is not divisible by the number of processes (before any group exists).

    Examples:
        >>> with search_launch("cpu") as (ranks, device):
        ...     ranks.main, device.type
        (True, 'cpu')
    """
    ranks = launch_ranks()
    if batch_size is not None:
        check_batch_split(batch_size, ranks.world)
    where = rank_device(resolve_device(device), ranks)
    with process_group(where, ranks) as ranks:
        yield ranks, where
        barrier(ranks)


def run_search_recipe(parser: argparse.ArgumentParser, argv: list[str] | None,
                      search: Callable[[argparse.Namespace, Ranks, torch.device], dict[str, Any]]) -> dict[str, Any]:
    """A search recipe's ``main``: parse ``argv``, refuse a batch the processes cannot split (a parser error, on
    every rank, before the process group and any work), then ``search(args, ranks, device)`` inside
    `search_launch` (data-parallel under ``torchrun``; every rank returns the result rank 0 writes).

    Examples:
        >>> result = run_search_recipe(build_parser(), ["--epochs", "1"], search)  # doctest: +SKIP
    """
    args = parser.parse_args(argv)
    try:
        check_search_launch(args.batch_size)
    except ValueError as exc:
        parser.error(str(exc))
    with search_launch(args.device) as (ranks, device):
        return search(args, ranks, device)


def add_search_arguments(
    parser: Any, *, epochs: int, weight_decay: float, C: int
) -> None:
    """Add the options shared by the search recipes (method, data, optimizer, latency, checkpoints)."""
    from ...optim import METHODS

    p = parser
    p.add_argument("--method", choices=METHODS, default="rarts", help="search method")
    p.add_argument("--data", default="cifar10", help="cifar10 | cifar100 | fake | path of an ImageFolder tree")
    p.add_argument("--data-root", default=None, help="where torchvision CIFAR files live (cifar10/cifar100)")
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--C", type=int, default=C, help="channels of the first stage / cells")
    p.add_argument("--train-subset", type=int, default=None, help="use K training images (stratified)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.025, help="weight learning rate (cosine decay)")
    p.add_argument("--lr-min", type=float, default=0.001)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=weight_decay)
    p.add_argument("--arch-lr", type=float, default=3e-4, help="Adam learning rate of alpha")
    p.add_argument("--arch-weight-decay", type=float, default=1e-3)
    p.add_argument("--warmup-epochs", type=int, default=0, help="epochs with alpha frozen (weights only)")
    p.add_argument("--lam", type=float, default=1.0, help="RARTS/MiLeNAS lambda")
    p.add_argument("--beta", type=float, default=None, help="RARTS coupling beta (default: optimizer's)")
    p.add_argument("--update", "--mode", dest="update", choices=("exact", "fused"), default="exact",
                   help="RARTS update: exact (Eq. 7) or fused (--mode: the name before 0.2)")
    p.add_argument("--grad-clip", type=float, default=5.0, help="weight gradient clipping (0: off)")
    p.add_argument("--latency-weight", type=float, default=0.0, help="weight of <softmax(alpha), Lat> (ms)")
    p.add_argument("--latency-table", default=None, help="JSON latency table to use (measured if missing)")
    p.add_argument("--latency-batch", type=int, default=1, help="batch size the latency table is measured at")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--json", default=None, help="result JSON (default: <out>/result.json)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--max-steps", type=int, default=None, help="cap steps per epoch (smoke tests)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this epoch (resume later)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def config_from_arguments(args: Any) -> Any:
    """The `SearchConfig` of parsed `add_search_arguments` options."""
    from ...topology.search import SearchConfig

    return SearchConfig(
        method=args.method,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        lr_min=args.lr_min,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        arch_lr=args.arch_lr,
        arch_weight_decay=args.arch_weight_decay,
        warmup_epochs=args.warmup_epochs,
        grad_clip=args.grad_clip if args.grad_clip > 0 else None,
        lam=args.lam,
        beta=args.beta,
        update=args.update,
        latency_weight=args.latency_weight,
        seed=args.seed,
    )


def latency_setup(
    args: Any, net: nn.Module, out: Path, ranks: Ranks | None = None
) -> tuple[Any, tuple[int, int, int, int], Any]:
    """``(table, input_shape, penalty)`` for parsed options: load ``--latency-table`` (measuring missing
    entries on this device) or measure a new one into ``<out>/latency.json``; ``penalty`` is a
    `LatencyPenalty` when ``--latency-weight > 0``. All ``None`` when latency is not asked for.

    With several ``ranks`` only rank 0 measures and writes the table; the others get rank 0's table (and fail
    with it when it cannot).

    Raises:
        RuntimeError: (ranks other than 0) rank 0 could not set the table up; its own error says why.
    """
    from ...topology.latency import LatencyPenalty, LatencyTable

    shape = (int(args.latency_batch), 3, 32, 32)
    if args.latency_weight <= 0 and args.latency_table is None:
        return None, shape, None
    if ranks is None or not ranks.distributed:
        return _measured_latency(args, net, out, shape)
    box: list[Any] = [None, None]
    failed: BaseException | None = None
    if ranks.main:
        try:
            table, _, penalty = _measured_latency(args, net, out, shape)
            box = [table.to_dict(), None]
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            failed, box = exc, [None, f"{type(exc).__name__}: {exc}"]
    dist.broadcast_object_list(box, src=0)
    if failed is not None:
        raise failed
    if box[1] is not None:
        raise RuntimeError(f"rank 0 could not set up the latency table ({box[1]})")
    if ranks.main:
        return table, shape, penalty
    table = LatencyTable.from_dict(box[0])
    weight = args.latency_weight
    penalty = LatencyPenalty(net, table, weight=weight, input_shape=shape) if weight > 0 else None
    return table, shape, penalty


def _measured_latency(
    args: Any, net: nn.Module, out: Path, shape: tuple[int, int, int, int]
) -> tuple[Any, tuple[int, int, int, int], Any]:
    from ...topology.latency import LatencyPenalty, LatencyTable, measure_latency_table

    path = Path(args.latency_table) if args.latency_table else out / "latency.json"
    existing = LatencyTable.load(path) if path.is_file() else None
    table = measure_latency_table(net, shape, table=existing)
    if existing is None or len(table) != len(existing):
        table.save(path)
    penalty = LatencyPenalty(net, table, weight=args.latency_weight, input_shape=shape) if args.latency_weight > 0 else None
    return table, shape, penalty
