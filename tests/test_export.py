"""Export of pruned models: torch.export, ONNX (with the ``export`` extra), TorchScript, the CLI, refusals.

The default run exports a pruned ResNet-18 and a small ViT; ``pytest -m slow`` exports every pruned model
of the default coverage set. The Export section of docs/coverage.md comes from the same sweep run by
``python bench/coverage.py --suite export`` (resumable, one subprocess per model; tested on two models in
tests/test_coverage.py).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
import torchvision

import rartsprune
from rartsprune.app.cli import main
from rartsprune.app.pipeline import PruneJob, run
from rartsprune.app.zoo import (
    TIMM_COVERAGE,
    build_model,
    example_inputs_for,
    load_pruned_spec,
    torchvision_classification_models,
)
from rartsprune.check import check_model, perturb_parameters
from rartsprune.export import (
    FORMATS,
    SUFFIXES,
    ExportError,
    export_model,
    format_for_path,
    load_pruned,
    read_plan,
)

ROOT = Path(__file__).resolve().parents[1]
ATOL = 1e-5
HAS_ONNX = all(importlib.util.find_spec(m) is not None for m in ("onnx", "onnxscript"))
HAS_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_onnx = pytest.mark.skipif(not (HAS_ONNX and HAS_ORT), reason='needs the export extra: pip install "rartsprune[export]"')


def _pruned(model: nn.Module, x: torch.Tensor, classes: int = 10) -> tuple[nn.Module, Any]:
    """``rartsprune.prune`` → one search step on random labels → ``finalize``."""
    perturb_parameters(model)
    pruner = rartsprune.prune(model, ratio=0.4, example_inputs=x[:1], weight_lr=0.01, arch_lr=0.05)
    y = torch.randint(0, classes, (x.shape[0],))
    pruner.step((x, y), (x.flip(0), y.flip(0)))
    model = pruner.finalize()
    assert pruner.result["removed_channels"] > 0
    return model, pruner


@pytest.fixture(scope="module")
def resnet() -> tuple[nn.Module, torch.Tensor, Any]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 64, 64)
    model, pruner = _pruned(torchvision.models.resnet18(num_classes=10), x)
    return model, x, pruner


@pytest.fixture(scope="module")
def vit() -> tuple[nn.Module, torch.Tensor, Any]:
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    net = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32,
                                               mlp_dim=64, num_classes=10)
    model, pruner = _pruned(net, x)
    assert model.encoder.layers[0].mlp[0].out_features < 64  # the MLP lost width
    return model, x, pruner


def _snapshot(model: nn.Module) -> tuple[list[bool], list[bool], dict[str, torch.Tensor]]:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            {k: v.detach().clone() for k, v in model.state_dict().items()})


def _assert_unchanged(model: nn.Module, snap: tuple[list[bool], list[bool], dict[str, torch.Tensor]]) -> None:
    modes, grads, state = snap
    assert [m.training for m in model.modules()] == modes
    assert [p.requires_grad for p in model.parameters()] == grads
    now = model.state_dict()
    assert now.keys() == state.keys() and all(torch.equal(now[k], state[k]) for k in state)


@torch.no_grad()
def _eval_out(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was)


def _inputs(x: torch.Tensor, batch: int, seed: int = 5) -> torch.Tensor:
    return torch.randn(batch, *x.shape[1:], generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_torch_export_equals_the_module(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    model, x, _ = request.getfixturevalue(name)
    model.train()  # the user's mode: export runs in eval mode and must give it back
    snap = _snapshot(model)
    path = tmp_path / "model.pt2"
    result = export_model(model, x, path)
    _assert_unchanged(model, snap)
    assert result.checked and result.batch_sizes == (2, 3) and result.format == "torch_export"
    assert result.max_diff <= ATOL and result.output_scale > 1e-2  # a comparison that could fail
    program = torch.export.load(path).module()
    for batch in (1, 2, 5):  # the batch dimension is dynamic
        xb = _inputs(x, batch)
        with torch.no_grad():
            got = program(xb)
        assert got.shape == (batch, 10)
        assert (got - _eval_out(model, xb)).abs().max().item() <= ATOL
    if name == "resnet":  # eval-mode BatchNorm was exported, not the batch statistics of training mode
        with torch.no_grad():
            train_out = model(x)
        assert (program(x) - train_out).abs().max().item() > 1e-3
        model.eval()


@needs_onnx
@pytest.mark.parametrize("name", ["resnet", "vit"])
def test_onnx_equals_the_module(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    import onnxruntime

    model, x, _ = request.getfixturevalue(name)
    model.train()
    snap = _snapshot(model)
    path = tmp_path / "model.onnx"
    result = export_model(model, x, path, "onnx")
    _assert_unchanged(model, snap)
    model.eval()
    assert result.checked and result.batch_sizes == (2, 3) and result.max_diff <= ATOL
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]  # small models: weights inside the file
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert isinstance(inp.shape[0], str)  # symbolic batch dimension
    for batch in (1, 4):
        xb = _inputs(x, batch)
        (got,) = session.run(None, {inp.name: xb.numpy()})
        assert got.shape == (batch, 10)
        assert (torch.from_numpy(got) - _eval_out(model, xb)).abs().max().item() <= ATOL


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_torchscript_and_static_batch(resnet: tuple, vit: tuple, tmp_path: Path) -> None:
    model, x, _ = resnet
    model.eval()
    result = export_model(model, x, tmp_path / "r18.ts", "torchscript")
    assert result.checked and result.max_diff <= ATOL
    traced = torch.jit.load(str(tmp_path / "r18.ts"))
    xb = _inputs(x, 3)
    assert (traced(xb) - _eval_out(model, xb)).abs().max().item() <= ATOL

    model, x, _ = vit
    result = export_model(model, x, tmp_path / "vit.pt2", dynamic_batch=False)
    assert result.batch_sizes == (2,) and not result.dynamic_batch and result.max_diff <= ATOL
    program = torch.export.load(tmp_path / "vit.pt2").module()
    assert (program(x) - _eval_out(model, x)).abs().max().item() <= ATOL
    with pytest.raises((RuntimeError, AssertionError, ValueError)):
        program(_inputs(x, 3))  # a static export accepts only its batch size


def test_format_for_path() -> None:
    assert [format_for_path(f"m{SUFFIXES[f]}") for f in FORMATS] == list(FORMATS)
    with pytest.raises(ValueError, match=r"\.pt2"):
        format_for_path("model.bin")


class Branchy(nn.Module):
    """Data-dependent control flow: torch.export cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return y * 2 if y.sum() > 0 else y


