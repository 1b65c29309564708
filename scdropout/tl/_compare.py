"""Compare clusterings of several embeddings under the same preprocessing and clustering rules.

CIDR's paper (Lin, Troup & Ho, Genome Biology 2017) compares its clusters with those of PCA and
t-SNE; :func:`compare_clusterings` runs that comparison (plus the dropout autoencoder) on one
AnnData and returns the table. It is a reporter: it returns a DataFrame, and writes its
embeddings and labels in one block at the end so that ``scdropout.pl`` can draw them.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scdropout import _keys
from scdropout._logging import logger
from scdropout._settings import settings
from scdropout._utils import (
    as_generator,
    check_conflicts,
    check_counts,
    check_memory,
    check_positive_int,
    gene_mask,
    get_matrix,
    missing_key_message,
    resolve_n_jobs,
    seed_repr,
    thread_limit,
    warn,
    write_results,
)
from scdropout.kernels.cidr import calinski_harabasz

from . import _baselines
from ._cidr_flavors import _leiden as _leiden_codes

if TYPE_CHECKING:
    from anndata import AnnData

OWNER = "compare_clusterings"
METHODS = _keys.COMPARE_METHODS
RULES = _keys.COMPARE_RULES
#: fewest cells each method runs on; below it the method is skipped with a warning
MIN_CELLS = {
    "pca": _baselines.MIN_CELLS_PCA,
    "tsne": _baselines.MIN_CELLS_TSNE,
    "cidr": 3,
    "dae": 20,
}
#: Ward's k is chosen by Calinski-Harabasz over 2 .. min(K_MAX, n_cells - 1)
K_MAX = 20
#: methods whose own results record is kept as ``uns[f"{key_added}_{method}"]``
RECORDS = ("cidr", "dae")
#: silhouette widths are averaged over at most this many sampled cells
SILHOUETTE_MAX_CELLS = 5000
# arguments of the wrapped functions that compare_clusterings sets itself
_RESERVED = {
    "pca": {"n_components", "random_state"},
    "tsne": {"n_components", "random_state", "n_jobs"},
    "cidr": {"adata", "layer", "genes", "key_added", "copy"},
    "dae": {"adata", "layer", "genes", "key_added", "copy", "impute", "mc_samples"},
}


# --------------------------------------------------------------------------- validation helpers


def _as_names(value: Any, *, name: str, valid: Sequence[str]) -> tuple[str, ...]:
    """Return ``value`` (a name or a sequence of names) as a tuple, checking each against ``valid``."""
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, Sequence | np.ndarray) or isinstance(items, bytes):
        msg = f"`{name}` must be a name or a sequence of names, got {value!r}."
        raise TypeError(msg)
    out = tuple(items)
    if not out:
        msg = f"`{name}` is empty; choose one or more of {', '.join(map(repr, valid))}."
        raise ValueError(msg)
    for item in out:
        if item not in valid:
            msg = f"`{name}` holds {item!r}, which is not valid; choose from {', '.join(map(repr, valid))}."
            raise ValueError(msg)
    if len(set(out)) != len(out):
        msg = f"`{name}={list(out)!r}` names an entry more than once."
        raise ValueError(msg)
    return out


def _method_targets() -> dict[str, Any]:
    """Return the callable each method's keyword arguments are forwarded to."""
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE

    from ._autoencoder import autoencoder
    from ._cidr import cidr

    return {"pca": PCA, "tsne": TSNE, "cidr": cidr, "dae": autoencoder}


