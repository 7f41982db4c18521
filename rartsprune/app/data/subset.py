"""A seeded random class subset of an ImageFolder tree (the paper's 20-class "ImageNet-R" subset).

`build_class_subset` picks ``classes`` class folders of an ImageNet-style tree (``root/train/<class>/...``,
``root/val/<class>/...``) with a seeded generator and builds ``out/<split>/<class>`` for every split, as
symlinks to the source class folders (``link="symlink"``, instant, no extra space) or as per-file hard
links, falling back to copies across file systems (``link="copy"``, for trees that must outlive or leave
the source). ``out/classes.json`` records the chosen classes, the seed, the source root and the image
counts; ``recipes/imagenet_subset.py`` is its command line.

The choice depends only on the sorted class names and the seed: ``random.Random(seed).sample(sorted
names, classes)``, so the same ImageNet gives the same subset on every machine.

Examples:
    >>> import tempfile, pathlib
    >>> tmp = pathlib.Path(tempfile.mkdtemp())
    >>> for split in ("train", "val"):
    ...     for c in ("ant", "bee", "cat", "dog"):
    ...         (tmp / "src" / split / c).mkdir(parents=True)
    ...         _ = (tmp / "src" / split / c / "0.jpg").write_bytes(b"")
    >>> info = build_class_subset(tmp / "src", tmp / "sub", classes=2, seed=0)
    >>> info["classes"], sorted(p.name for p in (tmp / "sub" / "train").iterdir())
    (['bee', 'dog'], ['bee', 'dog'])
"""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torchvision.datasets.folder import IMG_EXTENSIONS

__all__ = ["build_class_subset", "LINK_MODES"]

#: Ways of populating ``out/<split>/<class>``.
LINK_MODES = ("symlink", "copy")

#: File name of the record written into the subset's root.
RECORD = "classes.json"


def _class_dirs(folder: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))


def _count_images(folder: Path) -> int:
    """Image files below ``folder`` (recursively, following links, as ``ImageFolder`` finds them)."""
    n = 0
    for _, _, files in os.walk(folder, followlinks=True):
        n += sum(1 for f in files if f.lower().endswith(IMG_EXTENSIONS))
    return n


def _is_within(path: Path, folder: Path) -> bool:
    try:
        path.relative_to(folder)
    except ValueError:
        return False
    return True


