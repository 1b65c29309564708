"""Reporters for the results of ``pp.dropout_stats`` and ``pp.dropout_genes``.

They read what the annotators stored in ``adata.var``, ``adata.obs`` and ``adata.uns`` and return
a fresh :class:`pandas.DataFrame` with unprefixed column names. They never write into ``adata``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from scdropout import _keys
from scdropout._utils import check_adata, missing_key_message, written_by

GENE_STATS = _keys.DROPOUT_VAR_COLUMNS
CELL_STATS = _keys.DROPOUT_OBS_COLUMNS
GENE_SELECTION = _keys.DROPOUT_GENES_VAR_COLUMNS


def _check_key(adata: Any, key: Any, *, function: str) -> None:
    """Validate ``key`` and raise ``KeyError`` (listing up to 5 keys) if ``uns`` lacks it."""
    check_adata(adata)
    if not isinstance(key, str):
        msg = f"`key` must be a string, got {key!r}."
        raise TypeError(msg)
    if key not in adata.uns:
        msg = missing_key_message("key", key, adata.uns.keys(), "uns")
        msg += f" Run `scdropout.pp.{function}(adata, key_added={key!r})` first."
        raise KeyError(msg)
    owner = written_by(adata, "uns", key)
    if owner is not None and owner != function:
        msg = (
            f"`adata.uns[{key!r}]` holds results of `{owner}`, not of `pp.{function}`; pass the "
            f"`key_added` you gave `scdropout.pp.{function}`."
        )
        raise KeyError(msg)


def _collect(
    frame: pd.DataFrame, key: str, suffixes: Sequence[str], *, where: str, function: str
) -> pd.DataFrame:
    """Return the ``f"{key}_{suffix}"`` columns of ``frame`` that exist, renamed to ``suffix``."""
    present = [s for s in suffixes if f"{key}_{s}" in frame.columns]
    if not present:
        msg = missing_key_message("column", f"{key}_{suffixes[0]}", frame.columns, where)
        msg += (
            f" `adata.{where}` has none of the `{key}_*` columns that "
            f"`scdropout.pp.{function}(adata, key_added={key!r})` writes; run it first or pass "
            "the `key` you used."
        )
        raise KeyError(msg)
    out = frame.loc[:, [f"{key}_{s}" for s in present]].copy(deep=True)
    out.columns = pd.Index(present)
    return out


def dropout_stats(adata: Any, *, key: str = _keys.DROPOUT_STATS) -> pd.DataFrame:
    """Per-gene dropout statistics stored by :func:`scdropout.pp.dropout_stats`.

    Reads the ``adata.var[f"{key}_*"]`` columns written by ``pp.dropout_stats`` (Andrews &
    Hemberg 2019, the depth-adjusted negative binomial of M3Drop's NBumi) and returns them with
    the prefix removed. Nothing is computed and nothing is written.

    Parameters
    ----------
    adata
        Annotated data matrix on which ``pp.dropout_stats`` was run.
    key
        The ``key_added`` used for ``pp.dropout_stats``; its results live in ``adata.uns[key]``
        and in the ``adata.var[f"{key}_*"]`` columns.

    Returns
    -------
    A DataFrame indexed by ``adata.var_names`` with one column per stored statistic, in this
    order where present: ``n_detected``, ``detection_rate``, ``rate`` (observed dropout rate),
    ``mean``, ``var``, ``mean_nonzero``, ``mean_normalized`` (mean of the counts scaled to the
    median library size, the x of the Michaelis–Menten fit), ``expected_poisson``, ``expected``
    (depth-adjusted NB expected dropout rate), ``nb_size``, ``excess``, ``zscore``, ``pval``,
    ``qval``. The values
    are copies: editing the table does not change ``adata``.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or ``key`` is not a string.
    KeyError
        If ``adata.uns`` has no ``key`` (the message lists up to 5 keys that exist), or if
        ``adata.var`` holds none of its columns.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=100, n_genes=200)
    >>> sd.pp.dropout_stats(adata)
    >>> sd.get.dropout_stats(adata)[["mean", "rate", "expected"]].shape
    (200, 3)
    """
    _check_key(adata, key, function="dropout_stats")
    return _collect(adata.var, key, GENE_STATS, where="var", function="dropout_stats")


def dropout_cells(adata: Any, *, key: str = _keys.DROPOUT_STATS) -> pd.DataFrame:
    """Per-cell dropout statistics stored by :func:`scdropout.pp.dropout_stats`.

    Reads the ``adata.obs[f"{key}_*"]`` columns (observed zeros per cell against the zeros the
    depth-adjusted NB and the Poisson models expect, as in M3Drop's ``NBumiCheckFit``) and
    returns them with the prefix removed. Nothing is computed and nothing is written.

    Parameters
    ----------
    adata
        Annotated data matrix on which ``pp.dropout_stats`` was run.
    key
        The ``key_added`` used for ``pp.dropout_stats``.

    Returns
    -------
    A DataFrame indexed by ``adata.obs_names`` with, where present, the columns
    ``total_counts`` (library size), ``n_detected`` (genes with a nonzero count), ``zeros``
    (observed zeros), ``expected_zeros`` (under the depth-adjusted NB) and
    ``expected_zeros_poisson``. The values are copies.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or ``key`` is not a string.
    KeyError
        If ``adata.uns`` has no ``key`` (the message lists up to 5 keys that exist), or if
        ``adata.obs`` holds none of its columns.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=100, n_genes=200)
    >>> sd.pp.dropout_stats(adata)
    >>> cells = sd.get.dropout_cells(adata)
    >>> bool((cells["zeros"] <= adata.n_vars).all())
    True
    """
    _check_key(adata, key, function="dropout_stats")
    return _collect(adata.obs, key, CELL_STATS, where="obs", function="dropout_stats")


def dropout_genes(
    adata: Any, *, key: str = _keys.DROPOUT_GENES, selected_only: bool = False
) -> pd.DataFrame:
    """Dropout-based gene ranking stored by :func:`scdropout.pp.dropout_genes`.

    Reads the ``adata.var[f"{key}_*"]`` columns written by ``pp.dropout_genes`` (M3Drop's
    NBumi combined-dropout test or its Michaelis–Menten test, Andrews & Hemberg 2019) and
    returns them sorted by rank. Nothing is computed and nothing is written.

    Parameters
    ----------
    adata
        Annotated data matrix on which ``pp.dropout_genes`` was run.
    key
        The ``key_added`` used for ``pp.dropout_genes``.
    selected_only
        If True, keep only the genes with ``selected`` True; otherwise return every gene,
        unranked genes (those the test could not score) last.

    Returns
    -------
    A DataFrame indexed by gene name with, where present, the columns ``rank`` (1 = strongest),
    ``effect``, ``pval``, ``qval`` and ``selected`` (bool), sorted by ``rank`` ascending (ties and
    missing ranks keep ``adata.var`` order). The values are copies.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData, ``key`` is not a string or ``selected_only``
        is not a bool.
    KeyError
        If ``adata.uns`` has no ``key`` (the message lists up to 5 keys that exist), or if
        ``adata.var`` holds none of its columns, or ``selected_only=True`` and there is no
        ``selected`` column.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=100, n_genes=200)
    >>> sd.pp.dropout_genes(adata, n_top_genes=20)
    >>> len(sd.get.dropout_genes(adata, selected_only=True))
    20
    """
    if not isinstance(selected_only, bool | np.bool_):
        msg = f"`selected_only` must be a bool, got {selected_only!r}."
        raise TypeError(msg)
    _check_key(adata, key, function="dropout_genes")
    table = _collect(adata.var, key, GENE_SELECTION, where="var", function="dropout_genes")
    if "selected" in table.columns:
        table["selected"] = table["selected"].astype(bool)
    if "rank" in table.columns:
        table = table.sort_values("rank", kind="stable", na_position="last")
    if selected_only:
        if "selected" not in table.columns:
            msg = (
                f"`adata.var[{key + '_selected'!r}]` does not exist, so `selected_only=True` "
                "cannot be applied; pass `selected_only=False`."
            )
            raise KeyError(msg)
        table = table.loc[table["selected"].to_numpy()]
    return table
