"""CIDR kernels against their NumPy references, R's own unit cases and invariants."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse

from scdropout._utils import thread_limit
from scdropout.kernels import cidr as kc


def _counts(n_cells=40, n_genes=120, seed=0, density=0.3):
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.6, 4.0, size=n_genes) * rng.lognormal(0, 0.3, size=(n_cells, 1))
    C = rng.poisson(lam) * (rng.random((n_cells, n_genes)) < density + 0.5 * (lam > 5))
    C[:, 0] = 0  # an all-zero gene
    C[0, :5] += 1  # no empty cell
    return C.astype(np.float64)


@pytest.fixture(scope="module")
def logdata():
    return kc.log_tpm(sparse.csr_matrix(_counts()))


# ---------------------------------------------------------------------------- §2.1


def test_log_tpm_matches_formula_and_drops_zero_genes(matrix_format):
    C = _counts()
    ld = kc.log_tpm(matrix_format(C))
    kept = np.flatnonzero(C.sum(axis=0) > 0)
    assert_array_equal(ld.kept_genes, kept)
    L = C.sum(axis=1)
    assert_allclose(ld.library_size, L)
    assert_allclose(ld.X.toarray(), np.log2(C[:, kept] / L[:, None] * 1e6 + 1), rtol=1e-14)


def test_log_tpm_cpm():
    C = _counts()
    ld = kc.log_tpm(C, tag_type="cpm")
    assert_allclose(ld.library_size, 1e6)
    assert_allclose(ld.X.toarray(), np.log2(C[:, ld.kept_genes] + 1))


# ---------------------------------------------------------------------------- §2.2


def test_r_density_ref_integrates_to_one_and_peaks_at_the_mode():
    rng = np.random.default_rng(1)
    x = rng.normal(3.0, 0.5, size=2000)
    grid, dens = kc.r_density_ref(x, bw=0.2, from_=0.0, to=6.0)
    assert grid.size == 1024
    assert np.trapezoid(dens, grid) == pytest.approx(1.0, abs=2e-3)
    assert abs(grid[np.argmax(dens)] - 3.0) < 0.1
    assert dens.min() >= 0


def test_thresholds_match_reference(logdata):
    th = kc.dropout_thresholds(logdata.X, logdata.library_size)
    ref = kc.dropout_thresholds_ref(logdata.X.toarray(), logdata.library_size)
    assert not th.fast
    lt1 = np.log2(3 / logdata.library_size * 1e6 + 1)
    step = np.abs(th.mode - lt1) / 1023  # grid step of the second KDE
    assert np.all(np.abs(th.thresholds - ref) <= step + 1e-12)
    # most cells agree to round-off; the others sit in an exactly-zero density gap
    assert np.mean(np.abs(th.thresholds - ref) < 1e-9) > 0.8


def test_thresholds_layouts_agree(matrix_format):
    C = _counts(seed=3)
    ld = kc.log_tpm(matrix_format(C))
    th = kc.dropout_thresholds(ld.X, ld.library_size)
    ld0 = kc.log_tpm(sparse.csr_matrix(C))
    th0 = kc.dropout_thresholds(ld0.X, ld0.library_size)
    assert_array_equal(th.thresholds, th0.thresholds)


def test_thresholds_fast_branch_is_median_of_largest_libraries(logdata):
    th = kc.dropout_thresholds(logdata.X, logdata.library_size, n_fast=10)
    assert th.fast
    top = np.argsort(-logdata.library_size, kind="stable")[:10]
    assert np.isfinite(th.raw_thresholds[top]).all()
    assert np.isnan(np.delete(th.raw_thresholds, top)).all()
    assert_allclose(th.thresholds, np.median(th.raw_thresholds[top]))
    ref = kc.dropout_thresholds_ref(logdata.X.toarray(), logdata.library_size, n_fast=10)
    assert_allclose(th.thresholds, ref, atol=0.02)


def test_thresholds_zeros_only(logdata):
    th = kc.dropout_thresholds(logdata.X, logdata.library_size, zeros_only=True)
    assert_allclose(th.thresholds, np.log2(1e6 / logdata.library_size + 1))
    _, n_nc, _ = kc.candidate_counts(logdata.X, th.thresholds)
    assert_array_equal(n_nc, np.diff(logdata.X.tocsc().indptr))


def test_thresholds_n_jobs_invariant(logdata):
    with thread_limit(1):
        a = kc.dropout_thresholds(logdata.X, logdata.library_size).thresholds
    with thread_limit(2):
        b = kc.dropout_thresholds(logdata.X, logdata.library_size).thresholds
    assert_array_equal(a, b)


def test_threshold_kernels_py_func_run(logdata):
    cells = np.arange(3, dtype=np.int64)
    X = logdata.X
    h, mx = kc._cell_kde_stats.py_func(X.data, X.indices, X.indptr, X.shape[1], cells, 1.0)
    h2, mx2 = kc._cell_kde_stats(X.data, X.indices, X.indptr, X.shape[1], cells, 1.0)
    assert_allclose(h, h2)
    assert_allclose(mx, mx2)


# ---------------------------------------------------------------------------- §2.3


def test_weighting_threshold_recovers_a_planted_curve():
    rng = np.random.default_rng(0)
    n_cells, n_genes = 400, 300
    u = rng.uniform(1, 12, size=n_genes)
    rate = 1 / (1 + np.exp(0.9 * (u - 6.0)))
    vals = u[None, :] + rng.normal(0, 0.01, size=(n_cells, n_genes))
    keep = rng.random((n_cells, n_genes)) >= rate[None, :]
    X = sparse.csr_matrix(np.where(keep, vals, 0.0))
    fit = kc.weighting_threshold(X, np.full(n_cells, 0.5))
    assert fit.a == pytest.approx(0.9, rel=0.1)
    assert fit.b == pytest.approx(6.0, abs=0.2)
    assert fit.threshold == pytest.approx(fit.b)
    w25 = kc.weighting_threshold(X, np.full(n_cells, 0.5), cutoff=0.25).threshold
    assert w25 == pytest.approx(fit.b + np.log(3) / fit.a)


def test_weighting_threshold_fails_clearly():
    X = sparse.csr_matrix(np.ones((5, 3)))
    with pytest.raises(RuntimeError, match="zeros_only"):
        kc.weighting_threshold(X, np.full(5, 2.0))


# ---------------------------------------------------------------------------- §2.4


@pytest.mark.parametrize(
    ("x1", "x2", "t1", "t2", "expected"),
    [
        # VCCRI/CIDR tests/testthat/test-cpp_dist.R, W = 5 (squared sums)
        ([1.2], [0.9], 2.0, 2.0, 0.0),  # both candidates
        ([3.5], [3.5], 1.0, 1.0, 0.0),  # neither, same value
        ([3.5], [3.6], 1.0, 1.0, 0.01),  # neither, different values
        ([1.2], [4.5], 2.0, 2.0, 0.0),  # #1 candidate, #2 below W: imputed
        ([1.2], [5.2], 2.0, 2.0, 16.0),  # #1 candidate, #2 above W
        ([4.2, 5.7, 4.5], [1.2, 0.7, 2.5], 1.0, 2.0, 29.0),  # three genes
    ],
)
def test_dissimilarity_r_unit_cases(x1, x2, t1, t2, expected):
    X = np.array([x1, x2])
    thr = np.array([t1, t2])
    for D in (
        kc.dissimilarity(X, thr, 5.0),
        kc.dissimilarity_pairwise(X, thr, 5.0),
        kc.dissimilarity_ref(X, thr, 5.0),
    ):
        assert D[0, 1] ** 2 == pytest.approx(expected, abs=1e-12)
        assert D[1, 0] == D[0, 1]


@pytest.mark.parametrize("step_function", [True, False])
@pytest.mark.parametrize("tile_size", [7, 128])
def test_dissimilarity_matches_references(logdata, step_function, tile_size):
    th = kc.dropout_thresholds(logdata.X, logdata.library_size).thresholds
    W = float(np.quantile(logdata.X.data, 0.8))  # plenty of entries above W
    kw = {"step_function": step_function, "a": 1.3, "b": W}
    D = kc.dissimilarity(logdata.X, th, W, tile_size=tile_size, **kw)
    ref = kc.dissimilarity_ref(logdata.X.toarray(), th, W, **kw)
    pair = kc.dissimilarity_pairwise(logdata.X, th, W, **kw)
    assert_allclose(D, ref, rtol=1e-10, atol=1e-10)
    assert_allclose(pair, ref, rtol=1e-12, atol=1e-12)
    assert_array_equal(D, D.T)
    assert_array_equal(np.diag(D), 0)


def test_dissimilarity_explicit_zeros_and_layouts(logdata, matrix_format):
    th = kc.dropout_thresholds(logdata.X, logdata.library_size).thresholds
    D0 = kc.dissimilarity(logdata.X, th, 9.0)
    X = logdata.X.copy()
    X.data[::7] = 0.0  # explicit zeros
    Dz = kc.dissimilarity(X, th, 9.0)
    Xd = X.toarray()
    assert_allclose(Dz, kc.dissimilarity_ref(Xd, th, 9.0), rtol=1e-10, atol=1e-10)
    assert_allclose(kc.dissimilarity(matrix_format(Xd), th, 9.0), Dz, rtol=1e-12, atol=1e-12)
    assert not np.allclose(D0, Dz)


def test_dissimilarity_permutation_and_threads(logdata):
    th = kc.dropout_thresholds(logdata.X, logdata.library_size).thresholds
    with thread_limit(1):
        D1 = kc.dissimilarity(logdata.X, th, 9.0, tile_size=16)
    with thread_limit(2):
        D2 = kc.dissimilarity(logdata.X, th, 9.0, tile_size=16)
    assert_array_equal(D1, D2)
    perm = np.random.default_rng(0).permutation(logdata.X.shape[0])
    Dp = kc.dissimilarity(logdata.X[perm], th[perm], 9.0, tile_size=16)
    assert_allclose(Dp, D1[np.ix_(perm, perm)], rtol=1e-12, atol=1e-12)


def test_dissimilarity_float32_and_bad_thresholds(logdata):
    th = kc.dropout_thresholds(logdata.X, logdata.library_size).thresholds
    D = kc.dissimilarity(logdata.X, th, 9.0, dtype=np.float32)
    assert D.dtype == np.float32
    with pytest.raises(ValueError, match="thresholds"):
        kc.dissimilarity(logdata.X, np.zeros_like(th), 9.0)


def test_cailliez_makes_euclidean():
    rng = np.random.default_rng(0)
    D = rng.uniform(1, 2, size=(12, 12))
    D = D + D.T
    np.fill_diagonal(D, 0)
    Dc, c = kc.cailliez(D)
    assert c > 0
    lam = kc.pcoa_ref(Dc).eigenvalues
    assert lam.min() > -1e-8 * lam.max()
    assert_allclose(Dc - D, c * (1 - np.eye(12)))
    # an already Euclidean matrix is returned unchanged
    P = rng.normal(size=(10, 3))
    E = np.sqrt(((P[:, None] - P[None]) ** 2).sum(-1))
    assert kc.cailliez(E)[1] == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------- §2.5 - 2.7


def _euclid(P):
    return np.sqrt(np.maximum(((P[:, None] - P[None]) ** 2).sum(-1), 0))


def test_pcoa_matches_reference_and_recovers_coordinates(monkeypatch):
    rng = np.random.default_rng(0)
    P = rng.normal(size=(60, 4)) * np.array([5, 3, 2, 1])
    D = _euclid(P)
    ref = kc.pcoa_ref(D)
    out = kc.pcoa(D)
    assert_allclose(out.eigenvalues, ref.eigenvalues, rtol=1e-8, atol=1e-8)
    assert out.variation.size == 4
    assert_allclose(out.variation, ref.variation, rtol=1e-10)
    assert_allclose(_euclid(out.coordinates), D, atol=1e-8)
    # the Lanczos branch (leading eigenvectors only) agrees
    monkeypatch.setattr(kc, "FULL_EIGH_MAX", 10)
    lz = kc.pcoa(D, n_components=3, random_state=1)
    assert lz.coordinates.shape == (60, 3)
    assert_allclose(np.abs(lz.coordinates), np.abs(ref.coordinates[:, :3]), atol=1e-7)
    assert_allclose(lz.eigenvalues, ref.eigenvalues, rtol=1e-8, atol=1e-8)


def test_calc_npc():
    assert kc.calc_npc([0.5, 0.3, 0.2]) == kc.NPC_DEFAULT  # too short: R would error
    # three big gaps then a long flat tail: nPC = 3
    v = np.concatenate([[0.30, 0.20, 0.12], 0.04 - 0.0005 * np.arange(30)])
    v = v / v.sum()
    assert kc.calc_npc(v) == 3
    # evenly spread: default
    assert kc.calc_npc(np.linspace(1, 0.01, 40) / 20) == kc.NPC_DEFAULT


def test_choose_k_rule_and_r_crash_case():
    # CH with a sharp elbow at k = 4 -> minimum second difference centred at 4
    ch = np.array([np.nan, 10, 20, 60, 62, 63, 64, 65, 66])
    k, crash = kc.choose_k(ch)
    assert (k, crash) == (3, False) or k == 4
    # second differences minimal at the last position: R indexes past the end (issue #14)
    ch = np.array([np.nan, 10, 11, 12, 13, 14, 15, 30, 20])
    sec = ch[1:-2] + ch[3:] - 2 * ch[2:-1]
    assert np.argmin(sec) == sec.size - 1
    k, crash = kc.choose_k(ch)
    assert crash
    assert k == sec.size + 2


def test_ward_clusters_ch_matches_sklearn():
    from sklearn.metrics import calinski_harabasz_score

    rng = np.random.default_rng(0)
    Y = np.concatenate([rng.normal(c, 0.3, size=(30, 2)) for c in (0, 3, 6, 9)])
    wc = kc.ward_clusters(Y)
    assert np.isnan(wc.ch_index[0])
    assert wc.ch_index.size == 3 * 2 + 3
    for k in range(2, wc.ch_index.size + 1):
        lab = kc.ward_clusters(Y, n_clusters=k).labels
        assert lab.max() == k - 1
        assert wc.ch_index[k - 1] == pytest.approx(calinski_harabasz_score(Y, lab), rel=1e-10)
    assert wc.n_clusters == 4
    assert wc.labels[0] == 0  # numbered by first appearance, as cutree


def test_ward_clusters_of_repeated_points_score_infinite_not_divide_by_zero():
    Y = np.repeat([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0], [30.0, 30.0]], 6, axis=0)
    wc = kc.ward_clusters(Y)  # ZeroDivisionError before
    assert np.isinf(wc.ch_index[4])  # 5 clusters: each one repeated point
    assert np.isfinite(wc.ch_index[1:4]).all()
    assert sorted(np.bincount(kc.ward_clusters(Y, n_clusters=5).labels)) == [6] * 5


def test_log_tpm_ignores_stored_zeros():
    dense = np.array([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0], [3.0, 0.0, 4.0]])
    stored = sparse.csr_matrix(
        (np.array([1.0, 2.0, 0.0, 3.0, 4.0]), np.array([0, 1, 0, 0, 2]), np.array([0, 2, 3, 5])),
        shape=(3, 3),
    )  # row 1 holds one explicit 0
    a, b = kc.log_tpm(dense), kc.log_tpm(stored)
    assert np.isfinite(b.X.data).all()
    assert_allclose(b.X.toarray(), a.X.toarray())
    assert_array_equal(b.X.indptr, a.X.indptr)


def test_eigvalsh_two_stage_and_fallback(monkeypatch):
    rng = np.random.default_rng(0)
    A = rng.normal(size=(200, 200))
    A = A + A.T
    A0 = A.copy()
    expected = np.linalg.eigvalsh(A)
    assert_allclose(kc.eigvalsh(A), expected, atol=1e-10)
    assert_array_equal(A, A0)  # input untouched
    monkeypatch.setattr(kc, "_LAPACKE_2STAGE", [None])  # as when the symbol is unavailable
    assert_allclose(kc.eigvalsh(A), expected, atol=1e-10)


def test_cut_matches_scipy_cut_tree():
    from scipy.cluster.hierarchy import cut_tree, linkage

    rng = np.random.default_rng(3)
    Y = rng.normal(size=(200, 3))
    Z = linkage(Y, "ward")
    ks = np.array([2, 5, 9, 30])
    ours = kc._cut(Z, 200, ks)
    ref = cut_tree(Z, n_clusters=ks)
    for c in range(ks.size):
        # same partition, numbered by first appearance
        _, first = np.unique(ref[:, c], return_index=True)
        relabel = np.argsort(np.argsort(first))
        assert_array_equal(ours[:, c], relabel[ref[:, c]])
    assert_array_equal(kc._cut_kernel.py_func(Z, 200, ks), ours)


# ---------------------------------------------------------------------------- nPC from the leading eigenvalues


def _spectrum(rng, n):
    """A CIDR-like spectrum: a few separated leading values, a long decaying tail, negatives."""
    lead = np.sort(rng.uniform(5, 50, size=rng.integers(1, 12)))[::-1]
    n_pos = rng.integers(n // 5, n // 2)
    tail = np.sort(rng.exponential(1.0, size=n_pos) * rng.uniform(0.5, 3))[::-1]
    neg = -rng.exponential(2.0, size=n - lead.size - n_pos)
    return np.sort(np.concatenate([lead, tail, neg]))[::-1]


def _npc_full(lam):
    lam = np.where(np.abs(lam) < kc.EIG_EPS, 0.0, lam)
    pos = lam[lam > kc.EIG_EPS]
    return kc.calc_npc(pos / pos.sum()), pos.size


def test_calc_npc_leading_is_exact_or_undecided():
    rng = np.random.default_rng(0)
    decided = 0
    for _ in range(300):
        n = int(rng.integers(300, 3000))
        lam = _spectrum(rng, n)
        full, k = _npc_full(lam)
        for m in (20, 50):
            for k_min in (0, k // 3, k):
                got = kc.calc_npc_leading(lam[:m], n_positive_min=k_min, n_cells=n)
                assert got is None or got == full, (m, k_min, got, full)
                decided += got is not None
    assert decided > 300  # it decides most CIDR-like spectra
    # undecidable inputs: too few values, or a non-positive one among them
    assert kc.calc_npc_leading([3.0, 2.0, 1.0], n_positive_min=100, n_cells=500) is None
    assert kc.calc_npc_leading([3.0, 2.0, 1.0, 0.0], n_positive_min=100, n_cells=500) is None


def test_calc_npc_leading_on_r_spectra(shared):
    # R's full spectra of the reference datasets: never a different answer, mostly decided
    decided = 0
    dirs = sorted((shared / "reference" / "cidr").glob("*/eigenvalues.npy"))
    for path in dirs:
        lam = np.load(path)
        full, k = _npc_full(lam)
        got = kc.calc_npc_leading(lam[:50], n_positive_min=k // 2, n_cells=lam.size)
        assert got is None or got == full, path.parent.name
        decided += got is not None
    assert decided >= len(dirs) - 5  # 17 of 21 measured


def _noneuclid(n, seed=0):
    """A non-Euclidean dissimilarity with cluster structure (as CIDR's)."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n, 6)) + 4 * rng.integers(0, 4, size=(n, 1)) * np.eye(6)[0]
    D = _euclid(P) ** 0.8 + rng.uniform(0, 0.3, size=(n, n))
    D = (D + D.T) / 2
    np.fill_diagonal(D, 0)
    return D


def test_pcoa_npc_matches_full_pcoa(monkeypatch):
    D = _noneuclid(400)
    ref = kc.pcoa_ref(D)
    npc = kc.calc_npc(ref.variation)
    small = kc.pcoa_npc(D, n_components=8)  # N <= FULL_EIGH_MAX: one full eigh
    assert small.complete
    assert small.n_pcs == npc
    assert_allclose(small.eigenvalues, ref.eigenvalues, rtol=1e-8, atol=1e-8)
    assert_allclose(np.abs(small.coordinates), np.abs(ref.coordinates[:, :8]), atol=1e-7)
    monkeypatch.setattr(kc, "FULL_EIGH_MAX", 100)
    monkeypatch.setattr(kc, "SUBMATRIX_SIZE", 150)
    lead = kc.pcoa_npc(D, n_components=8, n_eigenvalues=30)
    assert lead.n_pcs == npc
    assert not lead.complete  # decided from the 30 leading eigenvalues
    assert_allclose(lead.eigenvalues, ref.eigenvalues[:30], rtol=1e-9)
    assert_allclose(lead.variation, ref.eigenvalues[:30] / ref.eigenvalues[:30].sum())
    assert_allclose(np.abs(lead.coordinates), np.abs(ref.coordinates[:, :8]), atol=1e-7)
    # too few leading values to decide: falls back to the full spectrum
    full = kc.pcoa_npc(D, n_components=8, n_eigenvalues=4)
    assert full.complete
    assert full.n_pcs == npc
    assert_allclose(full.eigenvalues, ref.eigenvalues, rtol=1e-8, atol=1e-8)
    # a given n_pcs is used as is, with that many coordinates at least
    given = kc.pcoa_npc(D, n_components=2, n_pcs=5)
    assert given.n_pcs == 5
    assert given.coordinates.shape == (400, 5)


def test_dissimilarity_checks_memory_first(logdata, monkeypatch):
    import scdropout as sd

    th = kc.dropout_thresholds(logdata.X, logdata.library_size).thresholds
    monkeypatch.setattr(sd.settings, "max_memory_gb", 1e-9)
    with pytest.raises(
        MemoryError, match=r"40 x 40 CIDR dissimilarity.*dissimilarity_to_landmarks"
    ):
        kc.dissimilarity(logdata.X, th, 9.0)
