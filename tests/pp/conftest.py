"""Fixtures for the pp tests."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse

import scdropout as sd


@pytest.fixture(scope="session")
def _dropout_reference(_synthetic_cached):
    """dropout_stats / both dropout_genes flavors on the synthetic data, computed once."""
    a = _synthetic_cached.copy()
    sd.pp.dropout_stats(a)
    sd.pp.dropout_genes(a, flavor="nbumi", n_top_genes=60)
    sd.pp.dropout_genes(a, flavor="m3drop", n_top_genes=60, key_added="mm")
    return a


@pytest.fixture
def dropout_reference(_dropout_reference):
    """A copy of the synthetic data with dropout_stats and both dropout_genes results."""
    return _dropout_reference.copy()


@pytest.fixture
def tiny_counts():
    """A 6 x 5 count matrix with one gene without counts, as a fresh AnnData."""
    X = np.array(
        [
            [1, 0, 3, 0, 0],
            [0, 2, 0, 0, 1],
            [4, 0, 0, 0, 2],
            [0, 0, 1, 0, 0],
            [2, 1, 0, 0, 5],
            [0, 3, 2, 0, 1],
        ],
        dtype=np.float32,
    )
    return ad.AnnData(
        X=sparse.csr_matrix(X),
        obs=pd.DataFrame(index=[f"cell{i}" for i in range(6)]),
        var=pd.DataFrame(index=[f"gene{j}" for j in range(5)]),
    )
