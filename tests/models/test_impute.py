"""Held-out shrinkage of the imputed means (issue 4: false signals, Andrews & Hemberg 2018)."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
from scipy import sparse, stats

import scdropout as sd
from scdropout.models import DropoutAutoencoder

torch = pytest.importorskip("torch")


def _train(adata):
    model = DropoutAutoencoder(adata, n_latent=4, hidden=(32,))
    model.train(max_epochs=60, progress_bar=False)
    return model


@pytest.fixture(scope="module")
def planted():
    """300 cells x 60 genes, 3 groups with 10 strong markers each, and its gene-wise permutation."""
    a = sd.datasets.synthetic(
        n_cells=300, n_genes=60, n_groups=3, n_markers=10, marker_fold_change=8.0, random_state=3
    )
    X = a.X.toarray() if sparse.issparse(a.X) else np.asarray(a.X)
    rng = np.random.default_rng(0)
    P = X.copy()
    for j in range(P.shape[1]):
        P[:, j] = P[rng.permutation(P.shape[0]), j]
    real = ad.AnnData(sparse.csr_matrix(X.astype(np.float32)), var=a.var[["marker_of"]].copy())
    perm = ad.AnnData(sparse.csr_matrix(P.astype(np.float32)), var=a.var[["marker_of"]].copy())
    return real, perm


@pytest.fixture(scope="module")
def models(planted):
    real, perm = planted
    return _train(real), _train(perm)


def _significant_pairs(mu, lib, alpha=0.05):
    """BH-significant Spearman pairs of log1p(mu / lib) (float32 rounding counted as ties)."""
    M = np.round(np.log1p(mu / lib[:, None] * 1e4), 4)
    ok = np.ptp(M, axis=0) > 0
    if ok.sum() < 2:
        return 0
    rho = np.corrcoef(stats.rankdata(M[:, ok], axis=0), rowvar=False)
    iu = np.triu_indices(int(ok.sum()), k=1)
    r = np.clip(rho[iu], -0.999999, 0.999999)
    n = M.shape[0]
    p = 2 * stats.t.sf(np.abs(r * np.sqrt((n - 2) / (1 - r**2))), n - 2)
    return int(stats.false_discovery_control(p).__le__(alpha).sum())


def test_permuted_counts_get_zero_weights_and_no_false_pairs(planted, models):
    _, perm = planted
    _, model = models
    w = model.shrinkage_
    assert w.shape == (60,)
    assert (w == 0).mean() >= 0.95
    lib = np.asarray(perm.X.sum(1)).ravel()
    raw = _significant_pairs(model.get_imputed(shrink=False).astype(np.float64), lib)
    shrunk = _significant_pairs(model.get_imputed().astype(np.float64), lib)
    # the low-rank decoder invents gene-gene structure; the shrunk imputation does not
    assert raw > 200
    assert shrunk <= 0.05 * raw
    # the geometric estimate's own gate, fitted on every cell, shuts as well
    s = model.shrinkage
    assert s.geo_n_cells == perm.n_obs
    assert (s.geo_weights == 0).mean() >= 0.95
    geo = model.get_imputed(estimate="geometric").astype(np.float64)
    assert _significant_pairs(geo, lib) <= 0.05 * raw


def test_planted_markers_keep_the_stacked_prediction(planted, models):
    real, _ = planted
    model, _ = models
    w = model.shrinkage_
    s = model.shrinkage
    marker = real.var["marker_of"].astype(str).to_numpy() != ""
    assert set(np.unique(w)) <= {0.0, 1.0}
    assert s.n_neighbors == 15
    # every planted marker beats the constant share on held-out entries and keeps its weight
    assert (w[marker] == 1).all()
    assert (s.gain[marker] > 0).mean() >= 0.8
    assert np.median(s.gain[marker]) > np.median(s.gain[~marker])
    # the empirical-Bayes gate: kept exactly where gain + 20 x mean gain > 0
    np.testing.assert_array_equal(w == 1, s.gain + 20 * s.gain.mean() > 0)
    # a kept gene has no null part
    np.testing.assert_array_equal(s.baseline[w == 1], 0.0)
    # the geometric estimate's gate: the same rule on its own gain, fitted on all 300 cells
    gw = s.geo_weights
    assert set(np.unique(gw)) <= {0.0, 1.0}
    assert s.geo_n_cells == real.n_obs
    np.testing.assert_array_equal(gw == 1, s.geo_gain + 20 * s.geo_gain.mean() > 0)
    assert (gw[marker] == 1).all()
    assert np.median(s.geo_gain[marker]) > np.median(s.geo_gain[~marker])
    np.testing.assert_array_equal(s.geo_baseline[gw == 1], 0.0)
    np.testing.assert_array_equal(model.shrinkage_, s.weights_for(s.estimate))


def test_geometric_gate_subsample_leaves_the_arithmetic_gate_alone(models):
    """Above ``max_cells`` the geometric gate fits on a subsample of all cells; the arithmetic
    gate (validation cells) and its held-out error do not change with that subsample."""
    from scdropout.models._impute import fit_shrinkage
    from scdropout.models._train import split_indices

    model, _ = models
    n = model._counts.shape[0]
    train_idx, val_idx = split_indices(n, 0.1, np.random.default_rng(model.seed))

    def fit(max_cells):
        return fit_shrinkage(
            model.module,
            model._counts,
            model._library,
            train_idx=train_idx,
            val_idx=val_idx,
            device=torch.device("cpu"),
            rng=np.random.default_rng(7),
            max_cells=max_cells,
        )

    full, sub = fit(2000), fit(120)
    assert full.geo_n_cells == n
    assert sub.geo_n_cells == 120
    assert full.n_cells == sub.n_cells == len(val_idx)
    np.testing.assert_array_equal(sub.weights, full.weights)
    np.testing.assert_array_equal(sub.gain, full.gain)
    assert sub.selection["arithmetic"] == full.selection["arithmetic"]
    assert not np.array_equal(sub.geo_gain, full.geo_gain)
    # the same subsample again: seeded
    np.testing.assert_array_equal(fit(120).geo_gain, sub.geo_gain)


def test_geometric_gain_is_the_squared_log_error_difference():
    from scdropout.models._impute import geometric_gain

    rng = np.random.default_rng(2)
    x = rng.poisson(3.0, size=(12, 5)).astype(np.float64)
    lib = rng.uniform(50, 150, size=12)
    G = rng.gamma(2.0, 1.5, size=(12, 5))
    share = rng.uniform(0.01, 0.05, size=5)
    got = geometric_gain(x, lib, G, share, 100.0)
    expected = np.zeros(5)
    for c in range(12):
        for g in range(5):
            obs = np.log1p(x[c, g] / lib[c] * 100.0)
            expected[g] += (obs - np.log1p(share[g] * 100.0)) ** 2
            expected[g] -= (obs - np.log1p(G[c, g] / lib[c] * 100.0)) ** 2
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # a perfect prediction gains the null's whole error; the null itself gains nothing
    perfect = geometric_gain(x, lib, x, share, 100.0)
    assert (perfect >= 0).all()
    null = geometric_gain(x, lib, share * lib[:, None], share, 100.0)
    np.testing.assert_allclose(null, 0.0, atol=1e-12)


def _reference_smooth(z, mu, counts, lib, k):
    """(M + S) / L by brute force: mean shares of the k nearest latent neighbours (self excluded)."""
    z = z.astype(np.float64)
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return (mu / lib[:, None])[idx].mean(1) + (counts / lib[:, None])[idx].mean(1)


def _reference_geometric(z, counts, lib, k, scale=1e4):
    """G / L by brute force: log-space mean of the k nearest neighbours' shares (self excluded)."""
    z = z.astype(np.float64)
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    idx = np.argsort(d, axis=1, kind="stable")[:, :k]
    return np.expm1(np.log1p(counts / lib[:, None] * scale)[idx].mean(1)) / scale


