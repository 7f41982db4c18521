"""The C allocator the timing benchmarks run under (``--allocator``), shared by speedup / latency_model /
equal_latency.

On a CPU, glibc's malloc hands large freed blocks back to the system by default, and the next forward pass
page-faults them in again: on this project's 2-core VM (one thread) torchvision's ResNet-50 at batch 32 took
4.7-5.2 s per forward with the defaults and 3.0 s with the heap retained, and a lone 1x1 convolution swung from
0.76 ms to 62 ms with the allocator's state. Timings then depend on the process's history more than on the
widths. ``--allocator retain`` (the default) runs the script with `RETAIN` in its environment (the script starts
itself again with it, once; the timing subprocesses inherit it); ``--allocator system`` keeps the environment
as it is. The settings in force are recorded in every result (`rartsprune.width.latency.allocator_settings`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

#: glibc malloc tunables that keep freed memory in the process (jemalloc / tcmalloc do so by themselves).
RETAIN: dict[str, str] = {"MALLOC_MMAP_THRESHOLD_": "4000000000", "MALLOC_TRIM_THRESHOLD_": "4000000000",
                          "MALLOC_TOP_PAD_": "1000000000"}
CHOICES = ("retain", "system")


def requested(argv: Sequence[str]) -> str:
    """The ``--allocator`` value in ``argv`` (default ``"retain"``); argparse reports a bad one later.

    Examples:
        >>> requested(["--threads", "1"]), requested(["--allocator", "system"]), requested(["--allocator=system"])
        ('retain', 'system', 'system')
    """
    for i, arg in enumerate(argv):
        if arg == "--allocator" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--allocator="):
            return arg.split("=", 1)[1]
    return "retain"


def exec_with_allocator(argv: Sequence[str] | None = None) -> None:
    """Start this script again with `RETAIN` in its environment when ``--allocator retain`` asks for it and the
    environment lacks it (call it first thing under ``if __name__ == "__main__"``); otherwise return."""
    args = list(sys.argv[1:] if argv is None else argv)
    if requested(args) != "retain" or all(os.environ.get(k) == v for k, v in RETAIN.items()):
        return
    os.execve(sys.executable, [sys.executable, sys.argv[0], *args], {**os.environ, **RETAIN})
