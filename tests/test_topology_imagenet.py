"""DARTS's ImageNet evaluation network (mobile setting) and ``recipes/darts_train.py --imagenet``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from rartsprune.app.topology.train import train_epoch
from rartsprune.flops import flops_report
from rartsprune.topology import (
    DARTS_V2,
    AuxiliaryHeadImageNet,
    DartsImageNetNetwork,
    DartsImageNetTrainConfig,
)
from rartsprune.topology.network import DartsEvalCell
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _conv_linear_macs(net: nn.Module, x: torch.Tensor) -> int:
    """Reference MAC count from forward hooks: out elements x (in channels / groups) x kernel area."""
    total = 0

    def hook(m: nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(m, nn.Conv2d):
            total += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        elif isinstance(m, nn.Linear):
            total += out.numel() * m.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            net.eval()(x)
    finally:
        for h in handles:
            h.remove()
    return total


def test_darts_v2_at_224_params_match_published():
    net = DartsImageNetNetwork(DARTS_V2)  # C=48, 14 cells, 1000 classes
    aux = _n(net.auxiliary_head)
    params = _n(net) - aux
    # DARTS reports 4.7M parameters without the auxiliary head
    assert params == 4_718_752 and abs(params / 4.7e6 - 1) < 0.02 and aux == 1_260_776
    # the auxiliary head sits on the 7x7 output of the 2/3-depth reduction cell (cell 9 of 14)
    assert net.aux_index == 9 and [i for i, c in enumerate(net.cells) if c.reduction] == [4, 9]


@pytest.mark.slow  # fvcore traces the full network: 5-25 s on 2 busy cores
def test_darts_v2_at_224_macs():
    net = DartsImageNetNetwork(DARTS_V2)
    report = flops_report(net, torch.randn(1, 3, 224, 224))
    assert report.params - _n(net.auxiliary_head) == 4_718_752 and report.params == _n(net)
    # fvcore MACs: 538.2M, 6.2% under the published 574M (see the module docstring), under the 600M limit
    assert report.macs == 538_228_224 and report.macs < 600e6
    assert report.macs / 574e6 == pytest.approx(0.9377, abs=5e-4)
    # fvcore's conv + linear part equals an independent count, and BN is the only other sizeable term
    ref = _conv_linear_macs(net, torch.randn(1, 3, 224, 224))
    assert report.by_operator["conv"] + report.by_operator["linear"] == ref == 529_911_552
    assert report.macs - ref == report.by_operator["batch_norm"] + report.by_operator["adaptive_avg_pool2d"]


def test_fvcore_macs_equal_reference_count_small():
    net = DartsImageNetNetwork(DARTS_V2, C=8, layers=3, num_classes=5)
    report = flops_report(net, torch.randn(1, 3, 64, 64))
    assert report.by_operator["conv"] + report.by_operator["linear"] == _conv_linear_macs(net, torch.randn(1, 3, 64, 64))


def test_forward_shapes_and_aux_output():
    net = DartsImageNetNetwork(DARTS_V2, C=8, layers=5, num_classes=7, auxiliary=False)
    sizes = {}
    hooks = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape)))
             for n in ("stem0", "stem1")]
    hooks.append(net.cells[-1].register_forward_hook(lambda m, i, o: sizes.__setitem__("last", tuple(o.shape))))
    logits, aux = net.train().forward_with_aux(torch.randn(3, 3, 64, 64))
    for h in hooks:
        h.remove()
    assert logits.shape == (3, 7) and aux is None
    # 64 px: stem0 /4 -> 16, stem1 /2 -> 8, reductions at cells 1 and 3 -> 2; last cell 4 nodes x 4C channels
    assert sizes == {"stem0": (3, 8, 16, 16), "stem1": (3, 8, 8, 8), "last": (3, 4 * 4 * 8, 2, 2)}

    net = DartsImageNetNetwork(DARTS_V2, C=8, layers=3, num_classes=7)
    logits, aux = net.train().forward_with_aux(torch.randn(2, 3, 224, 224))
    assert logits.shape == (2, 7) and aux.shape == (2, 7) and torch.isfinite(aux).all()
    logits_eval, aux_eval = net.eval().forward_with_aux(torch.randn(2, 3, 224, 224))
    assert aux_eval is None and net(torch.randn(1, 3, 224, 224)).shape == (1, 7)
    with pytest.raises(ValueError, match="at least 7x7"):
        net.train().forward_with_aux(torch.randn(2, 3, 64, 64))
    with pytest.raises(TypeError, match="DartsGenotype"):
        DartsImageNetNetwork("DARTS_V2")


def test_param_count_equals_reference_construction():
    C, layers, k = 8, 6, 7
    net = DartsImageNetNetwork(DARTS_V2, C=C, layers=layers, num_classes=k)
    # reference: DARTS's NetworkImageNet channel recurrence, cells built one by one
    stem0 = 3 * 9 * (C // 2) + 2 * (C // 2) + (C // 2) * 9 * C + 2 * C
    stem1 = C * 9 * C + 2 * C
    c_pp, c_p, c_curr, reduction_prev, cells, c_aux = C, C, C, True, 0, None
    for i in range(layers):
        reduction = i in (layers // 3, 2 * layers // 3)
        c_curr *= 2 if reduction else 1
        cells += _n(DartsEvalCell(DARTS_V2, c_pp, c_p, c_curr, reduction, reduction_prev))
        reduction_prev = reduction
        c_pp, c_p = c_p, 4 * c_curr
        if i == 2 * layers // 3:
            c_aux = c_p
    aux = c_aux * 128 + 2 * 128 + 128 * 768 * 4 + 768 * k + k
    classifier = c_p * k + k
    assert _n(net.stem0) == stem0 and _n(net.stem1) == stem1 and _n(net.cells) == cells
    assert _n(net.auxiliary_head) == aux == _n(AuxiliaryHeadImageNet(c_aux, k))
    assert _n(net) == stem0 + stem1 + cells + aux + classifier
    assert _n(DartsImageNetNetwork(DARTS_V2, C=C, layers=layers, num_classes=k, auxiliary=False)) == _n(net) - aux


def test_train_epoch_applies_label_smoothing_to_both_losses():
    net = DartsImageNetNetwork(DARTS_V2, C=4, layers=3, num_classes=5)
    x, y = torch.randn(2, 3, 224, 224), torch.tensor([1, 3])
    with torch.no_grad():
        logits, aux = net.train().forward_with_aux(x)
    expected = F.cross_entropy(logits, y, label_smoothing=0.1) + 0.4 * F.cross_entropy(aux, y, label_smoothing=0.1)
    plain = F.cross_entropy(logits, y) + 0.4 * F.cross_entropy(aux, y)
    opt = torch.optim.SGD(net.parameters(), lr=0.0)
    out = train_epoch(net, [(x, y)], opt, auxiliary_weight=0.4, label_smoothing=0.1)
    assert out["loss"] == pytest.approx(float(expected), rel=1e-5)
    assert abs(float(expected) - float(plain)) > 1e-3  # the smoothing changed the loss
    with pytest.raises(ValueError, match="label_smoothing"):
        train_epoch(net, [(x, y)], opt, label_smoothing=1.0)


def test_imagenet_config_is_dartss_protocol():
    c = DartsImageNetTrainConfig()
    assert (c.epochs, c.batch_size, c.lr, c.lr_gamma, c.momentum, c.weight_decay) == (250, 128, 0.1, 0.97, 0.9, 3e-5)
    assert (c.C, c.layers, c.auxiliary, c.auxiliary_weight, c.label_smoothing, c.grad_clip) == (
        48, 14, True, 0.4, 0.1, 5.0)
    assert (c.drop_path_prob, c.cutout, c.image_size) == (0.0, 0, 224)


# --------------------------------------------------------------------------------------------------
# the recipe


def _recipe():
    return load_script("recipes/darts_train.py", "darts_train")


def _image_folder(root: Path, classes=("ant", "bee", "cat"), n=(4, 2), val="val") -> Path:
    rng = np.random.default_rng(0)
    for split, count in zip(("train", val), n):
        for c in classes:
            (root / split / c).mkdir(parents=True)
            for i in range(count):
                img = Image.fromarray(rng.integers(0, 256, (40 + 8 * i, 56, 3), dtype=np.uint8))
                img.save(root / split / c / f"{i}.{'jpg' if i % 2 else 'png'}")
    return root


def test_recipe_imagenet_trains_resumes_and_reports(tmp_path):
    recipe = _recipe()
    data = _image_folder(tmp_path / "tiny")
    out = tmp_path / "run"
    common = ["--imagenet", "--data", str(data), "--C", "8", "--layers", "3", "--epochs", "2",
              "--batch-size", "4", "--max-steps", "1", "--workers", "0", "--device", "cpu", "--no-progress",
              "--out", str(out)]
    first = recipe.main([*common, "--stop-after", "1"])
    assert json.loads((out / "result.json").read_text())["epochs"] == 1 and not first["finished"]
    res = recipe.main([*common, "--resume"])
    saved = json.loads((out / "result.json").read_text())
    assert saved["epochs"] == 2 and saved["finished"] and saved == json.loads(json.dumps(res))
    assert saved["imagenet"] and saved["image_size"] == 224 and saved["num_classes"] == 3
    net = DartsImageNetNetwork(DARTS_V2, C=8, layers=3, num_classes=3)
    assert saved["params"] == _n(net) - _n(net.auxiliary_head) and saved["params_with_aux"] == _n(net)
    assert saved["macs"] == flops_report(net, torch.randn(1, 3, 224, 224)).macs
    cfg = saved["config"]
    assert (cfg["label_smoothing"], cfg["lr_gamma"], cfg["weight_decay"], cfg["auxiliary"]) == (0.1, 0.97, 3e-5, True)
    for epoch, entry in enumerate(saved["log"], start=1):
        assert math.isfinite(entry["train_loss"]) and math.isfinite(entry["test_loss"])
        assert entry["lr"] == pytest.approx(0.1 * 0.97**epoch)  # StepLR(step 1, gamma 0.97)
        correct = entry["test_accuracy"] * 6 / 100  # 6 val images
        assert 0 <= correct <= 6 and correct == pytest.approx(round(correct))
    assert (out / "checkpoint.pt").is_file() and (out / "curve.png").stat().st_size > 0

    # --image-size shrinks the images (no auxiliary head below 224 px); val/ may be test/
    small = recipe.main(["--imagenet", "--data", str(_image_folder(tmp_path / "t2", val="test")), "--C", "8",
                         "--layers", "3", "--epochs", "1", "--batch-size", "4", "--max-steps", "1", "--workers", "0",
                         "--image-size", "64", "--no-auxiliary", "--device", "cpu", "--no-progress", "--no-plots",
                         "--out", str(tmp_path / "small")])
    assert small["image_size"] == 64 and small["params"] == small["params_with_aux"] == saved["params"]
    assert small["macs"] < 0.1 * saved["macs"] and math.isfinite(small["log"][0]["train_loss"])


def test_recipe_imagenet_refusals(tmp_path):
    recipe = _recipe()
    base = ["--imagenet", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]
    with pytest.raises(SystemExit, match="auxiliary head needs --image-size >= 224"):
        recipe.main([*base, "--image-size", "64"])
    with pytest.raises(SystemExit, match="multiple of 32"):
        recipe.main([*base, "--image-size", "100", "--no-auxiliary"])
    with pytest.raises(SystemExit, match="--label-smoothing apply to --imagenet only"):
        recipe.main(["--label-smoothing", "0.1", "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit, match="not a folder"):
        recipe.main([*base[:2], str(tmp_path / "missing"), *base[3:]])
    (tmp_path / "train" / "a").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "train" / "a" / "0.png")
    with pytest.raises(FileNotFoundError, match="no val/ or test/"):
        recipe.main([*base, "--workers", "0"])
    assert not (tmp_path / "o").exists()  # refused before writing anything
    text = recipe.build_parser().format_help()
    for flag in ("--imagenet", "--image-size", "--init-channels", "--label-smoothing", "--lr-gamma", "--resume"):
        assert flag in text
    assert "(default 600; --imagenet: 250)" in " ".join(text.split())
