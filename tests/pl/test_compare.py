"""sd.pl.compare_embeddings / compare_scores: drawn from stored comparison results only."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
from matplotlib.figure import Figure

import scdropout as sd

METHODS = ("pca", "tsne", "cidr", "dae")


@pytest.fixture(scope="module")
def compared(_synthetic_cached):
    """18 cells: every method but the autoencoder (needs 20) runs, under both rules."""
    a = _synthetic_cached[:18].copy()
    with pytest.warns(UserWarning, match="'dae' is skipped: too few cells"):
        sd.tl.compare_clusterings(a, labels_key="group", n_pcs=5, progress_bar=False, n_jobs=1)
    return a


def test_embeddings_by_rule(compared):
    fig = sd.pl.compare_embeddings(compared, show=False)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == len(METHODS)
    assert [ax.get_title() for ax in fig.axes] == list(METHODS)
    for ax, m in zip(fig.axes[:3], METHODS[:3], strict=True):
        (points,) = ax.collections
        xy = points.get_offsets()
        emb = compared.obsm[f"X_compare_{m}"]
        np.testing.assert_allclose(xy, emb[:, :2])
        k = compared.obs[f"compare_{m}_ward"].cat.categories.size
        assert any(t.get_text() == f"ward: k={k}" for t in ax.texts)
        # one colour per cluster
        assert len(np.unique(points.get_facecolors(), axis=0)) == k
    assert fig.axes[2].get_xlabel() == "PCoA 1"
    assert fig.axes[1].get_xlabel() == "t-SNE 1"
    skipped = fig.axes[3]
    assert not skipped.collections
    assert [t.get_text() for t in skipped.texts] == ["skipped: too few cells (18 < 20)"]


def test_embeddings_leiden_grid_and_labels(compared):
    fig = sd.pl.compare_embeddings(compared, rule="leiden", ncols=2)
    assert len(fig.axes) == 4
    k = compared.obs["compare_pca_leiden"].cat.categories.size
    assert any(t.get_text() == f"leiden: k={k}" for t in fig.axes[0].texts)
    fig = sd.pl.compare_embeddings(compared, color="group", ncols=3)
    assert len(fig.axes) == 4
    (legend,) = fig.legends
    assert sorted(t.get_text() for t in legend.get_texts()) == ["0", "1", "2"]
    # every panel coloured by the same labels: same colour for the same cell
    c0 = fig.axes[0].collections[0].get_facecolors()
    c2 = fig.axes[2].collections[0].get_facecolors()
    np.testing.assert_allclose(c0, c2)


def test_embeddings_numeric_color_adds_colorbar(compared):
    fig = sd.pl.compare_embeddings(compared, color="library_size_true")
    assert len(fig.axes) == len(METHODS) + 1
    assert fig.axes[-1].get_ylabel() == "library_size_true"


def test_numeric_color_draws_missing_values_grey(compared):
    a = compared.copy()
    vals = a.obs["library_size_true"].to_numpy().copy()
    vals[:5] = np.nan
    a.obs["library_size_true"] = vals
    fig = sd.pl.compare_embeddings(a, color="library_size_true")
    grey, coloured = fig.axes[0].collections
    assert len(grey.get_offsets()) == 5
    assert len(coloured.get_offsets()) == a.n_obs - 5


def test_bool_color_is_categorical(compared):
    a = compared.copy()
    a.obs["big"] = a.obs["library_size_true"] > a.obs["library_size_true"].median()
    fig = sd.pl.compare_embeddings(a, color="big")
    assert len(fig.axes) == len(METHODS)  # no colour bar
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["False", "True"]


def test_numeric_color_when_no_method_ran(synthetic):
    a = synthetic[:2].copy()
    with pytest.warns(UserWarning, match="skipped"):
        sd.tl.compare_clusterings(a, methods=("pca", "cidr"), progress_bar=False, n_jobs=1)
    a.obs["num"] = [1.0, 2.0]
    fig = sd.pl.compare_embeddings(a, color="num")  # raised UnboundLocalError before
    assert len(fig.axes) == 2


def test_skipped_rule_gets_no_bars_and_a_clear_message(compared):
    a = compared.copy()
    a.uns["compare"]["rules_skipped"] = {"leiden": "leidenalg is not installed"}
    fig = sd.pl.compare_scores(a, metric="ari")
    assert len(fig.axes[0].containers) == 1
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["ward"]
    with pytest.raises(ValueError, match=r"`rule='leiden'` did not run.*leidenalg"):
        sd.pl.compare_embeddings(a, rule="leiden")


def test_labels_given_but_nothing_scored(synthetic):
    a = synthetic[:4].copy()
    with pytest.warns(UserWarning, match="skipped"):
        sd.tl.compare_clusterings(
            a, methods=("tsne",), labels_key="group", progress_bar=False, n_jobs=1
        )
    with pytest.raises(ValueError, match="although `labels_key='group'` was given"):
        sd.pl.compare_scores(a, metric="ari")


def test_scores(compared):
    table = sd.get.comparison(compared)
    fig = sd.pl.compare_scores(compared, metric="ari", title="ARI")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert ax.get_title() == "ARI"
    assert len(ax.containers) == 2  # ward, leiden
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["ward", "leiden"]
    for bars, rule in zip(ax.containers, ("ward", "leiden"), strict=True):
        assert len(bars) == len(METHODS)
        heights = [b.get_height() for b in bars[:3]]
        np.testing.assert_allclose(heights, table[f"ari_{rule}"].iloc[:3])
        assert not bars[3].get_visible()  # dae was skipped
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels == ["pca", "tsne", "cidr", "dae\n(skipped)"]
    fig = sd.pl.compare_scores(compared, metric="seconds")
    (bars,) = fig.axes[0].containers
    np.testing.assert_allclose([b.get_height() for b in bars[:3]], table["seconds"].iloc[:3])


def test_scores_draw_into_given_axes(compared):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2)
    out = sd.pl.compare_scores(compared, metric="nmi", ax=axes[1])
    assert out is fig
    assert len(axes[1].containers) == 2
    assert not axes[0].containers


def test_after_h5ad_round_trip(compared, tmp_path):
    compared.write_h5ad(tmp_path / "c.h5ad")
    back = ad.read_h5ad(tmp_path / "c.h5ad")
    assert len(sd.pl.compare_embeddings(back).axes) == 4
    assert len(sd.pl.compare_scores(back).axes[0].containers) == 2


def test_errors(compared):
    with pytest.raises(ValueError, match=r"`rule='kmeans'` is not valid.*'ward', 'leiden'"):
        sd.pl.compare_embeddings(compared, rule="kmeans")
    with pytest.raises(KeyError, match="color='celltype'"):
        sd.pl.compare_embeddings(compared, color="celltype")
    with pytest.raises(KeyError, match="key='other'"):
        sd.pl.compare_embeddings(compared, key="other")
    with pytest.raises(ValueError, match="metric='auc'"):
        sd.pl.compare_scores(compared, metric="auc")
    unlabelled = compared.copy()
    sd.tl.compare_clusterings(
        unlabelled, methods="pca", rules="ward", key_added="nolab", progress_bar=False
    )
    with pytest.raises(ValueError, match="without `labels_key`"):
        sd.pl.compare_scores(unlabelled, key="nolab", metric="ari")
    fig = sd.pl.compare_scores(unlabelled, key="nolab", metric="silhouette")
    assert len(fig.axes[0].containers) == 1


def test_scanpy_colors_are_used(compared):
    a = compared.copy()
    a.obs["group"] = a.obs["group"].astype("category")
    a.uns["group_colors"] = np.array(["#ff0000", "#00ff00", "#0000ff"], dtype=object)
    fig = sd.pl.compare_embeddings(a, color="group")
    face = fig.axes[0].collections[0].get_facecolors()[:, :3]
    codes = a.obs["group"].cat.codes.to_numpy()
    np.testing.assert_allclose(face, np.eye(3)[codes])
