"""Image classification datasets: CIFAR-10/100, ImageFolder trees and a fake CIFAR-shaped set.

`load_dataset` returns one of two kinds of dataset, both yielding ``(uint8 image CxHxW, int label)``:

* `InMemoryImageDataset` for small images (at most 64 px a side): every image decoded once into
  one ``N x 3 x H x W`` uint8 tensor plus ``int64`` labels. Batches are sliced out of the tensor (no
  per-image Python work), and the whole set can be moved to the GPU with `InMemoryImageDataset.to`.
  ImageFolder trees are decoded with ``torchvision.io`` (a process pool for big trees) and the result is
  cached under ``~/.cache/rartsprune/decoded`` (override with ``cache_dir`` or ``$RARTSPRUNE_CACHE_DIR``),
  keyed by the tree's path, every file's size and mtime, and the image size, so the 50k-image CIFAR tree
  decodes once per machine.
* `LazyImageFolder` for larger images (e.g. a 224 px ImageNet subset): a torchvision
  ``ImageFolder`` whose transforms do the per-sample random-resized crop and flip (train) or resize +
  centre crop (test) and return uint8 tensors; normalisation happens on the batch
  (`rartsprune.app.data.augment`).

Both carry ``classes``, ``num_classes``, ``mean``, ``std`` (normalisation constants: CIFAR-10's for
``cifar10``, ``fake`` and any tree whose classes are the CIFAR-10 classes, CIFAR-100's for ``cifar100``,
ImageNet's otherwise), ``name`` and ``loader_augments`` (True when random crop/flip already happen per
sample in the dataset, so the batch augmentation only normalises).

Examples:
    >>> from rartsprune.app.data import load_dataset
    >>> ds = load_dataset("fake", subset=100)
    >>> len(ds), ds.num_classes, ds.images.shape[1:]
    (100, 10, torch.Size([3, 32, 32]))
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import pickle
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, Subset
from torchvision import datasets as tvd
from torchvision import transforms as T
from torchvision.transforms.v2 import functional as TF

from ...split import stratified_indices
from ..loop import atomic_save
from . import constants

__all__ = [
    "CIFAR10_CLASSES",
    "InMemoryImageDataset",
    "LazyImageFolder",
    "ClassSubset",
    "load_dataset",
    "num_classes",
    "class_names",
    "stratified_indices",
    "decode_image_folder",
    "default_cache_dir",
    "SMALL_IMAGE_MAX",
]

#: torchvision's CIFAR10 label order (also the alphabetical order of the class folders).
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

#: Images whose larger side is at most this many pixels are decoded into memory by default.
SMALL_IMAGE_MAX = 64

#: Sizes of the two splits of the ``"fake"`` dataset.
FAKE_SIZES = {"train": 1000, "test": 200}

_SPLITS = ("train", "test")
_CACHE_FORMAT = 1
_POOL_MIN_FILES = 4096  # below this a process pool costs more than it saves
_CHUNK = 1024


def _stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    table = {
        "cifar10": (constants.CIFAR10_MEAN, constants.CIFAR10_STD),
        "cifar100": (constants.CIFAR100_MEAN, constants.CIFAR100_STD),
        "imagenet": (constants.IMAGENET_MEAN, constants.IMAGENET_STD),
    }
    return table[name]


def default_cache_dir() -> Path:
    """``$RARTSPRUNE_CACHE_DIR`` if set, else ``~/.cache/rartsprune``.

    Examples:
        >>> default_cache_dir().name in {"rartsprune"} or "RARTSPRUNE_CACHE_DIR" in os.environ
        True
    """
    env = os.environ.get("RARTSPRUNE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "rartsprune"


# --------------------------------------------------------------------------------------------------
# Dataset classes


class InMemoryImageDataset(Dataset):
    """Decoded images in one uint8 tensor ``N x 3 x H x W`` with ``int64`` labels.

    Indexing with an int gives ``(image, label)`` like torchvision datasets; indexing with a sequence or
    tensor of indices gives a collated batch ``(images[idx], targets[idx])`` (used by
    `rartsprune.app.data.augment.make_loader` for batch slicing without per-image work).

    Examples:
        >>> import torch
        >>> ds = InMemoryImageDataset(torch.zeros(4, 3, 8, 8, dtype=torch.uint8), torch.arange(4) % 2, ["a", "b"])
        >>> ds[1][1], ds[[0, 2]][0].shape
        (1, torch.Size([2, 3, 8, 8]))
    """

    loader_augments = False
    in_memory = True

    def __init__(
        self,
        images: torch.Tensor,
        targets: torch.Tensor,
        classes: Sequence[str],
        *,
        name: str = "custom",
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            raise TypeError("images must be a uint8 tensor of shape N x C x H x W")
        if not isinstance(targets, torch.Tensor) or targets.dim() != 1 or len(targets) != len(images):
            raise ValueError(f"targets must be a 1-D tensor with {len(images)} labels")
        if targets.is_floating_point():
            raise TypeError("targets must hold integer labels")
        self.images = images
        self.targets = targets.to(torch.int64)
        self.classes = list(classes)
        if len(self.targets) and int(self.targets.max()) >= len(self.classes):
            raise ValueError(f"label {int(self.targets.max())} out of range for {len(self.classes)} classes")
        self.name = name
        default_mean, default_std = _stats(_stats_key(name, self.classes))
        self.mean = tuple(mean) if mean is not None else default_mean
        self.std = tuple(std) if std is not None else default_std

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[-2]), int(self.images.shape[-1])

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def __getitem__(self, index: Any) -> tuple[torch.Tensor, Any]:
        if isinstance(index, (int, np.integer)) or (isinstance(index, torch.Tensor) and index.dim() == 0):
            i = int(index)
            return self.images[i], int(self.targets[i])
        idx = torch.as_tensor(index, dtype=torch.int64).to(self.images.device, non_blocking=True)
        return self.images.index_select(0, idx), self.targets.index_select(0, idx)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> InMemoryImageDataset:
        """A new in-memory dataset holding copies of the given rows (same classes and statistics)."""
        idx = torch.as_tensor(indices, dtype=torch.int64).to(self.images.device)
        return InMemoryImageDataset(
            self.images.index_select(0, idx),
            self.targets.index_select(0, idx),
            self.classes,
            name=self.name,
            mean=self.mean,
            std=self.std,
        )

    def to(self, device: torch.device | str) -> InMemoryImageDataset:
        """Copy of the dataset with its tensors on ``device`` (150 MB for CIFAR train; fastest loading)."""
        return InMemoryImageDataset(
            self.images.to(device),
            self.targets.to(device),
            self.classes,
            name=self.name,
            mean=self.mean,
            std=self.std,
        )

    def __repr__(self) -> str:
        return (
            f"InMemoryImageDataset(name={self.name!r}, n={len(self)}, classes={self.num_classes}, "
            f"size={self.image_size}, device={self.device})"
        )


class LazyImageFolder(tvd.ImageFolder):
    """``torchvision.datasets.ImageFolder`` returning uint8 tensors, with rartsprune's metadata.

    Examples:
        >>> ds = LazyImageFolder("path/to/imagenet20/train", train=True, image_size=224)  # doctest: +SKIP
        >>> ds[0][0].dtype  # doctest: +SKIP
        torch.uint8
    """

    in_memory = False

    def __init__(
        self,
        root: str | Path,
        *,
        train: bool,
        image_size: int | tuple[int, int] | None = None,
        small: bool = False,
        name: str = "imagefolder",
    ) -> None:
        size = _as_hw(image_size)
        if small:
            # Small images kept on disk: no per-sample augmentation, the batch augmentation crops/flips.
            ops: list[Any] = [] if size is None else [T.Resize(size, antialias=True)]
            self.loader_augments = False
        else:
            size = size or (224, 224)
            if train:
                ops = [T.RandomResizedCrop(size, antialias=True), T.RandomHorizontalFlip()]
            else:
                resize = tuple(round(s * 256 / 224) for s in size)
                ops = [T.Resize(resize, antialias=True), T.CenterCrop(size)]
            self.loader_augments = bool(train)
        ops.append(T.PILToTensor())
        super().__init__(str(root), transform=T.Compose(ops))
        self.image_size = size
        self.name = name
        self.mean, self.std = _stats(_stats_key(name, self.classes))

    @property
    def num_classes(self) -> int:
        return len(self.classes)


class ClassSubset(Subset):
    """``torch.utils.data.Subset`` that keeps ``classes``, ``targets`` and the normalisation metadata.

    Examples:
        >>> ds = load_dataset("fake")
        >>> sub = ClassSubset(ds, [0, 1, 2])
        >>> sub.num_classes, len(sub.targets)
        (10, 3)
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        super().__init__(dataset, list(indices))
        base_targets = _targets_of(dataset)
        self.targets = [int(base_targets[i]) for i in self.indices]
        self.classes = list(class_names(dataset))
        for attr in ("name", "mean", "std", "loader_augments", "in_memory", "image_size"):
            if hasattr(dataset, attr):
                setattr(self, attr, getattr(dataset, attr))

    @property
    def num_classes(self) -> int:
        return len(self.classes)


