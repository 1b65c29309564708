"""Helpers shared by the 10X readers and writers: paths, compressed files, the AnnData result."""

from __future__ import annotations

import csv
import gzip
import io
import os
import time
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from scdropout import _keys
from scdropout._logging import logger
from scdropout._utils import check_counts

if TYPE_CHECKING:
    from anndata import AnnData

GEX = "Gene Expression"
GZIP_MAGIC = b"\x1f\x8b"
# low-level errors a damaged gzip stream raises (BadGzipFile is an OSError)
GZIP_ERRORS = (OSError, EOFError, zlib.error)


def as_path(path: str | os.PathLike[str], *, name: str = "path") -> Path:
    """Return ``path`` as a :class:`~pathlib.Path`, raising ``FileNotFoundError`` if it is absent."""
    if not isinstance(path, str | os.PathLike):
        msg = f"`{name}` must be a str or os.PathLike, got {type(path).__name__}."
        raise TypeError(msg)
    path = Path(path)
    if not path.exists():
        msg = f"`{name}={str(path)!r}` does not exist."
        raise FileNotFoundError(msg)
    return path


def listing(folder: Path, *, limit: int = 10) -> str:
    """Describe what ``folder`` holds, for error messages: up to ``limit`` names."""
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "it is empty"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return "it holds " + ", ".join(names[:limit]) + more


def is_gzip(path: Path) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (content decides, not the suffix)."""
    with path.open("rb") as fh:
        return fh.read(2) == GZIP_MAGIC


def damaged_gzip(path: Path, err: BaseException) -> ValueError:
    """Build the error for a gzip file that cannot be inflated, naming the file."""
    msg = f"{str(path)!r} is a truncated or corrupt gzip file ({err}); re-copy or re-export it."
    return ValueError(msg)


def read_bytes(path: Path) -> bytes:
    """Return the (decompressed) content of ``path``; a damaged gzip raises ``ValueError``."""
    raw = path.read_bytes()
    if raw[:2] != GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except GZIP_ERRORS as err:
        raise damaged_gzip(path, err) from err


def read_tsv(path: Path, *, min_columns: int) -> list[np.ndarray]:
    """Read a headerless tab-separated file as string columns (no NA parsing, no quoting)."""
    content = read_bytes(path)
    if not content.strip():
        return [np.empty(0, dtype=object) for _ in range(min_columns)]
    try:
        table = pd.read_csv(
            io.BytesIO(content),
            sep="\t",
            header=None,
            dtype=str,
            na_filter=False,
            quoting=csv.QUOTE_NONE,
            engine="c",
        )
    except ValueError as err:  # pandas' ParserError and UnicodeDecodeError are ValueErrors
        msg = f"{str(path)!r} is not a valid tab-separated table: {err}"
        raise ValueError(msg) from err
    if table.shape[1] < min_columns:
        first = "\t".join(table.iloc[0])
        msg = (
            f"{str(path)!r} has {table.shape[1]} column(s); a 10X feature/barcode file needs at "
            f"least {min_columns} (first line: {first!r})."
        )
        raise ValueError(msg)
    if table.shape[1] > 1 and (table.iloc[:, -1] == "").any():
        _check_ragged(path, content, table.shape[1])
    return [table[c].to_numpy(dtype=object) for c in table.columns]


def _check_ragged(path: Path, content: bytes, n_columns: int) -> None:
    """Raise ``ValueError`` naming the first line with fewer than ``n_columns`` fields.

    pandas pads a short line with empty strings, which would read as, e.g., a feature of type
    ""; only lines whose last field is empty reach this check, so it costs nothing otherwise.
    """
    for number, raw in enumerate(content.split(b"\n"), start=1):
        line = raw.rstrip(b"\r")
        n_fields = line.count(b"\t") + 1
        if n_fields < n_columns and line:
            shown = line.decode("utf-8", errors="replace")[:80]
            msg = (
                f"{str(path)!r} line {number} has {n_fields} column(s) where the other lines have "
                f"{n_columns} ({shown!r}); the file is truncated or damaged."
            )
            raise ValueError(msg)


def make_unique(names: np.ndarray) -> pd.Index:
    """Make names unique the way scanpy/anndata do: the second 'A' becomes 'A-1', and so on."""
    from anndata.utils import make_index_unique

    return make_index_unique(pd.Index(names, dtype=object))


def check_barcodes(barcodes: np.ndarray, *, source: Path) -> pd.Index:
    """Return barcodes as an Index, raising ``ValueError`` if any is duplicated."""
    index = pd.Index(barcodes, dtype=object)
    if not index.is_unique:
        dup = index[index.duplicated()]
        msg = (
            f"{str(source)!r} lists barcode {dup[0]!r} more than once ({len(dup):,} duplicated "
            "barcode(s) in all); each cell needs a unique barcode, so the file is damaged or "
            "not a Cell Ranger output."
        )
        raise ValueError(msg)
    return index


def build_adata(
    X: sparse.csr_matrix,
    *,
    barcodes: pd.Index,
    var: pd.DataFrame,
    source: Path,
    kind: str,
    start: float,
) -> AnnData:
    """Check the counts, assemble the AnnData and log the one-line summary of the read.

    ``X`` holds the values as stored (integer files stay integer until checked, which makes the
    check one comparison); they become float32 here.
    """
    from anndata import AnnData

    check_counts(X, name=repr(str(source)), obs_names=barcodes, var_names=var.index)
    if X.dtype != np.float32:
        X = sparse.csr_matrix(
            (X.data.astype(np.float32), X.indices, X.indptr), shape=X.shape, copy=False
        )
    adata = AnnData(X=X, obs=pd.DataFrame(index=barcodes), var=var)
    logger.info(
        "read %s cells x %s genes from %s (%s, %.2fs)",
        f"{adata.n_obs:,}",
        f"{adata.n_vars:,}",
        source,
        kind,
        time.perf_counter() - start,
    )
    return adata


def var_frame(
    names: np.ndarray,
    *,
    gene_ids: np.ndarray,
    feature_types: np.ndarray,
    unique: bool,
    extra: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Build the ``var`` table: ``gene_ids``, ``feature_types``, extra columns; index = names."""
    index = make_unique(names) if unique else pd.Index(names, dtype=object)
    columns = {_keys.GENE_IDS: gene_ids, _keys.FEATURE_TYPES: feature_types, **(extra or {})}
    return pd.DataFrame(columns, index=index)


def gzip_stream(chunks: list[bytes | memoryview], *, level: int = 4) -> bytes:
    """Gzip ``chunks`` as one member with a fixed header (no name, mtime 0): reproducible bytes."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    crc = 0
    size = 0
    out = [b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"]
    for chunk in chunks:
        crc = zlib.crc32(chunk, crc)
        size += len(chunk)
        out.append(comp.compress(chunk))
    out.append(comp.flush())
    out.append(int(crc).to_bytes(4, "little") + (size & 0xFFFFFFFF).to_bytes(4, "little"))
    return b"".join(out)
