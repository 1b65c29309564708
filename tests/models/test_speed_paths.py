"""The fast training paths (analytic NB gradients, sparse input, batch loader) match the plain ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scdropout.models import DropoutAENet
from scdropout.models._data import CountDataset, batch_loader, register
from scdropout.models._distributions import (
    NB_TABLE_SIZE,
    nb_log_ratio,
    nb_log_zero,
    nb_softmax_loglik,
)


def _batch(adata, n=64):
    _, counts, lib = register(adata)
    b = CountDataset(counts, lib)[list(range(n))]
    return b.x.double(), b.library.double(), b.nz


@pytest.mark.parametrize("log_theta_sd", [0.5, 6.0])  # 6: θ from ~1e-4 to 1e4 (Stirling branch)
def test_nb_softmax_loglik_value_and_gradients_match_autograd(small, log_theta_sd):
    x, lib, (rows, cols) = _batch(small)
    x = x.clone()
    x[0, 0] = NB_TABLE_SIZE + 17.0  # counts beyond the table take the lgamma/digamma route
    x[1, 3] = 3 * NB_TABLE_SIZE
    x[2, 1] = 2.5  # a non-integer value (DropoutAENet alone does not check) is exact too
    nz = torch.nonzero(x, as_tuple=True)
    rows, cols = nz
    flat = rows * x.shape[1] + cols
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(x.shape, generator=gen, dtype=torch.float64, requires_grad=True)
    log_theta = torch.randn(x.shape[1], generator=gen, dtype=torch.float64) * log_theta_sd
    log_theta.requires_grad_()

    def reference():
        theta = torch.exp(log_theta)
        mu = torch.softmax(logits, -1) * lib
        xv = x.reshape(-1)[flat]
        mu_nz = mu.reshape(-1)[flat]
        return nb_log_zero(mu, theta).sum() + nb_log_ratio(xv, mu_nz, theta[cols]).sum()

    def fast():
        theta = torch.exp(log_theta)
        mu = torch.softmax(logits, -1) * lib
        return nb_softmax_loglik(logits, mu, theta, x, flat, cols)

    results = []
    for f in (reference, fast):
        logits.grad = log_theta.grad = None
        value = f()
        value.backward()
        results.append((value.detach(), logits.grad.clone(), log_theta.grad.clone()))
    (v0, gl0, gt0), (v1, gl1, gt1) = results
    torch.testing.assert_close(v1, v0, rtol=1e-12, atol=1e-9)
    torch.testing.assert_close(gl1, gl0, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(gt1, gt0, rtol=1e-7, atol=1e-8)


@pytest.mark.parametrize("scale_input", [False, True])
def test_training_forward_equals_dense_input_path(small, scale_input):
    """Sparse input normalisation + fast loss give the dense path's loss and gradients."""
    x, lib, nz = _batch(small)
    net = DropoutAENet(x.shape[1], mask_rate=0.3, scale_input=scale_input).double().train()
    if scale_input:
        gen = torch.Generator().manual_seed(1)
        net.set_input_scaling(torch.rand(x.shape[1], generator=gen) * 3, torch.rand(x.shape[1]))

    def run(fast):
        net.zero_grad()
        with torch.random.fork_rng():
            torch.random.manual_seed(0)
            out = net(x, lib, nz=nz)
            if not fast:  # the dense reference: same mask and dropout draws
                torch.random.manual_seed(0)
                masked = net.draw_mask(x, nz)
                z = net.encode(x.masked_fill(masked, 0.0), lib)
                mu, theta, pi = net.decode(z, lib)
                assert torch.equal(masked, out.masked)
                out = type(out)(z=z, mu=mu, theta=theta, pi_logits=pi, masked=masked)
        loss = net.loss(x, out, nz)
        loss.total.backward()
        grads = [p.grad.clone() for p in net.parameters()]
        return out, loss, grads

    out_f, loss_f, g_f = run(fast=True)
    out_d, loss_d, g_d = run(fast=False)
    assert out_f.softmax_parts is not None
    assert out_d.softmax_parts is None
    torch.testing.assert_close(out_f.z, out_d.z, rtol=1e-12, atol=1e-12)
    assert loss_f.total.item() == pytest.approx(loss_d.total.item(), rel=1e-12)
    assert loss_f.nll_masked.item() == pytest.approx(loss_d.nll_masked.item(), rel=1e-12)
    assert loss_f.n_masked.item() == loss_d.n_masked.item() > 0
    for a, b in zip(g_f, g_d, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)


def test_replaced_mean_turns_the_fast_path_off(small):
    import dataclasses

    x, lib, nz = _batch(small)
    net = DropoutAENet(x.shape[1]).double().eval()
    out = net(x, lib, nz=nz)
    other = dataclasses.replace(out, mu=out.mu * 0.5)
    expected = -net.log_likelihood(x, other).sum().item() / x.shape[0]
    assert net.loss(x, other, nz).total.item() == pytest.approx(expected, rel=1e-12)


def test_batch_loader_order_and_global_rng(small):
    _, counts, lib = register(small)
    ds = CountDataset(counts, lib)
    idx = np.arange(5, 200)
    gen = torch.Generator().manual_seed(3)
    torch.random.manual_seed(123)
    state = torch.random.get_rng_state()
    loader = batch_loader(ds, idx, batch_size=32, shuffle=True, generator=gen)
    batches = list(loader)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global RNG is never drawn
    # SubsetRandomSampler's order: randperm from the generator, sorted within each batch
    perm = torch.randperm(len(idx), generator=torch.Generator().manual_seed(3)).numpy()
    order = idx[perm]
    assert len(loader) == len(batches) == 7  # 195 = 6 x 32 + 3
    for k, b in enumerate(batches):
        rows = np.sort(order[32 * k : 32 * (k + 1)])
        np.testing.assert_array_equal(b.x.numpy(), counts[rows].toarray())
    # a trailing batch of one cell is merged into the previous one
    sizes = [b.x.shape[0] for b in batch_loader(ds, np.arange(65), batch_size=32, shuffle=False)]
    assert sizes == [32, 33]


def test_default_max_epochs_caps_optimizer_steps():
    from scdropout.models._train import MAX_STEPS, default_max_epochs

    # scVI's rule where it needs fewer steps than the cap
    assert default_max_epochs(64) == 400
    assert default_max_epochs(1000) == 400
    assert default_max_epochs(2100) == 236  # 17 batches per epoch
    # above ~1,300 cells the step cap decides: epochs x batches per epoch stays near MAX_STEPS
    for n, batch in [(10_000, 128), (100_000, 128), (100_000, 256), (1_000_000, 128)]:
        epochs = default_max_epochs(n, batch)
        steps = epochs * -(-n // batch)
        assert MAX_STEPS <= steps < MAX_STEPS + -(-n // batch)
    assert default_max_epochs(100_000) == 6
    assert default_max_epochs(100_000) < round(20000 / 100_000 * 400)