# --------------------------------------------------------------------------------------------------
# Metadata helpers


def _stats_key(name: str, classes: Sequence[str]) -> str:
    if name in ("cifar10", "cifar100"):
        return name
    if name == "fake" or tuple(classes) == CIFAR10_CLASSES:
        return "cifar10"
    return "imagenet"


def num_classes(dataset: Dataset) -> int:
    """Number of classes of a dataset from this module or any torchvision-style dataset.

    Examples:
        >>> num_classes(load_dataset("fake"))
        10
    """
    value = getattr(dataset, "num_classes", None)
    if isinstance(value, int):
        return value
    if hasattr(dataset, "classes"):
        return len(dataset.classes)
    if isinstance(dataset, Subset):
        return num_classes(dataset.dataset)
    raise TypeError(f"cannot tell the number of classes of {type(dataset).__name__} (no classes/num_classes)")


def class_names(dataset: Dataset) -> list[str]:
    """Class names in label order.

    Examples:
        >>> class_names(load_dataset("fake"))[:2]
        ['class0', 'class1']
    """
    if hasattr(dataset, "classes"):
        return list(dataset.classes)
    if isinstance(dataset, Subset):
        return class_names(dataset.dataset)
    return [f"class{i}" for i in range(num_classes(dataset))]


def _targets_of(dataset: Dataset) -> torch.Tensor:
    targets = getattr(dataset, "targets", None)
    if targets is None and isinstance(dataset, Subset):
        base = _targets_of(dataset.dataset)
        return base[torch.as_tensor(dataset.indices, dtype=torch.int64)]
    if targets is None:
        raise TypeError(f"{type(dataset).__name__} has no `targets`; cannot stratify it by class")
    return torch.as_tensor(targets, dtype=torch.int64).cpu()


