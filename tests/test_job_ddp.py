"""The job runner in several processes (``torchrun``): 2 gloo processes on CPU against one process.

Launched like ``torchrun`` does it (``RANK`` / ``WORLD_SIZE`` / ``LOCAL_RANK`` / ``MASTER_*`` set, the runner
initialises the process group) or inside a process group the caller initialised. The model has no BatchNorm:
per-rank batch statistics would make one and two processes differ legitimately (Network Slimming's model has
InstanceNorm instead: affine scales the baseline ranks by, normalised per image). Every rank takes half of each
global batch and augments it as one process would, so the runs match one process at the same global batch —
for the searches and for the one-shot baselines (``l1_norm``, ``random``, ``slimming``) alike.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn as nn

from rartsprune.app.data import BatchShard, default_augment, load_dataset, make_loader, to_device_batch
from rartsprune.app.launch import Ranks, launch_ranks, rank_device
from rartsprune.app.pipeline import PruneJob, check_launch, run
from tests.ddp_helpers import TORCHRUN_ENV, free_port, torchrun_env

pytestmark = pytest.mark.ddp
WORLD = 2
ROOT = Path(__file__).resolve().parents[1]


class Crash(Exception):
    """Raised by `Tiny` to interrupt a job in the middle of its search."""


#: What `Tiny` saw in this process: the batch size of every training forward pass, the models built.
SEEN: dict[str, Any] = {"batches": [], "models": [], "crash_at": None}


class Tiny(nn.Module):
    """No BatchNorm. Records the batch size of its training passes; raises `Crash` at pass
    ``SEEN["crash_at"]``."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 12, 3, padding=1, stride=2)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and x.shape[0] > 1:  # a training step, not a probe
            SEEN["batches"].append(int(x.shape[0]))
            if len(SEEN["batches"]) == SEEN["crash_at"]:
                raise Crash(f"training pass {SEEN['crash_at']}")
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(x.mean((2, 3)))


def tiny(num_classes: int) -> nn.Module:
    model = Tiny(num_classes)
    SEEN["models"].append(model)  # the job's (pruned in place, then fine-tuned) and its teacher: `_job_model`
    return model


class TinyNorm(Tiny):
    """`Tiny` with affine InstanceNorm after each convolution: scales for Network Slimming whose statistics are
    each image's own, so one process and two compute the same numbers."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        self.norm1 = nn.InstanceNorm2d(8, affine=True)
        self.norm2 = nn.InstanceNorm2d(12, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and torch.is_grad_enabled() and x.shape[0] > 1:
            SEEN["batches"].append(int(x.shape[0]))
            if len(SEEN["batches"]) == SEEN["crash_at"]:
                raise Crash(f"training pass {SEEN['crash_at']}")
        x = torch.relu(self.norm1(self.conv1(x)))
        x = torch.relu(self.norm2(self.conv2(x)))
        return self.fc(x.mean((2, 3)))


def tiny_norm(num_classes: int) -> nn.Module:
    model = TinyNorm(num_classes)
    SEEN["models"].append(model)
    return model


def job(out: Path, **kw: Any) -> PruneJob:
    base: dict[str, Any] = {
        "model": "tiny", "model_factory": tiny, "data": "fake", "train_subset": 64, "test_subset": 30,
        "batch_size": 16, "pretrain_epochs": 1, "search_epochs": 2, "finetune_epochs": 1, "lr": 0.05,
        "search_lr": 0.05, "ratio": 0.3, "plots": False, "progress": False, "device": "cpu", "out": str(out)}
    return PruneJob(**{**base, **kw})


def _job_model() -> nn.Module:
    """The last network the job built that trains: the pruned, fine-tuned one (the teacher its fine-tuning distils
    from is built after it, frozen)."""
    return next(m for m in reversed(SEEN["models"]) if any(p.requires_grad for p in m.parameters()))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _tensors(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every floating tensor of a nested checkpoint, by path."""
    if isinstance(tree, torch.Tensor):
        return {prefix: tree} if tree.is_floating_point() else {}
    if isinstance(tree, dict):
        items: Any = tree.items()
    else:
        items = enumerate(tree) if isinstance(tree, (list, tuple)) else ()
    out: dict[str, torch.Tensor] = {}
    for k, v in items:
        out.update(_tensors(v, f"{prefix}/{k}"))
    return out


