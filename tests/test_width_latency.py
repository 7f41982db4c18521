"""Latency budgets (``rartsprune.prune(model, latency=...)``): the per-layer table, its cache, the selection.

Timings on a shared CPU are noisy, so nothing here asserts on measured speed: the tests check the table's
structure, that its predictions are monotone in width, the cache and its refusals, and that the selection
meets the *predicted* budget. Where the reachability of a budget would depend on the noise, the table's
remainder is set by hand (``_fixed_rest``) before it is saved and passed as ``latency_table=``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn as nn

import rartsprune
import rartsprune.width.pruner as pruner_module
from rartsprune.width import (
    SelectionConfig,
    WidthLatencyTable,
    latency_report,
    measure_width_latency,
    select_by_budget,
)
from rartsprune.width.latency import LayerLatency, _split_rest, allocator_settings

X = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """One intra-op thread: steadier timings on a busy machine (restored after the test)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny() -> nn.Module:
    """Compute-bound enough at 32x32 that a narrower layer is measurably cheaper; has a depthwise conv."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 3, padding=1, groups=32), nn.BatchNorm2d(32), nn.ReLU(),
        nn.Conv2d(32, 32, 1), nn.BatchNorm2d(32), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
    )


def measure(model: nn.Module | None = None, **kw: Any) -> WidthLatencyTable:
    return measure_width_latency(tiny() if model is None else model, X, warmup=1, repeats=3, **kw)


def _fixed_rest(table: WidthLatencyTable, rest: float = 0.0) -> WidthLatencyTable:
    """The table with its remainder set to ``rest`` x the layers' sum (reachability independent of noise)."""
    layers = sum(lat.full_ms for lat in table.layers.values())
    return replace(table, rest_ms=rest * layers, whole_ms=(1 + rest) * layers)


