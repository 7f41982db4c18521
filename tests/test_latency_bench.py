"""bench/latency_model.py (predicted vs measured latency of pruned models) runs end to end on tiny settings.

Nothing here judges a timing: only that the script runs, caches its table, writes consistent JSON / markdown
and that its pure aggregation computes what it says.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _bench() -> ModuleType:
    """bench/latency_model.py as a module (bench/ is not a package)."""
    return load_script("bench/latency_model.py", "bench_latency_model")


def test_latency_model_bench_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out, tables = tmp_path / "lm.json", tmp_path / "tables"
    proc = subprocess.run([sys.executable, "bench/latency_model.py", "--quick", "--out", str(out), "--table-dir",
                           str(tables), "--tables", "plain,fused,fitted"], capture_output=True, text=True, timeout=300,
                          cwd=ROOT, env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    s = res["settings"]
    assert s["quick"] and s["models"] == ["tiny"] and s["batches"] == [1] and s["rounds"] == 2 and s["threads"] == 1
    assert s["out"] == os.path.relpath(out, ROOT)  # no absolute path of this machine in the results
    # each table was measured once and cached where asked: the plain one and the fused one beside it
    table_path, fused_path, fitted_path = sorted(tables.glob("*.json"), key=lambda p: len(p.name))
    assert table_path.name.startswith("tiny_32px_b1_cpu_1t_heap-")  # measured with the heap retained
    assert fused_path.name == table_path.stem + "_fused.json" and s["tables"] == ["plain", "fused", "fitted"]
    assert json.loads(fused_path.read_text())["meta"]["fuse"] is True
    # the fitted table: the plain one with 2 passes of measured points at the reachable budgets
    fitted = json.loads(fitted_path.read_text())
    assert fitted_path.name == table_path.stem + "_fitted.json" and fitted["layers"] == json.loads(
        table_path.read_text())["layers"]
    assert len(fitted["measured"]) == 2 * len(s["budgets"])  # the clock's values are not asserted: timing
    assert all(0 < p < 1 and m > 0 for p, m in fitted["measured"])
    assert s["allocator"] == "retain" and s["allocator_env"] == _bench()._alloc.RETAIN
    (row,) = res["rows"]
    assert row["model"] == "tiny" and row["batch"] == 1 and row["table"]["status"] == "measured"
    # two rounds, each in its own process, timing the weights the parent pruned
    rounds = res["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and len({r["pid"] for r in rounds}) == 2
    timed = [k for k in row["variants"] if k != "unpruned"]
    assert timed and set(timed) | set(row["skipped"]) == {"latency=0.9", "latency=0.7", "fused latency=0.9",
                                                          "fused latency=0.7", "fitted latency=0.9",
                                                          "fitted latency=0.7"}
    predictions = res["predictions"]["tiny"]["batches"]["1"]["variants"]
    for k, v in row["variants"].items():
        per_round = [r["models"]["tiny"]["batches"]["1"]["median_ms"][k] for r in rounds]
        assert v["measured"]["rounds_ms"] == per_round
        assert v["ratio"]["rounds"] == pytest.approx([t / v["predicted_ms"] for t in per_round])
        assert v["ratio"]["median"] == pytest.approx(sum(per_round) / 2 / v["predicted_ms"])
        assert v["error"] == pytest.approx(v["ratio"]["median"] - 1)
        assert v["within_target"] == (abs(v["error"]) <= res["target"] == 0.10)
        if k != "unpruned":
            assert v["predicted_ms"] == predictions[k]["predicted_ms"]
            assert v["predicted_fraction"] <= v["budget"] + 1e-9 and v["round_to"] is None
    assert row["variants"]["unpruned"]["predicted_ms"] == pytest.approx(row["table"]["full_ms"])
    summary = res["summary"]
    assert summary["pruned_models"] == len(timed)
    assert summary["within_target"] == sum(row["variants"][k]["within_target"] for k in timed)
    text = out.with_suffix(".md").read_text()
    assert text.startswith("# Predicted vs measured latency") and "| tiny | 1 | unpruned |" in text
    assert f"{summary['within_target']} of {summary['pruned_models']} pruned models within 10%" in text
    for kind in ("plain", "fused"):  # the two tables' results side by side
        mine = [k for k in timed if (k.split(" ")[0] if " " in k else "plain") == kind]
        if mine:
            assert f"- {kind} table: {sum(row['variants'][k]['within_target'] for k in mine)} of {len(mine)}" in text
    # the cached table is reloaded next time, and refused for another batch size
    bench = _bench()
    for k, v in bench._alloc.RETAIN.items():  # the table is only valid under the allocator it was measured with
        monkeypatch.setenv(k, v)
    torch.manual_seed(0)
    model = bench.build_model("tiny").eval()
    x = torch.randn(1, 3, 32, 32)
    table, status = bench.load_or_measure_table(model, x, table_path, 1, warmup=0, repeats=1)
    assert status == "loaded" and table.full_ms == pytest.approx(row["table"]["full_ms"])
    with pytest.raises(ValueError, match="batch size 1"):
        bench.load_or_measure_table(model, x, table_path, 2, warmup=0, repeats=1)
    monkeypatch.delenv("MALLOC_TOP_PAD_")
    with pytest.raises(ValueError, match="allocator settings"):
        bench.load_or_measure_table(model, x, table_path, 1, warmup=0, repeats=1)


def test_latency_model_aggregate_and_summary() -> None:
    bench = _bench()
    rounds = [{"unpruned": 10.0, "latency=0.6": 6.3}, {"unpruned": 11.5, "latency=0.6": 7.0},
              {"unpruned": 10.0, "latency=0.6": 6.5}]
    agg = bench.aggregate(rounds, {"unpruned": 10.0, "latency=0.6": 6.0})
    v = agg["variants"]["latency=0.6"]
    assert v["ratio"]["rounds"] == pytest.approx([1.05, 7.0 / 6, 6.5 / 6])
    assert v["ratio"]["median"] == pytest.approx(6.5 / 6) and v["error"] == pytest.approx(0.5 / 6)
    assert v["within_target"] and (v["ratio"]["min"], v["ratio"]["max"]) == pytest.approx((1.05, 7.0 / 6))
    assert v["measured"]["median_ms"] == 6.5 and v["predicted_fraction"] == pytest.approx(0.6)
    # per round 6.3 / 10, 7.0 / 11.5, 6.5 / 10: the median of the fractions, not of the times
    assert v["measured_fraction"] == pytest.approx(0.63) and v["measured_speedup"] == pytest.approx(1 / 0.63)
    assert agg["unpruned_variation"] == pytest.approx(0.15) and agg["noisy"]  # 10 .. 11.5 ms: over 10%
    unpruned = agg["variants"]["unpruned"]
    assert unpruned["ratio"]["median"] == 1.0 and unpruned["within_target"] and "measured_fraction" not in unpruned
    far = bench.aggregate(rounds, {"unpruned": 10.0, "latency=0.6": 5.0})
    assert not far["variants"]["latency=0.6"]["within_target"]  # 1.3x its prediction
    summary = bench.summarize([{**agg, "noisy": False}, {**far, "noisy": False}])
    assert summary == {"pruned_models": 2, "within_target": 1, "worst_error": pytest.approx(0.3),
                       "all_within_target": False, "noisy": False}
    with pytest.raises(ValueError, match="at least 2 rounds"):
        bench.aggregate(rounds[:1], {"unpruned": 10.0, "latency=0.6": 6.0})
    with pytest.raises(ValueError, match="no positive prediction"):
        bench.aggregate(rounds, {"unpruned": 10.0})
    with pytest.raises(ValueError, match="variants"):
        bench.aggregate([rounds[0], {"unpruned": 10.0}], {"unpruned": 10.0, "latency=0.6": 6.0})


def test_latency_model_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    for argv, message in ([["--rounds", "1"], "--rounds must be at least 2"],
                          [["--budgets", "0.6,1.5"], "strictly between 0 and 1"],
                          [["--models", "vgg"], "unknown model"], [["--round-to", "x"], "not an integer"],
                          [["--method", "rarts"], "invalid choice"], [["--budgets", "0.6,0.6"], "must not repeat"],
                          [["--tables", "plain,cold"], "plain / fused"], [["--tables", "fused,fused"], "plain / fused"],
                          [["--quick", "--out", str(ROOT / "bench" / "results" / "x.json")], "not results"]):
        with pytest.raises(SystemExit):
            bench.parse_args(argv)
        assert message in capsys.readouterr().err, argv
    real = bench.parse_args([])
    assert real.models == ["resnet50", "mobilenet_v2"] and real.batches == [1, 32] and real.threads == 1
    assert real.budgets == [0.8, 0.6, 0.4] and real.rounds == 5 and real.round_to is None and real.tables == ["plain"]
    assert real.out == ROOT / "bench" / "results" / "latency_model.json"
    assert real.table_dir == ROOT / "runs" / "latency_tables"
    quick = bench.parse_args(["--quick", "--round-to", "auto"])
    assert quick.models == ["tiny"] and quick.round_to == "auto"
    assert not quick.out.is_relative_to(ROOT / "bench" / "results")


def _synthetic_table(path: Path, depth: int, batch: int) -> None:
    """A deterministic latency table of PreResNet-``depth`` (10 classes, 32x32) at ``batch``: every layer's
    latency proportional to its MACs at each width (exactly bilinear), a small constant rest."""
    from rartsprune.app.models import preresnet
    from rartsprune.width.latency import WidthLatencyTable, measure_width_latency

    model = preresnet(depth=depth, num_classes=10).eval()
    measured = measure_width_latency(model, torch.randn(1, 3, 32, 32), batch=batch, warmup=0, repeats=1)
    data = measured.to_dict()
    for layer in data["layers"].values():
        hw = 1
        for d in layer["input_shape"][2:]:
            hw *= d
        scale = 1.0 if layer["depthwise"] else 1e-6 * hw
        layer["ms"] = [[scale * max(i, 1) * o for o in layer["out_widths"]] for i in layer["in_widths"]]
    layer_sum = sum(v["ms"][-1][-1] for v in data["layers"].values())
    data.update(whole_ms=1.05 * layer_sum, rest_ms=0.05 * layer_sum)
    WidthLatencyTable.from_dict(data).save(path)


def _run_equal_latency(tmp_path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """bench/equal_latency.py on tiny settings (PreResNet-11, fake data, a synthetic table at batch 4, 2 seeds)."""
    table = tmp_path / "table.json"
    _synthetic_table(table, 11, 4)
    return subprocess.run(
        [sys.executable, "bench/equal_latency.py", "--data", "fake", "--depth", "11", "--train-subset", "64",
         "--test-subset", "32", "--baseline-epochs", "1", "--finetune-epochs", "1", "--batch-size", "16",
         "--latency-batch", "4", "--latency", "0.6", "--table", str(table), "--rounds", "2", "--reps", "2",
         "--seeds", "0,1", "--threads", "1", "--device", "cpu", "--work", str(tmp_path / "work"), "--out", str(out),
         "--allocator", "system", *extra],  # the table was written under this process's allocator settings
        capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)


def test_equal_latency_bench_smoke(tmp_path: Path) -> None:
    """Both arms at the same predicted latency, timed, fine-tuned per seed; the report pairs them by seed."""
    out = tmp_path / "el.json"
    proc = _run_equal_latency(tmp_path, out)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    arms = res["arms"]
    # the latency arm meets its predicted budget; the MACs arm was bisected to the same predicted latency
    assert arms["latency"]["predicted_fraction"] <= 0.6 + 1e-9
    assert arms["macs"]["predicted_fraction"] == pytest.approx(arms["latency"]["predicted_fraction"], abs=0.02)
    assert 0 < arms["macs"]["budget"] < 1 and res["unpruned"]["table"] == "loaded"
    # the job pruned what was timed (it checks), every seed of both arms ran, the pairing is by seed
    assert sorted((r["arm"], r["seed"]) for r in res["runs"]) == [("latency", 0), ("latency", 1), ("macs", 0),
                                                                  ("macs", 1)]
    acc = {(r["arm"], r["seed"]): r["acc"] for r in res["runs"]}
    p = res["paired_latency_minus_macs"]
    assert p["values"] == pytest.approx([acc[("latency", s)] - acc[("macs", s)] for s in (0, 1)])
    assert len(res["timing"]["rounds_ms"]) == 2 and set(res["timing"]["rounds_ms"][0]) == {"unpruned", "latency",
                                                                                          "macs"}
    # a timing: measured, positive and finite (its size depends on the machine's load; CI saw 5.95 with the cores
    # shared by four processes)
    assert 0 < arms["latency"]["measured_fraction"]["median"] < math.inf
    assert "| latency | latency=0.6 |" in out.with_suffix(".md").read_text()
    # a missing table is refused before anything runs
    bad = subprocess.run([sys.executable, "bench/equal_latency.py", "--data", "fake", "--table",
                          str(tmp_path / "missing.json"), "--work", str(tmp_path / "work"), "--depth", "11"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert bad.returncode == 2 and "no such file" in bad.stdout


def test_equal_latency_bench_with_a_search(tmp_path: Path) -> None:
    """--method rarts: per seed one search per arm, the latency arm at the MACs arm's predicted latency, both
    rebuilt from their jobs' plans and timed; a one-shot method refuses --gradual."""
    out = tmp_path / "el.json"
    proc = _run_equal_latency(tmp_path, out, "--method", "rarts", "--gradual", "0.5")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    lat, mac = res["arms"]["latency"]["per_seed"], res["arms"]["macs"]["per_seed"]
    assert [r["seed"] for r in lat] == [r["seed"] for r in mac] == [0, 1]
    for a, b in zip(lat, mac):
        # the latency arm's budget is the MACs arm's predicted latency, and its search meets it
        assert a["budget"] == pytest.approx(b["predicted_fraction"], abs=1e-4)
        assert a["predicted_fraction"] <= a["budget"] + 1e-6
        assert abs(b["macs_ratio"] - res["arms"]["macs"]["budget"]) < 0.02
        assert a["measured"]["median"] > 0 and set(res["timing"]["per_seed"]) == {"0", "1"}
    assert sorted((r["arm"], r["seed"]) for r in res["runs"]) == [("latency", 0), ("latency", 1), ("macs", 0),
                                                                  ("macs", 1)]
    assert (tmp_path / "work" / "equal_latency_d11_b4_rarts_e1_lr0.01_gradual0.5" / "latency_s0" / "timed.pt").is_file()
    assert "searches keep the same widths on" in out.with_suffix(".md").read_text()
    bad = subprocess.run([sys.executable, "bench/equal_latency.py", "--data", "fake", "--gradual", "0.5"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT, env=ENV)
    assert bad.returncode == 2 and "--gradual needs a search method" in bad.stderr
