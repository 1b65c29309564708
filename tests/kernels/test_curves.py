"""kernels.curves: dispersion trend, Michaelis-Menten fit, multiple-testing corrections."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy import optimize

from scdropout import kernels


def test_dispersion_trend_recovers_exact_line():
    rng = np.random.default_rng(0)
    n = 500
    tg = rng.integers(1, 10_000, size=300).astype(float)
    size = np.exp(0.3 + 0.7 * np.log(tg / n))
    size[0] = 10 * size.max()  # an under-dispersed gene, left out (it is the maximum)
    b0, b1 = kernels.fit_dispersion_trend(size, tg, n)
    assert (b0, b1) == pytest.approx((0.3, 0.7), rel=1e-10)


def test_dispersion_trend_uses_only_highly_expressed_genes_when_many():
    n = 10
    tg = np.concatenate([np.full(2001, 1000.0) * np.linspace(1, 2, 2001), np.full(50, 5.0)])
    size = np.exp(1.0 + 0.5 * np.log(tg / n))
    size[-50:] = 1e-3  # off the line, but log2(0.5) < 4 leaves them out
    size[0] = 1e9  # the maximum is always left out
    b0, b1 = kernels.fit_dispersion_trend(size, tg, n)
    assert (b0, b1) == pytest.approx((1.0, 0.5), rel=1e-8)


def test_dispersion_trend_degenerate_cases():
    # one usable gene (the other is the maximum): slope 0 through it
    assert kernels.fit_dispersion_trend([2.0, 5.0, np.nan], [3.0, 4.0, 0.0], 5) == (
        pytest.approx(np.log(2.0)),
        0.0,
    )
    with pytest.raises(RuntimeError, match="no gene to fit"):
        kernels.fit_dispersion_trend([np.nan, 5.0], [0.0, 4.0], 5)
    with pytest.raises(ValueError, match="same shape"):
        kernels.fit_dispersion_trend([1.0], [1.0, 2.0], 5)


def _nll_hessian_se(K, sigma, p, s, h=1e-5):
    """SE(K) from a central finite-difference Hessian of the Gaussian NLL in (K, sigma)."""

    def nll(theta):
        k, sg = theta
        e = p - k / (k + s)
        return np.sum(0.5 * np.log(2 * np.pi * sg**2) + e**2 / (2 * sg**2))

    x0 = np.array([K, sigma])
    steps = h * np.maximum(np.abs(x0), 1e-3)
    H = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            ei, ej = np.eye(2)[i] * steps[i], np.eye(2)[j] * steps[j]
            H[i, j] = (
                nll(x0 + ei + ej) - nll(x0 + ei - ej) - nll(x0 - ei + ej) + nll(x0 - ei - ej)
            ) / (4 * steps[i] * steps[j])
    return float(np.sqrt(np.linalg.inv(H)[0, 0]))


def test_michaelis_menten_matches_least_squares_and_hessian():
    rng = np.random.default_rng(3)
    s = np.exp(rng.uniform(-3, 5, size=400))
    p = np.clip(2.5 / (2.5 + s) + rng.normal(0, 0.05, size=s.size), 0, 0.999)
    fit = kernels.fit_michaelis_menten(p, s)
    resid = lambda k: p - k / (k + s)  # noqa: E731
    ls = optimize.least_squares(lambda k: resid(k[0]), x0=[3.0], xtol=1e-15, ftol=1e-15)
    assert pytest.approx(ls.x[0], rel=1e-7) == fit.K
    # and at least as good: the Newton polish reaches the least-squares optimum
    assert np.sum(resid(fit.K) ** 2) <= np.sum(resid(ls.x[0]) ** 2) * (1 + 1e-14)
    e = p - fit.K / (fit.K + s)
    assert fit.sigma == pytest.approx(np.sqrt(np.mean(e**2)), rel=1e-12)
    se = _nll_hessian_se(fit.K, fit.sigma, p, s)
    assert fit.K_err == pytest.approx(max(fit.sigma, se), rel=1e-4)
    assert pytest.approx(2.5, rel=0.1) == fit.K


def test_michaelis_menten_exact_curve_and_invalid_genes():
    s = np.geomspace(0.01, 100, 50)
    p = 0.8 / (0.8 + s)
    fit = kernels.fit_michaelis_menten(np.append(p, np.nan), np.append(s, 1.0))
    assert pytest.approx(0.8, rel=1e-12) == fit.K
    assert fit.sigma < 1e-12
    with pytest.raises(ValueError, match="at least one gene"):
        kernels.fit_michaelis_menten([0.5], [0.0])


def test_bh_qvalues_match_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(size=200), rng.uniform(0, 1e-4, size=20), [1.0, 1.0]])
    assert_allclose(kernels.bh_qvalues(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    with_nan = np.append(p, np.nan)
    q = kernels.bh_qvalues(with_nan)
    assert np.isnan(q[-1])
    assert_allclose(q[:-1], multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    assert kernels.bh_qvalues([]).shape == (0,)


def test_bonferroni():
    assert_allclose(kernels.bonferroni_qvalues([0.01, 0.2, np.nan]), [0.02, 0.4, np.nan])
