"""Registration of an AnnData's counts (validated once) and a minibatch Dataset over CSR rows.

In the spirit of scvi-tools' ``setup_anndata``, but the frozen state lives in a
:class:`Registry` owned by the model, not in ``adata.uns``: ``register`` never writes to adata.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from scipy import sparse

from scdropout._compat import SparseBase
from scdropout._utils import check_counts, get_matrix, var_mask

GeneSpec = str | Sequence[str] | Sequence[bool] | np.ndarray | None


@dataclass(frozen=True)
class Registry:
    """What a model remembers about the data it was set up with.

    Attributes
    ----------
    layer
        Layer holding the counts, or None for ``X``.
    var_names
        Names of the modelled genes, in model order.
    n_vars
        Number of modelled genes.
    n_obs
        Number of cells at registration.
    library_median
        Median library size (sum over modelled genes): the input normalisation scale.
    library_log_mean
        Mean of log library size.
    library_log_sd
        Standard deviation of log library size.
    """

    layer: str | None
    var_names: tuple[str, ...]
    n_vars: int
    n_obs: int
    library_median: float
    library_log_mean: float
    library_log_sd: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        d = asdict(self)
        d["var_names"] = list(self.var_names)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Registry:
        """Rebuild from :meth:`to_dict` output."""
        d = dict(d)
        d["var_names"] = tuple(d["var_names"])
        return cls(**d)


def resolve_genes(adata: Any, genes: GeneSpec) -> np.ndarray:
    """Return integer column positions of the selected genes, validating ``genes``.

    ``genes`` may be None (all), the name of a boolean ``adata.var`` column (e.g. the selection
    written by ``pp.dropout_genes``), a boolean mask over ``var_names`` or a list of gene names.
    """
    n = adata.n_vars
    if genes is None:
        idx = np.arange(n)
    elif isinstance(genes, str):
        idx = np.flatnonzero(var_mask(adata, genes))
    else:
        arr = np.asarray(genes)
        if arr.dtype == bool:
            if arr.shape != (n,):
                msg = (
                    f"A boolean `genes` mask must have length n_vars = {n}, got shape {arr.shape}."
                )
                raise ValueError(msg)
            idx = np.flatnonzero(arr)
        else:
            names = [str(g) for g in arr.ravel()]
            pos = adata.var_names.get_indexer(names)
            if (pos < 0).any():
                missing = [g for g, p in zip(names, pos, strict=True) if p < 0]
                msg = (
                    f"{len(missing)} of the {len(names)} names in `genes` are not in "
                    f"`adata.var_names` (first: {missing[:5]!r})."
                )
                raise ValueError(msg)
            if len(set(pos.tolist())) != len(pos):
                msg = "`genes` lists some genes more than once; pass each name once."
                raise ValueError(msg)
            idx = pos
    if len(idx) == 0:
        msg = f"`genes={genes!r}` selects no genes; select at least one."
        raise ValueError(msg)
    return np.asarray(idx, dtype=np.int64)


def extract_counts(adata: Any, layer: str | None, gene_idx: np.ndarray) -> Any:
    """Return the selected counts as float32 CSR (sparse input) or dense float32 (dense input).

    Validates that they are finite, non-negative integers and that no cell is empty.
    """
    X = get_matrix(adata, layer)
    name = "`adata.X`" if layer is None else f"`layer={layer!r}`"
    if adata.n_obs == 0:
        msg = "`adata` has no cells."
        raise ValueError(msg)
    if gene_idx.size == X.shape[1] and np.array_equal(gene_idx, np.arange(X.shape[1])):
        raw = X
    else:
        raw = X[:, gene_idx]
    check_counts(
        raw,
        name=name,
        obs_names=adata.obs_names,
        var_names=adata.var_names[gene_idx],
        what="raw integer counts (the count likelihoods are undefined otherwise)",
    )
    if isinstance(raw, SparseBase):
        sub = sparse.csr_matrix(raw, dtype=np.float32)
        if not sub.has_canonical_format:  # never sort or merge in the caller's own arrays
            sub = sub.copy()
            sub.sum_duplicates()
    else:
        sub = np.ascontiguousarray(raw, dtype=np.float32)
    library = np.asarray(sub.sum(axis=1)).ravel()
    empty = np.flatnonzero(library <= 0)
    if empty.size:
        msg = (
            f"{empty.size} cells have no counts in the modelled genes (first: "
            f"{str(adata.obs_names[empty[0]])!r}); drop them first, e.g. "
            "`sc.pp.filter_cells(adata, min_counts=1)`, or model more genes."
        )
        raise ValueError(msg)
    return sub


def input_moments(counts: Any, library: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and sd (over cells) of ``log1p(x / L · scale)``, the encoder's input."""
    n = counts.shape[0]
    factor = scale / np.maximum(np.asarray(library, dtype=np.float64), 1.0)
    if isinstance(counts, SparseBase):
        c = sparse.csr_matrix(counts)
        rows = np.repeat(np.arange(n), np.diff(c.indptr))
        v = np.log1p(c.data.astype(np.float64) * factor[rows])
        s1 = np.bincount(c.indices, weights=v, minlength=c.shape[1])
        s2 = np.bincount(c.indices, weights=v * v, minlength=c.shape[1])
    else:
        v = np.log1p(np.asarray(counts, dtype=np.float64) * factor[:, None])
        s1, s2 = v.sum(0), (v * v).sum(0)
    mean = s1 / n
    var = np.maximum(s2 / n - mean**2, 0.0) * n / max(n - 1, 1)
    return mean.astype(np.float32), np.sqrt(var).astype(np.float32)


