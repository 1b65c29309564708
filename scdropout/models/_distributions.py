"""Count log-likelihoods (Poisson, NB, ZINB) as pure tensor functions.

Formulas and numerical rules: ``shared/docs/ALGORITHMS.md`` §5. Every function returns the
*log*-likelihood; the training loss is its negative. All inputs broadcast against each other.

- ``θ·[log θ − log(θ+μ)]`` is computed as ``−θ·log1p(μ/θ)`` (no cancellation for large θ).
- For ``θ > 100`` the difference ``lgamma(x+θ) − lgamma(θ) − x·log(θ+μ)`` is taken from
  Stirling's series in a cancellation-free form, so NB tends smoothly to Poisson as θ → ∞ and
  stays accurate in float32 up to θ = 1e7 and beyond (this replaces the hard switch to the
  Poisson formula at μ/θ < 1e-8 of DCA/scVI, which is off by up to x²/2θ for large x).
- Branches are chosen with ``torch.where`` on a mask, and each branch is fed only inputs that
  are valid for it, so the unselected branch never produces NaN gradients.
- ZINB at x = 0 is ``softplus(t − ℓ) − softplus(−ℓ)`` with ``t = log NB(0)``: a log-sum-exp that
  never evaluates ``e^t`` on its own.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch.nn.functional import softplus

Reduction = Literal["none", "sum", "mean"]

#: above this θ, the lgamma difference comes from Stirling's series (error < 1/(360 θ³))
THETA_STIRLING = 100.0


def _log_mu(mu: torch.Tensor) -> torch.Tensor:
    # μ from softmax can underflow to 0 in float32; log(tiny) keeps everything finite
    return torch.log(mu.clamp_min(torch.finfo(mu.dtype).tiny))


def _stirling_tail(z: torch.Tensor) -> torch.Tensor:
    """Return the Stirling correction ``1/(12 z) − 1/(360 z³)`` of ``lgamma(z)``."""
    return 1.0 / (12.0 * z) - 1.0 / (360.0 * z**3)


def _reduce(values: torch.Tensor, mask: torch.Tensor | None, reduction: Reduction) -> torch.Tensor:
    if mask is not None:
        mask = mask.to(torch.bool)
        values = torch.where(mask, values, 0.0)
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if reduction == "mean":
        n = values.numel() if mask is None else mask.expand_as(values).sum()
        return values.sum() / torch.clamp(torch.as_tensor(n, dtype=values.dtype), min=1.0)
    msg = f"`reduction={reduction!r}` is not valid; choose one of 'none', 'sum', 'mean'."
    raise ValueError(msg)


def log_poisson(
    x: torch.Tensor,
    mu: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "none",
) -> torch.Tensor:
    """Poisson log-likelihood ``x·log μ − μ − lgamma(x+1)``.

    Parameters
    ----------
    x
        Observed counts.
    mu
        Means (> 0).
    mask
        Optional boolean tensor; entries where it is False contribute nothing (and no gradient).
    reduction
        ``"none"`` (elementwise), ``"sum"`` or ``"mean"`` (over the entries the mask keeps).

    Returns
    -------
    The log-likelihood, elementwise or reduced.
    """
    x, mu = torch.broadcast_tensors(x, mu)
    logp = torch.xlogy(x, mu.clamp_min(torch.finfo(mu.dtype).tiny)) - mu - torch.lgamma(x + 1.0)
    return _reduce(logp, mask, reduction)


def nb_log_ratio(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    lgamma_theta: torch.Tensor | None = None,
) -> torch.Tensor:
    """Return ``log NB(x; μ, θ) − log NB(0; μ, θ) + lgamma(x+1)`` elementwise.

    That is ``x·log μ + lgamma(x+θ) − lgamma(θ) − x·log(θ+μ)``: the part of the NB
    log-likelihood that vanishes at x = 0 apart from the constant ``−lgamma(x+1)``, so a loss
    over sparse counts evaluates it on the non-zeros only. ``lgamma_theta`` (``lgamma(θ)``,
    e.g. computed once per gene and gathered) saves one lgamma per entry.
    """
    mu = mu.clamp_min(torch.finfo(mu.dtype).tiny)
    big = theta > THETA_STIRLING
    any_big = bool(big.any())
    all_big = any_big and bool(big.all())

    def direct(th: torch.Tensor, lg_th: torch.Tensor | None) -> torch.Tensor:
        # lgamma(x+θ) − lgamma(θ) − x log(θ+μ), for θ ≤ 100
        lg_th = torch.lgamma(th) if lg_th is None else lg_th
        return torch.lgamma(x + th) - lg_th - torch.xlogy(x, th + mu)

    def stirling(th: torch.Tensor) -> torch.Tensor:
        # the same for θ > 100, cancellation-free:
        # (θ − ½) log1p(x/θ) + x log1p((x − μ)/(θ + μ)) − x + S(θ + x) − S(θ)
        return (
            (th - 0.5) * torch.log1p(x / th)
            + x * torch.log1p((x - mu) / (th + mu))
            - x
            + (_stirling_tail(th + x) - _stirling_tail(th))
        )

    if not any_big:
        lg = direct(theta, lgamma_theta)
    elif all_big:
        lg = stirling(theta)
    else:  # each branch sees only values valid for it, so neither makes NaN gradients
        lg_small = None if lgamma_theta is None else torch.where(big, 0.0, lgamma_theta)
        lg = torch.where(
            big,
            stirling(torch.where(big, theta, 1e3)),
            direct(torch.where(big, 1.0, theta), lg_small),
        )
    return torch.xlogy(x, mu) + lg


def nb_log_zero(mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """Return ``log NB(0; μ, θ) = θ[log θ − log(θ+μ)]``, computed as ``−θ·log1p(μ/θ)``."""
    return -theta * torch.log1p(mu / theta)


def _log_nb_and_zero(
    x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(log NB(x; μ, θ), log NB(0; μ, θ))`` elementwise.

    θ keeps its own shape (typically one value per gene), so the work on θ alone stays small;
    a branch is evaluated only when some θ needs it.
    """
    log_zero = nb_log_zero(mu, theta)
    logp = log_zero + nb_log_ratio(x, mu, theta) - torch.lgamma(x + 1.0)
    return logp, log_zero


