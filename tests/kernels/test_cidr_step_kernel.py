"""CIDR's step-mode dissimilarity kernel, sparse on both sides, against the dense-tile kernel."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse

from scdropout.kernels import cidr as kc


def _logdata(n_cells=60, n_genes=150, seed=1):
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.6, 4.0, size=n_genes) * rng.lognormal(0, 0.5, size=(n_cells, 1))
    C = rng.poisson(lam) * (rng.random((n_cells, n_genes)) < 0.4)
    C[0, :3] += 1  # no empty cell
    return kc.log_tpm(sparse.csr_matrix(C.astype(np.float64)))


def _dense_tile(X, thr, W, rows, base, j1):
    data = np.asarray(X.data, dtype=np.float64)
    Xt = np.zeros((X.shape[1], rows.size))
    kc._fill_tile(Xt, data, X.indices, X.indptr, rows)
    args = (data, X.indices, X.indptr, thr, W, True, 1.0, 0.0, Xt, thr[rows], base[rows], 0, j1)
    return kc._dissim_tile(*args)


@pytest.mark.parametrize("w_quantile", [None, 0.2, 0.6, 0.95])
def test_step_kernel_equals_dense_tile_bit_for_bit(w_quantile):
    # per-cell thresholds around the median value; W below some thresholds (q=0.2), so above-W
    # entries can be candidates too, above most of them (q=0.95), or negative (None: every
    # zero of the tile is then above W)
    ld = _logdata()
    X = ld.X
    rng = np.random.default_rng(0)
    thr = np.quantile(X.data, 0.5) * rng.uniform(0.5, 1.5, size=X.shape[0])
    W = -0.5 if w_quantile is None else float(np.quantile(X.data, w_quantile))
    data = np.asarray(X.data, dtype=np.float64)
    base = kc._zero_partner_sums(data, X.indptr, thr, W, True, 1.0, 0.0)  # noqa: FBT003
    for i0, i1 in [(0, 17), (17, 60), (45, 60)]:
        rows = np.arange(i0, i1)
        lists = kc._step_tile_lists(data, X.indices, X.indptr, rows, thr, W, X.shape[1])
        got = kc._dissim_tile_step(
            data, X.indices, X.indptr, thr, W, *lists, rows.size, base[rows], 0, i1
        )
        assert_array_equal(got, _dense_tile(X, thr, W, rows, base, i1))
    # every case of the kernel is exercised: partners above W, non-candidates, candidates
    assert np.any(X.data > W)
    nc = X.data >= thr[np.repeat(np.arange(60), np.diff(X.indptr))]
    assert (w_quantile is None) or np.any(nc & (X.data <= W))
    D = kc.dissimilarity(X, thr, W, tile_size=16)
    assert_allclose(D, kc.dissimilarity_ref(X.toarray(), thr, W), rtol=1e-10, atol=1e-10)


def test_step_kernels_py_func_run():
    ld = _logdata(n_cells=8, n_genes=20, seed=2)
    X = ld.X
    thr = np.full(8, np.quantile(X.data, 0.4))
    W = float(np.quantile(X.data, 0.7))
    data = np.asarray(X.data, dtype=np.float64)
    rows = np.arange(2, 6)
    args = (data, X.indices, X.indptr, rows, thr, W, X.shape[1])
    lists = kc._step_tile_lists(*args)
    lists_py = kc._step_tile_lists.py_func(*args)
    for a, b in zip(lists, lists_py, strict=True):
        assert_array_equal(a, b)
    # entries of a gene are in increasing t; list 2 (above W) is inside list 1
    p0, t0 = lists[0], lists[1]
    for g in range(X.shape[1]):
        assert np.all(np.diff(t0[p0[g] : p0[g + 1]]) > 0)
    assert lists[7].size <= lists[4].size
    base = np.zeros(4)
    kargs = (data, X.indices, X.indptr, thr, W, *lists, 4, base, 0, 8)
    assert_array_equal(kc._dissim_tile_step.py_func(*kargs), kc._dissim_tile_step(*kargs))
