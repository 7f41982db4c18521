"""Datasets, batch augmentation and loaders.

The D_t / D_v halves of a search (``split_dataset`` / ``split_loaders``) are the core's: `rartsprune.split`.

Examples:
    >>> from rartsprune.app.data import load_dataset, make_loader, default_augment, to_device_batch
    >>> ds = load_dataset("fake", subset=64)
    >>> x, y = to_device_batch(next(iter(make_loader(ds, 32))), "cpu", default_augment(ds))
    >>> tuple(x.shape), x.dtype
    ((32, 3, 32, 32), torch.float32)
"""

from __future__ import annotations

from .augment import (
    BatchAugment,
    BatchShard,
    Cutout,
    DeviceLoader,
    Normalize,
    RandomCropPad,
    RandomHorizontalFlip,
    cifar_augment,
    default_augment,
    make_loader,
    to_device_batch,
)
from .constants import CIFAR10_MEAN, CIFAR10_STD, CIFAR100_MEAN, CIFAR100_STD, IMAGENET_MEAN, IMAGENET_STD
from .datasets import (
    CIFAR10_CLASSES,
    ClassSubset,
    InMemoryImageDataset,
    LazyImageFolder,
    class_names,
    decode_image_folder,
    default_cache_dir,
    holdout_indices,
    load_dataset,
    num_classes,
    split_holdout,
    stratified_indices,
)
from .imagenet import darts_imagenet_dataset, imagenet_split_dir

__all__ = [
    "darts_imagenet_dataset",
    "imagenet_split_dir",
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchAugment",
    "BatchShard",
    "ClassSubset",
    "Cutout",
    "DeviceLoader",
    "InMemoryImageDataset",
    "LazyImageFolder",
    "Normalize",
    "RandomCropPad",
    "RandomHorizontalFlip",
    "cifar_augment",
    "class_names",
    "decode_image_folder",
    "default_augment",
    "default_cache_dir",
    "holdout_indices",
    "load_dataset",
    "make_loader",
    "num_classes",
    "split_holdout",
    "stratified_indices",
    "to_device_batch",
]