class FixedBatch(nn.Module):
    """Reshapes to a hard-coded batch of 2: exports only with a static batch dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 16 * 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.reshape(2, -1))


class Drifting(nn.Module):
    """Each call multiplies by the call count: the exported constant cannot match the module."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.conv(x) * self.calls


def test_refusals_leave_the_model_and_the_file_as_they_were(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(2, 3, 16, 16)
    path = tmp_path / "model.pt2"
    path.write_bytes(b"previous export")  # a failed export must not replace it

    scored = torchvision.models.resnet18(num_classes=10).train()
    handle = rartsprune.attach_scores(scored, x[:1])
    with torch.no_grad():
        handle.scores[0].mul_(0.5)
    snap = _snapshot(scored)
    with pytest.raises(ExportError, match=r"scores attached.*finalize\(\).*rartsprune\.remove"):
        export_model(scored, x, path)
    _assert_unchanged(scored, snap)
    assert rartsprune.has_scores(scored)

    plain = Branchy().train()
    snap = _snapshot(plain)
    with pytest.raises(ValueError, match="unknown export format 'tflite'; valid: torch_export, onnx, torchscript"):
        export_model(plain, x, path, "tflite")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the export extra were not installed
    with pytest.raises(ImportError, match=r"onnxscript.*pip install \"rartsprune\[export\]\""):
        export_model(plain, x, tmp_path / "model.onnx", "onnx")
    monkeypatch.undo()
    with pytest.raises(ExportError, match=r"exporting Branchy to torch_export failed: \w+"):
        export_model(plain, x, path)
    _assert_unchanged(plain, snap)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export_model(plain, x, tmp_path / "missing" / "model.pt2")

    fixed = FixedBatch().train()
    snap = _snapshot(fixed)
    with pytest.raises(ExportError, match="FixedBatch itself fails at batch size 3.*dynamic_batch=False"):
        export_model(fixed, x, path)
    with pytest.raises(ExportError, match=r"Constraints violated.*the dynamic batch dimension is the cause"):
        export_model(fixed, x, path, check=False)
    _assert_unchanged(fixed, snap)
    assert path.read_bytes() == b"previous export"
    static = export_model(fixed, x, tmp_path / "fixed.pt2", dynamic_batch=False)
    assert static.checked and static.batch_sizes == (2,) and static.max_diff <= ATOL
    (tmp_path / "fixed.pt2").unlink()

    drifting = Drifting()
    with pytest.raises(ExportError, match=r"computes other outputs than the module: largest difference"):
        export_model(drifting, x, path)
    assert path.read_bytes() == b"previous export"
    assert not (tmp_path / "model.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt2"]  # no temporary folder left behind
    # without the check the same model exports (the check is what refused it)
    assert not export_model(Drifting(), x, path, check=False).checked and path.read_bytes() != b"previous export"


def test_load_pruned_rebuilds_the_module(resnet: tuple, tmp_path: Path) -> None:
    model, x, pruner = resnet
    model.eval()
    pruner.plan().save(tmp_path / "plan.json")
    torch.save(model.state_dict(), tmp_path / "pruned.pt")
    rebuilt = load_pruned_spec(tmp_path / "plan.json", tmp_path / "pruned.pt", "torchvision:resnet18").eval()
    assert rebuilt.fc.out_features == 10  # the class count is read from the plan
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in model.parameters())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))
    fresh = torchvision.models.resnet18(num_classes=10)
    same = load_pruned(pruner.plan(), model.state_dict(), fresh, example_inputs=x[:1]).eval()
    with torch.no_grad():
        assert torch.equal(same(x), model(x))
    with pytest.raises(ValueError, match="example_inputs is required"):
        load_pruned(pruner.plan(), model.state_dict(), torchvision.models.resnet18(num_classes=10), example_inputs=None)
    with pytest.raises(TypeError, match="load_pruned_spec"):
        load_pruned(pruner.plan(), model.state_dict(), "torchvision:resnet18", example_inputs=x[:1])
    with pytest.raises(ValueError, match="is not a rartsprune pruning plan"):
        read_plan(tmp_path / "pruned.pt")
    with pytest.raises(ValueError, match="the weights do not fit the pruned ResNet: .*size mismatch"):
        load_pruned_spec(pruner.plan(), torchvision.models.resnet18(num_classes=10).state_dict(), "torchvision:resnet18")
    with pytest.raises(ValueError, match="another architecture"):
        load_pruned_spec(tmp_path / "plan.json", tmp_path / "pruned.pt", "torchvision:resnet34")


