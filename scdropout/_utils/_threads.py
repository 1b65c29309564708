"""Temporarily set numba's thread count for one call."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from scdropout._settings import settings


def resolve_n_jobs(n_jobs: int | None) -> int:
    """Return the thread count to use: ``n_jobs`` or ``settings.n_jobs``, capped by numba."""
    import numba

    if n_jobs is None:
        n_jobs = settings.n_jobs
    if (
        isinstance(n_jobs, bool)
        or not isinstance(n_jobs, int | np.integer)
        or n_jobs == 0
        or n_jobs < -1
    ):
        msg = f"`n_jobs` must be a positive integer, -1 (all cores) or None, got {n_jobs!r}."
        raise ValueError(msg)
    if n_jobs == -1:
        n_jobs = numba.config.NUMBA_NUM_THREADS
    return min(int(n_jobs), numba.config.NUMBA_NUM_THREADS)


@contextmanager
def thread_limit(n_jobs: int | None) -> Iterator[int]:
    """Run the block with numba using ``n_jobs`` threads, restoring the old value afterwards."""
    import numba

    n = resolve_n_jobs(n_jobs)
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield n
    finally:
        numba.set_num_threads(old)
