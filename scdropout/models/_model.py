"""``DropoutAutoencoder``: the user-facing model (registration, training, inference, save/load)."""

from __future__ import annotations

import dataclasses
import json
import numbers
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from scdropout._logging import logger
from scdropout._settings import settings
from scdropout._utils import check_adata, check_choice, check_memory, check_positive_int, warn

from ._data import CountDataset, GeneSpec, Registry, align, batch_loader, input_moments, register
from ._impute import (
    ESTIMATES,
    Shrinkage,
    fit_shrinkage,
    neighbor_average,
    neighbor_shares,
    self_neighbors,
    shrink_mean,
)
from ._module import DROPOUT_KINDS, DROPOUT_MODULES, LIKELIHOODS, DropoutAENet
from ._seed import seed_from, seeded
from ._train import (
    History,
    cpu_threads,
    default_max_epochs,
    n_validation,
    split_indices,
    train_loop,
)

MODEL_FILE = "model.pt"
CONFIG_FILE = "config.json"
INFERENCE_BATCH = 1024


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("scdropout")
    except PackageNotFoundError:  # running from a source tree that was never installed
        return "unknown"


def resolve_device(device: str | torch.device) -> torch.device:
    """Turn ``device`` into a :class:`torch.device`.

    ``"auto"`` means ``settings.device`` when that is not ``"auto"``, else CUDA when available,
    else CPU. Apple's MPS is used only when asked for by name, never silently (scvi-tools'
    experience: MPS lacks ops and changes results).
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, str):
        name = settings.device if device == "auto" else device
        if name == "auto":
            name = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            dev = torch.device(name)
        except RuntimeError as err:
            msg = f"`device={device!r}` is not a torch device; use 'auto', 'cpu', 'cuda' or 'cuda:1'."
            raise ValueError(msg) from err
    else:
        msg = f"`device` must be a string or a torch.device, got {type(device).__name__}."
        raise TypeError(msg)
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = (
            f"`device={device!r}` asks for CUDA, but CUDA is not available here; use 'auto' or "
            "'cpu'."
        )
        raise ValueError(msg)
    return dev


def check_rate(value: Any, *, name: str) -> float:
    """Return ``value`` as float after checking 0 ≤ value < 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"`{name}` must be a number in [0, 1), got {value!r}."
        raise TypeError(msg)
    if not 0.0 <= float(value) < 1.0:
        msg = f"`{name}` must be in [0, 1), got {value!r}."
        raise ValueError(msg)
    return float(value)


def check_hidden(hidden: Any) -> tuple[int, ...]:
    """Return ``hidden`` as a tuple of positive ints (one or more layers)."""
    if isinstance(hidden, int | np.integer) and not isinstance(hidden, bool):
        hidden = (hidden,)
    if not isinstance(hidden, Sequence) or isinstance(hidden, str) or len(hidden) == 0:
        msg = (
            f"`hidden` must be a non-empty sequence of layer widths, e.g. (128,), got {hidden!r}."
        )
        raise ValueError(msg)
    for h in hidden:
        check_positive_int(h, name="hidden")
    return tuple(int(h) for h in hidden)


