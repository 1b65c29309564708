"""scdropout: single-cell RNA-seq analysis that takes dropouts seriously.

Subpackages follow scanpy's layout: ``io`` (10X readers and writers), ``pp`` (dropout statistics
and dropout-aware gene selection), ``tl`` (CIDR-style clustering, autoencoder, baselines),
``get`` (stored results as tables), ``pl`` (figures), ``datasets`` (example data and a
simulator), ``kernels`` (numba kernels on plain arrays) and ``models`` (PyTorch). ``pl`` and
``models`` are imported on first use so that ``import scdropout`` stays light.
"""

from __future__ import annotations

import importlib
from typing import Any

from . import datasets, get, io, kernels, pp, tl
from ._settings import settings
from ._version import __version__

_LAZY = {"pl", "models"}

__all__ = [
    "__version__",
    "datasets",
    "get",
    "io",
    "kernels",
    "models",
    "pl",
    "pp",
    "settings",
    "tl",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f".{name}", __name__)
        globals()[name] = module
        return module
    msg = f"module 'scdropout' has no attribute {name!r}"
    raise AttributeError(msg)


def __dir__() -> list[str]:
    return sorted(set(globals()) | _LAZY)
