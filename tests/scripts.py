"""Load the project's scripts (``bench/*.py``, ``recipes/*.py``: not packages) as modules in the tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load_script(path: str | Path, name: str | None = None, *, register: bool = False) -> ModuleType:
    """The script at ``path`` (relative to the repository root, or absolute) imported as a module named ``name``
    (default: ``script_<stem>``); ``register=True`` also puts it in ``sys.modules`` (for dataclasses and pickling,
    which look their module up there)."""
    path = Path(path)
    if not path.is_absolute():
        path = ROOT / path
    spec = importlib.util.spec_from_file_location(name or f"script_{path.stem}", path)
    assert spec is not None and spec.loader is not None, f"cannot load {path}"
    module = importlib.util.module_from_spec(spec)
    if register:
        sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module
