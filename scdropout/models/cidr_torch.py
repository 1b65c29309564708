"""CIDR's step-mode dissimilarity and principal coordinates in torch, for CPU or CUDA.

ALGORITHMS.md §2.4-2.5 (Lin, Troup & Ho 2017), the same numbers as
:func:`scdropout.kernels.cidr.dissimilarity` and :func:`scdropout.kernels.cidr.pcoa` through
matrix products that a GPU runs fast. It lives in ``models`` because that is the layer that may
import torch (``kernels`` may not, STYLE.md §1); it knows nothing of AnnData.

**Algebra.** With candidates M_gi = x_gi < T_i, A = 1[x > W] and P = ¬M ∘ (1 − A), the step
weight 1[(¬M_gi ∧ ¬M_gj) ∨ x_gi > W ∨ x_gj > W] is A_i + A_j − A_i A_j + P_i P_j (disjoint
cases), and with Ā = 1 − A, q = x²:

    S_ij = a_i + a_j + A_i·(Āq)_j + (Āq)_i·A_j + P_i·(Pq)_j + (Pq)_i·P_j
           − 2 [(Ax)_i·x_j + (Āx)_i·(Ax)_j + (Px)_i·(Px)_j],       a_i = Σ_g A_gi x_gi²,

where u_i·v_j = Σ_g u_gi v_gj. Every left factor vanishes where x_gi = 0 (the indicator A_gi
only meets Āq, which is 0 wherever A is 1), so each of the seven products can be a sparse (cells
i) x dense (a tile of cells j) product (``method="sparse"``), or a dense GEMM of two tiles
(``method="dense"``, the default on CUDA); the lower triangle is computed tile by tile.

**Precision.** S_ij = pos_ij − 2 cross_ij (the bracket) cancels: for similar cells S_ij is
small against the terms, and the rounding error is about ε (pos_ij + 2 |cross_ij|). Two
remedies. (1) The dense method centres the values per gene, y_g = x_g − c_g with c_g the mean
of gene g's non-candidate values: the sums are invariant (the weights come from x) and the
products shrink. On mouse_bladder (W above every value, so S is the non-candidate pairs'
Σ (x_gi − x_gj)² over values near 10-15) this took the worst error against the numba kernel
from 8.3e-8 (uncentred, above issue 3's 1e-8) to 1.3e-9. (2) Pairs with S_ij <
``refine_ratio`` · (pos_ij + 2 |cross_ij|) are recomputed directly, Σ_g w (x_gi − x_gj)² in
float64 (173 of 80k pairs on 400 mouse_bladder cells with centring, 30k without), which
leaves errors of about 1e-13 and gives identical cells D = 0 exactly. Measured against R's
own dissimilarities (``shared/reference/cidr``, dense method): at most 2.5e-15 relative on
cellbench_dropseq, 7.0e-14 on yan, 1.1e-13 on deng (the numba kernel: 1.5e-13, 1.1e-12,
8.7e-14). The sparse method cannot centre (zeros would become
dense) and relies on (2) alone, which is slow when many pairs cancel.

**Speed.** On a GPU the dense tiles are GEMMs. On the CPU the numba kernel of
:func:`scdropout.kernels.cidr.dissimilarity` needs ~50x fewer operations (one per stored
gene and pair instead of seven products over all genes): one thread, loaded 2-core machine,
cellbench_dropseq (225 cells, 38% nonzero) numba 0.16 s CPU vs dense 1.7 s, sparse 5.7 s;
400 mouse_bladder cells (7%) numba 0.02 s vs dense 2.7 s. So :func:`scdropout.tl.cidr` uses
this module only on CUDA.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy import sparse

from scdropout._compat import CSRBase, SparseBase
from scdropout._utils import check_memory
from scdropout.kernels import cidr as kc

from ._model import resolve_device

__all__ = ["dissimilarity_torch", "pcoa_torch", "resolve_torch_device"]

#: pairs with S_ij below this fraction of ‖x_i‖² + ‖x_j‖² are recomputed directly
REFINE_RATIO = 1e-3
#: ``method="auto"`` on the CPU uses dense tiles above this fraction of nonzeros
DENSE_MIN_DENSITY = 0.02
#: the first four factor products are positive terms, the last three the cross term
_N_POS = 4
#: pairs recomputed per batch (dense batch x genes rows)
_REFINE_BATCH = 256


def resolve_torch_device(device: Any) -> torch.device:
    """Return a :class:`torch.device` for CIDR's float64 products: CPU or CUDA.

    :func:`scdropout.models._model.resolve_device` (``"auto"``: ``settings.device``, else CUDA
    when available, else CPU), limited to CPU and CUDA (MPS has no float64).

    Parameters
    ----------
    device
        ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a :class:`torch.device`.

    Returns
    -------
    torch.device
        The device to compute on.

    Raises
    ------
    ValueError
        If the name is not a device, or CUDA is requested but not available.
    """
    dev = resolve_device(device)
    if dev.type not in ("cpu", "cuda"):
        msg = f"`device={device!r}` is not supported; choose 'auto', 'cpu' or 'cuda[:N]'."
        raise ValueError(msg)
    return dev


@contextmanager
def _quiet_sparse():
    """Silence torch's one-time "Sparse CSR tensor support is in beta" notice."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="Sparse CSR tensor support", category=UserWarning
        )
        yield


