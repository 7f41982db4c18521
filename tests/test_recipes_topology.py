"""End-to-end runs of the topology recipes on tiny settings (FakeData, C=4 / 2, a few steps)."""

from __future__ import annotations

import csv
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rartsprune.topology import NATS_PRIMITIVES, DartsGenotype, format_nats_arch, parse_nats_arch
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes"


def _run(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(RECIPES / script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def synthetic_table(tmp_path_factory) -> Path:
    """A full 15,625-row NATS table with made-up accuracies: acc = 10 * (number of nor_conv_3x3) + index/1e5."""
    path = tmp_path_factory.mktemp("nats") / "table.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["index", "arch", "cifar10_test", "cifar100_test", "imagenet16_120_test"])
        for i, ops in enumerate(itertools.product(NATS_PRIMITIVES, repeat=6)):
            acc = 10.0 * ops.count("nor_conv_3x3") + i / 1e5
            w.writerow([i, format_nats_arch(ops), acc, acc / 2, acc / 3])
    return path


def _load_recipe(script: str):
    return load_script(RECIPES / script, script[:-3])


def test_help_of_every_recipe():
    assert "--method" in _run("nats_search.py", "--help", timeout=300).stdout
    for script in ("nats_search.py", "darts_search.py", "darts_train.py"):
        text = _load_recipe(script).build_parser().format_help()
        assert "--resume" in text and "--json" in text and "--epochs" in text


def test_nats_search_end_to_end_and_resume(tmp_path, synthetic_table):
    common = [
        "--data", "fake", "--train-subset", "128", "--C", "4", "--N", "1", "--epochs", "2",
        "--batch-size", "16", "--max-steps", "3", "--seed", "1", "--table", str(synthetic_table),
        "--no-progress", "--method", "rarts", "--arch-lr", "0.05",
    ]
    full = tmp_path / "full"
    _run("nats_search.py", *common, "--out", str(full), "--json", str(tmp_path / "full.json"))
    res = json.loads((tmp_path / "full.json").read_text())
    for key in ("arch", "skip_ratio", "benchmark", "search_seconds", "alpha_history", "log", "op_counts"):
        assert key in res
    ops = parse_nats_arch(res["arch"])
    assert res["skip_ratio"] == pytest.approx(ops.count("skip_connect") / 6)
    assert res["benchmark"]["cifar10_test"] == pytest.approx(10.0 * ops.count("nor_conv_3x3"), abs=0.2)
    assert res["epochs"] == 2 and res["finished"] and res["steps"] == 6
    assert [h["epoch"] for h in res["alpha_history"]] == [0, 1, 2]
    assert res["alpha_history"][0]["alpha"]["cell"] != res["alpha_history"][2]["alpha"]["cell"]
    assert res["search_seconds"] > 0
    assert (full / "alpha_history.png").stat().st_size > 0 and (full / "cell.png").stat().st_size > 0
    # the arch is the argmax of the final alpha
    alpha = torch.tensor(res["alpha_final"]["cell"])
    assert [NATS_PRIMITIVES[k] for k in alpha.argmax(1).tolist()] == list(ops)

    # interrupted after epoch 1, then resumed: same final alpha as the uninterrupted run
    part = tmp_path / "part"
    _run("nats_search.py", *common, "--out", str(part), "--stop-after", "1", "--json", str(tmp_path / "p1.json"))
    first = json.loads((tmp_path / "p1.json").read_text())
    assert first["epochs"] == 1 and not first["finished"]
    _run("nats_search.py", *common, "--out", str(part), "--resume", "--json", str(tmp_path / "p2.json"))
    resumed = json.loads((tmp_path / "p2.json").read_text())
    assert resumed["epochs"] == 2 and resumed["arch"] == res["arch"]
    torch.testing.assert_close(torch.tensor(resumed["alpha_final"]["cell"]), alpha, rtol=0, atol=1e-6)


def test_nats_search_latency_penalty(tmp_path):
    out = tmp_path / "lat"
    _run(
        "nats_search.py", "--data", "fake", "--train-subset", "64", "--C", "4", "--N", "1", "--epochs", "1",
        "--batch-size", "16", "--max-steps", "2", "--method", "darts1", "--latency-weight", "0.5",
        "--out", str(out), "--no-progress", "--no-plots", "--exclude-none",
    )
    res = json.loads((out / "result.json").read_text())
    assert res["latency_ms"] > 0 and res["benchmark"] is None
    # --exclude-none: every edge gets its strongest op other than none
    alpha = torch.tensor(res["alpha_final"]["cell"])
    assert res["exclude_none"] and list(parse_nats_arch(res["arch"])) == [
        NATS_PRIMITIVES[1 + k] for k in alpha[:, 1:].argmax(1).tolist()]
    table = json.loads((out / "latency.json").read_text())
    assert table["unit"] == "ms" and len(table["entries"]) == 15  # 5 ops x 3 stage shapes
    assert res["log"][0]["penalty"] > 0


def test_darts_search_then_train(tmp_path):
    search_out = tmp_path / "search"
    _run(
        "darts_search.py", "--data", "fake", "--train-subset", "64", "--C", "2", "--layers", "3",
        "--epochs", "1", "--batch-size", "8", "--max-steps", "2", "--method", "milenas",
        "--eval-C", "4", "--eval-layers", "3", "--out", str(search_out), "--no-progress",
    )
    res = json.loads((search_out / "result.json").read_text())
    g = DartsGenotype.from_dict(res["genotype"])
    assert len(g.normal) == 8 and g.normal_concat == (2, 3, 4, 5)
    assert 0.0 <= res["skip_ratio_normal"] <= 1.0
    assert res["params"] > 0 and res["macs"] > 0 and res["params_with_aux"] > res["params"]
    assert set(res["alpha_history"][-1]["alpha"]) == {"normal", "reduce"}
    for name in ("normal_cell.png", "reduce_cell.png", "alpha_history.png", "genotype.json"):
        assert (search_out / name).is_file()

    train_out = tmp_path / "train"
    args = [
        "--genotype", str(search_out / "genotype.json"), "--data", "fake", "--train-subset", "64",
        "--test-subset", "32", "--C", "4", "--layers", "3", "--epochs", "2", "--batch-size", "16",
        "--max-steps", "2", "--out", str(train_out), "--no-progress",
    ]
    _run("darts_train.py", *args, "--stop-after", "1")
    assert json.loads((train_out / "result.json").read_text())["epochs"] == 1
    _run("darts_train.py", *args, "--resume")
    tr = json.loads((train_out / "result.json").read_text())
    assert tr["epochs"] == 2 and tr["finished"] and len(tr["log"]) == 2
    assert 0.0 <= tr["test_accuracy"] <= 100.0
    assert tr["genotype"] == res["genotype"]
    assert tr["params"] > 0 and tr["macs"] > 0
    assert tr["log"][1]["drop_path"] == pytest.approx(0.2 * 1 / 2)


def test_nats_quality_bench_smoke(tmp_path, synthetic_table):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out, md = tmp_path / "q.json", tmp_path / "q.md"
    cmd = [
        sys.executable, str(ROOT / "bench" / "nats_quality.py"), "--data", "fake", "--table", str(synthetic_table),
        "--methods", "rarts", "darts1", "--seeds", "0", "--epochs", "1", "--warmup-epochs", "0", "--subset", "64",
        "--batch-size", "16", "--C", "4", "--N", "1", "--out", str(out), "--md", str(md), "--threads", "1",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert {(r["method"], r["seed"]) for r in res["runs"]} == {("rarts", 0), ("darts1", 0)}
    for r in res["runs"]:
        ops = parse_nats_arch(r["arch"])
        assert r["cifar10"] == pytest.approx(10.0 * ops.count("nor_conv_3x3"), abs=0.2)
        assert r["skip_ratio"] == pytest.approx(ops.count("skip_connect") / 6)
        assert r["steps"] == 2
        # diagnostic: the cell of the same final alpha with none excluded, looked up in the same table
        alpha = torch.tensor(r["alpha_final"])
        no_none = [NATS_PRIMITIVES[1 + k] for k in alpha[:, 1:].argmax(1).tolist()]
        assert list(parse_nats_arch(r["arch_without_none"])) == no_none
        assert r["cifar10_without_none"] == pytest.approx(10.0 * no_none.count("nor_conv_3x3"), abs=0.2)
    assert set(res["diagnostics"]) == {"rarts_cifar10_mean_ge_93_without_none",
                                       "rarts_ahead_of_darts1_every_seed_without_none"}
    assert set(res["targets"]) == {
        "rarts_cifar10_mean_ge_93", "rarts_zero_skip_every_seed", "rarts_ahead_of_darts1_every_seed"}
    text = md.read_text()
    assert "| rarts | 0 |" in text and "Targets:" in text and "none excluded" in text
    # a rerun with the same settings reuses the finished runs
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT, env=env)
    assert proc.returncode == 0
    assert json.loads(out.read_text())["runs"] == res["runs"]
