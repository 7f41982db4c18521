"""Criterion diagnostic: how well does each channel criterion rank units, against the oracle, in minutes.

On the trained baseline of the quality benchmark (``bench/pruning_quality.py``: PreResNet-20 on 4k CIFAR-10
images; trained here if ``--work`` has none) this script

1. computes every unit's *oracle importance*: the rise of the loss on held-out images when that unit alone is
   zeroed (its score set to 0; eval mode; a seeded sample of ``--oracle-units`` units);
2. runs each *variant* — a search method with one setting of the levers (score optimizer and learning rate,
   initialisation, a sparsity pressure on the scores, a warm-up with frozen scores) — for each search length of
   ``--search-epochs`` through `rartsprune.prune` on the same data halves as the pipeline, and reads its
   criteria (|α|, |α·γ|); plus the one-shot criteria on the trained baseline (ℓ1-norm, BN γ, random);
3. reports, for every criterion, the Spearman correlation of its ranking with the oracle over the sampled units
   (``global``: across layers; ``layer``: the mean of the per-layer correlations) and the accuracy right after
   pruning to each MACs budget of ``--budgets`` (`rartsprune.prune`'s budget selection, BatchNorm
   re-estimated on training batches) — each criterion also in a *cost-aware* form (importance divided by the
   unit's MACs: the greedy answer to "most importance per MAC");
4. with ``--finetune-epochs N``, the accuracy at each budget of ``--finetune-budgets`` after N epochs of
   fine-tuning on the search subset (SGD at ``--finetune-lr``, the job's step schedule) — the equal-MACs
   benchmark's measure. The accuracy right after pruning does not predict it: a criterion that leaves fewer
   parameters at the same MACs can lead before fine-tuning and trail after it.

A variant with ``"split": "swap"`` searches as the job's ``search_split="swap"``: a fresh split every epoch,
passed twice with the halves swapped (a one-net baseline: once, at half batches), so the kept net sees every
image of the subset once per epoch.

Every image used here comes from the CIFAR-10 *training* split: the search subset is the benchmark's; the oracle
and the accuracies use training images outside it. The test images the benchmarks report are never touched, so
settings can be chosen on this diagnostic.

Writes ``bench/results/criterion_quality.json`` (``--out``) and ``.md``, and ``criterion_quality.png``
(accuracy vs MACs per criterion) when matplotlib is installed. Finished variants are cached in ``--work``.

    python bench/criterion_quality.py --threads 2                 # ~30 min on 2 cores
    python bench/criterion_quality.py --variants default,adam_lr1e-2 --search-epochs 1 --oracle-units 64
    python bench/criterion_quality.py --variants default,default_swap --search-epochs 1 --budgets 0.6 \
        --finetune-epochs 3                                            # levers judged after fine-tuning
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import re
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _models import add_model_args, model_of  # noqa: E402  (bench/ is on sys.path when a script runs)
from _paths import portable  # noqa: E402

import rartsprune  # noqa: E402
from rartsprune.app.data import default_augment, load_dataset, make_loader, to_device_batch  # noqa: E402
from rartsprune.app.data.datasets import stratified_indices  # noqa: E402
from rartsprune.app.pipeline import search_passes, train_epoch  # noqa: E402
from rartsprune.distill import DistillationLoss  # noqa: E402
from rartsprune.split import PairedLoader, epoch_seed, split_dataset  # noqa: E402
from rartsprune.width.baselines import baseline_importance  # noqa: E402
from rartsprune.width.budget import CostModel, select_by_budget  # noqa: E402
from rartsprune.width.config import BASELINE_METHODS  # noqa: E402
from rartsprune.width.penalties import unit_macs  # noqa: E402
from rartsprune.width.selection import unit_importance  # noqa: E402

DATA = ROOT / ".." / "shared" / "data" / "cifar10"


def _adam(lr: float, betas: tuple[float, float] = (0.5, 0.999), wd: float = 1e-3) -> Callable:
    return lambda params: torch.optim.Adam(params, lr=lr, betas=betas, weight_decay=wd)


def _sgd(lr: float, momentum: float = 0.9) -> Callable:
    return lambda params: torch.optim.SGD(params, lr=lr, momentum=momentum)


#: name -> (method, rartsprune.prune keywords, extras). Extras: "warmup" (fraction of the steps with frozen
#: scores), "split" ("swap": the job's search_split="swap"; default "fixed"), "gradual" (a budget-aware search:
#: one search per MACs budget with gradual_steps = this fraction of the steps), "distill" (the search's loss is
#: rartsprune.distill.DistillationLoss from the baseline with this weight). "l1" is prune()'s ℓ1 pressure on
#: the scores (0: none; ratio mode's default is 4e-3).
#: the gradual setting chosen on this diagnostic (2026-12-05): budget pressure, score LR 1e-2, |a|*||W|| ranking
_CHOSEN: dict[str, Any] = {"l1": 0.0, "cost_weight": 2.0, "importance": "l1_norm", "arch_lr": 1e-2}
VARIANTS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "default": ("rarts", {}, {}),  # rartsprune.prune's defaults (width.DEFAULTS["ratio"])
    "former_default": ("rarts", {"arch_lr": 3e-4, "l1": 0.0}, {}),  # the defaults before the diagnostic
    "adam_lr1e-2": ("rarts", {"arch_lr": 1e-2, "l1": 0.0}, {}),
    "adam_lr1e-1": ("rarts", {"arch_lr": 1e-1, "l1": 0.0}, {}),
    "sgd_lr1": ("rarts", {"arch_optimizer": _sgd(1.0), "l1": 0.0}, {}),
    "sgd_lr10": ("rarts", {"arch_optimizer": _sgd(10.0), "l1": 0.0}, {}),
    "adam_lr1e-2_l1_1e-3": ("rarts", {"arch_lr": 1e-2, "l1": 1e-3}, {}),
    "adam_lr1e-2_l1_4e-3": ("rarts", {"arch_lr": 1e-2, "l1": 4e-3}, {}),
    "adam_lr1e-2_l1_1e-2": ("rarts", {"arch_lr": 1e-2, "l1": 1e-2}, {}),
    "adam_lr3e-2_l1_4e-3": ("rarts", {"arch_lr": 3e-2, "l1": 4e-3}, {}),
    "adam_lr1e-1_l1_4e-3": ("rarts", {"arch_lr": 1e-1, "l1": 4e-3}, {}),
    "adam_lr3e-2_l1_1e-2": ("rarts", {"arch_lr": 3e-2, "l1": 1e-2}, {}),
    "sgd_lr1_l1_4e-3": ("rarts", {"arch_optimizer": _sgd(1.0), "l1": 4e-3}, {}),
    "default_warmup": ("rarts", {}, {"warmup": 0.5}),
    "default_swap": ("rarts", {}, {"split": "swap"}),
    # the budget mode's pressure (prune(macs=...)'s default: width.config.BUDGET_DEFAULTS)
    "budget_default": ("rarts", {"l1": 0.0, "cost_weight": 2.0}, {}),
    "budget_default_swap": ("rarts", {"l1": 0.0, "cost_weight": 2.0}, {"split": "swap"}),
    # the RARTS objective's own knobs, with the default score settings
    "rarts_beta10": ("rarts", {"beta": 10.0}, {}),
    "rarts_beta0.1": ("rarts", {"beta": 0.1}, {}),
    "rarts_lam0.1": ("rarts", {"lam": 0.1}, {}),
    "rarts_fused": ("rarts", {"update": "fused"}, {}),
    "rarts_frozen_w": ("rarts", {"weight_lr": 1e-9}, {}),  # the weights do not move: only the scores learn
    "rarts_cost2": ("rarts", {"l1": 0.0, "cost_weight": 2.0}, {}),  # pressure in proportion to each unit's MACs
    # the weights' LR in the search: the default 1e-2 is ten times a converged baseline's last LR (step schedule)
    "default_wlr1e-3": ("rarts", {"weight_lr": 1e-3}, {}),
    "budget_default_wlr1e-3": ("rarts", {"l1": 0.0, "cost_weight": 2.0, "weight_lr": 1e-3}, {}),
    "budget_default_frozen_w": ("rarts", {"l1": 0.0, "cost_weight": 2.0, "weight_lr": 1e-9}, {}),
    # budget-aware searches (prune(gradual_steps=...)): one search per MACs budget, the units outside the selection
    # at a growing fraction of the budget zeroed during the first "gradual" fraction of the steps (cubic schedule)
    "gradual_budget": ("rarts", {"l1": 0.0, "cost_weight": 2.0}, {"gradual": 0.5}),
    "gradual_ratio_pressure": ("rarts", {"l1": 4e-3, "cost_weight": 0.0}, {"gradual": 0.5}),
    "gradual_budget_all": ("rarts", {"l1": 0.0, "cost_weight": 2.0}, {"gradual": 1.0}),
    "gradual_l1_norm": ("l1_norm", {}, {"gradual": 0.5}),  # the same schedule by weight magnitude (plain training)
    # the gradual searches ranked by |a|*||W|| (importance="l1_norm": the weights' magnitude with the scores folded in)
    "gradual_budget_l1aw": ("rarts", {"l1": 0.0, "cost_weight": 2.0, "importance": "l1_norm"}, {"gradual": 0.5}),
    "gradual_ratio_l1aw": ("rarts", {"l1": 4e-3, "cost_weight": 0.0, "importance": "l1_norm"}, {"gradual": 0.5}),
    "gradual_nopressure_l1aw": ("rarts", {"l1": 0.0, "cost_weight": 0.0, "importance": "l1_norm"}, {"gradual": 0.5}),
    "gradual_budget_l1aw_alr1e-2": ("rarts", {"l1": 0.0, "cost_weight": 2.0, "importance": "l1_norm", "arch_lr": 1e-2},
                                    {"gradual": 0.5}),
    "gradual_budget_alr1e-2": ("rarts", {"l1": 0.0, "cost_weight": 2.0, "arch_lr": 1e-2}, {"gradual": 0.5}),
    "gradual_nopressure_l1aw_alr1e-2": ("rarts", {"l1": 0.0, "cost_weight": 0.0, "importance": "l1_norm", "arch_lr": 1e-2},
                                        {"gradual": 0.5}),
    "gradual_budget_fused_l1aw": ("rarts", {"l1": 0.0, "cost_weight": 2.0, "importance": "l1_norm", "update": "fused"},
                                  {"gradual": 0.5}),
    # levers on the chosen gradual setting (gradual_budget_l1aw_alr1e-2), judged after fine-tuning at 0.6x
    "gradual_chosen_wlr1e-3": ("rarts", {**_CHOSEN, "weight_lr": 1e-3}, {"gradual": 0.5}),  # the fine-tuning LR
    "gradual_chosen_swap": ("rarts", dict(_CHOSEN), {"gradual": 0.5, "split": "swap"}),  # y sees every image
    "gradual_chosen_g0.25": ("rarts", dict(_CHOSEN), {"gradual": 0.25}),  # the size reached sooner, longer recovery
    "gradual_l1_norm_wlr1e-3": ("l1_norm", {"weight_lr": 1e-3}, {"gradual": 0.5}),
    # distillation from the unpruned baseline in the search's loss (rartsprune.distill.DistillationLoss, T = 4):
    # a long-trained net's cross-entropy on its own training images is near zero whatever a score does
    "gradual_chosen_kd0.5": ("rarts", dict(_CHOSEN), {"gradual": 0.5, "distill": 0.5}),
    "gradual_chosen_kd1": ("rarts", dict(_CHOSEN), {"gradual": 0.5, "distill": 1.0}),
    "gradual_l1_norm_kd0.5": ("l1_norm", {}, {"gradual": 0.5, "distill": 0.5}),  # the same loss, by magnitude
    "gradual_l1_norm_kd1": ("l1_norm", {}, {"gradual": 0.5, "distill": 1.0}),
    # with distillation the scores' gradient carries signal: the MACs pressure and the |a|*||W|| readout, chosen
    # under cross-entropy, measured again; and a search twice as long against an equally long magnitude arm
    "gradual_chosen_kd1_nopressure": ("rarts", {**_CHOSEN, "cost_weight": 0.0}, {"gradual": 0.5, "distill": 1.0}),
    "gradual_chosen_kd1_alpha": ("rarts", {**_CHOSEN, "importance": "alpha"}, {"gradual": 0.5, "distill": 1.0}),
    # where the search's choice matters: its per-layer widths kept, the channels inside each layer chosen by the
    # baseline's weight magnitude and cut from the baseline at once ("widths"); the same from the gradual magnitude
    # arm's widths separates a learned allocation from a gradual one
    "gradual_chosen_kd1_widths_l1": ("rarts", dict(_CHOSEN), {"gradual": 0.5, "distill": 1.0, "widths": "l1_norm"}),
    "gradual_l1_norm_kd1_widths_l1": ("l1_norm", {}, {"gradual": 0.5, "distill": 1.0, "widths": "l1_norm"}),
    "slimming": ("slimming", {}, {}),  # Network Slimming's sparsity epoch; |a*g| is then its BN-scale ranking
    "slimming_swap": ("slimming", {}, {"split": "swap"}),
    "darts1": ("darts1", {}, {}),
    "darts2": ("darts2", {}, {}),
    "milenas": ("milenas", {}, {}),
}
ONE_SHOT = ("l1_norm", "bn_gamma", "random", "fisher")


# ---------------------------------------------------------------------------------------------- statistics
def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged (as Spearman's rho needs)."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    sx = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and sx[j + 1] == sx[i]:
            j += 1
        ranks[order[i:j + 1]] = 0.5 * (i + j)
        i = j + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two vectors (nan when either is constant)."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return math.nan
    return float(np.corrcoef(ra, rb)[0, 1])


# ---------------------------------------------------------------------------------------------- data
class Data:
    """The search subset (the benchmark's 4k images, split in halves) and held-out training images."""

    def __init__(self, root: str, subset: int, oracle_images: int, eval_images: int, batch_size: int,
                 device: torch.device) -> None:
        full = load_dataset(root, "train")
        idx = stratified_indices(full.targets, subset, seed=0)  # the pipeline's subset for seed 0
        rest = torch.tensor(sorted(set(range(len(full))) - set(idx.tolist())))
        perm = rest[torch.randperm(len(rest), generator=torch.Generator().manual_seed(12345))]
        self.train = full.subset(idx)
        self.oracle = full.subset(perm[:oracle_images].sort().values)
        self.heldout = full.subset(perm[oracle_images:oracle_images + eval_images].sort().values)
        self.half_t, self.half_v = split_dataset(self.train, 0.5, seed=epoch_seed(0, 0, "split"))  # the job's, seed 0
        self.batch_size = batch_size
        self.device = device
        self.train_aug = default_augment(self.train, train=True).to(device)
        self.test_aug = default_augment(self.train, train=False).to(device)
        self.oracle_batches = [to_device_batch(b, device, self.test_aug)
                               for b in make_loader(self.oracle, 256, train=False)]
        self.heldout_loader = make_loader(self.heldout, 256, train=False)

    def pairs(self, epoch: int, seed: int) -> PairedLoader:
        return PairedLoader(make_loader(self.half_t, self.batch_size, seed=epoch_seed(seed, epoch, "search 0 t")),
                            make_loader(self.half_v, self.batch_size, seed=epoch_seed(seed, epoch, "search 0 v")))

    def swap_pairs(self, epoch: int, seed: int, one_net: bool) -> list[tuple[Any, Any]]:
        """Search epoch ``epoch`` as the job's ``search_split="swap"``: a fresh split, both halves to both nets
        (``one_net``: one pass at half batches, as the job gives slimming)."""
        half_t, half_v = split_dataset(self.train, 0.5, seed=epoch_seed(seed, epoch, "split"))
        passes = search_passes("swap", one_net, self.batch_size, half_t, half_v)
        return [pair for i, (a, b, size) in enumerate(passes)
                for pair in PairedLoader(make_loader(a, size, seed=epoch_seed(seed, epoch, f"search {i} t")),
                                         make_loader(b, size, seed=epoch_seed(seed, epoch, f"search {i} v")))]

    def batch(self, b: Any) -> tuple[torch.Tensor, torch.Tensor]:
        return to_device_batch(b, self.device, self.train_aug)

    @torch.no_grad()
    def accuracy(self, model: torch.nn.Module) -> float:
        model.eval()
        correct = total = 0
        for b in self.heldout_loader:
            x, y = to_device_batch(b, self.device, self.test_aug)
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
        return 100.0 * correct / total

    @torch.no_grad()
    def oracle_loss(self, model: torch.nn.Module) -> float:
        model.eval()
        total = n = 0.0
        for x, y in self.oracle_batches:
            total += float(F.cross_entropy(model(x), y, reduction="sum"))
            n += len(y)
        return total / n


# ---------------------------------------------------------------------------------------------- oracle
def oracle(model: torch.nn.Module, data: Data, n_units: int, seed: int) -> dict[str, Any]:
    """Loss rise on the oracle images when each sampled unit alone is zeroed (scores attached, eval mode)."""
    net = copy.deepcopy(model)
    handle = rartsprune.attach_scores(net, torch.zeros(1, 3, 32, 32, device=data.device))
    units = [(g.name, u) for g in handle.groups for u in range(g.num_units)]
    gen = torch.Generator().manual_seed(seed)
    if n_units < len(units):
        pick = sorted(torch.randperm(len(units), generator=gen)[:n_units].tolist())
        units = [units[i] for i in pick]
    base = data.oracle_loss(net)
    rise = []
    t0 = time.perf_counter()
    for k, (name, u) in enumerate(units):
        alpha = handle.score(name)
        with torch.no_grad():
            alpha[u] = 0.0
        rise.append(data.oracle_loss(net) - base)
        with torch.no_grad():
            alpha[u] = 1.0
        if k % 64 == 63:
            print(f"  oracle {k + 1}/{len(units)} units, {time.perf_counter() - t0:.0f} s", flush=True)
    return {"base_loss": base, "units": [[n, u] for n, u in units], "rise": rise,
            "total_units": sum(g.num_units for g in handle.groups)}


# ---------------------------------------------------------------------------------------------- criteria
def _flat(imp: dict[str, torch.Tensor], units: list[list[Any]]) -> np.ndarray:
    return np.array([float(imp[n][u]) for n, u in units])


def correlations(imp: dict[str, torch.Tensor], orc: dict[str, Any],
                 macs: dict[str, torch.Tensor] | None = None) -> dict[str, float]:
    """Spearman of ``imp`` with the oracle (with ``macs``: with the oracle's loss rise per MAC)."""
    units, rise = orc["units"], np.array(orc["rise"])
    if macs is not None:
        rise = rise / _flat(macs, units)
    vals = _flat(imp, units)
    per_layer = []
    for name in dict.fromkeys(n for n, _ in units):
        sel = np.array([n == name for n, _ in units])
        if sel.sum() >= 5:
            r = spearman(vals[sel], rise[sel])
            if not math.isnan(r):
                per_layer.append(r)
    return {"spearman_global": spearman(vals, rise),
            "spearman_layer": statistics.mean(per_layer) if per_layer else math.nan}


def finetune(net: torch.nn.Module, data: Data, epochs: int, lr: float, seed: int,
             distill: DistillationLoss | None = None) -> None:
    """``epochs`` of SGD on the search subset (momentum 0.9, weight decay 1e-4, LR / 10 at 50% and 75% of the
    epochs: the job's fine-tuning with ``schedule="step"``); on ``distill``'s loss when given (else cross-entropy)."""
    loss_fn = (lambda m, x, y: distill.loss_and_logits(m, (x, y))) if distill is not None else None
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, epochs // 2), max(1, (3 * epochs) // 4)], 0.1)
    for epoch in range(epochs):
        loader = make_loader(data.train, data.batch_size, train=True, seed=epoch_seed(seed, epoch, "finetune"))
        train_epoch(net, loader, opt, data.device, data.train_aug, progress=False, loss_fn=loss_fn)
        sched.step()


def recalibrated_accuracy(net: torch.nn.Module, data: Data, bn_batches: int, seed: int) -> float:
    """Held-out accuracy of a pruned ``net`` after re-estimating its BatchNorm statistics on the search subset."""
    loader = make_loader(data.train, data.batch_size, train=True, seed=epoch_seed(seed, 0, "recalibrate"))
    rartsprune.recalibrate_bn(net, (data.batch(x)[0] for x in loader), num_batches=bn_batches)
    return data.accuracy(net)


def accuracy_at_budgets(model: torch.nn.Module, imp: dict[str, torch.Tensor], budgets: list[float], data: Data,
                        bn_batches: int, seed: int, finetune_epochs: int = 0, finetune_budgets: tuple[float, ...] = (),
                        finetune_lr: float = 0.01, distill: DistillationLoss | None = None,
                        ) -> tuple[dict[str, float], dict[str, float]]:
    """Accuracy on held-out training images right after pruning to each MACs budget (BN re-estimated), and
    after ``finetune_epochs`` of fine-tuning at each budget of ``finetune_budgets``."""
    out, tuned = {}, {}
    for b in budgets:
        net = copy.deepcopy(model)
        handle = rartsprune.get_handle(net)
        sel = select_by_budget(handle, b, importance=imp)
        rartsprune.apply_surgery(net, sel.keep)
        out[f"{b:g}"] = recalibrated_accuracy(net, data, bn_batches, seed)
        if finetune_epochs and any(abs(b - f) < 1e-9 for f in finetune_budgets):
            finetune(net, data, finetune_epochs, finetune_lr, seed, distill)
            tuned[f"{b:g}"] = data.accuracy(net)
    return out, tuned


def _params_kept(model: torch.nn.Module, imp: dict[str, torch.Tensor], budget: float) -> float:
    """Fraction of the parameters the selection at ``budget`` MACs keeps (the cost model's prediction)."""
    handle = rartsprune.get_handle(model)
    cost = CostModel(handle)
    return cost.fraction(select_by_budget(handle, budget, importance=imp, cost=cost).keep, "params")


def cost_aware(imp: dict[str, torch.Tensor], macs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Importance per MAC (each unit's MACs relative to the mean unit's)."""
    mean = torch.cat(list(macs.values())).mean()
    return {k: v / (macs[k] / mean).clamp(min=1e-6) for k, v in imp.items()}


def per_group_mean(imp: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every group's values divided by their mean: the groups' average unit ties across groups."""
    return {k: v / v.mean().clamp(min=1e-12) for k, v in imp.items()}


def fisher(model: torch.nn.Module, handle: Any, data: Data, seed: int) -> dict[str, torch.Tensor]:
    """Σ over one epoch of D_t batches of (∂L/∂α)² at α = 1 (empirical Fisher; Molchanov et al.'s Taylor
    criterion of the scores): what the gradients alone say, as a reference for the searched scores."""
    model.train()
    acc = [torch.zeros_like(a) for a in handle.scores]
    state = copy.deepcopy(model.state_dict())
    for bt, _ in data.pairs(0, seed):
        x, y = data.batch(bt)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), handle.scores)
        for s, g in zip(acc, grads):
            s += g.detach() ** 2
    model.load_state_dict(state)  # the training-mode passes moved the BatchNorm statistics
    return {g.name: s.cpu() for g, s in zip(handle.groups, acc)}


