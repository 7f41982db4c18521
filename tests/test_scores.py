"""Channel scores: placement, exactness, bookkeeping, and bad input."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torchvision
from torch.nn.utils import parametrize

import rartsprune
from rartsprune.check import perturb_parameters
from rartsprune.errors import RartsPruneError, UnsupportedModelError


def resnet18() -> nn.Module:
    return perturb_parameters(torchvision.models.resnet18(num_classes=10))


X32 = torch.randn(2, 3, 32, 32)


class PlainCNN(nn.Module):
    """conv -> relu -> conv (no BatchNorm anywhere) -> pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        return self.fc(x.mean((2, 3)))


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_identity_with_scores_at_one_and_model_state_kept() -> None:
    model = resnet18().train()
    model.layer2.eval()  # mixed modes must survive
    with torch.no_grad():
        ref_train = copy.deepcopy(model)(X32)
    before_keys = set(model.state_dict())
    handle = rartsprune.attach_scores(model, X32[:1])
    assert model.training and not model.layer2.training and model.layer1.training
    with torch.no_grad():
        out = model(X32)
    assert (out - ref_train).abs().max().item() <= 1e-6
    assert rartsprune.has_scores(model)
    with pytest.warns(DeprecationWarning, match="use rartsprune.has_scores"):
        assert rartsprune.is_pruned(model)  # the old name, one release
    scores = handle.scores
    assert len(scores) == 12 and all(isinstance(a, nn.Parameter) and a.is_leaf for a in scores)
    assert all(torch.equal(a, torch.ones_like(a)) for a in scores)
    assert set(model.state_dict()) - before_keys  # the scores are saved with the model


def test_scores_sit_after_batchnorm_and_learn() -> None:
    model = resnet18().train()
    handle = rartsprune.attach_scores(model, X32[:1])
    stem = handle.group("conv1")
    assert [p[0] for p in stem.placements][0] == "bn1"  # conv1 -> bn1 -> alpha
    assert "conv1" not in [p[0] for p in stem.placements]
    loss = model(X32).square().mean()
    loss.backward()
    grads = [a.grad for a in handle.scores]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)  # BN does not cancel the scores


def test_zero_score_zeroes_channel_without_batchnorm() -> None:
    model = PlainCNN()
    handle = rartsprune.attach_scores(model, X32[:1])
    group = handle.group("conv1")
    assert [p[0] for p in group.placements] == ["conv1"]
    seen = {}
    model.conv1.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    with torch.no_grad():
        handle.score("conv1")[[1, 5]] = 0.0
        model(X32)
    assert seen["out"][:, [1, 5]].abs().max().item() == 0.0
    assert seen["out"][:, [0, 2]].abs().max().item() > 0.0


def test_remove_folds_scores_exactly() -> None:
    model = resnet18().eval()
    names_before = {n for n, _ in model.named_modules()}
    keys_before = set(model.state_dict())
    handle = rartsprune.attach_scores(model, X32[:1])
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for a in handle.scores:
            a.copy_(torch.rand(a.shape, generator=gen) + 0.25)
        scored = model(X32)
    params_before = {id(p) for p in model.parameters()}
    out = rartsprune.remove(model)
    assert out is model and not rartsprune.has_scores(model)
    with torch.no_grad():
        folded = model(X32)
    assert (folded - scored).abs().max().item() <= 1e-5
    assert {n for n, _ in model.named_modules()} == names_before
    assert set(model.state_dict()) == keys_before
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert type(model.bn1) is nn.BatchNorm2d
    assert {id(p) for p in model.parameters()} <= params_before  # same Parameter objects (optimizers stay valid)
    with pytest.raises(RartsPruneError, match="no rartsprune scores"):
        rartsprune.remove(model)


def test_deepcopy_state_dict_and_train_eval_roundtrip() -> None:
    model = resnet18().eval()
    handle = rartsprune.attach_scores(model, X32[:1])
    with torch.no_grad():
        handle.scores[0].mul_(0.5)
    twin = copy.deepcopy(model)
    with torch.no_grad():
        assert torch.equal(model(X32), twin(X32))
        get = rartsprune.get_handle(twin)
        get.scores[0].zero_()  # the copy owns its scores
        assert handle.scores[0].abs().sum() > 0
    state = copy.deepcopy(model.state_dict())
    other = resnet18().eval()
    rartsprune.attach_scores(other, X32[:1])
    other.load_state_dict(state)
    with torch.no_grad():
        assert torch.equal(model(X32), other(X32))
    model.train()
    assert all(m.training for m in model.modules())
    model.eval()
    assert not any(m.training for m in model.modules())
    # removing from the copy must not break the original (shared parametrized classes)
    rartsprune.remove(twin)
    with torch.no_grad():
        model(X32)


