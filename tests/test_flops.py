"""Tests of the MAC / parameter report (rartsprune.flops, on fvcore)."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from rartsprune.errors import UnsupportedModelError
from rartsprune.flops import FlopsReport, compare_reports, flops_report, format_count

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Tracing conv nets on shared CPUs is much faster with one intra-op thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_resnet18_at_224() -> None:
    report = flops_report(torchvision.models.resnet18(), torch.randn(1, 3, 224, 224))
    assert report.params == 11_689_512
    assert report.macs == pytest.approx(1.82e9, rel=0.003)
    assert format_count(report.macs) == "1.82G" and format_count(report.params) == "11.69M"
    assert report.by_module[""] == {"macs": report.macs, "params": report.params}
    # the convolutions of layer1: 4 convs 64->64, 3x3, at 56x56
    assert report.by_operator["conv"] > 0.99 * 1.8e9
    assert report.by_module["layer1.0.conv1"]["macs"] == 56 * 56 * 64 * 64 * 9
    assert report.by_module["fc"] == {"macs": 512 * 1000, "params": 512 * 1000 + 1000}
    assert sum(report.by_module[f"layer{i}"]["params"] for i in range(1, 5)) < report.params
    assert report.unsupported_ops.get("aten::max_pool2d") == 1


def test_conv_and_linear_by_hand() -> None:
    conv = nn.Conv2d(6, 8, 3, stride=2, padding=1, groups=2)
    report = flops_report(conv, torch.randn(2, 6, 9, 9))
    out_hw = 5 * 5  # (9 + 2 - 3) // 2 + 1 = 5
    macs = 2 * 8 * out_hw * (6 // 2) * 9  # batch x out channels x positions x (in per group x k x k)
    assert report.macs == macs == 10_800
    assert report.params == 8 * 3 * 9 + 8
    assert flops_report(nn.Linear(10, 5), torch.randn(3, 10)).macs == 3 * 10 * 5


class _Attention(nn.Module):
    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(q, k, v)


def test_sdpa_handle_by_hand() -> None:
    q, k, v = torch.randn(2, 4, 5, 8), torch.randn(2, 4, 7, 8), torch.randn(2, 4, 7, 6)
    report = flops_report(_Attention(), (q, k, v))
    assert report.macs == 2 * 4 * 5 * 7 * (8 + 6)
    assert report.unsupported_ops == {}


def test_sdpa_in_timm_vit() -> None:
    timm = pytest.importorskip("timm")
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=4, num_classes=10)
    batch = 2
    report = flops_report(model, torch.randn(batch, 3, 32, 32))
    tokens, dim, heads, depth = (32 // 4) ** 2 + 1, 192, 3, 12
    head_dim = dim // heads
    attention = depth * batch * heads * tokens * tokens * (head_dim + head_dim)
    assert report.by_operator["scaled_dot_product_attention"] == attention == 38_937_600
    assert "aten::scaled_dot_product_attention" not in report.unsupported_ops
    # qkv, proj, two MLP layers per block and the head on the class token
    linear = depth * batch * tokens * dim * (3 * dim + dim + 4 * dim + 4 * dim) + batch * dim * 10
    assert report.by_operator["linear"] == linear
    assert report.by_module["blocks.0.attn"]["macs"] == batch * tokens * dim * 4 * dim + attention // depth


class _Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5))
        self.b = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x).mean((2, 3)))


def _state(model: nn.Module) -> tuple[list[bool], list[bool], int]:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()], hooks


def test_modes_flags_and_hooks_restored() -> None:
    model = _Mixed().train()
    model.a[1].eval()
    model.b.weight.requires_grad_(False)
    model.a[0].register_forward_hook(lambda m, i, o: None)
    bn_stats = model.a[1].running_mean.clone()
    before = _state(model)
    report = flops_report(model, torch.randn(2, 3, 8, 8))
    assert _state(model) == before
    assert torch.equal(model.a[1].running_mean, bn_stats)  # traced in eval mode: BN statistics untouched
    assert report.macs == 2 * 4 * 36 * 27 + 2 * 4 * 36 * 2 + 2 * 8  # conv + eval BN (affine) + linear


class _Broken(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom inside forward")


def test_trace_failure_is_clear_and_leaves_model_alone() -> None:
    model = _Broken().train()
    before = _state(model)
    with pytest.raises(UnsupportedModelError, match=r"_Broken.*RuntimeError: boom inside forward"):
        flops_report(model, torch.randn(1, 3, 4, 4))
    assert _state(model) == before  # fvcore's scope hooks were removed, mode restored


def test_bad_arguments() -> None:
    with pytest.raises(TypeError, match="example_inputs"):
        flops_report(nn.Linear(2, 2), [torch.randn(1, 2), "x"])
    with pytest.raises(TypeError, match="example_inputs"):
        flops_report(nn.Linear(2, 2), 3)
    with pytest.raises(TypeError, match="nn.Module"):
        flops_report(lambda x: x, torch.randn(1))  # type: ignore[arg-type]
    report = flops_report(nn.Linear(2, 2), torch.randn(1, 2))
    with pytest.raises(ValueError, match="max_depth"):
        report.table(max_depth=-1)
    with pytest.raises(TypeError):
        compare_reports(report, "after")  # type: ignore[arg-type]


def test_no_fvcore_logging_but_unsupported_ops_listed(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Identity(), nn.GELU())
    with caplog.at_level(logging.DEBUG):
        report = flops_report(model, torch.randn(1, 3, 8, 8))
    assert not [r for r in caplog.records if r.name.startswith("fvcore")]
    assert report.unsupported_ops == {"aten::max_pool2d": 1, "aten::gelu": 1}
    assert "aten::gelu" in report.table()


def test_no_future_warning_escapes() -> None:
    code = textwrap.dedent(
        """
        import sys, warnings
        import torch, torch.nn as nn
        import rartsprune  # the package itself is not under test here

        def fresh():
            for name in [m for m in sys.modules if m.split(".")[0] == "fvcore" or m == "rartsprune.flops"]:
                del sys.modules[name]
            from rartsprune.flops import flops_report
            flops_report(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(1, 3, 8, 8))
            assert "fvcore.nn" in sys.modules

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fresh()
        future = [str(w.message) for w in caught if issubclass(w.category, FutureWarning)]
        print("FUTURE", len(future), future)
        filters = list(warnings.filters)
        fresh()
        print("FILTERS_UNCHANGED", warnings.filters == filters)  # silenced locally, not globally
        """
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "FUTURE 0 []" in out.stdout, out.stdout
    assert "FILTERS_UNCHANGED True" in out.stdout, out.stdout


def test_tables_and_comparison() -> None:
    x = torch.randn(1, 3, 8, 8)
    before = flops_report(nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3)), x)
    after = flops_report(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 8, 3)), x)
    table = before.table(max_depth=1)
    lines = table.splitlines()
    assert lines[0] == "| module | params | MACs |"
    assert "FLOP" not in table.upper().replace("MACS", "")
    assert len(lines) == 2 + 3  # header, model, two convs (ReLU has neither params nor MACs)
    cmp = compare_reports(before, after).splitlines()
    assert cmp[0].startswith("| module | params before | params after | params ratio | MACs before")
    conv0 = next(line for line in cmp if line.split("|")[1].strip().endswith("0"))
    assert "0.500x" in conv0  # half the output channels: half the params and MACs
    total_ratio = after.macs / before.macs
    assert f"{total_ratio:.3f}x" in cmp[2]
    assert isinstance(before, FlopsReport) and "MACs" in str(before)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (999, "999"),
        (1000, "1.00K"),
        (1_703_258, "1.70M"),
        (255_400_000, "255.4M"),
        (11_689_512, "11.69M"),
        (1_819_065_856, "1.82G"),
        (999_999, "1.00M"),
        (-2500, "-2.50K"),
        (2.5e12, "2.50T"),
    ],
)
def test_format_count(n: float, text: str) -> None:
    assert format_count(n) == text


def test_format_count_rejects_non_numbers() -> None:
    with pytest.raises(TypeError):
        format_count("12")  # type: ignore[arg-type]


def test_fused_multihead_attention_is_counted() -> None:
    # nn.MultiheadAttention takes its fused fast path in eval mode under no_grad (as fvcore traces); fvcore
    # counts 0 for it. The handle must give what the unfused path counts: projections + attention.
    from torchvision.models import VisionTransformer

    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                              num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    fused = flops_report(model, x)
    assert "aten::_native_multi_head_attention" not in fused.unsupported_ops
    previous = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        unfused = flops_report(model, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(previous)
    assert fused.macs == unfused.macs
    # by hand: B=2, L=S=17 tokens, E=32, per layer 4*B*L*E*E (projections) + 2*B*L*L*E (attention)
    b, n, e = 2, 17, 32
    per_layer = 4 * b * n * e * e + 2 * b * n * n * e
    attn = sum(v["macs"] for k, v in fused.by_module.items() if k.endswith("self_attention"))
    assert attn == 2 * per_layer


def test_a_list_of_tensors_as_one_argument_is_counted() -> None:
    """A torchvision detector takes its images as a list: the count traces through it (and through prune's MACs
    budget, which counts with the same code)."""

    class ListNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, images: list[torch.Tensor]) -> torch.Tensor:
            return self.conv(torch.stack(images))

    net = ListNet()
    imgs = [torch.randn(3, 8, 8), torch.randn(3, 8, 8)]
    report = flops_report(net, (imgs,))
    assert report.macs == 2 * 8 * 8 * 8 * 3 * 9 and report.input_shapes == [(3, 8, 8), (3, 8, 8)]
    with pytest.raises(TypeError, match="tensors or lists of tensors"):
        flops_report(net, ([imgs[0], "x"],))


def test_two_stage_detector_macs_do_not_depend_on_its_weights() -> None:
    """A Faster R-CNN's own forward keeps as many proposals as survive NMS; the count uses a fixed number."""
    from rartsprune.tasks import is_two_stage_detector

    torch.manual_seed(0)
    net = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(
        num_classes=3, weights_backbone=None, min_size=64, max_size=64).train()
    assert is_two_stage_detector(net) and not is_two_stage_detector(torchvision.models.resnet18())
    x = (torch.rand(1, 3, 64, 64),)
    before = flops_report(net, x)
    flags = [p.requires_grad for p in net.parameters()]
    with torch.no_grad():  # an objectness head that rejects (almost) every anchor: its own forward keeps few boxes
        net.rpn.head.cls_logits.bias.fill_(-50.0)
    after = flops_report(net, x)
    assert after.macs == before.macs
    fc6 = net.roi_heads.box_head.fc6
    n = net.rpn._post_nms_top_n["testing"]
    assert after.by_module["roi_heads.box_head.fc6"]["macs"] == n * fc6.in_features * fc6.out_features
    assert after.by_module["backbone"] == before.by_module["backbone"] and after.params == before.params
    assert net.training and [p.requires_grad for p in net.parameters()] == flags  # the model is as it was