def run_search(base: torch.nn.Module, data: Data, variant: str, epochs: int, seed: int,
               budget: float | None = None) -> Any:
    """The variant's search for ``epochs`` epochs on a copy of the baseline; returns the pruner (a gradual
    variant's searches toward the MACs ``budget``, the others at ratio 0.4, the ranking read out at any budget)."""
    method, kwargs, extras = VARIANTS[variant]
    swap = extras.get("split", "fixed") == "swap"

    def epoch_pairs(epoch: int) -> Any:
        return data.swap_pairs(epoch, seed, method in BASELINE_METHODS) if swap else data.pairs(epoch, seed)

    steps = epochs * len(epoch_pairs(0))
    model = copy.deepcopy(base)
    torch.manual_seed(seed)
    kwargs = dict(kwargs)
    if "weight_lr" not in kwargs:
        kwargs["weight_lr"] = 0.01  # the quality benchmark's search LR of the weights (trained net, fine LR)
    if "distill" in extras:
        kwargs["loss_fn"] = DistillationLoss(base, weight=extras["distill"])
    size: dict[str, Any] = {"ratio": 0.4}
    if "gradual" in extras:
        size = {"macs": budget, "gradual_steps": max(1, round(extras["gradual"] * steps))}
    pruner = rartsprune.prune(model, method=method, example_inputs=torch.zeros(1, 3, 32, 32), seed=seed,
                              **size, **kwargs)
    frozen = int(extras.get("warmup", 0.0) * steps)
    arch_opt = getattr(pruner.search, "optimizers", {}).get("arch")  # one-shot trainers have no score optimizer
    lr0 = arch_opt.param_groups[0]["lr"] if arch_opt is not None else 0.0
    k = 0
    for epoch in range(epochs):
        for bt, bv in epoch_pairs(epoch):
            if arch_opt is not None:
                for group in arch_opt.param_groups:
                    group["lr"] = 0.0 if k < frozen else lr0
            pruner.step(data.batch(bt), data.batch(bv))
            k += 1
    return pruner


