"""Dropout-mean curve fits and multiple-testing corrections (plain NumPy/SciPy).

Andrews & Hemberg (2019), Bioinformatics 35(16):2865-2867 (M3Drop).

- :func:`fit_dispersion_trend`: the NBumi size-mean trend, ALGORITHMS.md §4.1 step 4.
- :func:`fit_michaelis_menten`: M3Drop's p = K / (K + s) fit, ALGORITHMS.md §3 step 3.
- :func:`bh_qvalues`, :func:`bonferroni_qvalues`: adjusted p-values.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "MMFit",
    "bh_qvalues",
    "bonferroni_qvalues",
    "fit_dispersion_trend",
    "fit_michaelis_menten",
]

#: genes with log2(t_g / N) above this are "highly expressed" for the trend fit
_HIGH_LOG2_MEAN = 4.0
#: when more than this many genes are highly expressed, only they enter the trend fit
_MIN_HIGH_GENES = 2000


class MMFit(NamedTuple):
    """Michaelis-Menten fit p ≈ K / (K + s) (ALGORITHMS.md §3 step 3)."""

    #: maximum-likelihood (= least-squares) K
    K: float
    #: max(sigma, SE(K)) with SE from the inverse Hessian of the Gaussian likelihood
    K_err: float
    #: residual standard deviation, sqrt(mean e²)
    sigma: float


def fit_dispersion_trend(size: Any, gene_totals: Any, n_cells: int) -> tuple[float, float]:
    """Fit log r_g = b0 + b1 log(t_g / N) by ordinary least squares.

    ALGORITHMS.md §4.1 step 4: the fit uses genes with a finite size 0 < r_g < max(r) and
    t_g > 0 (so genes given 10 x max by the under-dispersion rule are left out); when more than
    2000 genes have log2(t_g / N) > 4, only those enter. The smoothed size is
    r̃_g = exp(b0 + b1 log(t_g / N)).

    Parameters
    ----------
    size
        Method-of-moments sizes r_g (e.g. from :func:`~scdropout.kernels.nbumi_size`); NaN for
        genes outside the model.
    gene_totals
        t_g per gene.
    n_cells
        N, the number of cells.

    Returns
    -------
    ``(b0, b1)``, the intercept and slope on the natural-log scale. With a single usable gene,
    or usable genes that all share one mean, the slope is 0 and b0 the mean of log r.

    Raises
    ------
    RuntimeError
        If no gene is usable for the fit (all under-dispersed or all-zero).
    """
    r = np.asarray(size, dtype=np.float64)
    tg = np.asarray(gene_totals, dtype=np.float64)
    if r.shape != tg.shape:
        msg = f"`size` and `gene_totals` must have the same shape, got {r.shape} and {tg.shape}."
        raise ValueError(msg)
    finite = np.isfinite(r) & (tg > 0)
    r_max = r[finite].max() if finite.any() else np.inf
    # R and ALGORITHMS.md: 0 < r < max(r). PyPI M3Drop 0.5.3 instead drops only the genes its
    # under-dispersion rule replaced, plus genes with mean <= 1e-3; so when no gene is
    # under-dispersed it keeps the largest size, which R (and we) leave out.
    usable = finite & (r > 0) & (r < r_max)
    with np.errstate(divide="ignore"):
        mean = tg / n_cells
        high = np.log2(mean) > _HIGH_LOG2_MEAN
    # R's NBumiFitDispVsMean counts all highly expressed genes here; PyPI M3Drop counts only
    # those also usable for the fit. ALGORITHMS.md words it as R does.
    if high.sum() > _MIN_HIGH_GENES:
        usable &= high
    if not usable.any():
        msg = (
            "the NB dispersion trend has no gene to fit: every gene is under-dispersed or has "
            "no counts. The depth-adjusted NB model needs over-dispersed UMI counts; check that "
            "the matrix holds raw counts and has enough cells."
        )
        raise RuntimeError(msg)
    x = np.log(mean[usable])
    y = np.log(r[usable])
    if x.size < 2 or np.ptp(x) == 0:
        return float(y.mean()), 0.0
    xc = x - x.mean()
    b1 = float(np.sum(xc * (y - y.mean())) / np.sum(xc * xc))
    return float(y.mean() - b1 * x.mean()), b1


def _mm_derivatives(K: float, p: NDArray[np.float64], s: NDArray[np.float64]):
    """Residuals, gradient and Hessian of Σ e² / 2 in K, e = p - K / (K + s)."""
    ks = K + s
    e = p - K / ks
    de = -s / ks**2
    d2e = 2.0 * s / ks**3
    return e, float(np.sum(e * de)), float(np.sum(de * de) + np.sum(e * d2e))


def fit_michaelis_menten(dropout_rate: Any, mean: Any) -> MMFit:
    """Fit the Michaelis-Menten dropout curve p ≈ K / (K + s) by maximum likelihood.

    ALGORITHMS.md §3 step 3, Andrews & Hemberg (2019) Bioinformatics. With Gaussian residuals
    e_g = p_g - K / (K + s_g), the maximum-likelihood K is the least-squares K: it is found by
    a grid then a bounded scalar minimisation over log K, and polished by Newton steps so the
    result does not depend on the optimiser's stopping point. sigma² = mean e², and SE(K) is
    sigma / sqrt(Σ[(∂e/∂K)² + e ∂²e/∂K²]) from the inverse Hessian of the negative
    log-likelihood (the (K, sigma) cross term vanishes at the optimum).

    Parameters
    ----------
    dropout_rate
        p_g per gene, in [0, 1) (genes never detected must be left out by the caller).
    mean
        s_g per gene, the mean of the normalised expression (> 0).

    Returns
    -------
    :class:`MMFit` with ``K``, ``K_err`` = max(sigma, SE(K)) and ``sigma``.

    Raises
    ------
    ValueError
        If no gene has a finite p and a positive finite s.
    """
    from scipy.optimize import minimize_scalar

    p = np.asarray(dropout_rate, dtype=np.float64)
    s = np.asarray(mean, dtype=np.float64)
    ok = np.isfinite(p) & np.isfinite(s) & (s > 0)
    p, s = p[ok], s[ok]
    if p.size == 0:
        msg = "the Michaelis-Menten fit needs at least one gene with a positive finite mean."
        raise ValueError(msg)

    def sse(log_k: float) -> float:
        K = np.exp(log_k)
        e = p - K / (K + s)
        return float(np.sum(e * e))

    lo = np.log(s.min()) - 15.0
    hi = np.log(s.max()) + 15.0
    grid = np.linspace(lo, hi, 241)
    i = int(np.argmin([sse(v) for v in grid]))
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    res = minimize_scalar(sse, bounds=(a, b), method="bounded", options={"xatol": 1e-10})
    K = float(np.exp(res.x))
    for _ in range(50):  # Newton polish in K on the exact least-squares objective
        _, grad, hess = _mm_derivatives(K, p, s)
        if not hess > 0:
            break
        new = K - grad / hess
        if not np.isfinite(new) or new <= 0:
            break
        done = abs(new - K) <= 1e-14 * K
        K = new
        if done:
            break
    e, _, hess = _mm_derivatives(K, p, s)
    sigma = float(np.sqrt(np.mean(e * e)))
    se = sigma / np.sqrt(hess) if hess > 0 else np.inf
    return MMFit(K, float(max(sigma, se)), sigma)


def bh_qvalues(p: Any) -> NDArray[np.float64]:
    """Benjamini-Hochberg adjusted p-values (R ``p.adjust(method="BH")``).

    NaN p-values stay NaN and do not count towards the number of tests.

    Parameters
    ----------
    p
        p-values.

    Returns
    -------
    float64 q-values, same shape as ``p``.
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    vals = p[ok]
    n = vals.size
    if n == 0:
        return q
    order = np.argsort(vals, kind="stable")[::-1]
    ranked = vals[order] * n / np.arange(n, 0, -1)
    adj = np.minimum(1.0, np.minimum.accumulate(ranked))
    out = np.empty(n)
    out[order] = adj
    q[ok] = out
    return q


def bonferroni_qvalues(p: Any) -> NDArray[np.float64]:
    """Bonferroni adjusted p-values, min(1, p x n); NaN stays NaN and is not counted.

    Parameters
    ----------
    p
        p-values.

    Returns
    -------
    float64 adjusted p-values, same shape as ``p``.
    """
    p = np.asarray(p, dtype=np.float64)
    n = int(np.isfinite(p).sum())
    return np.minimum(1.0, p * n)
