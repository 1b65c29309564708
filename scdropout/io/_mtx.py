"""Read a Cell Ranger matrix folder: v2 (matrix.mtx, genes.tsv, barcodes.tsv) or v3 (.tsv.gz)."""

from __future__ import annotations

import gzip
import io
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import sparse

from scdropout._utils import check_choice

from ._common import (
    GEX,
    GZIP_ERRORS,
    as_path,
    build_adata,
    check_barcodes,
    damaged_gzip,
    is_gzip,
    listing,
    read_tsv,
    var_frame,
)

if TYPE_CHECKING:
    from anndata import AnnData

VAR_NAMES = ("gene_symbols", "gene_ids")
_FIELDS = ("integer", "real")
_READ_BUFFER = 1 << 22


# v2 and v3 names of each file; a folder must hold exactly one name of each row
_V2_FILES = ("matrix.mtx", "genes.tsv", "barcodes.tsv")
_V3_FILES = ("matrix.mtx.gz", "features.tsv.gz", "barcodes.tsv.gz")
#: the stems read_10x_mtx looks for, one row per file (each name gzipped or not)
MTX_STEMS = (("matrix.mtx",), ("features.tsv", "genes.tsv"), ("barcodes.tsv",))
#: every name read_10x_mtx looks for; a folder may hold only one per row of MTX_STEMS
MTX_NAMES = tuple(name for stems in MTX_STEMS for stem in stems for name in (stem, f"{stem}.gz"))


def _find(folder: Path, stems: tuple[str, ...]) -> Path:
    """Return the one of ``stem`` or ``stem.gz`` (for any of ``stems``) present in ``folder``.

    Two of them at once (``matrix.mtx`` and ``matrix.mtx.gz``, or ``genes.tsv`` and
    ``features.tsv.gz``) mean the folder mixes files of two runs or versions; reading either
    could pair a matrix with another run's barcodes, so that is an error.
    """
    found = [
        folder / name
        for stem in stems
        for name in (stem, f"{stem}.gz")
        if (folder / name).is_file()
    ]
    if len(found) > 1:
        names = ", ".join(repr(p.name) for p in found[:-1]) + f" and {found[-1].name!r}"
        msg = (
            f"{str(folder)!r} holds {names}: two versions of one file (a decompressed copy, "
            f"or files of two Cell Ranger runs or versions; v2: {', '.join(_V2_FILES)}; v3: "
            f"{', '.join(_V3_FILES)}), and reading either could pair files of different runs. "
            "Remove the files that do not belong."
        )
        raise ValueError(msg)
    if found:
        return found[0]
    wanted = " or ".join(f"{s}[.gz]" for s in stems)
    msg = (
        f"{str(folder)!r} has no {wanted}, so it is not a complete Cell Ranger matrix folder; "
        f"{listing(folder)}."
    )
    raise FileNotFoundError(msg)


def _read_header(path: Path) -> tuple[int, int]:
    """Check the MatrixMarket banner and return (n_rows, n_cols) from the size line."""
    expected = "'%%MatrixMarket matrix coordinate integer general' (or 'real')"
    try:
        opener = gzip.open if is_gzip(path) else open
        with opener(path, "rb") as fh:
            banner = fh.readline(1024)
            line = fh.readline(1024)
            while line.startswith(b"%"):
                line = fh.readline(1024)
    except GZIP_ERRORS as err:
        raise damaged_gzip(path, err) from err
    text = banner.decode("ascii", errors="replace").strip()
    tokens = text.lower().split()
    if (
        len(tokens) != 5
        or tokens[0] != "%%matrixmarket"
        or tokens[1:3] != ["matrix", "coordinate"]
        or tokens[3] not in _FIELDS
        or tokens[4] != "general"
    ):
        msg = f"{str(path)!r} has the header {text[:80]!r}; a 10X matrix needs {expected}."
        raise ValueError(msg)
    size = line.split()
    if len(size) != 3 or not all(s.isdigit() for s in size):
        shown = line.decode("ascii", errors="replace").strip()[:80]
        msg = (
            f"{str(path)!r} has the size line {shown!r} after its header; expected three "
            "non-negative integers: rows (features), columns (barcodes) and entries."
        )
        raise ValueError(msg)
    return int(size[0]), int(size[1])


def _read_entries(path: Path) -> sparse.coo_matrix:
    """Parse the whole file with scipy's MatrixMarket reader (threaded C++ in scipy >= 1.12)."""
    from scipy.io import mmread

    gz = is_gzip(path)
    try:
        if gz:
            # scipy pulls 1 KB per read; a large buffer in C spares most of GzipFile's overhead
            with (
                path.open("rb") as raw,
                gzip.GzipFile(fileobj=raw) as inflated,
                io.BufferedReader(inflated, buffer_size=_READ_BUFFER) as stream,
            ):
                return mmread(stream)
        if path.suffix in (".gz", ".bz2"):
            # scipy would pick a decompressor from the name; the content says plain text
            with path.open("rb") as raw:
                return mmread(raw)
        return mmread(os.fspath(path))
    except (ValueError, RuntimeError) as err:
        msg = f"{str(path)!r} is not a valid MatrixMarket file: {err}"
        raise ValueError(msg) from err
    except GZIP_ERRORS as err:
        if not gz:
            raise
        raise damaged_gzip(path, err) from err


