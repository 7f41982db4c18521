"""Attention heads as prunable units (``attach_scores(..., prune_heads=True)``, rartsprune.heads)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
from torchvision.models.swin_transformer import SwinTransformer as TVSwin
from torchvision.models.vision_transformer import VisionTransformer

import rartsprune
from rartsprune.errors import UnsupportedModelError
from rartsprune.flops import flops_report
from rartsprune.heads import HeadAttention, find_attention_blocks, head_of_qkv_channel

timm = pytest.importorskip("timm")


def small_vit() -> VisionTransformer:
    """A two-layer torchvision ViT; its classifier (zero-initialised by torchvision) gets random weights, so
    that the output depends on every head and a wrong removal cannot hide behind zero outputs."""
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64,
                              num_classes=10).eval()
    nn.init.normal_(model.heads.head.weight)
    return model


def head_groups(handle: rartsprune.ScoreHandle) -> list[rartsprune.ChannelGroup]:
    return [g for g in handle.groups if g.attention]


def zero_heads(handle: rartsprune.ScoreHandle, gone: dict[str, list[int]], seed: int = 1) -> None:
    """Random scores in [0.5, 1.5), zero for the listed heads of each head group (other groups keep all)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for g, alpha in zip(handle.groups, handle.scores):
            alpha.copy_(torch.rand(g.num_units, generator=gen) + 0.5)
            if g.name in gone:
                alpha[gone[g.name]] = 0.0


def assert_exact_surgery(model: nn.Module, x: torch.Tensor) -> None:
    """Surgery on the scored model leaves its (nonzero) outputs unchanged within 1e-5."""
    with torch.no_grad():
        scored = model(x)
    assert scored.abs().max().item() > 1e-3
    rartsprune.apply_surgery(model)
    with torch.no_grad():
        assert (model(x) - scored).abs().max().item() <= 1e-5


def test_one_score_per_head_torchvision_vit() -> None:
    model = small_vit()
    x = torch.randn(2, 3, 32, 32)
    reference = model(x)
    handle = rartsprune.attach_scores(model, x, prune_heads=True)
    heads = head_groups(handle)
    assert [g.attention for g in heads] == [f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(2)]
    assert [g.num_units for g in heads] == [4, 4]
    assert [g.channels for g in heads] == [96, 96]  # 3 x 4 heads x head_dim 8 rows of in_proj
    assert all(g.head_dim == 8 for g in heads)
    assert [alpha.numel() for alpha in handle.scores if alpha.numel() == 4] == [4, 4]
    # the MLP hidden widths are scored as before, together with the heads
    assert sorted(g.name for g in handle.groups if not g.attention) == [
        "encoder.layers.encoder_layer_0.mlp.0", "encoder.layers.encoder_layer_1.mlp.0"]
    # the replacement computes what nn.MultiheadAttention computed
    assert isinstance(model.encoder.layers[0].self_attention, HeadAttention)
    assert torch.allclose(model(x), reference, atol=1e-6)


def test_heads_removed_exactly_torchvision_vit() -> None:
    model = small_vit()
    x = torch.randn(2, 3, 32, 32)
    handle = rartsprune.attach_scores(model, x, prune_heads=True)
    gone = {"encoder.layers.encoder_layer_0.self_attention.in_proj": [1, 3],
            "encoder.layers.encoder_layer_1.self_attention.in_proj": [0]}
    zero_heads(handle, gone)
    with torch.no_grad():
        handle.score("encoder.layers.encoder_layer_0.mlp.0")[::2] = 0.0
        scored = model(x)
    plan = rartsprune.apply_surgery(model)
    assert not rartsprune.has_scores(model)
    out = model(x)
    assert scored.abs().max().item() > 0.1
    assert (out - scored).abs().max().item() <= 1e-5
    a0, a1 = (model.encoder.layers[i].self_attention for i in range(2))
    assert (a0.num_heads, a1.num_heads) == (2, 3)
    assert (a0.in_proj.out_features, a0.out_proj.in_features, a0.out_proj.out_features) == (48, 16, 32)
    assert (a1.in_proj.out_features, a1.out_proj.in_features) == (72, 24)
    assert model.encoder.layers[0].mlp[0].out_features == 32
    assert {k: v["heads"] for k, v in plan.heads.items()} == {n: 4 - len(h) for n, h in gone.items()}
    out.sum().backward()  # the pruned model trains


