"""Attention heads as prunable units (``attach_scores(..., prune_heads=True)``).

A head group is the channel group of an attention block's fused ``qkv`` layer, with one *unit* per head:
the ``3 * head_dim`` rows of head ``h`` in ``qkv`` (its query, key and value rows). The head's score α_h
multiplies the head's slice of the attention output where it enters the output projection (the
``head_dim`` input columns of ``proj`` / ``out_proj``), so α_h = 0 silences the whole head and removing it
(its rows of ``qkv``, its columns of ``proj``, one less ``num_heads``) is exact. Torch-Pruning's dependency
graph removes the rows and columns; this module finds the attention blocks, maps channels to heads,
and afterwards keeps ``num_heads`` (and per-head parameters such as relative position bias tables) in
step with the pruned layers.

Supported blocks (see docs/coverage.md):

* timm-style attention: a module with integer ``num_heads`` and ``head_dim``, a ``qkv`` ``nn.Linear`` of
  ``3 * num_heads * head_dim`` outputs laid out q | k | v, head-major inside each, called as a module,
  and a ``proj`` ``nn.Linear`` reading ``num_heads * head_dim`` channels (timm ViT, DeiT, Swin, ...);
* ``nn.MultiheadAttention`` used as self-attention (torchvision ViT): it computes its projections
  from raw weights, which the dependency graph cannot follow, so it is first replaced by the equivalent
  `HeadAttention` (same outputs, verified; loads the original's state dict).

Examples:
    >>> import torch, torchvision, rartsprune
    >>> vit = torchvision.models.vision_transformer.VisionTransformer(
    ...     image_size=32, patch_size=8, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10)
    >>> handle = rartsprune.attach_scores(vit, torch.randn(2, 3, 32, 32), prune_heads=True)
    >>> [g.num_units for g in handle.groups if g.attention]
    [4, 4]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import SurgeryError

__all__ = [
    "HeadAttention",
    "HeadSpec",
    "find_attention_blocks",
    "convert_multihead_attention",
    "restore_modules",
    "head_of_qkv_channel",
    "per_head_parameter_names",
    "remove_heads",
]


class HeadAttention(nn.Module):
    """Self-attention with a fused ``in_proj`` Linear, whose heads can be removed: stands in for ``nn.MultiheadAttention``.

    Computes what ``nn.MultiheadAttention(embed_dim, num_heads)`` computes for ``attn(x, x, x)``, but
    with the projections as ``nn.Linear`` modules (``in_proj``: ``embed_dim -> 3 * num_heads * head_dim``,
    ``out_proj``: ``num_heads * head_dim -> embed_dim``), so that ``num_heads * head_dim`` may be smaller
    than ``embed_dim`` once heads are removed. Loads the state dict of the ``nn.MultiheadAttention`` it
    replaces (``in_proj_weight`` / ``in_proj_bias`` keys).

    Args:
        embed_dim: width of the input and output tokens.
        num_heads: number of heads.
        head_dim: width of one head (default ``embed_dim // num_heads``).
        bias: projections with biases.
        dropout: dropout on the attention weights (training mode only).
        batch_first: inputs are ``(batch, seq, feature)`` (else ``(seq, batch, feature)``).

    Examples:
        >>> attn = HeadAttention(32, 4, batch_first=True)
        >>> out, weights = attn(x := torch.randn(2, 5, 32), x, x, need_weights=False)
        >>> out.shape, weights
        (torch.Size([2, 5, 32]), None)
    """

    def __init__(self, embed_dim: int, num_heads: int, head_dim: int | None = None, *, bias: bool = True,
                 dropout: float = 0.0, batch_first: bool = False) -> None:
        super().__init__()
        if head_dim is None:
            if embed_dim % num_heads:
                raise ValueError(f"embed_dim {embed_dim} is not divisible by num_heads {num_heads}")
            head_dim = embed_dim // num_heads
        self.embed_dim = int(embed_dim)
        self.num_heads = int(num_heads)
        self.head_dim = int(head_dim)
        self.dropout = float(dropout)
        self.batch_first = bool(batch_first)
        self.in_proj = nn.Linear(embed_dim, 3 * num_heads * head_dim, bias=bias)
        self.out_proj = nn.Linear(num_heads * head_dim, embed_dim, bias=bias)

    @classmethod
    def from_multihead_attention(cls, mha: nn.MultiheadAttention) -> HeadAttention:
        """The equivalent `HeadAttention` of a self-attention ``nn.MultiheadAttention`` (weights copied).

        Raises:
            ValueError: ``mha`` has separate key / value widths, ``bias_k`` / ``bias_v`` or ``add_zero_attn``.
        """
        why = _mha_refusal(mha)
        if why:
            raise ValueError(why)
        ref = mha.in_proj_weight
        new = cls(mha.embed_dim, mha.num_heads, bias=mha.in_proj_bias is not None, dropout=mha.dropout,
                  batch_first=mha.batch_first).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            new.in_proj.weight.copy_(mha.in_proj_weight)
            new.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                new.in_proj.bias.copy_(mha.in_proj_bias)
            if mha.out_proj.bias is not None and new.out_proj.bias is not None:
                new.out_proj.bias.copy_(mha.out_proj.bias)
        new.train(mha.training)
        for p_new, p_old in zip((new.in_proj.weight, new.out_proj.weight), (mha.in_proj_weight, mha.out_proj.weight)):
            p_new.requires_grad_(p_old.requires_grad)
        return new

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        for old, new in (("in_proj_weight", "in_proj.weight"), ("in_proj_bias", "in_proj.bias")):
            if prefix + old in state_dict and prefix + new not in state_dict:
                state_dict[prefix + new] = state_dict.pop(prefix + old)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor | None = None,
        value: torch.Tensor | None = None,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``nn.MultiheadAttention.forward`` for self-attention (``key`` and ``value`` must be ``query``)."""
        if (key is not None and key is not query) or (value is not None and value is not query):
            raise ValueError("HeadAttention computes self-attention only: pass the same tensor as query, key and value")
        x = query if self.batch_first or query.dim() == 2 else query.transpose(0, 1)
        unbatched = x.dim() == 2
        if unbatched:
            x = x.unsqueeze(0)
        b, n, _ = x.shape
        qkv = self.in_proj(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        mask = _additive_mask(attn_mask, key_padding_mask, b, n, q.dtype)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:
            scores = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                scores = scores.masked_fill(torch.ones(n, n, dtype=torch.bool, device=q.device).triu(1), float("-inf"))
            attn = scores.softmax(dim=-1)
            weights = attn.mean(dim=1) if average_attn_weights else attn
            out = F.dropout(attn, dropout, self.training) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout,
                                                 is_causal=is_causal and mask is None)
        out = self.out_proj(out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim))
        if unbatched:
            out = out.squeeze(0)
            weights = None if weights is None else weights.squeeze(0)
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, batch_first={self.batch_first}"


