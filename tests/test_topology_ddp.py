"""The topology search and its recipes under ``torchrun``: 2 gloo processes on CPU against one process.

The workers are launched as ``torchrun`` launches them (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` /
``MASTER_*`` set; the runner creates and destroys the process group). Every rank takes half of each seeded
global batch and augments it as one process augments the whole batch.

BatchNorm: the search networks normalise with batch statistics (affine-free BN in train mode), so a rank
normalises with the statistics of its half of the batch and N processes legitimately differ from one process
on the whole batch. The comparison is kept exact by giving the one process the same normalisation: its network
(`Halves`, a subclass) runs the two halves of every batch through the network one after the other and
concatenates the logits. The mean loss over the global batch is then the mean of the ranks' mean losses, so
its gradients are what DDP and the alpha all-reduce average; everything else (data, split, sharding,
augmentation, optimizers, schedulers, the alpha and weight updates, the epoch log) is the runner's as it
is. The BatchNorm running statistics are not compared with one process (they do not enter a training-mode
forward pass; under DDP they are rank 0's), only between the ranks.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from rartsprune.app.launch import Ranks
from rartsprune.app.topology.runner import check_search_launch, load_search_data, run_search, search_launch
from rartsprune.app.topology.train import WithAux, train_epoch
from rartsprune.optim import distributed as ddp
from rartsprune.topology import DARTS_V2, DartsEvalNetwork, NatsSearchNetwork
from rartsprune.topology.search import SearchConfig, TopologySearch
from tests.ddp_helpers import TORCHRUN_ENV, free_port, torchrun_env
from tests.scripts import load_script

pytestmark = pytest.mark.ddp
WORLD = 2
ROOT = Path(__file__).resolve().parents[1]
BN_STATS = ("running_mean", "running_var", "num_batches_tracked")


class Net64(NatsSearchNetwork):
    """The search network in float64 (build it, then ``.double()``; the float32 batches are cast). In float32
    the mean of the ranks' alpha gradients and one process's gradient differ by rounding (~1e-8), and Adam's
    alpha step divides by the gradients' size, which is tiny for some entries: the difference grows to ~1e-3
    in a few steps. In float64 it stays far below the tolerance."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.to(torch.float64))


