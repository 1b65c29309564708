"""Read and write 10X Genomics (Cell Ranger) count matrices.

Readers return cells x genes AnnData objects with CSR float32 raw counts in ``X``, barcodes as
``obs_names``, unique gene symbols as ``var_names``, ``var['gene_ids']`` and
``var['feature_types']``; the Cell Ranger version (v2 or v3+) is detected from the content.
Writers produce the same layouts, byte-for-byte reproducible.
"""

from __future__ import annotations

from ._h5 import read_10x_h5
from ._mtx import read_10x_mtx
from ._read import read_10x, read_10x_samples
from ._write import write_10x_h5, write_10x_mtx

__all__ = [
    "read_10x",
    "read_10x_h5",
    "read_10x_mtx",
    "read_10x_samples",
    "write_10x_h5",
    "write_10x_mtx",
]
