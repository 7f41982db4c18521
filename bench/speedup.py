"""Real speed-up of pruned models against their MACs ratio, and which channel rounding runs fastest.

For ResNet-50 and MobileNetV2 at 224x224 and PreResNet-164 at 32x32, batch 1 and 32: prune 40% of the
channels (one-shot ``l1_norm`` selection — the weights do not matter for speed) with several ``round_to``
settings, then time eval-mode inference of the unpruned and each pruned model interleaved. Reports speed-up =
t(unpruned) / t(pruned), the MACs ratio MACs(unpruned) / MACs(pruned) and their quotient, the efficiency
(target >= 0.85 at every batch size), and the best ``round_to`` per model.

So that the numbers reproduce:

- the comparison runs in ``--rounds`` independent rounds (default 5), each in a fresh Python process with
  freshly built, seeded models (every round prunes the same channels: checked by a fingerprint of the pruned
  weights). A round times the unpruned model and every variant interleaved at each batch size and keeps the
  median over its repetitions;
- per model / batch / variant the report gives the median across rounds of those per-round medians and their
  spread across rounds (min–max); speed-up and efficiency come from the medians;
- the best ``round_to`` is chosen by efficiency on the selection rounds (1st, 3rd, 5th, ...) and its efficiency
  is reported from the other rounds (2nd, 4th, ...) only: picking the best of several noisy variants and
  reporting the numbers it was picked on would inflate the result;
- a model / batch whose unpruned time varies by more than 10% between rounds (max / min - 1) is flagged
  ``noisy`` with a warning in the markdown: rerun on an idle machine.

Writes ``bench/results/speedup.json`` (every round's raw timings, the medians, spreads, the selection / report
split and the flags) and ``bench/results/speedup.md``.

    python bench/speedup.py --threads 1                 # CPU, 5 rounds
    python bench/speedup.py --threads 1 --rounds 6 --models resnet50,mobilenet_v2
    python bench/speedup.py --device cuda
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.85  # speed-up / MACs ratio, at every batch size (project issue 6)
NOISE_LIMIT = 0.10  # unpruned time max / min - 1 across rounds above which a result is flagged noisy (issue 15)
sys.path.insert(0, str(ROOT))
if str(Path(__file__).resolve().parent) not in sys.path:  # imported (by a test) rather than run as a script:
    sys.path.append(str(Path(__file__).resolve().parent))  # last, so bench/coverage.py shadows no package

import _alloc  # noqa: E402  (bench/ is on sys.path)
from _paths import portable  # noqa: E402

import rartsprune  # noqa: E402
from rartsprune.app.models import preresnet  # noqa: E402
from rartsprune.flops import flops_report, format_count  # noqa: E402
from rartsprune.width.latency import allocator_settings  # noqa: E402

MODELS: dict[str, int] = {"resnet50": 224, "mobilenet_v2": 224, "preresnet164": 32}  # name -> input size

#: batch (as a string) -> variant ("unpruned", "round_to=8", ...) -> one round's median time in ms
RoundTimings = Mapping[str, Mapping[str, float]]


# --------------------------------------------------------------------------------------------------------------
# aggregation across rounds (pure: no timing, no torch)
# --------------------------------------------------------------------------------------------------------------


def split_rounds(n: int) -> tuple[list[int], list[int]]:
    """Positions (0-based) of the selection rounds (1st, 3rd, 5th, ...) and of the report rounds (2nd, 4th, ...).

    Examples:
        >>> split_rounds(5)
        ([0, 2, 4], [1, 3])
    """
    if n < 2:
        raise ValueError(f"need at least 2 rounds to split them into selection and report rounds, got {n}")
    return list(range(0, n, 2)), list(range(1, n, 2))


def _spread(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and relative spread (max / min - 1) of one variant's per-round times."""
    lo, hi = min(values), max(values)
    return {"median_ms": statistics.median(values), "min_ms": lo, "max_ms": hi, "spread": hi / lo - 1,
            "rounds_ms": list(values)}


