"""``pp.dropout_genes``: dropout-based gene selection (NBumi or M3Drop)."""

from __future__ import annotations

import numbers
import time
from typing import TYPE_CHECKING, Literal

import numpy as np

from scdropout import _keys
from scdropout._utils import (
    check_adata,
    check_choice,
    check_conflicts,
    check_positive_int,
    resolve_n_jobs,
    thread_limit,
    warn,
    write_results,
)

from ._dropout_common import (
    adjust,
    as_param,
    check_bool,
    check_key,
    log_written,
    m3drop,
    matrix_name,
    nbumi,
    validated_counts,
)

if TYPE_CHECKING:
    from anndata import AnnData

_FLAVORS = ("nbumi", "m3drop")
_CORRECTIONS = ("bh", "bonferroni")
#: the correction each flavor uses when ``correction=None`` (R defaults)
_DEFAULT_CORRECTION = {"nbumi": "bh", "m3drop": "bonferroni"}
_VAR = _keys.DROPOUT_GENES_VAR_COLUMNS


def _rank(pval, effect, tested) -> np.ndarray:
    """1-based rank: tested genes by p-value, ties by larger effect; untested genes last."""
    sort_effect = np.where(np.isnan(effect), -np.inf, effect)
    order = np.lexsort((-sort_effect, pval, ~tested))
    rank = np.empty(pval.size, dtype=np.int64)
    rank[order] = np.arange(1, pval.size + 1, dtype=np.int64)
    return rank


