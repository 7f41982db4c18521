#!/usr/bin/env python
"""Train a DARTS genotype from scratch with the DARTS evaluation protocol (CIFAR, or ImageNet with --imagenet).

CIFAR defaults: 20 cells, C=36, auxiliary head (weight 0.4), cutout 16, drop-path 0.2 (ramped linearly over
the epochs), 600 epochs, batch 96, SGD lr 0.025 cosine to 0, momentum 0.9, wd 3e-4, grad clip 5.

``--imagenet``: DARTS's mobile setting on any ImageFolder tree with ``train/`` and ``val/`` (or ``test/``)
class folders (`rartsprune.topology.DartsImageNetNetwork`): 14 cells, C=48, two stride-2 stems, auxiliary
head (weight 0.4), label smoothing 0.1, 250 epochs, batch 128, SGD lr 0.1 multiplied by 0.97 every epoch,
momentum 0.9, wd 3e-5, grad clip 5, no drop-path or cutout; images streamed from disk with
RandomResizedCrop 224, flip and colour jitter 0.4 (val: resize 256, centre crop 224). ``--image-size``
shrinks the images (a multiple of 32; the auxiliary head needs 224, else pass ``--no-auxiliary``).
Every hyper-parameter flag overrides the default of the chosen protocol.

``--genotype`` is a JSON file (``genotype.json`` or the ``result.json`` of ``recipes/darts_search.py``) or the
name ``DARTS_V2`` (the published DARTS cell). Writes ``checkpoint.pt`` per epoch under ``--out``
(``--resume`` continues), a learning-curve plot and the JSON result: genotype, params (without the
auxiliary head, as DARTS reports them), MACs of one image (32x32, or ``--image-size`` with ``--imagenet``),
per-epoch train/test loss and accuracy, final and best test accuracy.

Under ``torchrun`` the training is data-parallel: ``--batch-size`` stays the global batch, each rank trains on
its part of every seeded batch in DistributedDataParallel (augmentation and drop-path drawn for the whole
batch), the test set is split between the ranks and the counts summed, BatchNorm statistics are rank 0's
before every test; only rank 0 writes files and shows progress; ``--resume`` reads rank 0's checkpoint on
every rank (see ``docs/topology.md``).

Examples::

    python recipes/darts_train.py --genotype runs/darts_rarts/genotype.json --data ../shared/data/cifar10
    python recipes/darts_train.py --imagenet --genotype DARTS_V2 --data /data/imagenet --out runs/dt_imagenet
    torchrun --nproc_per_node 4 recipes/darts_train.py --imagenet --genotype DARTS_V2 --data /data/imagenet \\
        --batch-size 512 --out runs/dt_imagenet
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

from rartsprune.app.data import default_augment, load_dataset, make_loader, num_classes, to_device_batch
from rartsprune.app.data.augment import Shard
from rartsprune.app.data.imagenet import darts_imagenet_dataset, imagenet_split_dir
from rartsprune.app.launch import (
    Ranks,
    agree,
    barrier,
    check_batch_split,
    launch_ranks,
    same_as_rank0,
    share_rng_from_rank0,
)
from rartsprune.app.loop import atomic_save
from rartsprune.app.topology.runner import search_launch
from rartsprune.app.topology.train import WithAux, eval_share, evaluate_shares, train_epoch
from rartsprune.flops import flops_report
from rartsprune.optim import distributed as ddp
from rartsprune.split import epoch_seed
from rartsprune.topology import (
    DARTS_V2,
    DartsEvalNetwork,
    DartsGenotype,
    DartsImageNetNetwork,
    DartsImageNetTrainConfig,
    DartsTrainConfig,
)
from rartsprune.topology.imagenet import IMAGENET_MIN_AUX_SIZE

#: flag dest -> config field, for the hyper-parameters whose default depends on the protocol
_CONFIG_FLAGS = {
    "epochs": "epochs", "batch_size": "batch_size", "lr": "lr", "lr_min": "lr_min", "momentum": "momentum",
    "weight_decay": "weight_decay", "C": "C", "layers": "layers", "auxiliary_weight": "auxiliary_weight",
    "drop_path": "drop_path_prob", "cutout": "cutout", "grad_clip": "grad_clip",
}
#: flags of the ImageNet protocol only
_IMAGENET_FLAGS = {"label_smoothing": "label_smoothing", "lr_gamma": "lr_gamma", "image_size": "image_size"}


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Show ``(default: ...)`` except for flags whose default depends on --imagenet (their help says it)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    cifar, imnet = DartsTrainConfig(), DartsImageNetTrainConfig()
    p = argparse.ArgumentParser(
        description="Train a DARTS genotype with the DARTS evaluation protocol (CIFAR, or ImageNet with --imagenet).",
        formatter_class=_HelpFormatter,
    )

    def hyper(flag: str, kind: type, text: str, *aliases: str) -> None:
        dest = flag[2:].replace("-", "_")
        field = _CONFIG_FLAGS[dest]
        p.add_argument(flag, *aliases, dest=dest, type=kind, default=None,
                       help=f"{text} (default {getattr(cifar, field)}; --imagenet: {getattr(imnet, field)})")

    p.add_argument("--genotype", default="DARTS_V2", help="genotype JSON file, or DARTS_V2")
    p.add_argument("--imagenet", action="store_true",
                   help="DARTS's ImageNet mobile setting on --data, an ImageFolder with train/ and val/ (or test/)")
    p.add_argument("--data", default="cifar10", help="cifar10 | cifar100 | fake | ImageFolder path")
    p.add_argument("--data-root", default=None)
    p.add_argument("--download", action="store_true")
    hyper("--epochs", int, "epochs")
    hyper("--batch-size", int, "batch size")
    hyper("--lr", float, "initial learning rate")
    hyper("--lr-min", float, "final learning rate of the cosine schedule (CIFAR)")
    hyper("--momentum", float, "SGD momentum")
    hyper("--weight-decay", float, "weight decay")
    hyper("--C", int, "initial channels", "--init-channels")
    hyper("--layers", int, "cells")
    p.add_argument("--no-auxiliary", action="store_true", help="drop the auxiliary head")
    hyper("--auxiliary-weight", float, "weight of the auxiliary loss")
    hyper("--drop-path", float, "final drop-path probability")
    hyper("--cutout", int, "cutout length (0: off)")
    hyper("--grad-clip", float, "gradient-norm clip (0: off)")
    p.add_argument("--label-smoothing", type=float, default=None,
                   help=f"--imagenet only: label smoothing of both losses (default {imnet.label_smoothing})")
    p.add_argument("--lr-gamma", type=float, default=None,
                   help=f"--imagenet only: lr factor per epoch (StepLR step 1; default {imnet.lr_gamma})")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"--imagenet only: crop size, a multiple of 32 (default {imnet.image_size})")
    p.add_argument("--workers", type=int, default=None, help="data-loading processes of --imagenet (default: CPUs, <= 8)")
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


def make_config(args: argparse.Namespace) -> DartsTrainConfig:
    """The protocol's defaults (CIFAR, or ImageNet with ``--imagenet``) overridden by the flags given.

    Examples:
        >>> make_config(build_parser().parse_args(["--imagenet", "--epochs", "3"])).epochs
        3
    """
    cls = DartsImageNetTrainConfig if args.imagenet else DartsTrainConfig
    fields = dict(_CONFIG_FLAGS)
    if args.imagenet:
        fields.update(_IMAGENET_FLAGS)
    else:
        given = [f"--{k.replace('_', '-')}" for k in _IMAGENET_FLAGS if getattr(args, k) is not None]
        if given:
            raise SystemExit(f"{', '.join(given)} apply to --imagenet only")
    values = {field: getattr(args, dest) for dest, field in fields.items() if getattr(args, dest) is not None}
    config = cls(auxiliary=not args.no_auxiliary, **values)
    if args.imagenet:
        if config.image_size < 32 or config.image_size % 32:
            raise SystemExit(f"--image-size must be a positive multiple of 32 (the network downsamples 32x), "
                             f"got {config.image_size}")
        if config.auxiliary and config.image_size < IMAGENET_MIN_AUX_SIZE:
            raise SystemExit(f"the auxiliary head needs --image-size >= {IMAGENET_MIN_AUX_SIZE} (got "
                             f"{config.image_size}); pass --no-auxiliary for smaller images")
    return config


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


def _batches(loader: Any, device: torch.device, augment: Any, max_steps: int | None,
             shard: Shard | None = None) -> Any:
    for i, batch in enumerate(loader):
        if max_steps is not None and i >= max_steps:
            break
        yield to_device_batch(batch, device, augment, shard=shard)


def _mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """``values`` averaged over the ranks (each a mean over as many images)."""
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    ddp.all_reduce_mean_([t])
    return dict(zip(values, t.tolist()))


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
    """Train the genotype (data-parallel under ``torchrun``); every rank returns the result rank 0 writes."""
    parser = build_parser()
    args = parser.parse_args(argv)
    config = make_config(args)
    try:
        check_batch_split(config.batch_size, launch_ranks().world)  # every rank, before the group and work
    except ValueError as exc:
        parser.error(str(exc))
    if args.imagenet:
        if not Path(args.data).is_dir():
            raise SystemExit(f"--imagenet needs --data pointing at an ImageFolder tree with train/ and val/ "
                             f"(or test/) class folders; {args.data!r} is not a folder")
        for split in ("train", "val"):
            imagenet_split_dir(args.data, split)  # FileNotFoundError naming the missing folder
    genotype = load_genotype(args.genotype)
    with search_launch(args.device) as (ranks, device):
        return train(args, config, genotype, ranks, device)


def _load_data(args: argparse.Namespace, config: DartsTrainConfig, ranks: Ranks) -> tuple[Any, Any, int, Any]:
    """``(train, test, image size, loader workers)``; rank 0 loads first (downloads, decode caches)."""
    if not ranks.main:
        barrier(ranks)
    if args.imagenet:
        size = config.image_size
        train = darts_imagenet_dataset(args.data, "train", image_size=size, subset=args.train_subset, seed=args.seed)
        test = darts_imagenet_dataset(args.data, "val", image_size=size, subset=args.test_subset, seed=args.seed)
        workers = args.workers
    else:
        size = 32
        train = load_dataset(args.data, "train", root=args.data_root, download=args.download,
                             subset=args.train_subset, seed=args.seed)
        test = load_dataset(args.data, "test", root=args.data_root, download=args.download,
                            subset=args.test_subset, seed=args.seed)
        workers = None
    if ranks.main:
        barrier(ranks)
    if args.imagenet and list(train.classes) != list(test.classes):
        raise SystemExit(f"train/ has {len(train.classes)} classes and the val/ (or test/) folder "
                         f"{len(test.classes)}; they must hold the same class folders")
    return train, test, size, workers


def _read_checkpoint(ckpt: Path, ranks: Ranks, device: torch.device) -> dict[str, Any] | None:
    """Rank 0's checkpoint, read by every rank (None when there is none); the ranks must see the same file."""
    exists = ckpt.is_file()
    if not agree(int(exists), device):
        raise SystemExit(f"the ranks do not all see {ckpt}: put --out on a filesystem every node shares")
    if not exists:
        return None
    state = torch.load(ckpt, map_location=device, weights_only=True)
    digest = hashlib.blake2b(json.dumps(state["log"]).encode(), digest_size=7).digest()
    if not agree(int.from_bytes(digest, "little"), device):
        raise SystemExit(f"the ranks read different files at {ckpt}: put --out on a filesystem every node "
                         "shares")
    return state


