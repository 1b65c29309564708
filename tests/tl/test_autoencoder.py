"""tl.autoencoder: keys written, copy, key_added, h5ad round trip, validation before work."""

from __future__ import annotations

import inspect

import anndata as ad
import numpy as np
import pytest
from anndata.tests.helpers import assert_equal
from scipy import sparse

import scdropout as sd

torch = pytest.importorskip("torch")

FAST = {"n_latent": 4, "hidden": (16,), "max_epochs": 3, "progress_bar": False}


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def _small_cached():
    return sd.datasets.synthetic(n_cells=200, n_genes=100, n_markers=10, random_state=2)


@pytest.fixture
def small(_small_cached):
    return _small_cached.copy()


def test_writes_documented_keys(small):
    before = set(small.obsm) | set(small.layers) | set(small.uns)
    assert sd.tl.autoencoder(small, **FAST) is None
    assert small.obsm["X_dae"].shape == (200, 4)
    assert small.obsm["X_dae"].dtype == np.float32
    assert set(small.obsm) | set(small.layers) | set(small.uns) == before | {
        "X_dae",
        "dae",
        "scdropout",  # the record of keys scdropout wrote
    }
    uns = small.uns["dae"]
    assert set(uns) == {
        "params",
        "history",
        "n_epochs",
        "best_epoch",
        "stopped_early",
        "device",
        "n_genes",
        "shrinkage_weights",
        "estimate",
        "geo_scale",
    }
    w = uns["shrinkage_weights"]
    assert w.shape == (100,)
    assert set(np.unique(w)) <= {0.0, 1.0}
    assert uns["estimate"] in ("arithmetic", "geometric")
    lib = np.asarray(small.X.sum(1)).ravel()
    assert uns["geo_scale"] in (1e4, pytest.approx(float(np.median(lib)), rel=1e-6))
    assert uns["n_epochs"] == len(uns["history"]["train_loss"]) == 3
    assert uns["device"] == "cpu"
    # params record every argument
    sig = inspect.signature(sd.tl.autoencoder)
    assert set(uns["params"]) == set(sig.parameters) - {"adata"}
    assert uns["params"]["random_state"] == 0
    assert uns["params"]["layer"] == "None"


def test_impute_with_mc_writes_layers(small):
    other = small.copy()
    # the model's own means (shrink=False): every entry varies over the MC passes
    sd.tl.autoencoder(small, impute=True, mc_samples=4, shrink=False, **FAST)
    mean, sd_ = small.layers["dae_imputed"], small.layers["dae_imputed_sd"]
    assert mean.shape == sd_.shape == small.shape
    assert np.isfinite(mean).all()
    assert (sd_ >= 0).all()
    # a cell whose decoder ReLUs are all 0 in every pass (tiny 3-epoch net) has sd 0
    assert (sd_ > 0).mean() > 0.95
    sd.tl.autoencoder(other, impute=True, shrink=False, **FAST)
    assert "dae_imputed_sd" not in other.layers
    # the deterministic mean and the MC mean are close but not equal
    assert not np.array_equal(other.layers["dae_imputed"], mean)
    np.testing.assert_allclose(other.layers["dae_imputed"].sum(1), mean.sum(1), rtol=1e-3)


