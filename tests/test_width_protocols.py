"""The two width-search protocols of the job runner, on tiny fake data.

* prune after training (default): the search's weight SGD runs at ``search_lr`` with a cosine decay;
* the search is the training (``train_during_search=True``, the paper's protocol): scores are attached before
  the first epoch and the search's weight SGD follows the job's training settings (``lr``, ``momentum``,
  ``weight_decay``, ``schedule``).
"""

from __future__ import annotations

import contextlib
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

import rartsprune.app.pipeline as pipeline
from rartsprune.app.models import preresnet
from rartsprune.app.pipeline import PruneJob, run
from tests.scripts import load_script


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

    def spy(ctx: Any, model: Any, state: Any = None) -> Any:
        pruner = original(ctx, model, state)
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

    from rartsprune.app.cli import main

    jobs: list[PruneJob] = []
    monkeypatch.setattr(pipeline, "run", lambda job: jobs.append(job) or {"summary": {}})
    assert main(["prune", "--train-during-search", "--search-epochs", "30", "--out", str(tmp_path)]) == 0
    assert jobs[-1].train_during_search and jobs[-1].search_epochs == 30
    recipe = load_script("recipes/resnet164_cifar.py", "recipe_r164_protocols", register=True)
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
        assert res["job"]["selection"]["macs"] == macs and res["pruning"]["budget"] == {"macs": macs}
        assert [r["epoch"] for r in res["history"] if r["phase"] == "search"] == [1, 2]  # not searched again
        # a search kept with stop_after="search" is one-shot, and its resumption keeps that (gradual=None)
        assert res["pruning"]["gradual"] == 0.0 and res["pruning"]["gradual_steps"] == 0
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


def _images_per_step(monkeypatch: pytest.MonkeyPatch) -> list[tuple[set[bytes], set[bytes]]]:
    """Record the raw images (before augmentation) of every search step's ``(batch_t, batch_v)``."""
    steps: list[tuple[set[bytes], set[bytes]]] = []
    original = pipeline._search_pairs

    def images(batch: Any) -> set[bytes]:
        return {bytes(img.numpy().tobytes()) for img in batch[0]}

    def spy(*args: Any, **kwargs: Any) -> Any:
        pairs, count = original(*args, **kwargs)

        def recorded() -> Any:
            for batch_t, batch_v in pairs:
                steps.append((images(batch_t), images(batch_v)))
                yield batch_t, batch_v
        return recorded(), count

    monkeypatch.setattr(pipeline, "_search_pairs", spy)
    return steps


def _epochs(steps: list[Any], n: int) -> list[list[Any]]:
    per = len(steps) // n
    assert per * n == len(steps)
    return [steps[i * per:(i + 1) * per] for i in range(n)]


def test_fixed_split_gives_each_net_its_half(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    steps = _images_per_step(monkeypatch)
    run(tiny(tmp_path, search_epochs=2, finetune_epochs=0, search_split="fixed"))
    epochs = _epochs(steps, 2)
    assert [len(e) for e in epochs] == [2, 2]  # 32 images per half / batch 16
    seen_t = [set().union(*(t for t, _ in e)) for e in epochs]
    seen_v = [set().union(*(v for _, v in e)) for e in epochs]
    assert seen_v[0] == seen_v[1] and seen_t[0] == seen_t[1]  # the same halves every epoch
    assert len(seen_v[0]) == 32 and not seen_v[0] & seen_t[0]


@pytest.mark.parametrize("method", ["rarts", "slimming"])
def test_swap_split_shows_every_image_to_each_net_once_per_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 method: str) -> None:
    steps = _images_per_step(monkeypatch)
    job = tiny(tmp_path, method=method, search_epochs=2, finetune_epochs=0, train_during_search=True, macs=0.6)
    assert job.split == "swap"  # the default when the search is the training
    run(job)
    epochs = _epochs(steps, 2)
    for epoch in epochs:
        assert all(not t & v for t, v in epoch)  # D_t and D_v stay disjoint within a step
        if method == "rarts":  # two passes of 2 steps at batch 16, halves swapped: y and w each see all 64 images
            assert len(epoch) == 4 and all(len(t) == 16 and len(v) == 16 for t, v in epoch)
            for side in (0, 1):
                seen = [img for step in epoch for img in step[side]]
                assert len(seen) == len(set(seen)) == 64
        else:  # one net: one pass of half batches, a step of 16 images, 4 steps, every image once
            assert len(epoch) == 4 and all(len(t) == 8 and len(v) == 8 for t, v in epoch)
            seen = [img for t, v in epoch for img in t | v]
            assert len(seen) == len(set(seen)) == 64
    first_v = set().union(*(v for _, v in epochs[0][:2]))
    second_v = set().union(*(v for _, v in epochs[1][:2]))
    assert first_v != second_v  # a fresh split every epoch


