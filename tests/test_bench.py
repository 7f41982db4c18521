"""The benchmark scripts run end to end on tiny settings and write the JSON / markdown they promise.

Nothing here times anything: only that the scripts work and their outputs are consistent.
"""

from __future__ import annotations

import json
import math
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


def _tiny_image_folder(root: Path, per_class: int = 30, classes: int = 10) -> Path:
    """A CIFAR-like ImageFolder tree (32x32 PNGs, class-dependent colours) made for the test."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", per_class), ("test", 2)):  # test/: only so that the tree is a valid split folder
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 64, (32, 32, 3), dtype=np.uint8) + np.uint8(16 * c)
                Image.fromarray(img).save(d / f"{i}.png")
    return root


def test_criterion_quality_smoke(tmp_path: Path) -> None:
    import torch

    from rartsprune.app.models import preresnet

    data = _tiny_image_folder(tmp_path / "data")
    work = tmp_path / "work"
    (work / "baseline_d11").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(preresnet(depth=11, num_classes=10).state_dict(), work / "baseline_d11" / "baseline.pt")
    out = tmp_path / "cq.json"
    args = ["bench/criterion_quality.py", "--data", str(data), "--work", str(work), "--depth", "11",
            "--train-subset", "200", "--oracle-units", "16", "--oracle-images", "40", "--eval-images", "40",
            "--bn-batches", "2", "--batch-size", "16", "--budgets", "0.6", "--search-epochs", "1",
            "--variants", "default,former_default", "--threads", "1", "--out", str(out)]
    _run(*args)
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert {"l1_norm", "bn_gamma", "random", "fisher", "default@1ep |a|", "former_default@1ep |a|"} <= set(rows)
    assert res["oracle"]["units"] == 16
    for name, r in rows.items():  # nan: a constant criterion (an untrained net's BN scales are all 1)
        assert 0.0 <= r["acc"]["0.6"] <= 100.0, name
        assert -1.0 <= r["spearman_global"] <= 1.0 or (name == "bn_gamma" and math.isnan(r["spearman_global"])), name
    # the default search (ratio mode's l1 pressure, Adam 1e-1) moves the scores; the former one barely did
    spread = {k: rows[f"{k}@1ep |a|"]["alpha"]["std"] for k in ("default", "former_default")}
    assert spread["default"] > 10 * spread["former_default"]
    assert "| l1_norm |" in out.with_suffix(".md").read_text()
    _run(*args)  # cached: the same rows
    assert json.loads(out.read_text())["rows"].keys() == rows.keys()


def test_equal_macs_smoke(tmp_path: Path) -> None:
    out = tmp_path / "em.json"
    args = ["bench/equal_macs.py", "--data", "fake", "--depth", "11", "--train-subset", "96", "--test-subset", "32",
            "--baseline-epochs", "1", "--search-epochs", "1", "--scratch-epochs", "1", "--finetune-epochs", "1",
            "--batch-size", "16", "--seeds", "0", "--methods", "rarts,l1_norm", "--budgets", "0.6,0.35",
            "--threads", "1", "--device", "cpu", "--work", str(tmp_path / "work"), "--out", str(out)]
    _run(*args)
    res = json.loads(out.read_text())
    assert {(r["protocol"], r["method"], r["budget"]) for r in res["runs"]} == {
        (p, m, b) for p in ("after", "scratch") for m in ("rarts", "l1_norm") for b in (0.6, 0.35)}
    for r in res["runs"]:  # every method at the same MACs
        assert abs(r["macs_ratio"] - r["budget"]) <= 0.02 * r["budget"], r
    # one search per seed serves both budgets; the scratch arms were never pre-trained
    work = tmp_path / "work" / "equal_macs_d11"
    assert (work / "after" / "rarts_s0_search").is_dir() and (work / "scratch" / "rarts_s0_search").is_dir()
    scratch = json.loads((work / "scratch" / "rarts_m0.6_s0" / "results.json").read_text())
    assert scratch["job"]["train_during_search"] and scratch["job"]["pretrain_epochs"] == 0
    assert set(res["control"]) == {"after", "scratch"} and all(len(c["runs"]) == 1 for c in res["control"].values())
    assert "after 0.6x MACs: rarts >= l1_norm (best other) + 0.5" in res["targets"]
    assert "## scratch" in out.with_suffix(".md").read_text()
