"""Losses and comparable outputs for models that are not classifiers: detection, segmentation, optical flow.

The width search calls ``loss_fn(net, batch) -> scalar`` (`rartsprune.prune`'s ``loss_fn=``); the functions
here are such losses for torchvision's task models, whose outputs are dicts or lists rather than logits:

* `detection_loss`: a detector in training mode returns its losses as a dict; their sum.
* `segmentation_loss`: cross-entropy on the ``"out"`` map plus ``aux_weight`` times the ``"aux"`` map.
* `flow_loss`: RAFT's sequence loss (exponentially weighted L1 over the flow predictions).

Video classifiers return logits: the default cross-entropy loss fits them.

Pretrained torchvision detectors and segmenters normalise their backbone with ``FrozenBatchNorm2d`` (fixed
statistics and affine parameters, kept as buffers), which Torch-Pruning does not know: its channels cannot
be removed, and every group through it is left unscored. `prunable_frozen_batchnorm` replaces those layers
by the equivalent `PrunableFrozenBatchNorm2d` first.

`detection_outputs` gives a detector's raw head outputs (before box decoding, score thresholds and NMS), the
outputs to compare when checking that a pruned detector computes what the scored one did: post-processed
detections are a discontinuous function of the head outputs (a score tie resolved the other way by float
rounding reorders or swaps boxes), the raw outputs are not. `comparable_outputs` picks them for torchvision
detectors and the model's own outputs otherwise; the dry run at attach, ``apply_surgery``'s verification and
`rartsprune.check.check_model` compare what it returns.

Searching a pretrained detector (its batches: ``(images, targets)`` as torchvision's detectors take them):

    >>> import torch, torchvision, rartsprune
    >>> from rartsprune.tasks import detection_loss, prunable_frozen_batchnorm
    >>> model = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights="DEFAULT")  # doctest: +SKIP
    >>> prunable_frozen_batchnorm(model)  # doctest: +SKIP
    53
    >>> model.train()  # detectors return their losses in training mode (the search's two nets follow it)  # doctest: +SKIP
    >>> pruner = rartsprune.prune(model, ratio=0.3, example_inputs=([torch.rand(3, 512, 512)],),
    ...                           loss_fn=detection_loss)  # doctest: +SKIP
    >>> for (images, targets), batch_v in zip(train_loader, val_loader):  # doctest: +SKIP
    ...     pruner.step((images, targets), batch_v)
    >>> model = pruner.finalize()  # doctest: +SKIP

The example inputs are a tuple holding the list of images (the detector is called as ``model(images)``).

Examples:
    >>> import torch, torchvision
    >>> from rartsprune.tasks import segmentation_loss
    >>> net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(num_classes=3, weights_backbone=None)
    >>> batch = (torch.randn(2, 3, 64, 64), torch.randint(0, 3, (2, 64, 64)))
    >>> bool(segmentation_loss(net.train(), batch) > 0)
    True
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .graph import _call_model
from .heads import _set_module

__all__ = [
    "detection_loss",
    "segmentation_loss",
    "flow_loss",
    "detection_outputs",
    "comparable_outputs",
    "is_torchvision_detector",
    "is_two_stage_detector",
    "grid_boxes",
    "TwoStageMacsView",
    "PrunableFrozenBatchNorm2d",
    "prunable_frozen_batchnorm",
]


def detection_loss(net: nn.Module, batch: Any) -> torch.Tensor:
    """Sum of the loss dict of a torchvision detector in training mode, for ``batch = (images, targets)``.

    ``images``: a list of (3, H, W) tensors (or a (B, 3, H, W) batch); ``targets``: one dict per image with
    ``boxes`` (N, 4, x1 y1 x2 y2) and ``labels`` (N,), plus ``masks`` (N, H, W) for Mask R-CNN and
    ``keypoints`` (N, K, 3) for Keypoint R-CNN, as torchvision's detectors take them.

    Raises:
        ValueError: the batch is not ``(images, targets)``, or the network returned no loss dict (it is in
            eval mode: call ``model.train()`` before the search steps).

    Examples:
        >>> import torch, torchvision
        >>> net = torchvision.models.detection.fcos_resnet50_fpn(num_classes=3, weights_backbone=None,
        ...                                                      min_size=64, max_size=64)
        >>> target = {"boxes": torch.tensor([[4.0, 8.0, 40.0, 50.0]]), "labels": torch.tensor([1])}
        >>> loss = detection_loss(net.train(), ([torch.rand(3, 64, 64)], [target]))
        >>> loss.dim(), bool(torch.isfinite(loss))
        (0, True)
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"detection_loss wants batches (images, targets), got {type(batch).__name__}")
    images, targets = batch
    losses = net(images, targets)
    if not isinstance(losses, Mapping) or not losses:
        raise ValueError(
            f"the detector returned {type(losses).__name__}, not its loss dict: it is in eval mode (torchvision "
            "detectors compute losses only in training mode); call model.train() before the search steps (the "
            "search's auxiliary network follows the model's mode at every step)"
        )
    return torch.stack([v.float().reshape(()) for v in losses.values()]).sum()


