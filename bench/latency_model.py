"""Predicted vs measured latency of models pruned to a latency budget (project issue 15: a speed-up you can trust).

For torchvision ResNet-50 and MobileNetV2 (random init, 224x224) at batch 1 and 32, one torch thread by default:

1. the per-layer width latency table (`rartsprune.width.latency.measure_width_latency`) is measured once per
   model, batch size, device and thread count, and cached under ``--table-dir`` (default ``runs/latency_tables/``;
   reloaded, and checked against the device, batch and input shape, when it exists);
2. the model is pruned to every latency budget (default 0.8, 0.6, 0.4 of its predicted latency) with a one-shot
   importance (``--method l1_norm`` or ``random``: the weights do not matter for speed) — the table predicts each
   pruned model's latency (``pruner.result["latency"]["predicted_ms_after"]``). A budget below the reachable
   minimum is recorded as skipped;
3. the unpruned model and every pruned one are timed in ``--rounds`` independent rounds (default 5), each in a
   fresh Python process: the unpruned model is built afresh from the seed, the pruned ones (pruned once, saved
   whole) are loaded afresh, and all run interleaved at each batch size in an order rotated every round, with
   ``bench/speedup.py``'s helpers; a round keeps each model's median over its repetitions;
4. per model / batch / variant: the ratio measured / predicted of every round, its median and spread (min–max)
   across rounds; the prediction meets the issue's target when |median ratio − 1| <= 10%. Also the measured
   fraction of the unpruned latency against the predicted one (what the budget promises), and the unpruned
   model's own ratio (how well the table's sum of layers and remainder matches the whole model). A model / batch
   whose unpruned time varies by more than 10% between rounds is flagged ``noisy``.

Writes ``bench/results/latency_model.json`` (settings, tables, predictions, every round's medians, the
aggregates) and ``latency_model.md``. ``--quick`` (the smoke test's settings: a tiny model at 32x32, batch 1,
2 rounds) writes to a temporary folder unless ``--out`` / ``--table-dir`` say otherwise, and never to
``bench/results/``.

    python bench/latency_model.py --threads 1                  # est. 30-60 min on one idle core
    python bench/latency_model.py --models mobilenet_v2 --batches 1 --budgets 0.6
    python bench/latency_model.py --device cuda
    python bench/latency_model.py --quick                      # seconds
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import re
import shutil
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
if str(Path(__file__).resolve().parent) not in sys.path:  # imported (by a test) rather than run as a script
    sys.path.append(str(Path(__file__).resolve().parent))

import _alloc  # noqa: E402  (bench/ is on sys.path)
import speedup  # noqa: E402
from _paths import portable  # noqa: E402

import rartsprune  # noqa: E402
from rartsprune.width import fit_measured_latency  # noqa: E402
from rartsprune.width.latency import WidthLatencyTable, allocator_settings, device_name, measure_width_latency  # noqa: E402

#: The issue's target: |measured / predicted - 1| <= 10% for every pruned model.
TARGET = 0.10
NOISE_LIMIT = speedup.NOISE_LIMIT
RESULTS = ROOT / "bench" / "results"
MODELS: dict[str, int] = {"resnet50": 224, "mobilenet_v2": 224, "tiny": 32}  # name -> input size
METHODS = ("l1_norm", "random")
#: Settings of a real run and of ``--quick`` (a value given on the command line wins over both).
REAL: dict[str, Any] = {"models": ["resnet50", "mobilenet_v2"], "batches": [1, 32], "budgets": [0.8, 0.6, 0.4],
                        "rounds": 5, "reps": 20, "table_warmup": 5, "table_repeats": 20}
QUICK: dict[str, Any] = {"models": ["tiny"], "batches": [1], "budgets": [0.9, 0.7], "rounds": 2, "reps": 3,
                         "table_warmup": 1, "table_repeats": 3}


def build_model(name: str) -> nn.Module:
    """A freshly initialised ``name`` (one of ``MODELS``; weights from the current torch seed).

    ``tiny`` is the smoke test's model: three 3x3 convolutions and a head, compute-bound at 32x32.
    """
    if name == "tiny":
        return nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10),
        )
    return speedup.build_model(name)


#: plain: layers timed alone; fused: with their BatchNorm and activation; fitted: the plain table with measured
#: points of pruned models (`rartsprune.width.fit_measured_latency`, timed in this process before the rounds)
TABLE_KINDS = ("plain", "fused", "fitted")


def _table_kinds(text: str) -> list[str]:
    kinds = [k for k in text.split(",") if k]
    bad = [k for k in kinds if k not in TABLE_KINDS]
    if bad or not kinds or len(set(kinds)) != len(kinds):
        raise argparse.ArgumentTypeError(f"expected a comma list of {' / '.join(TABLE_KINDS)} without repeats, got "
                                         f"{text!r}")
    return kinds


def variant_name(budget: float, table: str = "plain") -> str:
    """The variant's key in the results, e.g. ``latency=0.6`` (``fused latency=0.6`` with the fused table).

    Examples:
        >>> variant_name(0.6), variant_name(0.4, "fused")
        ('latency=0.6', 'fused latency=0.4')
    """
    return f"latency={budget:g}" if table == "plain" else f"{table} latency={budget:g}"


# --------------------------------------------------------------------------------------------------------------
# aggregation (pure: no timing, no torch)
# --------------------------------------------------------------------------------------------------------------


def aggregate(round_ms: Sequence[Mapping[str, float]], predicted: Mapping[str, float], *, target: float = TARGET,
              noise_limit: float = NOISE_LIMIT) -> dict[str, Any]:
    """Measured against predicted latency of one model at one batch size, across rounds.

    Args:
        round_ms: one mapping per round, ``round_ms[i][variant]`` = round ``i``'s median time (ms); every round
            holds the same variants, among them ``"unpruned"``.
        predicted: the predicted time (ms) of every variant (``"unpruned"``: the table's full prediction).
        target: the largest |median ratio − 1| that meets the target.
        noise_limit: an unpruned time varying by more than this between rounds (max / min − 1) is ``noisy``.

    Returns:
        ``{"variants", "noisy", "unpruned_variation"}``. Per variant: ``predicted_ms``, ``measured`` (median,
        min, max, spread of the per-round times), ``ratio`` (median, min, max and every round's measured /
        predicted), ``error`` (median ratio − 1), ``within_target``; pruned variants also the predicted and the
        measured fraction of the unpruned latency (median of the per-round fractions) and speed-up.

    Raises:
        ValueError: fewer than 2 rounds, rounds that disagree on the variants, no ``"unpruned"``, a missing
            prediction, or a time or prediction that is not a positive finite number.

    Examples:
        >>> agg = aggregate([{"unpruned": 10.0, "a": 6.0}, {"unpruned": 10.0, "a": 7.0}],
        ...                 {"unpruned": 10.0, "a": 6.0})
        >>> agg["variants"]["a"]["ratio"]["median"], agg["variants"]["a"]["within_target"]
        (1.0833333333333335, True)
    """
    if len(round_ms) < 2:
        raise ValueError(f"need at least 2 rounds to judge the spread, got {len(round_ms)}")
    variants = list(round_ms[0])
    if "unpruned" not in variants:
        raise ValueError(f"no 'unpruned' timing among the variants {variants}")
    for i, rnd in enumerate(round_ms):
        if set(rnd) != set(variants):
            raise ValueError(f"round {i + 1} has variants {sorted(rnd)}, round 1 has {sorted(variants)}")
        bad = [k for k, t in rnd.items() if not (isinstance(t, int | float) and math.isfinite(t) and t > 0)]
        if bad:
            raise ValueError(f"round {i + 1}: times of {bad} are not positive numbers")
    missing = [k for k in variants if not (isinstance(predicted.get(k), int | float) and predicted[k] > 0)]
    if missing:
        raise ValueError(f"no positive prediction for {missing}")
    out: dict[str, Any] = {}
    for k in variants:
        ratios = [rnd[k] / predicted[k] for rnd in round_ms]
        median = statistics.median(ratios)
        row = {"predicted_ms": predicted[k], "measured": speedup._spread([rnd[k] for rnd in round_ms]),
               "ratio": {"median": median, "min": min(ratios), "max": max(ratios), "rounds": ratios},
               "error": median - 1, "within_target": abs(median - 1) <= target}
        if k != "unpruned":
            fractions = [rnd[k] / rnd["unpruned"] for rnd in round_ms]
            row["predicted_fraction"] = predicted[k] / predicted["unpruned"]
            row["measured_fraction"] = statistics.median(fractions)
            row["predicted_speedup"] = predicted["unpruned"] / predicted[k]
            row["measured_speedup"] = statistics.median(1 / f for f in fractions)
        out[k] = row
    variation = out["unpruned"]["measured"]["spread"]
    return {"variants": out, "noisy": variation > noise_limit, "unpruned_variation": variation}


def summarize(rows: Sequence[Mapping[str, Any]], target: float = TARGET) -> dict[str, Any]:
    """How many pruned models meet the target, the worst |ratio − 1|, and whether any result is noisy.

    Examples:
        >>> summarize([{"variants": {"unpruned": {"error": 0.2}, "latency=0.6": {"error": -0.05}}, "noisy": False}])
        {'pruned_models': 1, 'within_target': 1, 'worst_error': 0.05, 'all_within_target': True, 'noisy': False}
    """
    errors = [abs(v["error"]) for r in rows for k, v in r["variants"].items() if k != "unpruned"]
    within = sum(e <= target for e in errors)
    return {"pruned_models": len(errors), "within_target": within, "worst_error": max(errors, default=float("nan")),
            "all_within_target": bool(errors) and within == len(errors), "noisy": any(r["noisy"] for r in rows)}


# --------------------------------------------------------------------------------------------------------------
# the tables and the pruned models (parent process)
# --------------------------------------------------------------------------------------------------------------


def table_file(table_dir: Path, model: str, batch: int, size: int, device: str, threads: int,
               allocator: Mapping[str, str] | None = None) -> Path:
    """Where the table of ``model`` at ``batch`` on ``device`` with ``threads`` torch threads (and, on a CPU, the
    allocator settings ``allocator``: `rartsprune.width.latency.allocator_settings`) is cached.

    Examples:
        >>> table_file(Path("t"), "resnet50", 32, 224, "cuda:0 (NVIDIA H200)", 1).name
        'resnet50_224px_b32_cuda-0-NVIDIA-H200_1t.json'
        >>> table_file(Path("t"), "resnet50", 1, 224, "cpu", 1, {"MALLOC_TOP_PAD_": "1"}).name
        'resnet50_224px_b1_cpu_1t_heap-23e8.json'
    """
    slug = re.sub(r"[^A-Za-z0-9]+", "-", device).strip("-")
    heap = ""
    if allocator:
        heap = "_heap-" + hashlib.sha1(json.dumps(sorted(allocator.items())).encode()).hexdigest()[:4]
    return table_dir / f"{model}_{size}px_b{batch}_{slug}_{threads}t{heap}.json"


def load_or_measure_table(model: nn.Module, x: torch.Tensor, path: Path, batch: int, *, warmup: int,
                          repeats: int, fuse: bool = False) -> tuple[WidthLatencyTable, str]:
    """The cached table at ``path`` (checked against the device, batch size and input shape), or a new one
    measured and saved there; returns it and ``"loaded"`` / ``"measured"``."""
    device = device_name(x.device)
    if path.exists():
        table = WidthLatencyTable.load(path)
        table.check(device=device, batch=batch, input_shape=[batch, *x.shape[1:]], source=f"latency table {path}",
                    allocator=allocator_settings() if x.device.type == "cpu" else None)
        return table, "loaded"
    table = measure_width_latency(model, x, batch=batch, warmup=warmup, repeats=repeats, fuse=fuse)
    table.save(path)
    return table, "measured"


def prune_to(model: nn.Module, x: torch.Tensor, budget: float, batch: int, table: Path, *, method: str,
             round_to: int | str | None, seed: int) -> tuple[nn.Module | None, dict[str, Any]]:
    """A pruned copy of ``model`` at the latency ``budget`` (eval mode) and what the pruner predicted; ``None``
    and the reason when the budget is below the reachable minimum."""
    pruned = copy.deepcopy(model)
    try:
        pruner = rartsprune.prune(pruned, latency=budget, latency_batch=batch, latency_table=str(table),
                                  method=method, example_inputs=x, round_to=round_to, seed=seed)
    except ValueError as exc:
        if "reachable minimum" not in str(exc):
            raise
        return None, {"budget": budget, "skipped": str(exc)}
    pruned = pruner.finalize().eval()
    res = pruner.result
    # a fitted table's budget is a measured fraction: its prediction is what the points expect the clock to say,
    # that fraction of the unpruned model's measured latency
    lat = res["latency"]
    if "expected_measured_fraction" in lat:
        frac, predicted_ms = lat["expected_measured_fraction"], lat["expected_measured_fraction"] * lat["measured_ms_before"]
    else:
        frac, predicted_ms = lat["predicted_fraction"], lat["predicted_ms_after"]
    return pruned, {"budget": budget, "predicted_ms": predicted_ms,
                    "predicted_fraction": frac, "table_fraction": res["latency"]["predicted_fraction"],
                    "round_to": res["round_to"],
                    "prc": res["prc"], "params": res["params_after"], "fingerprint": speedup.fingerprint(pruned)}


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Tables, pruned models (saved whole under ``work``) and predictions of every model and batch size."""
    device = torch.device(args.device)
    models: dict[str, Any] = {}
    for name in args.models:
        size = MODELS[name]
        torch.manual_seed(args.seed)
        model = build_model(name).to(device).eval()
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(args.seed)).to(device)
        entry: dict[str, Any] = {"input": size, "unpruned_fingerprint": speedup.fingerprint(model), "batches": {}}
        for b in args.batches:
            variants: dict[str, Any] = {}
            tables: dict[str, Any] = {}
            for kind in args.tables:
                path = table_file(args.table_dir, name, b, size, device_name(device), args.threads,
                                  allocator_settings() if device.type == "cpu" else None)
                plain = path
                if kind != "plain":
                    path = path.with_name(f"{path.stem}_{kind}{path.suffix}")
                if kind == "fitted" and not path.exists():
                    load_or_measure_table(model, x, plain, b, warmup=args.table_warmup, repeats=args.table_repeats)
                    shutil.copy(plain, path)
                    print(f"{name} batch {b}: fitting {portable(path)} to {args.fit_passes} pass(es) of pruned models "
                          f"at {args.budgets}", flush=True)
                    fit_measured_latency(model, path, x, budgets=args.budgets, passes=args.fit_passes,
                                         rounds=args.fit_rounds, repeats=speedup.reps_at(b, args.reps),
                                         method=args.method, round_to=None if args.round_to == "auto" else args.round_to)
                table, status = load_or_measure_table(model, x, path, b, warmup=args.table_warmup,
                                                      repeats=args.table_repeats, fuse=kind == "fused")
                print(f"{name} batch {b}: {kind} table {status} ({portable(path)}), predicted {table.full_ms:.2f} ms",
                      flush=True)
                tables[kind] = {"path": portable(path), "status": status, "device": table.device,
                                "measured_points": table.measured,
                                "full_ms": table.full_ms, "whole_ms": table.whole_ms, "rest_ms": table.rest_ms,
                                "meta": table.meta}
                for budget in args.budgets:
                    key = variant_name(budget, kind)
                    pruned, info = prune_to(model, x, budget, b, path, method=args.method, round_to=args.round_to,
                                            seed=args.seed)
                    if pruned is not None:
                        info["file"] = str(work / f"{name}_b{b}_{key.replace(' ', '_')}.pt")
                        torch.save(pruned, info["file"])
                    variants[key] = info
            entry["batches"][str(b)] = {"table": tables[args.tables[0]], "tables": tables, "variants": variants}
        models[name] = entry
    return models


