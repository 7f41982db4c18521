"""Gradual pruning during the search (``prune(..., gradual_steps=N)``, ``PruneJob(gradual=f)``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn
import torchvision

import rartsprune
from rartsprune.app.pipeline import PruneJob, run
from rartsprune.width import SelectionConfig
from rartsprune.width.pruner import gradual_fraction
from tests.test_budget import TOL, assert_untouched, snapshot, x32


class TinyResNet(nn.Module):
    """Conv-BN-ReLU stem, one residual block, a head: fast enough for many search steps."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU(),
                                   nn.Conv2d(24, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.down = nn.Sequential(nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = (x + self.block(x)).relu()
        return self.head(self.down(x).mean((2, 3)))


def batches(n: int, seed: int = 0, size: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(8, 3, size, size, generator=gen), torch.randint(0, 10, (8,), generator=gen))
            for _ in range(n)]


def start(seed: int = 0, **kw: Any) -> Any:
    """A gradual search of a fresh `TinyResNet` (16 x 16 inputs)."""
    torch.manual_seed(seed)
    return rartsprune.prune(TinyResNet(), example_inputs=torch.randn(1, 3, 16, 16), seed=seed, **kw)


def removed_count(pruner: Any) -> int:
    return sum(len(v) for v in pruner.removed.values())


def test_the_cubic_schedule() -> None:
    values = [gradual_fraction(t, 10) for t in range(13)]
    assert values[0] == 0.0 and values[10] == 1.0 and values[12] == 1.0
    assert all(b > a for a, b in zip(values[:10], values[1:11]))  # strictly growing until the end
    assert values[5] == pytest.approx(1 - 0.5 ** 3)
    assert gradual_fraction(3, 0) == 1.0


def test_a_gradual_macs_budget_removes_units_step_by_step_and_keeps_what_it_trained() -> None:
    torch.manual_seed(0)
    pruner = rartsprune.prune(torchvision.models.resnet18(num_classes=10), example_inputs=x32(), macs=0.5,
                              gradual_steps=4)
    data = batches(6)
    counts, scores_of_removed = [], []
    for b in data:
        pruner.step(b, b)
        counts.append(removed_count(pruner))
        scores_of_removed += [float(a.detach()[pruner.removed[g.name]].abs().max()) if pruner.removed[g.name] else 0.0
                              for g, a in zip(pruner.handle.groups, pruner.handle.scores)]
    assert 0 < counts[0] < counts[1] < counts[2] <= counts[3]  # the cubic schedule, step by step
    assert counts[3] == counts[4] == counts[5]  # fixed once the schedule is over
    assert max(scores_of_removed) == 0.0  # held at zero after every step, though the optimizer moves them
    removed = pruner.removed
    keep = pruner.selection().keep
    assert all(set(keep[n]).isdisjoint(removed[n]) and len(keep[n]) + len(removed[n]) == g.num_units
               for n, g in ((g.name, g) for g in pruner.handle.groups))
    model = pruner.model
    model.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
    full = rartsprune.flops_report(torchvision.models.resnet18(num_classes=10), x32()).macs
    model = pruner.finalize()
    with torch.no_grad():
        after = model(x)
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)  # the removed units were already zero
    assert pruner.result["widths"] and all(w["kept"] >= 1 for w in pruner.result["widths"].values())
    ratio = rartsprune.flops_report(model, x32()).macs / full
    assert ratio <= 0.5 * 1.001 and ratio == pytest.approx(0.5, rel=TOL)


def test_a_gradual_ratio_and_a_baseline_method() -> None:
    for kw in ({"ratio": 0.3}, {"ratio": 0.3, "method": "l1_norm"}):
        pruner = start(gradual_steps=2, **kw)
        for b in batches(3, size=16):
            pruner.step(b, b)
        pruner.finalize()
        assert pruner.result["prc"] == pytest.approx(0.3, abs=0.02)


