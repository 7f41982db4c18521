"""Accuracy at equal measured latency: widths selected by the latency model vs by MACs (project issue 15).

The width-quality benchmark's setting (``bench/equal_macs.py``'s 'after' protocol: PreResNet on a CIFAR-10
subset, its trained baseline shared through ``--work``), one criterion for both arms (``--method``, default the
ℓ1-norm: deterministic, so the arms differ only in how each unit's cost is counted):

1. the per-layer latency table of the trained baseline (`rartsprune.width.latency`) at ``--latency-batch``,
   on this device with ``--threads`` threads, cached under ``--table-dir``;
2. *latency arm*: `rartsprune.prune` with ``latency=--latency`` (each unit costs its share of the predicted
   latency); *MACs arm*: ``macs=m`` with ``m`` found by bisection so that the table predicts the same latency
   fraction for the MACs-selected model — both arms at equal (predicted) latency;
3. both pruned models and the unpruned one are timed interleaved in ``--rounds`` rounds (fresh copies loaded
   each round, the order rotated; ``bench/speedup.py``'s helpers): the measured latency fraction of each arm,
   median and spread across rounds — is the latency really equal, and is the budget met?
4. per seed, each arm through the job runner (surgery, BatchNorm re-estimated, ``--finetune-epochs`` of
   fine-tuning; the seed changes the data order), so each pair of arms shares everything but the selection;
   mean ± std over ``--seeds`` and the paired difference latency − MACs.

With a search method (``--method rarts``) the arms differ in more than where the ranking stops: each arm is
a search whose pressure counts every unit's cost in its budget's units (the latency arm: the table's predicted
milliseconds; the MACs arm: MACs), so the two can keep different channels. Then steps 2-4 run per seed: both
searches through the job runner (``--search-epochs`` on the trained baseline at ``--search-lr``, surgery, the
same fine-tuning), the pruned models rebuilt from the jobs' plans and timed with the unpruned one in
``--rounds`` interleaved rounds per seed. The MACs arm's budget is the one at which the ℓ1-norm ranking reaches
the latency arm's predicted fraction (a search cannot be bisected), so its predicted latency differs a little
per seed: the report gives both arms' predicted and measured fractions.

Target (issue 15): at equal measured latency the latency-selected model is at least as accurate as the
MACs-selected one after the same fine-tuning. Writes ``bench/results/equal_latency.json`` and ``.md``.

    python bench/equal_latency.py --threads 1 --seeds 0,1,2              # ~25 min on one idle core
    python bench/equal_latency.py --threads 1 --method rarts --seeds 0,1,2 --out bench/results/equal_latency_rarts.json
    python bench/equal_latency.py --data fake --depth 11 --train-subset 64 --test-subset 32 --baseline-epochs 1 \\
        --finetune-epochs 1 --latency-batch 2 --rounds 2 --reps 3 --seeds 0 --work /tmp/el --out /tmp/el.json
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import _alloc  # noqa: E402  (bench/ is on sys.path when a script runs)
import equal_macs  # noqa: E402
import latency_model  # noqa: E402
import speedup  # noqa: E402
from _paths import portable  # noqa: E402

import rartsprune  # noqa: E402
from rartsprune.app.pipeline import PruneJob  # noqa: E402
from rartsprune.flops import flops_report  # noqa: E402
from rartsprune.width.latency import WidthLatencyTable, allocator_settings, device_name  # noqa: E402

ARMS = ("latency", "macs")
#: the one-shot criteria (one selection per arm, shared by every seed) and the searches (one per arm and seed)
ONE_SHOT = ("l1_norm", "random")
SEARCHED = ("rarts",)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a fraction strictly between 0 and 1, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    equal_macs.add_setting_args(ap)
    ap.add_argument("--latency", type=_fraction, default=0.6, help="fraction of the predicted latency to keep")
    ap.add_argument("--latency-batch", type=speedup._positive_int, default=32, help="batch size the latency is for")
    ap.add_argument("--method", default="l1_norm", choices=ONE_SHOT + SEARCHED,
                    help="the criterion both arms rank by: a one-shot one, or a search (one per arm and seed, its "
                         "pressure in the arm's cost units)")
    ap.add_argument("--search-epochs", type=speedup._positive_int, default=1,
                    help="a search method's epochs on the trained baseline")
    ap.add_argument("--search-lr", type=float, default=0.01, help="a search method's weight LR")
    ap.add_argument("--gradual", type=float, default=None,
                    help="a search method reaches its budget gradually during this fraction of the search "
                         "(PruneJob.gradual); its runs get their own folders")
    ap.add_argument("--seeds", default="0,1,2", type=lambda s: [int(x) for x in s.split(",") if x])
    ap.add_argument("--rounds", type=speedup._positive_int, default=5, help="timing rounds (fresh copies each)")
    ap.add_argument("--reps", type=speedup._positive_int, default=20, help="timed repetitions per round")
    ap.add_argument("--table-warmup", type=int, default=3)
    ap.add_argument("--table-repeats", type=int, default=15)
    ap.add_argument("--table-dir", type=Path, default=ROOT / "runs" / "latency_tables")
    ap.add_argument("--table", type=Path, default=None,
                    help="a latency table JSON to use instead of measuring one (checked against the device, batch "
                         "size and input shape)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "equal_latency.json")
    ap.add_argument("--allocator", choices=_alloc.CHOICES, default="retain",
                    help="retain: run with glibc's heap kept in the process (bench/_alloc.py; the default: timings "
                         "otherwise swing with page faults); system: the environment as it is")
    args = ap.parse_args(argv)
    if args.gradual is not None and args.method not in SEARCHED:
        ap.error(f"--gradual needs a search method ({', '.join(SEARCHED)}), not --method {args.method}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    return args


def macs_fraction(model: nn.Module, x: torch.Tensor, full: float) -> float:
    """``model``'s fvcore MACs at batch 1 as a fraction of ``full``."""
    return flops_report(model, x[:1]).macs / full


