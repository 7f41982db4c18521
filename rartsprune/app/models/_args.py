"""The argument checks the reference models share (one message per argument, whichever model is built).

Examples:
    >>> check_width(0.5)
    0.5
    >>> check_num_classes(0)
    Traceback (most recent call last):
    ...
    ValueError: num_classes must be a positive int, got 0
"""

from __future__ import annotations

import math


def check_num_classes(num_classes: object) -> int:
    """``num_classes`` if it is a positive int (not a bool); ValueError naming it otherwise."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def check_width(width: object) -> float:
    """``width`` as a float if it is a positive finite number (not a bool); ValueError naming it otherwise."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not math.isfinite(width) or width <= 0:
        raise ValueError(f"width must be a positive finite number, got {width!r}")
    return float(width)
