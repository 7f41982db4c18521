"""Width-search quality: the paper's Table 5 comparison at CPU scale (pre-activation ResNet on CIFAR-10).

One shared baseline checkpoint of a pre-activation bottleneck ResNet of the ResNet-164 family, then, for each
method (rarts, darts1, darts2, milenas, slimming, l1_norm, random) at each PRC (40%, 60%) and each seed: a
search / sparsity phase of the same length, finalize (surgery), fine-tuning with the same budget, and the
test accuracy, params, MACs and wall time. RARTS is also run with the other score criteria
(``--importances``) to compare them. Mean ± std over seeds.

Writes ``bench/results/pruning_quality.json`` and ``bench/results/pruning_quality.md``; every run keeps its own
folder (``--work``) so an interrupted benchmark continues where it stopped.

    python bench/pruning_quality.py                  # CPU default: depth 20, 4k-image subset (~1.3 h on 2 cores)
    python bench/pruning_quality.py --full --device cuda   # ResNet-164, all 50k images, the paper's schedule
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _models import add_model_args, model_of  # noqa: E402  (bench/ is on sys.path when a script runs)
from _paths import portable  # noqa: E402

from rartsprune.app.pipeline import PruneJob, run  # noqa: E402
from rartsprune.flops import format_count  # noqa: E402

METHODS = ("rarts", "darts1", "darts2", "milenas", "slimming", "l1_norm", "random")
DATA = ROOT / ".." / "shared" / "data" / "cifar10"


def _mean_std(vals: list[float]) -> str:
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.2f}"
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA), help="CIFAR-10 ImageFolder tree (or cifar10 / fake)")
    ap.add_argument("--full", action="store_true", help="ResNet-164, all images, 160/20/160 epochs (GPU)")
    add_model_args(ap)
    ap.add_argument("--train-subset", type=int, default=4000)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--baseline-epochs", type=int, default=30)
    ap.add_argument("--search-epochs", type=int, default=1)
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--finetune-lr", type=float, default=0.01,
                    help="fine-tuning LR (step schedule); the baseline trains at 0.1")
    ap.add_argument("--bn-recalibration", type=int, default=50,
                    help="training batches to re-estimate BatchNorm statistics after surgery (0: off)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--ratios", default="0.4,0.6")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--importances", default="alpha_gamma,normalized",
                    help="extra RARTS runs with these score criteria (at the first ratio)")
    ap.add_argument("--layer-scope-methods", default="rarts,l1_norm",
                    help="methods also run with scope='layer' (the same fraction removed from every layer), so "
                         "selection criteria are compared at equal sizes; '' for none")
    ap.add_argument("--no-control", action="store_true",
                    help="skip the control: the unpruned baseline trained as long as the fine-tuning, same LR")
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--search-lr", type=float, default=0.01)
    ap.add_argument("--arch-lr", type=float, default=1e-2)
    ap.add_argument("--l1", type=float, default=0.0,
                    help="ℓ1 pressure on the scores (0: the settings of the committed tables; bench/equal_macs.py "
                         "measures rartsprune.prune's defaults)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "pruning_quality")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "pruning_quality.json")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    if args.full and (args.model is not None or args.depth not in (None, 164)):
        ap.error("--full runs the paper's PreResNet-164: drop --model / --depth")
    if args.full:
        args.model, args.depth, args.train_subset, args.test_subset, args.baseline_epochs = None, 164, None, None, 160
        args.search_epochs, args.finetune_epochs, args.finetune_lr = 20, 160, 0.1
    data = args.data
    if data not in ("cifar10", "fake") and not (Path(data) / "train").is_dir():
        print(f"CIFAR-10 tree not found at {data}; pass --data (see ../shared/data/README.md)")
        return 2
    methods = [m for m in args.methods.split(",") if m]
    ratios = [float(r) for r in args.ratios.split(",") if r]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    importances = [i for i in args.importances.split(",") if i]
    model = model_of(args)
    common = PruneJob(
        model=model.name, data=data, batch_size=args.batch_size, lr=0.1, weight_decay=1e-4,
        schedule="step", finetune_lr=args.finetune_lr, bn_recalibration=args.bn_recalibration,
        search_lr=args.search_lr, arch_lr=args.arch_lr, l1=args.l1, train_subset=args.train_subset,
        test_subset=args.test_subset, device=args.device, progress=False, plots=False,
        model_factory=model.build,
        finetune_distill=0.0,  # the history tables' cross-entropy fine-tuning (the job's default distils since 2026-12-06)
    )
    t_start = time.perf_counter()
    base_dir = args.work / f"baseline_{model.tag}"
    if (base_dir / "results.json").exists() and (base_dir / "baseline.pt").exists():
        baseline = json.loads((base_dir / "results.json").read_text())
    else:
        baseline = run(replace(common, out=str(base_dir), pretrain_epochs=args.baseline_epochs, stop_after="pretrain",
                               resume=(base_dir / "checkpoint.pt").exists()))
    print(f"baseline: {baseline['before']['test_acc']:.2f}% ({format_count(baseline['before']['params'])} params, "
          f"{format_count(baseline['before']['macs'])} MACs)", flush=True)
    layer_methods = [m for m in args.layer_scope_methods.split(",") if m and m in methods]
    plan = [(m, r, "alpha", s, "global") for r in ratios for m in methods for s in seeds]
    plan += [(m, r, "alpha", s, "layer") for r in ratios for m in layer_methods for s in seeds]
    plan += [("rarts", ratios[0], imp, s, "global") for imp in importances for s in seeds]
    control = [] if args.no_control or args.finetune_epochs == 0 else [
        _control(common, base_dir, args.work / model.tag / f"unpruned_ft{args.finetune_epochs}_s{s}",
                 args.finetune_epochs, args.finetune_lr, s) for s in seeds]
    runs = []
    for method, ratio, importance, seed, scope in plan:
        tag = f"{method}_{importance}_r{int(round(ratio * 100))}_s{seed}" + ("_layer" if scope == "layer" else "")
        d = args.work / model.tag / tag
        if (d / "results.json").exists():
            res = json.loads((d / "results.json").read_text())
        else:
            t0 = time.perf_counter()
            res = run(replace(common, out=str(d), init_weights=str(base_dir / "baseline.pt"), method=method,
                              ratio=ratio, importance=importance, scope=scope, seed=seed,
                              search_epochs=args.search_epochs,
                              finetune_epochs=args.finetune_epochs, resume=(d / "checkpoint.pt").exists()))
            res["wall_s"] = time.perf_counter() - t0
        runs.append({"method": method, "ratio": ratio, "importance": importance, "scope": scope, "seed": seed,
                     "acc_pruned": res["after_prune"]["test_acc"], "acc": res["after_finetune"]["test_acc"],
                     "acc_pruned_stale_bn": res.get("after_prune_stale_bn", res["after_prune"])["test_acc"],
                     "params": res["after_prune"]["params"], "macs": res["after_prune"]["macs"],
                     "prc": res["summary"]["prc"], "wall_s": sum(res["wall_time_s"].get(k, 0.0)
                                                                  for k in ("search", "finalize", "finetune"))})
        print(f"{tag}: {runs[-1]['acc']:.2f}% (pruned {runs[-1]['acc_pruned']:.2f}%)", flush=True)
    # aggregate
    rows = []
    def key(r: dict) -> tuple:
        return r["method"], r["ratio"], r["importance"], r["scope"]

    for (method, ratio, importance, scope) in dict.fromkeys(key(r) for r in runs):
        sel = [r for r in runs if key(r) == (method, ratio, importance, scope)]
        accs = [r["acc"] for r in sel]
        label = (method + ("" if importance == "alpha" else f" ({importance})")
                 + (" (layer scope)" if scope == "layer" else ""))
        rows.append({"method": label, "base_method": method, "importance": importance, "scope": scope, "ratio": ratio,
                     "acc_mean": statistics.mean(accs), "acc_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
                     "acc": _mean_std(accs), "acc_pruned": _mean_std([r["acc_pruned"] for r in sel]),
                     "acc_pruned_stale_bn": _mean_std([r["acc_pruned_stale_bn"] for r in sel]),
                     "params": sel[0]["params"], "macs": sel[0]["macs"], "prc": sel[0]["prc"],
                     "wall_s": statistics.mean(r["wall_s"] for r in sel), "seeds": len(sel)})
    unpruned = baseline["before"]
    targets = _targets(rows, unpruned["test_acc"])
    control_acc = statistics.mean(control) if control else None
    comparisons = _comparisons(rows, control_acc)
    result = {"settings": {k: portable(v) for k, v in vars(args).items()},
              "baseline": unpruned, "control": {"runs": control, "acc_mean": control_acc,
                                                "epochs": args.finetune_epochs, "lr": args.finetune_lr},
              "rows": rows, "runs": runs, "targets": targets, "comparisons": comparisons,
              "total_wall_s": time.perf_counter() - t_start}
    lines = [f"# Pruning quality: {model.title} on CIFAR-10 "
             f"({args.train_subset or 'all'} training images, {len(seeds)} seeds)", "",
             f"Unpruned baseline: {unpruned['test_acc']:.2f}% top-1, {format_count(unpruned['params'])} params, "
             f"{format_count(unpruned['macs'])} MACs. Each method: {args.search_epochs} search/sparsity epochs, "
             f"finalize, BatchNorm statistics re-estimated on {args.bn_recalibration} training batches, "
             f"{args.finetune_epochs} fine-tuning epochs at LR {args.finetune_lr} from the same baseline "
             f"(trained {args.baseline_epochs} epochs).", "",
             "| PRC | method | test acc (fine-tuned) | pruned, BN re-estimated | pruned, stale BN | params | MACs "
             "| wall s |",
             "|---|---|---|---|---|---|---|---|"]
    if control:
        lines.append(f"| 0% | unpruned + {args.finetune_epochs} more epochs at LR {args.finetune_lr} (control) | "
                     f"{_mean_std(control)} | - | - | {format_count(unpruned['params'])} | "
                     f"{format_count(unpruned['macs'])} | - |")
    for r in sorted(rows, key=lambda r: (r["ratio"], -r["acc_mean"])):
        lines.append(f"| {100 * r['ratio']:.0f}% | {r['method']} | {r['acc']} | {r['acc_pruned']} | "
                     f"{r['acc_pruned_stale_bn']} | {format_count(r['params'])} | {format_count(r['macs'])} | {r['wall_s']:.0f} |")
    lines += ["", "Targets (project issue 6): " + (", ".join(f"{k}: {'met' if v else 'missed'}"
                                                         for k, v in targets.items()) or "no RARTS rows")]
    if comparisons:
        lines += ["", "Other comparisons (not targets): " + ", ".join(f"{k}: {v:+.2f}" for k, v in comparisons.items())]
    lines += ["", f"Command: `python bench/pruning_quality.py {shlex.join(argv or sys.argv[1:])}`".rstrip()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def _control(common: PruneJob, base_dir: Path, out: Path, epochs: int, lr: float, seed: int) -> float:
    """The unpruned baseline trained ``epochs`` more epochs at ``lr``: what the fine-tuning budget buys unpruned."""
    if (out / "results.json").exists():
        res = json.loads((out / "results.json").read_text())
    else:
        res = run(replace(common, out=str(out), init_weights=str(base_dir / "baseline.pt"), pretrain_epochs=epochs,
                          lr=lr, seed=seed, stop_after="pretrain", resume=(out / "checkpoint.pt").exists()))
    print(f"control (unpruned, {epochs} more epochs, seed {seed}): {res['before']['test_acc']:.2f}%", flush=True)
    return res["before"]["test_acc"]


def _comparisons(rows: list[dict], control_acc: float | None) -> dict[str, float]:
    """Accuracy differences that are not targets: equal-allocation (layer scope) rows, and the control."""
    by = {(r["base_method"], r["scope"], r["ratio"]): r["acc_mean"] for r in rows if r["importance"] == "alpha"}
    out: dict[str, float] = {}
    for ratio in sorted({r["ratio"] for r in rows}):
        pct = f"{100 * ratio:.0f}"
        a, b = by.get(("rarts", "layer", ratio)), by.get(("l1_norm", "layer", ratio))
        if a is not None and b is not None:
            out[f"rarts - l1_norm, both layer scope, PRC {pct}%"] = a - b
        if control_acc is not None and ("rarts", "global", ratio) in by:
            out[f"rarts - unpruned control, PRC {pct}%"] = by[("rarts", "global", ratio)] - control_acc
    return out


def _targets(rows: list[dict], unpruned_acc: float) -> dict[str, bool]:
    """RARTS ahead of slimming, l1_norm and random by >= 0.5 points at each PRC, and not below the unpruned net."""
    by = {(r["method"], r["ratio"]): r["acc_mean"] for r in rows}
    out: dict[str, bool] = {}
    for ratio in sorted({r["ratio"] for r in rows}):
        rarts = by.get(("rarts", ratio))
        if rarts is None:
            continue
        pct = f"{100 * ratio:.0f}"
        for other in ("slimming", "l1_norm", "random"):
            if (other, ratio) in by:
                out[f"rarts >= {other} + 0.5 at PRC {pct}%"] = rarts >= by[(other, ratio)] + 0.5
        out[f"rarts >= unpruned at PRC {pct}%"] = rarts >= unpruned_acc
    return out


if __name__ == "__main__":
    sys.exit(main())
