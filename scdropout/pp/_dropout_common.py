"""Computations shared by ``pp.dropout_stats`` and ``pp.dropout_genes`` (private).

Validation helpers run before any work and mutate nothing; the model helpers take a validated
matrix and return plain arrays, so both public functions compute every statistic the same way.
References: ALGORITHMS.md §3 (M3Drop) and §4 (NBumi / DANB), Andrews & Hemberg (2019)
Bioinformatics 35(16):2865-2867.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from scdropout import kernels
from scdropout._compat import CSCBase, CSRBase
from scdropout._logging import logger
from scdropout._utils import check_counts, get_matrix, warn

#: M3Drop warns when fewer than this fraction of the entries are zero (ALGORITHMS.md §3 step 2)
_MIN_SPARSITY = 0.1


def matrix_name(layer: str | None) -> str:
    """How error messages name the matrix."""
    return "`adata.X`" if layer is None else f"`layer={layer!r}`"


def as_param(value: Any) -> Any:
    """Return ``value`` in a form ``uns`` can store (h5ad has no None)."""
    return "None" if value is None else value


def check_bool(value: Any, *, name: str) -> None:
    """Raise ``TypeError`` unless ``value`` is a bool."""
    if not isinstance(value, bool | np.bool_):
        msg = f"`{name}` must be True or False, got {value!r}."
        raise TypeError(msg)


def check_key(value: Any) -> None:
    """Raise unless ``key_added`` is a non-empty string."""
    if not isinstance(value, str):
        msg = f"`key_added` must be a string, got {value!r}."
        raise TypeError(msg)
    if not value:
        msg = "`key_added` must not be empty; pass a prefix such as 'dropout'."
        raise ValueError(msg)


def _float_data(X: Any) -> Any:
    """Integer counts as float32 (exact below 2**24) once, sharing the sparse index arrays."""
    if isinstance(X, CSRBase + CSCBase):
        if np.issubdtype(X.data.dtype, np.floating):
            return X
        big = X.nnz and np.abs(X.data).max() > 2**24
        data = X.data.astype(np.float64 if big else np.float32)
        return type(X)((data, X.indices, X.indptr), shape=X.shape, copy=False)
    if np.issubdtype(X.dtype, np.floating):
        return X
    big = X.size and np.abs(X).max() > 2**24
    return X.astype(np.float64 if big else np.float32)


def validated_counts(
    adata: Any, layer: str | None, *, with_genes: bool, two_pass: bool = True
) -> tuple[Any, kernels.GeneStats | None, kernels.CellStats]:
    """Return the count matrix (float data), gene statistics (if asked) and cell statistics.

    Checks, in order: the AnnData and the layer (``get_matrix``: TypeError/KeyError), integer
    non-negative finite counts, at least 2 cells and 1 gene, and no cell without counts. The
    cell totals that check needs come from the same pass as the gene statistics; ``two_pass``
    as in :func:`~scdropout.kernels.gene_stats` (only the variance needs it).
    """
    X = get_matrix(adata, layer)
    name = matrix_name(layer)
    check_counts(X, name=name, obs_names=adata.obs_names, var_names=adata.var_names)
    n_cells, n_genes = X.shape
    if n_cells < 2 or n_genes < 1:
        msg = f"{name} has shape {X.shape}; dropout statistics need at least 2 cells and 1 gene."
        raise ValueError(msg)
    X = _float_data(X)
    if with_genes:
        genes, cells = kernels.gene_cell_stats(X, two_pass=two_pass)
    else:
        genes, cells = None, kernels.cell_stats(X)
    empty = np.flatnonzero(cells.total == 0)
    if empty.size:
        msg = (
            f"{name} has {empty.size} cell(s) without any counts (first "
            f"{str(adata.obs_names[empty[0]])!r}); the depth-adjusted models need every cell "
            "to have counts. Remove them first, e.g. `sc.pp.filter_cells(adata, min_counts=1)`."
        )
        raise ValueError(msg)
    return X, genes, cells


# --------------------------------------------------------------------------------------------
# NBumi / DANB (ALGORITHMS.md §4)


@dataclass(frozen=True)
class NBumiResult:
    """Depth-adjusted NB fit and dropout test, per gene unless noted."""

    size: NDArray[np.float64]  # method-of-moments r_g; NaN for genes without counts
    trend_intercept: float
    trend_slope: float
    smoothed_size: NDArray[np.float64]  # r̃_g; NaN for genes without counts
    expected: kernels.ExpectedZeros  # NB, r̃
    observed_rate: NDArray[np.float64]
    expected_rate: NDArray[np.float64]  # clamped at 1/N
    effect: NDArray[np.float64]  # observed - expected rate
    zscore: NDArray[np.float64]  # NaN where not tested
    pval: NDArray[np.float64]  # 1 where not tested
    tested: NDArray[np.bool_]  # genes with counts


def nbumi(X: Any, genes: kernels.GeneStats, cells: kernels.CellStats) -> NBumiResult:
    """Fit the depth-adjusted NB and run the dropout Z-test (ALGORITHMS.md §4.1, §4.2)."""
    from scipy.stats import norm

    n = X.shape[0]
    tg = genes.total
    tested = tg > 0
    size = kernels.nbumi_size(X, tg, cells.total)
    b0, b1 = kernels.fit_dispersion_trend(size, tg, n)
    with np.errstate(divide="ignore"):
        smoothed = np.where(tested, np.exp(b0 + b1 * np.log(tg / n)), np.nan)
    # Genes without counts keep P = 1 (the kernel's μ = 0 rule), whatever their size.
    ez = kernels.expected_zeros(tg, cells.total, np.where(tested, smoothed, 1.0))
    observed = (n - genes.n_detected) / n
    # §4.2 step 1 and R clamp the expected rate at 1/N; PyPI M3Drop 0.5.3 does not
    # (RunModelComparison), which only changes genes expected to have < 1 zero.
    expected = np.maximum(ez.gene_rate, 1.0 / n)
    effect = observed - expected
    with np.errstate(divide="ignore", invalid="ignore"):
        z = effect / np.sqrt(ez.gene_var + observed * (1.0 - observed) / n)
    z = np.where(tested, z, np.nan)
    pval = norm.sf(z)
    pval[np.isnan(pval)] = 1.0  # R: NaN p-values become 1
    return NBumiResult(size, b0, b1, smoothed, ez, observed, expected, effect, z, pval, tested)


def fit_errors(
    expected: kernels.ExpectedZeros, genes: kernels.GeneStats, cells: kernels.CellStats
) -> tuple[float, float]:
    """NBumiCheckFit-style sums of squared differences of expected vs observed zeros.

    Per gene Σ_j P_gj vs the zero count of the gene; per cell Σ_g P_gj vs the zero count of the
    cell (ALGORITHMS.md §4.3, R's NBumiCheckFit). PyPI M3Drop 0.5.3 reports another error
    instead (Σ_g |expected - observed rate|, per gene only, in RunModelComparison).
    """
    n_cells = cells.total.size
    n_genes = genes.total.size
    gene_diff = expected.gene_rate * n_cells - (n_cells - genes.n_detected)
    cell_diff = expected.cell_zeros - (n_genes - cells.n_detected)
    return float(np.sum(gene_diff * gene_diff)), float(np.sum(cell_diff * cell_diff))


# --------------------------------------------------------------------------------------------
# M3Drop (ALGORITHMS.md §3)


@dataclass(frozen=True)
class M3DropResult:
    """Michaelis-Menten fit and the M3Drop K test, per gene unless noted."""

    mean: NDArray[np.float64]  # s_g on M3Drop-normalised counts
    dropout_rate: NDArray[np.float64]  # p_g
    fit: kernels.MMFit
    K_gene: NDArray[np.float64]  # K_g; NaN where not tested
    effect: NDArray[np.float64]  # K_g / K; NaN where not tested
    zscore: NDArray[np.float64]
    pval: NDArray[np.float64]  # 1 where not tested
    tested: NDArray[np.bool_]  # genes detected at least once


def m3drop_fit(
    X: Any, cells: kernels.CellStats, *, name: str
) -> tuple[kernels.GeneStats, NDArray[np.bool_], kernels.MMFit]:
    """Normalise, compute p_g and s_g, and fit K (ALGORITHMS.md §3 steps 1-3).

    Returns the normalised gene statistics, the mask of genes in the model (p < 1) and the fit.
    """
    n = X.shape[0]
    lib = cells.total
    # one pass: M3Drop's SE_s uses mean(N²) - s², the one-pass variance (§3 step 2)
    norm_stats = kernels.gene_stats(X, cell_scale=np.median(lib) / lib, two_pass=False)
    n_zero = n * X.shape[1] - int(cells.n_detected.sum())
    if n_zero == 0:
        warn(f"{name} has no zeros at all; the M3Drop dropout model does not apply.")
    elif n_zero < _MIN_SPARSITY * n * X.shape[1]:
        warn(
            f"{name} has only {n_zero / (n * X.shape[1]):.1%} zeros (M3Drop expects at least "
            f"{_MIN_SPARSITY:.0%}); the Michaelis-Menten dropout fit may be poor."
        )
    p = (n - norm_stats.n_detected) / n
    tested = p < 1.0
    fit = kernels.fit_michaelis_menten(p[tested], norm_stats.mean[tested])
    return norm_stats, tested, fit


def m3drop(X: Any, cells: kernels.CellStats, *, name: str) -> M3DropResult:
    """M3Drop fit and the per-gene test of K_g against K (ALGORITHMS.md §3 step 4).

    PyPI M3Drop 0.5.3 has no Michaelis-Menten model any more (only NBumi), so this follows
    ALGORITHMS.md §3 (R's M3DropFeatureSelection) alone.
    """
    from scipy.stats import norm

    n = X.shape[0]
    stats, tested, fit = m3drop_fit(X, cells, name=name)
    p_all = (n - stats.n_detected) / n
    p = p_all[tested]
    s = stats.mean[tested]
    se_p = np.sqrt(p * (1.0 - p) / n)  # from the observed p, before the p = 0 replacement
    se_s = np.sqrt(np.maximum(stats.sum_sq[tested] / n - s * s, 0.0) / n)  # √((mean(N²) - s²)/N)
    always = p == 0
    if always.any() and (~always).any():
        p = np.where(always, p[~always].min() / 2.0, p)
    with np.errstate(divide="ignore", invalid="ignore"):
        k_g = p * s / (1.0 - p)
        se_k = k_g * np.sqrt((se_s / s) ** 2 + (se_p / p) ** 2)
        lower = k_g - se_k
        delta = np.abs(np.log(np.maximum(lower, 1e-100)) - np.log(k_g))
        delta[lower <= 0] = 1e10
        resid = np.log(k_g) - np.log(fit.K)
        sigma_k = np.std(resid, ddof=1) / np.sqrt(resid.size) if resid.size > 1 else 0.0
        z = resid / np.sqrt(delta**2 + sigma_k**2)
    pv = norm.sf(z)
    pv[np.isnan(pv) | always] = 1.0  # NaN becomes 1; always-detected genes are not tested
    G = p_all.size
    K_gene = np.full(G, np.nan)
    K_gene[tested] = k_g
    zscore = np.full(G, np.nan)
    zscore[tested] = z
    pval = np.ones(G)
    pval[tested] = pv
    return M3DropResult(stats.mean, p_all, fit, K_gene, K_gene / fit.K, zscore, pval, tested)


def adjust(
    pval: NDArray[np.float64], tested: NDArray[np.bool_], method: str
) -> NDArray[np.float64]:
    """Adjust p-values over the tested genes ("bh" or "bonferroni"); 1 elsewhere."""
    q = np.ones(pval.shape)
    fn = kernels.bh_qvalues if method == "bh" else kernels.bonferroni_qvalues
    q[tested] = fn(pval[tested])
    return q


def log_written(what: str, written: list[str], seconds: float) -> None:
    """Log the one info line a public function ends with."""
    logger.info("%s: wrote %s (%.2fs)", what, ", ".join(written), seconds)
