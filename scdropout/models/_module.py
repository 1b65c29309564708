"""``DropoutAENet``: the count autoencoder as a plain :class:`torch.nn.Module` (tensors in and out).

It knows nothing of AnnData, numpy or devices (STYLE.md §4). Layout, after scVI (Lopez et al.
2018) and DCA (Eraslan et al. 2019):

- encoder: ``log1p(x / L · s)`` (``L`` the cell's library size, ``s`` a fixed scale) →
  [Linear → BatchNorm → ReLU → dropout] per hidden layer → Linear → latent ``z``;
- decoder: ``z`` → [Linear → BatchNorm → ReLU → dropout] per hidden layer (reversed) → heads:
  mean ``μ = softmax(·) · L`` (``mean_activation="softmax"``) or ``exp(·)`` clamped to
  [1e-5, 1e6] times ``L / s`` (``"exp"``), θ per gene (``exp`` of a free parameter, clamped to
  [1e-4, 1e4]), zero-inflation logits ℓ (ZINB only).

Dropout in both senses (ALGORITHMS.md §6): hidden dropout (``"bernoulli"``: inverted dropout;
``"gaussian"``: multiply by ξ ~ N(1, p/(1−p))), input dropout on the normalised input, and count
masking, which zeroes a fraction ``mask_rate`` of the observed non-zero counts in the *input*
during training while the loss still targets the original counts, so the model learns to
recover them.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn
from torch.nn.functional import softplus

from ._distributions import (
    log_nb,
    log_poisson,
    log_zinb,
    nb_log_ratio,
    nb_log_zero,
    nb_softmax_loglik,
)

Likelihood = Literal["nb", "zinb", "poisson"]
DropoutKind = Literal["bernoulli", "gaussian"]
MeanActivation = Literal["softmax", "exp"]

LIKELIHOODS = ("nb", "zinb", "poisson")
DROPOUT_KINDS = ("bernoulli", "gaussian")
MEAN_ACTIVATIONS = ("softmax", "exp")
THETA_RANGE = (1e-4, 1e4)
MU_RANGE = (1e-5, 1e6)
#: BatchNorm running-stat momentum. scVI uses 0.01, which on small data (2 minibatches per
#: epoch) leaves the running statistics near their initial values for hundreds of steps, so
#: eval-mode validation losses and embeddings used stale statistics and early stopping fired
#: after ~10 epochs (measured on deng: best epoch 8 at 0.01, 65 at 0.1).
BN_MOMENTUM = 0.1


NonZero = tuple[torch.Tensor, torch.Tensor]


def _nonzero(x: torch.Tensor, nz: NonZero | None) -> NonZero:
    if nz is not None:
        return nz
    rows, cols = torch.nonzero(x, as_tuple=True)
    return rows, cols


class GaussianDropout(nn.Module):
    """Multiplicative Gaussian noise ξ ~ N(1, p/(1−p)) in training mode, identity in eval mode.

    Parameters
    ----------
    p
        Dropout rate it matches in variance (0 ≤ p < 1).
    """

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the noise in training mode."""
        if not self.training or self.p == 0:
            return x
        sd = math.sqrt(self.p / (1.0 - self.p))
        return x * (1.0 + sd * torch.randn_like(x))

    def extra_repr(self) -> str:
        """Show the rate."""
        return f"p={self.p}"


DROPOUT_MODULES = (nn.Dropout, GaussianDropout)


def _dropout(kind: str, p: float) -> nn.Module:
    return nn.Dropout(p) if kind == "bernoulli" else GaussianDropout(p)


