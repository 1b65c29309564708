"""Held-out, gated imputation: the model's mean stacked with latent-neighbour smoothing.

An autoencoder's decoder is low rank: whatever varies in the latent space comes out as
coherent programmes over many genes. On counts with no gene-gene structure at all (each gene
permuted across cells), the imputed means still correlate for about half of the pairs of
abundant genes: the false-signal failure that Andrews & Hemberg (2018) found for several
published imputation methods (kNN smoothing too). The default imputation of gene g in cell c is

    μ̃_cg = w_g · (μ_cg + M_cg + S_cg) / 3 + (1 − w_g) · p̄_g · L_c

- ``μ`` the model's mean; ``M_cg = L_c · mean_j μ_jg / L_j`` and ``S_cg = L_c · mean_j x_jg / L_j``
  over the cell's ``k = 15`` nearest neighbours j in the latent space (the cell itself
  excluded): the model's means and the observed counts of similar cells, as shares of their
  libraries. Averaging the three estimators of the same mean (a stack with equal weights)
  reduces the variance of each; ``L_c`` is the cell's library size.
- ``p̄_g · L_c`` the null model, a constant share of the library (no cell-to-cell signal
  beyond library size): ``p̄_g`` is the model's mean share μ/L of gene g over all cells.
- ``w_g ∈ {0, 1}`` a gate fitted on evidence the network never trained on: the validation
  cells. Their entries are split into ``n_folds`` random folds; each fold in turn is set to 0
  in the encoder input (as count masking does in training) and predicted from the rest of
  the cell: μ from the network, M and S from the neighbours of the cell's latent position
  computed with the fold hidden. Per gene, the gain is the NB (Poisson) log-likelihood of
  the hidden counts under the stacked prediction minus that under the best constant share
  ``s · p̄'_g · L`` (``s`` on a grid, ``p̄'_g`` the mean hidden-entry share over those cells).
  ``w_g = 1`` when ``gain_g + PRIOR · mean_g(gain) > 0``: an empirical-Bayes rule that adds
  to each gene's evidence ``PRIOR`` = 20 genes' worth of the average evidence. A single gene
  of a small validation set (6-27 cells on the plate data sets) is too noisy to pass a
  per-gene test (the Bonferroni likelihood-ratio test used before kept 80 of 2,000 genes on
  cellbench_celseq2); pooled over genes, the evidence is clear. On permuted counts the stacked
  prediction is worse than the null for the average gene (the network and the neighbours fit
  noise), so the rule gives ``w_g = 0`` for nearly every gene, and a gene imputed as
  ``p̄_g · L_c`` carries no signal beyond library size. A partial weight ``0 < w_g < 1`` is
  not used: Spearman correlation is invariant to it, so only exact zeros remove false
  signals, and partial shrinkage towards the null lowered the held-out correlation.

The point estimate of a kept gene is chosen once per data set among two candidates, by held-out
error (``Shrinkage.estimate``):

- ``"arithmetic"``: the stack ``(μ + M + S)/3`` above, with the null ``p̄_g · L_c``; an
  estimate of the mean count.
- ``"geometric"``: ``G_cg = L_c · (expm1(mean_j log1p(x_jg / L_j · s)) / s)``, the
  neighbour average of the counts taken in log space (a geometric mean of shares, offset by one
  count per ``s`` library counts), with the null ``ĝ_g · L_c``, ``ĝ_g`` the same log-space
  average of gene g's shares over all cells (still a constant share: no signal beyond library
  size). This is a typical value, below the mean for skewed counts: on read counts from plates
  (deng, pollen), whose few very large counts pull the mean up, it is much closer to most
  counts (median absolute error) than the mean is; on UMI counts the arithmetic stack is
  closer. The scale ``s`` is one of two candidates (:func:`geo_scales`): 10⁴ (CP10k) or the
  median library size (one count in a typical cell). On deep read-count libraries (pollen:
  ~5·10⁵ counts per cell) an offset of one count per 10⁴ adds ~50 counts, and the average is
  then nearly arithmetic for the many low counts.

The geometric estimate has a gate of its own, ``w'_g``, with the same empirical-Bayes rule
on a gain suited to a log-space average: the squared error of ``log1p(share · s)`` of the
hidden counts under the null ``ĝ_g`` minus that under ``G``. It is fitted on fold-hidden entries
of ALL cells (at most ``MAX_CELLS``), not only the validation cells: ``G`` never uses the
network's mean, and each cell's neighbours are found from its latent position with the fold
hidden, so the hidden count reaches the prediction only through the encoder's weights. On the
smallest data sets this is what gives the gate power: pollen (64 cells, 6 validation cells)
kept no gene with the arithmetic gate and keeps 31 of 2,000 with this one (held-out Pearson
0.293 -> 0.306). On permuted counts it keeps none.

The choice uses the same fold-hidden entries of the validation cells as the arithmetic gate:
each candidate (gated with its fitted weights; the null share of the geometric one from the
training cells only) predicts the hidden NON-ZERO counts. The geometric scale with the smaller median
absolute error is taken (10⁴ on ties), then the estimate with the smaller one (the arithmetic
one on ties). The network, the neighbours and the null shares never saw those entries. The
median absolute error and the Pearson correlation of log1p values of every candidate are kept
in ``Shrinkage.selection``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from scipy import sparse

from scdropout._settings import settings
from scdropout.kernels.smooth import fold_neighbor_means

from ._data import CountDataset, batch_loader

SCALE_SIZE = 26
N_FOLDS = 10
N_NEIGHBORS = 15
PRIOR = 20.0
BATCH = 512
MAX_CELLS = 2000
KNN_CHUNK = 1024
KNN_ELEMENTS = 2**24  # distances per chunk (64 MB in float32)
KNN_MARGIN = 16  # float32 candidates beyond k re-ranked in float64
SMOOTH_CHUNK = 4096
#: cells from which a latent neighbour search over all cells shows a progress bar
KNN_PROGRESS_CELLS = 50_000
GEO_SCALE = 1e4  # the geometric estimate's first offset: shares averaged in log1p(share · 1e4)
ESTIMATES = ("arithmetic", "geometric")


@dataclass
class Shrinkage:
    """Fitted per-gene gate of the imputation (see the module docstring).

    Attributes
    ----------
    weights
        ``w_g`` per modelled gene: 1 keeps the stacked prediction, 0 the null ``b_g · L``.
    baseline
        ``b_g``: the share of the library that replaces ``(1 − w_g)`` of the prediction.
    gain
        Held-out log-likelihood gain of the stacked prediction over the best constant share
        per gene.
    n_cells
        Number of held-out cells the gate was fitted on.
    in_sample
        True when there were no validation cells and the gate was fitted on the training
        cells (biased towards 1).
    n_neighbors
        Latent neighbours of the stacked prediction; 0 for a model saved before stacking
        existed (its weights then apply to the model's mean alone: ``w·μ + b·L``).
    estimate
        The point estimate chosen on held-out entries, ``"arithmetic"`` or ``"geometric"``
        (``"arithmetic"`` for a model saved before the choice existed).
    geo_baseline
        ``(1 − w_g) · ĝ_g``: the null share of the geometric estimate; None for a model saved
        before the geometric estimate existed.
    selection
        Per candidate estimate, ``[median absolute error, Pearson r of log1p]`` on the
        fold-hidden non-zero entries of the held-out cells (empty for older models):
        ``"arithmetic"``, ``"geometric"`` (at ``geo_scale``) and ``"geometric@S"`` for each
        candidate scale S.
    geo_scale
        ``s`` of the geometric estimate, which averages ``log1p(share · s)``: the candidate
        (``GEO_SCALE`` or the median library size) with the smaller held-out median absolute
        error; ``GEO_SCALE`` for models saved before the choice existed.
    geo_weights
        ``w'_g``, the geometric estimate's own gate (at ``geo_scale``); None for models saved
        before it existed, whose geometric estimate uses ``weights``.
    geo_gain
        Its per-gene gain: squared error of ``log1p(share · geo_scale)`` of the hidden counts
        under the null minus that under ``G``, summed over ``geo_n_cells`` cells.
    geo_n_cells
        Number of cells (validation and training) ``geo_weights`` was fitted on.
    """

    weights: np.ndarray
    baseline: np.ndarray
    gain: np.ndarray
    n_cells: int
    in_sample: bool = False
    n_neighbors: int = 0
    estimate: str = "arithmetic"
    geo_baseline: np.ndarray | None = None
    selection: dict[str, list[float]] = field(default_factory=dict)
    geo_scale: float = GEO_SCALE
    geo_weights: np.ndarray | None = None
    geo_gain: np.ndarray | None = None
    geo_n_cells: int = 0

    def weights_for(self, estimate: str) -> np.ndarray:
        """Return the gate of ``estimate`` (``"arithmetic"`` or ``"geometric"``)."""
        if estimate == "geometric" and self.geo_weights is not None:
            return self.geo_weights
        return self.weights

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe record (float64 values round-trip exactly)."""
        return {
            "weights": [float(v) for v in self.weights],
            "baseline": [float(v) for v in self.baseline],
            "gain": [float(v) for v in self.gain],
            "n_cells": int(self.n_cells),
            "in_sample": bool(self.in_sample),
            "n_neighbors": int(self.n_neighbors),
            "estimate": str(self.estimate),
            "geo_baseline": _floats(self.geo_baseline),
            "selection": {k: [float(v) for v in m] for k, m in self.selection.items()},
            "geo_scale": float(self.geo_scale),
            "geo_weights": _floats(self.geo_weights),
            "geo_gain": _floats(self.geo_gain),
            "geo_n_cells": int(self.geo_n_cells),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shrinkage:
        """Inverse of :meth:`to_dict`."""
        return cls(
            weights=np.asarray(d["weights"], dtype=np.float64),
            baseline=np.asarray(d["baseline"], dtype=np.float64),
            gain=np.asarray(d["gain"], dtype=np.float64),
            n_cells=int(d["n_cells"]),
            in_sample=bool(d.get("in_sample", False)),
            n_neighbors=int(d.get("n_neighbors", 0)),
            estimate=str(d.get("estimate", "arithmetic")),
            geo_baseline=_array(d.get("geo_baseline")),
            selection={k: [float(v) for v in m] for k, m in d.get("selection", {}).items()},
            geo_scale=float(d.get("geo_scale", GEO_SCALE)),
            geo_weights=_array(d.get("geo_weights")),
            geo_gain=_array(d.get("geo_gain")),
            geo_n_cells=int(d.get("geo_n_cells", 0)),
        )


def _floats(a: np.ndarray | None) -> list[float] | None:
    return None if a is None else [float(v) for v in a]


def _array(values: list[float] | None) -> np.ndarray | None:
    return None if values is None else np.asarray(values, dtype=np.float64)


def _loglik_terms(x: np.ndarray, mu: np.ndarray, theta: np.ndarray | None) -> np.ndarray:
    """Return the μ-dependent part of the NB (Poisson: ``theta=None``) log-likelihood per entry."""
    mu = np.maximum(mu, 1e-6)
    if theta is None:
        return x * np.log(mu) - mu
    return x * np.log(mu) - (x + theta) * np.log(mu + theta)


def shrink_mean(
    mu: torch.Tensor,
    library: torch.Tensor,
    weights: torch.Tensor,
    baseline: torch.Tensor,
    smooth: torch.Tensor | None = None,
    *,
    geometric: bool = False,
) -> torch.Tensor:
    """Return ``w·(μ + L·smooth)/3 + b·L``, ``w·L·smooth + b·L`` (geometric) or ``w·μ + b·L``.

    ``smooth`` holds ``(M + S)/L``, or ``G/L`` with ``geometric``, per cell and gene
    (:func:`neighbor_shares`); without it the weights apply to ``μ``. Weights and baseline
    shares are per gene, library sizes per cell (a column).
    """
    if smooth is None:
        return weights * mu + baseline * library
    if geometric:
        return weights * smooth * library + baseline * library
    return weights * (mu + smooth * library) / 3.0 + baseline * library


def latent_neighbors(
    query: torch.Tensor, ref: torch.Tensor, k: int, exclude: torch.Tensor | None = None
) -> torch.Tensor:
    """Return the indices (rows of ``ref``) of the ``k`` nearest Euclidean neighbours of each query row.

    ``exclude[i]`` (a row of ``ref``, e.g. the query cell itself) is never a neighbour of query
    row i. See :class:`_Reference` for how distances are ranked.
    """
    return _Reference(ref).neighbors(query, k, exclude)


class _Reference:
    """Rows to search for nearest neighbours, prepared once for many queries.

    Queries are taken in chunks of rows with at most ``KNN_ELEMENTS`` distances each. Per chunk,
    squared distances ``|q|² − 2 q·r + |r|²`` are computed in float32 (one ``addmm``), the
    ``k + KNN_MARGIN`` smallest are re-ranked by their float64 distances ``Σ (q − r)²``, and
    the k best of those are returned, nearest first. Rounding cannot change the answer: a
    float32 distance is within ``γ · (|q| + max|r|)²`` of the true one (``γ`` from the
    dimension and float32's unit roundoff), so when the k-th re-ranked distance lies below the
    last candidate's float32 distance minus that bound, no row outside the candidates is
    closer; a query row where it does not is searched again in float64 throughout. The result
    is the float64 k nearest (up to ties): the same neighbours as float64 throughout, faster on
    CPU (``get_latent(smooth=15)`` at 100,000 cells: 68 s before, 57 s with it, encoder pass
    included; bench_autoencoder_scale) and much faster on GPUs with slow float64.
    """

    def __init__(self, ref: torch.Tensor) -> None:
        self.ref64 = ref.double()
        ref32 = ref.float()
        self.n, dim = ref.shape
        self.ref_t = ref32.T.contiguous()
        self.ref_sq = (ref32 * ref32).sum(1).unsqueeze(0)
        self.max_norm = float(self.ref64.norm(dim=1).max()) if self.n else 0.0
        m = (dim + 8) * 2.0**-24  # dot products, norms, the sums and the cast to float32
        self.gamma = m / (1.0 - m)
        self._exact_parts: tuple[torch.Tensor, torch.Tensor] | None = None

    @staticmethod
    def _distances(
        q: torch.Tensor, ref_t: torch.Tensor, ref_sq: torch.Tensor, exclude: torch.Tensor | None
    ) -> torch.Tensor:
        """Return squared distances ``|q|² − 2 q·r + |r|²`` of rows ``q`` to every reference row.

        In the dtype of the arguments; ``exclude[i]`` of row i is set to infinity.
        """
        d = torch.addmm(ref_sq, q, ref_t, alpha=-2.0)
        d += (q * q).sum(1, keepdim=True)
        if exclude is not None:
            d[torch.arange(d.shape[0], device=d.device), exclude] = float("inf")
        return d

    def _float64_rows(self, q: torch.Tensor, k: int, exclude: torch.Tensor | None) -> torch.Tensor:
        """Return the k nearest of float64 query rows ``q`` by float64 distances over all rows."""
        if self._exact_parts is None:
            ref_sq = (self.ref64 * self.ref64).sum(1).unsqueeze(0)
            self._exact_parts = (self.ref64.T.contiguous(), ref_sq)
        d = self._distances(q, *self._exact_parts, exclude)
        return torch.topk(d, k, dim=1, largest=False).indices

    def neighbors(
        self,
        query: torch.Tensor,
        k: int,
        exclude: torch.Tensor | None = None,
        *,
        progress: bool = False,
    ) -> torch.Tensor:
        """:func:`latent_neighbors` of ``query`` among these rows (a tqdm bar with ``progress``)."""
        from tqdm.auto import tqdm

        out = []
        chunk = max(1, min(KNN_CHUNK, KNN_ELEMENTS // max(self.n, 1)))
        available = self.n - (exclude is not None)
        n_cand = min(k + KNN_MARGIN, self.n)
        starts = tqdm(
            range(0, query.shape[0], chunk),
            desc="latent neighbours",
            unit="chunk",
            disable=not (progress and settings.progress_bar),
        )
        for lo in starts:
            q64 = query[lo : lo + chunk].double()
            ex = None if exclude is None else exclude[lo : lo + chunk]
            d = self._distances(q64.float(), self.ref_t, self.ref_sq, ex)
            cut, cand = torch.topk(d, n_cand, dim=1, largest=False)
            exact = ((self.ref64[cand] - q64[:, None]) ** 2).sum(-1)
            if ex is not None:
                exact[cand == ex[:, None]] = float("inf")
            best = torch.topk(exact, k, dim=1, largest=False)
            idx = torch.gather(cand, 1, best.indices)
            if n_cand < available:  # rows outside the candidates: could one be closer?
                bound = self.gamma * (q64.norm(dim=1) + self.max_norm) ** 2
                unsure = ~(best.values[:, -1] < cut[:, -1].double() - bound)
                if bool(unsure.any()):
                    idx[unsure] = self._float64_rows(
                        q64[unsure], k, None if ex is None else ex[unsure]
                    )
            out.append(idx)
        return torch.cat(out)


def self_neighbors(z: np.ndarray, k: int, *, device: Any = None) -> np.ndarray | None:
    """Return the ``k`` nearest neighbours of each row of ``z`` among its other rows (n × k).

    :func:`latent_neighbors` with the row itself excluded, nearest first; ``k`` is capped at
    ``n − 1``, and None comes back when that leaves no neighbour. The distances are computed
    on ``device`` (None: CPU), a GPU when the model runs on one: the search costs O(n²) and
    takes about a minute at 100,000 cells on 2 CPU cores. From ``KNN_PROGRESS_CELLS`` cells on
    it shows a progress bar (unless ``settings.progress_bar`` is off).
    """
    n = z.shape[0]
    k = min(int(k), n - 1)
    if k < 1:
        return None
    zt = torch.as_tensor(z, device=device)
    ids = torch.arange(n, device=zt.device)
    idx = _Reference(zt).neighbors(zt, k, ids, progress=n >= KNN_PROGRESS_CELLS)
    return idx.cpu().numpy()


def _first(
    neighbors: np.ndarray | None, z: np.ndarray, k: int, device: Any = None
) -> np.ndarray | None:
    """Return the first ``k`` columns of ``neighbors``, or search ``z`` when it is None.

    ``neighbors`` is :func:`self_neighbors` output for ``k`` or more (``k`` capped at n − 1).
    """
    if neighbors is None:
        return self_neighbors(z, k, device=device)
    k = min(int(k), z.shape[0] - 1)
    if neighbors.shape[1] < k:
        msg = f"{neighbors.shape[1]} neighbours per cell were passed, {k} are needed."
        raise ValueError(msg)
    return neighbors[:, :k] if k >= 1 else None


def neighbor_average(
    z: np.ndarray, k: int, *, neighbors: np.ndarray | None = None, device: Any = None
) -> np.ndarray:
    """Return each row of ``z`` averaged with its ``k`` nearest Euclidean neighbours (float32).

    The neighbours are searched among the rows of ``z`` (:func:`self_neighbors`, the row
    itself excluded), or taken from the first ``k`` columns of ``neighbors`` (its output for
    ``k`` or more); the average weighs the row and each neighbour equally, ``1 / (k + 1)``.
    ``k`` is capped at ``n − 1``; with ``k < 1`` (or a single row) ``z`` comes back unchanged.
    ``device``: where a search runs (:func:`self_neighbors`).
    """
    z = np.asarray(z, dtype=np.float32)
    n = z.shape[0]
    idx = _first(neighbors, z, k, device)
    if idx is None:
        return z.copy()
    W = _averaging(np.concatenate([np.arange(n)[:, None], idx], axis=1), n)
    return np.asarray(W @ z.astype(np.float64), dtype=np.float32)


def _averaging(idx: np.ndarray, n_ref: int) -> sparse.csr_matrix:
    """Row-stochastic sparse matrix averaging the ``idx`` rows of a reference."""
    n, k = idx.shape
    return sparse.csr_matrix(
        (np.full(n * k, 1.0 / k), idx.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n_ref)
    )


def _count_shares(counts: Any, library: np.ndarray) -> Any:
    """Return the counts divided by their cell's library size (float32; CSR stays CSR)."""
    inv = (1.0 / np.asarray(library, dtype=np.float64)).astype(np.float32)
    if sparse.issparse(counts):
        return sparse.csr_matrix(sparse.diags(inv) @ counts, dtype=np.float32)
    return np.asarray(counts, dtype=np.float32) * inv[:, None]


def _dense(a: Any) -> np.ndarray:
    return a.toarray() if sparse.issparse(a) else np.asarray(a)


def _log_shares(shares: Any, scale: float) -> Any:
    """Return ``log1p(share · scale)`` of :func:`_count_shares` output, per entry.

    float32; CSR stays CSR with the same sparsity (zeros stay 0), and the input is not copied.
    """
    scale = np.float32(scale)
    if sparse.issparse(shares):
        return sparse.csr_matrix(
            (np.log1p(shares.data * scale), shares.indices, shares.indptr), shape=shares.shape
        )
    return np.log1p(shares * scale)


def _from_log(mean_log: np.ndarray, scale: float) -> np.ndarray:
    """Map an average of ``log1p(share · scale)`` back to a share."""
    return np.expm1(mean_log) / scale


def geometric_share(logs: Any, scale: float) -> np.ndarray:
    """Return ``ĝ_g``, the log-space average share of each gene over the cells (float64).

    ``logs`` holds the cells' :func:`_log_shares` at ``scale``.
    """
    return _from_log(np.asarray(logs.mean(0), dtype=np.float64).ravel(), scale)


def geo_scales(library: np.ndarray) -> tuple[float, ...]:
    """Candidate scales ``s`` of the geometric estimate: ``GEO_SCALE`` and the median library.

    ``log1p(share · s)`` adds one count per ``s`` library counts before taking logs:
    ``GEO_SCALE`` = 10⁴ is the CP10k convention, the median library size (the target of
    ``sc.pp.normalize_total`` by default) one count in a typical cell. They differ on deep
    read-count libraries (10⁵-10⁶ counts), where 10⁴ adds 10-100 counts per cell and the
    average is nearly arithmetic at low counts.
    """
    median = float(np.median(np.asarray(library, dtype=np.float64)))
    # within 0.1% the two are one candidate (and their `f"{s:g}"` selection keys never collide)
    return (GEO_SCALE,) if np.isclose(median, GEO_SCALE, rtol=1e-3) else (GEO_SCALE, median)


def neighbor_shares(
    z: np.ndarray,
    mu: np.ndarray | None,
    counts: Any,
    library: np.ndarray,
    k: int = N_NEIGHBORS,
    *,
    geometric: bool = False,
    geo_scale: float = GEO_SCALE,
    neighbors: np.ndarray | None = None,
    device: Any = None,
) -> np.ndarray:
    """Return ``(M + S) / L``, or ``G / L`` with ``geometric``, of every cell (cells × genes, float32).

    ``M/L`` averages the model's means ``mu`` and ``S/L`` the counts, each as shares of the
    neighbours' libraries, over the ``k`` nearest neighbours in ``z`` (the cell excluded);
    ``G/L`` averages the counts' shares in ``log1p(share · geo_scale)`` space and maps back.
    A single cell has no neighbours; its own ``μ/L`` then stands in for each average. ``mu`` is
    not used (and may be None) for the geometric estimate of two or more cells. ``neighbors``,
    :func:`self_neighbors` of ``z`` for ``k`` or more, saves the search (otherwise it runs on
    ``device``). Works in blocks of rows: besides the result, one cells × genes float32 array
    of shares is allocated.
    """
    n = z.shape[0]
    lib = np.asarray(library, dtype=np.float64)

    def model_share() -> np.ndarray:
        return np.asarray(mu, dtype=np.float32) / lib[:, None].astype(np.float32)

    idx = _first(neighbors, z, k, device)
    if idx is None:  # a single cell has no neighbours: M = S = G = μ, so the stack is μ
        return model_share() if geometric else 2.0 * model_share()
    W = _averaging(idx, n).astype(np.float32)
    if geometric:
        logs = _log_shares(_count_shares(counts, lib), geo_scale)
        out = np.empty((n, logs.shape[1]), dtype=np.float32)
        for lo in range(0, n, SMOOTH_CHUNK):
            rows = W[lo : lo + SMOOTH_CHUNK]
            out[lo : lo + SMOOTH_CHUNK] = _from_log(_dense(rows @ logs), geo_scale)
        return out
    share = model_share()
    counts_share = _count_shares(counts, lib)
    out = np.empty_like(share)
    for lo in range(0, n, SMOOTH_CHUNK):
        rows = W[lo : lo + SMOOTH_CHUNK]
        out[lo : lo + SMOOTH_CHUNK] = rows @ share + _dense(rows @ counts_share)
    return out


def _hidden_predictions(
    module: Any,
    ds: CountDataset,
    shares: Any,
    logs: dict[float, Any],
    groups: list[np.ndarray],
    *,
    n_folds: int,
    k: int,
    device: torch.device,
    rng: np.random.Generator,
) -> tuple[list[tuple[Any, ...]], np.ndarray, np.ndarray | None]:
    """Return, per group of cells, their counts and the predictions of fold-hidden entries.

    Returns ``(parts, p_all, theta)``: ``parts[i] = (x, lib, mu, M, S, G)`` for the cells of
    ``groups[i]``: ``x`` cells × genes; ``mu`` the network's mean of each entry with its fold
    hidden; ``M``, ``S`` the neighbour averages (model means, counts) over the latent
    neighbours of the cell with that fold hidden and ``G`` a dict of the same for the counts in
    log space, per scale; ``p_all`` the model's mean share per gene over all cells. ``ds`` is
    the counts' :class:`CountDataset`, ``shares`` their :func:`_count_shares` and ``logs``
    their :func:`_log_shares` per scale. The groups share one pass over all cells for the
    latent reference and one for the neighbour averages; each group's folds are drawn from
    ``rng`` after the previous group's, so a group's results do not depend on the groups that
    follow it.
    """
    n = len(ds)
    zs, p_sum, theta = [], None, None
    for cpu_batch in batch_loader(ds, np.arange(n), batch_size=BATCH, shuffle=False):
        batch = cpu_batch.to(device)
        out = module(batch.x, batch.library, mask=False, nz=batch.nz)
        zs.append(out.z)
        s = (out.mu.double() / batch.library.double()).sum(0)
        p_sum = s if p_sum is None else p_sum + s
        theta = out.theta
    ref = _Reference(torch.cat(zs))
    p_all = (p_sum / n).cpu().numpy()
    xs, mus, libs, folds, nbs = [], [], [], [], [[] for _ in range(n_folds)]
    for cells in groups:
        start = 0
        for cpu_batch in batch_loader(ds, cells, batch_size=BATCH, shuffle=False):
            batch = cpu_batch.to(device)
            x, lib = batch.x, batch.library
            ids = torch.as_tensor(cells[start : start + x.shape[0]], device=device)
            start += x.shape[0]
            fold = torch.as_tensor(rng.integers(0, n_folds, size=tuple(x.shape)), device=device)
            pred = torch.empty_like(x)
            for f in range(n_folds):
                hide = fold == f
                # the batch's non-zeros stay valid: a hidden one maps to the input of a zero
                out = module(x.masked_fill(hide, 0.0), lib, mask=False, nz=batch.nz)
                pred = torch.where(hide, out.mu, pred)
                nbs[f].append(ref.neighbors(out.z, k, exclude=ids).cpu().numpy())
            xs.append(x.cpu().numpy())
            mus.append(pred.cpu().numpy())
            libs.append(lib.cpu().numpy().ravel())
            folds.append(fold.cpu().numpy())
    x = np.concatenate(xs).astype(np.float64)
    lib = np.concatenate(libs).astype(np.float64)
    mu = np.concatenate(mus).astype(np.float64)
    fold = np.concatenate(folds)
    neighbors = np.stack([np.concatenate(nb) for nb in nbs])  # (folds, cells, k)

    def blocks() -> Any:
        # every cell's model shares, count shares and log shares, one minibatch of rows at a time
        start = 0
        for cpu_batch in batch_loader(ds, np.arange(n), batch_size=BATCH, shuffle=False):
            batch = cpu_batch.to(device)
            out = module(batch.x, batch.library, mask=False, nz=batch.nz)
            share = (out.mu.double() / batch.library.double()).cpu().numpy()
            stop = start + share.shape[0]
            block = [share, _dense(shares[start:stop])]
            yield start, block + [_dense(lg[start:stop]) for lg in logs.values()]
            start = stop

    M, S, *Gs = fold_neighbor_means(neighbors, fold, blocks(), n_sources=2 + len(logs))
    M *= lib[:, None]
    S *= lib[:, None]
    G = {scale: _from_log(g, scale) * lib[:, None] for scale, g in zip(logs, Gs, strict=True)}
    th = None if theta is None else theta.double().cpu().numpy()
    parts = []
    for a, b in itertools.pairwise(np.cumsum([0, *(len(c) for c in groups)])):
        part = (x[a:b], lib[a:b], mu[a:b], M[a:b], S[a:b], {sc: g[a:b] for sc, g in G.items()})
        parts.append(part)
    return parts, p_all, th


def fit_shrinkage(
    module: Any,
    counts: Any,
    library: np.ndarray,
    *,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    device: torch.device,
    rng: np.random.Generator,
    n_folds: int = N_FOLDS,
    n_neighbors: int = N_NEIGHBORS,
    scale_size: int = SCALE_SIZE,
    prior: float = PRIOR,
    max_cells: int = MAX_CELLS,
    dataset: CountDataset | None = None,
) -> Shrinkage:
    """Fit the per-gene gate of the stacked imputation on held-out entries of validation cells.

    ``module`` is a trained ``DropoutAENet``; it runs in eval mode (dropout off) under
    ``torch.inference_mode``. With no validation cells the training cells are used and the
    result is marked ``in_sample``. Fold assignments (and a subsample of at most ``max_cells``
    held-out cells) come from ``rng``. See the module docstring for the rule and for the
    choice of point estimate (``Shrinkage.estimate``), made on the same hidden entries.
    ``dataset``, the :class:`CountDataset` of ``counts`` and ``library`` if one exists already
    (training has one), saves building it again.
    """
    in_sample = len(val_idx) == 0
    cells = np.asarray(train_idx if in_sample else val_idx, dtype=np.int64)
    if len(cells) > max_cells:
        cells = np.sort(rng.choice(cells, size=max_cells, replace=False))
    k = max(min(n_neighbors, counts.shape[0] - 1), 1)
    ds = CountDataset(counts, library) if dataset is None else dataset
    shares = _count_shares(counts, library)
    logs = {scale: _log_shares(shares, scale) for scale in geo_scales(library)}
    # the geometric estimate's gate uses fold-hidden entries of all cells (G never uses μ);
    # their subsample comes from a child generator, which leaves `rng`'s stream as it was
    n = counts.shape[0]
    gate_cells = np.arange(n, dtype=np.int64)
    if n > max_cells:
        gate_cells = np.sort(rng.spawn(1)[0].choice(n, size=max_cells, replace=False))
    module.eval()
    with torch.inference_mode():
        parts, p_all, theta = _hidden_predictions(
            module,
            ds,
            shares,
            logs,
            [cells, gate_cells],
            n_folds=n_folds,
            k=k,
            device=device,
            rng=rng,
        )
    (x, lib, mu, M, S, G), (x_all, lib_all, _, _, _, G_all) = parts
    stacked = (mu + M + S) / 3.0
    # null: the best constant share s · p̄' per gene, p̄' the mean hidden-entry share
    pbar = np.maximum((mu / lib[:, None]).mean(0), 1e-12)
    base = pbar[None] * lib[:, None]
    null = np.stack(
        [_loglik_terms(x, s * base, theta).sum(0) for s in np.logspace(-2.0, 0.5, scale_size)]
    )
    gain = _loglik_terms(x, stacked, theta).sum(0) - null.max(0)
    keep = gain + prior * gain.mean() > 0
    weights = keep.astype(np.float64)
    train = np.asarray(train_idx, dtype=np.int64)
    selection = {
        "arithmetic": _point_errors(x, weights * stacked + (1.0 - weights) * p_all * lib[:, None])
    }
    geo: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for scale, lg in logs.items():
        g = geometric_gain(x_all, lib_all, G_all[scale], geometric_share(lg, scale), scale)
        w = (g + prior * g.mean() > 0).astype(np.float64)
        geo[scale] = (w, g)
        null = geometric_share(lg[train], scale) * lib[:, None]
        selection[f"geometric@{scale:g}"] = _point_errors(x, w * G[scale] + (1.0 - w) * null)
    # the scale first (ties: GEO_SCALE), then the estimate (ties: arithmetic)
    scale = min(logs, key=lambda sc: selection[f"geometric@{sc:g}"][0])
    selection["geometric"] = selection[f"geometric@{scale:g}"]
    geo_w, geo_g = geo[scale]
    return Shrinkage(
        weights=weights,
        baseline=(1.0 - weights) * p_all,
        gain=gain,
        n_cells=len(cells),
        in_sample=in_sample,
        n_neighbors=k,
        estimate=min(ESTIMATES, key=lambda name: selection[name][0]),
        geo_baseline=(1.0 - geo_w) * geometric_share(logs[scale], scale),
        selection=selection,
        geo_scale=scale,
        geo_weights=geo_w,
        geo_gain=geo_g,
        geo_n_cells=len(gate_cells),
    )


def geometric_gain(
    x: np.ndarray, lib: np.ndarray, G: np.ndarray, null_share: np.ndarray, scale: float
) -> np.ndarray:
    """Per-gene gain of the geometric estimate ``G`` over the constant share ``null_share``.

    The squared error of ``log1p(x / L · scale)`` under the null minus that under ``G``,
    summed over the cells (rows of ``x``, the hidden counts; ``lib`` their libraries, ``G``
    the predictions as counts). Positive where the neighbours predict the gene better than
    the gene's typical share does.
    """
    f = scale / lib[:, None]
    observed = np.log1p(x * f)
    null = np.log1p(np.asarray(null_share, dtype=np.float64) * scale)[None]
    return ((observed - null) ** 2).sum(0) - ((observed - np.log1p(G * f)) ** 2).sum(0)


def _point_errors(x: np.ndarray, pred: np.ndarray) -> list[float]:
    """Return ``[median |x − pred|, Pearson r of log1p]`` over the non-zero entries of ``x``.

    With no non-zero entry the error is 0 (ties keep the arithmetic estimate); with fewer
    than two, or constant values, the correlation is NaN.
    """
    nz = x > 0
    if not nz.any():
        return [0.0, float("nan")]
    a, b = np.log1p(x[nz]), np.log1p(np.maximum(pred[nz], 0.0))
    r = float(np.corrcoef(a, b)[0, 1]) if nz.sum() > 1 and a.std() > 0 and b.std() > 0 else np.nan
    return [float(np.median(np.abs(x[nz] - pred[nz]))), r]
