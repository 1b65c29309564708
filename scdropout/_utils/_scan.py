"""One pass over stored values for :func:`check_counts` on large matrices (numba)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def scan_counts(values: np.ndarray, integer: bool) -> tuple[int, int, int]:  # noqa: FBT001
    """Return the first index of a non-finite, a negative and a fractional value (-1 if none).

    Same result as ``argmax`` over ``~isfinite(values)``, ``values < 0`` and
    ``values != round(values)``, in one pass and without temporaries.
    """
    bad_finite = -1
    bad_neg = -1
    bad_frac = -1
    for k in range(values.shape[0]):
        v = values[k]
        if bad_finite < 0 and not np.isfinite(v):
            bad_finite = k
        if bad_neg < 0 and v < 0:
            bad_neg = k
        if integer and bad_frac < 0 and v != np.floor(v):
            bad_frac = k
        if bad_finite >= 0 and bad_neg >= 0 and (bad_frac >= 0 or not integer):
            break
    return bad_finite, bad_neg, bad_frac