def _stack(sizes: Sequence[int], kind: str, p: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in itertools.pairwise(sizes):
        layers += [
            nn.Linear(n_in, n_out),
            nn.BatchNorm1d(n_out, momentum=BN_MOMENTUM, eps=1e-3),
            nn.ReLU(),
            _dropout(kind, p),
        ]
    return nn.Sequential(*layers)


@dataclass
class ForwardOutput:
    """Tensors from one forward pass.

    Attributes
    ----------
    z
        Latent representation, cells × n_latent.
    mu
        Means of the count distribution (library-size scaled), cells × genes.
    theta
        Inverse dispersions, 1 × genes (NB/ZINB) or None (Poisson).
    pi_logits
        Zero-inflation logits, cells × genes (ZINB) or None.
    masked
        Boolean cells × genes of the counts zeroed by count masking, or None when no masking ran.
    softmax_parts
        ``(logits, mu)`` when ``mu = softmax(logits) · L`` (``mean_activation="softmax"``): lets
        the NB loss take its gradient with respect to the logits directly. The loss uses it
        only while ``mu`` is still that tensor (``dataclasses.replace(out, mu=...)`` turns it
        off).
    """

    z: torch.Tensor
    mu: torch.Tensor
    theta: torch.Tensor | None
    pi_logits: torch.Tensor | None
    masked: torch.Tensor | None
    softmax_parts: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)


@dataclass
class LossOutput:
    """The loss of one minibatch and its parts (all scalars).

    Attributes
    ----------
    total
        What is minimised: mean over cells of the per-cell negative log-likelihood (sum over genes).
    nll_observed
        The same restricted to entries that were not masked (per cell).
    nll_masked
        Negative log-likelihood of the masked entries per masked entry (0 when nothing was masked):
        how well the model recovers counts it did not see.
    n_masked
        Number of masked entries in the batch.
    """

    total: torch.Tensor
    nll_observed: torch.Tensor
    nll_masked: torch.Tensor
    n_masked: torch.Tensor


def _loss_output(
    total: torch.Tensor,
    n_cells: int,
    masked: torch.Tensor | None,
    flat: torch.Tensor,
    masked_logp: Callable[[torch.Tensor], torch.Tensor],
) -> LossOutput:
    """Assemble a :class:`LossOutput` from the total NLL and, with count masking, a diagnostic.

    ``masked_logp(sel)`` gives the log-likelihood of the masked entries, ``sel`` indexing the
    non-zero entries (``flat``) that were masked; it runs without gradient.
    """
    if masked is None:
        zero = torch.zeros((), dtype=total.dtype, device=total.device)
        return LossOutput(total=total, nll_observed=total, nll_masked=zero, n_masked=zero)
    with torch.no_grad():  # a diagnostic on the masked entries: no gradient flows through it
        sel = torch.nonzero(masked.reshape(-1).index_select(0, flat)).squeeze(1)
        n_masked = torch.tensor(sel.numel(), dtype=total.dtype, device=total.device)
        masked_sum = -masked_logp(sel).sum()
    return LossOutput(
        total=total,
        nll_observed=total - masked_sum / n_cells,
        nll_masked=masked_sum / n_masked.clamp_min(1),
        n_masked=n_masked,
    )


