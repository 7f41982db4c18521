"""Splitting a training set into the two halves D_t and D_v of a search, and iterating them in pairs.

* `split_dataset` — two non-overlapping `torch.utils.data.Subset` halves of any map-style
  dataset, seeded, optionally class-stratified (`stratified_indices`, also the app's subset sampler).
* `PairedLoader` — iterate two loaders together: each item is ``(batch_t, batch_v)``; an epoch lasts
  as long as the longer loader, the shorter one is restarted (cycled) when exhausted; ``set_epoch(e)``
  reshuffles deterministically.
* `split_loaders` — both in one call, the usual entry point of a search recipe.

Examples:
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> ds = TensorDataset(torch.arange(100).float().unsqueeze(1), torch.arange(100) % 10)
    >>> pairs = split_loaders(ds, batch_size=10, seed=0)
    >>> len(pairs)
    5
    >>> (x_t, t_t), (x_v, t_v) = next(iter(pairs))
    >>> x_t.shape, x_v.shape
    (torch.Size([10, 1]), torch.Size([10, 1]))
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

__all__ = ["split_dataset", "stratified_indices", "epoch_seed", "dataset_targets", "PairedLoader", "pair_loaders", "split_loaders"]


def _check_map_style(dataset: Any) -> int:
    if not (hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__")):
        raise TypeError(
            f"dataset must be map-style (have __getitem__ and __len__), got {type(dataset).__name__}"
        )
    return len(dataset)


def dataset_targets(dataset: Any) -> list[int]:
    """Class labels of a map-style dataset, as ints.

    Uses ``dataset.targets`` (torchvision datasets, ImageFolder), follows `Subset` chains, and
    otherwise reads ``dataset[i][1]`` for every item (this loads every sample; pass ``targets=`` to
    `split_dataset` to avoid it).

    Examples:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> dataset_targets(TensorDataset(torch.zeros(3, 1), torch.tensor([2, 0, 1])))
        [2, 0, 1]
    """
    n = _check_map_style(dataset)
    if isinstance(dataset, Subset):
        base = dataset_targets(dataset.dataset)
        return [base[int(i)] for i in dataset.indices]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        targets = [dataset[i][1] for i in range(n)]
    out = torch.as_tensor(targets).reshape(-1).tolist()
    if len(out) != n:
        raise ValueError(f"dataset.targets has {len(out)} entries but the dataset has {n} items")
    return [int(t) for t in out]


def stratified_indices(targets: Sequence[int] | torch.Tensor, k: int, *, seed: int = 0) -> torch.Tensor:
    """Sorted indices of a seeded, class-stratified sample of ``k`` items (the one sampler of the project: the
    stratified half of `split_dataset` and the app's class-stratified subsets).

    Each class gets ``k * n_c / N`` items, rounded by largest remainder (ties to the lower class index),
    drawn uniformly without replacement inside the class (one generator seeded with ``seed``, classes in
    ascending order).

    Raises:
        TypeError: ``k`` is not an int.
        ValueError: ``k`` is not between 1 and the number of items.

    Examples:
        >>> idx = stratified_indices([0, 0, 0, 0, 1, 1, 1, 1], 4, seed=0)
        >>> len(idx), sorted(int(i) // 4 for i in idx)
        (4, [0, 0, 1, 1])
    """
    t = torch.as_tensor(targets, dtype=torch.int64).cpu().reshape(-1)
    n = len(t)
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"subset must be an int, got {type(k).__name__}")
    if not 1 <= k <= n:
        raise ValueError(f"subset={k} must be between 1 and the dataset size {n}")
    classes, counts = torch.unique(t, return_counts=True)
    exact = counts.double() * k / n
    quota = exact.floor().long()
    remainder = exact - quota
    short = k - int(quota.sum())
    if short:
        order = sorted(range(len(classes)), key=lambda i: (-float(remainder[i]), i))
        for i in order[:short]:
            quota[i] += 1
    g = torch.Generator().manual_seed(int(seed))
    picked = []
    for c, q in zip(classes.tolist(), quota.tolist()):
        members = (t == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=g)[:q]])
    return torch.cat(picked).sort().values


def split_dataset(
    dataset: Dataset,
    fraction: float = 0.5,
    *,
    seed: int = 0,
    stratify: bool = False,
    targets: Sequence[int] | torch.Tensor | None = None,
) -> tuple[Subset, Subset]:
    """Split ``dataset`` into two non-overlapping halves ``(D_t, D_v)``.

    Args:
        dataset: any map-style dataset.
        fraction: share of the items in the first half (``floor(fraction * len)`` items; default 0.5).
        seed: seed of the shuffle (the same seed gives the same split).
        stratify: keep class proportions: the first half is `stratified_indices` of ``floor(fraction * len)``
            items (each class its share, rounded by largest remainder).
        targets: class labels for ``stratify`` (default: `dataset_targets`).

    Returns:
        Two `torch.utils.data.Subset` views with sorted indices (their union is the dataset).

    Raises:
        TypeError: the dataset is not map-style.
        ValueError: ``fraction`` not in (0, 1), a half would be empty, or ``targets`` has the wrong length.

    Examples:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.arange(10), torch.arange(10) % 2)
        >>> d_t, d_v = split_dataset(ds, seed=1, stratify=True)
        >>> len(d_t), len(d_v), sorted(set(d_t.indices) | set(d_v.indices)) == list(range(10))
        (5, 5, True)
    """
    n = _check_map_style(dataset)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be a number in (0, 1), got {fraction!r}")
    n_first = int(math.floor(fraction * n))
    if n_first < 1 or n - n_first < 1:
        raise ValueError(f"cannot split a dataset of {n} items with fraction {fraction}: a half would be empty")
    if not stratify:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
        first = sorted(perm[:n_first])
    else:
        labels = torch.as_tensor(targets).reshape(-1) if targets is not None else torch.as_tensor(dataset_targets(dataset))
        if len(labels) != n:
            raise ValueError(f"targets has {len(labels)} entries but the dataset has {n} items")
        first = stratified_indices(labels, n_first, seed=seed).tolist()
    chosen = set(first)
    second = [i for i in range(n) if i not in chosen]
    return Subset(dataset, first), Subset(dataset, second)


def epoch_seed(seed: int, epoch: int, stream: int | str = 0) -> int:
    """The seed of one stream of random draws (a loader's shuffle, a split, ...) in one epoch of a run seeded
    ``seed`` — the one rule of the project (`PairedLoader`, the job runner, the topology runner, the recipes).

    Different ``(seed, epoch, stream)`` give unrelated seeds, the same ones the same seed in every process and
    Python version (BLAKE2b of the three, not Python's ``hash``), so a resumed run draws what an uninterrupted
    one would. ``stream`` names what the draw is for (e.g. ``"finetune"``, or 0 / 1 for the two halves).

    Examples:
        >>> epoch_seed(0, 3, "finetune") == epoch_seed(0, 3, "finetune") != epoch_seed(0, 4, "finetune")
        True
        >>> 0 <= epoch_seed(1, 0) < 2 ** 63
        True
    """
    digest = hashlib.blake2b(f"{int(seed)}:{int(epoch)}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


class PairedLoader:
    """Iterate two loaders in lock step, yielding ``(batch_t, batch_v)``.

    An epoch has ``len(self) = max(len(loader_t), len(loader_v))`` pairs; the shorter loader is restarted
    whenever it runs out. At the start of every epoch the samplers' ``set_epoch(epoch)`` (e.g.
    `torch.utils.data.DistributedSampler`) is called. The loaders' own ``generator`` is left alone by default
    (``seed=None``): a caller who seeded it decides the order. With ``seed=`` an int, the loaders' generators
    (when they have one) are reseeded from ``(seed, epoch)`` every epoch (`split_loaders` does this with the
    loaders it builds), so a resumed run sees the same batches as an uninterrupted one. The epoch is the one
    given to `set_epoch`, else it counts iterations (0, 1, 2, ...).

    Examples:
        >>> import torch
        >>> from torch.utils.data import DataLoader
        >>> pairs = PairedLoader(DataLoader(range(6), batch_size=2), DataLoader(range(2), batch_size=2))
        >>> [(t.tolist(), v.tolist()) for t, v in pairs]
        [([0, 1], [0, 1]), ([2, 3], [0, 1]), ([4, 5], [0, 1])]
    """

    def __init__(self, loader_t: Any, loader_v: Any, *, seed: int | None = None) -> None:
        for name, loader in (("loader_t", loader_t), ("loader_v", loader_v)):
            if not hasattr(loader, "__iter__") or not hasattr(loader, "__len__"):
                raise TypeError(f"{name} must be an iterable with len() (e.g. a DataLoader)")
            if len(loader) == 0:
                raise ValueError(f"{name} yields no batches (is the half smaller than the batch size?)")
        self.loader_t = loader_t
        self.loader_v = loader_v
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None (leave the loaders' generators alone), got {seed!r}")
        self.seed = seed
        self._epoch = 0

    def __len__(self) -> int:
        return max(len(self.loader_t), len(self.loader_v))

    @property
    def epoch(self) -> int:
        """The epoch the next iteration will use."""
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Use ``epoch`` for the next iteration (and count on from it)."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"epoch must be a non-negative int, got {epoch!r}")
        self._epoch = epoch

    def _prepare(self, loader: Any, epoch: int, which: int) -> None:
        gen = getattr(loader, "generator", None)
        if self.seed is not None and isinstance(gen, torch.Generator):
            gen.manual_seed(epoch_seed(self.seed, epoch, which))
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[tuple[Any, Any]]:
        epoch = self._epoch
        self._epoch = epoch + 1
        self._prepare(self.loader_t, epoch, 0)
        self._prepare(self.loader_v, epoch, 1)
        return self._pairs(len(self))

    def _pairs(self, n: int) -> Iterator[tuple[Any, Any]]:
        it_t, it_v = iter(self.loader_t), iter(self.loader_v)
        for _ in range(n):
            try:
                b_t = next(it_t)
            except StopIteration:
                it_t = iter(self.loader_t)
                b_t = next(it_t)
            try:
                b_v = next(it_v)
            except StopIteration:
                it_v = iter(self.loader_v)
                b_v = next(it_v)
            yield b_t, b_v


def pair_loaders(loader_t: Any, loader_v: Any, *, seed: int | None = None) -> PairedLoader:
    """``PairedLoader(loader_t, loader_v, seed=seed)``: pair two loaders the caller built (their own shuffling
    generators decide the order unless ``seed`` is given)."""
    return PairedLoader(loader_t, loader_v, seed=seed)


def split_loaders(
    train_set: Dataset,
    batch_size: int = 64,
    *,
    fraction: float = 0.5,
    seed: int = 0,
    stratify: bool = False,
    num_workers: int = 0,
    drop_last: bool = True,
    shuffle: bool = True,
    targets: Sequence[int] | torch.Tensor | None = None,
    num_replicas: int | None = None,
    rank: int | None = None,
    **loader_kwargs: Any,
) -> PairedLoader:
    """Split ``train_set`` with `split_dataset` and return a `PairedLoader` over the halves.

    Iterating it yields ``((x_t, t_t), (x_v, t_v))`` pairs for one epoch (epoch length = the longer half's
    number of batches, the shorter half cycled); ``len()`` is that length; ``set_epoch(e)`` reshuffles
    deterministically. The halves are available as ``.halves``.

    Args:
        train_set: a map-style dataset.
        batch_size: per-loader (per-rank under DDP) batch size.
        fraction, seed, stratify, targets: passed to `split_dataset` (``seed`` also seeds shuffling).
        num_workers, drop_last, shuffle, **loader_kwargs: passed to both `DataLoader`.
        num_replicas, rank: give both to shard each half across DDP ranks with a
            `torch.utils.data.DistributedSampler` (seeded with ``seed``, epoch from ``set_epoch``).

    Raises:
        ValueError: bad ``batch_size``, a half with fewer items than ``batch_size`` while ``drop_last``, or
            only one of ``num_replicas``/``rank``.

    Examples:
        >>> import torch
        >>> from torch.utils.data import TensorDataset
        >>> ds = TensorDataset(torch.randn(64, 3), torch.arange(64) % 4)
        >>> pairs = split_loaders(ds, batch_size=8, fraction=0.25, stratify=True)
        >>> len(pairs), [len(h) for h in pairs.halves]
        (6, [16, 48])
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if (num_replicas is None) != (rank is None):
        raise ValueError("give both num_replicas and rank (DDP sharding) or neither")
    for key in ("sampler", "batch_sampler", "generator"):
        if key in loader_kwargs:
            raise ValueError(f"split_loaders builds its own {key}; use pair_loaders() for custom loaders")
    halves = split_dataset(train_set, fraction, seed=seed, stratify=stratify, targets=targets)
    loaders = []
    for name, half in zip(("D_t", "D_v"), halves):
        per_rank = len(half) // num_replicas if num_replicas else len(half)
        if drop_last and per_rank < batch_size:
            raise ValueError(
                f"{name} has {per_rank} items per loader, fewer than batch_size={batch_size} with drop_last=True"
            )
        gen = torch.Generator()
        sampler = None
        if num_replicas is not None:
            sampler = DistributedSampler(half, num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                                         seed=seed, drop_last=drop_last)
        loaders.append(DataLoader(
            half, batch_size=batch_size, shuffle=shuffle if sampler is None else False, sampler=sampler,
            num_workers=num_workers, drop_last=drop_last, generator=gen, **loader_kwargs,
        ))
    paired = PairedLoader(loaders[0], loaders[1], seed=seed)
    paired.halves = halves  # type: ignore[attr-defined]
    return paired
