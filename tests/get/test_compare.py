"""sd.get.comparison: the stored table of tl.compare_clusterings, rebuilt without writing."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from anndata.tests.helpers import assert_equal

import scdropout as sd


@pytest.fixture(scope="module")
def compared(_synthetic_cached):
    a = _synthetic_cached[:40].copy()
    table = sd.tl.compare_clusterings(
        a, methods=("pca", "cidr"), labels_key="group", rules="ward", progress_bar=False, n_jobs=1
    )
    return a, table


def test_rebuilds_the_returned_table(compared):
    a, table = compared
    before = a.copy()
    out = sd.get.comparison(a)
    pd.testing.assert_frame_equal(out, table)
    assert out.index.name == "method"
    assert out["n_clusters_ward"].dtype == "Int64"
    assert out["status"].tolist() == ["ok", "ok"]
    assert_equal(a, before)  # writes nothing
    out.loc["pca", "ari_ward"] = 99.0  # a copy
    assert sd.get.comparison(a).loc["pca", "ari_ward"] == table.loc["pca", "ari_ward"]


def test_skipped_rows_and_h5ad(compared, tmp_path):
    a, _ = compared
    b = a[:4].copy()
    b.uns.pop("compare")
    with pytest.warns(UserWarning, match="'tsne' is skipped"):
        t = sd.tl.compare_clusterings(
            b, methods=("pca", "tsne"), rules="ward", key_added="few", progress_bar=False
        )
    b.write_h5ad(tmp_path / "b.h5ad")
    back = sd.get.comparison(ad.read_h5ad(tmp_path / "b.h5ad"), key="few")
    pd.testing.assert_frame_equal(back, t)
    assert back.loc["tsne", "status"] == "skipped: too few cells (4 < 5)"
    assert back.loc["tsne", "n_clusters_ward"] is pd.NA
    assert np.isnan(back.loc["tsne", "seconds"])


def test_errors(compared):
    a, _ = compared
    with pytest.raises(
        KeyError, match=r"key='other'.*compare_clusterings\(adata, key_added='other'\)"
    ):
        sd.get.comparison(a, key="other")
    with pytest.raises(TypeError, match="`key` must be a string"):
        sd.get.comparison(a, key=3)
    with pytest.raises(TypeError, match="AnnData"):
        sd.get.comparison(a.obs)
    b = a.copy()
    b.uns["compare"] = {"something": 1}
    with pytest.raises(ValueError, match=r"not a result of `scdropout\.tl\.compare_clusterings`"):
        sd.get.comparison(b)
