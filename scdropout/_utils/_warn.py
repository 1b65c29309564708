"""Warnings whose stacklevel points at the user's code."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

_PKG_DIR = str(Path(__file__).resolve().parents[1])


def warn(message: str, category: type[Warning] = UserWarning) -> None:
    """Issue ``message`` as a warning attributed to the first frame outside scdropout."""
    frame = sys._getframe(1)
    level = 2
    while frame is not None and frame.f_code.co_filename.startswith(_PKG_DIR):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)