def test_shrink_gates_the_stacked_imputation_per_gene():
    # strong planted markers, so that some genes pass the held-out gate and others do not
    a = sd.datasets.synthetic(
        n_cells=300, n_genes=60, n_groups=3, n_markers=10, marker_fold_change=8.0, random_state=3
    )
    kw = {**FAST, "hidden": (32,), "max_epochs": 60}
    other = a.copy()
    sd.tl.autoencoder(a, impute=True, **kw)
    sd.tl.autoencoder(other, impute=True, shrink=False, **kw)
    w = a.uns["dae"]["shrinkage_weights"]
    np.testing.assert_array_equal(w, other.uns["dae"]["shrinkage_weights"])
    assert set(np.unique(w)) <= {0.0, 1.0}
    assert (w == 1).sum() >= 10  # at least the planted markers of one group
    assert a.uns["dae"]["params"]["shrink"] is True
    assert other.uns["dae"]["params"]["shrink"] is False
    shrunk, raw = a.layers["dae_imputed"], other.layers["dae_imputed"]
    # the layer is the model's default imputation, trained the same way
    model = sd.models.DropoutAutoencoder(a, n_latent=4, hidden=(32,))
    model.train(max_epochs=60, progress_bar=False)
    np.testing.assert_allclose(shrunk, model.get_imputed(), rtol=1e-5, atol=1e-6)
    # kept genes are the stacked prediction, not the model's own mean
    assert not np.allclose(shrunk[:, w == 1], raw[:, w == 1])
    # the point estimate the model chose is recorded; forcing the other one changes kept genes
    chosen = a.uns["dae"]["estimate"]
    assert chosen == model.shrinkage.estimate
    forced = a.copy()
    other_estimate = "geometric" if chosen == "arithmetic" else "arithmetic"
    sd.tl.autoencoder(forced, impute=True, estimate=other_estimate, **kw)
    assert forced.uns["dae"]["params"]["estimate"] == other_estimate
    assert forced.uns["dae"]["estimate"] == chosen
    # the stored gate is the one of the estimate that filled the layer
    np.testing.assert_array_equal(w, model.shrinkage.weights_for(chosen))
    np.testing.assert_array_equal(
        forced.uns["dae"]["shrinkage_weights"], model.shrinkage.weights_for(other_estimate)
    )
    np.testing.assert_allclose(
        forced.layers["dae_imputed"], model.get_imputed(estimate=other_estimate), rtol=1e-5
    )
    assert not np.allclose(forced.layers["dae_imputed"][:, w == 1], shrunk[:, w == 1])


def test_shrink_gates_an_undertrained_model_to_constant_shares(small):
    # three epochs do not beat a constant share on held-out entries: every gene is gated off
    sd.tl.autoencoder(small, impute=True, **FAST)
    w = small.uns["dae"]["shrinkage_weights"]
    assert (w == 0).all()
    # with w = 0 a gene's imputation is a constant share of each cell's library
    lib = np.asarray(small.X.sum(1)).ravel()
    share = small.layers["dae_imputed"] / lib[:, None]
    np.testing.assert_allclose(share, np.broadcast_to(share[:1], share.shape), rtol=1e-5)


def test_predictive_sd_layer_is_wider_than_the_mc_sd(small):
    other = small.copy()
    sd.tl.autoencoder(small, impute=True, mc_samples=4, **FAST)
    sd.tl.autoencoder(other, impute=True, mc_samples=4, predictive_sd=True, **FAST)
    np.testing.assert_array_equal(small.layers["dae_imputed"], other.layers["dae_imputed"])
    assert (other.layers["dae_imputed_sd"] >= small.layers["dae_imputed_sd"]).all()
    assert other.uns["dae"]["params"]["predictive_sd"] is True
    with pytest.raises(ValueError, match="needs `impute=True`"):
        sd.tl.autoencoder(small, predictive_sd=True, **FAST)


def test_gene_subset_imputes_only_those_genes(small):
    small.var["use"] = np.arange(small.n_vars) < 30
    sd.tl.autoencoder(small, genes="use", impute=True, **FAST)
    imp = small.layers["dae_imputed"]
    assert np.isfinite(imp[:, :30]).all()
    assert np.isnan(imp[:, 30:]).all()
    assert list(small.uns["dae"]["genes"]) == list(small.var_names[:30])
    assert small.uns["dae"]["params"]["genes"] == "use"


def test_copy_leaves_input_unchanged(small):
    orig = small.copy()
    out = sd.tl.autoencoder(small, copy=True, impute=True, **FAST)
    assert isinstance(out, ad.AnnData)
    assert_equal(small, orig)
    assert "X_dae" in out.obsm
    assert "dae_imputed" in out.layers


def test_same_seed_same_embedding(small):
    a, b = small.copy(), small.copy()
    sd.tl.autoencoder(a, random_state=5, **FAST)
    sd.tl.autoencoder(b, random_state=5, **FAST)
    np.testing.assert_array_equal(a.obsm["X_dae"], b.obsm["X_dae"])


