"""The width-search recipes run end to end on tiny settings and print their tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def recipe(name: str, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(ROOT / "recipes" / name), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=1500)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("name", ["resnet164_cifar.py", "mobilenetv2_subset.py"])
def test_help(name: str) -> None:
    out = recipe(name, "--help").stdout
    assert "--out" in out and "--resume" in out and "--search-epochs" in out


@pytest.mark.parametrize("bn", ["--bn", "--no-bn"])
def test_resnet164_recipe_tiny(tmp_path: Path, bn: str) -> None:
    out = tmp_path / "r164"
    proc = recipe("resnet164_cifar.py", "--data", "fake", "--depth", "11", bn, "--epochs", "1", "--search-epochs", "1",
                  "--finetune-epochs", "1", "--train-subset", "128", "--test-subset", "50", "--batch-size", "32",
                  "--ratio", "0.6", "--out", str(out), "--no-progress")
    assert "| pruned + fine-tuned |" in proc.stdout and "PRC 60.0%" in proc.stdout
    results = json.loads((out / "results.json").read_text())
    assert results["summary"]["prc"] == pytest.approx(0.6, abs=0.02)
    assert results["summary"]["macs_ratio"] < 0.8
    assert (out / "plan.json").exists() and (out / "pruned.pt").exists()


def test_mobilenetv2_recipe_compares_at_equal_prc(tmp_path: Path) -> None:
    out = tmp_path / "mbv2"
    proc = recipe("mobilenetv2_subset.py", "--data", "fake", "--train-subset", "128", "--test-subset", "50",
                  "--batch-size", "32", "--epochs", "1", "--search-epochs", "1", "--finetune-epochs", "1",
                  "--l1", "0.05", "--arch-lr", "0.05", "--threshold", "0.9", "--methods", "darts1,random",
                  "--runs", "1", "--out", str(out), "--no-progress")
    comparison = json.loads((out / "comparison.json").read_text())
    methods = comparison["methods"]
    assert set(methods) == {"rarts (l1)", "darts1", "random"}
    prc = methods["rarts (l1)"]["prc"]
    assert prc > 0.0  # the sparsity penalty removed channels
    for name in ("darts1", "random"):
        assert methods[name]["prc"] == pytest.approx(prc, abs=0.02)
    assert "| rarts (l1) |" in proc.stdout and (out / "baseline" / "baseline.pt").exists()
