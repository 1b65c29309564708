"""kernels.zeros: per-gene and per-cell zero statistics against their NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse

from scdropout import kernels
from scdropout._utils import thread_limit
from scdropout.kernels import zeros


def _assert_stats_close(got, ref, *, rtol=1e-10):
    for field in got._fields:
        g, r = getattr(got, field), getattr(ref, field)
        assert g.shape == r.shape, field
        # absolute slack only for cancellation-free zero variances
        atol = 1e-12 * max(1.0, float(np.nanmax(np.abs(r)))) if field == "var" else 0.0
        assert_allclose(g, r, rtol=rtol, atol=atol, err_msg=field)


@pytest.fixture
def counts(synthetic):
    return synthetic.X  # float32 CSR, 300 x 500, includes genes without counts


def test_gene_stats_matches_ref(counts, matrix_format):
    got = kernels.gene_stats(matrix_format(counts))
    ref = kernels.gene_stats_ref(counts.toarray())
    _assert_stats_close(got, ref)
    assert got.n_detected.dtype == np.int64
    assert np.isnan(got.mean_nonzero[got.n_detected == 0]).all()
    assert (got.n_detected == 0).any()  # the fixture has undetected genes


def test_gene_stats_with_cell_scale_matches_ref(counts, matrix_format):
    lib = np.asarray(counts.sum(axis=1)).ravel()
    scale = np.median(lib) / lib
    got = kernels.gene_stats(matrix_format(counts), cell_scale=scale)
    _assert_stats_close(got, kernels.gene_stats_ref(counts.toarray(), cell_scale=scale))


def test_cell_stats_matches_ref(counts, matrix_format):
    got = kernels.cell_stats(matrix_format(counts))
    ref = kernels.cell_stats_ref(counts.toarray())
    assert_array_equal(got.n_detected, ref.n_detected)
    assert_allclose(got.total, ref.total, rtol=1e-12)
    assert got.n_detected.dtype == np.int64


def test_int_and_float_input_agree(counts, matrix_format, count_dtype):
    ref_g = kernels.gene_stats(counts.astype(np.float64))
    ref_c = kernels.cell_stats(counts.astype(np.float64))
    X = matrix_format(counts.astype(count_dtype))
    _assert_stats_close(kernels.gene_stats(X), ref_g, rtol=1e-12)
    _assert_stats_close(kernels.cell_stats(X), ref_c, rtol=1e-12)


def test_explicit_zeros_are_not_detected():
    X = sparse.csr_matrix(
        (np.array([0.0, 2.0, 0.0, 1.0]), np.array([0, 1, 2, 2]), np.array([0, 2, 4])),
        shape=(2, 3),
    )
    assert X.nnz == 4  # two stored zeros
    for M in (X, X.tocsc(copy=True)):
        assert_array_equal(kernels.gene_stats(M).n_detected, [0, 1, 1])
        assert_array_equal(kernels.cell_stats(M).n_detected, [1, 1])


def test_inputs_are_not_written(counts):
    X = counts.copy()
    for arr in (X.data, X.indices, X.indptr):
        arr.setflags(write=False)
    kernels.gene_stats(X, cell_scale=np.ones(X.shape[0]))
    kernels.cell_stats(X)
    assert (counts != X).nnz == 0


def test_n_jobs_gives_identical_results(counts, matrix_format):
    X = matrix_format(counts)
    scale = np.linspace(0.5, 2.0, X.shape[0])
    with thread_limit(1):
        one = kernels.gene_stats(X, cell_scale=scale), kernels.cell_stats(X)
    with thread_limit(2):
        two = kernels.gene_stats(X, cell_scale=scale), kernels.cell_stats(X)
    for a, b in zip(one, two, strict=True):
        for field in a._fields:
            assert_array_equal(getattr(a, field), getattr(b, field))


def test_dense_and_csr_are_bitwise_equal(counts):
    # same chunking, same order of accumulation per gene
    a = kernels.gene_stats(counts)
    b = kernels.gene_stats(counts.toarray())
    for field in a._fields:
        assert_array_equal(getattr(a, field), getattr(b, field))


def test_single_cell_has_nan_variance():
    got = kernels.gene_stats(np.array([[1.0, 0.0, 3.0]]))
    assert np.isnan(got.var).all()
    assert_array_equal(got.mean, [1.0, 0.0, 3.0])


def test_errors():
    with pytest.raises(TypeError, match=r"coo.*tocsr"):
        kernels.gene_stats(sparse.coo_matrix(np.eye(2)))
    with pytest.raises(ValueError, match="2-D"):
        kernels.cell_stats(np.ones(3))
    with pytest.raises(ValueError, match=r"`cell_scale` must be a 1-D array of length 2"):
        kernels.gene_stats(np.eye(2), cell_scale=np.ones(3))
    with pytest.raises(TypeError, match="numeric"):
        kernels.cell_stats(np.array([["a"]], dtype=object))


def _tiny():
    dense = np.array([[0, 2, 0, 1], [3, 0, 0, 0], [1, 1, 0, 4]], dtype=np.float64)
    return dense, sparse.csr_matrix(dense), sparse.csc_matrix(dense)


def test_gene_cell_stats_equals_separate_calls(counts, matrix_format):
    X = matrix_format(counts)
    genes, cells = kernels.gene_cell_stats(X)
    for got, want in ((genes, kernels.gene_stats(X)), (cells, kernels.cell_stats(X))):
        for field in got._fields:
            assert_array_equal(getattr(got, field), getattr(want, field))


def test_py_func_sums_kernels():
    """Run the pure-Python versions of each kernel (bounds checks, coverage)."""
    dense, csr, csc = _tiny()
    n, g = dense.shape
    s, w, c = np.linspace(1, 2, n), np.arange(1.0, n + 1), np.linspace(-1, 1, g)
    y = (dense * s[:, None] - c) * (dense != 0)
    want = ((dense != 0).sum(0), (y * w[:, None]).sum(0), (y * y).sum(0))
    rows = ((dense != 0).sum(1), dense.sum(1))
    parts = lambda m: (m.data, m.indices, m.indptr, np.int64(n), np.int64(g))  # noqa: E731
    outs = [
        zeros._sums_csr.py_func(*parts(csr), s, w, c, 2),
        zeros._sums_csc.py_func(*parts(csc), s, w, c, 3, want_rows=True),
        zeros._sums_dense.py_func(dense, s, w, c, 3),
    ]
    for out in outs:
        for got, ref in zip(out, want + rows, strict=True):
            assert_allclose(got, ref, rtol=1e-12)
    no_rows = zeros._sums_csc.py_func(*parts(csc), s, w, c, 2, want_rows=False)
    assert no_rows[3].shape == (0,)
    acc = np.arange(6.0).reshape(2, 3)
    assert_array_equal(zeros._sum_chunks.py_func(acc), [3.0, 5.0, 7.0])
    assert_array_equal(zeros._sum_chunks_int.py_func(acc.astype(np.int64)), [3, 5, 7])


def test_one_pass_variance_is_close(counts, matrix_format):
    X = matrix_format(counts)
    one = kernels.gene_stats(X, two_pass=False)
    two = kernels.gene_stats(X)
    for field in ("n_detected", "total", "sum_sq", "mean", "mean_nonzero"):
        assert_array_equal(getattr(one, field), getattr(two, field))
    assert_allclose(one.var, two.var, rtol=1e-10, atol=1e-12)
    genes, cells = kernels.gene_cell_stats(X, two_pass=False)
    assert_array_equal(genes.var, one.var)
    assert_array_equal(cells.total, kernels.cell_stats(X).total)
