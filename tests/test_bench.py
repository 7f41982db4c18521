"""The benchmark scripts run end to end on tiny settings and write the JSON / markdown they promise.

Nothing here times anything: only that the scripts work and their outputs are consistent.
"""

from __future__ import annotations

import importlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=ENV)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc


def _refused(argv: list[str], message: str) -> None:
    """The script exits with an error whose text contains ``message``."""
    proc = subprocess.run([sys.executable, *argv], capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert proc.returncode != 0 and message in proc.stdout + proc.stderr, proc.stderr[-500:]


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


def _speedup_module():
    """bench/speedup.py as a module (bench/ is not a package), for its pure functions."""
    return load_script("bench/speedup.py", "bench_speedup")


def test_speedup_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sp.json"
    _run("bench/speedup.py", "--models", "preresnet164", "--batches", "1", "--reps", "1", "--round-to", "none,8",
         "--rounds", "2", "--threads", "1", "--out", str(out), timeout=400)
    res = json.loads(out.read_text())
    assert res["split"]["selection_rounds"] == [1] and res["split"]["report_rounds"] == [2]
    assert res["settings"]["rounds"] == 2 and res["settings"]["out"] == os.path.relpath(out, ROOT)
    # every round ran in its own process and pruned the same channels
    rounds = res["rounds"]
    assert [r["round"] for r in rounds] == [1, 2] and len({r["pid"] for r in rounds}) == 2
    raw = [r["models"]["preresnet164"] for r in rounds]
    assert raw[0]["fingerprint"] == raw[1]["fingerprint"] and raw[0]["macs"] == raw[1]["macs"]
    (row,) = res["rows"]
    batch = row["batches"]["1"]
    pruned = batch["pruned"]
    assert set(pruned) == {"round_to=None", "round_to=8"}
    # rounding up keeps more channels: more MACs than exact widths, fewer than the unpruned net
    assert row["macs"]["round_to=None"] < row["macs"]["round_to=8"] < row["macs"]["unpruned"]
    per_round = [r["batches"]["1"]["median_ms"]["unpruned"] for r in raw]
    assert batch["unpruned"]["rounds_ms"] == per_round
    assert batch["unpruned_ms"] == pytest.approx(sum(per_round) / 2)  # median of two rounds
    assert batch["noisy"] == (max(per_round) / min(per_round) - 1 > res["noise_limit"]) == row["noisy"]
    for v in pruned.values():
        assert v["efficiency"] == pytest.approx(v["speedup"] / v["macs_ratio"])
        assert v["speedup"] == pytest.approx(batch["unpruned_ms"] / v["ms"])
        assert v["min_ms"] <= v["ms"] <= v["max_ms"]
    best = row["best"]
    assert best["variant"] in pruned and best["chosen_on_rounds"] == [1] and best["reported_from_rounds"] == [2]
    assert best["worst_efficiency"] == pytest.approx(pruned[best["variant"]]["report"]["efficiency"])
    text = out.with_suffix(".md").read_text()
    assert "Best rounding per model" in text and "spread across rounds" in text and "| noisy |" in text
    assert "report rounds (2)" in text and ("rerun on an idle machine" in text) == res["noisy"]


def test_speedup_aggregate_split_and_noise() -> None:
    sp = _speedup_module()
    macs = {"unpruned": 200.0, "round_to=8": 100.0, "round_to=16": 125.0}  # MACs ratios 2.0 and 1.6

    def rnd(unpruned: float, r8: float, r16: float) -> dict[str, dict[str, float]]:
        return {"1": {"unpruned": unpruned, "round_to=8": r8, "round_to=16": r16}}

    # selection rounds (1, 3, 5): round_to=8 runs 2x faster (efficiency 1.0), round_to=16 1.25x (0.78);
    # report rounds (2, 4): both 1.6x faster (0.8 and 1.0). Unpruned swings by 5% (100 .. 105).
    rounds = [rnd(100, 50, 80), rnd(100, 62.5, 62.5), rnd(105, 52.5, 80), rnd(100, 62.5, 62.5), rnd(100, 49, 80)]
    agg = sp.aggregate(rounds, macs)
    assert agg["split"] == {"selection_rounds": [1, 3, 5], "report_rounds": [2, 4]}
    b = agg["batches"]["1"]
    assert b["unpruned"]["median_ms"] == 100 and b["unpruned"]["rounds_ms"] == [100, 100, 105, 100, 100]
    assert (b["unpruned"]["min_ms"], b["unpruned"]["max_ms"]) == (100, 105)
    r8 = b["pruned"]["round_to=8"]
    assert r8["ms"] == r8["median_ms"] == 52.5 and (r8["min_ms"], r8["max_ms"]) == (49, 62.5)
    assert r8["spread"] == pytest.approx(62.5 / 49 - 1)
    assert r8["speedup"] == pytest.approx(100 / 52.5) and r8["efficiency"] == pytest.approx(100 / 52.5 / 2)
    assert r8["selection"]["efficiency"] == pytest.approx(1.0) and r8["report"]["efficiency"] == pytest.approx(0.8)
    assert b["pruned"]["round_to=16"]["report"]["efficiency"] == pytest.approx(1.0)
    # chosen on the selection rounds (where round_to=8 wins), reported from the report rounds (where it does not)
    best = agg["best"]
    assert best["variant"] == "round_to=8"
    assert best["selection"]["worst_efficiency"] == pytest.approx(1.0) and best["selection"]["meets_target"]
    assert best["worst_efficiency"] == best["report"]["worst_efficiency"] == pytest.approx(0.8)
    assert best["mean_speedup"] == pytest.approx(1.6) and not best["meets_target"]
    assert best["chosen_on_rounds"] == [1, 3, 5] and best["reported_from_rounds"] == [2, 4]
    # a 5% swing of the unpruned time is not noisy ...
    assert b["unpruned_variation"] == pytest.approx(0.05) and not b["noisy"] and not agg["noisy"]
    # ... a 20% one is, per batch: add batch 32 whose unpruned time swings from 1000 to 1200 ms
    swing = [1000, 1200, 1000, 1000, 1100]
    noisy_rounds = [{**r, "32": {"unpruned": u, "round_to=8": u / 2, "round_to=16": u / 1.5}}
                    for r, u in zip(rounds, swing)]
    agg = sp.aggregate(noisy_rounds, macs)
    assert not agg["batches"]["1"]["noisy"] and agg["batches"]["32"]["noisy"] and agg["noisy"]
    assert agg["max_unpruned_variation"] == pytest.approx(0.2)
    # one round cannot be split into selection and report rounds, nor can rounds disagree on the variants
    with pytest.raises(ValueError, match="at least 2 rounds"):
        sp.aggregate(rounds[:1], macs)
    with pytest.raises(ValueError, match="variants"):
        sp.aggregate([rounds[0], {"1": {"unpruned": 100, "round_to=8": 50}}], macs)


def test_speedup_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    sp = _speedup_module()
    for argv, message in ([["--rounds", "1"], "--rounds must be at least 2"], [["--reps", "0"], "at least 1"],
                          [["--models", "vgg"], "unknown model"], [["--round-to", "8,x"], "not an integer"],
                          [["--ratio", "1.5"], "--ratio must lie"]):
        with pytest.raises(SystemExit):
            sp.parse_args(argv)
        assert message in capsys.readouterr().err, argv
    assert sp.parse_args([]).rounds == 5


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
            "--variants", "default,former_default,default_swap,gradual_l1_norm", "--finetune-epochs", "1",
            "--threads", "1",
            "--out", str(out)]
    _run(*args)
    res = json.loads(out.read_text())
    rows = res["rows"]
    assert {"l1_norm", "bn_gamma", "random", "fisher", "default@1ep |a|", "former_default@1ep |a|",
            "default_swap@1ep |a|"} <= set(rows)
    gradual = rows.pop("gradual_l1_norm@1ep")  # one search per budget, read out right after it (no fine-tuning)
    assert 0.0 <= gradual["acc"]["0.6"] <= 100.0 and 0.0 < gradual["params_kept"]["0.6"] < 1.0
    for name, r in rows.items():  # fine-tuned at every budget; the selection's parameter fraction predicted
        assert 0.0 <= r["acc_ft"]["0.6"] <= 100.0 and 0.0 < r["params_kept"]["0.6"] < 1.0, name
    assert res["oracle"]["units"] == 16
    for name, r in rows.items():  # nan: a constant criterion (an untrained net's BN scales are all 1)
        assert 0.0 <= r["acc"]["0.6"] <= 100.0, name
        assert -1.0 <= r["spearman_global"] <= 1.0 or (name == "bn_gamma" and math.isnan(r["spearman_global"])), name
    # the default search (ratio mode's l1 pressure, Adam 1e-1) moves the scores; the former one barely did
    spread = {k: rows[f"{k}@1ep |a|"]["alpha"]["std"] for k in ("default", "former_default")}
    assert spread["default"] > 10 * spread["former_default"]
    assert "| l1_norm |" in out.with_suffix(".md").read_text()
    _run(*args)  # cached: the same rows
    assert set(json.loads(out.read_text())["rows"]) == {*rows, "gradual_l1_norm@1ep"}
    # distillation from the baseline: in a variant's search, and in every fine-tuning (its own cache entries)
    kd_args = [*args[:args.index("--variants") + 1], "gradual_chosen_kd1", *args[args.index("--variants") + 2:]]
    _run(*kd_args[:-2], "--finetune-distill", "0.5", "--finetune-only", "kd|l1_norm", "--out", str(out))
    kd = json.loads(out.read_text())["rows"]
    assert 0.0 <= kd["gradual_chosen_kd1@1ep"]["acc_ft"]["0.6"] <= 100.0
    assert len(list(work.glob("criterion_quality/*/one_shot_*-kd0.5_*.json"))) == 1  # not the cached CE rows
    assert "random" in kd and not kd["random"]["acc_ft"]  # fine-tuned only where --finetune-only matches
    assert "distilling from the baseline (share 0.5)" in out.with_suffix(".md").read_text()


