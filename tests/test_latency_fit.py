"""Latency budgets met as measured: the table's measured points (`WidthLatencyTable.measured`) and
`fit_measured_latency`, on the hand-built tables of ``test_latency_search`` (the clock is replaced by a known
distortion of the table's prediction, so the expected widths are known)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import rartsprune
import rartsprune.width.latency_fit as latency_fit
from rartsprune.width import WidthLatencyTable, fit_measured_latency, measured_fraction
from tests.test_latency_search import REST, SLOW_HEAD, linear_ms, synthetic_table
from tests.test_width_latency import X, tiny


def _table(path: Path, points: list[list[float]] | None = None) -> WidthLatencyTable:
    table = synthetic_table(linear_ms(SLOW_HEAD), REST)
    table.measured = [list(p) for p in points or []]
    table.save(path)
    return table


def test_the_points_map_measured_and_predicted_fractions_both_ways() -> None:
    table = synthetic_table(linear_ms(SLOW_HEAD), REST)
    assert table.measured_fraction(0.6) == 0.6 and table.predicted_budget(0.6) == 0.6  # no points: identity
    table.measured = [[0.8, 0.7], [0.5, 0.3], [0.5, 0.4], [0.65, 0.2]]  # 0.5 averaged; 0.65 made monotone
    assert table.measured_fraction(0.5) == pytest.approx(0.35)
    assert table.measured_fraction(0.65) == pytest.approx(0.35)  # never below a smaller predicted fraction
    assert table.measured_fraction(0.8) == pytest.approx(0.7) and table.measured_fraction(1.0) == 1.0
    assert table.measured_fraction(0.25) == pytest.approx(0.175)  # (0, 0) to the first point
    for target in (0.1, 0.35, 0.5, 0.7, 0.9):
        pred = table.predicted_budget(target)
        assert table.measured_fraction(pred) == pytest.approx(target, abs=1e-9)
    assert table.predicted_budget(0.35) == pytest.approx(0.65)  # the largest predicted fraction that meets it
    again = WidthLatencyTable.from_dict(table.to_dict())
    assert again == table and again.measured == table.measured
    bad = table.to_dict()
    bad["measured"] = [[0.5, -0.1]]
    with pytest.raises(ValueError, match="positive fractions"):
        WidthLatencyTable.from_dict(bad)


def _distorted_clock(table: WidthLatencyTable, power: float = 1.5):
    """A clock that measures every model at (predicted fraction) ** ``power`` of the unpruned latency."""

    def fake(model: torch.nn.Module, example_inputs: torch.Tensor, **_: object) -> float:
        return table.full_ms * (table.predict_model(model) / table.full_ms) ** power

    return fake


def test_fitted_points_make_a_latency_budget_hold_on_the_clock(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiny.json"
    table = _table(path)
    clock = _distorted_clock(table)
    monkeypatch.setattr(latency_fit, "time_model", clock)

    def measured_at(budget: float) -> tuple[float, dict]:
        pruner = rartsprune.prune(tiny(), method="l1_norm", latency=budget, latency_table=str(path), example_inputs=X)
        model = pruner.finalize()
        return clock(model, X) / table.full_ms, pruner.result["latency"]

    before, _ = measured_at(0.6)
    assert before < 0.6 * 0.85  # the table alone over-prunes: the clock says 0.6 ** 1.5 of the latency

    model = tiny()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    fitted = fit_measured_latency(model, path, X, budgets=(0.8, 0.6, 0.4), passes=2, rounds=1, repeats=1)
    assert len(fitted.measured) == 6 and WidthLatencyTable.load(path).measured == fitted.measured
    for pred, meas in fitted.measured:
        assert meas == pytest.approx(pred ** 1.5)
    assert fitted.meta["measured_fit"]["points"] == 6
    assert not rartsprune.has_scores(model)  # the user's model was only timed
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())

    after, result = measured_at(0.6)
    assert abs(after - 0.6) < abs(before - 0.6) and after == pytest.approx(0.6, abs=0.05)
    assert result["measured_points"] == 6 and result["budget"] == 0.6
    assert result["expected_measured_fraction"] == pytest.approx(after, abs=0.02)
    assert result["predicted_fraction"] > 0.65  # it kept more than the table alone would have
    assert result["measured_ms_before"] == table.whole_ms


def test_a_budget_out_of_the_tables_reach_is_skipped_until_the_points_bring_it_in(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock says the model runs at the square of its predicted fraction: a budget below what the table
    alone can reach is skipped in the first pass and reached in the second."""
    path = tmp_path / "tiny.json"
    table = _table(path)
    monkeypatch.setattr(latency_fit, "time_model", _distorted_clock(table, power=2.0))
    with pytest.raises(ValueError, match="reachable minimum"):
        rartsprune.prune(tiny(), method="l1_norm", latency=0.1, latency_table=str(path), example_inputs=X)
    fitted = fit_measured_latency(tiny(), path, X, budgets=(0.6, 0.1), passes=2, rounds=1, repeats=1)
    skipped = fitted.meta["measured_fit"]["skipped"]
    assert list(skipped) == ["pass 1, latency=0.1"] and "reachable minimum" in skipped["pass 1, latency=0.1"]
    assert len(fitted.measured) == 3  # 0.6 twice, 0.1 in the second pass
    assert min(m for _, m in fitted.measured) <= 0.1 + 0.03