TINY = '''
import torch.nn as nn


def tiny(num_classes=10):
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.Conv2d(16, 24, 3, stride=2, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(24, num_classes))
'''


def test_cli_exports_a_jobs_plan_and_weights(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "tiny.py").write_text(TINY)
    spec = f"{tmp_path / 'tiny.py'}:tiny"
    job = tmp_path / "job"
    run(PruneJob(model=spec, data="fake", train_subset=64, test_subset=32, batch_size=32, search_epochs=1,
                 finetune_epochs=0, ratio=0.5, plots=False, progress=False, out=str(job)))
    plan, weights = job / "plan.json", job / "pruned.pt"
    reference = load_pruned_spec(plan, weights, spec).eval()
    assert reference[0].out_channels < 16
    fmt = "onnx" if HAS_ONNX and HAS_ORT else "torch_export"
    out = tmp_path / f"tiny{SUFFIXES[fmt]}"
    proc = subprocess.run([sys.executable, "-m", "rartsprune", "export", "--model", spec, "--plan", str(plan),
                           "--weights", str(weights), "--out", str(out), "--size", "32"],
                          capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'"format": "{fmt}"' in proc.stdout and '"checked": true' in proc.stdout
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        expected = reference(x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {session.get_inputs()[0].name: x.numpy()})[0])
    else:
        got = torch.export.load(out).module()(x)
    assert (got - expected).abs().max().item() <= ATOL

    # in process: the torch.export format, then bad inputs (exit status 2, one error line, no traceback)
    common = ["export", "--model", spec, "--plan", str(plan), "--weights", str(weights), "--size", "32"]
    assert main([*common, "--out", str(tmp_path / "tiny.pt2")]) == 0
    capsys.readouterr()
    bad = {
        "No such file or directory": ["--plan", str(tmp_path / "nope.json")],
        "not a rartsprune pruning plan": ["--plan", str(weights)],
        "another architecture": ["--model", "torchvision:resnet18"],
        "cannot tell the export format": ["--out", str(tmp_path / "tiny.bin")],
        "the plan's classifier has 10 outputs": ["--num-classes", "7"],
        "cannot read the weights": ["--weights", str(plan)],
    }
    for message, change in bad.items():
        args = [*common, "--out", str(tmp_path / "bad.pt2")]
        for flag, value in zip(change[::2], change[1::2]):
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
        assert main(args) == 2, message
        err = capsys.readouterr().err
        assert err.startswith("rartsprune export: error:") and message in err and "Traceback" not in err, err
    assert not (tmp_path / "bad.pt2").exists()


