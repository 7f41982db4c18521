"""Wall time and peak memory of one search step: plain training vs RARTS (exact, fused), DARTS-1/2, MiLeNAS.

All methods run on copies of the same CIFAR-sized supernet (3x32x32 inputs; per layer a softmax(alpha)-mixed
choice of conv3x3 / conv5x5 / dilated conv3x3 / max-pool / avg-pool / skip, ReLU-conv-BN ops as in DARTS,
three stages at 32, 16, 8 pixels) and the same random batches, with each method's defaults (SGD momentum
0.9 for weights, Adam for alpha, gradient clipping 5, the non-finite undo snapshot on). Timings are
interleaved: every round runs a few steps of each method in a rotated order, and the per-step time of a
method is the median over rounds.

Also timed, for reference: ``darts1_reference_style`` — first-order DARTS as the DARTS reference code does
it, with a *full* backward (weight gradients included, then discarded) in the alpha pass. The library's
DARTS-1 differentiates the alpha pass w.r.t. alpha only, which skips the weight-gradient kernels.

Also timed, to explain the ratios: ``pass_full`` (one forward+backward w.r.t. weights and alpha, no optimizer)
and ``pass_alpha_only`` (w.r.t. alpha only). From them the JSON gives ``pass_count_floors``: the ratio each
comparison would have if a step cost nothing but its passes (fused RARTS 2 full; DARTS-1 1 full + 1 alpha-only;
DARTS-2 3 full + 2 alpha-only), and ``ratio_over_floor``, the measured ratio divided by that floor.

Peak memory: on CUDA, ``torch.cuda.max_memory_allocated`` minus the allocation before the method's model
was built (so it includes the method's model copies, optimizer states, undo snapshot and activations). On
CPU, the peak-RSS delta of a fresh subprocess per method (resident set size sampled every 0.5 ms during the
steps, minus the RSS before the method's model was built; Linux), which also counts allocator caching, so
read it as an upper bound.

The defaults (batch 32, 8 stem channels, 2 mixed layers per stage, one CPU thread) keep the default run to
a few minutes on a small shared CPU; ``--batch-size 64 --channels 16`` is the DARTS search setting (use it
on a GPU).

Usage:
    python bench/step_cost.py [--device cpu|cuda] [--batch-size 32] [--channels 8] [--rounds 8]
                              [--out bench/results/step_cost.json]
"""

from __future__ import annotations

import argparse
import copy
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from _paths import portable  # noqa: E402  (bench/ is on sys.path when a script runs)

from rartsprune.optim import make_search_optimizer  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "step_cost.json"
METHODS = ("plain", "darts1", "darts1_reference_style", "darts2", "milenas", "rarts_fused", "rarts_exact")
PASSES = {  # forward+backward passes per step: (with weight gradients, alpha-only)
    "plain": (1, 0), "darts1": (1, 1), "darts1_reference_style": (2, 0), "darts2": (3, 2),
    "milenas": (1, 1), "rarts_fused": (2, 0), "rarts_exact": (2, 2),
    "pass_full": (1, 0), "pass_alpha_only": (0, 1),
}
# Not methods: one bare forward+backward of the supernet, timed in the same rounds, to measure what a pass
# costs. ``pass_full`` differentiates w.r.t. weights and alpha, ``pass_alpha_only`` w.r.t. alpha only.
PROBES = ("pass_full", "pass_alpha_only")


