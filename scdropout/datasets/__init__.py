"""Example data and a seeded simulator of UMI counts with known labels."""

from __future__ import annotations

from ._example import example
from ._synthetic import synthetic

__all__ = ["example", "synthetic"]