def test_criterion_and_pruning_quality_on_a_vgg(tmp_path: Path) -> None:
    """--model vgg11x0.25: the diagnostic ranks a VGG's channels (its baseline in baseline_vgg11x0.25), and the
    quality benchmark trains and prunes one in its own folders."""
    from rartsprune.app.models import vgg

    data = _tiny_image_folder(tmp_path / "data")
    work = tmp_path / "work"
    (work / "baseline_vgg11x0.25").mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(vgg(11, num_classes=10, width=0.25).state_dict(), work / "baseline_vgg11x0.25" / "baseline.pt")
    out = tmp_path / "cq.json"
    _run("bench/criterion_quality.py", "--data", str(data), "--work", str(work), "--model", "vgg11x0.25",
         "--train-subset", "200", "--oracle-units", "16", "--oracle-images", "40", "--eval-images", "40",
         "--bn-batches", "2", "--batch-size", "16", "--budgets", "0.6", "--search-epochs", "1", "--variants",
         "default", "--threads", "1", "--out", str(out))
    res = json.loads(out.read_text())
    assert {"l1_norm", "bn_gamma", "random", "default@1ep |a|"} <= set(res["rows"])
    assert res["oracle"]["units"] == 16
    assert all(-1.0 <= r["spearman_global"] <= 1.0 for k, r in res["rows"].items() if k != "bn_gamma")
    assert out.with_suffix(".md").read_text().startswith("# Criterion diagnostic: VGG-11 (width 0.25)")
    pq = tmp_path / "pq.json"
    _run("bench/pruning_quality.py", "--data", "fake", "--model", "vgg11x0.25", "--train-subset", "96",
         "--test-subset", "32", "--baseline-epochs", "1", "--search-epochs", "1", "--finetune-epochs", "1",
         "--batch-size", "16", "--ratios", "0.4", "--methods", "rarts", "--importances", "", "--seeds", "0",
         "--no-control", "--threads", "1", "--device", "cpu", "--work", str(tmp_path / "pqwork"), "--out", str(pq))
    run_ = json.loads((tmp_path / "pqwork" / "vgg11x0.25" / "rarts_alpha_r40_s0" / "results.json").read_text())
    assert run_["job"]["model"] == "vgg11x0.25" and run_["summary"]["prc"] == pytest.approx(0.4, abs=0.01)
    assert pq.with_suffix(".md").read_text().startswith("# Pruning quality: VGG-11 (width 0.25)")
    proc = subprocess.run([sys.executable, "bench/pruning_quality.py", "--full", "--model", "vgg11x0.25"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert proc.returncode == 2 and "--full runs the paper's PreResNet-164" in proc.stderr


def test_criterion_quality_cut_to_widths(monkeypatch: pytest.MonkeyPatch) -> None:
    """The widths lever: every group cut from the baseline to the searched count, keeping its largest-norm units."""
    import torch

    import rartsprune
    from rartsprune.app.models import preresnet
    from rartsprune.width.baselines import baseline_importance

    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    cq = load_script("bench/criterion_quality.py", "bench_criterion_quality")
    torch.manual_seed(0)
    base = preresnet(depth=11, num_classes=10).eval()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    probe = rartsprune.attach_scores(preresnet(depth=11, num_classes=10), torch.zeros(1, 3, 32, 32))
    keep = {g.name: list(range(g.num_units // 3 + i % 2)) for i, g in enumerate(probe.groups)}  # indices ignored
    net = cq.cut_to_widths(base, keep, "l1_norm")
    assert not rartsprune.has_scores(base)
    assert all(torch.equal(v, before[k]) for k, v in base.state_dict().items())  # the baseline untouched
    ref = rartsprune.attach_scores(cq.copy.deepcopy(base), torch.zeros(1, 3, 32, 32))
    imp = baseline_importance(ref, "l1_norm")
    x = torch.randn(4, 3, 32, 32)

    def cut(largest: bool) -> torch.Tensor:
        model = cq.copy.deepcopy(base)
        rartsprune.attach_scores(model, torch.zeros(1, 3, 32, 32))
        rartsprune.apply_surgery(model, {g: sorted(torch.topk(imp[g], len(k), largest=largest).indices.tolist())
                                         for g, k in keep.items()})
        assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in net.parameters())
        return model.eval()(x)

    out = net.eval()(x)
    assert torch.allclose(out, cut(largest=True), atol=1e-5)  # the largest-norm units of every group
    assert not torch.allclose(out, cut(largest=False), atol=1e-3)  # (the smallest ones give another network)


def test_equal_macs_targets_at_the_margin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))  # as when the script runs: its helpers sit beside it
    em = load_script("bench/equal_macs.py", "bench_equal_macs")
    rarts = sum([64.85, 64.50, 63.55]) / 3  # 64.30 in floats that land a hair under 63.80 + 0.5
    rows = [{"protocol": "after", "budget": 0.35, "method": "rarts", "acc_mean": rarts},
            {"protocol": "after", "budget": 0.35, "method": "l1_norm", "acc_mean": sum([63.95, 64.00, 63.45]) / 3},
            {"protocol": "after", "budget": 0.6, "method": "rarts", "acc_mean": 67.40},
            {"protocol": "after", "budget": 0.6, "method": "l1_norm", "acc_mean": 67.40}]
    got = em._targets(rows, {"after": 68.40})
    assert got == {"after 0.35x MACs: rarts >= l1_norm (best other) + 0.5": True,
                   "after 0.6x MACs: rarts >= l1_norm (best other) + 0.5": False,
                   "after 0.6x MACs: rarts within 1.0 of the unpruned control": True}
    short = [{**rows[0], "acc_mean": rarts - 0.05}, rows[1]]  # one step of 0.05 (2,000 images) under the margin
    assert em._targets(short, {}) == {"after 0.35x MACs: rarts >= l1_norm (best other) + 0.5": False}


def test_heldout_eval_selects_finetuning_on_unused_training_images(tmp_path: Path) -> None:
    """--select-from keeps, per run, the network of two fine-tunings with the higher accuracy on training images
    the run never trained on; the tables report the kept network's numbers."""
    held = load_script("bench/heldout_eval.py", "bench_heldout_eval")
    val = held.ValImages("fake", 100, 64)
    idx = val.indices(96, seed=0)
    train = held.stratified_indices(val.targets, 96, seed=0)
    assert len(idx) == 100 and len(set(idx.tolist())) == 100
    assert not set(idx.tolist()) & set(train.tolist())  # no training image of the run
    rest = torch.ones(len(val.targets), dtype=torch.bool)
    rest[train] = False
    share = torch.bincount(val.targets[rest], minlength=10) * 100 / int(rest.sum())  # class-stratified
    assert (torch.bincount(val.targets[idx], minlength=10) - share).abs().max() < 1
    assert torch.equal(idx, val.indices(96, seed=0)) and not torch.equal(idx, val.indices(96, seed=1))
    with pytest.raises(SystemExit, match="more than the 904"):
        held.ValImages("fake", 905, 64).indices(96, seed=0)
    common = ["--data", "fake", "--depth", "11", "--train-subset", "96", "--test-subset", "32", "--baseline-epochs",
              "1", "--search-epochs", "1", "--batch-size", "16", "--seeds", "0", "--methods", "rarts,l1_norm",
              "--budgets", "0.6", "--threads", "1", "--device", "cpu", "--protocols", "after", "--no-control"]
    first, second = tmp_path / "ft1", tmp_path / "ft0"
    _run("bench/equal_macs.py", *common, "--finetune-epochs", "1", "--work", str(first), "--out", str(tmp_path / "a.json"))
    for shared in ("baseline_d11", "equal_macs_d11/after/rarts_s0_search"):  # the same baseline and search
        shutil.copytree(first / shared, second / shared)
    _run("bench/equal_macs.py", *common, "--finetune-epochs", "0", "--work", str(second), "--out", str(tmp_path / "b.json"))
    out = tmp_path / "sel.json"
    _run("bench/heldout_eval.py", "--work", str(first), "--select-from", str(second), "--val-images", "100",
         "--depth", "11", "--threads", "1", "--out", str(out))
    res = json.loads(out.read_text())
    assert {(r["method"], r["budget"]) for r in res["runs"]} == {("rarts", 0.6), ("l1_norm", 0.6)}
    for r in res["runs"]:
        name = f"{r['method']}_m0.6_s0"
        folders = {"work": first / "equal_macs_d11" / "after" / name, "select_from": second / "equal_macs_d11" / "after" / name}
        val_acc = {k: json.loads((f / "val_eval.json").read_text())["val"] for k, f in folders.items()}
        assert r["val"] == pytest.approx(val_acc)
        assert r["kept"] == ("select_from" if val_acc["select_from"] > val_acc["work"] else "work")
        assert r["finetune_epochs"] == {"work": 1, "select_from": 0}
        kept = folders[r["kept"]]
        assert r["reported"] == json.loads((kept / "results.json").read_text())["after_finetune"]["test_acc"]
        assert r["all"] == pytest.approx(json.loads((kept / "heldout_eval.json").read_text())["all"])
    assert all(row["kept_select_from"] == sum(r["kept"] == "select_from" for r in res["runs"] if r["method"] == row["method"])
               for row in res["rows"])
    assert "Fine-tuning chosen per run" in out.with_suffix(".md").read_text()
    _run("bench/heldout_eval.py", "--work", str(first), "--methods", "^l1_", "--depth", "11", "--out", str(out))
    assert {r["method"] for r in json.loads(out.read_text())["runs"]} == {"l1_norm"}  # only the arms asked for
    proc = subprocess.run([sys.executable, "bench/heldout_eval.py", "--work", str(first), "--methods", "(",
                           "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env=ENV)
    assert proc.returncode == 2 and "not a regular expression" in proc.stderr
    # a run missing from --select-from, or another run there, is refused by name
    shutil.rmtree(second / "equal_macs_d11" / "after" / "l1_norm_m0.6_s0")
    proc = subprocess.run([sys.executable, "bench/heldout_eval.py", "--work", str(first), "--select-from", str(second),
                           "--val-images", "100", "--depth", "11", "--out", str(tmp_path / "x.json")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert proc.returncode != 0 and "no finished run" in proc.stderr and "l1_norm_m0.6_s0" in proc.stderr


def test_bench_models_are_named_on_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    models = importlib.import_module("_models")  # as the scripts import it (a dataclass needs its module)
    vgg = models.parse_model("vgg11x0.5")
    assert (vgg.arch, vgg.depth, vgg.width, vgg.tag, vgg.name) == ("vgg", 11, 0.5, "vgg11x0.5", "vgg11x0.5")
    assert [m.out_channels for m in vgg.build(7).modules() if isinstance(m, torch.nn.Conv2d)][0] == 32
    pre = models.parse_model("preresnet29")
    assert (pre.tag, pre.title, pre.build().depth) == ("d29", "PreResNet-29", 29)  # the folders of earlier runs
    assert models.parse_model("vgg13").width == 1.0
    mnv2 = models.parse_model("mobilenetv2x0.5")
    assert (mnv2.arch, mnv2.width, mnv2.tag, mnv2.title) == ("mobilenetv2", 0.5, "mobilenetv2x0.5", "MobileNetV2 (width 0.5)")
    assert sum(p.numel() for p in mnv2.build().parameters()) == 700_490
    assert models.parse_model("mobilenetv2").name == "mobilenetv2x1"
    for bad, message in (("resnet18", "unknown model"), ("mobilenetv3", "mobilenetv2\\[x<width>\\]"),
                         ("mobilenetv2x0", "width must be a positive"), ("vgg12x0.5", "VGG depth"), ("vgg11x0", "VGG depth"),
                         ("preresnet21", "9n\\+2")):
        with pytest.raises(ValueError, match=message):
            models.parse_model(bad)


def test_equal_macs_at_a_params_budget(tmp_path: Path) -> None:
    """--budget-kind params: every arm keeps the same fraction of the parameters, RARTS searches with the parameter
    pressure, in folders of their own; heldout_eval reads that kind alone."""
    out, work = tmp_path / "p.json", tmp_path / "work"
    common = ["--data", "fake", "--model", "vgg11x0.25", "--train-subset", "96", "--test-subset", "32",
              "--baseline-epochs", "1", "--finetune-epochs", "1", "--batch-size", "16", "--seeds", "0", "--methods",
              "rarts,l1_norm", "--budgets", "0.5", "--protocols", "after", "--no-control", "--threads", "1", "--device",
              "cpu", "--work", str(work)]
    _run("bench/equal_macs.py", *common, "--budget-kind", "params", "--out", str(out))
    res = json.loads(out.read_text())
    assert {(r["method"], r["budget_kind"]) for r in res["runs"]} == {("rarts", "params"), ("l1_norm", "params")}
    for r in res["runs"]:  # every arm at the same parameter count; the MACs follow from the widths
        assert abs(r["params_ratio"] - 0.5) <= 0.02 * 0.5, r
    runs = work / "equal_macs_vgg11x0.25" / "after"
    searched = json.loads((runs / "rarts_params_s0_search" / "results.json").read_text())["job"]["selection"]
    assert searched["params"] == 0.5 and searched["macs"] is None  # the search's pressure is the parameters'
    assert json.loads((runs / "rarts_p0.5_s0" / "results.json").read_text())["job"]["selection"]["params"] == 0.5
    md = out.with_suffix(".md").read_text()
    assert md.startswith("# Width search at equal parameters") and "| params budget |" in md
    assert "after 0.5x params: rarts >= l1_norm (best other) + 0.5" in res["targets"]
    # the MACs runs of the same work folder are other folders: one of each kind, re-evaluated apart
    _run("bench/equal_macs.py", *common, "--methods", "l1_norm", "--out", str(tmp_path / "m.json"))
    assert (runs / "l1_norm_m0.5_s0").is_dir() and (runs / "l1_norm_p0.5_s0").is_dir()
    held = tmp_path / "held.json"
    _run("bench/heldout_eval.py", "--work", str(work), "--model", "vgg11x0.25", "--budget-kind", "params",
         "--threads", "1", "--out", str(held))
    assert {(r["method"], r["budget"]) for r in json.loads(held.read_text())["runs"]} == {
        ("rarts", 0.5), ("l1_norm", 0.5)}
    assert "| params budget |" in held.with_suffix(".md").read_text()
    _refused(["bench/heldout_eval.py", "--work", str(work), "--model", "vgg11x0.25", "--merge", str(held), "--out",
              str(tmp_path / "mixed.json")], "runs at params budgets; these runs: macs budgets")
    _refused(["bench/equal_macs.py", *common, "--budget-kind", "params", "--protocols", "scratch",
              "--scratch-prune-at", "1"], "use it with --budget-kind macs")


def test_equal_macs_and_heldout_eval_on_a_vgg(tmp_path: Path) -> None:
    """--model vgg<depth>x<width>: the same protocol on a plain chain, in its own folders; heldout_eval rebuilds it."""
    out, work = tmp_path / "vgg.json", tmp_path / "work"
    _run("bench/equal_macs.py", "--data", "fake", "--model", "vgg11x0.25", "--train-subset", "96", "--test-subset",
         "32", "--scratch-epochs", "1", "--scratch-classic-epochs", "2", "--finetune-epochs", "1", "--batch-size",
         "16", "--seeds", "0", "--methods", "rarts,l1_norm", "--budgets", "0.5", "--protocols", "scratch",
         "--rarts-update", "fused", "--threads", "1", "--device", "cpu", "--work", str(work), "--out", str(out))
    res = json.loads(out.read_text())
    runs = work / "equal_macs_vgg11x0.25" / "scratch_swap"
    assert {r["method"] for r in res["runs"]} == {"rarts", "l1_norm"}
    for r in res["runs"]:
        assert abs(r["macs_ratio"] - 0.5) <= 0.02 * 0.5, r
    job = json.loads((runs / "rarts_fused_m0.5_s0" / "results.json").read_text())["job"]
    assert job["model"] == "vgg11x0.25" and job["model_factory"].endswith("BenchModel.build")
    plan = json.loads((runs / "l1_norm_e2_m0.5_s0" / "plan.json").read_text())
    assert "features.0" in json.dumps(plan)  # the VGG's layers were pruned
    assert out.with_suffix(".md").read_text().startswith("# Width search at equal MACs: VGG-11 (width 0.25)")
    held = tmp_path / "held.json"
    _run("bench/heldout_eval.py", "--work", str(work), "--model", "vgg11x0.25", "--protocol", "scratch_swap",
         "--control", "control_e2", "--threads", "1", "--out", str(held))
    rows = json.loads(held.read_text())
    assert {r["method"] for r in rows["runs"]} == {"rarts_fused", "l1_norm_e2"}
    assert all(0 <= r["all"] <= 100 for r in rows["runs"]) and rows["control"]["all"]
    assert "(scratch_swap, VGG-11 (width 0.25))" in held.with_suffix(".md").read_text()
    for r in rows["runs"]:  # the allocation: each group's kept fraction, as planned, input side first
        widths = json.loads((runs / f"{r['method']}_m0.5_s0" / "results.json").read_text())["widths"]
        assert r["kept_fraction"] == {g: widths[g]["kept"] / widths[g]["channels"] for g in r["kept_fraction"]}
        assert set(r["kept_fraction"]) == set(widths) and list(r["kept_fraction"])[:2] == ["features.0", "features.4"]
        assert all(0 < f <= 1 for f in r["kept_fraction"].values())
    l1_row = next(r for r in rows["rows"] if r["method"] == "l1_norm_e2")
    assert ("| 0.5x | l1_norm_e2 | " + " | ".join(f"{f:.2f}" for f in l1_row["kept_fraction"].values()) + " |"
            in held.with_suffix(".md").read_text())
    # --merge: the l1 arm measured alone, then merged into the RARTS arm's table: the same rows and pairs
    held_args = ["--work", str(work), "--model", "vgg11x0.25", "--protocol", "scratch_swap", "--control", "control_e2",
                 "--threads", "1"]
    _run("bench/heldout_eval.py", *held_args, "--methods", "^l1", "--out", str(tmp_path / "l1.json"))
    _run("bench/heldout_eval.py", *held_args, "--methods", "^rarts", "--merge", str(tmp_path / "l1.json"), "--out",
         str(tmp_path / "both.json"))
    both = json.loads((tmp_path / "both.json").read_text())
    assert both["rows"] == rows["rows"] and both["paired"] == rows["paired"] and len(rows["paired"]) == 1
    assert both["control"] == rows["control"] and both["unpruned"] == rows["unpruned"]
    assert "Merged from earlier re-evaluations" in (tmp_path / "both.md").read_text()
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**rows, "reported_subset": 16}))
    for argv, message in ((["--model", "vgg11x0.25", "--depth", "20"], "not both"),
                          (["--model", "vgg12"], "VGG depth"),
                          ([*held_args[2:], "--merge", str(held)], "is measured here too"),
                          ([*held_args[2:], "--merge", str(wrong)], "not the same images"),
                          ([*held_args[2:], "--merge", str(tmp_path / "none.json")], "cannot be read as JSON"),
                          ([*held_args[2:], "--merge", str(out)], "not a heldout_eval.py result")):
        proc = subprocess.run([sys.executable, "bench/heldout_eval.py", "--work", str(work), *argv, "--out",
                               str(tmp_path / "x.json")], capture_output=True, text=True, timeout=600, cwd=ROOT,
                              env=ENV)
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-500:]


def test_epoch_cost_times_the_from_scratch_arms_interleaved(tmp_path: Path) -> None:
    out = tmp_path / "ec.json"
    _run("bench/epoch_cost.py", "--data", "fake", "--model", "vgg11x0.25", "--train-subset", "64", "--test-subset",
         "32", "--batch-size", "16", "--rounds", "2", "--threads", "1", "--device", "cpu", "--out", str(out))
    res = json.loads(out.read_text())
    assert set(res["seconds"]) == {"plain", "rarts_fused", "rarts_exact"}
    assert all(len(v) == 2 and min(v) > 0 for v in res["seconds"].values())
    for arm in ("rarts_fused", "rarts_exact"):
        assert res["ratio_to_plain"][arm] == pytest.approx(res["median_s"][arm] / res["median_s"]["plain"])
    # the exact update runs four passes a step, the fused two: even on a tiny setting it costs more
    assert res["median_s"]["rarts_exact"] > res["median_s"]["rarts_fused"]
    assert "VGG-11 (width 0.25)" in out.with_suffix(".md").read_text()
    proc = subprocess.run([sys.executable, "bench/epoch_cost.py", "--data", "fake", "--rounds", "0", "--out",
                           str(tmp_path / "x.json")], capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert proc.returncode == 2 and "--rounds must be at least 1" in proc.stderr


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
    assert (work / "after" / "rarts_s0_search").is_dir() and (work / "scratch_swap" / "rarts_s0_search").is_dir()
    scratch = json.loads((work / "scratch_swap" / "rarts_m0.6_s0" / "results.json").read_text())
    assert scratch["job"]["train_during_search"] and scratch["job"]["pretrain_epochs"] == 0
    assert scratch["job"]["search_split"] == "swap"  # every image reaches the kept net once per epoch
    assert set(res["control"]) == {"after", "scratch"} and all(len(c["runs"]) == 1 for c in res["control"].values())
    assert "after 0.6x MACs: rarts >= l1_norm (best other) + 0.5" in res["targets"]
    acc = {(r["protocol"], r["method"], r["budget"]): r["acc"] for r in res["runs"]}
    for p in res["paired"]:  # seed by seed: RARTS minus the other arm of the same seed
        assert p["vs"] == "l1_norm" and p["seeds"] == 1
        assert p["diff_mean"] == pytest.approx(acc[(p["protocol"], "rarts", p["budget"])]
                                               - acc[(p["protocol"], "l1_norm", p["budget"])])
    assert len(res["paired"]) == 4 and "paired by seed" in out.with_suffix(".md").read_text()
    assert "## scratch" in out.with_suffix(".md").read_text()
    # a split or a search length given for 'after' gets its own folders; the default runs are reused, not overwritten
    swap_args = [a for a in args if a not in ("rarts,l1_norm", "--methods", "0.6,0.35", "--budgets", str(out))]
    _run(*swap_args[:-1], "--protocols", "after", "--methods", "rarts,l1_norm", "--budgets", "0.6", "--no-control",
         "--search-split", "swap", "--search-epochs", "2", "--out", str(tmp_path / "em_swap.json"))
    swapped = json.loads((work / "after" / "rarts_swap_se2_m0.6_s0" / "results.json").read_text())
    assert swapped["job"]["search_split"] == "swap" and swapped["job"]["search_epochs"] == 2
    searched = json.loads((work / "after" / "rarts_swap_se2_s0_search" / "results.json").read_text())
    assert searched["job"]["search_epochs"] == 2 and sum(h["phase"] == "search" for h in searched["history"]) == 2
    one_shot = json.loads((work / "after" / "l1_norm_se2_m0.6_s0" / "results.json").read_text())  # it trains them too
    assert one_shot["job"]["search_epochs"] == 2 and sum(h["phase"] == "search" for h in one_shot["history"]) == 2
    default = json.loads((work / "after" / "rarts_m0.6_s0" / "results.json").read_text())
    assert default["job"]["search_split"] is None  # the job's own: 'fixed' after training
    # gradual pruning: one search per budget, its own folders, for every method named
    _run(*swap_args[:-1], "--protocols", "after", "--methods", "rarts,l1_norm", "--budgets", "0.6", "--no-control",
         "--gradual", "1", "--gradual-methods", "rarts,l1_norm", "--out", str(tmp_path / "em_gradual.json"))
    for name in ("rarts_gradual1_m0.6_s0", "l1_norm_gradual1_m0.6_s0"):
        run_ = json.loads((work / "after" / name / "results.json").read_text())
        assert run_["job"]["gradual"] == 1 and abs(run_["summary"]["macs_ratio"] - 0.6) <= 0.02 * 0.6, name
    assert (work / "after" / "rarts_gradual1_m0.6_s0_search").is_dir()
    # equal training compute from scratch: the classic arms train longer, in their own folders; RARTS is reused
    eq = tmp_path / "em_eq.json"
    _run(*swap_args[:-1], "--protocols", "scratch", "--methods", "rarts,l1_norm", "--budgets", "0.6",
         "--scratch-classic-epochs", "2", "--out", str(eq))
    scratch_dir = work / "scratch_swap"
    assert json.loads((scratch_dir / "plain_e2_s0" / "results.json").read_text())["job"]["pretrain_epochs"] == 2
    l1_eq = json.loads((scratch_dir / "l1_norm_e2_m0.6_s0" / "results.json").read_text())
    assert l1_eq["job"]["init_weights"].endswith("plain_e2_s0/baseline.pt")
    assert json.loads((scratch_dir / "rarts_m0.6_s0" / "results.json").read_text()) == scratch  # cached, untouched
    assert (work / "scratch" / "control_e2_s0" / "results.json").is_file()
    eq_res = json.loads(eq.read_text())
    assert eq_res["unpruned"]["scratch"]["test_acc"] == pytest.approx(
        json.loads((scratch_dir / "plain_e2_s0" / "results.json").read_text())["before"]["test_acc"])
    assert "equal training compute" in eq.with_suffix(".md").read_text()
    # RARTS' fused update (two passes a step) in its own folders; the classic arms are reused
    _run(*swap_args[:-1], "--protocols", "scratch", "--methods", "rarts,l1_norm", "--budgets", "0.6",
         "--scratch-classic-epochs", "2", "--rarts-update", "fused", "--no-control", "--out", str(eq))
    fused = json.loads((scratch_dir / "rarts_fused_m0.6_s0" / "results.json").read_text())
    assert fused["job"]["search"]["update"] == "fused" and scratch["job"]["search"]["update"] == "exact"
    assert (scratch_dir / "rarts_fused_s0_search").is_dir()
    assert json.loads((scratch_dir / "l1_norm_e2_m0.6_s0" / "results.json").read_text()) == l1_eq  # reused
    assert "update='fused'" in eq.with_suffix(".md").read_text()
    # the fine-tuning length chosen on held-out training images: the same searches and plain networks, own folders
    search_ckpt = (scratch_dir / "rarts_fused_s0_search" / "checkpoint.pt").stat().st_mtime_ns
    _run(*swap_args[:-1], "--protocols", "scratch", "--methods", "rarts,l1_norm", "--budgets", "0.6",
         "--scratch-classic-epochs", "2", "--rarts-update", "fused", "--no-control", "--val-images", "100",
         "--out", str(eq))
    assert (scratch_dir / "rarts_fused_s0_search" / "checkpoint.pt").stat().st_mtime_ns == search_ckpt
    val_runs = {m: json.loads((scratch_dir / f"{m}_m0.6_s0" / "results.json").read_text())
                for m in ("rarts_fused_val100", "l1_norm_val100_e2")}
    assert val_runs["l1_norm_val100_e2"]["job"]["init_weights"].endswith("plain_e2_s0/baseline.pt")
    for r in val_runs.values():
        assert r["job"]["val_images"] == 100 and r["finetune_selection"]["val_images"] == 100
        assert list(r["finetune_selection"]["val_acc"]) == ["0", "1"]  # the pruned network and 1 epoch
    eq_val = json.loads(eq.read_text())
    assert sorted(r["kept_epoch"] for r in eq_val["runs"]) == sorted(
        r["finetune_selection"]["kept_epoch"] for r in val_runs.values())
    assert "kept epochs" in eq.with_suffix(".md").read_text()
    # from scratch the controls are under scratch/ and each seed's unpruned network is where its control started
    held_scratch = tmp_path / "held_scratch.json"
    _run("bench/heldout_eval.py", "--work", str(tmp_path / "work"), "--protocol", "scratch_swap", "--depth", "11",
         "--control", "control_e2", "--methods", "_e2$", "--out", str(held_scratch))
    hs = json.loads(held_scratch.read_text())
    assert {r["method"] for r in hs["runs"]} == {"l1_norm_e2", "l1_norm_val100_e2"}
    plain_cache = json.loads((scratch_dir / "plain_e2_s0" / "heldout_eval.json").read_text())
    assert hs["unpruned"]["all"] == {"0": plain_cache["all"]} and set(hs["control"]["all"]) == {"0"}
    assert hs["control_gain"]["all"] == pytest.approx(hs["control"]["all"]["0"] - plain_cache["all"])
    # the fine-tuning length check: the control's gain over the unpruned network is recorded and reported
    gain = res["control_gain"]["after"]
    assert gain == pytest.approx(res["control"]["after"]["acc_mean"] - res["unpruned"]["after"]["test_acc"])
    assert "Fine-tuning length check" in out.with_suffix(".md").read_text()
    # run folders are named by method, budget and seed: a run of another length in the same --work is refused
    longer = [*args[:args.index("--finetune-epochs") + 1], "2", *args[args.index("--finetune-epochs") + 2:]]
    proc = subprocess.run([sys.executable, *longer, "--protocols", "after"], capture_output=True, text=True,
                          timeout=600, cwd=ROOT, env=ENV)
    assert proc.returncode != 0 and "finetune_epochs=1 (asked 2)" in proc.stderr + proc.stdout
    assert json.loads((work / "after" / "rarts_m0.6_s0" / "results.json").read_text()) == default  # untouched
    # the held-out re-evaluation: the same networks on the test images outside each seed's reported subset
    held = tmp_path / "held.json"
    _run("bench/heldout_eval.py", "--work", str(tmp_path / "work"), "--depth", "11", "--threads", "1",
         "--out", str(held))
    h = json.loads(held.read_text())
    n, k = h["test_images"], h["reported_subset"]
    assert k == 32 and n > k
    assert {(r["method"], r["budget"]) for r in h["runs"]} == {
        ("rarts", 0.6), ("rarts", 0.35), ("l1_norm", 0.6), ("l1_norm", 0.35), ("rarts_swap_se2", 0.6),
        ("l1_norm_se2", 0.6), ("rarts_gradual1", 0.6), ("l1_norm_gradual1", 0.6)}
    for r in h["runs"]:  # the reported subset and the unseen images make up the whole test set, image for image
        if r["method"] in ("rarts", "l1_norm"):  # (the swap and gradual runs are not in this result's runs)
            assert r["reported"] == acc[("after", r["method"], r["budget"])]
        assert r["all"] * n == pytest.approx(r["reported"] * k + r["unseen"] * (n - k), abs=1e-6)
    assert set(h["control"]["all"]) == {"0"} and set(h["unpruned"]["all"]) == {"0"}
    assert h["control_gain"]["all"] == pytest.approx(h["control"]["all"]["0"] - h["unpruned"]["all"]["0"])
    cache = work / "after" / "rarts_m0.6_s0" / "heldout_eval.json"
    stamp = cache.stat().st_mtime_ns
    _run("bench/heldout_eval.py", "--work", str(tmp_path / "work"), "--depth", "11", "--threads", "1",
         "--seeds", "0", "--out", str(held))
    again = json.loads(held.read_text())
    assert cache.stat().st_mtime_ns == stamp and again["runs"] == h["runs"]  # cached; seed 0 is every run here
    assert again["settings"]["seeds"] == [0]
    proc = subprocess.run([sys.executable, "bench/heldout_eval.py", "--work", str(tmp_path / "work"), "--depth", "11",
                           "--threads", "1", "--seeds", "1", "--out", str(tmp_path / "none.json")],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert proc.returncode == 2 and "no finished runs" in proc.stdout  # seed 1 never ran
    # distillation from the baseline: in the training before surgery of the arms that have one, in every fine-tuning
    search = work / "after" / "rarts_s0_search" / "results.json"
    searched = search.read_text()
    _run(*swap_args[:-1], "--protocols", "after", "--methods", "rarts,l1_norm", "--budgets", "0.6", "--no-control",
         "--gradual", "1", "--gradual-methods", "l1_norm", "--search-distill", "0.5", "--finetune-distill", "1",
         "--out", str(tmp_path / "em_kd.json"))
    kd = {name: json.loads((work / "after" / name / "results.json").read_text())["job"]
          for name in ("rarts_kd0.5_ftkd1_m0.6_s0", "l1_norm_gradual1_kd0.5_ftkd1_m0.6_s0", "rarts_kd0.5_s0_search")}
    assert [(j["search_distill"], j["finetune_distill"]) for j in kd.values()] == [(0.5, 1.0)] * 3
    _run(*swap_args[:-1], "--protocols", "after", "--methods", "rarts,l1_norm", "--budgets", "0.6", "--no-control",
         "--finetune-distill", "0.5", "--out", str(tmp_path / "em_ftkd.json"))
    ft = json.loads((work / "after" / "l1_norm_ftkd0.5_m0.6_s0" / "results.json").read_text())["job"]
    assert (ft["search_distill"], ft["finetune_distill"]) == (0.0, 0.5)
    assert search.read_text() == searched  # the search without distillation is shared, not run again
    assert json.loads((work / "after" / "rarts_ftkd0.5_m0.6_s0" / "results.json").read_text())["job"][
        "finetune_distill"] == 0.5
    proc = subprocess.run([sys.executable, *args[:-2], "--out", str(tmp_path / "x.json"), "--finetune-distill", "0.5"],
                          capture_output=True, text=True, timeout=600, cwd=ROOT, env=ENV)
    assert proc.returncode == 2 and "use them with --protocols after" in proc.stderr


def test_gpu_check_plumbing(tmp_path: Path) -> None:
    """The one GPU check on the CPU: the steps run as subprocesses, every file lands flat in --out."""
    out = tmp_path / "gc"
    (tmp_path / "wheels").mkdir()
    # a budget far above the GPU's: this checks the plumbing, not the speed of a CPU shared with other jobs (under
    # load the default 450 s gave width_bf16 90 s and it timed out)
    _run("bench/gpu_check.py", "--device", "cpu", "--quick", "--steps", "install,env,width_bf16",
         "--wheels", str(tmp_path / "wheels"), "--budget-s", "3000", "--out", str(out))
    summary = json.loads((out / "summary.json").read_text())
    steps = {s["name"]: s for s in summary["steps"]}
    assert summary["ok"] and list(steps) == ["install", "env", "width_bf16"]
    assert steps["install"]["skipped"] == "nothing missing"  # this venv has torch-pruning and fvcore
    assert steps["env"]["rc"] == 0 and json.loads((out / "env.json").read_text())["device"] == "cpu"
    job = json.loads((out / "width_bf16.json").read_text())
    assert job["job"]["amp"] == "bf16" and job["after_prune"]["params"] < job["before"]["params"]
    # what the device tool brings back: at most eight files, none in a subfolder
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() for f in files)


def test_gpu_check_refuses_bad_input(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--steps", "env,nope", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
    assert proc.returncode == 2 and "unknown steps ['nope']" in proc.stderr
    import torch

    if not torch.cuda.is_available():  # the default device is cuda: nothing to check, said plainly
        proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--out", str(tmp_path)],
                              capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=120)
        assert proc.returncode == 2 and "no CUDA device here" in proc.stdout


def test_embed_width_smoke(tmp_path: Path) -> None:
    out = tmp_path / "ew.json"
    _run("bench/embed_width.py", "--models", "timm:deit_tiny_patch16_224,timm:no_such_model", "--out", str(out))
    res = json.loads(out.read_text())
    deit, missing = res["rows"]
    assert "no_such_model" in missing["error"]
    heads, both = deit["heads"], deit["heads+embed"]
    assert heads["ok"] and both["ok"] and heads["layernorm_groups"] == 0 and both["layernorm_groups"] == 1
    assert both["pruned_layernorms"] == 25  # two per block and the final one
    assert both["macs_ratio"] < heads["macs_ratio"] - 0.15  # the embedding width is in every linear layer
    assert "1 of 2 models lose their embedding width exactly" in out.with_suffix(".md").read_text()


def test_distill_cost_smoke(tmp_path: Path) -> None:
    out = tmp_path / "dc.json"
    _run("bench/distill_cost.py", "--depth", "11", "--batch-size", "4", "--rounds", "2", "--warmup", "1",
         "--out", str(out))
    res = json.loads(out.read_text())
    assert set(res["median_step_s"]) == {"rarts", "rarts+distill", "l1_norm", "l1_norm+distill"}
    assert all(t > 0 for t in res["median_step_s"].values())
    for m in ("rarts", "l1_norm"):
        assert res["ratio"][m] == res["median_step_s"][f"{m}+distill"] / res["median_step_s"][m]
    assert "| RARTS, exact update" in out.with_suffix(".md").read_text()


def test_equal_macs_scratch_prune_at_spends_the_classic_arms_training_macs(tmp_path: Path) -> None:
    """--scratch-prune-at: RARTS prunes after S search epochs, l1_norm after the plain epochs of the same training
    MACs (2 per fused epoch), and both train the pruned network at the training LR for the epochs left of the
    classic arms' MACs (classic + finetune x budget, the pruned epochs counted at the budget)."""
    out, work = tmp_path / "early.json", tmp_path / "work"
    common = ["bench/equal_macs.py", "--data", "fake", "--model", "vgg11x0.25", "--train-subset", "96",
              "--test-subset", "32", "--scratch-epochs", "1", "--scratch-classic-epochs", "4", "--finetune-epochs",
              "1", "--batch-size", "16", "--seeds", "0", "--budgets", "0.5", "--protocols", "scratch",
              "--rarts-update", "fused", "--threads", "1", "--device", "cpu", "--work", str(work)]
    _run(*common, "--methods", "rarts,l1_norm", "--scratch-prune-at", "1", "--early-methods", "rarts,l1_norm",
         "--no-control", "--out", str(out))
    runs = work / "equal_macs_vgg11x0.25" / "scratch_swap"
    rarts = json.loads((runs / "rarts_fused_early1_m0.5_s0" / "results.json").read_text())
    l1 = json.loads((runs / "l1_norm_early1_m0.5_s0" / "results.json").read_text())
    search = json.loads((runs / "rarts_fused_early1_s0_search" / "results.json").read_text())["job"]
    assert search["search_epochs"] == 1 and search["train_during_search"]
    for res in (rarts, l1):  # (4 + 1 x 0.5 - 2) / 0.5 = 5 epochs at the training LR 0.1
        assert res["job"]["finetune_epochs"] == 5 and res["job"]["finetune_lr"] == 0.1
        assert sum(h["phase"] == "finetune" for h in res["history"]) == 5
        assert abs(res["summary"]["macs_ratio"] - 0.5) <= 0.01
    assert l1["job"]["init_weights"].endswith("plain_e2_s0/baseline.pt")  # 2 plain epochs = 1 fused search epoch
    plain = json.loads((runs / "plain_e2_s0" / "results.json").read_text())
    assert sum(h["phase"] == "pretrain" for h in plain["history"]) == 2
    assert "Early pruning (`--scratch-prune-at 1`) for rarts, l1_norm" in out.with_suffix(".md").read_text()
    for argv, message in ((["--scratch-prune-at", "0"], "positive number of epochs"),
                          (["--scratch-prune-at", "3"], "no training MACs are left"),  # 6 plain epochs > 4 + 0.5
                          (["--scratch-prune-at", "1", "--early-methods", "rarts,l2"], "unknown --early-methods")):
        _refused([*common, "--methods", "rarts", *argv, "--no-control", "--out", str(tmp_path / "x.json")], message)


def test_equal_macs_rarts_scope_and_kept_scores_reuse_the_search(tmp_path: Path) -> None:
    """--rarts-scope layer: the finalized runs (own folders) remove the same fraction of every group, from the
    same search as the global ranking (not searched again); --rarts-kept-scores reset: the same widths as the
    default fold, from the same search, in their own folders."""
    work = tmp_path / "work"
    common = ["bench/equal_macs.py", "--data", "fake", "--model", "vgg11x0.25", "--train-subset", "64",
              "--test-subset", "32", "--scratch-epochs", "1", "--finetune-epochs", "1", "--batch-size", "16",
              "--seeds", "0", "--budgets", "0.5", "--protocols", "scratch", "--rarts-update", "fused", "--methods",
              "rarts", "--no-control", "--threads", "1", "--device", "cpu", "--work", str(work)]
    _run(*common, "--out", str(tmp_path / "global.json"))
    runs = work / "equal_macs_vgg11x0.25" / "scratch_swap"
    assert not list(runs.glob("plain*"))  # only searched arms, no control: no plain network is trained
    searched = runs / "rarts_fused_s0_search" / "results.json"
    stamp = searched.stat().st_mtime_ns
    _run(*common, "--rarts-scope", "layer", "--out", str(tmp_path / "layer.json"))
    assert searched.stat().st_mtime_ns == stamp  # the search was reused
    assert sorted(p.name for p in runs.glob("*_search")) == ["rarts_fused_s0_search"]
    layer = json.loads((runs / "rarts_fused_scopelayer_m0.5_s0" / "results.json").read_text())
    assert layer["job"]["selection"]["scope"] == "layer"
    widths = layer["widths"].values()
    removed = [(w["channels"] - w["kept"]) / w["channels"] for w in widths]
    smallest = min(w["channels"] for w in widths)
    assert max(removed) - min(removed) <= 1 / smallest + 1e-9, removed  # one fraction, rounded per layer
    assert 0 < min(removed) and layer["summary"]["macs_ratio"] <= 0.5 + 0.01
    overall = json.loads((runs / "rarts_fused_m0.5_s0" / "results.json").read_text())
    assert overall["job"]["selection"]["scope"] == "global"
    assert "`scope='layer'`" in (tmp_path / "layer.md").read_text()
    _run(*common, "--rarts-kept-scores", "reset", "--out", str(tmp_path / "reset.json"))
    assert searched.stat().st_mtime_ns == stamp and len(list(runs.glob("*_search"))) == 1
    reset = json.loads((runs / "rarts_fused_reset_m0.5_s0" / "results.json").read_text())
    assert reset["job"]["selection"]["kept_scores"] == "reset" and overall["job"]["selection"]["kept_scores"] == "fold"
    assert reset["widths"] == overall["widths"]  # the same selection, only the scale of the kept channels differs
    assert "`kept_scores='reset'`" in (tmp_path / "reset.md").read_text()


def test_equal_macs_max_pruning_ratio_caps_every_arm_from_the_shared_search(tmp_path: Path) -> None:
    """--max-pruning-ratio R: every arm's finalized runs (own folders, suffix _cap<R>) keep at least 1 - R of each
    layer, slimming's from the same sparsity epoch as the uncapped runs."""
    work = tmp_path / "work"
    common = ["bench/equal_macs.py", "--data", "fake", "--model", "vgg11x0.25", "--train-subset", "64",
              "--test-subset", "32", "--baseline-epochs", "1", "--finetune-epochs", "1", "--batch-size", "16",
              "--seeds", "0", "--budgets", "0.3", "--protocols", "after", "--methods", "slimming,l1_norm",
              "--no-control", "--threads", "1", "--device", "cpu", "--work", str(work)]
    _run(*common, "--out", str(tmp_path / "free.json"))
    runs = work / "equal_macs_vgg11x0.25" / "after"
    searched = runs / "slimming_s0_search" / "results.json"
    stamp = searched.stat().st_mtime_ns
    _run(*common, "--max-pruning-ratio", "0.6", "--out", str(tmp_path / "cap.json"))
    assert searched.stat().st_mtime_ns == stamp and sorted(p.name for p in runs.glob("*_search")) == ["slimming_s0_search"]
    for method in ("slimming", "l1_norm"):
        capped = json.loads((runs / f"{method}_cap0.6_m0.3_s0" / "results.json").read_text())
        assert capped["job"]["selection"]["max_pruning_ratio"] == 0.6
        assert min(w["kept"] / w["channels"] for w in capped["widths"].values()) >= 0.4 - 1e-9
        assert capped["summary"]["macs_ratio"] <= 0.3 + 0.01
    free = json.loads((runs / "slimming_m0.3_s0" / "results.json").read_text())
    assert free["job"]["selection"]["max_pruning_ratio"] == 1.0
    assert "`max_pruning_ratio=0.6`" in (tmp_path / "cap.md").read_text()
    _refused([*common, "--max-pruning-ratio", "1.5", "--out", str(tmp_path / "x.json")], "max_pruning_ratio must be")


def test_equal_macs_scratch_warm_search_starts_from_the_plain_net_of_the_remaining_macs(tmp_path: Path) -> None:
    """--scratch-warm-search S: RARTS searches S epochs (at --search-lr) from the network plainly trained for the
    classic arms' epochs less the search's MACs (2 plain epochs per fused epoch), then fine-tunes like them."""
    out, work = tmp_path / "warm.json", tmp_path / "work"
    common = ["bench/equal_macs.py", "--data", "fake", "--model", "vgg11x0.25", "--train-subset", "64",
              "--test-subset", "32", "--scratch-epochs", "1", "--scratch-classic-epochs", "4", "--finetune-epochs",
              "1", "--batch-size", "16", "--seeds", "0", "--budgets", "0.5", "--protocols", "scratch",
              "--rarts-update", "fused", "--threads", "1", "--device", "cpu", "--work", str(work)]
    _run(*common, "--methods", "rarts", "--scratch-warm-search", "1", "--search-lr", "0.02", "--no-control",
         "--out", str(out))
    runs = work / "equal_macs_vgg11x0.25" / "scratch_swap"
    search = json.loads((runs / "rarts_fused_warm1_s0_search" / "results.json").read_text())
    assert search["job"]["init_weights"].endswith("plain_e2_s0/baseline.pt")  # 4 - 2 x 1 plain epochs
    assert search["job"]["search_epochs"] == 1 and not search["job"]["train_during_search"]
    assert search["job"]["search"]["weight_lr"] == 0.02
    plain = json.loads((runs / "plain_e2_s0" / "results.json").read_text())
    assert sum(h["phase"] == "pretrain" for h in plain["history"]) == 2
    res = json.loads((runs / "rarts_fused_warm1_m0.5_s0" / "results.json").read_text())
    assert res["job"]["finetune_epochs"] == 1 and abs(res["summary"]["macs_ratio"] - 0.5) <= 0.01
    assert sum(h["phase"] == "search" for h in res["history"]) == 1
    assert "Warm RARTS (`--scratch-warm-search 1`)" in out.with_suffix(".md").read_text()
    for argv, message in ((["--methods", "rarts", "--scratch-warm-search", "2"], "no plain training is left"),
                          (["--methods", "rarts", "--scratch-warm-search", "1", "--scratch-prune-at", "1"],
                           "no plain training is left"),  # the early arms' 2 plain epochs, all spent
                          (["--methods", "rarts,l1_norm", "--scratch-warm-search", "1", "--scratch-prune-at", "2",
                            "--early-methods", "l1_norm"], "put rarts in --early-methods"),
                          (["--methods", "l1_norm", "--scratch-warm-search", "1"], "rarts in --methods")):
        _refused([*common, *argv, "--no-control", "--out", str(tmp_path / "x.json")], message)
    assert not (runs / "rarts_fused_warm2_s0_search").exists()  # refused before anything trained
    # with --scratch-prune-at 2: the early l1_norm arm prunes after 4 plain epochs, warm RARTS searches 1 epoch
    # from plain_e2 (4 - 2 x 1) and prunes at the same point; both train (4 + 1 x 0.5 - 4) / 0.5 = 1 epoch at LR 0.1
    _run(*common, "--methods", "rarts,l1_norm", "--scratch-warm-search", "1", "--scratch-prune-at", "2",
         "--early-methods", "rarts,l1_norm", "--no-control", "--out", str(tmp_path / "early.json"))
    search = json.loads((runs / "rarts_fused_early2_warm1_s0_search" / "results.json").read_text())["job"]
    assert search["init_weights"].endswith("plain_e2_s0/baseline.pt") and search["search_epochs"] == 1
    assert not search["train_during_search"]
    l1 = json.loads((runs / "l1_norm_early2_m0.5_s0" / "results.json").read_text())["job"]
    assert l1["init_weights"].endswith("plain_e4_s0/baseline.pt")
    for job in (l1, json.loads((runs / "rarts_fused_early2_warm1_m0.5_s0" / "results.json").read_text())["job"]):
        assert job["finetune_epochs"] == 1 and job["finetune_lr"] == 0.1
    assert "Warm early RARTS" in (tmp_path / "early.md").read_text()


def test_two_nets_scores_y_w_and_their_average(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bench/two_nets.py: both nets of a finished RARTS search and their average, unpruned and at each budget, on
    held-out training images; a folder that is not a two-net search is refused by name."""
    work, out = tmp_path / "work", tmp_path / "two.json"
    _run("bench/equal_macs.py", "--data", "fake", "--model", "vgg11x0.25", "--train-subset", "96", "--test-subset",
         "32", "--baseline-epochs", "1", "--finetune-epochs", "0", "--batch-size", "16", "--seeds", "0", "--methods",
         "rarts,slimming", "--budgets", "0.5", "--protocols", "after", "--no-control", "--threads", "1", "--device",
         "cpu", "--work", str(work), "--out", str(tmp_path / "e.json"))
    runs = work / "equal_macs_vgg11x0.25" / "after"
    search = runs / "rarts_s0_search"
    _run("bench/two_nets.py", str(search), "--model", "vgg11x0.25", "--budgets", "0.5,0.3", "--val-images", "40",
         "--threads", "1", "--out", str(out))
    res = json.loads(out.read_text())
    row = res["runs"][next(iter(res["runs"]))]
    gap = row.pop("relative_distance")
    assert set(row) == {f"{b}_{n}" for b in ("unpruned", "macs0.5", "macs0.3") for n in ("y", "w", "average")}
    assert all(0.0 <= v <= 100.0 and v * 40 / 100 == pytest.approx(round(v * 40 / 100)) for v in row.values())
    assert "| macs0.3 |" in out.with_suffix(".md").read_text()
    # the average is taken weight by weight; integer buffers (BatchNorm's batch counter) are y's
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    two_nets = importlib.import_module("two_nets")
    nets = torch.load(search / "checkpoint.pt", map_location="cpu", weights_only=False)["pruner"]["search"]["nets"]
    y, w = nets["model"], nets["aux_model"]
    avg = two_nets._net_weights(nets, "average")
    moved = [k for k in y if y[k].is_floating_point() and not torch.equal(y[k], w[k])]
    assert moved  # the two nets trained apart
    weights = [k for k in y if y[k].is_floating_point() and "running" not in k and "rartsprune_alpha" not in k]
    expected = sum(float((y[k] - w[k]).pow(2).sum()) for k in weights) / sum(float(y[k].pow(2).sum()) for k in weights)
    assert gap > 0 and gap == pytest.approx(expected ** 0.5, rel=1e-4)
    for k in moved:
        torch.testing.assert_close(avg[k], (y[k] + w[k]) / 2)
    assert all(torch.equal(avg[k], y[k]) for k in y if not y[k].is_floating_point())
    assert two_nets._net_weights(nets, "w") is w and two_nets._net_weights(nets, "y") is y
    _refused(["bench/two_nets.py", str(runs / "slimming_s0_search"), "--model", "vgg11x0.25"], "no second network")
    _refused(["bench/two_nets.py", str(tmp_path), "--model", "vgg11x0.25"], "no checkpoint.pt")
    _refused(["bench/two_nets.py", str(search), "--model", "vgg11x0.5"], "searched 'vgg11x0.25', not --model 'vgg11x0.5'")
