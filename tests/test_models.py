"""Tests of the reference models: the Network Slimming pre-activation ResNet and the CIFAR VGG
(rartsprune.app.models)."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import rartsprune
from rartsprune.app.models import (
    CIFAR_MOBILENETV2_SETTING,
    VGG,
    VGG_CONFIGS,
    PreResNet,
    mobilenet_v2_cifar,
    preresnet,
    preresnet_depths,
    vgg,
)


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """CPU tests of conv nets run ~10x faster with one thread when the cores are shared (no spin-waits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _hand_param_count(depth: int, num_classes: int, bn: bool = True) -> int:
    """Parameter count from the architecture description, independent of the implementation."""
    n = (depth - 2) // 9
    norm = (lambda c: 2 * c) if bn else (lambda c: 0)
    bias = (lambda c: 0) if bn else (lambda c: c)
    total = 3 * 16 * 9 + bias(16)
    cin = 16
    for planes in (16, 32, 64):
        for j in range(n):
            cout = 4 * planes
            total += norm(cin) + cin * planes + bias(planes)
            total += norm(planes) + 9 * planes * planes + bias(planes)
            total += norm(planes) + planes * cout + bias(cout)
            if j == 0:  # stride or width change: 1x1 conv shortcut
                total += cin * cout + bias(cout)
            cin = cout
    return total + norm(cin) + cin * num_classes + num_classes


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnet164_has_1_70m_parameters() -> None:
    model = preresnet(depth=164, num_classes=10)
    count = _count(model)
    print(f"PreResNet-164 (CIFAR-10) parameters: {count:,}")
    assert count == _hand_param_count(164, 10) == 1_703_258
    assert abs(count / 1.70e6 - 1) < 0.01
    assert len(model.layer1) == len(model.layer2) == len(model.layer3) == 18


@pytest.mark.parametrize(("depth", "num_classes"), [(20, 10), (29, 100), (11, 7)])
def test_small_depth_parameter_counts(depth: int, num_classes: int) -> None:
    assert _count(preresnet(depth, num_classes)) == _hand_param_count(depth, num_classes)
    assert _count(preresnet(depth, num_classes, bn=False)) == _hand_param_count(depth, num_classes, bn=False)


def test_stage_widths_and_strides() -> None:
    model = preresnet(20)
    outs = {}
    hooks = [
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: outs.__setitem__(name, o.shape))
        for name in ("conv1", "layer1", "layer2", "layer3")
    ]
    model(torch.randn(2, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert outs == {
        "conv1": torch.Size([2, 16, 32, 32]),
        "layer1": torch.Size([2, 64, 32, 32]),
        "layer2": torch.Size([2, 128, 16, 16]),
        "layer3": torch.Size([2, 256, 8, 8]),
    }
    assert model.layer1[0].conv1.out_channels == 16 and model.layer3[1].conv2.in_channels == 64
    assert model.layer1[1].downsample is None and model.layer2[0].downsample.stride == (2, 2)
    # Network Slimming init: BN scales 0.5
    assert all(m.weight.detach().eq(0.5).all() for m in model.modules() if isinstance(m, nn.BatchNorm2d))


def test_forward_backward_shapes() -> None:
    torch.manual_seed(0)
    model = preresnet(20, num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10)
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.shape == p.shape, name
        assert torch.isfinite(p.grad).all(), name
    assert model(torch.randn(1, 3, 40, 40)).shape == (1, 10)  # global pooling: other sizes work


def test_bn_false_has_no_batchnorm_and_is_identity_at_init() -> None:
    torch.manual_seed(0)
    model = preresnet(164, bn=False)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(c.bias is not None for c in convs)
    # Fixup init: every residual branch starts at zero, so a block maps x to its shortcut exactly
    block = model.layer1[3]
    x = torch.randn(2, 64, 8, 8)
    assert torch.equal(block(x), x)
    # activations stay bounded through 164 layers (no normalisation)
    feats = {}
    model.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("out", o))
    out = model(torch.randn(2, 3, 32, 32))
    assert torch.isfinite(feats["out"]).all() and 0 < feats["out"].detach().std().item() < 100
    assert torch.equal(out, torch.zeros(2, 10))  # zero-initialised classifier


def _fit(model: nn.Module, steps: int, lr: float) -> tuple[float, float]:
    """Fit 32 random 16x16 images to random labels; returns (first, last) loss."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, 16, 16, generator=g)
    y = torch.randint(0, 10, (32,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses[0], losses[-1]


def test_bn_false_trains() -> None:
    torch.manual_seed(0)
    first, last = _fit(preresnet(11, bn=False), steps=60, lr=0.05)
    assert first == pytest.approx(2.302585, abs=1e-5)  # zero logits: log(10)
    assert last < 0.1


@pytest.mark.slow
def test_bn_false_resnet164_trains() -> None:
    torch.manual_seed(0)
    first, last = _fit(preresnet(164, bn=False), steps=40, lr=0.05)
    assert first == pytest.approx(2.302585, abs=1e-5)
    assert last < 0.5 * first


@pytest.mark.parametrize("depth", [12, 2, 0, -7, 165])
def test_invalid_depth_names_the_valid_form(depth: int) -> None:
    with pytest.raises(ValueError, match=r"9n\+2"):
        preresnet(depth)


def test_invalid_arguments() -> None:
    with pytest.raises(TypeError, match="depth"):
        preresnet(164.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_classes"):
        preresnet(20, num_classes=0)
    with pytest.raises(TypeError, match="bn"):
        PreResNet(20, bn="no")  # type: ignore[arg-type]


def test_preresnet_depths() -> None:
    depths = preresnet_depths()
    assert {29, 56, 110, 164, 1001} <= set(depths)
    assert depths == sorted(depths) and depths[0] == 11
    assert all((d - 2) % 9 == 0 for d in depths) and 12 not in depths
    assert preresnet_depths(30) == [11, 20, 29]
    for d in depths[:3]:
        assert preresnet(d).depth == d


def test_torchvision_builders_never_download_without_pretrained(monkeypatch: pytest.MonkeyPatch) -> None:
    # segmentation / detection builders download backbone weights by default (weights_backbone): the zoo
    # turns that off when pretrained=False, so a machine without network builds them
    import urllib.error

    import torchvision

    from rartsprune.app.zoo import build_model

    model = build_model("torchvision:lraspp_mobilenet_v3_large", num_classes=3)
    assert type(model).__name__ == "LRASPP" and model.classifier.low_classifier.out_channels == 3

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(RuntimeError, match=r"torchvision:resnet18: downloading its weights failed \(URLError"):
        build_model("torchvision:resnet18", pretrained=True)


# ------------------------------------------------------------------------------------------------- CIFAR VGG
def _hand_vgg_count(depth: int, width: float, num_classes: int) -> tuple[int, list[int]]:
    """Parameters and conv widths from VGG's configuration table, independent of the implementation."""
    widths = [max(1, round(c * width)) for c in VGG_CONFIGS[depth] if c != "M"]
    total, cin = 0, 3
    for c in widths:
        total += 9 * cin * c + 2 * c  # bias-free conv + BatchNorm
        cin = c
    return total + cin * num_classes + num_classes, widths


@pytest.mark.parametrize(("depth", "width", "num_classes"), [(11, 0.5, 10), (11, 1.0, 10), (13, 0.25, 100), (19, 0.1, 7)])
def test_vgg_parameter_count_and_widths(depth: int, width: float, num_classes: int) -> None:
    model = vgg(depth, num_classes, width)
    count, widths = _hand_vgg_count(depth, width, num_classes)
    assert _count(model) == count
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == widths
    assert len(widths) + 3 == depth  # the VGG names count three fully connected layers; one classifier here
    pools = sum(isinstance(m, nn.MaxPool2d) for m in model.features)
    assert pools == 4  # 32 -> 2 px before the global pooling
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, num_classes)
    assert model(torch.randn(1, 3, 48, 40)).shape == (1, num_classes)  # any size from 16 px


