"""``max_pruning_ratio``: the largest fraction of any one group's units a selection may remove.

Each group keeps at least ``ceil((1 - max_pruning_ratio) * units)`` of its most important units in every mode
(ratio, budget, ℓ1 threshold) and scope; a budget or ratio the cap makes unreachable is refused with the model
untouched; the setting reaches the job and the CLI.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision

import rartsprune
from rartsprune.app.models import vgg
from rartsprune.app.pipeline import PruneJob
from rartsprune.width import SelectionConfig
from rartsprune.width.selection import min_units, protected_units, select_by_ratio, select_by_threshold
from tests.test_budget import assert_untouched, snapshot, x32


def skewed_scores(model: torch.nn.Module) -> None:
    """Scores that make a global ranking strip the last group: its units score 100x below every other."""
    handle = rartsprune.get_handle(model)
    gen = torch.Generator().manual_seed(0)
    for i, a in enumerate(handle.scores):
        a.data.copy_(torch.rand(a.shape, generator=gen) + 1.0)
        if i == len(handle.scores) - 1:
            a.data.mul_(0.01)


def kept_fraction(pruner: Any) -> dict[str, float]:
    return {n: w["kept"] / w["channels"] for n, w in pruner.result["widths"].items()}


@pytest.mark.parametrize("cap", [1.0, 0.9, 0.6])
def test_min_units(cap: float) -> None:
    for n in (1, 2, 3, 10, 64, 1280):
        k = min_units(n, cap)
        assert 1 <= k <= n
        assert k >= (1 - cap) * n - 1e-9 and (k == 1 or k - 1 < (1 - cap) * n)


def test_protected_units_are_each_groups_best() -> None:
    model = vgg(11, num_classes=10, width=0.25)
    handle = rartsprune.attach_scores(model, x32())
    try:
        imp = {g.name: torch.randperm(g.num_units).float() for g in handle.groups}
        one = protected_units(handle, imp)
        assert one == {g.name: [int(torch.argmax(imp[g.name]))] for g in handle.groups}
        capped = protected_units(handle, imp, 0.75)
        for g in handle.groups:
            k = min_units(g.num_units, 0.75)
            assert capped[g.name] == sorted(torch.argsort(imp[g.name], descending=True)[:k].tolist())
    finally:
        rartsprune.remove(model)


@pytest.mark.parametrize("scope", ["global", "layer"])
@pytest.mark.parametrize("size", [{"ratio": 0.5}, {"macs": 0.4}, {"params": 0.4}])
def test_no_group_loses_more_than_the_cap(size: dict[str, float], scope: str) -> None:
    x = x32()
    results = {}
    for cap in (1.0, 0.7):
        model = vgg(11, num_classes=10, width=0.25)
        before = rartsprune.flops_report(model, x)
        pruner = rartsprune.prune(model, example_inputs=x, scope=scope, max_pruning_ratio=cap, **size)
        skewed_scores(model)
        model = pruner.finalize()
        after = rartsprune.flops_report(model, x)
        results[cap] = kept_fraction(pruner)
        assert pruner.result["max_pruning_ratio"] == cap
        assert min(results[cap].values()) >= 1 - cap - 1e-9, results[cap]
        for kind in ("macs", "params"):
            if kind in size:  # the budget is still met: within 2 % globally; a layer's whole units are coarse
                fraction = getattr(after, kind) / getattr(before, kind)
                assert fraction == pytest.approx(size[kind], rel=0.02 if scope == "global" else 0.05)
                assert fraction <= size[kind] * 1.001
        assert model(x).shape == (1, 10)
    last = list(results[1.0])[-1]
    if scope == "global":  # without the cap the global ranking strips the low-scored last group to one channel
        assert results[1.0][last] < 0.3 - 1e-9 and results[0.7][last] == pytest.approx(0.3, abs=0.02)


def test_threshold_selection_keeps_the_cap() -> None:
    model = vgg(11, num_classes=10, width=0.25)
    handle = rartsprune.attach_scores(model, x32())
    try:
        imp = {g.name: torch.zeros(g.num_units) for g in handle.groups}  # every unit under the threshold
        free = select_by_threshold(handle, 0.5, importance=imp)
        capped = select_by_threshold(handle, 0.5, importance=imp, max_pruning_ratio=0.75)
        for g in handle.groups:
            assert len(free.keep[g.name]) == 1
            assert len(capped.keep[g.name]) == math.ceil(0.25 * g.num_units)
        ratio = select_by_ratio(handle, 0.9, importance=imp, max_pruning_ratio=0.75)
        assert ratio.prc == pytest.approx(0.75, abs=0.01)  # removes all the cap lets go, no more
    finally:
        rartsprune.remove(model)


def test_the_slimming_collapse_on_mobilenet_v2_is_capped() -> None:
    """Network Slimming's global |γ| threshold on a trained MobileNetV2 emptied its last conv (1 of 1,280 kept);
    with a cap every layer keeps its share whatever the γ say."""
    model = torchvision.models.mobilenet_v2(num_classes=10, width_mult=0.5)
    with torch.no_grad():
        model.features[18][1].weight.mul_(1e-3)  # the last conv's BN scales far below every other
    pruner = rartsprune.prune(model, macs=0.5, method="slimming", max_pruning_ratio=0.8, example_inputs=x32())
    fractions = {n: k / c for n, (k, c) in pruner.selection().channels.items()}
    assert min(fractions.values()) >= 0.2 - 1e-9
    pruner.remove()
    free = rartsprune.prune(model, macs=0.5, method="slimming", example_inputs=x32())
    assert min(k / c for k, c in free.selection().channels.values()) < 0.01  # what the cap prevents
    free.remove()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"macs": 0.2, "max_pruning_ratio": 0.5}, r"reachable minimum: with max_pruning_ratio=0.5"),
     ({"ratio": 0.6, "max_pruning_ratio": 0.5}, r"ratio=0.6 removes more than max_pruning_ratio=0.5 lets go"),
     ({"max_pruning_ratio": 0.0}, r"max_pruning_ratio must be a number in \(0, 1\]"),
     ({"max_pruning_ratio": 1.5}, r"max_pruning_ratio must be a number in \(0, 1\]"),
     ({"max_pruning_ratio": "0.9"}, r"max_pruning_ratio must be a number in \(0, 1\]"),
     ({"max_pruning_ratio": float("nan")}, r"max_pruning_ratio must be a number in \(0, 1\]")],
)
def test_unreachable_or_bad_caps_are_refused_and_leave_the_model_untouched(kwargs: dict[str, Any],
                                                                             message: str) -> None:
    model = torchvision.models.resnet18(num_classes=10)
    before = snapshot(model)
    with pytest.raises(ValueError, match=message):
        rartsprune.prune(model, example_inputs=x32(), **kwargs)
    assert_untouched(model, before)
    assert not rartsprune.has_scores(model)


def test_a_resumed_gradual_search_keeps_its_cap() -> None:
    x = torch.randn(4, 3, 32, 32)
    y = torch.randint(0, 10, (4,))
    model = vgg(11, num_classes=10, width=0.25)
    pruner = rartsprune.prune(model, macs=0.5, gradual_steps=2, max_pruning_ratio=0.8, example_inputs=x[:1])
    pruner.step((x, y), (x, y))
    state = pruner.state_dict()
    assert state["config"]["max_pruning_ratio"] == 0.8
    pruner.remove()
    other = rartsprune.prune(model, macs=0.5, gradual_steps=2, max_pruning_ratio=0.9, example_inputs=x[:1])
    with pytest.raises(ValueError, match="max_pruning_ratio=0.8 -> 0.9"):
        other.load_state_dict(state)
    other.remove()


def test_job_and_cli_take_the_cap(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    job = PruneJob(macs=0.5, max_pruning_ratio=0.9)
    assert job.selection == SelectionConfig(macs=0.5, max_pruning_ratio=0.9)
    assert job.to_dict()["selection"]["max_pruning_ratio"] == 0.9
    with pytest.raises(ValueError, match="max_pruning_ratio must be"):
        PruneJob(max_pruning_ratio=0)

    from rartsprune.app import cli, pipeline

    jobs: list[PruneJob] = []
    monkeypatch.setattr(pipeline, "run", lambda j: jobs.append(j) or {"summary": {}})
    assert cli.main(["prune", "--macs", "0.5", "--max-pruning-ratio", "0.75", "--out", str(tmp_path)]) == 0
    assert jobs[-1].selection.max_pruning_ratio == 0.75