def aggregate(round_ms: Sequence[RoundTimings], macs: Mapping[str, float], *, target: float = TARGET,
              noise_limit: float = NOISE_LIMIT) -> dict[str, Any]:
    """Combine one model's per-round median times into medians, spreads, the best ``round_to`` and noise flags.

    Args:
        round_ms: one mapping per round, ``round_ms[i][batch][variant]`` = round ``i``'s median time in ms.
            Every round must hold the same batches and variants, among them ``"unpruned"``.
        macs: MACs per variant (``"unpruned"`` included).
        target: the efficiency (speed-up / MACs ratio) a variant must reach at every batch size.
        noise_limit: a batch whose unpruned time varies by more than this between rounds (max / min - 1) is
            flagged ``noisy``.

    Returns:
        ``{"split", "macs", "batches", "best", "noisy", "max_unpruned_variation"}``. ``batches[b]`` holds the
        unpruned time's median and spread across rounds, its variation and ``noisy`` flag, and per pruned
        variant the median / spread of its time, the speed-up, MACs ratio and efficiency from the medians over
        all rounds (also under ``"selection"`` and ``"report"``: from the medians over those rounds only) and
        the per-round speed-ups. ``best`` is the variant chosen on the selection rounds — the fastest
        (geometric mean speed-up over the batch sizes) among those reaching ``target`` at every batch size, or
        if none does, the one with the highest worst-case efficiency — with its numbers from the report rounds
        at the top level (``worst_efficiency``, ``mean_speedup``, ``meets_target``) and under ``"report"``, and
        the numbers it was chosen on under ``"selection"``.

    Raises:
        ValueError: fewer than 2 rounds, rounds that disagree on batches or variants, no pruned variant, a
            missing MACs count or a time that is not a positive finite number.
    """
    n = len(round_ms)
    selection, report = split_rounds(n)
    batches = list(round_ms[0])
    if not batches:
        raise ValueError("round 1 holds no batch sizes")
    variants = list(round_ms[0][batches[0]])
    if "unpruned" not in variants:
        raise ValueError(f"no 'unpruned' timing among the variants {variants}")
    pruned = [k for k in variants if k != "unpruned"]
    if not pruned:
        raise ValueError("no pruned variant to compare with the unpruned model")
    for i, rnd in enumerate(round_ms):
        if set(rnd) != set(batches):
            raise ValueError(f"round {i + 1} has batches {sorted(rnd)}, round 1 has {sorted(batches)}")
        for b in batches:
            if set(rnd[b]) != set(variants):
                raise ValueError(f"round {i + 1}, batch {b}: variants {sorted(rnd[b])} differ from {sorted(variants)}")
            for k, t in rnd[b].items():
                if not (isinstance(t, int | float) and math.isfinite(t) and t > 0):
                    raise ValueError(f"round {i + 1}, batch {b}, {k}: time {t!r} is not a positive number")
    missing = [k for k in variants if k not in macs]
    if missing:
        raise ValueError(f"no MACs count for {missing}")

    def medians(positions: Sequence[int]) -> dict[str, dict[str, float]]:
        return {b: {k: statistics.median(round_ms[i][b][k] for i in positions) for k in variants} for b in batches}

    macs_ratio = {k: macs["unpruned"] / macs[k] for k in pruned}
    med = {"all": medians(range(n)), "selection": medians(selection), "report": medians(report)}

    def score(half: str, b: str, k: str) -> dict[str, float]:
        speedup = med[half][b]["unpruned"] / med[half][b][k]
        return {"speedup": speedup, "efficiency": speedup / macs_ratio[k]}

    out_batches: dict[str, Any] = {}
    for b in batches:
        unpruned = _spread([rnd[b]["unpruned"] for rnd in round_ms])
        rows = {}
        for k in pruned:
            rows[k] = {**_spread([rnd[b][k] for rnd in round_ms]), "macs_ratio": macs_ratio[k], **score("all", b, k),
                       "speedup_rounds": [rnd[b]["unpruned"] / rnd[b][k] for rnd in round_ms],
                       "selection": score("selection", b, k), "report": score("report", b, k)}
            rows[k]["ms"] = rows[k]["median_ms"]
        out_batches[b] = {"unpruned": unpruned, "unpruned_ms": unpruned["median_ms"],
                          "unpruned_variation": unpruned["spread"], "noisy": unpruned["spread"] > noise_limit,
                          "pruned": rows}

    def worst(k: str, half: str) -> float:
        return min(out_batches[b]["pruned"][k][half]["efficiency"] for b in batches)

    def mean_speedup(k: str, half: str) -> float:
        return statistics.geometric_mean(out_batches[b]["pruned"][k][half]["speedup"] for b in batches)

    meeting = [k for k in pruned if worst(k, "selection") >= target]
    best = (max(meeting, key=lambda k: mean_speedup(k, "selection")) if meeting
            else max(pruned, key=lambda k: worst(k, "selection")))

    def numbers(half: str) -> dict[str, Any]:
        return {"worst_efficiency": worst(best, half), "mean_speedup": mean_speedup(best, half),
                "meets_target": worst(best, half) >= target,
                "efficiency": {b: out_batches[b]["pruned"][best][half]["efficiency"] for b in batches}}

    rep = numbers("report")
    best_info = {"variant": best, "worst_efficiency": rep["worst_efficiency"], "mean_speedup": rep["mean_speedup"],
                 "meets_target": rep["meets_target"], "chosen_on_rounds": [i + 1 for i in selection],
                 "reported_from_rounds": [i + 1 for i in report], "selection": numbers("selection"), "report": rep}
    variation = max(out_batches[b]["unpruned_variation"] for b in batches)
    return {"split": {"selection_rounds": [i + 1 for i in selection], "report_rounds": [i + 1 for i in report]},
            "macs": dict(macs), "batches": out_batches, "best": best_info,
            "noisy": any(out_batches[b]["noisy"] for b in batches), "max_unpruned_variation": variation}


