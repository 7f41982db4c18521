"""rartsprune: structured channel pruning and architecture search for PyTorch with RARTS."""

from ._version import __version__
from .errors import RartsPruneError, SearchError, SurgeryError, UnsupportedModelError

__all__ = [
    "__version__",
    "RartsPruneError",
    "SearchError",
    "SurgeryError",
    "UnsupportedModelError",
]
