"""Model coverage: every torchvision classifier and >= 40 timm models go through attach -> zero 40% -> surgery.

The default run checks a representative dozen; ``pytest -m slow`` checks every model (the same sweep as
``bench/coverage.py``, which also writes the table in docs/coverage.md). The export sweep
(``bench/coverage.py --suite export``) runs here on two small models, into a temporary folder.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
import torch

from rartsprune.app.zoo import (
    TIMM_COVERAGE,
    build_model,
    example_inputs_for,
    torchvision_classification_models,
)
from rartsprune.check import check_model, perturb_parameters
from tests.scripts import load_script

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


# ---- the export sweep (bench/coverage.py --suite export)

ROOT = Path(__file__).resolve().parents[1]
EXPORT_MODELS = ("torchvision:squeezenet1_1", "torchvision:resnet18")
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript", "onnxruntime"))


def _coverage_module() -> ModuleType:
    """bench/coverage.py as a module (bench/ is not a package)."""
    return load_script("bench/coverage.py", "bench_coverage")


def _table_row(text: str, spec: str) -> list[str]:
    line = next(ln for ln in text.splitlines() if ln.startswith(f"| {spec} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_export_suite_models_selection() -> None:
    cov = _coverage_module()
    default = cov._suite_specs("export")
    assert default == cov._suite_specs("torchvision") + cov._suite_specs("timm") and len(default) == len(ALL)
    assert cov._specs("export", "resnet18") == ["torchvision:resnet18", "timm:resnet18"]  # whole names
    assert cov._specs("export", "torchvision:resnet(34|50)") == ["torchvision:resnet34", "torchvision:resnet50"]
    assert cov._specs("timm", "vit_.*,resnet18") == ["timm:vit_tiny_patch16_224", "timm:resnet18"]
    assert cov._specs("timm", "resnet34") == ["timm:resnet34"]  # not in the suite: taken as a spec
    assert cov._specs("torchvision", "resnet1") == ["torchvision:resnet1"]  # a pattern matches whole names only


def test_export_suite_writes_json_and_table_and_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cov = _coverage_module()
    formats = ["torch_export", "onnx"] if HAS_ONNX else ["torch_export"]
    table = tmp_path / "coverage.md"
    kept = "# Model coverage\n\n## torchvision: 1/1 pass (100%)\n\nkept\n\n"
    table.write_text(kept + "## Export\n\n(sweep results pending)\n\n## Later\n\nhand-written\n")
    out = tmp_path / "export.json"
    common = ["--suite", "export", "--json", str(out), "--table", str(table), "--threads", "1",
              "--formats", ",".join(formats)]
    assert cov.main([*common, "--models", ",".join(EXPORT_MODELS)]) == 0

    data = json.loads(out.read_text())
    assert data["formats"] == formats and data["ratio"] == 0.4 and data["atol"] == 1e-5
    assert sorted(data["rows"]) == sorted(EXPORT_MODELS)
    for spec, row in data["rows"].items():
        assert row["ok"] is True and not row.get("reason"), row
        assert row["removed_channels"] > 0 and row["params_after"] < row["params_before"]
        assert 0 < row["seconds"] < 900 and row["input"] == [3, 64, 64]
        assert sorted(row["formats"]) == sorted(formats)
        for fmt, cell in row["formats"].items():
            assert cell["ok"] is True and cell["checked"] is True, (spec, fmt, cell)
            assert cell["batch_sizes"] == [2, 3] and cell["max_diff"] <= 1e-5 and cell["output_scale"] > 1e-3

    text = table.read_text()
    planned = len(cov._suite_specs("export"))
    assert text.startswith(kept) and text.endswith("## Later\n\nhand-written\n")  # the rest is kept as it was
    assert "(sweep results pending)" not in text and text.count("## Export") == 1
    assert f"\n## Export\n\n**2/2 pass** (partial sweep: 2 of {planned} models run).\n" in text
    assert f"**Partial sweep**: 2 of the {planned} models have been run; the other {planned - 2} are not run yet." in text
    assert f"Per format: torch.export 2/2{', ONNX 2/2' if HAS_ONNX else ''} pass" in text
    for spec in EXPORT_MODELS:
        cells = _table_row(text, spec)
        diffs = [float(c.split(", ")[1]) for c in cells[3:3 + len(formats)]]
        assert all(c.startswith("pass, ") for c in cells[3:3 + len(formats)]) and max(diffs) <= 1e-5
        assert cells[-2] == "pass" and cells[-1] == ""
        assert float(cells[-3].removesuffix(" s")) == round(data["rows"][spec]["seconds"])

    # resumed: finished models are skipped, --limit caps the new ones, failures keep their reason
    ran: list[str] = []

    def fake_worker(spec: str, args: object, env: object) -> dict:
        ran.append(spec)
        return {"model": spec, "ok": False, "reason": "exporting ResNet to torch_export failed: fake", "seconds": 1.0}

    monkeypatch.setattr(cov, "_run_worker", fake_worker)
    models = ["--models", f"{','.join(EXPORT_MODELS)},torchvision:resnet(34|50)", "--limit", "1"]
    assert cov.main([*common, *models]) == 0
    assert ran == ["torchvision:resnet34"]
    assert cov.main([*common, *models]) == 0
    assert ran == ["torchvision:resnet34", "torchvision:resnet50"]
    assert cov.main([*common, *models]) == 0 and len(ran) == 2  # everything selected is finished
    rows = json.loads(out.read_text())["rows"]
    assert len(rows) == 4 and all(rows[s]["ok"] for s in EXPORT_MODELS)  # the real rows were not replaced
    text = table.read_text()
    assert f"\n## Export\n\n**2/4 pass** (partial sweep: 4 of {planned} models run).\n" in text
    assert _table_row(text, "torchvision:resnet34")[-2:] == ["**fail**", "exporting ResNet to torch_export failed: fake"]


@pytest.mark.parametrize("unpruned_fails", [True, False])
def test_export_failure_is_attributed_by_exporting_the_unpruned_model(monkeypatch: pytest.MonkeyPatch,
                                                                      unpruned_fails: bool) -> None:
    """A format that fails on the pruned model is tried on the unpruned one: the exporter's limit or the pruning's."""
    cov = _coverage_module()
    calls: list[str] = []

    def fake_export(model: object, x: object, folder: Path, fmt: str) -> dict:
        calls.append(folder.name)
        fails = folder.name != "unpruned" or unpruned_fails
        return {"ok": False, "reason": "boom"} if fails else {"ok": True, "output_scale": 1.0}

    monkeypatch.setattr(cov, "_export_format", fake_export)
    row = cov.run_export("torchvision:resnet18", 0.4, ("torch_export",))
    cell = row["formats"]["torch_export"]
    assert row["ok"] is False and calls[-1] == "unpruned" and len(calls) == 2
    assert cell["unpruned_ok"] is (not unpruned_fails)
    assert ("the unpruned model fails too: boom" in row["reason"]) is unpruned_fails
    text = "\n".join(cov.export_lines({"torchvision:resnet18": row}, ["torchvision:resnet18"], ("torch_export",)))
    assert f"the exporter's limit, not the pruning's): {int(unpruned_fails)}." in text
