"""Re-evaluate the finished runs of `bench/equal_macs.py` on test images that no reported number has used.

`bench/equal_macs.py` reports each seed on a class-stratified subset of the test set (``--test-subset``,
2,000 images by default, drawn with the seed). Nothing in those runs looked at the other test images, so they
are a fresh, larger measurement of the same trained networks: this script loads every finished arm of one
protocol (``plan.json`` + ``pruned.pt``), every unpruned control and the shared baseline, and evaluates each on

* ``unseen``: the test images outside that seed's reported subset (6,000 of CIFAR-10's 8,000 here), and
* ``all``: the whole test set (the same images for every seed),

then writes the same kind of table as `bench/equal_macs.py` (mean ± std over seeds, RARTS paired by seed, the
control's gain over the baseline) as JSON and Markdown. Nothing is trained.

``--select-from`` names the ``--work`` folder of the same runs with another fine-tuning (``bench/equal_macs.py``
with ``--finetune-epochs 0``, say, from the same searches and plain networks): per run, the network kept is the
one of the two with the higher accuracy on ``--val-images`` *training* images that the run never trained on (a
class-stratified sample of the training set outside the run's ``--train-subset``); ties keep ``--work``'s. That is
a fine-tuning rule chosen per run on training data, the same rule for every arm; the tables report the kept
networks, and no test image takes part in the choice.

``--merge`` adds the runs of an earlier re-evaluation (its JSON) of the same network, protocol and test images to
the tables and the paired comparisons: arms run later against arms whose folders are gone.

    python bench/heldout_eval.py --threads 1 --work runs/pq_b100_ft1e-3 \\
        --out bench/results/equal_macs_after_b100_ft1e-3_heldout.json
    python bench/heldout_eval.py --threads 1 --protocol scratch_swap --work runs/pq_scratch_eq \\
        --select-from runs/pq_scratch_ft0 --out bench/results/equal_macs_scratch_selected.json
    python bench/heldout_eval.py --threads 1 --protocol scratch_swap --work runs/pq_scratch_eq --methods slimming \\
        --merge bench/results/equal_macs_scratch_equal_compute_val5000_heldout.json --out slimming_too.json
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _models import BUDGET_KINDS, BenchModel, add_model_args, model_of  # noqa: E402  (bench/ is on sys.path when a script runs)
from _paths import portable  # noqa: E402

from rartsprune.app.data import default_augment, holdout_indices, load_dataset, make_loader  # noqa: E402
from rartsprune.app.pipeline import PruneJob, evaluate  # noqa: E402
from rartsprune.export import load_pruned  # noqa: E402
from rartsprune.split import stratified_indices  # noqa: E402

#: A finished run's folder: method, budget (``_m``: a fraction of the MACs, ``_p``: of the parameters) and seed.
RUN = re.compile(rf"^(?P<method>.+)_(?P<kind>[{''.join(k.letter for k in BUDGET_KINDS.values())}])"
                 r"(?P<budget>[0-9.]+)_s(?P<seed>\d+)$")
SETS = ("unseen", "all")


def _mean_std(vals: list[float]) -> str:
    return f"{statistics.mean(vals):.2f} ± {statistics.stdev(vals):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"


class _Images:
    """One split of the runs' dataset, whole, evaluated on index subsets."""

    split = "test"

    def __init__(self, data: str, batch_size: int) -> None:
        self.full = load_dataset(data, self.split)
        self.aug = default_augment(self.full, train=False)
        self.batch_size = batch_size
        self.targets = torch.as_tensor([int(t) for t in self.full.targets])

    def accuracy_on(self, model: torch.nn.Module, indices: torch.Tensor) -> float:
        """The accuracy (%) of ``model`` on the images at ``indices``."""
        loader = make_loader(self.full.subset(indices), self.batch_size, train=False)
        return evaluate(model, loader, torch.device("cpu"), self.aug, None, None)