def test_embedding_is_the_latent_averaged_over_its_neighbours(small):
    """X_dae = each cell's latent position averaged with its 15 nearest (equal weights)."""
    raw, smooth = small.copy(), small.copy()
    sd.tl.autoencoder(raw, smooth_latent=0, **FAST)
    sd.tl.autoencoder(smooth, **FAST)
    assert smooth.uns["dae"]["params"]["smooth_latent"] == 15
    z = raw.obsm["X_dae"].astype(np.float64)
    d = ((z[:, None] - z[None]) ** 2).sum(-1)
    np.fill_diagonal(d, -1.0)  # the cell itself comes first
    idx = np.argsort(d, axis=1, kind="stable")[:, :16]
    np.testing.assert_allclose(smooth.obsm["X_dae"], z[idx].mean(1), rtol=1e-5, atol=1e-6)
    # it pulls cells towards their neighbours: the spread shrinks
    assert smooth.obsm["X_dae"].var(0).sum() < z.var(0).sum()


def test_impute_searches_latent_neighbours_once(small, monkeypatch):
    """With impute=True the smoothing and the imputation stack share one neighbour search."""
    from scdropout.models import _impute

    plain = small.copy()
    sd.tl.autoencoder(plain, **FAST)
    plain_calls, calls = [], []
    search = _impute._Reference.neighbors

    def counted(self, query, k, *a, **kw):
        calls.append(k)
        return search(self, query, k, *a, **kw)

    monkeypatch.setattr(_impute._Reference, "neighbors", counted)
    sd.tl.autoencoder(small.copy(), **FAST)  # the gate's fit (per validation batch), smoothing
    plain_calls, calls[:] = list(calls), []
    sd.tl.autoencoder(small, impute=True, **FAST)
    monkeypatch.undo()
    assert calls == plain_calls  # imputing adds no search: the smoothing's one is shared
    np.testing.assert_array_equal(small.obsm["X_dae"], plain.obsm["X_dae"])
    assert np.isfinite(small.layers["dae_imputed"]).all()


def test_key_added_renames_every_key(small):
    sd.tl.autoencoder(small, key_added="ae2", impute=True, mc_samples=2, **FAST)
    assert "X_ae2" in small.obsm
    assert "ae2" in small.uns
    assert {"ae2_imputed", "ae2_imputed_sd"} <= set(small.layers)
    assert not [
        k for slot in ("obsm", "layers", "uns") for k in getattr(small, slot) if "dae" in k
    ]


def test_rerun_overwrites_own_keys_but_not_foreign_ones(small):
    sd.tl.autoencoder(small, **FAST)
    sd.tl.autoencoder(small, **FAST)  # ours: allowed
    other = small.copy()
    other.obsm["X_mine"] = np.zeros((200, 2))
    with pytest.raises(ValueError, match="key_added"):
        sd.tl.autoencoder(other, key_added="mine", **FAST)
    assert other.obsm["X_mine"].shape == (200, 2)
    assert "mine" not in other.uns


def test_rerun_removes_its_own_stale_layers_but_not_the_users(small):
    sd.tl.autoencoder(small, impute=True, mc_samples=2, **FAST)
    assert {"dae_imputed", "dae_imputed_sd"} <= set(small.layers)
    sd.tl.autoencoder(small, impute=True, random_state=7, **FAST)  # no sd this time
    assert "dae_imputed_sd" not in small.layers
    assert "dae_imputed_sd" not in small.uns["scdropout"]["written"]["layers"]
    sd.tl.autoencoder(small, **FAST)  # no imputation this time
    assert not {"dae_imputed", "dae_imputed_sd"} & set(small.layers)
    # a layer of the user's under a name the tool could write is never removed
    small.layers["dae_imputed_sd"] = np.ones(small.shape, dtype=np.float32)
    sd.tl.autoencoder(small, impute=True, **FAST)
    assert (small.layers["dae_imputed_sd"] == 1).all()
    assert "dae_imputed" in small.layers


