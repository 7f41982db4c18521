"""Batch-level augmentation and normalisation on the batch's device, and fast uint8 data loaders.

Loaders yield uint8 ``N x 3 x H x W`` images and int64 labels (4x less host-to-device traffic than
float32); `to_device_batch` copies a batch to the device (non-blocking from pinned memory) and runs
the augmentation there: random crop with zero padding, horizontal flip, normalisation to float, and
DARTS-style cutout. Every random module draws its parameters from an optional ``torch.Generator``
(on any device; the few random numbers are moved to the batch's device), so results are reproducible and
identical on CPU and GPU for the same generator state.

Typical GPU training loop::

    train = load_dataset("../shared/data/cifar10", "train")
    loader = make_loader(train, 256, train=True)
    augment = default_augment(train, train=True, cutout=True).to("cuda")
    for batch in loader:
        x, y = to_device_batch(batch, "cuda", augment)

or, fastest for in-memory data, keep the whole set on the GPU: ``make_loader(train.to("cuda"), 256)``.

Examples:
    >>> import torch
    >>> aug = cifar_augment(train=True, generator=torch.Generator().manual_seed(0))
    >>> out = aug(torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8))
    >>> out.dtype, out.shape
    (torch.float32, torch.Size([8, 3, 32, 32]))
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    RandomSampler,
    Sampler,
    SequentialSampler,
    Subset,
)

from .constants import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from .datasets import InMemoryImageDataset

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "Normalize",
    "RandomCropPad",
    "RandomHorizontalFlip",
    "Cutout",
    "BatchAugment",
    "cifar_augment",
    "default_augment",
    "make_loader",
    "to_device_batch",
    "DeviceLoader",
    "BatchShard",
    "Shard",
]

#: ``(index, count)``: a batch is part ``index`` of ``count`` equal parts of a larger batch (one rank's share
#: of a global batch split across processes; see `BatchShard` and the ``shard`` argument of the random
#: modules).
Shard = tuple[int, int]



def _check_shard(shard: Shard | None) -> None:
    if shard is None:
        return
    ok = isinstance(shard, tuple) and len(shard) == 2 and all(
        isinstance(v, int) and not isinstance(v, bool) for v in shard)
    if not ok or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"shard must be (index, count) with 0 <= index < count, got {shard!r}")


def _check_batch(x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(
            f"expected an N x C x H x W image batch, got {getattr(x, 'shape', type(x).__name__)}"
        )


class _Random(nn.Module):
    """Base of the random modules: draws from ``generator`` (if any) and moves the draws to the batch."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.generator = generator

    def _gen(self, generator: torch.Generator | None) -> torch.Generator | None:
        return generator if generator is not None else self.generator

    @staticmethod
    def _part(draws: torch.Tensor, n: int, shard: Shard | None) -> torch.Tensor:
        """The rows of ``shard``'s part among ``draws`` made for the whole batch (all without a shard)."""
        if shard is None:
            return draws
        return draws[shard[0] * n:(shard[0] + 1) * n]

    @classmethod
    def _rand(
        cls, n: int, device: torch.device, g: torch.Generator | None, shard: Shard | None = None
    ) -> torch.Tensor:
        total = n if shard is None else n * shard[1]
        if g is None:
            return cls._part(torch.rand(total, device=device), n, shard)
        drawn = torch.rand(total, generator=g, device=g.device)
        return cls._part(drawn, n, shard).to(device, non_blocking=True)

    @classmethod
    def _randint(
        cls, high: int, shape: tuple[int, ...], device: torch.device, g: torch.Generator | None,
        shard: Shard | None = None,
    ) -> torch.Tensor:
        n = shape[0]
        full = shape if shard is None else (n * shard[1], *shape[1:])
        if g is None:
            return cls._part(torch.randint(0, high, full, device=device), n, shard)
        drawn = torch.randint(0, high, full, generator=g, device=g.device)
        return cls._part(drawn, n, shard).to(device, non_blocking=True)


