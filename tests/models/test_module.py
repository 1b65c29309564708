"""DropoutAENet: the sparse loss equals the dense likelihood, masking and dropout variants work."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdropout.models import DropoutAENet
from scdropout.models._data import CountDataset, register
from scdropout.models._module import GaussianDropout


def _batch(adata, n=64):
    _, counts, lib = register(adata)
    b = CountDataset(counts, lib)[list(range(n))]
    return b.x.double(), b.library.double(), b.nz


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
def test_loss_equals_dense_log_likelihood(small, likelihood):
    x, lib, nz = _batch(small)
    net = DropoutAENet(x.shape[1], likelihood=likelihood, mask_rate=0.2).double()
    net.train()
    with torch.random.fork_rng():
        torch.random.manual_seed(0)
        out = net(x, lib, nz=nz)
    loss = net.loss(x, out, nz)
    dense = -net.log_likelihood(x, out)
    assert loss.total.item() == pytest.approx(dense.sum().item() / x.shape[0], rel=1e-12)
    assert loss.nll_masked.item() == pytest.approx(dense[out.masked].mean().item(), rel=1e-12)
    assert loss.n_masked.item() == out.masked.sum().item() > 0
    # without the precomputed non-zeros the result is the same
    assert net.loss(x, out).total.item() == pytest.approx(loss.total.item(), rel=1e-12)


@pytest.mark.parametrize("likelihood", ["nb", "zinb", "poisson"])
def test_precomputed_log_factorial_gives_the_same_loss(small, likelihood):
    _, counts, lib = register(small)
    batch = CountDataset(counts, lib)[list(range(50))]
    x = batch.x.double()
    torch.testing.assert_close(
        batch.log_factorial.double(), torch.lgamma(x + 1).sum(1), rtol=1e-6, atol=1e-3
    )
    net = DropoutAENet(x.shape[1], likelihood=likelihood).double().eval()
    out = net(x, batch.library.double(), nz=batch.nz)
    a = net.loss(x, out, batch.nz).total.item()
    b = net.loss(x, out, batch.nz, log_factorial=batch.log_factorial.double()).total.item()
    assert b == pytest.approx(a, rel=1e-6)


def test_batches_from_csr_with_explicit_zeros_and_unsorted_indices():
    from scipy import sparse

    dense = np.array([[0, 2, 0, 1], [3, 0, 0, 0], [0, 0, 5, 4]], dtype=np.float32)
    # row 0 stored unsorted and with an explicit zero at column 2
    data = np.array([1, 0, 2, 3, 4, 5], dtype=np.float32)
    indices = np.array([3, 2, 1, 0, 3, 2])
    indptr = np.array([0, 3, 4, 6])
    csr = sparse.csr_matrix((data, indices, indptr), shape=(3, 4))
    ds = CountDataset(csr, dense.sum(1))
    assert csr.data.size == 6  # the caller's matrix is not modified
    b = ds[[0, 2]]
    np.testing.assert_array_equal(b.x.numpy(), dense[[0, 2]])
    rows, cols = torch.nonzero(torch.from_numpy(dense[[0, 2]]), as_tuple=True)
    assert torch.equal(b.nz_rows, rows)
    assert torch.equal(b.nz_cols, cols)
    from scipy.special import gammaln

    np.testing.assert_allclose(b.log_factorial.numpy(), gammaln(dense[[0, 2]] + 1).sum(1))


def test_count_masking_hides_a_fraction_of_nonzeros_from_the_encoder(small):
    x, lib, nz = _batch(small, n=128)
    net = DropoutAENet(x.shape[1], mask_rate=0.3, dropout_rate=0.0).double()
    net.eval()  # BatchNorm in eval mode; masking is asked for explicitly
    with torch.random.fork_rng():
        torch.random.manual_seed(1)
        out = net(x, lib, mask=True, nz=nz)
    masked = out.masked
    assert not masked[x == 0].any()
    frac = masked.sum().item() / (x > 0).sum().item()
    assert 0.25 < frac < 0.35
    # the encoder saw the masked counts as zeros
    z_seen = net.encode(x.masked_fill(masked, 0.0), lib)
    torch.testing.assert_close(out.z, z_seen)
    assert not torch.allclose(out.z, net.encode(x, lib))
    # no masking in eval mode unless asked, nor with mask_rate 0
    assert net(x, lib).masked is None
    net0 = DropoutAENet(x.shape[1], mask_rate=0.0).train()
    assert net0(x.float(), lib.float()).masked is None


def test_gaussian_dropout_keeps_the_mean_and_has_the_bernoulli_variance():
    drop = GaussianDropout(0.2)
    x = torch.ones(200_000, dtype=torch.float64)
    with torch.random.fork_rng():
        torch.random.manual_seed(0)
        y = drop.train()(x)
    assert y.mean().item() == pytest.approx(1.0, abs=0.01)
    assert y.var().item() == pytest.approx(0.2 / 0.8, rel=0.02)
    assert torch.equal(drop.eval()(x), x)


@pytest.mark.parametrize("kind", ["bernoulli", "gaussian"])
def test_dropout_kind_changes_training_passes_only(small, kind):
    x, lib, _ = _batch(small)
    net = DropoutAENet(x.shape[1], dropout_kind=kind, dropout_rate=0.3).double()
    net.eval()
    assert torch.equal(net(x, lib).z, net(x, lib).z)
    for m in net.modules():
        if isinstance(m, torch.nn.Dropout | GaussianDropout):
            m.train()
    assert not torch.equal(net(x, lib).z, net(x, lib).z)


def test_mean_activations(small):
    x, lib, _ = _batch(small)
    soft = DropoutAENet(x.shape[1]).double().eval()
    # scVI: μ = softmax · L, so each cell's means add up to its library size
    torch.testing.assert_close(soft(x, lib).mu.sum(1, keepdim=True), lib)
    net = DropoutAENet(x.shape[1], mean_activation="exp", library_scale=1000.0).double().eval()
    out = net(x, lib)
    z = net.encode(x, lib)
    raw = net.mean_head(net.decoder(z))
    torch.testing.assert_close(out.mu, torch.exp(raw).clamp(1e-5, 1e6) * lib / 1000.0)
    assert np.isfinite(net.loss(x, out).total.item())


@pytest.mark.parametrize("scale_input", [False, True])
def test_stale_nonzeros_of_hidden_entries_give_the_zero_input(small, scale_input):
    # the gate fit hides entries (sets them to 0) and passes the batch's original non-zeros:
    # a listed entry that is now 0 must reach the encoder exactly as an unlisted zero does
    x, lib, nz = _batch(small, n=96)
    net = DropoutAENet(x.shape[1], scale_input=scale_input).double().eval()
    if scale_input:
        gen = torch.Generator().manual_seed(0)
        net.set_input_scaling(
            torch.rand(x.shape[1], generator=gen), 0.5 + torch.rand(x.shape[1], generator=gen)
        )
    hidden = x.masked_fill(
        torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) < 0.3, 0.0
    )
    assert (hidden != x).any()
    stale = net(hidden, lib, mask=False, nz=nz)
    fresh = net(hidden, lib, mask=False)
    assert torch.equal(stale.z, fresh.z)
    assert torch.equal(stale.mu, fresh.mu)
