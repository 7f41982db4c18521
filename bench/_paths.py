"""Paths shared by the benchmark scripts, and how they are recorded in results.

Result files are committed, so they must not name this machine's directories: `portable` writes any path
relative to the repository root (e.g. ``../shared/data/cifar10``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def portable(value: Any) -> Any:
    """``value`` with an absolute path turned into a path relative to the repository root (in a list: each
    element); others unchanged.

    Examples:
        >>> portable(ROOT / ".." / "shared" / "data")
        '../shared/data'
        >>> portable("cifar10"), portable(3), portable([ROOT / "runs", 1])
        ('cifar10', 3, ['runs', 1])
    """
    if isinstance(value, list):
        return [portable(v) for v in value]
    if isinstance(value, Path) or (isinstance(value, str) and os.path.isabs(value)):
        return Path(os.path.relpath(os.path.normpath(value), ROOT)).as_posix()
    return value
