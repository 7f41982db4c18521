"""Models beyond classifiers: torchvision detection, segmentation, video, optical flow and timm ``features_only``.

The default run checks one detector, one segmenter and one video model end to end (attach -> score gradients
from the task's loss -> zero 40% -> surgery -> exact forward -> one search step -> finalize -> exact forward),
plus the losses and the zoo's task plumbing. ``pytest -m slow`` runs every model of the task suites, the
sweep behind the "Beyond classifiers" sections of docs/coverage.md (``bench/coverage.py --suite tasks``).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn as nn

from rartsprune.app.tasks import (
    TIMM_FEATURES_COVERAGE,
    TaskInputs,
    search_step_check,
    small_build_kwargs,
    task_inputs,
    task_of,
    torchvision_task_models,
)
from rartsprune.app.zoo import build_model, example_inputs_for
from rartsprune.check import check_model, perturb_parameters
from rartsprune.tasks import (
    PrunableFrozenBatchNorm2d,
    comparable_outputs,
    detection_loss,
    detection_outputs,
    flow_loss,
    grid_boxes,
    is_torchvision_detector,
    prunable_frozen_batchnorm,
    segmentation_loss,
)

#: One model per task for the default run (each well under 40 s on one core).
FAST = (
    "torchvision:fasterrcnn_mobilenet_v3_large_320_fpn",
    "torchvision:lraspp_mobilenet_v3_large",
    "torchvision:mc3_18",
)

#: Models refused with a reason (``check`` fails with this text in its reason); see docs/coverage.md.
#: RepVGG's stages are single residual groups, each returned as a feature map: nothing is left to prune.
REFUSED: dict[str, str] = {"timm_features:repvgg_a0": "no prunable channel group"}

TORCHVISION_TASK_SPECS = [f"torchvision:{n}" for t in ("detection", "segmentation", "video", "flow")
                          for n in torchvision_task_models(t)]
ALL = TORCHVISION_TASK_SPECS + [f"timm_features:{n}" for n in TIMM_FEATURES_COVERAGE]


def _model(spec: str) -> tuple[nn.Module, TaskInputs]:
    torch.manual_seed(0)
    model = perturb_parameters(build_model(spec, num_classes=5, small=True)).eval()
    return model, task_inputs(spec, model, batch=2)


def _check(spec: str) -> None:
    model, inputs = _model(spec)
    result = check_model(model, inputs.example, ratio=0.4, outputs_fn=inputs.outputs_fn, loss_fn=inputs.loss_fn,
                         train_batch=inputs.train_batch)
    if spec in REFUSED:
        assert not result.ok and REFUSED[spec] in result.reason, result.reason
        return
    assert result.ok, result.reason
    assert result.identity_diff <= 1e-6
    assert result.pruned_diff <= 1e-5 * max(1.0, result.output_scale)
    assert result.removed_channels > 0 and result.params_after < result.params_before
    if inputs.loss_fn is not None:
        assert result.score_grad_norm > 0 and result.scores_without_grad == 0
        assert torch.isfinite(torch.tensor(result.loss))
        search = search_step_check(model, inputs, ratio=0.4)
        assert search["ok"], search["reason"]
        assert search["prc"] == pytest.approx(0.4, abs=0.05)


def _params() -> list:
    return [pytest.param(s, marks=[] if s in FAST else [pytest.mark.slow], id=s) for s in ALL]


@pytest.mark.parametrize("spec", _params())
def test_task_model_prunes_exactly(spec: str) -> None:
    if spec.startswith("timm_features:"):
        pytest.importorskip("timm")
    _check(spec)


def test_task_lists() -> None:
    assert task_of("torchvision:maskrcnn_resnet50_fpn") == "detection"
    assert task_of("torchvision:deeplabv3_resnet50") == "segmentation"
    assert task_of("torchvision:swin3d_t") == "video"
    assert task_of("torchvision:raft_small") == "flow"
    assert task_of("torchvision:resnet18") == task_of("timm:resnet18") == "classification"
    assert task_of("timm_features:resnet18") == "timm_features"
    assert len(TORCHVISION_TASK_SPECS) >= 29 and set(FAST) <= set(ALL)
    with pytest.raises(ValueError, match="unknown torchvision task"):
        torchvision_task_models("classification")


def test_zoo_builds_task_models_small() -> None:
    assert small_build_kwargs("torchvision:fcos_resnet50_fpn")["min_size"] == 128
    assert small_build_kwargs("torchvision:fcn_resnet50") == {"aux_loss": True}
    assert small_build_kwargs("torchvision:resnet18") == {}
    flow = build_model("torchvision:raft_small", num_classes=10)  # RAFT has no num_classes: not passed
    image1, image2, updates = example_inputs_for("torchvision:raft_small", batch=1)
    assert len(flow.eval()(image1, image2, updates)) == updates
    feats = build_model("timm_features:resnet18", small=True)
    assert len(feats(example_inputs_for("timm_features:resnet18", batch=1, model=feats))) == 5
    (images,) = example_inputs_for("torchvision:keypointrcnn_resnet50_fpn", batch=2)
    _, targets = task_inputs("torchvision:keypointrcnn_resnet50_fpn", None, batch=2).train_batch
    assert len(images) == len(targets) == 2 and targets[0]["keypoints"].shape == (2, 17, 3)
    assert example_inputs_for("torchvision:s3d").shape == (1, 3, 16, 224, 224)


def test_timm_features_only_prunes_exactly() -> None:
    pytest.importorskip("timm")
    _check("timm_features:resnet18")


def test_detection_loss_and_outputs() -> None:
    torch.manual_seed(0)
    spec = "torchvision:fcos_resnet50_fpn"
    net = build_model(spec, num_classes=3, small=True, min_size=64, max_size=64)
    inputs = task_inputs(spec, net, batch=1)
    loss = detection_loss(net.train(), inputs.train_batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="eval mode"):
        detection_loss(net.eval(), inputs.train_batch)
    with pytest.raises(ValueError, match="images, targets"):
        detection_loss(net, inputs.train_batch[0])
    with torch.no_grad():
        raw = detection_outputs(net.eval(), inputs.example)
        assert is_torchvision_detector(net) and not is_torchvision_detector(nn.Conv2d(3, 3, 1))
        assert comparable_outputs(net, inputs.example).keys() == raw.keys()  # what attach and surgery compare
    assert set(raw) == {"cls_logits", "bbox_regression", "bbox_ctrness"}
    with pytest.raises(TypeError, match="not a torchvision detector"):
        detection_outputs(nn.Linear(2, 2), torch.zeros(1, 2))
    boxes = grid_boxes([(64, 32)], per_side=2)[0]
    assert boxes.shape == (8, 4) and boxes[:, 2].max() <= 32 and boxes[:, 3].max() <= 64


def test_segmentation_and_flow_losses() -> None:
    class Seg(nn.Module):
        def __init__(self, aux: bool) -> None:
            super().__init__()
            self.conv, self.aux = nn.Conv2d(3, 4, 1), aux

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            y = self.conv(x)
            return {"out": y, "aux": 2 * y} if self.aux else {"out": y}

    x, y = torch.randn(2, 3, 8, 8), torch.randint(0, 4, (2, 8, 8))
    plain = segmentation_loss(Seg(False), (x, y))
    torch.manual_seed(0)
    net = Seg(True)
    with_aux = segmentation_loss(net, (x, y))
    no_aux = functools.partial(segmentation_loss, aux_weight=0.0)(net, (x, y))
    assert with_aux > no_aux and plain.dim() == 0
    y[0] = 255  # ignored pixels
    assert torch.isfinite(segmentation_loss(net, (x, y)))
    with pytest.raises(ValueError, match="'out'"):
        segmentation_loss(nn.Conv2d(3, 4, 1), (x, y))

    class Flow(nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor, num_flow_updates: int = 2) -> list[torch.Tensor]:
            return [torch.full_like(a[:, :2], float(i)) for i in range(1, num_flow_updates + 1)]

    a = torch.zeros(1, 3, 4, 4)
    gt = torch.zeros(1, 2, 4, 4)
    # predictions 1 and 2 (errors 1, 2), weighted 0.8 and 1
    assert flow_loss(Flow(), (a, a, gt)).item() == pytest.approx(0.8 * 1 + 2)
    assert flow_loss(Flow(), (a, a, gt), num_flow_updates=1).item() == pytest.approx(1.0)
    valid = torch.zeros(1, 4, 4)
    assert flow_loss(Flow(), (a, a, gt, valid)).item() == 0.0
    with pytest.raises(ValueError, match="flow_gt"):
        flow_loss(Flow(), (a, a))


def test_check_reports_a_loss_that_misses_the_scores() -> None:
    model = perturb_parameters(build_model("torchvision:resnet18", num_classes=5)).eval()
    x = torch.randn(2, 3, 32, 32)

    def no_grad_loss(net: nn.Module, batch: torch.Tensor) -> torch.Tensor:
        return net.fc.bias.sum()  # depends on no score

    result = check_model(model, x, loss_fn=no_grad_loss)
    assert not result.ok and "no gradient to any score" in result.reason
    result = check_model(model, x, loss_fn=lambda net, b: net(b).sum() * float("nan"))
    assert not result.ok and "training loss is nan" in result.reason
    result = check_model(model, x, loss_fn=lambda net, b: net(b).logsumexp(-1).mean())
    assert result.ok and result.scores_without_grad == 0 and result.unscored == {
        "fc": "protected: its channels reach the model output"}


def test_frozen_batchnorm_becomes_prunable() -> None:
    import torchvision
    from torchvision.ops.misc import FrozenBatchNorm2d

    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=5, norm_layer=FrozenBatchNorm2d)  # as pretrained detectors have
    for m in net.modules():
        if isinstance(m, FrozenBatchNorm2d):  # statistics that are not the identity
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.uniform_(0.5, 1.5)
            m.bias.normal_(0, 0.1)
    net = perturb_parameters(net).eval()
    x = torch.randn(2, 3, 32, 32)
    assert not check_model(net, x).ok  # every group runs through a FrozenBatchNorm2d: nothing is removable
    with torch.no_grad():
        before = net(x)
        assert prunable_frozen_batchnorm(net) == 20
        assert torch.allclose(net(x), before, atol=1e-5)
        net.train()  # frozen statistics: the layers stay in eval mode, their affine parameters frozen
        frozen = [m for m in net.modules() if isinstance(m, PrunableFrozenBatchNorm2d)]
        assert len(frozen) == 20 and not any(m.training or m.weight.requires_grad for m in frozen)
        assert torch.allclose(net(x), before, atol=1e-5)
    result = check_model(net.eval(), x, loss_fn=lambda n, b: n(b).logsumexp(-1).mean())
    assert result.ok and result.scored_groups == 12 and result.score_grad_norm > 0, result.reason