def test_frozen_model_traced_and_flags_restored() -> None:
    model = resnet18()
    for p in model.parameters():
        p.requires_grad_(False)
    handle = rartsprune.attach_scores(model, X32[:1])
    assert len(handle.groups) == 12
    assert all(a.requires_grad for a in handle.scores)
    originals = [p for n, p in model.named_parameters() if not n.startswith("rartsprune_alpha_")]
    assert not any(p.requires_grad for p in originals)


def test_classifier_protected_and_ignored_layers() -> None:
    model = resnet18()
    handle = rartsprune.attach_scores(model, X32[:1], ignored_layers=["layer1", model.layer4[1].conv1])
    fc = handle.group("fc")
    assert fc.status == "protected"
    statuses = {g.name: g.status for g in handle.all_groups}
    assert statuses["layer1.0.conv1"] == "ignored" and statuses["layer1.1.conv1"] == "ignored"
    assert statuses["layer4.1.conv1"] == "ignored"
    assert statuses["conv1"] == "ignored"  # the stem's channels include layer1's residual outputs
    assert statuses["layer2.0.conv1"] == "scored"
    with pytest.raises(ValueError, match="no module named 'nope'"):
        rartsprune.attach_scores(resnet18(), X32[:1], ignored_layers=["nope"])
    with pytest.raises(TypeError, match="list of modules"):
        rartsprune.attach_scores(resnet18(), X32[:1], ignored_layers="layer1")


def test_hook_backend_matches_param_backend() -> None:
    # float64: train-mode BN of a random deep net amplifies float32 rounding to ~1e-3 in the gradients
    x = torch.randn(8, 3, 64, 64, dtype=torch.float64)
    a = resnet18().double().train()
    b = copy.deepcopy(a)
    ha = rartsprune.attach_scores(a, x[:1], backend="param")
    hb = rartsprune.attach_scores(b, x[:1], backend="hook")
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for sa, sb in zip(ha.scores, hb.scores):
            v = torch.rand(sa.shape, generator=gen, dtype=torch.float64)
            sa.copy_(v)
            sb.copy_(v)
    a(x).sum().backward()
    b(x).sum().backward()
    for sa, sb in zip(ha.scores, hb.scores):
        assert (sa.grad - sb.grad).abs().max() <= 1e-6 * sa.grad.abs().max()
    a.eval()
    b.eval()
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-9, atol=1e-10)
    rartsprune.remove(b)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-9, atol=1e-10)
    assert not any(len(m._forward_hooks) for m in b.modules())


