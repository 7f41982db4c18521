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

`check_setup` builds a spec the way ``python -m rartsprune check`` and ``bench/coverage.py`` check it (random
weights, perturbed; the task's inputs, at an optional ``size`` in the task's form: `SIZE_FORMS`,
`parse_size`), and `check_task_model` runs `rartsprune.check.check_model` with the task's loss and compared
outputs.

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

from ..check import CheckResult, check_model, perturb_parameters
from ..optim.base import default_loss
from ..tasks import detection_loss, detection_outputs, flow_loss, segmentation_loss

__all__ = [
    "SIZE_FORMS",
    "check_setup",
    "check_task_model",
    "default_size",
    "describe_inputs",
    "loss_name",
    "parse_size",
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

#: The form of an input size (``--size`` of ``python -m rartsprune check``) per task; `parse_size` reads it.
SIZE_FORMS: dict[str, str] = {
    "classification": "S, the side of a square image in pixels (e.g. 224)",
    "timm_features": "S, the side of a square image in pixels (e.g. 224)",
    "detection": "S, the side of square images in pixels (e.g. 128; the detector is built to resize to S, "
                  "SSD / SSDlite resize to their fixed 300 / 320 px)",
    "segmentation": "S, the side of a square image in pixels (e.g. 64)",
    "video": "TxHxW, frames x height x width of a clip (e.g. 8x112x112)",
    "flow": f"S or HxW, the size of RAFT's two images, each side at least {FLOW_SIZE} px and a multiple of 8 "
            "(e.g. 128 or 128x192)",
}

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


def small_build_kwargs(spec: str, size: int | None = None) -> dict[str, Any]:
    """Constructor keywords that make a task model cheap to check on a CPU (``build_model(..., small=True)``).

    Detectors: ``min_size`` = ``max_size`` = ``size`` (default `DETECTION_SIZE`; not for SSD / SSDlite, whose
    size is fixed) and fewer proposals and detections; segmenters: ``aux_loss=True`` where the model has an
    auxiliary head (so the checks cover it). Classifiers and the others: nothing (see `rartsprune.app.zoo`).

    Examples:
        >>> small_build_kwargs("torchvision:fcos_resnet50_fpn", size=96)["max_size"]
        96
    """
    task, name = task_of(spec), spec.rpartition(":")[2]
    side = DETECTION_SIZE if size is None else size
    if task == "detection":
        if name.startswith(_RCNN):
            return {"min_size": side, "max_size": side, **_RCNN_SMALL}
        if name.startswith(("retinanet", "fcos")):
            return {"min_size": side, "max_size": side, **_ONE_STAGE_SMALL}
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


def _default_clip(name: str) -> tuple[int, int, int]:
    """(frames, height, width) of a video model's default clip."""
    frames, side = _VIDEO_INPUT.get(name, (VIDEO_FRAMES, VIDEO_SIZE))
    return frames, side, side


def default_size(spec: str) -> str:
    """The input size ``python -m rartsprune check`` uses for ``spec`` without ``--size``, in `parse_size`'s form.

    Examples:
        >>> default_size("torchvision:s3d"), default_size("torchvision:raft_small"), default_size("torchvision:resnet18")
        ('16x224x224', '128x128', '64')
    """
    task, name = task_of(spec), spec.rpartition(":")[2]
    if task == "video":
        return "x".join(map(str, _default_clip(name)))
    if task == "flow":
        return f"{FLOW_SIZE}x{FLOW_SIZE}"
    if task == "detection":
        return str(DETECTION_SIZE)
    if task == "segmentation":
        return str(SEGMENTATION_SIZE)
    from .zoo import input_size_for

    try:
        return str(input_size_for(spec, small=True))
    except (ValueError, ImportError):
        return "-"


def _form(spec: str) -> str:
    """The valid form of a size for ``spec``, with its default."""
    return f"{SIZE_FORMS[task_of(spec)]}; default for {spec}: {default_size(spec)}"


def _valid_size(spec: str, size: tuple[int, ...], text: str) -> tuple[int, ...]:
    """``size`` in the normal form of ``spec``'s task (``(S,)``, ``(T, H, W)`` or ``(H, W)``), or a ValueError."""
    task, name = task_of(spec), spec.rpartition(":")[2]

    def bad(why: str) -> ValueError:
        return ValueError(f"size {text!r} does not fit {spec} (a {task} model): {why}; the valid form is {_form(spec)}")

    if not size or not all(isinstance(v, int) and not isinstance(v, bool) for v in size):
        raise bad("it must be whole numbers")
    if min(size) < 1:
        raise bad("every number must be positive")
    if task == "video":
        if len(size) != 3:
            raise bad(f"video models take clips, {len(size)} number(s) given")
        if name in _ONE_CLIP and size != _default_clip(name):
            raise bad("torchvision builds {} for {} clips only (its positional embeddings are sized for them)".format(
                name, "x".join(map(str, _default_clip(name)))))
        return size
    if task == "flow":
        if len(size) not in (1, 2):
            raise bad(f"RAFT takes one or two numbers, {len(size)} given")
        h, w = size * 2 if len(size) == 1 else size
        if min(h, w) < FLOW_SIZE or h % 8 or w % 8:
            raise bad(f"RAFT needs each side at least {FLOW_SIZE} px (its 1/8-resolution features are pooled 3 "
                      f"times for the correlation pyramid) and a multiple of 8, got {h}x{w}")
        return (h, w)
    if len(size) != 1:
        raise bad(f"{len(size)} numbers given, the model takes square images")
    return size


def parse_size(spec: str, text: str) -> tuple[int, ...]:
    """Read an input size for ``spec`` in its task's form (`SIZE_FORMS`).

    Returns ``(S,)`` for images (classifiers, detectors, segmenters, timm feature extractors), ``(T, H, W)``
    for video clips, ``(H, W)`` for RAFT's images. Numbers are separated by ``x`` (or ``×``).

    Raises:
        ValueError: the text is not in the task's form, or a size the model cannot take (RAFT below 128 px
            or not a multiple of 8; MViT other than 16x224x224); the message names the valid form.

    Examples:
        >>> parse_size("torchvision:r3d_18", "8x112x112"), parse_size("torchvision:raft_small", "128")
        ((8, 112, 112), (128, 128))
        >>> parse_size("torchvision:r3d_18", "112")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ValueError: size '112' does not fit torchvision:r3d_18 (a video model): video models take clips, ...
    """
    parts = [p.strip() for p in str(text).replace("×", "x").replace("X", "x").split("x")]
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"size {text!r} for {spec} (a {task_of(spec)} model) is not numbers separated by 'x'; "
                         f"the valid form is {_form(spec)}") from None
    return _valid_size(spec, size, str(text))