# ---------------------------------------------------------------------------------------------- the network
class ReLUConvBN(nn.Sequential):
    def __init__(self, c: int, k: int, dilation: int = 1) -> None:
        pad = dilation * (k - 1) // 2
        super().__init__(nn.ReLU(), nn.Conv2d(c, c, k, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(c, affine=False))


def candidate_ops(c: int) -> nn.ModuleList:
    return nn.ModuleList([
        ReLUConvBN(c, 3), ReLUConvBN(c, 5), ReLUConvBN(c, 3, dilation=2),
        nn.MaxPool2d(3, 1, 1), nn.AvgPool2d(3, 1, 1, count_include_pad=False), nn.Identity(),
    ])


class SuperNet(nn.Module):
    """Stem, then ``layers_per_stage`` mixed layers per stage (3 stages, channels doubling), then a classifier."""

    def __init__(self, channels: int = 16, layers_per_stage: int = 2, classes: int = 10) -> None:
        super().__init__()
        n_ops = len(candidate_ops(1))
        self.alpha = nn.Parameter(1e-3 * torch.randn(3 * layers_per_stage, n_ops))
        self.stem = nn.Sequential(nn.Conv2d(3, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
        self.mixed = nn.ModuleList()
        self.down = nn.ModuleList()
        c = channels
        for stage in range(3):
            if stage:
                self.down.append(nn.Sequential(nn.ReLU(), nn.Conv2d(c, 2 * c, 3, stride=2, padding=1, bias=False),
                                               nn.BatchNorm2d(2 * c)))
                c *= 2
            for _ in range(layers_per_stage):
                self.mixed.append(candidate_ops(c))
        self.layers_per_stage = layers_per_stage
        self.head = nn.Linear(c, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        weights = torch.softmax(self.alpha, dim=-1)
        for i, ops in enumerate(self.mixed):
            if i and i % self.layers_per_stage == 0:
                x = self.down[i // self.layers_per_stage - 1](x)
            x = sum(w * op(x) for w, op in zip(weights[i], ops))
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


# ---------------------------------------------------------------------------------------------- the steppers
def make_stepper(name: str, base: SuperNet, guard: bool) -> Callable[[Any, Any], None]:
    """A closure running one step of ``name`` on its own copy of ``base``."""
    net = copy.deepcopy(base)
    if name == "plain":
        net.alpha.requires_grad_(False)
        weights = [p for p in net.parameters() if p.requires_grad]
        opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)

        def plain(bt: Any, bv: Any) -> None:
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(bt[0]), bt[1]).backward()
            torch.nn.utils.clip_grad_norm_(weights, 5.0)
            opt.step()

        return plain
    if name == "darts1_reference_style":
        weights = [p for p in net.parameters() if p is not net.alpha]
        w_opt = torch.optim.SGD(weights, lr=0.025, momentum=0.9, weight_decay=3e-4)
        a_opt = torch.optim.Adam([net.alpha], lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)

        def reference(bt: Any, bv: Any) -> None:
            a_opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(bv[0]), bv[1]).backward()  # full backward, as the DARTS reference code
            a_opt.step()
            w_opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(bt[0]), bt[1]).backward()
            torch.nn.utils.clip_grad_norm_(weights, 5.0)
            w_opt.step()

        return reference
    if name in PROBES:
        params = list(net.parameters()) if name == "pass_full" else [net.alpha]

        def one_pass(bt: Any, bv: Any) -> None:
            torch.autograd.grad(F.cross_entropy(net(bt[0]), bt[1]), params)

        return one_pass
    method, _, mode = name.partition("_")
    kwargs: dict[str, Any] = {"guard_nonfinite": guard}
    if method == "rarts":
        kwargs["mode"] = mode
    opt = make_search_optimizer(method, net, [net.alpha], **kwargs)
    return lambda bt, bv: opt.step(bt, bv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_batches(args: argparse.Namespace, device: torch.device) -> tuple[Any, Any]:
    g = torch.Generator().manual_seed(0)
    def one() -> tuple[Tensor, Tensor]:
        x = torch.randn(args.batch_size, 3, 32, 32, generator=g)
        return x.to(device), torch.randint(0, 10, (args.batch_size,), generator=g).to(device)
    return one(), one()


def time_methods(args: argparse.Namespace, device: torch.device) -> dict[str, list[float]]:
    torch.manual_seed(0)
    base = SuperNet(args.channels, args.layers_per_stage).to(device)
    bt, bv = make_batches(args, device)
    steppers = {m: make_stepper(m, base, not args.no_guard) for m in METHODS + PROBES}
    for step in steppers.values():
        for _ in range(args.warmup):
            step(bt, bv)
    sync(device)
    times: dict[str, list[float]] = {m: [] for m in steppers}
    order = list(steppers)
    for r in tqdm(range(args.rounds), desc="rounds (interleaved)", disable=None):
        rotated = order[r % len(order):] + order[: r % len(order)]
        for m in rotated:
            sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps_per_round):
                steppers[m](bt, bv)
            sync(device)
            times[m].append((time.perf_counter() - t0) / args.steps_per_round)
    return times


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class RSSSampler(threading.Thread):
    """Samples this process's resident set size every ``interval`` seconds and keeps the maximum."""

    def __init__(self, interval: float = 0.0005) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.peak = _rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _rss_bytes())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        return max(self.peak, _rss_bytes())


def memory_probe(args: argparse.Namespace, method: str, device: torch.device) -> dict[str, Any]:
    """Peak memory of ``method`` alone (run in-process on CUDA, in this fresh subprocess on CPU)."""
    torch.manual_seed(0)
    bt, bv = make_batches(args, device)
    sampler = None
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        gc.collect()
        before = _rss_bytes()
        sampler = RSSSampler()
        sampler.start()
    base = SuperNet(args.channels, args.layers_per_stage).to(device)
    step = make_stepper(method, base, not args.no_guard)
    for _ in range(args.memory_steps):
        step(bt, bv)
    sync(device)
    if sampler is None:
        peak = torch.cuda.max_memory_allocated(device) - before
        how = "torch.cuda.max_memory_allocated minus the allocation before building the method's model"
    else:
        peak = sampler.stop() - before
        how = ("CPU peak RSS delta: resident set size sampled every 0.5 ms by a thread during the steps, "
               "minus the RSS before building the method's model (fresh subprocess per method; includes "
               "allocator caching, so an upper bound)")
    del step, base
    return {"peak_bytes": int(max(peak, 0)), "how": how}


