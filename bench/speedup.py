"""Real speed-up of pruned models against their MACs ratio, and which channel rounding runs fastest.

For ResNet-50 and MobileNetV2 at 224x224 and PreResNet-164 at 32x32, batch 1 and 32: prune 40% of the
channels (one-shot ``l1_norm`` selection — the weights do not matter for speed) with several ``round_to``
settings, then time eval-mode inference of the unpruned and each pruned model interleaved (median of the
repetitions). Reports speed-up = t(unpruned) / t(pruned), the MACs ratio MACs(unpruned) / MACs(pruned) and
their quotient (target >= 0.85 at every batch size), and the best ``round_to`` per model.

Writes ``bench/results/speedup.json`` and ``bench/results/speedup.md``.

    python bench/speedup.py                  # CPU
    python bench/speedup.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.85  # speed-up / MACs ratio, at every batch size (project issue 6)
sys.path.insert(0, str(ROOT))

import rartsprune  # noqa: E402
from rartsprune.app.models import preresnet  # noqa: E402
from rartsprune.flops import flops_report, format_count  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _time(model: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    model(x)
    _sync(device)
    return time.perf_counter() - t0


def prune_copy(model: nn.Module, example: torch.Tensor, ratio: float, round_to: int | None) -> nn.Module:
    pruned = copy.deepcopy(model)
    pruner = rartsprune.prune(pruned, ratio=ratio, method="l1_norm", example_inputs=example, round_to=round_to)
    return pruner.finalize().eval()


def bench_model(name: str, model: nn.Module, size: int, batches: list[int], roundings: list[int | None],
                ratio: float, reps: int, device: torch.device, channels_last: bool = False) -> dict:
    model = model.to(device).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    example = torch.randn(1, 3, size, size, device=device)
    variants = {"unpruned": model}
    for r in roundings:
        variants[f"round_to={r}"] = prune_copy(model, example, ratio, r)
    variants = {k: m.to(memory_format=fmt) for k, m in variants.items()}
    macs = {k: flops_report(m, example).macs for k, m in variants.items()}
    out = {"model": name, "input": size, "ratio": ratio, "macs": macs, "batches": {}}
    for b in batches:
        x = torch.randn(b, 3, size, size, device=device).contiguous(memory_format=fmt)
        n = max(3, reps if b == 1 else reps // 4)
        for m in variants.values():  # warm-up
            _time(m, x, device)
            _time(m, x, device)
        times: dict[str, list[float]] = {k: [] for k in variants}
        for _ in range(n):
            for k, m in variants.items():
                times[k].append(_time(m, x, device))
        med = {k: statistics.median(v) for k, v in times.items()}
        rows = {}
        for k in variants:
            if k == "unpruned":
                continue
            speedup = med["unpruned"] / med[k]
            macs_ratio = macs["unpruned"] / macs[k]
            rows[k] = {"ms": 1e3 * med[k], "speedup": speedup, "macs_ratio": macs_ratio,
                       "efficiency": speedup / macs_ratio}
        out["batches"][str(b)] = {"unpruned_ms": 1e3 * med["unpruned"], "pruned": rows, "reps": n}
    # best rounding: among the variants that keep speed-up >= TARGET x MACs ratio at every batch size, the
    # fastest (geometric mean speed-up over the batch sizes); if none does, the highest worst-case efficiency.
    def worst(k: str) -> float:
        return min(out["batches"][str(b)]["pruned"][k]["efficiency"] for b in batches)

    def mean_speedup(k: str) -> float:
        return statistics.geometric_mean(out["batches"][str(b)]["pruned"][k]["speedup"] for b in batches)

    pruned = [k for k in variants if k != "unpruned"]
    meeting = [k for k in pruned if worst(k) >= TARGET]
    best = max(meeting, key=mean_speedup) if meeting else max(pruned, key=worst)
    out["best"] = {"variant": best, "worst_efficiency": worst(best), "mean_speedup": mean_speedup(best),
                   "meets_target": bool(meeting)}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ratio", type=float, default=0.4)
    ap.add_argument("--batches", default="1,32")
    ap.add_argument("--round-to", default="none,8,16,32", help="comma list; 'none' = exact widths")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--models", default="resnet50,mobilenet_v2,preresnet164")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--channels-last", action="store_true", help="run every model (and input) in channels_last")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "speedup.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import torchvision

    builders = {
        "resnet50": (lambda: torchvision.models.resnet50(), 224),
        "mobilenet_v2": (lambda: torchvision.models.mobilenet_v2(), 224),
        "preresnet164": (lambda: preresnet(164, 10), 32),
    }
    batches = [int(b) for b in args.batches.split(",")]
    roundings = [None if r == "none" else int(r) for r in args.round_to.split(",")]
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        build, size = builders[name]
        rows.append(bench_model(name, build(), size, batches, roundings, args.ratio, args.reps, device,
                                args.channels_last))
        print(json.dumps(rows[-1]["best"]), name, flush=True)
    dev = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    dev += ", channels_last" if args.channels_last else ""
    result = {"device": dev, "torch": torch.__version__, "rows": rows, "target_efficiency": TARGET}
    lines = [f"# Speed-up of pruned models ({dev}, {100 * args.ratio:.0f}% of channels removed, l1_norm selection)", "",
             "| model | batch | variant | MACs | ms | speed-up | MACs ratio | speed-up / MACs ratio |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for b, d in r["batches"].items():
            lines.append(f"| {r['model']} | {b} | unpruned | {format_count(r['macs']['unpruned'])} | "
                         f"{d['unpruned_ms']:.1f} | | | |")
            for k, v in d["pruned"].items():
                mark = " **best**" if k == r["best"]["variant"] else ""
                lines.append(f"| {r['model']} | {b} | {k}{mark} | {format_count(r['macs'][k])} | {v['ms']:.1f} | "
                             f"{v['speedup']:.2f}x | {v['macs_ratio']:.2f}x | {v['efficiency']:.2f} |")
    lines += ["", f"Best rounding per model (the fastest variant with speed-up >= {TARGET} x MACs ratio at every "
              "batch size; if none, the most efficient):", ""]
    for r in rows:
        best = r["best"]
        verdict = "meets the target" if best["meets_target"] else "misses the target"
        lines.append(f"- {r['model']}: {best['variant']} — worst-case efficiency {best['worst_efficiency']:.2f}, "
                     f"mean speed-up {best['mean_speedup']:.2f}x, {verdict}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
