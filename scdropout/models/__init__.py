"""scdropout.models: the PyTorch dropout-regularised count autoencoder (imports torch).

Layout after scvi-tools without Lightning (STYLE.md §4): ``_distributions`` (Poisson/NB/ZINB
log-likelihoods), ``_module`` (:class:`DropoutAENet`, tensors in and out), ``_data``
(registration and a minibatch Dataset over CSR rows), ``_train`` (the training loop) and
``_model`` (:class:`DropoutAutoencoder`, the user-facing class).
"""

from __future__ import annotations

from ._data import Registry, register
from ._distributions import log_nb, log_poisson, log_zinb
from ._model import DropoutAutoencoder
from ._module import DropoutAENet, ForwardOutput, LossOutput
from ._train import History

__all__ = [
    "DropoutAENet",
    "DropoutAutoencoder",
    "ForwardOutput",
    "History",
    "LossOutput",
    "Registry",
    "log_nb",
    "log_poisson",
    "log_zinb",
    "register",
]
