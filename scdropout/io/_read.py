"""Pick the right 10X reader from a path, and read several samples into one AnnData."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import pandas as pd
from scipy import sparse

from scdropout import _keys
from scdropout._logging import logger

from ._common import as_path, listing
from ._h5 import read_10x_h5
from ._mtx import read_10x_mtx

if TYPE_CHECKING:
    from anndata import AnnData

# inside a Cell Ranger outs/ folder, in order of preference
_OUTS_CANDIDATES = (
    "filtered_feature_bc_matrix.h5",  # v3+
    "filtered_feature_bc_matrix",  # v3+
    "filtered_gene_bc_matrices_h5.h5",  # v2
    "filtered_gene_bc_matrices",  # v2: one sub-folder per genome
)


def _is_mtx_folder(folder: Path) -> bool:
    return any((folder / name).is_file() for name in ("matrix.mtx", "matrix.mtx.gz"))


def _v2_genome_folder(folder: Path, genome: str | None) -> Path:
    """Pick ``filtered_gene_bc_matrices/<genome>/`` (the only one, or the one asked for)."""
    genomes = sorted(p.name for p in folder.iterdir() if p.is_dir() and _is_mtx_folder(p))
    if genome is not None:
        if genome not in genomes:
            msg = f"`genome={genome!r}` has no folder in {str(folder)!r}; genomes present: {genomes}."
            raise ValueError(msg)
        return folder / genome
    if len(genomes) != 1:
        if not genomes:
            msg = f"{str(folder)!r} holds no genome folder with a matrix.mtx; {listing(folder)}."
            raise FileNotFoundError(msg)
        msg = f"{str(folder)!r} holds {len(genomes)} genomes {genomes}; choose one with `genome=`."
        raise ValueError(msg)
    return folder / genomes[0]


def _resolve(path: Path, genome: str | None) -> tuple[Path, str]:
    """Return the file or folder to read and its kind: ``"h5"``, ``"mtx"``, ``"mtx_v2"``, ``"h5ad"``.

    ``"mtx_v2"`` is a genome folder picked from a v2 ``filtered_gene_bc_matrices/``.
    """
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".h5":
            return path, "h5"
        if suffix == ".h5ad":
            return path, "h5ad"
        msg = (
            f"`path={str(path)!r}` is neither a folder nor an .h5/.h5ad file; pass a 10X .h5, "
            "a folder holding matrix.mtx[.gz], or a Cell Ranger outs/ folder."
        )
        raise ValueError(msg)
    if _is_mtx_folder(path):
        return path, "mtx"
    outs = path / "outs" if (path / "outs").is_dir() else path
    for name in _OUTS_CANDIDATES:
        candidate = outs / name
        if name.endswith(".h5") and candidate.is_file():
            return candidate, "h5"
        if name == "filtered_feature_bc_matrix" and candidate.is_dir():
            return candidate, "mtx"
        if name == "filtered_gene_bc_matrices" and candidate.is_dir():
            return _v2_genome_folder(candidate, genome), "mtx_v2"
    msg = (
        f"{str(path)!r} holds no 10X matrix: expected matrix.mtx[.gz] or a Cell Ranger outs/ "
        f"folder with {' or '.join(_OUTS_CANDIDATES)}; {listing(path)}."
    )
    raise FileNotFoundError(msg)


def read_10x(
    path: str | os.PathLike[str],
    *,
    genome: str | None = None,
    gex_only: bool = True,
    var_names: Literal["gene_symbols", "gene_ids"] = "gene_symbols",
    make_unique: bool = True,
) -> AnnData:
    """Read 10X counts from an .h5 file, a matrix folder or a Cell Ranger ``outs/`` folder.

    What ``path`` is decides the reader:

    - an ``.h5`` file: :func:`read_10x_h5`;
    - a folder holding ``matrix.mtx[.gz]``: :func:`read_10x_mtx`;
    - a Cell Ranger ``outs/`` folder, or the sample folder that holds it: the first of
      ``filtered_feature_bc_matrix.h5``, ``filtered_feature_bc_matrix/``,
      ``filtered_gene_bc_matrices_h5.h5`` and ``filtered_gene_bc_matrices/<genome>/``;
    - an ``.h5ad`` file: :func:`anndata.read_h5ad`, returned as stored.

    Parameters
    ----------
    path
        File or folder, as above.
    genome
        For .h5 files, keep only this genome's features (see :func:`read_10x_h5`); for v2
        ``outs/`` folders, the genome sub-folder of ``filtered_gene_bc_matrices`` to read
        (needed when there are several). Not used for matrix folders or .h5ad files.
    gex_only
        Keep only features of type "Gene Expression" (not used for .h5ad files).
    var_names
        ``"gene_symbols"`` or ``"gene_ids"`` names the genes; matrix folders only, .h5 files
        always use symbols (see :func:`read_10x_mtx`).
    make_unique
        Make gene names unique with "-1", "-2" suffixes; matrix folders only, names from .h5
        files are always made unique.

    Returns
    -------
    AnnData as returned by the chosen reader: CSR float32 raw counts (cells x genes) in ``X``,
    barcodes as ``obs_names``, unique gene symbols as ``var_names``, ``var['gene_ids']`` and
    ``var['feature_types']``.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, or is a folder holding no 10X matrix (the message lists
        what it holds).
    ValueError
        If ``path`` is a file that is neither .h5 nor .h5ad; if ``var_names``/``make_unique``
        are changed for an .h5 file or ``genome`` is given for a matrix folder or .h5ad; and
        whatever the chosen reader raises.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.io.read_10x("data/example_10x/outs")  # doctest: +SKIP
    """
    path = as_path(path)
    target, kind = _resolve(path, genome)
    if kind == "h5":
        if var_names != "gene_symbols" or not make_unique:
            msg = (
                f"`var_names={var_names!r}` and `make_unique={make_unique!r}` apply to matrix "
                f"folders only; {str(target)!r} is an .h5 file, read with unique gene symbols."
            )
            raise ValueError(msg)
        return read_10x_h5(target, genome=genome, gex_only=gex_only)
    if genome is not None and kind in ("mtx", "h5ad"):
        msg = (
            f"`genome={genome!r}` cannot be applied to {str(target)!r}: a matrix folder or "
            ".h5ad records no genome; leave `genome=None`."
        )
        raise ValueError(msg)
    if kind in ("mtx", "mtx_v2"):
        return read_10x_mtx(
            target, gex_only=gex_only, var_names=var_names, make_unique=make_unique
        )
    from anndata import read_h5ad

    start = time.perf_counter()
    adata = read_h5ad(target)
    logger.info(
        "read %s cells x %s genes from %s (h5ad, %.2fs)",
        f"{adata.n_obs:,}",
        f"{adata.n_vars:,}",
        target,
        time.perf_counter() - start,
    )
    return adata


def _first_difference(a: pd.Index, b: pd.Index) -> str:
    if len(a) != len(b):
        return f"{len(b):,} genes instead of {len(a):,}"
    pos = int(np.argmax(a.to_numpy() != b.to_numpy()))
    return f"gene {pos} is {b[pos]!r} instead of {a[pos]!r}"


def read_10x_samples(
    samples: Mapping[str, str | os.PathLike[str]],
    *,
    genome: str | None = None,
    gex_only: bool = True,
    var_names: Literal["gene_symbols", "gene_ids"] = "gene_symbols",
    make_unique: bool = True,
) -> AnnData:
    """Read several 10X samples with the same genes into one AnnData, cells stacked in order.

    Each sample is read with :func:`read_10x`; its barcodes get the suffix ``-<name>`` (so
    "AAAC-1" of sample "ctrl" becomes "AAAC-1-ctrl") and ``obs['sample']`` records where each
    cell came from.

    Parameters
    ----------
    samples
        Sample name -> path (anything :func:`read_10x` accepts), in the order to stack them.
    genome
        Passed to :func:`read_10x` for every sample.
    gex_only
        Passed to :func:`read_10x` for every sample.
    var_names
        Passed to :func:`read_10x` for every sample.
    make_unique
        Passed to :func:`read_10x` for every sample.

    Returns
    -------
    AnnData with CSR float32 raw counts of all cells in ``X``, barcodes suffixed with
    ``-<name>`` as ``obs_names``, ``obs['sample']`` (categorical, categories in the order of
    ``samples``) and the ``var`` of the first sample.

    Raises
    ------
    TypeError
        If ``samples`` is not a mapping of str names to paths.
    ValueError
        If ``samples`` is empty; if a sample's genes (names or ids) differ from the first
        sample's (the message names the sample); if suffixed barcodes still collide; and
        whatever :func:`read_10x` raises.
    FileNotFoundError
        If a sample's path does not exist or holds no 10X matrix.

    Examples
    --------
    >>> import scdropout as sd
    >>> adata = sd.io.read_10x_samples({"a": "a/outs", "b": "b/outs"})  # doctest: +SKIP
    >>> adata.obs["sample"].cat.categories.tolist()  # doctest: +SKIP
    ['a', 'b']
    """
    from anndata import AnnData

    if not isinstance(samples, Mapping) or not all(isinstance(k, str) for k in samples):
        msg = (
            "`samples` must be a mapping of sample name (str) to path, e.g. {'ctrl': 'ctrl/outs'}."
        )
        raise TypeError(msg)
    if not samples:
        msg = "`samples` is empty; pass at least one {name: path}."
        raise ValueError(msg)
    start = time.perf_counter()
    kw = {"genome": genome, "gex_only": gex_only, "var_names": var_names}
    parts: list[AnnData] = []
    for name, path in samples.items():
        adata = read_10x(path, make_unique=make_unique, **kw)
        if parts:
            ref, ref_name = parts[0].var, next(iter(samples))
            for what, a, b in [
                ("gene names", ref.index, adata.var.index),
                ("gene ids", pd.Index(ref[_keys.GENE_IDS]), pd.Index(adata.var[_keys.GENE_IDS])),
            ]:
                if not a.equals(b):
                    msg = (
                        f"sample {name!r} ({str(path)!r}) has other {what} than sample "
                        f"{ref_name!r}: {_first_difference(a, b)}; samples must be quantified "
                        "against the same reference to be stacked."
                    )
                    raise ValueError(msg)
        parts.append(adata)

    names = list(samples)
    obs_names = pd.Index(
        np.concatenate(
            [a.obs_names.to_numpy(object) + f"-{n}" for n, a in zip(names, parts, strict=True)]
        )
    )
    if not obs_names.is_unique:
        msg = (
            f"barcode {obs_names[obs_names.duplicated()][0]!r} occurs twice after adding the "
            "sample suffixes; rename the samples so that no name ends like another's barcode."
        )
        raise ValueError(msg)
    sample = pd.Categorical(
        np.repeat(names, [a.n_obs for a in parts]), categories=names, ordered=False
    )
    X = sparse.vstack([a.X for a in parts], format="csr", dtype=np.float32)
    out = AnnData(
        X=X, obs=pd.DataFrame({_keys.SAMPLE: sample}, index=obs_names), var=parts[0].var.copy()
    )
    logger.info(
        "read %s samples: %s cells x %s genes (%.2fs)",
        len(parts),
        f"{out.n_obs:,}",
        f"{out.n_vars:,}",
        time.perf_counter() - start,
    )
    return out
