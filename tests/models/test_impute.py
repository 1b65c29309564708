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


def test_planted_markers_keep_the_model_mean(planted, models):
    real, _ = planted
    model, _ = models
    w = model.shrinkage_
    marker = real.var["marker_of"].astype(str).to_numpy() != ""
    assert ((w >= 0) & (w <= 1)).all()
    assert (w[marker] > 0).sum() >= 10
    assert (w[marker] > 0).mean() > (w[~marker] > 0).mean() + 0.3
    assert w[marker].max() >= 0.8


def test_shrunk_mean_is_the_documented_mixture(models):
    model, _ = models
    raw = model.get_imputed(shrink=False).astype(np.float64)
    lib = model._library.astype(np.float64)
    s = model.shrinkage
    expected = s.weights * raw + s.baseline * lib[:, None]
    np.testing.assert_allclose(model.get_imputed(), expected, rtol=1e-5, atol=1e-6)
    # MC passes are shrunk one by one: the MC sd scales by w (same seeded dropout masks)
    _, sd_raw = model.get_imputed(mc_samples=4, shrink=False)
    _, sd_shrunk = model.get_imputed(mc_samples=4)
    np.testing.assert_allclose(sd_shrunk, s.weights * sd_raw, rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="shrink"):
        model.get_imputed(shrink="yes")


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
    # a model saved before shrinkage existed: unshrunk means, with a warning
    cfg = tmp_path / "m" / "config.json"
    config = json.loads(cfg.read_text())
    del config["shrinkage"]
    cfg.write_text(json.dumps(config))
    old = DropoutAutoencoder.load(tmp_path / "m", real, device="cpu")
    assert old.shrinkage_ is None
    with pytest.warns(UserWarning, match="no shrinkage weights"):
        mu = old.get_imputed()
    np.testing.assert_array_equal(mu, model.get_imputed(shrink=False))
