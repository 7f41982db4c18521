"""The width recipes under ``torchrun --nproc_per_node 2`` (gloo on CPU, tiny fake data, one epoch a phase).

Each recipe runs as users run it, through ``tests/ddp_helpers.py``, which records every file a rank writes
under the output folder: the recipe must finish, rank 0 must have written every output and rank 1 nothing,
the tables must be printed once and list every method — the one-shot baselines (l1_norm, random, slimming)
included, which run data-parallel like the searches.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ddp_helpers import TORCHRUN_ENV, free_port

pytestmark = [pytest.mark.ddp, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[1]
TINY = ["--data", "fake", "--train-subset", "64", "--test-subset", "32", "--batch-size", "16",
        "--device", "cpu", "--no-progress"]


def torchrun_recipe(tmp: Path, recipe: str, *args: str) -> tuple[subprocess.CompletedProcess, list[list[str]]]:
    """Run ``recipes/<recipe>`` under ``torchrun --nproc_per_node 2`` with ``--out tmp/out``; the process and
    the paths each rank wrote under ``tmp/out``."""
    out, logs = tmp / "out", tmp / "logs"
    logs.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"})
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
         str(ROOT / "tests" / "ddp_helpers.py"), str(out), str(logs), str(ROOT / "recipes" / recipe), *args, "--out", str(out)],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    writes = [json.loads((logs / f"writes-rank{r}.json").read_text()) for r in range(2)]
    return proc, writes


def _relative(paths: list[str], out: Path) -> set[str]:
    base = os.path.realpath(out)
    return {os.path.relpath(p, base) for p in paths}


@pytest.mark.timeout(900)
def test_resnet164_recipe_with_a_baseline_under_torchrun(tmp_path: Path) -> None:
    """Network Slimming (a one-shot baseline, BatchNorm) on a PreResNet-11: data-parallel, rank 0 writes."""
    proc, writes = torchrun_recipe(tmp_path, "resnet164_cifar.py", *TINY, "--depth", "11", "--method", "slimming",
                                   "--epochs", "1", "--search-epochs", "1", "--finetune-epochs", "1",
                                   "--ratio", "0.4")
    out = tmp_path / "out"
    assert writes[1] == [], writes[1][:5]  # rank 1 wrote nothing
    written = _relative(writes[0], out)
    files = {"results.json", "checkpoint.pt", "baseline.pt", "plan.json", "pruned.pt", "scores.png", "widths.png"}
    assert files <= written and files <= {p.name for p in out.iterdir()}
    results = json.loads((out / "results.json").read_text())
    assert results["distributed"]["world_size"] == 2
    assert results["distributed"]["max_weight_difference"] == 0.0
    assert results["pruning"]["method"] == "slimming"
    assert results["summary"]["prc"] == pytest.approx(0.4, abs=0.05)
    assert [row["phase"] for row in results["history"]] == ["pretrain", "search", "finetune"]
    # the table, printed once (by rank 0), with every stage
    assert proc.stdout.count("| stage | test acc (%) | params | MACs |") == 1
    for stage in ("unpruned", "after search (scored)", "pruned, before fine-tuning", "pruned + fine-tuned"):
        assert proc.stdout.count(f"| {stage} |") == 1, stage
    assert f"PRC {100 * results['summary']['prc']:.1f}%" in proc.stdout


@pytest.mark.timeout(900)
def test_mobilenetv2_recipe_with_searches_and_baselines_under_torchrun(tmp_path: Path) -> None:
    """ℓ1-mode RARTS, then DARTS-1 and the three baselines at its PRC: every job data-parallel, one table."""
    methods = ["darts1", "random", "l1_norm", "slimming"]
    proc, writes = torchrun_recipe(tmp_path, "mobilenetv2_subset.py", *TINY, "--epochs", "1", "--search-epochs",
                                   "1", "--finetune-epochs", "1", "--runs", "1", "--threshold", "0.999",
                                   "--methods", ",".join(methods))
    out = tmp_path / "out"
    assert writes[1] == [], writes[1][:5]
    written = _relative(writes[0], out)
    jobs = ["baseline", "rarts_l1", *methods]
    assert {"comparison.json", "comparison.md", "summary.json", "summary.md"} <= written
    assert {f"{j}/results.json" for j in jobs} <= written and {f"{j}/pruned.pt" for j in jobs[1:]} <= written
    comparison = json.loads((out / "comparison.json").read_text())
    assert list(comparison["methods"]) == ["rarts (l1)", *methods]
    prc = comparison["methods"]["rarts (l1)"]["prc"]
    assert 0 < prc < 1  # RARTS removed channels, the others were pruned to the same PRC
    for name in methods:
        results = json.loads((out / name / "results.json").read_text())
        assert results["distributed"]["world_size"] == 2 and results["pruning"]["method"] == name
        assert results["distributed"]["max_weight_difference"] == 0.0
        assert comparison["methods"][name]["prc"] == pytest.approx(prc, abs=0.02), name
    # the tables, printed once by rank 0, list every method
    table = (out / "comparison.md").read_text()
    summary = (out / "summary.md").read_text()
    for name in ["rarts (l1)", *methods]:
        assert table.count(f"| {name} |") == 1 and summary.count(f"| {name} |") == 1, name
        assert proc.stdout.count(f"| {name} |") == 2, name  # the run's table and the summary, once each
    assert proc.stdout.count("seed 0:") == 1