def test_head_pruning_macs_drop_as_expected() -> None:
    model = small_vit()
    x = torch.randn(1, 3, 32, 32)
    handle = rartsprune.attach_scores(model, x, prune_heads=True)
    before = flops_report(model, x)
    zero_heads(handle, {g.name: [0, 1] for g in head_groups(handle)})
    rartsprune.apply_surgery(model)
    after = flops_report(model, x)
    tokens, dim = 17, 32  # 16 patches + class token
    for i in range(2):
        attn = f"encoder.layers.encoder_layer_{i}.self_attention"
        assert before.by_module[f"{attn}.in_proj"]["macs"] == tokens * dim * 96
        assert after.by_module[f"{attn}.in_proj"]["macs"] == tokens * dim * 48
        assert after.by_module[f"{attn}.out_proj"]["macs"] == tokens * 16 * dim
        # q k^T and attn v: heads x L x S x (E + Ev)
        assert after.by_module[attn]["macs"] == tokens * dim * 48 + tokens * 16 * dim + 2 * tokens * tokens * 16
    saved = before.macs - after.macs
    assert saved == 2 * (tokens * dim * 48 + tokens * 16 * dim + 2 * tokens * tokens * 16)


def test_apply_plan_rebuilds_the_pruned_torchvision_vit(tmp_path) -> None:
    model = small_vit()
    fresh = copy.deepcopy(model)
    x = torch.randn(2, 3, 32, 32)
    handle = rartsprune.attach_scores(model, x, prune_heads=True)
    zero_heads(handle, {g.name: [2] for g in head_groups(handle)})
    plan = rartsprune.apply_surgery(model)
    plan.save(tmp_path / "plan.json")
    rartsprune.apply_plan(fresh, tmp_path / "plan.json", x)
    assert fresh.encoder.layers[1].self_attention.num_heads == 3
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_head_attention_matches_multihead_attention() -> None:
    mha = nn.MultiheadAttention(24, 3, dropout=0.0).eval()  # (seq, batch, feature)
    ha = HeadAttention.from_multihead_attention(mha).eval()
    x = torch.randn(5, 2, 24)
    pad = torch.tensor([[False] * 5, [False, False, False, True, True]])
    out, w = mha(x, x, x, key_padding_mask=pad)
    out2, w2 = ha(x, x, x, key_padding_mask=pad)
    assert (out - out2).abs().max().item() < 1e-5
    assert (w - w2).abs().max().item() < 1e-6
    out3, none = ha(x, x, x, key_padding_mask=pad, need_weights=False)
    assert none is None and (out - out3).abs().max().item() < 1e-5
    # the original's state dict loads (in_proj_weight / in_proj_bias keys)
    ha2 = HeadAttention(24, 3)
    ha2.load_state_dict(mha.state_dict())
    assert torch.equal(ha2.in_proj.weight, mha.in_proj_weight)
    with pytest.raises(ValueError, match="self-attention only"):
        ha(x, torch.randn(5, 2, 24), x)


