"""scdropout.pp: dropout statistics and dropout-aware gene selection on AnnData."""

from __future__ import annotations

from ._dropout_genes import dropout_genes
from ._dropout_stats import dropout_stats

__all__ = ["dropout_genes", "dropout_stats"]
