"""kernels.nbumi: NB sizes and expected zeros against their NumPy references."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse

from scdropout import kernels
from scdropout._utils import thread_limit
from scdropout.kernels import nbumi


@pytest.fixture
def counts(synthetic):
    return synthetic.X


def _totals(X):
    return np.asarray(X.sum(axis=0)).ravel(), np.asarray(X.sum(axis=1)).ravel()


def _smoothed(X):
    tg, tj = _totals(X)
    size = kernels.nbumi_size(X, tg, tj)
    b0, b1 = kernels.fit_dispersion_trend(size, tg, X.shape[0])
    with np.errstate(divide="ignore"):
        return tg, tj, np.where(tg > 0, np.exp(b0 + b1 * np.log(tg / X.shape[0])), 1.0)


def test_nbumi_size_matches_ref(counts, matrix_format):
    tg, tj = _totals(counts)
    got = kernels.nbumi_size(matrix_format(counts), tg, tj)
    ref = kernels.nbumi_size_ref(counts.toarray(), tg, tj)
    assert_allclose(got, ref, rtol=1e-10)
    assert np.isnan(got[tg == 0]).all()
    assert (tg == 0).any()
    assert (got[tg > 0] >= 1e-10).all()


def test_nbumi_size_int_input_matches_float(counts, matrix_format, count_dtype):
    tg, tj = _totals(counts)
    want = kernels.nbumi_size(counts, tg, tj)
    got = kernels.nbumi_size(matrix_format(counts.astype(count_dtype)), tg, tj)
    assert_allclose(got, want, rtol=1e-12)


def test_underdispersed_gene_gets_ten_times_max():
    rng = np.random.default_rng(1)
    X = rng.negative_binomial(2, 0.4, size=(60, 5)).astype(float)
    X[:, 0] = 3.0  # constant: variance below the mean
    tg, tj = X.sum(0), X.sum(1)
    size = kernels.nbumi_size(X, tg, tj)
    assert size[0] == pytest.approx(10 * size[1:].max(), rel=1e-15)
    assert_allclose(size, kernels.nbumi_size_ref(X, tg, tj), rtol=1e-10)


def test_nbumi_size_recovers_nb_size_roughly():
    # depth-adjusted NB with size 2 for every gene; the MoM estimate is consistent
    rng = np.random.default_rng(0)
    lib = rng.lognormal(np.log(2000), 0.3, size=4000)
    p = rng.dirichlet(np.ones(50) * 5)
    mu = lib[:, None] * p[None, :]
    X = rng.negative_binomial(2.0, 2.0 / (2.0 + mu)).astype(float)
    size = kernels.nbumi_size(sparse.csr_matrix(X), X.sum(0), X.sum(1))
    assert np.median(size) == pytest.approx(2.0, rel=0.1)


def test_expected_zeros_matches_ref(counts):
    tg, tj, r = _smoothed(counts)
    for size in (r, None):
        got = kernels.expected_zeros(tg, tj, size)
        ref = kernels.expected_zeros_ref(tg, tj, size)
        for field in got._fields:
            assert_allclose(getattr(got, field), getattr(ref, field), rtol=1e-10, err_msg=field)
        assert ((got.gene_rate >= 0) & (got.gene_rate <= 1)).all()
        assert_array_equal(got.gene_rate[tg == 0], 1.0)  # μ = 0: a zero everywhere


def test_expected_zeros_cells_with_equal_totals_share_values():
    tg = np.array([5.0, 0.0, 12.0, 12.0, 40.0])
    tj = np.array([10.0, 20.0, 10.0, 30.0, 5.0, 20.0, 2.0])
    size = np.array([0.5, 1.0, 2.0, 2.0, 7.0])
    got = kernels.expected_zeros(tg, tj, size)
    assert got.cell_zeros[0] == got.cell_zeros[2]
    assert got.cell_zeros[1] == got.cell_zeros[5]
    assert got.gene_rate[2] == got.gene_rate[3]
    ref = kernels.expected_zeros_ref(tg, tj, size)
    for field in got._fields:
        assert_allclose(getattr(got, field), getattr(ref, field), rtol=1e-12)


def test_expected_zeros_genes_with_equal_totals_but_other_sizes_differ():
    got = kernels.expected_zeros([10.0, 10.0], [3.0, 7.0], [0.5, 50.0])
    assert got.gene_rate[0] > got.gene_rate[1]
    assert_allclose(
        got.gene_rate, kernels.expected_zeros_ref([10, 10], [3, 7], [0.5, 50]).gene_rate
    )


def test_expected_zeros_n_jobs_identical(counts):
    tg, tj, r = _smoothed(counts)
    with thread_limit(1):
        one = kernels.expected_zeros(tg, tj, r)
    with thread_limit(2):
        two = kernels.expected_zeros(tg, tj, r)
    for field in one._fields:
        assert_array_equal(getattr(one, field), getattr(two, field))


def test_expected_zeros_tiles_do_not_change_results(counts, monkeypatch):
    tg, tj, r = _smoothed(counts)
    whole = kernels.expected_zeros(tg, tj, r)
    monkeypatch.setattr(nbumi, "_TILE_BYTES", 1000)  # one gene per tile
    tiled = kernels.expected_zeros(tg, tj, r)
    for field in whole._fields:
        assert_array_equal(getattr(tiled, field), getattr(whole, field))


def test_nbumi_size_n_jobs_identical(counts, matrix_format):
    X = matrix_format(counts)
    tg, tj = _totals(counts)
    with thread_limit(1):
        one = kernels.nbumi_size(X, tg, tj)
    with thread_limit(2):
        two = kernels.nbumi_size(X, tg, tj)
    assert_array_equal(one, two)


def test_expected_zeros_errors():
    with pytest.raises(ValueError, match="sum to a positive"):
        kernels.expected_zeros([1.0], [0.0, 0.0])
    with pytest.raises(ValueError, match="`size` must be a 1-D array of length 2"):
        kernels.expected_zeros([1.0, 2.0], [1.0], [1.0])
    with pytest.raises(ValueError, match="`cell_totals` must be a non-empty 1-D"):
        kernels.expected_zeros([1.0], [])
    with pytest.raises(ValueError, match="`gene_totals` must be a 1-D array"):
        kernels.expected_zeros(np.ones((2, 2)), [1.0])


def test_py_func_expected_zeros_reduce():
    P = np.array([[1.0, 0.5, 0.25], [0.0, 0.1, 0.9]])
    cell_mult = np.array([1.0, 2.0, 3.0])
    gene_mult = np.array([2.0, 1.0])
    gsum, gvar, cell = np.empty(2), np.empty(2), np.zeros(3)
    nbumi._expected_zeros_reduce.py_func(P, cell_mult, gene_mult, gsum, gvar, cell)
    assert_allclose(gsum, P @ cell_mult)
    assert_allclose(gvar, (P * (1 - P)) @ cell_mult)
    assert_allclose(cell, gene_mult @ P)
