from __future__ import annotations

import pytest
import torch

from rartsprune.app.topology.runner import load_search_data, resolve_device
from rartsprune.errors import SearchError
from rartsprune.topology import (
    DartsSearchNetwork,
    LatencyPenalty,
    LatencyTable,
    NatsSearchNetwork,
    measure_latency_table,
)
from rartsprune.topology.search import SearchConfig, TopologySearch


def _pairs(n_steps: int, seed: int, res: int = 16, bs: int = 8):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_steps):
        xt, xv = torch.randn(bs, 3, res, res, generator=g), torch.randn(bs, 3, res, res, generator=g)
        tt, tv = torch.randint(0, 10, (bs,), generator=g), torch.randint(0, 10, (bs,), generator=g)
        out.append(((xt, tt), (xv, tv)))
    return out


@pytest.mark.parametrize("method", ["rarts", "darts1", "darts2", "milenas"])
def test_every_method_moves_alpha_and_records_history(method):
    torch.manual_seed(0)
    net = NatsSearchNetwork(C=4, N=1)
    search = TopologySearch(net, SearchConfig(method=method, epochs=2, arch_lr=0.05), steps_per_epoch=2)
    a0 = net.alpha.detach().clone()
    entry = search.run_epoch(_pairs(2, 0), progress=False)
    assert entry["epoch"] == 1 and entry["steps"] == 2 and entry["loss_t"] > 0 and entry["loss_v"] > 0
    assert not torch.equal(a0, net.alpha.detach())
    assert search.optimizer.arch_params[0] is net.alpha
    assert entry["arch"] == net.derive_arch()
    assert [h["epoch"] for h in search.history] == [0, 1]
    torch.testing.assert_close(torch.tensor(search.history[0]["alpha"]["cell"]), a0)
    if method == "rarts":
        assert search.optimizer.aux_model.alpha is net.alpha
        assert "dist" in entry


def test_warmup_freezes_alpha_then_releases_it():
    torch.manual_seed(0)
    net = NatsSearchNetwork(C=4, N=1)
    search = TopologySearch(net, SearchConfig(method="rarts", epochs=3, warmup_epochs=1, arch_lr=0.05))
    a0 = net.alpha.detach().clone()
    w0 = net.classifier.weight.detach().clone()
    search.run_epoch(_pairs(2, 0), progress=False)
    assert torch.equal(a0, net.alpha.detach())  # frozen during warm-up
    assert not torch.equal(w0, net.classifier.weight.detach())  # weights trained
    search.run_epoch(_pairs(2, 1), progress=False)
    assert not torch.equal(a0, net.alpha.detach())


def test_checkpoint_resume_is_exact(tmp_path):
    cfg = SearchConfig(method="rarts", epochs=2, arch_lr=0.05)
    torch.manual_seed(0)
    net_a = NatsSearchNetwork(C=4, N=1)
    a = TopologySearch(net_a, cfg)
    a.run_epoch(_pairs(2, 0), progress=False)
    ckpt = a.save(tmp_path / "ck.pt")
    a.run_epoch(_pairs(2, 1), progress=False)

    torch.manual_seed(123)  # a different init: everything must come from the checkpoint
    net_b = NatsSearchNetwork(C=4, N=1)
    b = TopologySearch(net_b, cfg)
    b.load(ckpt)
    assert b.epoch == 1 and len(b.history) == 2
    b.run_epoch(_pairs(2, 1), progress=False)
    torch.testing.assert_close(net_b.alpha, net_a.alpha, rtol=0, atol=0)
    for (k, va), vb in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        torch.testing.assert_close(va, vb, rtol=0, atol=0, msg=k)
    assert b.done
    with pytest.raises(SearchError, match="already ran"):
        b.run_epoch(_pairs(1, 2), progress=False)
    other = TopologySearch(NatsSearchNetwork(C=4, N=1), SearchConfig(method="rarts", epochs=3, arch_lr=0.05))
    with pytest.raises(SearchError, match="differs in \\['epochs'\\]"):
        other.load(ckpt)


def test_darts_space_search_step():
    torch.manual_seed(0)
    net = DartsSearchNetwork(C=2, layers=3)
    search = TopologySearch(net, SearchConfig(method="darts1", epochs=1, arch_lr=0.05))
    entry = search.run_epoch(_pairs(1, 0, res=8, bs=4), progress=False)
    assert set(entry["arch"]) == {"normal", "normal_concat", "reduce", "reduce_concat"}
    assert set(search.history[-1]["alpha"]) == {"normal", "reduce"}


def test_latency_penalty_steers_the_search_to_cheap_ops():
    torch.manual_seed(0)
    shape = (1, 3, 16, 16)
    net = NatsSearchNetwork(C=4, N=1)
    real = measure_latency_table(net, shape, warmup=0, repeats=1)
    cost = {"none": 0.0, "skip_connect": 0.0, "avg_pool_3x3": 1.0, "nor_conv_1x1": 5.0, "nor_conv_3x3": 20.0}
    table = LatencyTable({k: cost[k.split(":")[0]] for k in real.entries}, device="fake")
    pen = LatencyPenalty(net, table, weight=10.0, input_shape=shape)
    start = float(pen.expected_latency().detach())
    search = TopologySearch(net, SearchConfig(method="rarts", epochs=1, arch_lr=0.1), arch_penalty=pen)
    entry = search.run_epoch(_pairs(6, 0), progress=False)
    assert entry["penalty"] > 0
    assert float(pen.expected_latency().detach()) < 0.5 * start
    assert "nor_conv_3x3" not in net.derive_arch()


def test_config_validation():
    with pytest.raises(ValueError, match="warmup_epochs"):
        SearchConfig(epochs=2, warmup_epochs=3)
    with pytest.raises(ValueError, match="arch_lr"):
        SearchConfig(arch_lr=0.0)
    with pytest.raises(ValueError, match="unknown search method"):
        TopologySearch(NatsSearchNetwork(C=4, N=1), SearchConfig(method="enas"))
    with pytest.raises(TypeError, match="search network"):
        TopologySearch(torch.nn.Linear(2, 2), SearchConfig())
    assert SearchConfig.from_dict(SearchConfig(seed=3).to_dict()) == SearchConfig(seed=3)
    with pytest.raises(ValueError, match="unknown SearchConfig keys"):
        SearchConfig.from_dict({"foo": 1})


def test_search_data_pairs_are_deterministic_per_epoch():
    data = load_search_data("fake", subset=128, seed=0, batch_size=16, device=resolve_device("cpu"))
    assert len(data.train_t) == 64 and len(data.train_v) == 64 and data.steps_per_epoch == 4
    assert data.num_classes == 10
    e0 = list(data.pairs(0))
    assert len(e0) == 4
    (xt, tt), (xv, tv) = e0[0]
    assert xt.dtype == torch.float32 and xt.shape == (16, 3, 32, 32) and tt.dtype == torch.int64
    assert abs(float(xt.mean())) < 1.5  # normalised
    again = list(data.pairs(0))
    torch.manual_seed(0)
    assert all(torch.equal(a[0][1], b[0][1]) and torch.equal(a[1][1], b[1][1]) for a, b in zip(e0, again))
    e1 = list(data.pairs(1))
    assert not all(torch.equal(a[0][1], b[0][1]) for a, b in zip(e0, e1))
    with pytest.raises(ValueError, match="cannot fill two halves"):
        load_search_data("fake", subset=20, batch_size=16)
    with pytest.raises(ValueError, match="invalid device"):
        resolve_device("gpu9")