def segmentation_loss(net: nn.Module, batch: Any, *, aux_weight: float = 0.5, ignore_index: int = 255) -> torch.Tensor:
    """Cross-entropy of a torchvision segmenter's ``"out"`` map plus ``aux_weight`` x that of its ``"aux"`` map.

    ``batch = (images, masks)``: images (B, 3, H, W), masks (B, H, W) of class indices (``ignore_index``
    marks pixels without a label). The ``"aux"`` term is added only when the model returns one (FCN and
    DeepLabV3 built with ``aux_loss=True``). Pass other settings with ``functools.partial``.

    Examples:
        >>> import functools
        >>> loss_fn = functools.partial(segmentation_loss, aux_weight=0.4)
    """
    if not isinstance(batch, (tuple, list)) or len(batch) != 2:
        raise ValueError(f"segmentation_loss wants batches (images, masks), got {type(batch).__name__}")
    images, masks = batch
    out = net(images)
    if not isinstance(out, Mapping) or "out" not in out:
        raise ValueError(f"segmentation_loss wants a dict with an 'out' map, the model returned {type(out).__name__}")
    loss = F.cross_entropy(out["out"], masks, ignore_index=ignore_index)
    if "aux" in out and aux_weight:
        loss = loss + aux_weight * F.cross_entropy(out["aux"], masks, ignore_index=ignore_index)
    return loss


def flow_loss(net: nn.Module, batch: Any, *, gamma: float = 0.8, num_flow_updates: int | None = None) -> torch.Tensor:
    """RAFT's sequence loss: ``sum_i gamma^(N-1-i) * mean |flow_i - flow_gt|`` over the N flow predictions.

    ``batch = (image1, image2, flow_gt)`` or ``(image1, image2, flow_gt, valid)``: images (B, 3, H, W),
    ``flow_gt`` (B, 2, H, W), ``valid`` (B, H, W) a mask of the pixels with ground truth. ``num_flow_updates``
    is passed to the model (fewer refinement steps make a search step cheaper); ``None`` keeps its default.

    Examples:
        >>> import torch, torchvision
        >>> net = torchvision.models.optical_flow.raft_small(weights=None)
        >>> img = torch.rand(1, 3, 128, 128)
        >>> bool(flow_loss(net.train(), (img, img, torch.zeros(1, 2, 128, 128)), num_flow_updates=2) >= 0)
        True
    """
    if not isinstance(batch, (tuple, list)) or len(batch) not in (3, 4):
        raise ValueError(f"flow_loss wants batches (image1, image2, flow_gt[, valid]), got {type(batch).__name__}")
    image1, image2, flow_gt = batch[:3]
    kwargs = {} if num_flow_updates is None else {"num_flow_updates": num_flow_updates}
    preds = net(image1, image2, **kwargs)
    if isinstance(preds, torch.Tensor):
        preds = [preds]
    if not isinstance(preds, Sequence) or not preds:
        raise ValueError(f"flow_loss wants a list of flow predictions, the model returned {type(preds).__name__}")
    valid = batch[3].unsqueeze(1).to(flow_gt.dtype) if len(batch) == 4 else torch.ones_like(flow_gt[:, :1])
    n = len(preds)
    total = flow_gt.new_zeros(())
    for i, pred in enumerate(preds):
        err = ((pred - flow_gt).abs() * valid).sum() / (valid.sum() * flow_gt.shape[1]).clamp_min(1.0)
        total = total + gamma ** (n - 1 - i) * err
    return total