def test_search_split_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="search_split must be None"):
        tiny(tmp_path, search_split="halves")
    assert tiny(tmp_path).split == "fixed" and tiny(tmp_path, search_split="swap").split == "swap"


def test_score_travel_sets_the_score_lr_when_the_search_is_the_training(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[float] = []
    original = pipeline._make_pruner

    def spy(ctx: Any, model: Any, state: Any = None) -> Any:
        pruner = original(ctx, model, state)
        seen.append(pruner.search_config.arch_lr)
        return pruner

    monkeypatch.setattr(pipeline, "_make_pruner", spy)
    run(tiny(tmp_path, train_during_search=True, search_epochs=2, finetune_epochs=0, macs=0.6))
    # 64 images, batch 16, swap: 2 passes of 2 steps per epoch, 2 epochs = 8 steps
    assert seen[-1] == pytest.approx(pipeline.SCORE_TRAVEL / 8)
    job = tiny(tmp_path, train_during_search=True)
    assert job.search_config(620).arch_lr == pytest.approx(pipeline.SCORE_TRAVEL / 620)
    assert tiny(tmp_path, train_during_search=True, arch_lr=0.05).search_config(620).arch_lr == 0.05  # as given
    assert tiny(tmp_path).search_config(620).arch_lr is None  # after training: prune()'s default for the mode
    assert tiny(tmp_path, train_during_search=True, mode="l1").search_config(620).arch_lr is None


def test_score_schedule_weights_anneals_the_scores_with_the_weights(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """score_schedule="weights": the scores' LR follows the weights' step schedule epoch by epoch, its peak set so
    that the travel (the sum of the LR over the steps) stays SCORE_TRAVEL."""
    lrs: list[tuple[float, float]] = []  # (weights, scores) in each epoch
    original = pipeline._make_pruner

    def spy(ctx: Any, model: Any, state: Any = None) -> Any:
        pruner = original(ctx, model, state)
        opts = pruner.search.optimizers
        step = pruner.step_schedulers

        def record() -> None:
            lrs.append((opts["model"].param_groups[0]["lr"], opts["arch"].param_groups[0]["lr"]))
            step()
        pruner.step_schedulers = record
        return pruner

    monkeypatch.setattr(pipeline, "_make_pruner", spy)
    run(tiny(tmp_path, train_during_search=True, search_epochs=4, finetune_epochs=0, macs=0.6,
             score_schedule="weights"))
    # 4 steps per epoch (64 images, batch 16, swap), 4 epochs; the step schedule: 1, 1, 0.1, 0.01
    peak = pipeline.SCORE_TRAVEL / (4 * (1 + 1 + 0.1 + 0.01))
    assert [a for _, a in lrs] == pytest.approx([peak, peak, peak * 0.1, peak * 0.01])
    assert [w for w, _ in lrs] == pytest.approx([0.1, 0.1, 0.01, 0.001])
    assert sum(a * 4 for _, a in lrs) == pytest.approx(pipeline.SCORE_TRAVEL)
    with pytest.raises(ValueError, match="score_schedule must be"):
        tiny(tmp_path, train_during_search=True, score_schedule="cosine")
    with pytest.raises(ValueError, match="needs the search to be the training"):
        tiny(tmp_path, score_schedule="weights")


def test_job_nests_the_search_and_selection_configs(tmp_path: Path) -> None:
    from dataclasses import replace

    from rartsprune.width import SelectionConfig, WidthSearchConfig

    job = tiny(tmp_path, macs=0.5, arch_lr=0.02, search_lr=0.01, search_weight_decay=0.0, weight_decay=5e-4)
    assert isinstance(job.search, WidthSearchConfig) and isinstance(job.selection, SelectionConfig)
    assert (job.selection.macs, job.search.arch_lr, job.search.weight_lr, job.search.weight_decay) == (0.5, 0.02, 0.01, 0.0)
    assert job.weight_decay == 5e-4  # the training's, not the search's
    assert (job.macs, job.arch_lr, job.search_lr) == (0.5, 0.02, 0.01)  # flat reads
    other = replace(job, macs=0.35)  # a size given flat replaces the job's size
    assert other.selection.budget == ("macs", 0.35) and other.search == job.search
    assert replace(job, ratio=0.3).selection.budget is None and replace(job, ratio=0.3).selection.ratio == 0.3
    same = tiny(tmp_path, selection=SelectionConfig(macs=0.5), search=WidthSearchConfig(arch_lr=0.02, weight_lr=0.01,
                                                                                       weight_decay=0.0))
    assert (same.selection, same.search) == (job.selection, job.search)
    with pytest.raises(AttributeError, match="replace"):
        job.macs = 0.3  # type: ignore[misc]
    with pytest.raises(TypeError, match="unknown settings"):
        tiny(tmp_path, weight_lr=0.01)  # the job's name for it is search_lr
    with pytest.raises(TypeError, match="selection must be a SelectionConfig"):
        tiny(tmp_path, selection={"macs": 0.5})
    with pytest.raises(ValueError, match="optimizers and schedulers"):
        tiny(tmp_path, search=WidthSearchConfig(arch_optimizer=lambda params: None))
    with pytest.raises(ValueError, match="arch_lr must be a positive number"):
        tiny(tmp_path, arch_lr=-1.0)  # the config's own check, before any work
    saved = job.to_dict()
    assert saved["selection"]["macs"] == 0.5 and saved["search"]["arch_lr"] == 0.02


def test_every_config_field_is_a_command_line_flag() -> None:
    import argparse

    from rartsprune.app.cli import _prune_parser
    from rartsprune.app.pipeline import flat_names

    sub = argparse.ArgumentParser().add_subparsers()
    parser = _prune_parser(sub)
    dests = {a.dest for a in parser._actions}
    assert set(flat_names()) <= dests
    assert {"grad_clip", "search_split", "arch_weight_decay", "threshold"} <= dests
    args = parser.parse_args(["--grad-clip", "2.5", "--macs", "0.5", "--search-split", "swap", "--no-prox"])
    job = PruneJob(**{k: v for k, v in vars(args).items() if not (k in ("ratio", "macs", "params") and v is None)})
    assert job.search.grad_clip == 2.5 and job.selection.macs == 0.5 and job.split == "swap"


def test_job_prunes_to_a_latency_budget(tmp_path: Path) -> None:
    from rartsprune.app.cli import main

    table = tmp_path / "latency.json"
    # the job measures the table and saves it before it checks the budget; whether 0.7 is reachable then depends
    # on this machine's timings (the unprunable rest of a tiny model weighs a lot), so the test makes it so: the
    # measured table, with its rest set to zero, is what the job below loads
    with contextlib.suppress(ValueError):
        run(tiny(tmp_path, latency=0.7, latency_table=str(table), search_epochs=1, finetune_epochs=0,
                 out=str(tmp_path / "measure")))
    measured = json.loads(table.read_text())
    table.write_text(json.dumps({**measured, "rest_ms": 0.0}))
    results = run(tiny(tmp_path, latency=0.7, latency_table=str(table), search_epochs=1, finetune_epochs=0))
    assert results["pruning"]["budget"] == {"latency": 0.7} and table.exists()
    assert results["summary"]["macs_ratio"] < 1.0
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["job"]["selection"]["latency"] == 0.7
    with pytest.raises(SystemExit):  # one size at a time, on the command line too
        main(["prune", "--latency", "0.5", "--macs", "0.5", "--out", str(tmp_path / "cli")])


@pytest.mark.parametrize("bad", [-1, 1.5, True, "0"])
def test_seeds_are_validated(bad: Any) -> None:
    for name in ("seed", "data_seed"):
        with pytest.raises(ValueError, match=f"{name} must be a non-negative integer"):
            PruneJob(**{name: bad})
    with pytest.raises(ValueError, match="seed must be a non-negative integer, got None"):
        PruneJob(seed=None)


def test_subset_seed_of_a_saved_job() -> None:
    job = PruneJob(seed=4, data_seed=1)
    assert PruneJob.subset_seed_of(job.to_dict()) == job.subset_seed == 1
    assert PruneJob.subset_seed_of(PruneJob(seed=4).to_dict()) == 4
    assert PruneJob.subset_seed_of({"seed": 2}) == 2  # saved before data_seed existed
    with pytest.raises(KeyError, match="needs its 'seed'"):
        PruneJob.subset_seed_of({"data_seed": 0})


def test_data_seed_keeps_the_images_while_the_seed_varies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    loaded: list[tuple[str, Any]] = []
    original = pipeline.load_dataset

    def spy(spec: Any, split: str = "train", **kw: Any) -> Any:
        ds = original(spec, split, **kw)
        loaded.append((split, ds))
        return ds

    monkeypatch.setattr(pipeline, "load_dataset", spy)

    def images(seed: int, data_seed: int | None) -> dict[str, torch.Tensor]:
        """The training and test images a job with these seeds ran on, in a canonical order."""
        loaded.clear()
        job = tiny(tmp_path, seed=seed, data_seed=data_seed, stop_after="pretrain", pretrain_epochs=0,
                   out=str(tmp_path / f"s{seed}_d{data_seed}"))
        assert job.subset_seed == (seed if data_seed is None else data_seed)
        assert run(job)["job"]["data_seed"] == data_seed
        out = {}
        for split, ds in loaded:
            x = torch.stack([ds[i][0] for i in range(len(ds))]).flatten(1).float()
            out[split] = x[torch.argsort(x.sum(1))]
        return out

    fixed = [images(seed, 0) for seed in (1, 2)] + [images(0, None)]
    own = images(1, None)
    for split in ("train", "test"):  # the same images whatever the seed, those seed 0 draws
        assert torch.equal(fixed[0][split], fixed[1][split]) and torch.equal(fixed[0][split], fixed[2][split])
        assert not torch.equal(own[split], fixed[0][split])  # without it: the seed's own images


def test_val_images_choose_the_finetuning_epoch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Held-out training images (never trained on) score the pruned network and every fine-tuning epoch; the best
    (ties: the later) is the result, its weights in pruned.pt."""
    import torch

    splits: list[tuple[Any, Any]] = []
    original_split = pipeline.split_holdout

    def spy_split(*args: Any, **kw: Any) -> Any:
        splits.append(original_split(*args, **kw))
        return splits[-1]

    monkeypatch.setattr(pipeline, "split_holdout", spy_split)
    scripted = iter([50.0, 70.0, 60.0, 70.0, 80.0, 30.0, 20.0, 10.0])  # two jobs' epochs 0..3
    weights: list[dict[str, torch.Tensor]] = []
    original_eval, original_keep = pipeline._Job.eval, pipeline._Job.keep_if_best

    def scripted_eval(self: Any, model: Any, split: str = "test") -> float:
        return next(scripted) if split == "val" else original_eval(self, model, split)

    def keep(self: Any, model: Any, epoch: int) -> float:
        weights.append({k: v.clone() for k, v in model.state_dict().items()})
        return original_keep(self, model, epoch)

    monkeypatch.setattr(pipeline._Job, "eval", scripted_eval)
    monkeypatch.setattr(pipeline._Job, "keep_if_best", keep)
    kept = []
    for name in ("later", "first"):
        weights.clear()
        res = run(tiny(tmp_path, val_images=100, search_epochs=1, finetune_epochs=3, out=str(tmp_path / name)))
        sel = res["finetune_selection"]
        assert sel["val_images"] == 100 and list(sel["val_acc"]) == ["0", "1", "2", "3"]
        kept.append(sel["kept_epoch"])
        test_acc = {0: res["after_prune"]["test_acc"],
                    **{r["epoch"]: r["test_acc"] for r in res["history"] if r["phase"] == "finetune"}}
        assert res["after_finetune"]["test_acc"] == test_acc[sel["kept_epoch"]]
        assert [r["val_acc"] for r in res["history"] if r["phase"] == "finetune"] == list(sel["val_acc"].values())[1:]
        saved = torch.load(tmp_path / name / "pruned.pt", weights_only=True)
        assert len(weights) == 4 and all(torch.equal(saved[k], weights[sel["kept_epoch"]][k]) for k in saved)
    assert kept == [3, 0]  # 70 at epochs 1 and 3: the later; 80 before fine-tuning: the pruned network itself
    # the training images are the subset's, unchanged; the held-out ones are other images of the training split
    train, val = splits[0]
    plain = pipeline.load_dataset("fake", "train", subset=64, seed=0)
    assert len(train) == 64 and len(val) == 100
    assert torch.equal(torch.stack([train[i][0] for i in range(64)]), torch.stack([plain[i][0] for i in range(64)]))
    seen = {train[i][0].numpy().tobytes() for i in range(len(train))}
    assert not any(val[i][0].numpy().tobytes() in seen for i in range(len(val)))


def test_val_images_survive_a_resume_and_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    whole = run(tiny(tmp_path, val_images=50, search_epochs=1, finetune_epochs=3, out=str(tmp_path / "whole")))
    original = pipeline.train_epoch
    calls = {"finetune": 0}

    def crash(*args: Any, **kw: Any) -> Any:
        if kw.get("desc", "").startswith("finetune"):
            calls["finetune"] += 1
            if calls["finetune"] == 2:
                raise KeyboardInterrupt  # stopped during the second fine-tuning epoch
        return original(*args, **kw)

    monkeypatch.setattr(pipeline, "train_epoch", crash)
    for name, val in (("resumed", 50), ("no_val", 0)):
        calls["finetune"] = 0
        with pytest.raises(KeyboardInterrupt):
            run(tiny(tmp_path, val_images=val, search_epochs=1, finetune_epochs=3, out=str(tmp_path / name)))
    monkeypatch.setattr(pipeline, "train_epoch", original)
    resumed = run(tiny(tmp_path, val_images=50, search_epochs=1, finetune_epochs=3, resume=True,
                       out=str(tmp_path / "resumed")))
    assert resumed["finetune_selection"] == whole["finetune_selection"]  # epoch 0's score kept in the checkpoint
    a, b = (torch.load(tmp_path / n / "pruned.pt", weights_only=True) for n in ("whole", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="started without val_images"):
        run(tiny(tmp_path, val_images=50, search_epochs=1, finetune_epochs=3, resume=True, out=str(tmp_path / "no_val")))
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="val_images must be a non-negative integer"):
            tiny(tmp_path, val_images=bad)
    with pytest.raises(ValueError, match="the training subset of 64 leaves 936"):
        run(tiny(tmp_path, val_images=937, out=str(tmp_path / "big")))


@pytest.mark.parametrize("stop_in", [1, 2])  # the first fine-tuning epoch (resumes at the phase's start) or the second
def test_a_resumed_distilled_finetuning_equals_an_uninterrupted_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                    stop_in: int) -> None:
    """Rebuilding the model and the teacher on resume draws from the generator: the phase restores it where the
    checkpoint was saved, so the resumed fine-tuning's weights are the uninterrupted one's, bit for bit."""
    import torch

    settings = {"pretrain_epochs": 1, "search_epochs": 1, "finetune_epochs": 3, "finetune_distill": 1.0}
    run(tiny(tmp_path, **settings, out=str(tmp_path / "whole")))
    original = pipeline.train_epoch
    calls = {"finetune": 0}

    def crash(*args: Any, **kw: Any) -> Any:
        if kw.get("desc", "").startswith("finetune"):
            calls["finetune"] += 1
            if calls["finetune"] == stop_in:
                raise KeyboardInterrupt
        return original(*args, **kw)

    monkeypatch.setattr(pipeline, "train_epoch", crash)
    with pytest.raises(KeyboardInterrupt):
        run(tiny(tmp_path, **settings, out=str(tmp_path / "resumed")))
    monkeypatch.setattr(pipeline, "train_epoch", original)
    resumed = run(tiny(tmp_path, **settings, resume=True, out=str(tmp_path / "resumed")))
    assert resumed["pruning"]["finetune_distill"] == 1.0
    a, b = (torch.load(tmp_path / n / "pruned.pt", weights_only=True) for n in ("whole", "resumed"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
