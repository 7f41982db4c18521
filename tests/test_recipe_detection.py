"""The detection recipe (recipes/detection.py), its data (rartsprune.app.data.detection) and its mAP.

One tiny end-to-end run (16 generated 64 px images, one epoch per phase) is shared by the recipe tests: it stops
after the search, is resumed to the end, then resumed again (nothing left to do).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest
import torch

from rartsprune.app.data.detection import (
    CocoDetectionFolder,
    ShapesDetection,
    check_coco_folder,
    coco_splits,
    detection_collate,
)
from rartsprune.app.detection_metrics import evaluate_map, require_map
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--train-images", "16", "--val-images", "8", "--image-size", "64", "--batch-size", "4", "--epochs", "1",
        "--search-epochs", "1", "--finetune-epochs", "1", "--bn-recalibration", "2", "--no-progress", "--no-plots"]


def _recipe() -> ModuleType:
    return load_script("recipes/detection.py", "detection_recipe")


@pytest.fixture(scope="module")
def recipe() -> ModuleType:
    return _recipe()


# --------------------------------------------------------------------------- generated shapes


def test_shapes_are_deterministic_from_the_seed_and_boxes_lie_inside() -> None:
    a, b, c = (ShapesDetection(12, size=64, seed=s) for s in (7, 7, 8))
    n_boxes = 0
    for i in range(len(a)):
        (xa, ta), (xb, tb), (xc, _) = a[i], b[i], c[i]
        assert torch.equal(xa, xb) and torch.equal(ta["boxes"], tb["boxes"]) and torch.equal(ta["labels"], tb["labels"])
        assert not torch.equal(xa, xc)  # another seed, another image
        boxes, labels = ta["boxes"], ta["labels"]
        assert xa.shape == (3, 64, 64) and 0.0 <= float(xa.min()) and float(xa.max()) <= 1.0
        assert 1 <= len(boxes) <= 3 and len(labels) == len(boxes)
        assert bool((boxes >= 0).all() and (boxes <= 64).all())
        assert bool((boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all())
        assert set(labels.tolist()) <= {1, 2, 3}
        for j in range(len(boxes)):  # shapes never overlap
            for k in range(j + 1, len(boxes)):
                p, q = boxes[j], boxes[k]
                assert p[2] <= q[0] or q[2] <= p[0] or p[3] <= q[1] or q[3] <= p[1]
        n_boxes += len(boxes)
    assert n_boxes > len(a)  # more than one shape per image on average
    assert a[-1][1]["image_id"] == 11
    with pytest.raises(IndexError):
        a[12]


def test_a_shape_box_is_the_tight_box_of_its_pixels() -> None:
    ds = ShapesDetection(4, size=64, seed=0, max_objects=1, noise=0.0)
    for i in range(len(ds)):
        image, target = ds[i]
        x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
        background = image[:, 0, 0]  # corners are background unless the shape reaches them
        inside = image[:, y1:y2, x1:x2]
        # every row and column of the box holds a pixel of the shape's colour, the rows just outside none
        colour = inside[:, (y2 - y1) // 2, (x2 - x1) // 2]
        same = (inside - colour[:, None, None]).abs().amax(0) < 1e-6
        assert bool(same.any(0).all() and same.any(1).all())
        if y2 < 64:
            assert not bool(((image[:, y2, x1:x2] - colour[:, None]).abs().amax(0) < 1e-6).any())
        assert float((colour - background).abs().sum()) > 0.1


@pytest.mark.parametrize("kwargs, match", [({"n": 0}, "n must"), ({"n": 2, "size": 16}, "size must"),
                                           ({"n": 2, "min_frac": 0.5, "max_frac": 0.3}, "min_frac"),
                                           ({"n": 2, "max_objects": 0}, "max_objects")])
def test_shapes_refuse_bad_settings(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        ShapesDetection(**kwargs)


# --------------------------------------------------------------------------- COCO-format folders


def _png(path: Path, h: int, w: int) -> None:
    from torchvision.io import write_png

    path.parent.mkdir(parents=True, exist_ok=True)
    write_png(torch.randint(0, 256, (3, h, w), dtype=torch.uint8), str(path))


def _coco(tmp_path: Path) -> Path:
    """train: two images (64 x 48 and 32 x 32), categories 3 ("cat") and 7 ("dog"), one crowd box; val: one
    image without boxes. COCO's own layout: annotations/instances_NAME.json, images in NAME/."""
    root = tmp_path / "coco"
    _png(root / "train" / "a.png", 48, 64)
    _png(root / "train" / "sub" / "b.png", 32, 32)
    _png(root / "val" / "c.png", 40, 40)
    cats = [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]
    train = {"images": [{"id": 10, "file_name": "a.png", "width": 64, "height": 48},
                        {"id": 11, "file_name": "sub/b.png", "width": 32, "height": 32}],
             "annotations": [{"id": 1, "image_id": 10, "category_id": 7, "bbox": [10, 8, 20, 12], "iscrowd": 0},
                             {"id": 2, "image_id": 10, "category_id": 3, "bbox": [0, 0, 64, 48], "iscrowd": 1},
                             {"id": 3, "image_id": 11, "category_id": 3, "bbox": [4, 4, 8, 16]}],
             "categories": cats}
    val = {"images": [{"id": 20, "file_name": "c.png"}], "annotations": [], "categories": cats}
    (root / "annotations").mkdir()
    (root / "annotations" / "instances_train.json").write_text(json.dumps(train))
    (root / "annotations" / "instances_val.json").write_text(json.dumps(val))
    return root


