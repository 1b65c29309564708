"""Fixtures for the 10X readers and writers: one small matrix written in every Cell Ranger layout."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import scdropout as sd

# symbols in file order; "CD3E" three times (the third an antibody) tests make_unique
SYMBOLS = ["CD3E", "MS4A1", "CD3E", "NKG7", "LYZ", "SILENT", "CD3E", "CD19_TotalSeqB"]
TYPES = ["Gene Expression"] * 6 + ["Antibody Capture"] * 2
BARCODES = [
    "AAACCTGAGAAACCAT-1",
    "AAACCTGAGAAACCGC-1",
    "AAACCTGAGAAACCTA-1",
    "AAACCTGAGAAACGAG-1",
    "AAACCTGCAAGCCGCT-1",
    "AAACCTGGTTGCGTTA-1",
]
# cells x features; cell 3 is empty, feature 5 ("SILENT") is all zero, one large count
COUNTS = np.array(
    [
        [1, 0, 3, 0, 7, 0, 12, 0],
        [0, 2, 0, 1, 0, 0, 5, 9],
        [4, 0, 0, 0, 1, 0, 0, 3],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 1, 1, 1, 1234, 0, 2, 0],
        [2, 0, 0, 6, 0, 0, 0, 1],
    ],
    dtype=np.float32,
)


def tiny_adata() -> ad.AnnData:
    """The source matrix: unique ids as var_names, symbols (with duplicates) in a column."""
    ids = [f"ENSG{i:011d}" for i in range(len(SYMBOLS) - 2)] + ["CD3E_ab", "CD19_ab"]
    var = pd.DataFrame(
        {
            "gene_ids": ids,
            "gene_symbols": SYMBOLS,
            "feature_types": TYPES,
            "genome": ["GRCh38"] * 6 + [""] * 2,
        },
        index=ids,
    )
    return ad.AnnData(X=sparse.csr_matrix(COUNTS), obs=pd.DataFrame(index=BARCODES), var=var)


@pytest.fixture
def tiny_10x(tmp_path: Path) -> SimpleNamespace:
    """CR v2 mtx, v3 mtx.gz, v3 h5 and v2 h5 written by our writers from one small matrix.

    v3 files hold all 8 features (6 gene expression, 2 antibody capture); v2 files, which have
    no feature types, hold the 6 gene expression features.
    """
    adata = tiny_adata()
    gex = adata[:, adata.var["feature_types"] == "Gene Expression"].copy()
    out = SimpleNamespace(
        adata=adata,
        gex=gex,
        v3_mtx=tmp_path / "v3_mtx",
        v2_mtx=tmp_path / "v2_mtx",
        v3_h5=tmp_path / "v3.h5",
        v2_h5=tmp_path / "v2.h5",
    )
    sd.io.write_10x_mtx(adata, out.v3_mtx, version=3)
    sd.io.write_10x_mtx(gex, out.v2_mtx, version=2)
    sd.io.write_10x_h5(adata, out.v3_h5, version=3)
    sd.io.write_10x_h5(gex, out.v2_h5, version=2)
    return out


def assert_same_10x(ours: ad.AnnData, ref: ad.AnnData, *, columns=("gene_ids",)) -> None:
    """Values, barcodes, names and the given var columns agree exactly."""
    assert ours.shape == ref.shape
    assert sparse.issparse(ours.X)
    assert ours.X.format == "csr"
    assert ours.X.dtype == np.float32
    ref_X = ref.X.toarray() if sparse.issparse(ref.X) else np.asarray(ref.X)
    np.testing.assert_array_equal(ours.X.toarray(), ref_X)
    assert list(ours.obs_names) == list(ref.obs_names)
    assert list(ours.var_names) == list(ref.var_names)
    for col in columns:
        assert list(ours.var[col].astype(str)) == list(ref.var[col].astype(str)), col


@pytest.fixture
def same_10x():
    """The exact-agreement assertion, as a fixture (tests import nothing from conftest)."""
    return assert_same_10x


def scanpy_h5(path, **kw) -> ad.AnnData:
    """scanpy.read_10x_h5 followed by var_names_make_unique (scanpy leaves duplicates)."""
    import scanpy as sc

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Variable names are not unique")
        adata = sc.read_10x_h5(path, **kw)
        adata.var_names_make_unique()
    return adata


@pytest.fixture
def read_scanpy_h5():
    return scanpy_h5
