"""sd.tl.cidr's `device`: numba on the CPU, torch on CUDA, and the dispatch between them."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

import scdropout as sd
from scdropout.tl import _cidr as tc

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def small():
    return sd.datasets.synthetic(n_cells=120, n_genes=200, n_groups=3, random_state=2)


@pytest.fixture(scope="module")
def on_cpu(small):
    return sd.tl.cidr(
        small, flavor="r", device="cpu", progress_bar=False, store_distances=True, copy=True
    )


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend CUDA exists for the dispatch, while torch really computes on the CPU."""
    from scdropout.models import cidr_torch

    real = cidr_torch.resolve_torch_device
    monkeypatch.setattr(tc, "_cuda_available", lambda: True)
    monkeypatch.setattr(
        cidr_torch, "resolve_torch_device", lambda d: real("cpu" if str(d) == "cuda" else d)
    )


def test_cpu_path_records_cpu(on_cpu):
    assert on_cpu.uns["cidr"]["device_used"] == "cpu"
    assert on_cpu.uns["cidr"]["params"]["device"] == "cpu"


def test_auto_without_cuda_is_the_cpu_path(small, on_cpu, monkeypatch):
    monkeypatch.setattr(tc, "_cuda_available", lambda: False)
    assert tc._resolve_device("auto") == "cpu"
    a = sd.tl.cidr(small, flavor="r", progress_bar=False, store_distances=True, copy=True)
    assert a.uns["cidr"]["device_used"] == "cpu"
    assert_array_equal(a.obsp["cidr_distances"], on_cpu.obsp["cidr_distances"])
    assert_array_equal(a.obs["cidr"], on_cpu.obs["cidr"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0"])
def test_cuda_without_cuda_raises_before_work(small, device):
    a = small.copy()
    with pytest.raises(ValueError, match="CUDA is not available"):
        sd.tl.cidr(a, flavor="r", device=device, progress_bar=False)
    assert "cidr" not in a.uns


def test_bad_device_name(small):
    with pytest.raises(ValueError, match="device"):
        sd.tl.cidr(small.copy(), flavor="r", device="cuda:x", progress_bar=False)


def test_auto_picks_cuda_when_available(monkeypatch):
    monkeypatch.setattr(tc, "_cuda_available", lambda: True)
    assert tc._resolve_device("auto") == "cuda"
    assert tc._resolve_device("cpu") == "cpu"


def test_torch_path_equals_cpu_path(small, on_cpu, fake_cuda):
    a = sd.tl.cidr(
        small, flavor="r", device="cuda", progress_bar=False, store_distances=True, copy=True
    )
    u, r = a.uns["cidr"], on_cpu.uns["cidr"]
    assert u["device_used"] == "cuda"
    assert_allclose(a.obsp["cidr_distances"], on_cpu.obsp["cidr_distances"], rtol=1e-10)
    assert u["eigenvalues_complete"]
    assert_allclose(u["eigenvalues"], r["eigenvalues"], rtol=1e-8, atol=1e-8 * r["eigenvalues"][0])
    assert u["n_pcs"] == r["n_pcs"]
    assert u["n_clusters"] == r["n_clusters"]
    assert_array_equal(a.obs["cidr"], on_cpu.obs["cidr"])
    n = u["n_pcs"]
    assert_allclose(
        np.abs(a.obsm["X_cidr"][:, :n]), np.abs(on_cpu.obsm["X_cidr"][:, :n]), atol=1e-7
    )


def test_logistic_mode_stays_on_numba(small, fake_cuda, caplog):
    with caplog.at_level(logging.INFO, logger="scdropout"):
        a = sd.tl.cidr(
            small, flavor="r", device="cuda", step_function=False, progress_bar=False, copy=True
        )
    assert a.uns["cidr"]["device_used"] == "cpu"
    assert "runs on the CPU" in caplog.text


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_run_matches_cpu(small, on_cpu):
    a = sd.tl.cidr(
        small, flavor="r", device="cuda", progress_bar=False, store_distances=True, copy=True
    )
    assert a.uns["cidr"]["device_used"] == "cuda"
    assert_allclose(a.obsp["cidr_distances"], on_cpu.obsp["cidr_distances"], rtol=1e-10)
    assert a.uns["cidr"]["n_clusters"] == on_cpu.uns["cidr"]["n_clusters"]
