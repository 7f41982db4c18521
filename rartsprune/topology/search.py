"""Drive a topology search epoch by epoch: optimizer construction, alpha history, checkpoints.

`TopologySearch` wraps a search network (`NatsSearchNetwork` or `DartsSearchNetwork`)
and a relaxed optimizer from `rartsprune.optim` built from a `SearchConfig` (SGD with cosine
decay for the weights, Adam for alpha, optional alpha warm-up and latency penalty). Each
`TopologySearch.run_epoch` consumes ``((x_t, t_t), (x_v, t_v))`` pairs, steps the schedulers, then
records the alpha snapshot and the derived architecture. `state_dict` / `load_state_dict`
(and `save` / `load`) resume a search exactly.

``distributed=True`` (inside an initialised process group, every rank given its part of each global batch):
the optimizer wraps the nets in DistributedDataParallel with alpha excluded and averages the alpha gradients
(`rartsprune.optim.distributed`), and each epoch's logged means are averaged over the ranks, so every rank
holds the same alpha, weights and log.

Examples:
    >>> import torch
    >>> from rartsprune.topology import NatsSearchNetwork
    >>> net = NatsSearchNetwork(C=4, N=1)
    >>> search = TopologySearch(net, SearchConfig(method="darts1", epochs=1))
    >>> x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    >>> search.run_epoch([((x, y), (x, y))], progress=False)["loss_t"] > 0
    True
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import SearchError
from ..optim import METHODS, make_search_optimizer
from ..optim import distributed as ddp
from .darts_space import DartsSearchNetwork
from .nats_space import NatsSearchNetwork

__all__ = ["SearchConfig", "TopologySearch", "arch_snapshot"]

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass
class SearchConfig:
    """Hyper-parameters of a topology search (defaults: the NATS-Bench DARTS setting).

    ``warmup_epochs``: epochs during which alpha is frozen (its learning rate is 0) while the weights
    train. ``beta=None`` keeps the optimizer's default coupling strength. ``latency_weight`` scales the
    latency penalty (used only when a penalty is given to `TopologySearch`).
    """

    method: str = "rarts"
    epochs: int = 100
    batch_size: int = 64
    lr: float = 0.025
    lr_min: float = 0.001
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    arch_lr: float = 3e-4
    arch_weight_decay: float = 1e-3
    arch_betas: tuple[float, float] = (0.5, 0.999)
    warmup_epochs: int = 0
    grad_clip: float | None = 5.0
    lam: float = 1.0
    beta: float | None = None
    update: str = "exact"
    latency_weight: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        self.arch_betas = (float(self.arch_betas[0]), float(self.arch_betas[1]))
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 0 <= self.warmup_epochs <= self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={self.epochs}], got {self.warmup_epochs}")
        for name in ("lr", "arch_lr"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 <= self.lr_min <= self.lr:
            raise ValueError(f"lr_min must be in [0, lr={self.lr}], got {self.lr_min}")
        if not self.latency_weight >= 0:
            raise ValueError(f"latency_weight must be >= 0, got {self.latency_weight}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict."""
        d = asdict(self)
        d["arch_betas"] = list(self.arch_betas)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        """Inverse of `to_dict` (unknown keys raise ``ValueError``)."""
        known = {f.name for f in fields(cls)} | {"mode"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SearchConfig keys {sorted(unknown)}")
        d = dict(data)
        if "mode" in d and "update" not in d:  # saved before the rename (``mode`` is ratio / l1 in prune())
            d["update"] = d.pop("mode")
        if "arch_betas" in d:
            d["arch_betas"] = tuple(d["arch_betas"])
        return cls(**d)


def arch_snapshot(net: nn.Module) -> dict[str, list[list[float]]]:
    """The raw alphas of ``net`` as nested lists, keyed by arch name (JSON-able)."""
    return {name: a.detach().float().cpu().tolist() for name, a in net.named_arch_parameters().items()}


def derive(net: nn.Module, *, exclude_none: bool = False) -> Any:
    """The discrete architecture of ``net``: a NATS arch string or a DARTS genotype dict.

    ``exclude_none`` applies to NATS cells (DARTS genotypes never pick ``none``).
    """
    if isinstance(net, NatsSearchNetwork):
        return net.derive_arch(exclude_none=exclude_none)
    if isinstance(net, DartsSearchNetwork):
        return net.genotype().to_dict()
    raise TypeError(f"unsupported search network {type(net).__name__}")


def _method_kwargs(config: SearchConfig) -> dict[str, Any]:
    kw: dict[str, Any] = {}
    if config.method == "rarts":
        kw["lam"] = config.lam
        kw["update"] = config.update
        if config.beta is not None:
            kw["beta"] = config.beta
    elif config.method == "milenas":
        kw["lam"] = config.lam
    return kw


class TopologySearch:
    """One topology search: a search network, its relaxed optimizer and the record of the run.

    Args:
        net: a `NatsSearchNetwork` or `DartsSearchNetwork`, already on its device.
        config: hyper-parameters (``config.method`` picks RARTS / DARTS-1 / DARTS-2 / MiLeNAS).
        arch_penalty: optional ``Callable[[], Tensor]`` (e.g. `LatencyPenalty` with the weight
            already applied) added to the alpha objective of every method.
        steps_per_epoch: used only for progress bars.
        distributed: data-parallel search (see the module docstring); needs an initialised process group.

    Attributes: ``optimizer`` (the `rartsprune.optim` object), ``epoch`` (epochs completed),
    ``history`` (alpha snapshots, the first one before any step), ``log`` (per-epoch mean stats, derived
    arch and seconds).
    """

    def __init__(
        self,
        net: nn.Module,
        config: SearchConfig,
        *,
        arch_penalty: Callable[[], torch.Tensor] | None = None,
        steps_per_epoch: int | None = None,
        distributed: bool = False,
    ) -> None:
        if not isinstance(net, (NatsSearchNetwork, DartsSearchNetwork)):
            raise TypeError(f"net must be a NATS or DARTS search network, got {type(net).__name__}")
        if config.method not in METHODS:
            raise ValueError(f"unknown search method {config.method!r}; valid: {', '.join(METHODS)}")
        self.net = net
        self.config = config
        self.steps_per_epoch = steps_per_epoch
        self.distributed = bool(distributed)
        cfg = config

        def weight_optimizer(params: list[nn.Parameter]) -> torch.optim.Optimizer:
            return torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.nesterov
            )

        def arch_optimizer(params: list[torch.Tensor]) -> torch.optim.Optimizer:
            return torch.optim.Adam(params, lr=cfg.arch_lr, betas=cfg.arch_betas, weight_decay=cfg.arch_weight_decay)

        def weight_scheduler(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.epochs, eta_min=cfg.lr_min)

        warm = cfg.warmup_epochs

        def arch_scheduler(opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
            return torch.optim.lr_scheduler.LambdaLR(opt, lambda ep: 0.0 if ep < warm else 1.0)

        self.optimizer = make_search_optimizer(
            cfg.method,
            net,
            net.arch_parameters(),
            weight_optimizer=weight_optimizer,
            arch_optimizer=arch_optimizer,
            weight_scheduler=weight_scheduler,
            arch_scheduler=arch_scheduler if warm > 0 else None,
            arch_penalty=arch_penalty,
            grad_clip=cfg.grad_clip,
            distributed=self.distributed,
            **_method_kwargs(cfg),
        )
        self.epoch = 0
        self.history: list[dict[str, Any]] = [{"epoch": 0, "alpha": arch_snapshot(net)}]
        self.log: list[dict[str, Any]] = []
        self.search_seconds = 0.0

    # -- running ---------------------------------------------------------------------------------------------
    def derive(self, *, exclude_none: bool = False) -> Any:
        """The current discrete architecture (NATS arch string or DARTS genotype dict); see `derive`."""
        return derive(self.net, exclude_none=exclude_none)

    def run_epoch(
        self,
        pairs: Iterable[tuple[Batch, Batch]],
        *,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        progress: bool = True,
        max_steps: int | None = None,
    ) -> dict[str, Any]:
        """One epoch of search steps over ``pairs``; steps the schedulers; returns the epoch's log entry.

        ``augment`` is applied to the inputs of both halves of every pair (e.g. random crop + flip on the
        GPU). ``max_steps`` caps the steps of the epoch (for smoke tests).
        """
        if self.epoch >= self.config.epochs:
            raise SearchError(f"the search already ran its {self.config.epochs} epochs")
        from tqdm.auto import tqdm

        total = self.steps_per_epoch if max_steps is None else min(max_steps, self.steps_per_epoch or max_steps)
        bar = tqdm(
            total=total,
            desc=f"{self.config.method} epoch {self.epoch + 1}/{self.config.epochs}",
            disable=None if progress else True,  # None: off when output is not a terminal
            leave=False,
            dynamic_ncols=True,
        )
        sums: dict[str, float] = {}
        steps = 0
        t0 = time.perf_counter()
        try:
            for (x_t, t_t), (x_v, t_v) in pairs:
                if max_steps is not None and steps >= max_steps:
                    break
                if augment is not None:
                    x_t, x_v = augment(x_t), augment(x_v)
                stats = self.optimizer.step((x_t, t_t), (x_v, t_v))
                for k, v in stats.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                steps += 1
                bar.update(1)
                if steps % 10 == 0 or steps == 1:
                    bar.set_postfix(loss_t=f"{stats['loss_t']:.3f}", loss_v=f"{stats['loss_v']:.3f}")
        finally:
            bar.close()
        if steps == 0:
            raise SearchError(f"epoch {self.epoch + 1} got no batches")
        self.optimizer.step_schedulers()
        seconds = time.perf_counter() - t0
        self.search_seconds += seconds
        self.epoch += 1
        entry: dict[str, Any] = self._mean_over_ranks({k: v / steps for k, v in sums.items()})
        entry.update({"epoch": self.epoch, "steps": steps, "seconds": seconds, "arch": self.derive()})
        self.log.append(entry)
        self.history.append({"epoch": self.epoch, "alpha": arch_snapshot(self.net)})
        return entry

    def _mean_over_ranks(self, means: dict[str, float]) -> dict[str, float]:
        """``means`` averaged over the ranks when distributed (each rank's mean over as many images: the mean
        over the global batches); as given in one process."""
        if not self.distributed or not means:
            return means
        device = self.net.arch_parameters()[0].device
        t = torch.tensor(list(means.values()), dtype=torch.float64, device=device)
        ddp.all_reduce_mean_([t])
        return dict(zip(means, t.tolist()))

    @property
    def done(self) -> bool:
        """All ``config.epochs`` epochs ran."""
        return self.epoch >= self.config.epochs

    # -- checkpoints -----------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume (tensors and plain Python only: loads with ``weights_only=True``)."""
        return {
            "optimizer": self.optimizer.state_dict(),  # nets (y, w), alpha, inner optimizers, schedulers
            "epoch": self.epoch,
            "history": self.history,
            "log": self.log,
            "search_seconds": self.search_seconds,
            "config": self.config.to_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else [],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from `state_dict`; ``SearchError`` if it belongs to another configuration."""
        saved = state.get("config")
        if saved != self.config.to_dict():
            diff = sorted(k for k in self.config.to_dict() if (saved or {}).get(k) != self.config.to_dict()[k])
            raise SearchError(f"checkpoint was written with a different search configuration (differs in {diff})")
        self.optimizer.load_state_dict(state["optimizer"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])
        self.log = list(state["log"])
        self.search_seconds = float(state.get("search_seconds", 0.0))
        torch.set_rng_state(state["rng_cpu"].cpu())
        if state.get("rng_cuda") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng_cuda"]])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write a checkpoint atomically (temp file, then rename)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        os.replace(tmp, path)
        return path

    def load(self, path: str | os.PathLike[str]) -> None:
        """Resume from a checkpoint written by `save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no search checkpoint at {path}")
        state = torch.load(path, map_location=_device_of(self.net), weights_only=True)
        self.load_state_dict(state)


def _device_of(net: nn.Module) -> torch.device:
    for p in net.parameters():
        return p.device
    return torch.device("cpu")
