"""pp.dropout_genes: both flavors against dense references, selection rules, side effects."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from anndata.tests.helpers import assert_equal
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse, stats

import scdropout as sd
from scdropout import kernels

VAR = ["rank", "effect", "pval", "qval", "selected"]


def _m3drop_reference(C):
    """Dense transcription of ALGORITHMS.md §3 (M3DropFeatureSelection), genes with p < 1."""
    C = np.asarray(C, dtype=np.float64)
    lib = C.sum(1)
    N = C / lib[:, None] * np.median(lib)
    n = N.shape[0]
    p, s = (N == 0).mean(0), N.mean(0)
    keep = p < 1
    p, s, sq = p[keep], s[keep], (N**2).mean(0)[keep]
    fit = kernels.fit_michaelis_menten(p, s)
    se_p, se_s = np.sqrt(p * (1 - p) / n), np.sqrt((sq - s**2) / n)
    p0 = np.where(p == 0, p[p > 0].min() / 2, p)
    kg = p0 * s / (1 - p0)
    se_k = kg * np.sqrt((se_s / s) ** 2 + (se_p / p0) ** 2)
    with np.errstate(divide="ignore"):
        delta = np.abs(np.log(np.maximum(kg - se_k, 1e-100)) - np.log(kg))
    delta[kg - se_k <= 0] = 1e10
    sigma_k = np.std(np.log(kg) - np.log(fit.K), ddof=1) / np.sqrt(kg.size)
    pval = stats.norm.sf((np.log(kg) - np.log(fit.K)) / np.sqrt(delta**2 + sigma_k**2))
    pval[(p == 0) | np.isnan(pval)] = 1.0
    return keep, fit, kg / fit.K, pval


def _table(a, key):
    return a.var[[f"{key}_{k}" for k in VAR]].rename(columns=lambda c: c[len(key) + 1 :])


# --------------------------------------------------------------------------------------------
# numbers


def test_nbumi_flavor_shares_dropout_stats_test(dropout_reference):
    a = dropout_reference
    t = _table(a, "dropout_genes")
    assert_array_equal(t["pval"], a.var["dropout_pval"])
    assert_array_equal(t["qval"], a.var["dropout_qval"])  # BH by default for nbumi
    tested = a.var["dropout_n_detected"] > 0
    assert_allclose(
        t["effect"][tested], (a.var["dropout_rate"] - a.var["dropout_expected"])[tested]
    )
    assert t["effect"][~tested].isna().all()
    u = a.uns["dropout_genes"]
    assert u["trend_intercept"] == a.uns["dropout"]["nbumi"]["trend_intercept"]
    assert (u["flavor"], u["correction"], u["n_selected"]) == ("nbumi", "bh", 60)
    assert u["n_tested"] == tested.sum()


def test_m3drop_flavor_matches_dense_reference(dropout_reference):
    a = dropout_reference
    keep, fit, effect, pval = _m3drop_reference(a.X.toarray())
    t = _table(a, "mm")
    assert a.uns["mm"]["K"] == pytest.approx(fit.K, rel=1e-9)
    assert a.uns["mm"]["K_err"] == pytest.approx(fit.K_err, rel=1e-6)
    assert a.uns["mm"]["K"] == a.uns["dropout"]["m3drop"]["K"]
    assert_allclose(t["effect"][keep], effect, rtol=1e-9)
    assert_allclose(t["pval"][keep], pval, rtol=1e-8, atol=1e-300)
    assert t["effect"][~keep].isna().all()
    assert (t["pval"][~keep] == 1).all()
    # Bonferroni over the tested genes by default for m3drop
    assert_allclose(t["qval"][keep], np.minimum(1, pval * keep.sum()), rtol=1e-8, atol=1e-300)
    assert a.uns["mm"]["correction"] == "bonferroni"


def test_rank_orders_by_pval_then_effect(dropout_reference):
    for key in ("dropout_genes", "mm"):
        t = _table(dropout_reference, key).sort_values("rank")
        assert_array_equal(t["rank"], np.arange(1, len(t) + 1))
        assert t["rank"].dtype == np.int64
        tested = t["effect"].notna().to_numpy()
        assert not tested[np.argmin(tested) :].any()  # untested genes last
        p, e = t["pval"].to_numpy()[tested], t["effect"].to_numpy()[tested]
        assert (np.diff(p) >= 0).all()
        ties = np.diff(p) == 0
        assert (np.diff(e)[ties] <= 0).all()  # ties broken by the larger effect
        assert_array_equal(t["selected"], t["rank"] <= 60)


def test_correction_can_be_overridden(synthetic):
    sd.pp.dropout_genes(synthetic, flavor="m3drop", correction="bh", key_added="mb")
    sd.pp.dropout_genes(synthetic, flavor="nbumi", correction="bonferroni", key_added="nb")
    for key in ("mb", "nb"):
        t = _table(synthetic, key)
        tested = t["effect"].notna()
        fn = kernels.bh_qvalues if key == "mb" else kernels.bonferroni_qvalues
        assert_allclose(t["qval"][tested], fn(t["pval"][tested]), rtol=1e-12)
        assert_array_equal(t["selected"], tested & (t["qval"] < 0.05))
    assert synthetic.uns["mb"]["correction"] == "bh"
    assert synthetic.uns["mb"]["params"]["correction"] == "bh"


@pytest.mark.parametrize(
    ("flavor", "floor_20", "floor_60"),
    [
        # measured on the 300-cell fixture (60 of its 500 genes are markers, 0.12 by chance):
        # nbumi 20/20 of the top 20 and 38/60 (0.63) of the top 60 are markers; m3drop 20/20
        # and 30/60 (0.50). Weak markers (low fold change, low expression) are the misses.
        ("nbumi", 0.9, 0.55),
        ("m3drop", 0.9, 0.42),
    ],
)
def test_top_genes_are_enriched_for_planted_markers(dropout_reference, flavor, floor_20, floor_60):
    key = "dropout_genes" if flavor == "nbumi" else "mm"
    v = dropout_reference.var
    sel = v[f"{key}_selected"]
    assert sel.sum() == 60
    assert (v.loc[sel, "marker_of"] != "").mean() >= floor_60
    assert (v.loc[v[f"{key}_rank"] <= 20, "marker_of"] != "").mean() >= floor_20


def test_fdr_selection(synthetic):
    sd.pp.dropout_genes(synthetic, fdr=0.01)
    t = _table(synthetic, "dropout_genes")
    assert_array_equal(t["selected"], t["qval"] < 0.01)
    n = synthetic.uns["dropout_genes"]["n_selected"]
    assert n == t["selected"].sum() > 0
    assert synthetic.uns["dropout_genes"]["params"]["n_top_genes"] == "None"


def test_n_top_genes_wins_over_fdr(synthetic):
    sd.pp.dropout_genes(synthetic, n_top_genes=5, fdr=1e-300)
    assert synthetic.var["dropout_genes_selected"].sum() == 5


def test_n_top_genes_never_selects_untested_genes(synthetic):
    sd.pp.dropout_genes(synthetic, flavor="m3drop", n_top_genes=synthetic.n_vars)
    v = synthetic.var
    assert v["dropout_genes_selected"].sum() == synthetic.uns["dropout_genes"]["n_tested"]
    assert not v.loc[v["dropout_genes_effect"].isna(), "dropout_genes_selected"].any()


def test_selection_masks_work_downstream(dropout_reference):
    import scanpy as sc

    a = dropout_reference
    assert a[:, a.var["dropout_genes_selected"]].shape == (a.n_obs, 60)
    sc.pp.pca(a, n_comps=5, mask_var="mm_selected")
    assert a.obsm["X_pca"].shape == (a.n_obs, 5)


def test_no_gene_selected_warns(synthetic):
    with pytest.warns(UserWarning, match=r"selected no gene.*raise `fdr`"):
        sd.pp.dropout_genes(synthetic, flavor="m3drop", fdr=1e-300)
    assert synthetic.uns["dropout_genes"]["n_selected"] == 0
    assert not synthetic.var["dropout_genes_selected"].any()


# --------------------------------------------------------------------------------------------
# invariants


@pytest.mark.parametrize("flavor", ["nbumi", "m3drop"])
def test_formats_agree(synthetic, dropout_reference, matrix_format, flavor):
    key = "dropout_genes" if flavor == "nbumi" else "mm"
    synthetic.X = matrix_format(synthetic.X.astype(np.int64))
    sd.pp.dropout_genes(synthetic, flavor=flavor, n_top_genes=60, key_added=key)
    got, want = _table(synthetic, key), _table(dropout_reference, key)
    assert_array_equal(got["selected"], want["selected"])
    for c in ("effect", "pval", "qval"):
        assert_allclose(got[c], want[c], rtol=1e-10, atol=1e-300, err_msg=c)


def test_permuting_cells_keeps_results(synthetic, dropout_reference):
    a = synthetic[np.random.default_rng(1).permutation(synthetic.n_obs)].copy()
    sd.pp.dropout_genes(a, flavor="m3drop", n_top_genes=60, key_added="mm")
    got, want = _table(a, "mm"), _table(dropout_reference, "mm")
    for c in ("effect", "pval", "qval"):
        assert_allclose(got[c], want[c], rtol=1e-12, atol=1e-300, err_msg=c)
    assert_array_equal(got["selected"], want["selected"])


def test_n_jobs_does_not_change_results(synthetic):
    b = synthetic.copy()
    sd.pp.dropout_genes(synthetic, n_jobs=1)
    sd.pp.dropout_genes(b, n_jobs=2)
    pd.testing.assert_frame_equal(_table(synthetic, "dropout_genes"), _table(b, "dropout_genes"))


def test_numpy_scalar_arguments_are_accepted(synthetic):
    b = synthetic.copy()
    sd.pp.dropout_genes(synthetic, fdr=0.2, n_jobs=1)
    sd.pp.dropout_genes(b, fdr=np.float32(0.2), n_jobs=np.int64(1))
    pd.testing.assert_frame_equal(_table(synthetic, "dropout_genes"), _table(b, "dropout_genes"))


# --------------------------------------------------------------------------------------------
# side effects


def test_writes_exactly_the_documented_keys(synthetic):
    before_var, before_uns = set(synthetic.var), set(synthetic.uns)
    assert sd.pp.dropout_genes(synthetic, flavor="m3drop", key_added="sel") is None
    assert set(synthetic.var) - before_var == {f"sel_{k}" for k in VAR}
    assert set(synthetic.uns) - before_uns == {"sel", "scdropout"}
    assert set(synthetic.uns["sel"]) == {
        "params",
        "flavor",
        "correction",
        "n_selected",
        "n_tested",
        "K",
        "K_err",
        "sigma",
    }
    assert set(synthetic.uns["sel"]["params"]) == {
        "flavor",
        "n_top_genes",
        "fdr",
        "correction",
        "layer",
        "n_jobs",
        "key_added",
        "copy",
    }
    assert synthetic.var["sel_selected"].dtype == bool
    assert list(synthetic.obs.columns) == ["group", "library_size_true"]


def test_copy_leaves_input_unchanged(synthetic):
    before = synthetic.copy()
    out = sd.pp.dropout_genes(synthetic, copy=True, n_top_genes=10)
    assert_equal(synthetic, before)
    assert out.var["dropout_genes_selected"].sum() == 10


def test_round_trip_h5ad(dropout_reference, tmp_path):
    dropout_reference.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    for key in ("dropout_genes", "mm"):
        pd.testing.assert_frame_equal(_table(back, key), _table(dropout_reference, key))
        assert back.uns[key]["params"]["correction"] == "None"
    sd.pp.dropout_genes(back, n_top_genes=60)  # still ours after the round trip


def test_rerun_overwrites_and_foreign_key_raises(synthetic):
    sd.pp.dropout_genes(synthetic, n_top_genes=10)
    sd.pp.dropout_genes(synthetic, n_top_genes=20)
    assert synthetic.var["dropout_genes_selected"].sum() == 20
    synthetic.var["mine_rank"] = 1
    before = synthetic.copy()
    with pytest.raises(ValueError, match=r"adata.var\['mine_rank'\].*another `key_added`"):
        sd.pp.dropout_genes(synthetic, key_added="mine")
    assert_equal(synthetic, before)


# --------------------------------------------------------------------------------------------
# errors


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (
            {"flavor": "seurat"},
            ValueError,
            r"`flavor='seurat'` is not valid; choose one of 'nbumi', 'm3drop'",
        ),
        (
            {"correction": "holm"},
            ValueError,
            r"`correction='holm'` is not valid; choose one of 'bh'",
        ),
        ({"n_top_genes": 0}, ValueError, r"`n_top_genes` must be at least 1, got 0"),
        ({"n_top_genes": 6}, ValueError, r"`n_top_genes=6` exceeds the number of genes \(5\)"),
        ({"n_top_genes": 2.5}, TypeError, r"`n_top_genes` must be an integer"),
        ({"fdr": 0}, ValueError, r"`fdr` must be a number in \(0, 1\] or None, got 0"),
        ({"fdr": 1.5}, ValueError, r"`fdr` must be a number in \(0, 1\]"),
        ({"fdr": None}, ValueError, r"`n_top_genes` and `fdr` are both None"),
        ({"n_jobs": -3}, ValueError, r"`n_jobs` must be a positive integer"),
        ({"layer": "raw"}, KeyError, r"`layer='raw'` is not in `adata.layers`"),
        ({"copy": 1}, TypeError, r"`copy` must be True or False"),
    ],
)
def test_bad_arguments(tiny_counts, kwargs, error, match):
    before = tiny_counts.copy()
    with pytest.raises(error, match=match):
        sd.pp.dropout_genes(tiny_counts, **kwargs)
    assert_equal(tiny_counts, before)


@pytest.mark.parametrize("flavor", ["nbumi", "m3drop"])
def test_bad_data(tiny_counts, flavor):
    X = tiny_counts.X.toarray()
    X[3, 1] = 2.5
    tiny_counts.layers["counts"] = sparse.csc_matrix(X)
    with pytest.raises(ValueError, match=r"`layer='counts'` holds non-integer values.*'cell3'"):
        sd.pp.dropout_genes(tiny_counts, flavor=flavor, layer="counts")
    X[3, 1] = 0
    X[3] = 0
    tiny_counts.layers["counts"] = X
    with pytest.raises(ValueError, match=r"1 cell\(s\) without any counts \(first 'cell3'\)"):
        sd.pp.dropout_genes(tiny_counts, flavor=flavor, layer="counts")
    with pytest.raises(TypeError, match="`adata` must be an AnnData"):
        sd.pp.dropout_genes(X, flavor=flavor)
