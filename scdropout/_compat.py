"""Sparse type unions and version shims."""

from __future__ import annotations

from scipy import sparse

CSRBase = (sparse.csr_matrix, sparse.csr_array)
CSCBase = (sparse.csc_matrix, sparse.csc_array)
SparseBase = (sparse.spmatrix, sparse.sparray)

CSR = sparse.csr_matrix | sparse.csr_array
CSC = sparse.csc_matrix | sparse.csc_array


def is_csr(x: object) -> bool:
    """Return whether ``x`` is a CSR matrix or array."""
    return isinstance(x, CSRBase)


def is_csc(x: object) -> bool:
    """Return whether ``x`` is a CSC matrix or array."""
    return isinstance(x, CSCBase)


def is_sparse(x: object) -> bool:
    """Return whether ``x`` is any scipy sparse matrix or array."""
    return isinstance(x, SparseBase)
