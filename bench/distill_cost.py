"""What distillation from the unpruned network adds to a width-search step — measured side by side.

One step of `rartsprune.prune`'s search (RARTS, exact update, the gradual budget setting: what a job runs when it
prunes a trained network to a budget) and one step of the gradual ℓ1-norm baseline (plain training of one net),
each with the cross-entropy and with `rartsprune.DistillationLoss` (``weight=1``: the job's default,
``PruneJob.search_distill``). The teacher runs once per batch (its logits are reused by the exact update's
second pass over the same batch). Timings are interleaved (one step of every variant, then the next round) and
the median is reported, so the ratios hold while the machine's load drifts. Writes
``bench/results/distill_cost.json``.

    python bench/distill_cost.py                      # PreResNet-20, batch 64, 32 px, 1 thread
    python bench/distill_cost.py --depth 56 --rounds 40
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
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rartsprune  # noqa: E402
from rartsprune.app.models import preresnet  # noqa: E402


def _pruner(base: torch.nn.Module, method: str, distill: bool, steps: int) -> Any:
    model = copy.deepcopy(base)
    kwargs: dict[str, Any] = {"loss_fn": rartsprune.DistillationLoss(base, weight=1.0)} if distill else {}
    # the budget reached far beyond the timed steps: every step pays the same selection work
    return rartsprune.prune(model, method=method, macs=0.6, gradual_steps=10 * steps, weight_lr=0.01,
                            example_inputs=torch.zeros(1, 3, 32, 32), **kwargs)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--depth", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "distill_cost.json")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    base = preresnet(depth=args.depth, num_classes=10).eval()
    steps = args.rounds + args.warmup
    variants = {f"{method}{'+distill' if kd else ''}": _pruner(base, method, kd, steps)
                for method in ("rarts", "l1_norm") for kd in (False, True)}
    gen = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(steps):
        halves = [(torch.randn(args.batch_size, 3, 32, 32, generator=gen),
                   torch.randint(0, 10, (args.batch_size,), generator=gen)) for _ in range(2)]
        for name, pruner in variants.items():
            t0 = time.perf_counter()
            pruner.step(*halves)
            if r >= args.warmup:
                times[name].append(time.perf_counter() - t0)
    median = {name: statistics.median(v) for name, v in times.items()}
    result = {"settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "machine": {"platform": platform.platform(), "torch": torch.__version__,
                          "threads": torch.get_num_threads()},
              "median_step_s": median,
              "ratio": {m: median[f"{m}+distill"] / median[m] for m in ("rarts", "l1_norm")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    lines = [f"# Distillation's cost per search step: PreResNet-{args.depth}, batch {args.batch_size} per half, "
             f"{torch.get_num_threads()} thread(s)", "",
             "| step | cross-entropy (s) | distillation (s) | ratio |", "|---|---|---|---|"]
    for m, label in (("rarts", "RARTS, exact update, gradual budget"), ("l1_norm", "ℓ1-norm, gradual (one net)")):
        lines.append(f"| {label} | {median[m]:.4f} | {median[m + '+distill']:.4f} | {result['ratio'][m]:.2f}x |")
    lines += ["", f"Command: `{' '.join(['python bench/distill_cost.py', *(argv or sys.argv[1:])])}`"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
