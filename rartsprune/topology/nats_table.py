"""Score a NATS-Bench topology cell without training it: look its arch string up in the benchmark table.

The table is a CSV with columns ``index, arch, cifar10_test, cifar100_test, imagenet16_120_test`` (test
accuracy in %, 200-epoch training, mean over the benchmark's seeds), one row per cell (15,625 rows). It is
loaded once per path (cached; reloaded when the file changes).

Examples:
    >>> from rartsprune.topology.nats_table import default_nats_table_path, lookup_nats
    >>> rec = lookup_nats("|skip_connect~0|+|skip_connect~0|skip_connect~1|+|skip_connect~0|skip_connect~1|skip_connect~2|",
    ...                   default_nats_table_path())  # doctest: +SKIP
    >>> round(rec.cifar10_test, 2)  # doctest: +SKIP
    54.3
"""

from __future__ import annotations

import csv
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from .genotype import parse_nats_arch

__all__ = ["NatsRecord", "NatsTable", "load_nats_table", "lookup_nats", "default_nats_table_path", "NATS_METRICS"]

NATS_METRICS: tuple[str, ...] = ("cifar10_test", "cifar100_test", "imagenet16_120_test")
"""Accuracy columns of the table (percent)."""

_REQUIRED = ("index", "arch") + NATS_METRICS


def default_nats_table_path() -> Path:
    """``<repo>/../shared/data/nats-bench/tss_test_accuracy_200ep.csv`` (may not exist outside the project)."""
    return Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "nats-bench" / "tss_test_accuracy_200ep.csv"


@dataclass(frozen=True)
class NatsRecord:
    """One benchmark row: tss ``index``, ``arch`` string and the three test accuracies (%)."""

    index: int
    arch: str
    cifar10_test: float
    cifar100_test: float
    imagenet16_120_test: float

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able)."""
        return asdict(self)


class NatsTable:
    """All rows of a NATS-Bench tss table, keyed by arch string.

    Examples:
        >>> t = NatsTable([NatsRecord(0, "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|", 10.0, 1.0, 0.8)])
        >>> t.lookup("|none~0|+|none~0|none~1|+|none~0|none~1|none~2|").cifar10_test
        10.0
    """

    def __init__(self, records: list[NatsRecord], path: Path | None = None) -> None:
        self.path = path
        self._by_arch: dict[str, NatsRecord] = {}
        for rec in records:
            if rec.arch in self._by_arch:
                raise ValueError(f"NATS table {path}: duplicate arch {rec.arch!r}")
            self._by_arch[rec.arch] = rec

    def __len__(self) -> int:
        return len(self._by_arch)

    def __contains__(self, arch: object) -> bool:
        return isinstance(arch, str) and arch in self._by_arch

    def records(self) -> list[NatsRecord]:
        """Every row, in file order."""
        return list(self._by_arch.values())

    def lookup(self, arch: str) -> NatsRecord:
        """The row of ``arch``; ``ValueError`` for a malformed string or one the table does not hold."""
        parse_nats_arch(arch)
        try:
            return self._by_arch[arch]
        except KeyError:
            raise ValueError(f"arch {arch!r} is well-formed but not in the NATS table {self.path}") from None

    def best(self, metric: str = "cifar10_test") -> NatsRecord:
        """The row with the highest ``metric``."""
        if metric not in NATS_METRICS:
            raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(NATS_METRICS)}")
        if not self._by_arch:
            raise ValueError("the NATS table is empty")
        return max(self._by_arch.values(), key=lambda r: getattr(r, metric))

    @classmethod
    def from_csv(cls, path: str | os.PathLike[str]) -> NatsTable:
        """Parse the CSV (no cache; prefer `load_nats_table`)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"NATS-Bench table not found: {path}")
        records: list[NatsRecord] = []
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            missing = [c for c in _REQUIRED if c not in (reader.fieldnames or [])]
            if missing:
                raise ValueError(f"NATS table {path} lacks column(s) {missing}; found {reader.fieldnames}")
            for line, row in enumerate(reader, start=2):
                try:
                    records.append(
                        NatsRecord(
                            index=int(row["index"]),
                            arch=row["arch"],
                            cifar10_test=float(row["cifar10_test"]),
                            cifar100_test=float(row["cifar100_test"]),
                            imagenet16_120_test=float(row["imagenet16_120_test"]),
                        )
                    )
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"NATS table {path} line {line}: {exc}") from exc
        return cls(records, path)


_CACHE: dict[str, tuple[tuple[int, int], NatsTable]] = {}
_LOCK = threading.Lock()


def load_nats_table(path: str | os.PathLike[str] | None = None) -> NatsTable:
    """Load (and cache per resolved path, size and mtime) the table at ``path`` (default: the shared data).

    Examples:
        >>> load_nats_table("/nonexistent.csv")
        Traceback (most recent call last):
        ...
        FileNotFoundError: NATS-Bench table not found: /nonexistent.csv
    """
    p = Path(path) if path is not None else default_nats_table_path()
    if not p.is_file():
        raise FileNotFoundError(f"NATS-Bench table not found: {p}")
    key = str(p.resolve())
    st = p.stat()
    stamp = (st.st_size, st.st_mtime_ns)
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None and hit[0] == stamp:
            return hit[1]
    table = NatsTable.from_csv(p)
    with _LOCK:
        _CACHE[key] = (stamp, table)
    return table


def lookup_nats(arch: str, path: str | os.PathLike[str] | None = None) -> NatsRecord:
    """Benchmark accuracies of ``arch`` from the table at ``path`` (see `load_nats_table`)."""
    parse_nats_arch(arch)
    return load_nats_table(path).lookup(arch)
