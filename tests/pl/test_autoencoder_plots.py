"""pl.autoencoder_history and pl.imputed_gene draw what tl.autoencoder stored."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

import scdropout as sd

pytest.importorskip("torch")

FAST = {"n_latent": 4, "hidden": (16,), "max_epochs": 6, "progress_bar": False}


@pytest.fixture(scope="module")
def done():
    a = sd.datasets.synthetic(n_cells=150, n_genes=60, n_groups=3, n_markers=8, random_state=4)
    sd.tl.autoencoder(a, impute=True, mc_samples=3, **FAST)
    return a


def test_history_draws_the_stored_losses(done):
    hist = done.uns["dae"]["history"]
    ax = sd.pl.autoencoder_history(done)
    train, val, best = ax.get_lines()
    np.testing.assert_array_equal(train.get_ydata(), hist["train_loss"])
    np.testing.assert_array_equal(val.get_ydata(), hist["val_loss"])
    np.testing.assert_array_equal(train.get_xdata(), np.arange(1, len(hist["train_loss"]) + 1))
    assert best.get_xdata()[0] == done.uns["dae"]["best_epoch"]
    assert "NB" in ax.get_ylabel()
    _fig, ax2 = plt.subplots()
    assert sd.pl.autoencoder_history(done, ax=ax2) is ax2


def test_imputed_gene_panels(done):
    gene = done.var_names[0]  # a marker of the first group
    fig = sd.pl.imputed_gene(done, gene, groupby="group", n_errorbars=10)
    ax_obs, ax_imp = fig.axes
    j = 0
    obs = done.X[:, j].toarray().ravel()
    np.testing.assert_allclose(np.sort(ax_obs.collections[0].get_offsets()[:, 1]), np.sort(obs))
    imp = done.layers["dae_imputed"][:, j]
    np.testing.assert_allclose(
        np.sort(ax_imp.collections[0].get_offsets()[:, 1]), np.sort(imp), rtol=1e-6
    )
    # cells stay in their group's strip: jitter is within +-0.3 of the category code
    codes = done.obs["group"].cat.codes.to_numpy()
    assert np.all(np.abs(ax_obs.collections[0].get_offsets()[:, 0] - codes) <= 0.3)
    assert [t.get_text() for t in ax_obs.get_xticklabels()] == list(
        done.obs["group"].cat.categories
    )
    assert "± 2 sd" in ax_imp.get_title()
    assert f"{np.mean(obs == 0):.0%} zeros" in ax_obs.get_title()
    # one strip without groupby; no error bars when asked for none
    fig = sd.pl.imputed_gene(done, gene, n_errorbars=0)
    assert "sd" not in fig.axes[1].get_title()
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["all cells"]


def test_gated_gene_is_named_in_the_title(done):
    w = done.uns["dae"]["shrinkage_weights"]
    b = done.copy()
    b.uns["dae"]["shrinkage_weights"] = np.where(np.arange(w.size) == 1, 0.0, 1.0)
    assert "gated" in sd.pl.imputed_gene(b, b.var_names[1]).axes[1].get_title()
    assert "gated" not in sd.pl.imputed_gene(b, b.var_names[2]).axes[1].get_title()
    b.uns["dae"]["params"]["shrink"] = False  # the model's own means: nothing was gated
    assert "gated" not in sd.pl.imputed_gene(b, b.var_names[1]).axes[1].get_title()


def test_bad_input_is_named(done):
    plain = sd.datasets.synthetic(n_cells=30, n_genes=100, random_state=0)
    with pytest.raises(KeyError, match=r"tl\.autoencoder"):
        sd.pl.autoencoder_history(plain)
    with pytest.raises(KeyError, match=r"tl\.autoencoder"):
        sd.pl.imputed_gene(done, done.var_names[0], key="other")
    no_layer = done.copy()
    del no_layer.layers["dae_imputed"]
    with pytest.raises(KeyError, match="impute=True"):
        sd.pl.imputed_gene(no_layer, done.var_names[0])
    with pytest.raises(KeyError, match="not-a-gene"):
        sd.pl.imputed_gene(done, "not-a-gene")
    with pytest.raises(KeyError, match="groupby='nope'"):
        sd.pl.imputed_gene(done, done.var_names[0], groupby="nope")
    with pytest.raises(ValueError, match="n_errorbars"):
        sd.pl.imputed_gene(done, done.var_names[0], n_errorbars=-1)
    left_out = done.copy()
    left_out.layers["dae_imputed"][:, 3] = np.nan
    with pytest.raises(ValueError, match="not modelled"):
        sd.pl.imputed_gene(left_out, done.var_names[3])


def test_error_bars_follow_the_run_not_a_leftover_layer(done):
    a = done.copy()
    a.uns["dae"]["params"]["mc_samples"] = 0  # as after a run without any sd
    a.uns["dae"]["params"]["predictive_sd"] = False
    fig = sd.pl.imputed_gene(a, a.var_names[0], n_errorbars=10)
    assert fig.axes[1].get_title().startswith("imputed")
    assert "sd" not in fig.axes[1].get_title()
    assert not fig.axes[1].containers  # no error bars drawn
    a.uns["dae"]["params"]["impute"] = False  # a run without imputation
    with pytest.raises(KeyError, match="impute=False"):
        sd.pl.imputed_gene(a, a.var_names[0])
    plt.close("all")


def test_cells_with_a_missing_group_get_a_strip_of_their_own(done):
    a = done.copy()
    group = a.obs["group"].astype(object)
    group.iloc[:5] = np.nan
    a.obs["group"] = group.astype("category")
    fig = sd.pl.imputed_gene(a, a.var_names[0], groupby="group", n_errorbars=0)
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == [*map(str, done.obs["group"].cat.categories), "NA"]
    x = fig.axes[0].collections[0].get_offsets()[:, 0]
    assert (x > -0.5).all()  # no cell drawn left of the first strip
    assert np.abs(x[:5] - (len(labels) - 1)).max() <= 0.3
    plt.close("all")