def test_coco_folder_loads_boxes_labels_and_resizes(tmp_path: Path) -> None:
    root = _coco(tmp_path)
    (root / "annotations" / "captions_train.json").write_text("{}")  # COCO's other files are not instances
    (root / "annotations" / "person_keypoints_val.json").write_text("{}")
    assert sorted(coco_splits(root)) == ["train", "val"]
    splits = check_coco_folder(root, size=32)
    train, val = splits["train"], splits["val"]
    assert len(train) == 2 and len(val) == 1
    assert train.classes == ("cat", "dog") and train.num_classes == 3 and val.category_ids == [3, 7]
    image, target = train[0]  # 64 x 48 resized to 32 x 24: boxes halved, the crowd box dropped
    assert image.shape == (3, 24, 32) and image.dtype == torch.float32 and float(image.max()) <= 1.0
    assert target["boxes"].tolist() == [[5.0, 4.0, 15.0, 10.0]] and target["labels"].tolist() == [2]
    assert target["image_id"] == 10
    image, target = train[1]  # already 32 px: unchanged, in a subfolder
    assert image.shape == (3, 32, 32) and target["boxes"].tolist() == [[4.0, 4.0, 12.0, 20.0]]
    assert target["labels"].tolist() == [1]
    image, target = val[0]  # a negative image
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    images, targets = detection_collate([train[0], val[0]])
    assert len(images) == 2 and targets[1]["image_id"] == 20


def test_coco_folder_with_one_json_and_images_beside_it(tmp_path: Path) -> None:
    root = tmp_path / "one"
    _png(root / "x.png", 20, 30)
    data = {"images": [{"id": 1, "file_name": "x.png"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 3, 4]}],
            "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations.json").write_text(json.dumps(data))
    splits = check_coco_folder(root)
    assert list(splits) == ["all"] and splits["all"][0][1]["boxes"].tolist() == [[1.0, 2.0, 4.0, 6.0]]


def test_bad_coco_folders_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        coco_splits(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no annotation json"):
        coco_splits(empty)
    for name in ("train_a.json", "train_b.json"):
        (empty / name).write_text("{}")
    with pytest.raises(ValueError, match="two annotation files for the 'train' split"):
        coco_splits(empty)
    root = _coco(tmp_path)
    ann = root / "annotations" / "instances_train.json"
    good = json.loads(ann.read_text())

    def broken(change: dict[str, Any]) -> Path:
        path = tmp_path / "broken.json"
        path.write_text(json.dumps({**good, **change}))
        return path

    with pytest.raises(ValueError, match="'categories'"):
        CocoDetectionFolder(broken({"categories": None}), root / "train")
    bad_cat = [{**good["annotations"][0], "category_id": 99}]
    with pytest.raises(ValueError, match="category_id 99"):
        CocoDetectionFolder(broken({"annotations": bad_cat}), root / "train")
    bad_box = [{**good["annotations"][0], "bbox": [1, 2, 3]}]
    with pytest.raises(ValueError, match="bbox"):
        CocoDetectionFolder(broken({"annotations": bad_box}), root / "train")
    bad_image = [{**good["annotations"][0], "image_id": 999}]
    with pytest.raises(ValueError, match="image 999"):
        CocoDetectionFolder(broken({"annotations": bad_image}), root / "train")
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        CocoDetectionFolder(tmp_path / "text.json", root / "train")
    (root / "train" / "a.png").unlink()
    with pytest.raises(FileNotFoundError, match="a.png"):
        check_coco_folder(root)


# --------------------------------------------------------------------------- mAP


class _Fixed(torch.nn.Module):
    """Returns the given predictions for image i of every batch."""

    def __init__(self, preds: list[dict[str, torch.Tensor]]) -> None:
        super().__init__()
        self.preds = preds
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return self.preds[: len(images)]


def _target(boxes: list[list[float]], labels: list[int]) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes), "labels": torch.tensor(labels)}


