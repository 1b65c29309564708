"""Poisson/NB/ZINB log-likelihoods against scipy.stats, mpmath and the ZINB formula (ALGORITHMS §5)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from scdropout.models import log_nb, log_poisson, log_zinb

# the grid of ALGORITHMS.md §5
MUS = np.logspace(-6, 5, 12)
THETAS = np.logspace(-4, 7, 12)
XS = np.array([0.0, 1.0, 10.0, 1e4])
M, T, X = np.meshgrid(MUS, THETAS, XS, indexing="ij")


def _t(a, dtype=torch.float64, *, grad=False):
    return torch.tensor(a, dtype=dtype, requires_grad=grad)


def test_nb_matches_scipy_on_the_grid():
    got = log_nb(_t(X), _t(M), _t(T)).numpy()
    ref = stats.nbinom.logpmf(X, n=T, p=T / (T + M))
    # scipy gets p = θ/(θ+μ) rounded, which costs it ~x·ε·θ/μ absolute when μ/θ is tiny
    ok = M / T > 1e-8
    assert ok.sum() > 0.6 * ok.size
    np.testing.assert_allclose(got[ok], ref[ok], rtol=1e-7, atol=1e-9)


def test_nb_matches_mpmath_everywhere_on_the_grid():
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40

    def ref(x, mu, th):
        x, mu, th = (mpmath.mpf(float(v)) for v in (x, mu, th))
        return float(
            th * (mpmath.log(th) - mpmath.log(th + mu))
            + x * (mpmath.log(mu) - mpmath.log(th + mu))
            + mpmath.loggamma(x + th)
            - mpmath.loggamma(th)
            - mpmath.loggamma(x + 1)
        )

    expected = np.vectorize(ref)(X, M, T)
    got = log_nb(_t(X), _t(M), _t(T)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


def test_nb_tends_to_poisson_for_huge_theta():
    x, mu = _t(XS), _t(np.full(4, 3.0))
    np.testing.assert_allclose(
        log_nb(x, mu, _t(np.full(4, 1e13))).numpy(), log_poisson(x, mu).numpy(), rtol=1e-9
    )


def test_poisson_matches_scipy():
    np.testing.assert_allclose(
        log_poisson(_t(X), _t(M)).numpy(), stats.poisson.logpmf(X, M), rtol=1e-12, atol=1e-12
    )


@pytest.mark.parametrize("logit", [-8.0, -1.0, 0.0, 2.5, 10.0])
def test_zinb_at_zero_matches_formula(logit):
    mu, th = M[..., 0], T[..., 0]
    pi = 1.0 / (1.0 + np.exp(-logit))
    got = log_zinb(_t(np.zeros_like(mu)), _t(mu), _t(th), _t(np.full_like(mu, logit))).numpy()
    # the formula as written, in float64: (θ/(θ+μ))^θ itself loses digits once θ ≫ μ
    naive = np.log(pi + (1.0 - pi) * (th / (th + mu)) ** th)
    ok = th <= 1e4
    np.testing.assert_allclose(got[ok], naive[ok], rtol=1e-9, atol=1e-12)
    # and everywhere against the same formula in 40-digit arithmetic
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    p = 1 / (1 + mpmath.exp(-mpmath.mpf(logit)))

    def ref(m, t):
        m, t = mpmath.mpf(float(m)), mpmath.mpf(float(t))
        return float(mpmath.log(p + (1 - p) * (t / (t + m)) ** t))

    np.testing.assert_allclose(got, np.vectorize(ref)(mu, th), rtol=1e-10, atol=1e-15)


def test_zinb_above_zero_is_nb_plus_log_one_minus_pi():
    logit = 0.7
    got = log_zinb(_t(X), _t(M), _t(T), _t(np.full_like(M, logit))).numpy()
    nb = log_nb(_t(X), _t(M), _t(T)).numpy()
    pos = X > 0
    np.testing.assert_allclose(got[pos], nb[pos] + np.log1p(-1 / (1 + np.exp(-logit))), rtol=1e-12)


def test_zinb_sums_to_one_over_counts():
    x = _t(np.arange(0, 400.0))
    p = torch.exp(log_zinb(x, _t(5.0), _t(2.0), _t(-0.3))).sum().item()
    assert p == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("which", ["poisson", "nb", "zinb"])
def test_gradients_finite_in_float32_on_the_grid(which):
    mu, th = _t(M, torch.float32, grad=True), _t(T, torch.float32, grad=True)
    ell = _t(np.zeros_like(M), torch.float32, grad=True)
    x = _t(X, torch.float32)
    if which == "poisson":
        out = log_poisson(x, mu)
    elif which == "nb":
        out = log_nb(x, mu, th)
    else:
        out = log_zinb(x, mu, th, ell)
    assert torch.isfinite(out).all()
    out.sum().backward()
    for t in (mu, th, ell):
        if t.grad is not None:
            assert torch.isfinite(t.grad).all()
    assert mu.grad is not None


def test_mask_and_reduction():
    x, mu, th = _t(X), _t(M), _t(T)
    mask = torch.tensor(X > 0)
    full = log_nb(x, mu, th)
    assert log_nb(x, mu, th, reduction="sum").item() == pytest.approx(full.sum().item())
    mean = log_nb(x, mu, th, mask=mask, reduction="mean").item()
    assert mean == pytest.approx(full[mask].mean().item())
    masked = log_nb(x, mu, th, mask=mask)
    assert (masked[~mask] == 0).all()
    # a masked-out entry carries no gradient
    mu_g = _t(M, grad=True)
    log_nb(x, mu_g, th, mask=mask, reduction="sum").backward()
    assert (mu_g.grad[~mask] == 0).all()
    assert (mu_g.grad[mask] != 0).any()
    with pytest.raises(ValueError, match="reduction"):
        log_nb(x, mu, th, reduction="median")
