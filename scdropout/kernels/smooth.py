"""Fold-wise neighbour means: the smoothing terms of the autoencoder's imputation gate.

The gate of ``models._impute`` hides each held-out cell's entries in ``F`` folds. With fold
``f`` hidden the cell has its own latent neighbours ``neighbors[f, i]``, and the hidden entries
of that fold are predicted from those neighbours' values (model shares, count shares, log
shares)::

    out[s, i, g] = mean_j values_s[neighbors[fold[i, g], i, j], g]

Each entry is averaged over the neighbours of its own fold only: ``cells × k × genes`` reads
in all, instead of ``F`` sparse neighbour products over every gene. The sources (cells × genes,
e.g. all cells' model means) arrive in blocks of rows, so no cells × genes matrix of the
whole data set is ever held.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from numba import njit
from numpy.typing import NDArray


def fold_neighbor_means_ref(
    neighbors: NDArray[Any], fold: NDArray[Any], values: Sequence[NDArray[Any]]
) -> NDArray[np.float64]:
    """NumPy reference of :func:`fold_neighbor_means` with whole (not blocked) sources."""
    n, n_genes = fold.shape
    idx = np.asarray(neighbors)[fold, np.arange(n)[:, None]]  # (cells, genes, k)
    genes = np.arange(n_genes)[None, :, None]
    return np.stack([np.asarray(v, dtype=np.float64)[idx, genes].mean(axis=2) for v in values])


@njit(cache=True, nogil=True)
def _fold_gather_dense(neighbors, order, ptr, block, start, out):
    """Add ``block[r - start, g]`` to ``out[i, g]`` for each neighbour ``r`` of the fold of g.

    Serial on purpose: the caller interleaves it with torch forward passes, and with a parallel
    (OpenMP) kernel in between, the later forward passes of the gate fit on cbmc_citeseq took
    13.7 s instead of 1.0 s on the 2-core machine shared with other jobs. The work (cells × k ×
    genes additions per source) is small next to those passes anyway.
    """
    n_folds, n, k = neighbors.shape
    stop = start + block.shape[0]
    for i in range(n):
        for f in range(n_folds):
            a = ptr[i, f]
            b = ptr[i, f + 1]
            if a == b:
                continue
            for j in range(k):
                r = neighbors[f, i, j]
                if r < start or r >= stop:
                    continue
                row = r - start
                for t in range(a, b):
                    g = order[i, t]
                    out[i, g] += block[row, g]


def fold_neighbor_means(
    neighbors: Any,
    fold: Any,
    blocks: Iterable[tuple[int, Sequence[NDArray[Any]]]],
    *,
    n_sources: int,
) -> NDArray[np.float64]:
    """Return ``out[s, i, g] = mean_j values_s[neighbors[fold[i, g], i, j], g]`` (float64).

    Parameters
    ----------
    neighbors
        ``(n_folds, n_cells, k)`` integer rows of the sources: the ``k`` neighbours of query
        cell ``i`` when fold ``f`` is hidden.
    fold
        ``(n_cells, n_genes)`` fold of each entry of the query cells, in ``[0, n_folds)``.
    blocks
        ``(start, arrays)`` pairs: ``arrays`` holds, for each of the ``n_sources`` sources, its
        dense rows ``start, start + 1, ...`` (each array rows × n_genes). Every row a neighbour
        refers to must come in exactly one block; the blocks are read once, in order.
    n_sources
        Number of arrays in each block.

    Returns
    -------
    ``(n_sources, n_cells, n_genes)`` means. The sums run over blocks in the given order and
    within a block over ``j``, whatever the thread count.
    """
    nb = np.ascontiguousarray(neighbors, dtype=np.int64)
    fold = np.asarray(fold)
    if nb.ndim != 3 or fold.ndim != 2 or fold.shape[0] != nb.shape[1]:
        msg = (
            f"`neighbors` must be (n_folds, n_cells, k) and `fold` (n_cells, n_genes) with the "
            f"same n_cells, got shapes {nb.shape} and {fold.shape}."
        )
        raise ValueError(msg)
    n_folds, n, k = nb.shape
    if fold.size and (fold.min() < 0 or fold.max() >= n_folds):
        msg = f"`fold` values must lie in [0, {n_folds}), got [{fold.min()}, {fold.max()}]."
        raise ValueError(msg)
    n_genes = fold.shape[1]
    # genes of each cell grouped by fold: order[i, ptr[i, f]:ptr[i, f + 1]] are fold f's
    order = np.argsort(fold, axis=1, kind="stable").astype(np.int64)
    per_fold = np.stack([(fold == f).sum(axis=1) for f in range(n_folds)], axis=1)
    ptr = np.zeros((n, n_folds + 1), dtype=np.int64)
    np.cumsum(per_fold, axis=1, out=ptr[:, 1:])
    out = np.zeros((n_sources, n, n_genes))
    for start, arrays in blocks:
        if len(arrays) != n_sources:
            msg = f"each block must hold {n_sources} arrays, got {len(arrays)}."
            raise ValueError(msg)
        for s, arr in enumerate(arrays):
            arr = np.ascontiguousarray(arr)
            if arr.ndim != 2 or arr.shape[1] != n_genes:
                msg = f"block arrays must be rows × {n_genes} genes, got shape {arr.shape}."
                raise ValueError(msg)
            _fold_gather_dense(nb, order, ptr, arr, int(start), out[s])
    return out / max(k, 1)
