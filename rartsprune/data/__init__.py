"""Datasets, batch augmentation and loaders.

``split_dataset`` / ``split_loaders`` (the D_t / D_v halves of a search) come from
`rartsprune.data.split` and are re-exported here when that module is installed.

Examples:
    >>> from rartsprune.data import load_dataset, make_loader, default_augment, to_device_batch
    >>> ds = load_dataset("fake", subset=64)
    >>> x, y = to_device_batch(next(iter(make_loader(ds, 32))), "cpu", default_augment(ds))
    >>> tuple(x.shape), x.dtype
    ((32, 3, 32, 32), torch.float32)
"""

from __future__ import annotations

import importlib.util

from .augment import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
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
from .datasets import (
    CIFAR10_CLASSES,
    ClassSubset,
    InMemoryImageDataset,
    LazyImageFolder,
    class_names,
    decode_image_folder,
    default_cache_dir,
    load_dataset,
    num_classes,
    stratified_indices,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "BatchAugment",
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
    "load_dataset",
    "make_loader",
    "num_classes",
    "stratified_indices",
    "to_device_batch",
]

# split.py is written separately; re-export it only when it exists (an import error inside it still raises).
if importlib.util.find_spec(f"{__name__}.split") is not None:
    from .split import split_dataset, split_loaders  # noqa: E402

    __all__ += ["split_dataset", "split_loaders"]
