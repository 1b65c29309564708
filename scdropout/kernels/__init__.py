"""scdropout.kernels: numba kernels on plain arrays, their NumPy references and curve fits.

Matrices are cells x genes (AnnData orientation): dense ndarrays or CSR/CSC matrices of any
numeric dtype. Every kernel ``foo`` has a dense NumPy reference ``foo_ref`` next to it.
"""

from __future__ import annotations

from .curves import (
    MMFit,
    bh_qvalues,
    bonferroni_qvalues,
    fit_dispersion_trend,
    fit_michaelis_menten,
)
from .nbumi import ExpectedZeros, expected_zeros, expected_zeros_ref, nbumi_size, nbumi_size_ref
from .zeros import (
    CellStats,
    GeneStats,
    cell_stats,
    cell_stats_ref,
    gene_cell_stats,
    gene_stats,
    gene_stats_ref,
)

__all__ = [
    "CellStats",
    "ExpectedZeros",
    "GeneStats",
    "MMFit",
    "bh_qvalues",
    "bonferroni_qvalues",
    "cell_stats",
    "cell_stats_ref",
    "expected_zeros",
    "expected_zeros_ref",
    "fit_dispersion_trend",
    "fit_michaelis_menten",
    "gene_cell_stats",
    "gene_stats",
    "gene_stats_ref",
    "nbumi_size",
    "nbumi_size_ref",
]
