"""Width search end to end: prune() in a loop, ratio and ℓ1 modes, baselines, resume, remove."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn

import rartsprune
from rartsprune.width import ALL_METHODS


class TinyResNet(nn.Module):
    """conv-BN-ReLU stem, one residual block, a plain conv without BN, a linear head."""

    def __init__(self, width: int = 16, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.plain = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        x = torch.relu(self.plain(x))
        return self.head(x.mean((2, 3)))


def toy_data(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A learnable task: the class is which quadrant of the image is brightest."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=gen) * 0.3
    y = torch.randint(0, 4, (n,), generator=gen)
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, :, r * 8 : r * 8 + 8, c * 8 : c * 8 + 8] += 1.0
    return x, y


X, Y = toy_data()
EXAMPLE = X[:1]


def batches(steps: int, bs: int = 16, seed: int = 0) -> list[tuple[tuple, tuple]]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(steps):
        i = torch.randint(0, len(X), (2 * bs,), generator=gen)
        out.append(((X[i[:bs]], Y[i[:bs]]), (X[i[bs:]], Y[i[bs:]])))
    return out


def new_model(seed: int = 0) -> TinyResNet:
    torch.manual_seed(seed)
    return TinyResNet()


def test_rarts_loop_lowers_loss_and_finalize_hits_the_ratio() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, ratio=0.4, example_inputs=EXAMPLE, weight_lr=0.05, arch_lr=0.01)
    assert rartsprune.has_scores(model)
    data = batches(30)
    first = [pruner.step(bt, bv) for bt, bv in data[:5]]
    last = [pruner.step(bt, bv) for bt, bv in data[5:]][-5:]
    mean = lambda rows, k: sum(r[k] for r in rows) / len(rows)  # noqa: E731
    assert mean(last, "loss_v") < mean(first, "loss_v")
    assert all("dist" in r for r in last)
    scores_before = [a.detach().clone() for a in pruner.handle.scores]
    assert any(not torch.allclose(a, torch.ones_like(a)) for a in scores_before)  # the scores learned
    groups = {g.name: g for g in pruner.handle.groups}
    out = pruner.finalize()
    assert out is model and not rartsprune.has_scores(model)
    res = pruner.result
    # achieved PRC equals the request within one channel per group
    assert abs(res["prc"] * res["prunable_channels"] - 0.4 * res["prunable_channels"]) <= len(groups)
    assert model.head.out_features == 4  # head protected
    modules = dict(model.named_modules())
    for name, w in res["widths"].items():
        root = modules[name]
        assert getattr(root, "out_channels", getattr(root, "out_features", None)) == w["kept"] >= 1
    assert sum(w["kept"] < w["channels"] for w in res["widths"].values()) >= 2
    assert model(X[:2]).shape == (2, 4)
    assert not any(n.startswith("rartsprune") for n, _ in model.named_parameters())
    with pytest.raises(rartsprune.SearchError, match="after finalize"):
        pruner.step(*data[0])
    with pytest.raises(rartsprune.SearchError, match="after finalize"):
        pruner.finalize()


def test_kept_scores_reset_keeps_the_searched_weights_scale() -> None:
    """prune(kept_scores="reset"): the same selection as the default fold, and the kept channels' BatchNorm
    affine parameters are the searched ones without the scores (the fold multiplies them by α)."""
    pruned = {}
    for kept_scores in ("fold", "reset"):
        model = new_model()
        pruner = rartsprune.prune(model, ratio=0.4, example_inputs=EXAMPLE, weight_lr=0.05, kept_scores=kept_scores)
        for bt, bv in batches(6):
            pruner.step(bt, bv)
        bn = model.bn1.parametrizations
        gamma, beta = bn.weight.original.detach().clone(), bn.bias.original.detach().clone()
        alpha = pruner.handle.score("conv1").detach().clone()
        keep = pruner.selection().keep["conv1"]
        pruner.finalize()
        assert pruner.result["kept_scores"] == kept_scores
        scale = alpha[keep] if kept_scores == "fold" else torch.ones(len(keep))
        assert torch.allclose(model.bn1.weight, gamma[keep] * scale) and torch.allclose(model.bn1.bias, beta[keep] * scale)
        pruned[kept_scores] = (pruner.result["widths"], keep, alpha[keep])
    assert pruned["fold"][:2] == pruned["reset"][:2]  # the selection does not depend on it
    assert not torch.allclose(pruned["fold"][2], torch.ones_like(pruned["fold"][2]))  # the scores moved from 1


def test_global_ranking_follows_the_scores() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, ratio=0.125, example_inputs=EXAMPLE, method="darts1")  # 8 of 64 channels
    handle = pruner.handle
    assert sum(g.channels for g in handle.groups) == 64
    with torch.no_grad():
        for a in handle.scores:
            a.fill_(1.0)
        handle.score("conv1")[:8] = 0.1  # the 8 weakest channels of the model
    sel = pruner.selection()
    assert sel.keep["conv1"] == list(range(8, 16))
    assert all(len(v) == handle.group(n).num_units for n, v in sel.keep.items() if n != "conv1")
    assert sel.prc == 0.125
    layer = rartsprune.prune(new_model(), ratio=0.25, example_inputs=EXAMPLE, scope="layer").selection()
    assert all(k == round(0.75 * c) for k, c in layer.channels.values())


def test_l1_mode_learns_the_ratio() -> None:
    model = new_model()
    pruner = rartsprune.prune(
        model, mode="l1", l1=0.5, prox=True, threshold=0.0, example_inputs=EXAMPLE, arch_lr=0.05,
        arch_optimizer=lambda p: torch.optim.SGD(p, lr=0.05),
    )
    for bt, bv in batches(40):
        pruner.step(bt, bv)
    zeros = sum(int((a == 0).sum()) for a in pruner.handle.scores)
    assert zeros > 0  # the proximal step made exact zeros
    preview = pruner.selection()
    pruner.finalize()
    assert pruner.result["prc"] == pytest.approx(preview.prc)
    assert pruner.result["removed_channels"] >= min(zeros, 1)
    assert pruner.result["requested_ratio"] is None


@pytest.mark.parametrize("method", ["darts2", "milenas", "l1_norm", "random", "slimming"])
def test_every_method_runs_through_the_same_entry_point(method: str) -> None:
    model = new_model()
    pruner = rartsprune.prune(model, ratio=0.5, method=method, example_inputs=EXAMPLE)
    for bt, bv in batches(2):
        stats = pruner.step(bt, bv)
        assert stats["loss_t"] > 0
    pruner.finalize()
    assert abs(pruner.result["prc"] - 0.5) < 0.05
    assert model(X[:2]).shape == (2, 4)


def test_width_cost_penalty_prefers_expensive_channels() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, ratio=0.3, example_inputs=EXAMPLE, cost_weight=1.0, method="darts1", l1=0.0)
    penalty = pruner.search.arch_penalty
    assert penalty is not None
    value = float(penalty().detach())
    assert 0.0 < value <= 2.0  # at alpha = 1: marginal MACs of the scored channels over the model's MACs
    costs = {g.name: c for g, c in zip(pruner.handle.groups, penalty.costs)}
    assert costs["plain"].mean() < costs["conv1"].mean()  # stride-2 output map: cheaper per channel
    # ratio mode's default ℓ1 pressure adds DEFAULTS["ratio"]["l1"] * (number of scores) at alpha = 1
    default = rartsprune.prune(new_model(), ratio=0.3, example_inputs=EXAMPLE, cost_weight=1.0, method="darts1")
    units = sum(a.numel() for a in default.handle.scores)
    l1 = rartsprune.width.DEFAULTS["ratio"]["l1"]
    assert float(default.search.arch_penalty().detach()) == pytest.approx(value + l1 * units, rel=1e-5)


def test_resume_is_exact(tmp_path) -> None:
    data = batches(6)
    base = new_model()
    model_a = copy.deepcopy(base)
    a = rartsprune.prune(model_a, ratio=0.4, example_inputs=EXAMPLE)
    for bt, bv in data[:3]:
        a.step(bt, bv)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    for bt, bv in data[3:]:
        a.step(bt, bv)

    model_b = copy.deepcopy(base)
    b = rartsprune.prune(model_b, ratio=0.4, example_inputs=EXAMPLE)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for bt, bv in data[3:]:
        b.step(bt, bv)
    for sa, sb in zip(a.handle.scores, b.handle.scores):
        assert torch.equal(sa, sb)
    for (na, pa), (nb, pb) in zip(model_a.state_dict().items(), model_b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)
    other = rartsprune.prune(new_model(), ratio=0.4, example_inputs=EXAMPLE, method="darts1")
    buf.seek(0)
    with pytest.raises(ValueError, match="method"):
        other.load_state_dict(torch.load(buf, weights_only=True))


def test_remove_during_search_and_plan_preview() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, ratio=0.4, example_inputs=EXAMPLE)
    preview = pruner.plan()
    assert abs(preview.pruned_fraction() - 0.4) < 0.05
    assert rartsprune.has_scores(model)
    rartsprune.remove(model)
    assert not rartsprune.has_scores(model)
    with pytest.raises(rartsprune.SearchError, match="scores were removed"):
        pruner.step(*batches(1)[0])
    assert model(X[:2]).shape == (2, 4)
    pruner2 = rartsprune.prune(model, ratio=0.4, example_inputs=EXAMPLE)  # can start again
    assert pruner2.num_steps == 0


def test_all_methods_listed() -> None:
    assert set(ALL_METHODS) == {"rarts", "darts1", "darts2", "milenas", "l1_norm", "random", "slimming"}


def test_bf16_autocast_and_channels_last_on_cpu() -> None:
    model = new_model().to(memory_format=torch.channels_last)
    pruner = rartsprune.prune(model, ratio=0.3, example_inputs=EXAMPLE, amp_dtype=torch.bfloat16)
    for bt, bv in batches(2):
        bt = (bt[0].contiguous(memory_format=torch.channels_last), bt[1])
        stats = pruner.step(bt, bv)
        assert stats["loss_t"] > 0 and stats["loss_v"] > 0
    assert all(a.dtype == torch.float32 for a in pruner.handle.scores)  # scores stay in full precision
    pruner.finalize()
    assert model(X[:2]).shape == (2, 4)


def test_alpha_gamma_is_the_ratio_default_and_invariant_to_the_alpha_gamma_trade() -> None:
    model = new_model()
    pruner = rartsprune.prune(model, ratio=0.25, example_inputs=EXAMPLE)
    assert pruner.config["importance"] == "alpha_gamma"
    assert rartsprune.prune(new_model(), mode="l1", example_inputs=EXAMPLE).config["importance"] == "alpha"
    handle = pruner.handle
    from rartsprune.width.selection import unit_importance

    def raw(bn: nn.Module, name: str = "weight") -> torch.Tensor:  # the BN parameter under the score
        return bn.parametrizations[name].original

    with torch.no_grad():
        raw(model.bn1).copy_(torch.linspace(0.5, 2.0, 16))
        raw(model.stem[1]).fill_(1.5)
        raw(model.bn2).fill_(1.5)
    imp = unit_importance(handle, "alpha_gamma")
    torch.testing.assert_close(imp["conv1"], torch.linspace(0.5, 2.0, 16))
    # the plain conv has no BatchNorm: its |α| is scaled by the median |γ| of the model's BN units
    gammas = torch.cat([torch.linspace(0.5, 2.0, 16), torch.full((16,), 1.5)])
    torch.testing.assert_close(imp["plain"], torch.full((32,), float(gammas.median())))
    # α and γ are one degree of freedom where the score follows the BN: the output and the ranking stay put
    model.eval()
    before_out, before_imp = model(X[:4]), imp["conv1"].clone()
    with torch.no_grad():
        alpha = handle.score("conv1")
        alpha.mul_(torch.linspace(0.2, 3.0, 16))
        raw(model.bn1).div_(torch.linspace(0.2, 3.0, 16))
        raw(model.bn1, "bias").div_(torch.linspace(0.2, 3.0, 16))
    torch.testing.assert_close(model(X[:4]), before_out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(unit_importance(handle, "alpha_gamma")["conv1"], before_imp)
    assert not torch.allclose(unit_importance(handle, "alpha")["conv1"], torch.ones(16))
    rartsprune.remove(model)
