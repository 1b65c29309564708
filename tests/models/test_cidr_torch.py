"""CIDR's dissimilarity and PCoA in torch against the NumPy references, numba and R."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy import sparse

from scdropout.kernels import cidr as kc

torch = pytest.importorskip("torch")
ct = pytest.importorskip("scdropout.models.cidr_torch")


def _log_data(n_cells=45, n_genes=150, seed=0):
    """Log2(TPM + 1) of planted counts, thresholds and W, with exact ties x == W and x == T,
    and two identical cells (3 and 4)."""
    rng = np.random.default_rng(seed)
    lam = rng.gamma(0.6, 4.0, size=n_genes) * rng.lognormal(0, 0.3, size=(n_cells, 1))
    C = rng.poisson(lam) * (rng.random((n_cells, n_genes)) < 0.3 + 0.5 * (lam > 5))
    C[:, 0] = 0
    C[:, :4] += 1  # no empty cell
    C[4] = C[3]
    X = kc.log_tpm(sparse.csr_matrix(C.astype(np.float64))).X
    T = np.quantile(X.data, 0.25) * rng.uniform(0.9, 1.1, size=n_cells)
    W = float(np.quantile(X.data, 0.6))
    rows = np.repeat(np.arange(n_cells), np.diff(X.indptr))
    X.data[::9] = W
    X.data[4::13] = T[rows[4::13]]
    X.data[rows == 4] = X.data[rows == 3]  # keep cells 3 and 4 identical
    return X, T, W


@pytest.fixture(scope="module")
def data():
    return _log_data()


@pytest.mark.parametrize("w_shift", [0.0, -100.0, 100.0], ids=["W", "W<0", "W>max"])
@pytest.mark.parametrize("method", ["sparse", "dense"])
def test_matches_reference_and_numba_with_ties(data, w_shift, method):
    X, T, W = data
    W = W + w_shift
    ref = kc.dissimilarity_ref(X.toarray(), T, W)
    D = ct.dissimilarity_torch(X, T, W, tile_size=16, method=method)
    assert D.dtype == np.float64
    assert D.shape == ref.shape
    assert_allclose(D, ref, rtol=1e-10, atol=1e-12)
    assert_allclose(D, kc.dissimilarity(X, T, W), rtol=1e-10, atol=1e-12)
    assert_array_equal(D, D.T)
    assert_array_equal(np.diag(D), 0.0)
    if w_shift == 0.0:  # ties really are present and decide weights
        assert np.sum(X.data == W) > 10
        assert ref.max() > 0


def test_ties_at_thresholds_are_not_candidates():
    # two cells, one gene each side of the thresholds: x == T is a non-candidate (x < T is one)
    T = np.array([1.0, 1.0])
    W = 5.0
    X = sparse.csr_matrix(np.array([[1.0, 0.5, 2.0], [3.0, 2.0, 0.0]]))
    # gene 0: both non-candidates -> 4; gene 1: 0.5 is a candidate, 2 <= W -> 0; gene 2: the
    # 0 is a candidate -> 0
    D = ct.dissimilarity_torch(X, T, W)
    assert D[0, 1] == pytest.approx(2.0, rel=1e-14)
    # at W the value is not "above": x == W imputes, x just above does not
    X2 = sparse.csr_matrix(np.array([[5.0, 0.0], [0.0, 5.0 + 1e-9]]))
    D2 = ct.dissimilarity_torch(X2, T, W)
    assert D2[0, 1] == pytest.approx(5.0 + 1e-9, rel=1e-14)
    assert_allclose(D2, kc.dissimilarity_ref(X2.toarray(), T, W), rtol=1e-14)


def test_identical_cells_get_zero(data):
    X, T, W = data
    D = ct.dissimilarity_torch(X, T, W)
    assert D[3, 4] == 0.0
    assert D[4, 3] == 0.0


def test_tile_sizes_give_identical_results(data):
    X, T, W = data
    D = ct.dissimilarity_torch(X, T, W, tile_size=45, method="sparse")
    dense = ct.dissimilarity_torch(X, T, W, tile_size=45, method="dense")
    assert_allclose(dense, D, rtol=1e-12, atol=1e-12)
    for ts in (1, 7, 64):
        # sparse: the same sums in the same order whatever the tiles
        assert_array_equal(ct.dissimilarity_torch(X, T, W, tile_size=ts, method="sparse"), D)
        # dense: BLAS picks its kernels by shape, so the last bits may differ
        E = ct.dissimilarity_torch(X, T, W, tile_size=ts, method="dense")
        assert_allclose(E, dense, rtol=1e-13, atol=1e-13)


def test_formats_agree(data, matrix_format):
    X, T, W = data
    D = ct.dissimilarity_torch(matrix_format(X), T, W)
    assert_allclose(D, ct.dissimilarity_torch(X, T, W), rtol=1e-14, atol=1e-14)


def test_float32_is_close(data):
    X, T, W = data
    D = ct.dissimilarity_torch(X, T, W, dtype=torch.float32)
    assert D.dtype == np.float64
    ref = kc.dissimilarity_ref(X.toarray(), T, W)
    assert_allclose(D, ref, rtol=1e-3, atol=1e-3 * ref.max())


def test_refinement_recomputes_near_identical_pairs(data):
    X, T, W = data
    X = X.copy()
    rows = np.repeat(np.arange(X.shape[0]), np.diff(X.indptr))
    k = np.flatnonzero((rows == 4) & (X.data > W))[0]
    X.data[k] += 1e-7  # cells 3 and 4 now differ in one gene above W
    ref = kc.dissimilarity_ref(X.toarray(), T, W)
    assert 0 < ref[3, 4] < 1e-6
    D = ct.dissimilarity_torch(X, T, W)
    assert D[3, 4] == pytest.approx(ref[3, 4], rel=1e-10)


@pytest.mark.parametrize(
    ("kwargs", "err", "match"),
    [
        ({"thresholds": "neg"}, ValueError, "thresholds"),
        ({"thresholds": "short"}, ValueError, "one per cell"),
        ({"tile_size": 0}, ValueError, "tile_size"),
        ({"dtype": torch.float16}, ValueError, "dtype"),
        ({"device": "tpu"}, ValueError, "device"),
        ({"method": "blas"}, ValueError, "method"),
        ({"w_threshold": float("nan")}, ValueError, "w_threshold"),
        ({"X": "neg"}, ValueError, "non-negative"),
    ],
)
def test_bad_input(data, kwargs, err, match):
    X, T, W = data
    args = {"X": X, "thresholds": T, "w_threshold": W}
    if kwargs.get("thresholds") == "neg":
        kwargs = {"thresholds": np.where(np.arange(T.size) == 2, -1.0, T)}
    elif kwargs.get("thresholds") == "short":
        kwargs = {"thresholds": T[:-1]}
    elif kwargs.get("X") == "neg":
        Xn = X.copy()
        Xn.data[0] = -1.0
        kwargs = {"X": Xn}
    args.update(kwargs)
    with pytest.raises(err, match=match):
        ct.dissimilarity_torch(
            args.pop("X"), args.pop("thresholds"), args.pop("w_threshold"), **args
        )


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_cuda_without_cuda_raises(data):
    X, T, W = data
    with pytest.raises(ValueError, match="CUDA is not available"):
        ct.dissimilarity_torch(X, T, W, device="cuda")
    assert ct.resolve_torch_device("auto").type == "cpu"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(data):
    X, T, W = data
    D = ct.dissimilarity_torch(X, T, W, device="cuda")
    assert_allclose(D, kc.dissimilarity_ref(X.toarray(), T, W), rtol=1e-10, atol=1e-12)
    p = ct.pcoa_torch(D, device="cuda")
    assert_allclose(p.eigenvalues, ct.pcoa_torch(D).eigenvalues, rtol=1e-9, atol=1e-9)


def test_pcoa_matches_numpy(data):
    X, T, W = data
    D = kc.dissimilarity(X, T, W)
    p = ct.pcoa_torch(D)
    r = kc.pcoa_npc(D)
    assert p.complete
    assert p.n_pcs == r.n_pcs == kc.calc_npc(kc.pcoa_ref(D).variation)
    assert_allclose(p.eigenvalues, r.eigenvalues, rtol=1e-10, atol=1e-9 * r.eigenvalues[0])
    assert_allclose(p.variation, r.variation, rtol=1e-9, atol=1e-14)
    assert p.coordinates.shape == r.coordinates.shape
    assert_allclose(np.abs(p.coordinates), np.abs(r.coordinates), atol=1e-8)
    assert ct.pcoa_torch(D, n_pcs=7, n_components=3).coordinates.shape[1] == 7
    with pytest.raises(ValueError, match="square"):
        ct.pcoa_torch(D[:5])


@pytest.mark.shared
def test_matches_r_reference(shared):
    import anndata as ad

    ref = shared / "reference" / "cidr" / "cellbench_dropseq"
    ld = kc.log_tpm(ad.read_h5ad(shared / "data" / "cellbench_dropseq.h5ad").X)
    res = json.loads((ref / "result.json").read_text())
    sub = slice(0, 90)  # the first 90 cells: a pair's value depends on that pair only
    T = np.load(ref / "dThreshold.npy")[sub]
    D = ct.dissimilarity_torch(ld.X[sub], T, res["wThreshold"])
    D_r = np.load(ref / "dissim.npy")[sub, sub]
    off = ~np.eye(D.shape[0], dtype=bool)
    assert np.max(np.abs(D - D_r)[off] / D_r[off]) < 1e-10  # issue 3 asks for 1e-8


def test_centring_keeps_dense_products_accurate():
    # W above every value and non-candidate values close together (as on UMI data): uncentred
    # products cancel to ~1e-8; the per-gene centring of method="dense" keeps ~1e-12
    rng = np.random.default_rng(3)
    X = 12.0 + 0.01 * rng.standard_normal((30, 400))
    X[rng.random(X.shape) < 0.3] = 0.0
    T = np.full(30, 1.0)
    ref = kc.dissimilarity_ref(X, T, 100.0)
    D = ct.dissimilarity_torch(X, T, 100.0, method="dense", refine_ratio=0.0)
    off = ~np.eye(30, dtype=bool)
    assert np.max(np.abs(D - ref)[off] / ref[off]) < 1e-10
    sp = ct.dissimilarity_torch(X, T, 100.0, method="sparse")  # refined pairs instead
    assert np.max(np.abs(sp - ref)[off] / ref[off]) < 1e-10