def gradual_row(base: torch.nn.Module, data: Data, variant: str, epochs: int, args: argparse.Namespace) -> dict[str, Any]:
    """A budget-aware variant: one search per budget, pruned to what its schedule kept (BN re-estimated), and
    fine-tuned as the one-shot criteria are (``--finetune-epochs`` at ``--finetune-budgets``, ``--finetune-only``)."""
    acc, params, tuned = {}, {}, {}
    for b in args.budgets:
        pruner = run_search(base, data, variant, epochs, args.seed, budget=b)
        params[f"{b:g}"] = pruner.cost_model().fraction(pruner.selection().keep, "params")
        widths = VARIANTS[variant][2].get("widths")
        net = pruner.finalize() if widths is None else cut_to_widths(base, pruner.selection().keep, widths)
        acc[f"{b:g}"] = recalibrated_accuracy(net, data, args.bn_batches, args.seed)
        msg = f"  {variant}@{epochs}ep at {b:g}x: acc {acc[f'{b:g}']:.1f}"
        if (args.finetune_epochs and re.search(args.finetune_only, f"{variant}@{epochs}ep")
                and any(abs(b - f) < 1e-9 for f in args.finetune_budgets)):
            finetune(net, data, args.finetune_epochs, args.finetune_lr, args.seed, _finetune_kd(base, args))
            tuned[f"{b:g}"] = data.accuracy(net)
            msg += f", fine-tuned {tuned[f'{b:g}']:.1f}"
        print(msg, flush=True)
    return {f"{variant}@{epochs}ep": {"spearman_global": math.nan, "spearman_layer": math.nan, "acc": acc,
                                      "acc_ft": tuned, "params_kept": params}}


