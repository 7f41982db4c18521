#!/usr/bin/env python
"""Search the NATS-Bench topology space with RARTS / DARTS-1 / DARTS-2 / MiLeNAS and score the result.

Defaults are the benchmark's search setting (C=16, N=5, 100 epochs, batch 64, SGD lr 0.025 cosine to 0.001,
momentum 0.9, wd 5e-4, Adam 3e-4 (betas 0.5, 0.999, wd 1e-3) for alpha, 50/50 split of the training set).
Small ``--C/--N/--epochs/--train-subset`` make a CPU-sized proxy search.

Writes (under ``--out``): ``checkpoint.pt`` after every epoch (``--resume`` continues from it),
``alpha_history.png`` (softmax(alpha) per edge over the search), ``cell.png`` (the derived cell) and the
JSON result (``--json``, default ``<out>/result.json``): derived arch string, its benchmark accuracies
(``--table``), skip-connection ratio, search wall time, alpha history, per-epoch log, and the latency of the
derived cell when a latency table is used.

Under ``torchrun`` the search is data-parallel (``--batch-size`` stays the global batch; only rank 0 writes;
see ``docs/topology.md``).

Examples::

    python recipes/nats_search.py --method rarts --data ../shared/data/cifar10 \\
        --table ../shared/data/nats-bench/tss_test_accuracy_200ep.csv --json rarts.json
    torchrun --nproc_per_node 4 recipes/nats_search.py --method rarts --data ../shared/data/cifar10 \\
        --batch-size 256 --out runs/nats_rarts
    # CPU proxy: 8 channels, one cell per stage, 5k images, 10 epochs (5 of alpha warm-up)
    python recipes/nats_search.py --method rarts --data ../shared/data/cifar10 --C 8 --N 1 \\
        --train-subset 5000 --epochs 10 --warmup-epochs 5 --table ../shared/data/nats-bench/tss_test_accuracy_200ep.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rartsprune.app.launch import Ranks
from rartsprune.app.topology.reports import draw_cell, plot_alpha_history
from rartsprune.app.topology.runner import (
    add_search_arguments,
    config_from_arguments,
    latency_setup,
    load_search_data,
    run_search,
    run_search_recipe,
)
from rartsprune.topology import (
    NATS_PRIMITIVES,
    NatsSearchNetwork,
    arch_latency,
    lookup_nats,
    op_histogram,
    skip_ratio,
)
from rartsprune.topology.search import TopologySearch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="NATS-Bench topology search with a relaxed architecture-search optimizer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_search_arguments(p, epochs=100, weight_decay=5e-4, C=16)
    p.add_argument("--N", type=int, default=5, help="search cells per stage")
    p.add_argument("--ops", default=",".join(NATS_PRIMITIVES),
                   help="comma-separated candidate ops (a subset of the benchmark's five)")
    p.add_argument("--exclude-none", action="store_true",
                   help="derive the cell with the argmax over the ops other than none (the DARTS convention; "
                        "by default none is a candidate, as in the benchmark's own search code)")
    p.add_argument("--table", default=None, help="NATS-Bench accuracy CSV (tss_test_accuracy_200ep.csv)")
    p.add_argument("--out", default="runs/nats_search", help="directory for checkpoint and plots")
    return p


def _ops(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the search (data-parallel under ``torchrun``); every rank returns the result rank 0 writes."""
    return run_search_recipe(build_parser(), argv, search)


def search(args: argparse.Namespace, ranks: Ranks, device: torch.device) -> dict[str, Any]:
    """The search of parsed options on ``device``, as rank ``ranks.rank`` of ``ranks.world``."""
    out = Path(args.out)
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else out / "result.json"
    torch.manual_seed(args.seed)

    config = config_from_arguments(args)
    data = load_search_data(
        args.data,
        subset=args.train_subset,
        seed=args.seed,
        batch_size=args.batch_size,
        device=device,
        root=args.data_root,
        download=args.download,
        ranks=ranks,
    )
    net = NatsSearchNetwork(C=args.C, N=args.N, num_classes=data.num_classes, op_names=_ops(args.ops)).to(device)
    table, lat_shape, penalty = latency_setup(args, net, out, ranks)
    topology = TopologySearch(net, config, arch_penalty=penalty, steps_per_epoch=data.steps_per_epoch,
                              distributed=ranks.distributed)
    t0 = time.perf_counter()
    run_search(
        topology,
        data,
        checkpoint=out / "checkpoint.pt",
        resume=args.resume,
        progress=not args.no_progress,
        max_steps=args.max_steps,
        stop_after=args.stop_after,
        ranks=ranks,
    )
    arch = topology.derive(exclude_none=args.exclude_none)
    result: dict[str, Any] = {
        "method": args.method,
        "seed": args.seed,
        "data": args.data,
        "arch": arch,
        "exclude_none": args.exclude_none,
        "skip_ratio": skip_ratio(arch),
        "op_counts": op_histogram(arch),
        "search_seconds": topology.search_seconds,
        "wall_seconds_this_run": time.perf_counter() - t0,
        "epochs": topology.epoch,
        "finished": topology.done,
        "steps": sum(e["steps"] for e in topology.log),
        "C": args.C,
        "N": args.N,
        "train_subset": args.train_subset,
        "device": str(device),
        "config": config.to_dict(),
        "benchmark": None,
        "latency_ms": None,
        "op_names": list(net.op_names),
        "alpha_final": topology.history[-1]["alpha"],
        "alpha_history": topology.history,
        "log": topology.log,
    }
    if ranks.distributed:
        result["distributed"] = {"world_size": ranks.world}
    if args.table:
        result["benchmark"] = lookup_nats(arch, args.table).to_dict()
    if table is not None:
        result["latency_ms"] = arch_latency(net, table, arch, lat_shape)
        result["latency_device"] = table.device
    if not args.no_plots:
        plots = {"alpha_history": out / "alpha_history.png", "cell": out / "cell.png"}
        if ranks.main:
            plot_alpha_history(topology.history, net.op_names, plots["alpha_history"],
                               title=f"{args.method}: softmax(alpha) per edge")
            draw_cell(arch, plots["cell"], title=f"{args.method}: {arch}")
        result["plots"] = {k: str(v) for k, v in plots.items()}
    if not ranks.main:
        return result
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    summary = f"{args.method} seed {args.seed}: {arch} skip {result['skip_ratio']:.2f}"
    if result["benchmark"]:
        b = result["benchmark"]
        summary += f" | CIFAR-10 {b['cifar10_test']:.2f} CIFAR-100 {b['cifar100_test']:.2f}"
    if result["latency_ms"] is not None:
        summary += f" | latency {result['latency_ms']:.3f} ms"
    print(summary)
    print(f"wrote {json_path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
