"""sd.tl.cidr: results, invariants, side effects and errors (STYLE.md §5)."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from anndata.tests.helpers import assert_equal
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

import scdropout as sd
from scdropout.kernels import cidr as kc


def _cidr_r(adata, **kwargs):
    """``sd.tl.cidr`` with ``flavor="r"``: this module tests the exact R port."""
    return sd.tl.cidr(adata, **{"flavor": "r", **kwargs})


@pytest.fixture(scope="module")
def small():
    return sd.datasets.synthetic(n_cells=150, n_genes=300, n_groups=3, random_state=1)


@pytest.fixture(scope="module")
def small_done(small):
    return _cidr_r(small, progress_bar=False, copy=True)


KEYS = {
    "obs": ["cidr", "cidr_threshold", "cidr_n_candidates"],
    "var": ["cidr_candidate_rate", "cidr_selected"],
    "obsm": ["X_cidr"],
    "uns": ["cidr"],
}


def test_results_and_quality(small_done):
    a = small_done
    u = a.uns["cidr"]
    k = u["n_clusters"]
    assert isinstance(a.obs["cidr"].dtype, pd.CategoricalDtype)
    assert list(a.obs["cidr"].cat.categories) == [str(i) for i in range(k)]
    assert a.obsm["X_cidr"].shape[1] >= u["n_pcs"]
    assert u["variation"].sum() == pytest.approx(1.0)
    assert u["eigenvalues"].size == a.n_obs
    assert u["ch_index"].size == 3 * u["n_pcs"] + 3
    assert "cidr_distances" not in a.obsp
    import inspect

    assert set(u["params"]) == set(inspect.signature(sd.tl.cidr).parameters) - {"adata"}
    assert adjusted_rand_score(a.obs["group"], a.obs["cidr"]) > 0.9
    # candidates: entries of the log matrix below the cell's threshold
    ld = kc.log_tpm(a.X)
    dense = ld.X.toarray()
    thr = a.obs["cidr_threshold"].to_numpy()
    assert_array_equal(a.obs["cidr_n_candidates"], (dense < thr[:, None]).sum(axis=1))
    rate = a.var["cidr_candidate_rate"].to_numpy()
    assert_allclose(rate[ld.kept_genes], (dense < thr[:, None]).mean(axis=0))
    assert np.isnan(np.delete(rate, ld.kept_genes)).all()


def test_matches_kernel_pipeline(small, small_done):
    ld = kc.log_tpm(small.X)
    th = kc.dropout_thresholds(ld.X, ld.library_size)
    fit = kc.weighting_threshold(ld.X, th.thresholds)
    D = kc.dissimilarity(ld.X, th.thresholds, fit.threshold)
    ref = kc.pcoa_ref(D)
    u = small_done.uns["cidr"]
    assert u["w_threshold"] == fit.threshold
    assert_allclose(u["eigenvalues"], ref.eigenvalues, rtol=1e-8, atol=1e-8)
    npc = kc.calc_npc(ref.variation)
    assert u["n_pcs"] == npc
    wc = kc.ward_clusters(ref.coordinates[:, :npc])
    assert adjusted_rand_score(wc.labels, small_done.obs["cidr"]) == 1.0


def test_store_distances_and_given_k(small):
    a = _cidr_r(small, progress_bar=False, store_distances=True, n_clusters=5, copy=True)
    D = a.obsp["cidr_distances"]
    assert D.shape == (a.n_obs, a.n_obs)
    assert_array_equal(D, D.T)
    assert a.uns["cidr"]["n_clusters"] == 5
    assert a.obs["cidr"].cat.categories.size == 5
    assert a.uns["cidr"]["ch_index"].size == 0
    b = _cidr_r(small, progress_bar=False, n_pcs=4, copy=True)
    assert b.uns["cidr"]["n_pcs"] == 4


def test_layouts_dtypes_and_layer_agree(small, small_done, matrix_format):
    a = small.copy()
    a.X = matrix_format(a.X.astype(np.int64) if sparse.issparse(a.X) else a.X)
    _cidr_r(a, progress_bar=False)
    assert_array_equal(a.obs["cidr"], small_done.obs["cidr"])
    assert_allclose(a.uns["cidr"]["eigenvalues"], small_done.uns["cidr"]["eigenvalues"])
    b = small.copy()
    b.layers["counts"] = b.X.copy()
    b.X = sparse.csr_matrix(b.X.shape, dtype=np.float32)
    _cidr_r(b, layer="counts", progress_bar=False)
    assert_array_equal(b.obs["cidr"], small_done.obs["cidr"])


def test_permutation_invariance(small, small_done):
    perm = np.random.default_rng(0).permutation(small.n_obs)
    a = _cidr_r(small[perm].copy(), progress_bar=False, copy=True)
    assert_allclose(
        a.obs["cidr_threshold"], small_done.obs["cidr_threshold"].to_numpy()[perm], rtol=1e-12
    )
    assert adjusted_rand_score(a.obs["cidr"], small_done.obs["cidr"].to_numpy()[perm]) == 1.0
    assert_allclose(a.uns["cidr"]["eigenvalues"], small_done.uns["cidr"]["eigenvalues"], atol=1e-8)


def test_n_jobs_invariance(small):
    a = _cidr_r(small, progress_bar=False, n_jobs=1, store_distances=True, copy=True)
    b = _cidr_r(small, progress_bar=False, n_jobs=2, store_distances=True, copy=True)
    assert_array_equal(a.obsp["cidr_distances"], b.obsp["cidr_distances"])
    assert_array_equal(a.obs["cidr"], b.obs["cidr"])


def test_copy_leaves_input_unchanged(small):
    before = small.copy()
    out = _cidr_r(small, progress_bar=False, copy=True)
    assert isinstance(out, ad.AnnData)
    assert_equal(small, before)


def test_key_added_renames_every_key(small):
    a = small.copy()
    assert _cidr_r(a, progress_bar=False, key_added="c2", store_distances=True) is None
    for slot, keys in KEYS.items():
        for key in keys:
            renamed = key.replace("cidr", "c2")
            assert renamed in getattr(a, slot), (slot, renamed)
            assert key not in getattr(a, slot)
    assert "c2_distances" in a.obsp
    assert a.uns["c2"]["params"]["key_added"] == "c2"


def test_rerun_overwrites_ours_but_not_foreign_keys(small):
    a = small.copy()
    _cidr_r(a, progress_bar=False)
    _cidr_r(a, progress_bar=False, n_clusters=4)
    assert a.uns["cidr"]["n_clusters"] == 4
    b = small.copy()
    b.obs["cidr"] = "mine"
    with pytest.raises(ValueError, match="key_added"):
        _cidr_r(b, progress_bar=False)
    assert (b.obs["cidr"] == "mine").all()
    assert "cidr" not in b.uns


def test_rerun_removes_its_stale_distances_and_names_its_owner(small):
    a = small.copy()
    _cidr_r(a, progress_bar=False, store_distances=True)
    assert "cidr_distances" in a.obsp
    _cidr_r(a, progress_bar=False)  # no distances this time: the old ones would not match
    assert "cidr_distances" not in a.obsp
    assert a.uns["scdropout"]["written"]["uns"]["cidr"] == "cidr"
    with pytest.raises(ValueError, match="holds results of `cidr`"):
        sd.pp.dropout_stats(a, key_added="cidr")


def test_record_of_an_older_file_still_lets_cidr_rerun(small):
    a = small.copy()
    _cidr_r(a, progress_bar=False)
    written = a.uns["scdropout"]["written"]
    for slot in written:  # as files written before the owner was recorded
        written[slot] = dict.fromkeys(written[slot], "")
    _cidr_r(a, progress_bar=False, n_clusters=4)
    assert a.uns["cidr"]["n_clusters"] == 4


def test_negative_random_state_fails_before_work(small):
    a = small.copy()
    for flavor in ("r", "dropout"):
        with pytest.raises(ValueError, match="random_state"):
            sd.tl.cidr(a, flavor=flavor, random_state=-1, progress_bar=False)
    assert "cidr" not in a.uns


def test_write_h5ad_round_trip(small_done, tmp_path):
    path = tmp_path / "cidr.h5ad"
    small_done.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert_array_equal(back.obs["cidr"], small_done.obs["cidr"])
    assert_allclose(back.uns["cidr"]["eigenvalues"], small_done.uns["cidr"]["eigenvalues"])
    assert back.uns["cidr"]["params"]["genes"] == "None"


def test_gene_subset(small):
    a = small.copy()
    a.var["use"] = np.arange(a.n_vars) % 2 == 0
    _cidr_r(a, genes="use", progress_bar=False)
    assert np.isnan(a.var.loc[~a.var["use"], "cidr_candidate_rate"]).all()
    # flavor="r" uses every expressed gene of the subset
    assert_array_equal(a.var["cidr_selected"], a.var["use"] & (a.X.sum(axis=0).A1 > 0))
    assert a.uns["cidr"]["n_genes_used"] <= a.var["use"].sum()
    ref = _cidr_r(a[:, a.var["use"].to_numpy()].copy(), progress_bar=False, copy=True)
    assert_allclose(a.uns["cidr"]["eigenvalues"], ref.uns["cidr"]["eigenvalues"])


def test_zeros_only_and_logistic(small):
    a = _cidr_r(small, progress_bar=False, zeros_only=True, copy=True)
    nz = np.asarray((small.X != 0).sum(axis=1)).ravel()
    genes = a.uns["cidr"]["n_genes_used"]
    assert_array_equal(a.obs["cidr_n_candidates"], genes - nz)
    b = _cidr_r(small, progress_bar=False, step_function=False, copy=True)
    assert adjusted_rand_score(b.obs["group"], b.obs["cidr"]) > 0.8


def test_float32(small, small_done):
    a = _cidr_r(small, progress_bar=False, dtype="float32", copy=True)
    assert adjusted_rand_score(a.obs["cidr"], small_done.obs["cidr"]) > 0.99


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"n_clusters": 1}, ValueError, "n_clusters"),
        ({"n_clusters": 1000}, ValueError, "n_clusters"),
        ({"n_pcs": 0}, ValueError, "n_pcs"),
        ({"n_pcs": 500}, ValueError, "n_pcs"),
        ({"flavor": "python"}, ValueError, "flavor"),
        ({"tag_type": "tpm"}, ValueError, "tag_type"),
        ({"dtype": "float16"}, ValueError, "dtype"),
        ({"device": "tpu"}, ValueError, "device"),
        ({"n_jobs": 0}, ValueError, "n_jobs"),
        ({"layer": "nope"}, KeyError, "layer"),
        ({"genes": "nope"}, KeyError, "gene_ids"),
        ({"genes": "marker_of"}, ValueError, "boolean"),
        ({"copy": 1}, TypeError, "copy"),
    ],
)
def test_bad_arguments(small, kwargs, exc, match):
    a = small.copy()
    with pytest.raises(exc, match=match):
        _cidr_r(a, progress_bar=False, **kwargs)
    assert "cidr" not in a.obs


def test_bad_data(small):
    a = small[:2].copy()
    with pytest.raises(ValueError, match="at least 3 cells"):
        _cidr_r(a, progress_bar=False)
    b = small.copy()
    b.X = b.X.astype(np.float64)
    b.X[0, 0] = 0.5
    with pytest.raises(ValueError, match="non-integer"):
        _cidr_r(b, progress_bar=False)
    _cidr_r(b, progress_bar=False, tag_type="rpkm")  # fine as expression values
    b.X[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        _cidr_r(b, progress_bar=False, tag_type="rpkm")
    b.X[0, 0] = -1
    with pytest.raises(ValueError, match="negative"):
        _cidr_r(b, progress_bar=False)
    c = small.copy()
    c.X = c.X.toarray()
    c.X[3] = 0
    with pytest.raises(ValueError, match="no counts"):
        _cidr_r(c, progress_bar=False)
    with pytest.raises(TypeError, match="AnnData"):
        _cidr_r(c.X, progress_bar=False)


def test_memory_estimate(small, monkeypatch):
    monkeypatch.setattr(sd.settings, "max_memory_gb", 1e-6)
    with pytest.raises(MemoryError, match="subsample the cells"):
        _cidr_r(small, progress_bar=False)


def test_memory_estimate_exact_mode_suggests_landmark(small, monkeypatch):
    monkeypatch.setattr(sd.settings, "max_memory_gb", 1e-6)
    with pytest.raises(MemoryError, match="mode='landmark'"):
        _cidr_r(small, mode="exact", progress_bar=False)
    with pytest.raises(MemoryError, match=r"landmark CIDR \(150 cells x 60 landmarks\)"):
        _cidr_r(small, mode="landmark", n_landmarks=60, progress_bar=False)
    assert "cidr" not in small.obs


# ---------------------------------------------------------------------------- exact mode, large N


def test_exact_mode_leading_eigenvalues_give_the_same_result(small, small_done, monkeypatch):
    # above FULL_EIGH_MAX cells only the leading eigenvalues are computed; same nPC and labels
    monkeypatch.setattr(kc, "FULL_EIGH_MAX", 50)
    monkeypatch.setattr(kc, "SUBMATRIX_SIZE", 150)
    a = _cidr_r(small, progress_bar=False, copy=True)
    u, ref = a.uns["cidr"], small_done.uns["cidr"]
    assert ref["eigenvalues_complete"]
    assert not u["eigenvalues_complete"]
    assert u["n_pcs"] == ref["n_pcs"]
    assert u["n_clusters"] == ref["n_clusters"]
    assert_allclose(u["eigenvalues"], ref["eigenvalues"][: u["eigenvalues"].size], rtol=1e-9)
    assert_allclose(np.abs(a.obsm["X_cidr"]), np.abs(small_done.obsm["X_cidr"]), atol=1e-7)
    assert adjusted_rand_score(a.obs["cidr"], small_done.obs["cidr"]) == 1.0


# ---------------------------------------------------------------------------- landmark mode


@pytest.fixture(scope="module")
def medium():
    return sd.datasets.synthetic(n_cells=600, n_genes=400, n_groups=4, random_state=3)


@pytest.fixture(scope="module")
def medium_exact(medium):
    return _cidr_r(medium, mode="exact", progress_bar=False, copy=True)


def test_landmark_mode_agrees_with_exact(medium, medium_exact, monkeypatch):
    # the landmark path must never form the N x N matrix nor run the N x N eigen-solver
    def forbidden(*args, **kwargs):
        msg = "N x N computation in landmark mode"
        raise AssertionError(msg)

    monkeypatch.setattr(kc, "dissimilarity", forbidden)
    monkeypatch.setattr(kc, "pcoa_npc", forbidden)
    a = _cidr_r(medium, mode="landmark", n_landmarks=150, progress_bar=False, copy=True)
    u = a.uns["cidr"]
    assert u["mode"] == "landmark"
    assert u["params"]["mode"] == "landmark"
    assert u["params"]["n_landmarks"] == 150
    assert u["landmarks"].shape == (150,)
    assert np.all(np.diff(u["landmarks"]) > 0)
    assert u["eigenvalues"].size == 150  # the landmark block's spectrum
    assert u["variation"].sum() == pytest.approx(1.0)
    assert a.obsm["X_cidr"].shape == (600, max(u["n_pcs"], 20))
    assert not a.obsp
    k = u["n_clusters"]
    assert list(a.obs["cidr"].cat.categories) == [str(i) for i in range(k)]
    assert a.obs["cidr"].value_counts().min() > 0
    ari_exact = adjusted_rand_score(medium_exact.obs["cidr"], a.obs["cidr"])
    ari_truth = adjusted_rand_score(medium.obs["group"], a.obs["cidr"])
    assert ari_exact > 0.9  # measured 0.991 (seeds 0-2: 0.98-1.0); exact vs truth 0.991
    assert ari_truth > 0.9
    assert medium_exact.uns["cidr"]["mode"] == "exact"
    assert medium_exact.uns["cidr"]["landmarks"].size == 0


def test_landmark_mode_is_deterministic_and_seeded(medium):
    kw = {"mode": "landmark", "n_landmarks": 100, "progress_bar": False, "copy": True}
    a = _cidr_r(medium, random_state=5, **kw)
    b = _cidr_r(medium, random_state=5, **kw)
    assert_array_equal(a.uns["cidr"]["landmarks"], b.uns["cidr"]["landmarks"])
    assert_array_equal(a.obsm["X_cidr"], b.obsm["X_cidr"])
    assert_array_equal(a.obs["cidr"], b.obs["cidr"])
    c = _cidr_r(medium, random_state=6, **kw)
    assert not np.array_equal(a.uns["cidr"]["landmarks"], c.uns["cidr"]["landmarks"])
    # given k and n_pcs are used as they are
    d = _cidr_r(medium, random_state=5, n_clusters=3, n_pcs=4, **kw)
    assert d.uns["cidr"]["n_clusters"] == 3
    assert d.uns["cidr"]["n_pcs"] == 4
    assert d.obs["cidr"].cat.categories.size == 3


def test_auto_mode_switches_on_the_cell_count(small, monkeypatch):
    from scdropout.tl import _cidr

    a = _cidr_r(small, progress_bar=False, copy=True)
    assert a.uns["cidr"]["mode"] == "exact"
    monkeypatch.setattr(_cidr, "AUTO_LANDMARK_CELLS", 100)
    b = _cidr_r(small, progress_bar=False, copy=True, n_landmarks=80)
    assert b.uns["cidr"]["mode"] == "landmark"
    assert b.uns["cidr"]["params"]["mode"] == "auto"
    assert b.uns["cidr"]["landmarks"].size == 80
    c = _cidr_r(small, progress_bar=False, copy=True)  # default: min(1000, N) landmarks
    assert c.uns["cidr"]["landmarks"].size == 150


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"mode": "fast"}, ValueError, "mode"),
        ({"mode": "landmark", "n_landmarks": 10}, ValueError, "n_landmarks"),
        ({"mode": "landmark", "n_landmarks": 200}, ValueError, "n_landmarks"),
        ({"mode": "landmark", "n_landmarks": 60.5}, TypeError, "n_landmarks"),
        ({"mode": "exact", "n_landmarks": 60}, ValueError, "n_landmarks"),
        ({"mode": "landmark", "store_distances": True}, ValueError, "store_distances"),
        ({"mode": "landmark", "correction": True}, ValueError, "correction"),
        ({"mode": "landmark", "n_landmarks": 60, "n_clusters": 60}, ValueError, "n_landmarks"),
        ({"mode": "landmark", "n_landmarks": 60, "n_pcs": 70}, ValueError, "n_landmarks"),
    ],
)
def test_bad_landmark_arguments(small, kwargs, exc, match):
    a = small.copy()
    with pytest.raises(exc, match=match):
        _cidr_r(a, progress_bar=False, **kwargs)
    assert "cidr" not in a.obs


@pytest.mark.parametrize("flavor", ["r", "dropout"])
def test_genes_by_cells_is_detected(small, flavor):
    t = small.T.copy()
    t.obs_names = [f"Gene{i}" for i in range(t.n_obs)]
    t.var_names = [
        f"{''.join('ACGT'[(i >> (2 * j)) & 3] for j in range(14))}-1" for i in range(t.n_vars)
    ]
    before = t.copy()
    with pytest.raises(ValueError, match=r"transposed \(genes x cells\).*adata\.T"):
        sd.tl.cidr(t, flavor=flavor, progress_bar=False)
    assert list(t.obs.columns) == list(before.obs.columns)
    assert "cidr" not in t.uns
