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
    as_generator,
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
from scdropout.kernels import cidr_landmarks as kl

if TYPE_CHECKING:
    from anndata import AnnData

_FLAVORS = ("r",)
_TAG_TYPES = ("raw", "cpm", "rpkm")
_DTYPES = ("float64", "float32")
_MODES = ("auto", "exact", "landmark")
#: above this many cells ``mode="auto"`` runs the landmark approximation
AUTO_LANDMARK_CELLS = 20_000
#: default number of landmark cells
N_LANDMARKS = 1000
#: fewest landmarks accepted
MIN_LANDMARKS = 50
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
    mode: Literal["auto", "exact", "landmark"] = "auto",
    n_landmarks: int | None = None,
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

    Beyond ~20,000 cells the N x N dissimilarity and its eigendecomposition do not fit, and
    ``mode="landmark"`` (the default there) approximates CIDR without them: dissimilarities of
    every cell to ``n_landmarks`` seeded landmark cells, landmark MDS (de Silva & Tenenbaum
    2004; nPC from the landmarks' spectrum), Ward clustering of the landmarks with the same
    rule for k, extended to all cells by k-means started at the landmark clusters' centroids.

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
    mode
        ``"exact"``: the full N x N method (memory ~24 bytes x N², checked first);
        ``"landmark"``: the landmark approximation (memory ~16 bytes x N x ``n_landmarks``
        plus the sparse data, never N x N; no ``store_distances`` or ``correction``);
        ``"auto"``: exact up to 20,000 cells, landmark above.
    n_landmarks
        Landmark cells for ``mode="landmark"`` (between 50 and the number of cells); None
        uses min(1,000, number of cells). Drawn without replacement from ``random_state``.

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
        Seed of the Lanczos start vector of the eigen-solver (used when N > 1500) and of the
        landmark sample.
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
          eigenvalues)) columns, clustering used the first n_pcs (signs arbitrary; landmark
          MDS coordinates in landmark mode);
        - ``adata.obs['cidr_threshold']``: per-cell dropout-candidate threshold (log2 TPM + 1);
        - ``adata.obs['cidr_n_candidates']``: dropout candidates per cell (over the used genes);
        - ``adata.var['cidr_candidate_rate']``: fraction of cells in which a gene is a
          candidate (NaN for genes not used);
        - ``adata.uns['cidr']``: ``params`` (every argument), ``w_threshold``, ``curve_a``,
          ``curve_b``, ``eigenvalues``, ``variation`` (positive part over its sum),
          ``eigenvalues_complete``, ``n_pcs``, ``n_clusters``, ``ch_index`` (k = 1..n_max,
          NaN at k = 1, empty when ``n_clusters`` was given), ``r_would_crash``,
          ``cailliez_constant``, ``n_genes_used``, ``fast_thresholds``, ``device_used``,
          ``mode`` (``"exact"`` or ``"landmark"``), ``landmarks`` (cell indices, empty in
          exact mode) and ``timings`` (wall and ``*_cpu`` process seconds per step).
          Exact mode up to 1,500 cells: ``eigenvalues`` holds all N. Above, only the leading
          50 are computed (Lanczos) when they decide CIDR's nPC rule exactly (see
          :func:`scdropout.kernels.cidr.calc_npc_leading`; the full spectrum otherwise), and
          ``variation`` is then over those 50; ``eigenvalues_complete`` says which.
          Landmark mode: the landmark block's full spectrum (scaled by about L/N relative to
          the exact one), and clustering statistics over the landmarks;
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
        If the N x N matrices (exact mode) or the N x L ones (landmark mode) would exceed
        ``settings.max_memory_gb``.
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
    check_choice(mode, name="mode", choices=_MODES)
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
    if n_landmarks is not None:
        if mode == "exact":
            msg = "`n_landmarks` is only used with `mode='landmark'` or 'auto'; drop it or change `mode`."
            raise ValueError(msg)
        check_positive_int(n_landmarks, name="n_landmarks", minimum=MIN_LANDMARKS)
        if n_landmarks > n_cells:
            msg = (
                f"`n_landmarks={n_landmarks!r}` exceeds the number of cells ({n_cells}); use at "
                "most that many, or `mode='exact'`."
            )
            raise ValueError(msg)
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
    # exact peak: the dissimilarity, the Gower matrix and the eigen-solver's working copy
    # (float64), plus the float32 copy and, with correction, the 2N x 2N Cailliez problem
    itemsize = 0 if dtype == "float64" else 4
    exact_bytes = n_cells**2 * (24 + itemsize) + (4 * 8 * 2 if correction else 0) * n_cells**2
    mode_requested = mode
    if mode == "auto":  # by the cell count only, so that results never depend on settings
        mode = "exact" if n_cells <= AUTO_LANDMARK_CELLS else "landmark"
    if mode == "exact":
        check_memory(
            exact_bytes,
            what=f"CIDR's {n_cells:,} x {n_cells:,} dissimilarity and PCoA matrices",
            ways_out=(
                "Use `mode='landmark'` (never forms the N x N matrix), subsample the cells "
                "(e.g. `adata[rng.choice(adata.n_obs, 10_000)]`)"
                + (" or drop `correction=True`" if correction else "")
                + "."
            ),
        )
        n_lm = 0
    else:
        for flag, value in (("store_distances", store_distances), ("correction", correction)):
            if value:
                msg = (
                    f"`{flag}=True` needs the N x N dissimilarity, which landmark mode "
                    f"({n_cells:,} cells) never forms; drop it or use `mode='exact'`."
                )
                raise ValueError(msg)
        n_lm = min(N_LANDMARKS, n_cells) if n_landmarks is None else int(n_landmarks)
        for arg, value in (("n_clusters", n_clusters), ("n_pcs", n_pcs)):
            if value is not None and value >= n_lm:
                msg = (
                    f"`{arg}={value!r}` must be smaller than the number of landmarks ({n_lm}); "
                    "raise `n_landmarks`."
                )
                raise ValueError(msg)
        # the N x L dissimilarities, their squares in blocks, the coordinates, the float64
        # log matrix (data + indices ~ 12 bytes per nonzero, twice while it is built)
        nnz = X.nnz if hasattr(X, "nnz") else int(np.count_nonzero(X))
        check_memory(
            n_cells * n_lm * 8 * 2 + nnz * 24 + n_cells * 8 * 64,
            what=f"landmark CIDR ({n_cells:,} cells x {n_lm:,} landmarks)",
            ways_out="Use fewer `n_landmarks`, or fewer genes (`genes=`).",
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
        c_const = 0.0
        D = None
        landmarks = np.empty(0, dtype=np.int64)
        if mode == "exact":
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
            if correction:
                D, c_const = kc.cailliez(D)
                D = D.astype(dtype, copy=False)
        else:
            rng = as_generator(random_state)
            landmarks = np.sort(rng.choice(n_cells, size=n_lm, replace=False)).astype(np.int64)
            D_nl = kl.dissimilarity_to_landmarks(
                ld.X,
                th.thresholds,
                fit.threshold,
                landmarks,
                step_function=step_function,
                a=fit.a,
                b=fit.b,
                progress_bar=progress_bar and settings.progress_bar,
            )
        timings["dissimilarity"] = time.perf_counter() - t0
        timings["dissimilarity_cpu"] = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "exact":
            eig = kc.pcoa_npc(D, n_components=N_COMPS, n_pcs=n_pcs, random_state=random_state)
            eigenvalues, variation, npc, complete = (
                eig.eigenvalues,
                eig.variation,
                eig.n_pcs,
                eig.complete,
            )
            if variation.size == 0:
                msg = "the CIDR dissimilarity has no positive eigenvalue; all cells are identical."
                raise ValueError(msg)
            if npc > variation.size:
                msg = (
                    f"`n_pcs={npc!r}` exceeds the {variation.size} positive eigenvalues of the "
                    "dissimilarity."
                )
                raise ValueError(msg)
        else:
            eig = kl.landmark_mds(D_nl, landmarks, n_components=N_COMPS, n_pcs=n_pcs)
            del D_nl
            eigenvalues, variation, npc, complete = (
                eig.eigenvalues,
                eig.variation,
                eig.n_pcs,
                True,
            )
        coords = eig.coordinates
        timings["pcoa"] = time.perf_counter() - t0
        timings["pcoa_cpu"] = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "exact":
            wc = kc.ward_clusters(coords[:, :npc], n_clusters=n_clusters)
            cell_labels = wc.labels
        else:
            wc = kc.ward_clusters(coords[landmarks, :npc], n_clusters=n_clusters)
            cell_labels = _first_appearance(
                kl.extend_clusters(coords[:, :npc], landmarks, wc.labels)
            )
        timings["clustering"] = time.perf_counter() - t0
        timings["clustering_cpu"] = time.process_time() - c0

    k = wc.n_clusters
    labels = pd.Categorical(cell_labels.astype(str), categories=[str(i) for i in range(k)])
    rate = np.full(adata.n_vars, np.nan)
    used = np.flatnonzero(mask) if mask is not None else np.arange(adata.n_vars)
    rate[used[ld.kept_genes]] = fit.dropout_rate
    params = {
        "layer": "None" if layer is None else layer,
        "genes": "None" if genes is None else genes,
        "flavor": flavor,
        "mode": mode_requested,
        "n_landmarks": "None" if n_landmarks is None else int(n_landmarks),
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
        "eigenvalues": np.asarray(eigenvalues, dtype=np.float64),
        "variation": np.asarray(variation, dtype=np.float64),
        "eigenvalues_complete": bool(complete),
        "mode": mode,
        "landmarks": landmarks,
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


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..k-1 in order of first appearance over the cells (as R's cutree)."""
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inverse]


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