# --------------------------------------------------------------------------------------------------------------
# one round (runs in its own process)
# --------------------------------------------------------------------------------------------------------------


def run_round(spec: Mapping[str, Any], index: int) -> dict[str, Any]:
    """One round in this process: the unpruned models built afresh, the pruned ones loaded afresh, all timed."""
    torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    out: dict[str, Any] = {}
    for name, entry in spec["models"].items():
        size = entry["input"]
        torch.manual_seed(spec["seed"])
        unpruned = build_model(name).to(device).eval()
        gen = torch.Generator().manual_seed(spec["seed"])
        out[name] = {"unpruned_fingerprint": speedup.fingerprint(unpruned), "batches": {}}
        for b, files in entry["batches"].items():
            variants = {"unpruned": unpruned}
            for key, file in files.items():  # our own files, written by the parent process of this run
                variants[key] = torch.load(file, weights_only=False, map_location=device).eval()
            x = torch.randn(int(b), 3, size, size, generator=gen).to(device)
            n = speedup.reps_at(int(b), spec["reps"])
            order = speedup.rotated(list(variants), index)
            times = speedup.time_interleaved(variants, x, n, order, device)
            out[name]["batches"][b] = {
                "reps": n, "order": order, "median_ms": {k: statistics.median(v) for k, v in times.items()},
                "fingerprint": {k: speedup.fingerprint(m) for k, m in variants.items() if k != "unpruned"}}
    return {"round": index + 1, "pid": os.getpid(), "device": speedup.device_name(device, False), "models": out}