class Halves(Net64):
    """One process normalising as ``WORLD`` ranks do: each of the batch's ``WORLD`` equal parts goes through
    the network on its own (BatchNorm statistics per part), the logits are concatenated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([super(Halves, self).forward(part) for part in x.chunk(WORLD)])


class HalvesEval(DartsEvalNetwork):
    """`Halves` for the evaluation network, drop-path included: every part draws the masks of the whole batch
    from the same random state and keeps its rows, as each rank does (``drop_path_shard``)."""

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        start = torch.get_rng_state()
        logits, aux = [], []
        for i, part in enumerate(x.chunk(WORLD)):
            torch.set_rng_state(start)
            self.drop_path_shard = (i, WORLD)
            out, out_aux = super().forward_with_aux(part)
            logits.append(out)
            aux.append(out_aux)
        self.drop_path_shard = None
        return torch.cat(logits), (torch.cat(aux) if aux[0] is not None else None)


def _recipe(script: str) -> Any:
    return load_script(f"recipes/{script}", script[:-3])


def _tensors(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every floating tensor of a nested state, by path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree.detach().clone()} if tree.is_floating_point() else {}
    items: Any = tree.items() if isinstance(tree, dict) else (
        enumerate(tree) if isinstance(tree, (list, tuple)) else ())
    out: dict[str, torch.Tensor] = {}
    for k, v in items:
        out.update(_tensors(v, f"{prefix}/{k}"))
    return out


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=lambda m, k=k: f"{k}: {m}")


# ------------------------------------------------------------------------------------ the runner, the loops
def tiny_search(ranks: Ranks, net_class: type[Net64], method: str = "rarts") -> TopologySearch:
    """2 epochs of 2 steps (32 fake images: halves of 16, global batch 8) of a C=4, N=1 NATS search."""
    torch.manual_seed(0)
    data = load_search_data("fake", subset=32, seed=0, batch_size=8, device="cpu", ranks=ranks)
    net = net_class(C=4, N=1, num_classes=data.num_classes).double()
    config = SearchConfig(method=method, epochs=2, batch_size=8, arch_lr=0.05)
    search = TopologySearch(net, config, steps_per_epoch=data.steps_per_epoch, distributed=ranks.distributed)
    return run_search(search, data, progress=False, ranks=ranks)


def search_state(search: TopologySearch) -> dict[str, torch.Tensor]:
    """What is compared with one process: alpha, both nets' parameters, the optimizers' states."""
    state = _tensors(search.optimizer.state_dict())
    return {k: v for k, v in state.items() if not any(s in k for s in BN_STATS) and not k.startswith("/rng")}


def tiny_training(ranks: Ranks, net_class: type[DartsEvalNetwork]) -> dict[str, torch.Tensor]:
    """2 steps of `train_epoch` (global batch 8, drop-path 0.3, auxiliary head) of a C=4, 3-cell network."""
    torch.manual_seed(0)
    net = net_class(DARTS_V2, C=4, layers=3, num_classes=10, auxiliary=True)
    net.drop_path_prob = 0.3
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=3e-4)
    g = torch.Generator().manual_seed(1)
    batches = [(torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 10, (8,), generator=g))
               for _ in range(2)]
    trainee: Any = net
    if ranks.distributed:
        net.drop_path_shard = ranks.shard
        trainee = ddp.wrap_ddp(WithAux(net), ignore=[])
        batches = [(x.chunk(WORLD)[ranks.rank], y.chunk(WORLD)[ranks.rank]) for x, y in batches]
    train_epoch(trainee, batches, optimizer, grad_clip=5.0)
    return {k: p.detach().clone() for k, p in net.named_parameters()}


# --------------------------------------------------------------------------------------------- the workers
def _worker(rank: int, ports: list[int], tmp: str) -> None:
    torch.set_num_threads(1)
    base = Path(tmp)
    own = "" if rank == 0 else f"-rank{rank}"  # rank 1 gets folders of its own: they must stay unwritten
    got: dict[str, Any] = {}
    torchrun_env(rank, WORLD, ports[0])
    with search_launch("cpu", batch_size=8) as (ranks, _):
        search = tiny_search(ranks, Net64)
        got["search"] = search_state(search)
        got["buffers"] = {k: v.clone() for k, v in search.net.state_dict().items()}
        got["log"] = json.dumps([{k: v for k, v in e.items() if k != "seconds"} for e in search.log])
        got["training"] = tiny_training(ranks, DartsEvalNetwork)

    recipe = _recipe("nats_search.py")
    flags = ["--data", "fake", "--train-subset", "32", "--C", "4", "--N", "1", "--epochs", "2",
             "--batch-size", "8", "--max-steps", "1", "--method", "rarts", "--arch-lr", "0.05",
             "--latency-weight", "0.1", "--device", "cpu", "--no-progress"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        torchrun_env(rank, WORLD, ports[1])
        got["full"] = json.dumps(recipe.main([*flags, "--out", str(base / f"full{own}")]))
        # interrupted after epoch 1, resumed on both ranks from rank 0's checkpoint (a folder both see), with
        # the latency table rank 0 measured for the full run (a new one would hold other timings)
        again = [*flags, "--out", str(base / "part"), "--no-plots",
                 "--latency-table", str(base / "full" / "latency.json")]
        torchrun_env(rank, WORLD, ports[2])
        got["part"] = json.dumps(recipe.main([*again, "--stop-after", "1"]))
        torchrun_env(rank, WORLD, ports[3])
        got["resumed"] = json.dumps(recipe.main([*again, "--resume"]))
    got["printed"] = printed.getvalue()
    got["group_left"] = dist.is_initialized()
    torch.save(got, base / f"rank{rank}.pt")


def _drop_times(result: dict[str, Any]) -> dict[str, Any]:
    """A recipe's result without its wall times (each rank's own) and plot paths (in each rank's --out)."""
    out = {k: v for k, v in result.items() if k not in ("search_seconds", "wall_seconds_this_run", "plots")}
    out["log"] = [{k: v for k, v in e.items() if k != "seconds"} for e in result["log"]]
    return out


@pytest.mark.timeout(300)  # a rank waiting for the other forever fails here, not at the suite's 900 s
def test_two_processes_search_as_one_process_and_only_rank0_writes(tmp_path: Path) -> None:
    mp.spawn(_worker, args=([free_port() for _ in range(4)], str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    # the ranks hold the same search, exactly (BatchNorm statistics included: rank 0's after every epoch)
    for key in ("search", "buffers", "training"):
        assert all(torch.equal(ranks[0][key][k], ranks[1][key][k]) for k in ranks[0][key]), key
    assert ranks[0]["log"] == ranks[1]["log"]

    # ... and the one process at the same global batch (with the ranks' BatchNorm: see the module docstring)
    one = tiny_search(Ranks(), Halves)
    assert one.optimizer.aux_model.__class__ is Halves  # RARTS's second net normalises alike
    state = search_state(one)
    assert any("arch_params" in k for k in state) and any("aux_model" in k for k in state)
    _assert_close(ranks[0]["search"], state)
    alpha0 = torch.tensor(one.history[0]["alpha"]["cell"])
    assert (one.net.alpha.detach() - alpha0).abs().max() > 0.05  # alpha moved: the comparison is not vacuous
    for got, want in zip(json.loads(ranks[0]["log"]), one.log):
        assert got["arch"] == want["arch"] and got["steps"] == want["steps"] == 2
        for k in ("loss_t", "loss_v", "dist", "lr", "lr_arch"):
            assert got[k] == pytest.approx(want[k], abs=1e-5), k
    # the evaluation network's training loop (DDP, drop-path drawn for the global batch) likewise
    _assert_close(ranks[0]["training"], tiny_training(Ranks(), HalvesEval))

    # the recipe: every rank returns rank 0's result; only rank 0 wrote and printed
    results = [json.loads(r["full"]) for r in ranks]
    assert _drop_times(results[0]) == _drop_times(results[1])
    assert results[0]["distributed"] == {"world_size": 2} and results[0]["steps"] == 2
    assert results[0]["latency_ms"] > 0 and results[0]["log"][0]["penalty"] > 0
    written = json.loads((tmp_path / "full" / "result.json").read_text())
    assert _drop_times(written) == _drop_times(results[0])
    assert {p.name for p in (tmp_path / "full").iterdir()} == {
        "checkpoint.pt", "latency.json", "result.json", "alpha_history.png", "cell.png"}
    assert not (tmp_path / "full-rank1").exists()
    assert "wrote" in ranks[0]["printed"] and ranks[1]["printed"] == ""
    assert not any(r["group_left"] for r in ranks)  # the runner destroyed the groups it made

    # resumed after epoch 1: where the uninterrupted run ends, on both ranks
    part = json.loads(ranks[0]["part"])
    assert part["epochs"] == 1 and not part["finished"]
    for r in ranks:
        resumed = json.loads(r["resumed"])
        assert resumed["epochs"] == 2 and resumed["finished"] and resumed["arch"] == results[0]["arch"]
        torch.testing.assert_close(torch.tensor(resumed["alpha_final"]["cell"]),
                                   torch.tensor(results[0]["alpha_final"]["cell"]), rtol=0, atol=1e-6)
        want = [e["loss_t"] for e in results[0]["log"]]
        assert [e["loss_t"] for e in resumed["log"]] == pytest.approx(want, abs=1e-6)


# ------------------------------------------------------------------------------------ settings refused first
_REFUSED = """
import importlib.util, sys
from pathlib import Path
for script in ("nats_search.py", "darts_search.py", "darts_train.py"):
    spec = importlib.util.spec_from_file_location(script[:-3], Path("recipes") / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        module.main(["--data", "fake", "--batch-size", "15", "--out", str(Path(sys.argv[1]) / script)])
    except SystemExit as exc:
        print(script, "exit", exc.code)
"""


def test_indivisible_batch_is_refused_before_any_work(tmp_path: Path) -> None:
    check_search_launch(15, world=1)  # one process takes any batch
    with pytest.raises(ValueError, match=r"batch_size=15 must be a multiple of the 2 processes"):
        check_search_launch(15, world=2)
    with pytest.raises(ValueError, match=r"batch_size=15 must be a multiple of the 2 processes"):
        load_search_data("fake", subset=64, batch_size=15, ranks=Ranks(rank=0, world=2))
    with pytest.raises(ValueError, match="distributed=False"):
        net = NatsSearchNetwork(C=4, N=1)
        data = load_search_data("fake", subset=64, batch_size=16)
        run_search(TopologySearch(net, SearchConfig(epochs=1)), data, ranks=Ranks(rank=0, world=2))
    # rank 1 of 2 as torchrun starts it, alone: every recipe must stop before the process group (which would
    # wait for rank 0 forever, hence a process of its own with a time limit), the data and the model
    env = {**os.environ, **dict(zip(TORCHRUN_ENV, ("1", str(WORLD), "1", "127.0.0.1", str(free_port())))),
           "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", _REFUSED, str(tmp_path)], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for script in ("nats_search.py", "darts_search.py", "darts_train.py"):
        assert f"{script} exit 2" in proc.stdout
    assert proc.stderr.count("batch_size=15 must be a multiple of the 2 processes") == 3
    assert not any(tmp_path.iterdir())


# -------------------------------------------------------------------------------------------- slower cases
def _methods_worker(rank: int, port: int, tmp: str) -> None:
    torch.set_num_threads(1)
    torchrun_env(rank, WORLD, port)
    with search_launch("cpu", batch_size=8) as (ranks, _):
        got = {m: search_state(tiny_search(ranks, Net64, m)) for m in ("darts1", "darts2", "milenas")}
    torch.save(got, Path(tmp) / f"rank{rank}.pt")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_every_method_on_two_processes_matches_one_process(tmp_path: Path) -> None:
    mp.spawn(_methods_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    got = torch.load(tmp_path / "rank0.pt", weights_only=True)
    for method, state in got.items():
        _assert_close(state, search_state(tiny_search(Ranks(), Halves, method)))


@pytest.mark.slow
def test_torchrun_darts_search_then_train(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2`` on the DARTS recipes: one summary each, rank 0's files, and a training
    run resumed on both ranks ends where the uninterrupted one does."""
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})

    def torchrun(script: str, *args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD), "--master_port",
             str(free_port()), str(ROOT / "recipes" / script), *args, "--device", "cpu", "--no-progress"],
            capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return proc

    search = tmp_path / "search"
    proc = torchrun("darts_search.py", "--data", "fake", "--train-subset", "64", "--C", "2", "--layers", "3",
                    "--epochs", "1", "--batch-size", "8", "--max-steps", "2", "--method", "rarts",
                    "--eval-C", "4", "--eval-layers", "3", "--out", str(search))
    assert proc.stdout.count("wrote") == 1
    res = json.loads((search / "result.json").read_text())
    assert res["distributed"] == {"world_size": 2} and res["steps"] == 2
    assert {p.name for p in search.iterdir()} == {"checkpoint.pt", "genotype.json", "result.json",
                                                  "alpha_history.png", "normal_cell.png", "reduce_cell.png"}

    args = ["--genotype", str(search / "genotype.json"), "--data", "fake", "--train-subset", "64",
            "--test-subset", "25", "--C", "4", "--layers", "3", "--epochs", "2", "--batch-size", "16",
            "--max-steps", "2", "--no-plots"]
    full = torchrun("darts_train.py", *args, "--out", str(tmp_path / "full"))
    assert full.stdout.count("test accuracy") == 1
    torchrun("darts_train.py", *args, "--out", str(tmp_path / "part"), "--stop-after", "1")
    torchrun("darts_train.py", *args, "--out", str(tmp_path / "part"), "--resume")
    a, b = (json.loads((tmp_path / d / "result.json").read_text()) for d in ("full", "part"))
    assert a["distributed"] == {"world_size": 2} and a["finished"] and b["finished"]
    for e in a["log"]:
        correct = e["test_accuracy"] * 25 / 100  # the counts of both ranks' shares of the 25 test images
        assert correct == pytest.approx(round(correct))
    assert len(a["log"]) == len(b["log"]) == 2
    for got, want in zip(b["log"], a["log"]):
        assert got == pytest.approx(want, abs=1e-6)