class Normalize(nn.Module):
    """uint8 (0..255) or float (0..1) images -> ``(x / 255 - mean) / std`` as ``dtype``.

    Examples:
        >>> import torch
        >>> out = Normalize((0.5,), (0.5,))(torch.tensor([[[[0, 255]]]], dtype=torch.uint8))
        >>> [round(v, 5) for v in out.flatten().tolist()]
        [-1.0, 1.0]
    """

    def __init__(
        self, mean: Sequence[float], std: Sequence[float], dtype: torch.dtype = torch.float32
    ) -> None:
        super().__init__()
        if len(mean) != len(std) or not len(mean):
            raise ValueError("mean and std must be non-empty and of equal length")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {tuple(std)}")
        if not dtype.is_floating_point:
            raise TypeError(f"dtype must be a floating type, got {dtype}")
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.dtype = dtype
        # float64 constants, cast per call: x * scale + shift with scale = 1/(255 std), shift = -mean/std.
        self.register_buffer(
            "_scale",
            torch.tensor([1.0 / s for s in self.std], dtype=torch.float64).view(-1, 1, 1),
            persistent=False,
        )
        self.register_buffer(
            "_shift",
            torch.tensor([-m / s for m, s in zip(self.mean, self.std)], dtype=torch.float64).view(-1, 1, 1),
            persistent=False,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_batch(x)
        if x.shape[1] != len(self.mean):
            raise ValueError(f"batch has {x.shape[1]} channels but Normalize has {len(self.mean)}")
        if x.dtype != torch.uint8 and not x.is_floating_point():
            raise TypeError(f"Normalize expects uint8 or floating images, got {x.dtype}")
        scale = self._scale / 255.0 if x.dtype == torch.uint8 else self._scale
        scale = scale.to(x.device, self.dtype)
        shift = self._shift.to(x.device, self.dtype)
        return torch.addcmul(shift, x.to(self.dtype), scale)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}, dtype={self.dtype}"


class RandomCropPad(_Random):
    """Per-sample random crop of the original size from the image zero-padded by ``padding`` pixels.

    Same as torchvision's ``RandomCrop(size, padding=4)`` applied image by image (fill value ``fill``).

    Examples:
        >>> import torch
        >>> x = torch.ones(2, 3, 8, 8, dtype=torch.uint8)
        >>> y = RandomCropPad(4, generator=torch.Generator().manual_seed(0))(x)
        >>> y.shape, y.dtype
        (torch.Size([2, 3, 8, 8]), torch.uint8)
    """

    def __init__(
        self, padding: int = 4, fill: float = 0, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(generator)
        if isinstance(padding, bool) or not isinstance(padding, int) or padding < 0:
            raise ValueError(f"padding must be a non-negative int, got {padding!r}")
        self.padding = padding
        self.fill = fill

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, shard: Shard | None = None
    ) -> torch.Tensor:
        """Crop every image of ``x``; ``shard=(index, count)``: ``x`` is that part of a batch ``count`` times
        larger, the offsets are drawn for the whole batch and this part's used (see `BatchAugment`)."""
        _check_batch(x)
        _check_shard(shard)
        p = self.padding
        if p == 0:
            return x
        n, _, h, w = x.shape
        offsets = self._randint(2 * p + 1, (n, 2), x.device, self._gen(generator), shard)
        padded = F.pad(x, (p, p, p, p), value=self.fill)
        wp = w + 2 * p
        # one gather over the flattened padded image: pixel (i, j) of the crop at offset (dy, dx) is
        # padded pixel (i + dy) * wp + (j + dx)
        base = (torch.arange(h, device=x.device).view(h, 1) * wp + torch.arange(w, device=x.device)).view(1, 1, h * w)
        shift = (offsets[:, 0] * wp + offsets[:, 1]).view(n, 1, 1)
        index = (base + shift).expand(n, x.shape[1], h * w)
        return padded.flatten(2).gather(2, index).view(n, x.shape[1], h, w)

    def extra_repr(self) -> str:
        return f"padding={self.padding}, fill={self.fill}"


