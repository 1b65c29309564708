"""Input checks shared by every AnnData-facing function. They never modify their input."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse

from scdropout._compat import CSCBase, CSRBase, SparseBase


def _type_name(x: object) -> str:
    t = type(x)
    return f"{t.__module__}.{t.__qualname__}"


def check_adata(adata: Any, *, name: str = "adata") -> None:
    """Raise ``TypeError`` unless ``adata`` is an in-memory :class:`~anndata.AnnData`."""
    from anndata import AnnData

    if not isinstance(adata, AnnData):
        msg = f"`{name}` must be an AnnData, got {_type_name(adata)}."
        raise TypeError(msg)
    if adata.isbacked:
        msg = (
            f"`{name}` is opened in backed mode ({adata.filename}); load it into memory first "
            "with `adata = adata.to_memory()` or `anndata.read_h5ad(path)`."
        )
        raise TypeError(msg)


def check_matrix_type(X: Any, *, name: str) -> None:
    """Raise ``TypeError`` unless ``X`` is a dense ndarray, CSR or CSC matrix."""
    if isinstance(X, np.ndarray) and not isinstance(X, np.matrix):
        return
    if isinstance(X, CSRBase + CSCBase):
        return
    kind = _type_name(X)
    hint = ""
    if "dask" in kind:
        hint = " Compute it first (`.compute()`); dask arrays are not supported."
    elif isinstance(X, SparseBase):
        hint = " Convert it with `.tocsr()`."
    elif isinstance(X, np.matrix):
        hint = " Convert it with `np.asarray(...)`."
    msg = f"{name} is a {kind}; scdropout accepts a numpy ndarray or a CSR/CSC matrix.{hint}"
    raise TypeError(msg)


def get_matrix(adata: Any, layer: str | None) -> Any:
    """Return ``adata.X`` or ``adata.layers[layer]`` after type checks.

    A CSR/CSC matrix not in canonical form (duplicate or unsorted entries) comes back as a
    canonical copy, so that every kernel can count stored entries as detections.
    """
    check_adata(adata)
    if layer is None:
        X = adata.X
        name = "`adata.X`"
        if X is None:
            msg = "`adata.X` is None; pass `layer=` naming a layer that holds the counts."
            raise ValueError(msg)
    else:
        if not isinstance(layer, str):
            msg = f"`layer` must be a string or None, got {layer!r}."
            raise TypeError(msg)
        if layer not in adata.layers:
            raise KeyError(missing_key_message("layer", layer, adata.layers.keys(), "layers"))
        X = adata.layers[layer]
        name = f"`layer={layer!r}`"
    check_matrix_type(X, name=name)
    if X.ndim != 2:
        msg = f"{name} must be 2-D, got shape {X.shape}."
        raise ValueError(msg)
    if isinstance(X, CSRBase + CSCBase) and not X.has_canonical_format:
        # scipy lets a position be stored twice (its value is the sum); the kernels read the
        # stored entries, so merge them, on a copy: the caller's matrix is left as it is
        X = X.copy()
        X.sum_duplicates()
    return X


def missing_key_message(arg: str, key: str, existing: Iterable[str], where: str) -> str:
    """Build the message for a key that is not in ``adata.<where>``, listing up to 5 that are."""
    keys = list(existing)
    shown = ", ".join(repr(k) for k in keys[:5])
    more = f" (and {len(keys) - 5} more)" if len(keys) > 5 else ""
    have = f"Available: {shown}{more}." if keys else f"`adata.{where}` is empty."
    return f"`{arg}={key!r}` is not in `adata.{where}`. {have}"


def _values(X: Any) -> np.ndarray:
    return X.data if isinstance(X, SparseBase) else np.asarray(X)


def _locate(X: Any, flat_mask_first: int) -> tuple[int, int]:
    """Return (row, col) of the ``flat_mask_first``-th stored value."""
    if isinstance(X, SparseBase):
        coo = X.tocoo() if not isinstance(X, CSRBase + CSCBase) else None
        if coo is not None:
            return int(coo.row[flat_mask_first]), int(coo.col[flat_mask_first])
        indptr = X.indptr
        major = int(np.searchsorted(indptr, flat_mask_first, side="right") - 1)
        minor = int(X.indices[flat_mask_first])
        return (major, minor) if isinstance(X, CSRBase) else (minor, major)
    r, c = np.unravel_index(flat_mask_first, X.shape)
    return int(r), int(c)


def check_counts(
    X: Any,
    *,
    name: str,
    obs_names: Sequence[str] | None = None,
    var_names: Sequence[str] | None = None,
    integer: bool = True,
    what: str = "raw counts",
) -> None:
    """Raise ``ValueError`` if ``X`` has NaN/Inf, negative or (when ``integer``) fractional values.

    The message names the argument, the first offending value and its cell and gene.
    """
    vals = _values(X)
    if vals.size == 0:
        return
    if not np.issubdtype(vals.dtype, np.number) or np.issubdtype(vals.dtype, np.complexfloating):
        msg = f"{name} has dtype {vals.dtype}; {what} must be numeric."
        raise ValueError(msg)
    is_float = np.issubdtype(vals.dtype, np.floating)
    flat = vals.ravel()
    firsts = _first_bad(flat, is_float=is_float, integer=integer)
    labels = ("NaN or infinite values", "negative values", "non-integer values")
    for first, label in zip(firsts, labels, strict=True):
        if first < 0:
            continue
        r, c = _locate(X, first)
        cell = repr(str(obs_names[r])) if obs_names is not None else f"row {r}"
        gene = repr(str(var_names[c])) if var_names is not None else f"column {c}"
        msg = (
            f"{name} holds {label} (first {flat[first].item()!r}, cell {cell}, gene {gene}); "
            f"this needs {what}."
        )
        raise ValueError(msg)


# below this many values the NumPy path is faster than compiling/calling the numba scan
_SCAN_MIN = 1_000_000


def _first_bad(flat: np.ndarray, *, is_float: bool, integer: bool) -> tuple[int, int, int]:
    """Return the first index of a non-finite, a negative and a fractional value (-1 if none)."""
    if not is_float:
        neg = flat < 0
        return -1, int(np.argmax(neg)) if neg.any() else -1, -1
    if flat.size >= _SCAN_MIN:
        return _scan_float(flat, integer=integer)
    masks = (
        ~np.isfinite(flat),
        flat < 0,
        (flat != np.round(flat)) if integer else np.zeros(1, bool),
    )
    a, b, c = (int(np.argmax(bad)) if bad.any() else -1 for bad in masks)
    return a, b, c


def _scan_float(flat: np.ndarray, *, integer: bool) -> tuple[int, int, int]:
    from ._scan import scan_counts

    a, b, c = scan_counts(flat, integer)
    return int(a), int(b), int(c)


def check_choice(value: Any, *, name: str, choices: Iterable[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    options = list(choices)
    if value not in options:
        msg = f"`{name}={value!r}` is not valid; choose one of {', '.join(map(repr, options))}."
        raise ValueError(msg)


def check_positive_int(
    value: Any, *, name: str, minimum: int = 1, allow_none: bool = False
) -> None:
    """Raise ``ValueError``/``TypeError`` unless ``value`` is an int >= ``minimum``."""
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        msg = f"`{name}` must be an integer, got {value!r}."
        raise TypeError(msg)
    if value < minimum:
        msg = f"`{name}` must be at least {minimum}, got {value!r}."
        raise ValueError(msg)


def as_csr_or_dense(X: Any) -> Any:
    """Return CSR for sparse input (converting CSC), dense ndarray otherwise; no copies of CSR."""
    if isinstance(X, CSRBase):
        return X
    if isinstance(X, SparseBase):
        return sparse.csr_matrix(X)
    return np.asarray(X)


_BARCODE = r"^[ACGTN]{8,}([-_.][0-9A-Za-z_]+)?$"


def check_orientation(adata: Any, *, what: str) -> None:
    """Raise ``ValueError`` when ``adata`` looks like genes x cells (a transposed count matrix).

    The sign is ``var_names`` that look like cell barcodes (at least 8 ACGTN letters, optionally
    a ``-1`` style suffix) for most variables while the ``obs_names`` do not. R packages (CIDR,
    M3Drop) use genes x cells, so this mix-up is common when matrices come from R.
    """
    var = pd.Index(adata.var_names[:1000]).astype(str)
    obs = pd.Index(adata.obs_names[:1000]).astype(str)
    if var.size < 2:
        return
    var_bc = float(var.str.match(_BARCODE).mean())
    obs_bc = float(obs.str.match(_BARCODE).mean()) if obs.size else 0.0
    if var_bc >= 0.5 and obs_bc < 0.5:
        msg = (
            f"`adata` looks transposed (genes x cells): {var_bc:.0%} of its var_names look like "
            f"cell barcodes (first {var[0]!r}) and its obs_names do not (first "
            f"{obs[0] if obs.size else None!r}). {what} needs cells as rows; pass `adata.T.copy()`."
        )
        raise ValueError(msg)


def var_mask(adata: Any, genes: str) -> np.ndarray:
    """Return the boolean ``adata.var`` column named by ``genes=`` as a mask, checked.

    The column must exist (``KeyError``) and be boolean, numpy's or pandas' nullable one without
    missing values (``ValueError``).
    """
    if genes not in adata.var.columns:
        raise KeyError(missing_key_message("genes", genes, adata.var.columns, "var"))
    col = adata.var[genes]
    if not pd.api.types.is_bool_dtype(col.dtype):
        msg = f"`adata.var[{genes!r}]` has dtype {col.dtype}; `genes` needs a boolean column."
        raise ValueError(msg)
    if col.isna().any():  # pandas' nullable "boolean"
        msg = (
            f"`adata.var[{genes!r}]` has {int(col.isna().sum())} missing value(s); fill them "
            "with True or False first."
        )
        raise ValueError(msg)
    return col.to_numpy(dtype=bool)


def gene_mask(adata: Any, genes: str | None, *, what: str) -> np.ndarray | None:
    """Resolve ``genes`` (the name of a boolean ``adata.var`` column) to a mask; None passes.

    ``what`` names the method in the error raised when fewer than 2 genes are selected.
    """
    if genes is None:
        return None
    if not isinstance(genes, str):
        msg = f"`genes` must be the name of a boolean `adata.var` column or None, got {genes!r}."
        raise TypeError(msg)
    mask = var_mask(adata, genes)
    if mask.sum() < 2:
        msg = (
            f"`adata.var[{genes!r}]` selects {int(mask.sum())} genes; {what} needs at least 2 "
            "(select more genes or pass `genes=None`)."
        )
        raise ValueError(msg)
    return mask