def test_fit_refuses_bad_settings_and_leaves_the_file_as_it_was(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tiny.json"
    table = _table(path, [[0.7, 0.6]])
    monkeypatch.setattr(latency_fit, "time_model", _distorted_clock(table))
    original = path.read_bytes()
    for kwargs, message in (({"budgets": ()}, "non-empty"), ({"budgets": (0.5, 1.2)}, "strictly between"),
                            ({"budgets": "0.5"}, "non-empty"), ({"passes": 0}, "passes"), ({"rounds": 0}, "rounds")):
        with pytest.raises(ValueError, match=message):
            fit_measured_latency(tiny(), path, X, **kwargs)
    with pytest.raises(FileNotFoundError, match="measure one first"):
        fit_measured_latency(tiny(), tmp_path / "missing.json", X)
    # no budget reachable: refused; a second pass that fails leaves the first pass's points out of the file too
    with pytest.raises(ValueError, match="no budget of .* is reachable"):
        fit_measured_latency(tiny(), path, X, budgets=(0.01,), rounds=1, repeats=1)
    assert path.read_bytes() == original
    calls = {"n": 0}

    def failing(*args: object, **kwargs: object) -> float:
        calls["n"] += 1
        if calls["n"] > 4:  # the second pass (2 timings per round, 2 budgets in the first)
            raise RuntimeError("the device went away")
        return 1.0

    monkeypatch.setattr(latency_fit, "time_model", failing)
    with pytest.raises(RuntimeError, match="went away"):
        fit_measured_latency(tiny(), path, X, budgets=(0.8, 0.6), passes=2, rounds=1, repeats=1)
    assert path.read_bytes() == original
    with pytest.raises(ValueError, match="measured with input shape"):
        fit_measured_latency(tiny(), path, torch.randn(1, 3, 16, 16))


def test_measured_fraction_is_the_median_of_interleaved_ratios(monkeypatch: pytest.MonkeyPatch) -> None:
    """Both models timed in every round, in alternating order; the median of the per-round ratios."""
    big, small = torch.nn.Linear(512, 512), torch.nn.Linear(512, 8)
    calls: list[str] = []
    pruned_ms = iter([3.0, 9.0, 5.0])

    def clock(model: torch.nn.Module, example_inputs: torch.Tensor, **_: object) -> float:
        calls.append("full" if model is big else "pruned")
        return 10.0 if model is big else next(pruned_ms)

    monkeypatch.setattr(latency_fit, "time_model", clock)
    assert measured_fraction(big, small, torch.randn(1, 512), rounds=3) == pytest.approx(0.5)
    assert calls == ["full", "pruned", "pruned", "full", "full", "pruned"]
    with pytest.raises(ValueError, match="rounds"):
        measured_fraction(big, small, torch.randn(1, 512), rounds=0)
    monkeypatch.undo()  # the real clock: a positive, finite fraction (its value is not asserted)
    frac = measured_fraction(big, small, torch.randn(1, 512), batch=8, rounds=1, warmup=1, repeats=2)
    assert 0 < frac < float("inf")
