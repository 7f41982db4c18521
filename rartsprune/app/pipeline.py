"""The whole width-search job for users who do not want to write the loop: train → search → prune → fine-tune.

Used by ``python -m rartsprune prune`` and the recipes. Every phase writes a checkpoint per epoch to
``OUT/checkpoint.pt`` (tensors and plain Python only, so it loads with ``torch.load(weights_only=True)``);
``resume=True`` continues from it. At the end ``OUT`` holds:

* ``baseline.pt`` — the model before the search (after ``pretrain_epochs``; ``stop_after="pretrain"`` ends
  the job there, to share one baseline between several searches via ``init_weights``; ``stop_after="search"``
  ends it after the search, and a copy of its ``checkpoint.pt`` resumed with another ``ratio`` / ``macs`` /
  ``params`` finalizes the same search at another size; a budget search (``macs`` / ``params``) has its own
  default pressure, ``rartsprune.width.BUDGET_DEFAULTS``, so search with a budget to finalize at budgets),
* ``plan.json`` + ``pruned.pt`` — the pruned model (re-create it with `rartsprune.apply_plan` on a fresh
  model, then ``load_state_dict``),
* ``results.json`` — accuracies (before search, after search, after pruning, after fine-tuning), parameters and
  MACs before/after, PRC, the MACs or parameter budget when one was given (``pruning.budget``), per-layer
  widths, wall times, per-epoch history. Right after surgery the BatchNorm statistics are re-estimated on
  ``bn_recalibration`` training batches (`rartsprune.recalibrate_bn`; 0 turns it off): ``after_prune`` is
  measured after that, ``after_prune_stale_bn`` before it,
* ``scores.png`` (|α| histogram per layer) and ``widths.png`` (kept channels per layer) when matplotlib is there.

Examples:
    >>> from rartsprune.app.pipeline import PruneJob, run
    >>> results = run(PruneJob(model="torchvision:resnet18", data="fake", out="runs/demo",
    ...                        search_epochs=1, finetune_epochs=1, train_subset=256))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from .._version import __version__
from ..calibrate import has_running_stats, recalibrate_bn
from ..devices import resolve_device
from ..flops import flops_report
from ..optim import get_rng_state, set_rng_state
from ..split import PairedLoader, split_dataset
from ..surgery import PruningPlan, apply_plan
from ..width import DEFAULT_RATIO, SelectionConfig, WidthSearchConfig, prune
from ..width.budget import BUDGET_KINDS, resolve_budget
from ..width.importance import IMPORTANCES
from . import loop
from .data import default_augment, load_dataset, make_loader, num_classes, to_device_batch
from .loop import atomic_save, map_batches
from .zoo import build_model

__all__ = ["PruneJob", "run", "evaluate", "train_epoch", "resolve_device"]

_CKPT_FORMAT = "rartsprune-job/1"


@dataclass
class PruneJob:
    """Settings of a width-search job (the command line's flags, one to one).

    ``model_factory(num_classes) -> nn.Module`` replaces ``model`` (a spec string) for recipes with their own
    architectures; it is not saved in checkpoints, so pass the same one when resuming.

    The size of the pruned model (``mode="ratio"``) is given by one of:

    * ``ratio``: the pruning ratio of channels (PRC) to remove (default 0.4);
    * ``macs``: the fraction of the model's MACs to keep (fvcore multiply-accumulates at batch size 1, on one
      training image), in (0, 1);
    * ``params``: the fraction of the model's parameters to keep, in (0, 1).

    Two protocols:

    * prune after training (default): ``pretrain_epochs`` of plain training (or ``init_weights``), then a
      short search whose weight SGD uses ``search_lr`` / ``search_weight_decay`` with a cosine decay;
    * the search *is* the training (the paper's protocol, ``train_during_search=True``, usually with
      ``pretrain_epochs=0``): the search's weight SGD uses the training settings ``lr``, ``weight_decay``,
      ``momentum`` and ``schedule`` over ``search_epochs``, so scores and weights learn together from the
      start; ``finetune_epochs`` follow the surgery as before.

    ``macs`` and ``params`` are exclusive with each other and with ``ratio``: when a budget is given, ``ratio``
    is not passed to `rartsprune.prune` (it is ignored; a dataclass cannot tell an explicit 0.4 from the
    default, so only a ``ratio`` other than 0.4 is refused). Budgets need ``mode="ratio"``. The achieved
    fractions are ``summary.macs_ratio`` / ``summary.params_ratio`` in ``results.json``, the requested budget
    is ``pruning.budget`` (e.g. ``{"macs": 0.5}``).

    Raises:
        ValueError: a bad setting (negative epochs, non-positive learning rates, a budget outside (0, 1),
            ``macs`` and ``params`` together, a budget with ``mode="l1"`` or with a non-default ``ratio``).
    """

    model: str = "torchvision:resnet18"
    data: str = "fake"
    out: str = "runs/prune"
    ratio: float = DEFAULT_RATIO
    macs: float | None = None
    params: float | None = None
    mode: str = "ratio"
    method: str = "rarts"
    pretrain_epochs: int = 0
    search_epochs: int = 10
    train_during_search: bool = False
    finetune_epochs: int = 20
    batch_size: int = 64
    lr: float = 0.1
    finetune_lr: float | None = None
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "step"
    search_lr: float = 0.025
    search_weight_decay: float = 3e-4
    arch_lr: float | None = None
    arch_weight_decay: float = 1e-3
    lam: float = 1.0
    beta: float = 1.0
    update: str = "exact"
    importance: str | None = None
    scope: str = "global"
    round_to: int | None = None
    prune_heads: bool = False
    l1: float | None = None
    prox: bool = False
    threshold: float = 1e-2
    cost_weight: float | None = None
    sparsity: float = 1e-4
    bn_recalibration: int = 50
    train_subset: int | None = None
    test_subset: int | None = None
    image_size: int | None = None
    pretrained: bool = False
    init_weights: str | None = None
    cutout: bool = False
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    seed: int = 0
    data_root: str | None = None
    download: bool = False
    resume: bool = False
    plots: bool = True
    progress: bool = True
    stop_after: str | None = None
    model_factory: Callable[[int], nn.Module] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("pretrain_epochs", "search_epochs", "finetune_epochs", "bn_recalibration"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        rates = {"lr": self.lr, "search_lr": self.search_lr, "arch_lr": self.arch_lr, "finetune_lr": self.finetune_lr}
        for name, value in rates.items():
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        _check_schedule(self.schedule)
        _amp_dtype(self.amp)
        if self.importance is not None and self.importance not in tuple(IMPORTANCES):
            raise ValueError(f"unknown importance {self.importance!r}; valid: None (the mode's default), "
                             f"{', '.join(tuple(IMPORTANCES))}")
        if not isinstance(self.prune_heads, bool):
            raise TypeError(f"prune_heads must be True or False, got {self.prune_heads!r}")
        if self.stop_after not in (None, "pretrain", "search"):
            raise ValueError(f"stop_after must be None, 'pretrain' or 'search', got {self.stop_after!r}")
        self._check_budget()
        self.search_config().resolved(self.selection_config())  # the pruner's own checks, before any work

    def _check_budget(self) -> None:
        budget = resolve_budget(self.macs, self.params, mode=self.mode)  # the same checks as rartsprune.prune
        if budget is None:
            return
        kind, value = budget
        setattr(self, kind, value)
        if self.ratio != DEFAULT_RATIO:
            raise ValueError(
                f"ratio={self.ratio!r} and {kind}={value!r} are exclusive: a budget sets the size of the "
                f"pruned model, leave ratio at its default ({DEFAULT_RATIO}, ignored when a budget is given)"
            )

    def selection_config(self) -> SelectionConfig:
        """The selection settings as the `rartsprune.width.SelectionConfig` the job's pruner gets."""
        return SelectionConfig(mode=self.mode, ratio=None if self.budget is not None else self.ratio, macs=self.macs,
                               params=self.params, threshold=self.threshold, scope=self.scope,
                               round_to=self.round_to, importance=self.importance)

    def search_config(self, **factories: Any) -> WidthSearchConfig:
        """The search settings as the `rartsprune.width.WidthSearchConfig` the job's pruner gets.

        The search's weight SGD uses ``search_lr`` / ``search_weight_decay``; ``factories`` (the optimizer and
        scheduler factories the runner builds, e.g. the training SGD of ``train_during_search``) are added.
        """
        return WidthSearchConfig(method=self.method, lam=self.lam, beta=self.beta, update=self.update, l1=self.l1,
                                 cost_weight=self.cost_weight, prox=self.prox, sparsity=self.sparsity,
                                 weight_lr=self.search_lr, weight_decay=self.search_weight_decay,
                                 arch_lr=self.arch_lr, arch_weight_decay=self.arch_weight_decay, **factories)

    @property
    def budget(self) -> tuple[str, float] | None:
        """``(kind, fraction)`` of the MACs or parameter budget, or ``None`` when ``ratio`` sets the size."""
        for kind in BUDGET_KINDS:
            value = getattr(self, kind)
            if value is not None:
                return kind, value
        return None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("model_factory")
        if self.model_factory is not None:
            fn = getattr(self.model_factory, "func", self.model_factory)  # functools.partial
            d["model_factory"] = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        return d


