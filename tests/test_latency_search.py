"""A latency budget's search pressure (per-unit latency costs) and ``round_to="auto"``, on synthetic tables.

Nothing is timed: every table here is built by hand (`synthetic_table`) so that the expected ordering of the
costs and the expected rounding are known. The tiny model has three scored groups: ``"0"`` (16 channels: the
first conv's outputs, the second conv's inputs), ``"6"`` (32: the second conv's outputs, the depthwise conv,
the 1x1 conv's inputs) and ``"9"`` (32: the 1x1 conv's outputs, the head's inputs). By MACs ``"0"`` is the
most expensive per channel and ``"9"`` the cheapest.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import rartsprune
from rartsprune.flops import flops_report
from rartsprune.width import (
    ROUND_TO_CANDIDATES,
    SelectionConfig,
    WidthLatencyTable,
    WidthPenalty,
    allowed_roundings,
    choose_rounding,
    get_importance,
    unit_macs,
)
from rartsprune.width.latency import LatencyModel, LayerLatency, prunable_layers
from tests.test_width_latency import X, tiny

GROUPS = ("0", "6", "9")


def synthetic_table(ms: Callable[[str, int, int], float], rest: float = 0.0) -> WidthLatencyTable:
    """A table of ``tiny()`` sampled at *every* width (so the prediction is ``ms`` exactly at whole widths):
    ``ms(layer, in_width, out_width)``, plus the remainder ``rest``."""
    model = tiny()
    layers = prunable_layers(rartsprune.attach_scores(model, X))
    rartsprune.remove(model)
    modules = dict(model.named_modules())
    out = {}
    for name, (pin, pout) in layers.items():
        m = modules[name]
        linear = isinstance(m, nn.Linear)
        cin, cout = (m.in_features, m.out_features) if linear else (m.in_channels, m.out_channels)
        dw = not linear and m.groups > 1
        ins = list(range(1, cin + 1)) if pin and not dw else [cin]
        outs = list(range(1, cout + 1)) if pout or dw else [cout]
        out[name] = LayerLatency("linear" if linear else "conv2d", cin, cout, dw, [1, cin, 32, 32], ins, outs,
                                 [[ms(name, i, o) for o in outs] for i in ins])
    full = sum(lat.full_ms for lat in out.values())
    return WidthLatencyTable("cpu", 1, [1, 3, 32, 32], full + rest, rest, out)


#: per-layer latency at full width (ms) of the linear table: the 1x1 conv and the head are slow, the first convs
#: fast — the opposite of the MACs, which the first two convs dominate.
SLOW_HEAD = {"0": 0.1, "3": 0.2, "6": 0.1, "9": 1.0, "14": 3.0}
REST = 0.6
FULL = sum(SLOW_HEAD.values()) + REST  # 5.0 ms
WIDTHS = {"0": (3, 16), "3": (16, 32), "6": (32, 32), "9": (32, 32), "14": (32, 10)}


def linear_ms(full_ms: dict[str, float]) -> Callable[[str, int, int], float]:
    """Latency proportional to the kept fraction of each pruned width (bilinear where both are pruned)."""
    def ms(name: str, i: int, o: int) -> float:
        cin, cout = WIDTHS[name]
        return full_ms[name] * (i / cin) * (o / cout)

    return ms


def scored(table: WidthLatencyTable) -> tuple[nn.Module, LatencyModel]:
    model = tiny()
    handle = rartsprune.attach_scores(model, X)
    return model, LatencyModel(handle, table)


# ------------------------------------------------------------------------------------- per-unit latency costs
def test_unit_latency_costs_follow_the_table() -> None:
    model, latency = scored(synthetic_table(linear_ms(SLOW_HEAD), rest=REST))
    costs = latency.unit_costs()
    assert set(costs) == set(GROUPS)
    assert all(c.shape == (n,) and bool((c > 0).all()) for c, n in zip((costs[g] for g in GROUPS), (16, 32, 32)))
    # the definition: (T(full) - T(group at one unit)) / (units - 1) / T(full); with a table linear in the widths
    # a group's unit costs the sum over the layers it leaves of (layer ms / layer width), over T(full)
    a = SLOW_HEAD
    expected = {"0": (a["0"] + a["3"]) / 16 / FULL, "6": (a["3"] + a["6"] + a["9"]) / 32 / FULL,
                "9": (a["9"] + a["14"]) / 32 / FULL}
    for g in GROUPS:
        assert costs[g] == pytest.approx(torch.full_like(costs[g], expected[g]), rel=1e-6), g
    assert costs["9"][0] > costs["6"][0] > costs["0"][0]  # the table's order ...
    macs, _ = unit_macs(latency.handle)
    assert macs["0"][0] > macs["6"][0] > macs["9"][0]  # ... is the opposite of the MACs'
    # a layer the table makes slower per channel raises the costs of the groups it touches, and only theirs
    slower = dict(SLOW_HEAD, **{"3": SLOW_HEAD["3"] + 1.0})  # +1 ms: the second conv
    _, latency2 = scored(synthetic_table(linear_ms(slower), rest=REST))
    raw = {g: float(costs[g][0]) * FULL for g in GROUPS}  # ms saved per unit
    raw2 = {g: float(c[0]) * (FULL + 1.0) for g, c in latency2.unit_costs().items()}
    assert raw2["0"] == pytest.approx(raw["0"] + 1.0 / 16) and raw2["6"] == pytest.approx(raw["6"] + 1.0 / 32)
    assert raw2["9"] == pytest.approx(raw["9"])
    rartsprune.remove(model)


def test_a_table_proportional_to_the_macs_gives_the_macs_costs() -> None:
    model = tiny()
    report = flops_report(model, X)
    per_layer = {n: float(report.by_module[n]["macs"]) for n in WIDTHS}
    rest = float(report.macs) - sum(per_layer.values())  # every other MAC: the remainder
    _, latency = scored(synthetic_table(linear_ms(per_layer), rest=rest))
    macs, total = unit_macs(latency.handle)
    for g, c in latency.unit_costs().items():
        assert c == pytest.approx(macs[g] / total, rel=1e-5), g


def test_width_penalty_takes_per_unit_costs_and_checks_them() -> None:
    _, latency = scored(synthetic_table(linear_ms(SLOW_HEAD), rest=REST))
    handle = latency.handle
    costs = latency.unit_costs()
    penalty = WidthPenalty(handle, cost_weight=2.0, unit_costs=costs)
    assert penalty.cost_kind == "given" and WidthPenalty(handle, cost_weight=2.0).cost_kind == "macs"
    # at alpha = 1: cost_weight x the sum of the costs
    total = sum(float(c.sum()) for c in costs.values())
    assert float(penalty().detach()) == pytest.approx(2.0 * total, rel=1e-6)
    assert penalty.state()["cost_fraction"] == pytest.approx(total, rel=1e-6)
    bad: list[tuple[dict[str, Any], str]] = [
        ({g: c for g, c in costs.items() if g != "9"}, r"unit_costs\['9'\] must be a 1-d tensor of 32 per-unit costs, got none"),
        ({**costs, "6": torch.ones(3)}, r"unit_costs\['6'\] must be a 1-d tensor of 32 per-unit costs, got shape \(3,\)"),
        ({**costs, "0": -costs["0"]}, "finite and non-negative"),
        ({**costs, "0": torch.full((16,), float("nan"))}, "finite and non-negative"),
    ]
    for given, message in bad:
        with pytest.raises(ValueError, match=message):
            WidthPenalty(handle, cost_weight=1.0, unit_costs=given)
    rartsprune.remove(handle.model)


def _sgd(lr: float) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    return lambda params: torch.optim.SGD(params, lr=lr)


def _mean_drop(pruner: rartsprune.WidthPruner) -> dict[str, float]:
    return {g.name: float(1.0 - a.detach().abs().mean()) for g, a in zip(pruner.handle.groups, pruner.handle.scores)}


def test_a_latency_budget_searches_with_latency_costs(tmp_path: Path) -> None:
    path = synthetic_table(linear_ms(SLOW_HEAD), rest=REST).save(tmp_path / "slow_head.json")
    common = {"example_inputs": X, "method": "darts1", "cost_weight": 20.0, "arch_optimizer": _sgd(0.05),
              "weight_lr": 1e-3}
    by_latency = rartsprune.prune(tiny(), latency=0.7, latency_table=str(path), **common)
    by_macs = rartsprune.prune(tiny(), macs=0.7, **common)
    lat_pen, macs_pen = by_latency.search.arch_penalty, by_macs.search.arch_penalty
    assert lat_pen.cost_kind == "given" and macs_pen.cost_kind == "macs"
    expected = by_latency.latency_model().unit_costs()
    for g, c in zip(by_latency.handle.groups, lat_pen.costs):
        assert torch.equal(c, expected[g.name])
    assert float(lat_pen().detach()) != pytest.approx(float(macs_pen().detach()), rel=1e-3)
    # the gradient of the pressure on a score is cost_weight x its unit's cost: with the latency budget the
    # head's group (slow in the table) is pushed hardest, with the MACs budget the first conv's group
    grads = {}
    for name, pruner in (("latency", by_latency), ("macs", by_macs)):
        scores = pruner.handle.scores
        g = torch.autograd.grad(pruner.search.arch_penalty(), scores)
        grads[name] = {grp.name: float(v.mean()) for grp, v in zip(pruner.handle.groups, g)}
    assert grads["latency"]["9"] > grads["latency"]["6"] > grads["latency"]["0"] > 0
    assert grads["macs"]["0"] > grads["macs"]["6"] > grads["macs"]["9"] > 0
    assert grads["latency"]["9"] == pytest.approx(20.0 * float(expected["9"][0]), rel=1e-6)
    # a few search steps (SGD on the scores, the pressure dominating the loss): the scores of the expensive
    # layers fall faster, and which layers are expensive is the budget's own cost
    gen = torch.Generator().manual_seed(1)
    data = [((torch.randn(4, 3, 32, 32, generator=gen), torch.randint(0, 10, (4,), generator=gen)),
             (torch.randn(4, 3, 32, 32, generator=gen), torch.randint(0, 10, (4,), generator=gen))) for _ in range(3)]
    for pruner in (by_latency, by_macs):
        for bt, bv in data:
            pruner.step(bt, bv)
    lat, macs = _mean_drop(by_latency), _mean_drop(by_macs)
    assert lat["9"] > lat["6"] > lat["0"] > 0, lat
    assert macs["0"] > macs["6"] > macs["9"] > 0, macs
    # the search's budget-mode pressure is recorded like any other search setting
    assert by_latency.config["cost_weight"] == 20.0 and by_latency.config["budget"] == ("latency", 0.7)


def test_a_baseline_or_no_pressure_builds_no_latency_costs(tmp_path: Path) -> None:
    path = synthetic_table(linear_ms(SLOW_HEAD), rest=REST).save(tmp_path / "t.json")
    off = rartsprune.prune(tiny(), latency=0.7, latency_table=str(path), example_inputs=X, cost_weight=0.0, l1=0.0)
    assert off.search.arch_penalty is None
    one_shot = rartsprune.prune(tiny(), latency=0.7, latency_table=str(path), example_inputs=X, method="l1_norm")
    assert not hasattr(one_shot.search, "arch_penalty")


# --------------------------------------------------------------------------------------------- round_to="auto"
#: a staircase: every width costs as much as the next multiple of 8 (width 8 runs in 1 step, width 9 in 2), so a
#: multiple of 8 is much faster than its neighbour above and rounding up to it keeps channels for free.
STEP = {"0": 0.2, "3": 1.0, "6": 0.5, "9": 1.0, "14": 0.5}


def staircase(offset: int) -> Callable[[str, int, int], float]:
    def ms(name: str, i: int, o: int) -> float:
        cin, cout = WIDTHS[name]
        step_in = math.ceil((i + offset) / 8) if i != cin or name in ("3", "9", "14") else 1
        return STEP[name] * step_in * math.ceil((o + offset) / 8)

    return ms


def test_allowed_roundings_follow_the_narrowest_layer() -> None:
    model = tiny()
    handle = rartsprune.attach_scores(model, X)
    assert allowed_roundings(handle) == [None, 2, 4, 8, 16]  # group "0" has 16 channels: no multiple of 32
    assert allowed_roundings(handle, (None, 3, 64)) == [None, 3]
    assert ROUND_TO_CANDIDATES == (None, 2, 4, 8, 16, 32)
    rartsprune.remove(model)


def test_auto_rounding_picks_the_multiple_of_8_the_table_makes_fast() -> None:
    model, latency = scored(synthetic_table(staircase(0)))
    imp = get_importance("l1_norm")(latency.handle)
    choice = choose_rounding(latency.handle, 0.8, importance=imp, latency=latency)
    assert choice.round_to == 8
    found = {c["round_to"]: c for c in choice.candidates}
    assert list(found) == [None, 2, 4, 8, 16]
    assert all(c["meets_budget"] and c["predicted_fraction"] <= 0.8 + 1e-9 for c in found.values())
    best = found[8]["kept_importance"]
    assert found[None]["kept_importance"] < best - 1 and found[16]["kept_importance"] < best - 1
    # 2 and 4 can reach the same widths (their fill-back rounds up to the next multiple of 8 for free): a tie,
    # which goes to the larger rounding
    assert found[2]["kept_importance"] <= best + 1e-9 and found[4]["kept_importance"] <= best + 1e-9
    # a rounding whose minimum (one unit per group, rounded up) is above the budget is recorded with the reason
    low = choose_rounding(latency.handle, 0.3, importance=imp, latency=latency)
    entry = {c["round_to"]: c for c in low.candidates}[16]
    assert low.round_to == 8 and "below the reachable minimum" in entry["error"] and "kept_importance" not in entry
    # the same budget on a table whose fast widths are 4, 12, 20, 28: not 8
    _, shifted = scored(synthetic_table(staircase(4)))
    assert choose_rounding(shifted.handle, 0.8, importance=imp, latency=shifted).round_to == 4
    rartsprune.remove(model)


def test_prune_with_auto_rounding_records_the_choice(tmp_path: Path) -> None:
    path = synthetic_table(staircase(0)).save(tmp_path / "stairs.json")
    model = tiny()
    pruner = rartsprune.prune(model, latency=0.8, latency_table=str(path), example_inputs=X, method="l1_norm",
                              round_to="auto")
    assert pruner.round_to is None and pruner.rounding() is None  # nothing chosen before a selection
    assert pruner.config["round_to"] == "auto"
    preview = pruner.report()
    assert preview["rounding"]["chosen"] == 8 and pruner.round_to == 8
    assert pruner.plan().widths["9"]["out"] % 8 == 0
    model = pruner.finalize()
    result = pruner.result
    assert result["round_to"] == 8 and result["rounding"]["chosen"] == 8
    assert [c["round_to"] for c in result["rounding"]["candidates"]] == [None, 2, 4, 8, 16]
    assert all({"predicted_ms", "predicted_fraction", "kept_importance", "kept_channels", "meets_budget"}
               <= set(c) for c in result["rounding"]["candidates"])
    chosen = next(c for c in result["rounding"]["candidates"] if c["round_to"] == 8)
    assert result["latency"]["predicted_ms_after"] == pytest.approx(chosen["predicted_ms"])
    assert result["latency"]["predicted_fraction"] <= 0.8 + 1e-9
    assert all(w["kept"] % 8 == 0 or w["kept"] == w["channels"] for w in result["widths"].values())
    assert WidthLatencyTable.load(path).predict_model(model) == pytest.approx(chosen["predicted_ms"])
    with torch.no_grad():
        assert model.eval()(X).shape == (1, 10)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"round_to": "auto"}, r"round_to='auto' .* latency budget: pass latency= too \(got no budget\)"),
    ({"round_to": "auto", "ratio": 0.3}, r"pass latency= too \(got no budget\)"),
    ({"round_to": "auto", "macs": 0.5}, r"pass latency= too \(got macs=\)"),
    ({"round_to": "auto", "mode": "l1"}, "pass latency= too"),
    ({"round_to": "fast", "latency": 0.5}, "round_to must be a positive integer, 'auto' or None, got 'fast'"),
])
def test_auto_rounding_needs_a_latency_budget(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SelectionConfig(**kwargs)
    model = tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=message):
        rartsprune.prune(model, example_inputs=X, **kwargs)
    assert not rartsprune.has_scores(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_choose_rounding_refuses_another_cost_model() -> None:
    model = tiny()
    handle = rartsprune.attach_scores(model, X)
    imp = {g.name: torch.ones(g.num_units) for g in handle.groups}
    with pytest.raises(ValueError, match="latency model of a latency budget; got CostModel"):
        choose_rounding(handle, 0.5, importance=imp, latency=rartsprune.width.CostModel(handle))  # type: ignore[arg-type]
    rartsprune.remove(model)
