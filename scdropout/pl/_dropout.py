"""Figures of the dropout statistics stored by ``pp.dropout_stats`` and ``pp.dropout_genes``.

Nothing here recomputes a statistic from the count matrix: the per-gene and per-cell values come
from :mod:`scdropout.get`, and the only curve evaluated on a grid is the stored
Michaelis–Menten fit ``p = K / (K + s)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from scdropout import _keys
from scdropout._utils import check_adata, missing_key_message
from scdropout.get import dropout_cells, dropout_genes, dropout_stats

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# colours (matplotlib's tab10) used consistently across the figures
_GREY = "0.6"
_HIGHLIGHT = "tab:red"
_NB = "tab:blue"
_POISSON = "tab:orange"
_MM = "tab:green"


def _finite_float(value: Any) -> float | None:
    """Return ``value`` as a float if it is a finite real number, else None."""
    try:
        out = float(np.asarray(value).item())
    except (TypeError, ValueError):
        return None
    return out if np.isfinite(out) else None


def _mm_scale(adata: Any, key: str) -> float:
    """Factor that maps a gene's raw mean count to M3Drop's normalised mean ``s``.

    M3Drop fits ``K`` on counts scaled to the median library size (ALGORITHMS.md §3.1). For a gene
    whose share of every library is the same, ``s = mean · median(L) / mean(L)``; this factor puts
    the fitted curve on the raw-mean axis of the scatter. Without stored library sizes it is 1.
    """
    col = f"{key}_total_counts"
    if col not in adata.obs.columns:
        return 1.0
    lib = np.asarray(adata.obs[col], dtype=np.float64)
    lib = lib[np.isfinite(lib)]
    if lib.size == 0 or lib.mean() <= 0:
        return 1.0
    return float(np.median(lib) / lib.mean())


def _stored_mm_k(adata: Any, key: str) -> float | None:
    """Return the Michaelis–Menten ``K`` in ``adata.uns[key]['m3drop']['K']``, if stored and positive."""
    params = adata.uns.get(key, {})
    mm = params.get("m3drop") if isinstance(params, Mapping) else None
    if not isinstance(mm, Mapping) or "K" not in mm:
        return None
    k = _finite_float(mm["K"])
    return k if k is not None and k > 0 else None


def _selected_mask(adata: Any, genes_key: str | None) -> np.ndarray | None:
    """Boolean mask over ``adata.var_names`` of the genes ``pp.dropout_genes`` selected."""
    if genes_key is None:
        return None
    if not isinstance(genes_key, str):
        msg = f"`genes_key` must be a string or None, got {genes_key!r}."
        raise TypeError(msg)
    if genes_key not in adata.uns:
        if genes_key == _keys.DROPOUT_GENES:
            return None  # the default: highlight only when pp.dropout_genes has been run
        msg = missing_key_message("genes_key", genes_key, adata.uns.keys(), "uns")
        msg += " Run `scdropout.pp.dropout_genes` first, or pass `genes_key=None`."
        raise KeyError(msg)
    table = dropout_genes(adata, key=genes_key)
    if "selected" not in table.columns:
        msg = (
            f"`adata.var[{genes_key + '_selected'!r}]` does not exist; "
            "pass `genes_key=None` to plot without highlighting."
        )
        raise KeyError(msg)
    sel = table["selected"].reindex(adata.var_names)
    return sel.fillna(value=False).to_numpy(dtype=bool)


def dropout_curve(
    adata: Any,
    *,
    key: str = _keys.DROPOUT_STATS,
    genes_key: str | None = _keys.DROPOUT_GENES,
    log: bool = True,
    poisson: bool = True,
    michaelis_menten: bool = True,
    size: float | None = None,
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Axes:
    """Scatter of each gene's mean against its dropout rate, with the fitted dropout curves.

    The M3Drop dropout plot (Andrews & Hemberg 2019): one point per gene, mean count per cell on
    the x axis and observed fraction of zeros on the y axis. Overlaid, all from stored results:

    - the depth-adjusted negative binomial (NBumi) expected dropout rate of each gene
      (``var[f"{key}_expected"]``), drawn as a line through the genes sorted by mean. It
      depends on a gene only through its total count, so the line is smooth;
    - the Poisson expected rate (``var[f"{key}_expected_poisson"]``), likewise;
    - the Michaelis–Menten fit ``p = K / (K + s)`` with ``K = uns[key]['m3drop']['K']``,
      evaluated on a grid of means. ``K`` is fitted on counts scaled to the median library size,
      so the curve is drawn at ``s = mean · median(L) / mean(L)`` (``L`` from
      ``obs[f"{key}_total_counts"]``), where a gene with a constant share of every library sits.

    Genes selected by ``pp.dropout_genes`` are drawn on top in red when ``genes_key`` names
    its results. Nothing is computed from the count matrix.

    Parameters
    ----------
    adata
        Annotated data matrix on which ``pp.dropout_stats`` was run.
    key
        The ``key_added`` of ``pp.dropout_stats``.
    genes_key
        The ``key_added`` of ``pp.dropout_genes`` whose selected genes to highlight. With the
        default, genes are highlighted only if ``adata.uns`` has that key; any other missing key
        raises ``KeyError``. None: no highlighting.
    log
        Log-scale the x axis (genes with mean 0 are then left out).
    poisson
        Draw the Poisson expected curve, if stored.
    michaelis_menten
        Draw the Michaelis–Menten curve, if ``K`` is stored.
    size
        Marker size of the gene points; None picks one from the number of genes.
    title
        Axes title; None leaves it empty.
    ax
        Axes to draw into; None creates a new figure.
    show
        Call ``matplotlib.pyplot.show()`` after drawing if True. None or False do not.

    Returns
    -------
    The matplotlib Axes drawn into (always returned, also when ``show=True``). Its collections
    are the gene scatter and, if any, the highlighted genes; its lines are the curves, in the
    order NB, Poisson, Michaelis–Menten.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData, or ``key``/``genes_key`` are not strings.
    KeyError
        If ``key`` (or a non-default ``genes_key``) is not in ``adata.uns``; the message lists
        up to 5 keys that exist. Also if the ``mean`` or ``rate`` columns are missing.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=100, n_genes=200)
    >>> sd.pp.dropout_stats(adata)
    >>> ax = sd.pl.dropout_curve(adata, genes_key=None)
    >>> ax.get_xlabel()
    'mean count per cell'
    """
    check_adata(adata)
    for name, value in (
        ("log", log),
        ("poisson", poisson),
        ("michaelis_menten", michaelis_menten),
    ):
        if not isinstance(value, bool | np.bool_):
            msg = f"`{name}` must be a bool, got {value!r}."
            raise TypeError(msg)
    stats = dropout_stats(adata, key=key)
    missing = [c for c in ("mean", "rate") if c not in stats.columns]
    if missing:
        msg = missing_key_message("column", f"{key}_{missing[0]}", adata.var.columns, "var")
        raise KeyError(msg)
    selected = _selected_mask(adata, genes_key)

    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 4.5))

    mean = stats["mean"].to_numpy(dtype=np.float64)
    rate = stats["rate"].to_numpy(dtype=np.float64)
    keep = np.isfinite(mean) & np.isfinite(rate)
    if log:
        keep &= mean > 0
    n = int(keep.sum())
    if size is None:
        size = float(np.clip(2000.0 / max(n, 1), 1.0, 12.0))

    ax.scatter(
        mean[keep],
        rate[keep],
        s=size,
        c=_GREY,
        alpha=0.6,
        linewidths=0,
        rasterized=n > 5000,
        label=f"genes ({n})",
    )
    if selected is not None:
        hl = keep & selected
        ax.scatter(
            mean[hl],
            rate[hl],
            s=size * 1.5,
            c=_HIGHLIGHT,
            alpha=0.9,
            linewidths=0,
            label=f"selected ({int(hl.sum())})",
        )

    order = np.argsort(mean[keep], kind="stable")
    xs = mean[keep][order]
    curves = [("expected", "depth-adjusted NB", _NB)]
    if poisson:
        curves.append(("expected_poisson", "Poisson", _POISSON))
    for col, label, color in curves:
        if col not in stats.columns:
            continue
        ys = stats[col].to_numpy(dtype=np.float64)[keep][order]
        ok = np.isfinite(ys)
        if ok.any():
            ax.plot(xs[ok], ys[ok], color=color, lw=2, label=label)

    k = _stored_mm_k(adata, key) if michaelis_menten else None
    if k is not None and n > 0:
        lo, hi = float(xs[0]), float(xs[-1])
        if log:
            grid = np.geomspace(lo, hi, 256) if hi > lo else np.array([lo])
        else:
            grid = np.linspace(lo, hi, 256)
        s = grid * _mm_scale(adata, key)
        ax.plot(grid, k / (k + s), color=_MM, lw=2, ls="--", label=f"Michaelis–Menten (K={k:.3g})")

    if log and n > 0:
        ax.set_xscale("log")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("mean count per cell")
    ax.set_ylabel("dropout rate (fraction of zeros)")
    if title is not None:
        ax.set_title(title)
    ax.legend(loc="lower left", frameon=False, fontsize="small")
    if show:
        plt.show()
    return ax


def dropout_qc(
    adata: Any,
    *,
    key: str = _keys.DROPOUT_STATS,
    log: bool = True,
    bins: int = 50,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
) -> Figure:
    """Per-cell check of the dropout model: observed against expected zeros, and library sizes.

    Left panel: for each cell, the number of genes with a zero count (``obs[f"{key}_zeros"]``)
    against the number the depth-adjusted negative binomial expects
    (``obs[f"{key}_expected_zeros"]``) and, if stored, the Poisson model, with the identity line
    (M3Drop's ``NBumiCheckFit`` cell panel). Right panel: histogram of library sizes
    (``obs[f"{key}_total_counts"]``) with the median marked. Nothing is computed from the count
    matrix.

    Parameters
    ----------
    adata
        Annotated data matrix on which ``pp.dropout_stats`` was run.
    key
        The ``key_added`` of ``pp.dropout_stats``.
    log
        Use log-spaced bins and a log x axis for the library-size histogram.
    bins
        Number of histogram bins.
    figsize
        Figure size in inches; None uses (10, 4).
    show
        Call ``matplotlib.pyplot.show()`` after drawing if True. None or False do not.

    Returns
    -------
    The matplotlib Figure with two Axes, ``fig.axes[0]`` (zeros) and ``fig.axes[1]`` (library
    sizes). A Figure, not Axes, because the plot has two panels; always returned.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or ``key`` is not a string.
    ValueError
        If ``bins`` is not a positive integer.
    KeyError
        If ``key`` is not in ``adata.uns`` (the message lists up to 5 keys that exist), or the
        ``zeros``, ``expected_zeros`` or ``total_counts`` columns are missing from ``adata.obs``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=100, n_genes=200)
    >>> sd.pp.dropout_stats(adata)
    >>> len(sd.pl.dropout_qc(adata).axes)
    2
    """
    check_adata(adata)
    if isinstance(bins, bool) or not isinstance(bins, int | np.integer) or bins < 1:
        msg = f"`bins` must be a positive integer, got {bins!r}."
        raise ValueError(msg)
    if not isinstance(log, bool | np.bool_):
        msg = f"`log` must be a bool, got {log!r}."
        raise TypeError(msg)
    cells = dropout_cells(adata, key=key)
    for col in ("zeros", "expected_zeros", "total_counts"):
        if col not in cells.columns:
            msg = missing_key_message("column", f"{key}_{col}", adata.obs.columns, "obs")
            raise KeyError(msg)

    import matplotlib.pyplot as plt

    fig, (ax_z, ax_l) = plt.subplots(1, 2, figsize=figsize or (10.0, 4.0), layout="constrained")

    observed = cells["zeros"].to_numpy(dtype=np.float64)
    n = observed.size
    size = float(np.clip(3000.0 / max(n, 1), 1.0, 15.0))
    series = [("expected_zeros", "depth-adjusted NB", _NB)]
    if "expected_zeros_poisson" in cells.columns:
        series.append(("expected_zeros_poisson", "Poisson", _POISSON))
    lo, hi = np.inf, -np.inf
    for col, label, color in series:
        expected = cells[col].to_numpy(dtype=np.float64)
        ok = np.isfinite(expected) & np.isfinite(observed)
        rmse = float(np.sqrt(np.mean((observed[ok] - expected[ok]) ** 2))) if ok.any() else np.nan
        ax_z.scatter(
            expected[ok],
            observed[ok],
            s=size,
            c=color,
            alpha=0.6,
            linewidths=0,
            label=f"{label} (RMSE {rmse:.3g})",
        )
        if ok.any():
            lo = min(lo, expected[ok].min(), observed[ok].min())
            hi = max(hi, expected[ok].max(), observed[ok].max())
    if np.isfinite(lo) and np.isfinite(hi):
        ax_z.plot([lo, hi], [lo, hi], color="0.2", lw=1, ls=":", label="observed = expected")
    ax_z.set_xlabel("expected zeros per cell")
    ax_z.set_ylabel("observed zeros per cell")
    ax_z.set_title("zeros per cell")
    ax_z.legend(loc="upper left", frameon=False, fontsize="small")

    lib = cells["total_counts"].to_numpy(dtype=np.float64)
    lib = lib[np.isfinite(lib)]
    use_log = log and lib.size > 0 and bool((lib > 0).all())
    if lib.size:
        edges = (
            np.geomspace(lib.min(), lib.max(), bins + 1)
            if use_log and lib.max() > lib.min()
            else bins
        )
        ax_l.hist(lib, bins=edges, color=_GREY, edgecolor="white", linewidth=0.3)
        med = float(np.median(lib))
        ax_l.axvline(med, color=_HIGHLIGHT, lw=1.5, label=f"median {med:.4g}")
        ax_l.legend(loc="upper right", frameon=False, fontsize="small")
    if use_log:
        ax_l.set_xscale("log")
    ax_l.set_xlabel("library size (total counts)")
    ax_l.set_ylabel("cells")
    ax_l.set_title(f"library size ({lib.size} cells)")
    if show:
        plt.show()
    return fig
