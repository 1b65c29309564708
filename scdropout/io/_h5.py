"""Read a Cell Ranger HDF5 matrix: v2 (one group per genome) or v3+ (a ``matrix`` group)."""

from __future__ import annotations

import os
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from scdropout import _keys
from scdropout._settings import settings

from ._common import GEX, as_path, build_adata, check_barcodes, var_frame

if TYPE_CHECKING:
    from pathlib import Path

    import h5py
    from anndata import AnnData

_V2_DATASETS = ("barcodes", "data", "gene_names", "genes", "indices", "indptr", "shape")
_V3_DATASETS = (
    "barcodes",
    "data",
    "indices",
    "indptr",
    "shape",
    "features/id",
    "features/name",
    "features/feature_type",
)
# feature datasets that become var columns under other names, or none
_V3_SPECIAL = {"id", "name", "feature_type", "gene_id", "_all_tag_keys"}
_INT32_MAX = np.iinfo(np.int32).max
# what the version-specific readers return: counts as stored, barcodes, var
_Parts = tuple[sparse.csr_matrix, pd.Index, pd.DataFrame]


def _require(path: Path, group: h5py.Group, names: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the first dataset of ``names`` missing from ``group``."""
    import h5py

    for name in names:
        obj = group.get(name)
        if not isinstance(obj, h5py.Dataset):
            what = "is not a dataset" if obj is not None else "is missing"
            msg = (
                f"{str(path)!r} is not a complete 10X matrix: dataset "
                f"'{group.name.rstrip('/')}/{name}' {what}."
            )
            raise ValueError(msg)


def _strings(dset: h5py.Dataset) -> np.ndarray:
    """Read a 1-D string dataset as an object array of str."""
    values = dset[()]
    if values.dtype.kind == "S":
        try:
            return values.astype(str).astype(object)
        except UnicodeDecodeError:  # numpy decodes ASCII only
            return np.char.decode(values, "utf-8").astype(object)
    return np.asarray([v.decode() if isinstance(v, bytes) else str(v) for v in values], object)


def _is_plain_deflate(dset: h5py.Dataset) -> bool:
    """Whether ``dset`` is 1-D, chunked, and filtered by deflate (gzip) alone."""
    import h5py

    if dset.ndim != 1 or dset.chunks is None or dset.shape[0] == 0:
        return False
    dcpl = dset.id.get_create_plist()
    if dcpl.get_nfilters() != 1 or dcpl.get_filter(0)[0] != h5py.h5z.FILTER_DEFLATE:
        return False
    return dset.id.get_num_chunks() == -(-dset.shape[0] // dset.chunks[0])


def _read_array(path: Path, dset: h5py.Dataset, dtype: np.dtype | type) -> np.ndarray:
    """Read a 1-D dataset as ``dtype``.

    Deflate-compressed chunks (what Cell Ranger writes) are read raw and inflated by
    ``settings.n_jobs`` threads (zlib releases the GIL), which is where reading a large matrix
    spends its time; any other layout goes through HDF5's own (single-threaded) pipeline.
    """
    n = dset.shape[0] if dset.ndim == 1 else 0
    try:
        if settings.n_jobs < 2 or not _is_plain_deflate(dset):
            return dset.astype(dtype)[()] if n else np.empty(0, dtype)
        out = np.empty(n, dtype=dtype)
        step = dset.chunks[0]

        def inflate(start: int, mask: int, raw: bytes) -> None:
            stop = min(start + step, n)
            values = raw if mask & 1 else zlib.decompress(raw)  # bit 0: deflate was skipped
            out[start:stop] = np.frombuffer(values, dtype=dset.dtype, count=stop - start)

        with ThreadPoolExecutor(settings.n_jobs) as pool:
            jobs = [
                pool.submit(inflate, start, *dset.id.read_direct_chunk((start,)))
                for start in range(0, n, step)
            ]
            for job in jobs:
                job.result()
    except (OSError, zlib.error) as err:
        msg = f"{str(path)!r}: dataset '{dset.name}' cannot be read ({err}); the file is damaged."
        raise ValueError(msg) from err
    return out


def _read_shape(path: Path, group: h5py.Group) -> tuple[int, int]:
    """Return (n_features, n_barcodes) from the ``shape`` dataset."""
    shape = group["shape"][()]
    if shape.shape != (2,) or (shape < 0).any():
        msg = (
            f"{str(path)!r}: dataset '{group.name}/shape' is {shape.tolist()}; expected "
            "[n_features, n_barcodes]."
        )
        raise ValueError(msg)
    return int(shape[0]), int(shape[1])


def _read_csr(
    path: Path, group: h5py.Group, n_features: int, n_barcodes: int
) -> sparse.csr_matrix:
    """Read data/indices/indptr of a barcode-major matrix as cells x features CSR."""
    data_ds, indices_ds, indptr_ds = group["data"], group["indices"], group["indptr"]
    nnz = data_ds.shape[0] if data_ds.ndim == 1 else -1
    if indices_ds.shape != (nnz,) or indptr_ds.shape != (n_barcodes + 1,):
        msg = (
            f"{str(path)!r}: datasets in '{group.name}' disagree: shape says "
            f"{n_barcodes:,} barcodes (indptr needs {n_barcodes + 1:,} entries, has "
            f"{indptr_ds.shape[0] if indptr_ds.ndim == 1 else indptr_ds.shape}), data has "
            f"{data_ds.shape} and indices {indices_ds.shape} entries."
        )
        raise ValueError(msg)
    # 10X stores one column per barcode (CSC of features x barcodes), i.e. CSR of cells x genes;
    # reading straight into the dtypes scipy will keep avoids any copy later.
    idx_dtype = np.int32 if max(nnz, n_features) <= _INT32_MAX else np.int64
    data = _read_array(path, data_ds, data_ds.dtype)
    indices = _read_array(path, indices_ds, idx_dtype)
    indptr = _read_array(path, indptr_ds, idx_dtype)
    bad = None
    if indptr[0] != 0 or indptr[-1] != nnz:
        bad = f"indptr runs from {indptr[0]} to {indptr[-1]}, expected 0 to {nnz:,}"
    elif n_barcodes and (np.diff(indptr) < 0).any():
        bad = "indptr decreases"
    elif nnz and (indices.min() < 0 or indices.max() >= n_features):
        bad = f"indices fall outside [0, {n_features:,})"
    if bad is not None:
        msg = f"{str(path)!r}: the matrix in '{group.name}' is corrupt: {bad}."
        raise ValueError(msg)
    return sparse.csr_matrix((data, indices, indptr), shape=(n_barcodes, n_features), copy=False)


def _check_lengths(path: Path, group: h5py.Group, names: list[str], n: int, what: str) -> None:
    for name in names:
        dset = group[name]
        if dset.shape != (n,):
            msg = (
                f"{str(path)!r}: dataset '{dset.name}' has shape {dset.shape} but the matrix has "
                f"{n:,} {what}."
            )
            raise ValueError(msg)


def _subset_features(X: sparse.csr_matrix, keep: np.ndarray) -> sparse.csr_matrix:
    """Keep the feature columns in ``keep`` (boolean), without scipy's general fancy indexing."""
    if keep.all():
        return X
    new_index = (np.cumsum(keep) - 1).astype(X.indices.dtype)
    mask = keep[X.indices]
    kept_before = np.zeros(X.nnz + 1, dtype=X.indptr.dtype)
    np.cumsum(mask, out=kept_before[1:])
    indptr = kept_before[X.indptr]
    return sparse.csr_matrix(
        (X.data[mask], new_index[X.indices[mask]], indptr),
        shape=(X.shape[0], int(keep.sum())),
        copy=False,
    )


def _read_v3(path: Path, f: h5py.File, genome: str | None, *, gex_only: bool) -> _Parts:
    import h5py

    group = f["matrix"]
    _require(path, group, _V3_DATASETS)
    n_features, n_barcodes = _read_shape(path, group)
    feats = group["features"]
    columns = [k for k, v in feats.items() if isinstance(v, h5py.Dataset) and k != "_all_tag_keys"]
    _check_lengths(path, feats, columns, n_features, "features")
    _check_lengths(path, group, ["barcodes"], n_barcodes, "barcodes")
    barcodes = check_barcodes(_strings(group["barcodes"]), source=path)

    ids = _strings(feats["id"])
    types = _strings(feats["feature_type"])
    extra: dict[str, np.ndarray] = {}
    if "gene_id" in feats:  # a probe-barcode matrix: id is the probe, gene_id the gene
        extra["probe_ids"] = ids
        ids = _strings(feats["gene_id"])
    for name in columns:
        if name not in _V3_SPECIAL:
            dset = feats[name]
            extra[name] = dset[()].astype(bool) if dset.dtype.kind == "b" else _strings(dset)
    var = var_frame(
        _strings(feats["name"]), gene_ids=ids, feature_types=types, unique=True, extra=extra
    )

    keep = np.ones(n_features, dtype=bool)
    if genome is not None:
        if _keys.GENOME not in var:
            msg = (
                f"{str(path)!r} has no dataset '/matrix/features/genome', so `genome={genome!r}` "
                "cannot be selected; leave `genome=None`."
            )
            raise ValueError(msg)
        present = list(dict.fromkeys(var[_keys.GENOME]))
        if genome not in present:
            msg = f"`genome={genome!r}` is not in {str(path)!r}; genomes present: {present}."
            raise ValueError(msg)
        keep &= (var[_keys.GENOME] == genome).to_numpy()
    if gex_only:
        keep &= types == GEX
    if not keep.any():
        msg = (
            f"{str(path)!r} has no 'Gene Expression' features"
            f"{f' in genome {genome!r}' if genome is not None else ''} (types: "
            f"{sorted(set(types))}); pass `gex_only=False` to read all features."
        )
        raise ValueError(msg)
    X = _subset_features(_read_csr(path, group, n_features, n_barcodes), keep)
    return X, barcodes, var.iloc[keep] if not keep.all() else var


def _is_anndata(f: h5py.File) -> bool:
    """Whether ``f`` has the layout anndata writes (.h5ad): encoding attributes, obs and var."""
    import h5py

    if "encoding-type" in f.attrs:
        return True
    groups = [v for v in f.values() if isinstance(v, h5py.Group)]
    return {"obs", "var"} <= set(f.keys()) or any("encoding-type" in g.attrs for g in groups)


def _read_v2(path: Path, f: h5py.File, genome: str | None) -> _Parts:
    import h5py

    # a v2 genome group holds barcodes, genes and gene_names; any of them marks one
    genomes = [
        k
        for k, v in f.items()
        if isinstance(v, h5py.Group) and any(n in v for n in ("barcodes", "genes", "gene_names"))
    ]
    if not genomes and _is_anndata(f):
        msg = (
            f"{str(path)!r} is an AnnData (.h5ad) file, not a Cell Ranger .h5 (top-level names: "
            f"{list(f.keys())}); read it with `anndata.read_h5ad`, or name it .h5ad."
        )
        raise ValueError(msg)
    if not genomes:
        msg = (
            f"{str(path)!r} is not a 10X matrix: it has neither a 'matrix' group (Cell Ranger "
            f"v3+) nor genome groups holding barcodes and genes (v2); top-level names: "
            f"{list(f.keys())}."
        )
        raise ValueError(msg)
    if genome is None:
        if len(genomes) > 1:
            msg = (
                f"{str(path)!r} holds {len(genomes)} genomes {genomes}; choose one with `genome=`."
            )
            raise ValueError(msg)
        genome = genomes[0]
    elif genome not in genomes:
        msg = f"`genome={genome!r}` is not in {str(path)!r}; genomes present: {genomes}."
        raise ValueError(msg)
    group = f[genome]
    _require(path, group, _V2_DATASETS)
    n_features, n_barcodes = _read_shape(path, group)
    _check_lengths(path, group, ["genes", "gene_names"], n_features, "features")
    _check_lengths(path, group, ["barcodes"], n_barcodes, "barcodes")
    barcodes = check_barcodes(_strings(group["barcodes"]), source=path)
    var = var_frame(
        _strings(group["gene_names"]),
        gene_ids=_strings(group["genes"]),
        feature_types=np.full(n_features, GEX, dtype=object),
        unique=True,
        extra={_keys.GENOME: np.full(n_features, genome, dtype=object)},
    )
    return _read_csr(path, group, n_features, n_barcodes), barcodes, var


def read_10x_h5(
    path: str | os.PathLike[str],
    *,
    genome: str | None = None,
    gex_only: bool = True,
) -> AnnData:
    """Read a Cell Ranger HDF5 feature-barcode matrix into cells x genes counts.

    Handles Cell Ranger v2 files (one group per genome holding ``barcodes``, ``data``,
    ``gene_names``, ``genes``, ``indices``, ``indptr``, ``shape``) and v3+ files (a ``matrix``
    group with ``features/{id,name,feature_type,genome}``); the version is taken from the
    content, not the name. 10X stores one column per barcode, which is read straight into a CSR
    matrix of cells x genes without transposing. Values are returned as stored, never
    normalised. The result agrees with :func:`scanpy.read_10x_h5` after
    ``var_names_make_unique()`` (values, barcodes, names, ``gene_ids``, ``feature_types``,
    ``genome``).

    Parameters
    ----------
    path
        The ``.h5`` file, e.g. ``outs/filtered_feature_bc_matrix.h5``.
    genome
        Keep only the features of this genome. v2 files store each genome in its own group and
        need ``genome`` when they hold more than one; in v3 files ``None`` keeps all genomes.
    gex_only
        Keep only features of type "Gene Expression" (v3), dropping antibody capture, CRISPR
        guide and custom features, as scanpy does. v2 files hold gene expression only.

    Returns
    -------
    AnnData with ``X``: CSR float32 raw counts, cells x genes; ``obs_names``: barcodes;
    ``var_names``: unique gene symbols (duplicates get "-1", "-2" suffixes in file order, as
    anndata's ``var_names_make_unique`` does); ``var['gene_ids']``; ``var['feature_types']``
    ("Gene Expression" for v2); ``var['genome']``; and, for v3, any other per-feature dataset
    of ``/matrix/features`` as a column (as scanpy reads it).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file is not HDF5 or not a 10X matrix (e.g. an .h5ad named .h5); if a dataset is missing (the message gives
        its path in the file) or its length disagrees with the matrix shape; if ``genome`` is
        not in the file (the message lists the genomes present) or is needed but not given; if
        a count is negative or not an integer; if a barcode is duplicated; if ``gex_only``
        leaves no features.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> import scdropout as sd
    >>> adata = sd.datasets.synthetic(n_cells=50, n_genes=80)
    >>> path = Path(tempfile.mkdtemp()) / "matrix.h5"
    >>> sd.io.write_10x_h5(adata, path)
    >>> sd.io.read_10x_h5(path).shape
    (50, 80)
    """
    import h5py

    start = time.perf_counter()
    if genome is not None and not isinstance(genome, str):
        msg = f"`genome` must be a string or None, got {genome!r}."
        raise TypeError(msg)
    path = as_path(path)
    if path.is_dir():
        msg = f"`path={str(path)!r}` is a folder; `read_10x_h5` needs a 10X .h5 file."
        raise ValueError(msg)
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        msg = f"{str(path)!r} is not a readable HDF5 file ({err})."
        raise ValueError(msg) from err
    with f:
        v3 = isinstance(f.get("matrix"), h5py.Group)
        if v3:
            X, barcodes, var = _read_v3(path, f, genome, gex_only=gex_only)
        else:
            X, barcodes, var = _read_v2(path, f, genome)
    kind = "v3 h5" if v3 else "v2 h5"
    return build_adata(X, barcodes=barcodes, var=var, source=path, kind=kind, start=start)