def _amp_dtype(amp: str) -> torch.dtype | None:
    table = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if amp not in table:
        raise ValueError(f"amp must be one of {sorted(table)}, got {amp!r}")
    return table[amp]


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    return torch.autocast(device_type=device.type, dtype=dtype) if dtype is not None else torch.autocast(
        device_type=device.type, enabled=False
    )


def evaluate(model: nn.Module, loader: Any, device: torch.device, augment: nn.Module,
             amp: torch.dtype | None = None, memory_format: torch.memory_format | None = None) -> float:
    """Top-1 accuracy (%) of ``model`` on ``loader`` (uint8 batches), in eval mode; the mode is restored
    (`rartsprune.app.loop.evaluate` on the batches moved to ``device`` and normalised by ``augment``)."""
    batches = map_batches(loader, lambda b: to_device_batch(b, device, augment, memory_format=memory_format))
    return loop.evaluate(model, batches, autocast=lambda: _autocast(device, amp))["acc"]


def train_epoch(model: nn.Module, loader: Any, optimizer: torch.optim.Optimizer, device: torch.device,
                augment: nn.Module, *, amp: torch.dtype | None = None, scaler: torch.amp.GradScaler | None = None,
                desc: str = "train", progress: bool = True,
                memory_format: torch.memory_format | None = None) -> dict[str, float]:
    """One epoch of plain supervised training (`rartsprune.app.loop.train_epoch`); mean loss and accuracy."""
    batches = map_batches(loader, lambda b: to_device_batch(b, device, augment, memory_format=memory_format))
    return loop.train_epoch(model, batches, optimizer, autocast=lambda: _autocast(device, amp), scaler=scaler,
                            desc=desc, progress=progress)