def _csr(X: Any) -> sparse.csr_matrix:
    if isinstance(X, SparseBase):
        X = X if isinstance(X, CSRBase) else sparse.csr_matrix(X)
        X = sparse.csr_matrix(X, dtype=np.float64, copy=True)
    else:
        X = np.asarray(X)
        if X.ndim != 2:
            msg = f"`X` must be a 2-d cells x genes matrix, got shape {X.shape}."
            raise ValueError(msg)
        X = sparse.csr_matrix(X.astype(np.float64, copy=False))
    X.sum_duplicates()
    X.sort_indices()
    return X


def _check_inputs(
    X: Any, thresholds: Any, w_threshold: float, tile_size: int, dtype: Any
) -> tuple[sparse.csr_matrix, NDArray[np.float64], float]:
    if not isinstance(dtype, torch.dtype) or dtype not in (torch.float64, torch.float32):
        msg = f"`dtype={dtype!r}` is not supported; use torch.float64 (parity) or torch.float32."
        raise ValueError(msg)
    if isinstance(tile_size, bool) or not isinstance(tile_size, int | np.integer) or tile_size < 1:
        msg = f"`tile_size` must be a positive integer, got {tile_size!r}."
        raise ValueError(msg)
    X = _csr(X)
    thr = np.ascontiguousarray(thresholds, dtype=np.float64).ravel()
    if thr.shape[0] != X.shape[0]:
        msg = f"`thresholds` has {thr.shape[0]} values for {X.shape[0]} cells; give one per cell."
        raise ValueError(msg)
    if np.any(~(thr > 0)) or not np.all(np.isfinite(thr)):
        msg = "`thresholds` must all be positive and finite (zeros are dropout candidates)."
        raise ValueError(msg)
    if not np.all(np.isfinite(X.data)) or (X.nnz and X.data.min() < 0):
        msg = "`X` must hold finite non-negative log values (log2(TPM + 1), from `log_tpm`)."
        raise ValueError(msg)
    w = float(w_threshold)
    if not np.isfinite(w):
        msg = f"`w_threshold` must be finite, got {w_threshold!r}."
        raise ValueError(msg)
    return X, thr, w


class _Features:
    """Per-nonzero quantities of the CSR log matrix, on the device."""

    def __init__(
        self,
        X: sparse.csr_matrix,
        thr: NDArray[np.float64],
        w: float,
        dev: torch.device,
        *,
        centre: bool,
    ) -> None:
        n = X.shape[0]
        rows = np.repeat(np.arange(n), np.diff(X.indptr))
        x = X.data
        above = x > w
        keep = (x >= thr[rows]) & ~above  # non-candidate, not above W
        idx = np.int32 if X.nnz < 2**31 and X.shape[1] < 2**31 else np.int64
        self.n, self.n_genes, self.dev = n, X.shape[1], dev
        self.crow = torch.from_numpy(X.indptr.astype(idx)).to(dev)
        self.col = torch.from_numpy(X.indices.astype(idx)).to(dev)
        self.x = torch.from_numpy(x).to(dev)
        self.above = torch.from_numpy(above).to(dev)
        self.keep = torch.from_numpy(keep).to(dev)
        # per-gene centre c_g (mean of the non-candidate values, 0 if none) for the dense
        # method: the sums are invariant to it (weights come from x), the products shrink
        nc = x >= thr[rows]
        cnt = np.bincount(X.indices[nc], minlength=X.shape[1])
        tot = np.bincount(X.indices[nc], weights=x[nc], minlength=X.shape[1])
        c = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0) if centre else np.zeros(X.shape[1])
        y2 = (x - c[X.indices]) ** 2
        a2 = np.bincount(rows, weights=y2 * above, minlength=n)
        if w < 0:  # zeros are above W too: they add c_g² each
            zero_c2 = float(np.sum(c * c)) - np.bincount(
                rows, weights=c[X.indices] ** 2, minlength=n
            )
            a2 = a2 + zero_c2
        self.c = torch.from_numpy(c).to(dev)
        self.a2 = torch.from_numpy(a2).to(dev)

    def dense_rows(self, r0: int, r1: int, dtype: torch.dtype) -> torch.Tensor:
        """Rows r0..r1 as a dense (r1 - r0) x genes tensor."""
        k0, k1 = int(self.crow[r0]), int(self.crow[r1])
        M = torch.sparse_csr_tensor(
            self.crow[r0 : r1 + 1] - k0,
            self.col[k0:k1],
            self.x[k0:k1].to(dtype),
            size=(r1 - r0, self.n_genes),
            check_invariants=False,
        )
        return M.to_dense()


