"""DARTS (Liu, Simonyan, Yang, ICLR 2019), first and second order, one network, generic over models.

Per step, as in the DARTS reference code (alpha first, then the weights with the new alpha):

    order 1:  a <- a - eta_a * grad_a L_v(w, a)
    order 2:  a <- a - eta_a * (grad_a L_v(w', a) - xi * grad2_{a,w} L_t(w, a) . grad_w' L_v(w', a))
              w' = w - xi * (mu * m + grad_w L_t(w, a) + wd * w)     (the unrolled weight step)
    both:     w <- w - eta_w * grad_w L_t(w, a_new)

The second-order term is the finite-difference Hessian-vector product of the reference recipe:
``(grad_a L_t(w + R v, a) - grad_a L_t(w - R v, a)) / 2R`` with ``v = xi * grad_w' L_v(w', a)`` and
``R = r / ||v||``, ``r = fd_radius = 0.01``. ``xi``, ``mu``, ``wd`` and ``m`` come from the weight optimizer:
each parameter group's current ``lr`` (unless ``xi`` is given), ``momentum`` and ``weight_decay``, and the
parameter's ``momentum_buffer`` state (SGD) — so w' is exactly the next plain-SGD iterate. For optimizers
without those entries the unrolled step is a plain gradient step with their ``lr`` (and weight decay).

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
    >>> opt = DARTS(Net(), [gate], order=2)
    >>> batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    >>> "loss_v" in opt.step(batch, batch)
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .base import SearchOptimizer, _finite_float, _total_norm

__all__ = ["DARTS"]


class DARTS(SearchOptimizer):
    """DARTS search optimizer, ``order=1`` (first order) or ``order=2`` (unrolled, finite differences).

    Args:
        model: the network w.
        arch_params: alpha.
        order: 1 or 2.
        xi: unroll step of the second-order approximation; None (default) uses each parameter group's
            current learning rate, as the DARTS reference code does.
        fd_radius: r in ``R = r / ||v||`` of the finite-difference Hessian-vector product (default 0.01).
        lam, beta: accepted for a call signature shared with `RARTS`; unused.
        **kwargs: the options of `rartsprune.optim.base.SearchOptimizer`. ``grad_scaler`` works
            with ``order=2`` too (gradients are unscaled before the unrolled step).
    """

    method = "darts"

    def __init__(
        self,
        model: nn.Module,
        arch_params: Sequence[Tensor],
        *,
        order: int = 1,
        xi: float | None = None,
        fd_radius: float = 0.01,
        lam: float | None = None,
        beta: float | None = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(order, bool) or order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order!r}")
        self.order = int(order)
        self.method = f"darts{self.order}"  # type: ignore[misc]  # darts1 / darts2, as in METHODS
        self.xi = None if xi is None else _finite_float("xi", xi, nonneg=True)
        self.fd_radius = _finite_float("fd_radius", fd_radius, positive=True)
        super().__init__(model, arch_params, **kwargs)

    def _search_step(self, batch_t: Any, batch_v: Any) -> dict[str, Tensor]:
        net = self._y
        if self.order == 1:
            # a <- a - eta_a * grad_a L_v(w, a)
            loss_v, ga = self._pass(net, batch_v, "v", weights=False, alpha=True, tag="L_v(w, alpha)")
        else:
            # a <- a - eta_a * (grad_a L_v(w', a) - xi * Hessian-vector product)
            loss_v, ga = self._unrolled_arch_grad(batch_t, batch_v)
        self._descend_arch([(1.0, ga)])
        # w <- w - eta_w * grad_w L_t(w, a_new)
        loss_t, _ = self._pass(net, batch_t, "t", weights=True, alpha=False, tag="L_t(w, alpha)")
        self._descend(net, tag="L_t w.r.t. w")
        return {"loss_t": loss_t, "loss_v": loss_v}

    def _unrolled_arch_grad(self, batch_t: Any, batch_v: Any) -> tuple[Tensor, list[Tensor]]:
        """grad_a L_v(w', a) - grad2_{a,w} L_t(w, a) (xi * grad_w' L_v(w', a)), w restored afterwards."""
        net = self._y
        weights = net.weights
        with torch.no_grad():
            w0 = [p.detach().clone() for p in weights]

        # w' = w - xi * (mu * m + grad_w L_t(w, a) + wd * w)
        self._pass(net, batch_t, "t", weights=True, alpha=False, tag="L_t(w, alpha) [unrolled step]")
        grads = self._weight_grads(net)
        self._watch("gradient of L_t(w, alpha) [unrolled step]", _total_norm(grads), is_grad=True)
        with torch.no_grad():
            steps, xis = self._unrolled_steps(grads)
            torch._foreach_sub_(weights, steps)

        # grad_a L_v(w', a) and v = xi * grad_w' L_v(w', a)
        loss_v, ga = self._pass(net, batch_v, "v", weights=True, alpha=True, tag="L_v(w', alpha)")
        assert ga is not None
        with torch.no_grad():
            v = self._weight_grads(net)
            torch._foreach_mul_(v, xis)
            self._watch("gradient of L_v(w', alpha) w.r.t. w'", _total_norm(v), is_grad=True)
            for p in weights:
                p.grad = None
            radius = self.fd_radius / _total_norm(v).clamp_min(1e-12)
            rv = torch._foreach_mul(v, radius)
            # w + R v
            torch._foreach_copy_(weights, w0)
            torch._foreach_add_(weights, rv)
        _, g_plus = self._pass(net, batch_t, "t", weights=False, alpha=True, tag="L_t(w + Rv, alpha)")
        with torch.no_grad():  # w - R v
            torch._foreach_copy_(weights, w0)
            torch._foreach_sub_(weights, rv)
        _, g_minus = self._pass(net, batch_t, "t", weights=False, alpha=True, tag="L_t(w - Rv, alpha)")
        with torch.no_grad():
            torch._foreach_copy_(weights, w0)  # exactly the weights we started from
            assert g_plus is not None and g_minus is not None
            hvp = torch._foreach_sub(g_plus, g_minus)
            torch._foreach_div_(hvp, 2 * radius)
            torch._foreach_sub_(ga, hvp)
        return loss_v, ga

    def _unrolled_steps(self, grads: list[Tensor]) -> tuple[list[Tensor], list[float]]:
        """Per weight: the unrolled displacement ``xi * (mu * m + g + wd * w)`` and its ``xi``."""
        opt = self._y.optimizer
        index = {id(p): i for i, p in enumerate(self._y.weights)}
        steps: list[Tensor] = [torch.zeros_like(g) for g in grads]
        xis: list[float] = [0.0] * len(grads)  # weights outside the optimizer do not move
        for group in opt.param_groups:
            lr = float(group.get("lr", 0.0))
            xi = lr if self.xi is None else self.xi
            mu = float(group.get("momentum", 0.0) or 0.0)
            wd = float(group.get("weight_decay", 0.0) or 0.0)
            for p in group["params"]:
                i = index.get(id(p))
                if i is None:
                    continue
                d = grads[i].clone()
                if wd:
                    d.add_(p.detach(), alpha=wd)
                buf = opt.state.get(p, {}).get("momentum_buffer") if mu else None
                if buf is not None:
                    d.add_(buf, alpha=mu)
                steps[i] = d.mul_(xi)
                xis[i] = xi
        return steps, xis

    def _hparams(self) -> dict[str, Any]:
        return {"order": self.order, "xi": self.xi, "fd_radius": self.fd_radius}