def _check_method_kwargs(method_kwargs: Any) -> dict[str, dict[str, Any]]:
    if method_kwargs is None:
        return {}
    if not isinstance(method_kwargs, Mapping):
        msg = (
            "`method_kwargs` must be a dict of {method: {argument: value}} or None, "
            f"got {type(method_kwargs).__name__}."
        )
        raise TypeError(msg)
    targets = _method_targets()
    out: dict[str, dict[str, Any]] = {}
    for method, kwargs in method_kwargs.items():
        if method not in METHODS:
            msg = (
                f"`method_kwargs` has the key {method!r}, which is not a method; choose from "
                f"{', '.join(map(repr, METHODS))}."
            )
            raise ValueError(msg)
        if not isinstance(kwargs, Mapping):
            msg = f"`method_kwargs[{method!r}]` must be a dict, got {type(kwargs).__name__}."
            raise TypeError(msg)
        accepted = set(inspect.signature(targets[method]).parameters) - _RESERVED[method]
        for arg in kwargs:
            if arg in _RESERVED[method]:
                msg = (
                    f"`method_kwargs[{method!r}]` sets {arg!r}, which `compare_clusterings` "
                    "sets itself; remove it."
                )
                raise ValueError(msg)
            if arg not in accepted:
                msg = (
                    f"`method_kwargs[{method!r}]` has the unknown argument {arg!r}; accepted: "
                    f"{', '.join(sorted(accepted))}."
                )
                raise ValueError(msg)
        out[method] = dict(kwargs)
    return out


def _leiden_missing() -> str | None:
    """Return why the Leiden rule cannot run (a missing package), or None."""
    missing = [m for m in ("leidenalg", "igraph") if importlib.util.find_spec(m) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (`pip install leidenalg igraph`)"
    return None


def _h5ad_safe(value: Any) -> Any:
    """Return ``value`` in a form ``write_h5ad`` stores (None becomes "None")."""
    if value is None:
        return "None"
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _h5ad_safe(v) for k, v in value.items()}
    if isinstance(value, Sequence | np.ndarray):
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf":
            return arr
        return np.asarray([str(v) for v in np.ravel(arr)], dtype=object)
    return repr(value)


# --------------------------------------------------------------------------- measurement


def _rss_bytes() -> float:
    """Resident set size of this process in bytes (Linux ``/proc``, else psutil, else NaN)."""
    try:
        with open("/proc/self/statm", "rb") as fh:  # noqa: PTH123 - hot loop, no Path object
            return float(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import psutil
    except ImportError:
        return float("nan")
    return float(psutil.Process().memory_info().rss)


class _PeakRSS:
    """Sample the resident set size in a background thread; ``peak_mb`` is the rise above start."""

    def __init__(self, interval: float = 0.01) -> None:
        self.interval = interval
        self.start = _rss_bytes()
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes())

    def __enter__(self) -> _PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_bytes())

    @property
    def peak_mb(self) -> float:
        return max(0.0, (self.peak - self.start) / 1024**2)


@contextlib.contextmanager
def _quiet_logger() -> Iterator[None]:
    """Hide the info lines of the wrapped ``tl`` functions (they write into a scratch copy)."""
    old = logger.level
    if logger.getEffectiveLevel() == logging.INFO:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(old)


# --------------------------------------------------------------------------- clustering rules


def _relabel(labels: np.ndarray) -> pd.Categorical:
    """Categorical ``"0".."k-1"``, numbered by decreasing size (ties: first appearance)."""
    uniq, first, inverse, counts = np.unique(
        np.asarray(labels), return_index=True, return_inverse=True, return_counts=True
    )
    order = np.lexsort((first, -counts))
    rank = np.empty(uniq.size, dtype=np.int64)
    rank[order] = np.arange(uniq.size)
    codes = rank[inverse.ravel()]
    cats = [str(i) for i in range(uniq.size)]
    return pd.Categorical.from_codes(codes, categories=cats)


def _ward(emb: np.ndarray, k: int | None) -> tuple[pd.Categorical, int]:
    """Ward clusters of ``emb`` at ``k`` (None: the Calinski-Harabasz maximum over 2..20)."""
    from scipy.cluster.hierarchy import fcluster, linkage

    n = emb.shape[0]
    Z = linkage(emb, method="ward")
    if k is None:
        best, best_score = 2, -np.inf
        for kk in range(2, min(K_MAX, n - 1) + 1):
            uniq, codes = np.unique(fcluster(Z, kk, criterion="maxclust"), return_inverse=True)
            n_found = uniq.size
            if n_found < 2 or n_found > n - 1:
                continue
            score = calinski_harabasz(emb, codes, n_found)  # +inf, not sklearn's 1.0, at 0 spread
            if score > best_score:
                best, best_score = kk, score
        k = best
    labels = _relabel(fcluster(Z, k, criterion="maxclust"))
    return labels, int(k)