def _cached(folder: Path, name: str, weights: str, key: dict[str, Any], keys: tuple[str, ...],
            measure: Callable[[], dict[str, float]]) -> dict[str, float]:
    """``measure()``'s accuracies of the network in ``folder``, kept in ``folder/name`` (valid while the weights
    file is older than it and ``key`` is the same)."""
    cache = folder / name
    if cache.exists() and cache.stat().st_mtime >= (folder / weights).stat().st_mtime:
        data = json.loads(cache.read_text())
        if data.get("key") == key:
            return {s: float(data[s]) for s in keys}
    acc = measure()
    cache.write_text(json.dumps({"key": key, **acc}))
    return acc


class ValImages(_Images):
    """Training images a run never trained on: a seeded, class-stratified sample of ``count`` images of the
    training set outside the run's own training subset (what a fine-tuning rule may be chosen on)."""

    split = "train"

    def __init__(self, data: str, count: int, batch_size: int) -> None:
        super().__init__(data, batch_size)
        self.count = count

    def indices(self, train_subset: int | None, seed: int) -> torch.Tensor:
        """The ``count`` images outside the training subset drawn with ``seed`` (the run's `subset_seed`)."""
        if train_subset is None:
            raise SystemExit("the runs trained on the whole training set: no training image is left to choose on")
        if self.count > len(self.full) - train_subset:
            raise SystemExit(f"--val-images {self.count} is more than the {len(self.full) - train_subset} training "
                             "images the runs never trained on")
        return holdout_indices(self.targets, self.count, subset=train_subset, seed=seed)[1]  # PruneJob.val_images

    def cached(self, folder: Path, train_subset: int | None, seed: int,
               build: Callable[[], torch.nn.Module]) -> float:
        """The accuracy of ``folder``'s network on the run's images, kept in ``folder/val_eval.json``."""
        key = {"weights": "pruned.pt", "train_images": len(self.full), "train_subset": train_subset, "seed": seed,
               "count": self.count}
        return _cached(folder, "val_eval.json", "pruned.pt", key, ("val",),
                       lambda: {"val": self.accuracy_on(build(), self.indices(train_subset, seed))})["val"]


class TestSets(_Images):
    """The full test set and, per seed, the images outside that seed's reported subset."""

    def __init__(self, data: str, subset: int, batch_size: int) -> None:
        super().__init__(data, batch_size)
        self.subset = subset

    def indices(self, which: str, seed: int) -> torch.Tensor:
        if which == "all":
            return torch.arange(len(self.full))
        seen = torch.zeros(len(self.full), dtype=torch.bool)
        seen[stratified_indices(self.targets, self.subset, seed=seed)] = True
        return torch.nonzero(~seen).flatten()

    def accuracy(self, model: torch.nn.Module, which: str, seed: int) -> float:
        return self.accuracy_on(model, self.indices(which, seed))

    def cached(self, folder: Path, weights: str, seed: int, build: Callable[[], torch.nn.Module]) -> dict[str, float]:
        """Both accuracies of the network in ``folder``; kept in ``folder/heldout_eval.json`` (valid while the
        weights file is older than it and the test set and subset size are the same)."""
        key = {"weights": weights, "test_images": len(self.full), "subset": self.subset, "seed": seed}

        def measure() -> dict[str, float]:
            model = build()
            return {s: self.accuracy(model, s, seed) for s in SETS}
        return _cached(folder, "heldout_eval.json", weights, key, SETS, measure)


def _job(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())["job"]


def _subset_seed(folder: Path) -> int:
    """The seed that drew the run's reported test subset: its job's ``data_seed``, else its ``seed``."""
    return PruneJob.subset_seed_of(_job(folder))


def _pruned(folder: Path, model: BenchModel, example: torch.Tensor) -> torch.nn.Module:
    """The finished pruned network of a run folder."""
    return load_pruned(folder / "plan.json", folder / "pruned.pt", model.build(num_classes=10), example_inputs=example)


