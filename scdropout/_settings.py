"""Global settings for scdropout (``scdropout.settings``)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def _default_jobs() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


@dataclass
class Settings:
    """Package-wide defaults.

    Attributes
    ----------
    verbosity
        Logging level of the ``scdropout`` logger: 0 warning, 1 info, 2 debug.
    n_jobs
        Threads used by numba kernels when a function gets ``n_jobs=None``.
    progress_bar
        Show tqdm progress bars on long loops (a function's ``progress_bar=False`` also hides them).
    device
        Default torch device for ``device="auto"`` callers: ``"auto"``, ``"cpu"`` or ``"cuda"``.
    max_memory_gb
        Largest dense allocation (N x N or N x G) a function may make before it raises.
    """

    verbosity: int = 1
    n_jobs: int = field(default_factory=_default_jobs)
    progress_bar: bool = True
    device: str = "auto"
    max_memory_gb: float = 8.0

    def __setattr__(self, name: str, value: object) -> None:
        if name not in set(self.__dataclass_fields__):
            msg = f"`settings` has no attribute {name!r}; valid: {sorted(self.__dataclass_fields__)}."
            raise AttributeError(msg)
        if name == "verbosity":
            from ._logging import _set_level

            _set_level(int(value))  # type: ignore[arg-type]
        if name == "n_jobs" and (not isinstance(value, int) or value < 1):
            msg = f"`settings.n_jobs` must be a positive integer, got {value!r}."
            raise ValueError(msg)
        if name == "max_memory_gb" and (not isinstance(value, int | float) or value <= 0):
            msg = f"`settings.max_memory_gb` must be a positive number, got {value!r}."
            raise ValueError(msg)
        super().__setattr__(name, value)


settings = Settings()