def task_inputs(spec: str, model: nn.Module | None = None, batch: int = 2, *, small: bool = True,
                seed: int = 0, size: tuple[int, ...] | None = None) -> TaskInputs:
    """Example inputs, a training batch, the loss and the compared outputs for ``model`` (built from ``spec``).

    Random but seeded (``seed``): the same spec gives the same tensors. Sizes: ``size`` in the task's form
    (`parse_size`: ``(S,)`` for images, ``(T, H, W)`` for clips, ``(H, W)`` for RAFT), else the module's
    constants (`DETECTION_SIZE`, `SEGMENTATION_SIZE`, `VIDEO_SIZE` x `VIDEO_FRAMES`, `FLOW_SIZE`; S3D and MViT
    16 frames of 224 px); MViT gets one clip whatever ``batch``. Without ``size`` classifiers and timm feature
    extractors get `rartsprune.app.zoo.example_inputs_for`'s image batch (with ``small``: 64 px where the
    architecture allows). Without ``model`` only ``example`` is filled (the training labels need the model's
    class count, read from one eval-mode forward).

    Raises:
        ValueError: ``batch`` < 1, or a ``size`` that is not in the task's form (`parse_size`).
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, got {batch}")
    task, name = task_of(spec), spec.rpartition(":")[2]
    if size is not None:
        size = _valid_size(spec, tuple(size), "x".join(map(str, size)))
    gen = torch.Generator().manual_seed(seed)
    if task == "detection":
        side = DETECTION_SIZE if size is None else size[0]
        images = [torch.rand(3, side, side, generator=gen) for _ in range(batch)]
        targets = _detection_targets(name, model, batch, side, gen)
        return TaskInputs(task, (images,), (images, targets), detection_loss, detection_outputs)
    if task == "flow":
        h, w = (FLOW_SIZE, FLOW_SIZE) if size is None else size
        image1 = torch.rand(batch, 3, h, w, generator=gen) * 2 - 1
        image2 = torch.roll(image1, shifts=(2, 3), dims=(2, 3))  # a known motion: shifted by (2, 3) pixels
        flow = torch.zeros(batch, 2, h, w)
        flow[:, 0], flow[:, 1] = 3.0, 2.0
        loss = functools.partial(flow_loss, num_flow_updates=FLOW_UPDATES)
        return TaskInputs(task, (image1, image2, FLOW_UPDATES), (image1, image2, flow), loss)
    if task == "segmentation":
        side = SEGMENTATION_SIZE if size is None else size[0]
        x = torch.randn(batch, 3, side, side, generator=gen)
    elif task == "video":
        frames, h, w = size or _default_clip(name)
        batch = 1 if name in _ONE_CLIP else batch  # no BatchNorm, and 16 x 224 x 224 clips are costly
        x = torch.randn(batch, 3, frames, h, w, generator=gen)
    elif size is not None:
        x = torch.randn(batch, 3, size[0], size[0], generator=gen)
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

    `rartsprune.prune` (RARTS, ``ratio``) with ``inputs.loss_fn`` on the model in training mode (RARTS'
    auxiliary network follows its mode at every step), one `rartsprune.WidthPruner.step` on ``inputs.train_batch`` (as both D_t and D_v batch), then ``finalize()`` (the surgery,
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
        net.train()  # task losses need training mode (the auxiliary network follows it at every step)
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


def describe_inputs(example: Any) -> str:
    """Shape of one example input, for tables and reports.

    Examples:
        >>> import torch
        >>> describe_inputs(torch.zeros(2, 3, 8, 64, 64)), describe_inputs(([torch.zeros(3, 128, 128)] * 2,))
        ('3x8x64x64', '2 x 3x128x128')
    """
    if isinstance(example, torch.Tensor):
        return "x".join(str(v) for v in example.shape[1:])
    if isinstance(example, tuple) and example and isinstance(example[0], list):  # detection: (images,)
        return f"{len(example[0])} x " + "x".join(str(v) for v in example[0][0].shape)
    if isinstance(example, tuple) and len(example) == 3 and isinstance(example[0], torch.Tensor):  # RAFT
        return "2 x " + "x".join(str(v) for v in example[0].shape[1:]) + f", {example[2]} updates"
    return "-"


def loss_name(loss_fn: Callable[..., Any] | None) -> str:
    """The name of a loss function (of the function inside a ``functools.partial``; ``cross_entropy`` for the
    default loss of classifiers and video models); ``"-"`` for ``None``.

    Examples:
        >>> loss_name(functools.partial(flow_loss, num_flow_updates=3)), loss_name(None)
        ('flow_loss', '-')
    """
    if loss_fn is None:
        return "-"
    fn = getattr(loss_fn, "func", loss_fn)
    if fn is default_loss:
        return "cross_entropy"
    return str(getattr(fn, "__name__", type(fn).__name__))


def _probe(spec: str, model: nn.Module, inputs: TaskInputs, text: str) -> None:
    """One eval-mode forward of what the check compares: a size the model cannot take becomes a ValueError."""
    from ..tasks import comparable_outputs

    outputs = inputs.outputs_fn or comparable_outputs
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            outputs(model, inputs.example)
    except Exception as exc:  # noqa: BLE001 - whatever the model raises, the size is what the user chose
        raise _size_error(spec, text, exc) from exc
    finally:
        for m, mode in modes:
            m.training = mode


def check_setup(spec: str, *, size: str | tuple[int, ...] | None = None, num_classes: int = 10, batch: int = 2,
                seed: int = 0) -> tuple[nn.Module, TaskInputs]:
    """Build ``spec`` the way ``python -m rartsprune check`` and ``bench/coverage.py`` check it.

    Random weights (``torch.manual_seed(seed)`` first), perturbed (`rartsprune.check.perturb_parameters`:
    zero-initialised heads would make the output comparison vacuous), in eval mode, with ``num_classes``.

    * Classifiers and timm feature extractors: built small (64 px where the architecture allows) unless
      ``size`` is given; ``example`` an image batch; no loss (their check compares their outputs and runs a
      backward of the pruned model on them).
    * Detection, segmentation, video and flow models: built small (`small_build_kwargs`; a detector resizes to
      ``size``), with the task's inputs, training batch, loss and compared outputs (`task_inputs`).

    Args:
        spec: a model spec (`rartsprune.app.zoo.build_model`).
        size: the input size in the task's form (`parse_size`: text such as ``"8x112x112"``, or the parsed
            tuple); ``None``: the task's default. An explicit size is tried with one eval-mode forward.
        num_classes, batch, seed: classes of the model, batch of the example (MViT: always one clip), seed.

    Raises:
        ValueError: an unknown model, or a size not in the task's form or that the model cannot take (the
            message names the valid form).

    Examples:
        >>> model, inputs = check_setup("torchvision:lraspp_mobilenet_v3_large", size="48")
        >>> inputs.task, describe_inputs(inputs.example), loss_name(inputs.loss_fn)
        ('segmentation', '3x48x48', 'segmentation_loss')
    """
    from .zoo import build_model, example_inputs_for

    task = task_of(spec)
    text = size if isinstance(size, str) else None if size is None else "x".join(map(str, size))
    if isinstance(size, str):
        size = parse_size(spec, size)
    elif size is not None:
        size = _valid_size(spec, tuple(size), text or "")
    torch.manual_seed(seed)
    if task in ("classification", "timm_features"):
        model = build_model(spec, num_classes=num_classes, small=size is None).eval()
        if size is None:
            x = example_inputs_for(spec, batch=batch, model=model)
        else:
            x = torch.randn(batch, 3, size[0], size[0], generator=torch.Generator().manual_seed(seed))
        inputs = TaskInputs(task, x)
    else:
        kwargs = small_build_kwargs(spec, size[0]) if task == "detection" and size is not None else {}
        model = build_model(spec, num_classes=num_classes, small=True, **kwargs).eval()
        try:  # reads the class count with one forward, which fails first on a size the model cannot take
            inputs = task_inputs(spec, model, batch=batch, seed=seed, size=size)
        except Exception as exc:  # noqa: BLE001 - the size was validated above: the model refuses it
            if size is None:
                raise
            raise _size_error(spec, text or "", exc) from exc
    perturb_parameters(model, seed=seed)
    if size is not None:
        _probe(spec, model, inputs, text or "")
    return model, inputs


def _size_error(spec: str, text: str, exc: BaseException) -> ValueError:
    why = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
    return ValueError(f"{spec} does not run on inputs of size {text} ({why}); the valid form is {_form(spec)}, at "
                      "a size the architecture accepts")


def check_task_model(model: nn.Module, inputs: TaskInputs, *, ratio: float = 0.4, seed: int = 0,
                     backward: bool = True, return_model: bool = False, prune_heads: bool = False,
                     prune_layernorm: bool = False) -> CheckResult:
    """`rartsprune.check.check_model` with the task's example, compared outputs, loss and training batch.

    With a loss (detection, segmentation, video, flow) the result has the scored model's training loss
    (``loss``), the norm of the scores' gradients (``score_grad_norm``, must be finite and nonzero) and the
    number of score vectors the loss does not reach (``scores_without_grad``).

    Examples:
        >>> model, inputs = check_setup("torchvision:lraspp_mobilenet_v3_large", size="48")
        >>> r = check_task_model(model, inputs)
        >>> r.ok, r.score_grad_norm > 0
        (True, True)
    """
    return check_model(model, inputs.example, ratio=ratio, seed=seed, backward=backward, return_model=return_model,
                       outputs_fn=inputs.outputs_fn, loss_fn=inputs.loss_fn, train_batch=inputs.train_batch,
                       prune_heads=prune_heads, prune_layernorm=prune_layernorm)
