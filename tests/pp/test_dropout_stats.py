"""pp.dropout_stats: numbers against dense references, invariants, side effects, errors."""

from __future__ import annotations

import logging

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from anndata.tests.helpers import assert_equal
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse, stats

import scdropout as sd
from scdropout import kernels

VAR = [
    "n_detected",
    "detection_rate",
    "rate",
    "mean",
    "var",
    "mean_nonzero",
    "mean_normalized",
    "expected_poisson",
    "expected",
    "nb_size",
    "excess",
    "zscore",
    "pval",
    "qval",
]
OBS = ["total_counts", "n_detected", "zeros", "expected_zeros", "expected_zeros_poisson"]


def _reference(C):
    """Dense transcription of ALGORITHMS.md §4.1-4.3 and §3 steps 1-3 from the *_ref kernels."""
    C = np.asarray(C, dtype=np.float64)
    n, g = C.shape
    tg, tj = C.sum(0), C.sum(1)
    size = kernels.nbumi_size_ref(C, tg, tj)
    b0, b1 = kernels.fit_dispersion_trend(size, tg, n)
    with np.errstate(divide="ignore"):
        smooth = np.exp(b0 + b1 * np.log(tg / n))
    nb = kernels.expected_zeros_ref(tg, tj, np.where(tg > 0, smooth, 1.0))
    pois = kernels.expected_zeros_ref(tg, tj)
    rate = (C == 0).mean(0)
    expected = np.maximum(nb.gene_rate, 1 / n)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (rate - expected) / np.sqrt(nb.gene_var + rate * (1 - rate) / n)
    z[tg == 0] = np.nan
    pval = np.where(np.isnan(z), 1.0, stats.norm.sf(z))
    qval = np.ones(g)
    qval[tg > 0] = kernels.bh_qvalues(pval[tg > 0])
    norm = C / tj[:, None] * np.median(tj)
    p_m3, s_m3 = (norm == 0).mean(0), norm.mean(0)
    mm = kernels.fit_michaelis_menten(p_m3[p_m3 < 1], s_m3[p_m3 < 1])
    return {
        "var": {
            "n_detected": (C != 0).sum(0),
            "rate": rate,
            "mean": C.mean(0),
            "var": C.var(0, ddof=1),
            "mean_normalized": s_m3,
            "expected_poisson": np.maximum(pois.gene_rate, 1 / n),
            "expected": expected,
            "nb_size": size,
            "excess": n * (rate - expected),
            "zscore": z,
            "pval": pval,
            "qval": qval,
        },
        "obs": {
            "total_counts": tj,
            "n_detected": (C != 0).sum(1),
            "zeros": (C == 0).sum(1),
            "expected_zeros": nb.cell_zeros,
            "expected_zeros_poisson": pois.cell_zeros,
        },
        "trend": (b0, b1),
        "gene_error": float(np.sum((nb.gene_rate * n - (C == 0).sum(0)) ** 2)),
        "cell_error": float(np.sum((nb.cell_zeros - (C == 0).sum(1)) ** 2)),
        "cell_error_poisson": float(np.sum((pois.cell_zeros - (C == 0).sum(1)) ** 2)),
        "mm": mm,
    }


def _frames(a, key="dropout"):
    var = a.var[[f"{key}_{k}" for k in VAR]]
    obs = a.obs[[f"{key}_{k}" for k in OBS]]
    return var, obs


def _assert_frames_close(a, b, *, key_a="dropout", key_b="dropout", rtol=1e-12):
    for fa, fb in zip(_frames(a, key_a), _frames(b, key_b), strict=True):
        for ca, cb in zip(fa.columns, fb.columns, strict=True):
            assert_allclose(fa[ca].to_numpy(), fb[cb].to_numpy(), rtol=rtol, err_msg=ca)


# --------------------------------------------------------------------------------------------
# numbers


def test_values_match_dense_reference(dropout_reference):
    a = dropout_reference
    ref = _reference(a.X.toarray())
    for k, want in ref["var"].items():
        got = a.var[f"dropout_{k}"].to_numpy()
        assert_allclose(got, want, rtol=1e-9, atol=1e-300, err_msg=k)
    for k, want in ref["obs"].items():
        assert_allclose(a.obs[f"dropout_{k}"].to_numpy(), want, rtol=1e-10, err_msg=k)
    u = a.uns["dropout"]
    assert (u["nbumi"]["trend_intercept"], u["nbumi"]["trend_slope"]) == pytest.approx(
        ref["trend"], rel=1e-10
    )
    assert u["nbumi"]["gene_error"] == pytest.approx(ref["gene_error"], rel=1e-9)
    assert u["nbumi"]["cell_error"] == pytest.approx(ref["cell_error"], rel=1e-9)
    assert u["nbumi"]["cell_error_poisson"] == pytest.approx(ref["cell_error_poisson"], rel=1e-9)
    # the NB fits the zeros far better than the Poisson on over-dispersed counts
    assert u["nbumi"]["gene_error"] < u["nbumi"]["gene_error_poisson"]
    assert u["m3drop"]["K"] == pytest.approx(ref["mm"].K, rel=1e-9)
    assert u["m3drop"]["sigma"] == pytest.approx(ref["mm"].sigma, rel=1e-9)
    s = u["summary"]
    assert (s["n_cells"], s["n_genes"]) == a.shape
    assert s["sparsity"] == pytest.approx((a.X.toarray() == 0).mean())
    assert s["median_library_size"] == np.median(ref["obs"]["total_counts"])


