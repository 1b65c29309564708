"""Matplotlib figures from stored results; nothing is recomputed from the data.

Single-panel functions return the matplotlib ``Axes`` they drew into (and accept ``ax=``);
multi-panel functions return the ``Figure``. Neither calls ``pyplot.show()`` unless
``show=True``. ``matplotlib.pyplot`` is imported on the first call, not at import time.
"""

from __future__ import annotations

from ._autoencoder import autoencoder_history, imputed_gene
from ._cidr import cidr_eigenvalues, cidr_thresholds
from ._compare import compare_embeddings, compare_scores
from ._dropout import dropout_curve, dropout_qc

__all__ = [
    "autoencoder_history",
    "cidr_eigenvalues",
    "cidr_thresholds",
    "compare_embeddings",
    "compare_scores",
    "dropout_curve",
    "dropout_qc",
    "imputed_gene",
]
