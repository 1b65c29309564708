"""Write results into an AnnData in one block, recording which keys scdropout owns."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from scdropout import _keys
from scdropout._logging import logger
from scdropout._utils._warn import warn

SLOTS = ("obs", "var", "obsm", "varm", "obsp", "varp", "layers", "uns")
#: files written before 2026-12-01 record tl.cidr's keys with an empty owner
_LEGACY_OWNERS = {"": "cidr"}


def _written(adata: Any) -> dict[str, dict[str, str]]:
    """Return ``{slot: {key: owner}}`` of the keys scdropout wrote into ``adata``."""
    rec = adata.uns.get(_keys.UNS_SCDROPOUT, {})
    written = rec.get(_keys.WRITTEN, {}) if isinstance(rec, Mapping) else {}
    out: dict[str, dict[str, str]] = {slot: {} for slot in SLOTS}
    for slot in SLOTS:
        entry = written.get(slot, {})
        if isinstance(entry, Mapping):
            out[slot] = {str(k): str(v) for k, v in entry.items()}
    return out


def _owner_of(prev: str | None) -> str | None:
    """Return the function a recorded owner ``prev`` names (legacy records mapped), or None."""
    return None if prev is None else _LEGACY_OWNERS.get(prev, prev)


def written_by(adata: Any, slot: str, key: str) -> str | None:
    """Return the scdropout function recorded as the writer of ``adata.<slot>[key]``, or None."""
    return _owner_of(_written(adata).get(slot, {}).get(key))


def _check_record(adata: Any) -> None:
    """Raise ``ValueError`` if ``adata.uns['scdropout']`` exists and is not a mapping."""
    rec = adata.uns.get(_keys.UNS_SCDROPOUT)
    if rec is not None and not isinstance(rec, Mapping):
        msg = (
            f"`adata.uns[{_keys.UNS_SCDROPOUT!r}]` holds a {type(rec).__name__}; scdropout keeps "
            "its record of the keys it wrote there (a dict). Move or delete it first."
        )
        raise ValueError(msg)


def _existing(adata: Any, slot: str) -> Any:
    container = getattr(adata, slot)
    return container.columns if slot in ("obs", "var") else container.keys()


def check_conflicts(
    adata: Any,
    results: Mapping[str, Iterable[str]],
    *,
    key_added: str,
    owner: str,
) -> None:
    """Raise ``ValueError`` if a key in ``results`` exists and is not ``owner``'s to overwrite.

    A key may be overwritten only when scdropout wrote it before with the same ``owner`` (the
    public function's name): a key the user or another tool wrote, or one that another
    scdropout function wrote under the same ``key_added``, is refused. Call it during
    validation, before computing, so a conflict fails fast.
    """
    _check_record(adata)
    written = _written(adata)
    for slot, items in results.items():
        if slot not in SLOTS:
            msg = f"internal error: unknown AnnData slot {slot!r}"
            raise ValueError(msg)
        existing = set(_existing(adata, slot))
        for key in items:
            if key not in existing:
                continue
            prev = written[slot].get(key)
            if prev is None:
                msg = (
                    f"`adata.{slot}[{key!r}]` already exists and was not written by scdropout; "
                    f"pass another `key_added` (now {key_added!r}) so nothing of yours is "
                    "overwritten."
                )
                raise ValueError(msg)
            if _owner_of(prev) != owner:
                msg = (
                    f"`adata.{slot}[{key!r}]` holds results of `{_owner_of(prev)}`; pass another "
                    f"`key_added` (now {key_added!r}) to `{owner}` so they are not overwritten."
                )
                raise ValueError(msg)


def write_results(
    adata: Any,
    results: Mapping[str, Mapping[str, Any]],
    *,
    key_added: str,
    owner: str,
    optional: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """Write ``results`` ({slot: {key: value}}) into ``adata`` and record them as ``owner``'s.

    Re-writing a key that the same function wrote before is allowed and logged at info level; a
    key that exists but that scdropout did not write, or that another scdropout function wrote,
    raises ``ValueError`` (nothing is written then). ``optional`` ({slot: keys}) names the keys
    this run could have written but did not (say the imputed layers of a run without
    imputation): those that ``owner`` wrote on an earlier run under the same ``key_added`` are
    removed, so no stale result sits beside the new ones; keys of anyone else are left alone.
    Returns the list of ``"slot['key']"`` strings written, for the caller's log line.
    """
    check_conflicts(adata, results, key_added=key_added, owner=owner)
    if adata.is_view:  # once, as anndata does on a first write (here: not once per key)
        warn(
            "Writing results into a view of an AnnData: it becomes an actual AnnData (a copy of "
            "the subset), as scanpy's functions do. Pass `adata[...].copy()` to avoid this warning."
        )
        adata._init_as_actual(adata.copy())
    written = _written(adata)
    out: list[str] = []
    for slot, keys in (optional or {}).items():
        container = getattr(adata, slot)
        existing = set(_existing(adata, slot))
        for key in keys:
            if key in results.get(slot, {}) or _owner_of(written[slot].get(key)) != owner:
                continue
            if key in existing:
                logger.info(
                    "removing adata.%s[%r] of an earlier run (not made this time)", slot, key
                )
                del container[key]
            del written[slot][key]
    for slot, items in results.items():
        existing = set(_existing(adata, slot))
        container = getattr(adata, slot)
        for key, value in items.items():
            if key in existing:
                logger.info("overwriting adata.%s[%r] from an earlier run", slot, key)
            container[key] = value
            written[slot][key] = owner
            out.append(f"{slot}[{key!r}]")
    rec = dict(adata.uns.get(_keys.UNS_SCDROPOUT, {}))
    rec[_keys.WRITTEN] = {slot: dict(keys) for slot, keys in written.items() if keys}
    adata.uns[_keys.UNS_SCDROPOUT] = rec
    return out