def test_map_matches_a_hand_computed_case() -> None:
    # class 1: two boxes, one found exactly (score 0.9): precision 1 up to recall 0.5, so 51 of COCO's 101 recall
    # points have precision 1: AP = 51/101 at every IoU threshold. class 2: one box, found after a higher-scored
    # false positive: precision 1/2 at recall 1, interpolated 1/2 at every recall point: AP = 0.5.
    gt = _target([[0, 0, 10, 10], [20, 20, 30, 30], [40, 0, 60, 20]], [1, 1, 2])
    pred = {"boxes": torch.tensor([[0.0, 0, 10, 10], [40, 40, 60, 60], [40, 0, 60, 20]]),
            "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 2, 2])}
    model = _Fixed([pred])
    result = evaluate_map(model, [([torch.zeros(3, 64, 64)], [gt])])
    expected = (51 / 101 + 0.5) / 2
    assert result["map"] == pytest.approx(expected, abs=1e-4)
    assert result["map_50"] == pytest.approx(expected, abs=1e-4)
    assert result["mar_100"] == pytest.approx((0.5 + 1.0) / 2, abs=1e-4)
    # a box shifted to IoU 0.6 counts at thresholds 0.5 and 0.55 only: 2 of the 10 thresholds
    shifted = {"boxes": torch.tensor([[0.0, 0, 10, 10], [22.5, 20, 32.5, 30], [40, 0, 60, 20]]),
               "scores": torch.tensor([0.9, 0.8, 0.7]), "labels": torch.tensor([1, 1, 2])}
    result = evaluate_map(_Fixed([shifted]), [([torch.zeros(3, 64, 64)], [gt])])
    assert result["map_50"] == pytest.approx(1.0, abs=1e-4)
    assert result["map"] == pytest.approx((0.2 * 1.0 + 0.8 * 51 / 101 + 1.0) / 2, abs=1e-4)
    assert model.training  # the mode is restored
    with pytest.raises(ValueError, match="no image"):
        evaluate_map(model, [])


def test_missing_extra_is_named(monkeypatch: pytest.MonkeyPatch, recipe: ModuleType, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "torchmetrics.detection", None)
    with pytest.raises(ImportError, match=r"rartsprune\[detection\]"):
        require_map()
    with pytest.raises(SystemExit, match=r"rartsprune\[detection\]"):
        recipe.main([*TINY, "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()  # refused before any work


# --------------------------------------------------------------------------- the recipe


@pytest.mark.parametrize("argv, match", [
    (["--macs", "1.5"], "--macs"),
    (["--macs", "0"], "--macs"),
    (["--coco", "/no/such/folder"], "no such folder"),
    (["--image-size", "32"], "--image-size"),
    (["--train-images", "6", "--batch-size", "4"], "too few"),
    (["--search-epochs", "0"], "--search-epochs"),
    (["--epochs", "-1"], "--epochs"),
])
def test_bad_inputs_are_refused_before_any_work(recipe: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture,
                                                argv: list[str], match: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        recipe.main([*argv, "--out", str(out)])
    assert exc.value.code == 2 and match in capsys.readouterr().err
    assert not out.exists()


def test_a_folder_that_is_not_coco_is_refused(recipe: ModuleType, tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    with pytest.raises(SystemExit, match="no annotation json"):
        recipe.main(["--coco", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--no-progress"])
    assert not (tmp_path / "out").exists()


def test_help(recipe: ModuleType, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        recipe.main(["--help"])
    text = capsys.readouterr().out
    assert exc.value.code == 0
    assert all(flag in text for flag in ("--coco", "--macs", "--resume", "--seed", "--threads", "--out"))


class _Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_run(recipe: ModuleType, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Stop after the search; resume, interrupted as fine-tuning starts (after surgery); resume to the end;
    resume once more. The files and results of each step."""
    out = tmp_path_factory.mktemp("det") / "run"
    argv = [*TINY, "--out", str(out)]
    assert recipe.main([*argv, "--stop-after", "search"]) == 0
    staged = json.loads((out / "results.json").read_text())
    train_phase = recipe.Job.train_phase

    def crash(self: Any, model: Any, phase: str, *args: Any, **kwargs: Any) -> None:
        if phase == "finetune":
            raise _Interrupted
        train_phase(self, model, phase, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recipe.Job, "train_phase", crash)
        with pytest.raises(_Interrupted):
            recipe.main([*argv, "--resume"])
    interrupted = torch.load(out / "checkpoint.pt", weights_only=True)
    assert recipe.main([*argv, "--resume"]) == 0  # rebuilds the pruned model from plan.json, fine-tunes
    final = json.loads((out / "results.json").read_text())
    assert recipe.main([*argv, "--resume"]) == 0  # done: nothing to run
    again = json.loads((out / "results.json").read_text())
    return {"out": out, "argv": argv, "staged": staged, "interrupted": interrupted, "final": final, "again": again}


def test_recipe_reports_map_and_macs_at_the_budget(tiny_run: dict[str, Any]) -> None:
    r = tiny_run["final"]
    for stage in ("before", "after_search", "after_prune_stale_bn", "after_prune", "after_finetune"):
        assert 0.0 <= r[stage]["map"] <= 1.0 and 0.0 <= r[stage]["map_50"] <= 1.0, stage
        assert r[stage]["map"] <= r[stage]["map_50"] + 1e-9
    s = r["summary"]
    assert s["macs_ratio"] == pytest.approx(0.6, abs=0.02)
    assert s["macs_ratio"] == r["after_prune"]["macs"] / r["before"]["macs"]
    assert r["before"]["macs"] > 1e6 and s["params_ratio"] < 0.9
    assert s["map_finetuned"] == r["after_finetune"]["map"] and s["map_before"] == r["before"]["map"]
    assert r["data"] == {"kind": "generated shapes", "train_images": 16, "val_images": 8,
                         "classes": ["rectangle", "ellipse", "triangle"], "image_size": 64}
    out = tiny_run["out"]
    assert "| pruned + fine-tuned |" in (out / "results.md").read_text()
    for name in ("plan.json", "baseline.pt", "pruned.pt"):
        assert (out / name).is_file(), name
    assert r["plots"] == [] and not list(out.glob("*.png"))  # --no-plots (the plots: test_summary_plot)


def test_summary_plot(recipe: ModuleType, tiny_run: dict[str, Any], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    job = SimpleNamespace(args=SimpleNamespace(plots=True), results=tiny_run["final"], out=tmp_path)
    assert recipe._draw_summary(job) == "detection.png"
    assert (tmp_path / "detection.png").stat().st_size > 10_000
    job.args.plots = False
    assert recipe._draw_summary(job) is None


def test_pruned_widths_really_shrank(tiny_run: dict[str, Any]) -> None:
    out, widths = tiny_run["out"], tiny_run["final"]["widths"]
    assert any(w["kept"] < w["channels"] for w in widths.values())
    assert all(1 <= w["kept"] <= w["channels"] for w in widths.values())
    base = torch.load(out / "baseline.pt", weights_only=True)
    pruned = torch.load(out / "pruned.pt", weights_only=True)
    assert set(base) == set(pruned)
    smaller = [k for k in base if pruned[k].shape != base[k].shape]
    assert smaller and all(pruned[k].numel() < base[k].numel() for k in smaller)
    assert sum(v.numel() for v in pruned.values()) < 0.9 * sum(v.numel() for v in base.values())
    assert sum(v.numel() for k, v in pruned.items() if "running" not in k and "num_batches" not in k) == \
        tiny_run["final"]["after_prune"]["params"]


def test_resume_skips_finished_phases(recipe: ModuleType, tiny_run: dict[str, Any]) -> None:
    staged, final, again = tiny_run["staged"], tiny_run["final"], tiny_run["again"]
    assert "before" in staged and "after_prune" not in staged  # stopped after the search
    phases = [(h["phase"], h.get("epoch")) for h in final["history"]]
    assert phases.count(("baseline", 1)) == 1 and phases.count(("search", 1)) == 1  # not run again
    assert phases.count(("finetune", 1)) == 1
    assert final["before"] == staged["before"]
    assert final["wall_time_s"]["baseline"] == staged["wall_time_s"]["baseline"]
    assert final["wall_time_s"]["search"] == staged["wall_time_s"]["search"]
    assert again == final  # the finished run: nothing ran
    interrupted = tiny_run["interrupted"]  # the checkpoint written after surgery, before fine-tuning
    assert (interrupted["phase"], interrupted["epoch"]) == ("finetune", 0)
    assert json.loads(interrupted["results"])["after_prune"] == final["after_prune"]
    state = torch.load(tiny_run["out"] / "checkpoint.pt", weights_only=True)
    assert state["phase"] == "done"
    with pytest.raises(SystemExit, match="--resume"):  # a finished run is not overwritten by accident
        recipe.main(tiny_run["argv"])
    with pytest.raises(SystemExit, match="other settings"):
        recipe.main([*tiny_run["argv"], "--resume", "--macs", "0.5"])


def test_recipe_searches_a_coco_folder_with_negative_images(recipe: ModuleType, tmp_path: Path) -> None:
    """``--coco``: the generated shapes written as a COCO folder (JPEGs of 96 px, category ids 5 / 9 / 12), two
    training images without boxes (kept for training, left out of the search's batches)."""
    from torchvision.io import write_jpeg

    root = tmp_path / "coco"
    (root / "annotations").mkdir(parents=True)
    cats = [{"id": 5, "name": "rectangle"}, {"id": 9, "name": "ellipse"}, {"id": 12, "name": "triangle"}]
    for split, n, seed in (("train", 10, 0), ("val", 4, 1)):
        ds = ShapesDetection(n, size=96, seed=seed)
        images, anns = [], []
        (root / split).mkdir()
        for i in range(n):
            x, t = ds[i]
            write_jpeg((x * 255).byte(), str(root / split / f"{i}.jpg"))
            images.append({"id": i, "file_name": f"{i}.jpg"})
            if split == "train" and i < 2:
                continue
            for (x1, y1, x2, y2), label in zip(t["boxes"].tolist(), t["labels"].tolist()):
                anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cats[label - 1]["id"],
                             "bbox": [x1, y1, x2 - x1, y2 - y1], "iscrowd": 0})
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    out = tmp_path / "out"
    argv = ["--coco", str(root), "--image-size", "64", "--batch-size", "4", "--epochs", "1", "--search-epochs", "1",
            "--no-progress", "--no-plots", "--stop-after", "search", "--out", str(out)]
    assert recipe.main(argv) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["data"]["train_images"] == 10 and r["data"]["val_images"] == 4
    assert r["data"]["classes"] == ["rectangle", "ellipse", "triangle"]
    assert 0.0 <= r["before"]["map"] <= 1.0 and r["before"]["macs"] > 1e6
    search = [h for h in r["history"] if h["phase"] == "search"]
    assert len(search) == 1 and search[0]["steps"] == 1 and search[0]["loss_v"] > 0


def test_faster_rcnn_detector_prunes_to_the_macs_budget(recipe: ModuleType, tmp_path: Path) -> None:
    """``--detector fasterrcnn_mobilenet`` end to end: its MACs (box head at a fixed proposal count) meet the budget."""
    out = tmp_path / "frcnn"
    assert recipe.main([*TINY, "--detector", "fasterrcnn_mobilenet", "--threads", "1", "--out", str(out)]) == 0
    r = json.loads((out / "results.json").read_text())
    assert r["settings"]["detector"] == "fasterrcnn_mobilenet"
    ratio = r["after_prune"]["macs"] / r["before"]["macs"]
    assert abs(ratio - 0.6) <= 0.02 * 0.6
    assert r["after_prune"]["params"] < r["before"]["params"]
    assert 0.0 <= r["after_finetune"]["map"] <= 100.0


def test_unknown_detector_is_refused(recipe: ModuleType) -> None:
    with pytest.raises(ValueError, match="unknown detector 'yolo'"):
        recipe.build_detector(3, 64, "yolo")
