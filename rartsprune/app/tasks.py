"""Models beyond classifiers: which task a model spec belongs to, how to build it small, and its example batches.

Tasks: torchvision's ``detection`` (Faster / Mask / Keypoint R-CNN, RetinaNet, FCOS, SSD, SSDlite),
``segmentation`` (FCN, DeepLabV3, LRASPP), ``video`` (R3D, MC3, R(2+1)D, S3D, MViT, Swin3D) and ``flow``
(RAFT), plus ``timm_features`` (timm backbones built with ``features_only=True``, spec
``timm_features:NAME``). Everything else is ``classification``.

`task_inputs` returns, for a built model, what `rartsprune.check.check_model` and `rartsprune.prune` need:

* ``example``: the inputs the model is traced and compared with; detectors get ``(images,)``, a list of
  images (they are traced and compared through their raw head outputs, `rartsprune.tasks.comparable_outputs`).
* ``train_batch`` and ``loss_fn``: one training batch and the loss for it (`rartsprune.tasks`).
* ``outputs_fn``: what the check compares (`rartsprune.tasks.detection_outputs` for detectors), or ``None``
  for the model's own outputs.

Examples:
    >>> from rartsprune.app.zoo import build_model
    >>> from rartsprune.app.tasks import task_inputs, task_of
    >>> task_of("torchvision:fcn_resnet50"), task_of("timm_features:resnet18")
    ('segmentation', 'timm_features')
    >>> model = build_model("torchvision:r3d_18", num_classes=5, small=True)
    >>> task_inputs("torchvision:r3d_18", model).example.shape
    torch.Size([2, 3, 8, 64, 64])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..optim.base import default_loss
from ..tasks import detection_loss, detection_outputs, flow_loss, segmentation_loss

__all__ = [
    "TASKS",
    "TORCHVISION_TASKS",
    "TIMM_FEATURES_COVERAGE",
    "TaskInputs",
    "task_of",
    "task_inputs",
    "torchvision_task_models",
    "small_build_kwargs",
    "takes_num_classes",
]

#: Every task `task_of` returns.
TASKS: tuple[str, ...] = ("classification", "detection", "segmentation", "video", "flow", "timm_features")
#: torchvision's task -> its ``torchvision.models`` submodule.
TORCHVISION_TASKS: dict[str, str] = {
    "detection": "detection",
    "segmentation": "segmentation",
    "video": "video",
    "flow": "optical_flow",
}
#: timm backbones of the ``timm_features`` coverage suite (``features_only=True``): CNN families, plus the
#: vision transformers whose feature extraction timm supports.
TIMM_FEATURES_COVERAGE: tuple[str, ...] = (
    "resnet18", "resnet50d", "seresnext26d_32x4d", "regnety_002", "efficientnet_b0", "mobilenetv3_large_100",
    "mobilenetv4_conv_small", "ghostnet_050", "convnext_atto", "densenet121", "dla34", "cspdarknet53",
    "hrnet_w18_small", "repvgg_a0", "rexnet_100", "xception41", "vit_tiny_patch16_224",
    "swin_tiny_patch4_window7_224", "pvt_v2_b0", "mobilevit_xxs", "fastvit_t8",
)

#: Side of the detectors' test images (their transform resizes to ``min_size`` = ``max_size`` = this; SSD
#: and SSDlite resize to their fixed 300 / 320 px whatever the input).
DETECTION_SIZE = 128
#: Side of the segmenters' test images.
SEGMENTATION_SIZE = 64
#: Side and frame count of the video clips; S3D's final pooling needs 16 frames of 224 px, and torchvision
#: builds MViT for 16 frames of 224 px only (its positional embeddings are sized for them): those get one clip.
VIDEO_SIZE, VIDEO_FRAMES = 64, 8
_VIDEO_INPUT = {"s3d": (16, 224), "mvit_v1_b": (16, 224), "mvit_v2_s": (16, 224)}
_ONE_CLIP = ("mvit_v1_b", "mvit_v2_s")
#: Side of RAFT's images (the smallest it accepts: its 1/8 feature maps need 16 px for the 4-level correlation
#: pyramid) and its refinement steps in the checks.
FLOW_SIZE, FLOW_UPDATES = 128, 3

_RCNN = ("fasterrcnn", "maskrcnn", "keypointrcnn")
#: Smaller proposal and detection counts for CPU checks (R-CNN: 100 proposals instead of 1000 at test time).
_RCNN_SMALL = {
    "rpn_pre_nms_top_n_train": 200, "rpn_pre_nms_top_n_test": 200, "rpn_post_nms_top_n_train": 100,
    "rpn_post_nms_top_n_test": 100, "box_batch_size_per_image": 64, "box_detections_per_img": 50,
}
_ONE_STAGE_SMALL = {"topk_candidates": 200, "detections_per_img": 50}


@functools.cache
def torchvision_task_models(task: str) -> tuple[str, ...]:
    """torchvision's models of ``task`` (``detection``, ``segmentation``, ``video`` or ``flow``), sorted.

    Examples:
        >>> torchvision_task_models("flow")
        ('raft_large', 'raft_small')
    """
    if task not in TORCHVISION_TASKS:
        raise ValueError(f"unknown torchvision task {task!r}; choose from {sorted(TORCHVISION_TASKS)}")
    import importlib

    import torchvision

    module = importlib.import_module(f"torchvision.models.{TORCHVISION_TASKS[task]}")
    return tuple(sorted(torchvision.models.list_models(module=module)))


def task_of(spec: str) -> str:
    """The task of a model spec: one of `TASKS` (``classification`` for anything not listed elsewhere)."""
    kind, _, name = spec.rpartition(":")
    if kind == "timm_features":
        return "timm_features"
    if kind == "torchvision":
        for task in TORCHVISION_TASKS:
            if name in torchvision_task_models(task):
                return task
    return "classification"


def takes_num_classes(spec: str) -> bool:
    """False for the models whose constructor has no ``num_classes`` (RAFT, timm feature extractors)."""
    return task_of(spec) not in ("flow", "timm_features")


def small_build_kwargs(spec: str) -> dict[str, Any]:
    """Constructor keywords that make a task model cheap to check on a CPU (``build_model(..., small=True)``).

    Detectors: ``min_size`` = ``max_size`` = `DETECTION_SIZE` (except SSD / SSDlite, whose size is fixed) and
    fewer proposals and detections; segmenters: ``aux_loss=True`` where the model has an auxiliary head (so
    the checks cover it). Classifiers and the others: nothing (see `rartsprune.app.zoo`).
    """
    task, name = task_of(spec), spec.rpartition(":")[2]
    if task == "detection":
        if name.startswith(_RCNN):
            return {"min_size": DETECTION_SIZE, "max_size": DETECTION_SIZE, **_RCNN_SMALL}
        if name.startswith(("retinanet", "fcos")):
            return {"min_size": DETECTION_SIZE, "max_size": DETECTION_SIZE, **_ONE_STAGE_SMALL}
        return dict(_ONE_STAGE_SMALL)
    if task == "segmentation" and not name.startswith("lraspp"):
        return {"aux_loss": True}
    return {}


@dataclass
class TaskInputs:
    """What checking or searching a model of one task needs (see the module docstring).

    Attributes:
        task: one of `TASKS`.
        example: the example inputs (traced, compared in eval mode).
        train_batch: one training batch for ``loss_fn``.
        loss_fn: ``loss_fn(net, batch) -> scalar`` (`rartsprune.prune`'s convention): the task's loss from
            `rartsprune.tasks`, cross-entropy of ``(inputs, labels)`` for classifiers and video models; ``None``
            for ``timm_features`` (a backbone has no labels to fit).
        outputs_fn: ``outputs_fn(model, example) -> outputs`` compared by the check; ``None``: the model's outputs.
    """

    task: str
    example: Any
    train_batch: Any = None
    loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None
    outputs_fn: Callable[[nn.Module, Any], Any] | None = None


def _eval_output(model: nn.Module, x: Any) -> Any:
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            return model(x)
    finally:
        for m, mode in modes:
            m.training = mode


def _detection_targets(name: str, model: nn.Module | None, n: int, size: int, gen: torch.Generator) -> list[dict]:
    """Two boxes of class 1 per image, with masks (Mask R-CNN) or keypoints (Keypoint R-CNN: as many as
    ``model`` predicts, else torchvision's default 17)."""
    targets = []
    for _ in range(n):
        lo = torch.rand(2, 2, generator=gen) * size * 0.5
        wh = torch.rand(2, 2, generator=gen) * size * 0.4 + size * 0.1
        boxes = torch.cat([lo, lo + wh], dim=1).round()
        t: dict[str, torch.Tensor] = {"boxes": boxes, "labels": torch.ones(2, dtype=torch.int64)}
        if name.startswith("maskrcnn"):
            masks = torch.zeros(2, size, size, dtype=torch.uint8)
            for i, (x1, y1, x2, y2) in enumerate(boxes.long().tolist()):
                masks[i, y1:y2, x1:x2] = 1
            t["masks"] = masks
        if name.startswith("keypointrcnn"):
            k = 17 if model is None else int(model.roi_heads.keypoint_predictor.kps_score_lowres.out_channels)
            frac = torch.rand(2, k, 2, generator=gen)
            xy = boxes[:, None, :2] + frac * (boxes[:, None, 2:] - boxes[:, None, :2])
            t["keypoints"] = torch.cat([xy, torch.ones(2, k, 1)], dim=-1)
        targets.append(t)
    return targets


def task_inputs(spec: str, model: nn.Module | None = None, batch: int = 2, *, small: bool = True,
                seed: int = 0) -> TaskInputs:
    """Example inputs, a training batch, the loss and the compared outputs for ``model`` (built from ``spec``).

    Random but seeded (``seed``): the same spec gives the same tensors. Sizes: the module's constants
    (`DETECTION_SIZE`, `SEGMENTATION_SIZE`, `VIDEO_SIZE` x `VIDEO_FRAMES`, `FLOW_SIZE`; S3D and MViT 16 frames
    of 224 px, MViT one clip whatever ``batch``); classifiers and timm feature extractors get
    `rartsprune.app.zoo.example_inputs_for`'s image batch (with ``small``: 64 px where the architecture allows).
    Without ``model`` only ``example`` is filled (the training labels need the model's class count, read from
    one eval-mode forward).

    Raises:
        ValueError: ``batch`` < 1.
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    task, name = task_of(spec), spec.rpartition(":")[2]
    gen = torch.Generator().manual_seed(seed)
    if task == "detection":
        images = [torch.rand(3, DETECTION_SIZE, DETECTION_SIZE, generator=gen) for _ in range(batch)]
        targets = _detection_targets(name, model, batch, DETECTION_SIZE, gen)
        return TaskInputs(task, (images,), (images, targets), detection_loss, detection_outputs)
    if task == "flow":
        image1 = torch.rand(batch, 3, FLOW_SIZE, FLOW_SIZE, generator=gen) * 2 - 1
        image2 = torch.roll(image1, shifts=(2, 3), dims=(2, 3))  # a known motion: shifted by (2, 3) pixels
        flow = torch.zeros(batch, 2, FLOW_SIZE, FLOW_SIZE)
        flow[:, 0], flow[:, 1] = 3.0, 2.0
        loss = functools.partial(flow_loss, num_flow_updates=FLOW_UPDATES)
        return TaskInputs(task, (image1, image2, FLOW_UPDATES), (image1, image2, flow), loss)
    if task == "segmentation":
        x = torch.randn(batch, 3, SEGMENTATION_SIZE, SEGMENTATION_SIZE, generator=gen)
    elif task == "video":
        frames, size = _VIDEO_INPUT.get(name, (VIDEO_FRAMES, VIDEO_SIZE))
        batch = 1 if name in _ONE_CLIP else batch  # no BatchNorm, and 16 x 224 x 224 clips are costly
        x = torch.randn(batch, 3, frames, size, size, generator=gen)
    else:
        from .zoo import example_inputs_for

        x = example_inputs_for(spec, batch=batch, small=small, model=model)
    if model is None or task == "timm_features":
        return TaskInputs(task, x)
    out = _eval_output(model, x[:1])
    if task == "segmentation":
        y = torch.randint(0, int(out["out"].shape[1]), (batch, *x.shape[-2:]), generator=gen)
        return TaskInputs(task, x, (x, y), segmentation_loss)
    labels = torch.randint(0, int(out.shape[-1]), (batch,), generator=gen)
    return TaskInputs(task, x, (x, labels), default_loss)


def search_step_check(model: nn.Module, inputs: TaskInputs, *, ratio: float = 0.4, seed: int = 0,
                      rtol: float = 1e-5) -> dict[str, Any]:
    """attach → one search step → surgery → exact forward, on a copy of ``model``.

    `rartsprune.prune` (RARTS, ``ratio``) with ``inputs.loss_fn`` on the model in training mode (RARTS copies
    it, mode included, into its auxiliary network), one `rartsprune.WidthPruner.step` on ``inputs.train_batch`` (as both D_t and D_v batch), then ``finalize()`` (the surgery,
    which verifies the model's own outputs). Finally the pruned model's eval-mode outputs
    (``inputs.outputs_fn``, e.g. a detector's raw head outputs) must equal those of the searched model with
    the scores of the removed units at zero, within ``rtol`` x max(1, output scale).

    Returns:
        ``{"ok", "reason", "stats" (the step's losses), "prc", "diff", "scale"}``; errors become ``reason``.

    Examples:
        >>> from rartsprune.app.zoo import build_model
        >>> model = build_model("torchvision:r3d_18", num_classes=5, small=True)
        >>> search_step_check(model, task_inputs("torchvision:r3d_18", model))["ok"]  # doctest: +SKIP
        True
    """
    import copy
    import math

    from ..errors import RartsPruneError
    from ..graph import _call_model
    from ..surgery import _max_diff
    from ..width import prune

    if inputs.train_batch is None:
        return {"ok": False, "reason": f"no training batch for the {inputs.task} task"}
    outputs = inputs.outputs_fn or _call_model
    net = copy.deepcopy(model)
    row: dict[str, Any] = {"ok": False, "reason": ""}
    try:
        net.train()  # before prune: RARTS' auxiliary network is a copy made there, in the model's mode
        pruner = prune(net, ratio=ratio, example_inputs=inputs.example, loss_fn=inputs.loss_fn, seed=seed)
        stats = pruner.step(inputs.train_batch, inputs.train_batch)
        row["stats"] = {k: float(v) for k, v in stats.items() if isinstance(v, (int, float))}
        net.eval()
        keep = pruner.selection().keep
        saved = [a.detach().clone() for a in pruner.handle.scores]
        with torch.no_grad():
            for g, alpha in zip(pruner.handle.groups, pruner.handle.scores):
                mask = torch.ones(g.num_units, dtype=torch.bool)
                mask[torch.as_tensor(keep[g.name], dtype=torch.long)] = False
                alpha[mask.to(alpha.device)] = 0.0
            expected = outputs(net, inputs.example)
            for alpha, value in zip(pruner.handle.scores, saved):
                alpha.copy_(value)
        pruned = pruner.finalize().eval()
        row["prc"] = float(pruner.result["prc"]) if pruner.result else math.nan
        with torch.no_grad():
            got = outputs(pruned, inputs.example)
        row["diff"], row["scale"] = _max_diff(expected, got)
        if not row["diff"] <= rtol * max(1.0, row["scale"]):
            row["reason"] = f"after the search step the pruned outputs differ by {row['diff']:.3g} (scale {row['scale']:.3g})"
            return row
        row["ok"] = True
    except (RartsPruneError, ValueError, TypeError, RuntimeError) as exc:
        row["reason"] = f"{type(exc).__name__}: {exc}"[:400]
    return row
