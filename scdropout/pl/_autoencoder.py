"""Figures of the results ``tl.autoencoder`` stored: its training curves and one gene's imputation.

Nothing is recomputed: the losses come from ``adata.uns[key]["history"]``, the imputed means and
their sd from ``adata.layers``; the only thing read from the matrix is the observed counts of the
gene drawn next to its imputation.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scdropout import _keys
from scdropout._utils import check_positive_int, missing_key_message

from ._common import stored_results

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _results(adata: Any, key: str) -> Mapping[str, Any]:
    return stored_results(adata, key, marker="history", producer="tl.autoencoder")


def autoencoder_history(
    adata: Any,
    *,
    key: str = _keys.DAE,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Axes:
    """Training curves of ``tl.autoencoder``: loss per epoch on the training and validation cells.

    The mean negative log-likelihood per cell (``uns[key]["history"]``): on the training cells
    with dropout and count masking active, and on the validation cells in eval mode (absent
    when there was no validation split). A dashed line marks the epoch whose weights were kept
    (the lowest validation loss). A validation curve that rises while the training curve keeps
    falling means over-fitting, which early stopping cut short; one still falling at the last
    epoch means ``max_epochs`` stopped training too early.

    Parameters
    ----------
    adata
        AnnData on which ``tl.autoencoder`` was run.
    key
        The ``key_added`` of ``tl.autoencoder``.
    ax
        Axes to draw into; None makes a new figure.
    show
        Call ``matplotlib.pyplot.show()`` after drawing if True.

    Returns
    -------
    Axes
        The Axes drawn into.

    Raises
    ------
    KeyError
        If ``tl.autoencoder`` results under ``key`` are missing.
    """
    import matplotlib.pyplot as plt

    res = _results(adata, key)
    hist = res["history"]
    train = np.asarray(hist["train_loss"], dtype=np.float64)
    val = np.asarray(hist.get("val_loss", []), dtype=np.float64)
    best = int(res.get("best_epoch", train.size))
    own = ax is None
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 3.5))
    epochs = np.arange(1, train.size + 1)
    ax.plot(epochs, train, color="tab:blue", label="training cells")
    if val.size:
        ax.plot(np.arange(1, val.size + 1), val, color="tab:orange", label="validation cells")
    if 1 <= best <= train.size:
        ax.axvline(best, color="0.3", linestyle="--", lw=0.8, label=f"kept: epoch {best}")
    likelihood = res.get("params", {}).get("likelihood", "")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{str(likelihood).upper()} negative log-likelihood per cell".strip())
    stop = " (stopped early)" if res.get("stopped_early") else ""
    ax.set_title(f"{key}: {train.size} epochs{stop}")
    ax.legend()
    if own:
        ax.figure.tight_layout()
    if show:
        plt.show()
    return ax


def _observed(adata: Any, res: Mapping[str, Any], j: int) -> np.ndarray:
    layer = res.get("params", {}).get("layer", "None")
    X = adata.X if layer in (None, "None") else adata.layers[layer]
    col = X[:, j]
    return np.asarray(col.toarray() if hasattr(col, "toarray") else col, dtype=np.float64).ravel()


def _gated(res: Mapping[str, Any], adata: Any, gene: str) -> bool:
    """Whether the stored imputation of ``gene`` is the gate's null (shrink on, ``w_g`` = 0)."""
    weights = res.get("shrinkage_weights")
    if weights is None or not res.get("params", {}).get("shrink", True):
        return False
    modelled = list(res["genes"]) if "genes" in res else list(adata.var_names)
    return gene in modelled and float(np.asarray(weights)[modelled.index(gene)]) == 0.0


