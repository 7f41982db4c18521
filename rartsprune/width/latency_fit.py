"""Fitting a width latency table to the clock: latency budgets that are met as measured.

A `WidthLatencyTable` predicts a pruned model's latency as the sum of its layers, each timed alone, plus a
remainder. Where that misses — a memory-bound network at batch 1 whose elementwise work shrinks with its widths
runs faster than predicted; small layers run slower inside the network than alone — a latency budget is met in
prediction but not on the clock. `fit_measured_latency` closes the loop: it prunes copies of the model to a few
latency budgets with the table, times each pruned copy against the unpruned model in interleaved rounds on the
device, and stores every ``[predicted fraction, measured fraction]`` in the table (`WidthLatencyTable.measured`,
saved to its file). From then on a latency budget with that table is a fraction of the *measured* latency: the
cost model of the budget (`LatencyModel.fraction`) maps every predicted fraction through the points
(`WidthLatencyTable.measured_fraction`, piecewise linear through them, (0, 0) and (1, 1); its inverse is
`WidthLatencyTable.predicted_budget`). Every pass after the first prunes with the points already in
the table, so the later points land near the budgets asked for.

Example:
    >>> from rartsprune.width import fit_measured_latency
    >>> table = fit_measured_latency(model, "mnv2_b1.json", torch.randn(1, 3, 224, 224),
    ...                              budgets=(0.8, 0.6, 0.4))  # doctest: +SKIP
    >>> table.measured  # [[predicted, measured], ...]  # doctest: +SKIP
    >>> pruner = rartsprune.prune(model, latency=0.6, latency_table="mnv2_b1.json")  # 0.6 as measured  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..scores import _model_device
from .latency import (
    DEFAULT_REPEATS,
    DEFAULT_WARMUP,
    WidthLatencyTable,
    _single_tensor,
    allocator_settings,
    device_name,
    time_model,
)
from .pruner import prune

__all__ = ["fit_measured_latency", "measured_fraction"]


def measured_fraction(full: nn.Module, pruned: nn.Module, example_inputs: torch.Tensor, *, batch: int = 1,
                      rounds: int = 3, warmup: int = DEFAULT_WARMUP, repeats: int = DEFAULT_REPEATS) -> float:
    """The latency of ``pruned`` as a fraction of ``full``'s, measured: in each of ``rounds`` rounds both models
    are timed (`time_model`, the median of ``repeats`` runs) one after the other, in alternating order; the
    median over the rounds of the per-round ratio.

    Examples:
        >>> import torch.nn as nn
        >>> measured_fraction(nn.Linear(64, 64), nn.Linear(64, 8), torch.randn(1, 64), repeats=3) > 0
        True
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer, got {rounds!r}")
    ratios = []
    for r in range(rounds):
        ms = {}
        for role, m in (("full", full), ("pruned", pruned))[:: 1 if r % 2 == 0 else -1]:
            ms[role] = time_model(m, example_inputs, batch=batch, warmup=warmup, repeats=repeats)
        ratios.append(ms["pruned"] / ms["full"])
    return float(statistics.median(ratios))


def _budgets(budgets: Sequence[float]) -> list[float]:
    if isinstance(budgets, (str, bytes)) or not isinstance(budgets, Sequence) or not budgets:
        raise ValueError(f"budgets must be a non-empty sequence of fractions in (0, 1), got {budgets!r}")
    out = []
    for b in budgets:
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not math.isfinite(b) or not 0 < b < 1:
            raise ValueError(f"every budget must be a fraction strictly between 0 and 1, got {b!r}")
        out.append(float(b))
    return out