def _take_subset(dataset: Dataset, subset: int | None, seed: int) -> Dataset:
    if subset is None:
        return dataset
    return _subset_of(dataset, stratified_indices(_targets_of(dataset), subset, seed=seed))


def _subset_of(dataset: Dataset, idx: torch.Tensor) -> Dataset:
    if isinstance(dataset, InMemoryImageDataset):
        return dataset.subset(idx)
    return ClassSubset(dataset, idx.tolist())


def holdout_indices(
    targets: Sequence[int] | torch.Tensor, holdout: int, *, subset: int | None = None, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted indices of the training images and of ``holdout`` held-out images that no training sees.

    With ``subset``, the training images are exactly `load_dataset`'s ``subset`` (the class-stratified sample
    drawn with ``seed``) and the held-out ones a class-stratified sample of the rest; without, the held-out
    images are a class-stratified sample of everything and the training images the rest.

    Raises:
        ValueError: ``holdout`` is not a positive int, or more images than the training images leave.

    Examples:
        >>> train, held = holdout_indices([0, 1] * 10, 4, subset=8, seed=0)
        >>> len(train), len(held), bool(set(train.tolist()) & set(held.tolist()))
        (8, 4, False)
    """
    t = torch.as_tensor(targets, dtype=torch.int64).cpu().reshape(-1)
    if isinstance(holdout, bool) or not isinstance(holdout, int) or holdout < 1:
        raise ValueError(f"the held-out images must be a positive int, got {holdout!r}")
    if subset is None:
        if holdout >= len(t):
            raise ValueError(f"cannot hold out {holdout} of {len(t)} training images: none would be left to train on")
        held = stratified_indices(t, holdout, seed=seed)
        return _complement(held, len(t)), held
    train = stratified_indices(t, subset, seed=seed)
    left = _complement(train, len(t))
    if holdout > len(left):
        raise ValueError(f"cannot hold out {holdout} training images: the training subset of {subset} leaves "
                         f"{len(left)}")
    return train, left[stratified_indices(t[left], holdout, seed=seed)]


def _complement(idx: torch.Tensor, n: int) -> torch.Tensor:
    """The sorted indices of ``range(n)`` not in ``idx``."""
    keep = torch.ones(n, dtype=torch.bool)
    keep[idx] = False
    return torch.nonzero(keep).flatten()


def split_holdout(dataset: Dataset, holdout: int, *, subset: int | None = None,
                  seed: int = 0) -> tuple[Dataset, Dataset]:
    """``dataset`` (a whole training split) as its training images and ``holdout`` held-out ones
    (`holdout_indices`): a validation set that no phase trains on.

    Examples:
        >>> train, val = split_holdout(load_dataset("fake", "train"), 100, subset=300)
        >>> len(train), len(val)
        (300, 100)
    """
    train, held = holdout_indices(_targets_of(dataset), holdout, subset=subset, seed=seed)
    return _subset_of(dataset, train), _subset_of(dataset, held)


def _as_hw(image_size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool):
        raise TypeError("image_size must be an int or (height, width)")
    if isinstance(image_size, int):
        hw = (image_size, image_size)
    elif (
        isinstance(image_size, Sequence)
        and len(image_size) == 2
        and all(isinstance(s, int) for s in image_size)
    ):
        hw = (int(image_size[0]), int(image_size[1]))
    else:
        raise TypeError(f"image_size must be an int or (height, width), got {image_size!r}")
    if min(hw) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return hw


def _resize_batch(images: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(images.shape[-2:]) == size:
        return images
    return TF.resize(images, list(size), antialias=True)


# --------------------------------------------------------------------------------------------------
# Decoding ImageFolder trees into memory


@lru_cache(maxsize=1)
def _torchvision_decoder() -> Any:
    """``torchvision.io.decode_image`` in RGB mode, or None where torchvision no longer ships it.

    torchvision 0.29 deprecated its image codecs (in favour of TorchCodec); they decode JPEG/PNG about
    3x faster than PIL and give the same pixels, so they are used while they exist, PIL otherwise.
    """
    try:
        from torchvision.io import ImageReadMode, decode_image
    except ImportError:
        return None
    return lambda data: decode_image(data, mode=ImageReadMode.RGB)


def _decode_one(path: str) -> torch.Tensor:
    """Decode one image file to a uint8 RGB ``3 x H x W`` tensor (torchvision.io, PIL as fallback)."""
    decode = _torchvision_decoder()
    if decode is not None and path.lower().endswith((".jpg", ".jpeg", ".png")):
        with open(path, "rb") as fh:
            data = torch.frombuffer(bytearray(fh.read()), dtype=torch.uint8)
        try:
            return decode(data)
        except RuntimeError:
            pass  # unusual encodings (e.g. CMYK, 16-bit PNG): PIL below handles them like ImageFolder does
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _decode_chunk(args: tuple[list[str], tuple[int, int] | None]) -> np.ndarray:
    with warnings.catch_warnings():
        # torchvision warns on every decode call that its codecs are deprecated (see _torchvision_decoder)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torchvision\.io")
        return _decode_paths(*args)


def _decode_paths(paths: list[str], size: tuple[int, int] | None) -> np.ndarray:
    first: tuple[int, ...] | None = None
    out: np.ndarray | None = None
    for i, path in enumerate(paths):
        img = _decode_one(path)
        if size is not None and tuple(img.shape[-2:]) != size:
            img = TF.resize(img, list(size), antialias=True)
        if out is None:
            first = tuple(img.shape)
            out = np.empty((len(paths), *first), dtype=np.uint8)
        elif tuple(img.shape) != first:
            raise ValueError(
                f"{path} is {tuple(img.shape[-2:])} but earlier images are {first[-2:]}: images of one "
                "in-memory dataset must share a size; pass image_size=... to resize them"
            )
        out[i] = img.numpy()
    assert out is not None
    return out


def _init_worker() -> None:
    torch.set_num_threads(1)


def _decode_files(paths: list[str], size: tuple[int, int] | None, num_workers: int | None) -> torch.Tensor:
    from tqdm.auto import tqdm

    chunks = [(paths[i : i + _CHUNK], size) for i in range(0, len(paths), _CHUNK)]
    workers = num_workers if num_workers is not None else min(os.cpu_count() or 1, 8)
    use_pool = workers > 1 and len(paths) >= _POOL_MIN_FILES and "fork" in mp.get_all_start_methods()
    bar = tqdm(
        total=len(paths),
        desc="decoding images",
        unit="img",
        disable=True if len(paths) < _POOL_MIN_FILES else None,  # None: off when not a terminal
        leave=False,
    )
    parts: list[np.ndarray] = []
    try:
        if use_pool:
            # fork: workers inherit the imported modules, so they start in milliseconds.
            with mp.get_context("fork").Pool(workers, initializer=_init_worker) as pool:
                for part in pool.imap(_decode_chunk, chunks):
                    parts.append(part)
                    bar.update(len(part))
        else:
            for chunk in chunks:
                parts.append(_decode_chunk(chunk))
                bar.update(len(parts[-1]))
    finally:
        bar.close()
    shapes = {p.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise ValueError(
            f"images of different sizes {sorted(s[-2:] for s in shapes)} cannot share one in-memory tensor; "
            "pass image_size=... to resize them"
        )
    return (
        torch.from_numpy(np.concatenate(parts))
        if parts
        else torch.empty(0, 3, *(size or (0, 0)), dtype=torch.uint8)
    )


def _fingerprint(root: Path, samples: Sequence[tuple[str, int]], size: tuple[int, int] | None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps({"format": _CACHE_FORMAT, "root": str(root), "size": size}).encode())
    prefix = len(str(root)) + 1  # make_dataset returns paths under str(root)
    lines = []
    for path, label in samples:
        st = os.stat(path)
        lines.append(f"{path[prefix:]}\0{label}\0{st.st_size}\0{st.st_mtime_ns}")
    h.update("\n".join(lines).encode())
    return h.hexdigest()


def _load_cache(path: Path, key: str) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, ValueError) as exc:
        warnings.warn(f"ignoring unreadable decode cache {path}: {exc}", stacklevel=3)
        return None
    if not isinstance(blob, dict) or blob.get("key") != key:
        return None
    return blob


def _save_cache(path: Path, blob: dict[str, Any]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(blob, path)
    except OSError as exc:
        warnings.warn(f"could not write the decode cache {path}: {exc}", stacklevel=3)


def decode_image_folder(
    root: str | Path,
    *,
    image_size: int | tuple[int, int] | None = None,
    name: str = "imagefolder",
    cache: bool = True,
    cache_dir: str | Path | None = None,
    num_workers: int | None = None,
) -> InMemoryImageDataset:
    """Decode a class-folder tree into an `InMemoryImageDataset` (cached on disk).

    Sample order and labels are those of ``torchvision.datasets.ImageFolder(root)``. The cache file is
    ``<cache_dir>/decoded/<name>-<hash>.pt`` where the hash covers the resolved path, every file's
    relative path, size and mtime, and ``image_size``; any change in the tree makes a new entry.

    Examples:
        >>> ds = decode_image_folder("../shared/data/cifar10/test")  # doctest: +SKIP
        >>> ds.images.shape  # doctest: +SKIP
        torch.Size([8000, 3, 32, 32])
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"image folder {root} does not exist")
    size = _as_hw(image_size)
    classes, class_to_idx = tvd.folder.find_classes(str(root))
    samples = tvd.folder.make_dataset(str(root), class_to_idx, extensions=tvd.folder.IMG_EXTENSIONS)
    key = _fingerprint(root, samples, size)
    cache_file = Path(cache_dir or default_cache_dir()) / "decoded" / f"{name}-{key[:24]}.pt"
    blob = _load_cache(cache_file, key) if cache else None
    if blob is None:
        images = _decode_files([p for p, _ in samples], size, num_workers)
        targets = torch.tensor([c for _, c in samples], dtype=torch.int64)
        if cache:
            _save_cache(
                cache_file, {"key": key, "images": images, "targets": targets, "classes": list(classes)}
            )
    else:
        images, targets, classes = blob["images"], blob["targets"], blob["classes"]
    return InMemoryImageDataset(images, targets, classes, name=name)


