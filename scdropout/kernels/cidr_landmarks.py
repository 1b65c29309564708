"""Landmark CIDR for large N: never forms the N x N dissimilarity (de Silva & Tenenbaum 2004).

CIDR (Lin, Troup & Ho 2017, ALGORITHMS.md §2) needs the N x N dissimilarity and its PCoA, which
caps the exact method at ~20,000 cells. The landmark approximation keeps every CIDR step that is
linear in N (thresholds, weighting threshold, the dissimilarity itself) and replaces the N x N
parts:

- :func:`dissimilarity_to_landmarks`: CIDR's dissimilarity of every cell to L landmark cells
  (the same kernel as :func:`scdropout.kernels.cidr.dissimilarity`, on an N x L tile grid);
- :func:`landmark_mds`: classical MDS of the L x L landmark block, CIDR's nPC rule on its
  spectrum, and distance-based triangulation of all cells into the landmark coordinates
  (landmark MDS, de Silva & Tenenbaum 2004): y = -½ Λ^(-½) Vᵀ (δ - δ̄), exact for the landmarks;
- :func:`extend_clusters`: carries the landmarks' Ward clusters over to all cells: the
  clusters' centroids in coordinate space, refined by Lloyd (k-means) iterations on all cells
  (measured better than the nearest landmark's label, see ``benchmarks/RESULTS.md``);
  :func:`nearest_landmark` is the simpler alternative.

Memory is O(N · L) plus the sparse input; time O(N · L · nnz per cell).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray
from scipy import sparse

from scdropout._compat import CSRBase

from . import cidr as kc

__all__ = [
    "LandmarkMDS",
    "dissimilarity_to_landmarks",
    "extend_clusters",
    "landmark_mds",
    "landmark_mds_ref",
    "nearest_landmark",
]


def dissimilarity_to_landmarks(
    X: Any,
    thresholds: Any,
    w_threshold: float,
    landmarks: Any,
    *,
    step_function: bool = True,
    a: float = 1.0,
    b: float = 0.0,
    tile_size: int = 128,
    chunk_size: int = 8192,
    progress_bar: bool = False,
) -> NDArray[np.float64]:
    """CIDR's dissimilarity of every cell to each landmark cell (Lin, Troup & Ho 2017).

    ALGORITHMS.md §2.4, computed for the N x L pairs (cell, landmark) only, with the same
    per-pair arithmetic as :func:`scdropout.kernels.cidr.dissimilarity` (float64, gene order),
    so the entries equal the exact matrix's columns ``D[:, landmarks]`` up to round-off in the
    order of the two cells. A landmark's distance to itself is set to exactly 0.

    Parameters
    ----------
    X
        Cells x genes log2(TPM + 1) matrix (CSR from :func:`~scdropout.kernels.cidr.log_tpm`).
    thresholds
        T_j per cell (all > 0).
    w_threshold
        The weighting threshold W (step mode).
    landmarks
        Indices of the L landmark cells (distinct).
    step_function
        Step weights (R's default) if True, else logistic imputation.
    a
        Logistic steepness (logistic mode).
    b
        Logistic midpoint (logistic mode).
    tile_size
        Landmarks per dense tile (memory: n_genes x tile_size float64).
    chunk_size
        Cells per kernel call (progress and Ctrl-C granularity).
    progress_bar
        Show a tqdm bar over landmark tiles.

    Returns
    -------
    numpy.ndarray
        N x L float64.

    Raises
    ------
    ValueError
        If a threshold is not positive or a landmark index is out of range or repeated.
    """
    X = sparse.csr_matrix(X, dtype=np.float64) if not isinstance(X, CSRBase) else X
    if not X.has_sorted_indices:
        X = X.sorted_indices()
    n, n_genes = X.shape
    thr = np.ascontiguousarray(thresholds, dtype=np.float64)
    if np.any(~(thr > 0)):
        msg = "`thresholds` must all be positive (zeros are dropout candidates)."
        raise ValueError(msg)
    lm = np.asarray(landmarks, dtype=np.int64)
    if lm.ndim != 1 or lm.size == 0 or lm.min() < 0 or lm.max() >= n:
        msg = f"`landmarks` must be a non-empty 1-D array of cell indices in [0, {n})."
        raise ValueError(msg)
    if np.unique(lm).size != lm.size:
        msg = "`landmarks` contains repeated cells; draw them without replacement."
        raise ValueError(msg)
    data = np.asarray(X.data, dtype=np.float64)
    indices, indptr = X.indices, X.indptr
    step = bool(step_function)
    w_thr, a, b = float(w_threshold), float(a), float(b)
    base = kc._zero_partner_sums(data, indptr, thr, w_thr, step, a, b)
    out = np.empty((n, lm.size))
    Xt = None if step else np.zeros((n_genes, tile_size))
    starts = range(0, lm.size, tile_size)
    if progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="CIDR landmark dissimilarity", unit="tile")
    for s in starts:
        rows = lm[s : s + tile_size]
        bsz = rows.size
        sums = kc._tile_sums(
            data,
            indices,
            indptr,
            thr,
            base,
            rows,
            w_thr,
            step=step,
            a=a,
            b=b,
            n_genes=n_genes,
            Xt=Xt,
        )
        for j0 in range(0, n, chunk_size):
            j1 = min(j0 + chunk_size, n)
            S = sums(j0, j1)
            out[j0:j1, s : s + bsz] = np.sqrt(np.maximum(S, 0.0))
    out[lm, np.arange(lm.size)] = 0.0
    return out


class LandmarkMDS(NamedTuple):
    """Output of :func:`landmark_mds`."""

    #: all eigenvalues of the landmarks' double-centred -Δ/2, descending, |λ| < sqrt(eps) -> 0
    eigenvalues: NDArray[np.float64]
    #: λ⁺ / Σλ⁺ over the landmarks' positive eigenvalues
    variation: NDArray[np.float64]
    #: nPC: CIDR's rule on the landmark spectrum, or as given
    n_pcs: int
    #: all cells' coordinates, N x m (m = max(n_pcs, min(n_components, #positive)))
    coordinates: NDArray[np.float64]


def landmark_mds(
    D_nl: Any,
    landmarks: Any,
    *,
    n_components: int = 20,
    n_pcs: int | None = None,
) -> LandmarkMDS:
    """Landmark MDS of CIDR's dissimilarity (de Silva & Tenenbaum 2004; Lin et al. 2017).

    With Δ the L x L squared dissimilarities among landmarks (symmetrised), B_L = -½ J Δ J is
    decomposed fully (ALGORITHMS.md §2.5 on the landmarks), nPC is CIDR's ``calc_npc`` on its
    spectrum (§2.6), and every cell x with squared dissimilarities δ_x to the landmarks gets
    y_x = -½ diag(λ)^(-½) Vᵀ (δ_x - δ̄), δ̄ the column means of Δ. For a landmark this
    reproduces its classical-MDS coordinates.

    Parameters
    ----------
    D_nl
        N x L dissimilarities of all cells to the landmarks
        (:func:`dissimilarity_to_landmarks`).
    landmarks
        Row indices of the landmarks in ``D_nl`` (column t is landmark ``landmarks[t]``).
    n_components
        Coordinates to compute at least (capped at the number of positive eigenvalues).
    n_pcs
        nPC if already chosen; None applies CIDR's rule to the landmark spectrum.

    Returns
    -------
    LandmarkMDS
        Landmark eigenvalues and variation, nPC and the coordinates of all cells.

    Raises
    ------
    ValueError
        If the landmark block has no positive eigenvalue, or ``n_pcs`` exceeds their number.
    """
    from scipy import linalg
    from threadpoolctl import threadpool_limits

    D_nl = np.asarray(D_nl, dtype=np.float64)
    lm = np.asarray(landmarks, dtype=np.int64)
    D_ll = D_nl[lm]
    Delta = 0.5 * (np.square(D_ll) + np.square(D_ll.T))
    mean_sq = Delta.mean(axis=0)
    B = kc._gower(np.sqrt(Delta))
    with threadpool_limits(limits=1, user_api="blas"):
        lam, V = linalg.eigh(B, driver="evd", overwrite_a=True, check_finite=False)
    lam, V = lam[::-1], V[:, ::-1]
    lam = np.where(np.abs(lam) < kc.EIG_EPS, 0.0, lam)
    k = int(np.sum(lam > kc.EIG_EPS))
    if k == 0:
        msg = "the landmarks' CIDR dissimilarity has no positive eigenvalue; all are identical."
        raise ValueError(msg)
    variation = lam[:k] / lam[:k].sum()
    npc = kc.calc_npc(variation) if n_pcs is None else int(n_pcs)
    if npc > k:
        msg = f"`n_pcs={npc!r}` exceeds the {k} positive eigenvalues of the landmark block."
        raise ValueError(msg)
    m = max(npc, min(n_components, k))
    P = V[:, :m] / np.sqrt(lam[:m])  # L x m: the pseudo-inverse transpose of the coordinates
    Y = np.empty((D_nl.shape[0], m))
    for s in range(0, D_nl.shape[0], 16384):
        delta = np.square(D_nl[s : s + 16384]) - mean_sq
        Y[s : s + 16384] = -0.5 * (delta @ P)
    return LandmarkMDS(lam, variation, npc, Y)


def landmark_mds_ref(D_nl: Any, landmarks: Any, n_components: int) -> NDArray[np.float64]:
    """Dense NumPy transcription of landmark MDS (de Silva & Tenenbaum 2004), for the tests.

    Parameters
    ----------
    D_nl
        N x L dissimilarities to the landmarks.
    landmarks
        Row indices of the landmarks.
    n_components
        Coordinates returned (all with positive eigenvalues).

    Returns
    -------
    numpy.ndarray
        N x n_components coordinates (signs arbitrary).
    """
    D_nl = np.asarray(D_nl, dtype=np.float64)
    Delta = np.square(D_nl[np.asarray(landmarks)])
    Delta = (Delta + Delta.T) / 2
    n_l = Delta.shape[0]
    J = np.eye(n_l) - 1.0 / n_l
    lam, V = np.linalg.eigh(-0.5 * J @ Delta @ J)
    lam, V = lam[::-1][:n_components], V[:, ::-1][:, :n_components]
    return -0.5 * (np.square(D_nl) - Delta.mean(axis=0)) @ (V / np.sqrt(lam))


def nearest_landmark(Y: Any, landmarks: Any, *, chunk_size: int = 8192) -> NDArray[np.int64]:
    """Index (into ``landmarks``) of each cell's nearest landmark in coordinate space.

    Euclidean distances in the rows of ``Y``; ties go to the first landmark. A landmark's
    nearest landmark is itself.

    Parameters
    ----------
    Y
        N x d coordinates of all cells.
    landmarks
        Row indices of the landmarks in ``Y``.
    chunk_size
        Cells per block of the N x L distance computation.

    Returns
    -------
    numpy.ndarray
        N int64 positions in ``landmarks``.
    """
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    lm = np.asarray(landmarks, dtype=np.int64)
    out = _nearest_centre(Y, Y[lm], chunk_size)
    out[lm] = np.arange(lm.size)
    return out


def _nearest_centre(Y: NDArray[np.float64], C: NDArray[np.float64], chunk_size: int) -> Any:
    """Index of the nearest row of ``C`` for each row of ``Y`` (squared Euclidean, chunked)."""
    nc = np.einsum("ij,ij->i", C, C)
    out = np.empty(Y.shape[0], dtype=np.int64)
    for s in range(0, Y.shape[0], chunk_size):
        d2 = nc[None, :] - 2.0 * (Y[s : s + chunk_size] @ C.T)
        out[s : s + chunk_size] = np.argmin(d2, axis=1)
    return out


def extend_clusters(
    Y: Any,
    landmarks: Any,
    landmark_labels: Any,
    *,
    max_iter: int = 50,
    chunk_size: int = 8192,
) -> NDArray[np.int64]:
    """Extend the landmarks' clusters to all cells: k-means started at their centroids.

    Centroids of the landmark clusters in the coordinates ``Y``, then Lloyd iterations over all
    cells (assign to the nearest centroid, recompute centroids; an emptied cluster keeps its
    centroid) until no label changes or ``max_iter``. Deterministic: no random restarts.

    Parameters
    ----------
    Y
        N x d coordinates of all cells.
    landmarks
        Row indices of the landmarks in ``Y``.
    landmark_labels
        Cluster 0..k-1 of each landmark.
    max_iter
        Most Lloyd iterations.
    chunk_size
        Cells per block of the N x k distance computation.

    Returns
    -------
    numpy.ndarray
        N int64 labels in 0..k-1 (cluster numbers of ``landmark_labels``).
    """
    Y = np.ascontiguousarray(Y, dtype=np.float64)
    lab = np.asarray(landmark_labels, dtype=np.int64)
    k = int(lab.max()) + 1
    Yl = Y[np.asarray(landmarks, dtype=np.int64)]
    C = np.stack([Yl[lab == c].mean(axis=0) for c in range(k)])
    labels = _nearest_centre(Y, C, chunk_size)
    for _ in range(max_iter):
        counts = np.bincount(labels, minlength=k)
        sums = np.zeros_like(C)
        np.add.at(sums, labels, Y)
        filled = counts > 0
        C[filled] = sums[filled] / counts[filled, None]
        new = _nearest_centre(Y, C, chunk_size)
        if np.array_equal(new, labels):
            break
        labels = new
    return labels