def cut_to_widths(base: torch.nn.Module, keep: dict[str, list[int]], criterion: str) -> torch.nn.Module:
    """A copy of ``base`` cut at once to the number of units ``keep`` holds in every group, the units inside a
    group chosen by the one-shot ``criterion`` on ``base`` (its largest values kept)."""
    net = copy.deepcopy(base)
    handle = rartsprune.attach_scores(net, torch.zeros(1, 3, 32, 32))
    imp = baseline_importance(handle, criterion)
    mine = {g: sorted(torch.topk(imp[g], len(k)).indices.tolist()) for g, k in keep.items()}
    rartsprune.apply_surgery(net, mine)
    return net


def _finetune_kd(base: torch.nn.Module, args: argparse.Namespace) -> DistillationLoss | None:
    """``--finetune-distill``'s loss, distilling from ``base`` (the unpruned baseline), or None."""
    return DistillationLoss(base, weight=args.finetune_distill) if args.finetune_distill else None


def evaluate_criteria(model: torch.nn.Module, handle: Any, criteria: dict[str, dict[str, torch.Tensor]],
                      orc: dict[str, Any], data: Data, args: argparse.Namespace,
                      distill: DistillationLoss | None = None) -> dict[str, Any]:
    macs, _ = unit_macs(handle)
    out = {}
    for name, imp in criteria.items():
        forms = [(name, imp, None)]
        if args.cost_aware:
            forms.append((f"{name}/macs", cost_aware(imp, macs), macs))
        for label, values, per_mac in forms:
            row: dict[str, Any] = correlations(values, orc, per_mac)
            tune = args.finetune_epochs if re.search(args.finetune_only, label) else 0
            row["acc"], row["acc_ft"] = accuracy_at_budgets(
                model, values, args.budgets, data, args.bn_batches, args.seed, tune,
                tuple(args.finetune_budgets), args.finetune_lr, distill)
            row["params_kept"] = {f"{b:g}": _params_kept(model, values, b) for b in args.budgets}
            out[label] = row
            print(f"  {label}: spearman {row['spearman_global']:.3f} (layer {row['spearman_layer']:.3f}), acc "
                  + " ".join(f"{k}x:{v:.1f}" for k, v in row["acc"].items())
                  + "".join(f" fine-tuned {k}x:{v:.1f}" for k, v in row["acc_ft"].items()), flush=True)
    return out