def read_10x_mtx(
    path: str | os.PathLike[str],
    *,
    gex_only: bool = True,
    var_names: Literal["gene_symbols", "gene_ids"] = "gene_symbols",
    make_unique: bool = True,
) -> AnnData:
    """Read a Cell Ranger matrix folder (MatrixMarket + TSV) into cells x genes counts.

    Handles Cell Ranger v2 folders (``matrix.mtx``, ``genes.tsv``, ``barcodes.tsv``) and v3+
    folders (``matrix.mtx.gz``, ``features.tsv.gz``, ``barcodes.tsv.gz``). The version is taken
    from the content: a feature file with two columns (id, name) is v2, one with three or more
    (id, name, feature type, ...) is v3; each file may be gzipped or not, whatever its name
    says. Values are returned as stored, never normalised. The result agrees with
    :func:`scanpy.read_10x_mtx` (values, barcodes, names, ``gene_ids``, ``feature_types``),
    except that X is CSR rather than CSC and v2 folders also get ``feature_types``.

    Parameters
    ----------
    path
        The folder holding the three files, e.g. ``outs/filtered_feature_bc_matrix``.
    gex_only
        Keep only features of type "Gene Expression" (v3), dropping antibody capture, CRISPR
        guide and custom features, as scanpy does. v2 folders hold gene expression only.
    var_names
        What names the genes: ``"gene_symbols"`` (second column, e.g. "CD3E") or
        ``"gene_ids"`` (first column, e.g. "ENSG00000198851"); with ``"gene_ids"`` the symbols
        go to ``var['gene_symbols']``.
    make_unique
        Make ``var_names`` unique as scanpy does (the second "A" becomes "A-1", the third "A-2").
        With ``False`` duplicated names are kept and anndata warns about them.

    Returns
    -------
    AnnData with ``X``: CSR float32 raw counts, cells x genes; ``obs_names``: barcodes;
    ``var_names``: gene symbols (or ids); ``var['gene_ids']``: feature ids;
    ``var['feature_types']``: feature types ("Gene Expression" for v2); and
    ``var['gene_symbols']`` when ``var_names="gene_ids"``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist or lacks one of the three files (the message lists what it
        holds).
    ValueError
        If ``path`` is not a folder; if it holds two versions of a file (``matrix.mtx`` and
        ``matrix.mtx.gz``, ``genes.tsv`` and ``features.tsv.gz``, ...); if a file is a
        truncated or corrupt gzip; if the matrix header is not ``%%MatrixMarket matrix
        coordinate integer|real general``; if the matrix dimensions disagree with the numbers of
        features or barcodes; if a line of the feature file has fewer columns than the others
        (the message gives the line number); if a count is negative or not an integer; if a
        barcode is duplicated; if ``gex_only`` leaves no features.

    Examples
    --------
    >>> import tempfile
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=50, n_genes=80)
    >>> folder = tempfile.mkdtemp()
    >>> sd.io.write_10x_mtx(adata, folder, overwrite=True)
    >>> sd.io.read_10x_mtx(folder).shape
    (50, 80)
    """
    start = time.perf_counter()
    check_choice(var_names, name="var_names", choices=VAR_NAMES)
    folder = as_path(path)
    if not folder.is_dir():
        msg = (
            f"`path={str(folder)!r}` is a file; `read_10x_mtx` needs the folder holding "
            "matrix.mtx[.gz], features.tsv[.gz] (or genes.tsv) and barcodes.tsv[.gz]."
        )
        raise ValueError(msg)
    matrix_path, features_path, barcodes_path = (_find(folder, stems) for stems in MTX_STEMS)

    n_features, n_barcodes = _read_header(matrix_path)
    features = read_tsv(features_path, min_columns=2)
    v3 = len(features) >= 3
    barcodes = read_tsv(barcodes_path, min_columns=1)[0]
    for what, n_listed, n_declared, file in [
        ("features", len(features[0]), n_features, features_path),
        ("barcodes", len(barcodes), n_barcodes, barcodes_path),
    ]:
        if n_listed != n_declared:
            msg = (
                f"{str(matrix_path)!r} declares {n_declared:,} {what} but {str(file)!r} lists "
                f"{n_listed:,}; the files come from different runs or one is truncated."
            )
            raise ValueError(msg)
    obs_names = check_barcodes(barcodes, source=barcodes_path)

    ids, symbols = features[0], features[1]
    types = features[2] if v3 else np.full(n_features, GEX, dtype=object)
    keep = (types == GEX) if (gex_only and v3) else np.ones(n_features, dtype=bool)
    if not keep.any():
        msg = (
            f"{str(features_path)!r} has no 'Gene Expression' features (types: "
            f"{sorted(set(types))}); pass `gex_only=False` to read all features."
        )
        raise ValueError(msg)

    # names are made unique over all features before filtering, as scanpy does
    if var_names == "gene_symbols":
        var = var_frame(symbols, gene_ids=ids, feature_types=types, unique=make_unique)
    else:
        extra = {"gene_symbols": symbols}
        var = var_frame(ids, gene_ids=ids, feature_types=types, unique=make_unique, extra=extra)
    if not keep.all():
        var = var.iloc[keep]

    coo = _read_entries(matrix_path)
    genes, cells, data = coo.row, coo.col, coo.data
    if not keep.all():
        new_index = np.cumsum(keep) - 1
        mask = keep[genes]
        genes, cells, data = new_index[genes[mask]], cells[mask], data[mask]
    X = sparse.csr_matrix((data, (cells, genes)), shape=(n_barcodes, len(var)))
    kind = f"v{3 if v3 else 2} mtx{'.gz' if is_gzip(matrix_path) else ''}"
    return build_adata(X, barcodes=obs_names, var=var, source=folder, kind=kind, start=start)
