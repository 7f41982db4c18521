"""Surgery: exact channel removal, planned widths, transactions, plans that re-apply."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.nn.utils import parametrize

import rartsprune
from rartsprune.check import perturb_parameters, random_keep
from rartsprune.errors import SurgeryError

X = torch.randn(2, 3, 32, 32)


def scored_resnet(seed: int = 0) -> tuple[nn.Module, rartsprune.ScoreHandle]:
    torch.manual_seed(seed)
    model = perturb_parameters(torchvision.models.resnet18(num_classes=10), seed=seed).eval()
    return model, rartsprune.attach_scores(model, X[:1])


def zero_outside(handle: rartsprune.ScoreHandle, keep: dict) -> None:
    with torch.no_grad():
        for g, alpha in zip(handle.groups, handle.scores):
            mask = torch.zeros(g.num_units, dtype=torch.bool)
            mask[keep[g.name]] = True
            alpha.uniform_(0.5, 1.5)
            alpha[~mask] = 0.0


def test_surgery_is_exact_and_widths_follow_the_plan() -> None:
    model, handle = scored_resnet()
    keep = random_keep(handle, 0.4, seed=1)
    zero_outside(handle, keep)
    with torch.no_grad():
        scored = model(X)
    groups = {g.name: g for g in handle.groups}
    plan = rartsprune.apply_surgery(model, keep)
    with torch.no_grad():
        pruned = model(X)
    assert (pruned - scored).abs().max().item() <= 1e-5
    # widths exactly as planned
    assert rartsprune.layer_widths(model, list(plan.widths)) == plan.widths
    for name, kept in plan.groups.items():
        assert len(kept) == len(groups[name].channels_of_units(keep[name].tolist()))
    assert model.conv1.out_channels == len(plan.groups["conv1"]) == 38  # 64 channels, 40% removed
    assert model.layer1[0].conv1.in_channels == 38 and model.bn1.num_features == 38
    assert model.fc.out_features == 10  # the head is protected
    assert abs(plan.pruned_fraction() - 0.4) < 0.01
    # a plain module again
    assert not rartsprune.has_scores(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert not any(n.startswith("rartsprune") for n, _ in model.named_parameters())
    model.train()
    model(X).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_reset_kept_scores_keeps_the_weights_scale() -> None:
    """kept_scores="reset": the pruned model computes what the scored model computes with the kept scores set to
    their sign (±1) and the removed ones to zero; "fold" (the default) computes it with the scores as they are."""
    model, handle = scored_resnet()
    keep = random_keep(handle, 0.4, seed=1)
    zero_outside(handle, keep)
    with torch.no_grad():
        handle.score("conv1")[keep["conv1"][:3]] *= -1.0  # a negative score keeps its sign
    reset, folded = copy.deepcopy(model), copy.deepcopy(model)
    reset_handle = rartsprune.get_handle(reset)
    with torch.no_grad():
        scored = model(X)
        for g in reset_handle.groups:
            alpha = reset_handle.score(g.name)
            alpha.copy_(torch.sign(alpha))  # ±1 kept, 0 removed
        expected = reset(X)
    rartsprune.apply_surgery(reset, keep, kept_scores="reset")
    rartsprune.apply_surgery(folded, keep)
    with torch.no_grad():
        assert (reset(X) - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
        assert (folded(X) - scored).abs().max().item() <= 1e-5
        assert (expected - scored).abs().max().item() > 1e-2  # the two differ: the scores were not ±1
    assert rartsprune.layer_widths(reset, ["conv1"]) == rartsprune.layer_widths(folded, ["conv1"])
    with pytest.raises(ValueError, match="kept_scores must be one of 'fold', 'reset'"):
        rartsprune.apply_surgery(model, keep, kept_scores="drop")
    assert rartsprune.has_scores(model)  # refused before anything was touched


def test_surgery_keeps_training_mode_and_default_keep_uses_zero_scores() -> None:
    model, handle = scored_resnet()
    model.train()
    with torch.no_grad():
        handle.score("layer1.0.conv1")[:10] = 0.0
    plan = rartsprune.apply_surgery(model)
    assert model.training and all(m.training for m in model.modules())
    assert model.layer1[0].conv1.out_channels == 54
    assert plan.removed() == {"layer1.0.conv1": list(range(10))}


def test_round_to_and_never_empty() -> None:
    model, handle = scored_resnet()
    keep = {"layer1.0.conv1": list(range(13)), "layer2.0.conv1": list(range(30))}
    plan = rartsprune.plan_from_scores(model, keep, round_to=8)
    assert len(plan.groups["layer1.0.conv1"]) == 16 and len(plan.groups["layer2.0.conv1"]) == 32
    with pytest.raises(ValueError, match="keeps no channel"):
        rartsprune.apply_surgery(model, {"layer1.0.conv1": []})
    with pytest.raises(ValueError, match="outside"):
        rartsprune.apply_surgery(model, {"layer1.0.conv1": [64]})
    with pytest.raises(ValueError, match="unknown or unscored"):
        rartsprune.apply_surgery(model, {"fc": [0]})
    with pytest.raises(ValueError, match="round_to"):
        rartsprune.apply_surgery(model, {}, round_to=0)
    assert rartsprune.has_scores(model) and model.layer1[0].conv1.out_channels == 64


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("stage", ["midway", "widths", "outputs"])
def test_failed_surgery_leaves_model_untouched(monkeypatch: pytest.MonkeyPatch, stage: str) -> None:
    import rartsprune.surgery as surgery

    model, handle = scored_resnet()
    keep = random_keep(handle, 0.5, seed=2)
    zero_outside(handle, keep)
    before = _snapshot(model)
    with torch.no_grad():
        out_before = model(X)
    real = surgery._prune_groups

    def midway(work: nn.Module, removed: dict, inputs: object, *rest: object) -> None:
        first = dict(list(removed.items())[:3])
        real(work, first, inputs, *rest)  # some groups are really pruned on the working copy ...
        raise RuntimeError("injected failure after three groups")  # ... then Torch-Pruning fails

    def overprune(work: nn.Module, removed: dict, inputs: object, *rest: object) -> None:
        real(work, removed, inputs, *rest)
        work.layer3[0].conv2.out_channels -= 1  # what a silent over-prune looks like to the width check

    def corrupt(work: nn.Module, removed: dict, inputs: object, *rest: object) -> None:
        real(work, removed, inputs, *rest)
        with torch.no_grad():
            work.fc.bias.add_(1.0)

    monkeypatch.setattr(surgery, "_prune_groups", {"midway": midway, "widths": overprune, "outputs": corrupt}[stage])
    match = {"midway": "injected failure", "widths": "planned width", "outputs": "differ"}[stage]
    with pytest.raises(SurgeryError, match=match):
        rartsprune.apply_surgery(model, keep)
    assert rartsprune.has_scores(model)
    after = _snapshot(model)
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    with torch.no_grad():
        assert torch.equal(model(X), out_before)
    monkeypatch.undo()
    rartsprune.apply_surgery(model, keep)  # and it still works afterwards


def test_plan_json_and_state_dict_rebuild_the_pruned_model(tmp_path) -> None:
    model, handle = scored_resnet()
    keep = random_keep(handle, 0.6, seed=3)
    zero_outside(handle, keep)
    plan = rartsprune.apply_surgery(model, keep)
    plan.save(tmp_path / "plan.json")
    torch.save(model.state_dict(), tmp_path / "pruned.pt")

    fresh = torchvision.models.resnet18(num_classes=10).eval()
    loaded = rartsprune.PruningPlan.load(tmp_path / "plan.json")
    assert loaded.groups == plan.groups and loaded.version == rartsprune.__version__
    rartsprune.apply_plan(fresh, tmp_path / "plan.json", X[:1])
    fresh.load_state_dict(torch.load(tmp_path / "pruned.pt", weights_only=True))
    with torch.no_grad():
        assert torch.equal(fresh(X), model(X))

    other = torchvision.models.resnet34(num_classes=10)
    with pytest.raises(ValueError, match="another architecture"):
        rartsprune.apply_plan(other, loaded, X[:1])
    bad = plan.to_dict()
    bad["format"] = "something-else"
    with pytest.raises(ValueError, match="not a rartsprune pruning plan"):
        rartsprune.PruningPlan.from_dict(bad)


def test_ghostnet_is_pruned_correctly_or_refused() -> None:
    timm = pytest.importorskip("timm")
    from rartsprune.check import check_model

    model = perturb_parameters(timm.create_model("ghostnet_050", num_classes=10))
    x = torch.randn(2, 3, 64, 64)
    handle = rartsprune.attach_scores(copy.deepcopy(model), x)
    reasons = [g.reason for g in handle.all_groups if g.status == "unsupported"]
    assert any("width" in r for r in reasons)  # the dry run caught Torch-Pruning's over-pruning
    result = check_model(model, x)
    assert result.ok, result.reason


def test_check_refuses_a_vacuous_comparison() -> None:
    from rartsprune.check import check_model

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10)
    nn.init.zeros_(model.fc.weight)
    nn.init.zeros_(model.fc.bias)  # outputs are all zero: no surgery error could show
    result = check_model(model, X)
    assert not result.ok and "nearly zero" in result.reason
    assert check_model(perturb_parameters(model), X).ok
