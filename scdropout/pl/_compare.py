"""Figures of the clustering comparison stored by ``tl.compare_clusterings``.

Both functions draw stored results only: the table comes from :func:`scdropout.get.comparison`,
the embeddings and cluster labels from the ``obsm``/``obs`` keys ``compare_clusterings`` wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from scdropout import _keys
from scdropout._utils import check_adata, check_choice, check_positive_int, missing_key_message
from scdropout.get import comparison

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: axis names of each method's first two coordinates
_AXIS = {"pca": "PC", "tsne": "t-SNE ", "cidr": "PCoA ", "dae": "latent "}
#: metrics with one value per method and rule, and with one value per method
_PER_RULE = ("ari", "nmi", "silhouette", "n_clusters")
_PER_METHOD = ("mean_agreement", "seconds", "peak_memory_mb")
_LABELS = {
    "ari": "adjusted Rand index",
    "nmi": "normalised mutual information",
    "silhouette": "silhouette width (own space)",
    "n_clusters": "number of clusters",
    "mean_agreement": "mean ARI to the other methods",
    "seconds": "seconds (embedding + clustering)",
    "peak_memory_mb": "peak memory rise (MB)",
}
_NA_COLOR = "0.8"


def _palette(adata: Any, column: str, categories: pd.Index) -> list[Any]:
    """Colours of ``categories``: scanpy's ``uns[f"{column}_colors"]`` if it fits, else tab10/20."""
    import matplotlib as mpl

    stored = adata.uns.get(f"{column}_colors")
    if stored is not None and len(stored) == len(categories):
        return list(np.asarray(stored))
    cmap = mpl.colormaps["tab10" if len(categories) <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(len(categories))]


def _rules_run(adata: Any, key: str) -> list[str]:
    rec = adata.uns[key]
    rules = [str(r) for r in np.asarray(rec.get("rules", []))]
    skipped = rec.get("rules_skipped", {})
    return [r for r in rules if r not in skipped]