# --------------------------------------------------------------------------------------------------
# Entry point


def _split_dir(root: Path, split: str) -> Path:
    candidates = ("train",) if split == "train" else ("test", "val")
    has_train = (root / "train").is_dir()
    has_test = any((root / c).is_dir() for c in ("test", "val"))
    if has_train and has_test:
        for c in candidates:
            if (root / c).is_dir():
                return root / c
    if has_train or has_test:
        missing = "train/" if not has_train else "test/ (or val/)"
        raise FileNotFoundError(
            f"{root} has a split folder but no {missing}; expected train/ and test/ class trees"
        )
    return root  # a plain class-folder tree serves both splits


def _peek_size(root: Path) -> tuple[int, int]:
    from PIL import Image

    for dirpath, dirs, files in os.walk(root, followlinks=True):
        dirs.sort()
        for f in sorted(files):
            if f.lower().endswith(tvd.folder.IMG_EXTENSIONS):
                with Image.open(os.path.join(dirpath, f)) as img:
                    return img.height, img.width
    raise FileNotFoundError(f"no image files ({', '.join(tvd.folder.IMG_EXTENSIONS)}) under {root}")


def _load_cifar(spec: str, split: str, root: Path, download: bool) -> InMemoryImageDataset:
    cls = tvd.CIFAR10 if spec == "cifar10" else tvd.CIFAR100
    if not download and not (root / cls.base_folder).is_dir():
        raise FileNotFoundError(
            f"{spec} is not under {root} (looked for {cls.base_folder}/). Pass download=True to fetch it, "
            f"root=... where it already is, or the path of an ImageFolder tree as spec"
        )
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
        raise FileNotFoundError(
            f"{spec} under {root} is missing or corrupted ({exc}); pass download=True to fetch it again"
        ) from exc
    images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
    return InMemoryImageDataset(images, torch.tensor(ds.targets, dtype=torch.int64), ds.classes, name=spec)


