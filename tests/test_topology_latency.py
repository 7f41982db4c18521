from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from rartsprune.topology import (
    DARTS_PRIMITIVES,
    NATS_PRIMITIVES,
    DartsSearchNetwork,
    LatencyPenalty,
    LatencyTable,
    NatsSearchNetwork,
    arch_latency,
    format_nats_arch,
    latency_matrices,
    measure_latency_table,
)
from rartsprune.topology.latency import op_key

SHAPE = (1, 3, 16, 16)


def _constant_table(net, per_op: dict[str, float], shape=SHAPE) -> LatencyTable:
    """A table giving every signature of op ``name`` the latency ``per_op[name]``."""
    real = measure_latency_table(net, shape, warmup=0, repeats=1)
    return LatencyTable({k: per_op[k.split(":")[0]] for k in real.entries}, device="fake")


def test_measure_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    net = NatsSearchNetwork(C=4, N=1)
    net.train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    table = measure_latency_table(net, SHAPE, warmup=1, repeats=3)
    # stage shapes: 16x16 with C=4, 8x8 with 8, 4x4 with 16 -> 3 input shapes, plus the
    # channel-changing first edges never occur (cells keep C) -> 5 ops x 3 shapes
    assert len(table) == 15
    assert all(v >= 0 for v in table.entries.values())
    assert op_key("nor_conv_3x3", (1, 4, 16, 16), (1, 4, 16, 16)) in table
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    p = table.save(tmp_path / "lat.json")
    assert LatencyTable.load(p) == table
    assert json.loads(p.read_text())["unit"] == "ms"
    # re-measuring with an existing table keeps its entries
    again = measure_latency_table(net, SHAPE, warmup=0, repeats=1, table=table)
    assert again.entries == table.entries


def test_latency_matrix_sums_over_cells():
    net = NatsSearchNetwork(C=4, N=2)
    per_op = {"none": 0.0, "skip_connect": 0.5, "nor_conv_1x1": 1.0, "nor_conv_3x3": 3.0, "avg_pool_3x3": 2.0}
    table = _constant_table(net, per_op)
    lat = latency_matrices(net, table, SHAPE)["cell"]
    expected_row = torch.tensor([per_op[n] for n in NATS_PRIMITIVES]) * 6  # 3 stages x N=2 cells
    torch.testing.assert_close(lat, expected_row.expand(6, 5))
    arch = format_nats_arch(["nor_conv_3x3"] * 3 + ["skip_connect", "none", "avg_pool_3x3"])
    assert arch_latency(net, table, arch, SHAPE) == pytest.approx(6 * (3 * 3.0 + 0.5 + 0.0 + 2.0))
    with pytest.raises(TypeError, match="DARTS"):
        from rartsprune.topology import DARTS_V2

        arch_latency(net, table, DARTS_V2, SHAPE)


def test_darts_latency_and_genotype_latency():
    net = DartsSearchNetwork(C=2, layers=3)
    per_op = {n: float(i) for i, n in enumerate(DARTS_PRIMITIVES)}
    small = (1, 3, 8, 8)
    table = _constant_table(net, per_op, small)
    lat = latency_matrices(net, table, small)
    # layers=3 -> reductions at cells 1 and 2, one normal cell
    torch.testing.assert_close(lat["normal"], torch.arange(8.0).expand(14, 8))
    torch.testing.assert_close(lat["reduce"], 2 * torch.arange(8.0).expand(14, 8))
    g = net.genotype()
    expected = sum(per_op[op] for op, _ in g.normal) + 2 * sum(per_op[op] for op, _ in g.reduce)
    assert arch_latency(net, table, g, small) == pytest.approx(expected)


def test_penalty_value_and_gradient():
    torch.manual_seed(0)
    net = NatsSearchNetwork(C=4, N=1)
    per_op = {"none": 0.0, "skip_connect": 0.1, "nor_conv_1x1": 1.0, "nor_conv_3x3": 4.0, "avg_pool_3x3": 2.0}
    table = _constant_table(net, per_op)
    with torch.no_grad():
        net.alpha.normal_()
    pen = LatencyPenalty(net, table, weight=0.5, input_shape=SHAPE)
    lat = 3 * torch.tensor([per_op[n] for n in NATS_PRIMITIVES])
    expected = 0.5 * (F.softmax(net.alpha.detach(), -1) * lat).sum()
    value = pen()
    torch.testing.assert_close(value.detach(), expected)
    value.backward()
    p = F.softmax(net.alpha.detach(), -1)
    manual = 0.5 * p * (lat - (p * lat).sum(-1, keepdim=True))
    torch.testing.assert_close(net.alpha.grad, manual)
    # descending the penalty alone moves the mass to the cheap ops ('none', then 'skip_connect')
    start = float(pen.expected_latency().detach())
    opt = torch.optim.SGD(net.arch_parameters(), lr=2.0)
    for _ in range(200):
        opt.zero_grad()
        pen().backward()
        opt.step()
    assert float(pen.expected_latency().detach()) < 0.1 * start
    assert "conv" not in net.derive_arch() and "avg_pool" not in net.derive_arch()
    with pytest.raises(ValueError, match=">= 0"):
        LatencyPenalty(net, table, weight=-1.0, input_shape=SHAPE)


def test_missing_entry_and_bad_json(tmp_path):
    net = NatsSearchNetwork(C=4, N=1)
    with pytest.raises(KeyError, match="has no entry 'nor_conv_3x3:1x4x16x16->1x4x16x16'|has no entry"):
        latency_matrices(net, LatencyTable({}, device="x"), SHAPE)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        LatencyTable.load(bad)
    bad.write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a rartsprune latency table"):
        LatencyTable.load(bad)
    bad.write_text(json.dumps({"format": "rartsprune-latency-v1", "entries": {"a": -1}}))
    with pytest.raises(ValueError, match="non-negative"):
        LatencyTable.load(bad)
    with pytest.raises(FileNotFoundError):
        LatencyTable.load(tmp_path / "none.json")
    with pytest.raises(ValueError, match="MixedOp"):
        measure_latency_table(torch.nn.Linear(2, 2), (1, 2, 1, 1))