def _additive_mask(attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, b: int, n: int,
                   dtype: torch.dtype) -> torch.Tensor | None:
    """``nn.MultiheadAttention``'s masks (True = masked out) as one additive float mask (b, 1, n, n)."""
    out = None
    for m, shape in ((attn_mask, (1, 1, n, n)), (key_padding_mask, (b, 1, 1, n))):
        if m is None:
            continue
        if m.dim() > 2:
            raise ValueError("HeadAttention accepts 2-D attention masks only (per-head masks depend on the head count)")
        add = torch.zeros(m.shape, dtype=dtype, device=m.device).masked_fill(m, float("-inf")) if m.dtype == torch.bool else m.to(dtype)
        add = add.reshape(shape)
        out = add if out is None else out + add
    return out


def _mha_refusal(mha: nn.MultiheadAttention) -> str:
    """Why an ``nn.MultiheadAttention`` cannot become a `HeadAttention` ('' when it can)."""
    if not mha._qkv_same_embed_dim:
        return "keys / values of another width than the queries (kdim / vdim): not a self-attention block"
    if mha.bias_k is not None or mha.add_zero_attn:
        return "bias_k / bias_v or add_zero_attn are not supported"
    return ""


@dataclass(frozen=True)
class HeadSpec:
    """An attention block whose heads can be scored.

    Attributes:
        name: the attention module's dotted name.
        qkv: name of its fused q | k | v ``nn.Linear`` (the head group's root).
        proj: name of its output projection ``nn.Linear`` (where the head scores sit).
        num_heads: number of heads.
        head_dim: width of one head.
        per_head: names of the block's parameters with one entry per head (e.g. a relative position bias
            table); `remove_heads` slices them, Torch-Pruning leaves them alone.
    """

    name: str
    qkv: str
    proj: str
    num_heads: int
    head_dim: int
    per_head: tuple[str, ...] = ()


