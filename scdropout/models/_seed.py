"""Seeding torch without touching the caller's global RNG state."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch


def seed_from(random_state: int | np.random.Generator | None) -> int:
    """Turn ``random_state`` into one integer seed (a Generator or None draws it)."""
    if isinstance(random_state, np.random.Generator) or random_state is None:
        rng = np.random.default_rng(random_state) if random_state is None else random_state
        return int(rng.integers(0, 2**62))
    if isinstance(random_state, bool) or not isinstance(random_state, int | np.integer):
        msg = (
            "`random_state` must be an int, a numpy.random.Generator or None, "
            f"got {type(random_state).__name__}."
        )
        raise TypeError(msg)
    if random_state < 0:
        msg = f"`random_state` must be a non-negative integer, got {random_state!r}."
        raise ValueError(msg)
    return int(random_state)


@contextmanager
def seeded(seed: int, device: torch.device | None = None) -> Iterator[None]:
    """Run the block with torch's global RNG (CPU, and CUDA when used) seeded by ``seed``.

    The RNG states are forked on entry and restored on exit, so the caller's random streams are
    untouched, CUDA's too when the block runs on the CPU (scvi-tools seeds globally instead).
    Dropout masks, ``torch.rand`` inside the model and parameter initialisation all draw from
    the seeded state.
    """
    cuda = device is not None and device.type == "cuda"
    devices = list(range(torch.cuda.device_count())) if cuda else []
    with torch.random.fork_rng(devices=devices):
        # the one sanctioned place for global seeding: inside fork_rng, restored on exit.
        # torch.manual_seed would also seed every CUDA generator, which fork_rng only saves
        # for the devices it was given: on the CPU, seed the CPU generator alone.
        if cuda:
            torch.random.manual_seed(seed)
        else:
            torch.random.default_generator.manual_seed(seed)
        yield
