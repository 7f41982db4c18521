"""GPU smoke test of the width search: search steps, finalize and a fine-tune step on CUDA, AMP off/bf16/fp16.

Checks that nothing silently falls back to the CPU (every parameter, score and the auxiliary network stay
on the device), that the steps run under autocast (fp16 with a GradScaler), channels_last included, and
times the steps. A few seconds on any CUDA GPU; ``--device cpu`` runs the same checks on a CPU (no AMP fp16).
Writes ``bench/results/gpu_smoke.json``.

    python bench/gpu_smoke.py                 # CUDA
    python bench/gpu_smoke.py --device cpu
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import rartsprune  # noqa: E402


def _devices_of(model: torch.nn.Module) -> set[str]:
    return {t.device.type for t in list(model.parameters()) + list(model.buffers())}


def run(device: torch.device, amp: str, steps: int, batch: int) -> dict:
    import torchvision

    torch.manual_seed(0)
    dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    model = torchvision.models.resnet18(num_classes=10).to(device).to(memory_format=torch.channels_last)
    pruner = rartsprune.prune(model, ratio=0.4, example_inputs=torch.randn(1, 3, 32, 32, device=device),
                              amp_dtype=dtype, grad_scaler=scaler, update="exact")
    assert _devices_of(model) == {device.type}, "scored model left the device"
    assert _devices_of(pruner.search.aux_model) == {device.type}, "auxiliary network is not on the device"
    assert all(a.device.type == device.type for a in pruner.handle.scores)

    def data() -> tuple:
        x = torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
        return x, torch.randint(0, 10, (batch,), device=device)

    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        stats = pruner.step(data(), data())
    if device.type == "cuda":
        torch.cuda.synchronize()
    step_s = (time.perf_counter() - t0) / steps
    pruned = pruner.finalize()
    assert _devices_of(pruned) == {device.type}, "surgery moved the model"
    opt = torch.optim.SGD(pruned.parameters(), lr=0.01, momentum=0.9)
    x, y = data()
    with torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype is not None):
        loss = F.cross_entropy(pruned(x), y)
    (scaler.scale(loss) if scaler else loss).backward()
    (scaler.step(opt) if scaler else opt.step())
    assert torch.isfinite(loss)
    return {"amp": amp, "step_s": step_s, "last_loss_v": stats["loss_v"], "prc": pruner.result["prc"],
            "finetune_loss": float(loss.detach()), "peak_mem_mb": torch.cuda.max_memory_allocated() / 2**20
            if device.type == "cuda" else None}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "gpu_smoke.json")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to do (use --device cpu to check the script)")
        return 2
    amps = ["none", "bf16", "fp16"] if device.type == "cuda" else ["none", "bf16"]
    rows = [run(device, amp, args.steps, args.batch) for amp in amps]
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "rows": rows, "ok": True}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