class RandomHorizontalFlip(_Random):
    """Flip each image left-right with probability ``p``.

    Examples:
        >>> import torch
        >>> x = torch.arange(4.).view(1, 1, 1, 4)
        >>> RandomHorizontalFlip(p=1.0)(x)
        tensor([[[[3., 2., 1., 0.]]]])
    """

    def __init__(self, p: float = 0.5, *, generator: torch.Generator | None = None) -> None:
        super().__init__(generator)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.p = p

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, shard: Shard | None = None
    ) -> torch.Tensor:
        """Flip images of ``x``; ``shard``: as for `RandomCropPad`."""
        _check_batch(x)
        _check_shard(shard)
        flip = self._rand(x.shape[0], x.device, self._gen(generator), shard) < self.p
        return torch.where(flip.view(-1, 1, 1, 1), x.flip(3), x)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class Cutout(_Random):
    """DARTS cutout: zero a ``length x length`` square (clipped at the border) centred uniformly at random.

    Applied after normalisation in DARTS, so the square becomes ``fill`` (0.0 = the mean colour).
    Each image is cut with probability ``p`` (DARTS: always).

    Examples:
        >>> import torch
        >>> y = Cutout(16, generator=torch.Generator().manual_seed(0))(torch.ones(2, 3, 32, 32))
        >>> bool((y == 0).any()) and bool((y == 1).any())
        True
    """

    def __init__(
        self, length: int = 16, p: float = 1.0, fill: float = 0.0, *, generator: torch.Generator | None = None
    ) -> None:
        super().__init__(generator)
        if isinstance(length, bool) or not isinstance(length, int) or length < 1:
            raise ValueError(f"length must be a positive int, got {length!r}")
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"p must be in [0, 1], got {p}")
        self.length = length
        self.p = p
        self.fill = fill

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, shard: Shard | None = None
    ) -> torch.Tensor:
        """Cut a square out of the images of ``x``; ``shard``: as for `RandomCropPad`."""
        _check_batch(x)
        _check_shard(shard)
        n, _, h, w = x.shape
        g = self._gen(generator)
        centres = torch.cat(
            [self._randint(h, (n, 1), x.device, g, shard), self._randint(w, (n, 1), x.device, g, shard)],
            dim=1,
        )
        apply = self._rand(n, x.device, g, shard) < self.p
        half = self.length // 2
        y1, y2 = (centres[:, 0] - half).clamp(0, h), (centres[:, 0] + half).clamp(0, h)
        x1, x2 = (centres[:, 1] - half).clamp(0, w), (centres[:, 1] + half).clamp(0, w)
        r = torch.arange(h, device=x.device).view(1, h, 1)
        c = torch.arange(w, device=x.device).view(1, 1, w)
        box = (
            (r >= y1.view(-1, 1, 1))
            & (r < y2.view(-1, 1, 1))
            & (c >= x1.view(-1, 1, 1))
            & (c < x2.view(-1, 1, 1))
        )
        box &= apply.view(-1, 1, 1)
        return x.masked_fill(box.unsqueeze(1), self.fill)

    def extra_repr(self) -> str:
        return f"length={self.length}, p={self.p}"