def compare_embeddings(
    adata: Any,
    *,
    key: str = _keys.COMPARE,
    color: str | None = None,
    rule: str = "ward",
    ncols: int = 4,
    size: float | None = None,
    legend: bool = True,
    panel_size: tuple[float, float] = (3.6, 3.4),
    show: bool | None = None,
) -> Figure:
    """Grid of the compared embeddings, one panel per method, coloured by cluster or label.

    The embedding panels of CIDR's paper (Lin, Troup & Ho 2017, Fig. 2): each method of
    :func:`scdropout.tl.compare_clusterings` drawn in its first two coordinates (t-SNE as is;
    PCA, CIDR's principal coordinates and the autoencoder latent space by their first two
    axes; a 1-D embedding against zero). Cells are coloured by that method's own clusters
    under ``rule`` (the title gives k), or, when ``color`` names an ``adata.obs`` column (e.g.
    the ``labels_key``), by that column in every panel, so the methods can be compared by
    eye. A skipped method gets an empty panel with the reason. Nothing is recomputed.

    Parameters
    ----------
    adata
        Annotated data matrix on which ``tl.compare_clusterings`` was run.
    key
        The ``key_added`` of ``tl.compare_clusterings``.
    color
        None or ``"rule"``: each method's clusters under ``rule``. Otherwise an ``adata.obs``
        column: categorical columns use ``adata.uns[f"{color}_colors"]`` when it has one colour
        per category (scanpy's convention), else tab10/tab20; numeric columns use viridis
        with a colour bar.
    rule
        The clustering rule whose clusters colour the cells (``"ward"`` or ``"leiden"``) when
        ``color`` is None or ``"rule"``.
    ncols
        Panels per row.
    size
        Marker size; None picks one from the number of cells.
    legend
        Draw a legend of the ``color`` column's categories (at most 30) beside the grid.
    panel_size
        Width and height of one panel in inches.
    show
        Call ``matplotlib.pyplot.show()`` after drawing if True. None or False do not.

    Returns
    -------
    The matplotlib Figure; ``fig.axes`` holds one Axes per compared method, in the order of
    the comparison (a colour bar for a numeric ``color`` adds one Axes after them). A
    Figure, since the plot has several panels; always returned.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or ``key``/``color`` are not strings.
    KeyError
        If ``key`` is not in ``adata.uns``, ``color`` is not an ``adata.obs`` column, or an
        embedding or cluster column written by ``tl.compare_clusterings`` is missing (the
        message lists up to 5 keys that exist).
    ValueError
        If ``rule`` was not run, ``ncols`` is not a positive integer, or ``adata.uns[key]`` is
        not a comparison result.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=60, n_genes=80)
    >>> _ = sd.tl.compare_clusterings(
    ...     adata, methods=("pca", "cidr"), rules="ward", progress_bar=False
    ... )
    >>> fig = sd.pl.compare_embeddings(adata, color="group")
    >>> [ax.get_title() for ax in fig.axes]
    ['pca', 'cidr']
    """
    table = comparison(adata, key=key)
    check_positive_int(ncols, name="ncols")
    if not isinstance(legend, bool | np.bool_):
        msg = f"`legend` must be a bool, got {legend!r}."
        raise TypeError(msg)
    by_rule = color is None or color == "rule"
    if by_rule:
        skipped = adata.uns[key].get("rules_skipped", {})
        if isinstance(rule, str) and rule in skipped:
            msg = f"`rule={rule!r}` did not run in this comparison ({skipped[rule]}); " + (
                f"choose one of {', '.join(map(repr, _rules_run(adata, key)))}."
                if _rules_run(adata, key)
                else "no rule ran, so there are no clusters to colour by; pass `color=`."
            )
            raise ValueError(msg)
        check_choice(rule, name="rule", choices=_rules_run(adata, key))
    else:
        if not isinstance(color, str):
            msg = f"`color` must be None, 'rule' or an `adata.obs` column name, got {color!r}."
            raise TypeError(msg)
        if color not in adata.obs.columns:
            raise KeyError(missing_key_message("color", color, adata.obs.columns, "obs"))
    methods = list(table.index)
    ok = [m for m in methods if table.loc[m, "status"] == "ok"]
    for m in ok:
        if f"X_{key}_{m}" not in adata.obsm:
            raise KeyError(missing_key_message("key", f"X_{key}_{m}", adata.obsm.keys(), "obsm"))
        if by_rule and f"{key}_{m}_{rule}" not in adata.obs.columns:
            raise KeyError(
                missing_key_message("rule", f"{key}_{m}_{rule}", adata.obs.columns, "obs")
            )

    import matplotlib.pyplot as plt

    n = len(methods)
    nc = min(ncols, n)
    nr = int(np.ceil(n / nc))
    fig, grid = plt.subplots(
        nr,
        nc,
        figsize=(panel_size[0] * nc + (1.6 if legend and not by_rule else 0), panel_size[1] * nr),
        squeeze=False,
        layout="constrained",
    )
    axes = grid.ravel()
    for extra in axes[n:]:
        extra.remove()
    if size is None:
        size = float(np.clip(6000.0 / max(adata.n_obs, 1), 1.0, 30.0))

    numeric = False
    handles: list[Any] = []
    mappable = None
    cat = None
    if not by_rule:
        col = adata.obs[color]
        numeric = (
            pd.api.types.is_numeric_dtype(col)
            and not pd.api.types.is_bool_dtype(col)  # True/False are categories, as in scanpy
            and not isinstance(col.dtype, pd.CategoricalDtype)
        )
        if not numeric:
            # a categorical keeps its category order (which scanpy's `{color}_colors` follows)
            cat = (
                col.array
                if isinstance(col.dtype, pd.CategoricalDtype)
                else pd.Categorical(col.astype(object).where(col.notna(), None))
            )
            colors = _palette(adata, color, cat.categories)
            codes = cat.codes
    for ax, m in zip(axes, methods, strict=False):
        ax.set_xticks([])
        ax.set_yticks([])
        if m not in ok:
            ax.set_title(m)
            ax.text(
                0.5,
                0.5,
                str(table.loc[m, "status"]),
                ha="center",
                va="center",
                wrap=True,
                fontsize="small",
                transform=ax.transAxes,
            )
            continue
        emb = np.asarray(adata.obsm[f"X_{key}_{m}"], dtype=np.float64)
        x = emb[:, 0]
        y = emb[:, 1] if emb.shape[1] > 1 else np.zeros_like(x)
        axis = _AXIS.get(m, f"{m} ")
        ax.set_xlabel(f"{axis}1")
        ax.set_ylabel(f"{axis}2" if emb.shape[1] > 1 else "")
        if by_rule:
            lab = pd.Categorical(adata.obs[f"{key}_{m}_{rule}"])
            pal = _palette(adata, f"{key}_{m}_{rule}", lab.categories)
            c = [pal[i] if i >= 0 else _NA_COLOR for i in lab.codes]
            ax.scatter(x, y, s=size, c=c, linewidths=0)
            ax.set_title(m)
            ax.text(
                0.02,
                0.98,
                f"{rule}: k={len(lab.categories)}",
                ha="left",
                va="top",
                fontsize="small",
                transform=ax.transAxes,
            )
        elif numeric:
            vals = pd.to_numeric(adata.obs[color], errors="coerce").to_numpy(dtype=np.float64)
            missing = ~np.isfinite(vals)
            if missing.any():  # viridis would draw them transparent: grey, as for categories
                ax.scatter(x[missing], y[missing], s=size, c=_NA_COLOR, linewidths=0)
            mappable = ax.scatter(
                x[~missing], y[~missing], s=size, c=vals[~missing], cmap="viridis", linewidths=0
            )
            ax.set_title(m)
        else:
            c = [colors[i] if i >= 0 else _NA_COLOR for i in codes]
            ax.scatter(x, y, s=size, c=c, linewidths=0)
            ax.set_title(m)
    if not by_rule and numeric and mappable is not None:
        fig.colorbar(mappable, ax=list(axes[:n]), label=color, shrink=0.8)
    elif cat is not None and legend and len(cat.categories) <= 30:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], ls="", marker="o", color=colors[i], label=str(c_))
            for i, c_ in enumerate(cat.categories)
        ]
        fig.legend(handles=handles, title=color, loc="outside right upper", frameon=False)
    if show:
        plt.show()
    return fig


