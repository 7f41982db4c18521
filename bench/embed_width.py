"""Which transformers lose their embedding width exactly with ``prune_layernorm=True`` (project issue 13).

For every model (default: the LayerNorm-normalised classifiers of the coverage set — torchvision ViT, Swin and
MaxViT, timm ViT, DeiT, BEiT, EVA-02, CaiT, Swin, PVT, ...), built as ``python -m rartsprune check`` builds it
(random perturbed weights, small input where the architecture allows), `rartsprune.check.check_model` runs
twice — with ``prune_heads=True`` only, and with ``prune_heads=True, prune_layernorm=True`` — (attach → α = 1
equivalence → a random 40% of every group's units zeroed → surgery → outputs equal within 1e-5 × max(1, output
scale) → backward), and records per run: pass / fail and why, the groups scored, how many of them are removed
exactly through their LayerNorms (`ChannelGroup.layernorms`: the embedding width and its kin), and fvcore MACs
before and after. The MACs ratio is what the 40% removal leaves: the embedding width is one dimension of every
linear layer, so the second column should be much lower where it is scored.

Writes ``bench/results/embed_width.json`` and ``.md``. Each model runs in its own process (``--timeout``).

    python bench/embed_width.py --threads 1
    python bench/embed_width.py --models 'timm:vit_tiny_patch16_224,torchvision:vit_b_32'
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _paths import portable  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "embed_width.json"
MODELS = (
    "torchvision:vit_b_16", "torchvision:vit_b_32", "torchvision:swin_t", "torchvision:swin_v2_t",
    "torchvision:maxvit_t",
    "timm:vit_tiny_patch16_224", "timm:deit_tiny_patch16_224", "timm:beit_base_patch16_224",
    "timm:eva02_tiny_patch14_224", "timm:cait_xxs24_224", "timm:xcit_nano_12_p16_224", "timm:pit_ti_224",
    "timm:crossvit_tiny_240", "timm:mixer_s32_224", "timm:swin_tiny_patch4_window7_224", "timm:twins_svt_small",
    "timm:pvt_v2_b0", "timm:coat_lite_tiny", "timm:tiny_vit_5m_224", "timm:davit_tiny", "timm:convnext_atto",
)
MODES = {"heads": {"prune_heads": True}, "heads+embed": {"prune_heads": True, "prune_layernorm": True}}


def run_model(spec: str, ratio: float) -> dict[str, Any]:
    """Both checks of one model, in this process."""
    warnings.filterwarnings("ignore")
    from coverage import build_classifier

    from rartsprune.check import check_model
    from rartsprune.flops import flops_report
    from rartsprune.layernorm import PrunedLayerNorm

    row, model, inputs = build_classifier(spec)
    if model is None:
        row["error"] = row.pop("reason")
        return row
    x = inputs.example
    for mode, flags in MODES.items():
        t0 = time.perf_counter()
        result = check_model(model, x, ratio=ratio, return_model=True, **flags)
        entry = result.to_dict()
        if result.ok and result.pruned is not None:
            entry["pruned_layernorms"] = sum(isinstance(m, PrunedLayerNorm) for m in result.pruned.modules())
            try:
                after = flops_report(result.pruned, x[:1]).macs
                entry["macs_ratio"] = after / row["macs_before"] if row.get("macs_before") else None
            except Exception:  # noqa: BLE001
                entry["macs_ratio"] = None
        entry["seconds"] = time.perf_counter() - t0
        row[mode] = entry
    return row


def _child(spec: str, ratio: float, threads: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", spec, "--ratio", str(ratio), "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"model": spec, "error": f"timed out after {timeout:g} s"}
    for line in proc.stdout.splitlines():
        if line.startswith("ROW "):
            return json.loads(line[4:])
    return {"model": spec, "error": f"the check process failed (exit {proc.returncode}): {proc.stderr[-300:]}"}


def _cell(entry: dict[str, Any] | None) -> str:
    if not entry:
        return "-"
    if not entry.get("ok"):
        return f"**fail**: {entry.get('reason', '')[:160]}"
    ratio = entry.get("macs_ratio")
    return f"pass, MACs x{ratio:.3f}" if ratio else "pass"


def _markdown(result: dict[str, Any], argv: list[str]) -> str:
    lines = ["# The embedding width (`prune_layernorm=True`): exact removal across transformers", "",
             f"`rartsprune.check.check_model` at PRC {result['ratio']:g} (a random {100 * result['ratio']:.0f}% of "
             "every scored group's units zeroed, surgery, outputs equal within 1e-5 × max(1, output scale)), with "
             "`prune_heads=True` alone and with `prune_layernorm=True` too. **embedding groups**: groups removed "
             "exactly through their LayerNorms (the embedding width; hierarchical models have one per stage); "
             "**PrunedLayerNorm**: LayerNorms replaced after surgery. MACs: fvcore, batch 1, attention counted "
             "where fvcore sees it.", "",
             "| model | input | heads only | heads + embedding width | embedding groups | PrunedLayerNorm | without one: the first group left unscored |",
             "|---|---|---|---|---|---|---|"]
    n_embed = 0
    for row in result["rows"]:
        if "error" in row:
            lines.append(f"| {row['model']} | - | **{row['error'][:120]}** | | | | |")
            continue
        both = row.get("heads+embed") or {}
        groups = both.get("layernorm_groups", 0)
        n_embed += bool(both.get("ok") and both.get("pruned_layernorms"))
        why = "" if groups else next((v for v in (both.get("unscored") or {}).values()
                                      if not v.startswith("protected")), "")
        lines.append(f"| {row['model']} | {'x'.join(map(str, row.get('input', [])))} | {_cell(row.get('heads'))} | "
                     f"{_cell(both)} | {groups} | {both.get('pruned_layernorms', 0)} | {why[:140]} |")
    lines += ["", f"{n_embed} of {len(result['rows'])} models lose their embedding width exactly.", "",
              f"Command: `python bench/embed_width.py {' '.join(shlex.quote(a) for a in argv)}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated model specs")
    ap.add_argument("--ratio", type=float, default=0.4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: one model, a ROW line on stdout
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.one is not None:
        row = run_model(args.one, args.ratio)
        print("ROW " + json.dumps(row), flush=True)
        return 0
    rows = []
    for spec in [s for s in args.models.split(",") if s]:
        t0 = time.perf_counter()
        row = _child(spec, args.ratio, args.threads, args.timeout)
        rows.append(row)
        print(f"{spec}: heads {_cell(row.get('heads'))} | heads+embed {_cell(row.get('heads+embed'))} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)
    result = {"ratio": args.ratio, "threads": args.threads, "torch": torch.__version__, "rows": rows,
              "out": portable(args.out)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    text = _markdown(result, argv)
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
