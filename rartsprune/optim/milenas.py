"""MiLeNAS (He et al., CVPR 2020): mixed-level architecture search, one network.

    w <- w - eta_w * grad_w L_t(w, a)
    a <- a - eta_a * (grad_a L_t(w, a) + lam * grad_a L_v(w, a) [+ grad_a penalty(a)])

Both gradients are taken at the current (w, a); the alpha part of L_t comes from the same pass as the weight
gradient, so a step costs one full pass plus one alpha-only pass (as DARTS first order).

Examples:
    >>> import torch
    >>> from torch import nn
    >>> gate = nn.Parameter(torch.zeros(4))
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(4, 3)
    ...     def forward(self, x):
    ...         return self.fc(x * torch.sigmoid(gate))
    >>> opt = MiLeNAS(Net(), [gate], lam=1.0)
    >>> batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    >>> "loss_v" in opt.step(batch, batch)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from .base import SearchOptimizer, _finite_float

__all__ = ["MiLeNAS"]


class MiLeNAS(SearchOptimizer):
    """MiLeNAS search optimizer.

    Args:
        model: the network (plays w in both losses).
        arch_params: alpha.
        lam: weight of the validation-loss alpha gradient (default 1.0, the MiLeNAS reference default).
        beta: accepted for a call signature shared with `RARTS`; unused.
        **kwargs: the options of `rartsprune.optim.base.SearchOptimizer`.
    """

    method = "milenas"

    def __init__(
        self, model: nn.Module, arch_params: Sequence[Tensor], *, lam: float = 1.0, beta: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.lam = _finite_float("lam", lam, nonneg=True)
        super().__init__(model, arch_params, **kwargs)

    def _search_step(self, batch_t: Any, batch_v: Any) -> dict[str, Tensor]:
        net, lam = self._y, self.lam
        # gradients at the current point: one full pass on D_t, one alpha-only pass on D_v
        loss_t, ga_t = self._pass(net, batch_t, "t", weights=True, alpha=True, tag="L_t(w, alpha)")
        loss_v, ga_v = self._pass(net, batch_v, "v", weights=False, alpha=True, tag="L_v(w, alpha)")
        # w <- w - eta_w * grad_w L_t(w, a)
        self._descend(net, tag="L_t w.r.t. w")
        # a <- a - eta_a * (grad_a L_t(w, a) + lam * grad_a L_v(w, a))
        self._descend_arch([(1.0, ga_t), (lam, ga_v)])
        return {"loss_t": loss_t, "loss_v": loss_v}

    def _hparams(self) -> dict[str, Any]:
        return {"lam": self.lam}