def measure_memory(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for m in tqdm(METHODS, desc="memory", disable=None):
        if device.type == "cuda":
            out[m] = memory_probe(args, m, device)
            continue
        cmd = [sys.executable, __file__, "--_memory-probe", m, "--device", "cpu", "--batch-size",
               str(args.batch_size), "--channels", str(args.channels), "--layers-per-stage",
               str(args.layers_per_stage), "--memory-steps", str(args.memory_steps),
               "--threads", str(args.threads)] + (["--no-guard"] if args.no_guard else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[m] = json.loads(proc.stdout.strip().splitlines()[-1])
    return out


def summarise(times: dict[str, list[float]], memory: dict[str, dict[str, Any]] | None) -> dict[str, Any]:
    per: dict[str, Any] = {}
    for m, ts in times.items():
        per[m] = {"median_s": statistics.median(ts), "mean_s": statistics.fmean(ts), "min_s": min(ts),
                  "rounds_s": ts, "passes_with_weight_grads": PASSES[m][0], "passes_alpha_only": PASSES[m][1]}
        if memory is not None and m in memory:
            per[m]["peak_memory_bytes"] = memory[m]["peak_bytes"]
    med = {m: per[m]["median_s"] for m in per}
    ratios = {
        "rarts_fused/darts1": med["rarts_fused"] / med["darts1"],
        "rarts_fused/darts1_reference_style": med["rarts_fused"] / med["darts1_reference_style"],
        "rarts_fused/darts2": med["rarts_fused"] / med["darts2"],
        "rarts_exact/darts1": med["rarts_exact"] / med["darts1"],
        "rarts_exact/darts2": med["rarts_exact"] / med["darts2"],
        "darts1/plain": med["darts1"] / med["plain"],
        "darts2/plain": med["darts2"] / med["plain"],
        "milenas/darts1": med["milenas"] / med["darts1"],
    }
    # What the pass counts alone allow: F = one pass with weight gradients, A = one alpha-only pass. RARTS fused
    # runs two F; DARTS-1 runs F + A; DARTS-2 runs 3F + 2A. The limit of 1.0 for fused/DARTS-1 assumes
    # A = F (DARTS-1 as the reference code runs it); the library's DARTS-1 skips the weight-gradient kernels in
    # its alpha pass, so A < F and the floor of fused/DARTS-1 is 2F / (F + A) > 1.
    full, alpha_only = med["pass_full"], med["pass_alpha_only"]
    floors = {
        "alpha_only/full": alpha_only / full,
        "rarts_fused/darts1": 2 * full / (full + alpha_only),
        "rarts_fused/darts1_reference_style": 1.0,
        "rarts_fused/darts2": 2 * full / (3 * full + 2 * alpha_only),
        "rarts_exact/darts1": 2.0,
    }
    above_floor = {k: ratios[k] / floors[k] for k in floors if k in ratios}
    targets = {
        "rarts_fused <= 1.05 x darts1": ratios["rarts_fused/darts1"] <= 1.05,
        "rarts_fused <= 0.40 x darts2": ratios["rarts_fused/darts2"] <= 0.40,
        "rarts_exact <= 2.0 x darts1": ratios["rarts_exact/darts1"] <= 2.0,
    }
    return {"methods": per, "ratios": ratios, "pass_count_floors": floors, "ratio_over_floor": above_floor,
            "targets_met": targets}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--batch-size", type=int, default=32, help="DARTS searches use 64")
    p.add_argument("--channels", type=int, default=8, help="stem channels (DARTS uses 16)")
    p.add_argument("--layers-per-stage", type=int, default=2)
    p.add_argument("--rounds", type=int, default=8)
    p.add_argument("--steps-per-round", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--memory-steps", type=int, default=2)
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurements")
    p.add_argument("--no-guard", action="store_true", help="run the search optimizers with guard_nonfinite=False")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: far less noisy on a shared machine; 0: torch's default)")
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument("--_memory-probe", dest="memory_probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("batch_size", "channels", "layers_per_stage", "rounds", "steps_per_round", "memory_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda requested but CUDA is not available")
    if args.memory_probe is not None:
        print(json.dumps(memory_probe(args, args.memory_probe, device)))
        return {}
    t_start = time.perf_counter()
    times = time_methods(args, device)
    memory = None if args.no_memory else measure_memory(args, device)
    result = {
        "config": {k: portable(v) for k, v in vars(args).items() if k != "memory_probe"},
        "network": {"params": sum(p.numel() for p in SuperNet(args.channels, args.layers_per_stage).parameters()),
                    "input": [args.batch_size, 3, 32, 32]},
        **summarise(times, memory),
        "memory_method": None if memory is None else memory[METHODS[0]]["how"],
        "environment": {
            "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
            "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
            "loadavg_1min_at_end": os.getloadavg()[0], "python": platform.python_version(),
        },
        "wall_s": time.perf_counter() - t_start,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    for m, r in result["methods"].items():
        mem = f"  peak {r['peak_memory_bytes'] / 2**20:7.1f} MiB" if "peak_memory_bytes" in r else ""
        print(f"{m:24s} {1000 * r['median_s']:8.1f} ms/step{mem}")
    for k, v in result["ratios"].items():
        print(f"{k:36s} {v:.3f}")
    print("targets:", json.dumps(result["targets_met"]))
    print(f"wrote {args.out} ({result['wall_s']:.0f} s)")
    return result


if __name__ == "__main__":
    main()
