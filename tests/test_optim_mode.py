"""RARTS' auxiliary net follows the model's train / eval mode at every step, whatever the mode it was copied in.

The auxiliary net w is a deep copy of the model made when the search optimizer is built. Before the fix, a
model built (or pruned) in eval mode and then put in training mode left w in eval mode: its BatchNorm used the
running statistics and a torchvision detector returned detections instead of its losses.
"""

from __future__ import annotations

import torch
import torch.nn as nn

import rartsprune
from rartsprune.optim import DARTS, RARTS
from rartsprune.tasks import PrunableFrozenBatchNorm2d, detection_loss


class _Net(nn.Module):
    """conv -> BN -> (frozen BN) -> ReLU -> dropout -> linear, gated by ``gate``."""

    def __init__(self, gate: torch.Tensor) -> None:
        super().__init__()
        self.gate = gate
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.frozen = PrunableFrozenBatchNorm2d(4)  # keeps eval mode whatever train() says
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.frozen(self.bn(self.conv(x)))) * torch.sigmoid(self.gate)[None, :, None, None]
        return self.fc(self.drop(y.mean((2, 3))))


def _build(seed: int = 0) -> tuple[_Net, nn.Parameter]:
    torch.manual_seed(seed)
    gate = nn.Parameter(torch.zeros(4))
    return _Net(gate), gate


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g)


def _modes(net: nn.Module) -> dict[str, bool]:
    return {name: m.training for name, m in net.named_modules()}


def test_aux_net_follows_the_model_into_training_mode() -> None:
    net, gate = _build()
    net.eval()
    opt = RARTS(net, [gate])
    aux = opt.aux_model
    assert aux is not None and not any(m.training for m in aux.modules())  # copied in eval mode
    stats_before = aux.bn.running_mean.clone()
    net.train()
    opt.step(_batch(1), _batch(2))
    assert _modes(aux) == _modes(net)
    assert aux.training and aux.bn.training and aux.drop.training and not aux.frozen.training
    # the auxiliary BatchNorm normalised with batch statistics and updated its running mean
    assert not torch.allclose(aux.bn.running_mean, stats_before)
    frozen = aux.frozen.running_mean.clone()
    net.eval()  # back to eval mode (e.g. a validation between epochs): w follows again
    running = aux.bn.running_mean.clone()
    opt.step(_batch(3), _batch(4))
    assert not any(m.training for m in aux.modules())
    assert torch.equal(aux.bn.running_mean, running) and torch.equal(aux.frozen.running_mean, frozen)


def test_built_in_eval_mode_then_trained_equals_built_in_training_mode() -> None:
    """The numbers of a search do not depend on the mode the model had when the optimizer was built."""
    results = []
    for build_mode in (True, False):
        net, gate = _build(seed=5)
        net.train(build_mode)
        opt = RARTS(net, [gate], update="exact")
        net.train()
        torch.manual_seed(11)  # the same dropout masks in both runs
        stats = [opt.step(_batch(10 + i), _batch(20 + i)) for i in range(3)]
        results.append((stats, gate.detach().clone(), [p.detach().clone() for p in opt.aux_model.parameters()],
                        opt.aux_model.bn.running_var.clone()))
    (s1, g1, w1, v1), (s2, g2, w2, v2) = results
    assert [r["loss_t"] for r in s1] == [r["loss_t"] for r in s2]
    assert [r["dist"] for r in s1] == [r["dist"] for r in s2]
    assert torch.equal(g1, g2) and torch.equal(v1, v2)
    assert all(torch.equal(a, b) for a, b in zip(w1, w2))
    assert s1[0]["loss_t"] > 0 and not torch.equal(g1, torch.zeros(4))  # the steps did move the gate


def test_one_network_methods_are_unaffected() -> None:
    net, gate = _build()
    net.eval()
    opt = DARTS(net, [gate], order=1)
    assert opt.aux_model is None and opt._mode_pairs == []
    net.train()
    stats = opt.step(_batch(1), _batch(2))
    assert stats["loss_v"] > 0 and net.training


def test_a_given_aux_model_follows_by_module_name() -> None:
    net, gate = _build()
    aux, _ = _build()
    aux.gate = gate  # both nets share the architecture parameter
    aux.eval()
    opt = RARTS(net.train(), [gate], aux_model=aux)
    assert not aux.bn.training
    opt.step(_batch(1), _batch(2))
    assert aux.bn.training and aux.drop.training and not aux.frozen.training


def test_a_detector_pruned_in_eval_mode_searches_once_put_in_training_mode() -> None:
    """The known limit: a detector had to be in training mode before ``prune``; now before ``step`` will do."""
    import torchvision
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    torch.manual_seed(0)
    det = torchvision.models.detection.ssdlite320_mobilenet_v3_large(weights=None, weights_backbone=None,
                                                                    num_classes=3)
    det.transform = GeneralizedRCNNTransform(64, 64, [0.5] * 3, [0.5] * 3, size_divisible=1, fixed_size=(64, 64))
    det.eval()
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 64, 64, generator=g) for _ in range(2)]
    targets = [{"boxes": torch.tensor([[8.0, 8.0, 40.0, 36.0]]), "labels": torch.tensor([i + 1])} for i in range(2)]
    pruner = rartsprune.prune(det, ratio=0.3, example_inputs=(images[:1],), loss_fn=detection_loss)
    aux = pruner.search.aux_model
    assert aux is not None and not aux.training  # copied in eval mode, as the model was
    det.train()
    stats = pruner.step((images, targets), (images, targets))  # before the fix: ValueError (eval mode) from w
    assert aux.training and _modes(aux) == _modes(det)
    assert stats["loss_t"] > 0 and stats["loss_v"] > 0
    pruned = pruner.finalize()
    assert 0.25 <= pruner.result["prc"] <= 0.35
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in aux.parameters())