def log_nb(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "none",
) -> torch.Tensor:
    """Negative binomial log-likelihood with mean μ and inverse dispersion θ (Var = μ + μ²/θ).

    ``log NB = θ[log θ − log(θ+μ)] + x[log μ − log(θ+μ)] + lgamma(x+θ) − lgamma(θ) −
    lgamma(x+1)`` (ALGORITHMS.md §5; DCA, Eraslan et al. 2019; scVI, Lopez et al. 2018),
    evaluated in the stable forms listed in the module docstring.

    Parameters
    ----------
    x
        Observed counts.
    mu
        Means (> 0).
    theta
        Inverse dispersions (> 0).
    mask
        Optional boolean tensor; entries where it is False contribute nothing (and no gradient).
    reduction
        ``"none"`` (elementwise), ``"sum"`` or ``"mean"`` (over the entries the mask keeps).

    Returns
    -------
    The log-likelihood, elementwise or reduced.
    """
    logp, _ = _log_nb_and_zero(x, mu, theta)
    return _reduce(logp, mask, reduction)


def log_zinb(
    x: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    pi_logits: torch.Tensor,
    *,
    mask: torch.Tensor | None = None,
    reduction: Reduction = "none",
) -> torch.Tensor:
    """Zero-inflated NB log-likelihood with zero-inflation probability ``π = σ(ℓ)``.

    ``x = 0``: ``log(π + (1−π) NB(0)) = softplus(t − ℓ) − softplus(−ℓ)``, ``t = log NB(0)``;
    ``x > 0``: ``log(1−π) + log NB(x) = −softplus(ℓ) + log NB(x)``. (ALGORITHMS.md §5 writes
    ``−softplus(−ℓ)`` for log(1−π), which is log π; scVI's ``−softplus(−ℓ) − ℓ`` equals ours.)
    The branch is picked with a mask on ``x < 0.5``.

    Parameters
    ----------
    x
        Observed counts.
    mu
        NB means (> 0).
    theta
        NB inverse dispersions (> 0).
    pi_logits
        Logits ℓ of the zero-inflation probability.
    mask
        Optional boolean tensor; entries where it is False contribute nothing (and no gradient).
    reduction
        ``"none"`` (elementwise), ``"sum"`` or ``"mean"`` (over the entries the mask keeps).

    Returns
    -------
    The log-likelihood, elementwise or reduced.
    """
    logp_nb, log_zero = _log_nb_and_zero(x, mu, theta)
    log_one_minus_pi = -softplus(pi_logits)  # log(1 − σ(ℓ)) = −softplus(ℓ)
    zero_case = softplus(log_zero - pi_logits) - softplus(-pi_logits)
    logp = torch.where(x < 0.5, zero_case, log_one_minus_pi + logp_nb)
    return _reduce(logp, mask, reduction)


#: counts below this use a per-gene table of ``lgamma(x+θ) − lgamma(θ) − x·log θ`` (one
#: ``log1p`` per gene and count value instead of one ``lgamma``/``digamma`` per entry)
NB_TABLE_SIZE = 32