@pytest.fixture(scope="module")
def table_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        table = _fixed_rest(measure())
    finally:
        torch.set_num_threads(threads)
    return table.save(tmp_path_factory.mktemp("latency") / "tiny.json")


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_untouched(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = model.state_dict()
    assert list(after) == list(before)
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert not rartsprune.has_scores(model)


# ---------------------------------------------------------------------------------------------- the table
def test_the_table_samples_the_prunable_layers_and_predicts_monotone_in_width() -> None:
    table = measure()
    assert table.device == "cpu" and table.batch == 1 and table.input_shape == [1, 3, 32, 32]
    assert table.meta["torch"] == torch.__version__ and table.meta["statistic"] == "median"
    assert sorted(table.layers, key=int) == ["0", "3", "6", "9", "14"]  # every conv and the head's input
    first, dw, head = table.layers["0"], table.layers["6"], table.layers["14"]
    assert first.in_widths == [3] and first.out_widths == [1, 4, 8, 12, 16]  # the image is not pruned
    assert dw.depthwise and dw.in_widths == [32] and dw.out_widths == [1, 8, 16, 24, 32]
    assert head.out_widths == [10] and head.in_widths == [1, 8, 16, 24, 32]
    assert table.layers["3"].input_shape == [1, 16, 32, 32]
    assert len(table.layers["9"].in_widths) == len(table.layers["9"].out_widths) == 5  # a grid where both go
    assert table.rest_ms >= 0 and table.full_ms >= table.whole_ms - 1e-9
    for lat in table.layers.values():
        assert all(v > 0 for row in lat.ms for v in row)
        assert lat.predict() == pytest.approx(lat.predict(lat.in_channels, lat.out_channels))
        for cin in range(1, lat.in_channels + 1):
            outs = [lat.predict(cin, c) for c in range(1, lat.out_channels + 1)]
            assert all(a <= b + 1e-12 for a, b in zip(outs, outs[1:])), (cin, outs)
        for cout in range(1, lat.out_channels + 1):
            ins = [lat.predict(c, cout) for c in range(1, lat.in_channels + 1)]
            assert all(a <= b + 1e-12 for a, b in zip(ins, ins[1:])), (cout, ins)
    # the model's prediction from its own widths is the unpruned prediction
    assert table.predict_model(tiny()) == pytest.approx(table.full_ms)


def test_a_fused_table_times_each_layer_with_the_batchnorm_and_activation_after_it(tmp_path: Path) -> None:
    model = tiny()
    plain, fused = measure(model), measure(model, fuse=True)
    assert plain.meta["fuse"] is False and fused.meta["fuse"] is True
    assert all(lat.fused == [] for lat in plain.layers.values())
    assert {n: lat.fused for n, lat in fused.layers.items()} == {
        "0": ["BatchNorm2d", "ReLU"], "3": ["BatchNorm2d", "ReLU"], "6": ["BatchNorm2d", "ReLU"],
        "9": ["BatchNorm2d", "ReLU"], "14": []}  # the head's output goes to the model output
    for name, lat in fused.layers.items():  # the same grid; a fused sample's block is the layer plus two more ops
        assert (lat.in_widths, lat.out_widths) == (plain.layers[name].in_widths, plain.layers[name].out_widths)
    assert WidthLatencyTable.load(fused.save(tmp_path / "fused.json")) == fused  # the list survives the file
    # a ReLU that does not directly follow the layer's output (here: after a residual addition) is not fused
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.relu = nn.Conv2d(3, 3, 3, padding=1), nn.ReLU()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.relu(self.conv(x) + x)

    from rartsprune.width.latency import _followers
    assert _followers(Residual().eval(), X, ["conv"]) == {"conv": []}


def test_the_remainder_is_split_by_the_half_width_timing() -> None:
    """The remainder (normalisations, activations, additions) shrinks with the pruned layers' outputs: a second
    timing, of a copy at half width, splits it into a constant part and one proportional to the activations."""
    table = measure(calibrate=True)
    ref = table.meta["reference"]  # the half-width copy was timed
    assert 0 < ref["activation_fraction"] < 1 and ref["ms"] > 0
    rest = table.rest_ms + table.rest_scaled_ms
    assert 0.0 <= table.rest_scaled_ms <= rest + 1e-12 and table.full_ms == pytest.approx(table.layers_full_ms + rest)
    assert set(table.activations) == set(table.layers)
    assert table.activations["3"] == 32 * 32 and table.activations["14"] == 1  # elements per output channel
    assert table.predict_model(tiny()) == pytest.approx(table.full_ms)
    # the arithmetic, on a table whose samples are exact: remainder 2 ms of which 1.5 scale with activations
    lat = LayerLatency("linear", 8, 4, False, [1, 8], [8], [1, 4], [[0.5, 1.0]])
    plain = WidthLatencyTable("cpu", 1, [1, 8], 3.0, 2.0, {"fc": lat}, activations={"fc": 1.0})
    split = _split_rest(plain, 0.5 + 0.5 + 1.5 * 0.25, {"fc": {"in": 8, "out": 1}})  # the copy at 1 of 4 outputs
    assert split.rest_scaled_ms == pytest.approx(1.5) and split.rest_ms == pytest.approx(0.5)
    assert split.full_ms == pytest.approx(plain.full_ms) and split.predict({"fc": {"out": 1}}) == pytest.approx(1.375)
    assert plain.predict({"fc": {"out": 1}}) == pytest.approx(2.5)  # a constant remainder overestimates it
    # noise that would make a part negative is clipped; a table without the split reloads as a constant remainder
    assert _split_rest(plain, 10.0, {"fc": {"out": 1}}).rest_scaled_ms == 0.0
    assert _split_rest(plain, 0.0, {"fc": {"out": 1}}).rest_scaled_ms == pytest.approx(2.0)
    data = split.to_dict()
    assert WidthLatencyTable.from_dict(data) == split
    del data["rest_scaled_ms"], data["activations"]
    old = WidthLatencyTable.from_dict(data)
    assert old.rest_scaled_ms == 0.0 and old.predict({"fc": {"out": 1}}) == pytest.approx(0.5 + 0.5)
    uncalibrated = measure()  # the default: a constant remainder
    assert uncalibrated.rest_scaled_ms == 0.0 and "reference" not in uncalibrated.meta


def test_the_envelope_hides_noise_and_interpolates_between_samples() -> None:
    lat = LayerLatency("linear", 8, 8, False, [1, 8], [8], [1, 4, 8], [[1.0, 0.5, 4.0]])  # a noisy middle sample
    assert lat.predict(8, 4) == 1.0 and lat.predict(8, 6) == pytest.approx(2.5) and lat.predict(8, 100) == 4.0
    with pytest.raises(ValueError, match="expected 1 x 3"):
        LayerLatency("linear", 8, 8, False, [1, 8], [8], [1, 4, 8], [[1.0, 2.0]])


def test_the_table_is_saved_and_reloaded_equal(tmp_path: Path) -> None:
    table = measure(batch=2)
    path = table.save(tmp_path / "sub" / "t.json")
    again = WidthLatencyTable.load(path)
    assert again == table and again.to_dict() == table.to_dict()
    assert again.batch == 2 and again.input_shape == [2, 3, 32, 32]
    assert again.layers["3"].input_shape == [2, 16, 32, 32]
    (tmp_path / "bad.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="not a rartsprune width latency table"):
        WidthLatencyTable.load(tmp_path / "bad.json")
    with pytest.raises(FileNotFoundError, match="not found"):
        WidthLatencyTable.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("asked", "names"),
    [({"device": "cuda:0 (Imaginary GPU)"}, ["'cpu'", "'cuda:0 (Imaginary GPU)'"]),
     ({"batch": 4}, ["batch size 1", "4"]),
     ({"input_shape": [1, 3, 64, 64]}, ["[1, 3, 32, 32]", "[1, 3, 64, 64]"])],
    ids=["device", "batch", "input_shape"],
)
def test_a_table_of_another_device_batch_or_shape_is_refused(table_path: Path, asked: dict[str, Any],
                                                             names: list[str]) -> None:
    table = WidthLatencyTable.load(table_path)
    table.check(device="cpu", batch=1, input_shape=[1, 3, 32, 32])  # its own settings pass
    with pytest.raises(ValueError) as info:
        table.check(**asked)
    assert all(n in str(info.value) for n in names), str(info.value)


def test_measuring_refuses_bad_settings() -> None:
    with pytest.raises(ValueError, match="batch must be a positive integer"):
        measure(batch=0)
    with pytest.raises(ValueError, match="fractions"):
        measure(fractions=(0.5, 1.5))
    with pytest.raises(ValueError, match="one tensor"):
        measure_width_latency(tiny(), (X,))


# ---------------------------------------------------------------------------------------- prune(latency=...)
@pytest.mark.parametrize("method", ["rarts", "l1_norm"])
@pytest.mark.parametrize("round_to", [None, 4])
def test_prune_to_a_latency_budget_meets_the_predicted_budget(table_path: Path, method: str,
                                                              round_to: int | None) -> None:
    model = tiny()
    pruner = rartsprune.prune(model, latency=0.7, latency_table=str(table_path), example_inputs=X, method=method,
                              round_to=round_to)
    assert pruner.selection_config.budget == ("latency", 0.7)
    before = pruner.latency_model().full_ms
    model = pruner.finalize()
    report = pruner.result["latency"]
    assert report["device"] == "cpu" and report["batch"] == 1 and report["budget"] == 0.7
    assert report["predicted_ms_before"] == pytest.approx(before)
    assert report["predicted_ms_after"] <= 0.7 * before * (1 + 1e-9)
    assert report["predicted_fraction"] <= 0.7 + 1e-9
    assert pruner.result["budget"] == {"latency": 0.7}
    # the prediction from the pruned model's real widths is the one the selection used
    table = WidthLatencyTable.load(table_path)
    assert table.predict_model(model) == pytest.approx(report["predicted_ms_after"])
    assert pruner.result["removed_channels"] > 0
    model.eval()
    with torch.no_grad():
        assert model(X).shape == (1, 10) and model(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    if round_to is not None:
        assert all(w["kept"] % round_to == 0 or w["kept"] == w["channels"] for w in pruner.result["widths"].values())


def test_prune_measures_and_writes_the_table_when_it_does_not_exist(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # the whole-model timing is replaced (remainder 0) so that the budget is reachable whatever the noise
    monkeypatch.setattr(pruner_module, "time_model", lambda *args, **kw: 0.0)
    path = tmp_path / "measured.json"
    model = tiny()
    pruner = rartsprune.prune(model, latency=0.8, latency_batch=2, latency_table=str(path), example_inputs=X,
                              method="l1_norm")
    assert path.is_file()
    table = WidthLatencyTable.load(path)
    assert table == pruner.latency_model().table and table.batch == 2 and table.input_shape == [2, 3, 32, 32]
    assert table.rest_ms == 0.0
    model = pruner.finalize()
    assert pruner.result["latency"]["predicted_fraction"] <= 0.8 + 1e-9
    assert pruner.result["latency"]["batch"] == 2


BAD = [
    ({"latency": 0}, "strictly between 0 and 1"),
    ({"latency": 1}, "strictly between 0 and 1"),
    ({"latency": 1.0}, "strictly between 0 and 1"),
    ({"latency": -0.5}, "strictly between 0 and 1"),
    ({"latency": float("nan")}, "strictly between 0 and 1"),
    ({"latency": "0.5"}, "strictly between 0 and 1"),
    ({"latency": True}, "strictly between 0 and 1"),
    ({"latency": 0.5, "mode": "l1"}, "mode='l1'"),
    ({"latency": 0.5, "ratio": 0.3}, "not ratio and latency"),
    ({"latency": 0.5, "macs": 0.5}, "not macs and latency"),
    ({"latency": 0.5, "params": 0.5}, "not params and latency"),
    ({"latency": 0.5, "latency_batch": 0}, "latency_batch must be a positive integer"),
    ({"latency": 0.5, "latency_batch": 1.5}, "latency_batch must be a positive integer"),
    ({"latency_batch": 2}, "pass latency= too"),
    ({"latency_table": "t.json"}, "pass latency= too"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD, ids=[repr(kw) for kw, _ in BAD])
def test_bad_latency_budgets_are_refused_and_leave_the_model_untouched(kwargs: dict[str, Any], message: str) -> None:
    model = tiny()
    before = snapshot(model)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rartsprune.prune(model, example_inputs=X, **kwargs)
    assert_untouched(model, before)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SelectionConfig(**kwargs)


def test_a_latency_budget_below_the_reachable_minimum_names_it(table_path: Path, tmp_path: Path) -> None:
    # a remainder as large as the layers: keeping one channel per layer still costs more than half
    path = _fixed_rest(WidthLatencyTable.load(table_path), rest=1.0).save(tmp_path / "heavy.json")
    model = tiny()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"latency=0.3 is below the reachable minimum.*pass latency >= 0\.[5-9]"):
        rartsprune.prune(model, latency=0.3, latency_table=str(path), example_inputs=X)
    assert_untouched(model, before)


@pytest.mark.parametrize(
    ("kwargs", "names"),
    [({"latency_batch": 4}, ["batch size 1", "4"]),
     ({"example_inputs": torch.randn(1, 3, 24, 24)}, ["[1, 3, 32, 32]", "[1, 3, 24, 24]"])],
    ids=["batch", "input_shape"],
)
def test_prune_refuses_a_table_measured_otherwise(table_path: Path, kwargs: dict[str, Any], names: list[str]) -> None:
    model = tiny()
    before = snapshot(model)
    kwargs = {"example_inputs": X, **kwargs}
    with pytest.raises(ValueError) as info:
        rartsprune.prune(model, latency=0.7, latency_table=str(table_path), **kwargs)
    assert all(n in str(info.value) for n in names) and str(table_path) in str(info.value), str(info.value)
    assert_untouched(model, before)


def test_prune_refuses_a_table_of_another_device(table_path: Path, tmp_path: Path) -> None:
    data = json.loads(table_path.read_text())
    data["device"] = "cuda:0 (Imaginary GPU)"
    path = tmp_path / "gpu.json"
    path.write_text(json.dumps(data))
    model = tiny()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"device 'cuda:0 \(Imaginary GPU\)', but 'cpu' is asked"):
        rartsprune.prune(model, latency=0.7, latency_table=str(path), example_inputs=X)
    assert_untouched(model, before)


def test_a_cpu_table_records_the_allocator_and_is_refused_under_another(table_path: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU latency depends on whether the C allocator returns freed memory: the table records its settings."""
    recorded = json.loads(table_path.read_text())["meta"]["allocator"]
    assert recorded == allocator_settings()
    data = json.loads(table_path.read_text())
    data["meta"]["allocator"] = {**recorded, "MALLOC_TOP_PAD_": "12345"}
    path = tmp_path / "other_heap.json"
    path.write_text(json.dumps(data))
    model = tiny()
    before = snapshot(model)
    with pytest.raises(ValueError, match="allocator settings.*MALLOC_TOP_PAD_"):
        rartsprune.prune(model, latency=0.7, latency_table=str(path), example_inputs=X)
    assert_untouched(model, before)
    monkeypatch.setenv("MALLOC_TOP_PAD_", "12345")  # under the same settings it loads
    pruner = rartsprune.prune(model, latency=0.7, latency_table=str(path), example_inputs=X)
    pruner.finalize()
    assert pruner.result["latency"]["predicted_fraction"] <= 0.7 + 1e-9
    del data["meta"]["allocator"]  # a table that did not record them (measured before they were) loads anywhere
    path.write_text(json.dumps(data))
    monkeypatch.delenv("MALLOC_TOP_PAD_")
    rartsprune.prune(tiny(), latency=0.7, latency_table=str(path), example_inputs=X).remove()


def test_prune_refuses_a_table_of_another_model(table_path: Path) -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    before = snapshot(model)
    with pytest.raises(ValueError, match="another model"):
        rartsprune.prune(model, latency=0.7, latency_table=str(table_path), example_inputs=X)
    assert_untouched(model, before)


def test_a_latency_budget_needs_its_cost_model() -> None:
    model = tiny()
    handle = rartsprune.attach_scores(model, X)
    with pytest.raises(ValueError, match="LatencyModel"):
        select_by_budget(handle, 0.5, kind="latency", importance={g.name: torch.ones(g.num_units) for g in handle.groups})
    rartsprune.remove(model)


def test_selection_config_round_trip(table_path: Path) -> None:
    sel = SelectionConfig(latency=0.6, latency_batch=1, latency_table=table_path)  # a Path is kept as its string
    assert sel.budget == ("latency", 0.6) and sel.ratio is None and sel.latency_table == str(table_path)
    assert replace(sel) == sel and SelectionConfig(**{k: getattr(sel, k) for k in (
        "mode", "ratio", "latency", "latency_batch", "latency_table", "scope", "round_to")}) == sel
    assert SelectionConfig.changed(latency=0.6, latency_batch=1, latency_table=None) == ["latency"]
    model = tiny()
    pruner = rartsprune.prune(model, selection=sel, example_inputs=X, method="l1_norm")
    assert pruner.config["budget"] == ("latency", 0.6) and pruner.config["latency_batch"] == 1
    model = pruner.finalize()
    assert pruner.result["latency"]["predicted_fraction"] <= 0.6 + 1e-9
    with pytest.raises(ValueError, match="either as selection= or as keywords"):
        rartsprune.prune(tiny(), selection=sel, latency_batch=2, example_inputs=X)


def test_latency_report_compares_prediction_and_measurement(table_path: Path) -> None:
    model = tiny()
    pruner = rartsprune.prune(model, latency=0.7, latency_table=str(table_path), example_inputs=X, method="l1_norm")
    model = pruner.finalize()
    table = WidthLatencyTable.load(table_path)
    report = latency_report(model, table, X, warmup=1, repeats=3)
    assert report["predicted_ms"] == pytest.approx(pruner.result["latency"]["predicted_ms_after"])
    assert report["measured_ms"] > 0 and report["ratio"] == pytest.approx(report["measured_ms"] / report["predicted_ms"])
    assert report["device"] == "cpu" and report["batch"] == 1
    assert report["predicted_fraction"] == pytest.approx(report["predicted_ms"] / table.full_ms)
    assert math.isfinite(report["measured_fraction"])
    assert model.training  # the report leaves the model's mode as it was
    with pytest.raises(ValueError, match="input shape"):
        latency_report(model, table, torch.randn(1, 3, 16, 16), repeats=1)
