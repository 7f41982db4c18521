"""Plots of a topology search: alpha heat maps over the search, cell drawings.

Alpha history format (what the search driver records, JSON-able): a list of snapshots
``{"epoch": int, "alpha": {arch_name: [[...], ...]}}`` holding the raw alpha of each tensor after that epoch.

Examples:
    >>> alpha_history_array([{"epoch": 0, "alpha": {"a": [[0.0, 0.0]]}}], "a")[0]
    [0]
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...topology.genotype import NATS_EDGES, DartsGenotype, parse_nats_arch

__all__ = ["alpha_history_array", "plot_alpha_history", "draw_cell"]


def _softmax(a: np.ndarray) -> np.ndarray:
    e = np.exp(a - a.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def alpha_history_array(history: Sequence[Mapping[str, Any]], arch_name: str) -> tuple[list[int], np.ndarray]:
    """``(epochs, probs)`` with ``probs[t, e, k] = softmax(alpha_t)[e, k]`` for one alpha tensor.

    Examples:
        >>> h = [{"epoch": 0, "alpha": {"cell": [[0.0, 0.0]]}}]
        >>> alpha_history_array(h, "cell")[1].tolist()
        [[[0.5, 0.5]]]
    """
    if not history:
        raise ValueError("alpha history is empty")
    epochs, probs = [], []
    for i, snap in enumerate(history):
        try:
            a = np.asarray(snap["alpha"][arch_name], dtype=np.float64)
        except KeyError as exc:
            raise ValueError(f"alpha history snapshot {i} lacks {exc}") from None
        if a.ndim != 2:
            raise ValueError(f"alpha history snapshot {i}: {arch_name!r} must be 2-D, got shape {a.shape}")
        epochs.append(int(snap.get("epoch", i)))
        probs.append(_softmax(a))
    shapes = {p.shape for p in probs}
    if len(shapes) != 1:
        raise ValueError(f"alpha history of {arch_name!r} changes shape: {sorted(shapes)}")
    return epochs, np.stack(probs)


def plot_alpha_history(
    history: Sequence[Mapping[str, Any]],
    op_names: Sequence[str],
    path: str | os.PathLike[str],
    *,
    title: str | None = None,
) -> Path:
    """Heat map per edge of ``softmax(alpha)`` over the search (ops x epochs), one panel per edge.

    One row of panels per alpha tensor (``cell`` for NATS, ``normal``/``reduce`` for DARTS). Returns the
    path of the written image.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not history:
        raise ValueError("alpha history is empty")
    names = list(history[0]["alpha"])
    arrays = {name: alpha_history_array(history, name) for name in names}
    n_edges = max(arr.shape[1] for _, arr in arrays.values())
    ncols = min(n_edges, 7)
    rows_per = [int(np.ceil(arr.shape[1] / ncols)) for _, arr in arrays.values()]
    nrows = sum(rows_per)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(2.2 * ncols + 1.5, 1.9 * nrows + 0.8), squeeze=False, constrained_layout=True
    )
    r0 = 0
    image = None
    for (name, (epochs, probs)), nr in zip(arrays.items(), rows_per):
        if probs.shape[2] != len(op_names):
            raise ValueError(f"alpha {name!r} has {probs.shape[2]} ops but {len(op_names)} op names were given")
        for e in range(nr * ncols):
            ax = axes[r0 + e // ncols][e % ncols]
            if e >= probs.shape[1]:
                ax.axis("off")
                continue
            image = ax.imshow(
                probs[:, e, :].T,
                aspect="auto",
                cmap="viridis",
                vmin=0.0,
                vmax=max(float(probs.max()), 1e-6),
                extent=(epochs[0] - 0.5, epochs[-1] + 0.5, len(op_names) - 0.5, -0.5),
            )
            label = f"{name} e{e}"
            if name == "cell" and probs.shape[1] == len(NATS_EDGES):
                dst, src = NATS_EDGES[e]
                label = f"edge {dst}<-{src}"
            ax.set_title(label, fontsize=8)
            ax.set_yticks(range(len(op_names)))
            ax.set_yticklabels(op_names if e % ncols == 0 else [], fontsize=6)
            ax.tick_params(axis="x", labelsize=6)
        r0 += nr
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="softmax(alpha)")
    fig.suptitle(title or "alpha per edge over the search (x: epoch)")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _nats_graph(arch: str) -> tuple[list[str], list[tuple[str, str, str]], dict[str, tuple[float, float]]]:
    ops = parse_nats_arch(arch)
    nodes = ["0", "1", "2", "3"]
    edges = [(str(src), str(dst), op) for (dst, src), op in zip(NATS_EDGES, ops) if op != "none"]
    pos = {"0": (0.0, 0.0), "1": (1.5, 1.0), "2": (3.0, -1.0), "3": (4.5, 0.0)}
    return nodes, edges, pos