#: Attention classes with ``num_heads`` whose heads cannot be removed, and why.
_REFUSED_CLASSES = {
    "ShiftedWindowAttention": "torchvision's shifted_window_attention takes the head width as C // num_heads from the "
                              "input width C and calls its qkv weights directly, so removing heads breaks it",
    "ShiftedWindowAttentionV2": "torchvision's shifted_window_attention takes the head width as C // num_heads from the "
                                "input width C and calls its qkv weights directly, so removing heads breaks it",
    "RelativePositionalMultiHeadAttention": "torchvision MaxViT reshapes the heads' output back to the input width D "
                                            "before its merge layer, so removing heads breaks it",
    "EvaAttention": "timm's EvaAttention reshapes the heads' output back to the input width C before proj, so "
                    "removing heads breaks it",
}
#: (module of the class, class name) pairs refused although the class name alone is ambiguous.
_REFUSED_QUALIFIED = {
    ("timm.models.beit", "Attention"): "timm's BEiT Attention reshapes the heads' output back to the input width C "
                                       "before proj, so removing heads breaks it",
}


def _linear_child(module: nn.Module, name: str) -> nn.Linear | None:
    child = getattr(module, name, None)
    return child if isinstance(child, nn.Linear) else None


def find_attention_blocks(model: nn.Module) -> tuple[dict[str, HeadSpec], dict[str, str]]:
    """Attention blocks of ``model`` whose heads can be scored, and the others with the reason.

    Returns:
        ``({qkv layer name: HeadSpec}, {attention module name: why its heads are left alone})``.

    Examples:
        >>> specs, refused = find_attention_blocks(vit)  # doctest: +SKIP
        >>> sorted(specs)[0], refused  # doctest: +SKIP
        ('blocks.0.attn.qkv', {})
    """
    specs: dict[str, HeadSpec] = {}
    refused: dict[str, str] = {}
    for name, m in model.named_modules():
        if isinstance(m, nn.MultiheadAttention):
            why = _mha_refusal(m)
            refused[name] = why or ("an nn.MultiheadAttention that was not replaced by HeadAttention (the model's "
                                    "outputs differ or its forward fails with the replacement)")
            continue
        heads = getattr(m, "num_heads", None)
        if not isinstance(heads, int) or isinstance(heads, bool):
            continue
        cls = type(m).__name__
        why = _REFUSED_CLASSES.get(cls) or _REFUSED_QUALIFIED.get((type(m).__module__, cls))
        if why:
            refused[name] = why
            continue
        qkv_name = "in_proj" if isinstance(m, HeadAttention) else "qkv"
        proj_name = "out_proj" if isinstance(m, HeadAttention) else "proj"
        qkv, proj = _linear_child(m, qkv_name), _linear_child(m, proj_name)
        head_dim = getattr(m, "head_dim", None)
        if head_dim is None and proj is not None and qkv is not None and proj.in_features % heads == 0:
            head_dim = proj.in_features // heads  # timm's Swin WindowAttention does not store it
        if qkv is None or proj is None:
            if any(c is not m and isinstance(getattr(c, "num_heads", None), int) for c in m.modules()):
                continue  # an outer block that stores num_heads for its attention child
            refused[name] = (f"{cls} has no fused qkv nn.Linear and proj nn.Linear (separate q / k / v projections "
                             "are not supported yet)")
            continue
        if not isinstance(head_dim, int) or head_dim < 1:
            refused[name] = f"{cls} has no integer head_dim attribute"
            continue
        if qkv.out_features != 3 * heads * head_dim or proj.in_features != heads * head_dim:
            refused[name] = (f"{cls}: qkv has {qkv.out_features} outputs and proj {proj.in_features} inputs, expected "
                             f"3 x {heads} x {head_dim} and {heads} x {head_dim}")
            continue
        if getattr(m, "gate", None) is not None or not isinstance(getattr(m, "norm", nn.Identity()), nn.Identity):
            refused[name] = f"{cls} gates or normalises the heads' output across heads before proj"
            continue
        prefix = f"{name}." if name else ""
        per_head = tuple(prefix + p for p, _ in _per_head_parameters(m, heads))
        specs[prefix + qkv_name] = HeadSpec(name, prefix + qkv_name, prefix + proj_name, heads, head_dim, per_head)
    return specs, refused


def head_of_qkv_channel(spec: HeadSpec, channel: int) -> int:
    """The head of one output row of the fused ``qkv`` layer (layout q | k | v, head-major inside each).

    Examples:
        >>> spec = HeadSpec("attn", "attn.qkv", "attn.proj", num_heads=4, head_dim=8)
        >>> [head_of_qkv_channel(spec, c) for c in (0, 8, 31, 32, 95)]
        [0, 1, 3, 0, 3]
    """
    return (int(channel) % (spec.num_heads * spec.head_dim)) // spec.head_dim


