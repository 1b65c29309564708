"""``pp.dropout_stats``: per-gene and per-cell zero statistics against depth-adjusted models."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from scdropout import _keys, kernels
from scdropout._logging import logger
from scdropout._utils import (
    check_adata,
    check_conflicts,
    resolve_n_jobs,
    thread_limit,
    write_results,
)

from ._dropout_common import (
    adjust,
    as_param,
    check_bool,
    check_key,
    fit_errors,
    log_written,
    m3drop_fit,
    matrix_name,
    nbumi,
    validated_counts,
)

if TYPE_CHECKING:
    from anndata import AnnData

_VAR = _keys.DROPOUT_VAR_COLUMNS
_OBS = _keys.DROPOUT_OBS_COLUMNS


def _result_keys(key_added: str) -> dict[str, list[str]]:
    return {
        "var": [f"{key_added}_{k}" for k in _VAR],
        "obs": [f"{key_added}_{k}" for k in _OBS],
        "uns": [key_added],
    }


def dropout_stats(
    adata: AnnData,
    *,
    layer: str | None = None,
    n_jobs: int | None = None,
    key_added: str = _keys.DROPOUT_STATS,
    copy: bool = False,
) -> AnnData | None:
    """Compute observed and model-expected zeros per gene and per cell.

    Observed dropout rates are compared with the depth-adjusted negative binomial (NBumi /
    DANB) and Poisson expectations, where the mean of gene g in cell j is μ_gj = t_g t_j / T
    (gene total x cell total / grand total), and the M3Drop Michaelis-Menten curve is fitted
    to the dropout rate against the normalised mean (Andrews & Hemberg 2019, Bioinformatics
    35(16):2865-2867, "M3Drop: dropout-based feature selection for scRNASeq";
    ALGORITHMS.md §3 and §4). The per-gene Z-test for excess zeros is NBumi's
    ``NBumiFeatureSelectionCombinedDrop``; :func:`~scdropout.pp.dropout_genes` ranks genes by it.

    Genes without any count stay in the output: their observed and expected dropout rates
    are 1, their excess is 0, ``zscore`` and ``nb_size`` are NaN and ``pval`` and ``qval`` are
    1 (they are left out of the model fits and of the Benjamini-Hochberg correction).

    Parameters
    ----------
    adata
        Cells x genes AnnData with raw UMI counts (integer values, any numeric dtype, dense,
        CSR or CSC). Cells without counts are not allowed.
    layer
        Layer holding the counts; None uses ``adata.X``.
    n_jobs
        Threads for the numba kernels; None uses ``scdropout.settings.n_jobs``, -1 all cores.
        Results do not depend on it.
    key_added
        Prefix of every key written (``var``/``obs`` columns) and the ``uns`` key.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    None, or the modified copy when ``copy=True``. With ``k = key_added``, writes

    ``adata.var[f"{k}_n_detected"]``: int64
        Cells in which the gene is detected (nonzero).
    ``adata.var[f"{k}_detection_rate"]``: float
        n_detected / n_cells.
    ``adata.var[f"{k}_rate"]``: float
        Observed dropout rate, the fraction of cells where the gene is zero.
    ``adata.var[f"{k}_mean"]``, ``adata.var[f"{k}_var"]``: float
        Mean and variance (N - 1 denominator) of the raw counts over all cells.
    ``adata.var[f"{k}_mean_nonzero"]``: float
        Mean over the cells where the gene is detected; NaN for genes without counts.
    ``adata.var[f"{k}_mean_normalized"]``: float
        Mean of the M3Drop-normalised counts C_gj / L_j x median(L): the x of the
        Michaelis-Menten fit, dropout rate ≈ K / (K + mean_normalized).
    ``adata.var[f"{k}_expected_poisson"]``: float
        Expected dropout rate under the depth-adjusted Poisson model, mean_j exp(-μ_gj),
        clamped below at 1/N as in M3Drop.
    ``adata.var[f"{k}_expected"]``: float
        Expected dropout rate under the depth-adjusted NB with the smoothed size r̃_g,
        mean_j (1 + μ_gj / r̃_g)^(-r̃_g), clamped below at 1/N (§4.2).
    ``adata.var[f"{k}_nb_size"]``: float
        Method-of-moments NB size r_g (§4.1 step 3); NaN for genes without counts.
    ``adata.var[f"{k}_excess"]``: float
        Excess zeros: observed minus expected (NB) number of zero cells, N (rate - expected).
    ``adata.var[f"{k}_zscore"]``, ``adata.var[f"{k}_pval"]``, ``adata.var[f"{k}_qval"]``: float
        One-sided Z-test of more zeros than the NB expects, its p-value and
        Benjamini-Hochberg q-value (§4.2 steps 3-5).
    ``adata.obs[f"{k}_total_counts"]``: float
        Library size L_j.
    ``adata.obs[f"{k}_n_detected"]``, ``adata.obs[f"{k}_zeros"]``: int64
        Detected genes and zero genes per cell.
    ``adata.obs[f"{k}_expected_zeros"]``, ``adata.obs[f"{k}_expected_zeros_poisson"]``: float
        Expected number of zero genes per cell, Σ_g P_gj, under the NB (smoothed size) and
        Poisson models.
    ``adata.uns[k]``: dict
        ``"params"`` (every argument; None stored as "None"); ``"nbumi"``: ``trend_intercept``
        and ``trend_slope`` of log r_g = b0 + b1 log(t_g / N), ``gene_error`` and
        ``cell_error`` (sums of squared differences of expected and observed zero counts, as
        NBumiCheckFit) and ``gene_error_poisson``, ``cell_error_poisson``; ``"m3drop"``:
        ``K``, ``K_err``, ``sigma`` of the Michaelis-Menten fit over genes detected at least
        once; ``"summary"``: ``n_cells``, ``n_genes``, ``n_genes_without_counts``,
        ``sparsity`` (fraction of zero entries), ``median_library_size``,
        ``mean_library_size``.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData, the matrix is not a dense ndarray, CSR or
        CSC (dask, COO, backed), or an argument has the wrong type.
    KeyError
        If ``layer`` is not in ``adata.layers`` (the message lists those that are).
    ValueError
        If the counts hold NaN/Inf, negative or non-integer values, there are fewer than 2
        cells, a cell has no counts, ``key_added`` is empty, or a key to be written exists
        and was not written by scdropout.
    RuntimeError
        If no gene is over-dispersed enough to fit the NB dispersion trend.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=100, n_genes=200)
    >>> sd.pp.dropout_stats(adata)
    >>> adata.var[["dropout_rate", "dropout_expected", "dropout_qval"]].shape
    (200, 3)
    """
    t0 = time.perf_counter()
    # (1) validate everything, mutating nothing
    check_key(key_added)
    check_bool(copy, name="copy")
    resolve_n_jobs(n_jobs)
    check_adata(adata)
    check_conflicts(adata, _result_keys(key_added), key_added=key_added, owner="dropout_stats")
    with thread_limit(n_jobs):  # the data checks need the cell totals (one O(nnz) pass)
        X, genes, cells = validated_counts(adata, layer, with_genes=True)
    name = matrix_name(layer)
    # (2) copy
    adata = adata.copy() if copy else adata
    # (3) compute
    n_cells, n_genes = X.shape
    with thread_limit(n_jobs):
        nb = nbumi(X, genes, cells)
        pois = kernels.expected_zeros(genes.total, cells.total)
        norm_stats, _, mm = m3drop_fit(X, cells, name=name)
    logger.debug("dropout_stats: models fitted (%.2fs)", time.perf_counter() - t0)
    qval = adjust(nb.pval, nb.tested, "bh")
    gene_err, cell_err = fit_errors(nb.expected, genes, cells)
    gene_err_p, cell_err_p = fit_errors(pois, genes, cells)
    k = key_added
    det = genes.n_detected.astype(np.int64)
    var = {
        f"{k}_n_detected": det,
        f"{k}_detection_rate": det / n_cells,
        f"{k}_rate": nb.observed_rate,
        f"{k}_mean": genes.mean,
        f"{k}_var": genes.var,
        f"{k}_mean_nonzero": genes.mean_nonzero,
        f"{k}_mean_normalized": norm_stats.mean,
        f"{k}_expected_poisson": np.maximum(pois.gene_rate, 1.0 / n_cells),
        f"{k}_expected": nb.expected_rate,
        f"{k}_nb_size": nb.size,
        f"{k}_excess": nb.effect * n_cells,
        f"{k}_zscore": nb.zscore,
        f"{k}_pval": nb.pval,
        f"{k}_qval": qval,
    }
    obs = {
        f"{k}_total_counts": cells.total,
        f"{k}_n_detected": cells.n_detected.astype(np.int64),
        f"{k}_zeros": (n_genes - cells.n_detected).astype(np.int64),
        f"{k}_expected_zeros": nb.expected.cell_zeros,
        f"{k}_expected_zeros_poisson": pois.cell_zeros,
    }
    uns = {
        "params": {
            "layer": as_param(layer),
            "n_jobs": as_param(n_jobs),
            "key_added": key_added,
            "copy": bool(copy),
        },
        "nbumi": {
            "trend_intercept": nb.trend_intercept,
            "trend_slope": nb.trend_slope,
            "gene_error": gene_err,
            "cell_error": cell_err,
            "gene_error_poisson": gene_err_p,
            "cell_error_poisson": cell_err_p,
        },
        "m3drop": {"K": mm.K, "K_err": mm.K_err, "sigma": mm.sigma},
        "summary": {
            "n_cells": int(n_cells),
            "n_genes": int(n_genes),
            "n_genes_without_counts": int((~nb.tested).sum()),
            "sparsity": float(1.0 - cells.n_detected.sum() / (n_cells * n_genes)),
            "median_library_size": float(np.median(cells.total)),
            "mean_library_size": float(np.mean(cells.total)),
        },
    }
    # (4) write everything in one block
    written = write_results(
        adata, {"var": var, "obs": obs, "uns": {k: uns}}, key_added=k, owner="dropout_stats"
    )
    # (5) log one line
    log_written("dropout_stats", written, time.perf_counter() - t0)
    return adata if copy else None