def test_vgg_half_width_costs_about_as_many_macs_as_preresnet20() -> None:
    x = torch.randn(1, 3, 32, 32)
    macs = rartsprune.flops_report(vgg(11, width=0.5), x).macs
    assert macs == 38_788_608  # 9 * cin * cout * h * w summed, plus BN and the classifier
    assert 0.9 < macs / rartsprune.flops_report(preresnet(20), x).macs < 1.2


def test_vgg_trains() -> None:
    torch.manual_seed(0)
    first, last = _fit(vgg(11, width=0.25), steps=30, lr=0.05)
    assert last < 0.5 * first


def _pruned_to_budget(model: nn.Module, x: torch.Tensor, macs: float) -> tuple:
    """``model`` scored with random scores in [0.5, 1.5] (seed 0), pruned to ``macs`` of its MACs: the pruner, the
    pruned model (eval mode) and the scored model's outputs on ``x`` before the surgery. Checks the MACs (2 %)."""
    torch.manual_seed(0)
    model = model.eval()
    before = rartsprune.flops_report(model, x[:1]).macs
    pruner = rartsprune.prune(model, macs=macs, example_inputs=x[:1])
    for a in rartsprune.get_handle(model).scores:
        a.data.uniform_(0.5, 1.5)
    with torch.no_grad():
        scored = model(x)  # the kept channels, each scaled by its score
    pruned = pruner.finalize().eval()
    assert rartsprune.flops_report(pruned, x[:1]).macs / before == pytest.approx(macs, rel=0.02)
    return pruner, pruned, scored