# ---- the sweep over the default coverage set (pytest -m slow)

SWEEP = [f"torchvision:{n}" for n in torchvision_classification_models()] + [f"timm:{n}" for n in TIMM_COVERAGE]
SWEEP_FORMATS = ("torch_export", "onnx") if HAS_ONNX and HAS_ORT else ("torch_export",)


@pytest.mark.slow
@pytest.mark.parametrize("spec", SWEEP)
def test_every_pruned_coverage_model_exports(spec: str, tmp_path: Path, record_property: Any) -> None:
    torch.manual_seed(0)
    model = perturb_parameters(build_model(spec, num_classes=10, small=True)).eval()
    x = example_inputs_for(spec, batch=2, model=model)
    result = check_model(model, x, ratio=0.4, backward=False, return_model=True)
    if not result.ok:
        pytest.skip(f"not pruned, so not exported: {result.reason}")
    pruned = result.pruned.eval()
    snap = _snapshot(pruned)
    failures = {}
    for fmt in SWEEP_FORMATS:
        try:
            r = export_model(pruned, x, tmp_path / f"model{SUFFIXES[fmt]}", fmt)
            record_property(fmt, f"ok {r.max_diff:.3g} / {r.output_scale:.3g}")
        except ExportError as exc:
            failures[fmt] = str(exc)
            try:  # is it the dynamic batch dimension?
                export_model(pruned, x, tmp_path / f"static{SUFFIXES[fmt]}", fmt, dynamic_batch=False)
                static = "static batch: ok"
            except ExportError as exc2:
                static = f"static batch: {exc2}"
            record_property(fmt, f"fail: {exc} | {static}")
    _assert_unchanged(pruned, snap)
    assert not failures, failures


@needs_onnx
def test_onnx_falls_back_to_the_torchscript_exporter(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Where the dynamo-based ONNX exporter fails, the TorchScript-based one writes the file (checked the same)."""
    real = torch.onnx.export
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    x = torch.randn(2, 3, 16, 16)

    def dynamo_fails(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dynamo", True):
            raise RuntimeError("fake: Failed to decompose the FX graph")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.onnx, "export", dynamo_fails)
    r = export_model(net, x, tmp_path / "net.onnx", "onnx")
    assert r.exporter == "torchscript" and r.checked and r.batch_sizes == (2, 3) and r.max_diff <= 1e-5
    assert r.to_dict()["exporter"] == "torchscript"

    def both_fail(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("fake: dynamo" if kwargs.get("dynamo", True) else "fake: legacy")

    monkeypatch.setattr(torch.onnx, "export", both_fail)
    with pytest.raises(ExportError, match="fake: dynamo.*TorchScript-based exporter.*fake: legacy"):
        export_model(net, x, tmp_path / "other.onnx", "onnx")
    assert not (tmp_path / "other.onnx").exists()
