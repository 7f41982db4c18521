"""Command line: ``python -m rartsprune prune ...`` (also installed as ``rartsprune``).

Subcommands:

* ``prune`` — train (optional) → width search → surgery → fine-tune, with checkpoints and ``--resume``
  (see `rartsprune.app.pipeline` for what lands in ``--out``).
* ``check`` — can rartsprune score and prune this model exactly? (attach, zero 40 %, surgery, compare); for
  detection, segmentation, video and optical-flow models also one training-mode forward + backward with the
  task's loss, which must give the scores finite, nonzero gradients (`rartsprune.app.tasks`).
* ``flops`` — MACs and parameters of a model, per module.
* ``export`` — a job's ``plan.json`` + ``pruned.pt`` as a ``torch.export`` (``.pt2``), ONNX or TorchScript
  file, checked against the module (`rartsprune.export`).
* ``demo`` — score and prune a torchvision ResNet-18 on CIFAR-10 (``../shared/data/cifar10`` when present,
  else FakeData) and print MACs and parameters before and after.

Examples::

    python -m rartsprune prune --model torchvision:resnet18 --data ../shared/data/cifar10 --ratio 0.4 \\
        --search-epochs 10 --finetune-epochs 20 --out runs/r18
    python -m rartsprune prune --model timm:efficientnet_b0 --data fake --macs 0.5 --out runs/b0-half-macs
    torchrun --nproc_per_node 4 -m rartsprune prune --model torchvision:resnet50 --data /data/imagenet \\
        --batch-size 256 --macs 0.5 --out runs/r50    # data-parallel on 4 GPUs, 256: the global batch
    python -m rartsprune check --model timm:efficientnet_b0
    python -m rartsprune check --model torchvision:r3d_18 --size 8x112x112   # video: frames x height x width
    python -m rartsprune export --model torchvision:resnet18 --plan runs/r18/plan.json \\
        --weights runs/r18/pruned.pt --out r18.onnx --size 32
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import fields
from typing import Any, get_args, get_type_hints

from ..width.budget import BUDGET_KINDS
from ..width.config import (
    BASELINE_METHODS,
    KEPT_SCORES,
    MODES,
    SCOPES,
    SEARCH_METHODS,
    UPDATES,
    SelectionConfig,
    WidthSearchConfig,
)
from ..width.importance import IMPORTANCES
from .launch import launch_ranks
from .pipeline import SCORE_SCHEDULES, SEARCH_SPLITS, PruneJob, check_launch, flat_names

_HELP = {
    "model": "torchvision:NAME, timm:NAME or path/to/file.py:FUNCTION (called with num_classes=...)",
    "data": "cifar10, cifar100 (torchvision, see --download), fake, or an ImageFolder path with train/ and test/",
    "out": "output folder (checkpoint, plan, pruned weights, results.json, plots)",
    "ratio": "pruning ratio of channels (fraction of prunable channels removed), mode=ratio (default: 0.4); "
             "exclusive with --macs and --params",
    "macs": "fraction of the model's MACs to keep (fvcore multiply-accumulates, batch 1); exclusive with --ratio",
    "params": "fraction of the model's parameters to keep; exclusive with --ratio and --macs",
    "latency": "fraction of the model's latency to keep, measured per layer on this device at --latency-batch; "
               "exclusive with --ratio, --macs and --params",
    "latency_batch": "batch size at which a --latency budget is measured",
    "latency_table": "JSON latency table of a --latency budget: loaded if it exists (checked against this device, "
                     "batch size and input shape), else measured and written there",
    "mode": "ratio (fixed PRC) or l1 (sparsity penalty decides)",
    "method": "rarts, darts1, darts2, milenas, or the one-shot baselines l1_norm, random, slimming",
    "pretrain_epochs": "plain training epochs before the search (0: use the model as built / --init-weights)",
    "search_epochs": "epochs of the search (what an epoch is: --search-split)",
    "train_during_search": "the search is the training (the paper's protocol, with --pretrain-epochs 0): the weights' "
                           "SGD in the search uses --lr, --weight-decay, --momentum and --schedule over --search-epochs "
                           "instead of --search-lr with a cosine decay",
    "score_schedule": "with --train-during-search: 'constant' score LR (default) or 'weights': the weights' --schedule, "
                      "so the scores settle with the weights (the LR's peak keeps the scores' travel)",
    "search_split": "how a search epoch uses the training set: 'fixed' halves D_t / D_v for the whole search (each net "
                    "sees its half once per epoch), or 'swap': a fresh split every epoch, passed twice with the halves "
                    "swapped, so each net sees every image once per epoch (default: swap with --train-during-search, "
                    "else fixed)",
    "finetune_epochs": "fine-tuning epochs of the pruned model",
    "batch_size": "batch size (per half during the search); under torchrun the global batch, split evenly "
                  "between the processes",
    "lr": "SGD learning rate of pre-training and fine-tuning",
    "finetune_lr": "SGD learning rate of fine-tuning (default: --lr); short fine-tunes keep more with a lower one",
    "schedule": "LR schedule of pre-training/fine-tuning: step (/10 at 50%%, 75%%) or cosine",
    "search_lr": "SGD learning rate of the network weights during the search (cosine-annealed)",
    "arch_lr": "Adam learning rate of the channel scores (default: 1e-1 with --mode ratio, 3e-4 with --mode l1; "
               "with --train-during-search in ratio mode 3 / the number of search steps)",
    "lam": "RARTS lambda (weight of the auxiliary net's loss); also MiLeNAS' lambda",
    "beta": "RARTS beta (coupling of the two networks)",
    "update": "RARTS update: exact (Eq. 7, four passes per step) or fused (two passes, approximation; about half "
              "the cost: the better use of a fixed compute budget when the search is the training)",
    "importance": "criterion for the ranking (default: alpha_gamma in ratio mode, alpha in l1 mode, l1_norm -- "
                  "|alpha|*||W|| -- with a budget reached gradually)",
    "grad_clip": "largest gradient norm of each weight update of the search",
    "prox": "mode=l1: a proximal soft-threshold step on the scores after each search step (exact zeros)",
    "stop_after": "end the job after this phase",
    "prune_heads": "also score and remove whole attention heads (torchvision ViT, timm ViT / DeiT / Swin)",
    "prune_layernorm": "also score and remove, exactly, channels normalised by a LayerNorm (a ViT's embedding width)",
    "gradual": "reach the size gradually during this fraction of the search steps (0..1; cubic schedule): removed "
               "channels' scores are zeroed and held there, so the rest of the search trains the pruned network "
               "(default: 0.5 when a search prunes a trained network to --macs / --params / --latency, else 0; "
               "--gradual 0 prunes once, after the search)",
    "gradual_steps": "like --gradual, in search steps (exclusive with --gradual)",
    "search_distill": "share (0..1) of distillation from the network before pruning in the search's loss "
                      "(needs a trained network: --pretrain-epochs, --init-weights or --pretrained; 0: cross-entropy; "
                      "default: 1 when a trained network is pruned gradually, else 0)",
    "finetune_distill": "share (0..1) of distillation from the network before pruning in the fine-tuning's loss "
                        "(0: cross-entropy; default: 1 when a trained network is pruned and fine-tuned, else 0)",
    "distill_temperature": "temperature of --search-distill / --finetune-distill",
    "scope": "global (rank channels across layers) or layer (same ratio per layer)",
    "max_pruning_ratio": "the largest fraction of any one layer's channels removed, in (0, 1] (default 1: no cap; "
                         "e.g. 0.9: every layer keeps at least a tenth of its channels)",
    "kept_scores": "what surgery does with the kept channels' scores: fold (multiply them into the weights: the "
                   "pruned model computes what the scored one does) or reset (set them to +-1 first: the kept "
                   "channels keep their weights' own scale)",
    "round_to": "round kept channel counts up to a multiple of this; 'auto' with --latency: the rounding the "
                "latency table predicts best",
    "l1": "strength of the l1 penalty on the scores: with --mode l1 it decides the size (default 1e-4); with --mode "
          "ratio a sparsity pressure that separates the ranking (default 4e-3; 0: off)",
    "threshold": "mode=l1: remove channels with |score| <= threshold",
    "cost_weight": "MACs-weighted pressure on the scores (default: 2 with --macs / --params, where --l1 defaults to 0; else 0)",
    "sparsity": "Network Slimming's l1 on BN scales (method=slimming)",
    "bn_recalibration": "training batches to re-estimate BatchNorm statistics after surgery (0: off)",
    "train_subset": "use a class-stratified subset of this many training images",
    "test_subset": "use a class-stratified subset of this many test images",
    "val_images": "hold out this many training images (outside --train-subset) that nothing trains on, and keep "
                  "the fine-tuning epoch (0: the pruned network before fine-tuning) that scores best on them "
                  "(default 0: the last epoch)",
    "data_seed": "seed that draws --train-subset / --test-subset (default: --seed); keep it when several seeds "
                 "continue one trained network, so they see the images it was trained and tested on",
    "init_weights": "state_dict (.pt) to start from",
    "device": "auto, cpu, cuda, cuda:1 ...",
    "amp": "mixed precision: none, bf16, fp16",
}


#: PruneJob fields that set the size of the pruned model; at most one may be given.
_SIZE_FLAGS = ("ratio", *BUDGET_KINDS)


#: Former flag names still accepted (renamed for one meaning per name: ``mode`` is ratio / l1).
_ALIASES: dict[str, tuple[str, ...]] = {"update": ("--rarts-mode",)}


#: Settings that take one of a few names.
_CHOICES: dict[str, tuple[str, ...]] = {
    "mode": MODES, "method": SEARCH_METHODS + BASELINE_METHODS, "update": UPDATES, "scope": SCOPES,
    "kept_scores": KEPT_SCORES,
    "importance": tuple(IMPORTANCES), "search_split": SEARCH_SPLITS, "score_schedule": SCORE_SCHEDULES,
    "stop_after": ("pretrain", "search"),
    "schedule": ("step", "cosine"), "amp": ("none", "bf16", "fp16"),
}


def job_settings() -> list[tuple[str, type, Any]]:
    """``(name, type, default)`` of every `PruneJob` setting a flag sets: the job's own fields, then the fields
    of its search and selection configs under their flat names (`rartsprune.app.pipeline.flat_names`) — so a
    new field of either config is a new flag. Fields that are not a bool, int, float or str (the model factory,
    optimizer factories) have no flag."""
    defaults = PruneJob()
    out: list[tuple[str, type, Any]] = []
    hints = get_type_hints(PruneJob)
    for f in fields(PruneJob):
        out.append((f.name, _flag_type(hints[f.name]), getattr(defaults, f.name)))
    config_hints = {"search": get_type_hints(WidthSearchConfig), "selection": get_type_hints(SelectionConfig)}
    for flat, (config, name) in flat_names().items():
        default = getattr(getattr(defaults, config), name) if flat not in _SIZE_FLAGS else None
        out.append((flat, _flag_type(config_hints[config][name]), default))
    return [row for row in out if row[1] is not type(None)]


def _flag_type(hint: Any) -> type:
    """bool / int / float / str for a field's type hint (the first of a union that is not None), else NoneType."""
    options = [a for a in get_args(hint) if a is not type(None)] if get_args(hint) else [hint]
    first = options[0] if options else type(None)
    return first if first in (bool, int, float, str) else type(None)


