"""Figures in scdropout.pl: artists, labels and data drawn come from the stored results."""

from __future__ import annotations

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from anndata.tests.helpers import assert_equal
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from scipy import sparse

import scdropout as sd

N_CELLS, N_GENES, N_SEL = 60, 40, 7
K = 2.5


def _stored(key="dropout", genes_key="dropout_genes", *, zero_gene=True):
    """Counts plus results in the layout of pp.dropout_stats / pp.dropout_genes.

    The values are simple closed forms (Poisson zeros, a fixed NB size) so the tests can check
    that the figures draw exactly the stored numbers.
    """
    rng = np.random.default_rng(1)
    lib = rng.lognormal(np.log(500), 0.4, size=N_CELLS)
    share = rng.lognormal(0, 1.5, size=N_GENES)
    share /= share.sum()
    mu = lib[:, None] * share[None, :]
    X = rng.poisson(mu).astype(np.float32)
    if zero_gene:
        X[:, 0] = 0
    a = ad.AnnData(
        X=sparse.csr_matrix(X),
        obs=pd.DataFrame(index=[f"c{i}" for i in range(N_CELLS)]),
        var=pd.DataFrame(index=[f"g{i}" for i in range(N_GENES)]),
    )
    tj, ti = X.sum(0), X.sum(1)
    mu_hat = np.outer(ti, tj) / tj.sum()
    size = 2.0
    p_nb = (1 + mu_hat / size) ** (-size)
    p_pois = np.exp(-mu_hat)
    a.var[f"{key}_mean"] = X.mean(0).astype(np.float64)
    a.var[f"{key}_rate"] = (X == 0).mean(0)
    a.var[f"{key}_expected"] = p_nb.mean(0)
    a.var[f"{key}_expected_poisson"] = p_pois.mean(0)
    a.obs[f"{key}_total_counts"] = ti.astype(np.float64)
    a.obs[f"{key}_zeros"] = (X == 0).sum(1)
    a.obs[f"{key}_expected_zeros"] = p_nb.sum(1)
    a.obs[f"{key}_expected_zeros_poisson"] = p_pois.sum(1)
    a.uns[key] = {"params": {}, "m3drop": {"K": K, "K_err": 0.1, "sigma": 0.05}}
    if genes_key is not None:
        excess = a.var[f"{key}_rate"].to_numpy() - a.var[f"{key}_expected"].to_numpy()
        excess[X.sum(0) == 0] = -np.inf  # an undetected gene is never selected
        order = np.argsort(-excess, kind="stable")
        rank = np.empty(N_GENES)
        rank[order] = np.arange(1, N_GENES + 1)
        a.var[f"{genes_key}_rank"] = rank
        a.var[f"{genes_key}_selected"] = rank <= N_SEL
        a.uns[genes_key] = {"params": {}, "n_selected": N_SEL}
    return a


def _legend_texts(ax):
    return [t.get_text() for t in ax.get_legend().get_texts()]


def test_dropout_curve_returns_axes_with_all_layers():
    a = _stored()
    ax = sd.pl.dropout_curve(a)
    assert isinstance(ax, Axes)
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "mean count per cell"
    assert ax.get_ylabel() == "dropout rate (fraction of zeros)"
    # scatter of all genes + highlighted genes; three curves: NB, Poisson, MM
    assert len(ax.collections) == 2
    assert len(ax.lines) == 3
    texts = _legend_texts(ax)
    n_pos = int((a.var["dropout_mean"] > 0).sum())
    assert texts[0] == f"genes ({n_pos})"
    assert texts[1] == f"selected ({N_SEL})"
    assert texts[2:] == ["depth-adjusted NB", "Poisson", f"Michaelis–Menten (K={K:.3g})"]


def test_dropout_curve_points_are_the_stored_values():
    a = _stored()
    ax = sd.pl.dropout_curve(a, genes_key=None)
    pos = a.var["dropout_mean"].to_numpy() > 0
    assert not pos.all()  # the all-zero gene is left out on the log axis
    xy = ax.collections[0].get_offsets()
    np.testing.assert_array_equal(xy[:, 0], a.var["dropout_mean"].to_numpy()[pos])
    np.testing.assert_array_equal(xy[:, 1], a.var["dropout_rate"].to_numpy()[pos])