def _left_values(f: _Features, k0: int, dtype: torch.dtype) -> list[torch.Tensor]:
    """Return the seven left factors on the nonzeros from position k0 on (order of ``_dense_factors``)."""
    x = f.x[k0:].to(dtype)
    a = f.above[k0:].to(dtype)
    p = f.keep[k0:].to(dtype)
    na = 1.0 - a
    return [a, na * x * x, p, p * x * x, a * x, na * x, p * x]


def _dense_factors(
    xj: torch.Tensor, tj: torch.Tensor, w: float, c: torch.Tensor, *, side: str
) -> list[torch.Tensor]:
    """Return the seven left or right factors of a dense tile (b x genes), values centred."""
    a = (xj > w).to(xj.dtype)
    p = ((xj >= tj[:, None]) & (xj <= w)).to(xj.dtype)
    na = 1.0 - a
    xj = xj - c.to(xj.dtype)
    q = xj * xj
    if side == "left":
        return [a, na * q, p, p * q, a * xj, na * xj, p * xj]
    return [na * q, a, p * q, p, xj, a * xj, p * xj]


def _sparse_block(
    f: _Features, j0: int, right: list[torch.Tensor], dtype: torch.dtype
) -> torch.Tensor:
    """(positive, cross) sums of sparse rows j0..n x the dense tile, 2 x (n - j0) x b."""
    k0 = int(f.crow[j0])
    crow, col = f.crow[j0:] - k0, f.col[k0:]
    blk = torch.zeros((2, f.n - j0, right[0].shape[0]), dtype=dtype, device=f.dev)
    for k, (vals, r) in enumerate(zip(_left_values(f, k0, dtype), right, strict=True)):
        L = torch.sparse_csr_tensor(
            crow, col, vals, size=(f.n - j0, f.n_genes), check_invariants=False
        )
        blk[int(k >= _N_POS)] += torch.sparse.mm(L, r.T)
    return blk


def _dense_block(
    f: _Features,
    thr_t: torch.Tensor,
    w: float,
    i0: int,
    i1: int,
    right: list[torch.Tensor],
    dtype: torch.dtype,
) -> torch.Tensor:
    """(positive, cross) sums with both tiles dense, 2 x (i1 - i0) x b."""
    xi = f.dense_rows(i0, i1, dtype)
    left = _dense_factors(xi, thr_t[i0:i1].to(dtype), w, f.c, side="left")
    blk = torch.zeros((2, i1 - i0, right[0].shape[0]), dtype=dtype, device=f.dev)
    for k, (lk, rk) in enumerate(zip(left, right, strict=True)):
        blk[int(k >= _N_POS)].addmm_(lk, rk.T)
    return blk


def _direct(
    xi: torch.Tensor, xj: torch.Tensor, ti: torch.Tensor, tj: torch.Tensor, w: float
) -> torch.Tensor:
    """S for paired rows, Σ_g w_g (x_gi - x_gj)², literally (ALGORITHMS.md §2.4)."""
    keep = (xi >= ti[:, None]) & (xj >= tj[:, None])
    wt = keep | (xi > w) | (xj > w)
    d = xi - xj
    return torch.where(wt, d * d, torch.zeros((), dtype=d.dtype, device=d.device)).sum(dim=1)


