"""Prune a torchvision detector (SSDlite by default, or a Faster R-CNN) with RARTS to a MACs budget: train, search, cut,
fine-tune.

The detector is torchvision's ``ssdlite320_mobilenet_v3_large`` built from random weights (nothing is
downloaded), with its fixed input size set to ``--image-size`` (its transform resizes every image to that
square); ``--detector fasterrcnn_mobilenet`` / ``fasterrcnn_resnet50`` takes a Faster R-CNN with a
MobileNetV3-Large / ResNet-50 FPN instead (random weights, anchors sized for ``--image-size``). The data is
either a detection set the recipe draws itself (`rartsprune.app.data.detection`: rectangles, ellipses and
triangles with their boxes and classes, deterministic from ``--seed``) or a COCO-format folder (``--coco DIR``:
``annotations/instances_train*.json`` and ``instances_val*.json`` with the images, or one json that is split
80/20). Phases, each checkpointed to OUT/checkpoint.pt (``--resume`` continues after the last
finished epoch and skips finished phases):

1. baseline: ``--epochs`` of AdamW training (linear warm-up, cosine decay), then mAP and MACs;
2. search: ``rartsprune.prune(model, macs=--macs, loss_fn=detection_loss)``, ``--search-epochs`` of RARTS on
   the two halves of the training set (the auxiliary net trains on one, the model on the other);
3. surgery: ``finalize()`` removes the channels (kept MACs within 2% of the budget), the BatchNorm statistics
   are re-estimated on training images, mAP and MACs right after pruning;
4. fine-tune: ``--finetune-epochs`` of AdamW training of the pruned model, then mAP.

mAP is COCO's box mAP (IoU 0.5:0.95; and at IoU 0.5) from torchmetrics (the ``detection`` extra:
``pip install 'rartsprune[detection]'``). MACs are fvcore multiply-accumulates of one image through the whole
detector (backbone, extra layers and heads; box decoding and NMS have none), batch 1 (`rartsprune.flops`).

Writes OUT/results.json, OUT/results.md (the table), OUT/detection.png, scores.png and widths.png (with
matplotlib), plan.json, baseline.pt and pruned.pt (state dicts), checkpoint.pt. On 1 CPU thread the defaults
take about 9 minutes (mAP 72.0 -> 69.3 at 0.598x MACs, bench/results/detection_recipe.md):

    python recipes/detection.py --threads 1 --out runs/detection
    python recipes/detection.py --coco /data/my_coco --image-size 256 --epochs 30 --out runs/det-coco
    python recipes/detection.py --train-images 16 --val-images 8 --image-size 64 --batch-size 4 \\
        --epochs 1 --search-epochs 1 --finetune-epochs 1 --out /tmp/det-tiny       # a smoke test, ~30 s
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
from torch.utils.data import DataLoader, Dataset, Subset  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

import rartsprune  # noqa: E402
from rartsprune.app.data.detection import ShapesDetection, check_coco_folder, detection_collate  # noqa: E402
from rartsprune.app.detection_metrics import evaluate_map, require_map  # noqa: E402
from rartsprune.app.loop import atomic_save  # noqa: E402
from rartsprune.flops import flops_report, format_count  # noqa: E402
from rartsprune.optim.state import get_rng_state, set_rng_state  # noqa: E402
from rartsprune.split import PairedLoader, epoch_seed, split_dataset  # noqa: E402
from rartsprune.surgery import PruningPlan, apply_plan  # noqa: E402
from rartsprune.tasks import detection_loss, detection_outputs  # noqa: E402
from rartsprune.width.budget import check_budget  # noqa: E402

_CKPT_FORMAT = "rartsprune-detection-recipe/1"
#: Settings that only say how to run; a resumed run must share every other setting with the saved one.
_RUNTIME = ("resume", "progress", "out", "stop_after", "threads", "device", "workers", "plots")
#: The stages of the results table, in order.
STAGES = (("before", "unpruned"), ("after_search", "after search (scored)"),
          ("after_prune_stale_bn", "pruned, old BatchNorm statistics"), ("after_prune", "pruned"),
          ("after_finetune", "pruned + fine-tuned"))


# --------------------------------------------------------------------------- model and data


#: ``--detector`` choices: torchvision builders, each built from random weights (nothing is downloaded).
DETECTORS = ("ssdlite", "fasterrcnn_mobilenet", "fasterrcnn_resnet50")


def _anchors(image_size: int, levels: int, per_level: int) -> Any:
    """Anchor boxes for ``image_size`` px inputs: five sizes from 1/16 to the whole image, three aspect ratios.

    torchvision's Faster R-CNN anchors (32 to 512 px) are sized for 800 px COCO images; on the recipe's small
    inputs most of them would cover the whole image. ``per_level`` 1: one size per feature map (an FPN's five
    levels), 5: every size on every map (the MobileNet FPN's three maps).
    """
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = tuple(max(4, round(image_size / 16 * 2 ** i)) for i in range(5))
    per_map = tuple((s,) for s in sizes) if per_level == 1 else (sizes,) * levels
    return AnchorGenerator(per_map, ((0.5, 1.0, 2.0),) * len(per_map))


def build_detector(num_classes: int, image_size: int, detector: str = "ssdlite") -> nn.Module:
    """A torchvision detector with random weights that resizes its inputs to ``image_size`` px.

    ``detector``: ``"ssdlite"`` (SSDlite320 with MobileNetV3-Large), ``"fasterrcnn_mobilenet"`` (Faster R-CNN
    with a MobileNetV3-Large FPN) or ``"fasterrcnn_resnet50"`` (Faster R-CNN with a ResNet-50 FPN). The Faster
    R-CNNs get anchors sized for ``image_size`` (`_anchors`); built without weights, torchvision gives them
    trainable BatchNorm (not frozen) and every backbone layer trainable.

    Raises:
        ValueError: an unknown ``detector``.

    Examples:
        >>> net = build_detector(4, 64)
        >>> net.transform.fixed_size, net.head.classification_head.module_list[0][1].out_channels
        ((64, 64), 24)
        >>> build_detector(4, 64, "fasterrcnn_mobilenet").rpn.anchor_generator.sizes[0]
        (4, 8, 16, 32, 64)
    """
    from torchvision.models import detection as tvd
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    if detector == "ssdlite":
        model = tvd.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=num_classes)
        # the builder fixes 320 px; SSD's default boxes are fractions of the image, so any size works
        model.transform = GeneralizedRCNNTransform(image_size, image_size, [0.5] * 3, [0.5] * 3, size_divisible=1,
                                                   fixed_size=(image_size, image_size))
        model.detections_per_img = 100  # COCO's mAP looks at 100 detections per image
        model.topk_candidates = 300
        return model
    builders = {"fasterrcnn_mobilenet": (tvd.fasterrcnn_mobilenet_v3_large_fpn, 3, 5),
                "fasterrcnn_resnet50": (tvd.fasterrcnn_resnet50_fpn, 5, 1)}
    if detector in builders:
        build, levels, per_level = builders[detector]
        model = build(weights=None, weights_backbone=None, num_classes=num_classes, min_size=image_size,
                      max_size=image_size, image_mean=[0.5] * 3, image_std=[0.5] * 3)
        # the same number of anchors per location as the builder's, so the RPN head fits them
        model.rpn.anchor_generator = _anchors(image_size, levels, per_level)
        return model
    raise ValueError(f"unknown detector {detector!r}; choose from {', '.join(DETECTORS)}")


class RawHeads(nn.Module):
    """A detector called on images without targets in any mode: its raw head outputs (for BatchNorm recalibration,
    whose forwards run in training mode, where a torchvision detector wants targets)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Any) -> dict[str, Any]:
        return detection_outputs(self.detector, list(images))


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    if n is None or n >= len(ds):  # type: ignore[arg-type]
        return ds
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n]  # type: ignore[arg-type]
    return Subset(ds, sorted(idx.tolist()))