def _sgd(model: nn.Module, job: PruneJob, lr: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=job.momentum, weight_decay=job.weight_decay)


def _check_schedule(schedule: str) -> None:
    if schedule not in ("step", "cosine"):
        raise ValueError(f"schedule must be 'step' or 'cosine', got {schedule!r}")


def _scheduler(opt: torch.optim.Optimizer, epochs: int, schedule: str) -> torch.optim.lr_scheduler.LRScheduler:
    _check_schedule(schedule)
    if schedule == "step":  # Network Slimming: /10 at 50% and 75% of the epochs
        return torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, epochs // 2), max(1, (3 * epochs) // 4)], 0.1)
    return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, epochs))


def _counts(model: nn.Module, example: torch.Tensor) -> dict[str, int]:
    report = flops_report(model, example)
    return {"params": int(report.params), "macs": int(report.macs)}


class _Job:
    """State shared by the phases of `run`."""

    def __init__(self, job: PruneJob) -> None:
        self.job = job
        self.out = Path(job.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt = self.out / "checkpoint.pt"
        self.device = resolve_device(job.device)
        self.amp = _amp_dtype(job.amp)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None
        self.memory_format = torch.channels_last if job.channels_last else None
        torch.manual_seed(job.seed)
        common = {"root": job.data_root, "download": job.download, "seed": job.seed, "image_size": job.image_size}
        self.train_set = load_dataset(job.data, "train", subset=job.train_subset, **common)
        self.test_set = load_dataset(job.data, "test", subset=job.test_subset, **common)
        self.classes = num_classes(self.train_set)
        self.train_aug = default_augment(self.train_set, train=True, cutout=job.cutout).to(self.device)
        self.test_aug = default_augment(self.test_set, train=False).to(self.device)
        self.test_loader = make_loader(self.test_set, max(job.batch_size, 128), train=False)
        sample = self.train_set[0][0]
        self.example = torch.zeros(1, *sample.shape)
        self.results: dict[str, Any] = {"version": __version__, "job": job.to_dict(), "history": [], "wall_time_s": {}}

    def new_model(self) -> nn.Module:
        job = self.job
        if job.model_factory is not None:
            model = job.model_factory(self.classes)
        else:
            model = build_model(job.model, num_classes=self.classes, pretrained=job.pretrained)
        if job.init_weights:
            model.load_state_dict(torch.load(job.init_weights, map_location="cpu", weights_only=True))
        model = model.to(self.device)
        if self.memory_format is not None:
            model = model.to(memory_format=self.memory_format)
        return model

    def eval(self, model: nn.Module) -> float:
        return evaluate(model, self.test_loader, self.device, self.test_aug, self.amp, self.memory_format)

    def save(self, phase: str, epoch: int, **state: Any) -> None:
        atomic_save({"format": _CKPT_FORMAT, "phase": phase, "epoch": epoch, "results": json.dumps(self.results),
                     "rng": get_rng_state(), **state}, self.ckpt)

    def log(self, row: dict[str, Any]) -> None:
        self.results["history"].append(row)
        if self.job.progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def _train_phase(ctx: _Job, model: nn.Module, phase: str, epochs: int, start: int,
                 opt_state: dict | None, sched_state: dict | None, extra: dict[str, Any]) -> None:
    job = ctx.job
    lr = job.finetune_lr if phase == "finetune" and job.finetune_lr is not None else job.lr
    opt = _sgd(model, job, lr)
    sched = _scheduler(opt, epochs, job.schedule)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
        sched.load_state_dict(sched_state)
    t0 = time.perf_counter()
    for epoch in range(start, epochs):
        # a loader per epoch, seeded by the epoch: a resumed run sees the same batches as an uninterrupted one
        loader = make_loader(ctx.train_set, job.batch_size, train=True, seed=job.seed * 100_003 + epoch)
        stats = train_epoch(model, loader, opt, ctx.device, ctx.train_aug, amp=ctx.amp, scaler=ctx.scaler,
                            desc=f"{phase} {epoch + 1}/{epochs}", progress=job.progress, memory_format=ctx.memory_format)
        sched.step()
        acc = ctx.eval(model)
        ctx.log({"phase": phase, "epoch": epoch + 1, "train_loss": stats["loss"], "train_acc": stats["acc"], "test_acc": acc})
        ctx.save(phase, epoch + 1, model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(), **extra)
    ctx.results["wall_time_s"][phase] = ctx.results["wall_time_s"].get(phase, 0.0) + time.perf_counter() - t0


def _make_pruner(ctx: _Job, model: nn.Module) -> Any:
    job = ctx.job
    epochs = max(1, job.search_epochs)
    if job.train_during_search:  # the search is the training: its SGD, its learning rate and schedule
        weights: dict[str, Any] = {
            "weight_optimizer": lambda params: torch.optim.SGD(params, lr=job.lr, momentum=job.momentum,
                                                               weight_decay=job.weight_decay),
            "weight_scheduler": lambda opt: _scheduler(opt, epochs, job.schedule)}
    else:
        weights = {"weight_scheduler": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
                       opt, epochs, eta_min=job.search_lr * 0.04)}
    return prune(
        model, example_inputs=ctx.example.to(ctx.device), search_config=job.search_config(**weights),
        selection=job.selection_config(), amp_dtype=ctx.amp,
        grad_scaler=torch.amp.GradScaler(ctx.device.type) if ctx.amp == torch.float16 else None,
        prune_heads=job.prune_heads, seed=job.seed,
    )


