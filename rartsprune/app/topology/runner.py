"""Plumbing shared by the topology recipes: device choice, search data, the checkpointed epoch loop.

* `resolve_device` -- ``"auto"`` -> CUDA when available, else CPU.
* `load_search_data` -- load a training set (`rartsprune.app.data.load_dataset`), split it into the
  halves D_t / D_v (`rartsprune.split.split_dataset`), keep in-memory images on the device, and
  yield ``((x_t, t_t), (x_v, t_v))`` device batches per epoch, reshuffled deterministically from
  ``(seed, epoch)`` so a resumed run sees the same batches as an uninterrupted one.
* `run_search` -- run the remaining epochs of a `TopologySearch`, checkpointing after each.

Examples:
    >>> data = load_search_data("fake", subset=128, batch_size=32, device="cpu")  # doctest: +SKIP
    >>> data.steps_per_epoch  # doctest: +SKIP
    2
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ...devices import resolve_device
from ...topology.search import TopologySearch

__all__ = ["resolve_device", "SearchData", "load_search_data", "run_search"]

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

    @property
    def steps_per_epoch(self) -> int:
        """Pairs per epoch (the longer half's batch count; the shorter half is cycled)."""
        return max(len(self.train_t), len(self.train_v)) // self.batch_size

    def pairs(self, epoch: int) -> Iterator[tuple[Batch, Batch]]:
        """Augmented device batch pairs of ``epoch`` (the same for the same ``(seed, epoch)``)."""
        from ...split import epoch_seed, pair_loaders
        from ..data import make_loader, to_device_batch

        # seeded by (seed, epoch): a new order every epoch (a pair_loaders(seed=...) made afresh each epoch would
        # count its epochs from 0 and reseed every epoch alike)
        lt = make_loader(self.train_t, self.batch_size, train=True, seed=epoch_seed(self.seed, epoch, "search t"),
                         num_workers=0, pin_memory=False)
        lv = make_loader(self.train_v, self.batch_size, train=True, seed=epoch_seed(self.seed, epoch, "search v"),
                         num_workers=0, pin_memory=False)
        for bt, bv in pair_loaders(lt, lv):
            yield (
                to_device_batch(bt, self.device, self.augment),
                to_device_batch(bv, self.device, self.augment),
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
) -> SearchData:
    """Load the training split of ``spec`` (``cifar10``, ``cifar100``, ``fake`` or an ImageFolder path),
    keep a ``subset`` (class-stratified, seeded) if asked, split it 50/50 into D_t / D_v (stratified), and
    return a `SearchData`. Batches get the dataset's standard augmentation (crop, flip, normalise).
    """
    from ...split import split_dataset
    from ..data import default_augment, load_dataset, num_classes

    device = torch.device(device)
    ds = load_dataset(spec, "train", root=root, download=download, subset=subset, seed=seed)
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
    return SearchData(train_t, train_v, batch_size, device, augment, seed, num_classes(ds), str(spec))


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
) -> TopologySearch:
    """Run the remaining epochs of ``search`` on ``data``; save ``checkpoint`` after every epoch.

    With ``resume=True`` and an existing checkpoint, the search continues from it (same batches, same
    random numbers as an uninterrupted run). ``on_epoch`` gets each epoch's log entry. ``stop_after``
    ends the run after that epoch (the checkpoint then resumes it).
    """
    from tqdm.auto import tqdm

    ckpt = Path(checkpoint) if checkpoint is not None else None
    if resume:
        if ckpt is None:
            raise ValueError("resume=True needs a checkpoint path")
        if ckpt.is_file():
            search.load(ckpt)
            tqdm.write(f"resumed from {ckpt} after epoch {search.epoch}")
        else:
            tqdm.write(f"no checkpoint at {ckpt}: starting from scratch")
    while not search.done and (stop_after is None or search.epoch < stop_after):
        entry = search.run_epoch(data.pairs(search.epoch), progress=progress, max_steps=max_steps)
        if ckpt is not None:
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
    args: Any, net: nn.Module, out: Path
) -> tuple[Any, tuple[int, int, int, int], Any]:
    """``(table, input_shape, penalty)`` for parsed options: load ``--latency-table`` (measuring missing
    entries on this device) or measure a new one into ``<out>/latency.json``; ``penalty`` is a
    `LatencyPenalty` when ``--latency-weight > 0``. All ``None`` when latency is not asked for."""
    from ...topology.latency import LatencyPenalty, LatencyTable, measure_latency_table

    shape = (int(args.latency_batch), 3, 32, 32)
    if args.latency_weight <= 0 and args.latency_table is None:
        return None, shape, None
    path = Path(args.latency_table) if args.latency_table else out / "latency.json"
    existing = LatencyTable.load(path) if path.is_file() else None
    table = measure_latency_table(net, shape, table=existing)
    if existing is None or len(table) != len(existing):
        table.save(path)
    penalty = LatencyPenalty(net, table, weight=args.latency_weight, input_shape=shape) if args.latency_weight > 0 else None
    return table, shape, penalty