def test_a_resumed_gradual_search_continues_the_same_schedule() -> None:
    data = batches(5, size=16)
    whole = start(macs=0.6, gradual_steps=4)
    for b in data:
        whole.step(b, b)
    first = start(macs=0.6, gradual_steps=4)
    for b in data[:2]:
        first.step(b, b)
    state = first.state_dict()
    assert state["removed"] == first.removed and removed_count(first) > 0
    resumed = start(macs=0.6, gradual_steps=4)
    resumed.load_state_dict(state)
    assert resumed.removed == first.removed
    for b in data[2:]:
        resumed.step(b, b)
    assert resumed.removed == whole.removed
    assert resumed.selection().keep == whole.selection().keep


def test_a_gradual_checkpoint_is_refused_by_another_search_or_selection() -> None:
    pruner = start(macs=0.6, gradual_steps=4)
    b = batches(1, size=16)[0]
    pruner.step(b, b)
    state = pruner.state_dict()
    with pytest.raises(ValueError, match="its own selection"):
        start(macs=0.5, gradual_steps=4).load_state_dict(state)
    with pytest.raises(ValueError, match="gradual_steps=4"):
        start(macs=0.6, gradual_steps=3).load_state_dict(state)
    bad = {**state, "removed": {k: [10**6] for k in state["removed"]}}
    other = start(macs=0.6, gradual_steps=4)
    with pytest.raises(ValueError, match="out of range"):
        other.load_state_dict(bad)
    assert other.num_steps == 0 and removed_count(other) == 0  # refused before anything was restored


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gradual_steps": -1}, "gradual_steps must be a non-negative integer"),
    ({"gradual_steps": 2.5}, "gradual_steps must be a non-negative integer"),
    ({"gradual_steps": True}, "gradual_steps must be a non-negative integer"),
    ({"gradual_steps": "3"}, "gradual_steps must be a non-negative integer"),
    ({"gradual_steps": 3, "mode": "l1"}, "needs a fixed size"),
])
def test_bad_gradual_settings_are_refused_and_leave_the_model_untouched(kwargs: dict[str, Any], message: str) -> None:
    model = torchvision.models.resnet18(num_classes=10)
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        rartsprune.prune(model, example_inputs=x32(), **kwargs)
    assert_untouched(model, before)
    with pytest.raises(ValueError, match=message):
        SelectionConfig(**kwargs)


