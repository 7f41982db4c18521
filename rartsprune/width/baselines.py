"""One-shot pruning baselines behind the width-search entry point: ``l1_norm``, ``random``, ``slimming``.

They share `rartsprune.prune`'s loop with the relaxed searches, so comparisons use the same data,
steps and fine-tuning: ``step`` trains the model on both halves of the split (plain training; for
``slimming`` with Network Slimming's ℓ1 subgradient on BatchNorm scales), and ``finalize`` ranks the
channels with the method's importance:

* ``l1_norm`` — the ℓ1 norm of each channel's weights over every layer of its group, via Torch-Pruning's
  ``GroupMagnitudeImportance`` (normalised by the group's mean, so groups are comparable);
* ``random`` — seeded uniform scores;
* ``slimming`` — |γ| of the channel's BatchNorm layers (Liu et al., 2017).

Data-parallel (several processes, an initialised ``torch.distributed`` process group): after
`BaselineTrainer.distribute` the trainer's forward passes go through ``DistributedDataParallel``, so every rank
steps on the gradient of the global batch (averaged during ``backward``, before Network Slimming's term and
the clipping) and holds the same weights; the ranking of the finished model is then the same on every rank
(``random`` is seeded, not drawn from the rank's generator).

Examples:
    >>> pruner = rartsprune.prune(model, ratio=0.4, method="l1_norm")  # doctest: +SKIP
    >>> pruner.search.distribute()  # inside a process group: train the baseline data-parallel  # doctest: +SKIP
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn as nn
import torch_pruning as tp

from ..errors import SearchError
from ..graph import build_dependency_graph, safe_index_mapping
from ..optim import distributed as ddp
from ..optim import get_rng_state, set_rng_state
from ..optim.base import default_loss
from ..scores import ScoreHandle, _check_inputs, _detach
from .selection import _raw_weight, unit_importance

__all__ = ["BASELINES", "BaselineTrainer", "baseline_importance", "slimming_layers"]

BASELINES = ("l1_norm", "random", "slimming")


def slimming_layers(handle: ScoreHandle) -> list[nn.Module]:
    """The BatchNorm layers the scores sit next to (Network Slimming's sparsity targets)."""
    modules = dict(handle.model.named_modules())
    out = []
    for g in handle.groups:
        for name, _, _ in g.placements:
            m = modules.get(name)  # None for a bare parameter (a class token)
            if isinstance(m, nn.modules.batchnorm._NormBase) and m.affine and m not in out:
                out.append(m)
    return out


class BaselineTrainer:
    """Plain training on both halves of the split (the ``step`` of the one-shot baselines).

    Args:
        model: the scored model (its scores are frozen at 1 and not trained).
        weights: the parameters to train.
        loss_fn: ``loss_fn(model, batch) -> scalar``.
        optimizer, scheduler: factories, as for the search optimizers.
        sparsity: Network Slimming's ``s``: ``s * sign(γ)`` is added to the gradient of every BN scale in
            ``bn_layers`` (0 for plain training).

    Data-parallel training: `distribute` (inside a process group).

    Examples:
        >>> net = nn.Sequential(nn.Linear(4, 3))
        >>> trainer = BaselineTrainer(net, list(net.parameters()), loss_fn=None, scheduler=None,
        ...                           optimizer=lambda p: torch.optim.SGD(p, lr=0.1), grad_clip=None,
        ...                           amp_dtype=None)
        >>> batch = (torch.randn(2, 4), torch.tensor([0, 2]))
        >>> trainer.step(batch, batch)["lr"], trainer.num_steps, trainer.distributed
        (0.1, 1, False)
    """

    method = "baseline"

    def __init__(
        self,
        model: nn.Module,
        weights: list[nn.Parameter],
        *,
        loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None,
        optimizer: Callable[[list[torch.Tensor]], torch.optim.Optimizer],
        scheduler: Callable[[torch.optim.Optimizer], Any] | None,
        grad_clip: float | None,
        amp_dtype: torch.dtype | None,
        sparsity: float = 0.0,
        bn_layers: list[nn.Module] | None = None,
    ) -> None:
        self.model = model
        self.weights = weights
        self.loss_fn = loss_fn or default_loss
        self.optimizer = optimizer(weights)
        self.scheduler = scheduler(self.optimizer) if scheduler is not None else None
        self.grad_clip = grad_clip
        self.amp_dtype = amp_dtype
        self.sparsity = float(sparsity)
        self.bn_weights = [_raw_weight(m) for m in (bn_layers or [])]
        self.num_steps = 0
        self._net: nn.Module = model  # what the forward passes call: the model, or its DDP wrapper

    @property
    def distributed(self) -> bool:
        """Whether the trainer trains data-parallel (`distribute` was called)."""
        return self._net is not self.model

    def distribute(self, ddp_kwargs: Mapping[str, Any] | None = None) -> None:
        """Train data-parallel from now on, on every rank of the initialised process group (call it on every
        rank, before the first `step`).

        The forward passes go through ``torch.nn.parallel.DistributedDataParallel`` (built by
        `rartsprune.optim.distributed.wrap_ddp`, which first gives every rank rank 0's weights and buffers):
        each rank steps on its part of the global batch, ``backward`` averages the gradients over the ranks,
        and only then are Network Slimming's ``s * sign(γ)`` (of the same γ on every rank) added and the
        gradients clipped, so every rank takes the step one process would take on the global batch (up to
        BatchNorm's per-rank batch statistics). A non-finite loss on any rank stops the step on every rank.
        ``ddp_kwargs``: passed to ``DistributedDataParallel``.

        Raises:
            SearchError: no process group is initialised.
        """
        if self.distributed:
            return
        weights = {id(p) for p in self.weights}
        frozen = [p for p in self.model.parameters() if id(p) not in weights]  # the scores: not trained
        self._net = ddp.wrap_ddp(self.model, ignore=frozen, ddp_kwargs=ddp_kwargs)

    def step(self, batch_t: Any, batch_v: Any) -> dict[str, float]:
        """One optimizer step on the mean loss of the two batches."""
        buffers = {k: v.clone() for k, v in self.model.state_dict().items() if not isinstance(v, nn.Parameter)}
        self.optimizer.zero_grad(set_to_none=True)
        device = self.weights[0].device.type
        ctx = torch.autocast(device_type=device, dtype=self.amp_dtype) if self.amp_dtype else nullcontext()
        with ctx:
            loss_t = self.loss_fn(self._net, batch_t)
            loss_v = self.loss_fn(self._net, batch_v)
        loss = 0.5 * (loss_t + loss_v)
        bad = torch.logical_not(torch.isfinite(loss.detach())).reshape(1).to(torch.int32)
        if self.distributed:  # every rank stops, or none: a rank alone in backward would wait forever
            bad = ddp.any_rank_max(bad)
        if bool(bad[0]):
            self.model.load_state_dict(buffers, strict=False)
            raise SearchError(f"non-finite training loss at step {self.num_steps + 1}; the model was left as before")
        loss.backward()
        if self.sparsity > 0:
            for w in self.bn_weights:
                if w.grad is not None:
                    w.grad.add_(self.sparsity * torch.sign(w.detach()))
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.weights, self.grad_clip)
        self.optimizer.step()
        self.num_steps += 1
        return {"loss_t": float(loss_t.detach()), "loss_v": float(loss_v.detach()), "lr": self.optimizer.param_groups[0]["lr"]}

    def step_schedulers(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "num_steps": self.num_steps,
            "rng": get_rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any], *, restore_rng: bool = True) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state.get("scheduler") is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        self.num_steps = int(state["num_steps"])
        if restore_rng:
            set_rng_state(state["rng"])