def grid_boxes(image_sizes: Sequence[Sequence[int]], per_side: int = 4) -> list[torch.Tensor]:
    """Fixed boxes on each image: a ``per_side`` x ``per_side`` grid of centres, two box sizes each.

    The stand-in for a region proposal network's proposals in `detection_outputs`.

    Examples:
        >>> grid_boxes([(64, 96)], per_side=2)[0].shape
        torch.Size([8, 4])
    """
    out = []
    for h, w in image_sizes:
        ys = (torch.arange(per_side, dtype=torch.float32) + 0.5) * (h / per_side)
        xs = (torch.arange(per_side, dtype=torch.float32) + 0.5) * (w / per_side)
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        boxes = []
        for frac in (0.25, 0.5):
            half_h, half_w = frac * h / 2, frac * w / 2
            b = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=-1).reshape(-1, 4)
            boxes.append(b)
        b = torch.cat(boxes)
        b[:, 0::2] = b[:, 0::2].clamp(0, w)
        b[:, 1::2] = b[:, 1::2].clamp(0, h)
        out.append(b)
    return out


def detection_outputs(model: nn.Module, inputs: Any) -> dict[str, Any]:
    """Raw head outputs of a torchvision detector: the outputs to compare before and after pruning.

    ``inputs``: what the detector is called with (images, or ``(images, targets)``; targets are ignored).
    Runs the detector's own transform and backbone (with FPN), then

    * two-stage detectors (Faster / Mask / Keypoint R-CNN): the region proposal head's objectness and box
      deltas, and the box (and mask / keypoint) heads on *fixed* proposals (`grid_boxes`) instead of the RPN's,
      so that no top-k, threshold or NMS decides what the second stage sees;
    * one-stage detectors (RetinaNet, FCOS, SSD, SSDlite): the head's class logits and box regressions.

    The backbone's features themselves are not returned: the FPN's output channels may be pruned (when every
    head reading them is pruned with them), so they do not keep their shape. Call in eval mode.

    Raises:
        TypeError: ``model`` is not a torchvision-style detector (no ``transform`` and ``backbone``).

    Examples:
        >>> import torch, torchvision
        >>> net = torchvision.models.detection.retinanet_resnet50_fpn(num_classes=3, weights_backbone=None,
        ...                                                           min_size=64, max_size=64).eval()
        >>> sorted(detection_outputs(net, [torch.rand(3, 64, 64)]))
        ['bbox_regression', 'cls_logits']
    """
    transform, backbone = getattr(model, "transform", None), getattr(model, "backbone", None)
    if not isinstance(transform, nn.Module) or not isinstance(backbone, nn.Module):
        raise TypeError(f"{type(model).__name__} is not a torchvision detector (it needs .transform and .backbone)")
    if getattr(model, "rpn", None) is not None and getattr(model, "roi_heads", None) is not None:
        return _two_stage_outputs(model, inputs)
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise TypeError(f"{type(model).__name__} has neither rpn/roi_heads nor a head: not a torchvision detector")
    _, features = _features(model, inputs)
    return dict(head(list(features.values())))


