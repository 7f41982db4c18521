"""Genotypes: deriving a discrete architecture from alpha, and reading / writing it.

* NATS-Bench: the arch string ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`` (argmax per edge, ``none`` allowed, as
  the benchmark's own search code derives it; ``exclude_none=True`` takes the argmax over the other ops).
* DARTS: `DartsGenotype`, per intermediate node the two strongest incoming edges (ranked by their
  best non-``none`` weight) with their argmax non-``none`` op, for a normal and a reduction cell.

Examples:
    >>> import torch
    >>> alpha = torch.zeros(6, 5)
    >>> alpha[:, 3] = 1.0
    >>> derive_nats_arch(alpha)
    '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .ops import DARTS_PRIMITIVES, NATS_PRIMITIVES

__all__ = [
    "NATS_EDGES",
    "format_nats_arch",
    "parse_nats_arch",
    "validate_nats_arch",
    "derive_nats_arch",
    "DartsGenotype",
    "derive_darts_genotype",
    "darts_edge_count",
    "DARTS_V2",
    "skip_ratio",
    "op_histogram",
]

NATS_EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
"""The benchmark's edge order: ``(destination node, source node)`` for edges 0..5."""


# ---- NATS-Bench arch strings ----------------------------------------------------------------------------


def format_nats_arch(ops: Sequence[str]) -> str:
    """Write 6 ops (in `NATS_EDGES` order) as the benchmark arch string.

    Examples:
        >>> format_nats_arch(["skip_connect"] * 6)
        '|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|'
    """
    ops = list(ops)
    if len(ops) != len(NATS_EDGES):
        raise ValueError(f"a NATS-Bench cell has {len(NATS_EDGES)} edges, got {len(ops)} ops")
    for e, op in enumerate(ops):
        if op not in NATS_PRIMITIVES:
            raise ValueError(f"unknown NATS-Bench op {op!r} on edge {e}; valid ops: {', '.join(NATS_PRIMITIVES)}")
    nodes = []
    for dst in range(1, 4):
        tokens = [f"{ops[e]}~{src}" for e, (d, src) in enumerate(NATS_EDGES) if d == dst]
        nodes.append("|" + "|".join(tokens) + "|")
    return "+".join(nodes)


def parse_nats_arch(arch: str) -> tuple[str, ...]:
    """Validate a NATS-Bench arch string and return its 6 ops in edge order.

    Raises ``ValueError`` naming what is wrong (node count, input count, op name, input index).

    Examples:
        >>> parse_nats_arch("|none~0|+|skip_connect~0|none~1|+|none~0|none~1|nor_conv_3x3~2|")
        ('none', 'skip_connect', 'none', 'none', 'none', 'nor_conv_3x3')
    """
    if not isinstance(arch, str):
        raise TypeError(f"a NATS-Bench arch string must be a str, got {type(arch).__name__}")
    if any(ch.isspace() for ch in arch):
        raise ValueError(f"malformed NATS-Bench arch string {arch!r}: it contains whitespace")
    nodes = arch.split("+")
    if len(nodes) != 3:
        raise ValueError(
            f"malformed NATS-Bench arch string {arch!r}: expected 3 nodes separated by '+', got {len(nodes)}"
        )
    ops: list[str] = []
    for i, node in enumerate(nodes, start=1):
        if len(node) < 2 or not (node.startswith("|") and node.endswith("|")):
            raise ValueError(f"malformed NATS-Bench arch string {arch!r}: node {i} {node!r} must start and end with '|'")
        tokens = node[1:-1].split("|")
        if len(tokens) != i:
            raise ValueError(
                f"malformed NATS-Bench arch string {arch!r}: node {i} must have {i} input(s), got {len(tokens)}"
            )
        for j, token in enumerate(tokens):
            op, sep, src = token.partition("~")
            if not sep:
                raise ValueError(f"malformed NATS-Bench arch string {arch!r}: token {token!r} lacks '~<input>'")
            if op not in NATS_PRIMITIVES:
                raise ValueError(
                    f"malformed NATS-Bench arch string {arch!r}: unknown op {op!r} at node {i}; "
                    f"valid ops: {', '.join(NATS_PRIMITIVES)}"
                )
            if src != str(j):
                raise ValueError(
                    f"malformed NATS-Bench arch string {arch!r}: input {j} of node {i} must be '~{j}', got '~{src}'"
                )
            ops.append(op)
    return tuple(ops)


def validate_nats_arch(arch: str) -> str:
    """Return ``arch`` unchanged if it is a well-formed NATS-Bench arch string, else raise ``ValueError``.

    Examples:
        >>> validate_nats_arch("|a~0|+|none~0|none~1|+|none~0|none~1|none~2|")
        Traceback (most recent call last):
        ...
        ValueError: malformed NATS-Bench arch string '|a~0|+|none~0|none~1|+|none~0|none~1|none~2|': unknown op 'a' at node 1; valid ops: none, skip_connect, nor_conv_1x1, nor_conv_3x3, avg_pool_3x3
    """
    parse_nats_arch(arch)
    return arch