def convert_multihead_attention(model: nn.Module, run: Any, atol: float = 1e-5) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """Replace every self-attention ``nn.MultiheadAttention`` of ``model`` by the equivalent `HeadAttention`, in place.

    A replacement is kept only when the model's outputs do not move (``run(model)`` before and after,
    within ``atol`` relative to the output scale); otherwise the original comes back.

    Args:
        model: the model.
        run: ``run(model) -> outputs`` (one eval-mode forward on the example inputs).
        atol: tolerance of the equivalence check.

    Returns:
        ``({module name: original module}, {module name: why it was not replaced})``; give the first to
        `restore_modules` to undo.

    Examples:
        >>> originals, refused = convert_multihead_attention(vit, lambda m: m(x))  # doctest: +SKIP
    """
    from .surgery import _max_diff  # late import: surgery imports this module

    targets = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]
    originals: dict[str, nn.Module] = {}
    refused: dict[str, str] = {}
    if not targets:
        return originals, refused
    with torch.no_grad():
        reference = run(model)
    for name, mha in targets:
        why = _mha_refusal(mha)
        if why:
            refused[name] = why
            continue
        _set_module(model, name, HeadAttention.from_multihead_attention(mha))
        originals[name] = mha
    if originals:
        try:
            with torch.no_grad():
                out = run(model)
            diff, scale = _max_diff(reference, out)
            error = "" if diff <= atol * max(1.0, scale) else f"outputs move by {diff:.3g} with HeadAttention"
        except (RuntimeError, ValueError, TypeError) as exc:
            error = f"the model does not run with HeadAttention ({type(exc).__name__}: {exc})"
        if error:
            restore_modules(model, originals)
            refused.update({n: error for n in originals})
            originals = {}
    return originals, refused


def restore_modules(model: nn.Module, originals: dict[str, nn.Module]) -> None:
    """Put back modules replaced by `convert_multihead_attention` (``{name: original}``)."""
    for name, module in originals.items():
        _set_module(model, name, module)


def _set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def per_head_parameter_names(model: nn.Module, attention: str) -> set[str]:
    """Full names of the per-head parameters of the attention block ``attention`` (see `HeadSpec.per_head`)."""
    block = model.get_submodule(attention)
    prefix = f"{attention}." if attention else ""
    return {prefix + p for p, _ in _per_head_parameters(block, int(block.num_heads))}


def _per_head_parameters(module: nn.Module, num_heads: int) -> list[tuple[str, int]]:
    """Direct parameters of an attention block with one dimension of size ``num_heads`` (e.g. a relative
    position bias table ``(positions, num_heads)``), and that dimension."""
    out = []
    for pname, p in module.named_parameters(recurse=False):
        dims = [d for d, size in enumerate(p.shape) if size == num_heads]
        if len(dims) == 1:
            out.append((pname, dims[0]))
    return out


def remove_heads(model: nn.Module, attention: str, removed_heads: Sequence[int], head_dim: int) -> None:
    """After Torch-Pruning removed heads' rows and columns: update ``num_heads`` and per-head parameters.

    Args:
        model: the (plain, unscored) model being pruned.
        attention: the attention module's name.
        removed_heads: indices of the removed heads (in the block's head numbering before removal).
        head_dim: width of one head.

    Raises:
        SurgeryError: the block's projections do not match the new head count.

    Examples:
        >>> remove_heads(model, "blocks.0.attn", [1, 3], head_dim=64)  # doctest: +SKIP
    """
    module = model.get_submodule(attention)
    old = int(module.num_heads)
    gone = sorted({int(h) for h in removed_heads})
    if not gone:
        return
    if gone[0] < 0 or gone[-1] >= old:
        raise SurgeryError(f"{attention}: heads {gone} outside [0, {old})")
    kept = [h for h in range(old) if h not in set(gone)]
    new = len(kept)
    for pname, dim in _per_head_parameters(module, old):
        p = getattr(module, pname)
        with torch.no_grad():
            sliced = p.detach().index_select(dim, torch.tensor(kept, device=p.device)).clone()
        setattr(module, pname, nn.Parameter(sliced, requires_grad=p.requires_grad))
    module.num_heads = new
    if hasattr(module, "attn_dim"):
        module.attn_dim = new * head_dim
    qkv = next((c for c in (getattr(module, "qkv", None), getattr(module, "in_proj", None)) if isinstance(c, nn.Linear)), None)
    proj = next((c for c in (getattr(module, "proj", None), getattr(module, "out_proj", None)) if isinstance(c, nn.Linear)), None)
    if qkv is None or proj is None or qkv.out_features != 3 * new * head_dim or proj.in_features != new * head_dim:
        raise SurgeryError(
            f"{attention}: after removing heads {gone} the projections do not match {new} heads of width {head_dim} "
            f"(qkv {None if qkv is None else qkv.out_features} outputs, proj {None if proj is None else proj.in_features} inputs)"
        )

