"""tl.cidr when CIDR's weighting-threshold fit (wThreshold, ALGORITHMS.md §2.3) cannot be done.

On binary counts every non-zero is the same value, so each cell's dropout threshold lies above
it: every entry is a candidate and the dropout curve has nothing to fit.
"""

from __future__ import annotations

import numpy as np
import pytest
from anndata import AnnData
from scipy import sparse

import scdropout as sd


@pytest.fixture
def binary() -> AnnData:
    rng = np.random.default_rng(0)
    X = (rng.random((60, 40)) < 0.3).astype(np.float64)
    X[:, 0] = 1.0  # no empty cell
    a = AnnData(sparse.csr_matrix(X))
    a.var_names = [f"g{i}" for i in range(a.n_vars)]
    return a


def _snapshot(a: AnnData) -> tuple:
    return (a.X.copy(), list(a.obs.columns), list(a.var.columns), set(a.uns), set(a.obsm))


@pytest.mark.parametrize("kwargs", [{"flavor": "r"}, {"impute": True}])
def test_fit_failure_raises_naming_step_and_option(binary, kwargs):
    before = _snapshot(binary)
    with pytest.raises(
        RuntimeError, match=r"weighting-threshold fit \(wThreshold\).*zeros_only=True"
    ):
        sd.tl.cidr(binary, progress_bar=False, **kwargs)
    after = _snapshot(binary)
    assert (after[0] != before[0]).nnz == 0
    assert after[1:] == before[1:]


def test_fit_failure_default_flavor_warns_and_clusters(binary):
    with pytest.warns(UserWarning, match=r"wThreshold.*does not use W"):
        out = sd.tl.cidr(binary, progress_bar=False, copy=True)
    assert np.isnan(out.uns["cidr"]["w_threshold"])
    assert out.obsm["X_cidr"].shape[0] == binary.n_obs
    assert out.obs["cidr"].notna().all()
    # every entry of these binary counts is a candidate
    rate = out.var["cidr_dropout_rate"].to_numpy() if "cidr_dropout_rate" in out.var else None
    if rate is not None:
        np.testing.assert_allclose(rate, 1.0)


def test_zeros_only_avoids_the_failure(binary):
    out = sd.tl.cidr(binary, flavor="r", zeros_only=True, progress_bar=False, copy=True)
    assert np.isfinite(out.uns["cidr"]["w_threshold"])
    assert out.uns["cidr"]["n_clusters"] >= 2
