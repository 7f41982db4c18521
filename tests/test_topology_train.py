from __future__ import annotations

import pytest
import torch

from rartsprune.app.topology.train import evaluate, train_epoch
from rartsprune.topology import DARTS_V2, DartsEvalNetwork, DartsTrainConfig
from rartsprune.topology.ops import Identity


def test_darts_v2_eval_network_size_matches_paper():
    net = DartsEvalNetwork(DARTS_V2)  # C=36, 20 cells, auxiliary head
    total = sum(p.numel() for p in net.parameters())
    aux = sum(p.numel() for p in net.auxiliary_head.parameters())
    # DARTS reports 3.3M parameters for its CIFAR-10 cell (auxiliary head excluded)
    assert 3.30e6 < total - aux < 3.40e6
    assert [i for i, c in enumerate(net.cells) if c.reduction] == [6, 13]
    assert net.aux_index == 13


def test_aux_logits_only_in_training_and_drop_path_spares_identity():
    torch.manual_seed(0)
    net = DartsEvalNetwork(DARTS_V2, C=4, layers=3, num_classes=5)
    x = torch.randn(3, 3, 32, 32)
    logits, aux = net.forward_with_aux(x)
    assert logits.shape == (3, 5) and aux.shape == (3, 5)
    net.eval()
    assert net.forward_with_aux(x)[1] is None
    torch.testing.assert_close(net(x), net.forward_with_aux(x)[0])
    # with drop_path_prob close to 1 every non-identity op output is (almost surely) dropped in training,
    # so a normal cell's nodes reduce to its identity edges
    net.train()
    net.drop_path_prob = 0.999
    cell = net.cells[0]
    assert any(isinstance(op, Identity) for op in cell.ops)
    s = torch.randn(2, 3 * 4, 8, 8)
    torch.manual_seed(1)
    out = cell(s, s, net.drop_path_prob)
    assert torch.isfinite(out).all()
    net.eval()
    torch.testing.assert_close(cell(s, s, 0.999), cell(s, s, 0.0))  # no drop-path in eval mode


def test_train_epoch_reduces_loss_and_evaluate_restores_mode():
    torch.manual_seed(0)
    net = DartsEvalNetwork(DARTS_V2, C=4, layers=3, num_classes=4)
    x = torch.randn(16, 3, 32, 32)
    y = torch.arange(16) % 4
    with pytest.raises(ValueError, match="at least 8x8"):
        net.forward_with_aux(x[:, :, :16, :16])
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    first = train_epoch(net, [(x, y)], opt, auxiliary_weight=0.4, grad_clip=5.0)
    for _ in range(20):
        stats = train_epoch(net, [(x, y)], opt, auxiliary_weight=0.4, grad_clip=5.0)
    assert stats["loss"] < 0.5 * first["loss"]
    assert stats["accuracy"] >= 75.0
    ev = evaluate(net, [(x, y), (x[:4], y[:4])])
    assert ev["loss"] > 0 and 0.0 <= ev["accuracy"] <= 100.0
    net.train()
    evaluate(net, [(x, y)])
    assert net.training
    with pytest.raises(ValueError, match="no batches"):
        evaluate(net, [])


def test_train_config_defaults_are_the_darts_protocol():
    c = DartsTrainConfig()
    assert (c.epochs, c.batch_size, c.lr, c.C, c.layers) == (600, 96, 0.025, 36, 20)
    assert (c.auxiliary_weight, c.drop_path_prob, c.cutout, c.weight_decay) == (0.4, 0.2, 16, 3e-4)
    with pytest.raises(TypeError, match="DartsGenotype"):
        DartsEvalNetwork({"normal": []})  # type: ignore[arg-type]
