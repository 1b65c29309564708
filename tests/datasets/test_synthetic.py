"""The seeded simulator: reproducible, planted structure, validated arguments."""

from __future__ import annotations

import numpy as np
import pytest

import scdropout as sd


def test_same_seed_same_data_other_seed_differs():
    a = sd.datasets.synthetic(n_cells=80, n_genes=120, random_state=5)
    b = sd.datasets.synthetic(n_cells=80, n_genes=120, random_state=5)
    c = sd.datasets.synthetic(n_cells=80, n_genes=120, random_state=6)
    assert (a.X != b.X).nnz == 0
    assert list(a.obs_names) == list(b.obs_names)
    assert (a.X != c.X).nnz > 0


def test_shapes_labels_and_layers(synthetic):
    assert synthetic.shape == (300, 500)
    assert synthetic.obs["group"].cat.categories.tolist() == ["0", "1", "2"]
    assert synthetic.obs["group"].value_counts().tolist() == [100, 100, 100]
    assert synthetic.obs_names.is_unique
    assert synthetic.var_names.is_unique
    X = synthetic.X
    assert X.dtype == np.float32
    assert X.format == "csr"
    np.testing.assert_array_equal(X.data, np.round(X.data))
    # dropout only removes counts: observed <= true entrywise
    diff = synthetic.layers["true_counts"] - X
    assert diff.min() >= 0
    assert diff.sum() > 0
    assert (synthetic.var["marker_of"] != "").sum() == 3 * 20


def test_markers_are_up_in_their_group(synthetic):
    X = synthetic.X.toarray()
    libs = X.sum(1, keepdims=True)
    norm = X / libs
    for k in ["0", "1", "2"]:
        genes = synthetic.var["marker_of"].to_numpy() == k
        cells = synthetic.obs["group"].to_numpy() == k
        inside = norm[np.ix_(cells, genes)].mean(0)
        outside = norm[np.ix_(~cells, genes)].mean(0)
        assert np.median(inside / np.maximum(outside, 1e-12)) > 2


def test_dropout_slope_zero_keeps_true_counts():
    a = sd.datasets.synthetic(n_cells=50, n_genes=60, dropout_slope=0.0)
    assert (a.layers["true_counts"] != a.X).nnz == 0


def test_chunking_does_not_change_the_data_shape():
    a = sd.datasets.synthetic(n_cells=50, n_genes=60, chunk_size=7, true_counts=False)
    assert a.shape == (50, 60)
    assert "true_counts" not in a.layers


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_cells": 0}, "`n_cells` must be at least 1"),
        ({"n_groups": 10, "n_markers": 100}, "n_groups \\* n_markers"),
        ({"library_size": -5.0}, "`library_size` must be a positive"),
        ({"dispersion": -0.1}, "`dispersion` must be a non-negative"),
        ({"dropout_midpoint": float("nan")}, "`dropout_midpoint` must be a finite"),
        ({"dropout_midpoint": float("inf")}, "`dropout_midpoint` must be a finite"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sd.datasets.synthetic(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"library_size": "2000"}, "`library_size` must be a number"),
        ({"dispersion": None}, "`dispersion` must be a number"),
        ({"true_counts": "no"}, "`true_counts` must be a bool"),
    ],
)
def test_wrong_types_name_the_argument(kwargs, match):
    with pytest.raises(TypeError, match=match):
        sd.datasets.synthetic(**kwargs)


def test_chunk_size_is_recorded_with_the_seed():
    a = sd.datasets.synthetic(n_cells=50, n_genes=60, chunk_size=7)
    b = sd.datasets.synthetic(n_cells=50, n_genes=60, chunk_size=7)
    assert a.uns["simulation"]["chunk_size"] == 7
    assert (a.X != b.X).nnz == 0