def test_shrunk_mean_is_the_documented_stack(planted, models):
    real, _ = planted
    model, _ = models
    raw = model.get_imputed(shrink=False).astype(np.float64)
    lib = model._library.astype(np.float64)
    counts = real.X.toarray().astype(np.float64)
    s = model.shrinkage
    smooth = _reference_smooth(model.get_latent(), raw, counts, lib, s.n_neighbors)
    expected = s.weights * (raw + smooth * lib[:, None]) / 3 + s.baseline * lib[:, None]
    arith = model.get_imputed(estimate="arithmetic")
    np.testing.assert_allclose(arith, expected, rtol=1e-4, atol=1e-5)
    # MC passes vary the model's mean only: the MC sd scales by w / 3 (same seeded masks)
    _, sd_raw = model.get_imputed(mc_samples=4, shrink=False)
    _, sd_shrunk = model.get_imputed(mc_samples=4, estimate="arithmetic")
    np.testing.assert_allclose(sd_shrunk, s.weights / 3 * sd_raw, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="shrink"):
        model.get_imputed(shrink="yes")


def test_stack_smooths_within_the_imputed_cells(planted, models):
    real, _ = planted
    model, _ = models
    # imputing a subset uses neighbours within that subset; permuting cells permutes the rows
    sub = real[::2].copy()
    order = np.random.default_rng(1).permutation(sub.n_obs)
    a = model.get_imputed(sub)
    b = model.get_imputed(sub[order].copy())
    np.testing.assert_allclose(b, a[order], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, model.get_imputed()[::2], rtol=1e-3)
    # a single cell has no neighbours: the stack is the model's own mean, gated
    one = real[:1].copy()
    s = model.shrinkage
    lib = float(one.X.sum())
    expected = s.weights * model.get_imputed(one, shrink=False) + s.baseline * lib
    got = model.get_imputed(one, estimate="arithmetic")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    expected = s.geo_weights * model.get_imputed(one, shrink=False) + s.geo_baseline * lib
    got = model.get_imputed(one, estimate="geometric")
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_neighbor_helpers_match_brute_force():
    from scdropout.models._impute import latent_neighbors, neighbor_shares

    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 3)).astype(np.float32)
    counts = rng.poisson(2.0, size=(40, 7)).astype(np.float32) + 1
    lib = counts.sum(1)
    mu = rng.gamma(2.0, size=(40, 7)).astype(np.float32)
    idx = latent_neighbors(torch.from_numpy(z), torch.from_numpy(z), 5, torch.arange(40)).numpy()
    assert not (idx == np.arange(40)[:, None]).any()
    d = ((z[:, None].astype(np.float64) - z[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(np.sort(idx, 1), np.sort(np.argsort(d, 1)[:, :5], 1))
    ref = _reference_smooth(z, mu, counts, lib, 5)
    geo = _reference_geometric(z, counts, lib, 5)
    for X in (counts, sparse.csr_matrix(counts)):
        np.testing.assert_allclose(neighbor_shares(z, mu, X, lib, 5), ref, rtol=1e-5)
        got = neighbor_shares(z, mu, X, lib, 5, geometric=True)
        np.testing.assert_allclose(got, geo, rtol=1e-4)
        got = neighbor_shares(z, mu, X, lib, 5, geometric=True, geo_scale=30.0)
        np.testing.assert_allclose(got, _reference_geometric(z, counts, lib, 5, 30.0), rtol=1e-4)


def test_smoothed_latent_averages_each_cell_with_its_neighbours(models):
    from scdropout.models._impute import neighbor_average

    model, _ = models
    z = model.get_latent()
    idx = _neighbors(z, 5)
    expected = (z.astype(np.float64) + z[idx].sum(1)) / 6
    np.testing.assert_allclose(model.get_latent(smooth=5), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(model.get_latent(smooth=0), z)
    # k is capped at n - 1 cells; one cell comes back unchanged
    np.testing.assert_allclose(
        neighbor_average(z[:3], 10), np.tile(z[:3].mean(0), (3, 1)), rtol=1e-5
    )
    np.testing.assert_array_equal(neighbor_average(z[:1], 10), z[:1])
    with pytest.raises(ValueError, match="mc_samples=0"):
        model.get_latent(smooth=5, mc_samples=2)
    with pytest.raises(ValueError, match="smooth"):
        model.get_latent(smooth=-1)


@pytest.mark.parametrize("smooth", [15, 5, 25, 0])
def test_one_neighbour_search_gives_the_separate_results(models, monkeypatch, smooth):
    """_embed_and_impute = get_latent(smooth=k) + get_imputed(), with a single search."""
    from scdropout.models import _impute

    model, _ = models
    z = model.get_latent(smooth=smooth)
    calls = []
    search = _impute._Reference.neighbors

    def counted(self, query, k, *a, **kw):
        calls.append(k)
        return search(self, query, k, *a, **kw)

    for estimate in ("arithmetic", "geometric"):
        mean = model.get_imputed(estimate=estimate)
        calls.clear()
        monkeypatch.setattr(_impute._Reference, "neighbors", counted)
        z2, mean2 = model._embed_and_impute(
            smooth=smooth, mc_samples=0, predictive=False, shrink=True, estimate=estimate
        )
        monkeypatch.undo()
        assert calls == [max(smooth, model.shrinkage.n_neighbors)]
        np.testing.assert_array_equal(z2, z)
        np.testing.assert_array_equal(mean2, mean)
    # with MC passes and the predictive sd too
    m, s = model.get_imputed(mc_samples=3, predictive=True)
    _, (m2, s2) = model._embed_and_impute(
        smooth=smooth, mc_samples=3, predictive=True, shrink=True, estimate="auto"
    )
    np.testing.assert_array_equal(m2, m)
    np.testing.assert_array_equal(s2, s)


def _brute_distances(q, ref, k, exclude=None):
    d = ((q[:, None].astype(np.float64) - ref[None].astype(np.float64)) ** 2).sum(-1)
    if exclude is not None:
        d[np.arange(len(q)), exclude] = np.inf
    return np.sort(d, 1)[:, :k]


@pytest.mark.parametrize("margin", [16, 0])
def test_float32_search_with_float64_rerank_is_exact(monkeypatch, margin):
    """The k nearest by float64 distance, ties and duplicates included; margin 0 forces the
    float64 fallback on every row (the k-th candidate is the float32 cut-off itself)."""
    from scdropout.models import _impute

    monkeypatch.setattr(_impute, "KNN_MARGIN", margin)
    fallback = []
    rows64 = _impute._Reference._float64_rows

    def spy(self, q, *a):
        fallback.append(q.shape[0])
        return rows64(self, q, *a)

    monkeypatch.setattr(_impute._Reference, "_float64_rows", spy)
    rng = np.random.default_rng(3)
    z = rng.normal(size=(300, 6)) * 5 + 100.0  # far from the origin: float32 cancellation
    z[50:60] = z[49]  # exact duplicates: ties at distance 0
    z[100:140] = np.round(z[100:140])  # lattice points: many equal distances
    for data in (z.astype(np.float32), z):  # float64 input is searched in float64 too
        t = torch.from_numpy(data)
        ids = torch.arange(len(data))
        idx = _impute._Reference(t).neighbors(t, 7, ids).numpy()
        assert not (idx == np.arange(len(data))[:, None]).any()
        d = ((data[:, None].astype(np.float64) - data[idx].astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_allclose(d, _brute_distances(data, data, 7, np.arange(len(data))))
        # other queries, nothing excluded
        q = data[:20] + data.dtype.type(0.5)
        got = _impute._Reference(t).neighbors(torch.from_numpy(q), 5).numpy()
        d = ((q[:, None].astype(np.float64) - data[got].astype(np.float64)) ** 2).sum(-1)
        np.testing.assert_allclose(d, _brute_distances(q, data, 5))
    # the fallback ran for (nearly) every row without a margin, for none with one
    assert (sum(fallback) > 500) if margin == 0 else not fallback


def test_large_searches_show_a_progress_bar(monkeypatch, capsys):
    from scdropout.models import _impute

    z = np.random.default_rng(0).normal(size=(60, 3)).astype(np.float32)
    expected = _impute.self_neighbors(z, 5)
    assert "latent neighbours" not in capsys.readouterr().err  # below KNN_PROGRESS_CELLS
    monkeypatch.setattr(_impute, "KNN_PROGRESS_CELLS", 50)
    monkeypatch.setattr(sd.settings, "progress_bar", True)
    np.testing.assert_array_equal(_impute.self_neighbors(z, 5, device="cpu"), expected)
    assert "latent neighbours" in capsys.readouterr().err
    monkeypatch.setattr(sd.settings, "progress_bar", False)
    _impute.self_neighbors(z, 5)
    assert "latent neighbours" not in capsys.readouterr().err


def test_passed_neighbours_must_be_enough():
    from scdropout.models._impute import neighbor_average, self_neighbors

    z = np.random.default_rng(0).normal(size=(30, 3)).astype(np.float32)
    idx = self_neighbors(z, 4)
    assert idx.shape == (30, 4)
    np.testing.assert_array_equal(neighbor_average(z, 3, neighbors=idx), neighbor_average(z, 3))
    with pytest.raises(ValueError, match="4 neighbours per cell were passed, 6 are needed"):
        neighbor_average(z, 6, neighbors=idx)
    assert self_neighbors(z[:1], 4) is None


def test_shrinkage_is_seeded(planted, models):
    real, _ = planted
    model, _ = models
    again = _train(real)
    np.testing.assert_array_equal(again.shrinkage_, model.shrinkage_)
    np.testing.assert_array_equal(again.get_imputed(), model.get_imputed())


def test_save_load_keeps_the_weights(planted, models, tmp_path):
    real, _ = planted
    model, _ = models
    model.save(tmp_path / "m")
    loaded = DropoutAutoencoder.load(tmp_path / "m", real, device="cpu")
    np.testing.assert_array_equal(loaded.shrinkage_, model.shrinkage_)
    np.testing.assert_array_equal(loaded.shrinkage.baseline, model.shrinkage.baseline)
    np.testing.assert_array_equal(loaded.get_imputed(), model.get_imputed())
    assert loaded.shrinkage.n_neighbors == model.shrinkage.n_neighbors
    assert loaded.shrinkage.estimate == model.shrinkage.estimate
    assert loaded.shrinkage.selection == model.shrinkage.selection
    np.testing.assert_array_equal(loaded.shrinkage.geo_baseline, model.shrinkage.geo_baseline)
    for est in ("arithmetic", "geometric"):
        got = loaded.get_imputed(estimate=est)
        np.testing.assert_array_equal(got, model.get_imputed(estimate=est))
    assert loaded.shrinkage.geo_scale == model.shrinkage.geo_scale
    np.testing.assert_array_equal(loaded.shrinkage.geo_weights, model.shrinkage.geo_weights)
    np.testing.assert_array_equal(loaded.shrinkage.geo_gain, model.shrinkage.geo_gain)
    assert loaded.shrinkage.geo_n_cells == model.shrinkage.geo_n_cells
    cfg = tmp_path / "m" / "config.json"
    config = json.loads(cfg.read_text())
    # a model saved before the geometric estimate had a gate of its own: it used `weights`
    for key in ("geo_weights", "geo_gain", "geo_n_cells"):
        del config["shrinkage"][key]
    cfg.write_text(json.dumps(config))
    old = DropoutAutoencoder.load(tmp_path / "m", real, device="cpu").shrinkage
    assert old.geo_weights is None
    assert old.geo_gain is None
    assert old.geo_n_cells == 0
    assert old.weights_for("geometric") is old.weights
    # a model saved before the choice of scale: its geometric estimate used 1e4
    del config["shrinkage"]["geo_scale"]
    cfg.write_text(json.dumps(config))
    assert DropoutAutoencoder.load(tmp_path / "m", real, device="cpu").shrinkage.geo_scale == 1e4
    # a model saved before the choice of estimate: arithmetic, and no geometric estimate
    for key in ("estimate", "geo_baseline", "selection"):
        del config["shrinkage"][key]
    cfg.write_text(json.dumps(config))
    old = DropoutAutoencoder.load(tmp_path / "m", real, device="cpu")
    assert old.shrinkage.estimate == "arithmetic"
    assert old.shrinkage.geo_baseline is None
    assert old.shrinkage.selection == {}
    np.testing.assert_array_equal(old.get_imputed(), model.get_imputed(estimate="arithmetic"))
    with pytest.raises(ValueError, match="before the geometric estimate"):
        old.get_imputed(estimate="geometric")
    # a model saved before stacking existed: its weights apply to the model's mean alone
    del config["shrinkage"]["n_neighbors"]
    cfg.write_text(json.dumps(config))
    old = DropoutAutoencoder.load(tmp_path / "m", real, device="cpu")
    s = old.shrinkage
    assert s.n_neighbors == 0
    lib = old._library.astype(np.float64)[:, None]
    expected = s.weights * model.get_imputed(shrink=False) + s.baseline * lib
    np.testing.assert_allclose(old.get_imputed(), expected, rtol=1e-5, atol=1e-6)
    # a model saved before shrinkage existed: unshrunk means, with a warning
    del config["shrinkage"]
    cfg.write_text(json.dumps(config))
    old = DropoutAutoencoder.load(tmp_path / "m", real, device="cpu")
    assert old.shrinkage_ is None
    with pytest.warns(UserWarning, match="no shrinkage weights"):
        mu = old.get_imputed()
    np.testing.assert_array_equal(mu, model.get_imputed(shrink=False))


def test_geometric_estimate_is_the_documented_log_space_average(planted, models):
    real, _ = planted
    model, _ = models
    s = model.shrinkage
    lib = model._library.astype(np.float64)
    counts = real.X.toarray().astype(np.float64)
    assert s.geo_scale in (1e4, np.median(lib))
    G = _reference_geometric(model.get_latent(), counts, lib, s.n_neighbors, s.geo_scale)
    share = np.expm1(np.log1p(counts / lib[:, None] * s.geo_scale).mean(0)) / s.geo_scale
    np.testing.assert_allclose(s.geo_baseline, (1 - s.geo_weights) * share, rtol=1e-5)
    expected = (s.geo_weights * G + s.geo_baseline) * lib[:, None]
    geo = model.get_imputed(estimate="geometric")
    np.testing.assert_allclose(geo, expected, rtol=1e-4, atol=1e-5)
    # a typical value: below the arithmetic neighbour mean of the counts (Jensen)
    arith_counts = (counts / lib[:, None])[_neighbors(model.get_latent(), s.n_neighbors)].mean(1)
    assert (arith_counts * (1 + 1e-6) >= G).all()
    # the network's mean is not used: MC dropout passes do not move it
    _, sd_geo = model.get_imputed(mc_samples=3, estimate="geometric")
    np.testing.assert_allclose(sd_geo, 0.0, atol=1e-4)
    with pytest.raises(ValueError, match="estimate"):
        model.get_imputed(estimate="median")


def _neighbors(z, k):
    z = z.astype(np.float64)
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return np.argsort(d, axis=1, kind="stable")[:, :k]


def test_auto_estimate_is_the_held_out_choice(models):
    model, _ = models
    s = model.shrinkage
    median = float(np.median(model._library))
    scales = {f"geometric@{1e4:g}": 1e4, f"geometric@{median:g}": median}
    assert set(s.selection) == {"arithmetic", "geometric", *scales}
    mae = {k: v[0] for k, v in s.selection.items()}
    assert all(v >= 0 for v in mae.values())
    assert all(-1 <= v[1] <= 1 for v in s.selection.values())
    # the scale with the smaller error (ties: 1e4), then the estimate (ties: arithmetic)
    best = min(scales, key=lambda name: mae[name])
    assert s.geo_scale == scales[best]
    assert s.selection["geometric"] == s.selection[best]
    assert s.estimate == ("geometric" if mae["geometric"] < mae["arithmetic"] else "arithmetic")
    np.testing.assert_array_equal(model.get_imputed(), model.get_imputed(estimate=s.estimate))


def test_heavy_tailed_counts_choose_the_geometric_estimate(planted):
    """Heavy-tailed counts (read-like) choose the geometric estimate; Poisson counts do not."""
    real, _ = planted
    X = real.X.toarray().astype(np.float64)
    rng = np.random.default_rng(5)
    heavy = np.round(X * rng.lognormal(0.0, 1.5, size=X.shape))
    a = ad.AnnData(sparse.csr_matrix(heavy.astype(np.float32)), var=real.var.copy())
    a = a[np.asarray(a.X.sum(1)).ravel() > 0].copy()
    s = _train(a).shrinkage
    assert s.estimate == "geometric"
    assert s.selection["geometric"][0] < 0.8 * s.selection["arithmetic"][0]
    # the same at read-count depth (~10^6 per cell); both offsets of the log-space average
    # are candidates, one count per 10^4 and one count in the median cell
    deep = ad.AnnData(sparse.csr_matrix(np.round(heavy * 300).astype(np.float32)))
    deep = deep[np.asarray(deep.X.sum(1)).ravel() > 0].copy()
    model = _train(deep)
    s = model.shrinkage
    median = float(np.median(model._library))
    assert median > 1e5
    assert s.estimate == "geometric"
    at = {1e4: s.selection["geometric@10000"][0], median: s.selection[f"geometric@{median:g}"][0]}
    assert s.geo_scale == min(at, key=at.get)
    assert max(at.values()) < 0.8 * s.selection["arithmetic"][0]
    # Poisson counts around 3 group means: the mean is the typical value, arithmetic wins
    groups = rng.integers(0, 3, 300)
    means = rng.gamma(2.0, 1.0, size=(3, 60)) * 3
    lib = rng.uniform(0.7, 1.3, 300)
    X = rng.poisson(means[groups] * lib[:, None]).astype(np.float32)
    s = _train(ad.AnnData(sparse.csr_matrix(X))).shrinkage
    assert s.estimate == "arithmetic"
    assert s.selection["arithmetic"][0] < s.selection["geometric"][0]


def test_point_errors_use_the_non_zero_entries():
    from scdropout.models._impute import _point_errors

    x = np.array([[0.0, 1.0, 3.0], [7.0, 0.0, 2.0]])
    pred = np.array([[100.0, 2.0, 3.0], [3.0, 100.0, 2.0]])
    mae, r = _point_errors(x, pred)
    assert mae == 0.5  # |1-2|, |3-3|, |7-3|, |2-2| -> median 0.5; zeros ignored
    np.testing.assert_allclose(
        r, np.corrcoef(np.log1p([1, 3, 7, 2.0]), np.log1p([2, 3, 3, 2.0]))[0, 1]
    )
    assert _point_errors(np.zeros((2, 2)), np.ones((2, 2)))[0] == 0.0
