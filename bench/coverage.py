"""Coverage table: which torchvision and timm models rartsprune scores and prunes exactly.

Classifier suites (``torchvision``, ``timm``): for every model: build it (random weights, 10 classes, small
inputs where the architecture allows), perturb the weights, then attach scores -> α = 1 equivalence -> zero
the scores of a random 40% of each group -> surgery -> output equivalence -> forward + backward of the pruned
model (`rartsprune.check.check_model`), plus MACs before and after with fvcore.

Task suites (``detection``, ``segmentation``, ``video``, ``flow``: torchvision's models of that task;
``timm_features``: timm backbones with ``features_only=True``): the same check with the task's inputs, loss
and compared outputs (`rartsprune.app.tasks.task_inputs`: a detector is compared on its raw head outputs), a
training-mode forward + backward that must give the scores finite gradients, then attach -> one RARTS search
step -> surgery -> exact forward (`rartsprune.app.tasks.search_step_check`; not for ``timm_features``, which
has no training targets).

Export suite (``export``, not part of ``all``): every classifier of the default coverage set (the two classifier
suites) is pruned as above (random 40% of each group, surgery), then exported with `rartsprune.export.export_model`
to ``torch.export`` (``.pt2``) and ONNX; the reloaded file's outputs must equal the module's within 1e-5 x max(1,
output scale). Writes ``bench/results/coverage_export.json`` and the "Export" section of ``docs/coverage.md``
(labelled partial while models of the set are missing).

Each model runs in its own subprocess with a time limit, so a hang or a crash shows up as a row, not a stuck
run. Writes ``bench/results/coverage.json`` (classifier rows under ``rows``, task rows under ``tasks``; kept
between runs: finished rows are skipped unless ``--force``; each finished row is merged into the file as it is
now, so suites can run in separate processes) and the markdown table ``docs/coverage.md`` (hand-written
sections after the generated ones are kept).

    python bench/coverage.py                       # everything (hours on 2 CPU cores)
    python bench/coverage.py --suite timm --models resnet18,vit_tiny_patch16_224
    python bench/coverage.py --suite detection --threads 1
    python bench/coverage.py --suite export --threads 1 --limit 20   # 20 more models of the export sweep
    python bench/coverage.py --suite export --models 'resnet.*,timm:vit_.*'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "coverage.json"
TABLE = ROOT / "docs" / "coverage.md"
CLASSIFIER_SUITES = ("torchvision", "timm")
TASK_SUITES = ("detection", "segmentation", "video", "flow", "timm_features")
#: The torchvision task suites: their pass rate is the one the ≥ 90% target is about.
TORCHVISION_TASK_SUITES = ("detection", "segmentation", "video", "flow")
TARGET = 0.9
#: The export sweep (``--suite export``): its JSON, formats and tolerance.
EXPORT_RESULTS = ROOT / "bench" / "results" / "coverage_export.json"
EXPORT_FORMATS = ("torch_export", "onnx")
EXPORT_ATOL = 1e-5
_FORMAT_TITLES = {"torch_export": "torch.export", "onnx": "ONNX", "torchscript": "TorchScript"}


def build_classifier(spec: str) -> tuple[dict, object, object]:
    """``(row, model, inputs)``: the classifier as ``rartsprune check`` builds it (random weights, seed 0,
    perturbed; 64 px where the architecture allows), the row holding its input shape and MACs; on a build
    failure ``(row with ok=False and the reason, None, None)``."""
    from rartsprune.app.tasks import check_setup
    from rartsprune.flops import flops_report

    row: dict = {"model": spec}
    try:
        model, inputs = check_setup(spec, num_classes=10, batch=2)
    except Exception as exc:  # noqa: BLE001 - any construction failure is a row in the table
        row.update(ok=False, reason=f"cannot build: {type(exc).__name__}: {exc}"[:300])
        return row, None, None
    x = inputs.example
    row["input"] = list(x.shape[1:])
    try:
        row["macs_before"] = flops_report(model, x[:1]).macs
    except Exception as exc:  # noqa: BLE001
        row["macs_before"] = None
        row["flops_error"] = str(exc)[:200]
    return row, model, inputs


def run_one(spec: str, ratio: float) -> dict:
    """Check one model in this process; returns a JSON-able row."""
    warnings.filterwarnings("ignore")
    from rartsprune.app.tasks import task_of

    if task_of(spec) != "classification":
        return run_task(spec, ratio)

    from rartsprune.app.tasks import check_task_model
    from rartsprune.flops import flops_report

    t0 = time.perf_counter()
    row, model, inputs = build_classifier(spec)
    if model is None:
        return row
    x = inputs.example
    result = check_task_model(model, inputs, ratio=ratio, return_model=True)
    row.update(result.to_dict())
    if result.ok and result.pruned is not None:
        try:
            row["macs_after"] = flops_report(result.pruned, x[:1]).macs
        except Exception:  # noqa: BLE001
            row["macs_after"] = None
    row["seconds"] = time.perf_counter() - t0
    return row


def _macs(model: object, spec: str, inputs: object) -> int | None:
    """fvcore MACs at batch 1 of what the check compares (a detector: its raw head outputs; RAFT: 3 updates)."""
    import torch
    import torch.nn as nn

    from rartsprune.app.tasks import FLOW_UPDATES, task_of
    from rartsprune.flops import flops_report

    class _Call(nn.Module):
        def __init__(self, net: nn.Module, call: object) -> None:
            super().__init__()
            self.net, self.call = net, call

        def forward(self, *xs: torch.Tensor) -> object:
            return self.call(self.net, xs)  # type: ignore[operator]

    task = task_of(spec)
    ex = inputs.example  # type: ignore[attr-defined]
    if task == "detection":
        wrapped, xs = _Call(model, lambda m, xs: inputs.outputs_fn(m, [xs[0][0]])), (ex[0][0][None],)  # type: ignore[attr-defined]
    elif task == "flow":
        wrapped, xs = _Call(model, lambda m, xs: m(xs[0], xs[1], FLOW_UPDATES)), (ex[0][:1], ex[1][:1])
    else:
        wrapped, xs = model, ex[:1]
    return flops_report(wrapped, xs).macs  # type: ignore[arg-type]


def run_task(spec: str, ratio: float) -> dict:
    """Check one detection / segmentation / video / flow model or timm feature extractor; a JSON-able row.

    ``ok``: the check passed (`rartsprune.check.check_model` with the task's outputs and loss) and, where the
    task has a loss, the search step too (``search``).
    """
    from rartsprune.app.tasks import (
        check_setup,
        check_task_model,
        describe_inputs,
        search_step_check,
        task_of,
    )

    row: dict = {"model": spec, "task": task_of(spec)}
    t0 = time.perf_counter()
    try:  # random weights (seed 0), perturbed; the task's small inputs, loss and compared outputs
        model, inputs = check_setup(spec, num_classes=10, batch=2)
    except Exception as exc:  # noqa: BLE001 - any construction failure is a row in the table
        row.update(ok=False, reason=f"cannot build: {type(exc).__name__}: {exc}"[:300])
        return row
    row["input"] = describe_inputs(inputs.example)
    try:
        row["macs_before"] = _macs(model, spec, inputs)
    except Exception as exc:  # noqa: BLE001
        row["macs_before"] = None
        row["flops_error"] = str(exc)[:200]
    result = check_task_model(model, inputs, ratio=ratio, return_model=True)
    row.update(result.to_dict())
    row["check_ok"] = result.ok
    if result.ok and result.pruned is not None:
        try:
            row["macs_after"] = _macs(result.pruned.eval(), spec, inputs)
        except Exception:  # noqa: BLE001
            row["macs_after"] = None
    if result.ok and inputs.train_batch is not None:
        row["search"] = search_step_check(model, inputs, ratio=ratio)
        if not row["search"]["ok"]:
            row["ok"] = False
            row["reason"] = "search step: " + row["search"]["reason"]
    row["seconds"] = time.perf_counter() - t0
    return row


def _export_format(pruned: object, x: object, folder: Path, fmt: str) -> dict:
    """Export ``pruned`` to ``fmt`` in ``folder`` (`rartsprune.export.export_model`, dynamic batch, checked).

    ``ok``: True (the reloaded file's outputs equal the module's within `EXPORT_ATOL` x max(1, scale)), False
    (with ``reason``; ``static_batch`` tells whether a static batch dimension exports), None (not run: the
    format's packages are missing, ``reason`` names them).
    """
    from rartsprune.export import SUFFIXES, export_model

    t0 = time.perf_counter()
    try:
        r = export_model(pruned, x, folder / f"model{SUFFIXES[fmt]}", fmt, atol=EXPORT_ATOL)  # type: ignore[arg-type]
    except ImportError as exc:
        return {"ok": None, "reason": f"not run: {exc}"[:300]}
    except Exception as exc:  # noqa: BLE001 - any exporter failure is a cell in the table, with its cause
        cell: dict = {"ok": False, "reason": " ".join(str(exc).split())[:500], "seconds": time.perf_counter() - t0}
        try:  # is the dynamic batch dimension the cause?
            r = export_model(pruned, x, folder / f"static{SUFFIXES[fmt]}", fmt, dynamic_batch=False,  # type: ignore[arg-type]
                             atol=EXPORT_ATOL)
            cell["static_batch"] = f"ok (max diff {r.max_diff:.1e})"
        except Exception as exc2:  # noqa: BLE001
            cell["static_batch"] = " ".join(str(exc2).split())[:200]
        return cell
    cell = {"ok": True, "checked": r.checked, "max_diff": r.max_diff, "output_scale": r.output_scale,
            "batch_sizes": list(r.batch_sizes), "seconds": time.perf_counter() - t0, "exporter": r.exporter}
    if r.exporter == "torchscript":
        cell["reason"] = "written by the TorchScript-based exporter (dynamo=False): the torch.export-based one fails"
    if not r.checked:
        cell["reason"] = "written, checked by onnx.checker only (onnxruntime is not installed)"
    return cell


def _unpruned_check(spec: str, x: object, folder: Path, failed: dict[str, dict]) -> None:
    """Mark each failed format's cell with ``unpruned_ok``: whether the *unpruned* model exports to it.

    A format the unpruned model fails too is the exporter's limit (an op it cannot convert), not the pruning's.
    """
    from rartsprune.app.tasks import check_setup

    try:
        model, _ = check_setup(spec, num_classes=10, batch=2)
    except Exception:  # noqa: BLE001 - it was built once already; leave the cells unmarked
        return
    model.eval()
    (folder / "unpruned").mkdir(exist_ok=True)
    for fmt, cell in failed.items():
        cell["unpruned_ok"] = bool(_export_format(model, x, folder / "unpruned", fmt).get("ok"))


def run_export(spec: str, ratio: float, formats: tuple[str, ...] = EXPORT_FORMATS) -> dict:
    """Prune one classifier as the coverage check does, then export it to each of ``formats``; a JSON-able row.

    Random weights (perturbed), a random ``ratio`` of each group's channels removed, surgery
    (`rartsprune.check.check_model`, the coverage suite's setting), then `rartsprune.export.export_model` per
    format: the written file is reloaded and run at batch 2 and 3. ``ok``: every format that ran passed.
    """
    import tempfile

    warnings.filterwarnings("ignore")
    from rartsprune.app.tasks import check_setup, check_task_model

    row: dict = {"model": spec}
    t0 = time.perf_counter()
    try:
        model, inputs = check_setup(spec, num_classes=10, batch=2)
    except Exception as exc:  # noqa: BLE001 - any construction failure is a row in the table
        row.update(ok=False, reason=f"cannot build: {type(exc).__name__}: {exc}"[:300], seconds=time.perf_counter() - t0)
        return row
    x = inputs.example
    row["input"] = list(x.shape[1:])
    result = check_task_model(model, inputs, ratio=ratio, backward=False, return_model=True)
    row.update(params_before=result.params_before, params_after=result.params_after,
               removed_channels=result.removed_channels, pruned_diff=result.pruned_diff,
               prune_seconds=result.seconds)
    if not result.ok or result.pruned is None:
        row.update(ok=False, reason=f"not pruned, so not exported: {result.reason}"[:400],
                   seconds=time.perf_counter() - t0)
        return row
    pruned = result.pruned.eval()
    row["formats"] = {}
    with tempfile.TemporaryDirectory(prefix="rartsprune-export-sweep-") as folder:
        for fmt in formats:
            row["formats"][fmt] = _export_format(pruned, x, Path(folder), fmt)
        ran = {f: c for f, c in row["formats"].items() if c["ok"] is not None}
        failed = {f: c for f, c in ran.items() if not c["ok"]}
        if failed:  # is it the pruning? export the unpruned model (built afresh, the same seed) to those formats
            _unpruned_check(spec, x, Path(folder), failed)
    row["ok"] = bool(ran) and not failed
    if failed:
        row["reason"] = "; ".join(f"{_FORMAT_TITLES.get(f, f)}: "
                                  + ("the unpruned model fails too: " if c.get("unpruned_ok") is False else "")
                                  + c["reason"] for f, c in failed.items())[:600]
    elif not ran:
        row["reason"] = "no format could run: " + "; ".join(c["reason"] for c in row["formats"].values())
    row["seconds"] = time.perf_counter() - t0
    return row


def _worker(spec: str, ratio: float, suite: str = "all", formats: tuple[str, ...] = EXPORT_FORMATS) -> None:
    row = run_export(spec, ratio, formats) if suite == "export" else run_one(spec, ratio)
    print("ROW " + json.dumps(row), flush=True)


def _suite_specs(suite: str) -> list[str]:
    """Every spec of ``suite`` (``export``: the classifier suites, the default coverage set)."""
    from rartsprune.app.tasks import TIMM_FEATURES_COVERAGE, torchvision_task_models
    from rartsprune.app.zoo import TIMM_COVERAGE, torchvision_classification_models

    specs = []
    if suite in ("all", "torchvision", "export"):
        specs += [f"torchvision:{n}" for n in torchvision_classification_models()]
    if suite in ("all", "timm", "export"):
        specs += [f"timm:{n}" for n in TIMM_COVERAGE]
    for task in TORCHVISION_TASK_SUITES:
        if suite in ("all", "tasks", task):
            specs += [f"torchvision:{n}" for n in torchvision_task_models(task)]
    if suite in ("all", "tasks", "timm_features"):
        specs += [f"timm_features:{n}" for n in TIMM_FEATURES_COVERAGE]
    return specs


def _matches(pattern: str, spec: str) -> bool:
    """``pattern`` (a regular expression) matches the whole spec or the whole name after its source."""
    try:
        return bool(re.fullmatch(pattern, spec) or re.fullmatch(pattern, spec.split(":", 1)[-1]))
    except re.error:
        return False


def _specs(suite: str, models: str | None) -> list[str]:
    """The suite's specs, or those ``models`` selects.

    ``models``: comma-separated items; each is a regular expression matched against the whole name (or the
    whole spec) of the suite's models (``resnet18``, ``resnet.*``, ``timm:vit_.*``); an item that matches none
    of them is taken as a model spec itself (a name gets the suite's source: ``torchvision:`` or ``timm:``).
    """
    base = _suite_specs(suite)
    if not models:
        return base
    prefix = {"timm": "timm:", "timm_features": "timm_features:"}.get(suite, "torchvision:" if suite != "all" else "")
    out: list[str] = []
    for item in (m.strip() for m in models.split(",")):
        if not item:
            continue
        found = [spec for spec in base if _matches(item, spec)] or [item if ":" in item else prefix + item]
        out += [spec for spec in found if spec not in out]
    return out


def _fmt_macs(n: int | None) -> str:
    if not n:
        return "-"
    from rartsprune.flops import format_count

    return format_count(n)


def _cell(text: str, limit: int = 160) -> str:
    return (text or "").replace("|", "/").replace("\n", " ")[:limit]


#: Generated section titles start with one of these (everything from the first other ``## `` heading on is
#: hand-written and kept when the table is rewritten).
_GENERATED = tuple(f"## {s}" for s in CLASSIFIER_SUITES + TASK_SUITES) + ("## Beyond classifiers",)


def _kept_tail(path: Path) -> list[str]:
    """The hand-written sections after the generated ones in the existing table (e.g. attention heads, export)."""
    if not path.exists():
        return []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## ") and not line.startswith(_GENERATED):
            return lines[i:]
    return []


def _unscored_summary(row: dict) -> str:
    """Groups left unscored other than the protected outputs: ``N unsupported (first reason), ...``."""
    unscored = row.get("unscored") or {}
    by_status: dict[str, list[str]] = {}
    for name, why in unscored.items():
        status, _, reason = why.partition(": ")
        if status != "protected":
            by_status.setdefault(status, []).append(f"{name}: {reason}")
    return "; ".join(f"{len(v)} {k} (e.g. {v[0]})" for k, v in sorted(by_status.items()))


def _task_lines(rows: dict[str, dict], planned: list[str] | None) -> list[str]:
    from rartsprune.app.tasks import task_of

    lines = [
        "## Beyond classifiers",
        "",
        "Detection, segmentation, video and optical-flow models of torchvision, and timm backbones built with",
        "`features_only=True`, with each task's inputs (`rartsprune.app.tasks`): detectors get two 128 px images",
        "(SSD / SSDlite resize them to 300 / 320 px; fewer proposals than the defaults, 100 after NMS), their",
        "training batch targets (two boxes per image, with masks / keypoints); segmenters 64 px images (FCN and",
        "DeepLabV3 with their auxiliary head); video models clips of 8 frames at 64 px (S3D: 16 frames at 224 px;",
        "MViT, built by torchvision for 16 x 224 x 224 only: one such clip); RAFT two 128 px images, 3 refinement",
        "steps; timm backbones 64 px where they allow. Random weights (perturbed), 10 classes, batch 2. For each:",
        "",
        "1. attach scores; the scored model (α = 1) must compute what the original did;",
        "2. one training-mode forward + backward with the task's loss (`rartsprune.tasks`: a detector's summed",
        "   loss dict, cross-entropy on `out` + 0.5 `aux`, RAFT's sequence loss, cross-entropy for video): finite",
        "   loss, finite nonzero gradients on the scores;",
        "3. zero the scores of a random 40% of every group's units, surgery; in eval mode the pruned model must",
        "   compute what the scored model did, within 1e-5 x max(1, output scale) (`max diff`, absolute);",
        "4. attach again, one RARTS search step, `finalize()` (surgery at PRC 0.4, which verifies the model's own",
        "   outputs), and again the pruned outputs must equal the searched model's with the removed scores at 0.",
        "",
        "What is compared: a detector's post-processed output (boxes after score threshold, top-k and NMS) is not",
        "a continuous function of the weights, so detectors are compared on their raw head outputs",
        "(`rartsprune.tasks.detection_outputs`): the RPN's objectness and box deltas and the box / mask /",
        "keypoint heads on fixed grid proposals (two-stage), or the head's class logits and box regressions",
        "(RetinaNet, FCOS, SSD). Other models are compared on their whole output (`out` / `aux` maps, logits,",
        "every flow prediction, every feature map). MACs (fvcore, multiply-accumulates, batch 1) count what is",
        "compared: for detectors the backbone, FPN and heads on the fixed proposals, for RAFT 3 refinement steps.",
        "`left unscored` lists the groups kept whole besides the protected outputs, with the first reason.",
        "",
        "Using these models: the losses are in `rartsprune.tasks` (`detection_loss`, `segmentation_loss`,",
        "`flow_loss`); a detector's example inputs are `(images,)`, its batches `(images, targets)`; put the model",
        "in training mode before `rartsprune.prune` (the search copies it, mode included, into its auxiliary",
        "network). Pretrained detectors and segmenters normalise their backbone with `FrozenBatchNorm2d`, which",
        "Torch-Pruning cannot prune (every group through it is refused: the probe sees zeroed channels re-biased):",
        "call `rartsprune.tasks.prunable_frozen_batchnorm(model)` first, which swaps in an equal, prunable layer.",
        "",
    ]
    tv = [r for k, r in rows.items() if task_of(k) in TORCHVISION_TASK_SUITES]
    tv_planned = [p for p in planned or [] if p.startswith("torchvision:") and task_of(p) in TORCHVISION_TASK_SUITES]
    if tv:
        ok = sum(1 for r in tv if r.get("ok"))
        total = max(len(tv), len(tv_planned))
        verdict = "met" if ok >= TARGET * total else "missed"
        lines += [
            f"**torchvision non-classification models: {ok}/{total} pass ({100.0 * ok / total:.0f}%; target "
            f"≥ {100 * TARGET:.0f}%: {verdict})**" + (f", {total - len(tv)} not run" if total > len(tv) else "") + ".",
            "",
        ]
    for suite in TASK_SUITES:
        sel = [r for k, r in sorted(rows.items()) if task_of(k) == suite]
        want = [p for p in planned or [] if task_of(p) == suite]
        if not sel:
            if want:
                lines += [f"## {suite}: not run in this sweep", ""]
            continue
        ok = sum(1 for r in sel if r.get("ok"))
        lines += [f"## {suite}: {ok}/{len(sel)} pass ({100.0 * ok / len(sel):.0f}%)", ""]
        missing = [p.split(":", 1)[1] for p in want if p not in rows]
        if missing:
            lines += [f"Not run in this sweep ({len(missing)}): {', '.join(missing)}.", ""]
        lines += [
            "| model | input | groups (scored/all) | scored channels | MACs before | MACs after | max diff "
            "(scale) | search step | result | reason / left unscored |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in sel:
            name = r["model"].split(":", 1)[1]
            groups = f"{r.get('scored_groups', 0)}/{r.get('groups', 0)}"
            diff = r.get("pruned_diff")
            diff_cell = "-" if diff is None or diff != diff else f"{diff:.1e} ({r.get('output_scale', 0):.3g})"
            search = r.get("search")
            search_cell = "-" if search is None else ("pass" if search.get("ok") else "**fail**")
            if search and search.get("ok") and "prc" in search:
                search_cell += f", PRC {search['prc']:.2f}"
            res = "pass" if r.get("ok") else "**refused**"
            why = r.get("reason") if not r.get("ok") else _unscored_summary(r)
            lines.append(
                f"| {name} | {r.get('input', '-')} | {groups} | {r.get('scored_channels', 0)} | "
                f"{_fmt_macs(r.get('macs_before'))} | {_fmt_macs(r.get('macs_after'))} | {diff_cell} | {search_cell} | "
                f"{res} | {_cell(why or '', 300)} |"
            )
        lines.append("")
    return lines


def write_table(rows: dict[str, dict], path: Path, planned: list[str] | None = None,
                tasks: dict[str, dict] | None = None) -> None:
    """Markdown coverage table with per-suite pass rates; ``planned`` models without a row are listed as not run.

    ``rows``: classifier rows; ``tasks``: task rows (sections after the classifiers'). Hand-written sections
    after the generated ones in an existing ``path`` are kept.
    """
    tail = _kept_tail(path)
    lines = [
        "# Model coverage",
        "",
        "Every model: attach scores, α = 1 equivalence, zero the scores of a random 40% of each group's channels,",
        "surgery, exact output equivalence (eval mode), forward + backward of the pruned model. Random weights,",
        "10 classes, 64 px inputs where the architecture allows. MACs counted by fvcore (multiply-accumulates,",
        "not FLOPs) at batch 1. Regenerate with `python bench/coverage.py` (see bench/README.md).",
        "",
    ]
    for suite in CLASSIFIER_SUITES:
        sel = [r for k, r in sorted(rows.items()) if k.startswith(suite + ":")]
        if not sel:
            if any(p.startswith(suite + ":") for p in _classifiers(planned)):
                lines += [f"## {suite}: not run in this sweep", ""]
            continue
        ok = sum(1 for r in sel if r.get("ok"))
        lines += [
            f"## {suite}: {ok}/{len(sel)} pass ({100.0 * ok / len(sel):.0f}%)",
            "",
        ]
        missing = [p.split(":", 1)[1] for p in _classifiers(planned) if p.startswith(suite + ":") and p not in rows]
        if missing:
            lines += [f"Not run in this sweep ({len(missing)}): {', '.join(missing)}.", ""]
        lines += [
            "| model | input | groups (scored/all) | scored channels | MACs before | MACs after | result | reason |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sel:
            name = r["model"].split(":", 1)[1]
            inp = "x".join(str(v) for v in r.get("input", [])[1:]) or "-"
            groups = f"{r.get('scored_groups', 0)}/{r.get('groups', 0)}"
            res = "pass" if r.get("ok") else "**fail**"
            reason = _cell(r.get("reason") or "")
            lines.append(
                f"| {name} | {inp} | {groups} | {r.get('scored_channels', 0)} | {_fmt_macs(r.get('macs_before'))} | "
                f"{_fmt_macs(r.get('macs_after'))} | {res} | {reason} |"
            )
        lines.append("")
    task_planned = [p for p in planned or [] if p not in _classifiers(planned)]
    if tasks or task_planned:
        lines += _task_lines(tasks or {}, task_planned)
    if tail:
        lines += tail + ([""] if tail[-1] else [])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def _classifiers(specs: list[str] | None) -> list[str]:
    from rartsprune.app.tasks import task_of

    return [p for p in specs or [] if task_of(p) == "classification"]


def _load(path: Path) -> tuple[dict[str, dict], dict[str, dict]]:
    """(classifier rows, task rows) of the JSON file, empty when it does not exist."""
    if not path.exists():
        return {}, {}
    data = json.loads(path.read_text())
    return data.get("rows", {}), data.get("tasks", {})


def _save(path: Path, ratio: float, spec: str, row: dict, is_task: bool) -> tuple[dict[str, dict], dict[str, dict]]:
    """Merge one row into the JSON file as it is now (other processes may have added rows) and write it."""
    rows, tasks = _load(path)
    (tasks if is_task else rows)[spec] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"ratio": ratio, "rows": rows, **({"tasks": tasks} if tasks else {})}
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return rows, tasks


#: The heading the export sweep writes (its section replaces the one in the table, wherever it is).
_EXPORT_HEADING = "## Export"


def _sci(v: float) -> str:
    """``1e-5`` rather than Python's ``1e-05``."""
    mantissa, _, exp = f"{v:.0e}".partition("e")
    return f"{mantissa}e{int(exp)}"


def _format_cell(cell: dict | None) -> str:
    """One format's result: ``pass, 3.1e-07`` (max abs diff), ``**fail**``, ``not run`` or ``-``."""
    if cell is None:
        return "-"
    if cell.get("ok") is None:
        return "not run"
    if not cell["ok"]:
        return "**fail**"
    return f"pass, {cell['max_diff']:.1e}" if cell.get("checked") else "pass, unchecked"


def _export_reason(row: dict) -> str:
    """Why a row failed; for a passing row, anything worth knowing (an unchecked or skipped format)."""
    if not row.get("ok"):
        text = row.get("reason") or "failed without a reason"
        statics = [f"{_FORMAT_TITLES.get(f, f)} with a static batch: {c['static_batch']}"
                   for f, c in (row.get("formats") or {}).items() if c.get("ok") is False and c.get("static_batch")]
        return "; ".join([text, *statics])
    return "; ".join(f"{_FORMAT_TITLES.get(f, f)}: {c['reason']}" for f, c in (row.get("formats") or {}).items()
                     if c.get("reason"))


def _params_cell(row: dict) -> str:
    """``before → after`` parameter counts of a pruned model, ``-`` when it was not pruned."""
    if not row.get("params_before") or "formats" not in row:
        return "-"
    return f"{_fmt_macs(row['params_before'])} → {_fmt_macs(row.get('params_after'))}"


def export_lines(rows: dict[str, dict], planned: list[str], formats: tuple[str, ...] = EXPORT_FORMATS,
                 ratio: float = 0.4) -> list[str]:
    """The generated "Export" section: the counts on top (labelled partial while models of ``planned`` have no
    row), per-format counts, one row per model with the reason of every failure."""
    ok = sum(1 for r in rows.values() if r.get("ok"))
    run_planned = [p for p in planned if p in rows]
    partial = len(run_planned) < len(planned)
    counts = f"**{ok}/{len(rows)} pass**"  # under a fixed heading: links to coverage.md#export keep working
    if partial:
        counts += f" (partial sweep: {len(run_planned)} of {len(planned)} models run)"
    names = " and ".join(_FORMAT_TITLES.get(f, f) for f in formats)
    lines = [
        _EXPORT_HEADING,
        "",
        counts + ".",
        "",
        f"Every pruned model of the default coverage set (the {len(planned)} torchvision and timm classifiers above):",
        f"random weights (perturbed), a random {100 * ratio:.0f}% of each group's channels removed and surgery, as in",
        f"the coverage check; then `rartsprune.export.export_model` to {names} with a dynamic batch dimension",
        "(`torch.export` → `.pt2`; ONNX with `torch.onnx.export`, dynamo-based, the `[export]` extra). The written",
        "file is reloaded (`torch.export.load`, onnxruntime) and run at batch 2 and 3: its outputs must equal the",
        f"module's within {_sci(EXPORT_ATOL)} x max(1, output scale) (`max diff`: the largest absolute difference).",
        "A failed format is retried with a static batch to tell whether the dynamic batch is the cause.",
        "Regenerate with `python bench/coverage.py --suite export` (resumable: finished models are skipped;",
        "`--models REGEX`, `--limit N`), JSON in `bench/results/coverage_export.json`.",
        "",
    ]
    if partial:
        lines += [f"**Partial sweep**: {len(run_planned)} of the {len(planned)} models have been run; the other "
                  f"{len(planned) - len(run_planned)} are not run yet.", ""]
    counts = []
    for fmt in formats:
        cells = [r.get("formats", {}).get(fmt) for r in rows.values()]
        ran = [c for c in cells if c is not None and c.get("ok") is not None]
        counts.append(f"{_FORMAT_TITLES.get(fmt, fmt)} {sum(1 for c in ran if c['ok'])}/{len(ran)}")
    not_pruned = sum(1 for r in rows.values() if "formats" not in r)
    exporter = sum(1 for r in rows.values() if not r.get("ok") and "formats" in r
                   and all(c.get("unpruned_ok") is False for c in r["formats"].values() if c.get("ok") is False))
    lines += [f"Per format: {', '.join(counts)} pass; not pruned or not built (so not exported): {not_pruned}; "
              f"failing where the unpruned model fails the same export too (the exporter's limit, not the "
              f"pruning's): {exporter}.", ""]
    lines += [
        f"| model | input | parameters | {' | '.join(_FORMAT_TITLES.get(f, f) + ' (max diff)' for f in formats)} "
        "| output scale | time | result | reason |",
        "|---|---|---|" + "---|" * len(formats) + "---|---|---|---|",
    ]
    for spec, r in sorted(rows.items()):
        fmts = r.get("formats") or {}
        scale = max((c.get("output_scale", 0.0) for c in fmts.values() if c.get("ok")), default=None)
        inp = "x".join(str(v) for v in r.get("input", [])[1:]) or "-"
        lines.append(
            f"| {spec} | {inp} | {_params_cell(r)} | "
            + " | ".join(_format_cell(fmts.get(f)) for f in formats)
            + f" | {'-' if scale is None else f'{scale:.3g}'} | {r.get('seconds', 0):.0f} s | "
            + f"{'pass' if r.get('ok') else '**fail**'} | {_cell(_export_reason(r), 400)} |"
        )
    lines.append("")
    return lines


def write_export_section(rows: dict[str, dict], path: Path, planned: list[str],
                         formats: tuple[str, ...] = EXPORT_FORMATS, ratio: float = 0.4) -> None:
    """Replace the "Export" section of the table at ``path`` (or append it); everything else is kept as it is."""
    lines = path.read_text().splitlines() if path.exists() else ["# Model coverage", ""]
    start = next((i for i, ln in enumerate(lines) if ln == _EXPORT_HEADING or ln.startswith(_EXPORT_HEADING + ":")),
                 None)
    if start is None:
        before, after = lines + ([""] if lines and lines[-1] else []), []
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        before, after = lines[:start], lines[end:]
    section = export_lines(rows, planned, formats, ratio)
    text = "\n".join(before + section + after)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text if text.endswith("\n") else text + "\n")


def _load_export(path: Path) -> dict[str, dict]:
    """Rows of the export sweep's JSON file, empty when it does not exist."""
    return json.loads(path.read_text()).get("rows", {}) if path.exists() else {}


def _save_export(path: Path, ratio: float, formats: tuple[str, ...], spec: str, row: dict) -> dict[str, dict]:
    """Merge one export row into the JSON file as it is now and write it."""
    rows = _load_export(path)
    rows[spec] = row
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"ratio": ratio, "formats": list(formats), "atol": EXPORT_ATOL, "rows": rows}
    tmp = path.with_suffix(path.suffix + f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
    return rows


def _run_worker(spec: str, args: argparse.Namespace, env: dict[str, str]) -> dict:
    """Run one model in a subprocess with the time and memory limits; its row (a failure row if it died)."""
    cmd = [sys.executable, __file__, "--worker", spec, "--ratio", str(args.ratio), "--memory-gb", str(args.memory_gb)]
    if args.suite == "export":
        cmd += ["--suite", "export", "--formats", ",".join(args.formats)]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"model": spec, "ok": False, "reason": f"timed out after {args.timeout:.0f} s", "seconds": args.timeout}
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")), None)
    if line is None:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        return {"model": spec, "ok": False, "reason": f"worker died (exit {proc.returncode}): {tail[0][:200]}",
                "seconds": time.perf_counter() - t0}
    return json.loads(line[4:])


def _formats(text: str) -> tuple[str, ...]:
    from rartsprune.export import FORMATS

    names = tuple(f.strip() for f in text.split(",") if f.strip())
    bad = [f for f in names if f not in FORMATS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown export format(s) {bad or text!r}; valid: {', '.join(FORMATS)}")
    return names


def _export_main(args: argparse.Namespace, env: dict[str, str]) -> int:
    """``--suite export``: prune and export the default coverage set (or ``--models``), resuming from the JSON."""
    from tqdm import tqdm

    path = args.json or EXPORT_RESULTS
    rows = _load_export(path)
    planned = _suite_specs("export")
    todo = [s for s in _specs("export", args.models) if args.force or s not in rows]
    if args.limit is not None:
        todo = todo[: args.limit]
    for spec in tqdm(todo, desc="export", unit="model", disable=None):
        row = _run_worker(spec, args, env)
        tqdm.write(f"{spec}: {'pass' if row.get('ok') else 'FAIL ' + str(row.get('reason'))[:120]}")
        rows = _save_export(path, args.ratio, args.formats, spec, row)
        write_export_section(rows, args.table, planned, args.formats, args.ratio)
    rows = _load_export(path)
    write_export_section(rows, args.table, planned, args.formats, args.ratio)
    print(json.dumps({"export": f"{sum(1 for r in rows.values() if r.get('ok'))}/{len(rows)}",
                      "run": f"{sum(1 for p in planned if p in rows)}/{len(planned)}", "json": str(path)}))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=("all", *CLASSIFIER_SUITES, "tasks", *TASK_SUITES, "export"), default="all",
                    help="all: every check suite; tasks: the task suites (detection, segmentation, video, flow, "
                    "timm_features); export: prune and export the default coverage set (torchvision + timm)")
    ap.add_argument("--models", help="comma-separated regular expressions matched against the whole names (or specs) "
                    "of the suite's models, e.g. 'resnet18,vit_.*'; an item matching none is taken as a spec")
    ap.add_argument("--limit", type=int, default=None,
                    help="run at most N models (after skipping the finished ones: repeat to continue a sweep)")
    ap.add_argument("--ratio", type=float, default=0.4, help="fraction of each group's channels removed")
    ap.add_argument("--formats", type=_formats, default=EXPORT_FORMATS,
                    help=f"--suite export: comma-separated export formats (default: {','.join(EXPORT_FORMATS)})")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per model (OMP_NUM_THREADS of the workers; default: $OMP_NUM_THREADS or 2)")
    ap.add_argument("--memory-gb", type=float, default=12.0,
                    help="address-space limit of each worker (a model that needs more fails with MemoryError "
                    "instead of exhausting the machine); 0: no limit")
    ap.add_argument("--force", action="store_true", help="re-run models already in the JSON")
    ap.add_argument("--json", type=Path, default=None,
                    help=f"results file (default: {RESULTS.relative_to(ROOT)}; --suite export: "
                    f"{EXPORT_RESULTS.relative_to(ROOT)})")
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.limit is not None and args.limit < 0:
        ap.error(f"--limit must be at least 0, got {args.limit}")
    if args.worker:
        if args.memory_gb > 0:
            import resource

            limit = int(args.memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        _worker(args.worker, args.ratio, args.suite, args.formats)
        return 0
    threads = str(args.threads) if args.threads else os.environ.get("OMP_NUM_THREADS", "2")
    env = dict(os.environ, OMP_NUM_THREADS=threads)
    if args.suite == "export":
        return _export_main(args, env)
    from rartsprune.app.tasks import task_of

    path = args.json or RESULTS
    rows, tasks = _load(path)
    specs = [s for s in _specs(args.suite, args.models)
             if args.force or s not in (tasks if task_of(s) != "classification" else rows)]
    if args.limit is not None:
        specs = specs[: args.limit]
    planned = _specs("all", None)
    from tqdm import tqdm

    for spec in tqdm(specs, desc="coverage", unit="model", disable=None):
        is_task = task_of(spec) != "classification"
        row = _run_worker(spec, args, env)
        if is_task:
            row.setdefault("task", task_of(spec))
        tqdm.write(f"{spec}: {'pass' if row.get('ok') else 'FAIL ' + str(row.get('reason'))[:120]}")
        rows, tasks = _save(path, args.ratio, spec, row, is_task)
        write_table(rows, args.table, planned, tasks)
    rows, tasks = _load(path)
    write_table(rows, args.table, planned, tasks)
    every = {**rows, **tasks}
    suites = [*CLASSIFIER_SUITES, *TASK_SUITES]
    summary = {}
    for suite in suites:
        sel = [r for k, r in every.items() if (k.startswith(suite + ":") and task_of(k) == "classification")
               or (suite in TASK_SUITES and task_of(k) == suite)]
        if sel:
            summary[suite] = f"{sum(1 for r in sel if r.get('ok'))}/{len(sel)}"
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