def _search_phase(ctx: _Job, model: nn.Module, start: int, pruner_state: dict | None) -> Any:
    job = ctx.job
    pruner = _make_pruner(ctx, model)
    if pruner_state is not None:
        pruner.load_state_dict(pruner_state, other_selection=True)  # a resumed job may finalize at another size
    half_t, half_v = split_dataset(ctx.train_set, 0.5, seed=job.seed)
    t0 = time.perf_counter()
    for epoch in range(start, job.search_epochs):
        # loaders seeded by the epoch (batch-sliced in-memory data): a resumed search sees the same batches
        pairs = PairedLoader(make_loader(half_t, job.batch_size, seed=job.seed * 100_003 + 2 * epoch),
                             make_loader(half_v, job.batch_size, seed=job.seed * 100_003 + 2 * epoch + 1))
        losses = []
        for batch_t, batch_v in tqdm(pairs, desc=f"search {epoch + 1}/{job.search_epochs}", leave=False,
                                     disable=None if job.progress else True, unit="step"):
            bt = to_device_batch(batch_t, ctx.device, ctx.train_aug, memory_format=ctx.memory_format)
            bv = to_device_batch(batch_v, ctx.device, ctx.train_aug, memory_format=ctx.memory_format)
            losses.append(pruner.step(bt, bv))
        pruner.step_schedulers()
        report = pruner.report()
        ctx.log({"phase": "search", "epoch": epoch + 1, "loss_t": _mean(losses, "loss_t"),
                 "loss_v": _mean(losses, "loss_v"), "test_acc": ctx.eval(model),
                 "prc_if_finalized": report["prc_if_finalized"], "score_mean": report["scores"]["mean"],
                 "score_zeros": report["scores"]["zeros"]})
        ctx.save("search", epoch + 1, pruner=pruner.state_dict())
    ctx.results["wall_time_s"]["search"] = ctx.results["wall_time_s"].get("search", 0.0) + time.perf_counter() - t0
    _check_collapse(ctx, pruner)
    return pruner


