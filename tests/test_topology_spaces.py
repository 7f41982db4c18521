from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from rartsprune.topology import (
    DARTS_PRIMITIVES,
    NATS_PRIMITIVES,
    DartsSearchNetwork,
    MixedOp,
    NatsSearchNetwork,
    reduction_layers,
)
from rartsprune.topology.darts_space import DartsSearchCell
from rartsprune.topology.nats_space import NatsSearchCell
from rartsprune.topology.ops import DARTS_OPS, NATS_OPS, FactorizedReduce, ResNetBasicBlock, Zero, drop_path


def test_every_op_keeps_or_halves_the_shape():
    x = torch.randn(2, 6, 9, 9)
    for name, make in DARTS_OPS.items():
        for stride, hw in ((1, 9), (2, 5)):
            assert make(6, stride, False, True)(x).shape == (2, 6, hw, hw), (name, stride)
    for name, make in NATS_OPS.items():
        assert make(6, 6, 1, False, True)(x).shape == (2, 6, 9, 9), name
        assert make(6, 4, 2, False, True)(x).shape == (2, 4, 5, 5), name
    assert FactorizedReduce(6, 5)(x).shape == (2, 5, 5, 5)
    assert ResNetBasicBlock(6, 8, 2)(x).shape == (2, 8, 5, 5)
    assert float(Zero(6, 6, 1)(x).abs().sum()) == 0.0


def test_mixed_op_is_the_weighted_sum_including_none():
    torch.manual_seed(0)
    ops = {n: NATS_OPS[n](4, 4, 1, False, True) for n in NATS_PRIMITIVES}
    m = MixedOp(ops, arch_name="cell", edge_index=0)
    x = torch.randn(3, 4, 6, 6)
    w = torch.softmax(torch.randn(5), 0)
    expected = sum(w[k] * op(x) for k, op in enumerate(m.ops))
    torch.testing.assert_close(m(x, w), expected)
    with pytest.raises(ValueError, match="expects 5 weights"):
        m(x, w[:4])


def test_nats_cell_follows_benchmark_edge_order():
    cell = NatsSearchCell(3, 3, ("none", "skip_connect"))
    x = torch.randn(2, 3, 4, 4)
    c = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
    weights = torch.stack([1 - c, c], dim=1)  # column 1 = skip_connect
    n1 = c[0] * x
    n2 = c[1] * x + c[2] * n1
    n3 = c[3] * x + c[4] * n1 + c[5] * n2
    torch.testing.assert_close(cell(x, weights), n3)


def test_nats_network_structure_and_alpha_sharing():
    net = NatsSearchNetwork(C=4, N=2, num_classes=7)
    kinds = [type(c).__name__ for c in net.cells]
    assert kinds == ["NatsSearchCell"] * 2 + ["ResNetBasicBlock"] + ["NatsSearchCell"] * 2 + [
        "ResNetBasicBlock"
    ] + ["NatsSearchCell"] * 2
    assert net.alpha.shape == (6, 5) and net.alpha.requires_grad
    assert {id(p) for p in net.weight_parameters()}.isdisjoint({id(net.alpha)})
    assert len(net.weight_parameters()) + 1 == len(list(net.parameters()))
    # affine-free BN inside cells
    cell_bns = [m for m in net.cells[0].modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert cell_bns and all(m.weight is None for m in cell_bns)
    twin = copy.deepcopy(net, memo={id(net.alpha): net.alpha})
    assert twin.alpha is net.alpha
    x = torch.randn(4, 3, 16, 16)
    out = net(x)
    assert out.shape == (4, 7)
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    assert net.alpha.grad is not None and float(net.alpha.grad.abs().sum()) > 0
    # the 'none' column gets gradient only through the softmax normalisation
    assert torch.isfinite(net.alpha.grad).all()


def test_nats_default_sizes_match_benchmark():
    net = NatsSearchNetwork()  # C=16, N=5
    assert len(net.cells) == 17
    assert net.classifier.in_features == 64
    mixed = [m for m in net.modules() if isinstance(m, MixedOp)]
    assert len(mixed) == 15 * 6


def test_nats_alpha_changes_output_and_derive():
    torch.manual_seed(0)
    net = NatsSearchNetwork(C=4, N=1).eval()
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        a = net(x)
        net.alpha.zero_()
        net.alpha[:, NATS_PRIMITIVES.index("nor_conv_3x3")] = 5.0
        b = net(x)
    assert not torch.allclose(a, b)
    assert net.derive_arch().count("nor_conv_3x3") == 6
    with pytest.raises(ValueError, match="unknown NATS op"):
        NatsSearchNetwork(C=4, N=1, op_names=("none", "sep_conv_3x3"))
    with pytest.raises(ValueError, match="must be >= 1"):
        NatsSearchNetwork(C=0, N=1)


def test_darts_reduction_layers():
    assert reduction_layers(8) == (2, 5)
    assert reduction_layers(20) == (6, 13)
    with pytest.raises(ValueError):
        reduction_layers(0)


def test_darts_cell_matches_manual_sum():
    cell = DartsSearchCell(4, 4, 3, 3, 3, False, False, ("none", "skip_connect"))
    cell.eval()
    s0, s1 = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    c = torch.linspace(0.1, 0.9, 14)
    weights = torch.stack([1 - c, c], dim=1)
    out = cell(s0, s1, weights)
    states = [cell.preprocess0(s0), cell.preprocess1(s1)]
    off = 0
    for _ in range(4):
        states.append(sum(c[off + j] * h for j, h in enumerate(states)))
        off += len(states) - 1
    torch.testing.assert_close(out, torch.cat(states[2:], dim=1))


def test_darts_network_structure():
    net = DartsSearchNetwork(C=4, layers=5, num_classes=3)
    assert [c.reduction for c in net.cells] == [False, True, False, True, False]
    assert sum(isinstance(m, MixedOp) for m in net.cells[0].modules()) == 14
    assert [m.arch_name for m in net.cells[1].modules() if isinstance(m, MixedOp)][0] == "reduce"
    out = net(torch.randn(2, 3, 16, 16))
    assert out.shape == (2, 3)
    out.sum().backward()
    assert all(a.grad is not None and float(a.grad.abs().sum()) > 0 for a in net.arch_parameters())
    g = net.genotype()
    assert len(g.normal) == 8 and all(op in DARTS_PRIMITIVES and op != "none" for op, _ in g.normal)


def test_darts_default_search_network_size():
    net = DartsSearchNetwork()
    assert len(net.cells) == 8 and [i for i, c in enumerate(net.cells) if c.reduction] == [2, 5]
    n_weights = sum(p.numel() for p in net.weight_parameters())
    # DARTS' search network (C=16, 8 cells) holds about 1.93M weights
    assert 1.8e6 < n_weights < 2.0e6
    bns = [m for c in net.cells for m in c.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.weight is None for m in bns)


def test_drop_path_keeps_expectation():
    torch.manual_seed(0)
    x = torch.ones(20000, 1)
    y = drop_path(x, 0.3)
    kept = y[y != 0]
    torch.testing.assert_close(kept, torch.full_like(kept, 1 / 0.7))
    assert abs(float(y.mean()) - 1.0) < 0.03
    with pytest.raises(ValueError):
        drop_path(x, 1.0)
