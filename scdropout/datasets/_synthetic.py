"""A seeded simulator of UMI counts with cell groups, markers, depth variation and dropout."""

from __future__ import annotations

import numbers

import numpy as np
import pandas as pd
from scipy import sparse

from scdropout._utils import as_generator, check_positive_int, seed_repr

_BASES = np.array(list("ACGT"))


def _barcodes(rng: np.random.Generator, n: int) -> np.ndarray:
    """Draw unique 16-mer barcodes with the Cell Ranger ``-1`` suffix."""
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        codes = rng.integers(0, 4, size=(n - len(out), 16))
        for row in _BASES[codes]:
            bc = "".join(row) + "-1"
            if bc not in seen:
                seen.add(bc)
                out.append(bc)
    return np.asarray(out, dtype=object)


def synthetic(
    *,
    n_cells: int = 300,
    n_genes: int = 500,
    n_groups: int = 3,
    n_markers: int = 20,
    marker_fold_change: float = 4.0,
    library_size: float = 2000.0,
    library_size_sd: float = 0.4,
    dispersion: float = 0.2,
    dropout_midpoint: float = 0.5,
    dropout_slope: float = 2.0,
    true_counts: bool = True,
    chunk_size: int = 2000,
    random_state: int | np.random.Generator | None = 0,
):
    """Simulate UMI counts with planted groups, marker genes, depth variation and dropout.

    The generative model, per cell j of group k and gene g:

    1. relative abundance ``p_gk``: a log-normal baseline shared by all groups, multiplied by
       ``marker_fold_change`` (jittered) for the ``n_markers`` marker genes of group k;
       columns renormalised to sum to 1;
    2. library size ``L_j`` ~ LogNormal(log ``library_size``, ``library_size_sd``);
    3. true count ``Y_gj`` ~ NB(mean ``L_j p_gk``, dispersion ``dispersion``·(1 + noise)), drawn as
       a gamma-Poisson mixture;
    4. technical dropout: an expressed entry is lost with probability
       ``1 / (1 + exp(dropout_slope · (log(1 + mean) - dropout_midpoint)))``, so weakly expressed
       genes drop out more often, as in CIDR's simulator (Lin et al. 2017).

    Cells are generated in chunks of ``chunk_size`` so that large matrices never exist densely.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_genes
        Number of genes.
    n_groups
        Number of planted cell groups (balanced sizes).
    n_markers
        Marker genes per group; must satisfy ``n_groups * n_markers <= n_genes``.
    marker_fold_change
        Typical up-regulation of a marker gene in its group.
    library_size
        Median total UMI count per cell before dropout.
    library_size_sd
        Standard deviation of log library size.
    dispersion
        Typical NB dispersion (1/θ); 0 gives Poisson counts.
    dropout_midpoint
        log(1 + mean) at which half of the expressed entries drop out.
    dropout_slope
        Steepness of the dropout curve; 0 disables technical dropout.
    true_counts
        Store the pre-dropout counts in ``layers['true_counts']``.
    chunk_size
        Cells simulated at once (memory ~ ``chunk_size × n_genes`` float64). The random draws
        are taken chunk by chunk, so another ``chunk_size`` gives another sample (of the same
        distribution) from the same seed; the default keeps data sets of up to 2,000 cells
        in one chunk.
    random_state
        Seed or Generator; the same seed (and ``chunk_size``) gives the same data.

    Returns
    -------
    AnnData with CSR float32 counts in ``X`` (cells × genes), ``obs['group']`` (categorical
    labels "0".."n_groups-1"), ``obs['library_size_true']``, ``var['marker_of']`` (group of a
    marker gene, "" otherwise), ``var['gene_ids']``, ``var['feature_types']``,
    ``layers['true_counts']`` (if requested) and ``uns['simulation']`` (the parameters).

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=100, n_genes=200)
    >>> adata.shape
    (100, 200)
    """
    from anndata import AnnData

    for name, value, minimum in [
        ("n_cells", n_cells, 1),
        ("n_genes", n_genes, 1),
        ("n_groups", n_groups, 1),
        ("n_markers", n_markers, 0),
        ("chunk_size", chunk_size, 1),
    ]:
        check_positive_int(value, name=name, minimum=minimum)
    if n_groups * n_markers > n_genes:
        msg = (
            f"`n_groups * n_markers` = {n_groups * n_markers} exceeds `n_genes` = {n_genes}; "
            "lower `n_markers` or raise `n_genes`."
        )
        raise ValueError(msg)
    for name, value in [
        ("marker_fold_change", marker_fold_change),
        ("library_size", library_size),
        ("library_size_sd", library_size_sd),
        ("dispersion", dispersion),
        ("dropout_midpoint", dropout_midpoint),
        ("dropout_slope", dropout_slope),
    ]:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            msg = f"`{name}` must be a number, got {value!r}."
            raise TypeError(msg)
    if not np.isfinite(dropout_midpoint):
        msg = f"`dropout_midpoint` must be a finite number, got {dropout_midpoint!r}."
        raise ValueError(msg)
    if not isinstance(true_counts, bool | np.bool_):
        msg = f"`true_counts` must be a bool, got {true_counts!r}."
        raise TypeError(msg)
    for name, value in [
        ("marker_fold_change", marker_fold_change),
        ("library_size", library_size),
    ]:
        if not np.isfinite(value) or value <= 0:
            msg = f"`{name}` must be a positive number, got {value!r}."
            raise ValueError(msg)
    for name, value in [
        ("library_size_sd", library_size_sd),
        ("dispersion", dispersion),
        ("dropout_slope", dropout_slope),
    ]:
        if not np.isfinite(value) or value < 0:
            msg = f"`{name}` must be a non-negative number, got {value!r}."
            raise ValueError(msg)

    rng = as_generator(random_state)
    base = rng.lognormal(mean=0.0, sigma=1.5, size=n_genes)
    profiles = np.tile(base[:, None], (1, n_groups))
    marker_of = np.full(n_genes, "", dtype=object)
    marker_idx = rng.permutation(n_genes)[: n_groups * n_markers].reshape(n_groups, n_markers)
    for k in range(n_groups):
        fc = marker_fold_change * rng.lognormal(0.0, 0.25, size=n_markers)
        profiles[marker_idx[k], k] *= fc
        marker_of[marker_idx[k]] = str(k)
    profiles /= profiles.sum(axis=0, keepdims=True)
    gene_disp = dispersion * rng.lognormal(0.0, 0.3, size=n_genes)

    groups = np.sort(np.arange(n_cells) % n_groups)
    groups = groups[rng.permutation(n_cells)]
    libs = rng.lognormal(np.log(library_size), library_size_sd, size=n_cells)

    obs_chunks: list[sparse.csr_matrix] = []
    true_chunks: list[sparse.csr_matrix] = []
    for start in range(0, n_cells, chunk_size):
        stop = min(start + chunk_size, n_cells)
        mu = libs[start:stop, None] * profiles[:, groups[start:stop]].T
        if dispersion > 0:
            shape = 1.0 / gene_disp
            lam = rng.gamma(shape[None, :], mu / shape[None, :])
        else:
            lam = mu
        y = rng.poisson(lam).astype(np.float32)
        if dropout_slope > 0:
            p_drop = 1.0 / (1.0 + np.exp(dropout_slope * (np.log1p(mu) - dropout_midpoint)))
            keep = rng.random(mu.shape) >= p_drop
            observed = np.where(keep, y, np.float32(0))
        else:
            observed = y
        obs_chunks.append(sparse.csr_matrix(observed))
        if true_counts:
            true_chunks.append(sparse.csr_matrix(y))

    X = sparse.vstack(obs_chunks, format="csr").astype(np.float32)
    obs = pd.DataFrame(
        {
            "group": pd.Categorical(
                groups.astype(str), categories=[str(k) for k in range(n_groups)]
            ),
            "library_size_true": libs,
        },
        index=pd.Index(_barcodes(rng, n_cells), name=None),
    )
    width = max(4, len(str(n_genes)))
    var = pd.DataFrame(
        {
            "gene_ids": [f"SIMG{g:0{width + 4}d}" for g in range(n_genes)],
            "feature_types": "Gene Expression",
            "marker_of": marker_of.astype(str),
        },
        index=pd.Index([f"Gene{g:0{width}d}" for g in range(n_genes)]),
    )
    adata = AnnData(X=X, obs=obs, var=var)
    if true_counts:
        adata.layers["true_counts"] = sparse.vstack(true_chunks, format="csr").astype(np.float32)
    adata.uns["simulation"] = {
        "n_cells": n_cells,
        "n_genes": n_genes,
        "n_groups": n_groups,
        "n_markers": n_markers,
        "marker_fold_change": float(marker_fold_change),
        "library_size": float(library_size),
        "library_size_sd": float(library_size_sd),
        "dispersion": float(dispersion),
        "dropout_midpoint": float(dropout_midpoint),
        "dropout_slope": float(dropout_slope),
        "chunk_size": int(chunk_size),
        "random_state": seed_repr(random_state),
    }
    return adata