def _leiden(
    emb: np.ndarray, *, n_neighbors: int, resolution: float, random_state: int
) -> pd.Categorical:
    """Leiden clusters (igraph flavour) of the exact kNN graph of ``emb``, numbered by size."""
    codes = _leiden_codes(emb, resolution=resolution, n_neighbors=n_neighbors, seed=random_state)
    return _relabel(codes)


def _warm_up(methods: Sequence[str], rules: Sequence[str], seed: int) -> None:
    """Import (and JIT-compile) heavy dependencies so that their one-off cost is not timed."""
    modules = ["scipy.cluster.hierarchy", "sklearn.decomposition", "sklearn.metrics"]
    if "tsne" in methods:
        modules.append("sklearn.manifold")
    if "dae" in methods:
        modules.append("torch")
    for module in modules:
        importlib.import_module(module)
    if "leiden" in rules:
        rng = np.random.default_rng(0)
        _leiden(rng.normal(size=(12, 2)), n_neighbors=5, resolution=1.0, random_state=seed)


# --------------------------------------------------------------------------- metrics


def _silhouette(emb: np.ndarray, labels: pd.Categorical, seed: int) -> float:
    from sklearn.metrics import silhouette_score

    n = emb.shape[0]
    k = np.unique(labels.codes).size
    if not 2 <= k <= n - 1:
        return float("nan")
    sample = SILHOUETTE_MAX_CELLS if n > SILHOUETTE_MAX_CELLS else None
    return float(silhouette_score(emb, labels.codes, sample_size=sample, random_state=seed))


def _label_scores(
    labels: pd.Categorical, truth: np.ndarray | None, known: np.ndarray | None
) -> tuple[float, float]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    if truth is None or known is None:
        return float("nan"), float("nan")
    pred = np.asarray(labels.codes)[known]
    return (
        float(adjusted_rand_score(truth, pred)),
        float(normalized_mutual_info_score(truth, pred)),
    )


# --------------------------------------------------------------------------- the reporter


