"""Reporters in scdropout.get: stored dropout results as DataFrames, nothing written."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from anndata.tests.helpers import assert_equal
from scipy import sparse

import scdropout as sd
from scdropout.get._dropout import CELL_STATS, GENE_SELECTION, GENE_STATS

GENES = [f"g{i}" for i in range(6)]
CELLS = [f"c{i}" for i in range(4)]


def _stored(key="dropout", genes_key="dropout_genes"):
    """A small AnnData holding results in the layout pp.dropout_stats/dropout_genes write."""
    rng = np.random.default_rng(0)
    X = sparse.csr_matrix(rng.poisson(1.0, size=(len(CELLS), len(GENES))).astype(np.float32))
    a = ad.AnnData(
        X=X, obs=pd.DataFrame(index=CELLS), var=pd.DataFrame({"other": 1.0}, index=GENES)
    )
    for j, s in enumerate(GENE_STATS):
        a.var[f"{key}_{s}"] = np.arange(len(GENES), dtype=float) + 10 * j
    for j, s in enumerate(CELL_STATS):
        a.obs[f"{key}_{s}"] = np.arange(len(CELLS), dtype=float) + 100 * j
    a.uns[key] = {"params": {"layer": "X"}}
    # ranks deliberately out of var order; g5 unranked (NaN)
    a.var[f"{genes_key}_rank"] = [3.0, 1.0, 5.0, 2.0, 4.0, np.nan]
    a.var[f"{genes_key}_effect"] = [0.3, 0.9, 0.1, 0.5, 0.2, np.nan]
    a.var[f"{genes_key}_pval"] = [0.01, 1e-6, 0.5, 1e-3, 0.2, 1.0]
    a.var[f"{genes_key}_qval"] = [0.02, 1e-5, 0.6, 3e-3, 0.3, 1.0]
    a.var[f"{genes_key}_selected"] = [True, True, False, True, False, False]
    a.uns[genes_key] = {"params": {"flavor": "nbumi"}, "n_selected": 3}
    return a


def test_dropout_stats_unprefixed_columns_in_order():
    a = _stored()
    df = sd.get.dropout_stats(a)
    assert list(df.columns) == list(GENE_STATS)
    assert list(df.index) == GENES
    for s in GENE_STATS:
        np.testing.assert_array_equal(df[s].to_numpy(), a.var[f"dropout_{s}"].to_numpy())
    # neither the unrelated column nor dropout_genes' columns leak in
    assert "other" not in df.columns
    assert not any(c.startswith("genes_") for c in df.columns)


def test_dropout_stats_keeps_only_present_columns():
    a = _stored()
    del a.var["dropout_zscore"]
    df = sd.get.dropout_stats(a)
    assert list(df.columns) == [s for s in GENE_STATS if s != "zscore"]


def test_dropout_cells_unprefixed_columns():
    a = _stored()
    df = sd.get.dropout_cells(a)
    assert list(df.columns) == list(CELL_STATS)
    assert list(df.index) == CELLS
    np.testing.assert_array_equal(df["zeros"], a.obs["dropout_zeros"])


def test_custom_keys():
    a = _stored(key="dz", genes_key="dzg")
    assert list(sd.get.dropout_stats(a, key="dz").columns) == list(GENE_STATS)
    assert list(sd.get.dropout_cells(a, key="dz").columns) == list(CELL_STATS)
    assert list(sd.get.dropout_genes(a, key="dzg").columns) == list(GENE_SELECTION)
    with pytest.raises(KeyError, match="'dz'"):
        sd.get.dropout_stats(a)


def test_dropout_genes_sorted_by_rank_unranked_last():
    a = _stored()
    df = sd.get.dropout_genes(a)
    assert list(df.columns) == list(GENE_SELECTION)
    assert list(df.index) == ["g1", "g3", "g0", "g4", "g2", "g5"]
    assert df["selected"].dtype == bool
    assert df["rank"].iloc[:5].is_monotonic_increasing


def test_dropout_genes_selected_only():
    a = _stored()
    df = sd.get.dropout_genes(a, selected_only=True)
    assert list(df.index) == ["g1", "g3", "g0"]
    assert df["selected"].all()
    assert len(df) == a.uns["dropout_genes"]["n_selected"]


def test_selected_only_without_selected_column_raises():
    a = _stored()
    del a.var["dropout_genes_selected"]
    assert "selected" not in sd.get.dropout_genes(a).columns
    with pytest.raises(KeyError, match="dropout_genes_selected"):
        sd.get.dropout_genes(a, selected_only=True)


def test_selected_only_must_be_bool():
    with pytest.raises(TypeError, match="selected_only"):
        sd.get.dropout_genes(_stored(), selected_only="yes")


@pytest.mark.parametrize(
    ("func", "kwargs"),
    [
        (sd.get.dropout_stats, {}),
        (sd.get.dropout_cells, {}),
        (sd.get.dropout_genes, {}),
        (sd.get.dropout_genes, {"selected_only": True}),
    ],
)
def test_reporters_write_nothing_and_return_copies(func, kwargs):
    a = _stored()
    before = a.copy()
    df = func(a, **kwargs)
    df.iloc[:, 0] = -1  # editing the table must not reach adata
    assert_equal(a, before)


def test_missing_key_lists_available_keys():
    a = _stored()
    for i in range(6):
        a.uns[f"extra{i}"] = i
    with pytest.raises(KeyError, match=r"`key='nope'` is not in `adata.uns`") as err:
        sd.get.dropout_stats(a, key="nope")
    msg = str(err.value)
    assert "'dropout'" in msg
    assert "'dropout_genes'" in msg
    assert "(and 3 more)" in msg  # at most 5 keys listed
    assert "pp.dropout_stats" in msg


@pytest.mark.parametrize("func", [sd.get.dropout_cells, sd.get.dropout_genes])
def test_missing_key_other_reporters(func):
    a = ad.AnnData(X=np.ones((2, 2), dtype=np.float32))
    with pytest.raises(KeyError, match=r"`adata.uns` is empty"):
        func(a, key="dropout")


def test_key_in_uns_but_no_columns():
    a = _stored()
    a.uns["lonely"] = {"params": {}}
    with pytest.raises(KeyError, match=r"none of the `lonely_\*` columns"):
        sd.get.dropout_stats(a, key="lonely")
    with pytest.raises(KeyError, match=r"adata.obs"):
        sd.get.dropout_cells(a, key="lonely")


def test_wrong_types():
    with pytest.raises(TypeError, match="must be an AnnData"):
        sd.get.dropout_stats(np.zeros((2, 2)))
    with pytest.raises(TypeError, match="`key` must be a string"):
        sd.get.dropout_stats(_stored(), key=3)


# --- against the real annotators -------------------------------------------------------------


@pytest.fixture(scope="module")
def annotated(_synthetic_cached):
    a = _synthetic_cached.copy()
    sd.pp.dropout_stats(a)
    sd.pp.dropout_genes(a, n_top_genes=25)
    return a


def test_dropout_stats_from_pp(annotated):
    df = sd.get.dropout_stats(annotated)
    assert list(df.index) == list(annotated.var_names)
    assert {"mean", "rate", "expected", "pval", "qval"} <= set(df.columns)
    # the observed dropout rate is the fraction of zeros of each gene
    X = annotated.X.toarray() if sparse.issparse(annotated.X) else np.asarray(annotated.X)
    np.testing.assert_allclose(df["rate"].to_numpy(), (X == 0).mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(df["mean"].to_numpy(), X.mean(axis=0), rtol=1e-6)
    assert ((df["expected"] >= 0) & (df["expected"] <= 1)).all()


def test_dropout_cells_from_pp(annotated):
    df = sd.get.dropout_cells(annotated)
    X = annotated.X.toarray() if sparse.issparse(annotated.X) else np.asarray(annotated.X)
    assert list(df.index) == list(annotated.obs_names)
    np.testing.assert_allclose(df["total_counts"].to_numpy(), X.sum(axis=1), rtol=1e-6)
    np.testing.assert_array_equal(df["zeros"].to_numpy(), (X == 0).sum(axis=1))


def test_dropout_genes_from_pp(annotated):
    df = sd.get.dropout_genes(annotated)
    assert df["rank"].dropna().is_monotonic_increasing
    top = sd.get.dropout_genes(annotated, selected_only=True)
    assert len(top) == 25 == annotated.uns["dropout_genes"]["n_selected"]
    assert list(top.index) == list(df.index[:25])


def test_key_of_another_function_is_refused(annotated):
    with pytest.raises(
        KeyError, match=r"holds results of `dropout_stats`, not of `pp.dropout_genes`"
    ):
        sd.get.dropout_genes(annotated, key="dropout")
