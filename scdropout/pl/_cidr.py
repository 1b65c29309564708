"""Figures of the results ``tl.cidr`` stored (Lin, Troup & Ho, Genome Biology 2017).

Nothing is recomputed: thresholds, candidate counts, eigenvalues, variation, n_pcs and CH indices
come from ``adata.obs`` / ``adata.uns``; the only thing read from the matrix is the expression
of the few cells whose distribution is drawn next to their stored threshold.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from scdropout import _keys
from scdropout._utils import check_positive_int, missing_key_message

from ._common import stored_results

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def _results(adata: Any, key: str) -> Mapping[str, Any]:
    return stored_results(adata, key, marker="eigenvalues", producer="tl.cidr")


def _cell_log_values(adata: Any, params: Mapping[str, Any], cell: int) -> np.ndarray:
    """log2(TPM + 1) of one cell over the genes CIDR used (its nonzero values)."""
    layer = params.get("layer", "None")
    X = adata.X if layer == "None" else adata.layers[layer]
    genes = params.get("genes", "None")
    row = X[cell]
    row = np.asarray(row.toarray() if hasattr(row, "toarray") else row, dtype=np.float64).ravel()
    if genes != "None":
        row = row[np.asarray(adata.var[genes], dtype=bool)]
    if params.get("tag_type", "raw") == "cpm":
        return np.log2(row[row > 0] + 1.0)
    return np.log2(row[row > 0] / row.sum() * 1e6 + 1.0)


def cidr_thresholds(
    adata: Any,
    *,
    key: str = _keys.CIDR,
    cells: Sequence[int | str] | None = None,
    bins: int = 50,
    figsize: tuple[float, float] | None = None,
    show: bool | None = None,
) -> Figure:
    """Per-cell dropout-candidate thresholds of ``tl.cidr`` (Lin, Troup & Ho 2017).

    Left: histogram of the thresholds T_j (``obs[f"{key}_threshold"]``); with the fast branch
    (more than 2,000 cells) all cells share one value. Right: for a few cells, the distribution
    of their nonzero log2(TPM + 1) values with their stored threshold as a vertical line;
    values left of the line are dropout candidates.

    Parameters
    ----------
    adata
        AnnData on which ``tl.cidr`` was run.
    key
        The ``key_added`` of ``tl.cidr``.
    cells
        Cells (positions or obs names) drawn on the right; None takes the cells with the
        smallest, median and largest threshold.
    bins
        Histogram bins.
    figsize
        Figure size; None uses (10, 4).
    show
        Call ``matplotlib.pyplot.show()`` after drawing if True.

    Returns
    -------
    Figure
        The figure with its two Axes.

    Raises
    ------
    KeyError
        If ``tl.cidr`` results under ``key`` are missing, or ``cells`` names an unknown cell.
    IndexError
        If ``cells`` holds a position outside the cells.
    ValueError
        If ``bins`` is not positive, ``cells`` is empty, or no threshold is finite.
    """
    import matplotlib.pyplot as plt

    res = _results(adata, key)
    col = f"{key}_threshold"
    if col not in adata.obs.columns:
        raise KeyError(missing_key_message("key", col, adata.obs.columns, "obs"))
    thr = np.asarray(adata.obs[col], dtype=np.float64)
    check_positive_int(bins, name="bins")
    finite = np.flatnonzero(np.isfinite(thr))
    if finite.size == 0:
        msg = f"`adata.obs[{col!r}]` has no finite threshold to draw."
        raise ValueError(msg)
    if cells is None:  # smallest, median and largest of the finite thresholds
        order = finite[np.argsort(thr[finite], kind="stable")]
        picks = list(dict.fromkeys([order[0], order[order.size // 2], order[-1]]))
    else:
        picks = _cell_positions(adata, cells)
    fig, (ax_t, ax_c) = plt.subplots(1, 2, figsize=figsize or (10.0, 4.0), layout="constrained")
    ax_t.hist(thr[finite], bins=bins, color="0.6")
    ax_t.set_xlabel("dropout-candidate threshold (log2 TPM + 1)")
    ax_t.set_ylabel("cells")
    ax_t.set_title("fast branch: one median threshold" if res.get("fast_thresholds") else "")
    params = res.get("params", {})
    for i, cell in enumerate(picks):
        colour = f"C{i}"
        vals = _cell_log_values(adata, params, cell)
        ax_c.hist(vals, bins=bins, histtype="step", color=colour, label=str(adata.obs_names[cell]))
        ax_c.axvline(thr[cell], color=colour, linestyle="--")
    ax_c.set_xlabel("log2(TPM + 1) of nonzero entries")
    ax_c.set_ylabel("genes")
    ax_c.legend(title="cell (dashed: threshold)", fontsize="small")
    if show:
        plt.show()
    return fig


def cidr_eigenvalues(
    adata: Any,
    *,
    key: str = _keys.CIDR,
    n_show: int = 30,
    ax: Axes | None = None,
    show: bool | None = None,
) -> Axes:
    """Scree of CIDR's principal coordinates with the chosen n_pcs (Lin, Troup & Ho 2017).

    Proportion of variation of the first ``n_show`` coordinates (``uns[key]['variation']``,
    positive eigenvalues over their sum), with a vertical line after the ``n_pcs`` used for
    clustering.

    Parameters
    ----------
    adata
        AnnData on which ``tl.cidr`` was run.
    key
        The ``key_added`` of ``tl.cidr``.
    n_show
        Number of coordinates drawn.
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
        If ``tl.cidr`` results under ``key`` are missing.
    ValueError, TypeError
        If ``n_show`` is not a positive integer.
    """
    import matplotlib.pyplot as plt

    check_positive_int(n_show, name="n_show")
    res = _results(adata, key)
    var = np.asarray(res["variation"], dtype=np.float64)[:n_show]
    npc = int(res["n_pcs"])
    if ax is None:
        _, ax = plt.subplots(figsize=(5.0, 4.0))
    x = np.arange(1, var.size + 1)
    ax.plot(x, var, "o-", color="0.4", markersize=4)
    ax.plot(x[:npc], var[:npc], "o", color="tab:red", label=f"n_pcs = {npc}")
    ax.axvline(npc + 0.5, color="tab:red", linestyle="--")
    ax.set_xlabel("principal coordinate")
    ax.set_ylabel("proportion of variation")
    ax.legend()
    if show:
        plt.show()
    return ax


def _cell_positions(adata: Any, cells: Any) -> list[int]:
    """Return the positions of ``cells`` (obs names or integer positions), checked."""
    if isinstance(cells, str | int | np.integer):
        cells = [cells]  # one cell, not the characters of its name
    names = adata.obs_names
    out: list[int] = []
    for c in cells:
        if isinstance(c, str):
            if c not in names:
                msg = f"`cells` names {c!r}, which is not in `adata.obs_names`."
                raise KeyError(msg)
            out.append(int(np.flatnonzero(names == c)[0]))
        elif isinstance(c, int | np.integer) and not isinstance(c, bool):
            if not -adata.n_obs <= int(c) < adata.n_obs:
                msg = f"`cells` holds position {int(c)}, outside 0..{adata.n_obs - 1}."
                raise IndexError(msg)
            out.append(int(c) % adata.n_obs)
        else:
            msg = f"`cells` must hold obs names or integer positions, got {c!r}."
            raise TypeError(msg)
    if not out:
        msg = "`cells` is empty; pass None for the default cells or at least one cell."
        raise ValueError(msg)
    return out
