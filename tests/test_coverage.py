"""Model coverage: every torchvision classifier and >= 40 timm models go through attach -> zero 40% -> surgery.

The default run checks a representative dozen; ``pytest -m slow`` checks every model (the same sweep as
``bench/coverage.py``, which also writes the table in docs/coverage.md).
"""

from __future__ import annotations

import pytest
import torch

from rartsprune.app.zoo import (
    TIMM_COVERAGE,
    build_model,
    example_inputs_for,
    torchvision_classification_models,
)
from rartsprune.check import check_model, perturb_parameters

#: Representative models for the default run: residual, depthwise, grouped, concatenation (GoogLeNet, with
#: training-only auxiliary heads), squeeze-excite gating, GhostNet (Torch-Pruning over-prunes parts of it),
#: ConvNeXt (LayerNorm), ViT (attention), MLP-Mixer. DenseNet (slow: 120 groups) runs under -m slow.
FAST = (
    "torchvision:resnet18",
    "torchvision:mobilenet_v3_small",
    "torchvision:squeezenet1_1",
    "torchvision:efficientnet_b0",
    "torchvision:regnet_x_400mf",
    "torchvision:googlenet",
    "torchvision:mnasnet0_5",
    "timm:resnext26ts",
    "timm:ghostnet_050",
    "timm:convnext_atto",
    "timm:vit_tiny_patch16_224",
    "timm:mixer_s32_224",
)

#: Models rartsprune refuses with a clear UnsupportedModelError (see docs/coverage.md for the reasons).
UNSUPPORTED = {
    "timm:convnextv2_atto": "GlobalResponseNorm mixes channels and LayerNorm normalises the residual stream",
    "timm:nf_resnet26": "weight standardisation makes every removal change the remaining channels",
    "timm:eva02_tiny_patch14_224": "LayerNorm inside the SwiGLU MLP and on the residual stream",
}

ALL = [f"torchvision:{n}" for n in torchvision_classification_models()] + [f"timm:{n}" for n in TIMM_COVERAGE]


def _params() -> list:
    out = []
    for spec in ALL:
        marks = [] if spec in FAST else [pytest.mark.slow]
        out.append(pytest.param(spec, marks=marks, id=spec))
    return out


def test_lists_are_big_enough() -> None:
    import timm

    assert len(TIMM_COVERAGE) >= 40
    families = {timm.get_pretrained_cfg(n).architecture.split("_")[0].rstrip("0123456789") for n in TIMM_COVERAGE}
    assert len(families) >= 15
    assert set(FAST) <= set(ALL)


@pytest.mark.parametrize("spec", _params())
def test_model_prunes_exactly(spec: str) -> None:
    if spec.startswith("timm:"):
        pytest.importorskip("timm")
    torch.manual_seed(0)
    model = perturb_parameters(build_model(spec, num_classes=10, small=True)).eval()
    x = example_inputs_for(spec, batch=2, model=model)
    result = check_model(model, x, ratio=0.4)
    if spec in UNSUPPORTED:
        assert not result.ok and result.reason.startswith("UnsupportedModelError"), result.reason
        return
    assert result.ok, result.reason
    assert result.identity_diff <= 1e-6
    assert result.pruned_diff <= 1e-5 * max(1.0, result.output_scale)
    assert result.removed_channels > 0 and result.params_after < result.params_before