class BatchAugment(nn.Module):
    """uint8 batch -> [crop, flip] (on uint8) -> normalise -> [cutout] (on float), in that order.

    ``forward(x, generator=None, shard=None)``: a generator given here overrides the modules' own.
    ``shard=(index, count)`` says that ``x`` is part ``index`` of ``count`` equal parts of one batch (a rank's
    share of a global batch under DDP, `BatchShard`): the random parameters are drawn for the whole batch and
    this part's rows used, so the parts, each augmented in its own process from the same random state, are
    augmented exactly as the whole batch would be in one process.

    Examples:
        >>> import torch
        >>> aug = BatchAugment(Normalize((0.5,) * 3, (0.5,) * 3), crop=RandomCropPad(4), flip=RandomHorizontalFlip())
        >>> aug(torch.zeros(2, 3, 32, 32, dtype=torch.uint8)).min().item()
        -1.0
        >>> x = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8)
        >>> whole = aug(x, torch.Generator().manual_seed(0))
        >>> second = aug(x[2:], torch.Generator().manual_seed(0), shard=(1, 2))
        >>> torch.equal(whole[2:], second)
        True
    """

    def __init__(
        self,
        normalize: Normalize,
        *,
        crop: RandomCropPad | None = None,
        flip: RandomHorizontalFlip | None = None,
        cutout: Cutout | None = None,
    ) -> None:
        super().__init__()
        self.crop = crop
        self.flip = flip
        self.normalize = normalize
        self.cutout = cutout

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None, shard: Shard | None = None
    ) -> torch.Tensor:
        _check_shard(shard)
        if self.crop is not None:
            x = self.crop(x, generator, shard)
        if self.flip is not None:
            x = self.flip(x, generator, shard)
        x = self.normalize(x)
        if self.cutout is not None:
            x = self.cutout(x, generator, shard)
        return x