def _darts_graph(
    genotype: DartsGenotype, cell: str
) -> tuple[list[str], list[tuple[str, str, str]], dict[str, tuple[float, float]]]:
    gene = genotype.normal if cell == "normal" else genotype.reduce
    concat = genotype.normal_concat if cell == "normal" else genotype.reduce_concat
    steps = genotype.steps
    names = ["c_{k-2}", "c_{k-1}"] + [str(i) for i in range(steps)]
    edges = [(names[src], names[2 + k // 2], op) for k, (op, src) in enumerate(gene)]
    edges += [(names[i], "c_{k}", "") for i in concat]
    pos = {"c_{k-2}": (0.0, 1.0), "c_{k-1}": (0.0, -1.0), "c_{k}": (1.6 * steps + 2.0, 0.0)}
    for i in range(steps):
        pos[str(i)] = (1.6 * (i + 1), 1.2 if i % 2 == 0 else -1.2)
    return names + ["c_{k}"], edges, pos


def draw_cell(
    genotype: str | DartsGenotype,
    path: str | os.PathLike[str],
    *,
    cell: str = "normal",
    title: str | None = None,
) -> Path:
    """Draw a cell as a graph (nodes, arrows labelled with their op) with matplotlib; returns the path.

    ``genotype`` is a NATS arch string (``none`` edges are omitted) or a `DartsGenotype` (``cell`` =
    ``"normal"`` or ``"reduce"``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if isinstance(genotype, str):
        nodes, edges, pos = _nats_graph(genotype)
        default_title = "NATS-Bench cell"
    elif isinstance(genotype, DartsGenotype):
        if cell not in ("normal", "reduce"):
            raise ValueError(f"cell must be 'normal' or 'reduce', got {cell!r}")
        nodes, edges, pos = _darts_graph(genotype, cell)
        default_title = f"DARTS {cell} cell"
    else:
        raise TypeError(f"genotype must be a NATS arch string or a DartsGenotype, got {type(genotype).__name__}")
    fig, ax = plt.subplots(figsize=(1.5 * (max(x for x, _ in pos.values()) + 1.5), 4.2))
    colors = {"skip_connect": "tab:red", "none": "tab:gray", "": "lightgray"}
    for k, (src, dst, op) in enumerate(edges):
        (x0, y0), (x1, y1) = pos[src], pos[dst]
        rad = 0.2 if (k % 2) else -0.2
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={
                "arrowstyle": "-|>",
                "color": colors.get(op, "tab:blue"),
                "lw": 1.4,
                "shrinkA": 14,
                "shrinkB": 14,
                "connectionstyle": f"arc3,rad={rad}",
            },
        )
        if op:
            # midpoint of matplotlib's arc3 quadratic Bezier (control point = mid + rad * (dy, -dx))
            mx = (x0 + x1) / 2 + 0.5 * rad * (y1 - y0)
            my = (y0 + y1) / 2 - 0.5 * rad * (x1 - x0)
            ax.text(mx, my, op, fontsize=7, ha="center", va="center", color=colors.get(op, "tab:blue"),
                    bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85})
    for name in nodes:
        x, y = pos[name]
        ax.scatter([x], [y], s=650, c="lightyellow", edgecolors="black", zorder=3)
        ax.text(x, y, name, ha="center", va="center", fontsize=8, zorder=4)
    ax.set_aspect("equal")
    ax.set_axis_off()
    xs = [x for x, _ in pos.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(-1.9, 1.9)
    ax.set_title(title or default_title)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return out
