"""Random state handling: one Generator per call, never global seeding."""

from __future__ import annotations

import numbers

import numpy as np


def as_generator(random_state: int | np.random.Generator | None) -> np.random.Generator:
    """Turn ``random_state`` into a :class:`numpy.random.Generator`.

    An int (or None) seeds a new generator; a Generator is used as is.
    """
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or (
        isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool)
    ):
        if random_state is not None and int(random_state) < 0:
            msg = f"`random_state` must be a non-negative integer, got {random_state!r}."
            raise ValueError(msg)
        return np.random.default_rng(random_state)
    msg = (
        "`random_state` must be an int, a numpy.random.Generator or None, "
        f"got {type(random_state).__name__}."
    )
    raise TypeError(msg)


def seed_repr(random_state: int | np.random.Generator | None) -> int | str:
    """Return a value for ``uns[...]['params']`` that records the seed (h5ad-safe)."""
    if random_state is None:
        return "None"
    if isinstance(random_state, np.random.Generator):
        return "Generator"
    return int(random_state)
