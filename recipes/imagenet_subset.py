#!/usr/bin/env python
"""Build a seeded random class subset of ImageNet (the paper's 20-class "ImageNet-R") as a tree of links.

Picks ``--classes`` class folders of ``--root`` (an ImageFolder tree with ``train/`` and ``val/`` class
folders) with ``random.Random(--seed)`` over the sorted class names, and builds ``--out/train/<class>`` and
``--out/val/<class>`` as symlinks to them (``--link copy``: per-file hard links, or copies across file
systems). ``--out/classes.json`` records the classes, the seed, the source and the image counts; running
the same command again does nothing, a different selection into the same folder is refused.

Example::

    python recipes/imagenet_subset.py --root /data/imagenet --out /data/imagenet20 --classes 20 --seed 0
    python recipes/mobilenetv2_subset.py --data /data/imagenet20 --out runs/mbv2_imagenet20
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rartsprune.app.data.subset import LINK_MODES, build_class_subset  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, help="ImageNet root holding train/ and val/ class folders")
    p.add_argument("--out", required=True, help="folder of the subset (new, empty, or this same subset)")
    p.add_argument("--classes", type=int, default=20, help="number of classes (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the class choice (default 0)")
    p.add_argument("--splits", default="train,val", help="comma-separated split folders (default train,val)")
    p.add_argument("--link", choices=LINK_MODES, default="symlink",
                   help="symlink class folders, or copy (per-file hard links / copies); default symlink")
    return p


def main(argv: list[str] | None = None) -> int:
    """Build the subset and print its classes; returns the exit status (2 on a refusal).

    Examples:
        >>> main(["--root", "/data/imagenet", "--out", "/data/imagenet20"])  # doctest: +SKIP
        0
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    splits = tuple(s.strip() for s in args.splits.split(",") if s.strip())
    try:
        info = build_class_subset(args.root, args.out, classes=args.classes, seed=args.seed, splits=splits,
                                  link=args.link)
    except ValueError as exc:
        parser.error(str(exc))
    counts = ", ".join(f"{s} {info['total_images'][s]} images" for s in info["splits"])
    print(f"{info['num_classes']} classes (seed {info['seed']}) from {info['source']}: {counts}")
    for name in info["classes"]:
        per_split = " ".join(f"{s}={info['image_counts'][s][name]}" for s in info["splits"])
        print(f"  {name}  {per_split}")
    print(f"wrote {Path(args.out) / 'classes.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