def select(model: nn.Module, x: torch.Tensor, table: WidthLatencyTable, args: argparse.Namespace, *,
           latency: float | None = None, macs: float | None = None) -> tuple[nn.Module, float]:
    """A pruned copy of ``model`` (eval mode) at one budget, and its latency fraction predicted by ``table``
    (ranked by ``--method``, or by the ℓ1-norm for a search method)."""
    budget = {"latency": latency, "latency_batch": args.latency_batch, "latency_table": str(args.table)} \
        if latency is not None else {"macs": macs}
    method = args.method if args.method in ONE_SHOT else "l1_norm"
    pruner = rartsprune.prune(copy.deepcopy(model), method=method, example_inputs=x, seed=0, **budget)
    pruned = pruner.finalize().eval()
    return pruned, table.predict_model(pruned) / table.full_ms


def matching_macs(model: nn.Module, x: torch.Tensor, table: WidthLatencyTable, target: float,
                  args: argparse.Namespace, *, steps: int = 14) -> tuple[float, nn.Module, float]:
    """The MACs budget whose selection the table predicts at ``target`` of the latency (bisection: the predicted
    latency grows with the MACs kept), its pruned model and predicted fraction."""
    lo, hi = 0.02, 0.98
    best: tuple[float, nn.Module, float] | None = None
    for _ in range(steps):
        mid = (lo + hi) / 2
        try:
            pruned, frac = select(model, x, table, args, macs=mid)
        except ValueError as exc:  # below the reachable minimum: go up
            if "reachable minimum" not in str(exc):
                raise
            lo = mid
            continue
        if best is None or abs(frac - target) < abs(best[2] - target):
            best = (mid, pruned, frac)
        if frac > target:
            hi = mid
        else:
            lo = mid
    if best is None:
        raise ValueError(f"no MACs budget in [0.02, 0.98] reaches {target:g} of the predicted latency")
    return best


