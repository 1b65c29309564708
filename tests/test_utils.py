"""Shared helpers: input checks, result writing, random state, threads, warnings, settings."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import scdropout as sd
from scdropout import _utils


def _adata(X=None):
    X = sparse.csr_matrix(np.array([[1, 0, 2], [0, 3, 0]], dtype=np.float32)) if X is None else X
    return ad.AnnData(
        X=X,
        obs=pd.DataFrame(index=["c1", "c2"]),
        var=pd.DataFrame(index=["g1", "g2", "g3"]),
    )


def test_check_adata_rejects_other_types():
    with pytest.raises(TypeError, match=r"`adata` must be an AnnData, got numpy.ndarray"):
        _utils.check_adata(np.zeros((2, 2)))


def test_check_adata_rejects_backed(tmp_path):
    a = _adata()
    a.write_h5ad(tmp_path / "a.h5ad")
    backed = ad.read_h5ad(tmp_path / "a.h5ad", backed="r")
    try:
        with pytest.raises(TypeError, match="backed mode"):
            _utils.get_matrix(backed, None)
    finally:
        backed.file.close()


def test_check_matrix_type_rejects_coo_and_names_it():
    # AnnData itself refuses COO in X/layers; arrays reach us through kernels and readers too
    with pytest.raises(TypeError, match=r"`counts` is a scipy.sparse.*coo.*tocsr"):
        _utils.check_matrix_type(sparse.coo_matrix(np.eye(2)), name="`counts`")
    with pytest.warns(PendingDeprecationWarning):  # numpy warns on creating np.matrix
        m = np.asmatrix(np.eye(2))
    with pytest.raises(TypeError, match=r"np.asarray"):
        _utils.check_matrix_type(m, name="`counts`")


def test_get_matrix_missing_layer_lists_existing():
    a = _adata()
    a.layers["counts"] = a.X.copy()
    with pytest.raises(
        KeyError, match=r"`layer='raw'` is not in `adata.layers`. Available: 'counts'"
    ):
        _utils.get_matrix(a, "raw")


@pytest.mark.parametrize(
    ("value", "label"),
    [(np.nan, "NaN or infinite"), (-1.0, "negative"), (0.5, "non-integer")],
)
@pytest.mark.parametrize("fmt", ["csr", "csc", "dense"])
def test_check_counts_names_value_cell_and_gene(value, label, fmt):
    dense = np.array([[1, 0, 2], [0, 3, 0]], dtype=np.float64)
    dense[1, 2] = value
    X = {"csr": sparse.csr_matrix, "csc": sparse.csc_matrix, "dense": np.asarray}[fmt](dense)
    with pytest.raises(ValueError, match=rf"`X` holds {label}.*cell 'c2', gene 'g3'"):
        _utils.check_counts(X, name="`X`", obs_names=["c1", "c2"], var_names=["g1", "g2", "g3"])


def test_check_counts_accepts_integer_valued_float_and_int():
    _utils.check_counts(np.array([[1.0, 0.0], [2.0, 5.0]]), name="X")
    _utils.check_counts(np.array([[1, 0], [2, 5]]), name="X")


def test_write_results_records_and_refuses_foreign_keys():
    a = _adata()
    a.obs["mine"] = 1
    written = _utils.write_results(
        a, {"obs": {"k_x": np.array([1.0, 2.0])}, "uns": {"k": {"a": 1}}}, key_added="k", owner="f"
    )
    assert written == ["obs['k_x']", "uns['k']"]
    assert list(a.uns["scdropout"]["written"]["obs"]) == ["k_x"]
    # our own key: overwritten
    _utils.write_results(a, {"obs": {"k_x": np.array([3.0, 4.0])}}, key_added="k", owner="f")
    np.testing.assert_array_equal(a.obs["k_x"], [3.0, 4.0])
    # a foreign key: refused, and nothing else of the batch is written
    with pytest.raises(ValueError, match=r"`adata.obs\['mine'\]` already exists.*key_added"):
        _utils.write_results(
            a,
            {"var": {"new": np.zeros(3)}, "obs": {"mine": np.zeros(2)}},
            key_added="k",
            owner="f",
        )
    assert "new" not in a.var
    np.testing.assert_array_equal(a.obs["mine"], 1)


def test_write_results_removes_own_optional_keys_not_made_this_time():
    a = _adata()
    first = {"obs": {"k_x": np.array([1.0, 2.0]), "k_opt": np.array([5.0, 6.0])}}
    _utils.write_results(a, first, key_added="k", owner="f")
    a.var["k_user"] = 7.0  # the user's, under a name f could write
    optional = {"obs": ["k_opt"], "var": ["k_user"]}
    _utils.write_results(
        a, {"obs": {"k_x": np.array([3.0, 4.0])}}, key_added="k", owner="f", optional=optional
    )
    assert "k_opt" not in a.obs
    assert "k_opt" not in a.uns["scdropout"]["written"]["obs"]
    np.testing.assert_array_equal(a.var["k_user"], 7.0)
    # another function's key is not f's to remove either
    _utils.write_results(a, {"obs": {"g_x": np.zeros(2)}}, key_added="g", owner="g")
    _utils.write_results(a, {}, key_added="k", owner="f", optional={"obs": ["g_x"]})
    assert "g_x" in a.obs


def test_get_matrix_merges_duplicate_sparse_entries_on_a_copy():
    X = sparse.csr_matrix(([1.0, 2.0, 1.0, 1.0], [0, 0, 0, 1], [0, 2, 3, 4]), shape=(3, 2))
    a = ad.AnnData(X=X)
    got = _utils.get_matrix(a, None)
    assert got.has_canonical_format
    assert got.nnz == 3
    np.testing.assert_array_equal(got.toarray(), X.toarray())
    assert a.X.nnz == 4  # the caller's matrix is left as it was
    assert _utils.get_matrix(a, None) is not a.X
    canonical = ad.AnnData(X=sparse.csr_matrix(np.eye(3)))
    assert _utils.get_matrix(canonical, None) is canonical.X  # no copy when not needed


def test_write_results_refuses_a_foreign_record_before_writing():
    a = _adata()
    a.uns["scdropout"] = "my notes"
    with pytest.raises(ValueError, match=r"uns\['scdropout'\]` holds a str"):
        _utils.write_results(a, {"obs": {"k_x": np.zeros(2)}}, key_added="k", owner="f")
    assert "k_x" not in a.obs


def test_write_results_makes_a_view_actual_once():
    a = ad.AnnData(np.ones((4, 3)))
    v = a[:2]
    with pytest.warns(UserWarning, match="view") as rec:
        _utils.write_results(
            v, {"obs": {"k_x": np.zeros(2)}, "var": {"k_y": np.zeros(3)}}, key_added="k", owner="f"
        )
    assert len(rec) == 1
    assert not v.is_view
    assert "k_x" in v.obs
    assert "k_x" not in a.obs


def test_write_results_record_survives_h5ad(tmp_path):
    a = _adata()
    _utils.write_results(a, {"var": {"k_y": np.arange(3.0)}}, key_added="k", owner="f")
    a.write_h5ad(tmp_path / "a.h5ad")
    b = ad.read_h5ad(tmp_path / "a.h5ad")
    # after the round trip the record still protects nothing foreign and allows ours
    _utils.write_results(b, {"var": {"k_y": np.ones(3)}}, key_added="k", owner="f")
    np.testing.assert_array_equal(b.var["k_y"], 1.0)


def test_as_generator():
    g = np.random.default_rng(1)
    assert _utils.as_generator(g) is g
    assert _utils.as_generator(3).integers(1000) == np.random.default_rng(3).integers(1000)
    with pytest.raises(TypeError, match="random_state"):
        _utils.as_generator("seed")
    with pytest.raises(ValueError, match="non-negative"):
        _utils.as_generator(-1)


def test_thread_limit_restores():
    import numba

    before = numba.get_num_threads()
    with _utils.thread_limit(1) as n:
        assert n == 1
        assert numba.get_num_threads() == 1
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError, match="n_jobs"):
        _utils.resolve_n_jobs(0)


def test_check_memory(monkeypatch):
    monkeypatch.setattr(sd.settings, "max_memory_gb", 1)
    with pytest.raises(MemoryError, match=r"needs about 2.0 GB.*fewer genes.*max_memory_gb"):
        _utils.check_memory(2 * 1024**3, what="the thing", ways_out="Use fewer genes.")


def test_warn_points_at_caller():
    with pytest.warns(UserWarning, match="careful") as rec:
        _utils.warn("careful")
    assert rec[0].filename == __file__


def test_settings_validate():
    with pytest.raises(AttributeError, match="no attribute 'verbose'"):
        sd.settings.verbose = 1
    with pytest.raises(ValueError, match="n_jobs"):
        sd.settings.n_jobs = 0


def test_parallel_njit_twins_agree_off_main_thread():
    import threading

    from numba import prange

    from scdropout.kernels._numba import parallel_njit

    @parallel_njit(cache=False)
    def _rowsum(x):
        out = np.zeros(x.shape[0])
        for i in prange(x.shape[0]):
            out[i] = x[i].sum()
        return out

    x = np.arange(12.0).reshape(4, 3)
    main = _rowsum(x)
    box = {}
    t = threading.Thread(target=lambda: box.setdefault("r", _rowsum(x)))
    t.start()
    t.join()
    np.testing.assert_array_equal(main, box["r"])
    assert _rowsum.serial.signatures
    assert _rowsum.parallel.signatures


@pytest.mark.parametrize("integer", [True, False])
@pytest.mark.parametrize(
    "plant",
    [(), ((5, np.nan),), ((7, -1.0), (3, 0.5)), ((11, np.inf), (2, -0.5)), ((0, -np.inf),)],
)
def test_numba_scan_matches_numpy(plant, integer):
    from scdropout._utils._checks import _first_bad
    from scdropout._utils._scan import scan_counts

    x = np.random.default_rng(0).poisson(2, size=5000).astype(np.float64)
    for i, v in plant:
        x[i] = v
    expected = _first_bad(x, is_float=True, integer=integer)  # small: the NumPy path
    assert scan_counts(x, integer) == expected
    assert scan_counts.py_func(x, integer) == expected


def test_check_counts_large_path_gives_same_message(monkeypatch):
    from scdropout._utils import _checks

    dense = np.array([[1, 0, 2], [0, 3, 0.25]])
    args = {"name": "`X`", "obs_names": ["c1", "c2"], "var_names": ["g1", "g2", "g3"]}
    with pytest.raises(
        ValueError, match=r"non-integer values \(first 0.25, cell 'c2', gene 'g3'\)"
    ):
        _utils.check_counts(sparse.csr_matrix(dense), **args)
    monkeypatch.setattr(_checks, "_SCAN_MIN", 0)
    with pytest.raises(
        ValueError, match=r"non-integer values \(first 0.25, cell 'c2', gene 'g3'\)"
    ):
        _utils.check_counts(sparse.csr_matrix(dense), **args)


def test_functions_do_not_overwrite_each_other():
    a = _adata()
    _utils.write_results(a, {"var": {"k_p": np.zeros(3)}}, key_added="k", owner="f")
    with pytest.raises(ValueError, match=r"holds results of `f`.*another `key_added`.*to `g`"):
        _utils.write_results(a, {"var": {"k_p": np.ones(3)}}, key_added="k", owner="g")
    np.testing.assert_array_equal(a.var["k_p"], 0.0)
    _utils.write_results(a, {"var": {"k_p": np.ones(3)}}, key_added="k", owner="f")
    np.testing.assert_array_equal(a.var["k_p"], 1.0)


def test_check_orientation():
    import anndata as ad

    from scdropout._utils import check_orientation

    barcodes = [f"{''.join('ACGT'[(i >> (2 * j)) & 3] for j in range(16))}-1" for i in range(20)]
    genes = [f"Gene{i}" for i in range(5)]
    ok = ad.AnnData(np.zeros((20, 5), dtype=np.float32))
    ok.obs_names, ok.var_names = barcodes, genes
    check_orientation(ok, what="CIDR")  # cells x genes with barcode obs_names
    check_orientation(ad.AnnData(np.zeros((3, 4), dtype=np.float32)), what="CIDR")  # "0", "1"
    with pytest.raises(ValueError, match=r"transposed.*'AAAAAAAAAAAAAAAA-1'.*CIDR needs cells"):
        check_orientation(ok.T.copy(), what="CIDR")
