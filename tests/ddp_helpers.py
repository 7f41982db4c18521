"""Shared helpers of the tests that start several gloo processes (as ``torchrun`` would).

Run as a script under ``torchrun`` it runs another script and records every file that process writes under a
folder (`watch_writes`), so a test can check that only rank 0 wrote::

    torchrun --nproc_per_node 2 tests/ddp_helpers.py OUT LOGS recipes/resnet164_cifar.py ... --out OUT

writes ``LOGS/writes-rank<R>.json`` (the paths each rank wrote under ``OUT``) when the script ends (positional
arguments: ``torchrun`` would take flags such as ``--log`` for abbreviations of its own).

Examples:
    >>> free_port() > 0
    True
"""

from __future__ import annotations

import builtins
import io
import json
import os
import runpy
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

#: The variables ``torchrun`` sets for every process.
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")

#: ``os.open`` flags that write.
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def free_port() -> int:
    """A TCP port nothing listens on right now (for ``MASTER_PORT``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun_env(rank: int, world: int, port: int) -> None:
    """Set this process's environment as ``torchrun`` would for rank ``rank`` of ``world`` on one node."""
    os.environ.update({"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
                       "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})


@contextmanager
def watch_writes(root: str | os.PathLike[str]) -> Iterator[list[str]]:
    """Inside: record, in the list it yields, every path under ``root`` this process opens for writing, creates
    (a folder too), renames or replaces, or saves to with ``torch.save`` (which writes from C++, not through
    ``open``). The calls still do what they did; only the record is added. The functions are restored on exit.

    Examples:
        >>> import tempfile
        >>> folder = tempfile.mkdtemp()
        >>> with watch_writes(folder) as written:
        ...     _ = (Path(folder) / "a.txt").write_text("x")
        ...     _ = open(os.path.join(folder, "a.txt")).read()  # reading is not writing
        >>> [Path(p).name for p in written]
        ['a.txt']
    """
    base = os.path.realpath(root)
    written: list[str] = []

    def note(path: Any) -> None:
        if isinstance(path, (str, bytes, os.PathLike)):
            full = os.path.realpath(os.fsdecode(path))
            if full == base or full.startswith(base + os.sep):
                written.append(full)

    def wrap(fn: Callable[..., Any], writes: Callable[..., bool], *, paths: int = 1) -> Callable[..., Any]:
        def watched(*args: Any, **kwargs: Any) -> Any:
            if writes(*args, **kwargs):
                for path in args[:paths]:
                    note(path)
            return fn(*args, **kwargs)

        return watched

    def opens_for_writing(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> bool:
        return any(c in str(mode) for c in "wax+")

    def os_open_writes(path: Any, flags: int, *args: Any, **kwargs: Any) -> bool:
        return bool(flags & _WRITE_FLAGS)

    def always(*args: Any, **kwargs: Any) -> bool:
        return True

    def saves_to_path(obj: Any, f: Any, *args: Any, **kwargs: Any) -> bool:
        note(f)
        return False

    import torch

    originals = {(builtins, "open"): builtins.open, (io, "open"): io.open, (os, "open"): os.open,
                 (os, "mkdir"): os.mkdir, (os, "replace"): os.replace, (os, "rename"): os.rename,
                 (torch, "save"): torch.save}
    watched_open = wrap(builtins.open, opens_for_writing)
    builtins.open = watched_open
    io.open = watched_open  # pathlib's Path.open / write_text call io.open
    os.open = wrap(os.open, os_open_writes)
    os.mkdir = wrap(os.mkdir, always)
    os.replace = wrap(os.replace, always, paths=2)
    os.rename = wrap(os.rename, always, paths=2)
    torch.save = wrap(torch.save, saves_to_path)
    try:
        yield written
    finally:
        for (module, name), fn in originals.items():
            setattr(module, name, fn)


def _main(argv: list[str]) -> None:
    """``ROOT LOGS SCRIPT ARGS...``: run SCRIPT as ``__main__`` with `watch_writes` (ROOT), then write the
    record to ``LOGS/writes-rank<RANK>.json``, also when the script fails."""
    if len(argv) < 3:
        raise SystemExit("usage: ddp_helpers.py ROOT LOGS SCRIPT [ARGS...]")
    root, logs, script = argv[0], Path(argv[1]), argv[2]
    sys.argv = [script, *argv[3:]]
    written: list[str] = []
    try:
        with watch_writes(root) as written:
            runpy.run_path(script, run_name="__main__")
    finally:
        (logs / f"writes-rank{os.environ.get('RANK', '0')}.json").write_text(json.dumps(sorted(set(written))))


if __name__ == "__main__":
    _main(sys.argv[1:])
