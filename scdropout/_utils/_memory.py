"""Memory estimates checked before large dense allocations."""

from __future__ import annotations

from scdropout._settings import settings


def check_memory(n_bytes: float, *, what: str, ways_out: str) -> None:
    """Raise ``MemoryError`` when ``n_bytes`` exceeds ``settings.max_memory_gb``.

    Parameters
    ----------
    n_bytes
        Estimated size of the allocation.
    what
        What is being allocated (e.g. "the 20,000 x 20,000 float64 dissimilarity matrix").
    ways_out
        What the user can do instead (fewer genes, subsample, ...).
    """
    gb = n_bytes / 1024**3
    if gb > settings.max_memory_gb:
        msg = (
            f"{what} needs about {gb:.1f} GB, more than `settings.max_memory_gb` = "
            f"{settings.max_memory_gb:g} GB. {ways_out} Or raise the limit: "
            f"`scdropout.settings.max_memory_gb = {gb * 1.2:.0f}`."
        )
        raise MemoryError(msg)
