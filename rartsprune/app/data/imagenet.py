"""ImageNet-style ImageFolder trees with DARTS's ImageNet preprocessing, for ``recipes/darts_train.py --imagenet``.

Examples:
    >>> imagenet_split_dir("/no/such/root", "train")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    FileNotFoundError: ImageNet root /no/such/root is not a folder
"""

from __future__ import annotations

from pathlib import Path

from torch.utils.data import Dataset

__all__ = ["imagenet_split_dir", "darts_imagenet_dataset"]


def imagenet_split_dir(root: str | Path, split: str) -> Path:
    """``root/train`` for ``split="train"``; ``root/val`` (or ``root/test``) for ``"val"`` / ``"test"``.

    Raises:
        FileNotFoundError: the root or the split folder is missing (the message names which).
        ValueError: an unknown split.

    Examples:
        >>> imagenet_split_dir("/data/imagenet", "train")  # doctest: +SKIP
        PosixPath('/data/imagenet/train')
    """
    root = Path(root).expanduser()
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if not root.is_dir():
        raise FileNotFoundError(f"ImageNet root {root} is not a folder")
    names = ("train",) if split == "train" else ("val", "test")
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise FileNotFoundError(
        f"{root} has no {' or '.join(n + '/' for n in names)} folder; expected an ImageFolder tree with "
        "train/ and val/ (or test/) class folders"
    )


def darts_imagenet_dataset(
    root: str | Path,
    split: str,
    *,
    image_size: int = 224,
    subset: int | None = None,
    seed: int = 0,
) -> Dataset:
    """A split of an ImageFolder tree with DARTS's ImageNet preprocessing, streamed from disk.

    Train: RandomResizedCrop(``image_size``), horizontal flip, ColorJitter(brightness 0.4, contrast 0.4,
    saturation 0.4, hue 0.2) as in DARTS's ``train_imagenet.py``. Val/test: resize the shorter side to
    ``image_size * 256 / 224`` (256 at 224 px), centre crop ``image_size``. Images come out as uint8 tensors
    (a `rartsprune.app.data.LazyImageFolder` with ImageNet's mean/std), so
    ``rartsprune.app.data.default_augment(ds)`` normalises the batch on the device and
    ``rartsprune.app.data.make_loader`` loads it with worker processes. ``subset`` keeps a seeded,
    class-stratified sample of that many images.

    Examples:
        >>> ds = darts_imagenet_dataset("/data/imagenet", "train")  # doctest: +SKIP
        >>> ds[0][0].shape, ds[0][0].dtype  # doctest: +SKIP
        (torch.Size([3, 224, 224]), torch.uint8)
    """
    from torchvision import transforms as T

    from . import IMAGENET_MEAN, IMAGENET_STD, ClassSubset, LazyImageFolder, stratified_indices

    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int, got {image_size!r}")
    folder = imagenet_split_dir(root, split)
    train = split == "train"
    ds = LazyImageFolder(folder, train=train, image_size=image_size, small=False, name=Path(root).name)
    if train:
        ops = [
            T.RandomResizedCrop(image_size, antialias=True),
            T.RandomHorizontalFlip(),
            T.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.2),
        ]
    else:
        ops = [T.Resize(round(image_size * 256 / 224), antialias=True), T.CenterCrop(image_size)]
    ds.transform = T.Compose([*ops, T.PILToTensor()])
    ds.mean, ds.std = IMAGENET_MEAN, IMAGENET_STD
    if subset is None:
        return ds
    return ClassSubset(ds, stratified_indices(ds.targets, subset, seed=seed).tolist())