def compare_scores(
    adata: Any,
    *,
    key: str = _keys.COMPARE,
    metric: str = "ari",
    ax: Axes | None = None,
    title: str | None = None,
    show: bool | None = None,
) -> Figure:
    """Plot one score of the clustering comparison as grouped bars, method x rule.

    The score panel of CIDR's paper (Lin, Troup & Ho 2017, Fig. 2): for each method of
    :func:`scdropout.tl.compare_clusterings`, one bar per clustering rule (``ari``, ``nmi``,
    ``silhouette``, ``n_clusters``), or one bar per method for scores without a rule
    (``mean_agreement``, ``seconds``, ``peak_memory_mb``). Values are printed on the bars;
    skipped methods have no bar. Read from :func:`scdropout.get.comparison`; nothing is
    recomputed.

    Parameters
    ----------
    adata
        Annotated data matrix on which ``tl.compare_clusterings`` was run.
    key
        The ``key_added`` of ``tl.compare_clusterings``.
    metric
        ``"ari"`` or ``"nmi"`` (against the ``labels_key`` given to ``compare_clusterings``),
        ``"silhouette"`` (each method in its own space), ``"n_clusters"``,
        ``"mean_agreement"`` (mean ARI to the other methods), ``"seconds"`` or
        ``"peak_memory_mb"``.
    ax
        Axes to draw into; None creates a new figure.
    title
        Axes title; None leaves it empty.
    show
        Call ``matplotlib.pyplot.show()`` after drawing if True. None or False do not.

    Returns
    -------
    The matplotlib Figure holding the chart (``ax.figure`` when ``ax`` is given; a Figure
    rather than Axes so that it can be saved directly). The Axes has one bar container per
    rule (per-rule metrics) or a single one, each with one bar per method, and a legend of
    the rules.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or ``key`` is not a string.
    KeyError
        If ``key`` is not in ``adata.uns`` (the message lists up to 5 keys that exist).
    ValueError
        If ``metric`` is unknown, or ``"ari"``/``"nmi"`` were requested for a comparison run
        without ``labels_key``.

    Examples
    --------
    >>> import matplotlib
    >>> matplotlib.use("Agg")
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=60, n_genes=80)
    >>> _ = sd.tl.compare_clusterings(
    ...     adata, methods=("pca", "cidr"), labels_key="group", rules="ward", progress_bar=False
    ... )
    >>> fig = sd.pl.compare_scores(adata, metric="ari")
    >>> len(fig.axes[0].containers)
    1
    """
    check_adata(adata)
    check_choice(metric, name="metric", choices=_PER_RULE + _PER_METHOD)
    table = comparison(adata, key=key)
    methods = list(table.index)
    if metric in _PER_RULE:
        run = set(_rules_run(adata, key))  # a skipped rule (say leiden) gets no bars
        cols = [
            c
            for c in table.columns
            if c.startswith(f"{metric}_") and c.removeprefix(f"{metric}_") in run
        ]
        series = {c.removeprefix(f"{metric}_"): table[c] for c in cols}
    else:
        series = {"": table[metric]}
    values = {r: pd.to_numeric(s, errors="coerce").astype(np.float64) for r, s in series.items()}
    if metric in ("ari", "nmi") and all(v.isna().all() for v in values.values()):
        params = adata.uns[key].get("params", {})
        labels = params.get("labels_key") if isinstance(params, Mapping) else None
        if labels is None or (isinstance(labels, str) and labels in ("", "None")):
            msg = (
                f"`adata.uns[{key!r}]` has no {metric.upper()} scores: `compare_clusterings` "
                "ran without `labels_key`. Pass it, or plot `metric='mean_agreement'` or "
                "`metric='silhouette'`."
            )
        else:
            msg = (
                f"`adata.uns[{key!r}]` has no {metric.upper()} scores although `labels_key="
                f"{labels!r}` was given: no method produced clusters (every method or every "
                "rule was skipped; see `metric='n_clusters'` or `get.comparison`)."
            )
        raise ValueError(msg)

    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(1.2 + 1.1 * len(methods) * max(1, len(values)) ** 0.5, 3.8))
    x = np.arange(len(methods), dtype=np.float64)
    width = 0.8 / max(1, len(values))
    fmt = "%d" if metric == "n_clusters" else ("%.1f" if metric in _PER_METHOD[1:] else "%.2f")
    for i, (rule, vals) in enumerate(values.items()):
        heights = vals.reindex(methods).to_numpy()
        offset = (i - (len(values) - 1) / 2) * width
        shown = np.where(np.isfinite(heights), heights, 0.0)
        bars = ax.bar(x + offset, shown, width * 0.95, label=rule or None)
        for bar, h in zip(bars, heights, strict=True):
            bar.set_visible(bool(np.isfinite(h)))
        ax.bar_label(
            bars,
            labels=[(fmt % h) if np.isfinite(h) else "" for h in heights],
            fontsize="x-small",
            padding=1,
        )
    ax.set_xticks(x)
    ax.set_xticklabels(
        [m if table.loc[m, "status"] == "ok" else f"{m}\n(skipped)" for m in methods]
    )
    ax.set_ylabel(_LABELS[metric])
    if metric in ("ari", "nmi", "mean_agreement"):
        lows = [float(np.nanmin(v)) for v in values.values() if v.notna().any()]
        ax.set_ylim(min([0.0, *lows]) - 0.02, 1.08)
    ax.axhline(0, color="0.3", lw=0.6)
    if metric in _PER_RULE:
        ax.legend(title="rule", frameon=False, fontsize="small")
    if title is not None:
        ax.set_title(title)
    if show:
        plt.show()
    return ax.figure
