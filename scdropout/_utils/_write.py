"""Write results into an AnnData in one block, recording which keys scdropout owns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from scdropout import _keys
from scdropout._logging import logger

SLOTS = ("obs", "var", "obsm", "varm", "obsp", "varp", "layers", "uns")


def _written(adata: Any) -> dict[str, list[str]]:
    rec = adata.uns.get(_keys.UNS_SCDROPOUT, {})
    written = rec.get(_keys.WRITTEN, {}) if isinstance(rec, Mapping) else {}
    return {slot: [str(k) for k in np.atleast_1d(written.get(slot, []))] for slot in SLOTS}


def _existing(adata: Any, slot: str) -> Any:
    container = getattr(adata, slot)
    return container.columns if slot in ("obs", "var") else container.keys()


def check_conflicts(
    adata: Any, results: Mapping[str, Mapping[str, Any]], *, key_added: str
) -> None:
    """Raise ``ValueError`` if any key in ``results`` exists in ``adata`` but was not ours.

    Call it during validation, before computing, so a conflict fails fast.
    """
    written = _written(adata)
    for slot, items in results.items():
        if slot not in SLOTS:
            msg = f"internal error: unknown AnnData slot {slot!r}"
            raise ValueError(msg)
        existing = set(_existing(adata, slot))
        for key in items:
            if key in existing and key not in written[slot]:
                msg = (
                    f"`adata.{slot}[{key!r}]` already exists and was not written by scdropout; "
                    f"pass another `key_added` (now {key_added!r}) so nothing of yours is "
                    "overwritten."
                )
                raise ValueError(msg)


def write_results(
    adata: Any, results: Mapping[str, Mapping[str, Any]], *, key_added: str
) -> list[str]:
    """Write ``results`` ({slot: {key: value}}) into ``adata`` and record them as ours.

    Re-writing a key that scdropout wrote before is allowed and logged at info level; a key that
    exists but that scdropout did not write raises ``ValueError`` (nothing is written then).
    Returns the list of ``"slot['key']"`` strings written, for the caller's log line.
    """
    check_conflicts(adata, results, key_added=key_added)
    written = _written(adata)
    out: list[str] = []
    for slot, items in results.items():
        existing = set(_existing(adata, slot))
        container = getattr(adata, slot)
        for key, value in items.items():
            if key in existing:
                logger.info("overwriting adata.%s[%r] from an earlier run", slot, key)
            container[key] = value
            if key not in written[slot]:
                written[slot].append(key)
            out.append(f"{slot}[{key!r}]")
    rec = dict(adata.uns.get(_keys.UNS_SCDROPOUT, {}))
    rec[_keys.WRITTEN] = {slot: list(keys) for slot, keys in written.items() if keys}
    adata.uns[_keys.UNS_SCDROPOUT] = rec
    return out