def test_head_of_qkv_channel_layout() -> None:
    specs, _ = find_attention_blocks(HeadAttention(32, 4))
    spec = specs["in_proj"]
    assert [head_of_qkv_channel(spec, c) for c in (0, 7, 8, 31, 32, 40, 64, 95)] == [0, 0, 1, 3, 0, 1, 0, 3]


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224", "deit_tiny_patch16_224"])
def test_timm_vit_heads_exact(name: str) -> None:
    model = timm.create_model(name, img_size=32, depth=2, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    handle = rartsprune.attach_scores(model, x, prune_heads=True)
    heads = head_groups(handle)
    assert [g.name for g in heads] == ["blocks.1.attn.qkv", "blocks.0.attn.qkv"]
    assert [g.num_units for g in heads] == [3, 3]  # num_heads of the tiny models
    zero_heads(handle, {"blocks.0.attn.qkv": [0], "blocks.1.attn.qkv": [1, 2]})
    assert_exact_surgery(model, x)
    a0, a1 = model.blocks[0].attn, model.blocks[1].attn
    assert (a0.num_heads, a0.attn_dim, a0.qkv.out_features, a0.proj.in_features) == (2, 128, 384, 128)
    assert (a1.num_heads, a1.qkv.out_features, a1.proj.in_features) == (1, 192, 64)


def test_timm_swin_heads_slice_the_relative_position_bias() -> None:
    from timm.models.swin_transformer import SwinTransformer

    model = SwinTransformer(img_size=32, patch_size=4, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                            num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    table = model.layers[1].blocks[0].attn.relative_position_bias_table.detach().clone()
    handle = rartsprune.attach_scores(model, x, prune_heads=True)
    assert sorted(g.num_units for g in head_groups(handle)) == [2, 2, 4, 4]
    zero_heads(handle, {"layers.1.blocks.0.attn.qkv": [0, 2], "layers.0.blocks.1.attn.qkv": [1]})
    assert_exact_surgery(model, x)
    attn = model.layers[1].blocks[0].attn
    assert attn.num_heads == 2 and attn.qkv.out_features == 96 and attn.proj.in_features == 32
    assert torch.equal(attn.relative_position_bias_table, table[:, [1, 3]])


def test_refused_attention_gets_a_reason() -> None:
    model = TVSwin(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4],
                   num_classes=10).eval()
    handle = rartsprune.attach_scores(model, torch.randn(1, 3, 32, 32), prune_heads=True)
    assert not head_groups(handle)
    refused = [g for g in handle.all_groups if g.attention]
    assert [g.name for g in refused] == ["features.1.0.attn", "features.1.1.attn", "features.3.0.attn",
                                         "features.3.1.attn"]
    assert all(g.status == "attention" and "C // num_heads" in g.reason for g in refused)
    beit = timm.create_model("beit_base_patch16_224", img_size=32, depth=1, num_classes=10).eval()
    handle = rartsprune.attach_scores(beit, torch.randn(2, 3, 32, 32), prune_heads=True)
    reasons = {g.reason for g in handle.all_groups if g.status == "attention"}
    assert any("BEiT Attention reshapes the heads' output back to the input width" in r for r in reasons)
    qk_norm = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=1, num_classes=10, qk_norm=True).eval()
    handle = rartsprune.attach_scores(qk_norm, torch.randn(2, 3, 32, 32), prune_heads=True)
    group = handle.group("blocks.0.attn.qkv")
    assert group.status == "unsupported" and "_norm" in group.reason and group.attention == "blocks.0.attn"
    assert qk_norm.blocks[0].attn.num_heads == 3


def test_heads_are_off_by_default() -> None:
    model = small_vit()
    handle = rartsprune.attach_scores(model, torch.randn(2, 3, 32, 32))
    assert not head_groups(handle)
    assert isinstance(model.encoder.layers[0].self_attention, nn.MultiheadAttention)
    assert any("prune_heads=True" in g.reason for g in handle.all_groups if g.status == "attention")


def test_refusal_leaves_the_model_unchanged() -> None:
    model = small_vit()
    x = torch.randn(2, 3, 32, 32)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UnsupportedModelError, match="no prunable channel group"):
        rartsprune.attach_scores(model, x, prune_heads=True, ignored_layers=["encoder"])
    assert isinstance(model.encoder.layers[0].self_attention, nn.MultiheadAttention)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in before.items())
    assert not rartsprune.has_scores(model)


def test_unscored_blocks_are_not_replaced() -> None:
    model = small_vit()
    handle = rartsprune.attach_scores(model, torch.randn(2, 3, 32, 32), prune_heads=True,
                                      ignored_layers=["encoder.layers.encoder_layer_0.self_attention"])
    assert [g.attention for g in head_groups(handle)] == ["encoder.layers.encoder_layer_1.self_attention"]
    assert isinstance(model.encoder.layers[0].self_attention, nn.MultiheadAttention)
    assert isinstance(model.encoder.layers[1].self_attention, HeadAttention)