def _refine(
    X: sparse.csr_matrix,
    thr_t: torch.Tensor,
    w: float,
    ii: NDArray[np.int64],
    jj: NDArray[np.int64],
    dev: torch.device,
) -> torch.Tensor:
    out = []
    for s in range(0, ii.size, _REFINE_BATCH):
        a, b = ii[s : s + _REFINE_BATCH], jj[s : s + _REFINE_BATCH]
        xi = torch.from_numpy(X[a].toarray()).to(dev)
        xj = torch.from_numpy(X[b].toarray()).to(dev)
        ia, ib = torch.from_numpy(a).to(dev), torch.from_numpy(b).to(dev)
        out.append(_direct(xi, xj, thr_t[ia], thr_t[ib], w))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64, device=dev)


def dissimilarity_torch(
    X: Any,
    thresholds: Any,
    w_threshold: float,
    *,
    device: Any = "cpu",
    dtype: torch.dtype = torch.float64,
    tile_size: int | None = None,
    method: str = "auto",
    refine_ratio: float = REFINE_RATIO,
    progress_bar: bool = False,
) -> NDArray[np.float64]:
    """CIDR's step-mode dissimilarity by tiled matrix products, on CPU or CUDA (Lin et al. 2017).

    ALGORITHMS.md §2.4, step mode: D_ij = sqrt(Σ_g 1[(¬M_gi ∧ ¬M_gj) ∨ max(x_gi, x_gj) > W]
    (x_gi − x_gj)²), M_gi = x_gi < T_i; the decomposition into seven products and the direct
    recomputation of near-identical pairs are explained in the module docstring. Equal to
    :func:`scdropout.kernels.cidr.dissimilarity` to about 1e-12 relative in float64. Cost
    about 7 N² genes flops (``method="dense"``) or 7 N nnz (``"sparse"``), in lower-triangle
    tiles; device memory ~14 bytes per nonzero, the tiles' factors and an N x ``tile_size``
    block (the result comes back tile by tile into one N x N float64 array on the host).

    Parameters
    ----------
    X
        Cells x genes log2(TPM + 1) matrix (CSR from
        :func:`scdropout.kernels.cidr.log_tpm`; others converted), non-negative.
    thresholds
        T_j per cell (all > 0); candidates are X_gj < T_j.
    w_threshold
        The weighting threshold W.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a :class:`torch.device`, or ``"auto"`` (CUDA when
        available).
    dtype
        Precision of the products: ``torch.float64`` (parity with R) or ``torch.float32``
        (faster on consumer GPUs; relative errors of about 1e-6, more for similar cells).
    tile_size
        Cells per dense tile; None: 1024 on CUDA, 256 on the CPU (device memory about
        2 x 7 x genes x ``tile_size`` x 8 bytes with ``method="dense"``).
    method
        ``"sparse"``: sparse (cells i, CSR) x dense (tile of cells j) products, O(N · nnz)
        flops; ``"dense"``: both tiles dense (BLAS-3 GEMMs, O(N² · genes) flops, fast on GPUs
        and for dense data); ``"auto"``: dense on CUDA or when more than
        ``DENSE_MIN_DENSITY`` of the entries are nonzero, else sparse.
    refine_ratio
        Pairs whose S_ij is below ``refine_ratio`` x the sum of its (non-negative) product
        terms are recomputed directly in float64; 0 turns this off (then identical cells can
        get D of about 1e-7, not 0).
    progress_bar
        Show a tqdm bar over tiles.

    Returns
    -------
    numpy.ndarray
        D, N x N float64, symmetric with zero diagonal.

    Raises
    ------
    ValueError
        For a non-positive threshold, negative or non-finite values, a shape mismatch, a bad
        ``tile_size``, ``dtype`` or ``device``, or CUDA requested but not available.
    MemoryError
        If the N x N result would exceed ``settings.max_memory_gb``.
    """
    dev = resolve_torch_device(device)
    if tile_size is None:
        tile_size = 1024 if dev.type == "cuda" else 256
    X, thr, w = _check_inputs(X, thresholds, w_threshold, tile_size, dtype)
    if method not in ("auto", "sparse", "dense"):
        msg = f"`method={method!r}` is not valid; choose 'auto', 'sparse' or 'dense'."
        raise ValueError(msg)
    n = X.shape[0]
    density = X.nnz / max(X.shape[0] * X.shape[1], 1)
    use_dense = method == "dense" or (
        method == "auto" and (dev.type == "cuda" or density > DENSE_MIN_DENSITY)
    )
    check_memory(
        n * n * 8,
        what=f"the {n:,} x {n:,} CIDR dissimilarity",
        ways_out="Subsample the cells, or use landmark mode (`tl.cidr(mode='landmark')`).",
    )
    f = _Features(X, thr, w, dev, centre=use_dense)
    thr_t = torch.from_numpy(thr).to(dev)
    D = np.zeros((n, n))
    starts = range(0, n, int(tile_size))
    if progress_bar:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="CIDR dissimilarity (torch)", unit="tile")
    with torch.inference_mode(), _quiet_sparse():
        for j0 in starts:
            j1 = min(j0 + int(tile_size), n)
            xj = f.dense_rows(j0, j1, dtype)
            right = _dense_factors(xj, thr_t[j0:j1].to(dtype), w, f.c, side="right")
            if use_dense:
                blk = torch.cat(
                    dim=1,
                    tensors=[
                        _dense_block(f, thr_t, w, i0, min(i0 + int(tile_size), n), right, dtype)
                        for i0 in range(j0, n, int(tile_size))
                    ],
                )
            else:
                blk = _sparse_block(f, j0, right, dtype)
            blk = blk.to(torch.float64)
            pos, cross2 = blk[0] + f.a2[j0:, None] + f.a2[None, j0:j1], 2.0 * blk[1]
            blk = pos - cross2
            if refine_ratio > 0:  # all terms are >= 0: their sum bounds the rounding error
                ri, rj = torch.nonzero(blk < refine_ratio * (pos + cross2.abs()), as_tuple=True)
                low = ri + j0 > rj + j0
                ri, rj = ri[low], rj[low]
                if ri.numel():
                    blk[ri, rj] = _refine(
                        X,
                        thr_t,
                        w,
                        (ri + j0).cpu().numpy(),
                        (rj + j0).cpu().numpy(),
                        dev,
                    )
            blk = torch.sqrt(torch.clamp(blk, min=0.0)).cpu().numpy()
            b = j1 - j0
            diag = np.tril(blk[:b], -1)
            D[j0:j1, j0:j1] = diag + diag.T
            D[j1:, j0:j1] = blk[b:]
            D[j0:j1, j1:] = blk[b:].T
    return D


