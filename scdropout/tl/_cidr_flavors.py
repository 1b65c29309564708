"""CIDR-style variants beyond the R port, as functions on arrays (no AnnData in or out).

``flavor="r"`` of :func:`scdropout.tl.cidr` reproduces R ``cidr`` 0.1.5. :func:`cidr_dropout`
is its default ``flavor="dropout"``: the variant measured best over the 12 labelled datasets
(``benchmarks/bench_cidr_quality.py``, table ``bench_cidr_quality`` in
``benchmarks/RESULTS.md``: mean ARI 0.668 with automatic k, vs 0.523 for the R rule over 11
and 0.53 for the best peer) from what ``tl.cidr`` already computes (CIDR's log2(TPM + 1)
matrix of all genes; the thresholds and W only when ``impute=True``). With its defaults it

1. keeps the ``n_top_genes=1000`` genes with the most dropouts for their expression
   (:func:`dropout_gene_ranks`: M3Drop's Michaelis-Menten test, Andrews & Hemberg 2019,
   which also ranks non-count inputs), because ~20k mostly-noise genes drown the distances
   on large UMI data;
2. drops CIDR's implicit imputation (``impute=False``, i.e. W = 0: every entry counts, the
   dissimilarity is Euclidean on log2(TPM + 1) and its principal coordinates are the
   principal components, :func:`pca_top`, no N x N matrix). Measured: with imputation the
   large UMI sets stay poor even on selected genes (mouse_bladder 0.24 vs 0.76,
   worm_neuron 0.19 vs 0.44); ``impute=True`` keeps it (:func:`pcoa_top` of
   :func:`scdropout.kernels.cidr.dissimilarity` on the selected genes with the all-gene
   thresholds and W);
3. takes the leading ``n_pcs=20`` coordinates;
4. clusters them with Leiden at resolution 0.5 on the exact 15-NN graph
   (:func:`cluster_coordinates`; Ward + CIDR's CH rule with ``cluster_method="ward_ch"``,
   required for a fixed ``n_clusters``).
"""

from __future__ import annotations

import warnings
from typing import Any, Literal, NamedTuple

import numpy as np
import pandas as pd
from numpy.typing import NDArray
from scipy import sparse

from scdropout import kernels
from scdropout._utils import as_generator
from scdropout.kernels import cidr as kc
from scdropout.pp._dropout_common import m3drop, nbumi

_GENE_METHODS = ("m3drop", "nbumi")
_CLUSTER_METHODS = ("ward_ch", "leiden")


class FlavorResult(NamedTuple):
    """Output of :func:`cidr_dropout`."""

    #: cluster per cell, 0..k-1
    labels: NDArray[np.int64]
    #: number of clusters
    n_clusters: int
    #: principal coordinates (cells x n_pcs)
    coordinates: NDArray[np.float64]
    #: leading eigenvalues of the Gower-centred dissimilarity (descending, len n_pcs)
    eigenvalues: NDArray[np.float64]
    #: columns of the input used for the dissimilarity (indices into its genes)
    genes_used: NDArray[np.int64]