def _assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys() and a
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")


def _numbers(results: dict[str, Any]) -> list[Any]:
    """What a job logs, without wall times and the settings (the output folder differs)."""
    return [results["history"], results["before"], results["after_search"], results["after_prune"],
            results["after_finetune"], results["widths"], results["summary"]]


# --------------------------------------------------------------------------------------- launched by torchrun
def _torchrun_worker(rank: int, ports: list[int], tmp: str) -> None:
    torch.set_num_threads(1)
    base = Path(tmp)
    own = "" if rank == 0 else f"-rank{rank}"  # rank 1 gets a folder of its own: it must stay unwritten
    torchrun_env(rank, WORLD, ports[0])
    run(job(base / f"search{own}", stop_after="search"))
    SEEN["batches"].clear()
    torchrun_env(rank, WORLD, ports[1])
    results = run(job(base / f"full{own}"))
    torch.save({"results": json.dumps(results), "model": _state(_job_model()),
                "batches": SEEN["batches"], "group_left": dist.is_initialized()}, base / f"rank{rank}.pt")


@pytest.mark.timeout(300)  # a rank waiting for another forever fails here, not at the suite's 900 s
def test_two_processes_match_one_process(tmp_path: Path) -> None:
    """torchrun's launch: the runner makes the group; scores, widths, weights, numbers equal one process."""
    mp.spawn(_torchrun_worker, args=([free_port(), free_port()], str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    SEEN["batches"].clear()
    one = run(job(tmp_path / "one-search", stop_after="search"))
    SEEN["batches"].clear()
    one = run(job(tmp_path / "one-full"))
    one_batches = list(SEEN["batches"])

    # the search's state (the scores, both nets, the optimizers) after 2 epochs: as one process
    ckpt = [torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["pruner"]
            for d in ("search", "one-search")]
    scores = {k: v for k, v in _tensors(ckpt[0]).items() if "alpha" in k}
    assert scores, sorted(_tensors(ckpt[0]))[:5]
    _assert_close(_tensors(ckpt[0]), _tensors(ckpt[1]))

    # each rank took half of every global batch; the halves were different images (else the weights differ)
    assert one_batches and all(r["batches"] == [b // WORLD for b in one_batches] for r in ranks)
    # the same model on both ranks (exactly) and as one process; the same numbers everywhere
    assert all(torch.equal(ranks[0]["model"][k], ranks[1]["model"][k]) for k in ranks[0]["model"])
    _assert_close(ranks[0]["model"], torch.load(tmp_path / "full" / "pruned.pt", weights_only=True))
    _assert_close(ranks[0]["model"], torch.load(tmp_path / "one-full" / "pruned.pt", weights_only=True))
    results = [json.loads(r["results"]) for r in ranks]
    assert _numbers(results[0]) == _numbers(results[1])
    assert results[0]["widths"] == one["widths"] and results[0]["pruning"]["prc"] == one["pruning"]["prc"]
    for got, want in zip(results[0]["history"], one["history"]):
        assert got.keys() == want.keys()
        for k, v in want.items():
            assert got[k] == pytest.approx(v, abs=1e-5), (got["phase"], k)
    assert results[0]["distributed"] == {"world_size": 2, "max_score_difference": 0.0,
                                         "max_weight_difference": 0.0}
    assert "distributed" not in one and "warnings" not in results[0]

    # only rank 0 wrote, and the group the runner made is gone
    assert not (tmp_path / "search-rank1").exists() and not (tmp_path / "full-rank1").exists()
    assert {p.name for p in (tmp_path / "full").iterdir()} == {"baseline.pt", "checkpoint.pt", "plan.json",
                                                               "pruned.pt", "results.json"}
    assert json.loads((tmp_path / "full" / "results.json").read_text())["history"] == results[0]["history"]
    assert not any(r["group_left"] for r in ranks)


# ----------------------------------------------------------------------------------- a caller's group, resume
def _resume_worker(rank: int, port: int, tmp: str) -> None:
    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        base = Path(tmp)
        settings = {"pretrain_epochs": 0, "search_epochs": 2, "finetune_epochs": 1}
        SEEN["batches"].clear()
        full = run(job(base / "full", **settings))
        full_model = _state(_job_model())
        # the passes of the run: 2 search epochs of S passes each, then 4 fine-tuning steps (64 images / 16)
        per_epoch = (len(SEEN["batches"]) - 4) // 2
        SEEN["batches"].clear()
        SEEN["crash_at"] = per_epoch + per_epoch // 2 + 1  # in the middle of the second search epoch
        part = job(base / "part", **settings)
        try:
            run(part)
        except Crash:
            crashed = True
        else:
            crashed = False
        SEEN["crash_at"] = None
        saved = torch.load(base / "part" / "checkpoint.pt", weights_only=True)
        resumed = run(replace(part, resume=True))
        torch.save({"full": json.dumps(full), "resumed": json.dumps(resumed), "full_model": full_model,
                    "resumed_model": _state(_job_model()), "crashed": crashed,
                    "saved_at": (saved["phase"], int(saved["epoch"])), "group_left": dist.is_initialized()},
                   base / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.timeout(300)
def test_resumed_two_process_run_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    """A caller's process group (left alone by the runner); a crash mid-search, resumed on every rank from
    rank 0's checkpoint, ends exactly where the uninterrupted run does."""
    mp.spawn(_resume_worker, args=(free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    for r in range(WORLD):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert got["crashed"] and got["saved_at"] == ("search", 1) and got["group_left"]
        full, resumed = json.loads(got["full"]), json.loads(got["resumed"])
        assert _numbers(resumed) == _numbers(full)
        assert all(torch.equal(got["full_model"][k], got["resumed_model"][k]) for k in got["full_model"])
    a = torch.load(tmp_path / "full" / "pruned.pt", weights_only=True)
    b = torch.load(tmp_path / "part" / "pruned.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


# -------------------------------------------------------------------------------------- one-shot baselines
#: The baseline jobs of `test_one_shot_baselines_on_two_processes_match_one_process`: no pretraining, 2 epochs
#: of the baseline's training (plain SGD, for slimming with a strong ℓ1 term on the norm scales), 1 fine-tuning.
BASELINE_JOBS: dict[str, dict[str, Any]] = {
    "l1_norm": {"method": "l1_norm"},
    "random": {"method": "random", "seed": 3},
    "slimming": {"method": "slimming", "model_factory": tiny_norm, "sparsity": 0.02},
}


def baseline_job(out: Path, name: str, **kw: Any) -> PruneJob:
    return job(out, **{"pretrain_epochs": 0, "search_epochs": 2, "finetune_epochs": 1, **BASELINE_JOBS[name], **kw})


def _baseline_worker(rank: int, ports: list[int], tmp: str) -> None:
    torch.set_num_threads(1)
    base = Path(tmp)
    own = "" if rank == 0 else f"-rank{rank}"  # rank 1's folders must stay unwritten
    got: dict[str, Any] = {}
    for i, name in enumerate(BASELINE_JOBS):
        torchrun_env(rank, WORLD, ports[i])
        SEEN["batches"].clear()
        results = run(baseline_job(base / f"{name}{own}", name))
        got[name] = {"results": json.dumps(results), "model": _state(_job_model()),
                     "batches": list(SEEN["batches"])}
    # slimming interrupted in the middle of its second epoch (2 steps of 2 passes an epoch), then resumed on
    # every rank from rank 0's checkpoint (a folder both ranks see)
    torchrun_env(rank, WORLD, ports[3])
    SEEN["batches"].clear()
    SEEN["crash_at"] = 4 + 2 + 1
    part = baseline_job(base / "slimming-part", "slimming")
    try:
        run(part)
    except Crash:
        got["crashed"] = True
    SEEN["crash_at"] = None
    saved = torch.load(base / "slimming-part" / "checkpoint.pt", weights_only=True)
    got["saved_at"] = (saved["phase"], int(saved["epoch"]))
    torchrun_env(rank, WORLD, ports[4])
    got["resumed"] = json.dumps(run(replace(part, resume=True)))
    got["resumed_model"] = _state(_job_model())
    # ranks given different seeds: refused on every rank before the pruner is built (no rank hangs)
    torchrun_env(rank, WORLD, ports[5])
    try:
        run(baseline_job(base / f"seeds{own}", "random", seed=rank))
    except RuntimeError as exc:
        got["seed_error"] = str(exc)
    got["group_left"] = dist.is_initialized()
    torch.save(got, base / f"rank{rank}.pt")


@pytest.mark.timeout(300)
def test_one_shot_baselines_on_two_processes_match_one_process(tmp_path: Path) -> None:
    """l1_norm, random and slimming under torchrun: DDP training (each rank half of every batch), the same
    kept channels, weights and numbers on both ranks and as one process; rank 0 writes; resumable."""
    mp.spawn(_baseline_worker, args=([free_port() for _ in range(6)], str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for name in BASELINE_JOBS:
        SEEN["batches"].clear()
        one = run(baseline_job(tmp_path / f"one-{name}", name))
        one_model, one_batches = _state(_job_model()), list(SEEN["batches"])
        two = [json.loads(r[name]["results"]) for r in ranks]
        # DDP: each rank trained on half of every global batch (2 passes a baseline step, 4 steps, then 4 of
        # fine-tuning), and still ended with the weights of one process on the whole batches
        assert one_batches == [16] * 12 and all(r[name]["batches"] == [8] * 12 for r in ranks), name
        assert all(torch.equal(ranks[0][name]["model"][k], ranks[1][name]["model"][k]) for k in one_model)
        _assert_close(ranks[0][name]["model"], one_model)
        _assert_close(ranks[0][name]["model"], torch.load(tmp_path / name / "pruned.pt", weights_only=True))
        # the same kept channels, numbers on both ranks, and as one process within float tolerance
        kept = json.loads((tmp_path / name / "plan.json").read_text())["groups"]
        assert kept == json.loads((tmp_path / f"one-{name}" / "plan.json").read_text())["groups"], name
        assert two[0]["widths"] == one["widths"] and two[0]["pruning"]["prc"] == one["pruning"]["prc"]
        assert 0 < one["pruning"]["prc"] < 1 and one["pruning"]["method"] == name
        assert _numbers(two[0]) == _numbers(two[1])
        assert len(two[0]["history"]) == len(one["history"]) == 3
        for got, want in zip(two[0]["history"], one["history"]):
            assert got.keys() == want.keys()
            for k, v in want.items():
                assert got[k] == pytest.approx(v, abs=1e-5), (name, got["phase"], k)
        for stage in ("before", "after_search", "after_prune", "after_finetune"):
            assert two[0][stage]["test_acc"] == pytest.approx(one[stage]["test_acc"], abs=1e-9), (name, stage)
        assert two[0]["distributed"] == {"world_size": 2, "max_score_difference": 0.0,
                                         "max_weight_difference": 0.0}
        assert not (tmp_path / f"{name}-rank1").exists()
        assert {p.name for p in (tmp_path / name).iterdir()} == {"baseline.pt", "checkpoint.pt", "plan.json",
                                                                 "pruned.pt", "results.json"}
    # Network Slimming's ℓ1 term acted (the scales of the kept channels shrank from 1, the same on both ranks)
    gammas = torch.cat([ranks[0]["slimming"]["model"][f"norm{i}.weight"] for i in (1, 2)])
    assert gammas.max() < 0.999
    # resumed from rank 0's checkpoint after epoch 1: as the uninterrupted run, on both ranks
    for r in ranks:
        assert r["crashed"] and r["saved_at"] == ("search", 1) and not r["group_left"]
        assert _numbers(json.loads(r["resumed"])) == _numbers(json.loads(r["slimming"]["results"]))
        assert all(torch.equal(r["resumed_model"][k], r["slimming"]["model"][k]) for k in r["resumed_model"])
        assert "different seeds (this rank: seed=" in r["seed_error"]
    assert "seed=0)" in ranks[0]["seed_error"] and "seed=1)" in ranks[1]["seed_error"]


# ----------------------------------------------------------------------------------------- settings, sharding
_REFUSED = """
import sys
from rartsprune.app.cli import main
from rartsprune.app.pipeline import PruneJob, run
try:
    run(PruneJob(data="fake", batch_size=15, out=sys.argv[1]))
except ValueError as exc:
    print("run:", exc)
try:
    main(["prune", "--data", "fake", "--batch-size", "15", "--out", sys.argv[2]])
except SystemExit as exc:
    print("cli:", exc.code)
"""


def test_settings_the_ranks_cannot_run_are_refused_before_any_work(tmp_path: Path) -> None:
    check_launch(job(tmp_path / "a", batch_size=30), world=1)  # one process takes any batch
    with pytest.raises(ValueError, match=r"batch_size=30 must be a multiple of the 4 processes"):
        check_launch(job(tmp_path / "a", batch_size=30), world=4)
    for method in ("l1_norm", "random", "slimming"):  # the one-shot baselines run data-parallel too
        check_launch(job(tmp_path / "a", method=method), world=2)
        check_launch(job(tmp_path / "a", method=method, batch_size=20, search_split="swap"), world=2)
    # a baseline with "swap" steps on half batches (9 images here), which 2 processes cannot split
    check_launch(job(tmp_path / "a", batch_size=18, search_split="swap"), world=2)  # a search: whole batches
    with pytest.raises(ValueError, match=r"batch_size=18: method='random' .* batches of 9 images.* multiple of 4"):
        check_launch(job(tmp_path / "a", method="random", batch_size=18, search_split="swap"), world=2)
    # rank 1 of 2 as torchrun starts it, alone: the error must come before the process group (which would wait
    # for rank 0 forever, hence a process of its own with a time limit), the data and the model
    env = {**os.environ, **dict(zip(TORCHRUN_ENV, ("1", str(WORLD), "1", "127.0.0.1", str(free_port())))),
           "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _REFUSED, str(tmp_path / "run"), str(tmp_path / "cli")],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "run: batch_size=15 must be a multiple of the 2 processes" in proc.stdout
    assert "cli: 2" in proc.stdout and "batch_size=15 must be a multiple of the 2 processes" in proc.stderr
    assert not (tmp_path / "run").exists() and not (tmp_path / "cli").exists()


def test_launch_ranks_and_devices() -> None:
    assert launch_ranks({}) == Ranks() and not Ranks().distributed and Ranks().shard is None
    ranks = launch_ranks({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert ranks.launched and ranks.shard == (1, 2) and not ranks.main
    assert not launch_ranks({"RANK": "0", "WORLD_SIZE": "1"}).launched  # torchrun with one process: no group
    with pytest.raises(ValueError, match="out of range"):
        launch_ranks({"RANK": "2", "WORLD_SIZE": "2"})
    assert rank_device(torch.device("cuda"), ranks) == torch.device("cuda", 1)
    assert rank_device(torch.device("cuda", 3), ranks) == torch.device("cuda", 3)


def test_sharded_batches_are_the_global_batch_augmented_as_in_one_process() -> None:
    train = load_dataset("fake", subset=64)
    augment = default_augment(train, train=True, cutout=True)
    whole = list(make_loader(train, 16, seed=3))
    parts = [list(make_loader(train, 16, seed=3, num_replicas=WORLD, rank=r)) for r in range(WORLD)]
    assert all(len(p) == len(whole) == 4 for p in parts)
    for i, (images, labels) in enumerate(whole):
        assert torch.equal(torch.cat([p[i][0] for p in parts]), images)
        assert torch.equal(torch.cat([p[i][1] for p in parts]), labels)
        torch.manual_seed(i)  # every rank draws from the same random state, as one process would
        x, _ = to_device_batch((images, labels), "cpu", augment)
        for r in range(WORLD):
            torch.manual_seed(i)
            x_r, _ = to_device_batch(parts[r][i], "cpu", augment, shard=(r, WORLD))
            assert torch.equal(x_r, x[8 * r:8 * (r + 1)])
    with pytest.raises(ValueError, match="divisible by 2"):
        make_loader(train, 15, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="drop_last=True"):
        make_loader(train, 16, train=False, num_replicas=2, rank=0)
    with pytest.raises(ValueError, match="rank must be in"):
        BatchShard([[0, 1]], 2, 2)


# ------------------------------------------------------------------------------- several groups, real torchrun
_GROUPS_SCRIPT = """
import sys
import torch
from rartsprune.app.launch import launch_ranks, process_group
from rartsprune.optim import distributed as ddp

for job in range(3):  # as a recipe runs one job after another, each with a group of its own
    with process_group(torch.device("cpu"), launch_ranks()) as ranks:
        total = torch.tensor([float(ranks.rank + 1) * (job + 1)])
        ddp.all_reduce_mean_([total])
        print(f"job {job} rank {ranks.rank} of {ranks.world}: {total.item()}", flush=True)
"""


@pytest.mark.timeout(300)
def test_torchrun_process_after_process_group(tmp_path: Path) -> None:
    """Under torchrun (its agent's store outlives the groups) a process can make a group, destroy it and make
    the next one: what a recipe's successive jobs do."""
    script = tmp_path / "groups.py"
    script.write_text(_GROUPS_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(WORLD),
                           "--master_port", str(free_port()), str(script)],
                          capture_output=True, text=True, cwd=ROOT, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the ranks share stdout: their lines can interleave without a newline between them
    lines = sorted(re.findall(r"job \d+ rank \d+ of \d+: [\d.]+?(?=job|\s|$)", proc.stdout))
    assert lines == [f"job {j} rank {r} of 2: {1.5 * (j + 1)}" for j in range(3) for r in range(WORLD)]


# ------------------------------------------------------------------------------------------- the command line
@pytest.mark.slow
def test_torchrun_command_line(tmp_path: Path) -> None:
    """``torchrun --nproc_per_node 2 -m rartsprune prune ...``: one summary, rank 0's files."""
    factory = tmp_path / "tiny_model.py"
    factory.write_text("import torch.nn as nn\n\n\ndef tiny(num_classes=10):\n"
                       "    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), "
                       "nn.Conv2d(8, 12, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), "
                       "nn.Linear(12, num_classes))\n")
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    flags = ["--model", f"{factory}:tiny", "--data", "fake", "--train-subset", "64", "--test-subset", "30",
             "--batch-size", "16", "--pretrain-epochs", "1", "--search-epochs", "1", "--finetune-epochs", "1",
             "--ratio", "0.3", "--device", "cpu", "--no-progress", "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--master_port", str(free_port()), "-m", "rartsprune", "prune", *flags],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count('"prc"') == 1  # the summary, printed by rank 0 only
    results = json.loads((out / "results.json").read_text())
    assert results["distributed"]["world_size"] == 2
    assert results["summary"]["prc"] == pytest.approx(0.3, abs=0.05)
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "plan.json", "pruned.pt", "results.json"}
