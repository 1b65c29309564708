"""Write counts as Cell Ranger outputs: HDF5 (v2 and v3 layouts) and matrix folders (v2, v3)."""

from __future__ import annotations

import contextlib
import io
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy import sparse

from scdropout import _keys
from scdropout._logging import logger
from scdropout._utils import check_adata, check_choice, check_counts, get_matrix

from ._common import GEX, gzip_stream
from ._mtx import MTX_NAMES

if TYPE_CHECKING:
    import h5py
    import pandas as pd
    from anndata import AnnData

_MTX_BANNER = b"%%MatrixMarket matrix coordinate integer general\n"
# Cell Ranger 3+ writes a metadata line; we leave the version out so output stays reproducible
_MTX_METADATA = b'%metadata_json: {"software_version": "scdropout", "format_version": 2}\n'
_H5_CHUNK = 80_000  # Cell Ranger's chunk length for data/indices/indptr
_GZIP_LEVEL = 4  # h5py's default gzip level, used for .gz text files too


class _Counts:
    """What a writer needs from an AnnData, validated: CSR integer counts and the names."""

    def __init__(self, adata: AnnData, *, layer: str | None, version: int) -> None:
        check_adata(adata)
        check_choice(version, name="version", choices=(2, 3))
        X = get_matrix(adata, layer)
        name = "`adata.X`" if layer is None else f"`adata.layers[{layer!r}]`"
        check_counts(X, name=name, obs_names=adata.obs_names, var_names=adata.var_names)
        if not adata.obs_names.is_unique:
            dup = adata.obs_names[adata.obs_names.duplicated()][0]
            msg = (
                f"`adata.obs_names` has the barcode {dup!r} more than once; 10X files need "
                "unique barcodes (`adata.obs_names_make_unique()`)."
            )
            raise ValueError(msg)
        var = adata.var
        self.barcodes = adata.obs_names.to_numpy(dtype=str)
        self.names = _column(var, "gene_symbols", adata.var_names)
        self.ids = _column(var, _keys.GENE_IDS, adata.var_names)
        self.types = _column(var, _keys.FEATURE_TYPES, np.full(adata.n_vars, GEX))
        self.genomes = _column(var, _keys.GENOME, None) if _keys.GENOME in var else None
        for what, values in [
            ("barcodes", self.barcodes),
            ("gene names", self.names),
            ("gene ids", self.ids),
            ("feature types", self.types),
        ]:
            bad = [v for v in values if "\t" in v or "\n" in v or "\r" in v or not v]
            if bad:
                msg = f"{what} must be non-empty and free of tabs and newlines, got {bad[0]!r}."
                raise ValueError(msg)
        if version == 2 and (self.types != GEX).any():
            other = sorted(set(self.types[self.types != GEX]))
            msg = (
                f"Cell Ranger v2 files hold gene expression only, but `adata` has features of "
                f"type {other}; subset to 'Gene Expression' or write `version=3`."
            )
            raise ValueError(msg)
        csr = sparse.csr_matrix(X, copy=True)  # never touch the caller's matrix
        csr.sum_duplicates()
        csr.eliminate_zeros()
        self.X = csr
        self.n_cells, self.n_genes = csr.shape
        big = csr.nnz and csr.data.max() > np.iinfo(np.int32).max
        self.data = csr.data.astype(np.int64 if big else np.int32)


def _column(var: pd.DataFrame, key: str, default: object) -> np.ndarray:
    return np.asarray(var.get(key, default)).astype(str)


def _check_target(path: Path, *, overwrite: bool) -> None:
    if path.is_dir():
        msg = (
            f"{str(path)!r} is a folder; cannot write a file there (`overwrite=True` replaces "
            "files only), so remove it or choose another path."
        )
        raise ValueError(msg)
    if path.exists() and not overwrite:
        msg = f"{str(path)!r} already exists; pass `overwrite=True` to replace it."
        raise FileExistsError(msg)


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``, moved onto ``path`` once the block succeeds."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def _log(c: _Counts, path: Path, kind: str, start: float) -> None:
    logger.info(
        "wrote %s cells x %s genes to %s (%s, %.2fs)",
        f"{c.n_cells:,}",
        f"{c.n_genes:,}",
        path,
        kind,
        time.perf_counter() - start,
    )


