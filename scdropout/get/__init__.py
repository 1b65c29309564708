"""Read-only accessors: results stored by ``pp`` and ``tl`` as pandas DataFrames.

Reporters take an AnnData, return a new table and write nothing into it.
"""

from __future__ import annotations

from ._dropout import dropout_cells, dropout_genes, dropout_stats

__all__ = ["dropout_cells", "dropout_genes", "dropout_stats"]
