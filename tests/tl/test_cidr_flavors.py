"""tl._cidr_flavors: the CIDR-on-dropout-genes variant (quality, determinism, errors)."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse
from sklearn.metrics import adjusted_rand_score

import scdropout as sd
from scdropout.kernels import cidr as kc
from scdropout.tl._cidr_flavors import (
    cidr_dropout,
    cluster_coordinates,
    dropout_gene_ranks,
    pca_top,
    pcoa_top,
)


@pytest.fixture(scope="module")
def prepared(_synthetic_cached):
    """What tl.cidr computes before the dissimilarity: log TPM, thresholds, W (+ counts)."""
    a = _synthetic_cached
    ld = kc.log_tpm(a.X)
    th = kc.dropout_thresholds(ld.X, ld.library_size)
    fit = kc.weighting_threshold(ld.X, th.thresholds)
    counts = sparse.csr_matrix(a.X)[:, ld.kept_genes]
    groups = a.obs["group"].to_numpy()
    markers = a.var["marker_of"].to_numpy()[ld.kept_genes] != ""
    return ld.X, th.thresholds, fit.threshold, counts, groups, markers


# ARI floors measured on the fixture (300 cells, 500 genes of which 60 planted markers): the
# default keeps 1000 genes, i.e. all 498 expressed ones here, and its 20 coordinates then
# carry much noise (measured ARI 0.42, 3 clusters); a selection of ~100-200 genes recovers
# the groups (0.91 default clustering, 0.81 with imputation, 0.76 Ward + CH on 10)
@pytest.mark.parametrize(
    ("kwargs", "floor", "n_coords"),
    [
        ({}, 0.35, 20),
        ({"n_top_genes": 100}, 0.85, 20),
        ({"n_top_genes": 200, "gene_method": "nbumi"}, 0.85, 20),
        ({"n_top_genes": 200, "impute": True}, 0.75, 20),
        ({"n_top_genes": 200, "cluster_method": "ward_ch", "n_pcs": 10}, 0.7, 10),
    ],
)
def test_recovers_planted_groups(prepared, kwargs, floor, n_coords):
    X, thr, w, counts, groups, _ = prepared
    res = cidr_dropout(X, thr, w, counts=counts, **kwargs)
    assert adjusted_rand_score(groups, res.labels) >= floor
    assert res.n_clusters == np.unique(res.labels).size
    assert_array_equal(np.unique(res.labels), np.arange(res.n_clusters))
    assert res.coordinates.shape == (X.shape[0], n_coords)
    assert np.all(np.diff(res.eigenvalues) <= 0)
    assert np.all(np.diff(res.genes_used) > 0)


def test_deterministic_and_fixed_k(prepared):
    X, thr, w, counts, _, _ = prepared
    one = cidr_dropout(X, thr, w, counts=counts, n_top_genes=200, random_state=3)
    two = cidr_dropout(X, thr, w, counts=counts, n_top_genes=200, random_state=3)
    assert_array_equal(one.labels, two.labels)
    assert_array_equal(one.coordinates, two.coordinates)
    assert one.genes_used.size == 200
    fixed = cidr_dropout(
        X, thr, w, counts=counts, n_top_genes=200, cluster_method="ward_ch", n_clusters=5
    )
    assert fixed.n_clusters == 5
    # more genes than the matrix has: all genes, same as the plain CIDR dissimilarity
    full = cidr_dropout(X, thr, w, n_top_genes=10**6)
    assert_array_equal(full.genes_used, np.arange(X.shape[1]))


def test_gene_ranks_equal_pp_dropout_genes(synthetic, prepared):
    _, _, _, counts, _, markers = prepared
    a = synthetic
    for method in ("m3drop", "nbumi"):
        rank = dropout_gene_ranks(a.X, method=method)
        sd.pp.dropout_genes(a, flavor=method, n_top_genes=10, key_added=method)
        assert_array_equal(rank, a.var[f"{method}_rank"])
        # the 60 planted markers are an eighth of the genes; half of them rank in the top 60
        top = dropout_gene_ranks(counts, method=method) <= markers.sum()
        assert markers[top].mean() >= 0.5
    assert_array_equal(
        dropout_gene_ranks(counts.toarray()), dropout_gene_ranks(sparse.csc_matrix(counts))
    )


@pytest.mark.parametrize("n", [60, 1600])  # full eigh, then Lanczos
def test_pcoa_top_and_pca_top_are_pca_of_euclidean_points(n):
    rng = np.random.default_rng(0)
    P = rng.normal(size=(n, 4)) * np.array([5.0, 3.0, 2.0, 1.0])
    sq = (P * P).sum(1)
    D = np.sqrt(np.maximum(sq[:, None] + sq[None, :] - 2 * P @ P.T, 0.0))
    # PCoA of Euclidean distances = PCA of the centred points (Gower 1966)
    Pc = P - P.mean(0)
    U, S, _ = np.linalg.svd(Pc, full_matrices=False)
    for lam, Y in (pcoa_top(D, 3), pca_top(sparse.csr_matrix(P), 3)):
        assert_allclose(lam, S[:3] ** 2, rtol=1e-6)
        assert_allclose(np.abs(Y), np.abs(U[:, :3] * S[:3]), rtol=1e-5, atol=1e-6)
        big = np.argmax(np.abs(Y), axis=0)
        assert np.all(Y[big, np.arange(3)] > 0)  # sign convention


def test_errors(prepared):
    X, thr, w, counts, _, _ = prepared
    with pytest.raises(ValueError, match="`gene_method` must be one of"):
        cidr_dropout(X, thr, w, gene_method="hvg")
    with pytest.raises(ValueError, match="`cluster_method` must be one of"):
        cidr_dropout(X, thr, w, cluster_method="kmeans")
    with pytest.raises(ValueError, match="`n_top_genes` must be an integer >= 1"):
        cidr_dropout(X, thr, w, n_top_genes=0)
    with pytest.raises(ValueError, match="`n_pcs` must be an integer >= 1"):
        cidr_dropout(X, thr, w, n_pcs=2.5)
    with pytest.raises(TypeError, match="`impute` must be True or False"):
        cidr_dropout(X, thr, w, impute="no")
    with pytest.raises(ValueError, match="`n_clusters` must be an integer >= 2"):
        cidr_dropout(X, thr, w, n_clusters=1)
    with pytest.raises(ValueError, match="`n_clusters` needs `cluster_method='ward_ch'`"):
        cidr_dropout(X, thr, w, cluster_method="leiden", n_clusters=3)
    with pytest.raises(ValueError, match=r"`thresholds` has shape \(5,\)"):
        cidr_dropout(X, thr[:5], w)
    with pytest.raises(ValueError, match="`counts` has shape"):
        cidr_dropout(X, thr, w, counts=counts[:, :10])
    with pytest.raises(ValueError, match="at least 3 cells"):
        cidr_dropout(X[:2], thr[:2], w)
    with pytest.raises(ValueError, match="`method` must be one of"):
        dropout_gene_ranks(counts, method="seurat")
    with pytest.raises(ValueError, match="positive total"):
        dropout_gene_ranks(sparse.vstack([counts[:3], sparse.csr_matrix((1, counts.shape[1]))]))
    with pytest.raises(ValueError, match="smaller than the number of cells"):
        pcoa_top(np.zeros((3, 3)), 3)
    with pytest.raises(ValueError, match="`n_clusters` needs `method='ward_ch'`"):
        cluster_coordinates(np.zeros((5, 2)), method="leiden", n_clusters=2)


# ---------------------------------------------------------------- tl.cidr, default flavor


@pytest.fixture(scope="module")
def planted():
    """200 cells x 1,500 genes, 4 groups of 50 markers each: the top 1,000 genes are a choice."""
    return sd.datasets.synthetic(
        n_cells=200, n_genes=1500, n_groups=4, n_markers=50, library_size=5000, random_state=3
    )


@pytest.fixture(scope="module")
def planted_done(planted):
    return sd.tl.cidr(planted, progress_bar=False, copy=True)


def test_tl_default_is_dropout_flavor_and_recovers_groups(planted, planted_done):
    a = planted_done
    u = a.uns["cidr"]
    p = u["params"]
    assert (p["flavor"], p["n_top_genes"], p["impute"], p["resolution"]) == (
        "dropout",
        1000,
        False,
        0.5,
    )
    # measured ARI 0.96 (4 clusters) with Leiden at resolution 0.5 on 20 PCs
    assert adjusted_rand_score(a.obs["group"], a.obs["cidr"]) > 0.85
    k = u["n_clusters"]
    assert list(a.obs["cidr"].cat.categories) == [str(i) for i in range(k)]
    assert a.obsm["X_cidr"].shape == (200, 20)
    assert u["n_pcs"] == 20
    assert u["eigenvalues"].size == 20
    assert np.all(np.diff(u["eigenvalues"]) <= 0)
    assert u["variation"].sum() == pytest.approx(1.0)
    assert u["ch_index"].size == 0
    assert u["mode"] == "pca"
    assert not u["eigenvalues_complete"]
    sel = a.var["cidr_selected"]
    assert sel.dtype == bool
    assert sel.sum() == u["n_genes_used"] == 1000
    # the selection is dropout_gene_ranks' top 1000, and the whole result is cidr_dropout's
    assert_array_equal(sel, dropout_gene_ranks(planted.X) <= 1000)
    ld = kc.log_tpm(planted.X)
    th = kc.dropout_thresholds(ld.X, ld.library_size)
    fit = kc.weighting_threshold(ld.X, th.thresholds)
    assert u["w_threshold"] == fit.threshold
    assert_allclose(a.obs["cidr_threshold"], th.thresholds)
    ref = cidr_dropout(ld.X, th.thresholds, fit.threshold, counts=planted.X[:, ld.kept_genes])
    assert_array_equal(a.obs["cidr"].cat.codes, ref.labels)
    assert_allclose(a.obsm["X_cidr"], ref.coordinates)
    # the diagnostics plots work on the default flavor's results
    import matplotlib.pyplot as plt

    sd.pl.cidr_eigenvalues(a)
    sd.pl.cidr_thresholds(a)
    plt.close("all")


def test_tl_default_deterministic_fixed_k_and_mode_irrelevant(planted, planted_done):
    b = sd.tl.cidr(planted, progress_bar=False, copy=True, mode="landmark", n_jobs=1)
    assert_array_equal(b.obs["cidr"], planted_done.obs["cidr"])
    assert_array_equal(b.obsm["X_cidr"], planted_done.obsm["X_cidr"])
    c = sd.tl.cidr(planted, progress_bar=False, copy=True, n_clusters=5, n_pcs=8)
    assert c.uns["cidr"]["n_clusters"] == 5
    assert list(c.obs["cidr"].cat.categories) == ["0", "1", "2", "3", "4"]
    assert c.obsm["X_cidr"].shape == (200, 8)
    # a fixed k cuts the Ward tree of the same coordinates
    ward = kc.ward_clusters(c.obsm["X_cidr"], n_clusters=5).labels
    assert adjusted_rand_score(ward, c.obs["cidr"]) == 1.0


def test_tl_impute_and_gene_subset(planted):
    a = sd.tl.cidr(planted, impute=True, progress_bar=False, copy=True)
    u = a.uns["cidr"]
    assert u["mode"] == "exact"
    assert u["params"]["impute"]
    # measured ARI 1.0: CIDR's dissimilarity on the 1,000 selected genes
    assert adjusted_rand_score(a.obs["group"], a.obs["cidr"]) > 0.9
    ld = kc.log_tpm(planted.X)
    th = kc.dropout_thresholds(ld.X, ld.library_size)
    fit = kc.weighting_threshold(ld.X, th.thresholds)
    ref = cidr_dropout(
        ld.X, th.thresholds, fit.threshold, counts=planted.X[:, ld.kept_genes], impute=True
    )
    assert_array_equal(a.obs["cidr"].cat.codes, ref.labels)
    # genes= restricts the candidates of the selection
    b = planted.copy()
    b.var["half"] = np.arange(b.n_vars) < 750
    sd.tl.cidr(b, n_top_genes=300, genes="half", progress_bar=False)
    sel = b.var["cidr_selected"].to_numpy()
    assert sel.sum() == b.uns["cidr"]["n_genes_used"] == 300
    assert not sel[750:].any()
    assert_array_equal(sel[:750], dropout_gene_ranks(b.X[:, :750]) <= 300)


def test_tl_copy_key_added_and_h5ad(planted, planted_done, tmp_path):
    import anndata as ad
    from anndata.tests.helpers import assert_equal

    before = planted.copy()
    assert "cidr" not in planted.obs
    assert_equal(planted, before)  # copy=True in the fixture left the input untouched
    a = planted.copy()
    assert sd.tl.cidr(a, progress_bar=False, key_added="c2") is None
    for slot, keys in {
        "obs": ["c2", "c2_threshold", "c2_n_candidates"],
        "var": ["c2_candidate_rate", "c2_selected"],
        "obsm": ["X_c2"],
        "uns": ["c2"],
    }.items():
        for key in keys:
            assert key in getattr(a, slot), (slot, key)
            assert key.replace("c2", "cidr") not in getattr(a, slot)
    assert_array_equal(a.obs["c2"], planted_done.obs["cidr"])
    path = tmp_path / "c.h5ad"
    planted_done.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert_array_equal(back.var["cidr_selected"], planted_done.var["cidr_selected"])
    assert_array_equal(back.obs["cidr"], planted_done.obs["cidr"])
    assert back.uns["cidr"]["params"]["n_top_genes"] == 1000
    assert back.uns["cidr"]["ch_index"].size == 0


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"flavor": "seurat"}, ValueError, "flavor"),
        ({"n_top_genes": 0}, ValueError, "`n_top_genes` must be at least 1"),
        ({"n_top_genes": 10.5}, TypeError, "`n_top_genes` must be an integer"),
        ({"impute": "yes"}, TypeError, "`impute` must be True or False"),
        ({"resolution": 0.0}, ValueError, "`resolution` must be a positive finite"),
        ({"resolution": float("nan")}, ValueError, "`resolution` must be a positive finite"),
        ({"resolution": "high"}, TypeError, "`resolution` must be a positive number"),
        ({"resolution": True}, TypeError, "`resolution` must be a positive number"),
        ({"correction": True}, ValueError, r"`correction=True` is not available.*flavor='r'"),
        ({"store_distances": True}, ValueError, "`store_distances=True` is not available"),
        ({"step_function": False}, ValueError, "`step_function=False` is not available"),
        (
            {"impute": True, "mode": "landmark"},
            ValueError,
            r"`mode='landmark'` is not available with `flavor='dropout'` and `impute=True`",
        ),
    ],
)
def test_tl_bad_arguments(kwargs, exc, match):
    a = sd.datasets.synthetic(n_cells=30, n_genes=60, random_state=0)
    with pytest.raises(exc, match=match):
        sd.tl.cidr(a, progress_bar=False, **kwargs)
    assert "cidr" not in a.obs
    assert "cidr" not in a.uns


def test_tl_memory_checks(monkeypatch):
    a = sd.datasets.synthetic(n_cells=30, n_genes=60, random_state=0)
    monkeypatch.setattr(sd.settings, "max_memory_gb", 1e-7)
    with pytest.raises(MemoryError, match="smaller `n_top_genes`"):
        sd.tl.cidr(a, progress_bar=False)
    with pytest.raises(MemoryError, match="`impute=False`"):
        sd.tl.cidr(a, progress_bar=False, impute=True)
    assert "cidr" not in a.obs
