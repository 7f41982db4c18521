"""Criteria as objects: built-in names and `Importance` objects rank the same way, a user's criterion is used
as given, and bad criteria are refused before the model is touched."""

from __future__ import annotations

import copy

import pytest
import torch

import rartsprune
from rartsprune.width import (
    IMPORTANCES,
    AlphaGammaImportance,
    FunctionImportance,
    Importance,
    MagnitudeImportance,
    RandomImportance,
    get_importance,
)
from tests.test_width import EXAMPLE, batches, new_model


class KeepLastUnits(Importance):
    """Importance = unit index: the selection removes the first units of every group."""

    name = "keep_last"

    def __call__(self, handle):
        return {g.name: torch.arange(g.num_units, dtype=torch.float32) for g in handle.groups}


def test_names_and_objects_resolve() -> None:
    assert set(IMPORTANCES) == {"alpha", "alpha_gamma", "normalized", "l1_norm", "slimming", "random"}
    for name in IMPORTANCES:
        assert get_importance(name).name == name
    crit = KeepLastUnits()
    assert get_importance(crit) is crit
    assert get_importance(lambda h: {}).name == "<lambda>" and isinstance(get_importance(lambda h: {}), FunctionImportance)
    assert get_importance("random", seed=3).seed == 3
    with pytest.raises(ValueError, match="unknown importance 'fisher'; valid: alpha, alpha_gamma"):
        get_importance("fisher")
    with pytest.raises(TypeError, match="importance must be a name, an Importance or a function"):
        get_importance(3)


def test_an_object_ranks_as_its_name() -> None:
    results = []
    for importance in ("alpha_gamma", AlphaGammaImportance()):
        model = new_model()
        pruner = rartsprune.prune(model, ratio=0.4, example_inputs=EXAMPLE, weight_lr=0.05, importance=importance)
        for bt, bv in batches(4):
            pruner.step(bt, bv)
        results.append((pruner.selection().keep, pruner.config["importance"]))
    assert results[0] == results[1] and results[0][1] == "alpha_gamma"
    # a baseline's default criterion is its own object: l1_norm ranks by Torch-Pruning's group magnitude
    model = new_model()
    base = rartsprune.prune(model, ratio=0.4, example_inputs=EXAMPLE, method="l1_norm")
    assert base.config["importance"] == "l1_norm"
    direct = MagnitudeImportance()(base.handle)
    for name, imp in base.importance().items():
        torch.testing.assert_close(imp, direct[name])


def test_a_users_criterion_decides_what_is_kept() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, ratio=0.5, example_inputs=EXAMPLE, method="l1_norm", importance=KeepLastUnits(),
                              scope="layer")
    keep = pruner.selection().keep
    for g in pruner.handle.groups:
        n = g.num_units
        assert keep[g.name] == list(range(n - len(keep[g.name]), n)) and len(keep[g.name]) < n
    pruned = pruner.finalize()
    assert not rartsprune.has_scores(pruned)
    # the random criterion is seeded: the same seed ranks the same way
    a = RandomImportance(seed=5)(rartsprune.attach_scores(new_model(), EXAMPLE))
    b = RandomImportance(seed=5)(rartsprune.attach_scores(new_model(), EXAMPLE))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_bad_criterion_leaves_the_model_alone() -> None:
    model = new_model()
    before = copy.deepcopy(model.state_dict())
    for bad, err in (("fisher", ValueError), (object(), TypeError)):
        with pytest.raises(err):
            rartsprune.prune(model, ratio=0.4, example_inputs=EXAMPLE, importance=bad)
        assert not rartsprune.has_scores(model)
        assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_selection_config_is_checked_on_construction() -> None:
    from rartsprune.width import SelectionConfig

    assert SelectionConfig().ratio == 0.4 and SelectionConfig().budget is None
    assert SelectionConfig(params=0.3).budget == ("params", 0.3) and SelectionConfig(params=0.3).ratio is None
    bad = [
        (dict(scope="row"), "scope must be 'global' or 'layer'"),
        (dict(ratio=0.4, macs=0.5), "pass one of ratio=, macs= or params="),
        (dict(mode="l1", macs=0.5), "macs= is a budget for mode='ratio'"),
        (dict(ratio=1.0), r"ratio must be a number in \[0, 1\)"),
        (dict(threshold=-1.0), "threshold must be a non-negative number"),
        (dict(round_to=0), "round_to must be a positive integer"),
        (dict(mode="size"), "unknown mode 'size'"),
        (dict(importance="fisher"), "unknown importance 'fisher'"),
    ]
    for kwargs, message in bad:
        with pytest.raises(ValueError, match=message):
            SelectionConfig(**kwargs)


def test_prune_takes_a_selection_config() -> None:
    from rartsprune.width import SelectionConfig

    keeps = []
    for how in ("keywords", "object"):
        model = new_model()
        if how == "keywords":
            pruner = rartsprune.prune(model, macs=0.5, scope="layer", example_inputs=EXAMPLE, method="l1_norm")
        else:
            pruner = rartsprune.prune(model, selection=SelectionConfig(macs=0.5, scope="layer"), example_inputs=EXAMPLE,
                                      method="l1_norm")
        keeps.append(pruner.selection().keep)
        assert pruner.config["budget"] == ("macs", 0.5) and pruner.config["scope"] == "layer"
    assert keeps[0] == keeps[1]
    model = new_model()
    with pytest.raises(ValueError, match=r"either as selection= or as keywords, not both \(got \['ratio'\]\)"):
        rartsprune.prune(model, 0.3, selection=SelectionConfig(), example_inputs=EXAMPLE)
    with pytest.raises(TypeError, match="selection must be a SelectionConfig"):
        rartsprune.prune(model, selection={"ratio": 0.3}, example_inputs=EXAMPLE)
    assert not rartsprune.has_scores(model)