def test_grouped_conv_units_and_depthwise() -> None:
    model = nn.Sequential(
        nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=4), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 8, 1), nn.Flatten(), nn.LazyLinear(3),
    )
    model(X32)
    perturb_parameters(model)
    handle = rartsprune.attach_scores(model, X32[:1])
    first = handle.group("0")
    assert first.num_units == 4  # consumed by a 4-group conv: channel j of every group goes together
    assert first.channels_of_units([0]) == [0, 4, 8, 12]
    keep = {g.name: [0, 1] if g.num_units == 4 else list(range(g.num_units // 2)) for g in handle.groups}
    rartsprune.apply_surgery(model, keep)
    assert model[3].in_channels == 8 and model[3].out_channels % model[3].groups == 0
    assert model(X32).shape == (2, 3)


@pytest.mark.parametrize(
    "model, x",
    [
        (nn.Sequential(nn.Linear(6, 12), nn.GELU(), nn.Linear(12, 9), nn.ReLU(), nn.Linear(9, 2)), torch.randn(4, 6)),
        (nn.Sequential(nn.Conv1d(2, 8, 3), nn.BatchNorm1d(8), nn.ReLU(), nn.Conv1d(8, 4, 3)), torch.randn(2, 2, 16)),
        (nn.Sequential(nn.Conv3d(1, 6, 3), nn.ReLU(), nn.Conv3d(6, 2, 1)), torch.randn(1, 1, 6, 6, 6)),
        (nn.Sequential(nn.Conv2d(3, 6, 3), nn.ReLU(), nn.ConvTranspose2d(6, 5, 2, stride=2), nn.ReLU(), nn.Conv2d(5, 2, 1)), X32[:1]),
    ],
    ids=["mlp", "conv1d", "conv3d", "conv_transpose"],
)
def test_layer_kinds_prune_exactly(model: nn.Module, x: torch.Tensor) -> None:
    from rartsprune.check import check_model

    result = check_model(perturb_parameters(model), x, ratio=0.5)
    assert result.ok, result.reason
    assert result.scored_groups >= 1 and result.removed_channels >= 1
    assert result.pruned_diff <= 1e-5 * max(1.0, result.output_scale)


def test_leaky_activation_left_unscored() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Sigmoid(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Conv2d(8, 2, 1))
    handle = rartsprune.attach_scores(model, X32[:1])
    statuses = {g.name: (g.status, g.reason) for g in handle.all_groups}
    assert statuses["0"][0] == "inexact" and "reach 2" in statuses["0"][1]  # sigmoid(0) = 0.5
    assert statuses["2"][0] == "scored"


def test_layernorm_groups_need_opt_in() -> None:
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc1, self.norm, self.fc2, self.head = nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 8), nn.Linear(8, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.relu(self.fc2(self.norm(self.fc1(x)))))

    x = torch.randn(3, 4)
    handle = rartsprune.attach_scores(Block(), x)
    assert handle.group("fc1").status == "inexact" and "allow_inexact" in handle.group("fc1").reason
    assert handle.group("fc2").status == "scored"
    approx = rartsprune.attach_scores(Block(), x, allow_inexact=True)
    assert approx.group("fc1").status == "scored"


def test_timm_vit_scores_mlp_and_leaves_attention_alone() -> None:
    timm = pytest.importorskip("timm")
    from rartsprune.check import check_model

    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=5)
    x = torch.randn(2, 3, 32, 32)
    handle = rartsprune.attach_scores(copy.deepcopy(model), x)
    statuses = {g.name: g.status for g in handle.all_groups}
    assert statuses["blocks.0.mlp.fc1"] == "scored"
    assert statuses["blocks.0.attn.qkv"] == "attention"
    result = check_model(perturb_parameters(model), x)
    assert result.ok, result.reason


def test_bad_inputs_leave_model_untouched(monkeypatch: pytest.MonkeyPatch) -> None:
    model = resnet18()
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="example_inputs do not fit"):
        rartsprune.attach_scores(model, torch.randn(1, 5, 32, 32))
    with pytest.raises(ValueError, match="example_inputs is required"):
        rartsprune.attach_scores(model, None)
    with pytest.raises(TypeError, match="nn.Module"):
        rartsprune.attach_scores("resnet", X32)
    with pytest.raises(ValueError, match="backend"):
        rartsprune.attach_scores(model, X32, backend="magic")
    with pytest.raises(UnsupportedModelError, match="no prunable channel group"):
        rartsprune.attach_scores(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 4)), X32)
    meta = torchvision.models.resnet18(num_classes=10).to("meta")
    with pytest.raises(UnsupportedModelError, match="meta device"):
        rartsprune.attach_scores(meta, X32)

    import rartsprune.attach as attach_mod

    def boom(*args: object, **kwargs: object) -> None:
        raise RuntimeError("injected failure")

    monkeypatch.setattr(attach_mod, "_probe_exactness", boom)
    with pytest.raises(RuntimeError, match="injected failure"):
        rartsprune.attach_scores(model, X32[:1])
    assert not rartsprune.has_scores(model)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert _state_equal(model.state_dict(), state)
    monkeypatch.undo()
    rartsprune.attach_scores(model, X32[:1])
    with pytest.raises(RartsPruneError, match="already has scores"):
        rartsprune.attach_scores(model, X32[:1])


class _TrainOnlyAux(nn.Module):
    """A stem, a head, and an auxiliary head that runs only in training mode and needs >= 5x5 features."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.aux = nn.Conv2d(8, 4, 5)
        self.head = nn.Linear(8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.stem(x)
        out = self.head(f.mean((2, 3)))
        if self.training:
            out = out + self.aux(f).mean()
        return out


def test_eval_fallback_trace_warns_about_layers_it_did_not_see() -> None:
    model = _TrainOnlyAux()
    with pytest.warns(UserWarning, match=r"traced in eval mode.*not seen: aux"):
        rartsprune.attach_scores(copy.deepcopy(model), torch.randn(2, 3, 4, 4))  # aux needs 5x5: fails in training
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        handle = rartsprune.attach_scores(model, torch.randn(2, 3, 8, 8))  # big enough: traced in training mode
    assert model.training and len(handle.groups) == 1
