#!/usr/bin/env python
"""Train a DARTS genotype from scratch with the DARTS CIFAR-10 evaluation protocol.

Defaults: 20 cells, C=36, auxiliary head (weight 0.4), cutout 16, drop-path 0.2 (ramped linearly over the
epochs), 600 epochs, batch 96, SGD lr 0.025 cosine to 0, momentum 0.9, wd 3e-4, grad clip 5.

``--genotype`` is a JSON file (``genotype.json`` or the ``result.json`` of ``recipes/darts_search.py``) or the
name ``DARTS_V2`` (the published DARTS cell). Writes ``checkpoint.pt`` per epoch under ``--out``
(``--resume`` continues), a learning-curve plot and the JSON result: genotype, params (without the
auxiliary head, as DARTS reports them), MACs of one 32x32 image, per-epoch train/test loss and accuracy,
final and best test accuracy.

Example::

    python recipes/darts_train.py --genotype runs/darts_rarts/genotype.json --data ../shared/data/cifar10
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rartsprune.data import default_augment, load_dataset, make_loader, num_classes, to_device_batch
from rartsprune.flops import flops_report
from rartsprune.topology import (
    DARTS_V2,
    DartsEvalNetwork,
    DartsGenotype,
    DartsTrainConfig,
    evaluate,
    train_epoch,
)
from rartsprune.topology.runner import resolve_device


def build_parser() -> argparse.ArgumentParser:
    d = DartsTrainConfig()
    p = argparse.ArgumentParser(
        description="Train a DARTS genotype with the DARTS evaluation protocol.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--genotype", default="DARTS_V2", help="genotype JSON file, or DARTS_V2")
    p.add_argument("--data", default="cifar10", help="cifar10 | cifar100 | fake | ImageFolder path")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--lr-min", type=float, default=d.lr_min)
    p.add_argument("--momentum", type=float, default=d.momentum)
    p.add_argument("--weight-decay", type=float, default=d.weight_decay)
    p.add_argument("--C", type=int, default=d.C, help="initial channels")
    p.add_argument("--layers", type=int, default=d.layers, help="cells")
    p.add_argument("--no-auxiliary", action="store_true", help="drop the auxiliary head")
    p.add_argument("--auxiliary-weight", type=float, default=d.auxiliary_weight)
    p.add_argument("--drop-path", type=float, default=d.drop_path_prob, help="final drop-path probability")
    p.add_argument("--cutout", type=int, default=d.cutout, help="cutout length (0: off)")
    p.add_argument("--grad-clip", type=float, default=d.grad_clip, help="0: off")
    p.add_argument("--train-subset", type=int, default=None)
    p.add_argument("--test-subset", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default="runs/darts_train")
    p.add_argument("--json", default=None, help="result JSON (default: <out>/result.json)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--max-steps", type=int, default=None, help="cap steps per epoch (smoke tests)")
    p.add_argument("--stop-after", type=int, default=None, help="stop after this epoch (resume later)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    return p


def load_genotype(spec: str) -> DartsGenotype:
    """``DARTS_V2`` or a JSON file holding a genotype dict (or a search result with a ``genotype`` key)."""
    if spec == "DARTS_V2":
        return DARTS_V2
    path = Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"genotype file not found: {path} (or pass DARTS_V2)")
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "genotype" in data:
        data = data["genotype"]
    return DartsGenotype.from_dict(data)


def _batches(loader: Any, device: torch.device, augment: Any, max_steps: int | None):
    for i, batch in enumerate(loader):
        if max_steps is not None and i >= max_steps:
            break
        yield to_device_batch(batch, device, augment)


def _plot(log: list[dict[str, Any]], path: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [e["epoch"] for e in log]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(ep, [e["train_accuracy"] for e in log], label="train")
    ax.plot(ep, [e["test_accuracy"] for e in log], label="test")
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return str(path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    from tqdm.auto import tqdm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else out / "result.json"
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    genotype = load_genotype(args.genotype)
    config = DartsTrainConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_min=args.lr_min, momentum=args.momentum,
        weight_decay=args.weight_decay, C=args.C, layers=args.layers, auxiliary=not args.no_auxiliary,
        auxiliary_weight=args.auxiliary_weight, drop_path_prob=args.drop_path, cutout=args.cutout,
        grad_clip=args.grad_clip,
    )
    train = load_dataset(args.data, "train", root=args.data_root, download=args.download,
                         subset=args.train_subset, seed=args.seed)
    test = load_dataset(args.data, "test", root=args.data_root, download=args.download,
                        subset=args.test_subset, seed=args.seed)
    n_cls = num_classes(train)
    aug_train = default_augment(train, train=True, cutout=config.cutout > 0,
                                cutout_length=max(config.cutout, 1)).to(device)
    aug_test = default_augment(test, train=False).to(device)

    net = DartsEvalNetwork(genotype, C=config.C, layers=config.layers, num_classes=n_cls,
                           auxiliary=config.auxiliary).to(device)
    aux_params = sum(p.numel() for p in net.auxiliary_head.parameters()) if net.auxiliary_head is not None else 0
    report = flops_report(net, torch.randn(1, 3, 32, 32, device=device))
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs, eta_min=config.lr_min)
    epoch, log, seconds = 0, [], 0.0
    ckpt = out / "checkpoint.pt"
    if args.resume and ckpt.is_file():
        state = torch.load(ckpt, map_location=device, weights_only=True)
        if state["config"] != config.to_dict() or state["genotype"] != genotype.to_dict():
            raise SystemExit(f"{ckpt} was written for another genotype or configuration; remove it or drop --resume")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, log, seconds = int(state["epoch"]), list(state["log"]), float(state["seconds"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        tqdm.write(f"resumed from {ckpt} after epoch {epoch}")

    while epoch < config.epochs and (args.stop_after is None or epoch < args.stop_after):
        net.drop_path_prob = config.drop_path_prob * epoch / config.epochs
        t0 = time.perf_counter()
        loader = make_loader(train, config.batch_size, train=True, seed=args.seed * 100_003 + epoch,
                             num_workers=0 if getattr(train, "in_memory", False) else None)
        steps = len(loader) if args.max_steps is None else min(len(loader), args.max_steps)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", disable=args.no_progress, leave=False)
        tr = train_epoch(net, _batches(loader, device, aug_train, args.max_steps), optimizer,
                         auxiliary_weight=config.auxiliary_weight if config.auxiliary else 0.0,
                         grad_clip=config.grad_clip if config.grad_clip > 0 else None,
                         on_step=lambda _loss, bar=bar: bar.update(1))
        bar.close()
        scheduler.step()
        te = evaluate(net, _batches(make_loader(test, 256, train=False, num_workers=0 if getattr(
            test, "in_memory", False) else None), device, aug_test, None))
        seconds += time.perf_counter() - t0
        epoch += 1
        log.append({"epoch": epoch, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                    "test_loss": te["loss"], "test_accuracy": te["accuracy"],
                    "lr": optimizer.param_groups[0]["lr"], "drop_path": net.drop_path_prob})
        state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                 "epoch": epoch, "log": log, "seconds": seconds, "config": config.to_dict(),
                 "genotype": genotype.to_dict(), "rng_cpu": torch.get_rng_state()}
        tmp = ckpt.with_name(ckpt.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, ckpt)
        if not args.no_progress:
            tqdm.write(f"epoch {epoch}: train {tr['accuracy']:.2f}% test {te['accuracy']:.2f}% "
                       f"loss {tr['loss']:.3f} ({time.perf_counter() - t0:.0f}s)")

    result: dict[str, Any] = {
        "genotype": genotype.to_dict(),
        "data": args.data,
        "seed": args.seed,
        "config": config.to_dict(),
        "params": report.params - aux_params,
        "params_with_aux": report.params,
        "macs": report.macs,
        "epochs": epoch,
        "finished": epoch >= config.epochs,
        "train_seconds": seconds,
        "test_accuracy": log[-1]["test_accuracy"] if log else None,
        "best_test_accuracy": max(e["test_accuracy"] for e in log) if log else None,
        "log": log,
        "device": str(device),
    }
    if log and not args.no_plots:
        result["plots"] = {"curve": _plot(log, out / "curve.png")}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    print(f"params {result['params'] / 1e6:.2f}M MACs {result['macs'] / 1e6:.0f}M "
          f"test accuracy {result['test_accuracy']}")
    print(f"wrote {json_path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