def test_without_gradual_steps_nothing_changes() -> None:
    pruner = start(macs=0.6)
    b = batches(1, size=16)[0]
    pruner.step(b, b)
    assert pruner.removed is None and "removed" in pruner.state_dict()


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"gradual": 1.5}, "gradual must be None .* or a fraction"),
    ({"gradual": -0.1}, "gradual must be None .* or a fraction"),
    ({"gradual": "half"}, "gradual must be None .* or a fraction"),
    ({"gradual": 0.5, "gradual_steps": 3}, "not both"),
    ({"gradual": 0.5, "mode": "l1"}, "needs a fixed size"),
    ({"gradual": 0.5, "search_epochs": 0}, "search_epochs >= 1"),
])
def test_prune_job_validates_gradual(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PruneJob(**kwargs)


def test_pipeline_with_a_gradual_budget(tmp_path: Path) -> None:
    job = PruneJob(model="torchvision:resnet18", data="fake", train_subset=64, test_subset=32, batch_size=16,
                   pretrain_epochs=0, search_epochs=1, finetune_epochs=0, bn_recalibration=1, macs=0.5,
                   plots=False, progress=False, out=str(tmp_path / "run"))  # gradual: the default with a budget
    assert job.gradual is None and job.gradual_fraction == 0.5
    assert job.selection_config(4).gradual_steps == 2 and job.selection_config().gradual_steps == 0
    results = run(job)
    assert results["summary"]["macs_ratio"] <= 0.5 * 1.001
    assert results["summary"]["macs_ratio"] == pytest.approx(0.5, rel=TOL)
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["job"]["gradual"] is None and saved["pruning"]["gradual"] == 0.5
    search = [r for r in saved["history"] if r["phase"] == "search"]
    assert len(search) == 1 and search[0]["score_zeros"] > 0  # the schedule's zeros, at the end of the search


def test_cli_gradual_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import rartsprune.app.pipeline as pipeline
    from rartsprune.app.cli import main

    jobs: list[PruneJob] = []
    monkeypatch.setattr(pipeline, "run", lambda job: jobs.append(job) or {"summary": {}})
    assert main(["prune", "--macs", "0.5", "--gradual", "0.5", "--out", str(tmp_path)]) == 0
    assert main(["prune", "--macs", "0.5", "--gradual-steps", "7", "--out", str(tmp_path)]) == 0
    assert main(["prune", "--macs", "0.5", "--out", str(tmp_path)]) == 0
    assert main(["prune", "--macs", "0.5", "--gradual", "0", "--out", str(tmp_path)]) == 0
    assert (jobs[0].gradual, jobs[0].gradual_steps) == (0.5, 0)
    assert (jobs[1].gradual, jobs[1].gradual_steps, jobs[1].gradual_fraction) == (None, 7, 0.0)
    assert (jobs[2].gradual, jobs[2].gradual_fraction) == (None, 0.5)  # the default with a budget
    assert (jobs[3].gradual, jobs[3].gradual_fraction) == (0.0, 0.0)  # one-shot, after the search


@pytest.mark.parametrize(("kwargs", "expected"), [
    ({"macs": 0.5}, 0.5),
    ({"params": 0.5}, 0.5),
    ({"latency": 0.6}, 0.5),
    ({"macs": 0.5, "method": "milenas"}, 0.5),
    ({"macs": 0.5, "gradual": 0.25}, 0.25),
    ({"macs": 0.5, "gradual": 0}, 0),
    ({"ratio": 0.4}, 0.0),  # a ratio: the former defaults
    ({}, 0.0),
    ({"macs": 0.5, "method": "l1_norm"}, 0.0),  # the baselines stay one-shot
    ({"macs": 0.5, "search_epochs": 0}, 0.0),
    ({"macs": 0.5, "train_during_search": True}, 0.0),
    ({"macs": 0.5, "gradual_steps": 5}, 0.0),
])
def test_the_job_prunes_gradually_by_default_with_a_budget(kwargs: dict[str, Any], expected: float) -> None:
    job = PruneJob(**kwargs)
    assert job.gradual_fraction == expected
    assert job.selection_config(100).gradual_steps == (round(100 * expected) if expected else
                                                       kwargs.get("gradual_steps", 0))


def test_a_gradual_budget_changes_the_search_defaults() -> None:
    """With a budget reached gradually a search ranks by |α|·‖W‖ at arch_lr 1e-2 (GRADUAL_DEFAULTS) unless
    told otherwise; without the schedule, or with a ratio, the former defaults hold."""
    from rartsprune.width import GRADUAL_DEFAULTS

    cases = [({"macs": 0.5, "gradual_steps": 4}, GRADUAL_DEFAULTS["arch_lr"], "l1_norm"),
             ({"macs": 0.5}, 1e-1, "alpha_gamma"),
             ({"ratio": 0.4, "gradual_steps": 4}, 1e-1, "alpha_gamma"),
             ({"macs": 0.5, "gradual_steps": 4, "arch_lr": 3e-2, "importance": "alpha"}, 3e-2, "alpha")]
    for kwargs, arch_lr, ranking in cases:
        pruner = start(**kwargs)
        assert pruner.search_config.arch_lr == pytest.approx(arch_lr), kwargs
        assert pruner.ranking.name == ranking, kwargs
        rartsprune.remove(pruner.model)


def test_the_schedule_trains_the_network_it_becomes() -> None:
    """The survivors' weights keep learning after the schedule: the training loss of the pruned net goes down."""
    pruner = start(ratio=0.5, gradual_steps=3, weight_lr=0.05)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    losses = [pruner.step((x, y), (x, y))["loss_v"] for _ in range(30)]
    assert removed_count(pruner) > 0
    assert sum(losses[-5:]) / 5 < sum(losses[3:8]) / 5
