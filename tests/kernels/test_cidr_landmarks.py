"""Landmark CIDR kernels: against the exact dissimilarity, a NumPy landmark MDS and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse

from scdropout._utils import thread_limit
from scdropout.kernels import cidr as kc
from scdropout.kernels import cidr_landmarks as kl


@pytest.fixture(scope="module")
def prepared():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 3, size=90)
    mu = rng.gamma(0.5, 6.0, size=(3, 150))
    C = rng.poisson(mu[groups] * rng.lognormal(0, 0.3, size=(90, 1)))
    C[:, :2] = 0  # all-zero genes
    C[:, 2] += 1  # no empty cell
    ld = kc.log_tpm(sparse.csr_matrix(C.astype(np.float64)))
    th = kc.dropout_thresholds(ld.X, ld.library_size).thresholds
    w = kc.weighting_threshold(ld.X, th).threshold
    return ld.X, th, w, groups


@pytest.mark.parametrize("step", [True, False])
def test_dissimilarity_to_landmarks_equals_exact_columns(prepared, step):
    X, th, w, _ = prepared
    lm = np.array([3, 0, 50, 17, 89])
    D = kc.dissimilarity(X, th, w, step_function=step, a=1.3, b=4.0)
    out = kl.dissimilarity_to_landmarks(
        X, th, w, lm, step_function=step, a=1.3, b=4.0, tile_size=2, chunk_size=7
    )
    assert out.shape == (90, 5)
    assert_allclose(out, D[:, lm], rtol=1e-10, atol=1e-10)
    assert_array_equal(out[lm, np.arange(5)], 0.0)
    with thread_limit(1):
        one = kl.dissimilarity_to_landmarks(X, th, w, lm, step_function=step, a=1.3, b=4.0)
    assert_array_equal(one, out)


def test_dissimilarity_to_landmarks_errors(prepared):
    X, th, w, _ = prepared
    with pytest.raises(ValueError, match="repeated"):
        kl.dissimilarity_to_landmarks(X, th, w, [1, 1])
    with pytest.raises(ValueError, match="landmarks"):
        kl.dissimilarity_to_landmarks(X, th, w, [0, 90])
    with pytest.raises(ValueError, match="thresholds"):
        kl.dissimilarity_to_landmarks(X, np.zeros_like(th), w, [0, 1])


def test_landmark_mds_matches_reference_and_classical_mds(prepared):
    X, th, w, _ = prepared
    lm = np.arange(0, 90, 3)
    D_nl = kl.dissimilarity_to_landmarks(X, th, w, lm)
    out = kl.landmark_mds(D_nl, lm, n_components=5)
    assert out.coordinates.shape == (90, max(out.n_pcs, 5))
    ref = kl.landmark_mds_ref(D_nl, lm, 5)
    assert_allclose(np.abs(out.coordinates[:, :5]), np.abs(ref), rtol=1e-7, atol=1e-9)
    # landmarks get their classical-MDS coordinates (CIDR's PCoA of the landmark block)
    D_ll = (D_nl[lm] + D_nl[lm].T) / 2
    cl = kc.pcoa_ref(D_ll)
    assert_allclose(out.eigenvalues, cl.eigenvalues, rtol=1e-8, atol=1e-8)
    assert_allclose(out.variation, cl.variation, rtol=1e-8)
    assert out.n_pcs == kc.calc_npc(cl.variation)
    assert_allclose(np.abs(out.coordinates[lm, :5]), np.abs(cl.coordinates[:, :5]), atol=1e-7)
    # with every cell a landmark, landmark MDS is CIDR's PCoA
    everyone = np.arange(90)
    full = kl.landmark_mds(kl.dissimilarity_to_landmarks(X, th, w, everyone), everyone)
    exact = kc.pcoa_ref(kc.dissimilarity(X, th, w))
    assert_allclose(full.eigenvalues, exact.eigenvalues, rtol=1e-7, atol=1e-7)
    m = full.coordinates.shape[1]
    assert_allclose(np.abs(full.coordinates), np.abs(exact.coordinates[:, :m]), atol=1e-6)
    with pytest.raises(ValueError, match="n_pcs"):
        kl.landmark_mds(D_nl, lm, n_pcs=500)


def test_nearest_landmark_and_extend_clusters():
    rng = np.random.default_rng(2)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    truth = rng.integers(0, 3, size=300)
    Y = centres[truth] + rng.normal(size=(300, 2))
    lm = np.sort(rng.choice(300, size=30, replace=False))
    near = kl.nearest_landmark(Y, lm, chunk_size=17)
    assert_array_equal(near[lm], np.arange(30))
    d = ((Y[:, None] - Y[lm][None]) ** 2).sum(-1)
    assert_array_equal(near, np.argmin(d, axis=1))
    labels = kl.extend_clusters(Y, lm, truth[lm], chunk_size=17)
    assert_array_equal(labels, truth)  # well separated: k-means keeps the landmark clusters
