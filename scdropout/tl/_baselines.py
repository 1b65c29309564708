"""The baselines CIDR is compared against (Lin et al. 2017): PCA and 2-D t-SNE of log counts.

Array-level helpers used by :func:`scdropout.tl.compare_clusterings`; they take a count matrix
(cells x genes, dense or sparse) and return numpy arrays. They write nothing and draw no random
numbers themselves: every solver gets an integer seed from the caller. scikit-learn's PCA and
t-SNE are imported when a function runs, never at ``import scdropout``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from scdropout._compat import SparseBase
from scdropout._utils import check_memory

#: library size every cell is scaled to before ``log1p`` (scanpy's ``normalize_total`` default)
TARGET_SUM = 1e4
#: scaled values are clipped to [-CLIP, CLIP] (scanpy's ``scale(max_value=10)``)
CLIP = 10.0
#: fewest cells each baseline runs on
MIN_CELLS_PCA = 3
MIN_CELLS_TSNE = 5


def log_normalize_scale(
    X: Any, *, target_sum: float = TARGET_SUM, clip: float = CLIP
) -> np.ndarray:
    """Return ``clip(scale(log1p(X / library * target_sum)))`` as a dense float64 array.

    Each cell is scaled to ``target_sum`` counts, ``log1p`` is taken, and each gene is centred
    and divided by its standard deviation (ddof=1; genes with zero variance are left at 0).
    Values are then clipped to ``[-clip, clip]``. The log step runs on the sparse matrix; only
    the centred result is dense (its size is checked against ``settings.max_memory_gb``).

    Parameters
    ----------
    X
        Counts, cells x genes, dense or CSR/CSC; every cell must have a positive total.
    target_sum
        Counts per cell after library-size normalisation.
    clip
        Largest absolute scaled value.

    Returns
    -------
    Dense float64 array of the same shape as ``X``.
    """
    n, g = X.shape
    check_memory(
        16.0 * n * g,
        what=f"the dense {n:,} x {g:,} scaled log-count matrix of the PCA baseline",
        ways_out="Restrict the genes with `genes=` (e.g. the dropout-selected genes).",
    )
    lib = np.asarray(X.sum(axis=1), dtype=np.float64).ravel()
    scale = target_sum / lib
    if isinstance(X, SparseBase):
        Xl = sparse.csr_matrix(sparse.diags(scale) @ sparse.csr_matrix(X, dtype=np.float64))
        Xl.data = np.log1p(Xl.data)
        dense = Xl.toarray()
    else:
        dense = np.log1p(np.asarray(X, dtype=np.float64) * scale[:, None])
    mean = dense.mean(axis=0)
    std = dense.std(axis=0, ddof=1) if n > 1 else np.zeros(g)
    std[std == 0] = 1.0
    dense -= mean
    dense /= std
    np.clip(dense, -clip, clip, out=dense)
    return dense


def pca_embedding(
    X: Any, *, n_pcs: int, random_state: int, **kwargs: Any
) -> tuple[np.ndarray, np.ndarray]:
    """PCA of the log-normalised, scaled counts (the CIDR paper's PCA baseline).

    Parameters
    ----------
    X
        Counts, cells x genes (see :func:`log_normalize_scale`).
    n_pcs
        Requested number of components; capped at ``min(n_cells - 1, n_genes)``.
    random_state
        Seed of scikit-learn's randomized solver (used on larger inputs).
    **kwargs
        Passed to :class:`sklearn.decomposition.PCA` (not ``n_components``/``random_state``).

    Returns
    -------
    The cell coordinates (cells x components, float64) and the explained variance ratios.
    """
    from sklearn.decomposition import PCA

    scaled = log_normalize_scale(X)
    n_comp = max(1, min(int(n_pcs), scaled.shape[0] - 1, scaled.shape[1]))
    pca = PCA(n_components=n_comp, random_state=random_state, **kwargs)
    coords = pca.fit_transform(scaled)
    return np.ascontiguousarray(coords, dtype=np.float64), np.asarray(
        pca.explained_variance_ratio_, dtype=np.float64
    )


def tsne_perplexity(n_cells: int, perplexity: float = 30.0) -> float:
    """Return ``perplexity`` lowered to ``(n_cells - 1) / 3`` for small inputs (at least 1)."""
    return float(max(1.0, min(perplexity, (n_cells - 1) / 3.0)))


def tsne_embedding(
    pcs: np.ndarray, *, random_state: int, n_jobs: int = 1, **kwargs: Any
) -> np.ndarray:
    """2-D t-SNE of the PCA coordinates (the CIDR paper's t-SNE baseline).

    Parameters
    ----------
    pcs
        Cells x components, e.g. from :func:`pca_embedding`.
    random_state
        Seed of the t-SNE initialisation and optimisation.
    n_jobs
        Threads of the neighbour search.
    **kwargs
        Passed to :class:`sklearn.manifold.TSNE`; ``perplexity`` defaults to
        :func:`tsne_perplexity` of the number of cells, ``init`` to ``"pca"`` (``"random"`` for
        1-D input).

    Returns
    -------
    Cells x 2 float64 coordinates.
    """
    from sklearn.manifold import TSNE

    n = pcs.shape[0]
    opts: dict[str, Any] = {
        "perplexity": tsne_perplexity(n),
        "init": "pca" if pcs.shape[1] >= 2 else "random",
        "learning_rate": "auto",
    }
    opts.update(kwargs)
    if opts["perplexity"] >= n:
        opts["perplexity"] = tsne_perplexity(n)
    tsne = TSNE(n_components=2, random_state=random_state, n_jobs=n_jobs, **opts)
    return np.ascontiguousarray(tsne.fit_transform(np.asarray(pcs, dtype=np.float64)))