def time_arms(files: dict[str, Path], x: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    """Measured latency of every model in ``files`` (saved whole) in ``--rounds`` rounds, fresh copies each round,
    interleaved in a rotated order; per model its per-round medians, and each arm's fraction of the unpruned."""
    device = torch.device(args.device)
    xb = x[:1].repeat(args.latency_batch, 1, 1, 1).to(device)
    rounds: list[dict[str, float]] = []
    for index in range(args.rounds):
        variants = {k: torch.load(f, map_location=device, weights_only=False).eval() for k, f in files.items()}
        times = speedup.time_interleaved(variants, xb, args.reps, speedup.rotated(list(variants), index), device)
        rounds.append({k: statistics.median(v) for k, v in times.items()})
    unpruned = [r["unpruned"] for r in rounds]
    noise = max(unpruned) / min(unpruned) - 1
    out: dict[str, Any] = {"rounds_ms": rounds, "unpruned_variation": noise, "noisy": noise > speedup.NOISE_LIMIT}
    for arm in ARMS:
        fracs = [r[arm] / r["unpruned"] for r in rounds]
        out[arm] = {"fraction": _spread(fracs), "ms": _spread([r[arm] for r in rounds])}
    return out


def _spread(values: list[float]) -> dict[str, Any]:
    """Median, min and max across rounds.

    Examples:
        >>> _spread([0.6, 0.5, 0.7])
        {'median': 0.6, 'min': 0.5, 'max': 0.7, 'rounds': [0.6, 0.5, 0.7]}
    """
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "rounds": list(values)}


def _mean_std(values: list[float]) -> dict[str, float]:
    return {"mean": statistics.mean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0}


class Setting(NamedTuple):
    """What both arms share: the job, the unpruned model and its folder, the work folder, the example input, the unpruned MACs, the
    latency table, each arm's budget keywords and the command line."""

    common: PruneJob
    model: nn.Module
    base_dir: Path
    work: Path
    x: torch.Tensor
    full_macs: float
    table: WidthLatencyTable
    budgets: dict[str, dict[str, Any]]
    args: argparse.Namespace


def describe(pruned: nn.Module, frac: float, st: Setting) -> dict[str, Any]:
    """A pruned model's predicted latency fraction, MACs ratio, parameters and widths."""
    return {"predicted_fraction": frac, "macs_ratio": macs_fraction(pruned, st.x, st.full_macs),
            "params": sum(p.numel() for p in pruned.parameters()),
            "widths": {k: v["out"] for k, v in rartsprune.layer_widths(pruned).items()}}


def _run(st: Setting, arm: str, seed: int, budget: dict[str, Any] | None = None,
         **search: Any) -> tuple[Path, dict[str, Any]]:
    """One arm's job for one seed (cached in its folder): its folder and results. ``budget``: the arm's budget
    keywords instead of the shared ones."""
    out = st.work / f"{arm}_s{seed}"
    job = replace(st.common, init_weights=str(st.base_dir / "baseline.pt"), method=st.args.method, seed=seed,
                  out=str(out), **search, **(budget if budget is not None else st.budgets[arm]))
    return out, equal_macs._load_or_run(job)


def _record(arm: str, seed: int, res: dict[str, Any]) -> dict[str, Any]:
    run = {"arm": arm, "seed": seed, "acc": res["after_finetune"]["test_acc"],
           "acc_pruned": res["after_prune"]["test_acc"], "macs_ratio": res["summary"]["macs_ratio"],
           "params": res["after_prune"]["params"]}
    print(f"{arm} seed {seed}: {run['acc']:.2f}% (pruned {run['acc_pruned']:.2f}%, MACs x{run['macs_ratio']:.3f})",
          flush=True)
    return run


def one_shot_arms(st: Setting, selected: dict[str, tuple[nn.Module, float]]) -> tuple[dict, dict, list]:
    """A one-shot criterion: each arm's one selection timed once, then fine-tuned per seed."""
    files = {"unpruned": st.work / "unpruned.pt"}
    arms: dict[str, Any] = {}
    for arm, (pruned, frac) in selected.items():
        files[arm] = st.work / f"{arm}.pt"
        torch.save(pruned, files[arm])
        arms[arm] = describe(pruned, frac, st)
    print(f"latency arm: predicted {arms['latency']['predicted_fraction']:.3f}, MACs x{arms['latency']['macs_ratio']:.3f}"
          f"; MACs arm: predicted {arms['macs']['predicted_fraction']:.3f}, MACs x{arms['macs']['macs_ratio']:.3f}",
          flush=True)
    timing = time_arms(files, st.x, st.args)
    for arm in ARMS:
        arms[arm]["measured_fraction"] = timing[arm]["fraction"]
        print(f"{arm} arm: measured {timing[arm]['fraction']['median']:.3f} of the unpruned "
              f"(rounds {timing[arm]['fraction']['min']:.3f}-{timing[arm]['fraction']['max']:.3f})", flush=True)
    runs: list[dict[str, Any]] = []
    for seed in st.args.seeds:
        for arm in ARMS:
            runs.append(_record(arm, seed, _run(st, arm, seed, search_epochs=0)[1]))
            if abs(runs[-1]["macs_ratio"] - arms[arm]["macs_ratio"]) > 1e-3:
                raise RuntimeError(f"the job's {arm} selection (MACs x{runs[-1]['macs_ratio']:.4f}) is not the one "
                                   f"timed (x{arms[arm]['macs_ratio']:.4f})")
    return arms, timing, runs


