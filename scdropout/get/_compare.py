"""Reporter for the results of ``tl.compare_clusterings``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from scdropout import _keys
from scdropout._utils import check_adata, missing_key_message


def _stored(adata: Any, key: Any) -> Mapping[str, Any]:
    """Return ``adata.uns[key]`` after checking it holds a comparison."""
    check_adata(adata)
    if not isinstance(key, str):
        msg = f"`key` must be a string, got {key!r}."
        raise TypeError(msg)
    if key not in adata.uns:
        msg = missing_key_message("key", key, adata.uns.keys(), "uns")
        msg += f" Run `scdropout.tl.compare_clusterings(adata, key_added={key!r})` first."
        raise KeyError(msg)
    rec = adata.uns[key]
    table = rec.get("table") if isinstance(rec, Mapping) else None
    if not isinstance(table, Mapping) or not {"index", "columns", "data"} <= set(table):
        msg = (
            f"`adata.uns[{key!r}]` is not a result of `scdropout.tl.compare_clusterings` (it "
            "has no `table` with `index`, `columns` and `data`); pass the `key_added` you used."
        )
        raise ValueError(msg)
    return rec


def comparison(adata: Any, *, key: str = _keys.COMPARE) -> pd.DataFrame:
    """Table of the clustering comparison stored by :func:`scdropout.tl.compare_clusterings`.

    Rebuilds, from ``adata.uns[key]['table']``, the DataFrame that ``compare_clusterings``
    returned (Lin, Troup & Ho 2017 compare CIDR with PCA and t-SNE this way). Nothing is
    computed and nothing is written.

    Parameters
    ----------
    adata
        Annotated data matrix on which ``tl.compare_clusterings`` was run.
    key
        The ``key_added`` used for ``tl.compare_clusterings``.

    Returns
    -------
    A new DataFrame indexed by method (index name ``"method"``), with the columns of
    ``tl.compare_clusterings``' table in their stored order: ``status``, ``n_clusters_<rule>``
    (nullable ``Int64``), ``ari_<rule>``, ``nmi_<rule>``, ``silhouette_<rule>``,
    ``mean_agreement``, ``seconds`` and ``peak_memory_mb`` (float64). Editing it does not
    change ``adata``.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or ``key`` is not a string.
    KeyError
        If ``adata.uns`` has no ``key`` (the message lists up to 5 keys that exist).
    ValueError
        If ``adata.uns[key]`` is not a comparison result.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=60, n_genes=80)
    >>> _ = sd.tl.compare_clusterings(adata, methods="pca", rules="ward", progress_bar=False)
    >>> sd.get.comparison(adata).loc["pca", "status"]
    'ok'
    """
    table = _stored(adata, key)["table"]
    index = pd.Index([str(m) for m in np.asarray(table["index"])], name="method")
    data = table["data"]
    out = pd.DataFrame(index=index)
    for col in (str(c) for c in np.asarray(table["columns"])):
        values = np.asarray(data[col])
        if col == "status":
            out[col] = pd.Series([str(v) for v in values], index=index, dtype=object)
        elif col.startswith("n_clusters_"):
            out[col] = pd.array(
                [pd.NA if np.isnan(v) else round(v) for v in values.astype(float)], dtype="Int64"
            )
        else:
            out[col] = values.astype(np.float64, copy=True)
    return out
