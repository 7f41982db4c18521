"""Mean average precision of a torchvision detector, with torchmetrics' ``MeanAveragePrecision``.

COCO's box mAP: average precision over IoU thresholds 0.5, 0.55, ..., 0.95 (101-point interpolated precision,
up to 100 detections per image), averaged over the classes present; ``map_50`` at IoU 0.5 alone. The metric
is torchmetrics' (``iou_type="bbox"``, its default pycocotools backend), installed with the ``detection``
extra: ``pip install 'rartsprune[detection]'``. `require_map` says so clearly when it is missing.

Examples:
    >>> import torch
    >>> class Oracle(torch.nn.Module):  # one box per image, exactly the ground truth
    ...     def forward(self, images):
    ...         return [{"boxes": torch.tensor([[2.0, 2.0, 12.0, 12.0]]), "scores": torch.tensor([0.9]),
    ...                  "labels": torch.tensor([1])} for _ in images]
    >>> target = {"boxes": torch.tensor([[2.0, 2.0, 12.0, 12.0]]), "labels": torch.tensor([1])}
    >>> evaluate_map(Oracle(), [([torch.zeros(3, 16, 16)], [target])])["map"]
    1.0
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

__all__ = ["DETECTION_EXTRA", "MAP_KEYS", "require_map", "evaluate_map"]

#: The extra that installs the metric: ``pip install 'rartsprune[detection]'``.
DETECTION_EXTRA = "detection"
#: The numbers `evaluate_map` returns.
MAP_KEYS: tuple[str, ...] = ("map", "map_50", "map_75", "mar_100")


def require_map() -> type:
    """torchmetrics' ``MeanAveragePrecision`` class, or an ImportError naming the extra to install.

    Raises:
        ImportError: torchmetrics or pycocotools (its backend) is not installed.
    """
    missing = []
    try:
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError:
        missing.append("torchmetrics")
    try:
        import pycocotools  # noqa: F401
    except ImportError:
        missing.append("pycocotools")
    if missing:
        raise ImportError(
            f"detection mAP needs {' and '.join(missing)} (the {DETECTION_EXTRA!r} extra): "
            f"pip install 'rartsprune[{DETECTION_EXTRA}]'  (or: pip install 'torchmetrics>=1.3' 'pycocotools>=2.0')")
    return MeanAveragePrecision


def _plain(d: dict[str, Any], keys: Sequence[str]) -> dict[str, torch.Tensor]:
    return {k: d[k].detach().cpu() for k in keys}


@torch.no_grad()
def evaluate_map(model: nn.Module, batches: Iterable[tuple[Sequence[torch.Tensor], Sequence[dict[str, Any]]]], *,
                 device: torch.device | str | None = None, progress: bool = False, desc: str = "mAP") -> dict[str, float]:
    """COCO box mAP of ``model`` (in eval mode; every module's mode is restored) over ``(images, targets)`` batches.

    Args:
        model: a torchvision detector (or anything returning, in eval mode, one dict per image with ``boxes``
            ``x1 y1 x2 y2``, ``scores`` and ``labels``).
        batches: ``(list of (3, H, W) images, list of targets with boxes and labels)``, as
            `rartsprune.app.data.detection.detection_collate` makes them.
        device: where the images go (default: the model's parameters' device).
        progress, desc: a progress bar (hidden when the output is not a terminal).

    Returns:
        ``{"map", "map_50", "map_75", "mar_100"}`` as floats in [0, 1] (-1 where torchmetrics has no ground truth
        to score, e.g. no box at all).

    Raises:
        ImportError: the ``detection`` extra is missing (`require_map`).
        ValueError: ``batches`` yielded no image.
    """
    metric = require_map()(iou_type="bbox")
    if device is None:
        param = next(model.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    seen = 0
    try:
        for images, targets in tqdm(batches, desc=desc, leave=False, disable=None if progress else True, unit="batch"):
            preds = model([im.to(device) for im in images])
            metric.update([_plain(p, ("boxes", "scores", "labels")) for p in preds],
                          [_plain(t, ("boxes", "labels")) for t in targets])
            seen += len(images)
        if seen == 0:
            raise ValueError(f"{desc}: no image to evaluate")
        result = metric.compute()
    finally:
        for m, mode in modes:
            m.training = mode
    return {k: float(result[k]) for k in MAP_KEYS}
