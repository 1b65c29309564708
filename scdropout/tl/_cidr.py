"""CIDR clustering: clustering through imputation and dimensionality reduction.

The AnnData-facing wrapper around :mod:`scdropout.kernels.cidr` (ALGORITHMS.md §2).
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

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
    check_orientation,
    check_positive_int,
    gene_mask,
    get_matrix,
    resolve_n_jobs,
    seed_repr,
    thread_limit,
    warn,
    write_results,
)
from scdropout.kernels import cidr as kc
from scdropout.kernels import cidr_landmarks as kl

from ._cidr_flavors import cidr_dropout

if TYPE_CHECKING:
    from anndata import AnnData

#: the owner recorded for the keys tl.cidr writes (see ``_utils.write_results``)
OWNER = "cidr"
_FLAVORS = ("dropout", "r")
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
#: principal coordinates of ``flavor="dropout"`` when ``n_pcs=None`` (capped by the data)
DROPOUT_N_PCS = 20


def _cuda_available() -> bool:
    """Whether torch sees a GPU, without importing torch on machines with no NVIDIA driver."""
    torch = sys.modules.get("torch")
    if torch is None:
        import importlib.util
        from pathlib import Path

        if importlib.util.find_spec("torch") is None:
            return False
        if not Path("/proc/driver/nvidia/version").exists():
            return False
        import torch
    return bool(torch.cuda.is_available())


def _resolve_device(device: Any) -> str:
    """Return "cpu" or a CUDA device string; "auto" is CUDA when available, else CPU."""
    name = str(device)
    if name == "auto":
        name = settings.device if settings.device != "auto" else "auto"
    if name == "auto":
        return "cuda" if _cuda_available() else "cpu"
    if name == "cpu":
        return "cpu"
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not _cuda_available():
            msg = f"`device={device!r}` but CUDA is not available; use `device='cpu'` or 'auto'."
            raise ValueError(msg)
        return name
    msg = f"`device={device!r}` is not valid; choose 'auto', 'cpu' or 'cuda[:N]'."
    raise ValueError(msg)


def cidr(
    adata: AnnData,
    *,
    layer: str | None = None,
    genes: str | None = None,
    flavor: Literal["dropout", "r"] = "dropout",
    n_top_genes: int = 1000,
    impute: bool = False,
    resolution: float = 0.5,
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
    """Cluster cells CIDR-style (Lin, Troup & Ho, Genome Biology 2017) on dropout-selected genes.

    Two flavors. The default, ``flavor="dropout"``, is the variant that clustered best in our
    measurement over the 12 labelled datasets of ``shared/data`` (automatic k; command
    ``python benchmarks/bench_cidr_quality.py``, table ``bench_cidr_quality`` in
    ``benchmarks/RESULTS.md``): mean ARI 0.668, against 0.523 for the R method (``flavor="r"``,
    11 datasets) and 0.53 for the best peer of ``shared/benchmarks/peers.md`` that runs on all
    12. It keeps CIDR's log2(TPM + 1) values, per-cell dropout thresholds and weighting
    threshold (stored as diagnostics), then

    1. keeps the ``n_top_genes`` genes with the most dropouts for their expression (M3Drop's
       Michaelis-Menten test, Andrews & Hemberg 2019, as ``pp.dropout_genes(flavor="m3drop")``);
    2. by default does **not** use CIDR's implicit imputation (``impute=False``: W = 0, every
       entry counts, so the dissimilarity is Euclidean and its principal coordinates are the
       principal components of the selected log2(TPM + 1) columns, computed by a truncated
       SVD without any N x N matrix). The imputation measured worse on large UMI data: the
       best variant keeping it reached mean ARI 0.580 (mouse_bladder 0.24 vs 0.76 without it,
       worm_neuron 0.19 vs 0.44). ``impute=True`` computes CIDR's dissimilarity on the
       selected genes (all-gene thresholds and W) and its principal coordinates instead;
       ``flavor="r"`` is the full published method;
    3. takes the leading ``n_pcs`` (default 20) coordinates;
    4. clusters them with Leiden (Traag et al. 2019) at ``resolution`` on the exact
       15-nearest-neighbour graph when k is automatic, or cuts a Ward tree at ``n_clusters``.

    Where dropouts are heavier than in real UMI data, CIDR's imputation can still win: on the
    package's simulator (``datasets.synthetic``) the default measured ARI 0.90-0.95 on 120-150
    cells x 200-300 genes but 0.02 on 200 cells x 1,500 genes (4 groups of 20 markers), where
    ``impute=True`` gave 0.82.

    ``flavor="r"``: CIDR finds per-cell dropout candidates (entries below a cell-specific
    threshold at the first density minimum of its log expression), fits a logistic dropout
    curve to set an imputation weighting threshold W, computes a dissimilarity in which a
    candidate is treated as equal to its partner's value unless one of the two exceeds W,
    embeds the cells by principal coordinates, picks the number of coordinates from the scree
    and clusters them with Ward's method, choosing the number of clusters from the
    Calinski-Harabasz index. It reproduces R ``cidr`` 0.1.5 exactly
    (``shared/docs/ALGORITHMS.md`` §2), except inside zero-density gaps of a cell's KDE, where
    R's choice depends on FFT round-off and ours is the first point of the gap, and where R
    crashes choosing k (then k = b + 2, §2.7).

    With ``flavor="r"``, beyond ~20,000 cells the N x N dissimilarity and its
    eigendecomposition do not fit, and ``mode="landmark"`` (the default there) approximates
    CIDR without them (``impute=True`` has no landmark variant): dissimilarities of
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
        ``"dropout"``: CIDR on dropout-selected genes, without imputation by default (above);
        ``"r"``: the exact port of R ``cidr`` 0.1.5.
    n_top_genes
        ``flavor="dropout"``: genes kept by their M3Drop dropout rank (all genes if fewer);
        ignored by ``flavor="r"`` (use ``genes=`` to restrict it).
    impute
        ``flavor="dropout"``: use CIDR's implicit-imputation dissimilarity on the selected
        genes (N x N, memory checked; ``mode="landmark"`` is not available for it) if True;
        plain Euclidean distances, i.e. PCA of the selected genes (N x ``n_top_genes``
        memory, no N x N matrix), if False. Ignored by ``flavor="r"``, which always imputes.
    resolution
        ``flavor="dropout"`` with automatic k: Leiden resolution (> 0). Ignored otherwise.
    mode
        Applies to ``flavor="r"`` and to ``impute=True`` (which never uses landmarks:
        ``"auto"`` means exact there, ``"landmark"`` raises); irrelevant to the default
        ``flavor="dropout"``, ``impute=False``, which forms no N x N matrix.
        ``"exact"``: the full N x N method (memory ~24 bytes x N², checked first);
        ``"landmark"``: the landmark approximation (memory ~16 bytes x N x ``n_landmarks``
        plus the sparse data, never N x N; no ``store_distances`` or ``correction``);
        ``"auto"``: exact up to 20,000 cells, landmark above.
    n_landmarks
        Landmark cells for ``mode="landmark"`` (between 50 and the number of cells); None
        uses min(1,000, number of cells). Drawn without replacement from ``random_state``.
        ``flavor="r"`` only (ignored otherwise).

    tag_type
        ``"raw"``: integer counts, normalised by library size (R's default);
        ``"cpm"``: values already per million, used as log2(x + 1) (R's ``tagType="cpm"``);
        ``"rpkm"``: non-negative non-integer values (RPKM/FPKM/TPM) normalised like raw counts,
        which is what R does when such values are passed with ``tagType="raw"``.
    zeros_only
        Only zeros are dropout candidates (R's ``zerosOnly=TRUE``); skips the KDE thresholds.
    n_clusters
        Number of clusters; None chooses it: with CIDR's Calinski-Harabasz rule (never 2) for
        ``flavor="r"``, by Leiden for ``flavor="dropout"``. A given k cuts the Ward tree of the
        coordinates in both flavors.
    n_pcs
        Number of principal coordinates to cluster on; None uses CIDR's ``calc_npc`` rule with
        ``flavor="r"`` and 20 with ``flavor="dropout"`` (capped at N - 1 and, without
        imputation, at the number of selected genes - 1).
    step_function
        Step weights (R's default) if True; logistic imputation weights if False. ``False``
        needs ``flavor="r"``.
    correction
        Apply Cailliez's correction to the dissimilarity (O(N³); slow beyond a few thousand
        cells). Needs ``flavor="r"``.
    dtype
        ``flavor="r"`` only: dtype of the dissimilarity kept after the kernel (and stored with
        ``store_distances``): ``"float64"`` (parity with R) or ``"float32"`` (half the size of
        the stored matrix; PCoA input rounded, results differ in the last digits). The kernel
        accumulates and the PCoA runs in float64 either way.
    device
        ``flavor="r"``, exact mode, step weights: where the dissimilarity and the principal
        coordinates are computed. ``"cuda[:N]"``: on the GPU through torch (tiled sparse x
        dense products, :func:`scdropout.models.cidr_torch.dissimilarity_torch`, equal to the
        CPU kernel to about 1e-12 relative; then one full ``torch.linalg.eigh``, so the
        spectrum is always complete); ``"cpu"``: the numba kernel and LAPACK/ARPACK;
        ``"auto"``: CUDA when torch sees a GPU, else CPU. Logistic weights
        (``step_function=False``), landmark mode and ``flavor="dropout"`` always run on the
        CPU. ``uns['cidr']['device_used']`` records where the dissimilarity ran.
    n_jobs
        Threads for the numba kernels; None uses ``settings.n_jobs``.
    progress_bar
        Show progress bars for the threshold and dissimilarity loops.
    store_distances
        Also store the N x N dissimilarity in ``adata.obsp``; needs ``flavor="r"``.
    random_state
        Seed of the Lanczos start vector of the eigen-solver (used when N > 1500), of the
        landmark sample and of Leiden.
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
          MDS coordinates in landmark mode); ``flavor="dropout"``: exactly n_pcs columns;
        - ``adata.obs['cidr_threshold']``: per-cell dropout-candidate threshold (log2 TPM + 1);
        - ``adata.obs['cidr_n_candidates']``: dropout candidates per cell (over the used genes);
        - ``adata.var['cidr_candidate_rate']``: fraction of cells in which a gene is a
          candidate (NaN for genes not used);
        - ``adata.var['cidr_selected']``: boolean, the genes the dissimilarity used (all
          expressed genes of ``genes=`` with ``flavor="r"``, the ``n_top_genes`` best ranked
          among them with ``flavor="dropout"``);
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
          the exact one), and clustering statistics over the landmarks.
          ``flavor="dropout"``: ``eigenvalues`` are the n_pcs leading ones (squared singular
          values of the centred selected columns without imputation), ``variation`` is over
          them, ``ch_index`` is empty, ``n_genes_used`` counts the selected genes and
          ``mode`` is ``"pca"`` (``"exact"`` with ``impute=True``);
        - ``adata.obsp['cidr_distances']``: the dissimilarity, only with ``store_distances``.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or the matrix type is not supported.
    ValueError
        For negative, NaN or (with ``tag_type="raw"``) non-integer values, fewer than 3 cells,
        all-zero cells, ``n_clusters < 2``, bad ``n_pcs``, ``n_top_genes < 1``,
        ``resolution <= 0``, an unknown ``flavor``, ``tag_type``, ``dtype`` or ``device``,
        ``device="cuda"`` without CUDA, an
        option of ``flavor="r"`` only with ``flavor="dropout"`` (``correction``,
        ``store_distances``, ``step_function=False``, ``mode="landmark"`` with ``impute=True``),
        or a key that exists and was not written by scdropout.
    KeyError
        If ``layer`` or ``genes`` is not in ``adata``.
    MemoryError
        If the N x N matrices (exact mode, ``impute=True``), the N x L ones (landmark mode) or
        the dense N x ``n_top_genes`` matrix (``flavor="dropout"``) would exceed
        ``settings.max_memory_gb``.
    RuntimeError
        If the dropout-curve fit (weighting threshold W) does not converge, with
        ``flavor="r"`` or ``impute=True`` (use ``zeros_only=True``). The default flavor
        without imputation does not need W: it warns and records NaN.

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
        ("impute", impute),
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
    device_name = _resolve_device(device)
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
    check_positive_int(n_top_genes, name="n_top_genes", minimum=1)
    if isinstance(resolution, bool) or not isinstance(resolution, int | float | np.number):
        msg = f"`resolution` must be a positive number, got {resolution!r}."
        raise TypeError(msg)
    if not np.isfinite(resolution) or resolution <= 0:
        msg = f"`resolution` must be a positive finite number, got {resolution!r}."
        raise ValueError(msg)
    if flavor == "dropout":
        for flag, bad in (
            ("correction=True", correction),
            ("store_distances=True", store_distances),
            ("step_function=False", not step_function),
            ("mode='landmark'", impute and mode == "landmark"),
        ):
            if bad:
                msg = (
                    f"`{flag}` is not available with `flavor='dropout'`"
                    + (" and `impute=True`" if flag.startswith("mode") else "")
                    + "; use `flavor='r'` (the R port)"
                    + (" or `impute=False` (no N x N matrix)" if flag.startswith("mode") else "")
                    + "."
                )
                raise ValueError(msg)
    if n_pcs is not None and n_pcs >= n_cells:
        msg = f"`n_pcs={n_pcs!r}` must be smaller than the number of cells ({n_cells})."
        raise ValueError(msg)
    if isinstance(random_state, bool) or not isinstance(
        random_state, int | np.integer | np.random.Generator | type(None)
    ):
        msg = f"`random_state` must be an int, a numpy Generator or None, got {random_state!r}."
        raise TypeError(msg)
    if isinstance(random_state, int | np.integer) and random_state < 0:
        msg = f"`random_state` must be a non-negative integer, got {random_state!r}."
        raise ValueError(msg)
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
    mask = gene_mask(adata, genes, what="CIDR")
    check_orientation(adata, what="CIDR")
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
    n_lm = 0
    if flavor == "r" and mode == "auto":  # by the cell count only, never by the settings
        mode = "exact" if n_cells <= AUTO_LANDMARK_CELLS else "landmark"
    if flavor == "dropout":
        # impute=True: the N x N dissimilarity and the Gower matrix (no landmark variant);
        # otherwise only the dense N x n_top_genes selected columns (and their SVD)
        mode = "exact" if impute else "pca"
        n_sel = min(int(n_top_genes), X.shape[1])
        if impute:
            check_memory(
                n_cells**2 * 24,
                what=f"CIDR's {n_cells:,} x {n_cells:,} dissimilarity (`impute=True`)",
                ways_out=(
                    "Use `impute=False` (no N x N matrix), `flavor='r'` with "
                    "`mode='landmark'`, or subsample the cells."
                ),
            )
        else:
            check_memory(
                n_cells * n_sel * 8 * 3,
                what=f"the dense {n_cells:,} x {n_sel:,} matrix of selected genes",
                ways_out="Use a smaller `n_top_genes`, or subsample the cells.",
            )
    elif mode == "exact":
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
        adata,
        _planned_keys(key_added, store_distances=store_distances),
        key_added=key_added,
        owner=OWNER,
    )

    # (2) copy
    adata = adata.copy() if copy else adata

    # (3) compute
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    show = progress_bar and settings.progress_bar
    with thread_limit(n_jobs):
        t0, c0 = time.perf_counter(), time.process_time()
        ld = kc.log_tpm(X, tag_type="cpm" if tag_type == "cpm" else "raw")
        th = kc.dropout_thresholds(
            ld.X,
            ld.library_size,
            fast=tag_type != "cpm",
            zeros_only=zeros_only,
            progress_bar=show,
        )
        timings["thresholds"] = time.perf_counter() - t0
        timings["thresholds_cpu"] = time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()
        per_cell, n_nc, _ = kc.candidate_counts(ld.X, th.thresholds)
        try:
            fit = kc.weighting_threshold(ld.X, th.thresholds)
        except RuntimeError as err:
            if flavor == "r" or impute:
                raise
            # the default flavor without imputation never uses W: record NaN and go on
            warn(
                f"{err} `flavor='dropout'` with `impute=False` does not use W, so the "
                "clustering goes on; `uns['cidr']['w_threshold']` is NaN."
            )
            nan = float("nan")
            rate = (ld.X.shape[0] - n_nc) / ld.X.shape[0]
            fit = kc.WeightingFit(nan, nan, nan, rate, np.full(rate.size, np.nan))
        timings["weighting_threshold"] = time.perf_counter() - t0
        timings["weighting_threshold_cpu"] = time.process_time() - c0
        if flavor == "dropout":
            t0, c0 = time.perf_counter(), time.process_time()
            res = cidr_dropout(
                ld.X,
                th.thresholds,
                fit.threshold,
                counts=X[:, ld.kept_genes],
                n_top_genes=int(n_top_genes),
                impute=bool(impute),
                n_pcs=DROPOUT_N_PCS if n_pcs is None else int(n_pcs),
                cluster_method="leiden" if n_clusters is None else "ward_ch",
                n_clusters=n_clusters,
                resolution=float(resolution),
                random_state=random_state,
                progress_bar=show,
            )
            timings["dropout_flavor"] = time.perf_counter() - t0
            timings["dropout_flavor_cpu"] = time.process_time() - c0
            emb = _Embedding(
                eigenvalues=np.asarray(res.eigenvalues, dtype=np.float64),
                variation=_leading_variation(res.eigenvalues),
                n_pcs=int(res.coordinates.shape[1]),
                complete=False,
                coordinates=res.coordinates,
                labels=res.labels,
                n_clusters=int(res.n_clusters),
                ch_index=np.empty(0, dtype=np.float64),
                r_would_crash=False,
                cailliez_constant=0.0,
                distances=None,
                landmarks=np.empty(0, dtype=np.int64),
                device_used="cpu",
            )
            selected_cols = np.asarray(res.genes_used, dtype=np.int64)
        else:
            emb = _compute_r(
                ld,
                th,
                fit,
                mode=mode,
                n_lm=n_lm,
                n_pcs=n_pcs,
                n_clusters=n_clusters,
                step_function=step_function,
                correction=correction,
                dtype=dtype,
                device=device_name,
                random_state=random_state,
                progress_bar=show,
                timings=timings,
            )
            selected_cols = np.arange(ld.kept_genes.size)

    k = emb.n_clusters
    labels = pd.Categorical(emb.labels.astype(str), categories=[str(i) for i in range(k)])
    rate = np.full(adata.n_vars, np.nan)
    used = np.flatnonzero(mask) if mask is not None else np.arange(adata.n_vars)
    rate[used[ld.kept_genes]] = fit.dropout_rate
    selected = np.zeros(adata.n_vars, dtype=bool)
    selected[used[ld.kept_genes[selected_cols]]] = True
    params = {
        "layer": "None" if layer is None else layer,
        "genes": "None" if genes is None else genes,
        "flavor": flavor,
        "n_top_genes": int(n_top_genes),
        "impute": bool(impute),
        "resolution": float(resolution),
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
        "eigenvalues": np.asarray(emb.eigenvalues, dtype=np.float64),
        "variation": np.asarray(emb.variation, dtype=np.float64),
        "eigenvalues_complete": bool(emb.complete),
        "mode": mode,
        "landmarks": np.asarray(emb.landmarks, dtype=np.int64),
        "n_pcs": int(emb.n_pcs),
        "n_clusters": int(k),
        "ch_index": np.asarray(emb.ch_index, dtype=np.float64),
        "r_would_crash": bool(emb.r_would_crash),
        "cailliez_constant": float(emb.cailliez_constant),
        "n_genes_used": int(selected_cols.size),
        "device_used": emb.device_used,
        "timings": {key: float(v) for key, v in timings.items()},
    }
    results: dict[str, dict[str, Any]] = {
        "obs": {
            key_added: labels,
            f"{key_added}_threshold": th.thresholds.astype(np.float64),
            f"{key_added}_n_candidates": per_cell.astype(np.int64),
        },
        "var": {f"{key_added}_candidate_rate": rate, f"{key_added}_selected": selected},
        "obsm": {f"X_{key_added}": np.ascontiguousarray(emb.coordinates, dtype=np.float64)},
        "uns": {key_added: uns},
    }
    if store_distances:
        results["obsp"] = {f"{key_added}_distances": emb.distances}

    # (4) write, (5) log
    written = write_results(
        adata,
        results,
        key_added=key_added,
        owner=OWNER,
        optional=_planned_keys(key_added, store_distances=True),  # distances of an earlier run
    )
    logger.info(
        "cidr (%s): %d cells, %d genes, %d PCs, %d clusters (%.2fs); wrote %s",
        flavor,
        n_cells,
        selected_cols.size,
        emb.n_pcs,
        k,
        time.perf_counter() - t_start,
        ", ".join(written),
    )
    return adata if copy else None