def _fixed_strings(values: np.ndarray) -> np.ndarray:
    """Encode as UTF-8 fixed-length byte strings, as Cell Ranger stores names (width >= 1)."""
    encoded = [v.encode() for v in values]
    width = max((len(v) for v in encoded), default=1) or 1
    return np.array(encoded, dtype=f"S{width}")


def _write_h5_matrix(group: h5py.Group, c: _Counts, cols: np.ndarray | None) -> None:
    """Write data/indices/indptr/shape of the (column-subset) matrix, one column per barcode."""
    X = c.X if cols is None else c.X[:, cols]
    data = c.data if cols is None else X.data.astype(c.data.dtype)
    compressed = {
        "compression": "gzip",
        "compression_opts": _GZIP_LEVEL,
        "chunks": (_H5_CHUNK,),
        "maxshape": (None,),
        "track_times": False,
    }
    group.create_dataset("data", data=data, **compressed)
    group.create_dataset("indices", data=X.indices.astype(np.int64), **compressed)
    group.create_dataset("indptr", data=X.indptr.astype(np.int64), **compressed)
    group.create_dataset(
        "shape", data=np.array([X.shape[1], X.shape[0]], dtype=np.int32), track_times=False
    )


def _strings_dataset(group: h5py.Group, name: str, values: np.ndarray) -> None:
    group.create_dataset(name, data=_fixed_strings(values), track_times=False)


def write_10x_h5(
    adata: AnnData,
    path: str | os.PathLike[str],
    *,
    version: Literal[2, 3] = 3,
    genome: str | None = None,
    layer: str | None = None,
    overwrite: bool = False,
) -> None:
    """Write raw counts as a Cell Ranger HDF5 feature-barcode matrix (v3 or v2 layout).

    The file is what Cell Ranger writes and what :func:`read_10x_h5` and
    :func:`scanpy.read_10x_h5` read: one column per barcode (``data``, ``indices``, ``indptr``
    with gzip-compressed chunks of 80,000, ``shape`` = [features, barcodes]) and fixed-length
    byte strings for names. v3 puts it all in a ``matrix`` group with
    ``features/{id,name,feature_type,genome,_all_tag_keys}``; v2 writes one group per genome
    holding ``barcodes``, ``gene_names`` and ``genes``. Datasets carry no timestamps, so the
    same input gives the same bytes. The file is written next to ``path`` and moved into place
    when complete.

    Gene names come from ``var['gene_symbols']`` when present (as after reading with
    ``var_names="gene_ids"``), otherwise from ``var_names``; ids from ``var['gene_ids']``
    (else ``var_names``); types from ``var['feature_types']`` (else "Gene Expression").

    Parameters
    ----------
    adata
        Cells x genes AnnData holding integer counts.
    path
        The ``.h5`` file to write; missing parent folders are created.
    version
        ``3``: Cell Ranger 3+ layout; ``2``: Cell Ranger 2 layout (gene expression only).
    genome
        Genome name for every feature. ``None`` takes ``var['genome']`` when present (v2 then
        writes one group per genome) and "unknown" otherwise.
    layer
        Layer holding the counts; ``None`` uses ``X``.
    overwrite
        Replace an existing file.

    Returns
    -------
    Nothing; the file is written.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or its matrix type is unsupported.
    ValueError
        If the counts are negative, not integers or not finite; if barcodes are duplicated or
        a name holds a tab or newline; if ``version=2`` and some features are not gene
        expression; if ``version`` is not 2 or 3; if ``path`` is a folder.
    FileExistsError
        If ``path`` exists and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=50, n_genes=80)
    >>> path = Path(tempfile.mkdtemp()) / "filtered_feature_bc_matrix.h5"
    >>> sd.io.write_10x_h5(adata, path, genome="GRCh38")
    >>> sd.io.read_10x_h5(path).var["genome"].iloc[0]
    'GRCh38'
    """
    import h5py

    start = time.perf_counter()
    check_adata(adata)
    check_choice(version, name="version", choices=(2, 3))
    if genome is not None and not isinstance(genome, str):
        msg = f"`genome` must be a string or None, got {type(genome).__name__}."
        raise TypeError(msg)
    if genome == "":
        msg = "`genome=''` is empty; pass a genome name such as 'GRCh38', or None."
        raise ValueError(msg)
    path = Path(path)
    _check_target(path, overwrite=overwrite)  # before the matrix is checked and copied
    c = _Counts(adata, layer=layer, version=version)
    if genome is not None:
        genomes = np.full(c.n_genes, genome)
    elif c.genomes is not None:
        genomes = c.genomes
    else:
        genomes = np.full(c.n_genes, "unknown")
    with _atomic(path) as tmp, h5py.File(tmp, "w", track_order=False) as f:
        f.attrs["filetype"] = "matrix"
        if version == 3:
            f.attrs["version"] = np.int64(2)  # the matrix format version of Cell Ranger 3+
            f.attrs["software_version"] = "scdropout"
            group = f.create_group("matrix")
            _write_h5_matrix(group, c, None)
            _strings_dataset(group, "barcodes", c.barcodes)
            feats = group.create_group("features")
            _strings_dataset(feats, "_all_tag_keys", np.array([_keys.GENOME]))
            _strings_dataset(feats, "feature_type", c.types)
            _strings_dataset(feats, _keys.GENOME, genomes)
            _strings_dataset(feats, "id", c.ids)
            _strings_dataset(feats, "name", c.names)
        else:
            for name in dict.fromkeys(genomes):
                cols = genomes == name
                group = f.create_group(name)
                _write_h5_matrix(group, c, None if cols.all() else np.flatnonzero(cols))
                _strings_dataset(group, "barcodes", c.barcodes)
                _strings_dataset(group, "gene_names", c.names[cols])
                _strings_dataset(group, "genes", c.ids[cols])
    _log(c, path, f"v{version} h5", start)


