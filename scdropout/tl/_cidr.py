"""CIDR clustering: clustering through imputation and dimensionality reduction.

The AnnData-facing wrapper around :mod:`scdropout.kernels.cidr` (ALGORITHMS.md §2).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from scdropout import _keys
from scdropout._logging import logger
from scdropout._settings import settings
from scdropout._utils import (
    check_choice,
    check_conflicts,
    check_counts,
    check_memory,
    check_positive_int,
    get_matrix,
    missing_key_message,
    resolve_n_jobs,
    seed_repr,
    thread_limit,
    warn,
    write_results,
)
from scdropout.kernels import cidr as kc

if TYPE_CHECKING:
    from anndata import AnnData

_FLAVORS = ("r",)
_TAG_TYPES = ("raw", "cpm", "rpkm")
_DTYPES = ("float64", "float32")
#: principal coordinates stored in obsm (at least n_pcs); only these eigenvectors are computed
N_COMPS = 20


def _resolve_device(device: Any) -> str:
    """Return "cpu" or a CUDA device string; "auto" uses CUDA only if torch is already loaded."""
    name = str(device)
    if name == "auto":
        name = settings.device if settings.device != "auto" else "auto"
    if name == "auto":
        torch = sys.modules.get("torch")
        return "cuda" if torch is not None and torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            msg = f"`device={device!r}` but CUDA is not available; use `device='cpu'`."
            raise ValueError(msg)
        return name
    msg = f"`device={device!r}` is not valid; choose 'auto', 'cpu' or 'cuda[:N]'."
    raise ValueError(msg)


def _gene_mask(adata: AnnData, genes: str | None) -> np.ndarray | None:
    if genes is None:
        return None
    if not isinstance(genes, str):
        msg = f"`genes` must be the name of a boolean `adata.var` column or None, got {genes!r}."
        raise TypeError(msg)
    if genes not in adata.var.columns:
        raise KeyError(missing_key_message("genes", genes, adata.var.columns, "var"))
    col = adata.var[genes]
    if col.dtype != bool:
        msg = f"`adata.var[{genes!r}]` has dtype {col.dtype}; `genes` needs a boolean column."
        raise ValueError(msg)
    mask = col.to_numpy(dtype=bool)
    if mask.sum() < 2:
        msg = f"`adata.var[{genes!r}]` selects {int(mask.sum())} genes; CIDR needs at least 2."
        raise ValueError(msg)
    return mask


def cidr(
    adata: AnnData,
    *,
    layer: str | None = None,
    genes: str | None = None,
    flavor: Literal["r"] = "r",
    tag_type: Literal["raw", "cpm", "rpkm"] = "raw",
    zeros_only: bool = False,
    n_clusters: int | None = None,
    n_pcs: int | None = None,
    step_function: bool = True,
    correction: bool = False,
    dtype: Literal["float64", "float32"] = "float64",
    device: str = "auto",
    n_jobs: int | None = None,
    progress_bar: bool = True,
    store_distances: bool = False,
    random_state: int | np.random.Generator | None = 0,
    key_added: str = _keys.CIDR,
    copy: bool = False,
) -> AnnData | None:
    """Cluster cells with CIDR's implicit imputation (Lin, Troup & Ho, Genome Biology 2017).

    CIDR finds per-cell dropout candidates (entries below a cell-specific threshold at the first
    density minimum of its log expression), fits a logistic dropout curve to set an imputation
    weighting threshold W, computes a dissimilarity in which a candidate is treated as equal
    to its partner's value unless one of the two exceeds W, embeds the cells by principal
    coordinates, picks the number of coordinates from the scree and clusters them with Ward's
    method, choosing the number of clusters from the Calinski-Harabasz index. ``flavor="r"``
    reproduces R ``cidr`` 0.1.5 exactly (``shared/docs/ALGORITHMS.md`` §2), except inside
    zero-density gaps of a cell's KDE, where R's choice depends on FFT round-off and ours is
    the first point of the gap, and where R crashes choosing k (then k = b + 2, §2.7).

    Parameters
    ----------
    adata
        Cells x genes AnnData.
    layer
        Layer holding the counts; None uses ``adata.X``.
    genes
        Name of a boolean ``adata.var`` column restricting the genes used (e.g. dropout-selected
        genes); None uses all genes. Library sizes are then computed over the selected genes,
        as R would on the subset matrix.
    flavor
        ``"r"``: the exact port of R ``cidr`` 0.1.5 (the only flavor so far).
    tag_type
        ``"raw"``: integer counts, normalised by library size (R's default);
        ``"cpm"``: values already per million, used as log2(x + 1) (R's ``tagType="cpm"``);
        ``"rpkm"``: non-negative non-integer values (RPKM/FPKM/TPM) normalised like raw counts,
        which is what R does when such values are passed with ``tagType="raw"``.
    zeros_only
        Only zeros are dropout candidates (R's ``zerosOnly=TRUE``); skips the KDE thresholds.
    n_clusters
        Number of clusters; None chooses it with CIDR's Calinski-Harabasz rule (never 2).
    n_pcs
        Number of principal coordinates to cluster on; None uses CIDR's ``calc_npc`` rule.
    step_function
        Step weights (R's default) if True; logistic imputation weights if False.
    correction
        Apply Cailliez's correction to the dissimilarity (O(N³); slow beyond a few thousand
        cells).
    dtype
        dtype of the dissimilarity kept after the kernel (and stored with
        ``store_distances``): ``"float64"`` (parity with R) or ``"float32"`` (half the size of
        the stored matrix; PCoA input rounded, results differ in the last digits). The kernel
        accumulates and the PCoA runs in float64 either way.
    device
        ``"auto"`` (CUDA only if torch is already imported and sees a GPU, else CPU), ``"cpu"``
        or ``"cuda[:N]"``. The computation currently runs on the CPU in every case; the
        argument is validated and recorded.
    n_jobs
        Threads for the numba kernels; None uses ``settings.n_jobs``.
    progress_bar
        Show progress bars for the threshold and dissimilarity loops.
    store_distances
        Also store the N x N dissimilarity in ``adata.obsp``.
    random_state
        Seed of the Lanczos start vector of the eigen-solver (used when N > 1500).
    key_added
        Name of the results; every key written is derived from it.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    AnnData | None
        The copy if ``copy=True``, else None. Written (with ``key_added="cidr"``):

        - ``adata.obs['cidr']``: categorical clusters ``"0"`` .. ``"k-1"``;
        - ``adata.obsm['X_cidr']``: principal coordinates, max(n_pcs, min(20, #positive
          eigenvalues)) columns, clustering used the first n_pcs (signs arbitrary);
        - ``adata.obs['cidr_threshold']``: per-cell dropout-candidate threshold (log2 TPM + 1);
        - ``adata.obs['cidr_n_candidates']``: dropout candidates per cell (over the used genes);
        - ``adata.var['cidr_candidate_rate']``: fraction of cells in which a gene is a
          candidate (NaN for genes not used);
        - ``adata.uns['cidr']``: ``params`` (every argument), ``w_threshold``, ``curve_a``,
          ``curve_b``, ``eigenvalues`` (all), ``variation`` (positive
          part), ``n_pcs``, ``n_clusters``, ``ch_index`` (k = 1..n_max, NaN at k = 1, empty
          when ``n_clusters`` was given), ``r_would_crash``, ``cailliez_constant``,
          ``n_genes_used``, ``fast_thresholds``, ``device_used`` and ``timings`` (wall and
          ``*_cpu`` process seconds per step);
        - ``adata.obsp['cidr_distances']``: the dissimilarity, only with ``store_distances``.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or the matrix type is not supported.
    ValueError
        For negative, NaN or (with ``tag_type="raw"``) non-integer values, fewer than 3 cells,
        all-zero cells, ``n_clusters < 2``, bad ``n_pcs``, an unknown ``flavor``, ``tag_type``,
        ``dtype`` or ``device``, or a key that exists and was not written by scdropout.
    KeyError
        If ``layer`` or ``genes`` is not in ``adata``.
    MemoryError
        If the N x N matrices would exceed ``settings.max_memory_gb``.
    RuntimeError
        If the dropout-curve fit does not converge (use ``zeros_only=True``).

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=120, n_genes=200)
    >>> sd.tl.cidr(adata, progress_bar=False)
    >>> adata.obs["cidr"].cat.categories.size >= 3
    True
    """
    # (1) validate everything before any work
    X = get_matrix(adata, layer)
    name = "`adata.X`" if layer is None else f"`layer={layer!r}`"
    check_choice(flavor, name="flavor", choices=_FLAVORS)
    check_choice(tag_type, name="tag_type", choices=_TAG_TYPES)
    check_choice(dtype, name="dtype", choices=_DTYPES)
    for flag, value in (
        ("zeros_only", zeros_only),
        ("step_function", step_function),
        ("correction", correction),
        ("progress_bar", progress_bar),
        ("store_distances", store_distances),
        ("copy", copy),
    ):
        if not isinstance(value, bool | np.bool_):
            msg = f"`{flag}` must be True or False, got {value!r}."
            raise TypeError(msg)
    if not isinstance(key_added, str) or not key_added:
        msg = f"`key_added` must be a non-empty string, got {key_added!r}."
        raise TypeError(msg)
    _resolve_device(device)
    resolve_n_jobs(n_jobs)
    n_cells = adata.n_obs
    if n_cells < 3:
        msg = f"CIDR needs at least 3 cells, got {n_cells}."
        raise ValueError(msg)
    check_positive_int(n_clusters, name="n_clusters", minimum=2, allow_none=True)
    if n_clusters is not None and n_clusters > n_cells:
        msg = f"`n_clusters={n_clusters!r}` exceeds the number of cells ({n_cells})."
        raise ValueError(msg)
    check_positive_int(n_pcs, name="n_pcs", minimum=1, allow_none=True)
    if n_pcs is not None and n_pcs >= n_cells:
        msg = f"`n_pcs={n_pcs!r}` must be smaller than the number of cells ({n_cells})."
        raise ValueError(msg)
    if not isinstance(random_state, int | np.integer | np.random.Generator | type(None)):
        msg = f"`random_state` must be an int, a numpy Generator or None, got {random_state!r}."
        raise TypeError(msg)
    mask = _gene_mask(adata, genes)
    check_counts(
        X,
        name=name,
        obs_names=adata.obs_names,
        var_names=adata.var_names,
        integer=tag_type == "raw",
        what="raw counts" if tag_type == "raw" else "non-negative expression values",
    )
    if mask is not None:
        X = X[:, mask]
    lib = np.asarray(X.sum(axis=1)).ravel()
    if np.any(lib <= 0):
        first = int(np.flatnonzero(lib <= 0)[0])
        msg = (
            f"cell {adata.obs_names[first]!r} has no counts"
            f"{' in the selected genes' if mask is not None else ''} "
            f"({int(np.sum(lib <= 0))} such cells); remove empty cells first."
        )
        raise ValueError(msg)
    # peak: the dissimilarity, the Gower matrix and the eigen-solver's working copy (float64),
    # plus the float32 copy and, with correction, the 2N x 2N Cailliez problem
    itemsize = 0 if dtype == "float64" else 4
    check_memory(
        n_cells**2 * (24 + itemsize) + (4 * 8 * 2 if correction else 0) * n_cells**2,
        what=f"CIDR's {n_cells:,} x {n_cells:,} dissimilarity and PCoA matrices",
        ways_out=(
            "Subsample the cells (e.g. `adata[rng.choice(adata.n_obs, 10_000)]`)"
            + (" or drop `correction=True`" if correction else "")
            + "."
        ),
    )
    if correction and n_cells > 5000:
        warn(f"`correction=True` on {n_cells} cells solves a {2 * n_cells}-square eigenproblem.")
    check_conflicts(
        adata, _planned_keys(key_added, store_distances=store_distances), key_added=key_added
    )

    # (2) copy
    adata = adata.copy() if copy else adata

    # (3) compute
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    with thread_limit(n_jobs):
        t0, c0 = time.perf_counter(), time.process_time()
        ld = kc.log_tpm(X, tag_type="cpm" if tag_type == "cpm" else "raw")
        th = kc.dropout_thresholds(
            ld.X,
            ld.library_size,
            fast=tag_type != "cpm",
            zeros_only=zeros_only,
            progress_bar=progress_bar and settings.progress_bar,
        )
        timings["thresholds"] = time.perf_counter() - t0
        timings["thresholds_cpu"] = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        fit = kc.weighting_threshold(ld.X, th.thresholds)
        per_cell, _, _ = kc.candidate_counts(ld.X, th.thresholds)
        timings["weighting_threshold"] = time.perf_counter() - t0
        timings["weighting_threshold_cpu"] = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        D = kc.dissimilarity(
            ld.X,
            th.thresholds,
            fit.threshold,
            step_function=step_function,
            a=fit.a,
            b=fit.b,
            dtype=np.dtype(dtype),
            progress_bar=progress_bar and settings.progress_bar,
        )
        c_const = 0.0
        if correction:
            D, c_const = kc.cailliez(D)
            D = D.astype(dtype, copy=False)
        timings["dissimilarity"] = time.perf_counter() - t0
        timings["dissimilarity_cpu"] = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        eig = kc.pcoa(
            D, n_components=None if n_cells <= 1500 else N_COMPS, random_state=random_state
        )
        n_pos = eig.variation.size
        if n_pos == 0:
            msg = "the CIDR dissimilarity has no positive eigenvalue; all cells are identical."
            raise ValueError(msg)
        npc = kc.calc_npc(eig.variation) if n_pcs is None else int(n_pcs)
        if npc > n_pos:
            msg = f"`n_pcs={npc!r}` exceeds the {n_pos} positive eigenvalues of the dissimilarity."
            raise ValueError(msg)
        n_store = max(npc, min(N_COMPS, n_pos))
        coords = eig.coordinates
        if coords.shape[1] < n_store:
            eig = kc.pcoa(D, n_components=n_store, random_state=random_state)
            coords = eig.coordinates
        coords = coords[:, :n_store]
        timings["pcoa"] = time.perf_counter() - t0
        timings["pcoa_cpu"] = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        wc = kc.ward_clusters(coords[:, :npc], n_clusters=n_clusters)
        timings["clustering"] = time.perf_counter() - t0
        timings["clustering_cpu"] = time.process_time() - c0

    k = wc.n_clusters
    labels = pd.Categorical(wc.labels.astype(str), categories=[str(i) for i in range(k)])
    rate = np.full(adata.n_vars, np.nan)
    used = np.flatnonzero(mask) if mask is not None else np.arange(adata.n_vars)
    rate[used[ld.kept_genes]] = fit.dropout_rate
    params = {
        "layer": "None" if layer is None else layer,
        "genes": "None" if genes is None else genes,
        "flavor": flavor,
        "tag_type": tag_type,
        "zeros_only": bool(zeros_only),
        "n_clusters": "None" if n_clusters is None else int(n_clusters),
        "n_pcs": "None" if n_pcs is None else int(n_pcs),
        "step_function": bool(step_function),
        "correction": bool(correction),
        "dtype": dtype,
        "device": str(device),
        "n_jobs": "None" if n_jobs is None else int(n_jobs),
        "progress_bar": bool(progress_bar),
        "store_distances": bool(store_distances),
        "random_state": seed_repr(random_state),
        "key_added": key_added,
        "copy": bool(copy),
    }
    uns = {
        "params": params,
        "w_threshold": float(fit.threshold),
        "curve_a": float(fit.a),
        "curve_b": float(fit.b),
        "fast_thresholds": bool(th.fast),
        "eigenvalues": np.asarray(eig.eigenvalues, dtype=np.float64),
        "variation": np.asarray(eig.variation, dtype=np.float64),
        "n_pcs": int(npc),
        "n_clusters": int(k),
        "ch_index": np.asarray(wc.ch_index, dtype=np.float64),
        "r_would_crash": bool(wc.r_would_crash),
        "cailliez_constant": float(c_const),
        "n_genes_used": int(ld.kept_genes.size),
        "device_used": "cpu",
        "timings": {key: float(v) for key, v in timings.items()},
    }
    results: dict[str, dict[str, Any]] = {
        "obs": {
            key_added: labels,
            f"{key_added}_threshold": th.thresholds.astype(np.float64),
            f"{key_added}_n_candidates": per_cell.astype(np.int64),
        },
        "var": {f"{key_added}_candidate_rate": rate},
        "obsm": {f"X_{key_added}": np.ascontiguousarray(coords, dtype=np.float64)},
        "uns": {key_added: uns},
    }
    if store_distances:
        results["obsp"] = {f"{key_added}_distances": D}

    # (4) write, (5) log
    written = write_results(adata, results, key_added=key_added)
    logger.info(
        "cidr: %d cells, %d genes, %d PCs, %d clusters (%.2fs); wrote %s",
        n_cells,
        ld.kept_genes.size,
        npc,
        k,
        time.perf_counter() - t_start,
        ", ".join(written),
    )
    return adata if copy else None


def _planned_keys(key_added: str, *, store_distances: bool) -> dict[str, dict[str, None]]:
    keys: dict[str, dict[str, None]] = {
        "obs": {
            key_added: None,
            f"{key_added}_threshold": None,
            f"{key_added}_n_candidates": None,
        },
        "var": {f"{key_added}_candidate_rate": None},
        "obsm": {f"X_{key_added}": None},
        "uns": {key_added: None},
    }
    if store_distances:
        keys["obsp"] = {f"{key_added}_distances": None}
    return keys