def make_data(args: argparse.Namespace) -> tuple[Dataset, Dataset, tuple[str, ...], dict[str, Any]]:
    """``(train set, val set, class names, description)`` of the command line.

    Raises:
        FileNotFoundError, ValueError: a bad ``--coco`` folder (what is wrong, by name).
    """
    if args.coco is None:
        kw = {"size": args.image_size, "max_objects": args.max_objects}
        train: Dataset = ShapesDetection(args.train_images, seed=epoch_seed(args.seed, 0, "shapes train"), **kw)
        val: Dataset = ShapesDetection(args.val_images, seed=epoch_seed(args.seed, 0, "shapes val"), **kw)
        classes = train.classes  # type: ignore[attr-defined]
        kind = "generated shapes"
    else:
        splits = check_coco_folder(args.coco, size=args.image_size)
        first = splits.get("train") or splits.get("all") or next(iter(splits.values()))
        classes = first.classes
        held = next((splits[k] for k in ("val", "test") if k in splits and splits[k] is not first), None)
        if held is None:  # one annotation file: a seeded 80 / 20 split
            train, val = split_dataset(first, 0.8, seed=epoch_seed(args.seed, 0, "coco holdout"))
        else:
            train, val = first, held
        train = _subset(train, args.train_images, epoch_seed(args.seed, 0, "coco train subset"))
        val = _subset(val, args.val_images, epoch_seed(args.seed, 0, "coco val subset"))
        kind = f"COCO folder {args.coco}"
    info = {"kind": kind, "train_images": len(train), "val_images": len(val),  # type: ignore[arg-type]
            "classes": list(classes), "image_size": args.image_size}
    return train, val, tuple(classes), info


