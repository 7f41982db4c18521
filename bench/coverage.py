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

Each model runs in its own subprocess with a time limit, so a hang or a crash shows up as a row, not a stuck
run. Writes ``bench/results/coverage.json`` (classifier rows under ``rows``, task rows under ``tasks``; kept
between runs: finished rows are skipped unless ``--force``; each finished row is merged into the file as it is
now, so suites can run in separate processes) and the markdown table ``docs/coverage.md`` (hand-written
sections after the generated ones are kept).

    python bench/coverage.py                       # everything (hours on 2 CPU cores)
    python bench/coverage.py --suite timm --models resnet18,vit_tiny_patch16_224
    python bench/coverage.py --suite detection --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
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


def run_one(spec: str, ratio: float) -> dict:
    """Check one model in this process; returns a JSON-able row."""
    warnings.filterwarnings("ignore")
    import torch

    from rartsprune.app.tasks import task_of

    if task_of(spec) != "classification":
        return run_task(spec, ratio)

    from rartsprune.app.zoo import build_model, example_inputs_for
    from rartsprune.check import check_model, perturb_parameters
    from rartsprune.flops import flops_report

    torch.manual_seed(0)
    row: dict = {"model": spec}
    t0 = time.perf_counter()
    try:
        model = build_model(spec, num_classes=10, small=True).eval()
        x = example_inputs_for(spec, batch=2, model=model)
    except Exception as exc:  # noqa: BLE001 - any construction failure is a row in the table
        row.update(ok=False, reason=f"cannot build: {type(exc).__name__}: {exc}"[:300])
        return row
    perturb_parameters(model)
    row["input"] = list(x.shape[1:])
    try:
        row["macs_before"] = flops_report(model, x[:1]).macs
    except Exception as exc:  # noqa: BLE001
        row["macs_before"] = None
        row["flops_error"] = str(exc)[:200]
    result = check_model(model, x, ratio=ratio, return_model=True)
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


def _describe(example: object) -> str:
    """Shape of one example input, for the table (``2 x 3x128x128`` images, ``3x8x64x64`` clips ...)."""
    import torch

    if isinstance(example, torch.Tensor):
        return "x".join(str(v) for v in example.shape[1:])
    if isinstance(example, tuple) and isinstance(example[0], list):  # detection: (images,)
        return f"{len(example[0])} x " + "x".join(str(v) for v in example[0][0].shape)
    if isinstance(example, tuple):  # RAFT: (image1, image2, updates)
        return "2 x " + "x".join(str(v) for v in example[0].shape[1:]) + f", {example[2]} updates"
    return "-"


def run_task(spec: str, ratio: float) -> dict:
    """Check one detection / segmentation / video / flow model or timm feature extractor; a JSON-able row.

    ``ok``: the check passed (`rartsprune.check.check_model` with the task's outputs and loss) and, where the
    task has a loss, the search step too (``search``).
    """
    import torch

    from rartsprune.app.tasks import search_step_check, task_inputs, task_of
    from rartsprune.app.zoo import build_model
    from rartsprune.check import check_model, perturb_parameters

    torch.manual_seed(0)
    row: dict = {"model": spec, "task": task_of(spec)}
    t0 = time.perf_counter()
    try:
        model = build_model(spec, num_classes=10, small=True).eval()
        inputs = task_inputs(spec, model, batch=2)
    except Exception as exc:  # noqa: BLE001 - any construction failure is a row in the table
        row.update(ok=False, reason=f"cannot build: {type(exc).__name__}: {exc}"[:300])
        return row
    perturb_parameters(model)
    row["input"] = _describe(inputs.example)
    try:
        row["macs_before"] = _macs(model, spec, inputs)
    except Exception as exc:  # noqa: BLE001
        row["macs_before"] = None
        row["flops_error"] = str(exc)[:200]
    result = check_model(model, inputs.example, ratio=ratio, return_model=True, outputs_fn=inputs.outputs_fn,
                         loss_fn=inputs.loss_fn, train_batch=inputs.train_batch)
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


def _worker(spec: str, ratio: float) -> None:
    row = run_one(spec, ratio)
    print("ROW " + json.dumps(row), flush=True)


def _specs(suite: str, models: str | None) -> list[str]:
    from rartsprune.app.tasks import TIMM_FEATURES_COVERAGE, torchvision_task_models
    from rartsprune.app.zoo import TIMM_COVERAGE, torchvision_classification_models

    if models:
        names = [m.strip() for m in models.split(",") if m.strip()]
        prefix = {"timm": "timm:", "timm_features": "timm_features:"}.get(suite, "torchvision:" if suite != "all" else "")
        return [n if ":" in n else prefix + n for n in names]
    specs = []
    if suite in ("all", "torchvision"):
        specs += [f"torchvision:{n}" for n in torchvision_classification_models()]
    if suite in ("all", "timm"):
        specs += [f"timm:{n}" for n in TIMM_COVERAGE]
    for task in TORCHVISION_TASK_SUITES:
        if suite in ("all", "tasks", task):
            specs += [f"torchvision:{n}" for n in torchvision_task_models(task)]
    if suite in ("all", "tasks", "timm_features"):
        specs += [f"timm_features:{n}" for n in TIMM_FEATURES_COVERAGE]
    return specs


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=("all", *CLASSIFIER_SUITES, "tasks", *TASK_SUITES), default="all",
                    help="all: every suite; tasks: the task suites (detection, segmentation, video, flow, timm_features)")
    ap.add_argument("--models", help="comma-separated names (or specs) instead of the whole suite")
    ap.add_argument("--ratio", type=float, default=0.4, help="fraction of each group's channels removed")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads per model (OMP_NUM_THREADS of the workers; default: $OMP_NUM_THREADS or 2)")
    ap.add_argument("--memory-gb", type=float, default=12.0,
                    help="address-space limit of each worker (a model that needs more fails with MemoryError "
                    "instead of exhausting the machine); 0: no limit")
    ap.add_argument("--force", action="store_true", help="re-run models already in the JSON")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if args.memory_gb > 0:
            import resource

            limit = int(args.memory_gb * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        import torch

        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
        _worker(args.worker, args.ratio)
        return 0
    from rartsprune.app.tasks import task_of

    rows, tasks = _load(args.json)
    specs = _specs(args.suite, args.models)
    planned = _specs("all", None)
    from tqdm import tqdm

    threads = str(args.threads) if args.threads else os.environ.get("OMP_NUM_THREADS", "2")
    env = dict(os.environ, OMP_NUM_THREADS=threads)
    for spec in tqdm(specs, desc="coverage", unit="model", disable=None):
        is_task = task_of(spec) != "classification"
        if spec in (tasks if is_task else rows) and not args.force:
            continue
        cmd = [sys.executable, __file__, "--worker", spec, "--ratio", str(args.ratio), "--memory-gb", str(args.memory_gb)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=env)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("ROW ")), None)
            if line is None:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
                row = {"model": spec, "ok": False, "reason": f"worker died (exit {proc.returncode}): {tail[0][:200]}"}
            else:
                row = json.loads(line[4:])
        except subprocess.TimeoutExpired:
            row = {"model": spec, "ok": False, "reason": f"timed out after {args.timeout:.0f} s"}
        if is_task:
            row.setdefault("task", task_of(spec))
        tqdm.write(f"{spec}: {'pass' if row.get('ok') else 'FAIL ' + str(row.get('reason'))[:120]}")
        rows, tasks = _save(args.json, args.ratio, spec, row, is_task)
        write_table(rows, args.table, planned, tasks)
    rows, tasks = _load(args.json)
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
