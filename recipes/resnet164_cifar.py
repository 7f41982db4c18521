"""Prune the pre-activation ResNet-164 of Network Slimming on CIFAR with RARTS (the paper's Table 5 setting).

Phases: train → width search (RARTS, or --method darts1/darts2/milenas/slimming/l1_norm/random) → finalize
(surgery) → fine-tune, each with the paper's settings by default: SGD lr 0.1, momentum 0.9, weight decay
1e-4, batch 64, 160 epochs, LR /10 at 50% and 75%. GPU-scale defaults; tiny settings run on a CPU:

    python recipes/resnet164_cifar.py --data ../shared/data/cifar10 --ratio 0.4 --out runs/r164
    python recipes/resnet164_cifar.py --data ../shared/data/cifar10 --macs 0.5 --out runs/r164-half-macs
    python recipes/resnet164_cifar.py --data ../shared/data/cifar10 --from-scratch --out runs/r164-scratch
    python recipes/resnet164_cifar.py --data fake --depth 11 --epochs 1 --search-epochs 1 \\
        --finetune-epochs 1 --train-subset 256 --test-subset 100 --out /tmp/r164-tiny

Writes OUT/results.json, plan.json + pruned.pt, checkpoint.pt (``--resume``), scores.png, widths.png, and
prints an accuracy / MACs table.

Under ``torchrun`` every phase runs data-parallel with every ``--method``, the one-shot baselines
(``slimming``, ``l1_norm``, ``random``) included: ``--batch-size`` stays the global batch, rank 0 alone writes
the files and prints the table, and ``--resume`` continues from rank 0's checkpoint on every rank::

    torchrun --nproc_per_node 4 recipes/resnet164_cifar.py --data cifar10 --method slimming --out runs/r164-slim
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rartsprune.app.launch import launch_ranks  # noqa: E402
from rartsprune.app.models import preresnet, preresnet_depths  # noqa: E402
from rartsprune.app.pipeline import PruneJob, run  # noqa: E402
from rartsprune.flops import format_count  # noqa: E402
from rartsprune.width import ALL_METHODS  # noqa: E402


def build(num_classes: int, depth: int, bn: bool):  # noqa: ANN201 - a model factory
    return preresnet(depth=depth, num_classes=num_classes, bn=bn)


def table(results: dict) -> str:
    """Accuracy and MACs table of a finished job (markdown)."""
    b, p = results["before"], results["after_prune"]
    rows = [
        "| stage | test acc (%) | params | MACs |",
        "|---|---|---|---|",
        f"| unpruned | {b['test_acc']:.2f} | {format_count(b['params'])} | {format_count(b['macs'])} |",
        f"| after search (scored) | {results['after_search']['test_acc']:.2f} | | |",
        f"| pruned, before fine-tuning | {p['test_acc']:.2f} | {format_count(p['params'])} | {format_count(p['macs'])} |",
        f"| pruned + fine-tuned | {results['after_finetune']['test_acc']:.2f} | {format_count(p['params'])} | "
        f"{format_count(p['macs'])} |",
    ]
    s = results["summary"]
    budget = (results.get("pruning") or {}).get("budget")
    asked = f" (budget: {', '.join(f'{k} x{v:g}' for k, v in budget.items())})" if budget else ""
    rows.append(f"\nPRC {100 * s['prc']:.1f}%, params x{s['params_ratio']:.3f}, MACs x{s['macs_ratio']:.3f}{asked}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="cifar10", help="cifar10 | cifar100 (torchvision) | ImageFolder path | fake")
    ap.add_argument("--download", action="store_true", help="let torchvision download CIFAR")
    ap.add_argument("--data-root", default=None, help="where torchvision keeps CIFAR")
    ap.add_argument("--depth", type=int, default=164, help=f"9n+2, e.g. {preresnet_depths(200)[:6]} ... 164")
    ap.add_argument("--bn", action=argparse.BooleanOptionalAction, default=True, help="BatchNorm (--no-bn: none)")
    size = ap.add_mutually_exclusive_group()
    size.add_argument("--ratio", type=float, default=None,
                      help="pruning ratio of channels (0.4 or 0.6 in the paper; default 0.4)")
    size.add_argument("--macs", type=float, default=None,
                      help="fraction of the model's MACs to keep (fvcore multiply-accumulates, batch 1); "
                           "exclusive with --ratio")
    ap.add_argument("--method", choices=ALL_METHODS, default="rarts")
    ap.add_argument("--mode", choices=("ratio", "l1"), default="ratio")
    ap.add_argument("--epochs", type=int, default=160,
                    help="training epochs before the search; with --from-scratch: the epochs of the search")
    ap.add_argument("--from-scratch", action="store_true",
                    help="the paper's protocol: the search is the training (scores attached before the first "
                         "epoch, --epochs of search at --lr with the step schedule, then surgery and fine-tuning); "
                         "--search-epochs is then ignored")
    ap.add_argument("--search-epochs", type=int, default=20)
    ap.add_argument("--finetune-epochs", type=int, default=160)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--finetune-lr", type=float, default=None, help="fine-tuning LR (default: --lr, the paper's)")
    ap.add_argument("--bn-recalibration", type=int, default=50,
                    help="training batches to re-estimate BatchNorm statistics after surgery (0: off)")
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--search-lr", type=float, default=0.01)
    ap.add_argument("--arch-lr", type=float, default=None,
                    help="Adam LR of the scores (default: rartsprune.prune's, 1e-1 in ratio mode, 3e-4 in l1 mode; "
                         "with --from-scratch in ratio mode the job's SCORE_TRAVEL / search steps)")
    ap.add_argument("--l1", type=float, default=None,
                    help="l1 penalty on the scores (default: rartsprune.prune's, 4e-3 in ratio mode, 1e-4 in l1 mode)")
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--beta", type=float, default=1.0)
    ap.add_argument("--importance", default=None, choices=("alpha", "alpha_gamma", "normalized"),
                    help="ranking criterion (default: alpha_gamma in ratio mode, alpha in l1 mode)")
    ap.add_argument("--train-subset", type=int, default=None)
    ap.add_argument("--test-subset", type=int, default=None)
    ap.add_argument("--init-weights", default=None, help="start from this trained state_dict (skips nothing: "
                    "set --epochs 0 to search it directly)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--amp", choices=("none", "bf16", "fp16"), default="none")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/resnet164_cifar")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--no-progress", dest="progress", action="store_false")
    args = ap.parse_args(argv)
    if args.depth not in preresnet_depths(max(args.depth, 2)):
        ap.error(f"--depth must be 9n+2 (e.g. 11, 20, 29, 56, 110, 164), got {args.depth}")
    try:
        job = make_job(args)
    except ValueError as exc:  # e.g. --macs outside (0, 1) or with --mode l1
        ap.error(str(exc))
    results = run(job)
    if launch_ranks().main:  # under torchrun: the table once, from rank 0
        print(table(results))
    return 0


def make_job(args: argparse.Namespace) -> PruneJob:
    """The `PruneJob` of the parsed command line."""
    return PruneJob(
        model=f"preresnet{args.depth}", data=args.data, download=args.download, data_root=args.data_root,
        out=args.out, ratio=args.ratio, macs=args.macs, mode=args.mode,
        method=args.method, pretrain_epochs=0 if args.from_scratch else args.epochs,
        search_epochs=args.epochs if args.from_scratch else args.search_epochs, train_during_search=args.from_scratch,
        finetune_epochs=args.finetune_epochs, batch_size=args.batch_size,
        lr=args.lr, finetune_lr=args.finetune_lr, bn_recalibration=args.bn_recalibration,
        weight_decay=args.weight_decay, schedule="step", search_lr=args.search_lr, arch_lr=args.arch_lr, l1=args.l1,
        lam=args.lam, beta=args.beta, importance=args.importance, train_subset=args.train_subset,
        test_subset=args.test_subset, init_weights=args.init_weights, device=args.device, amp=args.amp,
        seed=args.seed, resume=args.resume, progress=args.progress,
        model_factory=partial(build, depth=args.depth, bn=args.bn),
    )


if __name__ == "__main__":
    sys.exit(main())
