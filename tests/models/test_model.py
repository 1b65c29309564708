"""DropoutAutoencoder: training, seeds, inference, MC dropout, save/load, bad input."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from scipy import sparse
from sklearn.cluster import KMeans
from sklearn.metrics import adjusted_rand_score

import scdropout as sd
from scdropout.models import DropoutAutoencoder

FAST = {"max_epochs": 5, "progress_bar": False}


def _trained(adata, epochs=5, **kw):
    model = DropoutAutoencoder(adata, n_latent=5, hidden=(32,), **kw)
    model.train(max_epochs=epochs, progress_bar=False)
    return model


def test_loss_falls_on_planted_data(small):
    model = DropoutAutoencoder(small, n_latent=5, hidden=(64,))
    hist = model.train(max_epochs=20, batch_size=32, progress_bar=False, early_stopping=False)
    assert hist.n_epochs == 20
    assert len(hist.val_loss) == 20
    assert len(hist.train_nll_masked) == 20  # mask_rate 0.1 by default
    # measured: 408 -> 333 (x0.82) in 20 epochs of 6 batches
    assert hist.train_loss[-1] < 0.88 * hist.train_loss[0]
    assert hist.val_loss[-1] < 0.9 * hist.val_loss[0]
    assert hist.train_nll_masked[-1] < hist.train_nll_masked[0]
    assert 1 <= hist.best_epoch <= 20
    assert model.is_trained
    assert "trained 20 epochs" in repr(model)


def test_early_stopping_stops_and_keeps_best(small):
    model = DropoutAutoencoder(small, n_latent=5, hidden=(32,))
    hist = model.train(max_epochs=200, lr=3e-2, patience=2, progress_bar=False)
    assert hist.stopped_early
    assert hist.n_epochs < 200
    assert hist.best_epoch == int(np.argmin(hist.val_loss)) + 1


def test_same_seed_same_latent_and_other_seed_differs(small):
    z1 = _trained(small, random_state=3).get_latent()
    z2 = _trained(small, random_state=3).get_latent()
    np.testing.assert_array_equal(z1, z2)
    z3 = _trained(small, random_state=4).get_latent()
    assert not np.allclose(z1, z3)


def test_global_torch_rng_untouched(small):
    torch.random.manual_seed(123)
    state = torch.random.get_rng_state()
    model = _trained(small)
    model.get_latent(mc_samples=2)
    model.get_imputed(mc_samples=2)
    assert torch.equal(torch.random.get_rng_state(), state)


def test_cpu_work_never_seeds_the_cuda_generators(small, monkeypatch):
    # torch.manual_seed also seeds every CUDA generator (lazily, without CUDA), which forking
    # the CPU state does not restore: on a GPU machine the caller's CUDA stream would change
    calls = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", lambda seed: calls.append(seed))
    model = _trained(small, epochs=2)
    model.get_latent(mc_samples=2)
    model.get_imputed(mc_samples=2)
    assert calls == []


def test_too_few_training_cells_is_a_clear_error(small):
    model = DropoutAutoencoder(small[:30].copy(), n_latent=3)
    with pytest.raises(ValueError, match=r"holds out 30; lower `validation_fraction`"):
        model.train(validation_fraction=0.99, max_epochs=1, progress_bar=False)
    one = DropoutAutoencoder(small[:1].copy(), n_latent=3)
    with pytest.raises(ValueError, match=r"at least 2 training cells.*1 cell\(s\); pass more"):
        one.train(max_epochs=1, progress_bar=False)


def test_nullable_boolean_gene_column(small):
    a = small.copy()
    a.var["use"] = pd.array(np.arange(a.n_vars) < 10, dtype="boolean")
    assert DropoutAutoencoder(a, genes="use").registry.var_names == tuple(a.var_names[:10])
    a.var.loc[a.var_names[3], "use"] = pd.NA
    with pytest.raises(ValueError, match="1 missing value"):
        DropoutAutoencoder(a, genes="use")


def test_dense_csr_csc_and_int_input_agree(small):
    ref = _trained(small).get_latent()
    for X in (small.X.toarray(), sparse.csc_matrix(small.X), small.X.astype(np.int64)):
        other = small.copy()
        other.X = X
        np.testing.assert_allclose(_trained(other).get_latent(), ref, rtol=1e-5, atol=1e-5)


def test_layer_equals_x(small):
    ref = _trained(small).get_latent()
    other = small.copy()
    other.layers["counts"] = other.X.copy()
    other.X = sparse.csr_matrix(other.X.shape, dtype=np.float32)
    np.testing.assert_array_equal(_trained(other, layer="counts").get_latent(), ref)


def test_genes_subset_by_names_mask_and_column(small):
    names = list(small.var_names[:40])
    mask = small.var_names.isin(names)
    small.var["use"] = mask
    zs = [_trained(small, genes=g).get_latent() for g in (names, mask, "use", np.asarray(names))]
    for z in zs[1:]:
        np.testing.assert_array_equal(z, zs[0])
    assert DropoutAutoencoder(small, genes="use").registry.n_vars == 40


def test_mc_dropout_passes_differ_and_sd_positive(small):
    model = _trained(small)
    # the model's own means (shrink=False): every entry varies over the MC passes
    mean, sd_ = model.get_imputed(mc_samples=8, shrink=False)
    det = model.get_imputed(shrink=False)
    assert mean.shape == sd_.shape == det.shape == (small.n_obs, small.n_vars)
    assert mean.dtype == np.float32
    assert (sd_ > 0).mean() > 0.99
    assert not np.allclose(mean, det)
    # deterministic inference is repeatable, MC inference is seeded
    np.testing.assert_array_equal(det, model.get_imputed(shrink=False))
    np.testing.assert_array_equal(mean, model.get_imputed(mc_samples=8, shrink=False)[0])
    zm, zs = model.get_latent(mc_samples=4)
    assert zm.shape == zs.shape == (small.n_obs, 5)
    assert (zs > 0).mean() > 0.95  # a cell whose hidden units are all 0 after ReLU has sd 0
    # imputed means are library-scaled counts: each cell's sum is its library size
    np.testing.assert_allclose(det.sum(1), np.asarray(small.X.sum(1)).ravel(), rtol=1e-4)


def test_predictive_sd_adds_the_nb_sampling_variance(small):
    model = _trained(small)
    theta = torch.exp(model.module.log_theta).clamp(1e-4, 1e4).detach().numpy().astype(np.float64)
    det = model.get_imputed().astype(np.float64)
    mean0, sd0 = model.get_imputed(predictive=True)
    np.testing.assert_array_equal(mean0, model.get_imputed())
    np.testing.assert_allclose(sd0, np.sqrt(det + det**2 / theta), rtol=1e-4)
    # with MC passes: Var = Var_MC(mu) + E_MC[mu + mu^2/theta] > the MC variance alone
    mean, sd_mc = model.get_imputed(mc_samples=8)
    mean_p, sd_p = model.get_imputed(mc_samples=8, predictive=True)
    np.testing.assert_array_equal(mean, mean_p)
    assert (sd_p >= sd_mc).all()
    assert sd_p.mean() > 2 * sd_mc.mean()
    with pytest.raises(TypeError, match="predictive"):
        model.get_imputed(predictive="yes")


def test_scale_input_standardises_the_encoder_input(small, tmp_path):
    model = DropoutAutoencoder(small, n_latent=3, hidden=(16,), scale_input=True)
    X = small.X.toarray().astype(np.float64) if sparse.issparse(small.X) else small.X
    lib = X.sum(1, keepdims=True)
    v = np.log1p(X / lib * np.median(lib))
    net = model.module
    np.testing.assert_allclose(net.input_mean.numpy(), v.mean(0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(1 / net.input_inv_sd.numpy(), v.std(0, ddof=1), rtol=1e-4)
    x = torch.from_numpy(X).float()
    h = net._normalise(x, torch.from_numpy(lib).float())
    np.testing.assert_allclose(h.mean(0).numpy(), 0, atol=1e-4)
    model.train(max_epochs=2, progress_bar=False)
    model.save(tmp_path / "m")
    loaded = DropoutAutoencoder.load(tmp_path / "m", small)
    np.testing.assert_array_equal(loaded.get_latent(), model.get_latent())
    with pytest.raises(TypeError, match="scale_input"):
        DropoutAutoencoder(small, scale_input="yes")


def test_training_threads_capped_by_settings_and_restored(small, monkeypatch):
    from scdropout.models._train import cpu_threads

    old = torch.get_num_threads()
    monkeypatch.setattr(sd.settings, "n_jobs", 1)
    with cpu_threads(torch.device("cpu")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == old
    _trained(small, epochs=1)
    assert torch.get_num_threads() == old


def test_mc_mode_leaves_batchnorm_in_eval(small):
    model = _trained(small)
    before = {k: v.clone() for k, v in model.module.state_dict().items()}
    model.get_latent(mc_samples=3)
    for k, v in model.module.state_dict().items():
        assert torch.equal(v, before[k]), k  # running stats not updated
    assert not model.module.training


def test_get_imputed_checks_memory(small, monkeypatch):
    model = _trained(small, epochs=1)
    monkeypatch.setattr(sd.settings, "max_memory_gb", 1e-6)
    with pytest.raises(MemoryError, match="max_memory_gb"):
        model.get_imputed()


def test_save_load_keeps_latent(small, tmp_path):
    model = _trained(small)
    z = model.get_latent()
    model.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.pt"]
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    assert config["class"] == "DropoutAutoencoder"
    assert config["registry"]["var_names"] == list(small.var_names)
    assert config["init_kwargs"]["n_latent"] == 5
    assert len(config["history"]["train_loss"]) == 5
    loaded = DropoutAutoencoder.load(tmp_path / "m", small, device="cpu")
    np.testing.assert_array_equal(loaded.get_latent(), z)
    assert loaded.history.train_loss == model.history.train_loss
    # without adata: embed data passed later; genes are matched by name, in any order
    bare = DropoutAutoencoder.load(tmp_path / "m")
    with pytest.raises(ValueError, match="without data"):
        bare.get_latent()
    shuffled = small[:, small.var_names[::-1]].copy()
    np.testing.assert_allclose(bare.get_latent(shuffled), z, rtol=1e-5, atol=1e-6)
    # the file holds tensors only
    state = torch.load(tmp_path / "m" / "model.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())


def test_save_refuses_to_overwrite(small, tmp_path):
    model = _trained(small, epochs=1)
    model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        model.save(tmp_path / "m")
    model.save(tmp_path / "m", overwrite=True)


def test_load_var_names_mismatch_says_how_many(small, tmp_path):
    _trained(small, epochs=1).save(tmp_path / "m")
    other = small.copy()
    other.var_names = [f"X{i}" if i < 3 else g for i, g in enumerate(small.var_names)]
    with pytest.raises(ValueError, match=r"lacks 3 of the 100 genes.*Gene0000"):
        DropoutAutoencoder.load(tmp_path / "m", other)
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        DropoutAutoencoder.load(tmp_path / "nowhere")
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="malformed"):
        DropoutAutoencoder.load(tmp_path / "m")


def test_nan_loss_names_epoch_and_knob(small):
    model = DropoutAutoencoder(small, likelihood="zinb", n_latent=5, hidden=(32,))
    with pytest.raises(RuntimeError, match=r"at epoch 1; lower `lr`.*likelihood='nb'"):
        model.train(max_epochs=3, lr=1e4, progress_bar=False)
    # a poisoned weight (e.g. from a bad checkpoint) is caught the same way
    model = DropoutAutoencoder(small, n_latent=5, hidden=(32,))
    with torch.no_grad():
        model.module.mean_head.bias[0] = float("nan")
    with pytest.raises(RuntimeError, match="epoch 1"):
        model.train(max_epochs=2, progress_bar=False)


def _with_value(adata, value):
    X = adata.X.toarray()
    X[0, 0] = value
    adata.X = sparse.csr_matrix(X)
    return adata


@pytest.mark.parametrize(
    ("value", "match"),
    [(0.5, "non-integer"), (np.nan, "NaN"), (np.inf, "infinite"), (-1.0, "negative")],
)
def test_bad_counts_raise(small, value, match):
    with pytest.raises(ValueError, match=match):
        DropoutAutoencoder(_with_value(small, value))


def test_bad_input_raises(small):
    with pytest.raises(ValueError, match="selects no genes"):
        DropoutAutoencoder(small, genes=[])
    with pytest.raises(ValueError, match="selects no genes"):
        DropoutAutoencoder(small, genes=np.zeros(small.n_vars, dtype=bool))
    with pytest.raises(ValueError, match="1 of the 2 names"):
        DropoutAutoencoder(small, genes=["Gene0001", "nope"])
    with pytest.raises(KeyError, match="nope"):
        DropoutAutoencoder(small, genes="nope")
    with pytest.raises(KeyError, match="layer='counts'"):
        DropoutAutoencoder(small, layer="counts")
    empty = small.copy()
    X = empty.X.toarray()
    X[5] = 0
    empty.X = sparse.csr_matrix(X)
    with pytest.raises(ValueError, match=r"1 cells have no counts.*filter_cells"):
        DropoutAutoencoder(empty)
    with pytest.raises(ValueError, match="no cells"):
        DropoutAutoencoder(small[:0].copy())
    with pytest.raises(TypeError, match="AnnData"):
        DropoutAutoencoder(small.X)
    with pytest.raises(ValueError, match="likelihood"):
        DropoutAutoencoder(small, likelihood="gamma")
    with pytest.raises(ValueError, match="dropout_kind"):
        DropoutAutoencoder(small, dropout_kind="alpha")
    with pytest.raises(ValueError, match="mask_rate"):
        DropoutAutoencoder(small, mask_rate=1.0)
    with pytest.raises(ValueError, match="hidden"):
        DropoutAutoencoder(small, hidden=())
    model = DropoutAutoencoder(small, n_latent=3)
    with pytest.raises(ValueError, match="lr"):
        model.train(lr=-1.0)
    with pytest.raises(ValueError, match="device='tpu9'"):
        model.train(device="tpu9")
    with pytest.raises(ValueError, match="batch_size"):
        model.train(batch_size=1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_request_without_cuda_raises(small):
    with pytest.raises(ValueError, match="CUDA"):
        DropoutAutoencoder(small).train(device="cuda", max_epochs=1)


def test_auto_device_is_cpu_without_cuda(small, monkeypatch):
    from scdropout.models._model import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    monkeypatch.setattr(sd.settings, "device", "cpu")
    assert resolve_device("auto") == torch.device("cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trains_on_gpu_and_returns_numpy(small, tmp_path):
    model = DropoutAutoencoder(small, n_latent=5)
    model.train(max_epochs=5, device="cuda", progress_bar=False)
    z = model.get_latent()
    assert isinstance(z, np.ndarray)
    assert z.shape == (small.n_obs, 5)
    model.save(tmp_path / "g")
    cpu = DropoutAutoencoder.load(tmp_path / "g", small, device="cpu")
    np.testing.assert_allclose(cpu.get_latent(), z, rtol=1e-3, atol=1e-3)
    # the neighbour search of smoothing and imputation runs on the GPU: same neighbours
    from scdropout.models._impute import self_neighbors

    on_gpu = self_neighbors(z, 10, device="cuda")
    on_cpu = self_neighbors(z, 10)
    assert np.mean(np.sort(on_gpu, 1) == np.sort(on_cpu, 1)) > 0.99  # ties may order apart
    smooth = model.get_latent(smooth=10)
    assert isinstance(smooth, np.ndarray)
    assert smooth.shape == z.shape
    assert np.isfinite(model.get_imputed()).all()


def test_latent_separates_planted_groups(synthetic):
    # measured 2026-11-22 (CPU, 30 epochs, KMeans k=3): ARI 1.000 / 0.990 / 0.990 for seeds
    # 0 / 1 / 2; 50 PCs of log1p-normalised counts get 1.000 on this easy simulation. The floor
    # 0.9 leaves room for BLAS and thread-count differences.
    model = DropoutAutoencoder(synthetic, random_state=0)
    model.train(max_epochs=30, progress_bar=False)
    labels = KMeans(3, n_init=10, random_state=0).fit_predict(model.get_latent())
    assert adjusted_rand_score(synthetic.obs["group"], labels) >= 0.9


def test_new_cells_can_be_embedded(small):
    model = _trained(small)
    half = ad.AnnData(small.X[:50], obs=small.obs.iloc[:50], var=small.var)
    np.testing.assert_allclose(model.get_latent(half), model.get_latent()[:50], rtol=1e-5)


def test_progress_bar_shows_losses(small, capsys, monkeypatch):
    model = DropoutAutoencoder(small, n_latent=3, hidden=(16,))
    model.train(max_epochs=2, progress_bar=True)
    err = capsys.readouterr().err
    assert "epochs" in err
    assert "val=" in err
    monkeypatch.setattr(sd.settings, "progress_bar", False)
    model.train(max_epochs=1, progress_bar=True)
    assert "epochs" not in capsys.readouterr().err
