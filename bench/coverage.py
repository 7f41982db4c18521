"""Coverage table: which torchvision and timm classifiers rartsprune scores and prunes exactly.

For every model: build it (random weights, 10 classes, small inputs where the architecture allows),
perturb the weights, then attach scores -> α = 1 equivalence -> zero the scores of a random 40% of each
group -> surgery -> output equivalence -> forward + backward of the pruned model
(`rartsprune.check.check_model`), plus MACs before and after with fvcore. Each model runs in its
own subprocess with a time limit, so a hang or a crash shows up as a row, not a stuck run.

Writes ``bench/results/coverage.json`` (kept between runs: finished rows are skipped unless ``--force``)
and the markdown table ``docs/coverage.md``.

    python bench/coverage.py                       # everything (hours on 2 CPU cores)
    python bench/coverage.py --suite timm --models resnet18,vit_tiny_patch16_224
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


def run_one(spec: str, ratio: float) -> dict:
    """Check one model in this process; returns a JSON-able row."""
    warnings.filterwarnings("ignore")
    import torch

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


def _worker(spec: str, ratio: float) -> None:
    row = run_one(spec, ratio)
    print("ROW " + json.dumps(row), flush=True)


def _specs(suite: str, models: str | None) -> list[str]:
    from rartsprune.app.zoo import TIMM_COVERAGE, torchvision_classification_models

    if models:
        names = [m.strip() for m in models.split(",") if m.strip()]
        prefix = {"timm": "timm:", "torchvision": "torchvision:"}.get(suite, "")
        return [n if ":" in n else prefix + n for n in names]
    specs = []
    if suite in ("all", "torchvision"):
        specs += [f"torchvision:{n}" for n in torchvision_classification_models()]
    if suite in ("all", "timm"):
        specs += [f"timm:{n}" for n in TIMM_COVERAGE]
    return specs


def _fmt_macs(n: int | None) -> str:
    if not n:
        return "-"
    from rartsprune.flops import format_count

    return format_count(n)


def write_table(rows: dict[str, dict], path: Path, planned: list[str] | None = None) -> None:
    """Markdown coverage table with per-suite pass rates; ``planned`` models without a row are listed as not run."""
    lines = [
        "# Model coverage",
        "",
        "Every model: attach scores, α = 1 equivalence, zero the scores of a random 40% of each group's channels,",
        "surgery, exact output equivalence (eval mode), forward + backward of the pruned model. Random weights,",
        "10 classes, 64 px inputs where the architecture allows. MACs counted by fvcore (multiply-accumulates,",
        "not FLOPs) at batch 1. Regenerate with `python bench/coverage.py` (see bench/README.md).",
        "",
    ]
    for suite in ("torchvision", "timm"):
        sel = [r for k, r in sorted(rows.items()) if k.startswith(suite + ":")]
        if not sel:
            if any(p.startswith(suite + ":") for p in planned or []):
                lines += [f"## {suite}: not run in this sweep", ""]
            continue
        ok = sum(1 for r in sel if r.get("ok"))
        lines += [
            f"## {suite}: {ok}/{len(sel)} pass ({100.0 * ok / len(sel):.0f}%)",
            "",
        ]
        missing = [p.split(":", 1)[1] for p in planned or [] if p.startswith(suite + ":") and p not in rows]
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
            reason = (r.get("reason") or "").replace("|", "/").replace("\n", " ")[:160]
            lines.append(
                f"| {name} | {inp} | {groups} | {r.get('scored_channels', 0)} | {_fmt_macs(r.get('macs_before'))} | "
                f"{_fmt_macs(r.get('macs_after'))} | {res} | {reason} |"
            )
        lines.append("")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", choices=("all", "timm", "torchvision"), default="all")
    ap.add_argument("--models", help="comma-separated names (or specs) instead of the whole suite")
    ap.add_argument("--ratio", type=float, default=0.4, help="fraction of each group's channels removed")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    ap.add_argument("--force", action="store_true", help="re-run models already in the JSON")
    ap.add_argument("--json", type=Path, default=RESULTS)
    ap.add_argument("--table", type=Path, default=TABLE)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        _worker(args.worker, args.ratio)
        return 0
    rows: dict[str, dict] = {}
    if args.json.exists():
        rows = json.loads(args.json.read_text()).get("rows", {})
    specs = _specs(args.suite, args.models)
    planned = _specs("all", None)
    from tqdm import tqdm

    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    for spec in tqdm(specs, desc="coverage", unit="model", disable=None):
        if spec in rows and not args.force:
            continue
        cmd = [sys.executable, __file__, "--worker", spec, "--ratio", str(args.ratio)]
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
        rows[spec] = row
        tqdm.write(f"{spec}: {'pass' if row.get('ok') else 'FAIL ' + str(row.get('reason'))[:120]}")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"ratio": args.ratio, "rows": rows}, indent=1))
        write_table(rows, args.table, planned)
    write_table(rows, args.table, planned)
    summary = {
        s: f"{sum(1 for k, r in rows.items() if k.startswith(s) and r.get('ok'))}/{sum(1 for k in rows if k.startswith(s))}"
        for s in ("torchvision", "timm")
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
