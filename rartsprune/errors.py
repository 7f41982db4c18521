"""Exceptions raised by rartsprune.

Every public entry point raises one of these (or a plain ``ValueError`` / ``TypeError`` for malformed
arguments) with a message that names the offending module, argument or op.
"""

from __future__ import annotations

__all__ = ["RartsPruneError", "UnsupportedModelError", "SurgeryError", "SearchError"]


class RartsPruneError(RuntimeError):
    """Base class of all rartsprune errors."""


class UnsupportedModelError(RartsPruneError):
    """The model (or one of its modules / ops) cannot be scored or pruned exactly."""


class SurgeryError(RartsPruneError):
    """Physical channel removal failed or produced a model that differs from the plan.

    The user's model is left exactly as it was before the call.
    """


class SearchError(RartsPruneError):
    """The architecture search cannot continue (non-finite loss, misuse of the search object)."""
