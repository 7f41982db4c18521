"""RARTS: the relaxed, first-order architecture search of Xue, Qi and Xin (IEEE Access 2022).

Two nets with the same shapes share the architecture parameters alpha: the auxiliary net ``w`` is trained on
D_t, the primary net ``y`` on D_v, and alpha minimises the relaxed Lagrangian

    L(y, w, a) = L_v(y, a) + lam * L_t(w, a) + beta/2 * ||y - w||^2   (+ penalty(a))

by one Gauss-Seidel sweep per step (Eq. 7 of the paper) — no second derivatives:

    (1) w <- w - eta_w * (lam * grad_w L_t(w, a) + beta * (w - y))
    (2) y <- y - eta_y * (grad_y L_v(y, a) + beta * (y - w_new))
    (3) a <- a - eta_a * (lam * grad_a L_t(w_new, a) + grad_a L_v(y_new, a) [+ grad_a penalty(a)])

with the inner optimizers' momentum / weight decay applied on top as usual.

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
    >>> opt = RARTS(Net(), [gate], lam=1.0, beta=1.0, update="fused")
    >>> batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    >>> stats = opt.step(batch, batch)
    >>> opt.aux_model.fc.weight is not opt.model.fc.weight
    True
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn

from .base import OptimizerFactory, SchedulerFactory, SearchOptimizer, _finite_float, _total_norm

__all__ = ["RARTS", "RARTS_MODES"]

RARTS_MODES = ("exact", "fused")


class RARTS(SearchOptimizer):
    """RARTS search optimizer (see the module docstring for the update).

    Args:
        model: the primary net y.
        arch_params: alpha, shared by y and w.
        lam: weight lambda of the training loss L_t in the Lagrangian (default 1.0). With lam = 1 the two
            data halves count equally in the alpha gradient, as MiLeNAS's default does for its lambda; the
            solvable model of the paper (Section III-D, Fig. 1) uses lam = beta = 15. We could not verify the
            values used for the paper's CIFAR-10 searches from this workplace, so treat 1.0 as a neutral
            starting point to tune, not as the paper's setting.
        beta: coupling beta of the two nets (default 1.0). The term beta * (w - y) acts like a weight decay
            pulling each net towards the other; with the DARTS weight optimizer (lr 0.025, momentum 0.9) and
            beta = 1 the gap ||y - w|| relaxes within a few dozen steps while the data gradients still dominate
            each net's update (the heavy-ball iteration of the coupling alone is stable for
            lr * 2 * beta < 2 * (1 + momentum), i.e. beta < 76 at lr 0.025). beta = 0 decouples the nets;
            large beta forces w = y. Same caveat as ``lam`` on the paper's values.
        update: ``"exact"`` — Eq. (7): alpha gradients at the *updated* nets, four passes per step (two with
            weight gradients, two alpha-only). ``"fused"`` — an approximation that takes the alpha gradients
            from the same two passes as the weight gradients, i.e. at the nets *before* steps (1)-(2)
            (Jacobi in alpha, Gauss-Seidel in the weights); two passes per step. Both have the same fixed
            points; ``fused`` differs from ``exact`` by O(eta_w) per step.
        mode: deprecated name of ``update`` (``mode`` is ratio / ℓ1 in `rartsprune.prune`).
        aux_model: the auxiliary net w, if the caller built it (same parameter names and shapes as
            ``model``, sharing the alpha objects registered in ``model``). Default: made from ``model``.
        aux_init: ``"copy"`` (deep copy of model, alpha shared) or ``"reinit"`` (that copy, then every
            submodule's ``reset_parameters()`` with the current torch RNG: the paper allows different
            initialisations of w and y). Ignored when ``aux_model`` is given.
        aux_weight_optimizer, aux_weight_scheduler: factories for w if they differ from y's
            (default: ``weight_optimizer`` / ``weight_scheduler``).
        **kwargs: the options of `rartsprune.optim.base.SearchOptimizer` (loss functions,
            optimizers, schedulers, arch_penalty, arch_prox, grad_clip, amp, distributed...).
    """

    method = "rarts"
    _two_nets = True

    def __init__(
        self,
        model: nn.Module,
        arch_params: Sequence[Tensor],
        *,
        lam: float = 1.0,
        beta: float = 1.0,
        update: Literal["exact", "fused"] = "exact",
        mode: Literal["exact", "fused"] | None = None,
        aux_model: nn.Module | None = None,
        aux_init: Literal["copy", "reinit"] = "copy",
        aux_weight_optimizer: OptimizerFactory | None = None,
        aux_weight_scheduler: SchedulerFactory | None = None,
        **kwargs: Any,
    ) -> None:
        self.lam = _finite_float("lam", lam, nonneg=True)
        self.beta = _finite_float("beta", beta, nonneg=True)
        if mode is not None:  # the name before 0.2: "mode" means ratio / l1 in rartsprune.prune
            warnings.warn("RARTS(mode=) is deprecated, use update=", DeprecationWarning, stacklevel=2)
            update = mode
        if update not in RARTS_MODES:
            raise ValueError(f"update must be one of {RARTS_MODES}, got {update!r}")
        self.update = update
        if aux_init not in ("copy", "reinit"):
            raise ValueError(f"aux_init must be 'copy' or 'reinit', got {aux_init!r}")
        if aux_model is not None and not isinstance(aux_model, nn.Module):
            raise TypeError(f"aux_model must be an nn.Module, got {type(aux_model).__name__}")
        self._aux_given = aux_model
        self._aux_init = aux_init
        self._aux_weight_optimizer = aux_weight_optimizer
        self._aux_weight_scheduler = aux_weight_scheduler
        super().__init__(model, arch_params, **kwargs)

    # ------------------------------------------------------------------ the update
    def _search_step(self, batch_t: Any, batch_v: Any) -> dict[str, Tensor]:
        """One Gauss-Seidel sweep of Eq. (7): w, then y (seeing the new w), then alpha (seeing both)."""
        w, y, lam, beta = self._w, self._y, self.lam, self.beta
        fused = self.update == "fused"
        assert w is not None

        # (1) w <- w - eta_w * (lam * grad_w L_t(w, a) + beta * (w - y))
        loss_t, ga_t = self._pass(w, batch_t, "t", weights=True, alpha=fused, tag="L_t(w, alpha)")
        self._descend(w, scale=lam, toward=y, beta=beta, tag="the Lagrangian w.r.t. w")

        # (2) y <- y - eta_y * (grad_y L_v(y, a) + beta * (y - w_new))
        loss_v, ga_v = self._pass(y, batch_v, "v", weights=True, alpha=fused, tag="L_v(y, alpha)")
        self._descend(y, scale=1.0, toward=w, beta=beta, tag="the Lagrangian w.r.t. y")

        # (3) a <- a - eta_a * (lam * grad_a L_t(w_new, a) + grad_a L_v(y_new, a) [+ grad_a penalty(a)])
        if not fused:  # exact: alpha gradients at the updated nets (two alpha-only passes)
            _, ga_t = self._pass(w, batch_t, "t", weights=False, alpha=True, tag="L_t(w_new, alpha)")
            _, ga_v = self._pass(y, batch_v, "v", weights=False, alpha=True, tag="L_v(y_new, alpha)")
        self._descend_arch([(lam, ga_t), (1.0, ga_v)])

        return {"loss_t": loss_t, "loss_v": loss_v, "dist": self._distance()}

    @torch.no_grad()
    def _distance(self) -> Tensor:
        """||y - w|| over all weights."""
        assert self._w is not None
        return _total_norm(torch._foreach_sub(self._y.weights, self._w.weights))

    # ------------------------------------------------------------------ the auxiliary net
    def _make_aux(self, model: nn.Module) -> nn.Module:
        if self._aux_given is not None:
            self._check_aux(model, self._aux_given)
            return self._aux_given
        aux = copy.deepcopy(model, memo={id(a): a for a in self._alpha})
        if self._aux_init == "reinit":
            _reinit(aux, self._alpha)
        return aux

    def _check_aux(self, model: nn.Module, aux: nn.Module) -> None:
        if aux is model:
            raise ValueError("aux_model is the same object as model; pass a separate copy (or None)")
        mine = dict(model.named_parameters())
        theirs = dict(aux.named_parameters())
        for name, p in mine.items():
            q = theirs.get(name)
            if q is None:
                raise ValueError(f"aux_model has no parameter {name!r} (model has one)")
            if id(p) in self._alpha_ids:
                if q is not p:
                    raise ValueError(
                        f"aux_model's {name!r} is not the architecture parameter registered in model under "
                        "that name; both nets must share the same alpha objects"
                    )
            elif q is p:
                raise ValueError(f"aux_model shares the weight {name!r} with model; w and y need their own weights")
            elif q.shape != p.shape:
                raise ValueError(f"aux_model's {name!r} has shape {tuple(q.shape)}, model's {tuple(p.shape)}")
        extra = sorted(set(theirs) - set(mine))
        if extra:
            raise ValueError(f"aux_model has parameters that model lacks: {extra[:5]}")
        if len(self._weights_of(model)) != len(self._weights_of(aux)):
            raise ValueError("aux_model and model differ in which parameters are trainable (requires_grad)")

    def _hparams(self) -> dict[str, Any]:
        return {"lam": self.lam, "beta": self.beta, "update": self.update}

    def _load_hparams(self, hparams: Mapping[str, Any]) -> None:
        hparams = dict(hparams)
        if "mode" in hparams:  # a state saved before the rename
            hparams["update"] = hparams.pop("mode")
        super()._load_hparams(hparams)

    @property
    def mode(self) -> str:
        """Deprecated name of `update`."""
        warnings.warn("RARTS.mode is deprecated, use RARTS.update", DeprecationWarning, stacklevel=2)
        return self.update


def _reinit(module: nn.Module, alphas: Sequence[Tensor]) -> None:
    """Call ``reset_parameters()`` on every submodule of ``module``, keeping the shared alpha unchanged."""
    saved = [a.detach().clone() for a in alphas]
    count = 0
    for sub in module.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            reset()
            count += 1
    with torch.no_grad():
        for a, s in zip(alphas, saved):
            a.copy_(s)
    if count == 0:
        raise ValueError("aux_init='reinit' found no submodule with reset_parameters(); pass aux_model instead")