def test_vgg_prunes_to_a_macs_budget_and_keeps_its_outputs() -> None:
    """Every conv of the chain is its own group: surgery to half the MACs gives the widths the plan names and the
    scored network's outputs."""
    x = torch.randn(4, 3, 32, 32)
    pruner, pruned, scored = _pruned_to_budget(vgg(11, width=0.25), x, 0.5)
    plan = pruner.result["widths"]
    convs = {n: m for n, m in pruned.named_modules() if isinstance(m, nn.Conv2d)}
    assert set(plan) == set(convs) and all(convs[n].out_channels == w["kept"] >= 1 for n, w in plan.items())
    assert sum(w["kept"] for w in plan.values()) < sum(w["channels"] for w in plan.values())
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), scored, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(("kwargs", "message"), [({"depth": 12}, "depth"), ({"depth": True}, "depth"),
                                                 ({"num_classes": 0}, "num_classes"), ({"width": 0}, "width"),
                                                 ({"width": float("nan")}, "width"), ({"width": "1"}, "width")])
def test_vgg_bad_arguments_name_their_cause(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        VGG(**kwargs)


def test_mobilenet_v2_cifar_is_torchvisions_network_with_the_cifar_strides() -> None:
    """Same layers and parameters as torchvision's width-0.5 MobileNetV2; only the second stage's stride differs, so a
    32x32 image ends on a 2x2 map (ImageNet's plan: 1x1) and costs 4x the MACs after that stage."""
    import torchvision

    model, reference = mobilenet_v2_cifar(10, width=0.5), torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)
    assert [p.shape for p in model.parameters()] == [p.shape for p in reference.parameters()]
    assert _count(model) == _count(reference) == 700_490
    strides = [m.stride[0] for m in model.features.modules() if isinstance(m, nn.Conv2d) and m.stride[0] > 1]
    assert strides == [2, 2, 2, 2]  # the stem and three stages (ImageNet: four)
    assert [row[3] for row in CIFAR_MOBILENETV2_SETTING] == [1, 1, 2, 2, 1, 2, 1]
    x = torch.randn(2, 3, 32, 32)
    assert model.features(x).shape == (2, 1280, 2, 2)
    assert model(x).shape == (2, 10)
    macs = rartsprune.flops_report(model, x[:1]).macs
    assert 7.0e6 < macs < 8.0e6 and macs > 2.5 * rartsprune.flops_report(reference, x[:1]).macs


def test_mobilenet_v2_cifar_prunes_to_a_macs_budget_and_keeps_its_outputs() -> None:
    """The expanded channels and the residual-tied block outputs: surgery to 0.6x of the MACs lands within 2 % and
    gives the scored network's outputs."""
    x = torch.randn(3, 3, 32, 32)
    pruner, pruned, scored = _pruned_to_budget(mobilenet_v2_cifar(10, width=0.5), x, 0.6)
    assert all(w["kept"] >= 1 for w in pruner.result["widths"].values())
    depthwise = [m for m in pruned.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(m.groups == m.in_channels == m.out_channels for m in depthwise)
    with torch.no_grad():
        torch.testing.assert_close(pruned(x), scored, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize(("kwargs", "message"), [({"num_classes": 0}, "num_classes"), ({"width": 0}, "width"),
                                                 ({"width": float("inf")}, "width"), ({"width": True}, "width")])
def test_mobilenet_v2_cifar_bad_arguments_name_their_cause(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mobilenet_v2_cifar(**kwargs)