class _NBSoftmaxLogLik(torch.autograd.Function):
    """``Σ_all log NB(0) + Σ_nz [log NB(x) − log NB(0) + lgamma(x+1)]`` with analytic gradients.

    The NB part of the training loss for ``μ = softmax(r) · L`` and one θ per gene, with the
    gradients written out (ALGORITHMS.md §5), so the dense work is a few passes over the batch
    instead of autograd's chain of elementwise backward kernels:

    - ``∂/∂r``: ``w − p · Σ_g w`` with ``w = θ(x − μ)/(θ + μ)`` and ``p = μ / L``;
    - ``∂/∂θ``: ``Σ_cells [μ(x + θ)/(θ(θ + μ)) − log1p(μ/θ)] + Σ_nz ∂A/∂θ``, where
      ``A(x, θ) = lgamma(x+θ) − lgamma(θ) − x·log θ = Σ_{k<x} log1p(k/θ)`` (exact for integer
      x, cancellation-free for any θ) comes from a per-gene table for ``x < NB_TABLE_SIZE``
      weighted by a histogram of the batch's (gene, count) pairs, and from ``lgamma`` /
      ``digamma`` in float64 for the few larger (or non-integer) counts.

    The per-entry term is then ``x·log μ + A − x·log1p(μ/θ)``, the same value as
    :func:`nb_log_ratio` without its branch on θ.
    """

    @staticmethod
    def forward(ctx, logits, theta, mu, x, flat, cols, xv):
        n_genes, k_max = theta.shape[0], NB_TABLE_SIZE
        lz = torch.log1p(mu / theta)
        lz_col = lz.sum(0)
        lz_nz = lz.reshape(-1).index_select(0, flat)
        mu_nz = mu.reshape(-1).index_select(0, flat).clamp_min(torch.finfo(mu.dtype).tiny)
        xi = xv.to(torch.int64)
        small = (xi < k_max) & (xi == xv)  # non-integer values take the lgamma route too
        key = cols * k_max + torch.where(small, xi, 0)  # larger counts land in A(0) = 0
        hist = torch.bincount(key, minlength=n_genes * k_max).reshape(n_genes, k_max)
        hist = hist.to(mu.dtype)
        k = torch.arange(k_max - 1, dtype=theta.dtype, device=theta.device)
        terms = torch.log1p(k / theta.unsqueeze(1))  # G × (K−1); column 0 is log1p(0) = 0
        a_table = torch.nn.functional.pad(torch.cumsum(terms, dim=1), (1, 0))
        ll = (
            (xv * (torch.log(mu_nz) - lz_nz)).sum()
            + (hist * a_table).sum()
            - (lz_col * theta).sum()
        )
        tail = torch.nonzero(~small).squeeze(1)
        x_t = xv.index_select(0, tail).double()
        cols_t = cols.index_select(0, tail)
        if tail.numel():
            th_t = theta.index_select(0, cols_t).double()
            a_t = torch.lgamma(x_t + th_t) - torch.lgamma(th_t) - x_t * torch.log(th_t)
            ll = ll + a_t.sum().to(ll.dtype)
        ctx.save_for_backward(theta, mu, x, lz_col, hist, x_t, cols_t)
        return ll

    @staticmethod
    def backward(ctx, grad):
        theta, mu, x, lz_col, hist, x_t, cols_t = ctx.saved_tensors
        k_max = hist.shape[1]
        w = x - mu
        w.mul_(theta).div_(mu + theta)
        w_col = w.sum(0)
        x_col = x.sum(0)
        # ∂A/∂θ = Σ_{k<v} [1/(θ+k) − 1/θ] = −Σ_{k<v} k / (θ(θ+k))
        th = theta.unsqueeze(1)
        k = torch.arange(k_max - 1, dtype=theta.dtype, device=theta.device)
        da_table = torch.nn.functional.pad(torch.cumsum(-k / (th * (th + k)), dim=1), (1, 0))
        d_theta = (x_col - w_col) / theta - lz_col + (hist * da_table).sum(1)
        if x_t.numel():
            th_t = theta.index_select(0, cols_t).double()
            da_t = torch.digamma(x_t + th_t) - torch.digamma(th_t) - x_t / th_t
            d_theta = d_theta.index_add(0, cols_t, da_t.to(d_theta.dtype))
        rs = w.sum(1, keepdim=True) / mu.sum(1, keepdim=True)
        d_logits = w.sub_(mu * rs).mul_(grad)
        return d_logits, d_theta * grad, None, None, None, None, None


def nb_softmax_loglik(
    logits: torch.Tensor,
    mu: torch.Tensor,
    theta: torch.Tensor,
    x: torch.Tensor,
    flat: torch.Tensor,
    cols: torch.Tensor,
) -> torch.Tensor:
    """Return ``Σ log NB(x; μ, θ) + Σ lgamma(x+1)`` over a batch, differentiable in r and θ.

    For ``μ = softmax(logits) · L`` (cells × genes) and one θ per gene (1-D, length genes). The
    sum of ``lgamma(x+1)`` (a constant of the data) is left out; subtract it for the
    log-likelihood. ``flat`` and ``cols`` locate the non-zero counts (flat row-major positions
    and gene columns); ``mu`` carries the values of ``softmax(logits) · L`` (no gradient flows
    through it; the gradient reaches ``logits`` directly). Integer counts take the fast table
    route; other values are exact too, through ``lgamma``.
    """
    xv = x.reshape(-1).index_select(0, flat)
    return _NBSoftmaxLogLik.apply(logits, theta, mu.detach(), x, flat, cols, xv)