def _l1_importance(handle: ScoreHandle) -> dict[str, torch.Tensor]:
    """Torch-Pruning's group ℓ1 magnitude importance, per unit, on a plain copy of the model."""
    plain = copy.deepcopy(handle.model)
    _detach(plain, fold=True)
    inputs = _check_inputs(plain, handle.example_inputs)
    graph = build_dependency_graph(plain, inputs)
    modules = dict(plain.named_modules())
    scorer = tp.importance.GroupMagnitudeImportance(p=1, group_reduction="mean", normalizer="mean")
    out = {}
    for g in handle.groups:
        root = modules[g.name]
        pruner = graph.get_pruner_of_module(root)
        with safe_index_mapping():
            group = graph.get_pruning_group(root, pruner.prune_out_channels, list(range(g.channels)))
        with torch.no_grad():
            per_channel = scorer(group).detach().float().cpu()
        per_unit = torch.zeros(g.num_units).index_add_(0, torch.tensor(g.unit_of_channel), per_channel)
        counts = torch.zeros(g.num_units).index_add_(0, torch.tensor(g.unit_of_channel), torch.ones(g.channels))
        out[g.name] = per_unit / counts
    return out


def baseline_importance(handle: ScoreHandle, method: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per-unit importance of a baseline method (higher = keep)."""
    if method == "l1_norm":
        return _l1_importance(handle)
    if method == "random":
        gen = torch.Generator().manual_seed(seed)
        return {g.name: torch.rand(g.num_units, generator=gen) for g in handle.groups}
    if method == "slimming":
        imp = unit_importance(handle, "alpha_gamma")
        modules = dict(handle.model.named_modules())
        for g in handle.groups:  # Network Slimming only prunes channels that have a BN scale
            if not any(isinstance(modules.get(n), nn.modules.batchnorm._NormBase) for n, _, _ in g.placements):
                imp[g.name] = torch.full((g.num_units,), float("inf"))
        return imp
    raise ValueError(f"unknown baseline {method!r}; valid: {', '.join(BASELINES)}")