def _check_choice(value: Any, *, name: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        msg = f"`{name}` must be one of {choices!r}, got {value!r}."
        raise ValueError(msg)


def _check_int(value: Any, *, name: str, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        msg = f"`{name}` must be an integer >= {minimum}, got {value!r}."
        raise ValueError(msg)


def dropout_gene_ranks(
    X: Any, *, method: Literal["m3drop", "nbumi"] = "m3drop"
) -> NDArray[np.int64]:
    """Rank genes by dropout excess (1 = best), as ``pp.dropout_genes`` does, for any input.

    Andrews & Hemberg (2019), Bioinformatics 35:2865. ``"m3drop"`` fits the Michaelis-Menten
    dropout curve to library-size-normalised values and tests each gene's K; it needs no integer
    counts, so it also ranks RPKM/RPM or expm1(log) matrices. ``"nbumi"`` is the depth-adjusted
    negative binomial test, meant for UMI counts. Ties in p-value are broken by the larger
    effect; genes that cannot be tested come last.

    Parameters
    ----------
    X
        Cells x genes non-negative values (dense, CSR or CSC), every cell with a positive total.
    method
        ``"m3drop"`` or ``"nbumi"`` (see above).

    Returns
    -------
    numpy.ndarray
        int64 rank per gene.

    Raises
    ------
    ValueError
        If ``method`` is unknown or a cell has no counts.
    """
    _check_choice(method, name="method", choices=_GENE_METHODS)
    if sparse.issparse(X):
        X = sparse.csr_matrix(X, dtype=np.float64)
    else:
        X = np.asarray(X, dtype=np.float64)
    if method == "nbumi":
        genes, cells = kernels.gene_cell_stats(X, two_pass=False)
    else:
        genes, cells = None, kernels.cell_stats(X)
    if np.any(cells.total <= 0):
        msg = "every cell needs a positive total to rank genes by dropouts; remove empty cells."
        raise ValueError(msg)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)
        res = nbumi(X, genes, cells) if method == "nbumi" else m3drop(X, cells, name="`X`")
    effect = np.where(res.tested, res.effect, -np.inf)
    effect = np.nan_to_num(effect, nan=-np.inf)
    pval = np.where(res.tested, res.pval, np.inf)
    order = np.lexsort((-effect, pval, ~res.tested))
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(1, order.size + 1)
    return rank


def pcoa_top(
    D: Any, n_components: int, *, random_state: int | np.random.Generator | None = 0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Leading principal coordinates of a dissimilarity (Gower centring, as CIDR's PCoA).

    Only the ``n_components`` largest eigenpairs of B = J(-D∘D/2)J are computed: a full ``eigh``
    for N <= 1500, Lanczos (``eigsh``, start vector from ``random_state``) above, so the cost is
    O(N² · iterations) instead of CIDR's O(N³). Coordinates of non-positive eigenvalues are 0.

    Parameters
    ----------
    D
        Symmetric N x N dissimilarity.
    n_components
        Number of coordinates, 1 <= n_components < N.
    random_state
        Seed of the Lanczos start vector.

    Returns
    -------
    tuple
        Eigenvalues (descending, length n_components) and the N x n_components coordinates
        (column signs fixed so that the largest-magnitude entry is positive).
    """
    D = np.asarray(D)
    n = D.shape[0]
    _check_int(n_components, name="n_components", minimum=1)
    if n_components >= n:
        msg = f"`n_components={n_components!r}` must be smaller than the number of cells ({n})."
        raise ValueError(msg)
    from threadpoolctl import threadpool_limits

    B = kc._gower(D)
    with threadpool_limits(limits=1, user_api="blas"):  # as kc.pcoa: no spinning BLAS threads
        lam, V = _top_eigh(B, n_components, random_state)
    order = np.argsort(-lam, kind="stable")

    lam, V = lam[order], V[:, order]
    big = np.argmax(np.abs(V), axis=0)
    V = V * np.sign(V[big, np.arange(V.shape[1])])
    coords = V * np.sqrt(np.maximum(lam, 0.0))
    return lam, np.ascontiguousarray(coords)


def pca_top(X: Any, n_components: int) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Principal components of the rows of X = PCoA of their Euclidean distances.

    The centred cross-product's eigenvalues (squared singular values, descending) and the
    scores U·S, with the sign convention of :func:`pcoa_top`. The selected columns are
    densified (meant for a few thousand genes); a dense SVD when min(N, genes) <= 500, else
    the leading singular triplets by ARPACK (``svds``, fixed start vector), O(N · genes) per
    iteration and no N x N matrix.

    Parameters
    ----------
    X
        Cells x genes (dense or sparse).
    n_components
        Number of components, 1 <= n_components < min(N, genes).

    Returns
    -------
    tuple
        Eigenvalues and N x n_components scores.
    """
    M = X.toarray() if sparse.issparse(X) else np.array(X, dtype=np.float64)
    M = np.asarray(M, dtype=np.float64)
    n, g = M.shape
    _check_int(n_components, name="n_components", minimum=1)
    if n_components >= min(n, g):
        msg = (
            f"`n_components={n_components!r}` must be smaller than the number of cells ({n}) "
            f"and of genes ({g})."
        )
        raise ValueError(msg)
    M -= M.mean(axis=0)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        if min(n, g) <= 500:
            U, S, _ = np.linalg.svd(M, full_matrices=False)
        else:
            from scipy.sparse.linalg import svds

            v0 = np.full(min(n, g), 1.0 / np.sqrt(min(n, g)))
            U, S, _ = svds(M, k=n_components, v0=v0, tol=1e-10)
    order = np.argsort(-S, kind="stable")[:n_components]
    U, S = U[:, order], S[order]
    big = np.argmax(np.abs(U), axis=0)
    U = U * np.sign(U[big, np.arange(U.shape[1])])
    return S**2, np.ascontiguousarray(U * S)


def _top_eigh(
    B: NDArray[np.float64], m: int, random_state: Any
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    n = B.shape[0]
    if n <= kc.FULL_EIGH_MAX:
        from scipy import linalg

        return linalg.eigh(B, subset_by_index=[n - m, n - 1], driver="evr")
    from scipy.sparse.linalg import eigsh

    v0 = as_generator(random_state).uniform(-1, 1, size=n)
    return eigsh(B, k=m, which="LA", v0=v0, tol=1e-10)


def _leiden(
    Y: NDArray[np.float64], *, resolution: float, n_neighbors: int, seed: int
) -> NDArray[np.int64]:
    """Leiden clusters (igraph flavour) of the exact kNN graph of ``Y``, numbered by first appearance.

    The kNN graph comes from sklearn (``transformer="sklearn"``): scanpy's default above 4,096
    cells (pynndescent) calls ``csr_array.getnnz``, which scipy >= 1.17 no longer has. Shared
    with ``tl.compare_clusterings``.
    """
    import anndata as ad
    import scanpy as sc

    n = Y.shape[0]
    a = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(n)]))
    a.obsm["X"] = np.ascontiguousarray(Y, dtype=np.float64)
    sc.pp.neighbors(
        a,
        use_rep="X",
        n_neighbors=min(n_neighbors, n - 1),
        transformer="sklearn",
        random_state=seed,
    )
    sc.tl.leiden(
        a,
        resolution=resolution,
        flavor="igraph",
        n_iterations=2,
        directed=False,
        random_state=seed,
    )
    codes = a.obs["leiden"].cat.codes.to_numpy().astype(np.int64)
    return _renumber(codes)


def _renumber(labels: NDArray[np.int64]) -> NDArray[np.int64]:
    """Clusters numbered 0..k-1 by first appearance."""
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inv.ravel()]


