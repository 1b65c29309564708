"""Helpers shared by the plotting modules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from scdropout._utils import check_adata, missing_key_message, written_by


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
        if key in adata.uns:  # there, but not this function's record
            owner = written_by(adata, "uns", key)
            msg = (
                f"`adata.uns[{key!r}]` is not a `{producer}` result"
                + (f" (it holds results of `{owner}`)" if owner else "")
                + f"; pass the `key_added` you gave `scdropout.{producer}`."
            )
        else:
            msg = missing_key_message("key", key, adata.uns.keys(), "uns")
            msg += f" Run `scdropout.{producer}(adata, key_added={key!r})` first."
        raise KeyError(msg)
    return res
