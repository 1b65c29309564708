"""The ``scdropout`` logger and a timed-step helper."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

logger = logging.getLogger("scdropout")
if not logger.handlers:
    _handler = logging.StreamHandler()
    _handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger.addHandler(_handler)
    logger.propagate = False
logger.setLevel(logging.INFO)

_LEVELS = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}


def _set_level(verbosity: int) -> None:
    logger.setLevel(_LEVELS.get(max(0, min(2, verbosity)), logging.INFO))


@contextmanager
def timed(step: str, *, level: int = logging.INFO) -> Iterator[None]:
    """Log ``step`` with its wall time when the block ends."""
    t0 = time.perf_counter()
    yield
    logger.log(level, "%s (%.2fs)", step, time.perf_counter() - t0)
