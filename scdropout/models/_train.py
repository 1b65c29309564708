"""A plain training loop: Adam, validation split, early stopping, NaN-loss detection, epoch bar."""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from scdropout._logging import logger
from scdropout._settings import settings

from ._data import BatchLoader, CountDataset, batch_loader
from ._module import DropoutAENet


@dataclass
class History:
    """Per-epoch losses of one training run.

    Attributes
    ----------
    train_loss
        Mean per-cell negative log-likelihood on the training cells (with dropout active).
    val_loss
        The same on the validation cells in eval mode (empty without a validation split).
    train_nll_masked
        Per-entry NLL of the masked counts (empty when ``mask_rate`` is 0).
    best_epoch
        1-based epoch whose weights were kept (lowest validation loss; the last epoch without one).
    stopped_early
        Whether early stopping ended the run before ``max_epochs``.
    """

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    train_nll_masked: list[float] = field(default_factory=list)
    best_epoch: int = 0
    stopped_early: bool = False

    @property
    def n_epochs(self) -> int:
        """Number of epochs run."""
        return len(self.train_loss)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "train_loss": list(self.train_loss),
            "val_loss": list(self.val_loss),
            "train_nll_masked": list(self.train_nll_masked),
            "best_epoch": int(self.best_epoch),
            "stopped_early": bool(self.stopped_early),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        """Rebuild from :meth:`to_dict` output."""
        return cls(
            train_loss=[float(v) for v in d.get("train_loss", [])],
            val_loss=[float(v) for v in d.get("val_loss", [])],
            train_nll_masked=[float(v) for v in d.get("train_nll_masked", [])],
            best_epoch=int(d.get("best_epoch", 0)),
            stopped_early=bool(d.get("stopped_early", False)),
        )


@contextmanager
def cpu_threads(device: torch.device) -> Iterator[None]:
    """Run the block with at most ``settings.n_jobs`` torch threads on CPU, restored on exit.

    Never raises the caller's own ``torch.get_num_threads()``; on a GPU it changes nothing.
    (On a loaded 2-core machine two OpenMP threads spin against other jobs, so
    ``settings.n_jobs = 1`` can be faster there.)
    """
    old = torch.get_num_threads()
    n = min(old, int(settings.n_jobs)) if device.type == "cpu" else old
    if n != old:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n != old:
            torch.set_num_threads(old)


def default_max_epochs(n_cells: int, batch_size: int = 128) -> int:
    """Return the default epoch count: scVI's rule, with at most ``MAX_STEPS`` optimizer steps.

    scVI's rule ``min(round(20000 / n_cells · 400), 400)`` (capped at ``MAX_EPOCHS_CAP``) keeps
    the number of cell passes constant above 20,000 cells, so the number of optimizer steps
    grows with the data. The epoch count is also capped at ``MAX_STEPS`` (4,000) steps of
    ``batch_size`` cells, the budget shared/benchmarks/peers.md gave scVI: no change up to
    about 1,300 cells (small sets stop early long before 400 epochs), 59 epochs on
    cbmc_citeseq (8,617 cells), 51 at 10,000, 6 at 100,000 (where scVI's rule gives 80).
    Measured (benchmarks/RESULTS.md): on cbmc_citeseq the clustering of the embedding stopped
    improving after about 50 epochs (Ward ARI 0.748 at 25 epochs, 0.743 at 50, 0.722 at 175;
    Leiden 0.787 at 50, 0.707-0.840 later) while the validation loss still fell by 0.01% per
    epoch, and at 100,000 cells 6 epochs gave KMeans ARI 0.982 on the planted groups (32
    epochs: 0.977).
    """
    n = max(n_cells, 1)
    scvi = min(round(20000 / n * 400), MAX_EPOCHS_CAP)
    steps_per_epoch = math.ceil(n / max(int(batch_size), 1))
    return max(1, min(scvi, math.ceil(MAX_STEPS / steps_per_epoch)))


#: cap on the default epoch count; early stopping usually ends runs well before it
MAX_EPOCHS_CAP = 400
#: cap on the optimizer steps of the default epoch count (scVI's budget in shared/benchmarks/peers.md)
MAX_STEPS = 4_000