def library_sizes(counts: Any) -> np.ndarray:
    """Return per-cell totals as float32."""
    return np.asarray(counts.sum(axis=1), dtype=np.float32).ravel()


def register(
    adata: Any, layer: str | None = None, genes: GeneSpec = None
) -> tuple[Registry, Any, np.ndarray]:
    """Validate the counts once and freeze what the model needs to know about them.

    Parameters
    ----------
    adata
        The AnnData (cells × genes) with raw counts.
    layer
        Layer with the counts; None uses ``X``.
    genes
        Gene selection (see :func:`resolve_genes`).

    Returns
    -------
    ``(registry, counts, library)``: the frozen :class:`Registry`, the float32 counts (CSR for
    sparse input) and the per-cell library sizes.
    """
    idx = resolve_genes(adata, genes)
    counts = extract_counts(adata, layer, idx)
    lib = library_sizes(counts)
    log_lib = np.log(lib.astype(np.float64))
    reg = Registry(
        layer=layer,
        var_names=tuple(str(v) for v in adata.var_names[idx]),
        n_vars=len(idx),
        n_obs=adata.n_obs,
        library_median=float(np.median(lib)),
        library_log_mean=float(log_lib.mean()),
        library_log_sd=float(log_lib.std()),
    )
    return reg, counts, lib


def align(adata: Any, registry: Registry) -> tuple[Any, np.ndarray]:
    """Extract the counts of ``registry.var_names`` from another AnnData (by name, any order).

    Raises ``ValueError`` naming how many registered genes are missing.
    """
    pos = adata.var_names.get_indexer(list(registry.var_names))
    missing = [g for g, p in zip(registry.var_names, pos, strict=True) if p < 0]
    if missing:
        msg = (
            f"`adata` lacks {len(missing)} of the {registry.n_vars} genes the model was trained on "
            f"(first: {missing[:5]!r}); pass an AnnData with the same `var_names`."
        )
        raise ValueError(msg)
    counts = extract_counts(adata, registry.layer, pos.astype(np.int64))
    return counts, library_sizes(counts)