def _check_collapse(ctx: _Job, pruner: Any) -> None:
    """Record `WidthPruner.collapsed`'s message in the results (``finalize`` warns with it)."""
    message = pruner.collapsed()
    if message is not None:
        ctx.results.setdefault("warnings", []).append(message)


def _mean(rows: list[dict[str, float]], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return sum(vals) / len(vals) if vals else math.nan


def _recalibrate(ctx: _Job, model: nn.Module) -> None:
    """Re-estimate the BatchNorm statistics of the pruned model on training batches (training transforms)."""
    job = ctx.job
    loader = make_loader(ctx.train_set, job.batch_size, train=True, seed=job.seed * 100_003 + 99_991)
    inputs = (to_device_batch(b, ctx.device, ctx.train_aug, memory_format=ctx.memory_format)[0] for b in loader)
    with _autocast(ctx.device, ctx.amp):
        recalibrate_bn(model, inputs, num_batches=job.bn_recalibration)


def _plots(ctx: _Job, scores: dict[str, torch.Tensor], widths: dict[str, Any]) -> list[str]:
    if not ctx.job.plots:
        return []
    try:
        from .reports import plot_score_histograms, plot_widths
    except ImportError:
        return []
    written = []
    try:
        plot_score_histograms(scores, ctx.out / "scores.png")
        written.append("scores.png")
        plot_widths(widths, ctx.out / "widths.png")
        written.append("widths.png")
    except (ImportError, ValueError, RuntimeError) as exc:  # a plot must never sink a finished job
        warnings.warn(f"could not draw the plots: {exc}", stacklevel=2)
    return written


def run(job: PruneJob) -> dict[str, Any]:
    """Run (or resume) a width-search job; returns the results dict also written to ``OUT/results.json``."""
    ctx = _Job(job)
    state: dict[str, Any] | None = None
    if job.resume and ctx.ckpt.exists():
        state = torch.load(ctx.ckpt, map_location="cpu", weights_only=True)
        if state.get("format") != _CKPT_FORMAT:
            raise ValueError(f"{ctx.ckpt} is not a rartsprune job checkpoint")
        ctx.results = json.loads(state["results"])
        ctx.results["job"] = job.to_dict()  # the settings this run finishes with (e.g. another budget)
        set_rng_state(state["rng"])
    elif ctx.ckpt.exists() and not job.resume:
        raise FileExistsError(f"{ctx.ckpt} exists: pass resume=True (--resume) to continue or use another --out")
    phase = state["phase"] if state else "pretrain"
    epoch = int(state["epoch"]) if state else 0

    model = ctx.new_model()
    # ---- pretrain
    if phase == "pretrain":
        if state is not None:
            model.load_state_dict(state["model"])
        if job.pretrain_epochs > 0:
            _train_phase(ctx, model, "pretrain", job.pretrain_epochs, epoch,
                         state.get("optimizer") if state else None, state.get("scheduler") if state else None, {})
        phase, epoch, state = "search", 0, None
    if "before" not in ctx.results:
        ctx.results["before"] = {"test_acc": ctx.eval(model), **_counts(model, ctx.example.to(ctx.device))}
        torch.save(model.state_dict(), ctx.out / "baseline.pt")
        ctx.save("search", 0, pretrained=model.state_dict())
    if job.stop_after == "pretrain":  # the results so far; checkpoint.pt holds the trained model
        (ctx.out / "results.json").write_text(json.dumps(ctx.results, indent=1))
        return ctx.results
    # ---- search + finalize
    plan: PruningPlan
    if phase == "search":
        if state is not None and "pretrained" in state:
            model.load_state_dict(state["pretrained"])
        pruner = _search_phase(ctx, model, epoch, state.get("pruner") if state else None)
        if job.stop_after == "search":  # checkpoint.pt holds the finished search: resume it with any size
            (ctx.out / "results.json").write_text(json.dumps(ctx.results, indent=1))
            return ctx.results
        ctx.results["after_search"] = {"test_acc": ctx.eval(model)}
        scores = pruner.importance()
        t0 = time.perf_counter()
        model = pruner.finalize()
        ctx.results["wall_time_s"]["finalize"] = time.perf_counter() - t0
        plan = pruner.plan()
        plan.save(ctx.out / "plan.json")
        ctx.results["pruning"] = {k: v for k, v in pruner.result.items() if k != "widths"}
        ctx.results["widths"] = pruner.result["widths"]
        if job.bn_recalibration > 0 and has_running_stats(model):
            ctx.results["after_prune_stale_bn"] = {"test_acc": ctx.eval(model)}
            t0 = time.perf_counter()
            _recalibrate(ctx, model)
            ctx.results["wall_time_s"]["bn_recalibration"] = time.perf_counter() - t0
        ctx.results["after_prune"] = {"test_acc": ctx.eval(model), **_counts(model, ctx.example.to(ctx.device))}
        ctx.results["plots"] = _plots(ctx, scores, pruner.result["widths"])
        phase, epoch, state = "finetune", 0, None
        ctx.save("finetune", 0, model=model.state_dict(), plan=plan.to_json())
    else:
        plan = PruningPlan.from_dict(json.loads(state["plan"]))
        apply_plan(model, plan, ctx.example.to(ctx.device))
        model.load_state_dict(state["model"])
    # ---- fine-tune
    if phase == "finetune" and job.finetune_epochs > 0 and epoch < job.finetune_epochs:
        _train_phase(ctx, model, "finetune", job.finetune_epochs, epoch,
                     state.get("optimizer") if state else None, state.get("scheduler") if state else None,
                     {"plan": plan.to_json()})
    ctx.results["after_finetune"] = {"test_acc": ctx.eval(model)}
    before, after = ctx.results["before"], ctx.results["after_prune"]
    ctx.results["summary"] = {
        "prc": ctx.results["pruning"]["prc"],
        "params_ratio": after["params"] / before["params"],
        "macs_ratio": after["macs"] / before["macs"],
        "acc_before": before["test_acc"],
        "acc_final": ctx.results["after_finetune"]["test_acc"],
    }
    torch.save(model.state_dict(), ctx.out / "pruned.pt")
    (ctx.out / "results.json").write_text(json.dumps(ctx.results, indent=1))
    ctx.save("done", 0, model=model.state_dict(), plan=plan.to_json())
    return ctx.results