class DropoutAutoencoder:
    """Dropout-regularised count autoencoder for embeddings, imputation and MC-dropout uncertainty.

    A deterministic autoencoder on raw counts, in the family of DCA (Eraslan et al. 2019) with
    scVI's layout and optimiser (Lopez et al. 2018): the encoder sees ``log1p`` of
    library-normalised counts, the decoder gives the mean ``μ = softmax(·) · L`` (``L`` the
    cell's library size), a per-gene inverse dispersion θ and, for ZINB, zero-inflation logits.
    It is regularised by dropout in both senses: hidden-layer dropout (Bernoulli or Gaussian),
    input dropout, and *count masking*, which hides a fraction of the observed non-zero counts
    from the encoder during training while the loss still asks for them. Keeping dropout active
    at inference (``mc_samples > 0``) gives Monte-Carlo estimates of the uncertainty of the
    embedding and of the imputed values (Gal & Ghahramani 2016).

    Parameters
    ----------
    adata
        Cells × genes AnnData with raw integer counts (dense, CSR or CSC; never densified).
    layer
        Layer with the counts; None uses ``X``.
    genes
        Genes to model: None (all), the name of a boolean ``adata.var`` column (e.g. the
        selection from ``pp.dropout_genes``), a boolean mask or a list of gene names.
    n_latent
        Width of the bottleneck (the embedding). 32 by default (scVI and ALGORITHMS.md §5
        use 10): over the 7 labelled count sets, mean ARI at the true k with 32 vs 10 was Ward 0.618 vs 0.595,
        Leiden 0.632 vs 0.595, KMeans 0.573 vs 0.574, at the same cost (benchmarks/RESULTS.md,
        bench_autoencoder_defaults).
    hidden
        Widths of the encoder's hidden layers; the decoder mirrors them.
    likelihood
        ``"nb"`` (negative binomial, per-gene θ; the default: on the planted-group simulations
        and the labelled datasets it clustered at least as well as ZINB and trains faster),
        ``"zinb"`` (NB plus a zero-inflation probability per entry) or ``"poisson"``.
    dropout_kind
        Hidden-layer dropout: ``"bernoulli"`` (inverted dropout, Srivastava et al. 2014) or
        ``"gaussian"`` (multiplicative noise ξ ~ N(1, p/(1−p)), which keeps the mean).
    dropout_rate
        Hidden-layer dropout rate p, in [0, 1).
    input_dropout
        Bernoulli dropout rate on the normalised input (DCA's ``input_dropout``), in [0, 1).
    mask_rate
        Fraction of the observed non-zero counts zeroed in the encoder input during training, in
        [0, 1); the loss still targets the original counts, so the model learns to recover
        counts lost to dropout. 0 disables count masking.
    scale_input
        Standardise each gene of the encoder input (``log1p`` of library-normalised counts) to
        mean 0 and sd 1 over the training cells, clipped to ±10 (DCA's input scaling; the same
        as ``sc.pp.scale(max_value=10)`` before PCA). The moments are stored with the weights,
        so new cells are scaled like the training cells. The default (True) was chosen by the
        clustering benchmark: over the 7 labelled count datasets mean Ward ARI 0.607 vs 0.588
        without it, Leiden ARI at the true k 0.598 (PCA 0.548), KMeans 0.580 (PCA 0.570);
        it lowered Ward ARI on worm_neuron (benchmarks/RESULTS.md). Models saved before this
        option existed load with False.
    random_state
        Seed for weight initialisation, the validation split, minibatch order, dropout and count
        masks and MC-dropout passes. All draws happen inside ``torch.random.fork_rng``, so the
        caller's global torch RNG is untouched. The same seed gives the same result on CPU; CUDA
        kernels may differ in the last bits between runs.

    Raises
    ------
    TypeError
        ``adata`` is not an in-memory AnnData, or the matrix type is not supported.
    KeyError
        ``layer`` or a ``genes`` column is missing.
    ValueError
        Counts are not finite non-negative integers, a cell has no counts in the modelled genes,
        ``genes`` selects nothing, or an option is out of range.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=200, n_genes=100)
    >>> model = sd.models.DropoutAutoencoder(adata, n_latent=5)
    >>> history = model.train(max_epochs=2, progress_bar=False)
    >>> model.get_latent().shape
    (200, 5)
    """

    def __init__(
        self,
        adata: Any,
        *,
        layer: str | None = None,
        genes: GeneSpec = None,
        n_latent: int = 32,
        hidden: Sequence[int] = (128,),
        likelihood: Literal["nb", "zinb", "poisson"] = "nb",
        dropout_kind: Literal["bernoulli", "gaussian"] = "bernoulli",
        dropout_rate: float = 0.1,
        input_dropout: float = 0.0,
        mask_rate: float = 0.1,
        scale_input: bool = True,
        random_state: int | np.random.Generator | None = 0,
    ) -> None:
        check_adata(adata)
        check_positive_int(n_latent, name="n_latent")
        hidden = check_hidden(hidden)
        check_choice(likelihood, name="likelihood", choices=LIKELIHOODS)
        check_choice(dropout_kind, name="dropout_kind", choices=DROPOUT_KINDS)
        if not isinstance(scale_input, bool | np.bool_):
            msg = f"`scale_input` must be True or False, got {scale_input!r}."
            raise TypeError(msg)
        rates = {
            "dropout_rate": check_rate(dropout_rate, name="dropout_rate"),
            "input_dropout": check_rate(input_dropout, name="input_dropout"),
            "mask_rate": check_rate(mask_rate, name="mask_rate"),
        }
        seed = seed_from(random_state)
        registry, counts, library = register(adata, layer, genes)
        init_kwargs = {
            "layer": layer,
            "n_latent": int(n_latent),
            "hidden": list(hidden),
            "likelihood": likelihood,
            "dropout_kind": dropout_kind,
            **rates,
            "scale_input": bool(scale_input),
            "random_state": seed,
        }
        self._setup(registry, init_kwargs, seed)
        self._counts, self._library = counts, library
        if scale_input:
            mean, sd = input_moments(counts, library, registry.library_median)
            self.module.set_input_scaling(torch.from_numpy(mean), torch.from_numpy(sd))

    # -- construction shared by __init__ and load ------------------------------------------
    def _setup(self, registry: Registry, init_kwargs: dict[str, Any], seed: int) -> None:
        self.registry = registry
        self.init_kwargs = init_kwargs
        self.seed = seed
        self.history: History | None = None
        self.shrinkage: Shrinkage | None = None
        self.device = torch.device("cpu")
        self._counts: Any = None
        self._library: np.ndarray | None = None
        kw = init_kwargs
        with seeded(seed):
            self.module = DropoutAENet(
                registry.n_vars,
                n_latent=kw["n_latent"],
                hidden=kw["hidden"],
                likelihood=kw["likelihood"],
                dropout_kind=kw["dropout_kind"],
                dropout_rate=kw["dropout_rate"],
                input_dropout=kw["input_dropout"],
                mask_rate=kw["mask_rate"],
                library_scale=registry.library_median,
                scale_input=bool(kw.get("scale_input", False)),
            )
        self.module.eval()

    @property
    def shrinkage_(self) -> np.ndarray | None:
        """Per-gene gate ``w_g`` (0 or 1) of :meth:`get_imputed`'s default (None if unfitted).

        The gate of the point estimate chosen after training (``self.shrinkage.estimate``;
        the other one's is ``self.shrinkage.weights_for(name)``), fitted by :meth:`train` on
        held-out entries; 1 keeps the stacked prediction, 0 replaces it by a constant share of
        the cell's library (see :meth:`get_imputed`). The baselines ``b_g``, held-out gains and the number of latent
        neighbours are in ``self.shrinkage``. Models saved before stacking existed may hold
        weights in [0, 1] that apply to the model's mean alone.
        """
        if self.shrinkage is None:
            return None
        return self.shrinkage.weights_for(self.shrinkage.estimate).copy()

    @property
    def is_trained(self) -> bool:
        """Whether :meth:`train` has run (or trained weights were loaded)."""
        return self.history is not None

    def __repr__(self) -> str:
        kw = self.init_kwargs
        state = f"trained {self.history.n_epochs} epochs" if self.history else "untrained"
        return (
            f"DropoutAutoencoder({self.registry.n_vars} genes, n_latent={kw['n_latent']}, "
            f"hidden={tuple(kw['hidden'])}, likelihood={kw['likelihood']!r}, "
            f"dropout={kw['dropout_kind']}:{kw['dropout_rate']}, mask_rate={kw['mask_rate']}; "
            f"{state})"
        )

    # -- training ------------------------------------------------------------------------
    def train(
        self,
        *,
        max_epochs: int | None = None,
        batch_size: int = 128,
        lr: float = 1e-3,
        device: str | torch.device = "auto",
        early_stopping: bool = True,
        progress_bar: bool = True,
        validation_fraction: float = 0.1,
        patience: int = 20,
        weight_decay: float = 1e-6,
    ) -> History:
        """Fit the model with Adam on minibatches sliced from the sparse counts.

        Training again continues from the current weights with a fresh optimiser and replaces
        :attr:`history`. Afterwards the per-gene shrinkage weights of :meth:`get_imputed`
        (:attr:`shrinkage_`) are fitted on held-out entries of the validation cells. On CPU it
        uses at most ``settings.n_jobs`` torch threads (never more than
        ``torch.get_num_threads()``; restored afterwards); on a machine loaded by other jobs
        ``settings.n_jobs = 1`` is faster, as idle OpenMP threads spin.

        Parameters
        ----------
        max_epochs
            Passes over the training cells; None uses scVI's rule
            ``min(round(20000 / n_cells · 400), 400)``, capped at 4,000 optimizer steps
            (59 epochs at 8,617 cells, 6 at 100,000; see ``models._train.default_max_epochs``).
            Early stopping usually ends runs sooner.
        batch_size
            Cells per minibatch.
        lr
            Adam learning rate.
        device
            ``"auto"`` (CUDA if available, else CPU; never MPS silently), ``"cpu"``, ``"cuda"``,
            ``"cuda:1"`` or a :class:`torch.device`.
        early_stopping
            Stop after ``patience`` epochs without improvement of the validation loss (the
            training loss without a validation split); the best epoch's weights are kept.
        progress_bar
            Show an epoch bar with the losses (also off when ``settings.progress_bar`` is False).
        validation_fraction
            Fraction of cells held out for validation (none below 20 cells), in [0, 1).
        patience
            Epochs without improvement before early stopping.
        weight_decay
            Adam's L2 weight decay.

        Returns
        -------
        The :class:`History` of per-epoch losses (also kept as :attr:`history`).

        Raises
        ------
        RuntimeError
            The loss became NaN or infinite (the message names the epoch and the knob to change,
            e.g. a lower ``lr`` or ``likelihood='nb'``).
        ValueError
            An option is out of range, or the model was loaded without data to train on.
        """
        check_positive_int(max_epochs, name="max_epochs", allow_none=True)
        check_positive_int(batch_size, name="batch_size", minimum=2)
        check_positive_int(patience, name="patience")
        for name, value in [("lr", lr), ("weight_decay", weight_decay)]:
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                msg = f"`{name}` must be a number, got {value!r}."
                raise TypeError(msg)
        if not (np.isfinite(lr) and lr > 0):
            msg = f"`lr` must be a positive finite number, got {lr!r}."
            raise ValueError(msg)
        if not (np.isfinite(weight_decay) and weight_decay >= 0):
            msg = f"`weight_decay` must be a non-negative number, got {weight_decay!r}."
            raise ValueError(msg)
        vf = check_rate(validation_fraction, name="validation_fraction")
        dev = resolve_device(device)
        if self._counts is None:
            msg = "This model has no data to train on; pass `adata` to `DropoutAutoencoder.load`."
            raise ValueError(msg)
        n = self._counts.shape[0]
        n_train = n - n_validation(n, vf)
        if n_train < 2:
            msg = (
                f"Training needs at least 2 training cells (batch normalisation), but the data "
                f"have {n} cell(s)"
                + (
                    f" and `validation_fraction={validation_fraction!r}` holds out "
                    f"{n - n_train}; lower `validation_fraction`."
                    if n_train < n
                    else "; pass more cells."
                )
            )
            raise ValueError(msg)
        epochs = default_max_epochs(n, batch_size) if max_epochs is None else int(max_epochs)
        rng = np.random.default_rng(self.seed)
        train_idx, val_idx = split_indices(n, vf, rng)
        generator = torch.Generator()
        generator.manual_seed(self.seed)
        dataset = CountDataset(self._counts, self._library)
        logger.info(
            "training %r on %d cells (%d validation), up to %d epochs on %s",
            self,
            len(train_idx),
            len(val_idx),
            epochs,
            dev,
        )
        with seeded(self.seed + 1, dev), cpu_threads(dev):
            hist = train_loop(
                self.module,
                dataset,
                train_idx=train_idx,
                val_idx=val_idx,
                max_epochs=epochs,
                batch_size=batch_size,
                lr=float(lr),
                weight_decay=float(weight_decay),
                early_stopping=early_stopping,
                patience=patience,
                device=dev,
                generator=generator,
                progress_bar=progress_bar and settings.progress_bar,
            )
        with seeded(self.seed + 3, dev), cpu_threads(dev):
            self.shrinkage = fit_shrinkage(
                self.module,
                self._counts,
                self._library,
                train_idx=train_idx,
                val_idx=val_idx,
                device=dev,
                rng=np.random.default_rng(self.seed + 3),
                dataset=dataset,
            )
        self.module.eval()
        self.device = dev
        self.history = hist
        sh = self.shrinkage
        logger.info(
            "imputation gates: the stacked prediction keeps %d of %d genes (fitted on %d "
            "held-out cells, mean gain %.3g), the geometric estimate %d (fitted on %d cells); "
            "point estimate %s (held-out median absolute error arithmetic %.4g, geometric "
            "%.4g at scale %g)",
            int((sh.weights > 0).sum()),
            self.registry.n_vars,
            sh.n_cells,
            float(np.mean(sh.gain)),
            int((sh.weights_for("geometric") > 0).sum()),
            sh.geo_n_cells,
            sh.estimate,
            sh.selection["arithmetic"][0],
            sh.selection["geometric"][0],
            sh.geo_scale,
        )
        logger.info(
            "trained %d epochs (best %d), final train loss %.4g",
            hist.n_epochs,
            hist.best_epoch,
            hist.train_loss[-1],
        )
        return hist

    # -- inference -----------------------------------------------------------------------
    def _data_for(self, adata: Any) -> tuple[Any, np.ndarray]:
        if adata is None:
            if self._counts is None:
                msg = "This model was loaded without data; pass `adata`."
                raise ValueError(msg)
            return self._counts, self._library
        check_adata(adata)
        return align(adata, self.registry)

    def _mc_mode(self) -> None:
        """Eval mode everywhere except the dropout layers (MC dropout, Gal & Ghahramani 2016)."""
        self.module.eval()
        for m in self.module.modules():
            if isinstance(m, DROPOUT_MODULES):
                m.train()

    def _deterministic(
        self, dataset: CountDataset, *, with_mean: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """One eval-mode pass: the latent and, ``with_mean``, the model's means (float32)."""
        n = len(dataset)
        z = np.empty((n, self.module.to_latent.out_features), dtype=np.float32)
        mu = np.empty((n, self.registry.n_vars), dtype=np.float32) if with_mean else None
        dev = self.device
        self.module.to(dev).eval()
        loader = batch_loader(dataset, np.arange(n), batch_size=INFERENCE_BATCH, shuffle=False)
        start = 0
        with cpu_threads(dev), torch.inference_mode():
            for cpu_batch in loader:
                batch = cpu_batch.to(dev)
                out = self.module(batch.x, batch.library, mask=False, nz=batch.nz)
                stop = start + batch.x.shape[0]
                z[start:stop] = out.z.float().cpu().numpy()
                if mu is not None:
                    mu[start:stop] = out.mu.float().cpu().numpy()
                start = stop
        return z, mu

    def _run(
        self,
        adata: Any,
        mc_samples: int,
        what: Literal["latent", "mean"],
        *,
        predictive: bool = False,
        shrink: bool = False,
        estimate: str = "auto",
        neighbors: np.ndarray | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        check_positive_int(mc_samples, name="mc_samples", minimum=0)
        for name, value in [("predictive", predictive), ("shrink", shrink)]:
            if not isinstance(value, bool | np.bool_):
                msg = f"`{name}` must be True or False, got {value!r}."
                raise TypeError(msg)
        check_choice(estimate, name="estimate", choices=("auto", *ESTIMATES))
        counts, library = self._data_for(adata)
        shrink_w = shrink_p = None
        geometric = False
        if shrink and what == "mean" and self.shrinkage is not None:
            chosen = self.shrinkage.estimate if estimate == "auto" else estimate
            geometric = chosen == "geometric"
            if geometric and (
                self.shrinkage.geo_baseline is None or not self.shrinkage.n_neighbors
            ):
                msg = (
                    "This model was saved before the geometric estimate existed; train it "
                    "again, or pass `estimate='arithmetic'` (or 'auto')."
                )
                raise ValueError(msg)
        if shrink and what == "mean":
            if self.shrinkage is None:
                if self.is_trained:
                    warn(
                        "This model has no shrinkage weights (saved by an older scdropout); "
                        "returning unshrunk means. Train it again to fit them, or pass "
                        "`shrink=False` to silence this warning."
                    )
            else:
                shrink_w = torch.as_tensor(
                    self.shrinkage.weights_for("geometric" if geometric else "arithmetic"),
                    dtype=torch.float32,
                )
                base = self.shrinkage.geo_baseline if geometric else self.shrinkage.baseline
                shrink_p = torch.as_tensor(base, dtype=torch.float32)
        n = counts.shape[0]
        width = self.module.to_latent.out_features if what == "latent" else self.registry.n_vars
        n_out = 2 if mc_samples or predictive else 1
        stacked = shrink_w is not None and self.shrinkage.n_neighbors > 0  # type: ignore[union-attr]
        if what == "mean":
            check_memory(
                4.0 * n * width * (n_out + 2 * stacked),
                what=f"the dense {n:,} x {width:,} float32 imputed matrix"
                + (" and its sd" if mc_samples else ""),
                ways_out="Model fewer genes (`genes=`), or impute a subset of cells.",
            )
        dataset = CountDataset(counts, library)
        smooth = None
        if stacked:  # neighbour averages (M + S)/L or G/L from the deterministic latent
            # the geometric estimate averages counts only; μ stands in for a single cell
            z, mu0 = self._deterministic(dataset, with_mean=not geometric or n < 2)
            with cpu_threads(self.device):
                smooth = neighbor_shares(
                    z,
                    mu0,
                    counts,
                    library,
                    self.shrinkage.n_neighbors,  # type: ignore[union-attr]
                    geometric=geometric,
                    geo_scale=self.shrinkage.geo_scale,  # type: ignore[union-attr]
                    neighbors=neighbors,
                    device=self.device,
                )
            del mu0
        mean = np.empty((n, width), dtype=np.float32)
        sd = np.empty((n, width), dtype=np.float32) if n_out == 2 else None
        loader = batch_loader(dataset, np.arange(n), batch_size=INFERENCE_BATCH, shuffle=False)
        dev = self.device
        self.module.to(dev)
        if shrink_w is not None:
            shrink_w, shrink_p = shrink_w.to(dev), shrink_p.to(dev)

        def forward(x: torch.Tensor, lib: torch.Tensor, nz: Any, start: int) -> Any:
            out = self.module(x, lib, mask=False, nz=nz)
            if shrink_w is None:
                return out
            sm = None
            if smooth is not None:
                sm = torch.from_numpy(smooth[start : start + x.shape[0]]).to(out.mu.device)
            mu = shrink_mean(out.mu, lib, shrink_w, shrink_p, sm, geometric=geometric)
            return dataclasses.replace(out, mu=mu)

        start = 0
        try:
            with seeded(self.seed + 2, dev), cpu_threads(dev), torch.inference_mode():
                if mc_samples:
                    self._mc_mode()
                else:
                    self.module.eval()
                for cpu_batch in loader:
                    batch = cpu_batch.to(dev)
                    x, lib = batch.x, batch.library
                    stop = start + x.shape[0]
                    if not mc_samples:
                        out = forward(x, lib, batch.nz, start)
                        val = out.z if what == "latent" else out.mu
                        mean[start:stop] = val.float().cpu().numpy()
                        if predictive:
                            var = self._count_variance(out)
                            sd[start:stop] = var.sqrt().float().cpu().numpy()  # type: ignore[index]
                    else:
                        # Welford's running mean and sum of squares over the passes
                        m = torch.zeros(x.shape[0], width, dtype=torch.float64, device=dev)
                        s = torch.zeros_like(m)
                        aleatoric = torch.zeros_like(m) if predictive else None
                        for t in range(1, mc_samples + 1):
                            out = forward(x, lib, batch.nz, start)
                            val = (out.z if what == "latent" else out.mu).double()
                            delta = val - m
                            m += delta / t
                            s += delta * (val - m)
                            if aleatoric is not None:
                                aleatoric += (self._count_variance(out).double() - aleatoric) / t
                        mean[start:stop] = m.float().cpu().numpy()
                        var = s / max(mc_samples - 1, 1)
                        if aleatoric is not None:  # law of total variance
                            var = var + aleatoric
                        sd[start:stop] = var.sqrt().float().cpu().numpy()  # type: ignore[index]
                    start = stop
        finally:
            self.module.eval()
        return (mean, sd) if sd is not None else mean

    def _count_variance(self, out: Any) -> torch.Tensor:
        """Return the sampling variance of a count given μ: ``μ + μ²/θ`` (NB; ZINB's NB part), or μ."""
        if out.theta is None:
            return out.mu
        return out.mu + out.mu * out.mu / out.theta

    def get_latent(
        self, adata: Any = None, *, mc_samples: int = 0, smooth: int = 0
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Return the embedding (cells × ``n_latent``, float32), computed batch by batch.

        Parameters
        ----------
        adata
            Cells to embed; None uses the training data. Its genes are matched by name to those
            the model was trained on (any order; extra genes are ignored).
        mc_samples
            0 for the deterministic embedding (dropout off); T > 0 runs T passes with dropout
            on and returns their mean and per-entry standard deviation.
        smooth
            0 returns the encoder's output. k > 0 averages each cell's position with those of
            its k nearest neighbours in the latent space, searched among the cells embedded
            (weights ``1 / (k + 1)``): a denoised embedding for clustering, which depends on
            the other cells passed (``tl.autoencoder`` uses k = 15; benchmarks/RESULTS.md).
            Deterministic embedding only (``mc_samples=0``). The exact search is O(n²) and
            runs on the model's device (57 s at 100,000 cells on 2 CPU threads).

        Returns
        -------
        The embedding, or ``(mean, sd)`` when ``mc_samples > 0``.

        Raises
        ------
        ValueError
            ``adata`` lacks some of the model's genes (the message says how many), or its counts
            are invalid; ``smooth`` is negative or combined with ``mc_samples``.
        """
        check_positive_int(smooth, name="smooth", minimum=0)
        check_positive_int(mc_samples, name="mc_samples", minimum=0)
        if smooth and mc_samples:
            msg = (
                f"`smooth={smooth!r}` averages the deterministic embedding; pass "
                "`mc_samples=0` with it (or `smooth=0` for MC-dropout passes)."
            )
            raise ValueError(msg)
        z = self._run(adata, mc_samples, "latent")
        if smooth:
            with cpu_threads(self.device):
                z = neighbor_average(z, smooth, device=self.device)  # type: ignore[arg-type]
        return z

    def get_imputed(
        self,
        adata: Any = None,
        *,
        mc_samples: int = 0,
        predictive: bool = False,
        shrink: bool = True,
        estimate: Literal["auto", "arithmetic", "geometric"] = "auto",
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Return denoised counts (cells × modelled genes, float32, library-size scaled).

        These are expected counts (means), or typical counts with the geometric estimate
        (see ``estimate``). The result is dense; its size is checked against
        ``settings.max_memory_gb`` first.

        By default (``shrink=True``) the imputation stacks three estimators of each mean and
        gates it per gene against a null model without cell-to-cell signal:

        ``μ̃_cg = w_g · (μ_cg + M_cg + S_cg) / 3 + (1 − w_g) · p̄_g · L_c``

        with μ the model's mean; ``M_cg = L_c · mean_j μ_jg / L_j`` and
        ``S_cg = L_c · mean_j x_jg / L_j`` averaged over the cell's 15 nearest neighbours j in
        the latent space (:meth:`get_latent`, the cell itself excluded; neighbours are searched
        among the cells being imputed, so pass enough of them; a single cell gets ``M = S = μ``); ``L_c`` the library size;
        ``p̄_g`` the model's mean share of gene g over all cells. Averaging the model with
        latent-neighbour smoothing of its means and of the counts (equal weights) lowers the
        variance of each. ``w_g ∈ {0, 1}`` (:attr:`shrinkage_`) is fitted after training on the
        validation cells, which the network never trained on: their entries are hidden from
        the encoder in 10 random folds (set to 0, as count masking does) and predicted from
        the rest of the cell (μ) and from the neighbours of the cell's latent position with
        the fold hidden (M, S). Per gene, the gain is the NB (Poisson) log-likelihood of the
        hidden counts under the stacked prediction minus that under the best constant share
        of the library; ``w_g = 1`` when the gain plus 20 × the gain averaged over genes is
        positive (empirical Bayes: with 6-27 validation cells on plate data a per-gene test
        has no power, pooled over genes the evidence is clear). Why the gate: imputation by a
        low-rank decoder, or by neighbour smoothing, creates gene-gene correlation where
        there is none (Andrews & Hemberg 2018, "False signals induced by single-cell
        imputation"): on counts permuted within each gene the unshrunk means had
        BH-significant Spearman correlation for 34-82% of the pairs of the 200 most-expressed
        genes, while on permuted data the stacked prediction is worse than the null for the
        average gene, so every ``w_g`` is 0 and no pair is significant
        (benchmarks/RESULTS.md). A gene with ``w_g = 0`` is imputed as ``p̄_g · L_c``, which
        carries no signal beyond library size.

        The point estimate (``estimate``) is chosen once per data set, after training, on the
        same fold-hidden validation entries: ``"arithmetic"`` is the stack above, an estimate
        of the mean count; ``"geometric"`` replaces the stack by
        ``G_cg = L_c · expm1(mean_j log1p(x_jg / L_j · s)) / s`` (the same neighbours j,
        their counts averaged in log space) and ``p̄_g`` by the log-space average share of
        the gene over all cells; ``s`` (``self.shrinkage.geo_scale``) is 10⁴ or the median
        library size, whichever predicts the hidden counts better (it matters for deep
        read-count libraries). It has a gate of its own (``self.shrinkage.geo_weights``): the
        same rule on the squared error of ``log1p(share · s)``, fitted on fold-hidden entries
        of all cells (at most 2,000), since ``G`` never uses the network's mean; on data sets
        with a handful of validation cells this is what lets genes through. The geometric estimate is a typical value, not the mean: for
        skewed counts it lies below the mean, closer to most counts. ``"auto"`` takes the one
        whose gated predictions of the hidden non-zero counts have the smaller median
        absolute error (recorded in ``self.shrinkage.estimate`` and ``.selection``). Read
        counts from plates, where a few very large counts inflate the mean, get the geometric
        one; UMI counts the arithmetic one. Neither estimate is the count given detection;
        the imputed values of a cell no longer sum to its library size. Held-out figures per
        data set are in benchmarks/RESULTS.md.

        Parameters
        ----------
        adata
            Cells to impute; None uses the training data. Genes are matched by name.
        mc_samples
            0 for the deterministic mean (dropout off); T > 0 runs T MC-dropout passes and
            returns their mean and per-entry standard deviation (Gal & Ghahramani 2016).
        predictive
            Make the sd that of a new count rather than of its mean: add the sampling variance
            ``μ + μ²/θ`` (NB; for ZINB that of the NB part, ignoring zero inflation; Poisson
            ``μ``), averaged over the MC passes (law of total variance:
            ``Var = Var_MC(μ) + E_MC[μ + μ²/θ]``). The MC-dropout sd alone (the default) is
            epistemic only and covers few held-out counts (see benchmarks/RESULTS.md); the
            predictive sd is the one to use for intervals on counts. Works with
            ``mc_samples=0`` too (sampling variance only). With ``shrink``, every MC pass varies
            only the model's mean μ of the stack (the neighbour averages come from the
            deterministic pass), so the MC sd is ``w_g / 3`` times the unshrunk one, and the
            sampling variance is that of the stacked mean. The geometric estimate does not
            use μ at all (the network enters through the latent neighbours and the gate), so
            its MC sd is 0 and its predictive sd the sampling sd at the estimate.
        shrink
            Return the gated stack above. False returns the model's own means μ (these
            create false gene-gene correlation; use them only with a reason). A model without
            weights (saved by an older version) returns unshrunk means with a warning; one
            saved before stacking existed returns ``w_g · μ + b_g · L`` with its weights.
        estimate
            ``"auto"`` (the one chosen on held-out entries, see above), ``"arithmetic"`` or
            ``"geometric"``. Used with ``shrink`` only. Models saved before the choice existed
            use ``"arithmetic"`` under ``"auto"`` and cannot give ``"geometric"``.

        Returns
        -------
        The imputed means, or ``(mean, sd)`` when ``mc_samples > 0`` or ``predictive``.

        Raises
        ------
        MemoryError
            The dense output would exceed ``settings.max_memory_gb``.
        ValueError
            ``adata`` lacks some of the model's genes, or its counts are invalid; ``estimate``
            is unknown, or ``"geometric"`` for a model saved before it existed.
        """
        return self._run(
            adata, mc_samples, "mean", predictive=predictive, shrink=shrink, estimate=estimate
        )

    def _embed_and_impute(
        self, *, smooth: int, mc_samples: int, predictive: bool, shrink: bool, estimate: str
    ) -> tuple[np.ndarray, np.ndarray | tuple[np.ndarray, np.ndarray]]:
        """``get_latent(smooth=smooth)`` and ``get_imputed(...)`` of the training data at once.

        The same results as the two calls (up to the order of neighbours at equal distance),
        with one latent neighbour search instead of two: the smoothing and the imputation
        stack both average over the nearest cells of the deterministic latent.
        """
        check_positive_int(smooth, name="smooth", minimum=0)
        stacked = shrink and self.shrinkage is not None and self.shrinkage.n_neighbors > 0
        k = max(smooth, self.shrinkage.n_neighbors if stacked else 0)  # type: ignore[union-attr]
        z = self._run(None, 0, "latent")
        with cpu_threads(self.device):
            neighbors = self_neighbors(z, k, device=self.device)  # type: ignore[arg-type]
            if smooth:
                z = neighbor_average(z, smooth, neighbors=neighbors)  # type: ignore[arg-type]
        imputed = self._run(
            None,
            mc_samples,
            "mean",
            predictive=predictive,
            shrink=shrink,
            estimate=estimate,
            neighbors=neighbors,
        )
        return z, imputed  # type: ignore[return-value]

    # -- persistence ---------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write ``model.pt`` (the state_dict only) and ``config.json`` into directory ``path``.

        Parameters
        ----------
        path
            Directory to create.
        overwrite
            Replace the two files if ``path`` exists.

        Raises
        ------
        FileExistsError
            ``path`` exists and ``overwrite`` is False.
        """
        path = Path(path)
        if path.exists() and not overwrite:
            msg = f"{str(path)!r} already exists; pass `overwrite=True` to replace it."
            raise FileExistsError(msg)
        path.mkdir(parents=True, exist_ok=True)
        hist = self.history.to_dict() if self.history is not None else None
        config = {
            "class": type(self).__name__,
            "version": _version(),
            "init_kwargs": self.init_kwargs,
            "registry": self.registry.to_dict(),
            "history": hist,
            "shrinkage": self.shrinkage.to_dict() if self.shrinkage is not None else None,
        }
        state = {k: v.detach().cpu() for k, v in self.module.state_dict().items()}
        torch.save(state, path / MODEL_FILE)
        (path / CONFIG_FILE).write_text(json.dumps(config, indent=1))

    @classmethod
    def load(
        cls, path: str | Path, adata: Any = None, *, device: str | torch.device = "auto"
    ) -> DropoutAutoencoder:
        """Load a model written by :meth:`save` (weights only, no pickled objects).

        Parameters
        ----------
        path
            Directory written by :meth:`save`.
        adata
            Data to attach (for :meth:`get_latent` without arguments and further training); its
            ``var_names`` must contain every gene of the model.
        device
            Where to put the weights (``"auto"``, ``"cpu"``, ``"cuda"``, ...).

        Returns
        -------
        The model.

        Raises
        ------
        FileNotFoundError
            ``path`` or one of its two files does not exist.
        ValueError
            The files are malformed, or ``adata`` lacks some of the model's genes (the message
            says how many and names the first few).
        """
        path = Path(path)
        for f in (path / CONFIG_FILE, path / MODEL_FILE):
            if not f.is_file():
                msg = f"{str(f)!r} does not exist; is {str(path)!r} a saved DropoutAutoencoder?"
                raise FileNotFoundError(msg)
        try:
            config = json.loads((path / CONFIG_FILE).read_text())
            registry = Registry.from_dict(config["registry"])
            init_kwargs = dict(config["init_kwargs"])
            shrinkage = config.get("shrinkage")
            shrinkage = Shrinkage.from_dict(shrinkage) if shrinkage is not None else None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            err.add_note(str(path / CONFIG_FILE))
            msg = f"{str(path / CONFIG_FILE)!r} is malformed: {err!r}."
            raise ValueError(msg) from err
        if config.get("class") != cls.__name__:
            msg = f"{str(path)!r} holds a {config.get('class')!r}, not a {cls.__name__}."
            raise ValueError(msg)
        dev = resolve_device(device)
        counts = library = None
        if adata is not None:
            check_adata(adata)
            counts, library = align(adata, registry)
        model = cls.__new__(cls)
        model._setup(registry, init_kwargs, int(init_kwargs["random_state"]))
        state = torch.load(path / MODEL_FILE, map_location=dev, weights_only=True)
        model.module.load_state_dict(state)
        model.module.to(dev)
        model.module.eval()
        model.device = dev
        if config.get("history") is not None:
            model.history = History.from_dict(config["history"])
        model.shrinkage = shrinkage
        model._counts, model._library = counts, library
        return model