def test_genes_without_counts(dropout_reference):
    a = dropout_reference
    empty = a.var["dropout_n_detected"].to_numpy() == 0
    assert 0 < empty.sum() == a.uns["dropout"]["summary"]["n_genes_without_counts"]
    row = a.var.loc[empty]
    assert (row["dropout_rate"] == 1).all()
    assert (row["dropout_expected"] == 1).all()
    assert (row["dropout_expected_poisson"] == 1).all()
    assert (row["dropout_excess"] == 0).all()
    assert row["dropout_zscore"].isna().all()
    assert row["dropout_nb_size"].isna().all()
    assert row["dropout_mean_nonzero"].isna().all()
    assert (row["dropout_pval"] == 1).all()
    assert (row["dropout_qval"] == 1).all()


def test_dtypes_and_ranges(dropout_reference):
    a = dropout_reference
    assert a.var["dropout_n_detected"].dtype == np.int64
    assert a.obs["dropout_n_detected"].dtype == np.int64
    assert a.obs["dropout_zeros"].dtype == np.int64
    for k in ("rate", "detection_rate", "expected", "expected_poisson", "pval", "qval"):
        v = a.var[f"dropout_{k}"]
        assert ((v >= 0) & (v <= 1)).all(), k
    assert_allclose(a.var["dropout_rate"] + a.var["dropout_detection_rate"], 1.0)
    assert_array_equal(
        a.obs["dropout_zeros"] + a.obs["dropout_n_detected"], np.full(a.n_obs, a.n_vars)
    )


def test_excess_zero_genes_are_enriched_for_markers(dropout_reference):
    # planted truth: markers are off in other groups, so they have more zeros than the NB
    # expects from their mean. Measured on the fixture: 32 of the 40 genes with q < 0.05 are
    # markers (0.80; 60 markers among 500 genes, 0.12 by chance).
    v = dropout_reference.var
    hits = v["dropout_qval"] < 0.05
    frac = (v.loc[hits, "marker_of"] != "").mean()
    assert hits.sum() >= 20
    assert frac >= 0.7


# --------------------------------------------------------------------------------------------
# invariants


def test_formats_and_dtypes_agree(synthetic, dropout_reference, matrix_format, count_dtype):
    a = synthetic
    a.X = matrix_format(a.X.astype(count_dtype))
    sd.pp.dropout_stats(a)
    _assert_frames_close(a, dropout_reference)


def test_duplicate_sparse_entries_count_as_their_sum(synthetic, dropout_reference):
    # scipy may store a position twice, as two entries whose sum is the value: split every
    # stored count c >= 2 into 1 + (c - 1) and the statistics must not change
    X = synthetic.X.tocoo()
    big = X.data >= 2
    rows = np.concatenate([X.row, X.row[big]])
    cols = np.concatenate([X.col, X.col[big]])
    data = np.concatenate([np.where(big, 1, X.data), X.data[big] - 1])
    order = np.lexsort((cols, rows))
    indptr = np.r_[0, np.cumsum(np.bincount(rows, minlength=X.shape[0]))]
    a = synthetic.copy()
    a.X = sparse.csr_matrix((data[order], cols[order], indptr), shape=X.shape)  # not summed
    assert a.X.nnz > synthetic.X.nnz
    sd.pp.dropout_stats(a)
    _assert_frames_close(a, dropout_reference)


def test_layer_equals_x(synthetic, dropout_reference):
    a = synthetic
    a.layers["counts"] = a.X.copy()
    a.X = sparse.csr_matrix(np.log1p(a.X.toarray()))  # X no longer counts
    sd.pp.dropout_stats(a, layer="counts", key_added="lay")
    _assert_frames_close(a, dropout_reference, key_a="lay", rtol=0)
    assert a.uns["lay"]["params"]["layer"] == "counts"