def searched_arms(st: Setting) -> tuple[dict, dict, list]:
    """A search method: per seed, one search per arm (its pressure in the arm's cost units) through the job
    runner, the two pruned models rebuilt from the jobs' plans and timed with the unpruned one.

    The MACs arm runs first, at the shared MACs budget; the latency arm's budget is then the latency the table
    predicts for the MACs arm's model, so both arms of a seed are at the same predicted latency."""
    args = st.args
    # one-shot unless --gradual (the job's default would reach a budget gradually)
    search: dict[str, Any] = {"search_epochs": args.search_epochs, "search_lr": args.search_lr,
                              "gradual": 0.0 if args.gradual is None else args.gradual}
    per_arm: dict[str, list[dict[str, Any]]] = {arm: [] for arm in ARMS}
    per_seed_timing: dict[str, Any] = {}
    runs: list[dict[str, Any]] = []
    for seed in args.seeds:
        files = {"unpruned": st.work / "unpruned.pt"}
        for arm in ("macs", "latency"):
            budget = None
            if arm == "latency":
                budget = {**st.budgets["latency"], "latency": round(per_arm["macs"][-1]["predicted_fraction"], 4)}
            out, res = _run(st, arm, seed, budget, **search)
            runs.append(_record(arm, seed, res))
            ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=False)
            pruned = rartsprune.apply_plan(copy.deepcopy(st.model), json.loads(ckpt["plan"]), st.x).eval()
            files[arm] = out / "timed.pt"
            torch.save(pruned, files[arm])
            desc = describe(pruned, st.table.predict_model(pruned) / st.table.full_ms, st)
            if abs(desc["macs_ratio"] - runs[-1]["macs_ratio"]) > 1e-3:
                raise RuntimeError(f"the rebuilt {arm} model of seed {seed} (MACs x{desc['macs_ratio']:.4f}) is not "
                                   f"the one the job pruned (x{runs[-1]['macs_ratio']:.4f})")
            per_arm[arm].append({"seed": seed, "budget": (budget or st.budgets[arm])[arm], **desc})
        per_seed_timing[str(seed)] = timing = time_arms(files, st.x, args)
        for arm in ARMS:
            per_arm[arm][-1]["measured"] = timing[arm]["fraction"]
            print(f"{arm} seed {seed}: predicted {per_arm[arm][-1]['predicted_fraction']:.3f}, measured "
                  f"{timing[arm]['fraction']['median']:.3f} of the unpruned", flush=True)
    arms: dict[str, Any] = {}
    for arm, rows in per_arm.items():
        arms[arm] = {"budget": statistics.mean(r["budget"] for r in rows),
                     "predicted_fraction": statistics.mean(r["predicted_fraction"] for r in rows),
                     "macs_ratio": statistics.mean(r["macs_ratio"] for r in rows),
                     "params": round(statistics.mean(r["params"] for r in rows)),
                     "measured_fraction": _spread([r["measured"]["median"] for r in rows]),
                     "per_seed": rows}
    noise = max(t["unpruned_variation"] for t in per_seed_timing.values())
    timing = {"per_seed": per_seed_timing, "unpruned_variation": noise, "noisy": noise > speedup.NOISE_LIMIT}
    return arms, timing, runs


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.table is not None and not args.table.is_file():
        print(f"--table {args.table}: no such file")
        return 2
    common = equal_macs.common_job(args)
    if common is None:
        return 2
    common = replace(common, device=args.device)
    base_dir, base = equal_macs.trained_baseline(common, args)
    bench_model = equal_macs.model_of(args)
    work = args.work / f"equal_latency_{bench_model.tag}_b{args.latency_batch}_{args.method}"
    if args.method in SEARCHED:  # the search's settings name its folder
        work = work.with_name(f"{work.name}_e{args.search_epochs}_lr{args.search_lr:g}"
                              + (f"_gradual{args.gradual:g}" if args.gradual is not None else ""))
    work.mkdir(parents=True, exist_ok=True)

    # 1. the table of the trained baseline
    device = torch.device(args.device)
    state = torch.load(base_dir / "baseline.pt", map_location="cpu", weights_only=True)
    model = bench_model.build(num_classes=[v for v in state.values() if v.ndim == 2][-1].shape[0])
    model.load_state_dict(state)
    model = model.to(device).eval()
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(device)
    threads = args.threads or torch.get_num_threads()
    if args.table is None:
        args.table = latency_model.table_file(args.table_dir, bench_model.name, args.latency_batch, 32,
                                              device_name(device), threads,
                                              allocator_settings() if device.type == "cpu" else None)
    table, status = latency_model.load_or_measure_table(model, x, args.table, args.latency_batch,
                                                        warmup=args.table_warmup, repeats=args.table_repeats)
    print(f"table {status} ({portable(args.table)}): predicted {table.full_ms:.2f} ms at batch {args.latency_batch}",
          flush=True)

    # 2.-4. the selections at equal predicted latency, their timing and fine-tuning
    full_macs = flops_report(model, x).macs
    by_latency, lat_frac = select(model, x, table, args, latency=args.latency)
    macs_budget, by_macs, macs_frac = matching_macs(model, x, table, lat_frac, args)
    budgets = {"latency": {"latency": args.latency, "latency_batch": args.latency_batch,
                           "latency_table": str(args.table)},
               "macs": {"macs": macs_budget}}
    torch.save(model, work / "unpruned.pt")
    setting = Setting(common, model, base_dir, work, x, full_macs, table, budgets, args)
    if args.method in SEARCHED:
        arms, timing, runs = searched_arms(setting)
    else:
        arms, timing, runs = one_shot_arms(setting, {"latency": (by_latency, lat_frac), "macs": (by_macs, macs_frac)})
        arms["latency"]["budget"], arms["macs"]["budget"] = args.latency, macs_budget
    for arm in ARMS:
        sel = [r for r in runs if r["arm"] == arm]
        arms[arm].update(acc=_mean_std([r["acc"] for r in sel]), acc_pruned=_mean_std([r["acc_pruned"] for r in sel]))
    diffs = [next(r["acc"] for r in runs if r["arm"] == "latency" and r["seed"] == s)
             - next(r["acc"] for r in runs if r["arm"] == "macs" and r["seed"] == s) for s in args.seeds]
    paired = {**_mean_std(diffs), "values": diffs, "latency_wins": sum(d > 0 for d in diffs)}
    target = arms["latency"]["acc"]["mean"] >= arms["macs"]["acc"]["mean"]
    budget_met = abs(arms["latency"]["measured_fraction"]["median"] / arms["latency"]["budget"] - 1) <= 0.10
    result = {"settings": {k: portable(v) for k, v in vars(args).items()}, "allocator_env": allocator_settings(),
              "unpruned": {**base["before"], "predicted_ms": table.full_ms, "table": status}, "arms": arms,
              "timing": timing, "runs": runs, "paired_latency_minus_macs": paired,
              "targets": {"latency-selected >= MACs-selected at equal latency": target,
                          f"latency budget {arms['latency']['budget']:.3g} met within 10% (measured)": budget_met},
              "total_wall_s": time.perf_counter() - t_start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(render_markdown(result, argv))
    print(render_markdown(result, argv))
    return 0


def render_markdown(result: dict[str, Any], argv: list[str] | None) -> str:
    """The report: one row per arm, the paired difference, the targets."""
    s = result["settings"]
    cmd = " ".join(["python bench/equal_latency.py", *(argv if argv is not None else sys.argv[1:])])
    lines = [f"# Accuracy at equal latency: latency- vs MACs-selected widths ({s['method']})", "",
             f"`{cmd}`", "",
             f"{equal_macs.model_of(argparse.Namespace(model=s.get('model'), depth=s['depth'])).title}, "
             f"{s['train_subset']} training / {s['test_subset']} test images, the trained "
             f"baseline ({result['unpruned']['test_acc']:.2f}%), latency at batch {s['latency_batch']} on "
             f"{s['device']} with {s['threads']} thread(s); {s['finetune_epochs']} fine-tuning epochs; seeds "
             f"{s['seeds']}. " + (
                 f"Each arm searched with `method={s['method']}` for {s['search_epochs']} epoch(s) at weight LR "
                 f"{s['search_lr']:g}" + (f", gradual {s['gradual']:g}" if s.get("gradual") is not None else "")
                 + f", its pressure in its budget's cost units, once per seed. Measured latency: per seed the "
                 f"median over {s['rounds']} interleaved rounds; the table gives the median (min-max) over seeds; "
                 f"predicted latency, MACs and params are means over seeds."
                 if s["method"] in SEARCHED else
                 f"Measured latency: median (min-max) over {s['rounds']} interleaved rounds."), "",
             "| arm | budget | predicted latency | measured latency | MACs | params | acc right after pruning | "
             "acc after fine-tuning |", "|---|---|---|---|---|---|---|---|"]
    for arm, a in result["arms"].items():
        budget = f"latency={a['budget']:.3g}" if arm == "latency" else f"macs={a['budget']:.3f}"
        m = a["measured_fraction"]
        lines.append(f"| {arm} | {budget} | {a['predicted_fraction']:.3f}x | {m['median']:.3f}x "
                     f"({m['min']:.3f}-{m['max']:.3f}) | {a['macs_ratio']:.3f}x | {a['params']:,} | "
                     f"{a['acc_pruned']['mean']:.2f} ± {a['acc_pruned']['std']:.2f} | "
                     f"{a['acc']['mean']:.2f} ± {a['acc']['std']:.2f} |")
    p = result["paired_latency_minus_macs"]
    noisy = " — flagged noisy (unpruned time varies > 10% between rounds)" if result["timing"]["noisy"] else ""
    lat, mac = result["arms"]["latency"], result["arms"]["macs"]
    if "per_seed" in lat:
        same = sum(a["widths"] == b["widths"] for a, b in zip(lat["per_seed"], mac["per_seed"]))
        lines += ["", f"The two searches keep the same widths on {same} of {len(lat['per_seed'])} seeds. Per seed "
                      "(predicted / measured latency fraction, MACs): "
                  + "; ".join(f"seed {a['seed']}: latency arm {a['predicted_fraction']:.3f} / "
                              f"{a['measured']['median']:.3f}, x{a['macs_ratio']:.3f}, MACs arm "
                              f"{b['predicted_fraction']:.3f} / {b['measured']['median']:.3f}, x{b['macs_ratio']:.3f}"
                              for a, b in zip(lat["per_seed"], mac["per_seed"])) + "."]
    elif lat["widths"] == mac["widths"]:
        lines += ["", "The two selections keep the same widths, so the arms are one model. With a one-shot criterion "
                      "both arms remove a prefix of the same ranking and the budget only decides where it stops: at "
                      "equal predicted latency the two prefixes coincide by construction. Latency-aware selection can "
                      "only choose other channels through a search whose pressure is in latency units (a search "
                      "method) or a ranking that weighs each unit's cost."]
    lines += ["", f"Paired by seed, latency − MACs: {p['mean']:+.2f} ± {p['std']:.2f} (latency arm ahead on "
                  f"{p['latency_wins']} of {len(p['values'])} seeds). Unpruned time variation between rounds: "
                  f"{100 * result['timing']['unpruned_variation']:.1f}%{noisy}.", "", "Targets:", ""]
    lines += [f"- {name}: {'met' if ok else 'missed'}" for name, ok in result["targets"].items()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    _alloc.exec_with_allocator()
    sys.exit(main())
