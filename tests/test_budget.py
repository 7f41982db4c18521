"""MACs / parameter budgets (``rartsprune.prune(model, macs=...)``): the cost after surgery, refusals, plumbing.

Every number is measured with `rartsprune.flops_report` (fvcore, batch 1) on the pruned model and compared
with the budget times the unpruned model's count: within 2 % (relative). The scores are drawn at random
(fixed seed) so that the ranking has no ties.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import timm
import torch
import torch.nn as nn
import torchvision

import rartsprune
from rartsprune.app.models import vgg
from rartsprune.app.pipeline import PruneJob, run
from rartsprune.width import WidthPenalty, unit_macs, unit_params
from rartsprune.width.budget import CostModel
from tests.scripts import load_script

ROOT = Path(__file__).resolve().parents[1]
TOL = 0.02  # relative tolerance of the achieved MACs / parameter fraction

MODELS: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: torchvision.models.resnet18(num_classes=10),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(num_classes=10),
    "timm_mobilenetv3_small_050": lambda: timm.create_model("mobilenetv3_small_050", num_classes=10),
    "cifar_vgg11": lambda: vgg(11, num_classes=10, width=0.25),  # a plain chain: every conv its own group
}
SLOW_MODELS = {"mobilenet_v2"}  # the default run keeps resnet18 and the timm model


def x32() -> torch.Tensor:
    return torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def random_scores(model: nn.Module, seed: int = 0) -> None:
    """Scores uniform in [0.5, 1.5] (no ties in the ranking), reproducibly."""
    torch.manual_seed(seed)
    for a in rartsprune.get_handle(model).scores:
        a.data.uniform_(0.5, 1.5)


def prune_to_budget(name: str, *, seed: int = 0, **kw: Any) -> tuple[dict[str, float], Any]:
    """Prune a fresh ``name`` with ``kw`` (random scores), finalize; the kept fractions of MACs and params."""
    x = x32()
    model = MODELS[name]()
    before = rartsprune.flops_report(model, x)
    pruner = rartsprune.prune(model, example_inputs=x, **kw)
    random_scores(model, seed)
    model = pruner.finalize()
    after = rartsprune.flops_report(model, x)
    assert not rartsprune.has_scores(model)
    return {"macs": after.macs / before.macs, "params": after.params / before.params}, pruner


def assert_no_layer_emptied(pruner: Any) -> None:
    widths = pruner.result["widths"]
    assert widths and all(w["kept"] >= 1 for w in widths.values()), widths


def model_params(names: list[str]) -> list[Any]:
    return [pytest.param(n, marks=[pytest.mark.slow] if n in SLOW_MODELS else []) for n in names]


# ---------------------------------------------------------------------------------------- achieved budgets
@pytest.mark.parametrize("round_to", [None, 8])
@pytest.mark.parametrize("budget", [0.7, 0.35])
@pytest.mark.parametrize("name", model_params(list(MODELS)))
def test_macs_budget_is_met_after_surgery(name: str, budget: float, round_to: int | None) -> None:
    achieved, pruner = prune_to_budget(name, macs=budget, round_to=round_to)
    assert achieved["macs"] == pytest.approx(budget, rel=TOL)
    assert achieved["macs"] <= budget * 1.001  # a budget is an upper bound (up to the prediction's 0.1 %)
    assert_no_layer_emptied(pruner)
    assert pruner.result["budget"] == {"macs": budget}
    assert pruner.result["requested_ratio"] is None


def test_macs_budget_with_round_to_is_not_undershot_by_one_expensive_block() -> None:
    achieved, _ = prune_to_budget("resnet18", seed=1, macs=0.35, round_to=8)
    assert achieved["macs"] == pytest.approx(0.35, rel=TOL)


@pytest.mark.parametrize("name", model_params(["resnet18", "timm_mobilenetv3_small_050"]))
def test_params_budget_is_met_after_surgery(name: str) -> None:
    achieved, pruner = prune_to_budget(name, params=0.5)
    assert achieved["params"] == pytest.approx(0.5, rel=TOL)
    assert achieved["params"] <= 0.5 * 1.001
    assert_no_layer_emptied(pruner)
    assert pruner.result["budget"] == {"params": 0.5}


@pytest.mark.parametrize("round_to", [None, 8])
def test_layer_scope_with_a_budget(round_to: int | None) -> None:
    achieved, pruner = prune_to_budget("resnet18", macs=0.5, scope="layer", round_to=round_to)
    assert achieved["macs"] == pytest.approx(0.5, rel=TOL)
    assert_no_layer_emptied(pruner)
    # the same fraction of every group (rounding aside): no group keeps all its channels, none keeps < 30 %
    fractions = [w["kept"] / w["channels"] for w in pruner.result["widths"].values()]
    assert max(fractions) < 1.0 and min(fractions) > 0.3


@pytest.mark.parametrize("method", ["l1_norm", "random"])
@pytest.mark.parametrize("name", model_params(["resnet18", "timm_mobilenetv3_small_050"]))
def test_one_shot_baselines_meet_the_budget(name: str, method: str) -> None:
    achieved, pruner = prune_to_budget(name, macs=0.35, method=method, round_to=8)
    assert achieved["macs"] == pytest.approx(0.35, rel=TOL)
    assert_no_layer_emptied(pruner)
    assert pruner.result["method"] == method and pruner.result["budget"] == {"macs": 0.35}


# ---------------------------------------------------------------------------------------- the cost model
@pytest.mark.parametrize("round_to", [None, 8])
@pytest.mark.parametrize("name", model_params(["resnet18", "timm_mobilenetv3_small_050"]))
def test_cost_model_counts_equal_fvcore_after_surgery(name: str, round_to: int | None) -> None:
    x = x32()
    model = MODELS[name]()
    handle = rartsprune.attach_scores(model, x)
    cost = CostModel(handle, round_to=round_to)
    unpruned = rartsprune.flops_report(MODELS[name](), x)
    assert cost.macs == unpruned.macs and cost.params == unpruned.params  # the scores are not counted
    g = torch.Generator().manual_seed(3)
    keep = {}
    for group in handle.groups:  # a random number (>= 1) of random units per group
        n = int(torch.randint(1, group.num_units + 1, (1,), generator=g))
        keep[group.name] = sorted(torch.randperm(group.num_units, generator=g)[:n].tolist())
    macs, params = cost.counts(keep)
    fractions = {kind: cost.fraction(keep, kind) for kind in ("macs", "params")}  # before surgery detaches
    rartsprune.apply_surgery(model, keep, round_to=round_to)
    after = rartsprune.flops_report(model, x)
    assert after.macs < 0.9 * unpruned.macs  # the selection really removed something
    assert macs == pytest.approx(after.macs, rel=3e-3)  # squeeze-excite gating MACs are predicted to ~0.1 %
    assert params == pytest.approx(after.params, rel=3e-3)  # SE biases are not scaled exactly
    assert fractions["macs"] == pytest.approx(after.macs / unpruned.macs, rel=3e-3)
    assert fractions["params"] == pytest.approx(after.params / unpruned.params, rel=3e-3)


@pytest.mark.parametrize("name", model_params(["resnet18", "timm_mobilenetv3_small_050", "cifar_vgg11"]))
def test_unit_params_is_what_removing_that_unit_deletes(name: str) -> None:
    x = x32()
    handle = rartsprune.attach_scores(MODELS[name](), x)
    per_unit, total = unit_params(handle)
    assert total == rartsprune.flops_report(MODELS[name](), x).params  # the scores are not counted
    groups = handle.groups
    rartsprune.remove(handle.model)
    picked = sorted({0, len(groups) // 2, len(groups) - 1})  # the first, a middle and the last group
    for i in picked:
        group = groups[i]
        model = MODELS[name]()
        rartsprune.attach_scores(model, x)
        unit = group.num_units - 1
        rartsprune.apply_surgery(model, {group.name: [u for u in range(group.num_units) if u != unit]})
        deleted = total - rartsprune.flops_report(model, x).params
        assert deleted > 0 and float(per_unit[group.name][unit]) == pytest.approx(deleted, rel=1e-6), group.name


def test_a_params_budget_searches_with_parameter_costs() -> None:
    x = x32()
    pressure = {}
    for kind in ("macs", "params"):
        pruner = rartsprune.prune(MODELS["cifar_vgg11"](), example_inputs=x, **{kind: 0.5})
        penalty = pruner.search.arch_penalty
        assert penalty.cost_kind == kind
        per_unit, total = (unit_params if kind == "params" else unit_macs)(pruner.handle)
        for g, c in zip(pruner.handle.groups, penalty.costs):
            assert torch.allclose(c, per_unit[g.name] / total)
        grads = torch.autograd.grad(penalty(), pruner.handle.scores)
        pressure[kind] = {g.name: float(v.mean()) for g, v in zip(pruner.handle.groups, grads)}  # per conv
        rartsprune.remove(pruner.model)
    # a plain VGG on 32x32 images: the feature maps shrink 16-fold in area from the first conv to the last, so a
    # channel of the first conv costs the most MACs and one of a late conv the most parameters
    first, last = "features.0", "features.25"
    assert max(pressure["macs"], key=pressure["macs"].__getitem__) == first
    assert pressure["params"][first] == min(pressure["params"].values())
    assert pressure["params"][last] / pressure["macs"][last] > 10 * pressure["params"][first] / pressure["macs"][first]
    with pytest.raises(ValueError, match="kind must be one of"):
        handle = rartsprune.attach_scores(MODELS["cifar_vgg11"](), x)
        try:
            WidthPenalty(handle, cost_weight=1.0, kind="latency")
        finally:
            rartsprune.remove(handle.model)


# ---------------------------------------------------------------------------------------- refusals
def snapshot(model: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """State and structure of ``model``: weights, and per module its class, attributes, hooks and tensors."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    structure = {
        name: (type(m), sorted(vars(m)), len(m._forward_hooks), len(m._forward_pre_hooks),
               len(m._backward_hooks), sorted(m._parameters), sorted(m._buffers))
        for name, m in model.named_modules()
    }
    return state, structure