class _Embedding(NamedTuple):
    """What either flavor hands to the write step."""

    eigenvalues: np.ndarray
    variation: np.ndarray
    n_pcs: int
    complete: bool
    coordinates: np.ndarray
    labels: np.ndarray
    n_clusters: int
    ch_index: np.ndarray
    r_would_crash: bool
    cailliez_constant: float
    distances: np.ndarray | None
    landmarks: np.ndarray
    device_used: str


def _leading_variation(eigenvalues: Any) -> np.ndarray:
    """Positive parts of the leading eigenvalues over their sum (the dropout flavor's scree)."""
    pos = np.maximum(np.asarray(eigenvalues, dtype=np.float64), 0.0)
    total = pos.sum()
    return pos / total if total > 0 else pos


def _compute_r(
    ld: Any,
    th: Any,
    fit: Any,
    *,
    mode: str,
    n_lm: int,
    n_pcs: int | None,
    n_clusters: int | None,
    step_function: bool,
    correction: bool,
    dtype: str,
    device: str,
    random_state: Any,
    progress_bar: bool,
    timings: dict[str, float],
) -> _Embedding:
    """flavor="r": dissimilarity (exact or to landmarks), PCoA and nPC, Ward + CH (R's cidr)."""
    n_cells = ld.X.shape[0]
    t0, c0 = time.perf_counter(), time.process_time()
    c_const = 0.0
    D = None
    landmarks = np.empty(0, dtype=np.int64)
    on_gpu = device != "cpu" and mode == "exact" and step_function
    if device != "cpu" and not on_gpu:
        logger.info(
            "cidr: %s runs on the CPU (numba); `device=%r` applies to exact mode with step weights",
            "landmark mode" if mode != "exact" else "`step_function=False`",
            device,
        )
    if mode == "exact":
        if on_gpu:
            from scdropout.models.cidr_torch import dissimilarity_torch

            D = dissimilarity_torch(
                ld.X, th.thresholds, fit.threshold, device=device, progress_bar=progress_bar
            ).astype(dtype, copy=False)
        else:
            D = kc.dissimilarity(
                ld.X,
                th.thresholds,
                fit.threshold,
                step_function=step_function,
                a=fit.a,
                b=fit.b,
                dtype=np.dtype(dtype),
                progress_bar=progress_bar,
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
            progress_bar=progress_bar,
        )
    timings["dissimilarity"] = time.perf_counter() - t0
    timings["dissimilarity_cpu"] = time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "exact":
        if on_gpu:
            from scdropout.models.cidr_torch import pcoa_torch

            eig = pcoa_torch(D, device=device, n_components=N_COMPS, n_pcs=n_pcs)
        else:
            eig = kc.pcoa_npc(D, n_components=N_COMPS, n_pcs=n_pcs, random_state=random_state)
        complete = eig.complete
        if eig.variation.size == 0:
            msg = "the CIDR dissimilarity has no positive eigenvalue; all cells are identical."
            raise ValueError(msg)
        if eig.n_pcs > eig.variation.size:
            msg = (
                f"`n_pcs={eig.n_pcs!r}` exceeds the {eig.variation.size} positive eigenvalues "
                "of the dissimilarity."
            )
            raise ValueError(msg)
    else:
        eig = kl.landmark_mds(D_nl, landmarks, n_components=N_COMPS, n_pcs=n_pcs)
        del D_nl
        complete = True
    npc = eig.n_pcs
    coords = eig.coordinates
    timings["pcoa"] = time.perf_counter() - t0
    timings["pcoa_cpu"] = time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    if mode == "exact":
        wc = kc.ward_clusters(coords[:, :npc], n_clusters=n_clusters)
        cell_labels = wc.labels
    else:
        wc = kc.ward_clusters(coords[landmarks, :npc], n_clusters=n_clusters)
        cell_labels = _first_appearance(kl.extend_clusters(coords[:, :npc], landmarks, wc.labels))
    timings["clustering"] = time.perf_counter() - t0
    timings["clustering_cpu"] = time.process_time() - c0
    return _Embedding(
        eigenvalues=eig.eigenvalues,
        variation=eig.variation,
        n_pcs=int(npc),
        complete=bool(complete),
        coordinates=coords,
        labels=np.asarray(cell_labels),
        n_clusters=int(wc.n_clusters),
        ch_index=np.asarray(wc.ch_index, dtype=np.float64),
        r_would_crash=bool(wc.r_would_crash),
        cailliez_constant=float(c_const),
        distances=D,
        landmarks=landmarks,
        device_used=device if on_gpu else "cpu",
    )


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
        "var": {f"{key_added}_candidate_rate": None, f"{key_added}_selected": None},
        "obsm": {f"X_{key_added}": None},
        "uns": {key_added: None},
    }
    if store_distances:
        keys["obsp"] = {f"{key_added}_distances": None}
    return keys