def derive_nats_arch(alpha: torch.Tensor, op_names: Sequence[str] = NATS_PRIMITIVES, *,
                     exclude_none: bool = False) -> str:
    """Argmax op per edge of a ``(6, len(op_names))`` alpha, as the benchmark arch string.

    Args:
        alpha: the raw architecture weights, one row per edge in the benchmark's edge order.
        op_names: the candidate op of each column.
        exclude_none: take the argmax over the ops other than ``none`` (the DARTS convention, which never
            drops an edge); the default keeps ``none`` as a candidate, as the benchmark's own search code does.

    Ties go to the op listed first.

    Examples:
        >>> alpha = torch.zeros(6, 5)
        >>> alpha[:, 0], alpha[:, 2] = 2.0, 1.0   # `none` strongest, then nor_conv_1x1
        >>> derive_nats_arch(alpha).count("none"), derive_nats_arch(alpha, exclude_none=True).count("nor_conv_1x1")
        (6, 6)
    """
    if alpha.dim() != 2 or alpha.shape[0] != len(NATS_EDGES) or alpha.shape[1] != len(op_names):
        raise ValueError(
            f"NATS alpha must have shape ({len(NATS_EDGES)}, {len(op_names)}), got {tuple(alpha.shape)}"
        )
    keep = _non_none_columns(op_names, "exclude_none=True") if exclude_none else list(range(len(op_names)))
    best = alpha.detach().float()[:, keep].argmax(dim=-1).tolist()
    return format_nats_arch([op_names[keep[k]] for k in best])


def _non_none_columns(op_names: Sequence[str], what: str) -> list[int]:
    """Indices of the ops other than ``none``; ``what`` names the caller in the error when there are none."""
    keep = [k for k, name in enumerate(op_names) if name != "none"]
    if not keep:
        raise ValueError(f"{what} needs an op other than 'none' among op_names")
    return keep


# ---- DARTS genotypes ------------------------------------------------------------------------------------


def darts_edge_count(steps: int) -> int:
    """Mixed edges of a DARTS cell with ``steps`` intermediate nodes (4 -> 14).

    Examples:
        >>> darts_edge_count(4)
        14
    """
    return sum(2 + i for i in range(steps))


