"""kernels.smooth: fold-wise neighbour means of the imputation gate vs the NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
from numpy.testing import assert_allclose

from scdropout.kernels.smooth import fold_neighbor_means, fold_neighbor_means_ref


def _case(seed: int, n_ref: int = 40, n_query: int = 7, n_genes: int = 13, k: int = 5, folds=4):
    rng = np.random.default_rng(seed)
    neighbors = rng.integers(0, n_ref, size=(folds, n_query, k))
    fold = rng.integers(0, folds, size=(n_query, n_genes))
    a = rng.gamma(0.5, 2.0, size=(n_ref, n_genes))
    b = (rng.poisson(1.0, size=(n_ref, n_genes))).astype(np.float32)
    return neighbors, fold, [a, b]


def _blocks(values, size):
    n = values[0].shape[0]
    return [(lo, [v[lo : lo + size] for v in values]) for lo in range(0, n, size)]


@pytest.mark.parametrize("block", [1, 7, 40, 64])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_reference_for_any_blocking(seed, block):
    neighbors, fold, values = _case(seed)
    got = fold_neighbor_means(neighbors, fold, _blocks(values, block), n_sources=2)
    assert got.shape == (2, 7, 13)
    assert_allclose(got, fold_neighbor_means_ref(neighbors, fold, values), rtol=1e-12)


def test_each_entry_averages_its_own_folds_neighbours():
    # two folds with disjoint neighbours: entries of fold 0 see rows 0-1, of fold 1 rows 2-3
    values = [np.arange(12, dtype=np.float64).reshape(4, 3)]
    neighbors = np.array([[[0, 1]], [[2, 3]]])
    fold = np.array([[0, 1, 0]])
    got = fold_neighbor_means(neighbors, fold, _blocks(values, 4), n_sources=1)[0]
    assert_allclose(got, [[(0 + 3) / 2, (7 + 10) / 2, (2 + 5) / 2]])


def test_a_fold_with_no_entries_and_repeated_neighbours():
    neighbors, fold, values = _case(3, folds=5)
    fold[fold == 2] = 0  # fold 2 hides nothing
    neighbors[:, 0, :] = 11  # the same neighbour k times
    got = fold_neighbor_means(neighbors, fold, _blocks(values, 9), n_sources=2)
    assert_allclose(got[:, 0], np.stack([v[11] for v in values]), rtol=1e-12)
    assert_allclose(got, fold_neighbor_means_ref(neighbors, fold, values), rtol=1e-12)


def test_bad_shapes_are_named():
    neighbors, fold, values = _case(0)
    with pytest.raises(ValueError, match="same n_cells"):
        fold_neighbor_means(neighbors[:, :3], fold, _blocks(values, 8), n_sources=2)
    with pytest.raises(ValueError, match=r"`fold` values must lie in \[0, 4\)"):
        fold_neighbor_means(neighbors, fold + 1, _blocks(values, 8), n_sources=2)
    with pytest.raises(ValueError, match="must hold 2 arrays"):
        fold_neighbor_means(neighbors, fold, _blocks(values[:1], 8), n_sources=2)
    with pytest.raises(ValueError, match="rows × 13 genes"):
        fold_neighbor_means(neighbors, fold, _blocks([v[:, :5] for v in values], 8), n_sources=2)
