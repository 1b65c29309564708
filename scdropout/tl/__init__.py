"""Tools: CIDR-style clustering and the dropout autoencoder, written into the AnnData."""

from __future__ import annotations

from ._autoencoder import autoencoder
from ._cidr import cidr
from ._compare import compare_clusterings

__all__: list[str] = ["autoencoder", "cidr", "compare_clusterings"]