def assert_untouched(model: nn.Module, before: tuple[dict[str, torch.Tensor], dict[str, Any]]) -> None:
    state, structure = snapshot(model)
    assert not rartsprune.has_scores(model)
    assert structure == before[1]
    assert state.keys() == before[0].keys() and all(torch.equal(state[k], before[0][k]) for k in state)
    assert all(p.requires_grad for p in model.parameters())


BAD = [
    ({"macs": 0}, "strictly between 0 and 1"),
    ({"macs": 1}, "strictly between 0 and 1"),
    ({"macs": 1.0}, "strictly between 0 and 1"),
    ({"macs": -0.5}, "strictly between 0 and 1"),
    ({"macs": float("nan")}, "strictly between 0 and 1"),
    ({"macs": float("inf")}, "strictly between 0 and 1"),
    ({"macs": "0.5"}, "strictly between 0 and 1"),
    ({"macs": True}, "strictly between 0 and 1"),
    ({"params": 0}, "strictly between 0 and 1"),
    ({"params": 1.5}, "strictly between 0 and 1"),
    ({"ratio": 0.3, "macs": 0.5}, "ratio and macs"),
    ({"macs": 0.5, "params": 0.5}, "macs and params"),
    ({"macs": 0.5, "mode": "l1"}, "mode='l1'"),
    ({"params": 0.5, "mode": "l1"}, "mode='l1'"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[repr(kw) for kw, _ in BAD])
def test_bad_budgets_are_refused_and_leave_the_model_untouched(kwargs: dict[str, Any], message: str) -> None:
    model = torchvision.models.resnet18(num_classes=10)
    before = snapshot(model)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rartsprune.prune(model, example_inputs=x32(), **kwargs)
    assert_untouched(model, before)


def reachable_minimum(model: nn.Module, kind: str, round_to: int | None) -> float:
    """The cost fraction with one unit per group, computed on a scored copy."""
    twin = copy.deepcopy(model)
    handle = rartsprune.attach_scores(twin, x32())
    minimum = CostModel(handle, round_to=round_to).fraction({g.name: [0] for g in handle.groups}, kind)
    rartsprune.remove(twin)
    return minimum


@pytest.mark.parametrize("kind", ["macs", "params"])
def test_a_budget_below_the_reachable_minimum_names_it(kind: str) -> None:
    model = torchvision.models.resnet18(num_classes=10)
    minimum = reachable_minimum(model, kind, None)
    assert 0.0 < minimum < 0.05
    before = snapshot(model)
    with pytest.raises(ValueError, match="reachable minimum") as info:
        rartsprune.prune(model, example_inputs=x32(), **{kind: minimum / 2})
    assert f"{minimum:.4f}" in str(info.value)
    assert f"{kind} >= {math.ceil(minimum * 1e4) / 1e4}" in str(info.value)
    assert_untouched(model, before)
    # the refused call left nothing behind: the same model prunes to a reachable budget
    pruner = rartsprune.prune(model, example_inputs=x32(), **{kind: 0.5})
    assert pruner.result is None and rartsprune.has_scores(model)
    pruner.remove()


def test_the_reachable_minimum_includes_round_to() -> None:
    model = torchvision.models.resnet18(num_classes=10)
    low, high = reachable_minimum(model, "macs", None), reachable_minimum(model, "macs", 8)
    assert low < high
    budget = (low + high) / 2
    before = snapshot(model)
    with pytest.raises(ValueError, match=f"reachable minimum.*{high:.4f}.*round_to=8"):
        rartsprune.prune(model, macs=budget, round_to=8, example_inputs=x32())
    assert_untouched(model, before)
    pruner = rartsprune.prune(model, macs=budget, example_inputs=x32())  # reachable without rounding
    pruner.remove()


# ---------------------------------------------------------------------------------------- PruneJob and the CLI
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"macs": 1.5}, "strictly between"), ({"params": 0.0}, "strictly between"), ({"macs": "0.5"}, "strictly"),
     ({"macs": 0.5, "params": 0.5}, "macs= or params="), ({"macs": 0.5, "mode": "l1"}, "mode='l1'"),
     ({"macs": 0.5, "ratio": 0.3}, "pass one of ratio=, macs= or params=")],
)
def test_prune_job_validates_the_budget(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PruneJob(**kwargs)


def test_prune_job_budget() -> None:
    assert PruneJob().budget is None
    job = PruneJob(macs=1 / 2)
    assert job.budget == ("macs", 0.5) and job.ratio is None and job.to_dict()["selection"]["macs"] == 0.5
    assert PruneJob(params=0.25).budget == ("params", 0.25)


def test_pipeline_with_a_macs_budget(tmp_path: Path) -> None:
    job = PruneJob(model="torchvision:resnet18", data="fake", train_subset=64, test_subset=32, batch_size=32,
                   pretrain_epochs=0, search_epochs=1, finetune_epochs=0, bn_recalibration=1, macs=0.5,
                   plots=False, progress=False, out=str(tmp_path / "run"))
    results = run(job)
    assert results["summary"]["macs_ratio"] == pytest.approx(0.5, rel=TOL)
    assert results["summary"]["macs_ratio"] <= 0.5 * 1.001
    saved = json.loads((tmp_path / "run" / "results.json").read_text())
    assert saved["pruning"]["budget"] == {"macs": 0.5}
    assert saved["pruning"]["requested_ratio"] is None  # the ratio was not passed to prune()
    assert saved["job"]["selection"]["macs"] == 0.5 and saved["job"]["selection"]["params"] is None
    assert saved["summary"] == results["summary"]


@pytest.fixture
def captured_job(monkeypatch: pytest.MonkeyPatch) -> list[PruneJob]:
    """Replace `rartsprune.app.pipeline.run` so that ``python -m rartsprune prune`` only builds its job."""
    import rartsprune.app.pipeline as pipeline

    jobs: list[PruneJob] = []

    def fake_run(job: PruneJob) -> dict[str, Any]:
        jobs.append(job)
        return {"summary": {}}

    monkeypatch.setattr(pipeline, "run", fake_run)
    return jobs


def test_cli_parses_the_budget_flags(captured_job: list[PruneJob], tmp_path: Path) -> None:
    from rartsprune.app.cli import main

    out = ["--out", str(tmp_path)]
    assert main(["prune", "--macs", "0.5", *out]) == 0
    assert main(["prune", "--params", "0.25", *out]) == 0
    assert main(["prune", "--ratio", "0.3", *out]) == 0
    assert main(["prune", *out]) == 0
    (macs, params, ratio, default) = captured_job
    assert (macs.macs, macs.params, macs.ratio, macs.budget) == (0.5, None, None, ("macs", 0.5))
    assert params.budget == ("params", 0.25)
    assert (ratio.ratio, ratio.budget) == (0.3, None)
    assert (default.ratio, default.budget) == (0.4, None)


@pytest.mark.parametrize(
    ("argv", "message"),
    [(["--ratio", "0.3", "--macs", "0.5"], "argument --macs: not allowed with argument --ratio"),
     (["--macs", "0.5", "--params", "0.5"], "argument --params: not allowed with argument --macs"),
     (["--macs", "1.5"], "macs must be a number strictly between 0 and 1"),
     (["--macs", "0.5", "--mode", "l1"], "mode='l1'")],
)
def test_cli_rejects_bad_budget_flags(argv: list[str], message: str, captured_job: list[PruneJob],
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from rartsprune.app.cli import main

    with pytest.raises(SystemExit) as info:
        main(["prune", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err
    assert not captured_job


def test_cli_help_describes_the_budget(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from rartsprune.app.cli import main

    monkeypatch.setenv("COLUMNS", "300")  # one line per option: the help text is not wrapped
    with pytest.raises(SystemExit):
        main(["prune", "--help"])
    out = capsys.readouterr().out
    assert "fraction of the model's MACs to keep (fvcore multiply-accumulates, batch 1); exclusive with --ratio" in out
    assert "[--ratio RATIO | --macs MACS | --params PARAMS | --latency LATENCY]" in out


# ---------------------------------------------------------------------------------------- recipes
def load_recipe(name: str) -> ModuleType:
    return load_script(f"recipes/{name}.py", f"recipe_{name}", register=True)


def test_resnet164_recipe_takes_a_macs_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    recipe = load_recipe("resnet164_cifar")
    tiny = ["--data", "fake", "--depth", "11", "--epochs", "0", "--search-epochs", "1", "--finetune-epochs", "0",
            "--train-subset", "64", "--test-subset", "32", "--batch-size", "32", "--bn-recalibration", "1",
            "--no-progress", "--out", str(tmp_path / "r11")]
    assert recipe.main([*tiny, "--macs", "0.5"]) == 0
    results = json.loads((tmp_path / "r11" / "results.json").read_text())
    assert results["summary"]["macs_ratio"] == pytest.approx(0.5, rel=TOL)
    assert results["pruning"]["budget"] == {"macs": 0.5}
    assert "(budget: macs x0.5)" in capsys.readouterr().out
    for bad, message in ((["--ratio", "0.6", "--macs", "0.5"], "not allowed with argument --ratio"),
                         (["--macs", "0.5", "--mode", "l1"], "mode='l1'")):
        with pytest.raises(SystemExit) as info:
            recipe.main([*tiny, *bad])
        assert info.value.code == 2 and message in capsys.readouterr().err