def cluster_coordinates(
    Y: Any,
    *,
    method: Literal["ward_ch", "leiden"] = "ward_ch",
    n_clusters: int | None = None,
    resolution: float = 1.0,
    n_neighbors: int = 15,
    random_state: int | np.random.Generator | None = 0,
) -> NDArray[np.int64]:
    """Cluster cells on their coordinates.

    ``"ward_ch"``: Ward (ward.D2) with CIDR's Calinski-Harabasz second-difference rule for k
    (:func:`scdropout.kernels.cidr.ward_clusters`, k in 3..3·d+3 for d coordinates), or the tree
    cut at ``n_clusters``. ``"leiden"``: exact 15-nearest-neighbour graph (Scanpy's UMAP
    connectivities) and Leiden at ``resolution`` (Traag et al. 2019); ``n_clusters`` not
    allowed.

    Parameters
    ----------
    Y
        Cells x d coordinates.
    method
        ``"ward_ch"`` or ``"leiden"``.
    n_clusters
        Fixed k (``"ward_ch"`` only); None chooses it.
    resolution
        Leiden resolution.
    n_neighbors
        Neighbours of the Leiden graph.
    random_state
        Seed of Leiden.

    Returns
    -------
    numpy.ndarray
        int64 labels 0..k-1.
    """
    _check_choice(method, name="method", choices=_CLUSTER_METHODS)
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    if n_clusters is not None:
        _check_int(n_clusters, name="n_clusters", minimum=2)
        if method != "ward_ch":
            msg = f"`n_clusters` needs `method='ward_ch'`, got `method={method!r}`."
            raise ValueError(msg)
    if method == "ward_ch":
        return _renumber(kc.ward_clusters(Y, n_clusters=n_clusters).labels)
    seed = int(as_generator(random_state).integers(2**31 - 1))
    return _leiden(Y, resolution=float(resolution), n_neighbors=n_neighbors, seed=seed)


