"""The machinery every search optimizer shares: nets, inner optimizers, passes, descents, guard, state.

A *search optimizer* owns one or two copies of a network (the primary net ``y`` = ``model``; RARTS adds the
auxiliary net ``w``), the architecture parameters alpha shared by both, one inner torch optimizer (and
optional LR scheduler) per net and one for alpha. A method subclass only writes ``_search_step``, in terms
of four primitives:

* `SearchOptimizer._pass` — forward one net on one batch with L_t or L_v and backpropagate into the
  net's weights (left in ``.grad``) and/or alpha (returned);
* `SearchOptimizer._descend` — one step of a net's weight optimizer on
  ``scale * grad + beta * (net - toward)``, with gradient clipping;
* `SearchOptimizer._descend_arch` — one step of the alpha optimizer on a weighted sum of alpha
  gradients, plus the gradient of the optional alpha-only penalty, averaged across ranks under DDP;
* the non-finite guard: every loss and gradient norm is checked once at the end of the step (one host
  sync); a non-finite value restores everything the step changed and raises
  `rartsprune.errors.SearchError`.

Examples:
    >>> import torch
    >>> from torch import nn
    >>> from rartsprune.optim import DARTS
    >>> gate = nn.Parameter(torch.zeros(4))
    >>> class Net(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.fc = nn.Linear(4, 3)
    ...     def forward(self, x):
    ...         return self.fc(x * torch.sigmoid(gate))
    >>> opt = DARTS(Net(), [gate], order=1)
    >>> batch = (torch.randn(8, 4), torch.randint(0, 3, (8,)))
    >>> sorted(opt.step(batch, batch))[:3]
    ['loss_t', 'loss_v', 'lr']
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SearchError
from . import distributed as ddp
from .state import StepSnapshot, get_rng_state, set_rng_state

__all__ = [
    "SearchOptimizer",
    "LossFn",
    "OptimizerFactory",
    "SchedulerFactory",
    "default_loss",
    "default_weight_optimizer",
    "default_arch_optimizer",
]

LossFn = Callable[[nn.Module, Any], Tensor]
"""``loss_fn(net, batch) -> scalar Tensor``; ``net`` is the module to call (the DDP wrapper under DDP)."""
OptimizerFactory = Callable[[list[Tensor]], torch.optim.Optimizer]
SchedulerFactory = Callable[[torch.optim.Optimizer], Any]

_STATE_FORMAT = 1


def default_loss(net: nn.Module, batch: Any) -> Tensor:
    """Cross-entropy of ``net(inputs)`` against ``targets`` for ``batch = (inputs, targets)``.

    Examples:
        >>> import torch
        >>> float(default_loss(torch.nn.Identity(), (torch.zeros(2, 3), torch.tensor([0, 1])))) > 0
        True
    """
    try:
        inputs, targets = batch
    except (TypeError, ValueError) as exc:
        raise TypeError(
            "the default loss_fn wants batches (inputs, targets); pass loss_fn= for other batch types"
        ) from exc
    return F.cross_entropy(net(inputs), targets)


def default_weight_optimizer(params: list[Tensor]) -> torch.optim.Optimizer:
    """DARTS weight optimizer: SGD, lr 0.025, momentum 0.9, weight decay 3e-4."""
    return torch.optim.SGD(params, lr=0.025, momentum=0.9, weight_decay=3e-4)


def default_arch_optimizer(params: list[Tensor]) -> torch.optim.Optimizer:
    """DARTS architecture optimizer: Adam, lr 3e-4, betas (0.5, 0.999), weight decay 1e-3."""
    return torch.optim.Adam(params, lr=3e-4, betas=(0.5, 0.999), weight_decay=1e-3)


@dataclass
class _Net:
    """One network of the search: the module, what to call (DDP wrapper or module), its weights, optimizer."""

    name: str
    module: nn.Module
    call: nn.Module
    weights: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any


def _as_arch_list(arch_params: Any) -> list[Tensor]:
    if isinstance(arch_params, Tensor):
        arch_params = [arch_params]
    if isinstance(arch_params, (str, bytes)) or not isinstance(arch_params, Iterable):
        raise TypeError(f"arch_params must be a sequence of tensors, got {type(arch_params).__name__}")
    alphas = list(arch_params)
    if not alphas:
        raise ValueError("arch_params is empty: the search needs at least one architecture tensor")
    seen: set[int] = set()
    for i, a in enumerate(alphas):
        if not isinstance(a, Tensor):
            raise TypeError(f"arch_params[{i}] is a {type(a).__name__}, not a torch.Tensor")
        if not a.is_floating_point():
            raise TypeError(f"arch_params[{i}] has dtype {a.dtype}; architecture parameters must be floating point")
        if not a.requires_grad or not a.is_leaf:
            raise ValueError(
                f"arch_params[{i}] must be a leaf tensor with requires_grad=True (e.g. an nn.Parameter)"
            )
        if id(a) in seen:
            raise ValueError(f"arch_params[{i}] appears twice in arch_params")
        seen.add(id(a))
    return alphas


def _check_callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable or None, got {type(value).__name__}")


def _total_norm(tensors: Sequence[Tensor]) -> Tensor:
    """Euclidean norm of the concatenation of ``tensors`` (as ``clip_grad_norm_`` computes it)."""
    norms = [torch.linalg.vector_norm(t) for t in tensors] if len({t.device for t in tensors}) > 1 else None
    if norms is not None:
        return torch.linalg.vector_norm(torch.stack([n.to(tensors[0].device) for n in norms]))
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(list(tensors))))


def _zeros_if_none(grads: Sequence[Tensor | None], like: Sequence[Tensor]) -> list[Tensor]:
    return [torch.zeros_like(t) if g is None else g for g, t in zip(grads, like)]


class SearchOptimizer:
    """Base class of `RARTS`, `DARTS` and `MiLeNAS` (see the package docstring).

    Args:
        model: the primary net y (for one-network methods, the only net). Its "weights" are its parameters
            with ``requires_grad=True`` that are not architecture parameters (by identity).
        arch_params: alpha: leaf tensors with ``requires_grad=True`` used inside ``model.forward``; they may
            be registered parameters of ``model``.
        loss_fn: ``loss_fn(net, batch) -> Tensor``; default `default_loss` (cross-entropy on
            ``(inputs, targets)`` already on the model's device).
        loss_fn_t, loss_fn_v: per-split overrides of ``loss_fn`` (D_t and D_v batches).
        weight_optimizer: factory ``f(list_of_weights) -> Optimizer``; default
            `default_weight_optimizer`. Called once per net.
        arch_optimizer: factory for alpha; default `default_arch_optimizer`.
        weight_scheduler, arch_scheduler: factories ``f(optimizer) -> LRScheduler`` or None (constant LR);
            stepped by `step_schedulers`.
        arch_penalty: ``f() -> Tensor``, an alpha-only term (latency, l1) whose gradient is added to the
            alpha gradient of every method.
        arch_prox: ``f(lr) -> None``, called under ``no_grad`` after every alpha step with the alpha LR.
        grad_clip: max total gradient norm of each net's weight update (None: off).
        amp_dtype: ``torch.bfloat16`` / ``torch.float16`` / None: forward passes under ``torch.autocast``.
        grad_scaler: a ``torch.amp.GradScaler`` for fp16: losses are scaled before backward, gradients are
            unscaled right after; a step whose gradients overflow is undone as a whole, the scale is
            multiplied by the scaler's backoff factor and ``step`` returns ``{"skipped": 1.0, ...}``.
            The scale grows by the scaler's growth factor after ``growth_interval`` clean steps.
        distributed: wrap the nets in DistributedDataParallel (alpha excluded from DDP, its gradients
            averaged by the optimizer; alpha is broadcast from rank 0 at construction).
        ddp_kwargs: extra keyword arguments for DistributedDataParallel (e.g. ``find_unused_parameters``).
        guard_nonfinite: keep an undo snapshot of everything a step changes (one extra copy of weights,
            buffers and optimizer states in memory) so a non-finite step is rolled back. False: no snapshot;
            a non-finite step still raises SearchError but leaves the partly updated state.
    """

    method: ClassVar[str] = "base"
    _two_nets: ClassVar[bool] = False

    def __init__(
        self,
        model: nn.Module,
        arch_params: Sequence[Tensor],
        *,
        loss_fn: LossFn | None = None,
        loss_fn_t: LossFn | None = None,
        loss_fn_v: LossFn | None = None,
        weight_optimizer: OptimizerFactory | None = None,
        arch_optimizer: OptimizerFactory | None = None,
        weight_scheduler: SchedulerFactory | None = None,
        arch_scheduler: SchedulerFactory | None = None,
        arch_penalty: Callable[[], Tensor] | None = None,
        arch_prox: Callable[[float], None] | None = None,
        grad_clip: float | None = 5.0,
        amp_dtype: torch.dtype | None = None,
        grad_scaler: torch.amp.GradScaler | None = None,
        distributed: bool = False,
        ddp_kwargs: Mapping[str, Any] | None = None,
        guard_nonfinite: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        self._alpha = _as_arch_list(arch_params)
        self._alpha_ids = {id(a) for a in self._alpha}
        for name, value in [
            ("loss_fn", loss_fn), ("loss_fn_t", loss_fn_t), ("loss_fn_v", loss_fn_v),
            ("weight_optimizer", weight_optimizer), ("arch_optimizer", arch_optimizer),
            ("weight_scheduler", weight_scheduler), ("arch_scheduler", arch_scheduler),
            ("arch_penalty", arch_penalty), ("arch_prox", arch_prox),
        ]:
            _check_callable(name, value)
        base_loss = loss_fn or default_loss
        self._loss = {"t": loss_fn_t or base_loss, "v": loss_fn_v or base_loss}
        if grad_clip is not None and (isinstance(grad_clip, bool) or not grad_clip > 0):
            raise ValueError(f"grad_clip must be a positive number or None, got {grad_clip!r}")
        self.grad_clip = None if grad_clip is None else float(grad_clip)
        if amp_dtype not in (None, torch.bfloat16, torch.float16):
            raise ValueError(f"amp_dtype must be torch.bfloat16, torch.float16 or None, got {amp_dtype!r}")
        self.amp_dtype = amp_dtype
        if grad_scaler is not None and not isinstance(grad_scaler, torch.amp.GradScaler):
            raise TypeError(f"grad_scaler must be a torch.amp.GradScaler, got {type(grad_scaler).__name__}")
        self._scaler = grad_scaler if grad_scaler is not None and grad_scaler.is_enabled() else None
        self.arch_penalty = arch_penalty
        self.arch_prox = arch_prox
        self.distributed = bool(distributed)
        self._ddp_kwargs = dict(ddp_kwargs or {})
        if self.distributed and not ddp.is_initialized():
            raise SearchError(
                "distributed=True needs an initialised torch.distributed process group "
                "(call torch.distributed.init_process_group first)"
            )
        self.guard_nonfinite = bool(guard_nonfinite)

        aux = self._make_aux(model)  # RARTS: the auxiliary net w, built before any DDP wrapping
        self._y = self._make_net("model", model, weight_optimizer, weight_scheduler)
        self._w: _Net | None = None
        if aux is not None:
            self._w = self._make_net(
                "aux_model", aux, self._aux_weight_optimizer or weight_optimizer,
                self._aux_weight_scheduler or weight_scheduler,
            )
        self._mode_pairs = self._same_named_modules()
        arch_opt = (arch_optimizer or default_arch_optimizer)(list(self._alpha))
        if not isinstance(arch_opt, torch.optim.Optimizer):
            raise TypeError(f"arch_optimizer must return a torch.optim.Optimizer, got {type(arch_opt).__name__}")
        self._arch_opt = arch_opt
        self._arch_sched = arch_scheduler(arch_opt) if arch_scheduler is not None else None
        if self.distributed:
            ddp.broadcast_(self._alpha)

        self._num_steps = 0
        self._skipped_steps = 0
        self._growth_tracker = 0
        self._snapshot = StepSnapshot()
        self._checks: list[tuple[str, bool, Tensor]] = []
        self._inv_scale = 1.0
        # losses, norms and stats travel to the host in float64 (float32 where the device lacks float64)
        self._stat_dtype = torch.float32 if self._y.weights[0].device.type == "mps" else torch.float64

    # ------------------------------------------------------------------ construction hooks
    _aux_weight_optimizer: OptimizerFactory | None = None
    _aux_weight_scheduler: SchedulerFactory | None = None

    def _make_aux(self, model: nn.Module) -> nn.Module | None:
        """Two-network methods return the auxiliary net here; one-network methods return None."""
        return None

    def _weights_of(self, module: nn.Module) -> list[nn.Parameter]:
        return [p for p in module.parameters() if p.requires_grad and id(p) not in self._alpha_ids]

    def _make_net(
        self, name: str, module: nn.Module, opt_factory: OptimizerFactory | None,
        sched_factory: SchedulerFactory | None,
    ) -> _Net:
        weights = self._weights_of(module)
        if not weights:
            raise ValueError(f"{name} has no trainable weights besides the architecture parameters")
        opt = (opt_factory or default_weight_optimizer)(list(weights))
        if not isinstance(opt, torch.optim.Optimizer):
            raise TypeError(f"weight_optimizer must return a torch.optim.Optimizer, got {type(opt).__name__}")
        for group in opt.param_groups:
            if any(id(p) in self._alpha_ids for p in group["params"]):
                raise ValueError(f"the weight optimizer of {name} holds architecture parameters")
        sched = sched_factory(opt) if sched_factory is not None else None
        call = ddp.wrap_ddp(module, self._alpha, self._ddp_kwargs) if self.distributed else module
        return _Net(name, module, call, weights, opt, sched)

    def _same_named_modules(self) -> list[tuple[nn.Module, nn.Module]]:
        """``(module of y, module of w)`` for every name both nets have (the wrappers too, under DDP); ``[]``
        for one-network methods."""
        if self._w is None:
            return []
        aux = dict(self._w.module.named_modules())
        pairs = [(m, aux[name]) for name, m in self._y.module.named_modules() if name in aux]
        if self._y.call is not self._y.module and self._w.call is not self._w.module:
            pairs.append((self._y.call, self._w.call))
        return pairs

    def _follow_mode(self) -> None:
        """Give every module of the auxiliary net w the train / eval mode of its namesake in the model y.

        w is a copy of the model made once, in the model's mode at that time; without this a model put in
        training mode after the search optimizer was built (or switched to eval mode to validate and back)
        would leave w in its old mode: BatchNorm normalising with other statistics, dropout off, a torchvision
        detector returning detections instead of its losses. Each module's own flag is copied (not
        ``train(mode)``), so modules that keep their own mode, such as frozen normalisation layers, stay as
        they are in y.
        """
        for src, dst in self._mode_pairs:
            if dst.training != src.training:
                dst.training = src.training

    # ------------------------------------------------------------------ public surface
    @property
    def model(self) -> nn.Module:
        """The primary net y (unwrapped; for one-network methods the only net)."""
        return self._y.module

    @property
    def aux_model(self) -> nn.Module | None:
        """The auxiliary net w (unwrapped), or None for one-network methods."""
        return self._w.module if self._w is not None else None

    @property
    def arch_params(self) -> list[Tensor]:
        """The architecture parameters alpha (the same tensor objects the caller passed)."""
        return list(self._alpha)

    @property
    def num_steps(self) -> int:
        """Number of completed (not skipped) search steps."""
        return self._num_steps

    @property
    def skipped_steps(self) -> int:
        """Number of steps undone because of an fp16 gradient overflow (grad_scaler only)."""
        return self._skipped_steps

    @property
    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Inner optimizers: ``{"model": ..., ["aux_model": ...,] "arch": ...}``."""
        out = {n.name: n.optimizer for n in self._nets()}
        out["arch"] = self._arch_opt
        return out

    @property
    def schedulers(self) -> dict[str, Any]:
        """LR schedulers with the keys of `optimizers` (None where none was given)."""
        out = {n.name: n.scheduler for n in self._nets()}
        out["arch"] = self._arch_sched
        return out

    def step_schedulers(self) -> None:
        """Step every LR scheduler once (per epoch or per step, the caller's choice)."""
        for sched in self.schedulers.values():
            if sched is not None:
                sched.step()

    def step(self, batch_t: Any, batch_v: Any) -> dict[str, float]:
        """One search iteration on a batch from D_t and a batch from D_v.

        Returns a dict of floats with at least ``loss_t``, ``loss_v``, ``penalty``, ``lr`` (weight LR of
        ``model``), ``lr_arch``, and ``dist`` (= ||y - w||, after the step) for RARTS.

        The auxiliary net (RARTS) first takes the model's train / eval mode, module by module: put ``model``
        in the mode to search in (``model.train()``) before stepping, whenever the optimizer was built.

        Raises:
            SearchError: a loss or gradient was not finite; everything the step changed has been restored
                (unless ``guard_nonfinite=False``). Any exception raised by a loss function also restores.
        """
        self._follow_mode()  # w trains in y's mode, whatever the mode when w was copied
        self._checks = []
        self._inv_scale = 1.0 / self._scaler.get_scale() if self._scaler is not None else 1.0
        if self.guard_nonfinite:
            self._snapshot.capture(self._protected_tensors(), list(self.optimizers.values()))
        try:
            stats = self._search_step(batch_t, batch_v)
            stats["penalty"] = self._last_penalty
        except BaseException:
            self._undo()
            raise
        return self._finish(stats)

    # ------------------------------------------------------------------ the primitives
    def _search_step(self, batch_t: Any, batch_v: Any) -> dict[str, Tensor]:
        raise NotImplementedError

    def _nets(self) -> list[_Net]:
        return [self._y] if self._w is None else [self._w, self._y]

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=self._y.weights[0].device.type, dtype=self.amp_dtype)

    def _watch(self, tag: str, value: Tensor, *, is_grad: bool) -> None:
        """Record a scalar (a loss or a gradient norm) to be checked for finiteness at the end of the step."""
        value = value.detach().reshape(())
        if value.dtype != self._stat_dtype:
            value = value.to(self._stat_dtype)
        self._checks.append((tag, is_grad, value))

    def _pass(
        self, net: _Net, batch: Any, split: str, *, weights: bool, alpha: bool, tag: str
    ) -> tuple[Tensor, list[Tensor] | None]:
        """Forward ``net`` on ``batch`` with the loss of ``split`` ("t" or "v") and backpropagate.

        ``weights=True``: gradients of the net's weights are left (loss-scaled) in their ``.grad``, reduced
        across ranks by DDP. ``alpha=True``: the (unscaled, local) alpha gradients are returned. A pass with
        ``weights=False`` differentiates w.r.t. alpha only (no weight gradients are computed).
        """
        sync = net.call.no_sync() if (self.distributed and not weights) else nullcontext()
        with sync:
            with self._autocast():
                loss = self._loss[split](net.call, batch)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise TypeError(
                    f"loss_fn for {tag} must return a scalar tensor, got "
                    f"{type(loss).__name__ if not isinstance(loss, Tensor) else tuple(loss.shape)}"
                )
            if not loss.requires_grad:
                raise SearchError(f"{tag} does not depend on any weight or architecture parameter")
            self._watch(tag, loss, is_grad=False)
            scaled = self._scaler.scale(loss) if self._scaler is not None else loss
            alpha_grads: list[Tensor] | None = None
            if weights:
                for p in net.weights:
                    p.grad = None
                for a in self._alpha:
                    a.grad = None
                if self.distributed:
                    # DDP's reducer needs a plain backward (it misses gradients of backward(inputs=...))
                    scaled.backward()
                else:
                    torch.autograd.backward(scaled, inputs=net.weights + (self._alpha if alpha else []))
                if alpha:
                    alpha_grads = [a.grad if a.grad is not None else torch.zeros_like(a) for a in self._alpha]
                for a in self._alpha:
                    a.grad = None
            elif alpha:
                grads = torch.autograd.grad(scaled, self._alpha, allow_unused=True)
                alpha_grads = _zeros_if_none(grads, self._alpha)
        if alpha_grads is not None and self._inv_scale != 1.0:
            torch._foreach_mul_(alpha_grads, self._inv_scale)
        return loss.detach(), alpha_grads

    def _weight_grads(self, net: _Net) -> list[Tensor]:
        """The weights' ``.grad`` tensors (zeros for weights the loss did not reach), unscaled."""
        for p in net.weights:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in net.weights]
        if self._inv_scale != 1.0:
            torch._foreach_mul_(grads, self._inv_scale)
        return grads

    @torch.no_grad()
    def _descend(
        self, net: _Net, *, tag: str, scale: float = 1.0, toward: _Net | None = None, beta: float = 0.0
    ) -> None:
        """One weight-optimizer step of ``net`` on ``scale * grad + beta * (net - toward)``, clipped."""
        grads = self._weight_grads(net)
        if scale != 1.0:
            torch._foreach_mul_(grads, scale)
        if toward is not None and beta != 0.0:
            torch._foreach_add_(grads, torch._foreach_sub(net.weights, toward.weights), alpha=beta)
        if self.grad_clip is not None:
            norm = torch.nn.utils.clip_grad_norm_(net.weights, self.grad_clip)
        else:
            norm = _total_norm(grads)
        self._watch(f"gradient of {tag}", norm, is_grad=True)
        net.optimizer.step()

    def _descend_arch(self, terms: Sequence[tuple[float, list[Tensor]]]) -> None:
        """One alpha-optimizer step on ``sum(c * g for c, g in terms)`` (+ the penalty gradient)."""
        penalty_grads = self._penalty_grads()
        with torch.no_grad():
            coef0, first = terms[0]
            grads = [g.mul(coef0) for g in first] if coef0 != 1.0 else [g.clone() for g in first]
            for coef, more in terms[1:]:
                torch._foreach_add_(grads, more, alpha=coef)
            if self.distributed:
                ddp.all_reduce_mean_(grads)
            if penalty_grads is not None:
                torch._foreach_add_(grads, penalty_grads)
            self._watch("gradient of the architecture objective", _total_norm(grads),
                        is_grad=True)
            for a, g in zip(self._alpha, grads):
                a.grad = g
            self._arch_opt.step()
            for a in self._alpha:
                a.grad = None
            if self.arch_prox is not None:
                self.arch_prox(float(self._arch_opt.param_groups[0]["lr"]))

    def _penalty_grads(self) -> list[Tensor] | None:
        if self.arch_penalty is None:
            self._last_penalty = torch.zeros((), device=self._alpha[0].device)
            return None
        value = self.arch_penalty()
        if not isinstance(value, Tensor) or value.numel() != 1:
            raise TypeError("arch_penalty must return a scalar tensor")
        self._last_penalty = value.detach().reshape(())
        self._watch("arch_penalty", value, is_grad=False)
        if not value.requires_grad:
            return None
        grads = torch.autograd.grad(value, self._alpha, allow_unused=True)
        return _zeros_if_none(grads, self._alpha)

    _last_penalty: Tensor

    # ------------------------------------------------------------------ guard and bookkeeping
    def _protected_tensors(self) -> list[Tensor]:
        tensors: list[Tensor] = list(self._alpha)
        for net in self._nets():
            tensors.extend(net.module.state_dict(keep_vars=True).values())
        return tensors

    def _undo(self) -> None:
        if self.guard_nonfinite:
            self._snapshot.restore()
        for net in self._nets():
            for p in net.weights:
                p.grad = None
        for a in self._alpha:
            a.grad = None

    def _finish(self, stats: dict[str, Tensor]) -> dict[str, float]:
        device = self._y.weights[0].device
        keys = list(stats)
        watched = torch.stack([v if v.device == device else v.to(device) for _, _, v in self._checks])
        flags = torch.logical_not(torch.isfinite(watched)).to(self._stat_dtype)
        if self.distributed:
            flags = ddp.any_rank_max(flags)
        values = torch.stack([stats[k].detach().to(device=device, dtype=self._stat_dtype).reshape(()) for k in keys])
        host = torch.cat([flags, values]).tolist()  # the step's only host synchronisation
        n = len(self._checks)
        bad = [(tag, is_grad) for (tag, is_grad, _), f in zip(self._checks, host[:n]) if f > 0]
        out = dict(zip(keys, host[n:]))
        out["lr"] = float(self._y.optimizer.param_groups[0]["lr"])
        out["lr_arch"] = float(self._arch_opt.param_groups[0]["lr"])
        if bad:
            self._undo()
            if self._scaler is not None and bad[0][1]:  # the first failure (in execution order) is a gradient
                scale = self._scaler.get_scale()
                self._scaler.update(new_scale=scale * self._scaler.get_backoff_factor())
                self._growth_tracker = 0
                self._skipped_steps += 1
                out.update(skipped=1.0, loss_scale=float(self._scaler.get_scale()))
                return out
            raise SearchError(
                f"{type(self).__name__}: non-finite {bad[0][0]} at step {self._num_steps}"
                + (" (the step was undone)" if self.guard_nonfinite else " (guard_nonfinite=False: not undone)")
            )
        self._num_steps += 1
        if self._scaler is not None:
            self._growth_tracker += 1
            scale = self._scaler.get_scale()
            if self._growth_tracker >= self._scaler.get_growth_interval():
                self._scaler.update(new_scale=scale * self._scaler.get_growth_factor())
                self._growth_tracker = 0
            out.update(skipped=0.0, loss_scale=float(self._scaler.get_scale()))
        return out

    # ------------------------------------------------------------------ checkpointing
    def _hparams(self) -> dict[str, Any]:
        return {}

    def _load_hparams(self, hparams: Mapping[str, Any]) -> None:
        for k, v in hparams.items():
            setattr(self, k, v)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume bit-identically: nets, alpha, optimizers, schedulers, step count, RNG.

        Tensors are references to the live state (like ``nn.Module.state_dict``): ``torch.save`` the result
        (it loads with ``weights_only=True``) or deep-copy it before stepping further.

        Examples:
            >>> import io, torch
            >>> buf = io.BytesIO(); torch.save(opt.state_dict(), buf)  # doctest: +SKIP
        """
        return {
            "format": _STATE_FORMAT,
            "method": self.method,
            "hparams": self._hparams(),
            "num_steps": self._num_steps,
            "skipped_steps": self._skipped_steps,
            "nets": {n.name: n.module.state_dict() for n in self._nets()},
            "arch_params": [a.detach() for a in self._alpha],
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: (s.state_dict() if s is not None else None) for k, s in self.schedulers.items()},
            "grad_scaler": self._scaler.state_dict() if self._scaler is not None else None,
            "growth_tracker": self._growth_tracker,
            "rng": get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, restore_rng: bool = True) -> None:
        """Restore a `state_dict` into this (freshly built, same-shaped) optimizer.

        Hyper-parameters recorded in the checkpoint (``lam``, ``beta``, ``mode``, ``xi``...) replace the
        constructor's. ``restore_rng=False`` leaves the global RNG alone.

        Raises:
            ValueError: the checkpoint is of another method or format, or its nets/schedulers do not match.
        """
        if not isinstance(state, Mapping) or state.get("format") != _STATE_FORMAT:
            raise ValueError(f"not a rartsprune search-optimizer state (format {_STATE_FORMAT} expected)")
        if state.get("method") != self.method:
            raise ValueError(f"checkpoint is for method {state.get('method')!r}, this optimizer is {self.method!r}")
        nets = {n.name: n for n in self._nets()}
        if set(state["nets"]) != set(nets):
            raise ValueError(f"checkpoint holds nets {sorted(state['nets'])}, this optimizer has {sorted(nets)}")
        alphas = state["arch_params"]
        if len(alphas) != len(self._alpha) or any(a.shape != b.shape for a, b in zip(alphas, self._alpha)):
            raise ValueError("checkpoint arch_params do not match this optimizer's in number or shape")
        for key, sched in self.schedulers.items():
            if (state["schedulers"].get(key) is None) != (sched is None):
                raise ValueError(f"checkpoint and this optimizer disagree on whether {key!r} has an LR scheduler")
        if (state.get("grad_scaler") is None) != (self._scaler is None):
            raise ValueError("checkpoint and this optimizer disagree on whether a grad_scaler is used")
        for name, net in nets.items():
            net.module.load_state_dict(state["nets"][name])
        with torch.no_grad():
            for a, src in zip(self._alpha, alphas):
                a.copy_(src)
        for key, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][key])
        for key, sched in self.schedulers.items():
            if sched is not None:
                sched.load_state_dict(state["schedulers"][key])
        if self._scaler is not None:
            self._scaler.load_state_dict(state["grad_scaler"])
        self._growth_tracker = int(state.get("growth_tracker", 0))
        self._num_steps = int(state["num_steps"])
        self._skipped_steps = int(state.get("skipped_steps", 0))
        self._load_hparams(state.get("hparams", {}))
        self._snapshot.clear()
        if restore_rng:
            set_rng_state(state["rng"])

    def __repr__(self) -> str:
        hp = ", ".join(f"{k}={v!r}" for k, v in self._hparams().items())
        return (
            f"{type(self).__name__}({hp}{', ' if hp else ''}arch_params={len(self._alpha)}, "
            f"steps={self._num_steps})"
        )


def _finite_float(name: str, value: Any, *, positive: bool = False, nonneg: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if nonneg and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value