def test_permuting_cells_permutes_obs_and_keeps_var(synthetic, dropout_reference):
    perm = np.random.default_rng(0).permutation(synthetic.n_obs)
    a = synthetic[perm].copy()
    sd.pp.dropout_stats(a)
    ref_var, ref_obs = _frames(dropout_reference)
    var, obs = _frames(a)
    for c in var.columns:
        assert_allclose(var[c].to_numpy(), ref_var[c].to_numpy(), rtol=1e-12, err_msg=c)
    for c in obs.columns:
        assert_allclose(obs[c].to_numpy(), ref_obs[c].to_numpy()[perm], rtol=1e-12, err_msg=c)
    for part in ("nbumi", "m3drop"):
        for k, v in dropout_reference.uns["dropout"][part].items():
            assert a.uns["dropout"][part][k] == pytest.approx(v, rel=1e-12), k


def test_extra_gene_without_counts_leaves_other_genes_unchanged(synthetic, dropout_reference):
    a = synthetic
    X = sparse.hstack([a.X, sparse.csr_matrix((a.n_obs, 1), dtype=a.X.dtype)], format="csr")
    b = ad.AnnData(X=X, obs=a.obs, var=pd.DataFrame(index=[*a.var_names, "EMPTY"]))
    sd.pp.dropout_stats(b)
    ref_var, ref_obs = _frames(dropout_reference)
    var, obs = _frames(b)
    for c in var.columns:  # NB/Poisson expectations depend on the totals only
        assert_allclose(var[c].to_numpy()[:-1], ref_var[c].to_numpy(), rtol=1e-12, err_msg=c)
    assert var.loc["EMPTY", "dropout_rate"] == 1
    assert var.loc["EMPTY", "dropout_pval"] == 1
    # each cell gains one observed and one expected zero
    for c in ("zeros", "expected_zeros", "expected_zeros_poisson"):
        assert_allclose(obs[f"dropout_{c}"], ref_obs[f"dropout_{c}"] + 1, rtol=1e-12)
    for part in ("nbumi", "m3drop"):
        for k, v in dropout_reference.uns["dropout"][part].items():
            assert b.uns["dropout"][part][k] == pytest.approx(v, rel=1e-12), k


def test_n_jobs_does_not_change_results(synthetic):
    a, b = synthetic, synthetic.copy()
    sd.pp.dropout_stats(a, n_jobs=1)
    sd.pp.dropout_stats(b, n_jobs=2)
    for fa, fb in zip(_frames(a), _frames(b), strict=True):
        pd.testing.assert_frame_equal(fa, fb, check_exact=True)
    assert a.uns["dropout"]["nbumi"] == b.uns["dropout"]["nbumi"]
    assert a.uns["dropout"]["params"]["n_jobs"] == 1


# --------------------------------------------------------------------------------------------
# side effects


def test_writes_exactly_the_documented_keys(synthetic):
    a = synthetic
    before_var, before_obs, before_uns = set(a.var), set(a.obs), set(a.uns)
    assert sd.pp.dropout_stats(a, key_added="zz") is None
    assert set(a.var) - before_var == {f"zz_{k}" for k in VAR}
    assert set(a.obs) - before_obs == {f"zz_{k}" for k in OBS}
    assert set(a.uns) - before_uns == {"zz", "scdropout"}
    assert set(a.uns["zz"]) == {"params", "nbumi", "m3drop", "summary"}
    assert set(a.uns["zz"]["params"]) == {"layer", "n_jobs", "key_added", "copy"}
    assert set(a.uns["zz"]["nbumi"]) == {
        "trend_intercept",
        "trend_slope",
        "gene_error",
        "cell_error",
        "gene_error_poisson",
        "cell_error_poisson",
    }
    assert set(a.uns["zz"]["m3drop"]) == {"K", "K_err", "sigma"}
    assert not any(k.startswith("dropout") for k in a.var.columns)


def test_copy_leaves_input_unchanged(synthetic):
    before = synthetic.copy()
    out = sd.pp.dropout_stats(synthetic, copy=True)
    assert_equal(synthetic, before)
    assert isinstance(out, ad.AnnData)
    assert "dropout_rate" in out.var
    assert out.uns["dropout"]["params"]["copy"]


def test_round_trip_h5ad(dropout_reference, tmp_path):
    path = tmp_path / "a.h5ad"
    dropout_reference.write_h5ad(path)
    back = ad.read_h5ad(path)
    _assert_frames_close(back, dropout_reference, rtol=0)
    assert back.uns["dropout"]["params"]["layer"] == "None"
    assert back.uns["dropout"]["m3drop"]["K"] == dropout_reference.uns["dropout"]["m3drop"]["K"]
    # scdropout still owns its keys after the round trip: re-running overwrites them
    sd.pp.dropout_stats(back)