def cidr_dropout(
    X: Any,
    thresholds: Any,
    w_threshold: float,
    *,
    counts: Any | None = None,
    n_top_genes: int = 1000,
    gene_method: Literal["m3drop", "nbumi"] = "m3drop",
    impute: bool = False,
    n_pcs: int = 20,
    cluster_method: Literal["ward_ch", "leiden"] = "leiden",
    n_clusters: int | None = None,
    resolution: float = 0.5,
    random_state: int | np.random.Generator | None = 0,
    progress_bar: bool = False,
) -> FlavorResult:
    """CIDR on dropout-selected genes: the measured default flavor of ``tl.cidr``.

    Lin, Troup & Ho (2017) Genome Biology 18:59 (CIDR) with Andrews & Hemberg (2019) gene
    selection; see the module docstring and ``benchmarks/RESULTS.md`` (bench_cidr_quality).

    Parameters
    ----------
    X
        Cells x genes log2(TPM + 1) matrix of *all* genes, as ``kernels.cidr.log_tpm(...).X``
        (what ``tl.cidr`` computes; columns = ``log_tpm(...).kept_genes``).
    thresholds
        Per-cell dropout thresholds from ``kernels.cidr.dropout_thresholds`` on that matrix.
    w_threshold
        CIDR's weighting threshold W from ``kernels.cidr.weighting_threshold`` on that matrix.
    counts
        Cells x genes values the genes are ranked on (same columns as ``X``: raw counts or the
        non-negative input); None ranks on ``2**X - 1`` (TPM).
    n_top_genes
        Genes kept for the dissimilarity (all if the matrix has fewer).
    gene_method
        ``"m3drop"`` or ``"nbumi"`` (:func:`dropout_gene_ranks`).
    impute
        CIDR's implicit imputation with ``w_threshold`` if True; if False, W = 0, so every
        entry counts and the dissimilarity is the Euclidean distance of the log2(TPM + 1)
        rows: its principal coordinates are then the principal components, computed directly
        (truncated SVD of the centred selected columns, no N x N matrix).
    n_pcs
        Principal coordinates clustered (capped at N - 1 and, without imputation, at the number
        of selected genes - 1).
    cluster_method
        ``"ward_ch"`` or ``"leiden"`` (:func:`cluster_coordinates`).
    n_clusters
        Fixed k (``"ward_ch"``); None chooses it.
    resolution
        Leiden resolution.
    random_state
        Seed (Lanczos start vector, Leiden).
    progress_bar
        Progress bar of the dissimilarity loop (``impute=True``).

    Returns
    -------
    FlavorResult
        Labels, k, coordinates, eigenvalues and the genes used.

    Raises
    ------
    TypeError
        If ``impute`` is not a bool.
    ValueError
        For an unknown method, ``n_top_genes``/``n_pcs`` < 1, ``n_clusters`` < 2 or with
        Leiden, mismatched shapes, fewer than 3 cells.
    """
    _check_choice(gene_method, name="gene_method", choices=_GENE_METHODS)
    _check_choice(cluster_method, name="cluster_method", choices=_CLUSTER_METHODS)
    _check_int(n_top_genes, name="n_top_genes", minimum=1)
    _check_int(n_pcs, name="n_pcs", minimum=1)
    if not isinstance(impute, bool | np.bool_):
        msg = f"`impute` must be True or False, got {impute!r}."
        raise TypeError(msg)
    if n_clusters is not None:
        _check_int(n_clusters, name="n_clusters", minimum=2)
        if cluster_method != "ward_ch":
            msg = "`n_clusters` needs `cluster_method='ward_ch'`."
            raise ValueError(msg)
    X = sparse.csr_matrix(X, dtype=np.float64)
    n, g = X.shape
    thr = np.asarray(thresholds, dtype=np.float64)
    if n < 3:
        msg = f"CIDR needs at least 3 cells, got {n}."
        raise ValueError(msg)
    if thr.shape != (n,):
        msg = f"`thresholds` has shape {thr.shape}; expected ({n},), one per cell of `X`."
        raise ValueError(msg)
    if counts is None:
        counts = X.copy()
        counts.data = np.exp2(counts.data) - 1.0
    elif counts.shape != (n, g):
        msg = f"`counts` has shape {counts.shape}; expected {(n, g)} like `X`."
        raise ValueError(msg)
    if n_top_genes < g:
        rank = dropout_gene_ranks(counts, method=gene_method)
        used = np.sort(np.flatnonzero(rank <= n_top_genes))
    else:
        used = np.arange(g)
    # PCA of the selected columns has at most min(N, genes) - 1 informative components
    m = min(n_pcs, n - 1) if impute else min(n_pcs, n - 1, used.size - 1)
    if m < 1:
        msg = f"{used.size} gene(s) selected; CIDR's coordinates need at least 2."
        raise ValueError(msg)
    if impute:
        D = kc.dissimilarity(X[:, used], thr, float(w_threshold), progress_bar=progress_bar)
        lam, Y = pcoa_top(D, m, random_state=random_state)
        del D
    else:
        lam, Y = pca_top(X[:, used], m)
    labels = cluster_coordinates(
        Y,
        method=cluster_method,
        n_clusters=n_clusters,
        resolution=resolution,
        random_state=random_state,
    )
    k = int(labels.max()) + 1
    return FlavorResult(labels, k, Y, lam, used.astype(np.int64))


__all__ = [
    "FlavorResult",
    "cidr_dropout",
    "cluster_coordinates",
    "dropout_gene_ranks",
    "pca_top",
    "pcoa_top",
]