def _check_args(classes: Any, seed: Any, splits: Any, link: Any) -> tuple[str, ...]:
    if isinstance(classes, bool) or not isinstance(classes, int) or classes < 1:
        raise ValueError(f"classes must be a positive int, got {classes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if link not in LINK_MODES:
        raise ValueError(f"link must be one of {LINK_MODES}, got {link!r}")
    if isinstance(splits, str) or not isinstance(splits, Sequence) or not splits:
        raise ValueError(f"splits must be a non-empty sequence of folder names, got {splits!r}")
    names = tuple(splits)
    bad = [s for s in names if not isinstance(s, str) or not s or os.sep in s or s in (".", "..")]
    if bad or len(set(names)) != len(names):
        raise ValueError(f"splits must be distinct plain folder names, got {splits!r}")
    return names


def _source_classes(root: Path, splits: tuple[str, ...]) -> list[str]:
    """Sorted class names, the same in every split (else a ValueError naming the difference)."""
    if not root.is_dir():
        raise ValueError(f"root {root} is not a folder")
    missing = [s for s in splits if not (root / s).is_dir()]
    if missing:
        raise ValueError(
            f"root {root} has no {', '.join(m + '/' for m in missing)} folder (splits {list(splits)}); "
            "expected an ImageFolder tree with one folder of class folders per split"
        )
    per_split = {s: _class_dirs(root / s) for s in splits}
    first = splits[0]
    names = per_split[first]
    for s in splits[1:]:
        if per_split[s] != names:
            only_first = sorted(set(names) - set(per_split[s]))
            only_here = sorted(set(per_split[s]) - set(names))
            hint = " (the raw ILSVRC val/ is flat: sort it into class folders first)" if not per_split[s] else ""
            raise ValueError(
                f"{s}/ and {first}/ of {root} hold different class folders{hint}: "
                f"{len(only_first)} only in {first}/ (e.g. {only_first[:3]}), "
                f"{len(only_here)} only in {s}/ (e.g. {only_here[:3]})"
            )
    return names


def _selection(record: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(record.get(k) for k in ("classes", "seed", "source", "splits", "link"))


def _populate(src: Path, dst: Path, link: str) -> None:
    if link == "symlink":
        os.symlink(src.resolve(), dst, target_is_directory=True)
        return
    for dirpath, _, files in os.walk(src, followlinks=True):
        target = dst / Path(dirpath).relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            try:
                os.link(os.path.join(dirpath, f), target / f)
            except OSError:  # another file system, or hard links not allowed: copy
                shutil.copy2(os.path.join(dirpath, f), target / f)


def build_class_subset(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    classes: int = 20,
    seed: int = 0,
    splits: Sequence[str] = ("train", "val"),
    link: str = "symlink",
) -> dict[str, Any]:
    """Build ``out/<split>/<class>`` for ``classes`` seeded random classes of ``root`` and record them.

    Args:
        root: an ImageFolder tree with one folder per split (``root/train/<class>/<images>``, ...); every
            split must hold the same class folders.
        out: the subset's root; must not exist, be empty, or hold this same subset (then nothing is done).
        classes: how many classes to pick.
        seed: seed of ``random.Random``; the candidates are the sorted class names.
        splits: the split folders to mirror (``("train", "val")``; e.g. ``("train", "test")``).
        link: ``"symlink"`` (one link per class folder) or ``"copy"`` (per-file hard links, copies where
            hard links are impossible).

    Returns:
        the record written to ``out/classes.json``: ``classes`` (sorted), ``num_classes``, ``seed``,
        ``source`` (resolved root), ``splits``, ``link``, ``image_counts`` (split -> class -> images) and
        ``total_images`` (split -> images).

    Raises:
        ValueError: bad ``classes`` / ``seed`` / ``splits`` / ``link``, a root without a split folder or
            with different classes per split, fewer classes than asked, ``out`` inside a source split,
            or a non-empty ``out`` that is not this same subset. Nothing is written then.

    Examples:
        >>> build_class_subset("/data/imagenet", "/data/imagenet20", classes=20, seed=0)  # doctest: +SKIP
        {'classes': [...], 'num_classes': 20, 'seed': 0, ...}
    """
    names = _check_args(classes, seed, splits, link)
    src = Path(root).expanduser().resolve()
    dest = Path(out).expanduser().absolute()
    available = _source_classes(src, names)
    if len(available) < classes:
        raise ValueError(f"root {src} has {len(available)} classes per split, fewer than the {classes} asked for")
    for s in names:
        if _is_within(dest.resolve(), src / s):
            raise ValueError(f"out {dest} lies inside the source split folder {src / s}; put it elsewhere")
    chosen = sorted(random.Random(seed).sample(available, classes))
    wanted = {"classes": chosen, "seed": seed, "source": str(src), "splits": list(names), "link": link}

    if dest.exists() and not dest.is_dir():
        raise ValueError(f"out {dest} exists and is not a folder")
    if dest.is_dir() and any(dest.iterdir()):
        record_path = dest / RECORD
        if not record_path.is_file():
            raise ValueError(f"out {dest} is not empty and has no {RECORD}: not a subset built here; "
                             "pick an empty or new folder")
        try:
            record = json.loads(record_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"out {dest} holds an unreadable {RECORD} ({exc}); remove the folder") from exc
        if not isinstance(record, dict) or _selection(record) != _selection(wanted):
            have = dict(zip(("classes", "seed", "source", "splits", "link"), _selection(record)))
            diff = [k for k in wanted if have.get(k) != wanted[k]]
            raise ValueError(
                f"out {dest} was built from a different selection (differs in {', '.join(diff)}: "
                f"recorded seed {have.get('seed')!r}, source {have.get('source')!r}); pick another folder or "
                "remove it"
            )
        incomplete = [f"{s}/{c}" for s in names for c in chosen if not (dest / s / c).is_dir()]
        if incomplete:
            raise ValueError(f"out {dest} records this subset but lacks {incomplete[:3]}; remove it and rebuild")
        return record

    counts = {s: {c: _count_images(src / s / c) for c in chosen} for s in names}
    record = {
        "classes": chosen,
        "num_classes": classes,
        "seed": seed,
        "source": str(src),
        "splits": list(names),
        "link": link,
        "image_counts": counts,
        "total_images": {s: sum(counts[s].values()) for s in names},
    }
    # build next to out, then rename: an interrupted build leaves no half-made subset behind
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.parent / f".{dest.name}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)  # left over by a killed build of this process id
    tmp.mkdir()
    try:
        for s in names:
            (tmp / s).mkdir()
            for c in chosen:
                _populate(src / s / c, tmp / s / c, link)
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, dest)  # dest is absent or an empty folder: rename replaces it
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record