def split_indices(
    n: int, validation_fraction: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(train, validation)`` cell indices; no validation below 20 cells or at fraction 0."""
    perm = rng.permutation(n)
    n_val = n_validation(n, validation_fraction)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def n_validation(n: int, validation_fraction: float) -> int:
    """Return how many of ``n`` cells :func:`split_indices` holds out for validation."""
    return round(n * validation_fraction) if n >= 20 else 0


def _nan_error(epoch: int, value: float, lr: float, likelihood: str) -> RuntimeError:
    knob = f"lower `lr` (now {lr!r})"
    if likelihood != "nb":
        knob += ", or use `likelihood='nb'`"
    msg = (
        f"The training loss became {value!r} at epoch {epoch}; {knob}. Check also that the "
        "counts are raw integer UMI/read counts."
    )
    return RuntimeError(msg)


def _adam(
    module: DropoutAENet, *, lr: float, weight_decay: float, device: torch.device
) -> torch.optim.Adam:
    """Adam with scVI's ``eps=0.01``; the fused kernel where torch has one (one pass per step)."""
    params = list(module.parameters())
    fused = device.type in ("cpu", "cuda") and all(p.dtype == torch.float32 for p in params)
    try:
        return torch.optim.Adam(params, lr=lr, eps=0.01, weight_decay=weight_decay, fused=fused)
    except (RuntimeError, TypeError):  # older torch without a fused kernel for this device
        return torch.optim.Adam(params, lr=lr, eps=0.01, weight_decay=weight_decay)


def train_loop(
    module: DropoutAENet,
    dataset: CountDataset,
    *,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    max_epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    early_stopping: bool,
    patience: int,
    device: torch.device,
    generator: torch.Generator,
    progress_bar: bool,
) -> History:
    """Train ``module`` in place and return its :class:`History`.

    Adam (scVI's ``eps=0.01``, weight decay), gradient-norm clipping at 100, one pass over
    ``train_idx`` per epoch in minibatches shuffled by ``generator``. With a validation set the
    weights of the best validation epoch are restored at the end; early stopping ends the run
    after ``patience`` epochs without a relative improvement of 1e-4.

    Raises
    ------
    RuntimeError
        When a loss is NaN or infinite; the message names the epoch and the knob to change.
    """
    from tqdm.auto import tqdm

    module.to(device)
    opt = _adam(module, lr=lr, weight_decay=weight_decay, device=device)
    train_loader = batch_loader(
        dataset, train_idx, batch_size=batch_size, shuffle=True, generator=generator
    )
    val_loader = (
        batch_loader(dataset, val_idx, batch_size=max(batch_size, 1024), shuffle=False)
        if len(val_idx)
        else None
    )
    hist = History()
    best = math.inf
    best_state: dict[str, torch.Tensor] | None = None
    since_best = 0
    bar = tqdm(range(1, max_epochs + 1), desc="epochs", unit="epoch", disable=not progress_bar)
    for epoch in bar:
        module.train()
        tot, n_cells, masked_sum, n_masked = 0.0, 0, 0.0, 0
        for cpu_batch in train_loader:
            batch = cpu_batch.to(device)
            x = batch.x
            out = module(x, batch.library, nz=batch.nz)
            loss = module.loss(x, out, batch.nz, log_factorial=batch.log_factorial)
            if not torch.isfinite(loss.total):
                raise _nan_error(epoch, float(loss.total.detach()), lr, module.likelihood)
            opt.zero_grad(set_to_none=True)
            loss.total.backward()
            torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm=100.0)
            opt.step()
            tot += float(loss.total.detach()) * x.shape[0]
            n_cells += x.shape[0]
            if out.masked is not None:
                k = int(loss.n_masked)
                masked_sum += float(loss.nll_masked.detach()) * k
                n_masked += k
        hist.train_loss.append(tot / max(n_cells, 1))
        if module.mask_rate > 0:
            hist.train_nll_masked.append(masked_sum / max(n_masked, 1))
        current = hist.train_loss[-1]
        if val_loader is not None:
            current = evaluate(module, val_loader, device)
            if not math.isfinite(current):
                raise _nan_error(epoch, current, lr, module.likelihood)
            hist.val_loss.append(current)
        postfix = {"train": f"{hist.train_loss[-1]:.4g}"}
        if hist.val_loss:
            postfix["val"] = f"{hist.val_loss[-1]:.4g}"
        bar.set_postfix(postfix, refresh=False)
        if not math.isfinite(best) or current < best - 1e-4 * abs(best):
            best = current
            hist.best_epoch = epoch
            since_best = 0
            if val_loader is not None:
                best_state = copy.deepcopy(module.state_dict())
        else:
            since_best += 1
            if early_stopping and since_best >= patience:
                hist.stopped_early = True
                logger.debug("early stopping at epoch %d (best %d)", epoch, hist.best_epoch)
                break
    bar.close()
    if best_state is not None:
        module.load_state_dict(best_state)
    else:
        hist.best_epoch = hist.n_epochs
    module.eval()
    return hist


def evaluate(module: DropoutAENet, loader: BatchLoader, device: torch.device) -> float:
    """Return the mean per-cell NLL over ``loader`` in eval mode (no masking, no dropout)."""
    module.eval()
    tot, n = 0.0, 0
    with torch.inference_mode():
        for cpu_batch in loader:
            batch = cpu_batch.to(device)
            x = batch.x
            out = module(x, batch.library, mask=False, nz=batch.nz)
            loss = module.loss(x, out, batch.nz, log_factorial=batch.log_factorial)
            tot += float(loss.total) * x.shape[0]
            n += x.shape[0]
    return tot / max(n, 1)
