"""Time decoding the CIFAR-10 ImageFolder tree into memory: fresh decode (pool / one process), cache hit,
and the per-image PIL loop of ``torchvision.datasets.ImageFolder`` for reference.

Usage:
    python bench/bench_decode.py [--split train] [--json bench/results/decode.json]

Writes a JSON with seconds per variant and the machine's CPU count.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
from torchvision.datasets import ImageFolder
from torchvision.transforms import PILToTensor

from rartsprune.app.data import load_dataset

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="train", choices=["train", "test"])
    parser.add_argument("--pil-images", type=int, default=5000, help="images timed for the PIL reference loop")
    parser.add_argument("--json", default=str(Path(__file__).resolve().parent / "results" / "decode.json"))
    args = parser.parse_args()
    if not DATA.is_dir():
        raise SystemExit(f"CIFAR-10 tree not found at {DATA}")
    result: dict[str, object] = {"split": args.split, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as cache:
        for label, workers in (("decode_pool_s", None), ("decode_one_process_s", 1)):
            sub = Path(cache) / label
            t = time.perf_counter()
            ds = load_dataset(DATA, args.split, cache_dir=sub, num_workers=workers)
            result[label] = time.perf_counter() - t
        t = time.perf_counter()
        hit = load_dataset(DATA, args.split, cache_dir=Path(cache) / "decode_one_process_s")
        result["cache_hit_s"] = time.perf_counter() - t
        result["cache_hit_identical"] = bool(torch.equal(hit.images, ds.images))
        result["images"] = len(ds)
    ref = ImageFolder(str(DATA / args.split), transform=PILToTensor())
    n = min(args.pil_images, len(ref))
    step = max(1, len(ref) // n)
    t = time.perf_counter()
    for i in range(0, n * step, step):
        ref[i]
    per_image = (time.perf_counter() - t) / n
    result["imagefolder_pil_s_per_image"] = per_image
    result["imagefolder_pil_full_pass_estimate_s"] = per_image * len(ref)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
