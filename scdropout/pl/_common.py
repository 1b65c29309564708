"""Helpers shared by the plotting modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scdropout._utils import check_adata, missing_key_message


def stored_results(adata: Any, key: str, *, marker: str, producer: str) -> Mapping[str, Any]:
    """Return ``adata.uns[key]``, the record a ``tl`` function stored, checked before drawing.

    ``marker`` is an entry that record always has; ``producer`` (e.g. ``"tl.cidr"``) is named
    in the error, with the ``key_added`` that would create ``key``.
    """
    check_adata(adata)
    if not isinstance(key, str):
        msg = f"`key` must be a string, got {key!r}."
        raise TypeError(msg)
    res = adata.uns.get(key)
    if not isinstance(res, Mapping) or marker not in res:
        msg = missing_key_message("key", key, adata.uns.keys(), "uns")
        msg += f" Run `scdropout.{producer}(adata, key_added={key!r})` first."
        raise KeyError(msg)
    return res
