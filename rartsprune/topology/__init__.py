"""Topology search: the DARTS CNN cell space and the NATS-Bench topology space, searched with the relaxed
optimizers of `rartsprune.optim` (RARTS, DARTS-1, DARTS-2, MiLeNAS).

Examples:
    >>> import torch
    >>> from rartsprune.topology import NatsSearchNetwork, skip_ratio
    >>> net = NatsSearchNetwork(C=4, N=1)
    >>> 0.0 <= skip_ratio(net.derive_arch()) <= 1.0
    True
"""

from __future__ import annotations

from .darts_space import DartsSearchCell, DartsSearchNetwork, reduction_layers
from .genotype import (
    DARTS_V2,
    NATS_EDGES,
    DartsGenotype,
    derive_darts_genotype,
    derive_nats_arch,
    format_nats_arch,
    op_histogram,
    parse_nats_arch,
    skip_ratio,
    validate_nats_arch,
)
from .imagenet import AuxiliaryHeadImageNet, DartsImageNetNetwork, DartsImageNetTrainConfig
from .latency import LatencyPenalty, LatencyTable, arch_latency, latency_matrices, measure_latency_table
from .nats_space import NatsSearchCell, NatsSearchNetwork
from .nats_table import NatsRecord, NatsTable, default_nats_table_path, load_nats_table, lookup_nats
from .network import DartsEvalNetwork, DartsTrainConfig
from .ops import DARTS_OPS, DARTS_PRIMITIVES, NATS_OPS, NATS_PRIMITIVES, MixedOp
from .search import SearchConfig, TopologySearch

__all__ = [
    "AuxiliaryHeadImageNet",
    "DARTS_OPS",
    "DARTS_PRIMITIVES",
    "DARTS_V2",
    "NATS_EDGES",
    "NATS_OPS",
    "NATS_PRIMITIVES",
    "DartsEvalNetwork",
    "DartsGenotype",
    "DartsImageNetNetwork",
    "DartsImageNetTrainConfig",
    "DartsSearchCell",
    "DartsSearchNetwork",
    "DartsTrainConfig",
    "LatencyPenalty",
    "LatencyTable",
    "MixedOp",
    "NatsRecord",
    "NatsSearchCell",
    "NatsSearchNetwork",
    "NatsTable",
    "SearchConfig",
    "TopologySearch",
    "arch_latency",
    "default_nats_table_path",
    "derive_darts_genotype",
    "derive_nats_arch",
    "format_nats_arch",
    "latency_matrices",
    "load_nats_table",
    "lookup_nats",
    "measure_latency_table",
    "op_histogram",
    "parse_nats_arch",
    "reduction_layers",
    "skip_ratio",
    "validate_nats_arch",
]