class TwoStageMacsView(nn.Module):
    """A two-stage torchvision detector's compute with a *fixed* number of proposals: what its MACs are counted on.

    A Faster / Mask / Keypoint R-CNN in eval mode runs its box head on the proposals that survive the region
    proposal network's NMS, and its mask / keypoint head on the final detections: counts that depend on the
    weights and the image (a detector pruned or trained for one more epoch can count 70x fewer MACs on the same
    image). This view runs the detector's own transform, backbone and RPN head, then the box head on
    ``rpn.post_nms_top_n()`` boxes per image (eval mode's count: 1000 for torchvision's defaults; what a trained
    detector gets on a real image) and the mask / keypoint heads on ``roi_heads.detections_per_img`` boxes (100):
    the work of one image at the detector's full proposal and detection counts. Box decoding, NMS and RoI
    pooling have no MACs. The view shares the detector's submodules under their own names (``backbone``,
    ``rpn``, ``roi_heads``, ...), so a MACs report of it reads as one of the detector.
    `rartsprune.flops.flops_report` counts every two-stage torchvision detector through it.

    Examples:
        >>> import torch, torchvision
        >>> from rartsprune.flops import flops_report
        >>> net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        ...     num_classes=3, weights_backbone=None, min_size=64, max_size=64)
        >>> fc6 = flops_report(net, (torch.rand(1, 3, 64, 64),)).by_module["roi_heads.box_head.fc6"]["macs"]
        >>> fc6 // net.roi_heads.box_head.fc6.weight.numel()  # this builder keeps 150 proposals in eval mode
        150
        >>> sorted(TwoStageMacsView(net.eval())([torch.rand(3, 64, 64)]))
        ['box_regression', 'class_logits', 'rpn_deltas', 'rpn_objectness']
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        if not is_two_stage_detector(detector):
            raise TypeError(f"{type(detector).__name__} is not a two-stage torchvision detector (no rpn / roi_heads)")
        for name, child in detector.named_children():
            self.add_module(name, child)
        # the detector's own tensors too (rartsprune's channel scores live there while a search runs)
        for name, param in detector.named_parameters(recurse=False):
            self.register_parameter(name, param)
        for name, buf in detector.named_buffers(recurse=False):
            self.register_buffer(name, buf)

    def forward(self, images: Any) -> dict[str, Any]:
        # the RPN's post-NMS count follows its mode (eval while MACs are counted)
        return _two_stage_outputs(self, images, boxes=int(self.rpn.post_nms_top_n()),
                                  detections=int(self.roi_heads.detections_per_img))


def _features(model: nn.Module, inputs: Any) -> tuple[Any, OrderedDict[str, torch.Tensor]]:
    """A torchvision detector's transformed images and backbone (FPN) features for ``inputs`` (images or
    ``(images, targets)``)."""
    images = inputs[0] if isinstance(inputs, tuple) else inputs
    images, _ = model.transform(list(images))
    features = model.backbone(images.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    return images, features


def _two_stage_outputs(model: nn.Module, inputs: Any, boxes: int | None = None,
                       detections: int | None = None) -> dict[str, Any]:
    """Raw outputs of a two-stage detector: the RPN head, then the RoI heads on fixed boxes (`grid_boxes`).

    ``boxes``: how many boxes per image the box head sees (the grid repeated to that count; ``None``: the grid
    once); ``detections``: how many of them the mask / keypoint heads see (``None``: all).
    """
    images, features = _features(model, inputs)
    roi_heads = model.roi_heads
    objectness, deltas = model.rpn.head(list(features.values()))
    out: dict[str, Any] = {"rpn_objectness": objectness, "rpn_deltas": deltas}
    sizes = images.image_sizes
    grid = [b.to(images.tensors.device) for b in grid_boxes(sizes)]
    proposals = grid if boxes is None else [_repeat_boxes(b, boxes) for b in grid]
    kept = proposals if detections is None else [b[:detections] for b in proposals]
    x = roi_heads.box_head(roi_heads.box_roi_pool(features, proposals, sizes))
    out["class_logits"], out["box_regression"] = roi_heads.box_predictor(x)
    if roi_heads.has_mask():
        x = roi_heads.mask_head(roi_heads.mask_roi_pool(features, kept, sizes))
        out["mask_logits"] = roi_heads.mask_predictor(x)
    if roi_heads.has_keypoint():
        x = roi_heads.keypoint_head(roi_heads.keypoint_roi_pool(features, kept, sizes))
        out["keypoint_logits"] = roi_heads.keypoint_predictor(x)
    return out


def _repeat_boxes(boxes: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` boxes: ``boxes`` repeated (and cut) to that count."""
    reps = -(-n // len(boxes))
    return boxes.repeat(reps, 1)[:n]


def is_two_stage_detector(model: nn.Module) -> bool:
    """True for a torchvision detector with a region proposal network and RoI heads (Faster / Mask / Keypoint R-CNN).

    Examples:
        >>> import torchvision
        >>> is_two_stage_detector(torchvision.models.resnet18())
        False
    """
    return (is_torchvision_detector(model) and isinstance(getattr(model, "rpn", None), nn.Module)
            and isinstance(getattr(model, "roi_heads", None), nn.Module))


def is_torchvision_detector(model: nn.Module) -> bool:
    """True for torchvision's detectors (R-CNN family, RetinaNet, FCOS, SSD / SSDlite) and their subclasses.

    Never imports torchvision's detection package: a model of it can only exist once it is imported.
    """
    if "torchvision.models.detection" not in sys.modules:
        return False
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD

    return isinstance(model, (GeneralizedRCNN, RetinaNet, FCOS, SSD))


def comparable_outputs(model: nn.Module, inputs: Any) -> Any:
    """What rartsprune compares before and after removing channels: `detection_outputs` for a torchvision
    detector, the model's own outputs (``model(inputs)``, ``model(*inputs)`` or ``model(**inputs)``) otherwise.

    Examples:
        >>> import torch
        >>> comparable_outputs(torch.nn.Identity(), torch.ones(2)).tolist()
        [1.0, 1.0]
    """
    if is_torchvision_detector(model):
        return detection_outputs(model, inputs)
    return _call_model(model, inputs)


class PrunableFrozenBatchNorm2d(nn.BatchNorm2d):
    """A ``BatchNorm2d`` that always normalises with its running statistics: torchvision's ``FrozenBatchNorm2d``
    as a layer Torch-Pruning can prune.

    It stays in eval mode whatever ``train()`` says, and its affine parameters do not require gradients, so it
    computes what ``FrozenBatchNorm2d`` computes in both modes; being a ``BatchNorm2d``, its channels are removed
    with the convolution's and a channel score folds into it. Made by `prunable_frozen_batchnorm`.
    """

    def train(self, mode: bool = True) -> PrunableFrozenBatchNorm2d:
        """Stay in eval mode (the statistics are frozen)."""
        return super().train(False)


def prunable_frozen_batchnorm(model: nn.Module) -> int:
    """Replace every torchvision ``FrozenBatchNorm2d`` in ``model`` by an equal `PrunableFrozenBatchNorm2d`, in place.

    Call it before `rartsprune.attach_scores` / `rartsprune.prune` on a detector or segmenter built with
    pretrained (backbone) weights. The outputs do not change (same statistics, affine parameters and ``eps``).
    Returns the number of layers replaced.

    Examples:
        >>> import torch, torchvision
        >>> from torchvision.ops.misc import FrozenBatchNorm2d
        >>> net = torchvision.models.resnet18(norm_layer=FrozenBatchNorm2d).eval()
        >>> x = torch.randn(1, 3, 32, 32)
        >>> before = net(x)
        >>> prunable_frozen_batchnorm(net), torch.allclose(net(x), before, atol=1e-5)
        (20, True)
    """
    from torchvision.ops.misc import FrozenBatchNorm2d

    found = [(name, m) for name, m in model.named_modules() if type(m) is FrozenBatchNorm2d and name]
    for name, frozen in found:
        layer = PrunableFrozenBatchNorm2d(frozen.weight.numel(), eps=frozen.eps)
        layer = layer.to(device=frozen.weight.device, dtype=frozen.weight.dtype)
        with torch.no_grad():
            layer.weight.copy_(frozen.weight)
            layer.bias.copy_(frozen.bias)
            layer.running_mean.copy_(frozen.running_mean)
            layer.running_var.copy_(frozen.running_var)
        layer.weight.requires_grad_(False)
        layer.bias.requires_grad_(False)
        _set_module(model, name, layer.eval())
    return len(found)
