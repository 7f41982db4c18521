"""One GPU check: every GPU measurement this project wants, in one command, within a time budget.

The first time a GPU is available, one call records everything::

    python bench/gpu_check.py --out "$OUT"                       # on the GPU machine (default --device cuda)
    python bench/gpu_check.py --device cpu --quick --out /tmp/gc  # the plumbing, on any machine

Steps, each a subprocess with its own time limit (its share of ``--budget-s``, default 450 s, so that the whole
check ends within 8 minutes); a step that fails or runs out of time is recorded and the next one runs:

1. ``install`` — when ``--wheels`` (default ``.whl``) holds wheels and torch-pruning or fvcore cannot be
   imported, ``pip install --no-index --no-deps --target`` them into a scratch folder that the later steps put
   on ``PYTHONPATH`` (GPU images usually lack torch-pruning, fvcore, iopath, yacs and termcolor; build the
   wheels on a machine with the project's venv: ``make gpu-wheels``);
2. ``env`` — torch / CUDA versions and the device's name (``env.json``);
3. ``gpu_smoke`` — a RARTS search step, surgery and a fine-tuning step in fp32, bf16 and fp16
   (``bench/gpu_smoke.py``; ``gpu_smoke.json``);
4. ``step_cost`` — the search optimizers' step time against the pass-count floor (``bench/step_cost.py``;
   ``step_cost.json``);
5. ``speedup`` — measured speed-up of pruned ResNet-50 and MobileNetV2 in independent rounds
   (``bench/speedup.py``; ``speedup.json``);
6. ``width_bf16`` — a short width search end to end through the job runner with bf16 autocast
   (``python -m rartsprune prune ... --amp bf16``; its ``results.json`` as ``width_bf16.json``).

Writes ``summary.json`` (each step's command, exit code, wall time, output file and, on failure, the end of its
output) and ``gpu_check.log`` into ``--out``: at most eight files, none in subfolders, so the device tool
brings all of them back. Exit code 0 when every step passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Packages the project needs that GPU images tend to lack (``make gpu-wheels`` builds these).
NEEDED = ("torch_pruning", "fvcore")
#: Each step's share of the time budget (the rest is slack for installs and start-up).
SHARES = {"install": 0.08, "env": 0.04, "gpu_smoke": 0.14, "step_cost": 0.2, "speedup": 0.3, "width_bf16": 0.2}


@dataclass
class Step:
    """One step of the check: what ran and how it ended."""

    name: str
    cmd: list[str]
    output: str | None = None
    rc: int | None = None
    wall_s: float = 0.0
    timed_out: bool = False
    skipped: str | None = None
    tail: str = ""
    extra: dict = field(default_factory=dict)


def _missing(env: dict[str, str]) -> list[str]:
    """The packages of `NEEDED` the Python that runs the steps cannot import (with ``env``'s PYTHONPATH)."""
    code = ("import importlib.util, sys; "
            f"print(','.join(m for m in {NEEDED!r} if importlib.util.find_spec(m) is None))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    return [m for m in out.stdout.strip().split(",") if m]


def plan(args: argparse.Namespace, out: Path, scratch: Path) -> list[Step]:
    """The steps' commands (``--quick``: the smallest settings, to check the plumbing)."""
    py = sys.executable
    dev = args.device
    quick = args.quick
    env_code = ("import json, torch, sys; d = torch.device(sys.argv[1]); "
                "info = {'python': sys.version.split()[0], 'torch': torch.__version__, "
                "'cuda': torch.version.cuda, 'cuda_available': torch.cuda.is_available(), "
                "'device': torch.cuda.get_device_name(d) if d.type == 'cuda' else 'cpu', "
                "'bf16_supported': torch.cuda.is_bf16_supported() if d.type == 'cuda' else None}; "
                "open(sys.argv[2], 'w').write(json.dumps(info, indent=1)); print(info)")
    wheels = sorted(str(p) for p in Path(args.wheels).glob("*.whl")) if args.wheels else []
    job = scratch / "width_bf16"
    return [
        Step("install", [py, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                         "--no-cache-dir", "--upgrade", "--target", str(scratch / "site"), *wheels]),
        Step("env", [py, "-c", env_code, dev, str(out / "env.json")], output="env.json"),
        Step("gpu_smoke", [py, str(ROOT / "bench" / "gpu_smoke.py"), "--device", dev,
                           "--steps", "2" if quick else "5", "--batch", "8" if quick else "64",
                           "--out", str(out / "gpu_smoke.json")], output="gpu_smoke.json"),
        Step("step_cost", [py, str(ROOT / "bench" / "step_cost.py"), "--device", dev,
                           *(["--rounds", "1", "--steps-per-round", "1", "--no-memory"] if quick else []),
                           "--out", str(out / "step_cost.json")], output="step_cost.json"),
        Step("speedup", [py, str(ROOT / "bench" / "speedup.py"), "--device", dev, "--models",
                         "preresnet164" if quick else "resnet50,mobilenet_v2",
                         "--rounds", "2" if quick else "5", "--reps", "1" if quick else "20",
                         "--round-to", "none,8" if quick else "none,8,32", "--batches", "1" if quick else "1,32",
                         "--out", str(out / "speedup.json")], output="speedup.json"),
        Step("width_bf16", [py, "-m", "rartsprune", "prune", "--model", "torchvision:resnet18", "--data", "fake",
                            "--device", dev, "--amp", "bf16", "--pretrain-epochs", "0", "--search-epochs", "1",
                            "--finetune-epochs", "1", "--train-subset", "64" if quick else "2048",
                            "--test-subset", "32" if quick else "512", "--batch-size", "16" if quick else "128",
                            "--image-size", "32" if quick else "64", "--ratio", "0.4", "--no-plots",
                            "--no-progress", "--out", str(job)], output="width_bf16.json"),
    ]


def run_steps(steps: list[Step], args: argparse.Namespace, out: Path, scratch: Path) -> list[Step]:
    """Run every step within its share of the budget; ``install`` only when something is missing."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    log = (out / "gpu_check.log").open("w")
    for step in steps:
        if step.name == "install":
            missing = _missing(env)
            if not missing:
                step.skipped = "nothing missing"
            elif len(step.cmd) == step.cmd.index("--target") + 2:  # no wheels given
                step.skipped = f"missing {missing} and no wheels in {args.wheels!r} (make gpu-wheels)"
            step.extra["missing"] = missing
        if step.skipped:
            log.write(f"== {step.name}: skipped ({step.skipped})\n")
            continue
        limit = max(10.0, SHARES[step.name] * args.budget_s)
        log.write(f"== {step.name} (limit {limit:.0f} s): {' '.join(step.cmd)}\n")
        log.flush()
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(step.cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                                  check=False)
            step.rc, text = proc.returncode, proc.stdout + proc.stderr
        except subprocess.TimeoutExpired as exc:
            step.timed_out, step.rc = True, 124
            text = "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr))
        step.wall_s = time.perf_counter() - t0
        log.write(text + "\n")
        log.flush()
        if step.rc != 0:
            step.tail = text[-3000:]
        if step.name == "install" and step.rc == 0:
            env["PYTHONPATH"] = os.pathsep.join((str(scratch / "site"), env["PYTHONPATH"]))
            step.extra["still_missing"] = _missing(env)
        if step.name == "width_bf16" and step.rc == 0:
            shutil.copyfile(scratch / "width_bf16" / "results.json", out / "width_bf16.json")
        if step.output and step.rc == 0 and not (out / step.output).exists():
            step.rc, step.tail = 1, f"exit code 0 but no {step.output}"
        print(f"{step.name}: {'timed out' if step.timed_out else f'rc {step.rc}'} in {step.wall_s:.1f} s", flush=True)
    log.close()
    return steps


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu: to check the plumbing)")
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or ROOT / "bench" / "results" / "gpu"),
                    help="folder for the JSON files (default: $OUT when set, else bench/results/gpu)")
    ap.add_argument("--wheels", default=".whl", help="folder of wheels to install when packages are missing")
    ap.add_argument("--budget-s", type=float, default=450.0, help="time budget of the whole check (seconds)")
    ap.add_argument("--quick", action="store_true", help="the smallest settings (checks the plumbing)")
    ap.add_argument("--steps", default=",".join(SHARES),
                    help=f"comma list of the steps to run (default: all of {', '.join(SHARES)})")
    args = ap.parse_args(argv)
    names = [s for s in args.steps.split(",") if s]
    unknown = sorted(set(names) - set(SHARES))
    if unknown:
        ap.error(f"unknown steps {unknown}; valid: {', '.join(SHARES)}")
    if args.budget_s <= 0:
        ap.error(f"--budget-s must be positive, got {args.budget_s}")
    if args.device.startswith("cuda") and importlib.util.find_spec("torch") is not None:
        import torch

        if not torch.cuda.is_available():
            print("no CUDA device here: nothing to check (use --device cpu --quick to check the plumbing)")
            return 2
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        steps = [s for s in plan(args, out, Path(tmp)) if s.name in names]
        run_steps(steps, args, out, Path(tmp))
    ok = all(s.skipped or s.rc == 0 for s in steps)
    summary = {"device": args.device, "quick": args.quick, "budget_s": args.budget_s,
               "total_wall_s": time.perf_counter() - t0, "ok": ok, "steps": [asdict(s) for s in steps]}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(f"{'all steps passed' if ok else 'some steps failed'}: {out / 'summary.json'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