def pcoa_torch(
    D: Any,
    *,
    device: Any = "cpu",
    n_components: int = 20,
    n_pcs: int | None = None,
) -> kc.PCoANpc:
    """CIDR's principal coordinates and nPC from one full ``torch.linalg.eigh`` (Lin et al. 2017).

    ALGORITHMS.md §2.5-2.6: B = J(−½ D∘D)J, all eigenvalues (|λ| < √ε set to 0), variation
    over the positive ones, nPC by :func:`scdropout.kernels.cidr.calc_npc` and coordinates
    V·diag(√λ), as :func:`scdropout.kernels.cidr.pcoa` + ``calc_npc`` (the spectrum is always
    complete). Float64 throughout.

    Parameters
    ----------
    D
        Symmetric N x N dissimilarity (numpy array or tensor).
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``, a :class:`torch.device`, or ``"auto"``.
    n_components
        Coordinates to return at least (capped at the number of positive eigenvalues).
    n_pcs
        nPC if already chosen; None applies CIDR's rule.

    Returns
    -------
    scdropout.kernels.cidr.PCoANpc
        Eigenvalues (all, descending), coordinates, variation, nPC, ``complete=True``.

    Raises
    ------
    ValueError
        If ``D`` is not square, or for a bad ``device``.
    """
    dev = resolve_torch_device(device)
    Dt = torch.as_tensor(np.asarray(D, dtype=np.float64) if not torch.is_tensor(D) else D)
    Dt = Dt.to(device=dev, dtype=torch.float64)
    if Dt.ndim != 2 or Dt.shape[0] != Dt.shape[1]:
        msg = f"`D` must be a square matrix, got shape {tuple(Dt.shape)}."
        raise ValueError(msg)
    with torch.inference_mode():
        B = -0.5 * Dt * Dt
        B = B - B.mean(dim=0, keepdim=True)
        B = B - B.mean(dim=1, keepdim=True)
        lam, V = torch.linalg.eigh(B)
        lam, V = lam.flip(0), V.flip(1)
        lam = torch.where(lam.abs() < kc.EIG_EPS, torch.zeros_like(lam), lam)
        k = int((lam > kc.EIG_EPS).sum())
        variation = (lam[:k] / lam[:k].sum()).cpu().numpy()
        npc = kc.calc_npc(variation) if n_pcs is None else int(n_pcs)
        m = min(max(npc, min(n_components, k)), k)
        coords = (V[:, :m] * torch.sqrt(lam[:m])).cpu().numpy()
    return kc.PCoANpc(
        lam.cpu().numpy(), np.ascontiguousarray(coords), variation, npc, complete=True
    )