@dataclass(frozen=True)
class DartsGenotype:
    """A discrete DARTS cell pair: ``normal``/``reduce`` are ``(op, input)`` pairs, two per node.

    Inputs 0 and 1 are the two previous cells' outputs, input ``k >= 2`` is intermediate node ``k - 2``.
    ``*_concat`` lists the states concatenated into the cell output.

    Examples:
        >>> g = DartsGenotype.from_dict(DARTS_V2.to_dict())
        >>> g == DARTS_V2, g.steps
        (True, 4)
    """

    normal: tuple[tuple[str, int], ...]
    normal_concat: tuple[int, ...]
    reduce: tuple[tuple[str, int], ...]
    reduce_concat: tuple[int, ...]

    def __post_init__(self) -> None:
        for field in ("normal", "reduce"):
            pairs = tuple((str(op), int(src)) for op, src in getattr(self, field))
            object.__setattr__(self, field, pairs)
        for field in ("normal_concat", "reduce_concat"):
            object.__setattr__(self, field, tuple(int(i) for i in getattr(self, field)))
        self.validate()

    @property
    def steps(self) -> int:
        """Intermediate nodes per cell."""
        return len(self.normal) // 2

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first malformed entry."""
        if len(self.normal) != len(self.reduce) or len(self.normal) == 0 or len(self.normal) % 2:
            raise ValueError(
                f"DARTS genotype needs the same even, non-zero number of edges in normal and reduce cells, "
                f"got {len(self.normal)} and {len(self.reduce)}"
            )
        steps = len(self.normal) // 2
        for name in ("normal", "reduce"):
            for k, (op, src) in enumerate(getattr(self, name)):
                node = k // 2
                if op not in DARTS_PRIMITIVES or op == "none":
                    raise ValueError(
                        f"DARTS genotype {name} edge {k}: op {op!r} is not a DARTS primitive other than 'none'"
                    )
                if not 0 <= src < node + 2:
                    raise ValueError(f"DARTS genotype {name} edge {k}: input {src} must be in [0, {node + 2})")
            concat = getattr(self, f"{name}_concat")
            if not concat or any(not 0 <= i < steps + 2 for i in concat):
                raise ValueError(f"DARTS genotype {name}_concat {list(concat)} must index states 0..{steps + 1}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (lists)."""
        return {
            "normal": [[op, src] for op, src in self.normal],
            "normal_concat": list(self.normal_concat),
            "reduce": [[op, src] for op, src in self.reduce],
            "reduce_concat": list(self.reduce_concat),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DartsGenotype:
        """Inverse of `to_dict`."""
        missing = {"normal", "normal_concat", "reduce", "reduce_concat"} - set(data)
        if missing:
            raise ValueError(f"DARTS genotype dict lacks {sorted(missing)}")
        try:
            return cls(
                normal=tuple((op, src) for op, src in data["normal"]),
                normal_concat=tuple(data["normal_concat"]),
                reduce=tuple((op, src) for op, src in data["reduce"]),
                reduce_concat=tuple(data["reduce_concat"]),
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ValueError) and str(exc).startswith("DARTS genotype"):
                raise
            raise ValueError(f"malformed DARTS genotype dict: {exc}") from exc


def _derive_cell(weights: torch.Tensor, op_names: Sequence[str], steps: int) -> tuple[tuple[str, int], ...]:
    keep = _non_none_columns(op_names, "a DARTS genotype")
    gene: list[tuple[str, int]] = []
    start = 0
    for i in range(steps):
        n_in = i + 2
        w = weights[start : start + n_in][:, keep]
        strength = w.max(dim=1).values
        # stable ordering: strongest first, ties to the lower input index
        order = sorted(range(n_in), key=lambda j: (-float(strength[j]), j))[:2]
        for j in order:
            k_best = keep[int(w[j].argmax())]
            gene.append((op_names[k_best], j))
        start += n_in
    return tuple(gene)


def derive_darts_genotype(
    alpha_normal: torch.Tensor,
    alpha_reduce: torch.Tensor,
    op_names: Sequence[str] = DARTS_PRIMITIVES,
    *,
    steps: int = 4,
    multiplier: int = 4,
) -> DartsGenotype:
    """The DARTS discretisation of ``(14, 8)`` alphas: top-2 inputs per node, argmax non-``none`` op.

    Examples:
        >>> import torch
        >>> a = torch.zeros(14, 8)
        >>> a[:, DARTS_PRIMITIVES.index("sep_conv_3x3")] = 1.0
        >>> derive_darts_genotype(a, a).normal[:2]
        (('sep_conv_3x3', 0), ('sep_conv_3x3', 1))
    """
    op_names = tuple(op_names)
    n_edges = darts_edge_count(steps)
    for name, a in (("alpha_normal", alpha_normal), ("alpha_reduce", alpha_reduce)):
        if a.dim() != 2 or a.shape != (n_edges, len(op_names)):
            raise ValueError(f"{name} must have shape ({n_edges}, {len(op_names)}), got {tuple(a.shape)}")
    wn = F.softmax(alpha_normal.detach().float(), dim=-1)
    wr = F.softmax(alpha_reduce.detach().float(), dim=-1)
    concat = tuple(range(2 + steps - multiplier, steps + 2))
    return DartsGenotype(
        normal=_derive_cell(wn, op_names, steps),
        normal_concat=concat,
        reduce=_derive_cell(wr, op_names, steps),
        reduce_concat=concat,
    )


DARTS_V2 = DartsGenotype(
    normal=(
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 0),
        ("sep_conv_3x3", 1),
        ("sep_conv_3x3", 1),
        ("skip_connect", 0),
        ("skip_connect", 0),
        ("dil_conv_3x3", 2),
    ),
    normal_concat=(2, 3, 4, 5),
    reduce=(
        ("max_pool_3x3", 0),
        ("max_pool_3x3", 1),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
        ("max_pool_3x3", 0),
        ("skip_connect", 2),
        ("skip_connect", 2),
        ("max_pool_3x3", 1),
    ),
    reduce_concat=(2, 3, 4, 5),
)
"""The cell published by DARTS (second order) on CIFAR-10, for reference and tests."""


def _ops_of(genotype: str | DartsGenotype, cell: str) -> list[str]:
    if isinstance(genotype, str):
        return list(parse_nats_arch(genotype))
    if isinstance(genotype, DartsGenotype):
        if cell == "normal":
            return [op for op, _ in genotype.normal]
        if cell == "reduce":
            return [op for op, _ in genotype.reduce]
        if cell == "all":
            return [op for op, _ in genotype.normal + genotype.reduce]
        raise ValueError(f"cell must be 'all', 'normal' or 'reduce', got {cell!r}")
    raise TypeError(f"genotype must be a NATS arch string or a DartsGenotype, got {type(genotype).__name__}")


def skip_ratio(genotype: str | DartsGenotype, cell: str = "all") -> float:
    """Fraction of the chosen edges that are ``skip_connect`` (1.0 = full "architecture collapse").

    NATS: over the 6 edges (``none`` edges count in the denominator). DARTS: over the 8 chosen edges of
    the ``normal`` or ``reduce`` cell, or all 16 (``cell="all"``).

    Examples:
        >>> from rartsprune.topology.genotype import DARTS_V2
        >>> skip_ratio(DARTS_V2, "normal")
        0.25
    """
    ops = _ops_of(genotype, cell)
    return sum(op == "skip_connect" for op in ops) / len(ops)


def op_histogram(genotype: str | DartsGenotype, cell: str = "all") -> dict[str, int]:
    """How often each op is chosen.

    Examples:
        >>> op_histogram("|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|")
        {'none': 5, 'skip_connect': 1}
    """
    out: dict[str, int] = {}
    for op in _ops_of(genotype, cell):
        out[op] = out.get(op, 0) + 1
    return out