# --------------------------------------------------------------------------------------------------------------
# one round (runs in its own process)
# --------------------------------------------------------------------------------------------------------------


def build_model(name: str) -> nn.Module:
    """A freshly initialised ``name`` (one of ``MODELS``), weights from the current torch seed."""
    import torchvision

    builders: dict[str, Callable[[], nn.Module]] = {
        "resnet50": lambda: torchvision.models.resnet50(),
        "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(),
        "preresnet164": lambda: preresnet(164, 10),
    }
    if name not in builders:
        raise ValueError(f"unknown model {name!r}; choose from {sorted(builders)}")
    return builders[name]()


def variant_name(round_to: int | None) -> str:
    """The variant's key in the results, e.g. ``round_to=8`` or ``round_to=None``."""
    return f"round_to={round_to}"


def reps_at(batch: int, reps: int) -> int:
    """Timed repetitions per round at ``batch``: ``reps`` at batch 1, a quarter of it above, at least 3."""
    return max(3, reps if batch == 1 else reps // 4)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def _time(model: nn.Module, x: torch.Tensor, device: torch.device) -> float:
    _sync(device)
    t0 = time.perf_counter()
    model(x)
    _sync(device)
    return time.perf_counter() - t0


def prune_copy(model: nn.Module, example: torch.Tensor, ratio: float, round_to: int | None) -> nn.Module:
    """A pruned copy of ``model`` (``ratio`` of the channels removed by one-shot l1_norm), in eval mode."""
    pruned = copy.deepcopy(model)
    pruner = rartsprune.prune(pruned, ratio=ratio, method="l1_norm", example_inputs=example, round_to=round_to)
    return pruner.finalize().eval()


def fingerprint(model: nn.Module) -> str:
    """SHA-256 of the state dict (names, shapes, values): equal across rounds iff they pruned the same channels."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def time_model(model: nn.Module, size: int, batches: Sequence[int], roundings: Sequence[int | None], ratio: float,
               reps: int, device: torch.device, *, channels_last: bool = False, seed: int = 0,
               rotate: int = 0) -> dict[str, Any]:
    """Prune ``model`` with every rounding and time it and its pruned copies interleaved, at every batch size.

    Within each repetition every variant runs once, in an order rotated by ``rotate`` positions (the round
    index), so no variant always runs right after the same one. Returns the input size, the MACs and fingerprint
    per variant and, per batch, the repetitions, the order, every repetition's time and the median (ms).
    """
    model = model.to(device).eval()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    gen = torch.Generator().manual_seed(seed)
    example = torch.randn(1, 3, size, size, generator=gen).to(device)
    variants = {"unpruned": model}
    for r in roundings:
        variants[variant_name(r)] = prune_copy(model, example, ratio, r)
    variants = {k: m.to(memory_format=fmt) for k, m in variants.items()}
    macs = {k: flops_report(m, example).macs for k, m in variants.items()}
    order = rotated(list(variants), rotate)
    out: dict[str, Any] = {"input": size, "macs": macs, "fingerprint": {k: fingerprint(m) for k, m in variants.items()},
                           "batches": {}}
    for b in batches:
        x = torch.randn(b, 3, size, size, generator=gen).to(device).contiguous(memory_format=fmt)
        n = reps_at(b, reps)
        times = time_interleaved(variants, x, n, order, device)
        out["batches"][str(b)] = {"reps": n, "order": order, "times_ms": times,
                                  "median_ms": {k: statistics.median(v) for k, v in times.items()}}
    return out


def rotated(keys: Sequence[str], rotate: int) -> list[str]:
    """``keys`` rotated by ``rotate`` positions (the round index), so no variant always runs after the same one.

    Examples:
        >>> rotated(["a", "b", "c"], 1)
        ['b', 'c', 'a']
    """
    k = rotate % len(keys)
    return list(keys[k:]) + list(keys[:k])


def time_interleaved(variants: Mapping[str, nn.Module], x: torch.Tensor, reps: int, order: Sequence[str],
                     device: torch.device) -> dict[str, list[float]]:
    """Two warm-up runs of every variant, then ``reps`` repetitions in each of which every variant runs once, in
    ``order``; every repetition's time in ms per variant."""
    for k in order:  # warm-up
        _time(variants[k], x, device)
        _time(variants[k], x, device)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(reps):
        for k in order:
            times[k].append(1e3 * _time(variants[k], x, device))
    return times


def device_name(device: torch.device, channels_last: bool) -> str:
    """How the results name the hardware, e.g. ``cpu (1 threads)``."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    return name + (", channels_last" if channels_last else "")


def run_round(args: argparse.Namespace, index: int) -> dict[str, Any]:
    """One round in this process: every model built afresh from the seed, pruned and timed at every batch size."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    models = {}
    for name in args.models:
        torch.manual_seed(args.seed)
        models[name] = time_model(build_model(name), MODELS[name], args.batches, args.round_to, args.ratio,
                                  args.reps, device, channels_last=args.channels_last, seed=args.seed, rotate=index)
    return {"round": index + 1, "pid": os.getpid(), "device": device_name(device, args.channels_last),
            "models": models}


def _round_in_subprocess(args: argparse.Namespace, index: int, workdir: Path) -> dict[str, Any]:
    """Run round ``index`` in a fresh Python process (this script with the hidden ``--one-round``)."""
    path = workdir / f"round{index + 1}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one-round", str(path), "--round-index", str(index),
           "--device", args.device, "--ratio", repr(args.ratio), "--batches", ",".join(map(str, args.batches)),
           "--round-to", ",".join("none" if r is None else str(r) for r in args.round_to), "--reps", str(args.reps),
           "--models", ",".join(args.models), "--seed", str(args.seed)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if args.channels_last:
        cmd.append("--channels-last")
    return run_child(cmd, path, args.threads, f"round {index + 1}")


def run_child(cmd: Sequence[str], path: Path, threads: int | None, what: str) -> dict[str, Any]:
    """Run ``cmd`` (a fresh Python process that writes its JSON result to ``path``) and return that result, with
    ``seconds`` (its wall time) added. ``threads``: the child's OMP / MKL thread count (``None``: inherited).

    Raises:
        RuntimeError: the child failed (the message holds the end of its standard error).
    """
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), capture_output=True, text=True, env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads(path.read_text())
    result["seconds"] = time.perf_counter() - t0
    return result