def dropout_genes(
    adata: AnnData,
    *,
    flavor: Literal["nbumi", "m3drop"] = "nbumi",
    n_top_genes: int | None = None,
    fdr: float | None = 0.05,
    correction: Literal["bh", "bonferroni"] | None = None,
    layer: str | None = None,
    n_jobs: int | None = None,
    key_added: str = _keys.DROPOUT_GENES,
    copy: bool = False,
) -> AnnData | None:
    """Select genes with more zeros than their expression explains (dropout-based selection).

    Andrews & Hemberg (2019), Bioinformatics 35(16):2865-2867, "M3Drop: dropout-based feature
    selection for scRNASeq"; ALGORITHMS.md §3 step 4 and §4.2. Genes whose dropout rate is
    higher than expected for their mean expression vary between cell types, so they make good
    features for clustering.

    Parameters
    ----------
    adata
        Cells x genes AnnData with raw UMI counts (integer values, any numeric dtype, dense,
        CSR or CSC). Cells without counts are not allowed.
    flavor
        The test.

        - ``"nbumi"``: depth-adjusted negative binomial (``NBumiFeatureSelectionCombinedDrop``):
          observed vs expected dropout rate under the NB with the smoothed size, a one-sided
          Z-test; effect = observed - expected rate. Meant for UMI counts.
        - ``"m3drop"``: Michaelis-Menten model (``M3DropFeatureSelection``): each gene's
          K_g = p s / (1 - p) on normalised counts against the fitted K, a one-sided Z-test
          on the log scale; effect = K_g / K. Works for read counts too.
    n_top_genes
        Select this many genes, best first (by p-value, ties broken by the larger effect).
        When given, ``fdr`` is ignored, as R's ``ntop`` overrides ``qval.thresh``. Genes that
        cannot be tested are never selected, so fewer may be selected.
    fdr
        Without ``n_top_genes``: select the genes with adjusted p-value below this, in (0, 1].
        None needs ``n_top_genes``.
    correction
        Multiple-testing adjustment for the q-values.

        - ``"bh"``: Benjamini-Hochberg false discovery rate.
        - ``"bonferroni"``: Bonferroni family-wise error rate.
        - None: the flavor's default as in M3Drop: ``"bh"`` for ``"nbumi"``, ``"bonferroni"``
          for ``"m3drop"``.
    layer
        Layer holding the counts; None uses ``adata.X``.
    n_jobs
        Threads for the numba kernels; None uses ``scdropout.settings.n_jobs``, -1 all cores.
        Results do not depend on it.
    key_added
        Prefix of every key written (``var`` columns) and the ``uns`` key.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    None, or the modified copy when ``copy=True``. With ``k = key_added``, writes

    ``adata.var[f"{k}_rank"]``: int64
        1 for the best gene. Genes without any count cannot be tested and come last, in
        their original order.
    ``adata.var[f"{k}_effect"]``: float
        ``"nbumi"``: observed - expected dropout rate; ``"m3drop"``: K_g / K. NaN when not
        tested.
    ``adata.var[f"{k}_pval"]``, ``adata.var[f"{k}_qval"]``: float
        One-sided p-value and adjusted p-value (1 when not tested; always-detected genes get
        p = 1 under ``"m3drop"``, as in M3Drop).
    ``adata.var[f"{k}_selected"]``: bool
        The selected genes: usable as ``adata[:, adata.var[f"{k}_selected"]]`` or
        ``sc.pp.pca(adata, mask_var=f"{k}_selected")``.
    ``adata.uns[k]``: dict
        ``"params"`` (every argument; None stored as "None"), ``"flavor"``,
        ``"correction"`` (the one used), ``"n_selected"``, ``"n_tested"`` and the fit:
        ``"trend_intercept"``, ``"trend_slope"`` (``"nbumi"``) or ``"K"``, ``"K_err"``,
        ``"sigma"`` (``"m3drop"``).

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData, the matrix is not a dense ndarray, CSR or
        CSC (dask, COO, backed), or an argument has the wrong type.
    KeyError
        If ``layer`` is not in ``adata.layers`` (the message lists those that are).
    ValueError
        If ``flavor`` or ``correction`` is unknown, ``n_top_genes`` is below 1 or above the
        number of genes, ``fdr`` is outside (0, 1], both ``n_top_genes`` and ``fdr`` are None,
        the counts hold NaN/Inf, negative or non-integer values, a cell has no counts, or a key
        to be written exists and was not written by scdropout.
    RuntimeError
        If the NB dispersion trend cannot be fitted (``"nbumi"``).

    Warns
    -----
    UserWarning
        If no gene is selected, or (``"m3drop"``) the matrix has fewer than 10% zeros.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=100, n_genes=200)
    >>> sd.pp.dropout_genes(adata, n_top_genes=20)
    >>> int(adata.var["dropout_genes_selected"].sum())
    20
    """
    t0 = time.perf_counter()
    # (1) validate everything, mutating nothing
    check_choice(flavor, name="flavor", choices=_FLAVORS)
    check_choice(correction, name="correction", choices=(*_CORRECTIONS, None))
    check_positive_int(n_top_genes, name="n_top_genes", allow_none=True)
    if fdr is not None and (
        isinstance(fdr, bool) or not isinstance(fdr, numbers.Real) or not 0 < fdr <= 1
    ):
        msg = f"`fdr` must be a number in (0, 1] or None, got {fdr!r}."
        raise ValueError(msg)
    if n_top_genes is None and fdr is None:
        msg = "`n_top_genes` and `fdr` are both None; pass one of them to select genes."
        raise ValueError(msg)
    check_key(key_added)
    check_bool(copy, name="copy")
    resolve_n_jobs(n_jobs)
    check_adata(adata)
    if n_top_genes is not None and n_top_genes > adata.n_vars:
        msg = (
            f"`n_top_genes={n_top_genes!r}` exceeds the number of genes ({adata.n_vars}); pass "
            "at most that many."
        )
        raise ValueError(msg)
    k = key_added
    check_conflicts(
        adata, {"var": [f"{k}_{v}" for v in _VAR], "uns": [k]}, key_added=k, owner="dropout_genes"
    )
    with thread_limit(n_jobs):  # the data checks need the cell totals (one O(nnz) pass)
        # the NB test needs no variance: one pass gives the gene and cell statistics
        X, genes, cells = validated_counts(
            adata, layer, with_genes=flavor == "nbumi", two_pass=False
        )
    method = _DEFAULT_CORRECTION[flavor] if correction is None else correction
    # (2) copy
    adata = adata.copy() if copy else adata
    # (3) compute
    with thread_limit(n_jobs):
        if flavor == "nbumi":
            res = nbumi(X, genes, cells)
            fit = {"trend_intercept": res.trend_intercept, "trend_slope": res.trend_slope}
        else:
            res = m3drop(X, cells, name=matrix_name(layer))
            fit = {"K": res.fit.K, "K_err": res.fit.K_err, "sigma": res.fit.sigma}
    qval = adjust(res.pval, res.tested, method)
    effect = np.where(res.tested, res.effect, np.nan)
    rank = _rank(res.pval, effect, res.tested)
    if n_top_genes is not None:
        selected = res.tested & (rank <= n_top_genes)
    else:
        selected = res.tested & (qval < fdr)
    n_selected = int(selected.sum())
    if n_selected == 0:
        rule = f"{method} q < {fdr!r}" if n_top_genes is None else "no testable gene"
        warn(
            f"`dropout_genes` selected no gene (flavor={flavor!r}, {rule}); raise `fdr` or "
            "pass `n_top_genes`."
        )
    var = {
        f"{k}_rank": rank,
        f"{k}_effect": effect,
        f"{k}_pval": res.pval,
        f"{k}_qval": qval,
        f"{k}_selected": selected,
    }
    uns = {
        "params": {
            "flavor": flavor,
            "n_top_genes": as_param(n_top_genes),
            "fdr": as_param(fdr),
            "correction": as_param(correction),
            "layer": as_param(layer),
            "n_jobs": as_param(n_jobs),
            "key_added": key_added,
            "copy": bool(copy),
        },
        "flavor": flavor,
        "correction": method,
        "n_selected": n_selected,
        "n_tested": int(res.tested.sum()),
        **fit,
    }
    # (4) write everything in one block
    written = write_results(
        adata, {"var": var, "uns": {k: uns}}, key_added=k, owner="dropout_genes"
    )
    # (5) log one line
    log_written("dropout_genes", written, time.perf_counter() - t0)
    return adata if copy else None
