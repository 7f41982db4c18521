"""Checkpoints: an interrupted search resumes bit-identically on CPU (through torch.save / weights_only load)."""

from __future__ import annotations

import io

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rartsprune.optim import METHODS, get_rng_state, make_search_optimizer, set_rng_state


class DropNet(nn.Module):
    """Channel-gated conv net with BatchNorm and dropout (so buffers and the RNG matter)."""

    def __init__(self) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(6))
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.drop = nn.Dropout(0.3)
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        h = F.relu(self.bn(self.conv(x))) * torch.sigmoid(self.alpha).view(1, -1, 1, 1)
        return self.fc(self.drop(h.mean((2, 3))))


def make_batches(n_steps):
    g = torch.Generator().manual_seed(123)
    def one():
        return torch.randn(8, 3, 6, 6, generator=g), torch.randint(0, 4, (8,), generator=g)
    return [(one(), one()) for _ in range(n_steps)]


def build(method, init_seed, **extra):
    torch.manual_seed(init_seed)
    model = DropNet()
    kwargs = dict(
        weight_scheduler=lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=6),
        arch_scheduler=lambda o: torch.optim.lr_scheduler.StepLR(o, 2, gamma=0.5),
        aux_init="reinit", update="exact",
    )
    kwargs.update(extra)
    return make_search_optimizer(method, model, [model.alpha], **kwargs)


def assert_identical(a, b, path="state"):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), path
        for k in a:
            assert_identical(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{path}[{i}]")
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


CASES = [(m, {}) for m in METHODS] + [
    ("rarts", {"update": "fused"}),
    ("rarts", {"grad_scaler": "scaler"}),
]


@pytest.mark.parametrize("method,extra", CASES, ids=[f"{m}-{'-'.join(e) or 'default'}" for m, e in CASES])
def test_resume_is_bit_identical(method, extra):
    def make(seed):
        kw = dict(extra)
        if kw.get("grad_scaler") == "scaler":
            kw["grad_scaler"] = torch.amp.GradScaler("cpu", init_scale=2.0**8, growth_interval=2)
        return build(method, seed, **kw)

    n, cut = 6, 3
    data = make_batches(n)

    straight = make(0)
    torch.manual_seed(100)
    for bt, bv in data:
        straight.step(bt, bv)
        straight.step_schedulers()
    expected, expected_rng = straight.state_dict(), get_rng_state()

    first = make(0)
    torch.manual_seed(100)
    for bt, bv in data[:cut]:
        first.step(bt, bv)
        first.step_schedulers()
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    del first
    torch.manual_seed(999)
    torch.rand(17)  # the process RNG moves on; the checkpoint must bring it back

    resumed = make(1)  # a different initialisation, overwritten by the checkpoint
    buf.seek(0)
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    assert resumed.num_steps == cut
    for bt, bv in data[cut:]:
        resumed.step(bt, bv)
        resumed.step_schedulers()
    got = resumed.state_dict()
    expected.pop("rng")
    got.pop("rng")
    assert_identical(expected, got)
    assert torch.equal(get_rng_state()["cpu"], expected_rng["cpu"])
    assert resumed.num_steps == n


def test_dropout_really_uses_the_rng():
    """Guard against a vacuous resume test: without restoring the RNG the runs differ."""
    data = make_batches(2)
    outs = []
    for seed in (100, 101):
        opt = build("darts1", 0)
        torch.manual_seed(seed)
        for bt, bv in data:
            opt.step(bt, bv)
        outs.append(opt.model.fc.weight.detach().clone())
    assert not torch.equal(*outs)


def test_load_state_dict_rejects_mismatches():
    rarts = build("rarts", 0)
    state = rarts.state_dict()
    with pytest.raises(ValueError, match="method 'rarts'"):
        build("darts1", 0).load_state_dict(state)
    with pytest.raises(ValueError, match="scheduler"):
        build("rarts", 0, arch_scheduler=None).load_state_dict(state)
    with pytest.raises(ValueError, match="format"):
        rarts.load_state_dict({"method": "rarts"})
    darts2 = build("darts2", 0)
    with pytest.raises(ValueError, match="darts2"):
        build("darts1", 0).load_state_dict(darts2.state_dict())


def test_hyperparameters_come_from_the_checkpoint():
    a = build("rarts", 0, lam=3.0, beta=0.5)
    b = build("rarts", 0)
    b.load_state_dict(a.state_dict(), restore_rng=False)
    assert (b.lam, b.beta, b.update) == (3.0, 0.5, "exact")


def test_rng_state_roundtrip():
    state = get_rng_state()
    x = torch.rand(3)
    set_rng_state(state)
    assert torch.equal(x, torch.rand(3))
    with pytest.raises(ValueError, match="cpu"):
        set_rng_state({})
