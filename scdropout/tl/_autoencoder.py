"""``tl.autoencoder``: scanpy-style wrapper around :class:`scdropout.models.DropoutAutoencoder`."""

from __future__ import annotations

import numbers
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from scdropout import _keys
from scdropout._logging import logger
from scdropout._utils import (
    check_adata,
    check_choice,
    check_conflicts,
    check_memory,
    check_positive_int,
    seed_repr,
    write_results,
)

if TYPE_CHECKING:
    import torch
    from anndata import AnnData


def _check_bool(value: Any, *, name: str) -> None:
    if not isinstance(value, bool | np.bool_):
        msg = f"`{name}` must be True or False, got {value!r}."
        raise TypeError(msg)


def _param(value: Any) -> Any:
    """Return an h5ad-safe record of an argument (None as "None", sequences as arrays)."""
    if value is None:
        return "None"
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, str | int | float | np.integer | np.floating):
        return value
    return str(value)


def _genes_param(genes: Any) -> Any:
    if genes is None or isinstance(genes, str):
        return _param(genes)
    arr = np.asarray(genes)
    n = int(arr.sum()) if arr.dtype == bool else int(arr.size)
    return f"<{n} genes>"


def autoencoder(
    adata: AnnData,
    *,
    layer: str | None = None,
    genes: str | Sequence[str] | np.ndarray | None = None,
    n_latent: int = 32,
    hidden: Sequence[int] = (128,),
    likelihood: Literal["nb", "zinb", "poisson"] = "nb",
    dropout_kind: Literal["bernoulli", "gaussian"] = "bernoulli",
    dropout_rate: float = 0.1,
    input_dropout: float = 0.0,
    mask_rate: float = 0.1,
    scale_input: bool = True,
    max_epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    early_stopping: bool = True,
    device: str | torch.device = "auto",
    smooth_latent: int = 15,
    impute: bool = False,
    shrink: bool = True,
    estimate: Literal["auto", "arithmetic", "geometric"] = "auto",
    mc_samples: int = 0,
    predictive_sd: bool = False,
    random_state: int | np.random.Generator | None = 0,
    progress_bar: bool = True,
    key_added: str = _keys.DAE,
    copy: bool = False,
) -> AnnData | None:
    """Embed cells (and optionally impute counts) with a dropout-regularised count autoencoder.

    Trains :class:`scdropout.models.DropoutAutoencoder` on the raw counts and stores its
    bottleneck, averaged over each cell's latent neighbours (``smooth_latent``), as an
    embedding, so that ``sc.pp.neighbors(adata, use_rep="X_dae")`` works. The
    model follows DCA (Eraslan et al. 2019) and scVI's layout and optimiser (Lopez et al. 2018):
    NB/ZINB/Poisson reconstruction of the counts from ``log1p`` of library-normalised input,
    regularised by hidden-layer dropout, input dropout and count masking (a fraction of observed
    non-zero counts hidden from the encoder during training and still asked for by the loss).
    With ``mc_samples > 0`` the imputed values come with Monte-Carlo-dropout standard deviations
    (Gal & Ghahramani 2016). torch is imported only when this function runs.

    Parameters
    ----------
    adata
        Cells × genes AnnData with raw integer counts (dense, CSR or CSC; never densified).
    layer
        Layer with the counts; None uses ``adata.X``.
    genes
        Genes to model: None (all), the name of a boolean ``adata.var`` column (e.g.
        ``"dropout_genes_selected"`` from ``pp.dropout_genes``), a boolean mask or a list of
        gene names.
    n_latent
        Dimensions of the embedding. 32 by default (scVI and ALGORITHMS.md §5 use 10): over
        the 7 labelled count sets, mean ARI at the true k with 32 vs 10 was Ward 0.618 vs 0.595,
        Leiden 0.632 vs 0.595, KMeans 0.573 vs 0.574, at the same cost (benchmarks/RESULTS.md,
        bench_autoencoder_defaults).
    hidden
        Widths of the encoder's hidden layers; the decoder mirrors them.
    likelihood
        ``"nb"`` (negative binomial with per-gene dispersion; the default, chosen by the
        clustering benchmarks), ``"zinb"`` (NB with a zero-inflation probability per entry) or
        ``"poisson"``.
    dropout_kind
        Hidden-layer dropout: ``"bernoulli"`` (inverted dropout) or ``"gaussian"``
        (multiplicative N(1, p/(1−p)) noise).
    dropout_rate
        Hidden-layer dropout rate, in [0, 1).
    input_dropout
        Bernoulli dropout rate on the normalised input, in [0, 1).
    mask_rate
        Fraction of the observed non-zero counts hidden from the encoder during training, in
        [0, 1); 0 disables count masking.
    scale_input
        Standardise each gene of the encoder input to mean 0, sd 1 (clipped at ±10), as
        ``sc.pp.scale`` does before PCA (DCA's input scaling); the default, chosen by the
        clustering benchmark (panel-mean Ward ARI 0.607 vs 0.588 without; benchmarks/RESULTS.md).
    max_epochs
        Training epochs; None uses ``min(round(20000 / n_cells · 400), 400)`` (scVI's rule).
        Early stopping usually ends training sooner.
    batch_size
        Cells per minibatch.
    lr
        Adam learning rate.
    early_stopping
        Stop when the validation loss (10% of cells) has not improved for 20 epochs, keeping
        the best epoch's weights.
    device
        ``"auto"`` (CUDA when available, else CPU; never MPS silently), ``"cpu"``, ``"cuda"``,
        ``"cuda:1"`` or a :class:`torch.device`.
    impute
        Also store the denoised expected counts (a dense cells × genes float32 layer; its size
        is checked against ``settings.max_memory_gb`` first). At 100,000 cells × 2,000 genes
        the embedding and the imputation took 84 s after training on 2 CPU threads (57 s for
        the embedding alone), with a peak RSS of 4.1 GB (bench_autoencoder_scale --impute).
    shrink
        With ``impute``: the default imputation of
        :meth:`scdropout.models.DropoutAutoencoder.get_imputed`. Each gene's value stacks the
        model's mean with averages over the cell's 15 nearest neighbours in the latent space
        (of the model's means and of the observed counts), and a per-gene gate ``w_g`` (0 or
        1), fitted after training on held-out entries of the validation cells, replaces it by
        a constant share of the cell's library unless the stack predicts those entries better
        (an empirical-Bayes rule on the held-out NB log-likelihood gain). This guards against
        false gene-gene correlation created by imputation (Andrews & Hemberg 2018): on counts
        permuted within each gene the unshrunk means made 49-82% of the pairs of abundant
        genes significantly correlated, the gated ones none (benchmarks/RESULTS.md). False
        stores the model's own means.
    estimate
        With ``impute`` and ``shrink``: the point estimate of kept genes. ``"auto"`` uses the
        one the model chose after training by held-out median absolute error on non-zero
        validation entries: ``"arithmetic"`` (the stack above; an expected count) or
        ``"geometric"`` (latent-neighbour counts averaged in log space; a typical count, below
        the mean for skewed counts such as plate read counts). See
        :meth:`scdropout.models.DropoutAutoencoder.get_imputed`.
    smooth_latent
        Average each cell's latent position with those of its ``smooth_latent`` nearest
        neighbours in the latent space (equal weights; 0 stores the encoder's output,
        ``model.get_latent()``). Over the 8 labelled count sets of benchmarks/RESULTS.md
        (seeds 0-3) the average over 15 neighbours raised the mean ARI at the true k from
        0.639 to 0.656 (Ward), 0.637 to 0.639 (Leiden) and 0.600 to 0.629 (k-means), and Ward
        NMI from 0.726 to 0.744 (50 PCs: 0.622 / 0.569 / 0.581, NMI 0.753). The cost is one
        latent nearest-neighbour search over all cells: ``get_latent(smooth=15)`` took 57 s
        at 100,000 cells on 2 CPU threads, encoder pass included (bench_autoencoder_scale);
        it grows as the square of the number of cells (with a progress bar from 50,000 cells)
        and runs on the GPU when the model does.
        With ``impute`` and ``shrink`` the imputation stack reuses that search (it averages
        over the same 15 neighbours) instead of running its own.
    mc_samples
        With ``impute``: number of Monte-Carlo-dropout passes for the imputed mean and its
        per-entry standard deviation; 0 stores the deterministic mean and no sd.
    predictive_sd
        With ``impute``: store the sd of a new count instead of the MC-dropout sd of its mean,
        ``sqrt(Var_MC(μ) + E_MC[μ + μ²/θ])`` (NB sampling variance; for ZINB that of the NB
        part; Poisson ``μ``); works with ``mc_samples=0`` (sampling variance only). The
        MC-dropout sd alone is epistemic and covers 10–30% of held-out counts at ±2 sd, the
        predictive one 30–90% (benchmarks/RESULTS.md).
    random_state
        Seed for initialisation, the validation split, minibatch order, dropout and masks. The
        caller's global torch RNG is untouched; the same seed gives the same result on CPU.
    progress_bar
        Show the epoch bar.
    key_added
        Name under which everything is stored (see Returns); every key written changes with it.
    copy
        Return a modified copy instead of writing into ``adata``.

    Returns
    -------
    None, or the modified copy when ``copy=True``. With ``k = key_added``, writes

    ``adata.obsm[f"X_{k}"]``: float32, cells × ``n_latent``
        The embedding (dropout off), smoothed over ``smooth_latent`` latent neighbours.
    ``adata.layers[f"{k}_imputed"]``: float32, cells × genes (only with ``impute=True``)
        Denoised expected counts on the scale of the cell's library size (the MC-dropout mean
        when ``mc_samples > 0``; shrunk as described under ``shrink``); NaN for genes left
        out by ``genes``.
    ``adata.layers[f"{k}_imputed_sd"]``: float32 (only with ``impute=True`` and
    ``mc_samples > 0`` or ``predictive_sd``)
        Per-entry MC-dropout standard deviation of the imputed counts (with
        ``predictive_sd``: the predictive sd described there).
    ``adata.uns[k]``: dict
        ``"params"`` (every argument; None stored as "None"), ``"history"`` (per-epoch
        ``"train_loss"``, ``"val_loss"`` and ``"train_nll_masked"`` arrays: mean per-cell NLL,
        per-entry NLL of the masked counts), ``"n_epochs"``, ``"best_epoch"``,
        ``"stopped_early"``, ``"device"``, ``"n_genes"``, ``"shrinkage_weights"`` (float64,
        one per modelled gene: the held-out gate ``w_g`` of the estimate used by ``shrink``;
        1 keeps the stacked prediction, 0 makes the gene's imputation a constant share of the
        library),
        ``"estimate"`` (the point estimate the model chose after training, used by
        ``estimate="auto"``), ``"geo_scale"`` (the scale ``s`` of the geometric estimate's
        ``log1p(share · s)``, chosen with it) and,
        when ``genes`` is given, ``"genes"`` (the modelled gene names).

    Raises
    ------
    TypeError
        ``adata`` is not an in-memory AnnData, the matrix type is not supported, or an
        argument has the wrong type.
    KeyError
        ``layer`` or the ``genes`` column does not exist.
    ValueError
        The counts are not finite non-negative integers, a cell has no counts in the modelled
        genes, ``genes`` selects nothing, an option is out of range, ``mc_samples > 0`` without
        ``impute``, or a key to be written exists and was not written by scdropout.
    MemoryError
        The imputed layer(s) would exceed ``settings.max_memory_gb``.
    RuntimeError
        The training loss became NaN (the message names the epoch; lower ``lr``).

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=200, n_genes=100)
    >>> sd.tl.autoencoder(adata, n_latent=5, max_epochs=2, progress_bar=False)
    >>> adata.obsm["X_dae"].shape
    (200, 5)
    """
    t0 = time.perf_counter()
    # (1) validate every argument and the data, mutating nothing
    check_adata(adata)
    if not isinstance(key_added, str) or not key_added:
        msg = f"`key_added` must be a non-empty string, got {key_added!r}."
        raise (TypeError if not isinstance(key_added, str) else ValueError)(msg)
    for name, value in [
        ("early_stopping", early_stopping),
        ("impute", impute),
        ("progress_bar", progress_bar),
        ("copy", copy),
        ("predictive_sd", predictive_sd),
        ("scale_input", scale_input),
        ("shrink", shrink),
    ]:
        _check_bool(value, name=name)
    check_positive_int(max_epochs, name="max_epochs", allow_none=True)
    check_positive_int(batch_size, name="batch_size", minimum=2)
    check_positive_int(mc_samples, name="mc_samples", minimum=0)
    check_positive_int(smooth_latent, name="smooth_latent", minimum=0)
    check_choice(estimate, name="estimate", choices=("auto", "arithmetic", "geometric"))
    if mc_samples and not impute:
        msg = f"`mc_samples={mc_samples!r}` needs `impute=True` (it sets the imputed sd)."
        raise ValueError(msg)
    if predictive_sd and not impute:
        msg = "`predictive_sd=True` needs `impute=True` (it sets the imputed sd)."
        raise ValueError(msg)
    if (
        isinstance(lr, bool)
        or not isinstance(lr, numbers.Real)
        or not (np.isfinite(lr) and lr > 0)
    ):
        msg = f"`lr` must be a positive finite number, got {lr!r}."
        raise ValueError(msg)
    check_choice(likelihood, name="likelihood", choices=("nb", "zinb", "poisson"))
    k = key_added
    results_keys: dict[str, list[str]] = {"obsm": [f"X_{k}"], "uns": [k]}
    if impute:
        with_sd = bool(mc_samples) or bool(predictive_sd)
        results_keys["layers"] = [f"{k}_imputed"] + ([f"{k}_imputed_sd"] if with_sd else [])
        check_memory(
            4.0 * adata.n_obs * adata.n_vars * len(results_keys["layers"]),
            what=f"the dense {adata.n_obs:,} x {adata.n_vars:,} float32 imputed layer(s)",
            ways_out="Impute fewer cells, or use `impute=False` and `model.get_imputed` on parts.",
        )
    check_conflicts(adata, results_keys, key_added=k, owner="autoencoder")

    from scdropout.models import DropoutAutoencoder
    from scdropout.models._data import resolve_genes
    from scdropout.models._model import check_hidden, resolve_device

    dev = resolve_device(device)
    model = DropoutAutoencoder(
        adata,
        layer=layer,
        genes=genes,
        n_latent=n_latent,
        hidden=hidden,
        likelihood=likelihood,
        dropout_kind=dropout_kind,
        dropout_rate=dropout_rate,
        input_dropout=input_dropout,
        mask_rate=mask_rate,
        scale_input=scale_input,
        random_state=random_state,
    )
    # (2) copy
    names = list(model.registry.var_names)
    columns = resolve_genes(adata, genes)  # positions: var_names may repeat or not be strings
    adata = adata.copy() if copy else adata
    # (3) compute
    hist = model.train(
        max_epochs=max_epochs,
        batch_size=batch_size,
        lr=lr,
        device=dev,
        early_stopping=early_stopping,
        progress_bar=progress_bar,
    )
    layers: dict[str, np.ndarray] = {}
    if not impute:
        latent = model.get_latent(smooth=int(smooth_latent))
    else:  # one latent neighbour search serves the smoothing and the imputation stack
        latent, res = model._embed_and_impute(
            smooth=int(smooth_latent),
            mc_samples=mc_samples,
            predictive=bool(predictive_sd),
            shrink=bool(shrink),
            estimate=estimate,
        )
        mean, sd = res if (mc_samples or predictive_sd) else (res, None)
        subset = not np.array_equal(columns, np.arange(adata.n_vars))
        for key, val in [(f"{k}_imputed", mean), (f"{k}_imputed_sd", sd)]:
            if val is None:
                continue
            if subset:
                full = np.full(adata.shape, np.nan, dtype=np.float32)
                full[:, columns] = val
                val = full
            layers[key] = val
    uns: dict[str, Any] = {
        "params": {
            "layer": _param(layer),
            "genes": _genes_param(genes),
            "n_latent": int(n_latent),
            "hidden": np.asarray(check_hidden(hidden), dtype=np.int64),
            "likelihood": likelihood,
            "dropout_kind": dropout_kind,
            "dropout_rate": float(dropout_rate),
            "input_dropout": float(input_dropout),
            "mask_rate": float(mask_rate),
            "scale_input": bool(scale_input),
            "max_epochs": _param(max_epochs),
            "batch_size": int(batch_size),
            "lr": float(lr),
            "early_stopping": bool(early_stopping),
            "device": str(device),
            "smooth_latent": int(smooth_latent),
            "impute": bool(impute),
            "shrink": bool(shrink),
            "estimate": estimate,
            "mc_samples": int(mc_samples),
            "predictive_sd": bool(predictive_sd),
            "random_state": seed_repr(random_state),
            "progress_bar": bool(progress_bar),
            "key_added": key_added,
            "copy": bool(copy),
        },
        "history": {
            "train_loss": np.asarray(hist.train_loss, dtype=np.float64),
            "val_loss": np.asarray(hist.val_loss, dtype=np.float64),
            "train_nll_masked": np.asarray(hist.train_nll_masked, dtype=np.float64),
        },
        "n_epochs": int(hist.n_epochs),
        "best_epoch": int(hist.best_epoch),
        "stopped_early": bool(hist.stopped_early),
        "device": str(model.device),
        "n_genes": len(names),
        "shrinkage_weights": np.asarray(
            model.shrinkage.weights_for(
                model.shrinkage.estimate if estimate == "auto" else estimate
            ),
            dtype=np.float64,
        ),
        "estimate": model.shrinkage.estimate,
        "geo_scale": float(model.shrinkage.geo_scale),
    }
    if genes is not None:
        uns["genes"] = np.asarray(names, dtype=object)
    results: dict[str, dict[str, Any]] = {"obsm": {f"X_{k}": latent}, "uns": {k: uns}}
    if layers:
        results["layers"] = layers
    # (4) write everything in one block
    written = write_results(
        adata,
        results,
        key_added=k,
        owner="autoencoder",
        optional={"layers": [f"{k}_imputed", f"{k}_imputed_sd"]},
    )
    # (5) one log line
    logger.info("autoencoder: wrote %s (%.1fs)", ", ".join(written), time.perf_counter() - t0)
    return adata if copy else None
