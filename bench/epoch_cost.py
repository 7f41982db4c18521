"""What one epoch of each from-scratch arm costs: plain training vs RARTS searching (exact and fused update).

`bench/equal_macs.py --protocols scratch --scratch-classic-epochs N` compares RARTS' search, which *is* the
training, with plain training at equal training compute: the classic arms get as many epochs as RARTS' epochs
cost. This script measures that exchange rate on the benchmark's own jobs (`equal_macs.common_job`: the same
network, images, batch size and per-epoch test evaluation): one epoch of plain training
(``pretrain_epochs=1``), one epoch of RARTS' search from random weights (``train_during_search=True``, the
search split of the from-scratch protocol) with ``update="fused"`` and with ``update="exact"``. Every round runs
one epoch of each arm in a rotated order (interleaved, so a slower stretch of a shared machine hits every arm);
per arm the median over rounds of the phase's wall time (`PruneJob` results' ``wall_time_s``; data loading and
model building are outside it). Ratios are to plain training.

    python bench/epoch_cost.py --threads 1 --model vgg11x0.5 --rounds 3
    python bench/epoch_cost.py --threads 1 --rounds 3          # PreResNet-20

JSON and markdown under ``bench/results/`` (``--out``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import equal_macs  # noqa: E402  (bench/ is on sys.path when a script runs)
from _paths import portable  # noqa: E402

from rartsprune.app.pipeline import PruneJob, run  # noqa: E402

ARMS = ("plain", "rarts_fused", "rarts_exact")


def _job(common: PruneJob, arm: str, out: Path) -> tuple[PruneJob, str]:
    """The arm's one-epoch job and the phase whose wall time is its epoch."""
    if arm == "plain":
        return replace(common, out=str(out), pretrain_epochs=1, stop_after="pretrain"), "pretrain"
    searching = replace(common, train_during_search=True)
    return replace(searching, out=str(out), method="rarts", search_epochs=1, search_split=searching.split,
                   update=arm.split("_")[1], macs=0.6, stop_after="search"), "search"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    equal_macs.add_setting_args(ap)
    ap.add_argument("--rounds", type=int, default=3, help="epochs of each arm, interleaved")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "epoch_cost.json")
    args = ap.parse_args(argv)
    if args.rounds < 1:
        ap.error(f"--rounds must be at least 1, got {args.rounds}")
    common = equal_macs.common_job(args)
    if common is None:
        return 2
    common = replace(common, seed=args.seed, finetune_epochs=0)
    model = equal_macs.model_of(args)
    t0 = time.perf_counter()
    times: dict[str, list[float]] = {arm: [] for arm in ARMS}
    with tempfile.TemporaryDirectory(prefix="epoch_cost_") as tmp:
        for r in range(args.rounds):
            for arm in ARMS[r % len(ARMS):] + ARMS[:r % len(ARMS)]:  # rotated: no arm always first
                job, phase = _job(common, arm, Path(tmp) / f"{arm}_{r}")
                seconds = float(run(job)["wall_time_s"][phase])
                times[arm].append(seconds)
                print(f"round {r}: {arm} {seconds:.1f} s", flush=True)
    median = {arm: statistics.median(v) for arm, v in times.items()}
    ratios = {arm: median[arm] / median["plain"] for arm in ARMS if arm != "plain"}
    result = {"settings": {k: portable(v) for k, v in vars(args).items()}, "model": model.name, "seconds": times,
              "median_s": median, "ratio_to_plain": ratios, "total_wall_s": time.perf_counter() - t0}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    cmd = " ".join(["python bench/epoch_cost.py", *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
    lines = [f"# One from-scratch epoch: plain training vs RARTS' search, {model.title}", "",
             f"{args.train_subset or 'all'} CIFAR-10 training images, batch {args.batch_size}, "
             f"{args.threads or 'default'} thread(s); median of {args.rounds} interleaved rounds (rotated order); "
             "each epoch's wall time includes its test evaluation, as in `bench/equal_macs.py`.", "",
             "| arm | s per epoch (median) | per round | ratio to plain |", "|---|---|---|---|"]
    for arm in ARMS:
        lines.append(f"| {arm} | {median[arm]:.1f} | {', '.join(f'{t:.1f}' for t in times[arm])} | "
                     f"{median[arm] / median['plain']:.2f} |")
    lines += ["", f"Command: `{cmd}`", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