def _round_to(text: str) -> int | str:
    """``--round-to``: a positive integer or ``auto``."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'auto', got {text!r}")
    return value


#: Flags whose values are not one plain type (``dest -> argparse type``).
_TYPES: dict[str, Any] = {"round_to": _round_to}


def _prune_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("prune", help="search, prune and fine-tune a model", description=_HELP["out"])
    size = p.add_mutually_exclusive_group()  # the size of the pruned model: a PRC or a MACs / parameter budget
    for name, kind, default in job_settings():
        flags = ("--" + name.replace("_", "-"), *_ALIASES.get(name, ()))
        help_ = _HELP.get(name, name.replace("_", " "))
        if name in _SIZE_FLAGS:
            # no default here (None): argparse then reliably refuses two of them; PruneJob's ratio default applies
            size.add_argument(*flags, dest=name, type=float, default=None, metavar=name.upper(), help=help_)
        elif kind is bool:
            p.add_argument(*flags, dest=name, action=argparse.BooleanOptionalAction, default=default, help=help_)
        elif name in _CHOICES:
            p.add_argument(*flags, dest=name, choices=_CHOICES[name], default=default,
                           help=help_ if default is None else f"{help_} (default: {default})")
        else:
            p.add_argument(*flags, dest=name, type=_TYPES.get(name, kind), default=default,
                           help=help_ if default is None else f"{help_} (default: {default})")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rartsprune", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    prune_parser = _prune_parser(sub)
    c = sub.add_parser("check", help="check that a model can be scored and pruned exactly (random weights, perturbed so that "
        "zero-initialised layers do not hide errors)")
    c.add_argument("--model", required=True, help=_HELP["model"])
    c.add_argument("--ratio", type=float, default=0.4)
    c.add_argument("--size", default=None, help=_CHECK_SIZE_HELP)
    c.add_argument("--json", action="store_true", help="print the result as JSON instead of the readable verdict")
    c.add_argument("--prune-heads", action="store_true", help=_HELP["prune_heads"])
    c.add_argument("--prune-layernorm", action="store_true", help=_HELP["prune_layernorm"])
    f = sub.add_parser("flops", help="MACs and parameters per module")
    f.add_argument("--model", required=True, help=_HELP["model"])
    f.add_argument("--size", type=int, default=224)
    f.add_argument("--num-classes", type=int, default=1000)
    f.add_argument("--depth", type=int, default=2, help="module depth of the table")
    f.add_argument("--format", choices=("text", "md", "json"), default="text",
                   help="text: aligned tree for a terminal; md: markdown table; json: every count")
    d = sub.add_parser("demo", help="prune a ResNet-18 on CIFAR-10 (or FakeData) in a few minutes on a CPU")
    d.add_argument("--data", default=None, help="default: ../shared/data/cifar10 if it exists, else fake")
    d.add_argument("--out", default="runs/demo")
    d.add_argument("--ratio", type=float, default=0.4)
    d.add_argument("--train-subset", type=int, default=2000)
    d.add_argument("--resume", action="store_true")
    _export_parser(sub)
    args = parser.parse_args(argv)

    if args.command == "demo":
        return _demo(args)
    if args.command == "export":
        return _export(args)
    if args.command == "check":
        return _check(args)
    if args.command == "prune":
        from .pipeline import run

        settings = {k: v for k, v in vars(args).items() if k != "command" and not (k in _SIZE_FLAGS and v is None)}
        try:
            job = PruneJob(**settings)
            check_launch(job)  # under torchrun: what the ranks cannot run, refused on every rank
        except ValueError as exc:
            prune_parser.error(str(exc))  # exits with status 2 and the usage, like argparse's own errors
        results = run(job)
        if launch_ranks().main:  # under torchrun the summary once, from rank 0
            # a job ended by --stop-after has no summary yet: say where it stopped
            stopped = {"stopped_after": job.stop_after, "out": job.out}
            print(json.dumps(results.get("summary", stopped), indent=1))
        return 0
    import torch

    from .zoo import build_model

    model = build_model(args.model, num_classes=args.num_classes).eval()
    from ..flops import flops_report, format_count

    report = flops_report(model, torch.randn(1, 3, args.size, args.size))
    if args.format == "json":
        print(json.dumps(report.to_dict(), indent=1))
        return 0
    print(report.table(max_depth=args.depth) if args.format == "md" else report.text(max_depth=args.depth))
    print(f"total: {format_count(report.macs)} MACs, {format_count(report.params)} parameters")
    return 0


#: ``check --size`` help: the form depends on the model's task (`rartsprune.app.tasks.SIZE_FORMS`).
_CHECK_SIZE_HELP = (
    "input size, in the model's task's form: S (a square image side) for classifiers, detectors and segmenters; "
    "TxHxW (frames x height x width) for video models (MViT: 16x224x224 only); S or HxW for RAFT (each side at "
    "least 128 and a multiple of 8). Default: small where the architecture allows (64 px images; detectors "
    "128 px, video 8x64x64, S3D and MViT 16x224x224, RAFT 128x128)"
)


def _check(args: argparse.Namespace) -> int:
    """``check``: the model's task decides its inputs, loss and compared outputs (`rartsprune.app.tasks`).

    A bad ``--size``, an unknown model or a failed build is one line on stderr and exit status 2, never a
    traceback; a model that cannot be pruned exactly is exit status 1 with the reason.
    """
    from .tasks import check_setup, check_task_model, describe_inputs, loss_name, task_of

    try:
        model, inputs = check_setup(args.model, size=args.size)
    except (ValueError, RuntimeError, TypeError, OSError, ImportError, AssertionError) as exc:
        print(f"rartsprune check: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    result = check_task_model(model, inputs, ratio=args.ratio, prune_heads=args.prune_heads,
                              prune_layernorm=args.prune_layernorm)
    info = {"task": task_of(args.model), "input": describe_inputs(inputs.example), "loss_fn": loss_name(inputs.loss_fn)}
    if args.json:
        print(json.dumps({**info, **result.to_dict()}, indent=1))
    else:
        print(_check_text(args.model, result, info))
    return 0 if result.ok else 1


def _check_text(spec: str, result: Any, info: dict[str, str] | None = None) -> str:
    """`rartsprune check`'s verdict for people: pass / refused with the reason, then the numbers.

    ``info``: the task, the input's shape and the loss' name (the task-loss line appears when a loss ran).
    """
    import math

    from ..flops import format_count

    lines = [f"{spec}: {'PASS' if result.ok else 'REFUSED'}" + ("" if result.ok else f" - {result.reason}")]
    if info:
        lines.append(f"  task             {info['task']}, input {info['input']}")
    if info and info.get("loss_fn", "-") != "-" and not math.isnan(result.loss):
        reached = result.scored_groups - result.scores_without_grad
        lines.append(f"  task loss        {info['loss_fn']} {result.loss:.4g} (training mode, scores at 1); "
                     f"score-gradient norm {result.score_grad_norm:.3e}, {reached} of {result.scored_groups} "
                     "score vectors reached")
    if result.groups:
        statuses = ", ".join(f"{n} {k}" for k, n in sorted((result.statuses or {}).items()))
        lines.append(f"  channel groups   {result.groups} ({statuses})"
                     + (f"; {result.layernorm_groups} through their LayerNorms" if result.layernorm_groups else ""))
        lines.append(f"  channels         {result.removed_channels} of {result.scored_channels} scored channels removed")
        lines.append(f"  parameters       {format_count(result.params_before)} -> {format_count(result.params_after)}")
        lines.append(f"  output change    scores at 1: {result.identity_diff:.2e}; after surgery: {result.pruned_diff:.2e} "
                     f"(output scale {result.output_scale:.3g})")
    lines.append(f"  time             {result.seconds:.1f} s")
    return "\n".join(lines)


def _demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..flops import format_count
    from .pipeline import run

    data = args.data
    if data is None:
        shared = Path("../shared/data/cifar10")
        data = str(shared) if (shared / "train").is_dir() else "fake"
    print(f"demo: torchvision ResNet-18, data={data}, ratio={args.ratio}, out={args.out}")
    job = PruneJob(model="torchvision:resnet18", data=data, out=args.out, ratio=args.ratio, pretrain_epochs=1,
                   search_epochs=1, finetune_epochs=1, train_subset=args.train_subset, test_subset=1000,
                   lr=0.05, search_lr=0.01, resume=args.resume)  # the scores: prune()'s defaults
    r = run(job)
    b, a = r["before"], r["after_prune"]
    print(f"{'':12s}{'params':>12s}{'MACs':>12s}{'test acc':>10s}")
    print(f"{'before':12s}{format_count(b['params']):>12s}{format_count(b['macs']):>12s}{b['test_acc']:>9.1f}%")
    print(f"{'after':12s}{format_count(a['params']):>12s}{format_count(a['macs']):>12s}"
          f"{r['after_finetune']['test_acc']:>9.1f}%")
    print(f"PRC {100 * r['summary']['prc']:.1f}% -> params x{r['summary']['params_ratio']:.2f}, "
          f"MACs x{r['summary']['macs_ratio']:.2f}; files in {args.out}")
    return 0


def _export_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from ..export import FORMATS

    p = sub.add_parser("export", help="export a pruned model (plan + weights) to torch.export, ONNX or TorchScript",
                       description="Rebuild the pruned model from --plan and --weights (what `prune` writes) and "
                                   "export it; the written file is reloaded and compared with the module.")
    p.add_argument("--model", required=True, help=_HELP["model"] + "; the architecture the plan was made for")
    p.add_argument("--plan", required=True, help="plan.json of the pruned model")
    p.add_argument("--weights", required=True, help="pruned.pt: the pruned model's state_dict")
    p.add_argument("--out", required=True, help="file to write (.pt2, .onnx or .ts)")
    p.add_argument("--format", choices=FORMATS, default=None, help="default: from the suffix of --out")
    p.add_argument("--size", type=int, default=None, help="input image size (default: the model's default size)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the example input (default: 1)")
    p.add_argument("--num-classes", type=int, default=None, help="default: read from the plan")
    p.add_argument("--dynamic-batch", action=argparse.BooleanOptionalAction, default=True,
                   help="export a dynamic batch dimension (default: on)")
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="reload the file and compare its outputs with the module's (default: on)")
    p.add_argument("--atol", type=float, default=1e-5, help="allowed difference x max(1, output scale)")
    return p


def _export(args: argparse.Namespace) -> int:
    """``export``: errors are one line on stderr and exit status 2, never a traceback.

    RuntimeError covers rartsprune's own errors and torch's unreadable-file errors.
    """
    import pickle

    import torch

    from ..export import export_model, format_for_path
    from .zoo import input_size_for, load_pruned_spec

    try:
        if args.batch < 1 or (args.size is not None and args.size < 1):
            raise ValueError("--batch and --size must be positive")
        fmt = args.format or format_for_path(args.out)
        size = args.size or input_size_for(args.model, small=False)
        x = torch.randn(args.batch, 3, size, size)
        model = load_pruned_spec(args.plan, args.weights, args.model, example_inputs=x[:1], num_classes=args.num_classes)
        result = export_model(model, x, args.out, fmt, dynamic_batch=args.dynamic_batch, check=args.check,
                              atol=args.atol)
    except (RuntimeError, ValueError, TypeError, ImportError, OSError, KeyError, pickle.UnpicklingError) as exc:
        print(f"rartsprune export: error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