@lru_cache(maxsize=4)
def _fake(split: str, size: tuple[int, int]) -> InMemoryImageDataset:
    offset = 0 if split == "train" else 10**6
    fake = tvd.FakeData(FAKE_SIZES[split], (3, *size), 10, transform=T.PILToTensor(), random_offset=offset)
    pairs = [fake[i] for i in range(len(fake))]
    images = torch.stack([img for img, _ in pairs])
    targets = torch.tensor([int(label) for _, label in pairs], dtype=torch.int64)
    return InMemoryImageDataset(images, targets, [f"class{i}" for i in range(10)], name="fake")


def load_dataset(
    spec: str | os.PathLike[str],
    split: str = "train",
    *,
    root: str | Path | None = None,
    download: bool = False,
    subset: int | None = None,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    in_memory: bool | None = None,
    cache: bool = True,
    cache_dir: str | Path | None = None,
    num_workers: int | None = None,
) -> Dataset:
    """Load a classification dataset split as uint8 images and int labels.

    Args:
        spec: ``"cifar10"``, ``"cifar100"`` (torchvision, stored under ``root`` or
            ``~/.cache/rartsprune/data``), ``"fake"`` (torchvision ``FakeData``, 3x32x32, 10 classes,
            1000 train / 200 test images, identical on every call), or the path of an ImageFolder tree:
            either with ``train/`` and ``test/`` (or ``val/``) class folders, or a plain class-folder tree
            used for both splits.
        split: ``"train"`` or ``"test"``.
        root: where torchvision CIFAR files live (ignored for paths and ``"fake"``).
        download: let torchvision download CIFAR into ``root``.
        subset: keep a seeded, class-stratified sample of this many images.
        seed: seed of the subset.
        image_size: resize to this size (int: square). For lazy (large-image) trees, the crop size
            (default 224).
        in_memory: ``None`` decides by size (at most 64 px -> in memory); ``True``/``False`` force it for
            ImageFolder trees (CIFAR and fake are always in memory).
        cache / cache_dir: use / locate the decode cache of ImageFolder trees.
        num_workers: decode processes (default: CPU count, at most 8).

    Returns:
        an `InMemoryImageDataset`, a `LazyImageFolder`, or a `ClassSubset` of one.

    Raises:
        ValueError: unknown spec or split, bad subset. FileNotFoundError: data not found.

    Examples:
        >>> test = load_dataset("fake", "test")
        >>> len(test), test[0][0].dtype
        (200, torch.uint8)
    """
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got {split!r}")
    if subset is not None and (isinstance(subset, bool) or not isinstance(subset, int)):
        raise TypeError(f"subset must be an int or None, got {type(subset).__name__}")
    size = _as_hw(image_size)
    if isinstance(spec, str) and spec.lower() in ("cifar10", "cifar100", "fake"):
        key = spec.lower()
        if in_memory is False:
            raise ValueError(
                f"{key} is always held in memory; in_memory=False applies to ImageFolder trees only"
            )
        if key == "fake":
            base = _fake(split, size or (32, 32))
            ds: Dataset = InMemoryImageDataset(
                base.images.clone(), base.targets.clone(), base.classes, name="fake"
            )
        else:
            data_root = Path(root).expanduser() if root is not None else default_cache_dir() / "data"
            cifar = _load_cifar(key, split, data_root, download)
            ds = InMemoryImageDataset(
                _resize_batch(cifar.images, size), cifar.targets, cifar.classes, name=key
            )
        return _take_subset(ds, subset, seed)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(f"spec must be a dataset name or a path, got {type(spec).__name__}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise ValueError(
            f"unknown dataset {str(spec)!r}: expected 'cifar10', 'cifar100', 'fake' or an existing ImageFolder path"
        )
    folder = _split_dir(path.resolve(), split)
    name = path.resolve().name or "imagefolder"
    native = _peek_size(folder)
    small = max(size or native) <= SMALL_IMAGE_MAX
    if in_memory is None:
        in_memory = small
    if in_memory:
        ds = decode_image_folder(
            folder,
            image_size=size,
            name=f"{name}-{folder.name}" if folder != path.resolve() else name,
            cache=cache,
            cache_dir=cache_dir,
            num_workers=num_workers,
        )
        ds.name = name
        ds.mean, ds.std = _stats(_stats_key(name, ds.classes))
    else:
        ds = LazyImageFolder(folder, train=split == "train", image_size=size, small=small, name=name)
    return _take_subset(ds, subset, seed)
