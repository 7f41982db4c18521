"""Cost of the channel scores, and of a surgery result, against plain models — measured side by side.

For each model: forward + backward time (training mode, SGD-free: loss.backward only) of

* the plain model,
* the scored model with the ``param`` backend (scores folded into weight/bias through parametrizations),
* the scored model with the ``hook`` backend (scores multiply layer outputs),
* the surgery result (40% of the channels removed) and an *equally sized plain model* built by re-applying the
  same plan to a fresh model (target ratio 1.00: surgery leaves nothing behind that costs time).

Timings are interleaved (one repetition of every variant, then the next repetition) and the median is
reported, so the ratios are robust to the machine's load drifting. Writes ``bench/results/overhead.json``.

    python bench/overhead.py                   # CIFAR PreResNet-56 at batch 64 (32 px), ResNet-50 at batch 32 (224 px)
    python bench/overhead.py --device cuda --reps 50
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rartsprune  # noqa: E402
from rartsprune.app.models import preresnet  # noqa: E402
from rartsprune.check import random_keep  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _fwd_bwd(model: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    out = model(x)
    out.float().sum().backward()
    _sync(device)
    dt = time.perf_counter() - t0
    for p in model.parameters():
        p.grad = None
    return dt


def measure(name: str, build, batch: int, size: int, reps: int, device: torch.device) -> dict:  # noqa: ANN001
    torch.manual_seed(0)
    x = torch.randn(batch, 3, size, size, device=device)
    example = x[:1]
    plain = build().to(device).train()
    scored_param = copy.deepcopy(plain)
    handle = rartsprune.attach_scores(scored_param, example, backend="param")
    scored_hook = copy.deepcopy(plain)
    rartsprune.attach_scores(scored_hook, example, backend="hook")
    pruned = copy.deepcopy(scored_param)
    plan = rartsprune.apply_surgery(pruned, random_keep(rartsprune.get_handle(pruned), 0.4), verify=False)
    same_size = build().to(device).train()
    rartsprune.apply_plan(same_size, plan, example)
    variants = {"plain": plain, "scored_param": scored_param, "scored_hook": scored_hook,
                "pruned": pruned, "plain_same_size": same_size}
    for m in variants.values():  # warm-up
        for _ in range(2):
            _fwd_bwd(m, x, device)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for k, m in variants.items():
            times[k].append(_fwd_bwd(m, x, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "model": name, "batch": batch, "input": size, "reps": reps, "scored_groups": len(handle.groups),
        "median_s": med,
        "ratios": {
            "scored_param_over_plain": med["scored_param"] / med["plain"],
            "scored_hook_over_plain": med["scored_hook"] / med["plain"],
            "pruned_over_same_size_plain": med["pruned"] / med["plain_same_size"],
        },
        "targets": {"scored_over_plain": 1.05, "pruned_over_same_size_plain": 1.00},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "overhead.json")
    ap.add_argument("--quick", action="store_true", help="smaller ResNet-50 input (96 px) for a fast look")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    import torchvision

    rows = [
        measure("preresnet56 (CIFAR)", lambda: preresnet(56, 10), 64, 32, args.reps, device),
        measure("resnet50", lambda: torchvision.models.resnet50(), 32, 96 if args.quick else 224,
                max(3, args.reps // 3), device),
    ]
    result = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for r in rows:
        print(r["model"], {k: round(v, 3) for k, v in r["ratios"].items()})
    return 0


if __name__ == "__main__":
    sys.exit(main())