def _round_in_subprocess(spec_path: Path, index: int, work: Path, threads: int) -> dict[str, Any]:
    path = work / f"round{index + 1}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one-round", str(path), "--round-index", str(index),
           "--spec", str(spec_path)]
    return speedup.run_child(cmd, path, threads, f"round {index + 1}")


# --------------------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------------------


def combine(prepared: Mapping[str, Any], rounds: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per model and batch size from the predictions and the rounds' medians, via `aggregate`.

    Raises:
        RuntimeError: a round timed other weights than the parent pruned (the seeding or the files are broken).
    """
    rows = []
    for name, entry in prepared.items():
        for b, batch in entry["batches"].items():
            timed = {k: v for k, v in batch["variants"].items() if "predicted_ms" in v}
            for rnd in rounds:
                got = rnd["models"][name]
                want = {k: v["fingerprint"] for k, v in timed.items()}
                if got["unpruned_fingerprint"] != entry["unpruned_fingerprint"] or got["batches"][b]["fingerprint"] != want:
                    raise RuntimeError(f"round {rnd['round']} timed other weights of {name} (batch {b}) than were pruned")
            predicted = {"unpruned": batch["table"]["full_ms"], **{k: v["predicted_ms"] for k, v in timed.items()}}
            agg = aggregate([rnd["models"][name]["batches"][b]["median_ms"] for rnd in rounds], predicted)
            for k, v in agg["variants"].items():
                if k != "unpruned":  # the fraction of the unpruned latency that the variant's own table predicts
                    v.update({f: timed[k][f] for f in ("budget", "round_to", "prc", "params", "predicted_fraction")})
                    v["predicted_speedup"] = 1.0 / v["predicted_fraction"]
            skipped = {k: v["skipped"] for k, v in batch["variants"].items() if "skipped" in v}
            rows.append({"model": name, "input": entry["input"], "batch": int(b), "table": batch["table"],
                         "reps": rounds[0]["models"][name]["batches"][b]["reps"], "skipped": skipped, **agg})
    return rows


def render_markdown(result: Mapping[str, Any]) -> str:
    """The markdown report: protocol, noise warnings, the table of predicted vs measured, the verdict."""
    s, summary = result["settings"], result["summary"]
    lines = [f"# Predicted vs measured latency of pruned models ({result['device']})", "",
             f"Latency budgets {', '.join(f'{b:g}' for b in s['budgets'])} of the predicted latency, {s['method']} "
             f"importance, round_to={s['round_to']}, random weights. Per model and batch size the per-layer width "
             "latency table predicts every pruned model's latency; every model is then timed in "
             f"{s['rounds']} rounds, each in a fresh process (unpruned built afresh, pruned models loaded afresh, "
             f"interleaved, {s['reps']} repetitions at batch 1 and a quarter of it above, median per round). "
             "**ratio** = measured / predicted: the median across rounds and its min–max; the target is "
             f"|ratio − 1| <= {100 * result['target']:.0f}% for every pruned model. **fraction**: of the unpruned "
             "latency, predicted vs measured (median across rounds). The unpruned rows show how well the table's "
             "sum of layers plus remainder predicts the whole model."
             + (" A *fitted* table is the plain one with measured points of pruned models "
                "(`rartsprune.width.fit_measured_latency`, timed in the parent process before the rounds): its "
                "budget is a fraction of the measured latency and its prediction is what the points expect the "
                "clock to say." if "fitted" in s.get("tables", ["plain"]) else ""), ""]
    lines += speedup.noise_warnings([(r["model"], r["batch"], r["unpruned_variation"]) for r in result["rows"]
                                     if r["noisy"]])
    lines += ["| model | batch | variant | predicted ms | measured ms (median) | spread across rounds | ratio (median) | "
              "ratio min–max | within target | fraction predicted | fraction measured |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        for k, v in r["variants"].items():
            m, ratio = v["measured"], v["ratio"]
            frac = (f"{v['predicted_fraction']:.2f} | {v['measured_fraction']:.2f}" if k != "unpruned" else "1 | 1")
            lines.append(f"| {r['model']} | {r['batch']} | {k} | {v['predicted_ms']:.2f} | {m['median_ms']:.2f} | "
                         f"{speedup.format_spread(m, 2)} | {ratio['median']:.3f} | "
                         f"{ratio['min']:.3f}–{ratio['max']:.3f} | {'yes' if v['within_target'] else '**no**'} | "
                         f"{frac} |")
        for k in r["skipped"]:
            lines.append(f"| {r['model']} | {r['batch']} | {k} | skipped: below the reachable minimum | | | | | | | |")
    verdict = "meet" if summary["all_within_target"] else "do not all meet"
    lines += ["", f"{summary['within_target']} of {summary['pruned_models']} pruned models within "
              f"{100 * result['target']:.0f}% of their prediction (worst |ratio − 1| = "
              f"{100 * summary['worst_error']:.1f}%): the predictions {verdict} the target"
              + (" — noisy: rerun on an idle machine." if summary["noisy"] else "."), ""]
    kinds = s.get("tables", ["plain"])
    if len(kinds) > 1:  # the tables side by side: how many of each one's pruned models met the target
        for kind in kinds:
            mine = [(v["within_target"], abs(v["ratio"]["median"] - 1)) for r in result["rows"]
                    for k, v in r["variants"].items() if k != "unpruned" and (k.split(" ")[0] if " " in k else "plain") == kind]
            if mine:
                lines.append(f"- {kind} table: {sum(w for w, _ in mine)} of {len(mine)} within "
                             f"{100 * result['target']:.0f}% (worst |ratio − 1| = {100 * max(e for _, e in mine):.1f}%)")
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------


def _budgets(text: str) -> list[float]:
    try:
        values = [float(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma list of numbers: {text!r}") from None
    bad = [v for v in values if not 0 < v < 1]
    if bad:
        raise argparse.ArgumentTypeError(f"budgets must lie strictly between 0 and 1, got {bad}")
    return values


def _round_to(text: str) -> int | str | None:
    t = text.strip().lower()
    return None if t == "none" else "auto" if t == "auto" else speedup._positive_int(t)


def _inside(path: Path, folder: Path) -> bool:
    return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, validated; ``--quick`` / real defaults filled in (bad values end with the usage)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=speedup.model_list(list(MODELS)), default=None,
                    help=f"comma list of {', '.join(MODELS)} (default resnet50,mobilenet_v2)")
    ap.add_argument("--batches", type=speedup._int_list, default=None, help="comma list (default 1,32)")
    ap.add_argument("--allocator", choices=_alloc.CHOICES, default="retain",
                    help="retain: run with glibc's heap kept in the process (bench/_alloc.py; the default: timings "
                         "otherwise swing with page faults); system: the environment as it is")
    ap.add_argument("--budgets", type=_budgets, default=None,
                    help="latency budgets, fractions of the predicted latency (default 0.8,0.6,0.4)")
    ap.add_argument("--method", choices=METHODS, default="l1_norm", help="one-shot importance of the selection")
    ap.add_argument("--round-to", type=_round_to, default=None,
                    help="the surgery's rounding: none (default), a positive integer or auto")
    ap.add_argument("--rounds", type=int, default=None, help="independent rounds in fresh processes (default 5, >= 2)")
    ap.add_argument("--reps", type=speedup._positive_int, default=None,
                    help="timed repetitions per round at batch 1 (a quarter of it at larger batches, at least 3; "
                         "default 20)")
    ap.add_argument("--table-warmup", type=int, default=None, help="untimed runs per table sample (default 5)")
    ap.add_argument("--table-repeats", type=speedup._positive_int, default=None,
                    help="timed runs per table sample, their median is kept (default 20)")
    ap.add_argument("--tables", type=_table_kinds, default=["plain"],
                    help="comma list of latency tables to prune with, side by side in the same rounds: plain (each "
                         "layer timed alone, the default) and fused (each layer timed with the BatchNorm and "
                         "activation that consume its output: measure_width_latency(fuse=True)) and fitted (the "
                         "plain table with measured points of models pruned to --budgets, timed here before the "
                         "rounds: rartsprune.width.fit_measured_latency; its budgets are measured fractions)")
    ap.add_argument("--fit-passes", type=speedup._positive_int, default=2, help="fitted table: passes of the fit")
    ap.add_argument("--fit-rounds", type=speedup._positive_int, default=3,
                    help="fitted table: interleaved timing rounds per fitted model")
    ap.add_argument("--threads", type=speedup._positive_int, default=1, help="torch threads everywhere (default 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0, help="weights and inputs: the same in every round")
    ap.add_argument("--table-dir", type=Path, default=None,
                    help="cache of the latency tables (default runs/latency_tables; with --quick a temporary folder)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON results, the markdown next to it (default bench/results/latency_model.json; with "
                         "--quick a temporary folder)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke-test settings: tiny model at 32x32, batch 1, budgets 0.9,0.7, 2 rounds, 3 repetitions")
    ap.add_argument("--one-round", type=Path, default=None, help=argparse.SUPPRESS)  # internal: a round's JSON
    ap.add_argument("--round-index", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--spec", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one_round is not None:
        return args
    defaults = QUICK if args.quick else REAL
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.rounds < 2:
        ap.error(f"--rounds must be at least 2 (got {args.rounds}): one round shows no spread")
    if args.table_warmup < 0:
        ap.error(f"--table-warmup must be >= 0, got {args.table_warmup}")
    for name in ("models", "batches", "budgets"):
        if len(set(getattr(args, name))) != len(getattr(args, name)):
            ap.error(f"--{name} must not repeat a value")
    small = args.quick or "tiny" in args.models
    if args.out is None:
        args.out = (Path(tempfile.mkdtemp(prefix="latency-model-")) / "latency_model.json" if small
                    else RESULTS / "latency_model.json")
    elif small and _inside(args.out, RESULTS):
        ap.error("--quick and the tiny model are smoke tests, not results: give an --out outside bench/results/")
    if args.table_dir is None:
        args.table_dir = (args.out.parent / "tables" if small else ROOT / "runs" / "latency_tables")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one_round is not None:  # child process: one round, JSON to the given file
        spec = json.loads(args.spec.read_text())
        args.one_round.write_text(json.dumps(run_round(spec, args.round_index)))
        return 0
    torch.set_num_threads(args.threads)
    args.table_dir.mkdir(parents=True, exist_ok=True)
    rounds = []
    with tempfile.TemporaryDirectory(prefix="latency-model-rounds-") as tmp:
        work = Path(tmp)
        prepared = prepare(args, work)
        spec = {"device": args.device, "seed": args.seed, "reps": args.reps, "threads": args.threads,
                "models": {name: {"input": e["input"],
                                  "batches": {b: {k: v["file"] for k, v in d["variants"].items() if "file" in v}
                                              for b, d in e["batches"].items()}}
                           for name, e in prepared.items()}}
        spec_path = work / "spec.json"
        spec_path.write_text(json.dumps(spec))
        for i in range(args.rounds):
            rounds.append(_round_in_subprocess(spec_path, i, work, args.threads))
            print(f"round {i + 1}/{args.rounds} done in {rounds[-1]['seconds']:.0f} s", flush=True)
    rows = combine(prepared, rounds)
    settings = {"models": args.models, "batches": args.batches, "budgets": args.budgets, "method": args.method,
                "round_to": args.round_to, "tables": args.tables, "rounds": args.rounds, "reps": args.reps, "table_warmup": args.table_warmup,
                "table_repeats": args.table_repeats, "threads": args.threads, "device": args.device,
                "seed": args.seed, "quick": args.quick, "table_dir": portable(args.table_dir),
                "out": portable(args.out), "allocator": args.allocator, "allocator_env": allocator_settings()}
    for entry in prepared.values():  # the temporary files are gone
        for batch in entry["batches"].values():
            for v in batch["variants"].values():
                v.pop("file", None)
    result = {"device": rounds[0]["device"], "torch": torch.__version__, "target": TARGET, "noise_limit": NOISE_LIMIT,
              "settings": settings, "summary": summarize(rows), "rows": rows, "predictions": prepared,
              "rounds": rounds}
    text = render_markdown(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(text)
    print(text)
    print(f"written: {portable(args.out)} and {portable(args.out.with_suffix('.md'))}")
    return 0


if __name__ == "__main__":
    _alloc.exec_with_allocator()
    sys.exit(main())
