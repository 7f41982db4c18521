"""Exact removal of channels normalised by a LayerNorm (``attach_scores(..., prune_layernorm=True)``).

A LayerNorm over the channel dimension mixes channels: its mean and variance are taken over all of them, so
removing one changes what every other channel becomes — which is why such groups are left alone by default (a
vision transformer's embedding width, the residual stream every block reads and writes). It can still be removed
*exactly*. With ``prune_layernorm=True`` the score of such a group multiplies the channel everywhere it is
written — the patch embedding, the class token and position embedding, each block's output projections — and
at the output of every LayerNorm that reads it, so a zero score makes the channel exactly zero in the whole
stream. A zero channel still counts in the LayerNorm's statistics (it adds 0 to the sum and the mean's square
to the variance), so after surgery each of these LayerNorms becomes a `PrunedLayerNorm`: a LayerNorm over the
kept channels that divides by the original width, as if the removed channels were there and zero. The pruned
model then computes exactly what the scored one computes with the removed channels' scores at zero.

Examples:
    >>> import torch
    >>> full = torch.nn.LayerNorm(6)
    >>> x = torch.randn(2, 6)
    >>> x[:, 4:] = 0.0                                    # channels 4 and 5 removed (zero everywhere)
    >>> pruned = PrunedLayerNorm.from_layernorm(full, kept=[0, 1, 2, 3])
    >>> torch.allclose(pruned(x[:, :4]), full(x)[:, :4], atol=1e-6)
    True
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["PrunedLayerNorm", "is_exact_layernorm", "original_width", "sync_embed_width"]


#: LayerNorm subclasses that compute exactly ``F.layer_norm`` over their last dimension (timm's, which may use
#: a fused kernel), by module path: they are not imported here.
_SAME_AS_LAYERNORM = ("timm.layers.norm.LayerNorm",)


def is_exact_layernorm(module: nn.Module) -> bool:
    """True for a layer `PrunedLayerNorm` can stand in for: a plain ``nn.LayerNorm`` (timm's ``LayerNorm``, a
    `PrunedLayerNorm`) over one dimension, with affine parameters to fold a score into.

    Other subclasses, with their own ``forward`` (timm's ``LayerNorm2d`` permutes channels first, for one), are not.

    Examples:
        >>> is_exact_layernorm(nn.LayerNorm(8)), is_exact_layernorm(nn.LayerNorm([4, 8]))
        (True, False)
    """
    kind = type(module)
    return ((kind in (nn.LayerNorm, PrunedLayerNorm) or f"{kind.__module__}.{kind.__qualname__}" in _SAME_AS_LAYERNORM)
            and len(module.normalized_shape) == 1
            and module.elementwise_affine and module.weight is not None)


def original_width(norm: nn.LayerNorm) -> int:
    """The width whose statistics ``norm`` computes: a `PrunedLayerNorm`'s ``full_width``, else its own width.

    Examples:
        >>> original_width(nn.LayerNorm(8)), original_width(PrunedLayerNorm(4, 8))
        (8, 8)
    """
    return int(getattr(norm, "full_width", norm.normalized_shape[0]))


class PrunedLayerNorm(nn.LayerNorm):
    """LayerNorm over the kept channels of a wider one whose other channels were removed while zero.

    Normalises the last dimension (``normalized_shape = (kept,)``) with the statistics of ``full_width``
    channels of which the missing ones are zero: mean ``Σx / full_width``, variance
    ``(Σ(x − mean)² + (full_width − kept)·mean²) / full_width``; then the affine weight and bias of the kept
    channels. With ``full_width == kept`` it is ``nn.LayerNorm``. Its state dict is the LayerNorm's.

    Args:
        kept: the number of channels it normalises.
        full_width: the width whose statistics it reproduces (``>= kept``).
        eps, elementwise_affine, bias, device, dtype: as for ``nn.LayerNorm``.
    """

    def __init__(self, kept: int, full_width: int, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        if isinstance(full_width, bool) or not isinstance(full_width, int) or full_width < kept:
            raise ValueError(f"full_width must be an int >= kept ({kept}), got {full_width!r}")
        super().__init__(kept, eps=eps, elementwise_affine=elementwise_affine, bias=bias, device=device, dtype=dtype)
        self.full_width = full_width

    @classmethod
    def from_layernorm(cls, norm: nn.LayerNorm, kept: Sequence[int] | None = None,
                       full_width: int | None = None) -> PrunedLayerNorm:
        """A `PrunedLayerNorm` standing in for ``norm``.

        Args:
            norm: the LayerNorm (`is_exact_layernorm`).
            kept: the channels of ``norm`` to keep (``None``: all of them: ``norm`` was already sliced).
            full_width: the width whose statistics to reproduce (default: ``norm``'s own, or its
                ``full_width`` if it is already a `PrunedLayerNorm`).

        The kept affine parameters are copied (as new parameters when channels are dropped, else the same ones).
        """
        if not is_exact_layernorm(norm):
            raise TypeError(f"expected an nn.LayerNorm over one dimension with affine parameters, got {norm!r}")
        width = int(norm.normalized_shape[0])
        full = full_width if full_width is not None else original_width(norm)
        idx = list(range(width)) if kept is None else sorted(int(i) for i in kept)
        if not idx or idx[0] < 0 or idx[-1] >= width:
            raise ValueError(f"kept channels must be a non-empty subset of range({width})")
        out = cls(len(idx), full, eps=norm.eps, bias=norm.bias is not None, device=norm.weight.device,
                  dtype=norm.weight.dtype)
        out.train(norm.training)
        if len(idx) == width:
            out.weight = norm.weight
            if norm.bias is not None:
                out.bias = norm.bias
        else:
            with torch.no_grad():
                index = torch.tensor(idx, device=norm.weight.device)
                out.weight.copy_(norm.weight.index_select(0, index))
                if norm.bias is not None:
                    out.bias.copy_(norm.bias.index_select(0, index))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = float(self.full_width)
        mean = x.sum(-1, keepdim=True) / n
        centred = x - mean
        var = (centred.square().sum(-1, keepdim=True) + (n - x.shape[-1]) * mean.square()) / n
        y = centred * torch.rsqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, full_width={self.full_width}"


def sync_embed_width(model: nn.Module) -> list[str]:
    """Set the width attributes a vision transformer's forward reads to its (pruned) embedding width.

    torchvision's ``VisionTransformer`` reshapes its patches with ``self.hidden_dim``; timm's records
    ``embed_dim`` / ``num_features`` / ``head_hidden_size`` (read by ``reset_classifier`` and feature
    extraction). Both are set from the patch embedding's output channels. Returns the names of the
    modules changed.

    Examples:
        >>> import torchvision
        >>> vit = torchvision.models.VisionTransformer(32, 8, 1, 2, 16, 32, num_classes=10)
        >>> vit.conv_proj = torch.nn.Conv2d(3, 8, 8, 8)          # as surgery leaves it
        >>> sync_embed_width(vit), vit.hidden_dim
        ([''], 8)
    """
    changed = []
    for name, m in model.named_modules():
        kind = f"{type(m).__module__}.{type(m).__qualname__}"
        if kind == "torchvision.models.vision_transformer.VisionTransformer":
            width = int(m.conv_proj.out_channels)
            if m.hidden_dim != width:
                m.hidden_dim = width
                changed.append(name)
        elif kind == "timm.models.vision_transformer.VisionTransformer":
            width = int(m.patch_embed.proj.out_channels)
            old = m.embed_dim
            if old != width:
                for attr in ("embed_dim", "num_features", "head_hidden_size"):
                    if getattr(m, attr, None) == old:
                        setattr(m, attr, width)
                changed.append(name)
    return changed