def _mtx_bytes(c: _Counts, *, version: int) -> list[bytes | memoryview]:
    """MatrixMarket text of the features x barcodes matrix, sorted by barcode then feature."""
    header = _MTX_BANNER + (_MTX_METADATA if version == 3 else b"%\n")
    size = f"{c.n_genes} {c.n_cells} {c.X.nnz}\n".encode()
    if not c.X.nnz:
        return [header, size]
    from scipy.io import mmwrite

    cells = np.repeat(np.arange(c.n_cells, dtype=np.int64), np.diff(c.X.indptr))
    coo = sparse.coo_matrix(
        (c.data.astype(np.int64), (c.X.indices.astype(np.int64), cells)),
        shape=(c.n_genes, c.n_cells),
    )
    buf = io.BytesIO()
    mmwrite(buf, coo, field="integer", symmetry="general")  # threaded C++ in scipy >= 1.12
    raw = buf.getvalue()
    pos = 0
    while raw.startswith(b"%", pos):  # skip scipy's banner and comment lines ...
        pos = raw.index(b"\n", pos) + 1
    pos = raw.index(b"\n", pos) + 1  # ... and its size line
    return [header, size, memoryview(raw)[pos:]]


def write_10x_mtx(
    adata: AnnData,
    folder: str | os.PathLike[str],
    *,
    version: Literal[2, 3] = 3,
    layer: str | None = None,
    overwrite: bool = False,
) -> None:
    """Write raw counts as a Cell Ranger matrix folder (MatrixMarket + TSV), v3 or v2 layout.

    v3 writes ``matrix.mtx.gz``, ``features.tsv.gz`` (id, name, feature type) and
    ``barcodes.tsv.gz``; v2 writes uncompressed ``matrix.mtx``, ``genes.tsv`` (id, name) and
    ``barcodes.tsv``. The matrix is features x barcodes, ``integer`` field, entries sorted by
    barcode then feature, as Cell Ranger writes it. Gzip members have no name and mtime 0, so
    the same input gives the same bytes. Each file is written next to its target and moved
    into place when complete. Names are taken as in :func:`write_10x_h5`.

    Parameters
    ----------
    adata
        Cells x genes AnnData holding integer counts.
    folder
        The folder to write into; created if missing.
    version
        ``3``: Cell Ranger 3+ layout; ``2``: Cell Ranger 2 layout (gene expression only).
    layer
        Layer holding the counts; ``None`` uses ``X``.
    overwrite
        Replace existing files of the same names. The files of the other layout that a reader
        would mix with the new ones (for v3: ``matrix.mtx``, ``genes.tsv``, ``features.tsv``,
        ``genes.tsv.gz``, ``barcodes.tsv``; for v2: ``matrix.mtx.gz``, ``features.tsv.gz``,
        ``features.tsv``, ``genes.tsv.gz``, ``barcodes.tsv.gz``) are removed once the new files
        are in place; no other file in ``folder`` is touched.

    Returns
    -------
    Nothing; the three files are written.

    Raises
    ------
    TypeError
        If ``adata`` is not an in-memory AnnData or its matrix type is unsupported.
    ValueError
        If the counts are negative, not integers or not finite; if barcodes are duplicated or
        a name holds a tab or newline; if ``version=2`` and some features are not gene
        expression; if ``version`` is not 2 or 3; if ``folder`` is a file.
    FileExistsError
        If one of the three files, or a file of the other layout (see ``overwrite``), exists
        and ``overwrite`` is False.

    Examples
    --------
    >>> import tempfile
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=50, n_genes=80)
    >>> folder = tempfile.mkdtemp()
    >>> sd.io.write_10x_mtx(adata, folder, version=2, overwrite=True)
    >>> sd.io.read_10x_mtx(folder).n_obs
    50
    """
    start = time.perf_counter()
    check_adata(adata)
    check_choice(version, name="version", choices=(2, 3))
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        msg = f"`folder={str(folder)!r}` is a file; pass a folder to write the matrix files into."
        raise ValueError(msg)
    gz = ".gz" if version == 3 else ""
    names = [f"matrix.mtx{gz}", f"{'features' if version == 3 else 'genes'}.tsv{gz}"]
    names.append(f"barcodes.tsv{gz}")
    for name in names:
        _check_target(folder / name, overwrite=overwrite)
    # the reader refuses a folder holding two versions of a file: find the other layout's files
    stale = [folder / n for n in MTX_NAMES if n not in names and (folder / n).is_file()]
    if stale and not overwrite:
        msg = (
            f"`folder={str(folder)!r}` holds {', '.join(repr(p.name) for p in stale)} of another "
            f"Cell Ranger layout, which a reader would mix with the v{version} files; pass "
            "`overwrite=True` to replace them (they are removed) or choose another folder."
        )
        raise FileExistsError(msg)
    c = _Counts(adata, layer=layer, version=version)
    columns = [c.ids, c.names, c.types] if version == 3 else [c.ids, c.names]
    features = "".join("\t".join(row) + "\n" for row in zip(*columns, strict=True)).encode()
    barcodes = "".join(b + "\n" for b in c.barcodes).encode()
    contents: list[list[bytes | memoryview]] = [_mtx_bytes(c, version=version), [features]]
    contents.append([barcodes])
    for name, chunks in zip(names, contents, strict=True):
        with _atomic(folder / name) as tmp:
            tmp.write_bytes(gzip_stream(chunks, level=_GZIP_LEVEL) if gz else b"".join(chunks))
    for path in stale:
        path.unlink(missing_ok=True)
        logger.info("removed %s (a file of the other Cell Ranger layout)", path)
    _log(c, folder, f"v{version} mtx{gz}", start)
