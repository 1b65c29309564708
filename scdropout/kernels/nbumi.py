"""Depth-adjusted negative binomial (NBumi / DANB) kernels: sizes and expected zeros.

Andrews & Hemberg (2019), Bioinformatics 35(16):2865-2867 (M3Drop's NBumi model);
ALGORITHMS.md §4. Matrices are cells x genes; μ_gj = t_g t_j / T throughout, with gene totals
t_g, cell totals t_j and grand total T.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numba
import numpy as np
from numpy.typing import NDArray

from scdropout._logging import logger

from ._common import SMALL_WORK, as_vector, n_chunks
from .zeros import _sum_chunks, _sums

__all__ = [
    "ExpectedZeros",
    "expected_zeros",
    "expected_zeros_ref",
    "nbumi_size",
    "nbumi_size_ref",
]

#: sizes of under-dispersed genes are replaced by this factor times the largest valid size
UNDERDISPERSED_FACTOR = 10.0
#: lower clamp on sizes (ALGORITHMS.md §4.1 step 3)
MIN_SIZE = 1e-10
#: replacement size when no gene is over-dispersed at all (PyPI M3Drop uses the same)
FALLBACK_SIZE = 1e10
#: bytes of one expected_zeros tile of P (genes x distinct cell totals): about L2-sized
_TILE_BYTES = 1 << 20


class ExpectedZeros(NamedTuple):
    """Expected zeros under the depth-adjusted model (ALGORITHMS.md §4.2 step 1, §4.3)."""

    #: per gene, mean_j P_gj: the expected dropout rate, not clamped at 1/N
    gene_rate: NDArray[np.float64]
    #: per gene, Σ_j P_gj (1 - P_gj) / N²: the variance of the expected rate
    gene_var: NDArray[np.float64]
    #: per cell, Σ_g P_gj: the expected number of zero genes
    cell_zeros: NDArray[np.float64]


# --------------------------------------------------------------------------------------------
# nbumi_size: method-of-moments NB size per gene (§4.1 step 3)


def _size_rule(raw: NDArray[np.float64], valid: NDArray[np.bool_]) -> NDArray[np.float64]:
    """Under-dispersion rule and clamp of §4.1 step 3; NaN where not ``valid``.

    ALGORITHMS.md says "r_g < 0: 10 max(r)". A denominator of exactly 0 gives r_g = +inf, which
    we treat as under-dispersed too and take the max over finite positive sizes only, as PyPI
    M3Drop 0.5.3 does (``ComputeBlockA``: ``clamp_mask = ~(isfinite & > 0)``, fallback 1e10
    when no size is valid). Genes without counts (t_g = 0) are outside the model (R drops them
    before fitting): NaN here.
    """
    good = valid & np.isfinite(raw) & (raw > 0)
    cap = UNDERDISPERSED_FACTOR * raw[good].max() if good.any() else FALLBACK_SIZE
    size = np.where(good, raw, cap)
    np.maximum(size, MIN_SIZE, out=size)
    size[~valid] = np.nan
    return size


def nbumi_size(X: Any, gene_totals: Any, cell_totals: Any) -> NDArray[np.float64]:
    """Method-of-moments NB size r_g of the depth-adjusted model, in O(nnz).

    ALGORITHMS.md §4.1 step 3: with μ_gj = t_g t_j / T and (N - 1) V_g = Σ_j (C_gj - μ_gj)²
    = Σ_j C² - 2 (t_g / T) Σ_j C_gj t_j + t_g² Σ_j t_j² / T², the size is
    r_g = t_g² (Σ_j t_j² / T²) / ((N - 1) V_g - t_g). Under-dispersed genes (r_g < 0, or an
    infinite r_g when the denominator is exactly 0) get 10 x the largest valid size, then
    r_g >= 1e-10.

    Parameters
    ----------
    X
        Cells x genes counts: dense ndarray, CSR or CSC. Not modified.
    gene_totals
        t_g, the column sums of ``X`` (length n_genes).
    cell_totals
        t_j, the row sums of ``X`` (length n_cells).

    Returns
    -------
    float64 sizes of length n_genes; NaN for genes with t_g = 0 (the model excludes them).
    """
    n_rows, n_cols = X.shape
    tg = as_vector(gene_totals, n=n_cols, name="gene_totals")
    tj = as_vector(cell_totals, n=n_rows, name="cell_totals")
    # per gene: Σ_j C_gj t_j and Σ_j C_gj², over the nonzeros only (the gene_stats kernels)
    _, sct, s2, _ = _sums(X, row_weight=tj)
    total = tj.sum()
    mu_sq = tg * tg * (np.sum(tj * tj) / (total * total))
    nm1_var = s2 - 2.0 * tg * sct / total + mu_sq
    with np.errstate(divide="ignore", invalid="ignore"):
        raw = mu_sq / (nm1_var - tg)
    return _size_rule(raw, tg > 0)


def nbumi_size_ref(X: NDArray[Any], gene_totals: Any, cell_totals: Any) -> NDArray[np.float64]:
    """Dense NumPy reference for :func:`nbumi_size` (ALGORITHMS.md §4.1 steps 2-3)."""
    C = np.asarray(X, dtype=np.float64)
    tg = np.asarray(gene_totals, dtype=np.float64)
    tj = np.asarray(cell_totals, dtype=np.float64)
    T = tj.sum()
    mu = np.outer(tj, tg) / T
    nm1_var = ((C - mu) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = tg**2 * (np.sum(tj**2) / T**2) / (nm1_var - tg)
    valid = tg > 0
    good = valid & np.isfinite(r) & (r > 0)
    r = np.where(good, r, 10 * r[good].max() if good.any() else 1e10)
    r = np.maximum(r, 1e-10)
    return np.where(valid, r, np.nan)


# --------------------------------------------------------------------------------------------
# expected_zeros: P_gj summed per gene and per cell (§4.2 step 1, §4.3)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _expected_zeros_reduce(P, cell_mult, gene_mult, gsum, gvar, cell):
    """Fold one tile of P (distinct genes x distinct cell totals) into the sums (serial).

    Per gene: Σ_k m_k P and Σ_k m_k P (1 - P), m_k the multiplicity of cell total k; per cell
    total: cell[k] += Σ_g mult_g P, in gene order.
    """
    n_genes, n_u = P.shape
    for g in range(n_genes):
        s1 = 0.0
        s2 = 0.0
        for k in range(n_u):
            p = P[g, k]
            s1 += cell_mult[k] * p
            s2 += cell_mult[k] * (p * (1.0 - p))
        gsum[g] = s1
        gvar[g] = s2
        mg = gene_mult[g]
        for k in range(n_u):
            cell[k] += mg * P[g, k]


def _expected_zeros_chunk(tg, r, gene_mult, w, cell_mult, poisson, lo, hi, gsum, gvar, cell):
    """P for distinct genes lo:hi in cache-sized tiles: NumPy's vectorised log1p/exp, then fold.

    NumPy's SIMD exp/log1p are several times faster than numba's scalar libm calls here (numba
    cannot vectorise them without SVML); the fold is a small serial numba kernel.
    """
    rows = max(1, min(hi - lo, _TILE_BYTES // (8 * w.size)))
    buf = np.empty((rows, w.size))
    for a in range(lo, hi, rows):
        b = min(a + rows, hi)
        P = buf[: b - a]
        if poisson:
            np.multiply.outer(-tg[a:b], w, out=P)  # -μ
        else:
            np.multiply.outer(tg[a:b] / r[a:b], w, out=P)  # μ / r
            np.log1p(P, out=P)
            P *= -r[a:b, None]
        np.exp(P, out=P)
        _expected_zeros_reduce(P, cell_mult, gene_mult[a:b], gsum[a:b], gvar[a:b], cell)


def _distinct(
    *keys: NDArray[np.float64],
) -> tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.float64]]:
    """Group equal rows of ``keys``: (index of one member per group, group of each item, sizes).

    NaN never equals anything, so each NaN key is a group of its own.
    """
    n = keys[0].size
    order = np.lexsort(keys[::-1])
    new = np.zeros(n, dtype=bool)
    new[:1] = True
    for key in keys:
        ks = key[order]
        new[1:] |= ks[1:] != ks[:-1]
    group_sorted = np.cumsum(new) - 1
    inverse = np.empty(n, dtype=np.intp)
    inverse[order] = group_sorted
    return order[new], inverse, np.bincount(group_sorted).astype(np.float64)


def expected_zeros(gene_totals: Any, cell_totals: Any, size: Any | None = None) -> ExpectedZeros:
    """Compute expected zeros per gene and per cell under the depth-adjusted NB or Poisson.

    ALGORITHMS.md §4.2 step 1: P_gj = exp(-r_g log1p(μ_gj / r_g)) with μ_gj = t_g t_j / T, or
    P_gj = exp(-μ_gj) when ``size`` is None (Poisson). Genes with t_g = 0 have P = 1. The
    N x G matrix P is never stored. P depends on cell j only through t_j and on gene g only
    through (t_g, r_g), so cells with equal totals, and genes with equal totals and sizes,
    share one evaluation weighted by their multiplicity. That is exact and makes the cost
    O(distinct gene totals x distinct cell totals) instead of O(G x N): UMI totals are
    integers, so there are far fewer distinct values than cells or genes (and NBumi's smoothed
    size is a function of t_g). P is evaluated in cache-sized tiles with NumPy's vectorised
    log1p/exp and folded into the sums by a small serial numba kernel; fixed chunks of genes
    run on up to ``numba.get_num_threads()`` threads (``n_jobs`` of the callers), and each chunk
    keeps its own cell sums, added in chunk order, so results do not depend on the thread count.

    Parameters
    ----------
    gene_totals
        t_g (length n_genes).
    cell_totals
        t_j (length n_cells); they must sum to a positive T.
    size
        NB size per gene (length n_genes), e.g. the smoothed r̃_g of §4.1 step 4;
        None for the Poisson model.

    Returns
    -------
    :class:`ExpectedZeros`: ``gene_rate`` = mean_j P_gj (not clamped), ``gene_var`` =
    Σ_j P_gj (1 - P_gj) / N², ``cell_zeros`` = Σ_g P_gj.
    """
    tj = np.ascontiguousarray(cell_totals, dtype=np.float64)
    if tj.ndim != 1 or tj.size == 0:
        msg = f"`cell_totals` must be a non-empty 1-D array, got shape {tj.shape}."
        raise ValueError(msg)
    tg = np.ascontiguousarray(gene_totals, dtype=np.float64)
    if tg.ndim != 1:
        msg = f"`gene_totals` must be a 1-D array, got shape {tg.shape}."
        raise ValueError(msg)
    poisson = size is None
    r = np.ones(tg.size) if poisson else as_vector(size, n=tg.size, name="size")
    r = np.where(tg == 0, 1.0, r)  # μ = 0: P = 1 whatever the size
    total = tj.sum()
    if not total > 0:
        msg = f"`cell_totals` must sum to a positive number, got {total!r}."
        raise ValueError(msg)
    n = tj.size
    if tg.size == 0:
        return ExpectedZeros(np.empty(0), np.empty(0), np.zeros(n))
    first_j, inv_j, mult_j = _distinct(tj)
    first_g, inv_g, mult_g = _distinct(tg) if poisson else _distinct(tg, r)
    w = tj[first_j] / total
    tg_u = np.ascontiguousarray(tg[first_g])
    r_u = np.ascontiguousarray(r[first_g])
    logger.debug(
        "expected_zeros: %d x %d distinct (gene, cell) totals for %d x %d genes x cells",
        tg_u.size,
        w.size,
        tg.size,
        n,
    )
    gsum = np.empty(tg_u.size)
    gvar = np.empty(tg_u.size)
    # fixed gene chunks, each with its own row of cell sums, summed in chunk order: no race,
    # and the result does not depend on how many threads run the chunks
    n_chunk = n_chunks(tg_u.size, w.size, 1)
    cell_c = np.zeros((n_chunk, w.size))

    def run(c: int) -> None:
        lo, hi = c * tg_u.size // n_chunk, (c + 1) * tg_u.size // n_chunk
        _expected_zeros_chunk(tg_u, r_u, mult_g, w, mult_j, poisson, lo, hi, gsum, gvar, cell_c[c])

    n_threads = min(numba.get_num_threads(), n_chunk)
    if n_threads == 1 or tg_u.size * w.size < SMALL_WORK:
        for c in range(n_chunk):
            run(c)
    else:
        with ThreadPoolExecutor(n_threads) as pool:
            list(pool.map(run, range(n_chunk)))
    cell_u = _sum_chunks(cell_c)
    return ExpectedZeros(gsum[inv_g] / n, gvar[inv_g] / (float(n) * n), cell_u[inv_j])


def expected_zeros_ref(
    gene_totals: Any, cell_totals: Any, size: Any | None = None
) -> ExpectedZeros:
    """Dense NumPy reference for :func:`expected_zeros` (ALGORITHMS.md §4.2 step 1, §4.3)."""
    tg = np.asarray(gene_totals, dtype=np.float64)[:, None]
    tj = np.asarray(cell_totals, dtype=np.float64)[None, :]
    mu = tg * tj / tj.sum()  # genes x cells
    with np.errstate(divide="ignore", invalid="ignore"):
        if size is None:
            P = np.exp(-mu)
        else:
            r = np.asarray(size, dtype=np.float64)[:, None]
            P = np.exp(-r * np.log1p(mu / r))
    P = np.where(tg == 0, 1.0, P)
    n = tj.size
    return ExpectedZeros(P.mean(axis=1), (P * (1 - P)).sum(axis=1) / n**2, P.sum(axis=0))
