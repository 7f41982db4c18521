"""MobileNetV2 on an ImageFolder subset: ℓ1-mode RARTS learns the pruning ratio, baselines prune to the same size.

The paper prunes torchvision's MobileNetV2 on 20 ImageNet classes (Table 6, the average of 5 runs): build
that subset with ``recipes/imagenet_subset.py --root IMAGENET --out IMAGENET20 --classes 20 --seed 0`` and
point ``--data`` at it (``train/`` and ``val/`` or ``test/`` folders). Steps, for each of ``--runs`` seeds
(``--seed``, ``--seed`` + 1, ...; default 5 runs, seeds 0..4):

1. one shared baseline: ``--epochs`` of plain training (RUN/baseline/baseline.pt);
2. RARTS in ℓ1 mode from that baseline: the sparsity penalty decides how many channels go (PRC p);
3. DARTS-1, DARTS-2 and random pruning from the same baseline at exactly PRC p (ratio mode), or, with
   ``--match macs``, at RARTS' MACs (a MACs budget: ``macs=`` the fraction of the MACs RARTS kept);
4. every pruned model fine-tuned for the same number of epochs; a table of accuracy, params and MACs is
   printed and written to RUN/comparison.json / RUN/comparison.md.

RUN is OUT for the first seed and OUT/seed<k> for the others. Finally the mean ± sample standard deviation
over the runs of every method's PRC, params, MACs and accuracies is printed and written to
OUT/summary.json / OUT/summary.md.

GPU-scale defaults; on a CPU (one run):

    python recipes/mobilenetv2_subset.py --data ../shared/data/cifar10 --train-subset 500 --test-subset 200 \\
        --epochs 1 --search-epochs 1 --finetune-epochs 1 --runs 1 --out /tmp/mbv2

Under ``torchrun`` every job runs data-parallel, the searches and the one-shot baselines (``random``,
``l1_norm``, ``slimming``) alike; ``--batch-size`` stays the global batch, rank 0 alone writes the folders
and tables and prints them, ``--resume`` continues every job from rank 0's checkpoints::

    torchrun --nproc_per_node 4 recipes/mobilenetv2_subset.py --data IMAGENET20 \\
        --methods darts1,darts2,random,l1_norm,slimming --out runs/mbv2
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rartsprune.app.launch import launch_ranks  # noqa: E402
from rartsprune.app.pipeline import PruneJob, run  # noqa: E402
from rartsprune.flops import format_count  # noqa: E402

BASELINES = ("darts1", "darts2", "random")
#: per-method numbers averaged over the runs
METRICS = ("prc", "params", "macs", "acc_pruned", "acc_finetuned")


def _mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (``None`` for one run) of a metric over the runs."""
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else None,
            "values": values}


