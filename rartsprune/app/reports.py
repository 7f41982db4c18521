"""Plots and tables of a width search: score histograms per layer, kept channels per layer.

matplotlib is optional (``pip install rartsprune[plot]``); the functions raise a clear ImportError
without it and always use the non-interactive Agg backend.

Examples:
    >>> from rartsprune.app.reports import plot_score_histograms, plot_widths
    >>> plot_score_histograms({"conv1": torch.rand(64)}, "alpha.png")  # doctest: +SKIP
    >>> plot_widths({"conv1": {"kept": 40, "channels": 64}}, "widths.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import torch

__all__ = ["plot_score_histograms", "plot_widths", "widths_table"]


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("plots need matplotlib: pip install 'rartsprune[plot]'") from exc
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def plot_score_histograms(
    scores: Mapping[str, torch.Tensor],
    path: str | os.PathLike[str],
    *,
    thresholds: Mapping[str, float] | None = None,
    max_panels: int = 48,
    title: str = "channel scores per layer",
) -> None:
    """One small histogram of |α| per group (at most ``max_panels``, evenly spread over the model)."""
    plt = _pyplot()
    names = list(scores)
    if not names:
        raise ValueError("no scores to plot")
    if len(names) > max_panels:
        step = len(names) / max_panels
        names = [names[int(i * step)] for i in range(max_panels)]
    cols = min(6, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.axis("off")
    for ax, name in zip(axes.flat, names):
        vals = scores[name].detach().abs().float().cpu().numpy()
        lo, hi = float(vals.min()), float(vals.max())
        if not hi - lo > 1e-6 * max(1.0, abs(hi)):  # all equal: give the bins some width
            lo, hi = lo - 0.5e-3 * max(1.0, abs(lo)), hi + 0.5e-3 * max(1.0, abs(hi))
        ax.hist(vals, bins=min(30, max(5, len(vals) // 2)), range=(lo, hi), color="#3b6ea5")
        if thresholds and name in thresholds:
            ax.axvline(thresholds[name], color="#c0392b", lw=1)
        ax.set_title(name if len(name) < 28 else "…" + name[-26:], fontsize=7)
        ax.tick_params(labelsize=6)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_widths(widths: Mapping[str, Mapping[str, int]], path: str | os.PathLike[str], *, title: str = "") -> None:
    """Bar chart of kept vs original channels per group (in model order)."""
    plt = _pyplot()
    names = list(widths)
    if not names:
        raise ValueError("no widths to plot")
    orig = [widths[n]["channels"] for n in names]
    kept = [widths[n]["kept"] for n in names]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.12 * len(names) + 2), 3.6))
    xs = range(len(names))
    ax.bar(xs, orig, color="#d5dbe3", label="before")
    ax.bar(xs, kept, color="#3b6ea5", label="kept")
    ax.set_xlabel("channel group (model order)")
    ax.set_ylabel("channels")
    if len(names) <= 40:
        ax.set_xticks(list(xs))
        ax.set_xticklabels([n[-18:] for n in names], rotation=90, fontsize=6)
    removed = 1 - sum(kept) / max(1, sum(orig))
    ax.set_title(title or f"kept channels per group (PRC {100 * removed:.1f}%)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def widths_table(widths: Mapping[str, Mapping[str, int]]) -> str:
    """Markdown table of kept / original channels per group."""
    lines = ["| group | kept | channels | kept % |", "|---|---|---|---|"]
    for name, w in widths.items():
        lines.append(f"| {name} | {w['kept']} | {w['channels']} | {100.0 * w['kept'] / max(1, w['channels']):.0f}% |")
    return "\n".join(lines)