def test_dropout_curve_highlights_exactly_the_selected_genes():
    a = _stored()
    ax = sd.pl.dropout_curve(a)
    hl = ax.collections[1].get_offsets()
    assert len(hl) == N_SEL == int(a.var["dropout_genes_selected"].sum())
    sel = a.var["dropout_genes_selected"].to_numpy()
    np.testing.assert_array_equal(np.sort(hl[:, 0]), np.sort(a.var["dropout_mean"][sel]))


def test_dropout_curve_curves_use_stored_fits():
    a = _stored()
    ax = sd.pl.dropout_curve(a)
    nb, pois, mm = ax.lines
    mean = a.var["dropout_mean"].to_numpy()
    pos = mean > 0
    order = np.argsort(mean[pos], kind="stable")
    np.testing.assert_array_equal(nb.get_xdata(), mean[pos][order])
    np.testing.assert_array_equal(nb.get_ydata(), a.var["dropout_expected"].to_numpy()[pos][order])
    np.testing.assert_array_equal(
        pois.get_ydata(), a.var["dropout_expected_poisson"].to_numpy()[pos][order]
    )
    # Michaelis–Menten on a grid, means mapped to the median-library scale
    lib = a.obs["dropout_total_counts"].to_numpy()
    x = np.asarray(mm.get_xdata())
    np.testing.assert_allclose(mm.get_ydata(), K / (K + x * np.median(lib) / lib.mean()))
    assert x.min() == pytest.approx(mean[pos].min())
    assert x.max() == pytest.approx(mean[pos].max())
    assert mm.get_linestyle() == "--"


def test_dropout_curve_options():
    a = _stored()
    ax = sd.pl.dropout_curve(
        a, genes_key=None, poisson=False, michaelis_menten=False, log=False, title="T"
    )
    assert ax.get_xscale() == "linear"
    assert ax.get_title() == "T"
    assert len(ax.collections) == 1
    assert len(ax.lines) == 1
    assert _legend_texts(ax) == [f"genes ({N_GENES})", "depth-adjusted NB"]  # zero gene kept


def test_dropout_curve_draws_into_given_axes():
    a = _stored()
    fig, axs = plt.subplots(1, 2)
    out = sd.pl.dropout_curve(a, ax=axs[1])
    assert out is axs[1]
    assert len(axs[0].collections) == 0
    assert len(fig.axes) == 2


def test_dropout_curve_without_mm_or_selection_results():
    a = _stored(genes_key=None)
    del a.uns["dropout"]["m3drop"]
    ax = sd.pl.dropout_curve(a)  # default genes_key absent: no highlight, no error
    assert len(ax.collections) == 1
    assert len(ax.lines) == 2
    assert not any(t.startswith("Michaelis") for t in _legend_texts(ax))


def test_dropout_curve_custom_keys():
    a = _stored(key="dz", genes_key="dzg")
    ax = sd.pl.dropout_curve(a, key="dz", genes_key="dzg")
    assert len(ax.collections[1].get_offsets()) == N_SEL


def test_dropout_curve_missing_keys():
    a = _stored()
    with pytest.raises(
        KeyError, match=r"`key='nope'` is not in `adata.uns`. Available: 'dropout'"
    ):
        sd.pl.dropout_curve(a, key="nope")
    with pytest.raises(KeyError, match=r"`genes_key='nope'` is not in `adata.uns`"):
        sd.pl.dropout_curve(a, genes_key="nope")
    del a.var["dropout_rate"]
    with pytest.raises(KeyError, match="dropout_rate"):
        sd.pl.dropout_curve(a)
    assert plt.get_fignums() == []  # nothing drawn before the checks


def test_dropout_curve_rejects_bad_types():
    with pytest.raises(TypeError, match="AnnData"):
        sd.pl.dropout_curve(np.zeros((3, 3)))
    with pytest.raises(TypeError, match="`log` must be a bool"):
        sd.pl.dropout_curve(_stored(), log="yes")
    with pytest.raises(TypeError, match="genes_key"):
        sd.pl.dropout_curve(_stored(), genes_key=5)


def test_show_calls_pyplot_show_only_when_asked(monkeypatch):
    calls = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: calls.append(1))
    a = _stored()
    sd.pl.dropout_curve(a)
    sd.pl.dropout_qc(a, show=False)
    assert calls == []
    assert isinstance(sd.pl.dropout_curve(a, show=True), Axes)
    assert isinstance(sd.pl.dropout_qc(a, show=True), Figure)
    assert calls == [1, 1]


