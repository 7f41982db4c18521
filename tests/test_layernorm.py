"""Exact removal of channels normalised by a LayerNorm (``prune_layernorm=True``, rartsprune.layernorm)."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn as nn
from torchvision.models.vision_transformer import VisionTransformer

import rartsprune
from rartsprune.errors import UnsupportedModelError
from rartsprune.export import export_model
from rartsprune.layernorm import PrunedLayerNorm, is_exact_layernorm, sync_embed_width
from rartsprune.surgery import PruningPlan

timm = pytest.importorskip("timm")


def small_vit() -> VisionTransformer:
    """A two-layer torchvision ViT with a random (not zero) classifier, so every channel reaches the output."""
    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                              num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight)
    return model


def tiny_timm_vit() -> nn.Module:
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=10).eval()


def embed_group(handle: rartsprune.ScoreHandle) -> rartsprune.ChannelGroup:
    (group,) = [g for g in handle.groups if g.layernorms]
    return group


def random_scores_zero_half(handle: rartsprune.ScoreHandle, seed: int = 1) -> dict[str, list[int]]:
    """Scores in [0.5, 1.5), every other unit of every group zero; returns the kept units."""
    gen = torch.Generator().manual_seed(seed)
    keep = {}
    with torch.no_grad():
        for g, alpha in zip(handle.groups, handle.scores):
            alpha.copy_(torch.rand(g.num_units, generator=gen) + 0.5)
            alpha[1::2] = 0.0
            keep[g.name] = list(range(0, g.num_units, 2))
    return keep


# ---------------------------------------------------------------------------------------------- the module
def test_pruned_layernorm_keeps_the_statistics_of_the_full_width() -> None:
    full = nn.LayerNorm(12)
    with torch.no_grad():
        full.weight.uniform_(0.5, 1.5)
        full.bias.uniform_(-1, 1)
    x = torch.randn(3, 5, 12)
    kept = [0, 2, 3, 7, 11]
    x[..., [i for i in range(12) if i not in kept]] = 0.0
    pruned = PrunedLayerNorm.from_layernorm(full, kept=kept)
    assert pruned.normalized_shape == (5,) and pruned.full_width == 12 and "full_width=12" in repr(pruned)
    torch.testing.assert_close(pruned(x[..., kept]), full(x)[..., kept], atol=1e-6, rtol=1e-5)
    # with nothing removed it is the LayerNorm itself, and shares its parameters
    same = PrunedLayerNorm.from_layernorm(full)
    assert same.weight is full.weight
    torch.testing.assert_close(same(x), full(x), atol=1e-6, rtol=1e-5)
    # a plain nn.LayerNorm would not be exact: the statistics of the kept channels alone differ
    plain = nn.LayerNorm(5)
    with torch.no_grad():
        plain.weight.copy_(full.weight[kept])
        plain.bias.copy_(full.bias[kept])
    assert (plain(x[..., kept]) - full(x)[..., kept]).abs().max() > 1e-2
    assert PrunedLayerNorm.from_layernorm(pruned).full_width == 12  # narrowing again keeps the first width


def test_pruned_layernorm_refuses_what_it_cannot_stand_in_for() -> None:
    with pytest.raises(ValueError, match="full_width must be an int >= kept"):
        PrunedLayerNorm(8, 4)
    with pytest.raises(TypeError, match="nn.LayerNorm over one dimension"):
        PrunedLayerNorm.from_layernorm(nn.LayerNorm([4, 8]))
    with pytest.raises(TypeError, match="nn.LayerNorm over one dimension"):
        PrunedLayerNorm.from_layernorm(nn.LayerNorm(8, elementwise_affine=False))
    with pytest.raises(ValueError, match="non-empty subset"):
        PrunedLayerNorm.from_layernorm(nn.LayerNorm(8), kept=[8])
    assert is_exact_layernorm(nn.LayerNorm(8)) and is_exact_layernorm(timm.layers.LayerNorm(8))
    assert not is_exact_layernorm(timm.layers.LayerNorm2d(8))  # permutes channels first: another function


# ---------------------------------------------------------------------------------------------- surgery
def test_a_layernorm_normalised_mlp_width_is_removed_exactly() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.GELU(), nn.Linear(16, 4)).eval()
    x = torch.randn(6, 8)
    with pytest.raises(UnsupportedModelError, match=r"normalised across channels by 1 \(ln\).*prune_layernorm=True"):
        rartsprune.attach_scores(model, x)  # by default the only group is left alone, and the message says why
    assert not rartsprune.has_scores(model)
    handle = rartsprune.attach_scores(model, x, prune_layernorm=True)
    group = embed_group(handle)
    assert group.name == "0" and group.layernorms == ("1",)
    keep = random_scores_zero_half(handle)
    with torch.no_grad():
        scored = model(x)
    plan = rartsprune.apply_surgery(model, keep)
    assert plan.layernorms == {"1": 16} and isinstance(model[1], PrunedLayerNorm)
    assert model[0].out_features == model[1].normalized_shape[0] == model[3].in_features == 8
    torch.testing.assert_close(model(x), scored, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("build", [small_vit, tiny_timm_vit], ids=["torchvision", "timm"])
def test_vit_embedding_width_removed_exactly_with_heads_and_mlp(build, tmp_path) -> None:
    model = build()
    fresh = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        reference = model(x)
    handle = rartsprune.attach_scores(model, x, prune_heads=True, prune_layernorm=True)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference)  # every α = 1: the same function
    group = embed_group(handle)
    width = group.num_units
    # the stream is scored where it is written (patch embedding, class token, position embedding, output
    # projections) and where each LayerNorm reads it
    placed = {name for name, _, _ in group.placements}
    token = "class_token" if build is small_vit else "cls_token"
    assert token in placed and len(group.layernorms) == 5 and set(group.layernorms) <= placed
    assert sum(1 for g in handle.groups if g.attention) == 2  # the heads are scored too
    keep = random_scores_zero_half(handle)
    with torch.no_grad():
        scored = model(x)
    assert scored.abs().max() > 1e-3
    plan = rartsprune.apply_surgery(model, keep)
    assert set(plan.layernorms) == set(group.layernorms) and set(plan.layernorms.values()) == {width}
    with torch.no_grad():
        torch.testing.assert_close(model(x), scored, atol=1e-5, rtol=1e-5)
    norms = [m for m in model.modules() if isinstance(m, nn.LayerNorm)]
    assert len(norms) == 5 and all(isinstance(m, PrunedLayerNorm) and m.full_width == width for m in norms)
    if build is small_vit:
        assert model.hidden_dim == model.conv_proj.out_channels == width // 2
        assert model.class_token.shape[-1] == model.encoder.pos_embedding.shape[-1] == width // 2
    else:
        assert model.embed_dim == model.num_features == model.patch_embed.proj.out_channels == width // 2
        assert model.cls_token.shape[-1] == model.pos_embed.shape[-1] == width // 2
    # the plan rebuilds the architecture on a fresh model; the weights load into it
    path = tmp_path / "plan.json"
    plan.save(path)
    assert json.loads(path.read_text())["layernorms"] == plan.layernorms
    rartsprune.apply_plan(fresh, PruningPlan.load(path), x)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), model(x), atol=1e-6, rtol=1e-6)
    # and exports like any pruned model (the file reloaded and compared at two batch sizes)
    result = export_model(model.eval(), x, tmp_path / "vit.pt2", "torch_export")
    assert result.checked and result.max_diff <= 1e-5 * max(1.0, result.output_scale)


def test_prune_searches_the_embedding_width_with_heads_and_mlp() -> None:
    model = small_vit().train()
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    with pytest.raises(TypeError, match="prune_layernorm must be True or False"):
        rartsprune.prune(model, ratio=0.4, example_inputs=x[:2], prune_layernorm=1)
    assert not rartsprune.has_scores(model)
    pruner = rartsprune.prune(model, ratio=0.4, example_inputs=x[:2], prune_heads=True, prune_layernorm=True,
                              weight_lr=0.01)
    group = embed_group(pruner.handle)
    losses = [pruner.step((x, y), (x, y))["loss_v"] for _ in range(6)]
    assert losses[-1] < losses[0]
    kept = len(pruner.selection().keep[group.name])
    pruned = pruner.finalize().eval()
    assert pruned.hidden_dim == pruned.conv_proj.out_channels == kept < 32
    assert pruned(x).shape == (8, 10)


def test_a_bad_plan_entry_is_refused() -> None:
    plan = PruningPlan({"a": [0]}, {"a": 2}).to_dict()
    with pytest.raises(ValueError, match="layernorms must map"):
        PruningPlan.from_dict({**plan, "layernorms": {"x": "wide"}})
    assert sync_embed_width(nn.Linear(2, 2)) == []