def test_gene_subset_with_integer_or_repeated_var_names(small):
    ints = small.copy()
    ints.var_names = ad.AnnData(np.zeros((1, ints.n_vars))).var_names  # "0", "1", ...
    ints.var.index = np.arange(ints.n_vars)  # integer labels, as anndata allows with a warning
    mask = np.arange(ints.n_vars) < 5
    sd.tl.autoencoder(ints, genes=mask, impute=True, **FAST)
    imp = ints.layers["dae_imputed"]
    assert np.isfinite(imp[:, :5]).all()
    assert np.isnan(imp[:, 5:]).all()
    rep = small.copy()
    rep.var_names = ["g"] * rep.n_vars  # repeated names: positions decide, not names
    sd.tl.autoencoder(rep, genes=mask, impute=True, **FAST)
    imp = rep.layers["dae_imputed"]
    assert np.isfinite(imp[:, :5]).all()
    assert np.isnan(imp[:, 5:]).all()


def test_numpy_scalars_are_accepted_like_python_ones(small):
    sd.tl.autoencoder(small, **{**FAST, "hidden": np.int64(16), "lr": np.float32(1e-3)})
    assert list(small.uns["dae"]["params"]["hidden"]) == [16]
    assert small.uns["dae"]["params"]["lr"] == pytest.approx(1e-3)


def test_h5ad_round_trip(small, tmp_path):
    sd.tl.autoencoder(small, impute=True, mc_samples=2, **FAST)
    small.write_h5ad(tmp_path / "a.h5ad")
    back = ad.read_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(back.obsm["X_dae"], small.obsm["X_dae"])
    np.testing.assert_array_equal(back.layers["dae_imputed_sd"], small.layers["dae_imputed_sd"])
    np.testing.assert_array_equal(
        back.uns["dae"]["history"]["val_loss"], small.uns["dae"]["history"]["val_loss"]
    )
    assert back.uns["dae"]["params"]["max_epochs"] == 3


def test_neighbors_on_embedding(small):
    sc = pytest.importorskip("scanpy")
    sd.tl.autoencoder(small, **FAST)
    sc.pp.neighbors(small, use_rep="X_dae", n_neighbors=10, method="gauss")  # no umap compile
    assert small.obsp["connectivities"].shape == (200, 200)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"mc_samples": 3}, ValueError, "impute=True"),
        ({"likelihood": "gamma"}, ValueError, "likelihood"),
        ({"max_epochs": 0}, ValueError, "max_epochs"),
        ({"lr": 0.0}, ValueError, "lr"),
        ({"copy": 1}, TypeError, "copy"),
        ({"key_added": ""}, ValueError, "key_added"),
        ({"layer": "counts"}, KeyError, "counts"),
        ({"genes": []}, ValueError, "no genes"),
        ({"device": "tpu9"}, ValueError, "device"),
        ({"impute": True, "estimate": "median"}, ValueError, "estimate"),
        ({"smooth_latent": -1}, ValueError, "smooth_latent"),
        ({"smooth_latent": 2.5}, TypeError, "smooth_latent"),
    ],
)
def test_bad_arguments_raise_before_work(small, kwargs, exc, match):
    orig = small.copy()
    with pytest.raises(exc, match=match):
        sd.tl.autoencoder(small, **{**FAST, **kwargs})
    assert_equal(small, orig)


def test_bad_counts_raise_and_leave_adata_untouched(small):
    X = small.X.toarray()
    X[3, 7] = 1.5
    small.X = sparse.csr_matrix(X)
    orig = small.copy()
    with pytest.raises(ValueError, match="non-integer"):
        sd.tl.autoencoder(small, **FAST)
    assert_equal(small, orig)


def test_import_scdropout_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, scdropout; scdropout.tl.autoencoder; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_keys_of_another_function_are_not_overwritten(small):
    sd.pp.dropout_stats(small, key_added="shared")
    before = small.uns["shared"]
    with pytest.raises(ValueError, match="key_added"):
        sd.tl.autoencoder(small, key_added="shared", **FAST)
    assert small.uns["shared"] is before
    assert "X_shared" not in small.obsm
