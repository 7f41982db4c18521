"""The rartsprune application, on top of the library: the job runner (`rartsprune.app.pipeline`), datasets,
loaders and batch augmentation (`rartsprune.app.data`), the model zoo (`rartsprune.app.zoo`), reference
models (`rartsprune.app.models`), plots and reports, and the command line (`rartsprune.app.cli`).

The library (`rartsprune` and its core modules: scores, graph, surgery, optim, width, topology, flops, ...)
never imports this package; ``import rartsprune`` does not load it.

Examples:
    >>> from rartsprune.app import PruneJob
    >>> PruneJob(model="torchvision:resnet18", data="fake").ratio
    0.4
"""

from __future__ import annotations

from .pipeline import PruneJob, run

__all__ = ["PruneJob", "run"]