def imputed_gene(
    adata: Any,
    gene: str,
    *,
    groupby: str | None = None,
    key: str = _keys.DAE,
    n_errorbars: int = 60,
    random_state: int = 0,
    show: bool | None = None,
) -> Figure:
    """One gene before and after ``tl.autoencoder(impute=True)``: observed counts and imputed values.

    Two panels over the same cells, split by ``groupby`` (jittered strips, one per category):
    the observed counts (the matrix the model was trained on, zeros included) and the imputed
    values of ``layers[f"{key}_imputed"]``. When ``layers[f"{key}_imputed_sd"]`` exists
    (``mc_samples > 0`` or ``predictive_sd``), ``n_errorbars`` randomly chosen cells get
    error bars of ± 2 sd: how sure the model is about each value (MC-dropout sd), or where a new
    count would fall (predictive sd). A gene the gate replaced by a constant share of the
    library (``uns[key]["shrinkage_weights"]`` 0, with ``shrink=True``) is marked so in the
    title: its imputed values follow library size only.

    Parameters
    ----------
    adata
        AnnData on which ``tl.autoencoder(impute=True)`` was run.
    gene
        A name in ``adata.var_names`` that the model was trained on.
    groupby
        Categorical column of ``adata.obs`` to split the cells by; None draws one strip.
    key
        The ``key_added`` of ``tl.autoencoder``.
    n_errorbars
        Number of cells with error bars (0 for none).
    random_state
        Seed of the jitter and of the cells chosen for error bars.
    show
        Call ``matplotlib.pyplot.show()`` after drawing if True.

    Returns
    -------
    Figure
        The figure with the two panels (observed, imputed), sharing the y axis.

    Raises
    ------
    KeyError
        ``tl.autoencoder`` results, its imputed layer, ``gene`` or ``groupby`` are missing.
    ValueError
        ``gene`` was left out of the model (``genes=``: its imputed values are NaN), or
        ``n_errorbars`` is negative.
    TypeError
        ``n_errorbars`` is not an integer.
    """
    import matplotlib.pyplot as plt

    res = _results(adata, key)
    layer = f"{key}_imputed"
    params = res.get("params", {})
    if not params.get("impute", True):
        msg = (
            f"The last `tl.autoencoder` run under key {key!r} did not impute (`impute=False`). "
            f"Run `scdropout.tl.autoencoder(adata, key_added={key!r}, impute=True)` first."
        )
        raise KeyError(msg)
    if layer not in adata.layers:
        msg = missing_key_message("key", layer, adata.layers.keys(), "layers")
        msg += f" Run `scdropout.tl.autoencoder(adata, key_added={key!r}, impute=True)` first."
        raise KeyError(msg)
    if not isinstance(gene, str) or gene not in adata.var_names:
        msg = f"`gene={gene!r}` is not in `adata.var_names`."
        raise KeyError(msg)
    if groupby is not None and groupby not in adata.obs:
        raise KeyError(missing_key_message("groupby", groupby, adata.obs.columns, "obs"))
    check_positive_int(n_errorbars, name="n_errorbars", minimum=0)
    j = adata.var_names.get_loc(gene)
    imputed = np.asarray(adata.layers[layer][:, j], dtype=np.float64).ravel()
    if np.isnan(imputed).all():
        msg = (
            f"`gene={gene!r}` was not modelled (tl.autoencoder's `genes=` left it out), so it "
            "has no imputed values."
        )
        raise ValueError(msg)
    observed = _observed(adata, res, j)
    if groupby is None:
        groups = pd.Categorical(np.full(adata.n_obs, "all cells"))
    else:
        groups = pd.Categorical(adata.obs[groupby])
        if (groups.codes < 0).any():  # missing values get a strip of their own, last
            groups = groups.add_categories(_na_label(groups.categories)).fillna(
                _na_label(groups.categories)
            )
    codes = groups.codes.astype(np.float64)
    rng = np.random.default_rng(random_state)
    x = codes + rng.uniform(-0.3, 0.3, adata.n_obs)
    sd_layer = f"{key}_imputed_sd"
    fig, axes = plt.subplots(1, 2, figsize=(9.0, 3.5), sharey=True)
    axes[0].scatter(x, observed, s=3, alpha=0.5, color="0.35")
    zeros = float(np.mean(observed == 0))
    axes[0].set_title(f"{gene}: observed counts ({zeros:.0%} zeros)")
    axes[1].scatter(x, imputed, s=3, alpha=0.5, color="tab:blue")
    title = "imputed"
    # the sd layer only when the run that made the imputed layer made one too
    has_sd = bool(params.get("mc_samples", 0)) or bool(params.get("predictive_sd", False))
    if has_sd and sd_layer in adata.layers and n_errorbars:
        sd = np.asarray(adata.layers[sd_layer][:, j], dtype=np.float64).ravel()
        few = rng.choice(adata.n_obs, size=min(n_errorbars, adata.n_obs), replace=False)
        axes[1].errorbar(x[few], imputed[few], yerr=2 * sd[few], fmt="none", ecolor="k", lw=0.7)
        title += " (± 2 sd)"
    if _gated(res, adata, gene):
        title += "; gated: a constant share of the library"
    axes[1].set_title(title)
    for ax in axes:
        ax.set_xticks(range(len(groups.categories)), [str(c) for c in groups.categories])
        ax.set_xlabel(groupby or "")
    axes[0].set_ylabel("count")
    fig.tight_layout()
    if show:
        plt.show()
    return fig


def _na_label(categories: pd.Index) -> str:
    """Return a label for cells with a missing group that is not one of ``categories``."""
    label = "NA"
    while label in set(map(str, categories)):
        label += "_"
    return label
