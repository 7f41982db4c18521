#!/usr/bin/env python
"""Search the DARTS CNN cell space on CIFAR-10 with RARTS / DARTS-1 / DARTS-2 / MiLeNAS.

Defaults are DARTS' search setting: C=16, 8 cells, 50 epochs, batch 64, SGD lr 0.025 cosine to 0.001,
momentum 0.9, wd 3e-4, grad clip 5, Adam 3e-4 (betas 0.5, 0.999, wd 1e-3) for alpha, 50/50 split of the
training set. ``--latency-weight`` adds the latency penalty <softmax(alpha), Lat> (RARTS Eq. 5) from a per-op
table measured on this device (or loaded with ``--latency-table``).

Writes (under ``--out``): ``checkpoint.pt`` per epoch (``--resume``), ``alpha_history.png``,
``normal_cell.png``, ``reduce_cell.png``, ``genotype.json`` (input of ``recipes/darts_train.py``) and the
JSON result: genotype, skip-connection ratios, search wall time, alpha history, params and MACs of the
evaluation network (``--eval-C``/``--eval-layers``, default 36/20) and the latency of the derived cells.

Under ``torchrun`` the search is data-parallel (``--batch-size`` stays the global batch; only rank 0 writes;
see ``docs/topology.md``).

Example::

    python recipes/darts_search.py --method rarts --data ../shared/data/cifar10 --out runs/darts_rarts
    python recipes/darts_train.py --genotype runs/darts_rarts/genotype.json --data ../shared/data/cifar10
    torchrun --nproc_per_node 4 recipes/darts_search.py --method rarts --data ../shared/data/cifar10 \\
        --batch-size 256 --out runs/darts_rarts
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
from rartsprune.flops import flops_report
from rartsprune.topology import (
    DartsEvalNetwork,
    DartsGenotype,
    DartsSearchNetwork,
    arch_latency,
    skip_ratio,
)
from rartsprune.topology.search import TopologySearch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="DARTS CNN cell search with a relaxed architecture-search optimizer.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    add_search_arguments(p, epochs=50, weight_decay=3e-4, C=16)
    p.add_argument("--layers", type=int, default=8, help="cells of the search network")
    p.add_argument("--eval-C", type=int, default=36, help="channels of the evaluation network (params/MACs)")
    p.add_argument("--eval-layers", type=int, default=20, help="cells of the evaluation network")
    p.add_argument("--out", default="runs/darts_search", help="directory for checkpoint, plots, genotype")
    return p


def eval_cost(genotype: DartsGenotype, C: int, layers: int, num_classes: int) -> dict[str, Any]:
    """Params (with and without the auxiliary head) and MACs (one 32x32 image) of the evaluation network."""
    net = DartsEvalNetwork(genotype, C=C, layers=layers, num_classes=num_classes, auxiliary=True)
    aux = sum(p.numel() for p in net.auxiliary_head.parameters()) if net.auxiliary_head is not None else 0
    report = flops_report(net.eval(), torch.randn(1, 3, 32, 32))
    return {"params": report.params - aux, "params_with_aux": report.params, "macs": report.macs,
            "eval_C": C, "eval_layers": layers}


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
    net = DartsSearchNetwork(C=args.C, layers=args.layers, num_classes=data.num_classes).to(device)
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
    genotype = net.genotype()
    if ranks.main:
        (out / "genotype.json").write_text(json.dumps(genotype.to_dict(), indent=1))
    result: dict[str, Any] = {
        "method": args.method,
        "seed": args.seed,
        "data": args.data,
        "genotype": genotype.to_dict(),
        "skip_ratio": skip_ratio(genotype, "all"),
        "skip_ratio_normal": skip_ratio(genotype, "normal"),
        "skip_ratio_reduce": skip_ratio(genotype, "reduce"),
        "search_seconds": topology.search_seconds,
        "wall_seconds_this_run": time.perf_counter() - t0,
        "epochs": topology.epoch,
        "finished": topology.done,
        "steps": sum(e["steps"] for e in topology.log),
        "C": args.C,
        "layers": args.layers,
        "train_subset": args.train_subset,
        "device": str(device),
        "config": config.to_dict(),
        "latency_ms": None,
        "op_names": list(net.op_names),
        "alpha_final": topology.history[-1]["alpha"],
        "alpha_history": topology.history,
        "log": topology.log,
    }
    if ranks.distributed:
        result["distributed"] = {"world_size": ranks.world}
    result.update(eval_cost(genotype, args.eval_C, args.eval_layers, data.num_classes))
    if table is not None:
        result["latency_ms"] = arch_latency(net, table, genotype, lat_shape)
        result["latency_device"] = table.device
    if not args.no_plots:
        plots = {"alpha_history": out / "alpha_history.png", "normal_cell": out / "normal_cell.png",
                 "reduce_cell": out / "reduce_cell.png"}
        if ranks.main:
            plot_alpha_history(topology.history, net.op_names, plots["alpha_history"],
                               title=f"{args.method}: softmax(alpha) per edge")
            draw_cell(genotype, plots["normal_cell"], cell="normal")
            draw_cell(genotype, plots["reduce_cell"], cell="reduce")
        result["plots"] = {k: str(v) for k, v in plots.items()}
    if not ranks.main:
        return result
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    summary = (
        f"{args.method} seed {args.seed}: skip {result['skip_ratio_normal']:.2f} (normal) "
        f"params {result['params'] / 1e6:.2f}M MACs {result['macs'] / 1e6:.0f}M"
    )
    if result["latency_ms"] is not None:
        summary += f" latency {result['latency_ms']:.3f} ms"
    print(summary)
    print(f"wrote {json_path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
