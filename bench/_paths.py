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
    """``value`` with an absolute path turned into a path relative to the repository root; others unchanged.

    Examples:
        >>> portable(ROOT / ".." / "shared" / "data")
        '../shared/data'
        >>> portable("cifar10"), portable(3)
        ('cifar10', 3)
    """
    if isinstance(value, Path) or (isinstance(value, str) and os.path.isabs(value)):
        return Path(os.path.relpath(os.path.normpath(value), ROOT)).as_posix()
    return value
