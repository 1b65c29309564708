"""Read-only accessors: results stored by ``pp`` and ``tl`` as pandas DataFrames.

Reporters take an AnnData, return a new table and write nothing into it.
"""

from __future__ import annotations

from ._compare import comparison
from ._dropout import dropout_cells, dropout_genes, dropout_stats

__all__ = ["comparison", "dropout_cells", "dropout_genes", "dropout_stats"]