def cifar_augment(
    train: bool = True,
    *,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    padding: int = 4,
    cutout: bool = False,
    cutout_length: int = 16,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> BatchAugment:
    """Standard CIFAR pipeline: train = crop(pad 4) + flip + normalise (+ cutout); test = normalise.

    Examples:
        >>> aug = cifar_augment(train=False, mean=CIFAR100_MEAN, std=CIFAR100_STD)
        >>> aug.crop is None and aug.cutout is None
        True
    """
    norm = Normalize(mean, std, dtype)
    if not train:
        return BatchAugment(norm)
    return BatchAugment(
        norm,
        crop=RandomCropPad(padding, generator=generator),
        flip=RandomHorizontalFlip(generator=generator),
        cutout=Cutout(cutout_length, generator=generator) if cutout else None,
    )


def default_augment(
    dataset: Dataset,
    train: bool = True,
    *,
    cutout: bool = False,
    cutout_length: int = 16,
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> BatchAugment:
    """The batch augmentation that fits a dataset from `rartsprune.app.data.load_dataset`.

    Uses the dataset's ``mean``/``std``; when the dataset already crops and flips per sample
    (``loader_augments``, large lazy images) only normalisation (and cutout, if asked) is done here.

    Examples:
        >>> from rartsprune.app.data import load_dataset
        >>> default_augment(load_dataset("fake"), train=True).crop.padding
        4
    """
    mean = getattr(dataset, "mean", CIFAR10_MEAN)
    std = getattr(dataset, "std", CIFAR10_STD)
    if getattr(dataset, "loader_augments", False) or not train:
        cut = Cutout(cutout_length, generator=generator) if (train and cutout) else None
        return BatchAugment(Normalize(mean, std, dtype), cutout=cut)
    return cifar_augment(
        True, mean=mean, std=std, cutout=cutout, cutout_length=cutout_length, generator=generator, dtype=dtype
    )


def _collate_uint8(batch: Any) -> Any:
    return batch


class BatchShard(Sampler[list[int]]):
    """Part ``rank`` of ``num_replicas`` equal parts of every batch of ``batches`` (a batch sampler).

    Each process of a data-parallel run takes its slice of the same sequence of global batches, so the ranks'
    shards of a batch are disjoint, together they are the batch, and an epoch has as many steps on every rank
    as ``batches`` has batches (what DDP needs). Every batch must split evenly (a batch size divisible by
    ``num_replicas``, the last partial batch dropped).

    Raises:
        ValueError: ``rank`` not in ``[0, num_replicas)``; (while iterating) a batch that does not split
            evenly.

    Examples:
        >>> from torch.utils.data import BatchSampler, SequentialSampler
        >>> batches = BatchSampler(SequentialSampler(range(8)), 4, drop_last=True)
        >>> list(BatchShard(batches, 2, 0)), list(BatchShard(batches, 2, 1))
        ([[0, 1], [4, 5]], [[2, 3], [6, 7]])
    """

    def __init__(self, batches: Any, num_replicas: int, rank: int) -> None:
        for name, value in (("num_replicas", num_replicas), ("rank", rank)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} must be an int, got {value!r}")
        if num_replicas < 1 or not 0 <= rank < num_replicas:
            raise ValueError(f"rank must be in [0, num_replicas={num_replicas}), got {rank!r}")
        self.batches, self.num_replicas, self.rank = batches, num_replicas, rank

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            batch = list(batch)
            if len(batch) % self.num_replicas:
                raise ValueError(f"a batch of {len(batch)} items does not split into {self.num_replicas} "
                                 "equal parts (use a divisible batch size and drop the last partial batch)")
            n = len(batch) // self.num_replicas
            yield batch[self.rank * n:(self.rank + 1) * n]

    def __len__(self) -> int:
        return len(self.batches)


def _reseed_worker(rank: int, worker_id: int) -> None:
    """Loader workers of rank ``rank``: random streams other than those of the other ranks' workers (the
    loaders of all ranks share their seed, so their workers would otherwise draw the same per-sample
    crops)."""
    torch.manual_seed((torch.initial_seed() + 1_000_003 * rank) % 2**63)


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    train: bool = True,
    shuffle: bool | None = None,
    drop_last: bool | None = None,
    sampler: Sampler[int] | None = None,
    seed: int = 0,
    num_workers: int | None = None,
    pin_memory: bool | None = None,
    persistent_workers: bool | None = None,
    num_replicas: int = 1,
    rank: int = 0,
) -> DataLoader:
    """DataLoader yielding ``(uint8 images N x 3 x H x W, int64 labels)``.

    In-memory datasets are sliced a whole batch at a time (no workers, no per-image collation); if the
    dataset lives on a GPU the batches are already there. A ``Subset`` of an in-memory dataset (e.g. a
    half from ``split_dataset``) is copied into its own in-memory dataset first. Other datasets use
    worker processes.

    Args:
        train: default ``shuffle=True, drop_last=True`` (else ``False, False``).
        sampler: e.g. a ``DistributedSampler``; replaces shuffling.
        seed: seed of the shuffling generator (the order differs per epoch, reproducibly).
        num_workers: for lazy datasets; default ``min(8, cpu count)``.
        pin_memory: default: CUDA is available and the data is on the CPU.
        num_replicas, rank: data-parallel sharding (`BatchShard`): ``batch_size`` is the global batch, this
            loader yields rank ``rank``'s ``batch_size / num_replicas`` items of each global batch of the
            seeded order (the batches one process would see with ``num_replicas=1``); needs ``drop_last`` and
            a ``batch_size`` divisible by ``num_replicas``. Augment the shard with ``to_device_batch(...,
            shard=(rank, num_replicas))`` to augment it as the whole batch would be.

    Raises:
        ValueError: a bad ``batch_size``, ``sampler`` with ``shuffle=True``, or a sharding that does not split
            every batch evenly.

    Examples:
        >>> from rartsprune.app.data import load_dataset
        >>> images, labels = next(iter(make_loader(load_dataset("fake"), 64)))
        >>> images.dtype, images.shape, labels.dtype
        (torch.uint8, torch.Size([64, 3, 32, 32]), torch.int64)
        >>> images, labels = next(iter(make_loader(load_dataset("fake"), 64, num_replicas=4, rank=1)))
        >>> images.shape[0]
        16
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive int, got {num_replicas!r}")
    if sampler is not None and shuffle:
        raise ValueError("pass either a sampler or shuffle=True, not both (the sampler decides the order)")
    shuffle = (train and sampler is None) if shuffle is None else shuffle
    drop_last = train if drop_last is None else drop_last
    if num_replicas > 1 and (batch_size % num_replicas or not drop_last):
        raise ValueError(f"a loader sharded over {num_replicas} ranks needs a batch_size divisible by "
                         f"{num_replicas} (got {batch_size}) and drop_last=True (got {drop_last}): every "
                         "rank takes an equal part of every batch")
    generator = torch.Generator().manual_seed(int(seed))
    on_cpu = getattr(dataset, "device", torch.device("cpu")).type == "cpu"
    pin = (torch.cuda.is_available() and on_cpu) if pin_memory is None else pin_memory

    if isinstance(dataset, Subset) and isinstance(dataset.dataset, InMemoryImageDataset):
        # e.g. a half from split_dataset: copy the rows out so batches are still sliced in one go
        dataset = dataset.dataset.subset(list(dataset.indices))
    if isinstance(dataset, InMemoryImageDataset):
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        batches: Sampler[list[int]] = BatchSampler(sampler, batch_size, drop_last)
        if num_replicas > 1:
            batches = BatchShard(batches, num_replicas, rank)
        # batch_size=None: the dataset is indexed with a whole list of indices and returns a batch.
        return DataLoader(
            dataset,
            batch_size=None,
            sampler=batches,
            num_workers=0,
            pin_memory=pin,
            collate_fn=_collate_uint8,
        )
    workers = min(8, os.cpu_count() or 1) if num_workers is None else num_workers
    persistent = workers > 0 if persistent_workers is None else persistent_workers
    if num_replicas > 1:
        order = sampler if sampler is not None else (
            RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset))
        return DataLoader(
            dataset,
            batch_sampler=BatchShard(BatchSampler(order, batch_size, drop_last), num_replicas, rank),
            num_workers=workers,
            pin_memory=pin,
            persistent_workers=persistent,
            generator=generator,
            worker_init_fn=partial(_reseed_worker, rank),
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        pin_memory=pin,
        persistent_workers=persistent,
        generator=generator,
    )


def to_device_batch(
    batch: Sequence[torch.Tensor],
    device: torch.device | str,
    augment: nn.Module | None = None,
    *,
    non_blocking: bool = True,
    memory_format: torch.memory_format | None = None,
    shard: Shard | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move ``(images, labels)`` to ``device`` and augment / normalise the images there.

    Without ``augment`` the images are only converted to float in [0, 1]. ``shard=(rank, world)``: the batch
    is that rank's part of a global batch (``make_loader(..., num_replicas=world, rank=rank)``), passed on to
    ``augment`` (a `BatchAugment`), which augments it as the whole batch would be.

    Examples:
        >>> import torch
        >>> x, y = to_device_batch((torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, 1])), "cpu")
        >>> x.dtype, y.tolist()
        (torch.float32, [0, 1])
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise TypeError("batch must be an (images, labels) pair")
    images, labels = batch
    images = images.to(device, non_blocking=non_blocking)
    labels = labels.to(device, non_blocking=non_blocking)
    if augment is not None:
        images = augment(images) if shard is None else augment(images, shard=shard)
    elif images.dtype == torch.uint8:
        images = images.float().div_(255.0)
    if memory_format is not None:
        images = images.contiguous(memory_format=memory_format)
    return images, labels


class DeviceLoader:
    """Iterate a uint8 loader as augmented device batches, copying the next batch while this one runs.

    Examples:
        >>> from rartsprune.app.data import load_dataset
        >>> ds = load_dataset("fake", "test")
        >>> loader = DeviceLoader(make_loader(ds, 50, train=False), "cpu", default_augment(ds, train=False))
        >>> len(loader), next(iter(loader))[0].dtype
        (4, torch.float32)
    """

    def __init__(
        self,
        loader: DataLoader,
        device: torch.device | str,
        augment: nn.Module | None = None,
        *,
        memory_format: torch.memory_format | None = None,
    ) -> None:
        self.loader = loader
        self.device = torch.device(device)
        self.augment = augment
        self.memory_format = memory_format

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        pending: tuple[torch.Tensor, torch.Tensor] | None = None
        for images, labels in self.loader:
            moved = (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))
            if pending is not None:
                yield to_device_batch(pending, self.device, self.augment, memory_format=self.memory_format)
            pending = moved
        if pending is not None:
            yield to_device_batch(pending, self.device, self.augment, memory_format=self.memory_format)
