"""Helpers shared by the kernel wrappers: layout dispatch and fixed chunking.

Kernels never see a scipy object: the wrappers here split a matrix into plain ndarrays. Chunk
counts depend only on the matrix shape, never on the thread count, so every reduction that is
split into chunks sums in the same order whatever ``n_jobs`` is.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import numba
import numpy as np
from numpy.typing import NDArray

from scdropout._compat import CSCBase, CSRBase, SparseBase

#: data dtypes passed to the kernels unchanged
_NATIVE = (np.float32, np.float64)
#: integers up to this magnitude are exact in float32
_F32_EXACT = 2**24
#: at most this many chunks for chunked reductions (and per-chunk accumulator rows)
MAX_CHUNKS = 64
#: cap on the per-chunk accumulator memory of one chunked reduction
_ACC_BYTES = 256 * 1024**2
#: below this much work (entries touched) a parallel kernel runs on one thread: starting the
#: thread team costs more than the work, and results do not depend on the thread count anyway
SMALL_WORK = 1 << 16

Layout = Literal["csr", "csc", "dense"]


def _data(values: NDArray[Any]) -> NDArray[Any]:
    """Pass float32/float64 through; convert anything else (int counts, bool) once.

    Integer data become float32 when every value is exact in float32 (|x| <= 2**24), float64
    otherwise: kernels accumulate in float64 either way, and two data dtypes keep the number of
    numba specialisations (and the compile time) small.
    """
    if values.dtype.type in _NATIVE:
        return values
    if values.dtype == np.bool_ or np.issubdtype(values.dtype, np.integer):
        big = values.size and max(abs(int(values.max())), abs(int(values.min()))) > _F32_EXACT
        return values.astype(np.float64 if big else np.float32)
    if np.issubdtype(values.dtype, np.floating):
        return values.astype(np.float64)
    msg = f"the matrix has dtype {values.dtype}; kernels need real numeric data."
    raise TypeError(msg)


def split(X: Any) -> tuple[Layout, tuple[Any, ...]]:
    """Return the layout of ``X`` and its parts for the kernels.

    Sparse matrices become ``(data, indices, indptr, n_rows, n_cols)``; a dense matrix becomes
    ``(X,)``. No copy is made unless the data dtype is unusual (bool, float16, ...).
    """
    if isinstance(X, CSRBase + CSCBase):
        n_rows, n_cols = X.shape
        kind: Layout = "csr" if isinstance(X, CSRBase) else "csc"
        parts = (_data(X.data), X.indices, X.indptr, np.int64(n_rows), np.int64(n_cols))
        return kind, parts
    if isinstance(X, np.ndarray) and not isinstance(X, np.matrix):
        if X.ndim != 2:
            msg = f"expected a 2-D matrix (cells x genes), got shape {X.shape}."
            raise ValueError(msg)
        return "dense", (_data(X),)
    name = f"{type(X).__module__}.{type(X).__qualname__}"
    hint = " Convert it with `.tocsr()`." if isinstance(X, SparseBase) else ""
    msg = f"expected a numpy ndarray or a CSR/CSC matrix, got {name}.{hint}"
    raise TypeError(msg)


def n_chunks(n_major: int, width: int, n_arrays: int = 3) -> int:
    """Return the chunk count for reducing ``n_major`` slices into ``width`` accumulators.

    Depends only on the shape, so results do not change with the thread count.
    """
    by_memory = _ACC_BYTES // max(1, 8 * n_arrays * width)
    return int(max(1, min(MAX_CHUNKS, n_major, by_memory)))


def as_vector(x: Any, *, n: int, name: str) -> NDArray[np.float64]:
    """Return ``x`` as a contiguous float64 vector of length ``n`` (no copy when possible)."""
    out = np.ascontiguousarray(x, dtype=np.float64)
    if out.ndim != 1 or out.shape[0] != n:
        msg = f"`{name}` must be a 1-D array of length {n}, got shape {out.shape}."
        raise ValueError(msg)
    return out


@contextmanager
def threads_for(work: int) -> Iterator[None]:
    """Run the block on one numba thread when ``work`` is below :data:`SMALL_WORK`."""
    if work >= SMALL_WORK:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)
