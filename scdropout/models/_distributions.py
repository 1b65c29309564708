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
