"""The benchmark scripts run end to end on tiny settings and write the JSON / markdown they promise.

Nothing here times anything: only that the scripts work and their outputs are consistent.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def test_pruning_quality_smoke(tmp_path: Path) -> None:
    out = tmp_path / "pq.json"
    args = ["bench/pruning_quality.py", "--data", "fake", "--depth", "11", "--train-subset", "96",
            "--test-subset", "32", "--baseline-epochs", "1", "--search-epochs", "1", "--finetune-epochs", "1",
            "--batch-size", "16", "--ratios", "0.4", "--methods", "rarts,l1_norm,random", "--importances", "",
            "--seeds", "0", "--threads", "1", "--device", "cpu", "--work", str(tmp_path / "work"), "--out", str(out)]
    _run(*args)
    res = json.loads(out.read_text())
    assert {r["method"] for r in res["runs"]} == {"rarts", "l1_norm", "random"}
    for r in res["runs"]:
        assert abs(r["prc"] - 0.4) < 0.05 and r["params"] < res["baseline"]["params"]
    # rarts and l1_norm also run with the same fraction removed from every layer: equal sizes
    layer = {r["method"]: r for r in res["runs"] if r["scope"] == "layer"}
    assert set(layer) == {"rarts", "l1_norm"} and layer["rarts"]["params"] == layer["l1_norm"]["params"]
    assert {"rarts (layer scope)", "l1_norm (layer scope)"} <= {r["method"] for r in res["rows"]}
    # the control trains the unpruned baseline as long as the fine-tuning
    assert len(res["control"]["runs"]) == 1 and res["control"]["epochs"] == 1
    assert set(res["comparisons"]) == {"rarts - l1_norm, both layer scope, PRC 40%",
                                       "rarts - unpruned control, PRC 40%"}
    # committed results must not name this machine's directories
    assert not [v for v in res["settings"].values() if isinstance(v, str) and os.path.isabs(v)], res["settings"]
    assert res["settings"]["out"] == os.path.relpath(out, ROOT)
    assert set(res["targets"]) == {"rarts >= l1_norm + 0.5 at PRC 40%", "rarts >= random + 0.5 at PRC 40%",
                                   "rarts >= unpruned at PRC 40%"}
    text = out.with_suffix(".md").read_text()
    assert "| 40% | rarts |" in text and "Targets" in text and "(control)" in text
    # finished runs are reused: a rerun does no training and gives the same rows
    _run(*args)
    assert json.loads(out.read_text())["runs"] == res["runs"]


def test_step_cost_records_relative_paths(tmp_path: Path) -> None:
    out = tmp_path / "sc.json"
    _run("bench/step_cost.py", "--rounds", "1", "--steps-per-round", "1", "--warmup", "0", "--no-memory",
         "--out", str(out))
    res = json.loads(out.read_text())
    assert res["config"]["out"] == os.path.relpath(out, ROOT)
    assert {"plain", "rarts_exact", "rarts_fused", "darts1", "darts2", "milenas"} <= set(res["methods"])
    # the floors come from the two bare-pass probes timed in the same rounds
    full, alpha = (res["methods"][k]["median_s"] for k in ("pass_full", "pass_alpha_only"))
    floors = res["pass_count_floors"]
    assert floors["rarts_fused/darts1"] == pytest.approx(2 * full / (full + alpha))
    assert floors["rarts_fused/darts2"] == pytest.approx(2 * full / (3 * full + 2 * alpha))
    assert res["ratio_over_floor"]["rarts_fused/darts1"] == pytest.approx(
        res["ratios"]["rarts_fused/darts1"] / floors["rarts_fused/darts1"])


def test_speedup_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sp.json"
    _run("bench/speedup.py", "--models", "preresnet164", "--batches", "1", "--reps", "1", "--round-to", "none,8",
         "--threads", "1", "--out", str(out))
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    pruned = row["batches"]["1"]["pruned"]
    assert set(pruned) == {"round_to=None", "round_to=8"}
    # rounding up keeps more channels: more MACs than exact widths, fewer than the unpruned net
    assert row["macs"]["round_to=None"] < row["macs"]["round_to=8"] < row["macs"]["unpruned"]
    for v in pruned.values():
        assert v["efficiency"] == pytest.approx(v["speedup"] / v["macs_ratio"])
    assert row["best"]["variant"] in pruned and "Best rounding per model" in out.with_suffix(".md").read_text()


def test_coverage_and_collect(tmp_path: Path) -> None:
    js, table = tmp_path / "cov.json", tmp_path / "coverage.md"
    _run("bench/coverage.py", "--suite", "torchvision", "--models", "resnet18", "--json", str(js), "--table",
         str(table))
    rows = json.loads(js.read_text())["rows"]
    assert rows["torchvision:resnet18"]["ok"], rows
    text = table.read_text()
    assert "## torchvision: 1/1 pass" in text and "Not run in this sweep" in text and "## timm: not run" in text
    out = tmp_path / "benchmarks.md"
    _run("bench/collect.py", "--out", str(out))
    page = out.read_text()
    assert page.startswith("# Benchmarks") and "## Cost of one search step" in page