class CountDataset(torch.utils.data.Dataset):
    """Cells as minibatches: indexing with a list of rows returns dense tensors for those rows only.

    Indexing returns a :class:`Batch`.

    Parameters
    ----------
    counts
        Float32 CSR (or dense) counts, cells × genes.
    library
        Library sizes per cell.
    """

    def __init__(self, counts: Any, library: np.ndarray) -> None:
        from scipy.special import gammaln

        if isinstance(counts, SparseBase):
            counts = sparse.csr_matrix(counts)
            if (counts.data == 0).any():  # explicit zeros are not non-zeros; drop them once
                counts = counts.copy()
                counts.eliminate_zeros()
            if not counts.has_sorted_indices:
                counts = counts.copy()
                counts.sort_indices()
        self.counts = counts
        self.library = np.asarray(library, dtype=np.float32)
        # Σ_g lgamma(x+1) per cell: a constant of the data, computed once instead of per step
        if isinstance(counts, SparseBase):
            lf = sparse.csr_matrix(
                (gammaln(counts.data.astype(np.float64) + 1.0), counts.indices, counts.indptr),
                shape=counts.shape,
            )
            self.log_factorial = np.asarray(lf.sum(axis=1), dtype=np.float64).ravel()
        else:
            self.log_factorial = gammaln(np.asarray(counts, dtype=np.float64) + 1.0).sum(axis=1)

    def __len__(self) -> int:
        return self.counts.shape[0]

    def __getitem__(self, rows: Any) -> Batch:
        rows = np.asarray(rows, dtype=np.int64)
        n_genes = self.counts.shape[1]
        if isinstance(self.counts, SparseBase):
            # gather the rows' CSR slices directly (no intermediate sparse matrix)
            indptr = self.counts.indptr
            starts, lengths = indptr[rows], indptr[rows + 1] - indptr[rows]
            offsets = np.concatenate([[0], np.cumsum(lengths)])
            src = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
            nz_rows = np.repeat(np.arange(len(rows), dtype=np.int64), lengths)
            nz_cols = self.counts.indices[src].astype(np.int64)
            dense = np.zeros((len(rows), n_genes), dtype=np.float32)
            dense.reshape(-1)[nz_rows * n_genes + nz_cols] = self.counts.data[src]
        else:
            dense = np.asarray(self.counts[rows])
            nz_rows, nz_cols = np.nonzero(dense)
        return Batch(
            x=torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32)),
            library=torch.from_numpy(self.library[rows]).unsqueeze(1),
            nz_rows=torch.from_numpy(nz_rows.astype(np.int64, copy=False)),
            nz_cols=torch.from_numpy(nz_cols.astype(np.int64, copy=False)),
            log_factorial=torch.from_numpy(self.log_factorial[rows].astype(np.float32)),
        )


@dataclass
class Batch:
    """One minibatch: dense counts, library sizes, row-major positions of non-zeros, Σ lgamma(x+1)."""

    x: torch.Tensor
    library: torch.Tensor
    nz_rows: torch.Tensor
    nz_cols: torch.Tensor
    log_factorial: torch.Tensor | None = None

    def to(self, device: torch.device) -> Batch:
        """Move every tensor to ``device``."""
        if device.type == "cpu" and self.x.device.type == "cpu":
            return self
        return Batch(
            *(None if t is None else t.to(device, non_blocking=True) for t in self.astuple())
        )

    def astuple(self) -> tuple[torch.Tensor | None, ...]:
        """Return ``(x, library, nz_rows, nz_cols, log_factorial)``."""
        return self.x, self.library, self.nz_rows, self.nz_cols, self.log_factorial

    @property
    def nz(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Row and column indices of the non-zero counts."""
        return self.nz_rows, self.nz_cols


def batch_loader(
    dataset: CountDataset,
    indices: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None = None,
) -> BatchLoader:
    """Return an iterable of :class:`Batch` over minibatches of ``indices``.

    Each minibatch is one ``dataset[rows]`` call (a single CSR row slice), not a per-cell
    collate. With ``shuffle``, the order is ``torch.randperm`` drawn from ``generator`` at the
    start of each pass (what ``SubsetRandomSampler`` does); a plain iterable rather than a
    ``DataLoader``, which draws a base seed from the *global* torch RNG on every pass and
    costs a few hundred microseconds per batch. A trailing batch of one cell is merged into
    the previous one (BatchNorm needs at least two cells in training).
    """
    return BatchLoader(
        dataset, indices, batch_size=batch_size, shuffle=shuffle, generator=generator
    )


class BatchLoader:
    """Minibatches of ``indices`` (see :func:`batch_loader`); rows sorted within a batch."""

    def __init__(
        self,
        dataset: CountDataset,
        indices: np.ndarray,
        *,
        batch_size: int,
        shuffle: bool,
        generator: torch.Generator | None = None,
    ) -> None:
        self.dataset = dataset
        self.indices = np.asarray(indices, dtype=np.int64)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.generator = generator

    def _starts(self) -> list[int]:
        n, bs = len(self.indices), self.batch_size
        starts = list(range(0, n, bs))
        if len(starts) > 1 and n - starts[-1] == 1:
            starts.pop()
        return starts

    def __len__(self) -> int:
        return len(self._starts())

    def __iter__(self) -> Iterator[Batch]:
        order = self.indices
        if self.shuffle:
            perm = torch.randperm(len(order), generator=self.generator).numpy()
            order = order[perm]
        starts = self._starts()
        stops = [*starts[1:], len(order)]
        for s, e in zip(starts, stops, strict=True):
            yield self.dataset[np.sort(order[s:e])]