def _select(folder: Path, other: Path, val: ValImages, seed: int, model: BenchModel,
            example: torch.Tensor) -> tuple[Path, dict[str, Any]]:
    """The network kept of ``folder``'s and ``other``'s (the same run fine-tuned otherwise): the higher accuracy
    on the training images neither trained on, ties to ``folder``; and the record of the choice."""
    if not ((other / "pruned.pt").exists() and (other / "results.json").exists()):
        raise SystemExit(f"--select-from has no finished run {other} for {folder}")
    jobs = [_job(folder), _job(other)]
    same = ("train_subset", "seed", "data_seed", "data")
    if any(jobs[0].get(k) != jobs[1].get(k) for k in same) or (
            json.loads((folder / "plan.json").read_text()) != json.loads((other / "plan.json").read_text())):
        raise SystemExit(f"{other} is not the same run as {folder}: its {', '.join(same)} or its pruning plan "
                         "differ")
    subset = jobs[0]["train_subset"]
    acc = {name: val.cached(f, subset, seed, partial(_pruned, f, model, example))
           for name, f in (("work", folder), ("select_from", other))}
    kept = "select_from" if acc["select_from"] > acc["work"] else "work"
    return (other if kept == "select_from" else folder), {
        "kept": kept, "val": acc, "finetune_epochs": {"work": jobs[0]["finetune_epochs"],
                                                      "select_from": jobs[1]["finetune_epochs"]}}


def _kept_fraction(results: dict[str, Any]) -> dict[str, float]:
    """The fraction of each pruned group's channels that the run kept (its allocation), input side first."""
    widths = sorted(results["widths"].items(), key=lambda kv: _layer_order(kv[0]))
    return {name: w["kept"] / w["channels"] for name, w in widths}


def _layer_order(name: str) -> list[tuple[int, int | str]]:
    """Sort key of a module name: numbered parts by number (features.4 before features.11)."""
    return [(0, int(p)) if p.isdigit() else (1, p) for p in name.split(".")]


