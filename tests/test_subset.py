"""The seeded class subset of an ImageFolder tree (rartsprune.app.data.subset) and recipes/imagenet_subset.py."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

from rartsprune.app.data.subset import build_class_subset
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"n{i:08d}" for i in range(12)]


def _tree(root: Path, classes=CLASSES, splits=("train", "val")) -> Path:
    """class i holds i + 1 train images and 1 + i % 2 val images (empty files with image names) + a text file."""
    for split in splits:
        for i, c in enumerate(classes):
            d = root / split / c
            d.mkdir(parents=True)
            for k in range(i + 1 if split == "train" else 1 + i % 2):
                (d / f"{c}_{k}.JPEG").write_bytes(bytes([i, k]))
            (d / "notes.txt").write_text("not an image")
    return root


def _snapshot(root: Path) -> dict[str, object]:
    """Every path below root with its kind and content (link target, bytes), to compare before/after."""
    state: dict[str, object] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            key = str(p.relative_to(root))
            if p.is_symlink():
                state[key] = ("link", os.readlink(p))
            elif p.is_dir():
                state[key] = ("dir",)
            else:
                state[key] = ("file", p.read_bytes())
    return state


def test_subset_is_deterministic_and_recorded(tmp_path):
    src = _tree(tmp_path / "imagenet")
    info = build_class_subset(src, tmp_path / "a", classes=5, seed=3)
    again = build_class_subset(src, tmp_path / "b", classes=5, seed=3)
    expected = sorted(random.Random(3).sample(sorted(CLASSES), 5))
    assert info["classes"] == again["classes"] == expected
    for split in ("train", "val"):
        assert sorted(p.name for p in (tmp_path / "a" / split).iterdir()) == expected
        for c in expected:
            link = tmp_path / "a" / split / c
            assert link.is_symlink() and link.resolve() == (src / split / c).resolve()
    record = json.loads((tmp_path / "a" / "classes.json").read_text())
    assert record == info
    assert record["seed"] == 3 and record["num_classes"] == 5 and record["source"] == str(src.resolve())
    assert record["splits"] == ["train", "val"] and record["link"] == "symlink"
    idx = {c: CLASSES.index(c) for c in expected}
    assert record["image_counts"]["train"] == {c: i + 1 for c, i in idx.items()}  # notes.txt not counted
    assert record["image_counts"]["val"] == {c: 1 + i % 2 for c, i in idx.items()}
    assert record["total_images"] == {"train": sum(i + 1 for i in idx.values()),
                                      "val": sum(1 + i % 2 for i in idx.values())}


def test_different_seeds_pick_different_classes(tmp_path):
    src = _tree(tmp_path / "imagenet")
    picks = {tuple(build_class_subset(src, tmp_path / f"s{s}", classes=4, seed=s)["classes"]) for s in range(5)}
    assert len(picks) == 5
    # the order of the class folders on disk does not matter: the candidates are sorted first
    assert build_class_subset(src, tmp_path / "all", classes=12, seed=9)["classes"] == CLASSES


def test_identical_rerun_is_a_noop(tmp_path):
    src = _tree(tmp_path / "imagenet")
    out = tmp_path / "sub"
    first = build_class_subset(src, out, classes=3, seed=1)
    before = _snapshot(tmp_path)
    mtime = (out / "classes.json").stat().st_mtime_ns
    assert build_class_subset(src, out, classes=3, seed=1) == first
    assert _snapshot(tmp_path) == before and (out / "classes.json").stat().st_mtime_ns == mtime
    # an existing empty folder is filled
    (tmp_path / "empty").mkdir()
    assert build_class_subset(src, tmp_path / "empty", classes=3, seed=1)["classes"] == first["classes"]


def test_copy_mode_hard_links_files(tmp_path):
    src = _tree(tmp_path / "imagenet")
    info = build_class_subset(src, tmp_path / "c", classes=2, seed=0, link="copy", splits=("train",))
    for c in info["classes"]:
        d = tmp_path / "c" / "train" / c
        assert d.is_dir() and not d.is_symlink()
        files = sorted(p.name for p in d.iterdir())
        assert files == sorted(p.name for p in (src / "train" / c).iterdir())
        for name in files:
            assert (d / name).read_bytes() == (src / "train" / c / name).read_bytes()
            assert os.path.samefile(d / name, src / "train" / c / name)  # same file system: hard links
    assert not (tmp_path / "c" / "val").exists() and info["splits"] == ["train"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"classes": 0}, "classes must be a positive int"),
        ({"classes": 2.5}, "classes must be a positive int"),
        ({"classes": True}, "classes must be a positive int"),
        ({"classes": 13}, "has 12 classes per split, fewer than the 13"),
        ({"splits": ("train", "test")}, "has no test/ folder"),
        ({"link": "hardlink"}, "link must be one of"),
        ({"seed": "0"}, "seed must be an int"),
        ({"splits": "train"}, "splits must be a non-empty sequence"),
    ],
)
def test_refusals_leave_the_filesystem_unchanged(tmp_path, kwargs, message):
    src = _tree(tmp_path / "imagenet")
    before = _snapshot(tmp_path)
    with pytest.raises(ValueError, match=message):
        build_class_subset(src, tmp_path / "out" / "sub", **{"classes": 3, **kwargs})
    assert _snapshot(tmp_path) == before


def test_refusals_on_the_tree_and_out(tmp_path):
    src = _tree(tmp_path / "imagenet")
    build_class_subset(src, tmp_path / "sub", classes=3, seed=0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("someone's files")
    bad_val = _tree(tmp_path / "bad", classes=CLASSES[:4])
    (bad_val / "val" / CLASSES[0]).rename(bad_val / "val" / "extra")
    flat_val = _tree(tmp_path / "flat", classes=CLASSES[:4], splits=("train",))
    (flat_val / "val").mkdir()
    (flat_val / "val" / "ILSVRC2012_val_00000001.JPEG").write_bytes(b"")
    cases = [
        (dict(root=src, out=tmp_path / "sub", classes=3, seed=1), "built from a different selection .*seed"),
        (dict(root=src, out=tmp_path / "sub", classes=4, seed=0), "built from a different selection .*classes"),
        (dict(root=src, out=tmp_path / "other", classes=3), "not empty and has no classes.json"),
        (dict(root=tmp_path / "nowhere", out=tmp_path / "n", classes=3), "is not a folder"),
        (dict(root=bad_val, out=tmp_path / "n", classes=2), "different class folders: 1 only in train/"),
        (dict(root=flat_val, out=tmp_path / "n", classes=2), "raw ILSVRC val/ is flat"),
        (dict(root=src, out=src / "train" / "sub", classes=2), "inside the source split folder"),
    ]
    for kwargs, message in cases:
        before = _snapshot(tmp_path)
        with pytest.raises(ValueError, match=message):
            build_class_subset(**kwargs)
        assert _snapshot(tmp_path) == before, kwargs
    # the subset is still the one first built
    assert json.loads((tmp_path / "sub" / "classes.json").read_text())["seed"] == 0


def _recipe():
    return load_script("recipes/imagenet_subset.py", "imagenet_subset")


def test_command_prints_classes_and_refuses_cleanly(tmp_path, capsys):
    recipe = _recipe()
    src = _tree(tmp_path / "imagenet")
    out = tmp_path / "imagenet4"
    assert recipe.main(["--root", str(src), "--out", str(out), "--classes", "4", "--seed", "7"]) == 0
    printed = capsys.readouterr().out
    chosen = json.loads((out / "classes.json").read_text())["classes"]
    assert chosen == sorted(random.Random(7).sample(CLASSES, 4))
    assert f"4 classes (seed 7) from {src.resolve()}" in printed
    assert all(f"  {c}  train={CLASSES.index(c) + 1} val={1 + CLASSES.index(c) % 2}" in printed for c in chosen)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as exc:
        recipe.main(["--root", str(src), "--out", str(out), "--classes", "4", "--seed", "8"])
    assert exc.value.code == 2 and "different selection" in capsys.readouterr().err
    assert _snapshot(tmp_path) == before
    assert "--classes" in recipe.build_parser().format_help()