def train(args: argparse.Namespace, config: DartsTrainConfig, genotype: DartsGenotype, ranks: Ranks,
          device: torch.device) -> dict[str, Any]:
    """Train ``genotype`` with ``config`` on ``device``, as rank ``ranks.rank`` of ``ranks.world``."""
    from tqdm.auto import tqdm

    out = Path(args.out)
    if ranks.main:
        out.mkdir(parents=True, exist_ok=True)
    json_path = Path(args.json) if args.json else out / "result.json"
    torch.manual_seed(args.seed)
    train_set, test, size, workers = _load_data(args, config, ranks)
    n_cls = num_classes(train_set)
    aug_train = default_augment(train_set, train=True, cutout=config.cutout > 0,
                                cutout_length=max(config.cutout, 1)).to(device)
    aug_test = default_augment(test, train=False).to(device)
    test_part = eval_share(test, ranks)

    network = DartsImageNetNetwork if args.imagenet else DartsEvalNetwork
    net = network(genotype, C=config.C, layers=config.layers, num_classes=n_cls,
                  auxiliary=config.auxiliary).to(device)
    aux_params = sum(p.numel() for p in net.auxiliary_head.parameters()) if net.auxiliary_head is not None else 0
    report = flops_report(net, torch.randn(1, 3, size, size, device=device))
    optimizer = torch.optim.SGD(net.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    if args.imagenet:
        scheduler: Any = torch.optim.lr_scheduler.StepLR(optimizer, 1, gamma=config.lr_gamma)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs, eta_min=config.lr_min)
    trainee: Any = net
    if ranks.distributed:
        net.drop_path_shard = ranks.shard  # drop-path drawn for the global batch, this rank's part used
        # an auxiliary head outside the loss leaves parameters without gradients, which DDP must be told of
        unused = config.auxiliary and config.auxiliary_weight == 0
        trainee = ddp.wrap_ddp(WithAux(net), ignore=[], ddp_kwargs={"find_unused_parameters": unused})
    epoch, log, seconds = 0, [], 0.0
    ckpt = out / "checkpoint.pt"
    state = _read_checkpoint(ckpt, ranks, device) if args.resume else None
    if state is not None:
        if state["config"] != config.to_dict() or state["genotype"] != genotype.to_dict():
            raise SystemExit(f"{ckpt} was written for another genotype or configuration; remove it or drop --resume")
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        epoch, log, seconds = int(state["epoch"]), list(state["log"]), float(state["seconds"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if ranks.main:
            tqdm.write(f"resumed from {ckpt} after epoch {epoch}")
    if args.resume:
        barrier(ranks)  # every rank has read the checkpoint before rank 0 writes the next one
    share_rng_from_rank0(device)  # the ranks draw the augmentation and drop-path of the global batch alike

    test_workers = 0 if getattr(test, "in_memory", False) else workers
    while epoch < config.epochs and (args.stop_after is None or epoch < args.stop_after):
        net.drop_path_prob = config.drop_path_prob * epoch / config.epochs
        t0 = time.perf_counter()
        loader = make_loader(train_set, config.batch_size, train=True,
                             seed=epoch_seed(args.seed, epoch, "train"),
                             num_workers=0 if getattr(train_set, "in_memory", False) else workers,
                             num_replicas=ranks.world, rank=ranks.rank)
        steps = len(loader) if args.max_steps is None else min(len(loader), args.max_steps)
        bar = tqdm(total=steps, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                   disable=True if args.no_progress or not ranks.main else None)  # None: off if not a tty
        tr = train_epoch(trainee, _batches(loader, device, aug_train, args.max_steps, ranks.shard), optimizer,
                         auxiliary_weight=config.auxiliary_weight if config.auxiliary else 0.0,
                         grad_clip=config.grad_clip if config.grad_clip > 0 else None,
                         on_step=lambda _loss, bar=bar: bar.update(1),
                         label_smoothing=getattr(config, "label_smoothing", 0.0))
        bar.close()
        scheduler.step()
        if ranks.distributed:
            tr = _mean_over_ranks(tr, device)
            same_as_rank0(list(net.buffers()))  # DDP leaves each rank the BatchNorm statistics of its batches
        test_loader = (make_loader(test_part, 256, train=False, num_workers=test_workers)
                       if len(test_part) else [])
        test_batches = _batches(test_loader, device, aug_test, None)
        te = evaluate_shares(net, test_batches, len(test_part), device)
        seconds += time.perf_counter() - t0
        epoch += 1
        log.append({"epoch": epoch, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                    "test_loss": te["loss"], "test_accuracy": te["accuracy"],
                    "lr": optimizer.param_groups[0]["lr"], "drop_path": net.drop_path_prob})
        if ranks.main:
            state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(),
                     "scheduler": scheduler.state_dict(), "epoch": epoch, "log": log, "seconds": seconds,
                     "config": config.to_dict(), "genotype": genotype.to_dict(),
                     "rng_cpu": torch.get_rng_state()}
            atomic_save(state, ckpt)
        if not args.no_progress and ranks.main:
            tqdm.write(f"epoch {epoch}: train {tr['accuracy']:.2f}% test {te['accuracy']:.2f}% "
                       f"loss {tr['loss']:.3f} ({time.perf_counter() - t0:.0f}s)")

    result: dict[str, Any] = {
        "genotype": genotype.to_dict(),
        "data": args.data,
        "imagenet": args.imagenet,
        "image_size": size,
        "num_classes": n_cls,
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
    if ranks.distributed:
        result["distributed"] = {"world_size": ranks.world}
    if log and not args.no_plots:
        result["plots"] = {"curve": _plot(log, out / "curve.png") if ranks.main else str(out / "curve.png")}
    if not ranks.main:
        return result
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=1))
    print(f"params {result['params'] / 1e6:.2f}M MACs {result['macs'] / 1e6:.0f}M "
          f"test accuracy {result['test_accuracy']}")
    print(f"wrote {json_path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
