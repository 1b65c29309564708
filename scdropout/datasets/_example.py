"""The example 10X sample shipped in ``data/example_10x/``, read with the io readers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Literal

import pandas as pd

from scdropout._utils import check_choice
from scdropout.io import read_10x_h5, read_10x_mtx

if TYPE_CHECKING:
    from anndata import AnnData

_DATA_DIR = Path(__file__).resolve().parents[2] / "data" / "example_10x"


def example(*, fmt: Literal["h5", "mtx"] = "h5") -> AnnData:
    """Load the example sample: 1,500 simulated cells x 2,000 genes in 5 known groups.

    The sample ships with the source repository as a Cell Ranger v3 ``outs/`` folder
    (``data/example_10x/``, made by ``python data/make_example.py`` from
    ``datasets.synthetic(n_cells=1500, n_genes=2000, n_groups=5, n_markers=30,
    library_size=3000, random_state=0)``; see ``data/README.md``). Both formats hold the same
    counts.

    Parameters
    ----------
    fmt
        ``"h5"`` reads ``outs/filtered_feature_bc_matrix.h5`` with :func:`scdropout.io.read_10x_h5`;
        ``"mtx"`` reads the ``outs/filtered_feature_bc_matrix/`` folder with
        :func:`scdropout.io.read_10x_mtx`.

    Returns
    -------
    AnnData as the io readers return it (CSR float32 raw counts, barcodes, gene symbols,
    ``var['gene_ids']``, ``var['feature_types']``), plus ``obs['group']``: the planted group of
    each cell from ``labels.csv`` (categorical, "0".."4", 300 cells each).

    Raises
    ------
    FileNotFoundError
        If ``data/example_10x/`` is not there (an installed wheel does not ship it).
    ValueError
        If ``fmt`` is not "h5" or "mtx", or ``labels.csv`` does not cover every barcode.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.datasets.example()
    >>> adata.shape
    (1500, 2000)
    >>> adata.obs["group"].value_counts().sort_index().tolist()
    [300, 300, 300, 300, 300]
    """
    check_choice(fmt, name="fmt", choices=("h5", "mtx"))
    if not _DATA_DIR.is_dir():
        msg = (
            f"the example data folder {str(_DATA_DIR)!r} does not exist; it ships with the "
            "scdropout source repository (data/example_10x/), not with an installed wheel. Use a "
            "checkout, or regenerate it there with `python data/make_example.py`."
        )
        raise FileNotFoundError(msg)
    outs = _DATA_DIR / "outs"
    if fmt == "h5":
        adata = read_10x_h5(outs / "filtered_feature_bc_matrix.h5")
    else:
        adata = read_10x_mtx(outs / "filtered_feature_bc_matrix")
    labels_path = _DATA_DIR / "labels.csv"
    labels = pd.read_csv(labels_path, dtype=str, index_col="barcode")["group"]
    group = labels.reindex(adata.obs_names)
    if group.isna().any():
        missing = adata.obs_names[group.isna().to_numpy()]
        msg = (
            f"{str(labels_path)!r} has no group for {len(missing):,} barcode(s), e.g. "
            f"{missing[0]!r}; regenerate the example with `python data/make_example.py`."
        )
        raise ValueError(msg)
    categories = sorted(labels.unique(), key=lambda g: (len(g), g))  # "2" before "10"
    adata.obs["group"] = pd.Categorical(group.to_numpy(), categories=categories)
    return adata
