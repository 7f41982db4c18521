"""BatchNorm recalibration: the statistics it computes, the limits it honours, and all-or-nothing failures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rartsprune
from rartsprune import has_running_stats, recalibrate_bn
from rartsprune.app.pipeline import PruneJob


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.Conv2d(5, 4, 1), nn.BatchNorm2d(4))


def _batches(n: int, shift: float = 3.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(6, 3, 8, 8, generator=g) * 2.0 + shift for _ in range(n)]


def _stats(net: nn.Module) -> list[torch.Tensor]:
    return [b.clone() for b in net.buffers()]


def test_statistics_are_the_average_over_the_batches() -> None:
    net, data = _net(), _batches(4)
    recalibrate_bn(net, data)
    bn = net[1]
    with torch.no_grad():
        feats = [net[0](x) for x in data]
    # momentum=None during recalibration: a plain average of per-batch means and unbiased variances
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.transpose(0, 1).reshape(5, -1).var(dim=1, unbiased=True) for f in feats]).mean(0)
    torch.testing.assert_close(bn.running_mean, mean, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, var, rtol=1e-5, atol=1e-5)
    assert int(bn.num_batches_tracked) == 4 and bn.momentum == 0.1
    # in eval mode the first BN now normalises these inputs: per-channel mean ~0 over the data
    net.eval()
    with torch.no_grad():
        out = torch.cat([net[1](f) for f in feats])
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-4


def test_weights_untouched_and_num_batches_limits_the_pass() -> None:
    net = _net()
    weights = [p.clone() for p in net.parameters()]
    seen = []

    class Spy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.shape[0])
            return x

    model = nn.Sequential(Spy(), net)
    recalibrate_bn(model, ((x, torch.zeros(6)) for x in _batches(10)), num_batches=3)
    assert len(seen) == 3 and int(net[4].num_batches_tracked) == 3
    for p, w in zip(net.parameters(), weights):
        assert torch.equal(p, w) and p.grad is None


def test_train_eval_flags_kept_per_module() -> None:
    net = _net()
    net.train()
    net[4].eval()  # e.g. a frozen layer
    recalibrate_bn(net, _batches(2))
    assert net.training and net[1].training and not net[4].training
    net.eval()
    recalibrate_bn(net, _batches(2))
    assert not any(m.training for m in net.modules())


def test_failing_forward_leaves_everything_as_it_was() -> None:
    net = _net()
    net[1].momentum = 0.3
    before = _stats(net)
    calls = []

    class Boom(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("bad batch")
            return x

    model = nn.Sequential(net, Boom())
    model.eval()
    with pytest.raises(RuntimeError, match="bad batch"):
        recalibrate_bn(model, _batches(3))
    for a, b in zip(_stats(net), before):
        assert torch.equal(a, b)
    assert net[1].momentum == 0.3 and net[4].momentum == 0.1 and not model.training


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_bad_num_batches(bad: object) -> None:
    with pytest.raises(ValueError, match="num_batches"):
        recalibrate_bn(_net(), _batches(1), num_batches=bad)  # type: ignore[arg-type]


def test_no_batchnorm_or_no_batches_is_an_error() -> None:
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GroupNorm(2, 4))
    assert not has_running_stats(plain)
    with pytest.raises(ValueError, match="no BatchNorm"):
        recalibrate_bn(plain, _batches(1))
    net = _net()
    before = _stats(net)
    with pytest.raises(ValueError, match="no batch"):
        recalibrate_bn(net, [])
    for a, b in zip(_stats(net), before):
        assert torch.equal(a, b)
    with pytest.raises(TypeError, match="nn.Module"):
        recalibrate_bn("resnet", _batches(1))  # type: ignore[arg-type]


def test_recalibration_repairs_a_pruned_network() -> None:
    """After removing channels, eval-mode BN statistics are stale; recalibrating brings eval outputs back to
    what training-mode BN computes on the same data."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))
    data = _batches(8, shift=1.0)
    recalibrate_bn(model, data)  # statistics of the unpruned network
    example = torch.randn(1, 3, 8, 8)
    handle = rartsprune.attach_scores(model, example, ignored_layers=[model[8]])
    with torch.no_grad():
        for s in handle.scores:
            s.copy_(torch.linspace(0.05, 1.0, s.numel()))  # the weakest channels matter least
    keep = {name: a.detach() > a.detach().median() for name, a in handle.named_scores()}
    rartsprune.apply_surgery(model, keep)
    assert model[3].in_channels < 16
    big = torch.cat(data)

    def eval_vs_train_gap() -> float:
        with torch.no_grad():
            model.eval()
            e = model(big)
            model.train()
            t = model(big)
        return float((e - t).abs().max())

    stale = eval_vs_train_gap()
    recalibrate_bn(model, [big])
    assert eval_vs_train_gap() < 1e-4 < stale


def test_prune_job_validates_its_numbers() -> None:
    with pytest.raises(ValueError, match="finetune_epochs"):
        PruneJob(finetune_epochs=-1)
    with pytest.raises(ValueError, match="bn_recalibration"):
        PruneJob(bn_recalibration=-5)
    with pytest.raises(ValueError, match="batch_size"):
        PruneJob(batch_size=0)
    with pytest.raises(ValueError, match="search_lr"):
        PruneJob(search_lr=float("nan"))
    with pytest.raises(ValueError, match="schedule"):
        PruneJob(schedule="linear")
