"""Fixtures for the torch model tests: one torch thread, a small planted dataset."""

from __future__ import annotations

import pytest

import scdropout as sd

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """Tiny models run fastest on one thread, and CI machines are shared; restore afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def _small_cached():
    return sd.datasets.synthetic(
        n_cells=200, n_genes=100, n_groups=3, n_markers=10, random_state=1
    )


@pytest.fixture
def small(_small_cached):
    """200 cells x 100 genes with 3 planted groups (fresh copy)."""
    return _small_cached.copy()