def _dense(path: Path, bench_model: BenchModel) -> torch.nn.Module:
    """An unpruned network with the state dict at ``path``."""
    model = bench_model.build(num_classes=10)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="the --work folder of a finished equal_macs.py run")
    ap.add_argument("--protocol", default="after", choices=("after", "scratch_swap", "scratch"))
    ap.add_argument("--budget-kind", default="macs", choices=BUDGET_KINDS,
                    help="re-evaluate the runs pruned to MACs budgets (folders _m<budget>) or to parameter budgets "
                         "(equal_macs.py --budget-kind params, folders _p<budget>); one kind per table")
    add_model_args(ap)
    ap.add_argument("--data", default=None, help="CIFAR-10 tree (default: the runs' own)")
    ap.add_argument("--seeds", default=None, type=lambda s: sorted({int(x) for x in s.split(",") if x}),
                    help="only these seeds (default: every finished seed): compare arms over the same seeds")
    ap.add_argument("--methods", default=None,
                    help="only the runs whose method (the folder name before _m<budget>_s<seed> or _p<budget>_s<seed>) matches this "
                         "regular expression, e.g. '_fused$|_e35$'")
    ap.add_argument("--control", default="control",
                    help="the unpruned controls' folder name before _s<seed> (e.g. control_e35 after equal_macs.py "
                         "--scratch-classic-epochs 35; from scratch they are under scratch/, their unpruned "
                         "networks where they started)")
    ap.add_argument("--select-from", type=Path, default=None,
                    help="the --work folder of the same runs with another fine-tuning (e.g. equal_macs.py "
                         "--finetune-epochs 0 from the same searches): per run, keep the network with the higher "
                         "accuracy on --val-images training images the run never trained on (ties: --work's)")
    ap.add_argument("--val-images", type=int, default=5000,
                    help="with --select-from: how many unused training images choose (class-stratified, drawn "
                         "with each run's subset seed)")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="the JSON of an earlier heldout_eval.py run of the same network, protocol and test images "
                         "(other arms, e.g. runs no longer on disk; repeatable): its runs of the --seeds (--methods "
                         "selects the runs on disk only) join the tables and the paired comparisons, and its unpruned networks "
                         "and controls count for the seeds that have none here")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    try:
        methods = re.compile(args.methods) if args.methods is not None else None
    except re.error as exc:
        ap.error(f"--methods {args.methods!r} is not a regular expression: {exc}")
    if args.val_images < 1:
        ap.error(f"--val-images must be at least 1, got {args.val_images}")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = model_of(args)
    runs_dir = args.work / f"equal_macs_{model.tag}" / args.protocol
    def wanted(seed: int) -> bool:
        return args.seeds is None or seed in args.seeds

    arms = sorted(p for p in runs_dir.iterdir()
                  if (m := RUN.match(p.name)) and m["kind"] == BUDGET_KINDS[args.budget_kind].letter and wanted(int(m["seed"]))
                  and (p / "pruned.pt").exists()
                  and (methods is None or methods.search(m["method"])))
    # equal_macs.py keeps the from-scratch controls under scratch/, whatever the search split's folder
    control_dir = runs_dir if args.protocol == "after" else runs_dir.parent / "scratch"
    control_run = re.compile(rf"^{re.escape(args.control)}_s(?P<seed>\d+)$")
    controls = sorted(p for p in control_dir.glob(f"{args.control}_s*")
                      if (c := control_run.match(p.name)) and wanted(int(c["seed"])))
    if not arms:
        print(f"no finished runs under {runs_dir}")
        return 2
    merged = [_merged(path, args, model) for path in args.merge]
    first = _job(arms[0])
    data = args.data or first["data"]
    subsets = {_job(p)["test_subset"] for p in arms}
    if len(subsets) != 1 or None in subsets:
        print(f"the runs used different or no test subsets ({subsets}): nothing is held out")
        return 2
    sets = TestSets(data, subsets.pop(), args.batch_size)
    for path, earlier in zip(args.merge, merged):
        if (earlier["test_images"], earlier["reported_subset"]) != (len(sets.full), sets.subset):
            raise SystemExit(f"--merge {path}: measured on {earlier['test_images']} test images with "
                             f"{earlier['reported_subset']}-image reported subsets, these runs on {len(sets.full)} "
                             f"with {sets.subset}: not the same images")
    val = ValImages(data, args.val_images, args.batch_size) if args.select_from else None
    example = torch.zeros(1, 3, 32, 32)
    runs: list[dict[str, Any]] = []
    for folder in arms:
        m = RUN.match(folder.name)
        assert m is not None
        seed = int(m["seed"])
        images = _subset_seed(folder)
        kept, choice = folder, {}
        if val is not None:
            other = args.select_from / runs_dir.relative_to(args.work) / folder.name
            kept, choice = _select(folder, other, val, images, model, example)
        results = json.loads((kept / "results.json").read_text())
        reported = results["after_finetune"]["test_acc"]
        row = {"method": m["method"], "budget": float(m["budget"]), "seed": seed, "reported": reported,
               "subset_seed": images, "kept_fraction": _kept_fraction(results), **choice,
               **sets.cached(kept, "pruned.pt", images, partial(_pruned, kept, model, example))}
        runs.append(row)
        print(f"{folder.name}: reported {reported:.2f}, unseen {row['unseen']:.2f}, all {row['all']:.2f}"
              + (f" (kept {row['kept']}: val {row['val'][row['kept']]:.2f})" if choice else ""), flush=True)
    baseline = Path(_job(arms[0])["init_weights"]) if args.protocol == "after" else None
    seeds = sorted({r["seed"] for r in runs})
    unpruned: dict[str, Any] = {}
    if baseline is not None:
        base = _dense(baseline, model)
        subset_seed = {r["seed"]: r["subset_seed"] for r in runs}  # the unpruned net on each seed's images
        unpruned = {s: {str(seed): sets.accuracy(base, s, subset_seed[seed]) for seed in seeds} for s in SETS}
    control: dict[str, dict[str, float]] = {s: {} for s in SETS}
    for folder in controls:
        seed = int(folder.name.rsplit("_s", 1)[1])
        acc = sets.cached(folder, "baseline.pt", _subset_seed(folder),
                          lambda folder=folder: _dense(folder / "baseline.pt", model))
        for s in SETS:
            control[s][str(seed)] = acc[s]
        if baseline is None:  # from scratch: the unpruned network is the seed's own, where its control started
            start = Path(_job(folder)["init_weights"])
            own = sets.cached(start.parent, start.name, _subset_seed(folder),
                              lambda start=start: _dense(start, model))
            for s in SETS:
                unpruned.setdefault(s, {})[str(seed)] = own[s]
    for path, earlier in zip(args.merge, merged):
        here = {(r["method"], r["budget"], r["seed"]) for r in runs}
        for r in earlier["runs"]:
            if not wanted(r["seed"]):
                continue
            if (r["method"], r["budget"], r["seed"]) in here:
                raise SystemExit(f"--merge {path}: {r['method']} at {r['budget']:g}x, seed {r['seed']} is "
                                 "measured here too")
            runs.append(r)
        for s in SETS:
            for key, acc in earlier["unpruned"].get(s, {}).items():
                if wanted(int(key)):
                    unpruned.setdefault(s, {}).setdefault(key, acc)
            for key, acc in earlier["control"].get(s, {}).items():
                if wanted(int(key)):
                    control[s].setdefault(key, acc)
    rows = []
    for budget in sorted({r["budget"] for r in runs}, reverse=True):
        for method in sorted({r["method"] for r in runs}):
            sel = [r for r in runs if (r["budget"], r["method"]) == (budget, method)]
            if sel:
                kept = {"kept_select_from": sum(r["kept"] == "select_from" for r in sel)} if val is not None else {}
                fractions = [r["kept_fraction"] for r in sel if "kept_fraction" in r]  # not in older JSON
                rows.append({"budget": budget, "method": method, "seeds": len(sel), **kept,
                             "kept_fraction": ({g: statistics.mean(f[g] for f in fractions) for g in fractions[0]}
                                               if len(fractions) == len(sel) else {}),
                             **{s: statistics.mean(r[s] for r in sel) for s in (*SETS, "reported")},
                             **{f"{s}_text": _mean_std([r[s] for r in sel]) for s in (*SETS, "reported")}})
    paired = []  # every RARTS arm (rarts, or rarts_<settings>) against every other method, seed by seed
    methods = sorted({r["method"] for r in runs})
    for budget in sorted({r["budget"] for r in runs}, reverse=True):
        by_seed = {m: {r["seed"]: r for r in runs if r["budget"] == budget and r["method"] == m} for m in methods}
        for arm in (m for m in methods if m.split("_")[0] == "rarts"):
            for method in (m for m in methods if m.split("_")[0] != "rarts"):
                mine, other = by_seed[arm], by_seed[method]
                common = sorted(set(mine) & set(other))
                if not common:
                    continue
                entry: dict[str, Any] = {"budget": budget, "arm": arm, "vs": method, "seeds": common}
                for s in (*SETS, "reported"):
                    d = [mine[k][s] - other[k][s] for k in common]
                    entry[s] = {"mean": statistics.mean(d), "text": _mean_std(d), "ahead": sum(x > 0 for x in d)}
                paired.append(entry)
    both = {s: [k for k in sorted(control[s]) if k in unpruned.get(s, {})] for s in SETS}  # seeds with both
    gains = {s: statistics.mean(control[s][k] - unpruned[s][k] for k in both[s]) for s in SETS if both[s]}
    result = {"settings": {k: portable(v) for k, v in vars(args).items()}, "test_images": len(sets.full),
              "reported_subset": sets.subset, "unpruned": unpruned, "control": control, "control_gain": gains,
              "rows": rows, "runs": runs, "paired": paired, "total_wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    _markdown(result, args, argv)
    return 0


def _merged(path: Path, args: argparse.Namespace, model: BenchModel) -> dict[str, Any]:
    """The earlier ``heldout_eval.py`` result at ``path`` (``--merge``), checked to be of the same network and
    protocol (SystemExit naming the difference)."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SystemExit(f"--merge {path}: cannot be read as JSON ({exc})") from None
    missing = {"settings", "test_images", "reported_subset", "runs", "unpruned", "control"} - set(
        earlier if isinstance(earlier, dict) else ())
    if missing:
        raise SystemExit(f"--merge {path}: not a heldout_eval.py result (no {', '.join(sorted(missing))})")
    settings = earlier["settings"]
    theirs = model_of(argparse.Namespace(model=settings.get("model"), depth=settings.get("depth")))
    if (theirs.tag, settings.get("protocol")) != (model.tag, args.protocol):
        raise SystemExit(f"--merge {path}: {theirs.tag}, protocol {settings.get('protocol')}; these runs: "
                         f"{model.tag}, protocol {args.protocol}")
    kind = settings.get("budget_kind", "macs")  # results written before --budget-kind are MACs budgets
    if kind != args.budget_kind:
        raise SystemExit(f"--merge {path}: runs at {kind} budgets; these runs: {args.budget_kind} budgets")
    return earlier


def _markdown(result: dict[str, Any], args: argparse.Namespace, argv: list[str] | None) -> None:
    what = BUDGET_KINDS[args.budget_kind].text
    n, k = result["test_images"], result["reported_subset"]
    lines = [f"# Held-out re-evaluation of `{portable(str(args.work))}` ({args.protocol}, {model_of(args).title})", "",
             f"The same trained networks as the equal-MACs run, evaluated on the {n - k} test images outside each "
             f"seed's reported {k}-image subset (`unseen`) and on all {n} (`all`). `reported`: the run's own number.",
             ""]
    if result["unpruned"]:
        for s in SETS:
            u, c = result["unpruned"].get(s, {}), result["control"][s]
            lines.append(f"- {s}: unpruned {_mean_std(list(u.values()))}"
                         + (f", control {_mean_std(list(c.values()))}, control gain "
                            f"{result['control_gain'][s]:+.2f} (per seed "
                            + ", ".join(f"{c[key] - u[key]:+.2f}" for key in sorted(c) if key in u) + ")"
                            if s in result["control_gain"] else ""))
        lines.append("")
    select = args.select_from is not None
    if select:
        lines += [f"Fine-tuning chosen per run: of each run in `{portable(str(args.work))}` and the same run in "
                  f"`{portable(str(args.select_from))}` (the same search and pruning plan, fine-tuned otherwise), "
                  f"the network with the higher accuracy on {args.val_images} training images the run never trained "
                  "on is kept (ties: the first); every number below is the kept network's. `kept 2nd`: the runs "
                  "that kept the second.", ""]
    lines += [f"| {what} budget | method | unseen | all | reported |" + (" kept 2nd |" if select else ""),
              "|---|---|---|---|---|" + ("---|" if select else "")]
    for r in result["rows"]:
        lines.append(f"| {r['budget']:g}x | {r['method']} | {r['unseen_text']} | {r['all_text']} | "
                     f"{r['reported_text']} |" + (f" {r['kept_select_from']}/{r['seeds']} |" if select else ""))
    if result["paired"]:
        lines += ["", "Each RARTS arm minus each other arm, paired by seed (mean ± std, seeds the RARTS arm is "
                  "ahead on):", "", f"| {what} budget | RARTS arm | vs | unseen | all | reported |",
                  "|---|---|---|---|---|---|"]
        for p in result["paired"]:
            lines.append(f"| {p['budget']:g}x | {p['arm']} | {p['vs']} | "
                         + " | ".join(f"{p[s]['text']} ({p[s]['ahead']}/{len(p['seeds'])})"
                                      for s in (*SETS, "reported")) + " |")
    groups = list(result["rows"][0]["kept_fraction"]) if result["rows"] else []  # {} when a merged JSON lacks it
    if groups and all(list(r["kept_fraction"]) == groups for r in result["rows"]):
        lines += ["", "The allocation: the fraction of each pruned group's channels kept (mean over seeds; groups named "
                  "as in the runs' `widths`, input side first):", "",
                  f"| {what} budget | method | " + " | ".join(f"`{g}`" for g in groups) + " |",
                  "|---|---|" + "---|" * len(groups)]
        for r in result["rows"]:
            lines.append(f"| {r['budget']:g}x | {r['method']} | "
                         + " | ".join(f"{r['kept_fraction'][g]:.2f}" for g in groups) + " |")
    if args.merge:
        lines += ["", "Merged from earlier re-evaluations of the same test images: "
                  + ", ".join(f"`{portable(str(p))}`" for p in args.merge) + "."]
    cmd = " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    lines += ["", f"Command: `python bench/heldout_eval.py {cmd}`", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
