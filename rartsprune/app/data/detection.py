"""Detection data for the detection recipe: generated shapes with boxes and classes, or a COCO-format folder.

Both datasets yield ``(image, target)``: ``image`` a float (3, H, W) tensor in [0, 1], ``target`` a dict with
``boxes`` (N, 4) float ``x1 y1 x2 y2`` in pixels, ``labels`` (N,) int64 in ``1 .. num_classes - 1`` (0 is the
background, as torchvision's detectors count classes) and ``image_id`` (an int). `detection_collate` batches
them as torchvision's detectors take them: ``(list of images, list of targets)``.

* `ShapesDetection`: images the dataset draws itself — one to ``max_objects`` filled rectangles, ellipses
  and triangles of random colours and sizes on a smooth noisy background, never overlapping, each box the
  tight box of the shape's pixels. Item ``i`` depends only on ``(seed, i)`` (`rartsprune.split.epoch_seed`),
  so the same seed gives the same set in every process, and nothing is stored.
* `CocoDetectionFolder`: one split of a COCO-format folder (an ``instances`` json: ``images``,
  ``annotations`` with ``bbox`` ``[x, y, width, height]``, ``categories``) with the images it names,
  resized so that the longer side is ``size``. Crowd annotations and boxes under one pixel are dropped;
  images without boxes stay (negatives). `coco_splits` finds the train / val jsons of a folder, and
  `check_coco_folder` says clearly what is wrong with a folder before anything is trained.

Examples:
    >>> from rartsprune.app.data.detection import ShapesDetection, detection_collate
    >>> ds = ShapesDetection(8, size=64, seed=0)
    >>> image, target = ds[0]
    >>> image.shape, ds.classes
    (torch.Size([3, 64, 64]), ('rectangle', 'ellipse', 'triangle'))
    >>> bool((target["boxes"][:, 2:] <= 64).all()), target["labels"].dtype
    (True, torch.int64)
    >>> images, targets = detection_collate([ds[0], ds[1]])
    >>> len(images), len(targets)
    (2, 2)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ...split import epoch_seed

__all__ = [
    "SHAPES",
    "ShapesDetection",
    "CocoDetectionFolder",
    "CocoSplit",
    "check_coco_folder",
    "coco_splits",
    "detection_collate",
]

#: The classes of `ShapesDetection`, labels 1, 2, 3 (0 is the background).
SHAPES: tuple[str, ...] = ("rectangle", "ellipse", "triangle")

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def detection_collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list, list]:
    """``[(image, target), ...]`` -> ``(images, targets)``: the two lists torchvision's detectors take.

    Examples:
        >>> import torch
        >>> images, targets = detection_collate([(torch.zeros(3, 4, 4), {"labels": torch.ones(1)})])
        >>> len(images), targets[0]["labels"].tolist()
        (1, [1.0])
    """
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets


# --------------------------------------------------------------------------- generated shapes


def _shape_mask(kind: str, yy: torch.Tensor, xx: torch.Tensor, box: Sequence[float]) -> torch.Tensor:
    """Pixels (centres ``yy``, ``xx``) inside a shape drawn in the box ``x1 y1 x2 y2``."""
    x1, y1, x2, y2 = box
    if kind == "rectangle":
        return (xx >= x1) & (xx < x2) & (yy >= y1) & (yy < y2)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, (x2 - x1) / 2, (y2 - y1) / 2
    if kind == "ellipse":
        return ((xx - cx) / hw) ** 2 + ((yy - cy) / hh) ** 2 <= 1.0
    # an isosceles triangle pointing up: apex at the top centre, base along the bottom edge
    frac = (yy - y1) / (y2 - y1)
    return (yy >= y1) & (yy < y2) & ((xx - cx).abs() <= frac * hw)


class ShapesDetection(Dataset):
    """A detection set drawn on the fly: shapes with their boxes and classes, deterministic from ``seed``.

    Args:
        n: number of images.
        size: side of the square images (pixels, at least 32).
        seed: the set's seed; item ``i`` depends only on ``(seed, i)``.
        max_objects: at most this many shapes per image (at least one).
        min_frac, max_frac: a shape's box side as a fraction of ``size`` (default 0.15 to 0.45).
        noise: standard deviation of the background's pixel noise.

    Attributes:
        classes: `SHAPES`; ``labels`` are 1 + their index. ``num_classes`` = 4 counts the background.

    Raises:
        ValueError: a count, size or fraction out of range.

    Examples:
        >>> ds = ShapesDetection(4, size=48, seed=3, max_objects=2)
        >>> len(ds), ds.num_classes
        (4, 4)
        >>> a, b = ds[1][1]["boxes"], ShapesDetection(4, size=48, seed=3, max_objects=2)[1][1]["boxes"]
        >>> bool(torch.equal(a, b))
        True
    """

    def __init__(self, n: int, *, size: int = 128, seed: int = 0, max_objects: int = 3, min_frac: float = 0.15,
                 max_frac: float = 0.45, noise: float = 0.04) -> None:
        for name, value, low in (("n", n, 1), ("size", size, 32), ("max_objects", max_objects, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not 0.0 < min_frac <= max_frac <= 0.9:
            raise ValueError(f"need 0 < min_frac <= max_frac <= 0.9, got {min_frac} and {max_frac}")
        if int(min_frac * size) < 4:
            raise ValueError(f"min_frac={min_frac} of {size} px makes shapes under 4 px: raise size or min_frac")
        if not 0.0 <= noise < 0.5:
            raise ValueError(f"noise must be in [0, 0.5), got {noise}")
        self.n, self.size, self.seed, self.max_objects = n, size, int(seed), max_objects
        self.min_frac, self.max_frac, self.noise = float(min_frac), float(max_frac), float(noise)
        self.classes = SHAPES
        self.num_classes = len(SHAPES) + 1

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        if not -self.n <= index < self.n:
            raise IndexError(f"index {index} out of range for {self.n} images")
        index %= self.n
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, index, "shapes"))
        s = self.size

        def uniform(lo: float, hi: float) -> float:
            return lo + (hi - lo) * float(torch.rand((), generator=gen))

        # background: a colour with a linear gradient and pixel noise
        base = torch.rand(3, 1, 1, generator=gen) * 0.6 + 0.2
        ramp = torch.linspace(-1.0, 1.0, s)
        gy, gx = torch.meshgrid(ramp, ramp, indexing="ij")
        tilt = (torch.rand(2, generator=gen) - 0.5) * 0.3
        image = base + (tilt[0] * gy + tilt[1] * gx)[None] + self.noise * torch.randn(3, s, s, generator=gen)
        yy, xx = torch.meshgrid(torch.arange(s) + 0.5, torch.arange(s) + 0.5, indexing="ij")

        count = 1 + int(torch.randint(self.max_objects, (), generator=gen))
        boxes: list[list[float]] = []
        labels: list[int] = []
        placed: list[tuple[float, float, float, float]] = []
        for _ in range(count):
            for _attempt in range(20):  # a place that overlaps no earlier shape (with a 1 px margin)
                w = round(uniform(self.min_frac, self.max_frac) * s)
                h = round(min(max(w * uniform(0.7, 1.4), self.min_frac * s), self.max_frac * s))
                x1, y1 = math.floor(uniform(0, s - w)), math.floor(uniform(0, s - h))
                cand = (x1, y1, x1 + w, y1 + h)
                if all(cand[2] + 1 <= p[0] or p[2] + 1 <= cand[0] or cand[3] + 1 <= p[1] or p[3] + 1 <= cand[1]
                       for p in placed):
                    break
            else:
                continue
            kind = int(torch.randint(len(SHAPES), (), generator=gen))
            mask = _shape_mask(SHAPES[kind], yy, xx, cand)
            cols, rows = mask.any(0).nonzero(), mask.any(1).nonzero()
            if len(cols) == 0 or len(rows) == 0:
                continue
            color = torch.rand(3, generator=gen)
            while float((color - base.flatten()).abs().sum()) < 0.6:  # visible against the background
                color = torch.rand(3, generator=gen)
            image = torch.where(mask[None], color[:, None, None] + 0.5 * self.noise * torch.randn(3, s, s, generator=gen),
                                image)
            placed.append(cand)
            boxes.append([float(cols.min()), float(rows.min()), float(cols.max()) + 1, float(rows.max()) + 1])
            labels.append(kind + 1)
        target = {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "image_id": index,
        }
        return image.clamp_(0.0, 1.0), target

    def __repr__(self) -> str:
        return f"ShapesDetection(n={self.n}, size={self.size}, seed={self.seed}, max_objects={self.max_objects})"


# --------------------------------------------------------------------------- COCO-format folders


class CocoSplit:
    """One split of a COCO-format folder: its annotation json and the folder its ``file_name``\\ s are in."""

    def __init__(self, name: str, ann_file: Path, image_dir: Path) -> None:
        self.name, self.ann_file, self.image_dir = name, Path(ann_file), Path(image_dir)

    def __repr__(self) -> str:
        return f"CocoSplit({self.name!r}, ann_file={str(self.ann_file)!r}, image_dir={str(self.image_dir)!r})"


def _split_name(path: Path) -> str:
    stem = path.stem.lower()
    for key in ("train", "val", "test"):
        if key in stem:
            return key
    return "all"


def coco_splits(root: str | os.PathLike[str]) -> dict[str, CocoSplit]:
    """The annotation files of a COCO-format folder, by split (``train``, ``val``, ``test`` or ``all``).

    Looked for: ``ROOT/annotations/*.json`` and ``ROOT/*.json``, only the ``instances*.json`` among them when
    there are any (COCO's own folder also holds captions and keypoints files); a file whose name holds
    ``train`` / ``val`` / ``test`` is that split, another (one file only, e.g. ``annotations.json``) is ``all``. The images of
    ``instances_NAME.json`` are looked for in ``ROOT/NAME/`` (COCO's own layout, e.g. ``train2017/``), then
    ``ROOT/images/NAME/``, ``ROOT/images/``, then ``ROOT`` itself: the first of these that holds the first
    image the json names.

    Raises:
        FileNotFoundError: ``root`` is not a folder, or it holds no json file.
        ValueError: two files for one split, or an unnamed file next to others.

    Examples:
        >>> coco_splits("/no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        FileNotFoundError: COCO folder /no/such/folder does not exist
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"COCO folder {root} does not exist" if not root.exists()
                                else f"COCO folder {root} is a file, not a folder")
    files = sorted((root / "annotations").glob("*.json")) if (root / "annotations").is_dir() else []
    files += sorted(root.glob("*.json"))
    instances = [f for f in files if f.name.startswith("instances")]
    if instances:  # COCO's own folder also holds captions_*.json and person_keypoints_*.json
        files = instances
    if not files:
        raise FileNotFoundError(
            f"no annotation json in {root}: a COCO-format folder holds annotations/instances_train.json and "
            "annotations/instances_val.json (or one annotations.json) with the images next to them")
    found: dict[str, CocoSplit] = {}
    for f in files:
        name = _split_name(f)
        if name in found:
            raise ValueError(f"two annotation files for the {name!r} split in {root}: {found[name].ann_file.name} "
                             f"and {f.name}; keep one")
        found[name] = CocoSplit(name, f, root)
    if "all" in found and len(found) > 1:
        raise ValueError(f"{found['all'].ann_file} names no split (train / val / test) but other files do: "
                         "rename it or remove it")
    return found


def _load_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a COCO annotation file (a JSON object with images, annotations and "
                         f"categories), it holds a {type(data).__name__}")
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"{path} is not a COCO annotation file: no list {', '.join(repr(k) for k in missing)}")
    return data


def _image_dir(split: CocoSplit, root: Path, first_file: str | None) -> Path:
    stem = split.ann_file.stem
    name = stem.split("_", 1)[1] if stem.startswith("instances_") else stem
    candidates = [root / name, root / "images" / name, root / "images", root]
    if first_file is None:
        return next((c for c in candidates if c.is_dir()), root)
    for c in candidates:
        if (c / first_file).is_file():
            return c
    raise FileNotFoundError(
        f"image {first_file!r} of {split.ann_file.name} is in none of "
        f"{', '.join(str(c) for c in candidates)}: put the images there (file_name is relative to that folder)")


class CocoDetectionFolder(Dataset):
    """One split of a COCO-format folder as ``(image, target)`` items (see the module docstring).

    Args:
        ann_file: the split's ``instances`` json.
        image_dir: the folder ``file_name`` is relative to (default: found as `coco_splits` says).
        size: resize every image so that its longer side is this many pixels (boxes scaled with it); ``None``:
            keep the images' own sizes.
        categories: the category ids to map to labels ``1 .. K`` (in that order); default: the json's own,
            sorted. Pass the train split's to a val split so that both share the labels.

    Attributes:
        classes: the category names in label order; ``num_classes`` = K + 1 (with the background);
        category_ids: the json's category id of each label.

    Raises:
        FileNotFoundError: the json or an image it names is missing (the first few are named).
        ValueError: the json is not COCO (what is missing is named), an annotation names an unknown image or
            category or has a malformed ``bbox``, or the file has no category.
    """

    def __init__(self, ann_file: str | os.PathLike[str], image_dir: str | os.PathLike[str] | None = None, *,
                 size: int | None = None, categories: Sequence[int] | None = None) -> None:
        ann_file = Path(ann_file)
        if not ann_file.is_file():
            raise FileNotFoundError(f"COCO annotation file {ann_file} does not exist")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 16):
            raise ValueError(f"size must be an int >= 16 or None, got {size!r}")
        data = _load_json(ann_file)
        images = data["images"]
        for i, im in enumerate(images):
            if not isinstance(im, Mapping) or "id" not in im or not isinstance(im.get("file_name"), str):
                raise ValueError(f"{ann_file}: images[{i}] needs an 'id' and a 'file_name'")
        cats = {int(c["id"]): str(c.get("name", c["id"])) for c in data["categories"]
                if isinstance(c, Mapping) and "id" in c}
        if not cats:
            raise ValueError(f"{ann_file} has no category (its 'categories' list is empty or has no ids)")
        self.category_ids = [int(c) for c in categories] if categories is not None else sorted(cats)
        label_of = {cid: k + 1 for k, cid in enumerate(self.category_ids)}
        self.classes = tuple(cats.get(c, str(c)) for c in self.category_ids)
        self.num_classes = len(self.category_ids) + 1
        ids = {im["id"] for im in images}
        per_image: dict[Any, list[tuple[list[float], int]]] = {im["id"]: [] for im in images}
        for a in data["annotations"]:
            if not isinstance(a, Mapping):
                raise ValueError(f"{ann_file}: an annotation is a {type(a).__name__}, not an object")
            if a.get("image_id") not in ids:
                raise ValueError(f"{ann_file}: annotation {a.get('id')} names image {a.get('image_id')!r}, "
                                 "which is not in 'images'")
            bbox = a.get("bbox")
            if (not isinstance(bbox, Sequence) or len(bbox) != 4
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox)):
                raise ValueError(f"{ann_file}: annotation {a.get('id')} has bbox {bbox!r}; COCO wants "
                                 "[x, y, width, height] in pixels")
            cid = a.get("category_id")
            if cid not in cats:
                raise ValueError(f"{ann_file}: annotation {a.get('id')} has category_id {cid!r}, which is not in "
                                 "'categories'")
            if a.get("iscrowd", 0) or cid not in label_of:
                continue
            per_image[a["image_id"]].append(([float(v) for v in bbox], label_of[cid]))
        root = ann_file.parent.parent if ann_file.parent.name == "annotations" else ann_file.parent
        split = CocoSplit(_split_name(ann_file), ann_file, root)
        self.image_dir = Path(image_dir) if image_dir is not None else _image_dir(
            split, root, images[0]["file_name"] if images else None)
        missing = [im["file_name"] for im in images if not (self.image_dir / im["file_name"]).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image(s) of {ann_file.name} are missing from {self.image_dir}, "
                                    f"e.g. {', '.join(missing[:3])}")
        self.ann_file, self.size = ann_file, size
        self._images = [(im["id"], im["file_name"], per_image[im["id"]]) for im in images]

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        from torchvision import tv_tensors
        from torchvision.io import ImageReadMode, decode_image
        from torchvision.ops import box_convert
        from torchvision.transforms.v2 import functional as TF

        image_id, file_name, anns = self._images[index]
        image = decode_image(str(self.image_dir / file_name), mode=ImageReadMode.RGB)
        h, w = image.shape[-2:]
        xywh = torch.tensor([b for b, _ in anns], dtype=torch.float32).reshape(-1, 4)
        boxes = tv_tensors.BoundingBoxes(box_convert(xywh, "xywh", "xyxy"), format="XYXY", canvas_size=(h, w))
        boxes = TF.clamp_bounding_boxes(boxes)
        if self.size is not None and max(h, w) != self.size:
            image, boxes = TF.resize(image, size=None, max_size=self.size, antialias=True), TF.resize(
                boxes, size=None, max_size=self.size)
        boxes = boxes.as_subclass(torch.Tensor)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= 1) & ((boxes[:, 3] - boxes[:, 1]) >= 1)
        labels = torch.tensor([c for _, c in anns], dtype=torch.int64)
        target = {"boxes": boxes[keep].float(), "labels": labels[keep], "image_id": image_id}
        return TF.to_dtype(image, torch.float32, scale=True), target

    def __repr__(self) -> str:
        return f"CocoDetectionFolder({str(self.ann_file)!r}, images={len(self)}, classes={len(self.classes)})"


def check_coco_folder(root: str | os.PathLike[str], *, size: int | None = None) -> dict[str, CocoDetectionFolder]:
    """Load every split of a COCO-format folder, checked (`coco_splits`, `CocoDetectionFolder`).

    The splits share the labels of the first one (``train``, else ``all``, else the first found); a split
    with no image raises.

    Raises:
        FileNotFoundError, ValueError: what is wrong with the folder, by name.
    """
    splits = coco_splits(root)
    order = sorted(splits, key=lambda k: ("train", "all", "val", "test").index(k))
    out: dict[str, CocoDetectionFolder] = {}
    categories: list[int] | None = None
    for name in order:
        ds = CocoDetectionFolder(splits[name].ann_file, size=size, categories=categories)
        if len(ds) == 0:
            raise ValueError(f"{splits[name].ann_file} lists no image")
        categories = ds.category_ids
        out[name] = ds
    return out