# --------------------------------------------------------------------------------------------------------------
# results
# --------------------------------------------------------------------------------------------------------------


def combine(rounds: Sequence[Mapping[str, Any]], models: Sequence[str], ratio: float, *, target: float = TARGET,
            noise_limit: float = NOISE_LIMIT) -> list[dict[str, Any]]:
    """One row per model from the rounds' raw results (``run_round``'s output), via ``aggregate``.

    Raises:
        RuntimeError: two rounds pruned a model differently (MACs or weights differ): the seeding is broken.
    """
    rows = []
    for name in models:
        first = rounds[0]["models"][name]
        for rnd in rounds[1:]:
            this = rnd["models"][name]
            if this["macs"] != first["macs"] or this["fingerprint"] != first["fingerprint"]:
                raise RuntimeError(f"round {rnd['round']} pruned {name} differently from round {rounds[0]['round']}: "
                                   f"MACs {this['macs']} vs {first['macs']}, fingerprints {this['fingerprint']} vs "
                                   f"{first['fingerprint']}")
        round_ms = [{b: d["median_ms"] for b, d in rnd["models"][name]["batches"].items()} for rnd in rounds]
        agg = aggregate(round_ms, first["macs"], target=target, noise_limit=noise_limit)
        for b, d in agg["batches"].items():
            d["reps"] = first["batches"][b]["reps"]
        rows.append({"model": name, "input": first["input"], "ratio": ratio, **agg})
    return rows


