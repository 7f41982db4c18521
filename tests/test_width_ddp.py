"""prune() under DistributedDataParallel: 2 gloo processes on CPU match one process on the global batch.

The pattern (also in docs/width.md): under ``torchrun``, call ``init_process_group``, build the model
on each rank, then ``pruner = rartsprune.prune(model, ratio, distributed=True)`` (or pass a model already
wrapped in DistributedDataParallel: it is unwrapped and searched with ``distributed=True``). The search wraps
the primary and the auxiliary networks in DDP, keeps the scores out of DDP and averages their gradients
itself; every rank finalizes the same plan.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

import rartsprune

pytestmark = pytest.mark.ddp
WORLD = 2
STEPS = 3


class NoBN(nn.Module):
    """No BatchNorm: per-rank batch statistics would make the runs differ legitimately."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1, stride=2)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def batches() -> list:
    g = torch.Generator().manual_seed(5)

    def one() -> tuple[torch.Tensor, torch.Tensor]:
        return torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 3, (8,), generator=g)

    return [(one(), one()) for _ in range(STEPS)]


def shard(batch: tuple, rank: int) -> tuple:
    x, t = batch
    n = x.shape[0] // WORLD
    return x[rank * n:(rank + 1) * n], t[rank * n:(rank + 1) * n]


def search(rank: int | None, wrap: bool) -> dict:
    torch.manual_seed(0)
    model = NoBN()
    distributed = rank is not None
    target = nn.parallel.DistributedDataParallel(model) if (distributed and wrap) else model
    pruner = rartsprune.prune(target, ratio=0.3, example_inputs=torch.zeros(1, 3, 8, 8), distributed=distributed and not wrap,
                              arch_lr=0.05)
    for bt, bv in batches():
        if distributed:
            bt, bv = shard(bt, rank), shard(bv, rank)
        pruner.step(bt, bv)
    scores = [a.detach().clone() for a in pruner.handle.scores]
    keep = pruner.selection().keep
    pruner.finalize()
    return {"scores": scores, "keep": keep, "conv1": model.conv1.weight.detach().clone()}


def _worker(rank: int, port: int, out_dir: str, wrap: bool) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.save(search(rank, wrap), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("wrap", [False, True], ids=["distributed_flag", "ddp_wrapped_model"])
def test_two_ranks_match_one_process(tmp_path: Path, wrap: bool) -> None:
    mp.spawn(_worker, args=(_free_port(), str(tmp_path), wrap), nprocs=WORLD, join=True)
    single = search(None, wrap=False)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for got in ranks:
        for a, b in zip(got["scores"], single["scores"]):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
        assert got["keep"] == single["keep"]
        torch.testing.assert_close(got["conv1"], single["conv1"], rtol=0, atol=1e-5)
    assert all(torch.equal(x, y) for x, y in zip(ranks[0]["scores"], ranks[1]["scores"]))
