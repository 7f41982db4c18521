"""DistributedDataParallel: 2 gloo processes on CPU give the same alpha as one process on the global batch."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from rartsprune.optim import make_search_optimizer

WORLD = 2
STEPS = 3
CASES = [
    ("rarts-exact", "rarts", {"update": "exact", "beta": 0.5, "lam": 2.0}),
    ("rarts-fused", "rarts", {"update": "fused"}),
    ("darts1", "darts1", {}),
    ("darts2", "darts2", {}),
    ("milenas", "milenas", {"lam": 0.7}),
]


class MLP(nn.Module):
    """No BatchNorm: per-rank statistics would make the runs differ legitimately."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.linspace(-0.5, 0.5, 16))
        self.fc1 = nn.Linear(10, 16)
        self.fc2 = nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)) * torch.sigmoid(self.alpha))


def global_batches():
    g = torch.Generator().manual_seed(7)
    def one():
        return torch.randn(16, 10, generator=g), torch.randint(0, 4, (16,), generator=g)
    return [(one(), one()) for _ in range(STEPS)]


def shard(batch, rank, world):
    x, t = batch
    n = x.shape[0] // world
    return x[rank * n:(rank + 1) * n], t[rank * n:(rank + 1) * n]


def run_cases(rank: int, world: int, distributed: bool) -> dict[str, dict[str, torch.Tensor]]:
    results = {}
    for name, method, extra in CASES:
        torch.manual_seed(0)
        model = MLP()
        opt = make_search_optimizer(
            method, model, [model.alpha], distributed=distributed,
            arch_optimizer=lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.5, 0.999), weight_decay=1e-3),
            **extra,
        )
        for bt, bv in global_batches():
            if distributed:
                bt, bv = shard(bt, rank, world), shard(bv, rank, world)
            opt.step(bt, bv)
        results[name] = {"alpha": model.alpha.detach().clone(), "fc1": opt.model.fc1.weight.detach().clone()}
    return results


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(run_cases(rank, world, distributed=True), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
def test_two_gloo_ranks_match_one_process_on_the_global_batch(tmp_path):
    mp.spawn(_worker, args=(WORLD, _free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    single = run_cases(0, 1, distributed=False)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name, _, _ in CASES:
        for r in range(WORLD):
            torch.testing.assert_close(ranks[r][name]["alpha"], single[name]["alpha"], rtol=0, atol=1e-5,
                                       msg=lambda m, name=name, r=r: f"{name}, rank {r}: {m}")
            torch.testing.assert_close(ranks[r][name]["fc1"], single[name]["fc1"], rtol=0, atol=1e-5)
        assert torch.equal(ranks[0][name]["alpha"], ranks[1][name]["alpha"])  # ranks agree exactly
        moved = (single[name]["alpha"] - torch.linspace(-0.5, 0.5, 16)).abs().max()
        assert moved > 0.05, name  # alpha really moved (three Adam steps at lr 0.05)


@pytest.mark.parametrize("method", ["l1_norm", "slimming"])
def test_prune_distributed_trains_a_one_shot_baseline_data_parallel(tmp_path: Path, method: str) -> None:
    """``prune(method=<baseline>, distributed=True)``: the baseline's trainer goes through DDP (here one gloo
    rank: the same step as without it), and without a process group it is refused with the model untouched."""
    import rartsprune
    from rartsprune.errors import SearchError

    def net() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3))

    g = torch.Generator().manual_seed(1)
    batch = (torch.randn(6, 3, 8, 8, generator=g), torch.randint(0, 3, (6,), generator=g))
    model = net()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(SearchError, match="process group"):
        rartsprune.prune(model, method=method, ratio=0.5, example_inputs=batch[0][:1], distributed=True)
    assert not rartsprune.has_scores(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    plain = rartsprune.prune(net(), method=method, ratio=0.5, example_inputs=batch[0][:1])
    dist.init_process_group("gloo", init_method=(tmp_path / "pg").as_uri(), rank=0, world_size=1)
    try:
        pruner = rartsprune.prune(model, method=method, ratio=0.5, example_inputs=batch[0][:1], distributed=True)
        assert pruner.search.distributed and not plain.search.distributed
        for _ in range(2):
            got, want = pruner.step(batch, batch), plain.step(batch, batch)
            assert got["loss_t"] == pytest.approx(want["loss_t"], abs=1e-6)
        for (k, a), b in zip(pruner.model.state_dict().items(), plain.model.state_dict().values()):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=k)
        assert pruner.finalize() is not None and plain.finalize() is not None
    finally:
        dist.destroy_process_group()
