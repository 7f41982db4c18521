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

Under ``torchrun`` (``torchrun --nproc_per_node 4 -m rartsprune prune ...``) the job is data-parallel: `run`
initialises the process group when the caller has not (``nccl`` on CUDA, each rank on ``cuda:LOCAL_RANK``;
``gloo`` on the CPU) and destroys it if it created it. Every epoch's seeded batches are split between the
ranks (``batch_size`` stays the global batch, each rank takes ``batch_size / world_size`` of every batch and
augments it as one process would, `rartsprune.app.data.BatchShard`), training runs in DistributedDataParallel
and the search with ``distributed=True``; a one-shot baseline (``l1_norm``, ``random``, ``slimming``) trains in
DistributedDataParallel too (`rartsprune.width.baselines.BaselineTrainer.distribute`: Network Slimming's
ℓ1 term on the BatchNorm scales is added to the averaged gradients, the same on every rank). Evaluation is
sharded and summed, BatchNorm statistics and (before surgery) the scores and weights are made rank 0's, so
every rank logs the same numbers, ranks the channels alike (the seed and the importances are compared across
the ranks) and cuts the same model (checked). Only rank 0 writes files and shows progress; ``resume`` loads
rank 0's checkpoint on every rank. `check_launch` refuses what cannot run on the ranks (a batch not divisible
by them). With one process nothing changes.

Examples:
    >>> from rartsprune.app.pipeline import PruneJob, run
    >>> results = run(PruneJob(model="torchvision:resnet18", data="fake", out="runs/demo",
    ...                        search_epochs=1, finetune_epochs=1, train_subset=256))  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from .._version import __version__
from ..calibrate import has_running_stats, recalibrate_bn
from ..devices import resolve_device
from ..distill import DistillationLoss
from ..flops import flops_report
from ..optim import distributed as ddp
from ..optim import get_rng_state, set_rng_state
from ..split import PairedLoader, epoch_seed, split_dataset
from ..surgery import PruningPlan, apply_plan
from ..width import SelectionConfig, WidthSearchConfig, prune
from ..width.baselines import BaselineTrainer
from ..width.budget import BUDGET_KINDS
from ..width.config import BASELINE_METHODS
from ..width.importance import IMPORTANCES
from . import loop
from .data import default_augment, load_dataset, make_loader, num_classes, split_holdout, to_device_batch
from .data.augment import Shard
from .launch import (
    Ranks,
    agree,
    barrier,
    check_batch_split,
    launch_ranks,
    process_group,
    rank_device,
    same_as_rank0,
)
from .loop import atomic_save, map_batches
from .zoo import build_model

__all__ = ["PruneJob", "SEARCH_SPLITS", "SCORE_TRAVEL", "SCORE_SCHEDULES", "DEFAULT_GRADUAL", "check_launch", "flat_names", "search_passes", "run", "evaluate",
           "train_epoch", "resolve_device"]

#: How a search epoch uses the training set (`PruneJob.search_split`): ``"fixed"`` halves for the whole search,
#: or ``"swap"``: a fresh split every epoch, passed twice with the halves swapped.
SEARCH_SPLITS = ("fixed", "swap")
#: When the search is the training (ratio mode, ``arch_lr=None``) the score LR is ``SCORE_TRAVEL / search steps``:
#: Adam moves a score by about its LR per step, so this bounds how far the pressure can push the scores over the
#: whole search — the travel of `rartsprune.prune`'s one-epoch default (1e-1 x 31 steps). A fixed LR does not
#: fit searches of every length: from random weights (PreResNet-20, 4k CIFAR-10 training images, training loss
#: only) 1e-1 x 310 steps collapses the scores in the first epoch (search loss on D_v 2.07 after 6 epochs, mean
#: score 0.02); 1e-2 x 310 steps trains (1.71, mean score 0.20); 1e-2 x 620 steps (``search_split="swap"``)
#: collapses again from the 3rd epoch on (loss 1.82 -> 2.05 while the mean score falls 0.22 -> 0.08).
SCORE_TRAVEL = 3.0
#: How the scores' LR moves when the search is the training (`PruneJob.score_schedule`): ``"constant"`` (the
#: default), or ``"weights"``: the weights' schedule (``schedule``), as Network Slimming's scale factors follow
#: the training's LR, the LR scaled so that the travel stays `SCORE_TRAVEL`.
SCORE_SCHEDULES = ("constant", "weights")
#: The job's ``gradual`` when a search method prunes a trained network to a budget and ``gradual`` is not given:
#: the budget reached during the first half of the search (chosen on the criterion diagnostic, training images
#: only: `rartsprune.width.GRADUAL_DEFAULTS`, docs/width.md).
DEFAULT_GRADUAL = 0.5
#: The job's ``search_distill`` when it prunes a trained network gradually and ``search_distill`` is not given:
#: the loss of the search (or of a baseline's training) is the distillation from the network before pruning alone (chosen on the criterion
#: diagnostic, training images only, 2026-12-06: after 10 fine-tuning epochs 68.3 / 67.6 at 0.6x / 0.35x MACs vs
#: 67.5 / 67.0 with the cross-entropy and 67.8 / 67.0 with half of each; docs/width.md).
DEFAULT_SEARCH_DISTILL = 1.0
#: The job's ``finetune_distill`` when it fine-tunes a pruned trained network and ``finetune_distill`` is not
#: given: the fine-tuning's loss is the distillation from the network before pruning alone (chosen on the criterion
#: diagnostic, training images only, 2026-12-06: after 10 epochs the job's default search gains +0.27 / +0.31 at
#: 0.6x / 0.35x MACs over cross-entropy (4 seeds), the one-shot l1-norm +0.12 / +2.27 (2 seeds); docs/width.md).
DEFAULT_FINETUNE_DISTILL = 1.0

_CKPT_FORMAT = "rartsprune-job/1"


#: The job's own names of two search settings (``weight_lr`` / ``weight_decay`` of `WidthSearchConfig`): the job's
#: ``lr`` and ``weight_decay`` are the training's.
_SEARCH_RENAMED = {"weight_lr": "search_lr", "weight_decay": "search_weight_decay"}


_FACTORIES = ("weight_optimizer", "arch_optimizer", "weight_scheduler", "arch_scheduler")
_SIZES = ("ratio", *BUDGET_KINDS)  # the settings that give the size of the pruned model: one at a time
#: ``{flat keyword: (nested config, its field)}`` for every setting of `WidthSearchConfig` and `SelectionConfig` a
#: job takes (the optimizer / scheduler factories excluded: the job builds them).
_FLAT: dict[str, tuple[str, str]] = {
    **{_SEARCH_RENAMED.get(f.name, f.name): ("search", f.name) for f in fields(WidthSearchConfig)
       if f.name not in _FACTORIES},
    **{f.name: ("selection", f.name) for f in fields(SelectionConfig) if f.init},
}


