"""Per-gene and per-cell zero statistics: detection counts, totals, means, variances.

Matrices are cells x genes (AnnData orientation), never converted between layouts. One kernel
per layout (``_sums_csr``, ``_sums_csc``, ``_sums_dense``) makes a single O(nnz) pass that
gives per-gene sums and, for free on CSR/dense, per-cell sums; ``gene_stats``, ``cell_stats``,
``gene_cell_stats`` and ``nbumi.nbumi_size`` all use it, which keeps the number of numba
specialisations (and the compile time) small. The parallel loop runs over a fixed number of
chunks (of cells for CSR/dense, of genes for CSC); whatever a chunk cannot own alone goes to
one accumulator row per chunk, summed in chunk order afterwards, so results do not depend on the
thread count. A value counts as detected when ``data[k] != 0`` (CSR/CSC may store explicit
zeros).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba
import numpy as np
from numba import prange
from numpy.typing import NDArray

from ._common import as_vector, n_chunks, split, threads_for
from ._numba import parallel_njit

__all__ = [
    "CellStats",
    "GeneStats",
    "cell_stats",
    "cell_stats_ref",
    "gene_cell_stats",
    "gene_stats",
    "gene_stats_ref",
]


class GeneStats(NamedTuple):
    """Per-gene statistics over cells (arrays of length n_genes)."""

    #: number of cells with a nonzero value (int64)
    n_detected: NDArray[np.int64]
    #: sum of the (scaled) values
    total: NDArray[np.float64]
    #: sum of the squared (scaled) values
    sum_sq: NDArray[np.float64]
    #: mean over all cells
    mean: NDArray[np.float64]
    #: variance over all cells, N - 1 denominator (NaN for a single cell)
    var: NDArray[np.float64]
    #: mean over the detected cells; NaN for genes never detected
    mean_nonzero: NDArray[np.float64]


class CellStats(NamedTuple):
    """Per-cell statistics over genes (arrays of length n_cells)."""

    #: number of genes with a nonzero value (int64)
    n_detected: NDArray[np.int64]
    #: library size (sum over genes)
    total: NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# the shared one-pass kernels
#
# For every detected entry x of cell i and gene j, with y = x * row_scale[i] - col_center[j],
# they return per gene: the count of detected entries, Σ y * row_weight[i] and Σ y²; and per
# cell (when ``want_rows``; always on CSR/dense, where it costs nothing): the count of detected
# entries and Σ x.


@numba.njit(cache=True, nogil=True)
def _sum_chunks(acc):
    """Sum the rows of a per-chunk accumulator in chunk order (serial: fixed order)."""
    out = np.empty(acc.shape[1], dtype=np.float64)
    for j in range(acc.shape[1]):
        out[j] = 0.0
    for c in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            out[j] += acc[c, j]
    return out


@numba.njit(cache=True, nogil=True)
def _sum_chunks_int(acc):
    """Integer twin of :func:`_sum_chunks`."""
    out = np.empty(acc.shape[1], dtype=np.int64)
    for j in range(acc.shape[1]):
        out[j] = 0
    for c in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            out[j] += acc[c, j]
    return out


@parallel_njit(nogil=True)
def _sums_csr(data, indices, indptr, n_rows, n_cols, row_scale, row_weight, col_center, n_chunks):
    # np.empty + zeroing inside the prange: np.zeros would become extra parfors (compile time)
    det_c = np.empty((n_chunks, n_cols), dtype=np.int64)
    s1_c = np.empty((n_chunks, n_cols), dtype=np.float64)
    s2_c = np.empty((n_chunks, n_cols), dtype=np.float64)
    row_det = np.empty(n_rows, dtype=np.int64)
    row_tot = np.empty(n_rows, dtype=np.float64)
    for c in prange(n_chunks):
        for j in range(n_cols):
            det_c[c, j] = 0
            s1_c[c, j] = 0.0
            s2_c[c, j] = 0.0
        for i in range(c * n_rows // n_chunks, (c + 1) * n_rows // n_chunks):
            scale = row_scale[i]
            weight = row_weight[i]
            d = 0
            t = 0.0
            for k in range(indptr[i], indptr[i + 1]):
                if data[k] != 0:
                    j = indices[k]
                    x = np.float64(data[k])
                    y = x * scale - col_center[j]
                    det_c[c, j] += 1
                    s1_c[c, j] += y * weight
                    s2_c[c, j] += y * y
                    d += 1
                    t += x
            row_det[i] = d
            row_tot[i] = t
    return _sum_chunks_int(det_c), _sum_chunks(s1_c), _sum_chunks(s2_c), row_det, row_tot


@parallel_njit(nogil=True)
def _sums_csc(
    data, indices, indptr, n_rows, n_cols, row_scale, row_weight, col_center, n_chunks, want_rows
):
    det = np.empty(n_cols, dtype=np.int64)
    s1 = np.empty(n_cols, dtype=np.float64)
    s2 = np.empty(n_cols, dtype=np.float64)
    n_acc = n_rows if want_rows else 0
    rdet_c = np.empty((n_chunks, n_acc), dtype=np.int64)
    rtot_c = np.empty((n_chunks, n_acc), dtype=np.float64)
    for c in prange(n_chunks):
        for i in range(n_acc):
            rdet_c[c, i] = 0
            rtot_c[c, i] = 0.0
        for g in range(c * n_cols // n_chunks, (c + 1) * n_cols // n_chunks):
            center = col_center[g]
            d = 0
            a = 0.0
            b = 0.0
            for k in range(indptr[g], indptr[g + 1]):
                if data[k] != 0:
                    i = indices[k]
                    x = np.float64(data[k])
                    y = x * row_scale[i] - center
                    d += 1
                    a += y * row_weight[i]
                    b += y * y
                    if want_rows:
                        rdet_c[c, i] += 1
                        rtot_c[c, i] += x
            det[g] = d
            s1[g] = a
            s2[g] = b
    return det, s1, s2, _sum_chunks_int(rdet_c), _sum_chunks(rtot_c)


@parallel_njit(nogil=True)
def _sums_dense(X, row_scale, row_weight, col_center, n_chunks):
    n_rows, n_cols = X.shape
    det_c = np.empty((n_chunks, n_cols), dtype=np.int64)
    s1_c = np.empty((n_chunks, n_cols), dtype=np.float64)
    s2_c = np.empty((n_chunks, n_cols), dtype=np.float64)
    row_det = np.empty(n_rows, dtype=np.int64)
    row_tot = np.empty(n_rows, dtype=np.float64)
    for c in prange(n_chunks):
        for j in range(n_cols):
            det_c[c, j] = 0
            s1_c[c, j] = 0.0
            s2_c[c, j] = 0.0
        for i in range(c * n_rows // n_chunks, (c + 1) * n_rows // n_chunks):
            scale = row_scale[i]
            weight = row_weight[i]
            d = 0
            t = 0.0
            for j in range(n_cols):
                if X[i, j] != 0:
                    x = np.float64(X[i, j])
                    y = x * scale - col_center[j]
                    det_c[c, j] += 1
                    s1_c[c, j] += y * weight
                    s2_c[c, j] += y * y
                    d += 1
                    t += x
            row_det[i] = d
            row_tot[i] = t
    return _sum_chunks_int(det_c), _sum_chunks(s1_c), _sum_chunks(s2_c), row_det, row_tot


def _sums(
    X: Any,
    *,
    row_scale: NDArray[np.float64] | None = None,
    row_weight: NDArray[np.float64] | None = None,
    col_center: NDArray[np.float64] | None = None,
    want_rows: bool = False,
) -> tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], CellStats | None]:
    """Dispatch one pass of the shared kernels; ``None`` means ones (row_*) or zeros (col_center).

    Returns per gene (count, Σ y w, Σ y²) and the per-cell :class:`CellStats` when ``want_rows``.
    """
    kind, parts = split(X)
    n_rows, n_cols = X.shape
    s = np.ones(n_rows) if row_scale is None else row_scale
    w = np.ones(n_rows) if row_weight is None else row_weight
    c = np.zeros(n_cols) if col_center is None else col_center
    work = (parts[0].size if kind != "dense" else n_rows * n_cols) + n_rows + n_cols
    with threads_for(work):
        if kind == "csc":
            chunks = n_chunks(n_cols, n_rows if want_rows else 0, 2)
            det, s1, s2, rdet, rtot = _sums_csc(*parts, s, w, c, chunks, want_rows)
        elif kind == "csr":
            det, s1, s2, rdet, rtot = _sums_csr(*parts, s, w, c, n_chunks(n_rows, n_cols, 3))
        else:
            det, s1, s2, rdet, rtot = _sums_dense(*parts, s, w, c, n_chunks(n_rows, n_cols, 3))
    return det, s1, s2, (CellStats(rdet, rtot) if want_rows else None)


def _gene_stats(X: Any, scale: NDArray[np.float64] | None, *, want_rows: bool, two_pass: bool):
    n_rows = X.shape[0]
    det, total, sum_sq, cells = _sums(X, row_scale=scale, want_rows=want_rows)
    mean = total / n_rows if n_rows > 0 else np.full(total.shape, np.nan)
    if two_pass:
        # sums of squares centred on the mean (no cancellation); each cell where the gene is
        # zero adds mean²
        _, _, m2, _ = _sums(X, row_scale=scale, col_center=mean)
        m2 += (n_rows - det) * mean * mean
    else:
        m2 = np.maximum(sum_sq - total * mean, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = m2 / (n_rows - 1) if n_rows > 1 else np.full(total.shape, np.nan)
        mean_nonzero = np.where(det > 0, total / np.maximum(det, 1), np.nan)
    return GeneStats(det, total, sum_sq, mean, var, mean_nonzero), cells


# --------------------------------------------------------------------------------------------
# public kernels


def gene_stats(X: Any, cell_scale: Any | None = None, *, two_pass: bool = True) -> GeneStats:
    """Compute per-gene detection counts, totals, means and variances over cells.

    With ``cell_scale``, every value of cell j is multiplied by ``cell_scale[j]`` first; M3Drop's
    normalisation (ALGORITHMS.md §3 step 1) is ``cell_scale = median(L) / L``.

    Parameters
    ----------
    X
        Cells x genes matrix: dense ndarray, CSR or CSC, any numeric dtype. Not modified.
    cell_scale
        Optional per-cell factors (length n_cells).
    two_pass
        True: a second O(nnz) pass sums squares centred on the mean, so the variance has no
        cancellation. False: one pass, var = (Σ x² - (Σ x)² / N) / (N - 1) (clipped at 0),
        which is how M3Drop computes its standard errors and loses relative precision
        ~1e-16 x mean² / var.

    Returns
    -------
    :class:`GeneStats` of length-n_genes arrays: ``n_detected`` (int64), ``total``, ``sum_sq``,
    ``mean``, ``var`` (N - 1 denominator; NaN for one cell), ``mean_nonzero`` (NaN when the
    gene is never detected).
    """
    scale = None if cell_scale is None else as_vector(cell_scale, n=X.shape[0], name="cell_scale")
    return _gene_stats(X, scale, want_rows=False, two_pass=two_pass)[0]


def cell_stats(X: Any) -> CellStats:
    """Compute per-cell detected-gene counts and library sizes.

    Parameters
    ----------
    X
        Cells x genes matrix: dense ndarray, CSR or CSC, any numeric dtype. Not modified.

    Returns
    -------
    :class:`CellStats` of length-n_cells arrays: ``n_detected`` (int64) and ``total``.
    """
    return _sums(X, want_rows=True)[3]


def gene_cell_stats(X: Any, *, two_pass: bool = True) -> tuple[GeneStats, CellStats]:
    """Compute :func:`gene_stats` and :func:`cell_stats` together, sharing their O(nnz) pass.

    Parameters
    ----------
    X
        Cells x genes matrix: dense ndarray, CSR or CSC, any numeric dtype. Not modified.
    two_pass
        As in :func:`gene_stats`.

    Returns
    -------
    ``(GeneStats, CellStats)``, equal to ``(gene_stats(X, two_pass=two_pass), cell_stats(X))``.
    """
    return _gene_stats(X, None, want_rows=True, two_pass=two_pass)


def gene_stats_ref(X: NDArray[Any], cell_scale: Any | None = None) -> GeneStats:
    """Dense NumPy reference for :func:`gene_stats` (ALGORITHMS.md §3 steps 1-2)."""
    X = np.asarray(X, dtype=np.float64)
    if cell_scale is not None:
        X = X * np.asarray(cell_scale, dtype=np.float64)[:, None]
    n = X.shape[0]
    det = (X != 0).sum(axis=0).astype(np.int64)
    total = X.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        var = X.var(axis=0, ddof=1) if n > 1 else np.full(X.shape[1], np.nan)
        mean_nonzero = np.where(det > 0, total / det, np.nan)
    return GeneStats(det, total, (X * X).sum(axis=0), X.mean(axis=0), var, mean_nonzero)


def cell_stats_ref(X: NDArray[Any]) -> CellStats:
    """Dense NumPy reference for :func:`cell_stats` (ALGORITHMS.md §1: L_j = Σ_g C_gj)."""
    X = np.asarray(X, dtype=np.float64)
    return CellStats((X != 0).sum(axis=1).astype(np.int64), X.sum(axis=1))
