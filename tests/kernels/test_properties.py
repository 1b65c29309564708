"""Property tests: every kernel equals its NumPy reference on small sparse counts.

Matrices have empty rows and columns, explicitly stored zeros, int32 or int64 indices, and come
as CSR, CSC or dense.
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse

from scdropout import kernels

PROPS = settings(max_examples=50, deadline=None)


def _compressed(dense, stored, *, by_row, index_dtype):
    """CSR (by_row) or CSC of ``dense`` storing exactly the entries in ``stored``."""
    D, S = (dense, stored) if by_row else (dense.T, stored.T)
    rows, cols = np.nonzero(S)  # row-major order
    indptr = np.concatenate([[0], np.cumsum(S.sum(axis=1))]).astype(index_dtype)
    parts = (D[rows, cols], cols.astype(index_dtype), indptr)
    kind = sparse.csr_matrix if by_row else sparse.csc_matrix
    M = kind(parts, shape=dense.shape)
    M.indices, M.indptr = (
        M.indices.astype(index_dtype),
        M.indptr.astype(index_dtype),
    )  # scipy downcasts
    assert M.indices.dtype == index_dtype
    assert M.nnz == S.sum()
    return M


@st.composite
def count_matrices(draw):
    n_cells = draw(st.integers(1, 12))
    n_genes = draw(st.integers(1, 9))
    cells = st.lists(st.integers(0, 30), min_size=n_genes, max_size=n_genes)
    dense = np.array(draw(st.lists(cells, min_size=n_cells, max_size=n_cells)), dtype=float)
    keep = draw(st.lists(st.booleans(), min_size=dense.size, max_size=dense.size))
    dense *= np.array(keep, dtype=bool).reshape(dense.shape)  # sparsify
    if draw(st.booleans()):
        dense[draw(st.integers(0, n_cells - 1)), :] = 0  # an empty cell
    if draw(st.booleans()):
        dense[:, draw(st.integers(0, n_genes - 1))] = 0  # an empty gene
    extra = np.array(draw(st.lists(st.booleans(), min_size=dense.size, max_size=dense.size)))
    stored = (dense != 0) | extra.reshape(dense.shape)  # explicit zeros
    layout = draw(st.sampled_from(["csr", "csc", "dense"]))
    index_dtype = draw(st.sampled_from([np.int32, np.int64]))
    if layout == "dense":
        return dense, dense.copy()
    return dense, _compressed(dense, stored, by_row=layout == "csr", index_dtype=index_dtype)


@PROPS
@given(count_matrices())
def test_gene_and_cell_stats_equal_reference(case):
    dense, X = case
    got = kernels.gene_stats(X)
    ref = kernels.gene_stats_ref(dense)
    assert_array_equal(got.n_detected, ref.n_detected)
    for field in ("total", "sum_sq", "mean", "mean_nonzero"):
        assert_allclose(getattr(got, field), getattr(ref, field), rtol=1e-10)
    assert_allclose(got.var, ref.var, rtol=1e-10, atol=1e-12)
    rate = 1 - got.n_detected / dense.shape[0]
    assert ((rate >= 0) & (rate <= 1)).all()
    scale = np.linspace(0.3, 3.0, dense.shape[0])
    scaled, scaled_ref = (
        kernels.gene_stats(X, cell_scale=scale),
        kernels.gene_stats_ref(dense, scale),
    )
    assert_allclose(scaled.total, scaled_ref.total, rtol=1e-10)
    assert_allclose(scaled.var, scaled_ref.var, rtol=1e-10, atol=1e-10)
    cells, cells_ref = kernels.cell_stats(X), kernels.cell_stats_ref(dense)
    assert_array_equal(cells.n_detected, cells_ref.n_detected)
    assert_allclose(cells.total, cells_ref.total, rtol=1e-12)


@PROPS
@given(count_matrices())
def test_nbumi_size_equals_reference(case):
    dense, X = case
    tg, tj = dense.sum(axis=0), dense.sum(axis=1)
    assume(tj.sum() > 0)
    # stay away from the under-dispersion boundary, where the sign of a cancelling
    # difference (and so the 10 x max rule) is decided by round-off
    mu = np.outer(tj, tg) / tj.sum()
    den = ((dense - mu) ** 2).sum(axis=0) - tg
    assume(np.all(np.abs(den[tg > 0]) > 1e-8 * (1 + (dense**2).sum(axis=0)[tg > 0])))
    got = kernels.nbumi_size(X, tg, tj)
    assert_allclose(got, kernels.nbumi_size_ref(dense, tg, tj), rtol=1e-9)
    assert np.isnan(got[tg == 0]).all()
    assert (got[tg > 0] >= 1e-10).all()


@PROPS
@given(
    st.lists(st.integers(0, 500), min_size=1, max_size=12),
    st.lists(st.integers(0, 60), min_size=1, max_size=15),
    st.lists(st.floats(-8, 8), min_size=12, max_size=12),
    st.booleans(),
)
def test_expected_zeros_equals_reference(gene_totals, cell_totals, log_sizes, poisson):
    tg = np.array(gene_totals, dtype=float)
    tj = np.array(cell_totals, dtype=float)
    assume(tj.sum() > 0)
    size = None if poisson else np.exp(np.array(log_sizes[: tg.size]))
    got = kernels.expected_zeros(tg, tj, size)
    ref = kernels.expected_zeros_ref(tg, tj, size)
    assert_allclose(got.gene_rate, ref.gene_rate, rtol=1e-10, atol=1e-300)
    assert_allclose(got.gene_var, ref.gene_var, rtol=1e-9, atol=1e-300)
    assert_allclose(got.cell_zeros, ref.cell_zeros, rtol=1e-10, atol=1e-300)
    assert ((got.gene_rate >= 0) & (got.gene_rate <= 1 + 1e-12)).all()
    assert ((got.cell_zeros >= 0) & (got.cell_zeros <= tg.size + 1e-9)).all()
