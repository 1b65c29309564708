from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pytest

import scdropout as sd


@pytest.fixture(scope="module", params=["dropout", "r"])
def done(request):
    a = sd.datasets.synthetic(n_cells=120, n_genes=200, random_state=2)
    sd.tl.cidr(a, flavor=request.param, progress_bar=False)
    return a


def test_cidr_eigenvalues(done):
    ax = sd.pl.cidr_eigenvalues(done, n_show=10)
    npc = done.uns["cidr"]["n_pcs"]
    lines = ax.get_lines()
    assert len(lines[0].get_xdata()) == 10
    assert len(lines[1].get_xdata()) == min(npc, 10)  # the default flavor clusters on 20
    ax = sd.pl.cidr_eigenvalues(done)
    lines = ax.get_lines()
    assert len(lines[0].get_xdata()) == min(30, done.uns["cidr"]["variation"].size)
    assert len(lines[1].get_xdata()) == npc
    assert f"n_pcs = {npc}" in [t.get_text() for t in ax.get_legend().get_texts()]
    _fig, ax2 = plt.subplots()
    assert sd.pl.cidr_eigenvalues(done, ax=ax2) is ax2


def test_cidr_thresholds(done):
    fig = sd.pl.cidr_thresholds(done, cells=[0, done.obs_names[5]])
    ax_t, ax_c = fig.axes
    assert sum(p.get_height() for p in ax_t.patches) == done.n_obs
    thr = done.obs["cidr_threshold"].to_numpy()
    xs = sorted(line.get_xdata()[0] for line in ax_c.get_lines())
    assert np.allclose(xs, sorted(thr[[0, 5]]))
    assert len(ax_c.get_legend().get_texts()) == 2
    fig = sd.pl.cidr_thresholds(done)
    assert len(fig.axes[1].get_lines()) == 3


def test_missing_results():
    a = sd.datasets.synthetic(n_cells=30, n_genes=100)
    with pytest.raises(KeyError, match=r"tl\.cidr"):
        sd.pl.cidr_eigenvalues(a)
    with pytest.raises(KeyError, match=r"tl\.cidr"):
        sd.pl.cidr_thresholds(a, key="other")


def test_cells_and_counts_are_checked_before_drawing(done):
    n_open = len(plt.get_fignums())
    with pytest.raises(KeyError, match="`cells` names 'nope'"):
        sd.pl.cidr_thresholds(done, cells=["nope"])
    with pytest.raises(IndexError, match="position 999"):
        sd.pl.cidr_thresholds(done, cells=[999])
    with pytest.raises(ValueError, match="bins"):
        sd.pl.cidr_thresholds(done, bins=0)
    with pytest.raises(ValueError, match="n_show"):
        sd.pl.cidr_eigenvalues(done, n_show=0)
    with pytest.raises(TypeError, match="n_show"):
        sd.pl.cidr_eigenvalues(done, n_show=2.5)
    assert len(plt.get_fignums()) == n_open  # no figure left behind by a refused call
    fig = sd.pl.cidr_thresholds(done, cells=done.obs_names[3])  # one name, not its letters
    assert [t.get_text() for t in fig.axes[1].get_legend().get_texts()] == [done.obs_names[3]]
    plt.close("all")


def test_nan_thresholds_are_left_out(done):
    a = done.copy()
    thr = a.obs["cidr_threshold"].to_numpy().copy()
    thr[np.argmax(thr)] = np.nan  # as a cell without a usable threshold
    a.obs["cidr_threshold"] = thr
    fig = sd.pl.cidr_thresholds(a)
    xs = [line.get_xdata()[0] for line in fig.axes[1].get_lines()]
    assert np.isfinite(xs).all()
    assert max(xs) == np.nanmax(thr)
    a.obs["cidr_threshold"] = np.nan
    with pytest.raises(ValueError, match="no finite threshold"):
        sd.pl.cidr_thresholds(a)
    plt.close("all")


def test_key_of_another_tool_is_named(done):
    a = done.copy()
    sd.pp.dropout_stats(a, key_added="stats")
    with pytest.raises(
        KeyError, match=r"not a `tl.cidr` result \(it holds results of `dropout_stats`\)"
    ):
        sd.pl.cidr_eigenvalues(a, key="stats")
