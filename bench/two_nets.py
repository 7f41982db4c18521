"""Is a RARTS search's second network worth keeping? ``y``, ``w`` and their average, on held-out training images.

RARTS trains two networks that share the scores: the auxiliary ``w`` on D_t and the kept ``y`` on D_v, pulled
together by ``beta/2 ||y - w||^2``; `finalize()` keeps ``y`` and drops ``w``. A two-model weight average
``(w + y) / 2`` could be the better network to prune when the search is the training. This script loads finished
search checkpoints of `bench/equal_macs.py` (the ``..._search`` folders: ``checkpoint.pt`` holds both nets and the
scores) and scores each of ``y``, ``w`` and the average, unpruned and pruned to every ``--budgets`` fraction (the
search's budget kind, `rartsprune.prune`'s selection and surgery, the kept scores folded), with BatchNorm
re-estimated on the run's training images, on ``--val-images`` training images that the run never trained on
(`PruneJob.val_images`' held-out images), and how far apart the nets ended (``||y - w|| / ||y||`` over the
weights). No test image is used. Nothing is fine-tuned: it compares the starting
points the fine-tuning would get.

    python bench/two_nets.py --threads 1 --model vgg11x0.5 --budgets 0.6,0.35 \\
        runs/vgg_scratch_eq/equal_macs_vgg11x0.5/scratch_swap/rarts_fused_params_s{0,1,2}_search
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import add_model_args, model_of  # noqa: E402  (bench/ is on sys.path when a script runs)
from _paths import portable  # noqa: E402
from heldout_eval import ValImages  # noqa: E402

import rartsprune  # noqa: E402
from rartsprune.app.data import default_augment, load_dataset, make_loader, to_device_batch  # noqa: E402
from rartsprune.app.pipeline import PruneJob  # noqa: E402
from rartsprune.calibrate import recalibrate_bn  # noqa: E402
from rartsprune.split import epoch_seed  # noqa: E402

NETS = ("y", "w", "average")


def _net_weights(nets: dict[str, dict[str, torch.Tensor]], which: str) -> dict[str, torch.Tensor]:
    """The state of the scored network ``which`` (the scores are shared: the same in both nets)."""
    y, w = nets["model"], nets["aux_model"]
    if which == "y":
        return y
    if which == "w":
        return w
    return {k: (v + w[k]) / 2 if v.is_floating_point() else v for k, v in y.items()}  # BN counters: y's


def score_search(folder: Path, args: argparse.Namespace, val: ValImages, data: str) -> dict[str, float]:
    """Every net of the search in ``folder``, unpruned (``unpruned_<net>``) and at each budget (``<b>_<net>``)."""
    job = json.loads((folder / "results.json").read_text())["job"]
    bench_model = model_of(args)
    if job["model"] != bench_model.name:
        raise SystemExit(f"{folder} searched {job['model']!r}, not --model {bench_model.name!r}")
    state = torch.load(folder / "checkpoint.pt", map_location="cpu", weights_only=False)
    if state.get("phase") != "search" or "pruner" not in state:
        raise SystemExit(f"{folder}: not a finished search checkpoint (phase {state.get('phase')!r})")
    nets = state["pruner"]["search"].get("nets", {})
    if set(nets) != {"model", "aux_model"}:
        raise SystemExit(f"{folder}: the search has no second network (method {job['search']['method']!r})")
    kind, _ = job["selection"]["budget"]
    seed = PruneJob.subset_seed_of(job)
    train = load_dataset(data, "train", subset=job["train_subset"], seed=seed)
    aug = default_augment(train, train=True)
    indices = val.indices(job["train_subset"], seed)
    example = torch.zeros(1, *train[0][0].shape)

    def accuracy(model: torch.nn.Module) -> float:
        # the batches the job re-estimates the pruned network's statistics on
        loader = make_loader(train, job["batch_size"], train=True, seed=epoch_seed(job["seed"], 0, "recalibrate"))
        torch.manual_seed(job["seed"])  # the same random crops and flips for every net: a deterministic comparison
        inputs = (to_device_batch(b, "cpu", aug)[0] for b in loader)
        recalibrate_bn(model, inputs, num_batches=job["bn_recalibration"])
        return val.accuracy_on(model.eval(), indices)

    scored = bench_model.build(num_classes=10)
    rartsprune.prune(scored, example_inputs=example, **{kind: job["selection"][kind]})
    scores = {id(a) for a in rartsprune.get_handle(scored).scores}
    weights = [n for n, p in scored.named_parameters() if id(p) not in scores]
    # how far apart the two nets ended: ||y - w|| / ||y|| over the weights (the shared scores left out)
    gap = sum(float((nets["model"][n] - nets["aux_model"][n]).pow(2).sum()) for n in weights) ** 0.5
    out: dict[str, float] = {"relative_distance": gap / sum(float(nets["model"][n].pow(2).sum()) for n in weights) ** 0.5}
    for which in NETS:
        for budget in [None, *args.budgets]:
            model = bench_model.build(num_classes=10)
            pruner = rartsprune.prune(model, example_inputs=example, **{kind: budget or job["selection"][kind]})
            model.load_state_dict(_net_weights(nets, which))
            if budget is not None:
                model = pruner.finalize()
            else:
                pruner.remove()  # the scores folded into the weights, every channel kept
            out[f"{'unpruned' if budget is None else f'{kind}{budget:g}'}_{which}"] = accuracy(model)
        print(folder.name, which, {k: v for k, v in out.items() if k.endswith(which)}, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("searches", nargs="+", type=Path, help="the search folders (..._search) of one network")
    add_model_args(ap)
    ap.add_argument("--data", default=None, help="CIFAR-10 ImageFolder tree (default: the runs' own)")
    ap.add_argument("--budgets", default="0.6,0.35", help="fractions of the search's budget kind to prune to")
    ap.add_argument("--val-images", type=int, default=5000)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON (and .md beside it); default: print only")
    args = ap.parse_args(argv)
    try:
        args.budgets = [float(b) for b in args.budgets.split(",")]
    except ValueError:
        raise SystemExit(f"--budgets must be comma-separated numbers, got {args.budgets!r}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    missing = [str(f) for f in args.searches if not (f / "checkpoint.pt").is_file()]
    if missing:
        raise SystemExit(f"no checkpoint.pt in {', '.join(missing)}")
    data = args.data or json.loads((args.searches[0] / "results.json").read_text())["job"]["data"]
    val = ValImages(data, args.val_images, 256)
    runs = {str(portable(f)): score_search(f, args, val, data) for f in args.searches}
    keys = [k for k in next(iter(runs.values())) if k != "relative_distance"]
    means = {k: statistics.mean(r[k] for r in runs.values()) for k in [*keys, "relative_distance"]}
    result = {"model": model_of(args).name, "val_images": args.val_images, "runs": runs, "mean": means,
              "command": "python bench/two_nets.py " + shlex.join(argv if argv is not None else sys.argv[1:])}
    rows = list(dict.fromkeys(k.rsplit("_", 1)[0] for k in keys))  # unpruned, then each budget
    table = ["| | " + " | ".join(NETS) + " |", "|---|" + "---|" * len(NETS)]
    table += [f"| {row} | " + " | ".join(f"{means[f'{row}_{n}']:.2f}" for n in NETS) + " |" for row in rows]
    print("\n".join(table))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))
        args.out.with_suffix(".md").write_text(
            f"# RARTS' two networks: y, w and their average ({model_of(args).title})\n\n"
            f"Accuracy (%) on {args.val_images} held-out training images, BatchNorm re-estimated, no fine-tuning; "
            f"mean of {len(runs)} search(es). ||y - w|| / ||y|| at the end of the search: "
            + ", ".join(f"{r['relative_distance']:.4f}" for r in runs.values()) + ".\n\n" + "\n".join(table) + f"\n\nCommand: `{result['command']}`\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