def fit_measured_latency(
    model: nn.Module,
    latency_table: str | os.PathLike[str],
    example_inputs: Any,
    *,
    budgets: Sequence[float] = (0.8, 0.6, 0.4),
    passes: int = 2,
    rounds: int = 3,
    warmup: int = DEFAULT_WARMUP,
    repeats: int = DEFAULT_REPEATS,
    method: str = "l1_norm",
    round_to: int | None = None,
    ignored_layers: Sequence[Any] | None = None,
) -> WidthLatencyTable:
    """Time pruned copies of ``model`` on its device and add their ``[predicted, measured]`` latency fractions
    to the table in ``latency_table`` (saved there), so that latency budgets with it are met as measured.

    For each of ``passes`` passes and each budget: a copy of ``model`` pruned with ``method`` to
    ``latency=budget`` with the table (its points so far applied), its predicted fraction, and its measured
    one (`measured_fraction`, ``rounds`` interleaved rounds against ``model``). ``model`` itself is only timed.
    A budget below the reachable minimum *as the table predicts it so far* is skipped in that pass (listed in
    ``table.meta["measured_fit"]["skipped"]``): once the points say the model runs faster than predicted, a
    later pass may reach it. Points already in the table are kept (clear ``table.measured`` and save it to
    start over).

    Args:
        model: the unpruned model, on the device the table was measured on, unscored.
        latency_table: the table's JSON file (measured for this model, device, batch size and input shape:
            `measure_width_latency(...).save(path)` or ``prune(..., latency_table=path)``).
        example_inputs: one input batch (its first sample is repeated to the table's batch size).
        budgets: the latency fractions to prune to, each in (0, 1) — the ones you will ask for, or a spread.
        passes: rounds of pruning and timing (every budget once per pass; 1: the table alone decides).
        rounds, warmup, repeats: the timing (`measured_fraction`).
        method: the one-shot criterion the copies are pruned by (the widths matter, not the channels).
        round_to, ignored_layers: as `rartsprune.prune` (use the ones you will prune with).

    Returns:
        The table with the new points (also written to ``latency_table``).

    Raises:
        ValueError: bad budgets, passes or rounds; a table measured elsewhere or for another model; no budget
            reachable in the first pass. The file is then as it was.
        FileNotFoundError: no table at ``latency_table``.

    Example:
        >>> table = fit_measured_latency(model, "resnet50_b1.json", torch.randn(1, 3, 224, 224))  # doctest: +SKIP
    """
    wanted = _budgets(budgets)
    for name, value, low in (("passes", passes, 1), ("rounds", rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    path = Path(latency_table)
    if not path.is_file():
        raise FileNotFoundError(f"no latency table at {path}: measure one first (measure_width_latency(...).save, "
                                "or prune(..., latency=..., latency_table=path))")
    original = path.read_bytes()
    table = WidthLatencyTable.load(path)
    x = _single_tensor(example_inputs)
    device = _model_device(model)
    table.check(device=device_name(device), input_shape=[table.batch, *x.shape[1:]], source=f"latency table {path}",
                allocator=allocator_settings() if device.type == "cpu" else None)
    skipped: dict[str, str] = {}
    try:
        for index in range(passes):
            points = []
            for b in wanted:
                try:
                    pruner = prune(copy.deepcopy(model), method=method, latency=b, latency_batch=table.batch,
                                   latency_table=str(path), example_inputs=x, round_to=round_to,
                                   ignored_layers=ignored_layers)
                except ValueError as exc:  # below the reachable minimum *as predicted so far*: maybe next pass
                    if "reachable minimum" not in str(exc):
                        raise
                    skipped[f"pass {index + 1}, latency={b:g}"] = str(exc)
                    continue
                pruned = pruner.finalize()
                predicted = float(pruner.result["latency"]["predicted_fraction"])
                points.append([predicted, measured_fraction(model, pruned, x, batch=table.batch, rounds=rounds,
                                                            warmup=warmup, repeats=repeats)])
            if not points and index == 0:
                raise ValueError(f"no budget of {wanted} is reachable with latency table {path} (every layer at one "
                                 f"channel): {next(iter(skipped.values()))}")
            table.measured.extend(points)
            table.meta["measured_fit"] = {"rounds": rounds, "warmup": warmup, "repeats": repeats, "method": method,
                                          "round_to": round_to, "points": len(table.measured), "skipped": skipped}
            table.save(path)
    except BaseException:
        path.write_bytes(original)
        raise
    return table
