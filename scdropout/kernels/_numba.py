"""``parallel_njit``: parallel numba kernels that stay safe off the main thread.

numba's default ``workqueue`` threading layer is not thread-safe: a ``parallel=True`` kernel
called concurrently from two Python threads can abort the process. ``parallel_njit`` compiles two
twins of the same function, a parallel one and a serial one (``prange`` runs as ``range``), under
distinct qualnames so that their on-disk caches do not collide, and dispatches to the serial twin
whenever it is called from a thread other than the main one (joblib workers, DataLoader threads).
"""

from __future__ import annotations

import functools
import threading
import types
from collections.abc import Callable
from typing import Any

import numba


def _twin(func: Callable[..., Any], suffix: str) -> Callable[..., Any]:
    twin = types.FunctionType(
        func.__code__,
        func.__globals__,
        func.__name__ + suffix,
        func.__defaults__,
        func.__closure__,
    )
    twin.__qualname__ = func.__qualname__ + suffix
    twin.__module__ = func.__module__
    twin.__doc__ = func.__doc__
    return twin


def parallel_njit(func: Callable[..., Any] | None = None, **options: Any) -> Any:
    """Decorate ``func`` like ``numba.njit(parallel=True, cache=True)``, with a serial twin.

    The returned callable exposes ``.parallel``, ``.serial`` and ``.py_func``.
    """

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        opts = {"cache": True, **options}
        opts.pop("parallel", None)
        par = numba.njit(parallel=True, **opts)(f)
        ser = numba.njit(parallel=False, **opts)(_twin(f, "__serial"))

        @functools.wraps(f)
        def dispatch(*args: Any) -> Any:
            if threading.current_thread() is threading.main_thread():
                return par(*args)
            return ser(*args)

        dispatch.parallel = par  # type: ignore[attr-defined]
        dispatch.serial = ser  # type: ignore[attr-defined]
        dispatch.py_func = f  # type: ignore[attr-defined]
        return dispatch

    if func is not None:
        return decorate(func)
    return decorate
