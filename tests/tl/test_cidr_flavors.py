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