class DropoutAENet(nn.Module):
    """Dropout-regularised count autoencoder (DCA, Eraslan et al. 2019; scVI, Lopez et al. 2018).

    Parameters
    ----------
    n_input
        Number of genes.
    n_latent
        Width of the bottleneck.
    hidden
        Widths of the encoder's hidden layers; the decoder mirrors them.
    likelihood
        ``"nb"``, ``"zinb"`` or ``"poisson"``.
    dropout_kind
        ``"bernoulli"`` (inverted dropout) or ``"gaussian"`` (multiplicative N(1, p/(1−p))).
    dropout_rate
        Hidden-layer dropout rate p.
    input_dropout
        Bernoulli dropout rate on the normalised input (DCA's ``input_dropout``).
    mask_rate
        Fraction of the observed non-zero counts zeroed in the input during training.
    library_scale
        The scale ``s`` of the input normalisation ``log1p(x / L · s)`` (e.g. the median library
        size of the training data).
    mean_activation
        ``"softmax"`` (μ = softmax · L, scVI) or ``"exp"`` (μ = exp · L / s, DCA with size factors).
    scale_input
        Standardise each gene of the normalised input with the per-gene ``input_mean`` and
        ``input_inv_sd`` buffers (set by :meth:`set_input_scaling`; DCA's input scaling),
        clipped to ±10 as in ``sc.pp.scale(max_value=10)``.
    """

    def __init__(
        self,
        n_input: int,
        *,
        n_latent: int = 10,
        hidden: Sequence[int] = (128,),
        likelihood: Likelihood = "nb",
        dropout_kind: DropoutKind = "bernoulli",
        dropout_rate: float = 0.1,
        input_dropout: float = 0.0,
        mask_rate: float = 0.0,
        library_scale: float = 1e4,
        mean_activation: MeanActivation = "softmax",
        scale_input: bool = False,
    ) -> None:
        super().__init__()
        self.n_input = int(n_input)
        self.likelihood = likelihood
        self.mask_rate = float(mask_rate)
        self.library_scale = float(library_scale)
        self.mean_activation = mean_activation
        self.scale_input = bool(scale_input)
        if self.scale_input:
            self.register_buffer("input_mean", torch.zeros(self.n_input))
            self.register_buffer("input_inv_sd", torch.ones(self.n_input))
        hidden = [int(h) for h in hidden]
        self.input_dropout = nn.Dropout(input_dropout)
        self.encoder = _stack([self.n_input, *hidden], dropout_kind, dropout_rate)
        self.to_latent = nn.Linear(hidden[-1] if hidden else self.n_input, n_latent)
        self.decoder = _stack([n_latent, *hidden[::-1]], dropout_kind, dropout_rate)
        last = hidden[0] if hidden else n_latent
        self.mean_head = nn.Linear(last, self.n_input)
        self.pi_head = nn.Linear(last, self.n_input) if likelihood == "zinb" else None
        self.log_theta = (
            nn.Parameter(torch.zeros(self.n_input)) if likelihood != "poisson" else None
        )

    def _normalise(self, x: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        h = torch.log1p(x * (self.library_scale / library.clamp_min(1.0)))
        if self.scale_input:
            h = ((h - self.input_mean) * self.input_inv_sd).clamp_(-10.0, 10.0)
        return h

    def set_input_scaling(self, mean: torch.Tensor, sd: torch.Tensor) -> None:
        """Set the per-gene mean and sd of the normalised input (genes with sd 0 get scale 1)."""
        if not self.scale_input:
            msg = "This network was built with `scale_input=False`."
            raise ValueError(msg)
        sd = torch.as_tensor(sd, dtype=self.input_mean.dtype)
        inv = torch.where(sd > 0, 1.0 / sd.clamp_min(1e-12), torch.ones_like(sd))
        self.input_mean.copy_(torch.as_tensor(mean, dtype=self.input_mean.dtype))
        self.input_inv_sd.copy_(inv)

    def draw_mask(self, x: torch.Tensor, nz: NonZero | None = None) -> torch.Tensor:
        """Pick a ``mask_rate`` fraction of the non-zero entries of ``x`` (global torch RNG).

        Random numbers are drawn for the non-zero entries only, in row-major order; ``nz``
        (row and column indices of the non-zeros, e.g. from the CSR batch) saves a dense scan.
        """
        rows, cols = _nonzero(x, nz)
        return self._mask_from_keep(x, rows * x.shape[1] + cols, self._draw_keep(rows))

    def _draw_keep(self, rows: torch.Tensor) -> torch.Tensor:
        """Draw which non-zero entries (in row-major order) are masked."""
        return torch.rand(rows.shape[0], device=rows.device) < self.mask_rate

    @staticmethod
    def _mask_from_keep(x: torch.Tensor, flat: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        masked = torch.zeros_like(x, dtype=torch.bool)
        masked.view(-1).index_put_((flat,), keep)
        return masked

    def _normalised_input(
        self,
        x: torch.Tensor,
        library: torch.Tensor,
        rows: torch.Tensor,
        cols: torch.Tensor,
        keep: torch.Tensor | None,
    ) -> torch.Tensor:
        """:meth:`_normalise` of ``x`` with the ``keep`` entries zeroed, from the non-zeros.

        The same values as the dense computation: zeros map to ``0`` (or, with input scaling,
        to ``clamp(−mean · inv_sd)`` per gene), so only the non-zero entries are transformed.
        """
        xv = x.reshape(-1).index_select(0, rows * x.shape[1] + cols)
        if keep is not None:
            xv = xv.masked_fill(keep, 0.0)
        factor = (self.library_scale / library.clamp_min(1.0)).reshape(-1)
        v = torch.log1p(xv * factor.index_select(0, rows))
        if self.scale_input:
            mean, inv_sd = self.input_mean, self.input_inv_sd
            v = ((v - mean.index_select(0, cols)) * inv_sd.index_select(0, cols)).clamp_(-10, 10)
            h = ((0.0 - mean) * inv_sd).clamp_(-10.0, 10.0).expand(x.shape[0], -1).contiguous()
        else:
            h = torch.zeros_like(x)
        h.view(-1).index_put_((rows * x.shape[1] + cols,), v)
        return h

    def encode(self, x: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        """Map counts (cells × genes) and library sizes (cells × 1) to the latent space."""
        h = self.input_dropout(self._normalise(x, library))
        return self.to_latent(self.encoder(h))

    def decode(
        self, z: torch.Tensor, library: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Return ``(μ, θ, π logits)`` for latent ``z`` and library sizes ``library``."""
        mu, theta, pi_logits, _ = self._decode(z, library)
        return mu, theta, pi_logits

    def _decode(
        self, z: torch.Tensor, library: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Return :meth:`decode`'s outputs and the mean logits (softmax activation only)."""
        h = self.decoder(z)
        raw = self.mean_head(h)
        logits = None
        if self.mean_activation == "softmax":
            mu = torch.softmax(raw, dim=-1) * library
            logits = raw
        else:
            mu = torch.exp(raw).clamp(*MU_RANGE) * (library / self.library_scale)
        theta = None
        if self.log_theta is not None:
            theta = torch.exp(self.log_theta).clamp(*THETA_RANGE).unsqueeze(0)
        pi_logits = self.pi_head(h) if self.pi_head is not None else None
        return mu, theta, pi_logits, logits

    def forward(
        self,
        x: torch.Tensor,
        library: torch.Tensor,
        *,
        mask: bool | None = None,
        nz: NonZero | None = None,
    ) -> ForwardOutput:
        """Encode and decode a batch.

        Parameters
        ----------
        x
            Counts, cells × genes (float).
        library
            Library sizes, cells × 1, of the *unmasked* counts.
        mask
            Apply count masking; None means "in training mode and ``mask_rate > 0``".
        nz
            Row and column indices of the non-zero entries of ``x`` in row-major order, if known.

        Returns
        -------
        :class:`ForwardOutput`.
        """
        if mask is None:
            mask = self.training and self.mask_rate > 0
        masked = keep = None
        rows, cols = _nonzero(x, nz)
        if mask:
            keep = self._draw_keep(rows)
            masked = self._mask_from_keep(x, rows * x.shape[1] + cols, keep)
        h = self.input_dropout(self._normalised_input(x, library, rows, cols, keep))
        z = self.to_latent(self.encoder(h))
        mu, theta, pi_logits, logits = self._decode(z, library)
        return ForwardOutput(
            z=z,
            mu=mu,
            theta=theta,
            pi_logits=pi_logits,
            masked=masked,
            softmax_parts=None if logits is None else (logits, mu),
        )

    def log_likelihood(self, x: torch.Tensor, out: ForwardOutput) -> torch.Tensor:
        """Elementwise log-likelihood of the counts ``x`` under ``out``."""
        if self.likelihood == "poisson":
            return log_poisson(x, out.mu)
        if self.likelihood == "nb":
            return log_nb(x, out.mu, out.theta)
        return log_zinb(x, out.mu, out.theta, out.pi_logits)

    def loss(
        self,
        x: torch.Tensor,
        out: ForwardOutput,
        nz: NonZero | None = None,
        *,
        log_factorial: torch.Tensor | None = None,
    ) -> LossOutput:
        """Negative log-likelihood of the original counts ``x`` (masked entries included).

        Equal to ``-self.log_likelihood(x, out).sum() / n_cells`` but faster on sparse counts:
        the terms that vanish at x = 0 (lgamma, digamma in the backward pass, x·log μ) are
        evaluated on the non-zero entries only (gathered through flat indices; ``lgamma(θ)``
        once per gene); the dense part is ``log NB(0)`` (ZINB: the zero branch) over all
        entries. ``nz`` as in :meth:`forward`; ``log_factorial`` (per cell, ``Σ_g lgamma(x+1)``,
        a constant of the data) saves its evaluation per step.
        """
        rows, cols = _nonzero(x, nz)
        n_genes = x.shape[1]
        flat = rows * n_genes + cols
        xv = x.reshape(-1).index_select(0, flat)
        mu_nz = out.mu.reshape(-1).index_select(0, flat)
        lf_sum = torch.lgamma(xv + 1.0).sum() if log_factorial is None else log_factorial.sum()
        ell_nz = None
        parts = out.softmax_parts
        if (
            self.likelihood == "nb"
            and parts is not None
            and parts[1] is out.mu
            and out.theta is not None
            and out.theta.shape[0] == 1
        ):
            return self._nb_softmax_loss(x, out, parts[0], cols, flat, xv, lf_sum)
        if self.likelihood == "poisson":
            dense = -out.mu.sum()
            ratio = torch.xlogy(xv, mu_nz.clamp_min(torch.finfo(mu_nz.dtype).tiny))
            nz_part = ratio  # log p(x) + lgamma(x+1) − (−μ)
            log_zero_nz = -mu_nz
        else:
            theta = out.theta
            if theta.shape[0] == 1:  # one θ per gene: gather per entry, lgamma(θ) per gene
                th_g = theta.reshape(-1)
                th_nz = th_g.index_select(0, cols)
                lg_th = torch.lgamma(th_g).index_select(0, cols)
            else:
                th_nz = theta.expand_as(x).reshape(-1).index_select(0, flat)
                lg_th = None
            log_zero = nb_log_zero(out.mu, theta)
            log_zero_nz = log_zero.reshape(-1).index_select(0, flat)
            ratio = nb_log_ratio(xv, mu_nz, th_nz, lg_th)
            if self.likelihood == "nb":
                dense = log_zero.sum()
                nz_part = ratio
            else:
                ell = out.pi_logits
                zero_case = softplus(log_zero - ell) - softplus(-ell)
                dense = zero_case.sum()
                ell_nz = ell.reshape(-1).index_select(0, flat)
                zero_nz = zero_case.reshape(-1).index_select(0, flat)
                # log(1−π) + log NB(x) + lgamma(x+1) − zero branch counted in `dense`
                nz_part = -softplus(ell_nz) + log_zero_nz + ratio - zero_nz
        # nz_part + (−lgamma(x+1)) is, per non-zero entry, log p(x) minus what `dense` counted
        n_cells = max(x.shape[0], 1)
        total = -(dense + nz_part.sum() - lf_sum) / n_cells

        def masked_logp(sel: torch.Tensor) -> torch.Tensor:
            logp = (
                log_zero_nz.index_select(0, sel)
                + ratio.index_select(0, sel)
                - torch.lgamma(xv.index_select(0, sel) + 1.0)
            )
            return logp if ell_nz is None else logp - softplus(ell_nz.index_select(0, sel))

        return _loss_output(total, n_cells, out.masked, flat, masked_logp)

    def _nb_softmax_loss(
        self,
        x: torch.Tensor,
        out: ForwardOutput,
        logits: torch.Tensor,
        cols: torch.Tensor,
        flat: torch.Tensor,
        xv: torch.Tensor,
        lf_sum: torch.Tensor,
    ) -> LossOutput:
        """:meth:`loss` for NB with a softmax mean and one θ per gene (analytic gradients)."""
        theta = out.theta.reshape(-1)
        n_cells = max(x.shape[0], 1)
        ll = nb_softmax_loglik(logits, out.mu, theta, x, flat, cols)
        total = -(ll - lf_sum) / n_cells

        def masked_logp(sel: torch.Tensor) -> torch.Tensor:
            x_m = xv.index_select(0, sel)
            mu_m = out.mu.reshape(-1).index_select(0, flat.index_select(0, sel))
            th_m = theta.index_select(0, cols.index_select(0, sel))
            return (
                nb_log_zero(mu_m, th_m) + nb_log_ratio(x_m, mu_m, th_m) - torch.lgamma(x_m + 1.0)
            )

        return _loss_output(total, n_cells, out.masked, flat, masked_logp)