def test_a_budget_brings_the_macs_weighted_pressure() -> None:
    from rartsprune.width import BUDGET_DEFAULTS, DEFAULTS

    assert BUDGET_DEFAULTS == {"l1": 0.0, "cost_weight": 2.0}
    settings = {}
    for name, kwargs in {"ratio": {"ratio": 0.4}, "macs": {"macs": 0.5}, "params": {"params": 0.5},
                         "macs, explicit": {"macs": 0.5, "l1": 1e-3, "cost_weight": 0.5}}.items():
        pruner = rartsprune.prune(new_model(), example_inputs=EXAMPLE, **kwargs)
        settings[name] = (pruner.config["l1"], pruner.config["cost_weight"])
    assert settings == {"ratio": (DEFAULTS["ratio"]["l1"], 0.0), "macs": (0.0, 2.0), "params": (0.0, 2.0),
                        "macs, explicit": (1e-3, 0.5)}
    with pytest.raises(ValueError, match="cost_weight must be a non-negative number"):
        rartsprune.prune(new_model(), macs=0.5, example_inputs=EXAMPLE, cost_weight=-1.0)


def test_search_config_is_checked_on_construction_and_drives_the_search() -> None:
    from rartsprune.width import SelectionConfig, WidthSearchConfig

    for kwargs, match in (({"method": "greedy"}, "unknown method 'greedy'"), ({"update": "slow"}, "update must be"),
                          ({"lam": -1.0}, "lam must be"), ({"weight_lr": 0.0}, "weight_lr must be a positive"),
                          ({"arch_lr": float("nan")}, "arch_lr must be"), ({"grad_clip": 0}, "grad_clip must be"),
                          ({"cost_weight": -2.0}, "cost_weight must be")):
        with pytest.raises(ValueError, match=match):
            WidthSearchConfig(**kwargs)
    with pytest.raises(TypeError, match="weight_scheduler must be a callable"):
        WidthSearchConfig(weight_scheduler=3)
    with pytest.raises(ValueError, match="mode='l1' needs a search method"):
        WidthSearchConfig(method="random").resolved(SelectionConfig(mode="l1"))
    ratio = WidthSearchConfig().resolved(SelectionConfig())
    budget = WidthSearchConfig().resolved(SelectionConfig(macs=0.5))
    assert (ratio.l1, ratio.cost_weight, ratio.arch_lr) == (4e-3, 0.0, 0.1)
    assert (budget.l1, budget.cost_weight) == (0.0, 2.0)

    # the same search from keywords and from the object: the same scores after the same steps
    scores = []
    for how in ("keywords", "object"):
        torch.manual_seed(0)
        model = new_model()
        if how == "keywords":
            pruner = rartsprune.prune(model, example_inputs=EXAMPLE, update="fused", lam=0.5, weight_lr=0.05)
        else:
            pruner = rartsprune.prune(model, example_inputs=EXAMPLE,
                                      search_config=WidthSearchConfig(update="fused", lam=0.5, weight_lr=0.05))
        assert pruner.search.update == "fused" and pruner.search.lam == 0.5
        assert pruner.search_config.weight_lr == 0.05 and pruner.config["update"] == "fused"
        for bt, bv in batches(2):
            pruner.step(bt, bv)
        scores.append(torch.cat([a.detach().flatten() for a in pruner.handle.scores]))
    torch.testing.assert_close(scores[0], scores[1], rtol=0, atol=0)
    model = new_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"either as search_config= or as keywords, not both \(got \['lam'\]\)"):
        rartsprune.prune(model, lam=2.0, search_config=WidthSearchConfig(), example_inputs=EXAMPLE)
    with pytest.raises(TypeError, match="search_config must be a WidthSearchConfig"):
        rartsprune.prune(model, search_config={"lam": 2.0}, example_inputs=EXAMPLE)
    assert not rartsprune.has_scores(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_former_search_keywords_warn_and_still_work() -> None:
    with pytest.warns(DeprecationWarning, match="use weight_lr="):
        pruner = rartsprune.prune(new_model(), example_inputs=EXAMPLE, lr=0.05)
    assert pruner.search_config.weight_lr == 0.05
    with pytest.warns(DeprecationWarning, match="use update="):
        pruner = rartsprune.prune(new_model(), example_inputs=EXAMPLE, rarts_mode="fused")
    assert pruner.search.update == "fused"


def test_searches_and_baselines_share_one_protocol() -> None:
    from rartsprune.width import Searcher

    for method in ("rarts", "darts1", "milenas", "l1_norm", "slimming", "random"):
        pruner = rartsprune.prune(new_model(), example_inputs=EXAMPLE, method=method)
        assert isinstance(pruner.search, Searcher), method
        (bt, bv), = batches(1)
        stats = pruner.search.step(bt, bv)
        assert pruner.search.num_steps == 1 and all(isinstance(v, float) for v in stats.values())