def noise_warnings(noisy: Sequence[tuple[str, Any, float]]) -> list[str]:
    """Markdown warning lines, then a blank line, for every ``(model, batch, variation)`` flagged noisy; ``[]``
    when none is.

    Examples:
        >>> noise_warnings([("resnet50", 1, 0.14)])[0]
        '> **Warning** resnet50, batch 1: timings varied by 14% between rounds: rerun on an idle machine.  '
    """
    if not noisy:
        return []
    return [f"> **Warning** {model}, batch {batch}: timings varied by {100 * variation:.0f}% between rounds: rerun "
            "on an idle machine.  " for model, batch, variation in noisy] + [""]


def format_spread(d: Mapping[str, Any], digits: int = 1) -> str:
    """A `_spread` as ``min–max (spread%)``, e.g. ``9.8–10.4 (6%)``."""
    return f"{d['min_ms']:.{digits}f}–{d['max_ms']:.{digits}f} ({100 * d['spread']:.0f}%)"


def _rounds_text(numbers: Sequence[int]) -> str:
    return ", ".join(map(str, numbers))


def render_markdown(result: Mapping[str, Any]) -> str:
    """The markdown report: protocol, noise warnings, the table (median, spread, flag) and the best roundings."""
    s, split = result["settings"], result["split"]
    sel, rep = _rounds_text(split["selection_rounds"]), _rounds_text(split["report_rounds"])
    reps = ", ".join(f"{reps_at(b, s['reps'])} repetitions at batch {b}" for b in s["batches"])
    lines = [f"# Speed-up of pruned models ({result['device']}, {100 * s['ratio']:.0f}% of channels removed, "
             "l1_norm selection)", "",
             f"{s['rounds']} rounds, each in a fresh process with freshly built models (seed {s['seed']}: every "
             f"round prunes the same channels). A round times the unpruned model and every variant interleaved "
             f"({reps}) and keeps the median. **ms** is the median across rounds of those medians, "
             "**spread** their min–max across rounds (and max / min − 1); speed-up and efficiency (speed-up / MACs "
             "ratio) come from the medians over all rounds, or, in the last two columns, over the selection "
             f"rounds ({sel}) and the report rounds ({rep}). The best `round_to` is chosen on the selection "
             "rounds and its efficiency is reported from the report rounds only, so picking the best of several "
             f"noisy variants does not inflate it. A model / batch whose unpruned time varies by more than "
             f"{100 * result['noise_limit']:.0f}% between rounds is flagged noisy.", ""]
    lines += noise_warnings([(r["model"], b, d["unpruned_variation"]) for r in result["rows"]
                             for b, d in r["batches"].items() if d["noisy"]])
    lines += ["| model | batch | variant | MACs | ms (median) | spread across rounds | speed-up | MACs ratio | "
              "efficiency | eff. selection | eff. report | noisy |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        for b, d in r["batches"].items():
            flag = "**yes**" if d["noisy"] else "no"
            lines.append(f"| {r['model']} | {b} | unpruned | {format_count(r['macs']['unpruned'])} | "
                         f"{d['unpruned']['median_ms']:.1f} | {format_spread(d['unpruned'])} | | | | | | {flag} |")
            for k, v in d["pruned"].items():
                mark = " **best**" if k == r["best"]["variant"] else ""
                lines.append(f"| {r['model']} | {b} | {k}{mark} | {format_count(r['macs'][k])} | {v['median_ms']:.1f} | "
                             f"{format_spread(v)} | {v['speedup']:.2f}x | {v['macs_ratio']:.2f}x | {v['efficiency']:.2f} | "
                             f"{v['selection']['efficiency']:.2f} | {v['report']['efficiency']:.2f} | |")
    lines += ["", f"Best rounding per model, chosen on the selection rounds ({sel}) — the fastest variant with "
              f"speed-up >= {result['target_efficiency']} x MACs ratio at every batch size; if none, the most "
              f"efficient — and reported from the report rounds ({rep}) only:", ""]
    for r in result["rows"]:
        best = r["best"]
        verdict = "meets the target" if best["meets_target"] else "misses the target"
        noisy = " (noisy: rerun on an idle machine)" if r["noisy"] else ""
        lines.append(f"- {r['model']}: {best['variant']} — report rounds: worst-case efficiency "
                     f"{best['worst_efficiency']:.2f}, mean speed-up {best['mean_speedup']:.2f}x, {verdict} "
                     f"(selection rounds: {best['selection']['worst_efficiency']:.2f}){noisy}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _int_list(text: str) -> list[int]:
    return [_positive_int(t) for t in text.split(",")]


def _roundings(text: str) -> list[int | None]:
    return [None if t.strip().lower() == "none" else _positive_int(t) for t in text.split(",")]


def model_list(known: Sequence[str]) -> Callable[[str], list[str]]:
    """An argparse type: a comma list of model names among ``known``."""
    def parse(text: str) -> list[str]:
        names = text.split(",")
        unknown = [n for n in names if n not in known]
        if unknown:
            raise argparse.ArgumentTypeError(f"unknown model(s) {unknown}; choose from {', '.join(known)}")
        return names

    return parse


_models = model_list(list(MODELS))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, validated (bad values end with argparse's usage message)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--ratio", type=float, default=0.4, help="fraction of the channels removed")
    ap.add_argument("--batches", type=_int_list, default=[1, 32], help="comma list (default 1,32)")
    ap.add_argument("--round-to", type=_roundings, default=[None, 8, 16, 32],
                    help="comma list; 'none' = exact widths (default none,8,16,32)")
    ap.add_argument("--reps", type=_positive_int, default=20,
                    help="timed repetitions per round at batch 1 (a quarter of it at larger batches, at least 3)")
    ap.add_argument("--rounds", type=int, default=5,
                    help="independent rounds, each in a fresh process; at least 2 (selection and report halves)")
    ap.add_argument("--models", type=_models, default=list(MODELS), help=f"comma list of {', '.join(MODELS)}")
    ap.add_argument("--threads", type=_positive_int, default=None, help="torch.set_num_threads in every round")
    ap.add_argument("--seed", type=int, default=0, help="weights and inputs: the same in every round")
    ap.add_argument("--channels-last", action="store_true", help="run every model (and input) in channels_last")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "speedup.json",
                    help="JSON results; the markdown goes next to it with the suffix .md")
    ap.add_argument("--allocator", choices=_alloc.CHOICES, default="retain",
                    help="retain: run with glibc's heap kept in the process (bench/_alloc.py; the default: timings "
                         "otherwise swing with page faults); system: the environment as it is")
    ap.add_argument("--one-round", type=Path, default=None, help=argparse.SUPPRESS)  # internal: a round's JSON
    ap.add_argument("--round-index", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rounds < 2:
        ap.error(f"--rounds must be at least 2 (got {args.rounds}): the rounds are split into a half that chooses "
                 "the best round_to and a half that reports it")
    if not 0 < args.ratio < 1:
        ap.error(f"--ratio must lie strictly between 0 and 1, got {args.ratio}")
    if len(set(args.round_to)) != len(args.round_to):
        ap.error(f"--round-to lists a value twice: {args.round_to}")
    if len(set(args.models)) != len(args.models) or len(set(args.batches)) != len(args.batches):
        ap.error("--models and --batches must not repeat a value")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one_round is not None:  # child process: one round, JSON to the given file
        args.one_round.write_text(json.dumps(run_round(args, args.round_index)))
        return 0
    rounds = []
    with tempfile.TemporaryDirectory(prefix="speedup-rounds-") as tmp:
        for i in range(args.rounds):
            rounds.append(_round_in_subprocess(args, i, Path(tmp)))
            print(f"round {i + 1}/{args.rounds} done in {rounds[-1]['seconds']:.0f} s", flush=True)
    rows = combine(rounds, args.models, args.ratio)
    selection, report = split_rounds(args.rounds)
    settings = {"rounds": args.rounds, "reps": args.reps, "batches": args.batches, "round_to": args.round_to,
                "models": args.models, "ratio": args.ratio, "threads": args.threads, "seed": args.seed,
                "device": args.device, "channels_last": args.channels_last, "out": portable(args.out),
                "allocator": args.allocator, "allocator_env": allocator_settings()}
    result = {"device": rounds[0]["device"], "torch": torch.__version__, "target_efficiency": TARGET,
              "noise_limit": NOISE_LIMIT, "settings": settings,
              "split": {"selection_rounds": [i + 1 for i in selection], "report_rounds": [i + 1 for i in report],
                        "rule": "best round_to chosen by efficiency on the selection rounds; its efficiency is "
                                "reported from the report rounds only"},
              "noisy": any(r["noisy"] for r in rows), "rows": rows, "rounds": rounds}
    text = render_markdown(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    args.out.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    _alloc.exec_with_allocator()
    sys.exit(main())