def _loader(ds: Dataset, batch_size: int, seed: int | None, args: argparse.Namespace) -> DataLoader:
    """Shuffled full batches (seeded) for training, or the set in order for evaluation (``seed=None``)."""
    train = seed is not None
    return DataLoader(ds, batch_size=batch_size, shuffle=train, drop_last=train, collate_fn=detection_collate,
                      num_workers=args.workers,
                      generator=torch.Generator().manual_seed(seed) if train else None)


def _to(batch: tuple[list, list], device: torch.device) -> tuple[list, list]:
    images, targets = batch
    return ([im.to(device, non_blocking=True) for im in images],
            [{k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in t.items()}
             for t in targets])


def _schedule(opt: torch.optim.Optimizer, steps: int, warmup: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``steps``."""
    def factor(step: int) -> float:
        warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
        return warm * 0.5 * (1.0 + math.cos(math.pi * min(step, steps) / max(steps, 1)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


# --------------------------------------------------------------------------- the job


class Job:
    """The state of one run: settings, data, results, checkpoint."""

    def __init__(self, args: argparse.Namespace, train: Dataset, val: Dataset, classes: tuple[str, ...],
                 info: dict[str, Any]) -> None:
        self.args, self.train, self.val, self.classes = args, train, val, classes
        self.out = Path(args.out)
        self.ckpt = self.out / "checkpoint.pt"
        self.device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available()
                                   else "cpu" if args.device == "auto" else args.device)
        self.num_classes = len(classes) + 1
        gen = torch.Generator().manual_seed(epoch_seed(args.seed, 0, "example"))
        self.example = torch.rand(1, 3, args.image_size, args.image_size, generator=gen)  # MACs, tracing
        self.results: dict[str, Any] = {"settings": _settings(args), "data": info, "history": [],
                                        "wall_time_s": {}}

    # ---- model
    def new_model(self) -> nn.Module:
        torch.manual_seed(epoch_seed(self.args.seed, 0, "model"))
        return build_detector(self.num_classes, self.args.image_size, self.args.detector).to(self.device)

    def counts(self, model: nn.Module) -> dict[str, int]:
        report = flops_report(model, (self.example.to(self.device),))
        return {"macs": int(report.macs), "params": int(report.params)}

    def evaluate(self, model: nn.Module, desc: str) -> dict[str, float]:
        return evaluate_map(model, _loader(self.val, self.args.batch_size, None, self.args), device=self.device,
                            progress=self.args.progress, desc=desc)

    # ---- bookkeeping
    def log(self, row: dict[str, Any]) -> None:
        self.results["history"].append(row)
        if self.args.progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))

    def save(self, phase: str, epoch: int, **state: Any) -> None:
        atomic_save({"format": _CKPT_FORMAT, "phase": phase, "epoch": epoch, "results": json.dumps(self.results),
                     "rng": get_rng_state(), **state}, self.ckpt)

    def timed(self, key: str, seconds: float) -> None:
        self.results["wall_time_s"][key] = self.results["wall_time_s"].get(key, 0.0) + seconds

    # ---- phases
    def train_phase(self, model: nn.Module, phase: str, epochs: int, lr: float, start: int,
                    state: dict[str, Any] | None, extra: dict[str, Any]) -> None:
        """``epochs`` of AdamW (warm-up + cosine, per step) from epoch ``start``; a checkpoint after each."""
        args = self.args
        steps_per_epoch = len(self.train) // args.batch_size  # type: ignore[arg-type]
        opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.weight_decay)
        total = epochs * steps_per_epoch
        sched = _schedule(opt, total, min(args.warmup, total // 5) if phase == "baseline" else min(10, total // 10))
        if state is not None and "optimizer" in state:  # (the checkpoint right after surgery has none)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        for epoch in range(start, epochs):
            t0 = time.perf_counter()
            model.train()
            losses = []
            loader = _loader(self.train, args.batch_size, epoch_seed(args.seed, epoch, phase), args)
            for batch in tqdm(loader, desc=f"{phase} {epoch + 1}/{epochs}", leave=False,
                              disable=None if args.progress else True, unit="batch"):
                loss = detection_loss(model, _to(batch, self.device))
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"non-finite training loss in {phase} epoch {epoch + 1}; lower --lr")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
                opt.step()
                sched.step()
                losses.append(float(loss.detach()))
            self.log({"phase": phase, "epoch": epoch + 1, "loss": sum(losses) / len(losses),
                      "lr": float(opt.param_groups[0]["lr"])})
            self.timed(phase, time.perf_counter() - t0)  # before the checkpoint: a resumed run keeps it
            self.save(phase, epoch + 1, model=model.state_dict(), optimizer=opt.state_dict(),
                      scheduler=sched.state_dict(), **extra)

    def make_pruner(self, model: nn.Module) -> Any:
        args = self.args

        def adamw(params: list[torch.Tensor]) -> torch.optim.Optimizer:
            return torch.optim.AdamW(params, lr=args.search_lr, weight_decay=args.weight_decay)

        return rartsprune.prune(model, macs=args.macs, example_inputs=(self.example.to(self.device),),
                                loss_fn=detection_loss, weight_optimizer=adamw, arch_lr=args.arch_lr,
                                seed=args.seed)

    def search_pairs(self, epoch: int) -> PairedLoader:
        """Search epoch ``epoch``'s ``(batch_t, batch_v)`` pairs: the two halves of the training set (one split
        for the whole search), each shuffled by its own seeded generator."""
        half_t, half_v = split_dataset(self.train, 0.5, seed=epoch_seed(self.args.seed, 0, "split"))
        bs = self.args.batch_size
        return PairedLoader(_loader(half_t, bs, epoch_seed(self.args.seed, epoch, "search t"), self.args),
                            _loader(half_v, bs, epoch_seed(self.args.seed, epoch, "search v"), self.args))

    def search_phase(self, model: nn.Module, pretrained: dict[str, torch.Tensor], start: int,
                     pruner_state: dict | None) -> Any:
        """RARTS epochs ``start`` .. ``--search-epochs`` on ``model`` (holding ``pretrained``); returns the pruner."""
        args = self.args
        pruner = self.make_pruner(model)  # the model may be in eval mode here: the search follows its mode
        if pruner_state is not None:
            pruner.load_state_dict(pruner_state)
        for epoch in range(start, args.search_epochs):
            t0 = time.perf_counter()
            model.train()
            rows = []
            pairs = self.search_pairs(epoch)
            for bt, bv in tqdm(pairs, total=len(pairs), desc=f"search {epoch + 1}/{args.search_epochs}", leave=False,
                               disable=None if args.progress else True, unit="step"):
                bt, bv = _with_boxes(bt), _with_boxes(bv)
                if bt is not None and bv is not None:
                    rows.append(pruner.step(_to(bt, self.device), _to(bv, self.device)))
            if not rows:
                raise ValueError(f"search epoch {epoch + 1}: no batch had two images with boxes (the search "
                                 "leaves images without boxes out); use more images or a larger --batch-size")
            report = pruner.report()
            self.log({"phase": "search", "epoch": epoch + 1, "steps": len(rows),
                      "loss_t": sum(r["loss_t"] for r in rows) / len(rows),
                      "loss_v": sum(r["loss_v"] for r in rows) / len(rows),
                      "prc_if_finalized": report["prc_if_finalized"], "score_mean": report["scores"]["mean"]})
            self.timed("search", time.perf_counter() - t0)
            self.save("search", epoch + 1, pretrained=pretrained, pruner=pruner.state_dict())
        return pruner

    def recalibrate(self, model: nn.Module) -> None:
        loader = _loader(self.train, self.args.batch_size, epoch_seed(self.args.seed, 0, "recalibrate"), self.args)
        # update_bn calls the model on the first element of each tuple: the list of images
        inputs = (([im.to(self.device) for im in images],) for images, _ in loader)
        rartsprune.recalibrate_bn(RawHeads(model), inputs, num_batches=self.args.bn_recalibration)


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k not in ("resume", "progress", "out")}


def _with_boxes(batch: tuple[list, list]) -> tuple[list, list] | None:
    """The images of a batch that have at least one box (a search step refuses empty targets), or None when
    fewer than two are left (BatchNorm in training mode needs two values per channel on SSD's 1 x 1 maps).

    Examples:
        >>> boxes = [torch.zeros(1, 4), torch.zeros(0, 4), torch.zeros(2, 4)]
        >>> images, targets = _with_boxes((["a", "b", "c"], [{"boxes": b} for b in boxes]))
        >>> images
        ['a', 'c']
        >>> _with_boxes((["a", "b"], [{"boxes": b} for b in boxes[:2]])) is None
        True
    """
    keep = [i for i, t in enumerate(batch[1]) if t["boxes"].shape[0] > 0]
    if len(keep) < 2:
        return None
    return [batch[0][i] for i in keep], [batch[1][i] for i in keep]


def _load(job: Job) -> dict[str, Any] | None:
    """The checkpoint to resume from, or None; raises SystemExit with the reason when it cannot be used."""
    args = job.args
    if not job.ckpt.exists():
        return None
    if not args.resume:
        raise SystemExit(f"{job.ckpt} exists: pass --resume to continue that run, or choose another --out")
    state = torch.load(job.ckpt, map_location="cpu", weights_only=True)
    if state.get("format") != _CKPT_FORMAT:
        raise SystemExit(f"{job.ckpt} is not a checkpoint of this recipe")
    saved = json.loads(state["results"])
    differ = [f"--{k.replace('_', '-')} {saved['settings'].get(k)!r} -> {v!r}" for k, v in vars(args).items()
              if k not in _RUNTIME and saved["settings"].get(k) != v]
    if differ:
        raise SystemExit(f"{job.ckpt} was made with other settings ({', '.join(differ)}): resume with the same ones "
                         "or choose another --out")
    job.results = saved
    job.results["settings"] = _settings(args)
    return state


def run(job: Job) -> dict[str, Any]:
    """Run (or resume) every phase; returns the results also written to OUT/results.json."""
    args = job.args
    job.out.mkdir(parents=True, exist_ok=True)
    state = _load(job)
    phase = state["phase"] if state else "baseline"
    epoch = int(state["epoch"]) if state else 0
    if phase == "done":
        return job.results
    model = job.new_model()
    if state is not None:  # after building (which seeds): the random stream where the checkpoint left it
        set_rng_state(state["rng"])
    # ---- 1. baseline
    if phase == "baseline":
        if state is not None:
            model.load_state_dict(state["model"])
        job.train_phase(model, "baseline", args.epochs, args.lr, epoch, state, {})
        phase, epoch, state = "search", 0, None
    if "before" not in job.results:
        t0 = time.perf_counter()
        job.results["before"] = {**job.evaluate(model, "mAP unpruned"), **job.counts(model)}
        job.timed("eval", time.perf_counter() - t0)
        torch.save(model.state_dict(), job.out / "baseline.pt")
        job.save("search", 0, pretrained=model.state_dict())
        job.log({"phase": "baseline", "map": job.results["before"]["map"], "map_50": job.results["before"]["map_50"]})
    if args.stop_after == "baseline":
        return _finish(job, None)
    # ---- 2. search, 3. surgery
    if phase == "search":
        pretrained = state["pretrained"] if state is not None else model.state_dict()
        model.load_state_dict(pretrained)
        pretrained = {k: v.detach().clone() for k, v in pretrained.items()}
        pruner = job.search_phase(model, pretrained, epoch, state.get("pruner") if state else None)
        if args.stop_after == "search":
            return _finish(job, None)
        t0 = time.perf_counter()
        job.results["after_search"] = job.evaluate(model, "mAP scored")
        scores = pruner.importance()
        model = pruner.finalize()
        plan = pruner.plan()
        plan.save(job.out / "plan.json")
        job.results["pruning"] = {k: v for k, v in pruner.result.items() if k != "widths"}
        job.results["widths"] = pruner.result["widths"]
        job.results["after_prune_stale_bn"] = job.evaluate(model, "mAP pruned")
        if args.bn_recalibration > 0:
            job.recalibrate(model)
        job.results["after_prune"] = {**job.evaluate(model, "mAP recalibrated"), **job.counts(model)}
        job.timed("surgery_and_eval", time.perf_counter() - t0)
        job.results["plots"] = _search_plots(job, scores, pruner.result["widths"])
        job.log({"phase": "pruned", "map": job.results["after_prune"]["map"],
                 "macs_ratio": job.results["after_prune"]["macs"] / job.results["before"]["macs"]})
        phase, epoch, state = "finetune", 0, None
        job.save("finetune", 0, model=model.state_dict(), plan=plan.to_json())
    else:
        plan = PruningPlan.from_dict(json.loads(state["plan"]))  # type: ignore[index]
        apply_plan(model, plan, (job.example.to(job.device),))
        model.load_state_dict(state["model"])  # type: ignore[index]
    if args.stop_after == "search":  # (a resumed run already past the search)
        return _finish(job, None)
    # ---- 4. fine-tune
    job.train_phase(model, "finetune", args.finetune_epochs, args.finetune_lr, epoch, state, {"plan": plan.to_json()})
    t0 = time.perf_counter()
    job.results["after_finetune"] = job.evaluate(model, "mAP fine-tuned")
    job.timed("eval", time.perf_counter() - t0)
    job.log({"phase": "finetune", "map": job.results["after_finetune"]["map"]})
    before, after = job.results["before"], job.results["after_prune"]
    job.results["summary"] = {
        "macs_before": before["macs"], "macs_after": after["macs"], "macs_ratio": after["macs"] / before["macs"],
        "params_ratio": after["params"] / before["params"], "macs_budget": args.macs,
        "prc": job.results["pruning"]["prc"], "map_before": before["map"], "map_pruned": after["map"],
        "map_finetuned": job.results["after_finetune"]["map"],
        "map_change": job.results["after_finetune"]["map"] - before["map"],
        "map_50_before": before["map_50"], "map_50_finetuned": job.results["after_finetune"]["map_50"],
    }
    torch.save(model.state_dict(), job.out / "pruned.pt")
    out = _finish(job, model)
    job.save("done", 0, model=model.state_dict(), plan=plan.to_json())
    return out


def _finish(job: Job, model: nn.Module | None) -> dict[str, Any]:
    if model is not None:
        job.results.setdefault("plots", [])
        drawn = _draw_summary(job)
        if drawn and drawn not in job.results["plots"]:
            job.results["plots"].append(drawn)
    (job.out / "results.json").write_text(json.dumps(job.results, indent=1))
    (job.out / "results.md").write_text(table(job.results) + "\n")
    return job.results


# --------------------------------------------------------------------------- reports


def table(results: dict[str, Any]) -> str:
    """Markdown table of the stages reached: mAP, mAP@0.5, MACs and parameters.

    Examples:
        >>> r = {"before": {"map": 0.5, "map_50": 0.9, "macs": 2e6, "params": 1e5}, "data": {"kind": "x"}}
        >>> print(table(r).splitlines()[2])
        | unpruned | 50.0 | 90.0 | 2.00M | 100.0K |
    """
    rows = ["| stage | mAP (%) | mAP@0.5 (%) | MACs | params |", "|---|---|---|---|---|"]
    for key, label in STAGES:
        r = results.get(key)
        if not r:
            continue
        macs = format_count(r["macs"]) if "macs" in r else ""
        params = format_count(r["params"]) if "params" in r else ""
        if key == "after_finetune" and "after_prune" in results:
            macs, params = format_count(results["after_prune"]["macs"]), format_count(results["after_prune"]["params"])
        rows.append(f"| {label} | {100 * r['map']:.1f} | {100 * r['map_50']:.1f} | {macs} | {params} |")
    s = results.get("summary")
    if s:
        rows.append(f"\nMACs x{s['macs_ratio']:.3f} (budget x{s['macs_budget']:g}), params x{s['params_ratio']:.3f}, "
                    f"PRC {100 * s['prc']:.1f}%; mAP {100 * s['map_before']:.1f} -> {100 * s['map_finetuned']:.1f} "
                    f"({100 * s['map_change']:+.1f} points). Data: {results['data']['kind']}.")
    return "\n".join(rows)


def _search_plots(job: Job, scores: dict[str, torch.Tensor], widths: dict[str, Any]) -> list[str]:
    if not job.args.plots:
        return []
    try:
        from rartsprune.app.reports import plot_score_histograms, plot_widths

        plot_score_histograms(scores, job.out / "scores.png")
        plot_widths(widths, job.out / "widths.png")
    except (ImportError, ValueError, RuntimeError) as exc:  # a plot must never sink a finished phase
        print(f"(no score / width plots: {exc})", file=sys.stderr)
        return []
    return ["scores.png", "widths.png"]


def _draw_summary(job: Job) -> str | None:
    """OUT/detection.png: training losses per epoch, and mAP / MACs per stage; None without matplotlib."""
    if not job.args.plots:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    r = job.results
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    offset = 0  # the phases one after the other on one epoch axis
    for phase in ("baseline", "search", "finetune"):
        rows = [h for h in r["history"] if h.get("phase") == phase and ("loss" in h or "loss_v" in h)]
        if rows:
            ax1.plot([offset + h["epoch"] for h in rows], [h.get("loss", h.get("loss_v")) for h in rows], marker="o",
                     label=phase if phase != "search" else "search (L_v, scored model)")
            offset += max(h["epoch"] for h in rows)
    ax1.set_xlabel("epoch (baseline, then search, then fine-tuning)")
    ax1.set_ylabel("training loss (SSD: box + class)")
    ax1.set_yscale("log")
    ax1.legend()
    stages = [(label, r[key]) for key, label in STAGES if r.get(key)]
    xs = range(len(stages))
    ax2.bar([x - 0.2 for x in xs], [100 * s["map"] for _, s in stages], 0.4, label="mAP")
    ax2.bar([x + 0.2 for x in xs], [100 * s["map_50"] for _, s in stages], 0.4, label="mAP@0.5")
    ax2.set_xticks(list(xs), [label.replace(", ", ",\n").replace(" + ", "\n+ ") for label, _ in stages], fontsize=7)
    ax2.set_ylabel("% on the validation images")
    s = r.get("summary")
    if s:
        ax2.set_title(f"MACs {format_count(s['macs_before'])} -> {format_count(s['macs_after'])} "
                      f"(x{s['macs_ratio']:.2f})")
    ax2.legend()
    fig.tight_layout()
    fig.savefig(job.out / "detection.png", dpi=110)
    plt.close(fig)
    return "detection.png"


# --------------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, checked: every bad value is refused here, before any work."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    data = ap.add_argument_group("data")
    data.add_argument("--coco", default=None, help="a COCO-format folder (default: the generated shapes)")
    data.add_argument("--train-images", type=int, default=None,
                      help="generated training images (default 400); with --coco: a seeded subset (default all)")
    data.add_argument("--val-images", type=int, default=None,
                      help="generated validation images (default 100); with --coco: a seeded subset (default all)")
    data.add_argument("--image-size", type=int, default=128, help="the detector's input side in pixels (>= 64)")
    data.add_argument("--max-objects", type=int, default=3, help="at most this many shapes per generated image")
    data.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    train = ap.add_argument_group("training")
    train.add_argument("--detector", choices=DETECTORS, default="ssdlite",
                       help="ssdlite: SSDlite320/MobileNetV3-Large; fasterrcnn_mobilenet: Faster R-CNN with a "
                            "MobileNetV3-Large FPN; fasterrcnn_resnet50: Faster R-CNN with a ResNet-50 FPN "
                            "(all from random weights)")
    train.add_argument("--epochs", type=int, default=15, help="baseline training epochs")
    train.add_argument("--batch-size", type=int, default=16)
    train.add_argument("--lr", type=float, default=3e-3, help="AdamW learning rate of the baseline")
    train.add_argument("--warmup", type=int, default=50, help="warm-up steps of the baseline")
    train.add_argument("--weight-decay", type=float, default=1e-4)
    train.add_argument("--grad-clip", type=float, default=10.0)
    train.add_argument("--finetune-epochs", type=int, default=8)
    train.add_argument("--finetune-lr", type=float, default=1e-3)
    search = ap.add_argument_group("search")
    search.add_argument("--macs", type=float, default=0.6,
                        help="fraction of the detector's MACs to keep (fvcore multiply-accumulates, batch 1)")
    search.add_argument("--search-epochs", type=int, default=3)
    search.add_argument("--search-lr", type=float, default=5e-4, help="AdamW learning rate of both nets' weights")
    search.add_argument("--arch-lr", type=float, default=None, help="Adam learning rate of the channel scores "
                        "(default: rartsprune.prune's)")
    search.add_argument("--bn-recalibration", type=int, default=20,
                        help="training batches to re-estimate BatchNorm statistics after surgery (0: off)")
    run_ = ap.add_argument_group("run")
    run_.add_argument("--seed", type=int, default=0)
    run_.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    run_.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    run_.add_argument("--out", default="runs/detection")
    run_.add_argument("--resume", action="store_true", help="continue the run in --out, skipping finished phases")
    run_.add_argument("--stop-after", choices=("baseline", "search"), default=None,
                      help="stop after this phase (--resume continues)")
    run_.add_argument("--no-plots", dest="plots", action="store_false")
    run_.add_argument("--no-progress", dest="progress", action="store_false",
                      help="no progress bars and no per-epoch lines (bars are hidden anyway off a terminal)")
    args = ap.parse_args(argv)
    if args.coco is None:
        args.train_images = 400 if args.train_images is None else args.train_images
        args.val_images = 100 if args.val_images is None else args.val_images
    else:
        coco = Path(args.coco)
        if not coco.is_dir():
            ap.error(f"--coco {args.coco}: " + ("no such folder" if not coco.exists() else "not a folder"))
        args.coco = str(coco.resolve())
    try:
        check_budget(args.macs, "macs")
    except ValueError as exc:
        ap.error(f"--macs: {exc}")
    positive = {"--image-size": args.image_size, "--batch-size": args.batch_size, "--max-objects": args.max_objects,
                "--lr": args.lr, "--finetune-lr": args.finetune_lr, "--search-lr": args.search_lr,
                "--grad-clip": args.grad_clip}
    for name, value in positive.items():
        if not value > 0:
            ap.error(f"{name} must be > 0, got {value}")
    counts = {"--epochs": args.epochs, "--search-epochs": args.search_epochs, "--finetune-epochs": args.finetune_epochs,
              "--warmup": args.warmup, "--bn-recalibration": args.bn_recalibration, "--workers": args.workers,
              "--weight-decay": args.weight_decay}
    for name, value in counts.items():
        if value < 0:
            ap.error(f"{name} must be >= 0, got {value}")
    if args.search_epochs < 1:
        ap.error("--search-epochs must be >= 1 (the search decides which channels go)")
    if args.arch_lr is not None and not args.arch_lr > 0:
        ap.error(f"--arch-lr must be > 0, got {args.arch_lr}")
    if args.image_size < 64:
        ap.error(f"--image-size must be >= 64 (SSDlite's deepest maps need it), got {args.image_size}")
    if args.threads is not None and args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    for name, value in (("--train-images", args.train_images), ("--val-images", args.val_images)):
        if value is not None and value < 1:
            ap.error(f"{name} must be >= 1, got {value}")
    if args.train_images is not None and args.train_images < 2 * args.batch_size:
        ap.error(f"--train-images {args.train_images} is too few for --batch-size {args.batch_size}: the search "
                 f"splits them in two halves of at least one batch each (need >= {2 * args.batch_size})")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        require_map()
    except ImportError as exc:
        raise SystemExit(str(exc)) from exc
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        train, val, classes, info = make_data(args)
    except (FileNotFoundError, ValueError) as exc:
        raise SystemExit(f"--coco: {exc}") from exc
    if len(train) < 2 * args.batch_size:  # type: ignore[arg-type]
        raise SystemExit(f"{len(train)} training images are too few for --batch-size {args.batch_size} "  # type: ignore[arg-type]
                         f"(the search needs two halves of at least one batch each)")
    t0 = time.perf_counter()
    results = run(Job(args, train, val, classes, info))
    print(table(results))
    print(f"{time.perf_counter() - t0:.0f} s; results in {Path(args.out) / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