def summarize(runs: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean ± std over the runs (seed -> the run's comparison dict) of every metric of every method.

    Examples:
        >>> run = {"baseline": {"test_acc": 50.0}, "methods": {"rarts (l1)": dict.fromkeys(METRICS, 1.0)}}
        >>> s = summarize({0: run, 1: {**run, "baseline": {"test_acc": 52.0}}})
        >>> s["baseline_acc"]["mean"], round(s["methods"]["rarts (l1)"]["prc"]["std"], 3)
        (51.0, 0.0)
    """
    first = next(iter(runs.values()))
    return {
        "seeds": list(runs),
        "baseline_acc": _mean_std([float(r["baseline"]["test_acc"]) for r in runs.values()]),
        "methods": {name: {m: _mean_std([float(r["methods"][name][m]) for r in runs.values()]) for m in METRICS}
                    for name in first["methods"]},
    }


def summary_table(summary: dict[str, Any]) -> str:
    """Markdown table of `summarize`'s result: mean ± std of every metric per method."""
    def cell(v: dict[str, Any], fmt: str) -> str:
        return f"{v['mean']:{fmt}}" + (f" ± {v['std']:{fmt}}" if v["std"] is not None else "")

    seeds = summary["seeds"]
    lines = [f"Mean ± std over {len(seeds)} run(s), seeds {', '.join(map(str, seeds))}; unpruned accuracy "
             f"{cell(summary['baseline_acc'], '.2f')}.", "",
             "| method | PRC (%) | params (M) | MACs (M) | acc pruned | acc fine-tuned |", "|---|---|---|---|---|---|"]
    for name, m in summary["methods"].items():
        pct = {k: m["prc"][k] * 100 if m["prc"][k] is not None else None for k in ("mean", "std")}
        mega = {k: {q: (m[k][q] / 1e6 if m[k][q] is not None else None) for q in ("mean", "std")}
                for k in ("params", "macs")}
        lines.append(f"| {name} | {cell(pct, '.1f')} | {cell(mega['params'], '.3f')} | "
                     f"{cell(mega['macs'], '.1f')} | {cell(m['acc_pruned'], '.2f')} | "
                     f"{cell(m['acc_finetuned'], '.2f')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="ImageFolder path (or cifar10 / cifar100 / fake)")
    ap.add_argument("--image-size", type=int, default=None, help="crop size of large images (default 224)")
    ap.add_argument("--epochs", type=int, default=60, help="baseline training epochs")
    ap.add_argument("--search-epochs", type=int, default=20)
    ap.add_argument("--finetune-epochs", type=int, default=30)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--l1", type=float, default=5e-4, help="ℓ1 strength on the scores (RARTS, ℓ1 mode)")
    ap.add_argument("--threshold", type=float, default=0.05, help="remove channels with |score| <= this")
    ap.add_argument("--arch-lr", type=float, default=3e-3)
    ap.add_argument("--methods", default=",".join(BASELINES), help="methods pruned to RARTS' size")
    ap.add_argument("--match", choices=("prc", "macs"), default="prc",
                    help="prune the other methods to RARTS' PRC (channels removed) or to its MACs (a budget: the "
                         "fraction of the model's MACs to keep, fvcore multiply-accumulates, batch 1)")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--test-subset", type=int, default=None)
    ap.add_argument("--pretrained", action="store_true", help="start from torchvision's ImageNet weights")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    ap.add_argument("--seed", type=int, default=0, help="seed of the first run")
    ap.add_argument("--runs", type=int, default=5, help="runs with seeds --seed, --seed + 1, ... (the paper: 5)")
    ap.add_argument("--out", default="runs/mobilenetv2_subset")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    unknown = set(methods) - {"darts1", "darts2", "milenas", "random", "l1_norm", "slimming"}
    if unknown:
        ap.error(f"unknown methods {sorted(unknown)}")
    if args.runs < 1:
        ap.error(f"--runs must be >= 1, got {args.runs}")
    if args.pretrained:
        raise SystemExit("--pretrained needs 1000 classes; train the subset baseline instead (--epochs)")
    out = Path(args.out)
    runs = {}
    for k in range(args.runs):
        seed = args.seed + k
        runs[seed] = one_run(args, methods, seed, out if k == 0 else out / f"seed{seed}")
    summary = summarize(runs)
    if launch_ranks().main:  # under torchrun: rank 0 writes and prints (the job runner writes only there too)
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        (out / "summary.md").write_text(summary_table(summary))
        print(summary_table(summary))
    return 0


def one_run(args: argparse.Namespace, methods: list[str], seed: int, out: Path) -> dict[str, Any]:
    """Baseline, ℓ1-mode RARTS and the other methods at RARTS' size for one seed; returns the comparison."""
    base = PruneJob(
        model="torchvision:mobilenet_v2", data=args.data, image_size=args.image_size, pretrained=args.pretrained,
        batch_size=args.batch_size, lr=args.lr, schedule="cosine", search_epochs=args.search_epochs,
        finetune_epochs=args.finetune_epochs, arch_lr=args.arch_lr, train_subset=args.train_subset,
        test_subset=args.test_subset, device=args.device, amp=args.amp, seed=seed, resume=args.resume,
        progress=args.progress,
    )
    baseline_dir = out / "baseline"
    run(replace(base, out=str(baseline_dir), pretrain_epochs=args.epochs, stop_after="pretrain",
                resume=args.resume and (baseline_dir / "checkpoint.pt").exists()))
    init = str(baseline_dir / "baseline.pt")

    def job(name: str, **kw: object) -> dict:
        d = out / name
        return run(replace(base, out=str(d), init_weights=init, resume=args.resume and (d / "checkpoint.pt").exists(), **kw))

    rows = {"rarts (l1)": job("rarts_l1", method="rarts", mode="l1", l1=args.l1, threshold=args.threshold)}
    prc = rows["rarts (l1)"]["summary"]["prc"]
    macs = rows["rarts (l1)"]["summary"]["macs_ratio"]
    # a MACs budget must be in (0, 1): when RARTS removed nothing, match the PRC (0) instead
    size = {"macs": macs} if args.match == "macs" and 0.0 < macs < 1.0 else {"ratio": prc}
    for m in methods:
        rows[m] = job(m, method=m, mode="ratio", **size)
    table = ["| method | PRC | params | MACs | acc pruned | acc fine-tuned |", "|---|---|---|---|---|---|"]
    summary = {}
    for name, r in rows.items():
        p = r["after_prune"]
        summary[name] = {"prc": r["summary"]["prc"], "params": p["params"], "macs": p["macs"],
                         "acc_pruned": p["test_acc"], "acc_finetuned": r["after_finetune"]["test_acc"]}
        table.append(f"| {name} | {100 * r['summary']['prc']:.1f}% | {format_count(p['params'])} | "
                     f"{format_count(p['macs'])} | {p['test_acc']:.2f} | {r['after_finetune']['test_acc']:.2f} |")
    first = next(iter(rows.values()))["before"]
    table.insert(2, f"| unpruned | 0% | {format_count(first['params'])} | {format_count(first['macs'])} | "
                    f"{first['test_acc']:.2f} | |")
    comparison = {"seed": seed, "baseline": first, "matched": size, "methods": summary}
    if launch_ranks().main:
        (out / "comparison.json").write_text(json.dumps(comparison, indent=1))
        (out / "comparison.md").write_text("\n".join(table) + "\n")
        print(f"seed {seed}:")
        print("\n".join(table))
    return comparison


if __name__ == "__main__":
    sys.exit(main())