@dataclass(init=False)
class PruneJob:
    """Settings of a width-search job (the command line's flags, one to one).

    The job's own settings (data, training, the phases) are its fields; the search and the selection are the
    library's two config objects, nested as ``search`` (`rartsprune.width.WidthSearchConfig`) and
    ``selection`` (`rartsprune.width.SelectionConfig`) — what the job's pruner gets. Their settings can also
    be given flat, by name (``PruneJob(macs=0.5, arch_lr=1e-2)``, ``dataclasses.replace(job, macs=0.35)``) and
    read flat (``job.macs``); ``search_lr`` / ``search_weight_decay`` are the search's ``weight_lr`` /
    ``weight_decay`` (``lr`` / ``weight_decay`` are the training's). A new field of either config is a new
    keyword and a new command-line flag without touching the job (`flat_names`).

    ``model_factory(num_classes) -> nn.Module`` replaces ``model`` (a spec string) for recipes with their own
    architectures; it is not saved in checkpoints, so pass the same one when resuming.

    The size of the pruned model (``mode="ratio"``) is given by one of:

    * ``ratio``: the pruning ratio of channels (PRC) to remove (default 0.4);
    * ``macs``: the fraction of the model's MACs to keep (fvcore multiply-accumulates at batch size 1, on one
      training image), in (0, 1);
    * ``params``: the fraction of the model's parameters to keep, in (0, 1).

    Given flat, one of them replaces the size the job had (``replace(job, macs=0.35)`` on a ratio job); two at
    once are refused. The achieved fractions are ``summary.macs_ratio`` / ``summary.params_ratio`` in
    ``results.json``, the requested budget is ``pruning.budget`` (e.g. ``{"macs": 0.5}``).

    Two protocols:

    * prune after training (default): ``pretrain_epochs`` of plain training (or ``init_weights``), then a
      short search whose weight SGD uses ``search_lr`` / ``search_weight_decay`` with a cosine decay;
    * the search *is* the training (the paper's protocol, ``train_during_search=True``, usually with
      ``pretrain_epochs=0``): the search's weight SGD uses the training settings ``lr``, ``weight_decay``,
      ``momentum`` and ``schedule`` over ``search_epochs``, so scores and weights learn together from the
      start (the scores at ``SCORE_TRAVEL / search steps`` unless ``arch_lr`` is given); ``finetune_epochs``
      follow the surgery as before. ``score_schedule="weights"`` (`SCORE_SCHEDULES`) gives the scores the
      weights' ``schedule`` too, so that they settle with the weights at the end of the training (Network
      Slimming's scale factors follow the training's LR); with ``arch_lr`` left to the job, its peak is then
      set so that the scores' travel stays ``SCORE_TRAVEL`` (`score_travel_steps`).

    ``gradual`` (in [0, 1]): reach the size gradually during this fraction of the search's steps — the selection's
    ``gradual_steps`` (`rartsprune.width.SelectionConfig`) set from the search length the job computes; 0 applies
    the size once, after the search. ``None`` (default): `DEFAULT_GRADUAL` (0.5) when a search method prunes a
    trained network to a budget (``macs`` / ``params`` / ``latency``, ratio mode, ``search_epochs >= 1``, not
    ``train_during_search``, no ``gradual_steps``, not ``stop_after="search"``) — the search then also ranks by
    |α|·‖W‖ at ``arch_lr=1e-2`` unless given (`rartsprune.width.GRADUAL_DEFAULTS`) — else 0;
    `gradual_fraction` is the value in effect. A resumed job with ``gradual=None`` continues the schedule of
    the search it resumes (none for a search stopped with ``stop_after="search"``, which can then be finalized
    at any size).

    ``search_distill`` / ``finetune_distill`` (in [0, 1]): the share of distillation from the network before
    pruning in the loss of the search / of the fine-tuning (`rartsprune.DistillationLoss` at
    ``distill_temperature``; the teacher is the trained network the search starts from, ``baseline.pt``); 0:
    cross-entropy only. Given, both need a trained network to distil from (``pretrain_epochs``, ``init_weights``
    or ``pretrained``, not ``train_during_search``). ``search_distill=None`` (default): `DEFAULT_SEARCH_DISTILL`
    (1: the teacher alone) when the job prunes a trained network gradually (`gradual_fraction` > 0), else 0
    (chosen on the criterion diagnostic, training images only: docs/width.md); `search_distill_share` is the
    value in effect. ``finetune_distill=None`` (default): `DEFAULT_FINETUNE_DISTILL` (1) when the job fine-tunes a
    pruned trained network (``finetune_epochs`` >= 1), else 0 (chosen on the same diagnostic);
    `finetune_distill_share` is the value in effect. A resumed job with either left at None keeps what its
    checkpoint used (0 for a checkpoint saved before these defaults).

    ``seed`` seeds the weights' initialisation, the batches, the search's splits and the random baseline; it also
    draws the ``train_subset`` / ``test_subset`` images unless ``data_seed`` is given (`subset_seed`). Jobs that
    continue one trained network under several seeds (``init_weights``) should pass that network's
    ``data_seed``: otherwise each seed searches and fine-tunes on images the network never saw and is tested
    on other images than it was.

    ``val_images`` (default 0: off) holds out that many training images that no phase trains on (a
    class-stratified sample drawn with `subset_seed`: outside ``train_subset`` when one is given, which then
    keeps its images; else taken out of the training set) and chooses the fine-tuning's length on them: the pruned
    network right after surgery and BatchNorm re-estimation (epoch 0) and after each fine-tuning epoch is scored
    on them, and the one with the highest accuracy (ties: the later) is the job's result — ``after_finetune``,
    ``pruned.pt`` and the final checkpoint. ``results.json`` records every epoch's accuracy on them and the kept
    epoch under ``finetune_selection``. When the search is the training, the network right after surgery is
    often better than after a fine-tuning that restarts the learning rate; this lets training images decide.
    Scoring them draws from the random generator as the test evaluation does, so the fine-tuning's epochs are not
    bit-identical to those of the same job without ``val_images``.

    How a search epoch uses the training set (``search_split``, `SEARCH_SPLITS`):

    * ``"fixed"`` (the default after training): one split into D_t and D_v for the whole search, each step pairs
      a D_t batch with a D_v batch, so each of RARTS' two nets sees its half once per epoch (the architecture
      search's protocol);
    * ``"swap"`` (the default when the search is the training): every epoch a fresh split, iterated twice with
      the halves swapped, so every network the search trains sees *every* training image once per epoch at
      ``batch_size`` — as many weight steps as an epoch of plain training (a one-net baseline, which steps on
      both batches of a pair together, gets pairs of half batches in one pass instead). D_t and D_v stay
      disjoint within each step and each pass. With ``"fixed"`` the kept net of RARTS is trained on half the
      images with half the steps of plain training, which is what held it back when the search is the training.

    Raises:
        ValueError: a bad setting (negative epochs or seeds, non-positive learning rates, a budget outside (0, 1),
            two sizes at once, a budget with ``mode="l1"``, an importance that is not a built-in name), and every
            check of the two configs.
        TypeError: an unknown keyword.

    Examples:
        >>> job = PruneJob(model="torchvision:resnet18", macs=0.5, arch_lr=1e-2, finetune_epochs=5)
        >>> job.selection.macs, job.search.arch_lr, job.macs
        (0.5, 0.01, 0.5)
        >>> from dataclasses import replace
        >>> replace(job, macs=0.35).selection.budget
        ('macs', 0.35)
    """

    model: str = "torchvision:resnet18"
    data: str = "fake"
    out: str = "runs/prune"
    pretrain_epochs: int = 0
    search_epochs: int = 10
    train_during_search: bool = False
    score_schedule: str = "constant"
    search_split: str | None = None
    finetune_epochs: int = 20
    batch_size: int = 64
    lr: float = 0.1
    finetune_lr: float | None = None
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "step"
    prune_heads: bool = False
    prune_layernorm: bool = False
    gradual: float | None = None
    search_distill: float | None = None
    finetune_distill: float | None = None
    distill_temperature: float = 4.0
    bn_recalibration: int = 50
    train_subset: int | None = None
    test_subset: int | None = None
    val_images: int = 0
    image_size: int | None = None
    pretrained: bool = False
    init_weights: str | None = None
    cutout: bool = False
    device: str = "auto"
    amp: str = "none"
    channels_last: bool = False
    seed: int = 0
    data_seed: int | None = None
    data_root: str | None = None
    download: bool = False
    resume: bool = False
    plots: bool = True
    progress: bool = True
    stop_after: str | None = None
    search: WidthSearchConfig = field(default_factory=WidthSearchConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    model_factory: Callable[[int], nn.Module] | None = field(default=None, repr=False, compare=False)

    def __init__(self, **settings: Any) -> None:
        nested: dict[str, dict[str, Any]] = {"search": {}, "selection": {}}
        for name in [k for k in settings if k in _FLAT]:
            config, key = _FLAT[name]
            nested[config][key] = settings.pop(name)
        unknown = sorted(set(settings) - {f.name for f in fields(PruneJob)})
        if unknown:
            raise TypeError(f"PruneJob got unknown settings {unknown}; valid: its fields and {sorted(_FLAT)}")
        for f in fields(PruneJob):
            if f.name in settings:
                value = settings[f.name]
            else:
                value = f.default_factory() if f.default_factory is not MISSING else f.default  # type: ignore[misc]
            object.__setattr__(self, f.name, value)
        for config, cls in (("search", WidthSearchConfig), ("selection", SelectionConfig)):
            if not isinstance(getattr(self, config), cls):
                raise TypeError(f"{config} must be a {cls.__name__}, got {type(getattr(self, config)).__name__}")
        if any(k in nested["selection"] for k in _SIZES):  # a size given flat replaces the job's size
            nested["selection"] = {**{k: None for k in _SIZES}, **nested["selection"]}
        if nested["search"]:
            try:
                self.search = replace(self.search, **nested["search"])
            except (TypeError, ValueError) as exc:  # name the job's keyword, not the config's field
                message = str(exc)
                for name, job_name in _SEARCH_RENAMED.items():
                    message = re.sub(rf"\b{name}\b", job_name, message)
                raise type(exc)(message) from exc
        if nested["selection"]:
            self.selection = replace(self.selection, **nested["selection"])
        self.__post_init__()

    def __getattr__(self, name: str) -> Any:
        """The settings of the nested configs, read flat (``job.macs`` is ``job.selection.macs``)."""
        target = _FLAT.get(name) if not name.startswith("_") else None
        if target is None:
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
        return getattr(self.__dict__[target[0]], target[1])

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FLAT:
            raise AttributeError(f"{name} is a setting of the job's nested configs: use dataclasses.replace(job, "
                                 f"{name}=...)")
        object.__setattr__(self, name, value)

    def __post_init__(self) -> None:
        for name in ("pretrain_epochs", "search_epochs", "finetune_epochs", "bn_recalibration", "val_images"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        for name, value in {"lr": self.lr, "finetune_lr": self.finetune_lr}.items():
            if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0):
                raise ValueError(f"{name} must be a positive number, got {value!r}")
        _check_schedule(self.schedule)
        _amp_dtype(self.amp)
        importance = self.selection.importance
        if importance is not None and importance not in tuple(IMPORTANCES):
            raise ValueError(f"unknown importance {importance!r}; valid: None (the mode's default), "
                             f"{', '.join(tuple(IMPORTANCES))} (a job saves its settings as JSON: a name, not an object)")
        factories = [name for name in _FACTORIES if getattr(self.search, name) is not None]
        if factories:
            raise ValueError(f"a job builds the search's optimizers and schedulers itself (from lr, schedule, ...); "
                             f"its search config cannot carry {factories}: call rartsprune.prune directly for that")
        for flag in ("prune_heads", "prune_layernorm"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be True or False, got {getattr(self, flag)!r}")
        if self.score_schedule not in SCORE_SCHEDULES:
            raise ValueError(f"score_schedule must be {' or '.join(repr(x) for x in SCORE_SCHEDULES)}, "
                             f"got {self.score_schedule!r}")
        if self.score_schedule != "constant" and not self.train_during_search:
            raise ValueError(f"score_schedule={self.score_schedule!r} follows the training's LR schedule: it needs "
                             "the search to be the training (train_during_search=True)")
        if self.search_split is not None and self.search_split not in SEARCH_SPLITS:
            raise ValueError(f"search_split must be None (the protocol's default), "
                             f"{' or '.join(repr(x) for x in SEARCH_SPLITS)}, got {self.search_split!r}")
        gradual = self.gradual
        if gradual is not None and (isinstance(gradual, bool) or not isinstance(gradual, (int, float))
                                    or not 0.0 <= gradual <= 1.0):
            raise ValueError(f"gradual must be None (the default) or a fraction of the search steps in [0, 1], got "
                             f"{gradual!r}")
        if gradual and self.selection.gradual_steps:
            raise ValueError("pass gradual (a fraction of the search steps) or gradual_steps (a number of steps), not both")
        if gradual and self.selection.mode != "ratio":
            raise ValueError("gradual needs a fixed size (ratio, macs, params or latency in mode='ratio')")
        if gradual and self.search_epochs == 0:
            raise ValueError("gradual prunes during the search: it needs search_epochs >= 1")
        self._check_distill()
        for name, value in {"seed": self.seed, "data_seed": self.data_seed}.items():
            if (value is not None or name == "seed") and (isinstance(value, bool) or not isinstance(value, int)
                                                          or value < 0):
                raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
        if self.stop_after not in (None, "pretrain", "search"):
            raise ValueError(f"stop_after must be None, 'pretrain' or 'search', got {self.stop_after!r}")
        self.search_config().resolved(self.selection_config())  # the pruner's own checks, before any work

    def _check_distill(self) -> None:
        for name in ("search_distill", "finetune_distill"):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be None (the default) or a number in [0, 1] (the share of "
                                 f"distillation), got {value!r}")
        t = self.distill_temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise ValueError(f"distill_temperature must be a finite number > 0, got {t!r}")
        given = [name for name in ("search_distill", "finetune_distill") if getattr(self, name)]  # None: auto
        if given and not self.trained:
            why = ("with train_during_search the search starts from random weights: there is no trained network to "
                   "distil from" if self.train_during_search
                   else "give it a trained one (pretrain_epochs >= 1, init_weights or pretrained)")
            raise ValueError(f"{given[0]} distils from the network before pruning; {why}")

    @property
    def trained(self) -> bool:
        """Whether the network the search starts from is trained: pre-trained here, loaded, or a hub's weights."""
        return bool(self.pretrain_epochs or self.init_weights or self.pretrained) and not self.train_during_search

    @property
    def search_distill_share(self) -> float:
        """The ``search_distill`` in effect: as given, else `DEFAULT_SEARCH_DISTILL` when the job prunes a trained
        network gradually (a search, or a one-shot baseline given ``gradual``: gradual magnitude pruning), else 0.

        Examples:
            >>> PruneJob(macs=0.5, search_epochs=1, pretrain_epochs=5).search_distill_share
            1.0
            >>> PruneJob(macs=0.5, search_epochs=1).search_distill_share   # nothing trained to distil from
            0.0
            >>> PruneJob(macs=0.5, search_epochs=1, pretrain_epochs=5, search_distill=0).search_distill_share
            0
        """
        if self.search_distill is not None:
            return self.search_distill
        auto = self.trained and self.gradual_fraction > 0
        return DEFAULT_SEARCH_DISTILL if auto else 0.0

    @property
    def finetune_distill_share(self) -> float:
        """The ``finetune_distill`` in effect: as given, else `DEFAULT_FINETUNE_DISTILL` when the job fine-tunes a
        pruned trained network (``finetune_epochs`` >= 1), else 0.

        Examples:
            >>> PruneJob(ratio=0.4, pretrain_epochs=5, finetune_epochs=10).finetune_distill_share
            1.0
            >>> PruneJob(ratio=0.4, finetune_epochs=10).finetune_distill_share   # nothing trained to distil from
            0.0
            >>> PruneJob(ratio=0.4, pretrain_epochs=5, finetune_distill=0).finetune_distill_share
            0
        """
        if self.finetune_distill is not None:
            return self.finetune_distill
        return DEFAULT_FINETUNE_DISTILL if self.trained and self.finetune_epochs > 0 else 0.0

    @property
    def subset_seed(self) -> int:
        """The seed that draws ``train_subset`` and ``test_subset``: ``data_seed``, else ``seed``.

        Examples:
            >>> PruneJob(seed=3).subset_seed, PruneJob(seed=3, data_seed=0).subset_seed
            (3, 0)
        """
        return self.subset_seed_of({"seed": self.seed, "data_seed": self.data_seed})

    @staticmethod
    def subset_seed_of(saved: Mapping[str, Any]) -> int:
        """`subset_seed` of a job saved with `to_dict` (the ``"job"`` of a ``results.json``).

        A job saved before ``data_seed`` existed has no such key: its ``seed`` drew the images.

        Examples:
            >>> PruneJob.subset_seed_of({"seed": 3}), PruneJob.subset_seed_of({"seed": 3, "data_seed": 0})
            (3, 0)
        """
        if "seed" not in saved:
            raise KeyError("a saved job needs its 'seed' to tell which images it drew")
        return saved["seed"] if saved.get("data_seed") is None else saved["data_seed"]

    @property
    def split(self) -> str:
        """The `search_split` in effect: as given, else ``"swap"`` when the search is the training, ``"fixed"``."""
        if self.search_split is not None:
            return self.search_split
        return "swap" if self.train_during_search else "fixed"

    @property
    def gradual_fraction(self) -> float:
        """The ``gradual`` in effect: as given, else `DEFAULT_GRADUAL` for a search pruning a trained network to a
        budget, else 0.

        Examples:
            >>> PruneJob(macs=0.5, search_epochs=1).gradual_fraction, PruneJob(macs=0.5, gradual=0).gradual_fraction
            (0.5, 0)
            >>> PruneJob(ratio=0.4).gradual_fraction, PruneJob(macs=0.5, method="l1_norm").gradual_fraction
            (0.0, 0.0)
        """
        if self.gradual is not None:
            return self.gradual
        auto = (self.selection.mode == "ratio" and self.selection.budget is not None and self.search.is_search
                and self.search_epochs >= 1 and not self.train_during_search and not self.selection.gradual_steps
                and self.stop_after != "search")  # a search kept to be finalized at other sizes stays one-shot
        return DEFAULT_GRADUAL if auto else 0.0

    def selection_config(self, search_steps: int | None = None) -> SelectionConfig:
        """The selection settings the job's pruner gets: ``selection``, with ``gradual_steps`` set to
        `gradual_fraction` of the ``search_steps`` (the steps of the whole search) when it is not 0."""
        gradual = self.gradual_fraction
        if not gradual or not search_steps:
            return self.selection
        return replace(self.selection, gradual_steps=max(1, round(gradual * search_steps)))

    def search_config(self, search_steps: int | None = None, **factories: Any) -> WidthSearchConfig:
        """The search settings the job's pruner gets: ``search`` with the optimizer and scheduler ``factories``
        the runner builds (e.g. the training SGD of ``train_during_search``), and — when the search is the
        training in ratio mode and ``arch_lr`` is not given — ``arch_lr = SCORE_TRAVEL / search_steps``
        (``search_steps``: the steps of the whole search; ``None`` leaves ``arch_lr`` to the mode's default)."""
        arch_lr = self.search.arch_lr
        if arch_lr is None and search_steps and self.train_during_search and self.selection.mode == "ratio":
            arch_lr = SCORE_TRAVEL / self.score_travel_steps(search_steps)
        return replace(self.search, arch_lr=arch_lr, **factories)

    def score_travel_steps(self, search_steps: int) -> float:
        """The search's steps weighted by the scores' LR schedule (`score_schedule`): ``search_steps`` at a
        constant LR; with ``"weights"``, the sum over the steps of the schedule's factor (e.g. 0.5275 x the steps
        for ``"step"``: 1 for half the epochs, 0.1 for a quarter, 0.01 for the last quarter).

        Examples:
            >>> PruneJob(train_during_search=True, search_epochs=8).score_travel_steps(800)
            800.0
            >>> round(PruneJob(train_during_search=True, search_epochs=8,
            ...                score_schedule="weights").score_travel_steps(800), 6)
            422.0
        """
        if self.score_schedule == "constant":
            return float(search_steps)
        epochs = max(1, self.search_epochs)
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        sched = _scheduler(opt, epochs, self.schedule)
        factors = []
        for _ in range(epochs):
            factors.append(opt.param_groups[0]["lr"])
            opt.step()  # no gradient: nothing moves; keeps the scheduler's order check quiet
            sched.step()
        return search_steps * sum(factors) / epochs

    @property
    def budget(self) -> tuple[str, float] | None:
        """``(kind, fraction)`` of the MACs or parameter budget, or ``None`` when ``ratio`` sets the size."""
        return self.selection.budget

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("model_factory")
        if self.model_factory is not None:
            fn = getattr(self.model_factory, "func", self.model_factory)  # functools.partial
            d["model_factory"] = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        return d


def flat_names() -> dict[str, tuple[str, str]]:
    """The flat keywords of `PruneJob` that set its nested configs: ``{name: ("search" | "selection", field)}``.

    Examples:
        >>> flat_names()["search_lr"], flat_names()["macs"]
        (('search', 'weight_lr'), ('selection', 'macs'))
    """
    return dict(_FLAT)


def check_launch(job: PruneJob, world: int | None = None) -> None:
    """Refuse a job that cannot run data-parallel on ``world`` processes (default: this launch's,
    `launch_ranks`: ``torchrun``'s ``WORLD_SIZE`` or the initialised process group). `run` calls it first, on
    every rank, before anything touches a model; one process accepts every job.

    Every method runs data-parallel, the one-shot baselines (``l1_norm``, ``random``, ``slimming``) too.

    Raises:
        ValueError: ``batch_size`` (the global batch) is not divisible by the number of processes, or (a
            one-shot baseline with ``search_split="swap"``, which steps on half batches) half of it is not.

    Examples:
        >>> check_launch(PruneJob(batch_size=64, method="slimming"), world=4)
        >>> check_launch(PruneJob(batch_size=30), world=4)
        Traceback (most recent call last):
        ...
        ValueError: batch_size=30 must be a multiple of the 4 processes (the global batch, split evenly)
    """
    world = launch_ranks().world if world is None else world
    if world <= 1:
        return
    check_batch_split(job.batch_size, world)
    step_batches = {size for _, _, size in _search_passes(job, None, None)}
    uneven = sorted(size for size in step_batches if size % world)
    if uneven:  # a one-net baseline with "swap" steps on half batches
        raise ValueError(f"batch_size={job.batch_size}: method={job.method!r} with search_split={job.split!r} "
                         f"steps on batches of {uneven[0]} images, which the {world} processes cannot split "
                         f"evenly: use a batch_size that is a multiple of {2 * world}")


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
                memory_format: torch.memory_format | None = None,
                shard: Shard | None = None, loss_fn: loop.LossFn | None = None) -> dict[str, float]:
    """One epoch of supervised training (`rartsprune.app.loop.train_epoch`; ``loss_fn``: its loss, default
    cross-entropy); mean loss and accuracy.

    ``shard=(rank, world)``: ``loader`` yields this rank's parts of the global batches (``make_loader(...,
    num_replicas=world, rank=rank)``), augmented as the whole batches would be (`to_device_batch`).
    """
    batches = map_batches(loader, lambda b: to_device_batch(b, device, augment, memory_format=memory_format,
                                                            shard=shard))
    return loop.train_epoch(model, batches, optimizer, loss_fn=loss_fn, autocast=lambda: _autocast(device, amp),
                            scaler=scaler, desc=desc, progress=progress)


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
    """State shared by the phases of `run` (``ranks``: this process's place in a data-parallel run)."""

    def __init__(self, job: PruneJob, ranks: Ranks | None = None) -> None:
        self.job = job
        self.ranks = ranks if ranks is not None else Ranks()
        self.out = Path(job.out)
        if self.ranks.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self.ckpt = self.out / "checkpoint.pt"
        #: the weights of the network before pruning, while a loss distils from it (saved in every checkpoint)
        self.teacher: dict[str, torch.Tensor] | None = None
        #: the search's / fine-tuning's shares of distillation in effect (saved in every checkpoint: a resumed job
        #: keeps them)
        self.search_distill = 0.0
        self.finetune_distill = 0.0
        self.device = rank_device(resolve_device(job.device), self.ranks)
        self.progress = job.progress and self.ranks.main
        self.amp = _amp_dtype(job.amp)
        self.scaler = torch.amp.GradScaler(self.device.type) if self.amp == torch.float16 else None
        self.memory_format = torch.channels_last if job.channels_last else None
        torch.manual_seed(job.seed)
        common = {"root": job.data_root, "download": job.download, "seed": job.subset_seed,
                  "image_size": job.image_size}
        if not self.ranks.main:
            barrier(self.ranks)  # rank 0 first: it downloads / writes the decode cache, the others read them
        # with held-out images the whole training split is loaded and divided (the training images unchanged)
        train_set = load_dataset(job.data, "train", subset=None if job.val_images else job.train_subset, **common)
        self.test_set = load_dataset(job.data, "test", subset=job.test_subset, **common)
        if self.ranks.main:
            barrier(self.ranks)
        #: the held-out training images that choose the fine-tuning's length (``val_images``), else None
        self.val_set: Dataset | None = None
        if job.val_images:
            train_set, self.val_set = split_holdout(train_set, job.val_images, subset=job.train_subset,
                                                    seed=job.subset_seed)
        self.train_set = train_set
        #: the best network of the fine-tuning on the held-out images so far: epoch, accuracy, weights
        self.best: dict[str, Any] | None = None
        self.classes = num_classes(self.train_set)
        self.train_aug = default_augment(self.train_set, train=True, cutout=job.cutout).to(self.device)
        self.test_aug = default_augment(self.test_set, train=False).to(self.device)
        #: per evaluated split: this rank's loader (None when its share is empty), image count and augmentation
        self.eval_sets = {"test": self._eval_set(self.test_set, self.test_aug)}
        if self.val_set is not None:
            self.eval_sets["val"] = self._eval_set(self.val_set, default_augment(self.val_set, train=False).to(
                self.device))
        sample = self.train_set[0][0]
        self.example = torch.zeros(1, *sample.shape)
        self.results: dict[str, Any] = {"version": __version__, "job": job.to_dict(), "history": [], "wall_time_s": {}}
        if self.ranks.distributed:
            self.results["distributed"] = {"world_size": self.ranks.world}

    def _eval_set(self, dataset: Dataset, augment: nn.Module) -> tuple[Any, int, nn.Module]:
        """The loader of the images of ``dataset`` this rank evaluates (all of them in one process, else a
        contiguous share), their count and the augmentation."""
        part = dataset
        if self.ranks.distributed:
            n, rank, world = len(dataset), self.ranks.rank, self.ranks.world
            part = Subset(dataset, range(n * rank // world, n * (rank + 1) // world))
        loader = (make_loader(part, max(self.job.batch_size, 128), train=False)
                  if len(part) or not self.ranks.distributed else None)
        return loader, len(part), augment

    def train_loader(self, dataset: Any, batch_size: int, seed: int) -> Any:
        """A training loader of ``dataset`` shuffled by ``seed``; with several ranks this rank's part of every
        global batch of ``batch_size`` (augment it with ``shard=self.ranks.shard``)."""
        return make_loader(dataset, batch_size, train=True, seed=seed, num_replicas=self.ranks.world,
                           rank=self.ranks.rank)

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

    def eval(self, model: nn.Module, split: str = "test") -> float:
        """Accuracy (%) on the test images (or ``split="val"``: the held-out training images); with several ranks
        each evaluates its share and the counts are summed, so every rank gets the number one process would."""
        loader, n, augment = self.eval_sets[split]
        if not self.ranks.distributed:
            return evaluate(model, loader, self.device, augment, self.amp, self.memory_format)
        acc = 0.0
        if n:
            acc = evaluate(model, loader, self.device, augment, self.amp, self.memory_format)
        counts = torch.tensor([round(acc * n / 100.0), n], dtype=torch.float64, device=self.device)
        dist.all_reduce(counts)
        return 100.0 * float(counts[0]) / float(counts[1])

    def keep_if_best(self, model: nn.Module, epoch: int) -> float:
        """Score ``model`` (after ``epoch`` fine-tuning epochs) on the held-out images; keep its weights if no
        earlier epoch did better. Returns the accuracy."""
        acc = self.eval(model, "val")
        record = self.results.setdefault("finetune_selection", {"val_images": len(self.val_set or ()), "val_acc": {}})
        record["val_acc"][str(epoch)] = acc
        if self.best is None or acc >= self.best["val_acc"]:  # ties: the later epoch
            self.best = {"epoch": epoch, "val_acc": acc,
                         "model": {k: v.detach().clone() for k, v in model.state_dict().items()}}
        return acc

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """``values`` averaged over the ranks (each a mean over as many images); as given in one process."""
        if not self.ranks.distributed:
            return values
        t = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        ddp.all_reduce_mean_([t])
        return dict(zip(values, t.tolist()))

    def sync_buffers(self, model: nn.Module) -> None:
        """Rank 0's buffers on every rank (DDP leaves each rank the BatchNorm statistics of its own batch)."""
        if self.ranks.distributed:
            same_as_rank0(list(model.buffers()))

    def save(self, phase: str, epoch: int, **state: Any) -> None:
        """The checkpoint (rank 0 only; every rank's state is the same)."""
        if not self.ranks.main:
            return
        extra: dict[str, Any] = {}
        if self.ranks.distributed and self.device.type == "cuda":  # rank 0's GPU stream, for every rank's GPU
            extra["rng_device"] = torch.cuda.get_rng_state(self.device)
        if self.teacher is not None and "pretrained" not in state:
            extra["teacher"] = self.teacher
        if self.best is not None and phase == "finetune":
            extra["best"] = self.best
        extra["search_distill"] = self.search_distill
        extra["finetune_distill"] = self.finetune_distill
        atomic_save({"format": _CKPT_FORMAT, "phase": phase, "epoch": epoch, "results": json.dumps(self.results),
                     "rng": get_rng_state(), **extra, **state}, self.ckpt)

    def write_results(self) -> None:
        """``results.json`` (rank 0 only)."""
        if self.ranks.main:
            (self.out / "results.json").write_text(json.dumps(self.results, indent=1))

    def log(self, row: dict[str, Any]) -> None:
        self.results["history"].append(row)
        if self.progress:
            tqdm.write(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def _train_phase(ctx: _Job, model: nn.Module, phase: str, epochs: int, start: int,
                 opt_state: dict | None, sched_state: dict | None, extra: dict[str, Any],
                 rng_state: Any = None) -> None:
    """Train ``model`` for the phase's epochs from ``start``; a resumed phase passes its checkpoint's optimizer,
    scheduler and ``rng_state``. The generator is restored where the checkpoint was saved — before the phase's
    setup for one saved as the phase began (``start=0``), else where the epochs resume — because rebuilding the
    model since reading it drew from the generator: the phase goes on as the saved run did."""
    if rng_state is not None and start == 0:
        set_rng_state(rng_state)
    job = ctx.job
    lr = job.finetune_lr if phase == "finetune" and job.finetune_lr is not None else job.lr
    opt = _sgd(model, job, lr)
    sched = _scheduler(opt, epochs, job.schedule)
    if opt_state is not None:
        opt.load_state_dict(opt_state)
        sched.load_state_dict(sched_state)
    # several ranks: DDP averages the gradients of the ranks' parts of each global batch
    net = ddp.wrap_ddp(model, ignore=[]) if ctx.ranks.distributed else model
    loss_fn = None
    if phase == "finetune" and ctx.finetune_distill:
        kd = DistillationLoss(_teacher(ctx), weight=ctx.finetune_distill, temperature=job.distill_temperature,
                              copy_teacher=False)
        loss_fn = lambda m, x, y: kd.loss_and_logits(m, (x, y))  # noqa: E731
    if rng_state is not None and start > 0:  # saved after an epoch: the teacher above was built before it
        set_rng_state(rng_state)
    t0 = time.perf_counter()
    for epoch in range(start, epochs):
        # a loader per epoch, seeded by the epoch: a resumed run sees the same batches as an uninterrupted one
        loader = ctx.train_loader(ctx.train_set, job.batch_size, epoch_seed(job.seed, epoch, phase))
        stats = train_epoch(net, loader, opt, ctx.device, ctx.train_aug, amp=ctx.amp, scaler=ctx.scaler,
                            desc=f"{phase} {epoch + 1}/{epochs}", progress=ctx.progress,
                            memory_format=ctx.memory_format, shard=ctx.ranks.shard, loss_fn=loss_fn)
        stats = ctx.mean_over_ranks(stats)
        sched.step()
        ctx.sync_buffers(model)
        acc = ctx.eval(model)
        row = {"phase": phase, "epoch": epoch + 1, "train_loss": stats["loss"], "train_acc": stats["acc"], "test_acc": acc}
        if phase == "finetune" and ctx.val_set is not None:
            row["val_acc"] = ctx.keep_if_best(model, epoch + 1)
        ctx.log(row)
        ctx.save(phase, epoch + 1, model=model.state_dict(), optimizer=opt.state_dict(), scheduler=sched.state_dict(), **extra)
    ctx.results["wall_time_s"][phase] = ctx.results["wall_time_s"].get(phase, 0.0) + time.perf_counter() - t0


def _teacher_weights(ctx: _Job, state: dict[str, Any] | None, model: nn.Module) -> dict[str, torch.Tensor]:
    """The weights of the network before pruning: ``model``'s on a fresh run (``state=None``: just trained or
    loaded), else the checkpoint's, else (no pre-training) the job's ``init_weights`` / ``pretrained`` network."""
    if state is None:
        return {k: v.detach().clone() for k, v in model.state_dict().items()}
    for key in ("teacher", "pretrained"):
        if key in state:
            return state[key]
    if ctx.job.pretrain_epochs == 0:  # the network before pruning is the one the job builds (init_weights, pretrained)
        return ctx.new_model().state_dict()
    given = "search_distill" if ctx.search_distill else "finetune_distill"
    raise ValueError(f"{given} distils from the network before pruning, but {ctx.ckpt} does not hold it (saved by a "
                     f"job without distillation, past its search's first epoch): rerun the job from the start")


def _teacher(ctx: _Job) -> nn.Module:
    """A frozen network with the weights before pruning, to distil from."""
    assert ctx.teacher is not None
    teacher = ctx.new_model()
    teacher.load_state_dict(ctx.teacher)
    return teacher


def _make_pruner(ctx: _Job, model: nn.Module, pruner_state: dict | None = None) -> Any:
    """The job's pruner; resuming ``pruner_state`` with ``gradual=None``, the schedule of the search it resumes."""
    job = ctx.job
    epochs = max(1, job.search_epochs)
    if job.train_during_search:  # the search is the training: its SGD, its learning rate and schedule
        weights: dict[str, Any] = {
            "weight_optimizer": lambda params: torch.optim.SGD(params, lr=job.lr, momentum=job.momentum,
                                                               weight_decay=job.weight_decay),
            "weight_scheduler": lambda opt: _scheduler(opt, epochs, job.schedule)}
        if job.score_schedule == "weights":
            weights["arch_scheduler"] = lambda opt: _scheduler(opt, epochs, job.schedule)
    else:
        weights = {"weight_scheduler": lambda opt: torch.optim.lr_scheduler.CosineAnnealingLR(
                       opt, epochs, eta_min=job.search_lr * 0.04)}
    baseline = job.method in BASELINE_METHODS
    if ctx.ranks.distributed and not agree(job.seed, ctx.device):
        raise RuntimeError(f"the ranks were given different seeds (this rank: seed={job.seed}): every rank must "
                           "run the same job (the seed orders the batches and seeds the random baseline)")
    search_steps = epochs * _search_steps_per_epoch(job, _job_split(ctx))
    selection = _shared_selection(ctx, model, search_steps)
    if pruner_state is not None and job.gradual is None:  # the default: whatever the resumed search did
        saved = dict(pruner_state.get("config", {})).get("gradual_steps", selection.gradual_steps)
        selection = replace(selection, gradual_steps=int(saved or 0))
    pruner = prune(
        model, example_inputs=ctx.example.to(ctx.device),
        search_config=job.search_config(search_steps, **weights),
        selection=selection, amp_dtype=ctx.amp,
        grad_scaler=torch.amp.GradScaler(ctx.device.type) if ctx.amp == torch.float16 else None,
        prune_heads=job.prune_heads, prune_layernorm=job.prune_layernorm, seed=job.seed,
        distributed=ctx.ranks.distributed and not baseline,
        loss_fn=(DistillationLoss(_teacher(ctx), weight=ctx.search_distill, temperature=job.distill_temperature,
                                  copy_teacher=False) if ctx.search_distill else None),
    )
    if ctx.ranks.distributed and baseline:  # plain training in DDP (the searches wrap their nets themselves)
        if not isinstance(pruner.search, BaselineTrainer):
            raise TypeError(f"method={job.method!r} should train with a BaselineTrainer, got "
                            f"{type(pruner.search).__name__}")
        pruner.search.distribute()
    return pruner


def _shared_selection(ctx: _Job, model: nn.Module, search_steps: int | None = None) -> SelectionConfig:
    """The job's selection; on several ranks a latency budget's table is rank 0's (measured once, into
    ``latency_table`` or ``OUT/latency_table.json``, and loaded by every rank), so that all cut the same
    model."""
    selection = ctx.job.selection_config(search_steps)
    if not ctx.ranks.distributed or selection.budget is None or selection.budget[0] != "latency":
        return selection
    path = selection.latency_table or str(ctx.out / "latency_table.json")
    shared = replace(selection, latency_table=path)
    failed: Exception | None = None
    if ctx.ranks.main and not os.path.exists(path):  # measured on a copy, without the other ranks
        try:
            probe = prune(copy.deepcopy(model), example_inputs=ctx.example.to(ctx.device), selection=shared,
                          prune_heads=ctx.job.prune_heads, prune_layernorm=ctx.job.prune_layernorm, seed=ctx.job.seed)
            probe.remove()
        except (ValueError, TypeError, RuntimeError) as exc:  # e.g. a budget below the reachable minimum
            failed = exc
    # the other ranks wait here for the table, and fail with rank 0
    if int(ddp.any_rank_max(torch.tensor([int(failed is not None)], device=ctx.device))[0]):
        if failed is not None:
            raise failed
        raise RuntimeError("rank 0 could not measure the latency budget's table (its error says why)")
    return shared


def _job_split(ctx: _Job) -> tuple[Any, Any]:
    """The job's split of the training set into D_t and D_v (every epoch's with ``"fixed"``, epoch 0's sizes)."""
    return split_dataset(ctx.train_set, 0.5, seed=epoch_seed(ctx.job.seed, 0, "split"))


def search_passes(split: str, one_net: bool, batch_size: int, half_t: Any, half_v: Any) -> list[tuple[Any, Any, int]]:
    """``(D_t, D_v, batch size)`` of each pass of a search epoch (see `PruneJob.search_split`): one pass with
    ``"fixed"``; with ``"swap"`` both halves to both nets, a one-net baseline (``one_net``) stepping on half
    batches once.

    Examples:
        >>> [(a, b, n) for a, b, n in search_passes("swap", False, 64, "t", "v")]
        [('t', 'v', 64), ('v', 't', 64)]
    """
    if split == "fixed":
        return [(half_t, half_v, batch_size)]
    if one_net:
        return [(half_t, half_v, max(1, batch_size // 2))]
    return [(half_t, half_v, batch_size), (half_v, half_t, batch_size)]


def _search_passes(job: PruneJob, half_t: Any, half_v: Any) -> list[tuple[Any, Any, int]]:
    """The job's `search_passes`."""
    return search_passes(job.split, job.method in BASELINE_METHODS, job.batch_size, half_t, half_v)


def _search_steps_per_epoch(job: PruneJob, halves: tuple[Any, Any]) -> int:
    """Steps of one search epoch (the pairs `_search_pairs` yields: full batches, the shorter half cycled)."""
    return sum(max(len(a) // size, len(b) // size) for a, b, size in _search_passes(job, *halves))


def _search_pairs(ctx: _Job, epoch: int, halves: tuple[Any, Any] | None) -> tuple[Iterator[tuple[Any, Any]], int]:
    """The ``(batch_t, batch_v)`` pairs of search epoch ``epoch`` and their number (see `PruneJob.search_split`).

    Loaders (and, with ``"swap"``, the split) are seeded by `rartsprune.split.epoch_seed`: a resumed search sees
    the same batches as an uninterrupted one.
    """
    job = ctx.job
    if halves is None:  # "swap": a fresh split every epoch
        halves = split_dataset(ctx.train_set, 0.5, seed=epoch_seed(job.seed, epoch, "split"))
    loaders = [PairedLoader(ctx.train_loader(a, size, epoch_seed(job.seed, epoch, f"search {i} t")),
                            ctx.train_loader(b, size, epoch_seed(job.seed, epoch, f"search {i} v")))
               for i, (a, b, size) in enumerate(_search_passes(job, *halves))]
    return itertools.chain.from_iterable(loaders), sum(len(p) for p in loaders)


def _search_phase(ctx: _Job, model: nn.Module, start: int, pruner_state: dict | None) -> Any:
    job = ctx.job
    pruner = _make_pruner(ctx, model, pruner_state)
    if pruner_state is not None:
        pruner.load_state_dict(pruner_state, other_selection=True)  # a resumed job may finalize at another size
    halves = _job_split(ctx) if job.split == "fixed" else None
    t0 = time.perf_counter()
    for epoch in range(start, job.search_epochs):
        pairs, steps = _search_pairs(ctx, epoch, halves)
        losses = []
        for batch_t, batch_v in tqdm(pairs, total=steps, desc=f"search {epoch + 1}/{job.search_epochs}", leave=False,
                                     disable=None if ctx.progress else True, unit="step"):
            bt = to_device_batch(batch_t, ctx.device, ctx.train_aug, memory_format=ctx.memory_format,
                                 shard=ctx.ranks.shard)
            bv = to_device_batch(batch_v, ctx.device, ctx.train_aug, memory_format=ctx.memory_format,
                                 shard=ctx.ranks.shard)
            losses.append(pruner.step(bt, bv))
        pruner.step_schedulers()
        ctx.sync_buffers(model)
        report = pruner.report()
        mean = ctx.mean_over_ranks({"loss_t": _mean(losses, "loss_t"), "loss_v": _mean(losses, "loss_v")})
        ctx.log({"phase": "search", "epoch": epoch + 1, "steps": steps, "loss_t": mean["loss_t"],
                 "loss_v": mean["loss_v"], "test_acc": ctx.eval(model),
                 "prc_if_finalized": report["prc_if_finalized"], "score_mean": report["scores"]["mean"],
                 "score_zeros": report["scores"]["zeros"]})
        ctx.save("search", epoch + 1, pruner=pruner.state_dict())
    ctx.results["wall_time_s"]["search"] = ctx.results["wall_time_s"].get("search", 0.0) + time.perf_counter() - t0
    _check_collapse(ctx, pruner)
    return pruner


def _same_search_on_ranks(ctx: _Job, pruner: Any) -> None:
    """Before surgery on several ranks: the scores and weights made rank 0's on every rank (they are already:
    DDP and the search average the same gradients everywhere), the largest differences found recorded in
    ``results["distributed"]`` and any above 0 reported in ``results["warnings"]``."""
    if not ctx.ranks.distributed:
        return
    model = pruner.model
    scores = list(pruner.handle.scores)
    seen = {id(a) for a in scores}
    weights = [p for p in model.parameters() if id(p) not in seen]
    found = {"max_score_difference": same_as_rank0(scores), "max_weight_difference": same_as_rank0(weights)}
    ctx.sync_buffers(model)
    ctx.results["distributed"].update(found)
    for name, value in found.items():
        if value > 0:
            ctx.results.setdefault("warnings", []).append(
                f"the ranks' search state differed before surgery ({name.replace('_', ' ')} {value:.3g}); "
                "rank 0's was used on every rank")


def _check_same_plan(ctx: _Job, plan: PruningPlan) -> None:
    """Several ranks: every rank must have cut the same model (a hash of the plan compared across ranks).

    Raises:
        RuntimeError: the plans differ (on every rank).
    """
    if not ctx.ranks.distributed:
        return
    if not agree(_digest(plan.to_json().encode()), ctx.device):
        raise RuntimeError("the ranks pruned different models (their pruning plans differ) although their "
                           "scores were made rank 0's: a selection that depends on the rank (e.g. its own "
                           "measurements)")


def _digest(data: bytes) -> int:
    """A 56-bit hash of ``data`` (compared across the ranks with `agree`)."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=7).digest(), "little")


def _check_same_importance(ctx: _Job, scores: dict[str, torch.Tensor]) -> None:
    """Several ranks: every rank must rank the channels alike (a hash of the importances compared across the
    ranks; the weights were made rank 0's and ``random`` is seeded by the job's seed, compared too).

    Raises:
        RuntimeError: the importances differ (on every rank).
    """
    if not ctx.ranks.distributed:
        return
    data = b"".join(name.encode() + scores[name].detach().float().cpu().contiguous().numpy().tobytes()
                    for name in sorted(scores))
    if not agree(_digest(data), ctx.device):
        raise RuntimeError(f"the ranks' channel importances ({ctx.job.method}, importance "
                           f"{ctx.job.importance or 'the method default'}) differ although their weights were "
                           "made rank 0's: an importance that depends on the rank (e.g. its own random state)")


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
    # every rank the same whole batches (as one process): the same statistics everywhere (and then synced)
    loader = make_loader(ctx.train_set, job.batch_size, train=True, seed=epoch_seed(job.seed, 0, "recalibrate"))
    inputs = (to_device_batch(b, ctx.device, ctx.train_aug, memory_format=ctx.memory_format)[0] for b in loader)
    with _autocast(ctx.device, ctx.amp):
        recalibrate_bn(model, inputs, num_batches=job.bn_recalibration)
    ctx.sync_buffers(model)


def _plots(ctx: _Job, scores: dict[str, torch.Tensor], widths: dict[str, Any]) -> list[str]:
    """The plots drawn (by rank 0; every rank returns rank 0's list)."""
    if not ctx.ranks.distributed:
        return _draw_plots(ctx, scores, widths)
    box = [_draw_plots(ctx, scores, widths) if ctx.ranks.main else []]
    dist.broadcast_object_list(box, src=0)
    return list(box[0])


def _draw_plots(ctx: _Job, scores: dict[str, torch.Tensor], widths: dict[str, Any]) -> list[str]:
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
    """Run (or resume) a width-search job; returns the results dict also written to ``OUT/results.json``.

    Under ``torchrun`` (``RANK`` / ``WORLD_SIZE`` set, more than one process) or inside a process group the
    caller initialised, the job runs data-parallel on all ranks (see the module's documentation); every rank
    returns the same numbers (wall times are each rank's own), rank 0 writes the files. `check_launch` runs
    first.
    """
    ranks = launch_ranks()
    check_launch(job, ranks.world)
    with process_group(rank_device(resolve_device(job.device), ranks), ranks) as ranks:
        results = _run(_Job(job, ranks))
        barrier(ranks)  # rank 0's files are written when any rank returns
        return results


def _agree(ctx: _Job, value: int, what: str) -> None:
    """Several ranks: raise on every rank unless all have the same ``value`` (what they read from OUT)."""
    if ctx.ranks.distributed and not agree(value, ctx.device):
        raise RuntimeError(f"the ranks do not see the same {what} in {ctx.out}: put --out on a filesystem "
                           "every node shares (rank 0 writes it, every rank reads it when resuming)")


def _load_checkpoint(ctx: _Job) -> dict[str, Any] | None:
    """The checkpoint to resume from (rank 0's, read by every rank), or None for a fresh job.

    Raises:
        FileExistsError: a checkpoint exists and ``resume`` is off (on every rank).
        ValueError: the file is not a job checkpoint.
        RuntimeError: the ranks do not see the same checkpoint.
    """
    job = ctx.job
    exists = ctx.ckpt.exists()
    _agree(ctx, int(exists), "checkpoint")
    if exists and not job.resume:
        raise FileExistsError(f"{ctx.ckpt} exists: pass resume=True (--resume) to continue or use another "
                              "--out")
    state: dict[str, Any] | None = None
    if exists:
        state = torch.load(ctx.ckpt, map_location="cpu", weights_only=True)
        if state.get("format") != _CKPT_FORMAT:
            raise ValueError(f"{ctx.ckpt} is not a rartsprune job checkpoint")
        digest = hashlib.blake2b(state["results"].encode(), digest_size=7).digest()
        _agree(ctx, int.from_bytes(digest, "little"), "checkpoint (they read different files)")
        ctx.results = json.loads(state["results"])
        ctx.results["job"] = job.to_dict()  # the settings this run finishes with (e.g. another budget)
        ctx.results.pop("distributed", None)
        if ctx.ranks.distributed:  # this run's
            ctx.results["distributed"] = {"world_size": ctx.ranks.world}
        set_rng_state(state["rng"])
        if ctx.ranks.distributed and ctx.device.type == "cuda" and "rng_device" in state:
            torch.cuda.set_rng_state(state["rng_device"], ctx.device)  # every rank draws as rank 0 did
    barrier(ctx.ranks)  # every rank has read the checkpoint before rank 0 writes the next one
    return state


def _run(ctx: _Job) -> dict[str, Any]:
    job = ctx.job
    state = _load_checkpoint(ctx)
    phase = state["phase"] if state else "pretrain"
    epoch = int(state["epoch"]) if state else 0

    model = ctx.new_model()
    # ---- pretrain
    if phase == "pretrain":
        if state is not None:
            model.load_state_dict(state["model"])
        if job.pretrain_epochs > 0:
            _train_phase(ctx, model, "pretrain", job.pretrain_epochs, epoch,
                         state.get("optimizer") if state else None, state.get("scheduler") if state else None, {},
                         state["rng"] if state else None)
        phase, epoch, state = "search", 0, None
    ctx.search_distill = job.search_distill_share
    ctx.finetune_distill = job.finetune_distill_share
    if state is not None and job.search_distill is None:  # the default: whatever the resumed search did
        ctx.search_distill = float(state.get("search_distill", 0.0))
    if state is not None and job.finetune_distill is None:  # likewise (0 from a checkpoint older than the default)
        ctx.finetune_distill = float(state.get("finetune_distill", 0.0))
    if ctx.search_distill or ctx.finetune_distill:
        ctx.teacher = _teacher_weights(ctx, state, model)
    if "before" not in ctx.results:
        ctx.results["before"] = {"test_acc": ctx.eval(model), **_counts(model, ctx.example.to(ctx.device))}
        if ctx.ranks.main:
            torch.save(model.state_dict(), ctx.out / "baseline.pt")
        ctx.save("search", 0, pretrained=model.state_dict())
    if job.stop_after == "pretrain":  # the results so far; checkpoint.pt holds the trained model
        ctx.write_results()
        return ctx.results
    # ---- search + finalize
    plan: PruningPlan
    if phase == "search":
        if state is not None and "pretrained" in state:
            model.load_state_dict(state["pretrained"])
        pruner = _search_phase(ctx, model, epoch, state.get("pruner") if state else None)
        if job.stop_after == "search":  # checkpoint.pt holds the finished search: resume it with any size
            ctx.write_results()
            return ctx.results
        ctx.results["after_search"] = {"test_acc": ctx.eval(model)}
        _same_search_on_ranks(ctx, pruner)
        scores = pruner.importance()
        _check_same_importance(ctx, scores)
        t0 = time.perf_counter()
        model = pruner.finalize()
        ctx.results["wall_time_s"]["finalize"] = time.perf_counter() - t0
        plan = pruner.plan()
        _check_same_plan(ctx, plan)
        if ctx.ranks.main:
            plan.save(ctx.out / "plan.json")
        ctx.results["pruning"] = {k: v for k, v in pruner.result.items() if k != "widths"}
        steps = pruner.selection_config.gradual_steps  # the schedule in effect (job.gradual: as given)
        ctx.results["pruning"].update(gradual=job.gradual_fraction if steps else 0.0, gradual_steps=steps,
                                      search_distill=ctx.search_distill, finetune_distill=ctx.finetune_distill)
        ctx.results["widths"] = pruner.result["widths"]
        if job.bn_recalibration > 0 and has_running_stats(model):
            ctx.results["after_prune_stale_bn"] = {"test_acc": ctx.eval(model)}
            t0 = time.perf_counter()
            _recalibrate(ctx, model)
            ctx.results["wall_time_s"]["bn_recalibration"] = time.perf_counter() - t0
        ctx.results["after_prune"] = {"test_acc": ctx.eval(model), **_counts(model, ctx.example.to(ctx.device))}
        ctx.results["plots"] = _plots(ctx, scores, pruner.result["widths"])
        if ctx.val_set is not None:
            ctx.keep_if_best(model, 0)
        phase, epoch, state = "finetune", 0, None
        ctx.save("finetune", 0, model=model.state_dict(), plan=plan.to_json())
    else:
        plan = PruningPlan.from_dict(json.loads(state["plan"]))
        apply_plan(model, plan, ctx.example.to(ctx.device))
        model.load_state_dict(state["model"])
        ctx.best = state.get("best")
        if phase == "finetune" and ctx.val_set is not None and ctx.best is None:
            raise ValueError(f"{ctx.ckpt} is a fine-tuning started without val_images: it cannot choose among "
                             "epochs it did not score; resume it with val_images=0 or start it again")
    # ---- fine-tune
    if phase == "finetune" and job.finetune_epochs > 0 and epoch < job.finetune_epochs:
        _train_phase(ctx, model, "finetune", job.finetune_epochs, epoch,
                     state.get("optimizer") if state else None, state.get("scheduler") if state else None,
                     {"plan": plan.to_json()}, state["rng"] if state else None)
    if phase == "finetune" and ctx.best is not None:  # the epoch the held-out images chose
        model.load_state_dict(ctx.best["model"])
        ctx.results["finetune_selection"].update(kept_epoch=ctx.best["epoch"], kept_val_acc=ctx.best["val_acc"])
    ctx.results["after_finetune"] = {"test_acc": ctx.eval(model)}
    before, after = ctx.results["before"], ctx.results["after_prune"]
    ctx.results["summary"] = {
        "prc": ctx.results["pruning"]["prc"],
        "params_ratio": after["params"] / before["params"],
        "macs_ratio": after["macs"] / before["macs"],
        "acc_before": before["test_acc"],
        "acc_final": ctx.results["after_finetune"]["test_acc"],
    }
    if ctx.ranks.main:
        torch.save(model.state_dict(), ctx.out / "pruned.pt")
    ctx.write_results()
    ctx.save("done", 0, model=model.state_dict(), plan=plan.to_json())
    return ctx.results
