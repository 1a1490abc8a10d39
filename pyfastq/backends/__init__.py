"""Backends: "native" (the C++ ring and the compiled op) and "python" (deque + numpy_function).

Both take a flat list of components per element from pyfastq.Queue and give
back flat lists of tensors; the Queue packs and unpacks the nest.
"""

from __future__ import annotations

import importlib
import time
import warnings

_native_error: str | None = None


def deadline_from(timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if not timeout >= 0:
        raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")
    return time.monotonic() + timeout


def native_unavailable() -> str | None:
    """Why the native backend cannot load here, or None if it can.

    >>> pyfastq.native_unavailable()   # None: the compiled ring and op load
    """
    global _native_error
    if _native_error is None:
        try:
            importlib.import_module(".native", __name__)
        except ImportError as e:
            _native_error = str(e)
        else:
            _native_error = ""
    return _native_error or None


def create(
    backend: str,
    spec,
    capacity: int,
    name: str,
    shared: bool = False,
    shuffle: bool = False,
    min_after_dequeue: int = 0,
    seed: int = 0,
):
    """A backend for a Queue; shuffle, min_after_dequeue and seed as Queue's (seed drawn already)."""
    order = dict(shuffle=shuffle, min_after_dequeue=min_after_dequeue, seed=seed)
    if backend not in ("auto", "native", "python"):
        raise ValueError(f'backend must be "auto", "native" or "python", got {backend!r}')
    if shared and backend == "python":
        raise ValueError("shared=True needs the native backend: the python backend has no ring in shared memory")
    if backend in ("auto", "native"):
        why = native_unavailable()
        if why is None:
            from .native import NativeBackend

            return NativeBackend(spec, capacity, name, shared, **order)
        if backend == "native" or shared:
            needed = " (shared=True needs it)" if shared else ""
            raise ImportError(f"pyfastq's native backend is unavailable{needed}: {why}")
        _warn_fallback(why)
    from .python import PythonBackend

    return PythonBackend(spec, capacity, name, **order)


_warned = False


def _warn_fallback(why: str) -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"pyfastq: using the slower python backend because the native one is unavailable: {why}",
            RuntimeWarning,
            stacklevel=4,
        )
