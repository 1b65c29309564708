"""Example data and a seeded simulator of UMI counts with known labels."""

from __future__ import annotations

from ._synthetic import synthetic

__all__ = ["synthetic"]