def compare_clusterings(
    adata: AnnData,
    *,
    methods: Sequence[str] = ("pca", "tsne", "cidr", "dae"),
    labels_key: str | None = None,
    n_clusters: int | None = None,
    rules: Sequence[str] = ("ward", "leiden"),
    layer: str | None = None,
    genes: str | None = None,
    n_pcs: int = 50,
    method_kwargs: Mapping[str, Mapping[str, Any]] | None = None,
    n_neighbors: int = 15,
    resolution: float = 1.0,
    random_state: int | np.random.Generator | None = 0,
    n_jobs: int | None = None,
    progress_bar: bool = True,
    key_added: str = _keys.COMPARE,
) -> pd.DataFrame:
    """Cluster cells on several embeddings with the same rules and compare the clusterings.

    The comparison of CIDR's paper (Lin, Troup & Ho, Genome Biology 2017, Fig. 2), extended to
    the dropout autoencoder. Every method starts from the same raw counts (``layer``,
    restricted to ``genes``):

    - ``"pca"``: ``log1p(counts / library * 1e4)``, each gene scaled to unit variance and
      clipped at ±10, then PCA with ``n_pcs`` components (at most ``n_cells - 1`` and the
      number of genes);
    - ``"tsne"``: 2-D t-SNE (scikit-learn, Barnes-Hut, PCA initialisation) of those PCs, with
      the perplexity lowered to ``(n_cells - 1) / 3`` on small data;
    - ``"cidr"``: the principal coordinates :func:`scdropout.tl.cidr` clusters on (its
      default flavor; the first ``uns['cidr']['n_pcs']`` columns);
    - ``"dae"``: the latent space of :func:`scdropout.tl.autoencoder`.

    CIDR and the autoencoder run on a scratch copy (``copy=True``); nothing is written into
    ``adata`` until every method has run. Each embedding is then clustered by every rule:

    - ``"ward"``: Ward's hierarchical clustering cut at k clusters, where k is
      ``n_clusters``, else the number of categories of ``labels_key``, else the k in
      2 .. min(20, n_cells - 1) with the largest Calinski-Harabasz index on that embedding;
    - ``"leiden"``: scanpy's kNN graph (``n_neighbors``) of the embedding, then
      ``sc.tl.leiden(flavor="igraph", n_iterations=2, directed=False)`` at ``resolution``.
      Skipped with a warning when ``leidenalg``/``igraph`` are not installed.

    A method with too few cells (PCA < 3, t-SNE < 5, CIDR < 3, autoencoder < 20) or whose
    computation raises ``RuntimeError`` (e.g. a NaN training loss) is skipped with a warning
    and a ``"skipped: ..."`` row.

    Parameters
    ----------
    adata
        Cells x genes AnnData with raw integer counts in ``X`` or ``layer``.
    methods
        Embeddings to compare, any of ``"pca"``, ``"tsne"``, ``"cidr"`` and ``"dae"`` (see
        above), in the order of the table's rows.
    labels_key
        ``adata.obs`` column with known labels (e.g. cell types); ARI and NMI are computed
        against it over the cells whose label is not missing. None: no ARI/NMI (NaN).
    n_clusters
        Number of Ward clusters for every method; None takes the number of categories of
        ``labels_key`` or, without labels, the Calinski-Harabasz choice per embedding.
        Leiden's number of clusters follows from ``resolution``.
    rules
        Clustering rules applied to every embedding: ``"ward"`` and/or ``"leiden"``.
    layer
        Layer with the raw counts; None uses ``adata.X``.
    genes
        Name of a boolean ``adata.var`` column (e.g. ``"dropout_genes_selected"`` from
        :func:`scdropout.pp.dropout_genes`) restricting the genes of every method; None uses
        all genes.
    n_pcs
        Number of principal components of the PCA baseline (also the input of t-SNE).
    method_kwargs
        Extra arguments per method: ``{"cidr": {...}}`` goes to :func:`scdropout.tl.cidr`,
        ``{"dae": {"max_epochs": 30}}`` to :func:`scdropout.tl.autoencoder`, ``"pca"`` to
        :class:`sklearn.decomposition.PCA` and ``"tsne"`` to :class:`sklearn.manifold.TSNE`.
        Arguments this function sets itself (``layer``, ``genes``, ``key_added``, ``copy``,
        ``n_components``, ...) are refused.
    n_neighbors
        Neighbours of the kNN graph of the Leiden rule (at most ``n_cells - 1``).
    resolution
        Resolution of the Leiden rule.
    random_state
        Seed of every random step. An int is passed as is to PCA, t-SNE, CIDR, the
        autoencoder, the kNN graph and Leiden (so ``"cidr"`` matches ``sd.tl.cidr`` with the
        same seed); a Generator (or None) first draws one int seed.
    n_jobs
        Threads for numba kernels, BLAS/OpenMP and t-SNE; None uses ``settings.n_jobs``.
    progress_bar
        Show one progress bar over the methods (also off with ``settings.progress_bar``).
    key_added
        Prefix of every key written (see Returns).

    Returns
    -------
    pandas.DataFrame
        A copy of the table, one row per method (index ``"method"``), columns: ``status``
        (``"ok"`` or ``"skipped: <reason>"``); for each rule r, ``n_clusters_<r>``
        (nullable int), ``ari_<r>`` and ``nmi_<r>`` (against ``labels_key``, NaN without
        it), ``silhouette_<r>`` (Euclidean, in the method's own space, on at most 5,000
        sampled cells); ``mean_agreement`` (mean ARI between this method's clusters and each
        other method's, over the rules, useful without labels); ``seconds`` (wall time of the
        embedding and all clusterings, t-SNE's including the PCA it starts from; one-off
        imports and JIT compilation are done before timing); ``peak_memory_mb`` (rise of the process's resident memory above its level
        at the method's start, sampled every 10 ms in a thread: it counts NumPy, numba and
        torch allocations, but misses spikes shorter than the interval and memory served
        from an allocator's free pool).

        Written into ``adata`` (with ``key_added="compare"``), all at the end:

        - ``adata.obsm['X_compare_<m>']``: float64 embedding of each method m that ran
          (t-SNE: 2 columns);
        - ``adata.obs['compare_<m>_<r>']``: categorical clusters ``"0"`` .. ``"k-1"``
          (numbered by decreasing size) of method m under rule r;
        - ``adata.uns['compare']``: ``params`` (every argument, h5ad-safe), ``table``
          (``index``, ``columns`` and ``data``: the table as arrays; read it with
          :func:`scdropout.get.comparison`), ``agreement`` (per rule that ran, the
          methods x methods ARI matrix in the order of ``methods``, NaN for skipped
          methods), ``skipped`` ({method: reason}), ``methods``, ``rules`` and
          ``rules_skipped`` ({rule: reason});
        - ``adata.uns['compare_cidr']`` and ``adata.uns['compare_dae']``: the record
          ``tl.cidr`` / ``tl.autoencoder`` stored for its run (eigenvalues and n_pcs; params,
          loss history and gate), when that method ran, so that ``pl.cidr_eigenvalues`` and
          ``pl.autoencoder_history`` can draw them (``key="compare_cidr"``, ``"compare_dae"``).

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData, the matrix type is not supported or an
        argument has the wrong type.
    ValueError
        For an unknown method or rule (the message lists the valid ones), values that are not
        raw counts, a cell without counts in the selected genes, ``n_clusters < 2`` or
        ``>= n_cells``, labels with fewer than 2 categories (or as many as cells) when they
        set k, a ``genes`` column that is not boolean or selects fewer than 2 genes, an
        argument in ``method_kwargs`` that is unknown or set by this function, or a key that
        exists and was not written by this function.
    KeyError
        If ``layer``, ``labels_key`` or ``genes`` is not in ``adata``.
    MemoryError
        If the dense scaled matrix of the PCA baseline or Ward's distance matrix would exceed
        ``settings.max_memory_gb``.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=90, n_genes=100)
    >>> table = sd.tl.compare_clusterings(
    ...     adata, methods=("pca", "cidr"), labels_key="group", rules="ward", progress_bar=False
    ... )
    >>> int(table.loc["pca", "n_clusters_ward"])
    3
    >>> bool(table.loc["pca", "ari_ward"] > 0.5)
    True
    """
    t_all = time.perf_counter()
    # (1) validate every argument and the data, mutating nothing
    X = get_matrix(adata, layer)  # also checks that adata is an in-memory AnnData
    mlist = _as_names(methods, name="methods", valid=METHODS)
    rlist = _as_names(rules, name="rules", valid=RULES)
    if not isinstance(key_added, str) or not key_added:
        msg = f"`key_added` must be a non-empty string, got {key_added!r}."
        raise TypeError(msg)
    if not isinstance(progress_bar, bool | np.bool_):
        msg = f"`progress_bar` must be True or False, got {progress_bar!r}."
        raise TypeError(msg)
    n_cells = adata.n_obs
    truth: np.ndarray | None = None
    known: np.ndarray | None = None
    n_labels = 0
    if labels_key is not None:
        if not isinstance(labels_key, str):
            msg = f"`labels_key` must be an `adata.obs` column name or None, got {labels_key!r}."
            raise TypeError(msg)
        if labels_key not in adata.obs.columns:
            raise KeyError(missing_key_message("labels_key", labels_key, adata.obs.columns, "obs"))
        col = adata.obs[labels_key]
        known = col.notna().to_numpy()
        if known.sum() < 2:  # sklearn scores 0 or 1 labelled cells as a perfect 1.0
            msg = (
                f"`adata.obs[{labels_key!r}]` labels {int(known.sum())} of {n_cells} cells; "
                "ARI and NMI need at least 2 labelled cells. Pass another `labels_key`, or none."
            )
            raise ValueError(msg)
        codes, uniq = pd.factorize(col[known].astype(str))
        truth, n_labels = np.asarray(codes), len(uniq)
    check_positive_int(n_clusters, name="n_clusters", minimum=2, allow_none=True)
    if n_clusters is not None and n_clusters >= n_cells:
        msg = f"`n_clusters={n_clusters!r}` must be smaller than the number of cells ({n_cells})."
        raise ValueError(msg)
    ward_k = n_clusters
    if ward_k is None and labels_key is not None:
        if n_labels < 2 or n_labels >= n_cells:
            msg = (
                f"`adata.obs[{labels_key!r}]` has {n_labels} categories, which cannot set the "
                f"number of Ward clusters for {n_cells} cells; pass `n_clusters`."
            )
            raise ValueError(msg)
        ward_k = n_labels
    check_positive_int(n_pcs, name="n_pcs", minimum=1)
    check_positive_int(n_neighbors, name="n_neighbors", minimum=2)
    if (
        isinstance(resolution, bool)
        or not isinstance(resolution, int | float | np.number)
        or not (np.isfinite(resolution) and resolution > 0)
    ):
        msg = f"`resolution` must be a positive finite number, got {resolution!r}."
        raise ValueError(msg)
    kwargs_by_method = _check_method_kwargs(method_kwargs)
    rng = as_generator(random_state)  # validates the type and sign
    if isinstance(random_state, int | np.integer) and not isinstance(random_state, bool):
        seed = int(random_state)
    else:
        seed = int(rng.integers(0, 2**31 - 1))
    n_threads = resolve_n_jobs(n_jobs)
    mask = gene_mask(adata, genes, what="the comparison")
    name = "`adata.X`" if layer is None else f"`layer={layer!r}`"
    check_counts(X, name=name, obs_names=adata.obs_names, var_names=adata.var_names)
    Xs = X[:, mask] if mask is not None else X
    lib = np.asarray(Xs.sum(axis=1)).ravel()
    if np.any(lib <= 0):
        first = int(np.flatnonzero(lib <= 0)[0])
        msg = (
            f"cell {adata.obs_names[first]!r} has no counts"
            f"{' in the selected genes' if mask is not None else ''} "
            f"({int(np.sum(lib <= 0))} such cells); remove empty cells first "
            "(`sc.pp.filter_cells(adata, min_counts=1)`)."
        )
        raise ValueError(msg)
    if "ward" in rlist:
        check_memory(
            4.0 * n_cells * (n_cells - 1),
            what=f"Ward's condensed {n_cells:,}-cell distance matrix",
            ways_out="Subsample the cells or use `rules=('leiden',)`.",
        )
    planned = _planned_keys(key_added, mlist, rlist)
    check_conflicts(adata, planned, key_added=key_added, owner=OWNER)
    leiden_reason = _leiden_missing() if "leiden" in rlist else None

    # (3) compute into locals (nothing is written until every method has run)
    import anndata as ad
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    from ._autoencoder import autoencoder
    from ._cidr import cidr

    run_rules = [r for r in rlist if not (r == "leiden" and leiden_reason)]
    rules_skipped = {"leiden": leiden_reason} if leiden_reason else {}
    if leiden_reason:
        warn(f"compare_clusterings: the 'leiden' rule is skipped: {leiden_reason}.")
    slim = ad.AnnData(
        X=Xs,
        obs=pd.DataFrame(index=adata.obs_names.copy()),
        var=pd.DataFrame(index=adata.var_names[mask] if mask is not None else adata.var_names),
    )
    embeddings: dict[str, np.ndarray] = {}
    clusters: dict[str, dict[str, pd.Categorical]] = {}
    rows: dict[str, dict[str, Any]] = {}
    skipped: dict[str, str] = {}
    pca_cache: dict[str, Any] = {}
    records: dict[str, Any] = {}  # tl.cidr's / tl.autoencoder's own uns record, by method
    show = bool(progress_bar) and settings.progress_bar

    def embed(method: str) -> np.ndarray:
        kw = kwargs_by_method.get(method, {})
        if method in ("pca", "tsne"):
            if "pcs" not in pca_cache:
                t0 = time.perf_counter()
                with _PeakRSS() as mem:
                    pcs, _ = _baselines.pca_embedding(
                        Xs, n_pcs=n_pcs, random_state=seed, **kwargs_by_method.get("pca", {})
                    )
                pca_cache.update(
                    pcs=pcs, seconds=time.perf_counter() - t0, mb=mem.peak_mb, owner=method
                )
            if method == "pca":
                return pca_cache["pcs"]
            return _baselines.tsne_embedding(
                pca_cache["pcs"], random_state=seed, n_jobs=n_threads, **kw
            )
        opts = {"random_state": seed, "progress_bar": False, **kw}
        with _quiet_logger():
            if method == "cidr":
                res = cidr(slim, copy=True, **{"n_jobs": n_jobs, **opts})
                records[method] = res.uns[_keys.CIDR]
                npc = int(res.uns[_keys.CIDR]["n_pcs"])
                return np.asarray(res.obsm[f"X_{_keys.CIDR}"][:, :npc], dtype=np.float64)
            res = autoencoder(slim, copy=True, **opts)
            records[method] = res.uns[_keys.DAE]
        return np.asarray(res.obsm[f"X_{_keys.DAE}"], dtype=np.float64)

    with thread_limit(n_jobs), threadpool_limits(limits=n_threads):
        _warm_up([m for m in mlist if n_cells >= MIN_CELLS[m]], run_rules, seed)
        bar = tqdm(mlist, desc="compare", unit="method", disable=not show)
        for method in bar:
            bar.set_postfix_str(method)
            if n_cells < MIN_CELLS[method]:
                reason = f"too few cells ({n_cells} < {MIN_CELLS[method]})"
                skipped[method] = reason
                warn(f"compare_clusterings: {method!r} is skipped: {reason}.")
                continue
            t0 = time.perf_counter()
            with _PeakRSS() as mem:
                try:
                    emb = embed(method)
                except RuntimeError as err:
                    reason = f"{type(err).__name__}: {err}"
                    skipped[method] = reason
                    warn(f"compare_clusterings: {method!r} is skipped: {reason}")
                    continue
                labs: dict[str, pd.Categorical] = {}
                row: dict[str, Any] = {}
                for rule in run_rules:
                    if rule == "ward":
                        labs[rule], _ = _ward(emb, ward_k)
                    else:
                        labs[rule] = _leiden(
                            emb, n_neighbors=n_neighbors, resolution=resolution, random_state=seed
                        )
                    ari, nmi = _label_scores(labs[rule], truth, known)
                    row[f"n_clusters_{rule}"] = len(labs[rule].categories)
                    row[f"ari_{rule}"] = ari
                    row[f"nmi_{rule}"] = nmi
                    row[f"silhouette_{rule}"] = _silhouette(emb, labs[rule], seed)
            seconds = time.perf_counter() - t0
            peak = mem.peak_mb
            if method in ("pca", "tsne") and pca_cache["owner"] != method:
                # the PCA both share ran (and was timed) in the other row: count it here too
                seconds += pca_cache["seconds"]
                peak = max(peak, pca_cache["mb"])
            row["seconds"] = seconds
            row["peak_memory_mb"] = peak
            embeddings[method], clusters[method], rows[method] = emb, labs, row
            logger.info(
                "compare_clusterings: %s, %s (%.2fs)",
                method,
                ", ".join(
                    f"{r}: k={row[f'n_clusters_{r}']}"
                    + (f" ARI={row[f'ari_{r}']:.3f}" if truth is not None else "")
                    for r in run_rules
                )
                or "embedded",
                seconds,
            )
        bar.close()

    table, agreement = _build_table(mlist, rlist, run_rules, rows, clusters, skipped)
    params = {
        "methods": np.asarray(mlist, dtype=object),
        "labels_key": _h5ad_safe(labels_key),
        "n_clusters": _h5ad_safe(n_clusters),
        "rules": np.asarray(rlist, dtype=object),
        "layer": _h5ad_safe(layer),
        "genes": _h5ad_safe(genes),
        "n_pcs": int(n_pcs),
        "method_kwargs": _h5ad_safe(kwargs_by_method) if method_kwargs is not None else "None",
        "n_neighbors": int(n_neighbors),
        "resolution": float(resolution),
        "random_state": seed_repr(random_state),
        "seed_used": int(seed),
        "n_jobs": _h5ad_safe(n_jobs),
        "progress_bar": bool(progress_bar),
        "key_added": key_added,
        "ward_k": _h5ad_safe(ward_k),
    }
    uns = {
        "params": params,
        "table": _table_to_uns(table),
        "agreement": agreement,
        "skipped": dict(skipped),
        "methods": np.asarray(mlist, dtype=object),
        "rules": np.asarray(rlist, dtype=object),
        "rules_skipped": dict(rules_skipped),
    }
    results: dict[str, dict[str, Any]] = {
        "obsm": {f"X_{key_added}_{m}": emb for m, emb in embeddings.items()},
        "obs": {
            f"{key_added}_{m}_{r}": pd.Series(labs[r], index=adata.obs_names)
            for m, labs in clusters.items()
            for r in labs
        },
        "uns": {
            key_added: uns,
            **{f"{key_added}_{m}": records[m] for m in embeddings if m in records},
        },
    }

    # (4) write everything in one block, (5) log
    written = write_results(
        adata,
        results,
        key_added=key_added,
        owner=OWNER,
        optional=_planned_keys(key_added, METHODS, RULES),  # an earlier run's other methods
    )
    logger.info(
        "compare_clusterings: %d methods (%d skipped) on %d cells (%.2fs); wrote %s",
        len(mlist),
        len(skipped),
        n_cells,
        time.perf_counter() - t_all,
        ", ".join(written),
    )
    return table.copy(deep=True)


