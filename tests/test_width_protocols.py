"""The two width-search protocols of the job runner, on tiny fake data.

* prune after training (default): the search's weight SGD runs at ``search_lr`` with a cosine decay;
* the search is the training (``train_during_search=True``, the paper's protocol): scores are attached before
  the first epoch and the search's weight SGD follows the job's training settings (``lr``, ``momentum``,
  ``weight_decay``, ``schedule``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest

import rartsprune.app.pipeline as pipeline
from rartsprune.app.models import preresnet
from rartsprune.app.pipeline import PruneJob, run


def _preresnet11(num_classes: int) -> Any:
    return preresnet(depth=11, num_classes=num_classes)


def tiny(tmp_path: Path, **kw: Any) -> PruneJob:
    base = {"model": "preresnet11", "model_factory": _preresnet11, "data": "fake", "train_subset": 64, "test_subset": 32, "batch_size": 16,
            "pretrain_epochs": 0, "search_epochs": 4, "finetune_epochs": 1, "bn_recalibration": 1,
            "plots": False, "progress": False, "out": str(tmp_path / "run")}
    return PruneJob(**{**base, **kw})


def search_lrs(monkeypatch: pytest.MonkeyPatch) -> list[list[float]]:
    """Record the weight LR(s) of the search optimizer at every search epoch end (before the scheduler)."""
    seen: list[list[float]] = []
    original = pipeline._make_pruner

    def spy(ctx: Any, model: Any) -> Any:
        pruner = original(ctx, model)
        step = pruner.step_schedulers

        def record() -> None:
            search = pruner.search  # a SearchOptimizer (its primary net's SGD) or a one-shot BaselineTrainer
            opt = search.optimizers["model"] if hasattr(search, "optimizers") else search.optimizer
            seen.append([g["lr"] for g in opt.param_groups])
            step()

        pruner.step_schedulers = record
        return pruner

    monkeypatch.setattr(pipeline, "_make_pruner", spy)
    return seen


@pytest.mark.parametrize("method", ["rarts", "slimming"])
def test_the_search_is_the_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, method: str) -> None:
    seen = search_lrs(monkeypatch)
    job = tiny(tmp_path, method=method, train_during_search=True, lr=0.05, schedule="step", macs=0.6)
    results = run(job)
    # step schedule over the 4 search epochs: /10 at 50 % and 75 %
    assert [lrs[0] for lrs in seen] == pytest.approx([0.05, 0.05, 0.005, 0.0005])
    assert results["summary"]["macs_ratio"] == pytest.approx(0.6, rel=0.02)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["job"]["train_during_search"] is True
    assert [r["epoch"] for r in saved["history"] if r["phase"] == "search"] == [1, 2, 3, 4]


def test_prune_after_training_keeps_the_search_lr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = search_lrs(monkeypatch)
    run(tiny(tmp_path, search_lr=0.02, lr=0.5, search_epochs=2, finetune_epochs=0))
    assert seen[0][0] == pytest.approx(0.02)  # not the training LR
    assert seen[1][0] < 0.02  # cosine decay


def test_cli_and_recipe_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util
    import sys

    from rartsprune.app.cli import main

    jobs: list[PruneJob] = []
    monkeypatch.setattr(pipeline, "run", lambda job: jobs.append(job) or {"summary": {}})
    assert main(["prune", "--train-during-search", "--search-epochs", "30", "--out", str(tmp_path)]) == 0
    assert jobs[-1].train_during_search and jobs[-1].search_epochs == 30
    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location("recipe_r164_protocols", root / "recipes" / "resnet164_cifar.py")
    assert spec is not None and spec.loader is not None
    recipe = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = recipe
    spec.loader.exec_module(recipe)
    captured: list[PruneJob] = []
    monkeypatch.setattr(recipe, "run", lambda job: captured.append(job) or {})
    monkeypatch.setattr(recipe, "table", lambda results: "")
    assert recipe.main(["--data", "fake", "--from-scratch", "--epochs", "12", "--out", str(tmp_path / "r")]) == 0
    job = captured[-1]
    assert (job.pretrain_epochs, job.search_epochs, job.train_during_search) == (0, 12, True)


def test_one_search_finalized_at_two_budgets(tmp_path: Path) -> None:
    import shutil

    # the search is run with a budget (its pressure is budget-mode's: BUDGET_DEFAULTS), finalized at two
    with pytest.raises(ValueError, match="the checkpoint's search used l1=0.004, this pruner l1=0.0"):
        d = tmp_path / "ratio"
        run(tiny(tmp_path, search_epochs=1, finetune_epochs=0, stop_after="search", out=str(d)))
        run(tiny(tmp_path, search_epochs=1, finetune_epochs=0, macs=0.6, resume=True, out=str(d)))
    searched = run(tiny(tmp_path, search_epochs=2, finetune_epochs=0, stop_after="search", macs=0.6))
    assert "after_prune" not in searched and (tmp_path / "run" / "checkpoint.pt").exists()
    sizes = {}
    for macs in (0.6, 0.35):
        d = tmp_path / f"m{macs}"
        d.mkdir()
        shutil.copy(tmp_path / "run" / "checkpoint.pt", d / "checkpoint.pt")
        res = run(tiny(tmp_path, search_epochs=2, finetune_epochs=0, macs=macs, resume=True, out=str(d)))
        assert res["summary"]["macs_ratio"] == pytest.approx(macs, rel=0.02)
        assert res["job"]["macs"] == macs and res["pruning"]["budget"] == {"macs": macs}
        assert [r["epoch"] for r in res["history"] if r["phase"] == "search"] == [1, 2]  # not searched again
        sizes[macs] = res["after_prune"]["macs"]
    assert sizes[0.35] < sizes[0.6]


def test_stop_after_is_validated() -> None:
    with pytest.raises(ValueError, match="stop_after must be None, 'pretrain' or 'search'"):
        PruneJob(stop_after="finetune")


def test_collapsed_scores_are_reported(tmp_path: Path) -> None:
    # an l1 pressure that swamps the loss: Adam moves every score by arch_lr per step, 1 -> ~0 in 4 steps
    job = tiny(tmp_path, search_epochs=2, finetune_epochs=0, arch_lr=0.25, l1=1.0)  # 4 steps of 0.25 from 1
    with pytest.warns(RuntimeWarning, match="channel scores collapsed"):
        results = run(job)
    assert "collapsed" in results["warnings"][0]
    quiet = run(tiny(tmp_path, search_epochs=1, finetune_epochs=0, out=str(tmp_path / "quiet")))
    assert "warnings" not in quiet


def test_l1_mode_does_not_report_a_collapse(tmp_path: Path) -> None:
    # the same swamping pressure in mode="l1" is what that mode is for: no warning, no results entry
    job = tiny(tmp_path, search_epochs=2, finetune_epochs=0, mode="l1", arch_lr=0.25, l1=1.0, threshold=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        results = run(job)
    assert "warnings" not in results