# ---------------------------------------------------------------------------------------------- main
def _baseline(args: argparse.Namespace) -> Path:
    ckpt = args.work / f"baseline_{model_of(args).tag}" / "baseline.pt"
    if ckpt.exists():
        return ckpt
    import pruning_quality

    pruning_quality.main(["--data", str(args.data), "--model", model_of(args).name, "--work", str(args.work),
                          "--methods", "", "--importances", "", "--layer-scope-methods", "", "--no-control",
                          "--out", str(args.work / "baseline_only.json")])
    return ckpt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(DATA), help="CIFAR-10 ImageFolder tree with train/")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "pq",
                    help="the quality benchmark's work folder (its baseline is reused or trained there)")
    add_model_args(ap)
    ap.add_argument("--train-subset", type=int, default=4000)
    ap.add_argument("--oracle-units", type=int, default=256, help="units sampled for the oracle (0: all)")
    ap.add_argument("--oracle-images", type=int, default=512)
    ap.add_argument("--eval-images", type=int, default=2000)
    ap.add_argument("--bn-batches", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--budgets", default="0.8,0.6,0.45,0.35",
                    type=lambda s: [float(x) for x in s.split(",") if x])
    ap.add_argument("--search-epochs", default="1,3", type=lambda s: [int(x) for x in s.split(",") if x])
    ap.add_argument("--variants", default=",".join(VARIANTS),
                    help=f"comma-separated, from: {', '.join(VARIANTS)}")
    ap.add_argument("--cost-aware", action=argparse.BooleanOptionalAction, default=False,
                    help="also rank every criterion by importance per MAC (label suffix /macs)")
    ap.add_argument("--finetune-epochs", type=int, default=0,
                    help="also fine-tune each pruned net this many epochs on the search subset (0: no)")
    ap.add_argument("--finetune-budgets", default=None, type=lambda s: [float(x) for x in s.split(",") if x],
                    help="budgets to fine-tune at (default: all of --budgets)")
    ap.add_argument("--finetune-lr", type=float, default=0.01)
    ap.add_argument("--finetune-distill", type=float, default=0.0,
                    help="the share of distillation from the baseline in the fine-tuning's loss "
                         "(rartsprune.DistillationLoss, T = 4; 0: cross-entropy)")
    ap.add_argument("--finetune-only", default="",
                    help="fine-tune only the criteria whose label matches this regular expression (default: all)")
    ap.add_argument("--readouts", default="", type=lambda s: sorted({x for x in s.split(",") if x}),
                    help="more rankings of each search, comma-separated: l1aw (the ℓ1-norm of the weights with "
                         "the scores folded in, |α|·‖W‖: prune(importance='l1_norm') after a search; label "
                         "l1(a*W)); norm (every ranking, the one-shot ones too, divided by its group's mean, as "
                         "the ℓ1-norm baseline's group normalisation; label suffix /mean)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "criterion_quality.json")
    args = ap.parse_args(argv)
    if args.finetune_budgets is None:
        args.finetune_budgets = list(args.budgets)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = [v for v in args.variants.split(",") if v]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    if not (Path(args.data) / "train").is_dir():
        print(f"CIFAR-10 tree not found at {args.data}; pass --data (see ../shared/data/README.md)")
        return 2
    t_start = time.perf_counter()
    device = torch.device("cpu")
    ckpt = _baseline(args)
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    base = model_of(args).build(num_classes=10)
    base.load_state_dict(state)
    digest = hashlib.sha256(ckpt.read_bytes()).hexdigest()[:12]
    data = Data(args.data, args.train_subset, args.oracle_images, args.eval_images, args.batch_size, device)
    cache = args.work / "criterion_quality" / digest
    cache.mkdir(parents=True, exist_ok=True)
    ofile = cache / f"oracle_u{args.oracle_units}_i{args.oracle_images}_s{args.seed}.json"
    if ofile.exists():
        orc = json.loads(ofile.read_text())
    else:
        print(f"oracle: {args.oracle_units or 'all'} units on {args.oracle_images} held-out images", flush=True)
        orc = oracle(base, data, args.oracle_units or 10**9, args.seed)
        ofile.write_text(json.dumps(orc))
    settings = (f"b{'-'.join(f'{b:g}' for b in args.budgets)}_bn{args.bn_batches}_e{args.eval_images}"
                + ("_ca" if args.cost_aware else "")
                + (f"_ft{args.finetune_epochs}-{'-'.join(f'{b:g}' for b in args.finetune_budgets)}-lr{args.finetune_lr:g}"
                   + (f"-{hashlib.sha256(args.finetune_only.encode()).hexdigest()[:8]}" if args.finetune_only else "")
                   + (f"-kd{args.finetune_distill:g}" if args.finetune_distill else "")
                   if args.finetune_epochs else ""))
    rows: dict[str, Any] = {}

    def cached(key: str, compute: Callable[[], dict[str, Any]]) -> None:
        f = cache / f"{key}_{settings}_u{args.oracle_units}_s{args.seed}.json"
        if f.exists():
            res = json.loads(f.read_text())
        else:
            t0 = time.perf_counter()
            res = compute()
            res = {k: {**v, "wall_s": time.perf_counter() - t0} for k, v in res.items()}
            f.write_text(json.dumps(res))
        rows.update(res)

    finetune_kd = _finetune_kd(base, args)

    def one_shot() -> dict[str, Any]:
        net = copy.deepcopy(base)
        handle = rartsprune.attach_scores(net, torch.zeros(1, 3, 32, 32))
        gen = torch.Generator().manual_seed(args.seed)
        criteria = {"l1_norm": baseline_importance(handle, "l1_norm"),
                    "bn_gamma": unit_importance(handle, "alpha_gamma"),
                    "random": {g.name: torch.rand(g.num_units, generator=gen) for g in handle.groups},
                    "fisher": fisher(net, handle, data, args.seed)}
        return evaluate_criteria(net, handle, criteria, orc, data, args, finetune_kd)

    print("one-shot criteria on the baseline", flush=True)
    cached("one_shot", one_shot)
    if "norm" in args.readouts:
        def one_shot_norm() -> dict[str, Any]:
            net = copy.deepcopy(base)
            handle = rartsprune.attach_scores(net, torch.zeros(1, 3, 32, 32))
            criteria = {"bn_gamma/mean": per_group_mean(unit_importance(handle, "alpha_gamma")),
                        "fisher/mean": per_group_mean(fisher(net, handle, data, args.seed))}
            return evaluate_criteria(net, handle, criteria, orc, data, args, finetune_kd)

        cached("one_shot_norm", one_shot_norm)
    for epochs in args.search_epochs:
        for variant in variants:
            def searched(variant: str = variant, epochs: int = epochs) -> dict[str, Any]:
                pruner = run_search(base, data, variant, epochs, args.seed)
                criteria = {f"{variant}@{epochs}ep |a|": unit_importance(pruner.handle, "alpha"),
                            f"{variant}@{epochs}ep |a*g|": unit_importance(pruner.handle, "alpha_gamma")}
                if "l1aw" in args.readouts:  # the ℓ1-norm of the searched weights with the scores folded in
                    criteria[f"{variant}@{epochs}ep l1(a*W)"] = baseline_importance(pruner.handle, "l1_norm")
                if "norm" in args.readouts:  # each group's values over their mean (as the ℓ1-norm baseline's)
                    criteria.update({f"{k}/mean": per_group_mean(v) for k, v in list(criteria.items())})
                res = evaluate_criteria(pruner.model, pruner.handle, criteria, orc, data, args, finetune_kd)
                scores = torch.cat([a.detach().flatten() for a in pruner.handle.scores])
                for v in res.values():
                    v["alpha"] = {"mean": float(scores.mean()), "std": float(scores.std()),
                                  "min": float(scores.min()), "max": float(scores.max())}
                return res

            print(f"{variant}, {epochs} search epoch(s)", flush=True)
            if "gradual" in VARIANTS[variant][2]:
                cached(f"{variant}_e{epochs}", lambda variant=variant, epochs=epochs: gradual_row(base, data, variant, epochs, args))
                continue
            cached(f"{variant}_e{epochs}" + "".join(f"_{r}" for r in args.readouts), searched)
    result = {"settings": {k: portable(v) for k, v in vars(args).items()}, "baseline": portable(str(ckpt)),
              "baseline_sha256": digest, "oracle": {"units": len(orc["units"]), "total_units": orc["total_units"],
                                                   "base_loss": orc["base_loss"]},
              "rows": rows, "total_wall_s": time.perf_counter() - t_start}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    _markdown(result, args, argv)
    _plot(rows, args)
    return 0


def _markdown(result: dict[str, Any], args: argparse.Namespace, argv: list[str] | None) -> None:
    budgets = [f"{b:g}" for b in args.budgets]
    lines = [f"# Criterion diagnostic: {model_of(args).title}, CIFAR-10 training images only", "",
             f"Oracle: loss rise when one unit is zeroed, {result['oracle']['units']} of "
             f"{result['oracle']['total_units']} units, {args.oracle_images} held-out training images. Accuracy: "
             f"{args.eval_images} other held-out training images, right after pruning to the MACs budget with "
             f"BatchNorm re-estimated on {args.bn_batches} batches (no fine-tuning)"
             + (f"; fine-tuned: after {args.finetune_epochs} epochs at LR {args.finetune_lr:g} on the search subset"
                + (f", distilling from the baseline (share {args.finetune_distill:g})" if args.finetune_distill else "")
                if args.finetune_epochs else "") + ". Params: the fraction of parameters the selection keeps.", ""]
    tuned = [f"{b:g}" for b in args.finetune_budgets] if args.finetune_epochs else []
    header = (["criterion", "Spearman (global)", "Spearman (per layer)"] + [f"acc @ {b}x MACs" for b in budgets]
              + [f"fine-tuned @ {b}x" for b in tuned] + [f"params @ {b}x" for b in budgets])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, r in sorted(result["rows"].items(), key=lambda kv: -(kv[1]["spearman_global"]
                                                                  if not math.isnan(kv[1]["spearman_global"]) else -9)):
        cells = ([name, f"{r['spearman_global']:.3f}", f"{r['spearman_layer']:.3f}"]
                 + [f"{r['acc'][b]:.1f}" for b in budgets]
                 + [f"{r.get('acc_ft', {})[b]:.1f}" if b in r.get("acc_ft", {}) else "" for b in tuned]
                 + [f"{r['params_kept'][b]:.3f}" if b in r.get("params_kept", {}) else "" for b in budgets])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Command: `python bench/criterion_quality.py {shlex.join(argv or sys.argv[1:])}`".rstrip()]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _plot(rows: dict[str, Any], args: argparse.Namespace) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(8, 5))
    for name, r in rows.items():
        if name.endswith("/macs"):
            continue
        xs = [float(b) for b in r["acc"]]
        ax.plot(xs, list(r["acc"].values()), marker="o", label=name)
    ax.set_xlabel("MACs kept (fraction)")
    ax.set_ylabel("held-out accuracy after pruning, BN re-estimated (%)")
    ax.invert_xaxis()
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
