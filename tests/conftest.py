"""Shared fixtures: a cached synthetic dataset, matrix formats, and the ../shared folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

import scdropout as sd

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def _synthetic_cached():
    return sd.datasets.synthetic(n_cells=300, n_genes=500, n_groups=3, random_state=0)


@pytest.fixture
def synthetic(_synthetic_cached):
    """A seeded ZINB-like matrix (300 cells x 500 genes, 3 planted groups); a fresh copy."""
    return _synthetic_cached.copy()


@pytest.fixture(params=["csr", "csc", "dense"])
def matrix_format(request):
    """A converter from CSR to each accepted layout."""
    kind = request.param

    def convert(X):
        if kind == "csr":
            return sparse.csr_matrix(X)
        if kind == "csc":
            return sparse.csc_matrix(X)
        return X.toarray() if sparse.issparse(X) else np.asarray(X)

    convert.kind = kind
    return convert


@pytest.fixture(params=[np.float32, np.float64, np.int32, np.int64])
def count_dtype(request):
    """Each numeric dtype counts may come in."""
    return request.param


@pytest.fixture(scope="session")
def shared() -> Path:
    """The ``../shared`` folder beside the repo, or skip with the reason."""
    if not SHARED.is_dir():
        pytest.skip(f"real data and reference outputs not available: {SHARED} does not exist")
    return SHARED
