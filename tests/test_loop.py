"""The application's one training loop and atomic save (rartsprune.app.loop), shared by both runners."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from rartsprune.app import loop, pipeline
from rartsprune.app.topology import train as topology_train


def _data(n: int = 64, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)]


def test_training_lowers_the_loss_and_evaluate_restores_the_mode() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    opt = torch.optim.SGD(net.parameters(), lr=0.2)
    data = _data()
    first = loop.evaluate(net, data)["loss"]
    for _ in range(15):
        stats = loop.train_epoch(net, data, opt, grad_clip=5.0)
    net.eval()
    after = loop.evaluate(net, data)
    assert after["loss"] < 0.6 * first and after["acc"] > 70 and not net.training
    assert 0 <= stats["acc"] <= 100
    with pytest.raises(ValueError, match="no batches"):
        loop.train_epoch(net, [], opt)
    with pytest.raises(FloatingPointError, match="non-finite"):
        loop.train_epoch(net, data, opt, loss_fn=lambda m, x, y: (m(x).sum() * float("nan"), m(x)))


def test_the_pipeline_and_the_topology_trainer_run_the_same_loop() -> None:
    """Same net, same batches, same optimizer: the job runner's epoch and the loop's give the same weights."""
    data = _data()
    results = []
    for how in ("loop", "topology"):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
        net.forward_with_aux = lambda x, net=net: (net(x), None)  # the DARTS network's interface, no aux head
        opt = torch.optim.SGD(net.parameters(), lr=0.1)
        if how == "loop":
            loop.train_epoch(net, data, opt, grad_clip=5.0)
        else:
            topology_train.train_epoch(net, data, opt, grad_clip=5.0)
        results.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    torch.testing.assert_close(results[0], results[1], rtol=0, atol=0)
    assert pipeline.train_epoch.__module__ == "rartsprune.app.pipeline"  # a thin wrapper over loop.train_epoch


def test_atomic_save_keeps_the_old_file_when_saving_fails(tmp_path) -> None:  # noqa: ANN001
    path = tmp_path / "state.pt"
    loop.atomic_save({"a": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - pickling a lambda fails inside torch.save
        loop.atomic_save({"a": lambda: 2}, path)
    assert torch.load(path) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.pt"]