def test_remove_folds_head_scores() -> None:
    model = small_vit()
    x = torch.randn(2, 3, 32, 32)
    handle = rartsprune.attach_scores(model, x, prune_heads=True)
    zero_heads(handle, {g.name: [1] for g in head_groups(handle)})
    with torch.no_grad():
        scored = model(x)
    rartsprune.remove(model)
    with torch.no_grad():
        assert (model(x) - scored).abs().max().item() <= 1e-6
    w = model.encoder.layers[0].self_attention.out_proj.weight
    assert w[:, 8:16].abs().max().item() == 0.0 and w[:, :8].abs().min().item() > 0.0


@pytest.mark.slow
@pytest.mark.parametrize("layernorm, bound", [(False, 0.62), (True, 0.45)])
def test_vit_b_16_heads_and_mlp_macs(layernorm: bool, bound: float) -> None:
    """ViT-B/16 at PRC 0.4 with heads + MLP: exact after surgery; MACs (attention counted) well below MLP only
    (0.75x); with the embedding width too (``prune_layernorm=True``) at most 0.45x."""
    import torchvision

    from rartsprune.width.baselines import baseline_importance
    from rartsprune.width.selection import select_by_ratio

    x = torch.randn(1, 3, 224, 224)
    model = torchvision.models.vit_b_16(num_classes=1000).eval()
    nn.init.normal_(model.heads.head.weight, std=0.02)  # torchvision zero-initialises it: outputs would be 0
    handle = rartsprune.attach_scores(model, x, prune_heads=True, prune_layernorm=layernorm)
    assert len(head_groups(handle)) == 12 and all(g.num_units == 12 for g in head_groups(handle))
    assert sum(bool(g.layernorms) for g in handle.groups) == int(layernorm)  # the embedding width: one group
    before = flops_report(model, x).macs  # HeadAttention: projections and attention are counted
    selection = select_by_ratio(handle, 0.4, importance=baseline_importance(handle, "l1_norm"))
    zero_heads(handle, {})
    with torch.no_grad():
        for g, alpha in zip(handle.groups, handle.scores):
            keep = torch.zeros(g.num_units)
            keep[selection.keep[g.name]] = 1.0
            alpha.mul_(keep)
        scored = model(x)
    rartsprune.apply_surgery(model)
    with torch.no_grad():
        assert (model(x) - scored).abs().max().item() <= 1e-5 * max(1.0, scored.abs().max().item())
    ratio = flops_report(model, x).macs / before
    print(f"ViT-B/16, PRC 0.4, prune_layernorm={layernorm}: MACs x{ratio:.3f}")
    assert sum(model.encoder.layers[i].self_attention.num_heads for i in range(12)) < 144
    assert ratio < bound  # MLP only at PRC 0.4, attention counted: 0.75x


def test_prune_searches_heads_and_mlp_together() -> None:
    # the width search end to end with prune_heads=True: steps run, finalize removes whole heads
    model = small_vit().train()
    x = torch.randn(8, 3, 32, 32)
    y = torch.randint(0, 10, (8,))
    with pytest.raises(TypeError, match="prune_heads must be True or False"):
        rartsprune.prune(model, ratio=0.4, example_inputs=x[:2], prune_heads="yes")
    assert not rartsprune.has_scores(model)
    pruner = rartsprune.prune(model, ratio=0.4, example_inputs=x[:2], prune_heads=True, weight_lr=0.01)
    assert len(head_groups(pruner.handle)) == 2
    losses = [pruner.step((x, y), (x, y))["loss_v"] for _ in range(6)]
    assert losses[-1] < losses[0]
    keep = pruner.selection().keep
    heads = head_groups(pruner.handle)
    pruned = pruner.finalize().eval()
    for i, g in enumerate(heads):
        attn = pruned.encoder.layers[i].self_attention
        assert attn.num_heads == len(keep[g.name]) >= 1
        assert attn.in_proj.out_features == 3 * attn.num_heads * g.head_dim
    assert pruned(x).shape == (8, 10)