def _planned_keys(key: str, methods: Sequence[str], rules: Sequence[str]) -> dict[str, list[str]]:
    return {
        "obsm": [f"X_{key}_{m}" for m in methods],
        "obs": [f"{key}_{m}_{r}" for m in methods for r in rules],
        "uns": [key, *(f"{key}_{m}" for m in methods if m in RECORDS)],
    }


def _columns(rules: Sequence[str]) -> list[str]:
    cols = ["status"]
    for metric in ("n_clusters", "ari", "nmi", "silhouette"):
        cols += [f"{metric}_{r}" for r in rules]
    return [*cols, "mean_agreement", "seconds", "peak_memory_mb"]


def _build_table(
    methods: Sequence[str],
    rules: Sequence[str],
    run_rules: Sequence[str],
    rows: Mapping[str, Mapping[str, Any]],
    clusters: Mapping[str, Mapping[str, pd.Categorical]],
    skipped: Mapping[str, str],
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """Assemble the table and the per-rule agreement (pairwise ARI) matrices."""
    from sklearn.metrics import adjusted_rand_score

    n = len(methods)
    agreement: dict[str, np.ndarray] = {}
    for rule in run_rules:
        mat = np.full((n, n), np.nan)
        for i, a in enumerate(methods):
            for j, b in enumerate(methods):
                if a in clusters and b in clusters:
                    mat[i, j] = (
                        1.0
                        if i == j
                        else adjusted_rand_score(clusters[a][rule].codes, clusters[b][rule].codes)
                    )
        agreement[rule] = mat
    cols = _columns(rules)
    table = pd.DataFrame(index=pd.Index(list(methods), name="method"), columns=cols)
    table["status"] = ["ok" if m in rows else f"skipped: {skipped[m]}" for m in methods]
    for c in cols[1:]:
        table[c] = np.nan
    for m, row in rows.items():
        for c, v in row.items():
            table.loc[m, c] = v
    for i, m in enumerate(methods):
        if m not in rows:
            continue
        others = [
            agreement[r][i, j]
            for r in run_rules
            for j in range(n)
            if j != i and methods[j] in rows
        ]
        table.loc[m, "mean_agreement"] = float(np.mean(others)) if others else np.nan
    for c in cols[1:]:
        table[c] = table[c].astype("Int64" if c.startswith("n_clusters_") else np.float64)
    table["status"] = table["status"].astype(object)
    return table, agreement


def _table_to_uns(table: pd.DataFrame) -> dict[str, Any]:
    """Return the table as h5ad-safe arrays (nullable ints become float with NaN)."""
    data: dict[str, np.ndarray] = {}
    for c in table.columns:
        col = table[c]
        if c == "status":
            data[c] = np.asarray(col.astype(str).to_numpy(), dtype=object)
        else:
            data[c] = col.astype(np.float64).to_numpy(na_value=np.nan)
    return {
        "index": np.asarray(table.index.astype(str), dtype=object),
        "columns": np.asarray(list(table.columns), dtype=object),
        "data": data,
    }