def test_plots_write_nothing():
    a = _stored()
    before = a.copy()
    sd.pl.dropout_curve(a)
    sd.pl.dropout_qc(a)
    assert_equal(a, before)


def test_dropout_qc_two_panels():
    a = _stored()
    fig = sd.pl.dropout_qc(a, bins=20)
    assert isinstance(fig, Figure)
    ax_z, ax_l = fig.axes
    # zeros panel: NB and Poisson series, identity line
    assert len(ax_z.collections) == 2
    assert len(ax_z.lines) == 1
    xy = ax_z.collections[0].get_offsets()
    np.testing.assert_array_equal(xy[:, 0], a.obs["dropout_expected_zeros"])
    np.testing.assert_array_equal(xy[:, 1], a.obs["dropout_zeros"])
    texts = _legend_texts(ax_z)
    assert texts[0].startswith("depth-adjusted NB (RMSE ")
    assert texts[1].startswith("Poisson (RMSE ")
    assert texts[2] == "observed = expected"
    assert ax_z.get_xlabel() == "expected zeros per cell"
    assert ax_z.get_ylabel() == "observed zeros per cell"
    # library-size panel: 20 bins over all cells, median marked
    assert len(ax_l.patches) == 20
    assert sum(p.get_height() for p in ax_l.patches) == N_CELLS
    assert ax_l.get_xscale() == "log"
    med = np.median(a.obs["dropout_total_counts"])
    assert ax_l.lines[0].get_xdata()[0] == pytest.approx(med)
    assert ax_l.get_title() == f"library size ({N_CELLS} cells)"


def test_dropout_qc_rmse_matches_stored_values():
    a = _stored()
    fig = sd.pl.dropout_qc(a)
    obs, exp = a.obs["dropout_zeros"], a.obs["dropout_expected_zeros"]
    rmse = float(np.sqrt(np.mean((obs - exp) ** 2)))
    assert _legend_texts(fig.axes[0])[0] == f"depth-adjusted NB (RMSE {rmse:.3g})"


def test_dropout_qc_without_poisson_and_linear():
    a = _stored()
    del a.obs["dropout_expected_zeros_poisson"]
    fig = sd.pl.dropout_qc(a, log=False, bins=5)
    assert len(fig.axes[0].collections) == 1
    assert fig.axes[1].get_xscale() == "linear"
    assert len(fig.axes[1].patches) == 5


def test_dropout_qc_errors():
    a = _stored()
    with pytest.raises(KeyError, match=r"`key='nope'` is not in `adata.uns`"):
        sd.pl.dropout_qc(a, key="nope")
    with pytest.raises(ValueError, match="`bins` must be a positive integer"):
        sd.pl.dropout_qc(a, bins=0)
    del a.obs["dropout_expected_zeros"]
    with pytest.raises(KeyError, match="dropout_expected_zeros"):
        sd.pl.dropout_qc(a)
    assert plt.get_fignums() == []


# --- against the real annotators -------------------------------------------------------------


@pytest.fixture(scope="module")
def annotated(_synthetic_cached):
    a = _synthetic_cached.copy()
    sd.pp.dropout_stats(a)
    sd.pp.dropout_genes(a, n_top_genes=30)
    return a


def test_dropout_curve_on_pp_results(annotated):
    ax = sd.pl.dropout_curve(annotated)
    n_sel = int(annotated.uns["dropout_genes"]["n_selected"])
    assert n_sel == 30
    assert len(ax.collections[1].get_offsets()) == n_sel
    labels = _legend_texts(ax)
    assert "depth-adjusted NB" in labels
    assert any(t.startswith("Michaelis–Menten (K=") for t in labels)
    # the NB expected rate rises as the mean falls: the drawn curve is monotone decreasing
    y = np.asarray(ax.lines[0].get_ydata())
    assert np.all(np.diff(y) <= 1e-12)


def test_dropout_qc_on_pp_results(annotated):
    fig = sd.pl.dropout_qc(annotated)
    assert len(fig.axes) == 2
    assert sum(p.get_height() for p in fig.axes[1].patches) == annotated.n_obs