def test_rerun_overwrites_own_keys_and_logs_one_line(synthetic, dropout_reference, caplog):
    logger = logging.getLogger("scdropout")  # propagate=False: attach pytest's handler
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="scdropout"):
            sd.pp.dropout_stats(synthetic)
            caplog.clear()
            sd.pp.dropout_stats(synthetic)
    finally:
        logger.removeHandler(caplog.handler)
    _assert_frames_close(synthetic, dropout_reference)
    overwrites = [r for r in caplog.records if "overwriting" in r.getMessage()]
    assert len(overwrites) == len(VAR) + len(OBS) + 1
    (summary,) = [r for r in caplog.records if r.getMessage().startswith("dropout_stats: wrote")]
    assert "var['dropout_qval']" in summary.getMessage()
    assert "obs['dropout_expected_zeros']" in summary.getMessage()


def test_foreign_key_is_never_overwritten(synthetic):
    synthetic.var["dropout_rate"] = "mine"
    before = synthetic.copy()
    with pytest.raises(ValueError, match=r"adata.var\['dropout_rate'\].*not written by scdropout"):
        sd.pp.dropout_stats(synthetic)
    assert_equal(synthetic, before)
    sd.pp.dropout_stats(synthetic, key_added="other")  # the way out
    assert (synthetic.var["dropout_rate"] == "mine").all()


# --------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("value", "match"),
    [
        (np.nan, r"`layer='counts'` holds NaN or infinite values.*cell 'cell1', gene 'gene2'"),
        (
            -1.0,
            r"`layer='counts'` holds negative values \(first .*-1\.0.*cell 'cell1', gene 'gene2'",
        ),
        (0.5, r"`layer='counts'` holds non-integer values \(first .*0\.5.*cell 'cell1'"),
    ],
)
def test_bad_counts(tiny_counts, value, match):
    X = tiny_counts.X.toarray()
    X[1, 2] = value
    tiny_counts.layers["counts"] = X
    before = tiny_counts.copy()
    with pytest.raises(ValueError, match=match):
        sd.pp.dropout_stats(tiny_counts, layer="counts")
    assert_equal(tiny_counts, before)


def test_cells_without_counts_are_refused(tiny_counts):
    X = tiny_counts.X.toarray()
    X[[2, 4]] = 0
    tiny_counts.X = sparse.csr_matrix(X)
    with pytest.raises(ValueError, match=r"2 cell\(s\) without any counts \(first 'cell2'\).*"):
        sd.pp.dropout_stats(tiny_counts)
    with pytest.raises(ValueError, match=r"sc\.pp\.filter_cells\(adata, min_counts=1\)"):
        sd.pp.dropout_stats(tiny_counts)


def test_wrong_types(tiny_counts):
    with pytest.raises(TypeError, match=r"`adata` must be an AnnData, got numpy\.ndarray"):
        sd.pp.dropout_stats(tiny_counts.X.toarray())
    a = tiny_counts.copy()
    a._X = sparse.coo_matrix(a.X)  # AnnData refuses COO itself; arrays can still get here
    with pytest.raises(TypeError, match=r"`adata.X` is a scipy.sparse.*coo.*tocsr"):
        sd.pp.dropout_stats(a)
    fake_dask = type("Array", (), {"__module__": "dask.array.core", "ndim": 2})()
    a._X = fake_dask
    with pytest.raises(TypeError, match=r"dask.*\.compute\(\)"):
        sd.pp.dropout_stats(a)
    with pytest.raises(TypeError, match="`copy` must be True or False"):
        sd.pp.dropout_stats(tiny_counts, copy="yes")
    with pytest.raises(TypeError, match="`key_added` must be a string"):
        sd.pp.dropout_stats(tiny_counts, key_added=3)
    with pytest.raises(TypeError, match="positional"):
        sd.pp.dropout_stats(tiny_counts, None)


def test_missing_layer_lists_layers(tiny_counts):
    tiny_counts.layers["counts"] = tiny_counts.X.copy()
    with pytest.raises(
        KeyError, match=r"`layer='raw'` is not in `adata.layers`. Available: 'counts'"
    ):
        sd.pp.dropout_stats(tiny_counts, layer="raw")


def test_bad_arguments(tiny_counts):
    with pytest.raises(ValueError, match="`n_jobs` must be a positive integer"):
        sd.pp.dropout_stats(tiny_counts, n_jobs=0)
    with pytest.raises(ValueError, match="`key_added` must not be empty"):
        sd.pp.dropout_stats(tiny_counts, key_added="")
    with pytest.raises(ValueError, match="at least 2 cells"):
        sd.pp.dropout_stats(tiny_counts[:1].copy())


def test_few_zeros_warn(tiny_counts):
    rng = np.random.default_rng(0)
    X = rng.negative_binomial(3, 0.1, size=(40, 30)).astype(np.float32) + 1
    X[0, 0] = 0
    a = ad.AnnData(X=X)
    with pytest.warns(UserWarning, match=r"only 0.1% zeros"):
        sd.pp.dropout_stats(a)
    assert "dropout_rate" in a.var
