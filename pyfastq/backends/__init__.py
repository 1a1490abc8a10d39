"""Backends: "native" (the C++ ring and the compiled op) and "python" (deque + numpy_function).

Both take a flat list of components per element from pyfastq.Queue and give
back flat lists of tensors; the Queue packs and unpacks the nest. ``Backend``
declares what the Queue and the Producer may call on either (as TF's
``QueueBase`` declares ``TryEnqueue``/``TryDequeue``); tests/test_contract.py
checks both backends against it.
"""

from __future__ import annotations

import importlib
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import tensorflow as tf

    from .._spec import Spec

_native_error: str | None = None


@dataclass(frozen=True)
class Order:
    """How a queue's consumers take elements: FIFO, or shuffled as TF's RandomShuffleQueue (seed drawn already)."""

    shuffle: bool = False
    min_after_dequeue: int = 0
    seed: int = 0


@runtime_checkable
class Reservation(Protocol):
    """One slot held by ``Backend.reserve``: writable views of it, enqueued by commit, given back by abort.

    Each may be called once, and only one of them (ValueError after).
    """

    views: list
    active: bool

    def commit(self) -> None: ...

    def abort(self) -> None: ...


@runtime_checkable
class Backend(Protocol):
    """What a queue's backend gives pyfastq.Queue and the producers: flat lists of components in, tensors out.

    Producers (any thread): put, put_many, reserve; the turnstile of ordered producers (begin_turns
    before they start, then wait_turn / pass_turn per ticket, finish_turns when one is done; ticket
    k*P + i is producer i's k-th element, or with P = 1 a position of a run). A put with a ticket waits
    for its turn and passes it on. A tag is the position of a run an element reads: recorded where
    ``tracks_positions``. Any thread: close, fail, size, stats, state. Consumers: the TF ops.
    """

    kind: str  # "native" or "python"
    tracks_positions: bool  # consumers record the tags of what they take (begin_tracking, taken_state)

    @property
    def state(self) -> str: ...  # "open", "closed", "cancelled" or "failed"

    @property
    def fd(self) -> int: ...  # the ring's descriptor in shared memory; -1 if the queue is process-private

    def put(self, flat: list, timeout: float | None, ticket: int | None = None, tag: int | None = None) -> None: ...

    def put_many(self, flat: list, timeout: float | None, tag: int | None = None) -> None: ...

    def reserve(self, timeout: float | None, shapes: list | None = None) -> Reservation: ...

    def close(self, cancel: bool) -> None: ...

    def fail(self, message: str) -> None: ...

    def size(self) -> int: ...

    def stats(self) -> dict: ...

    def begin_turns(self, workers: int, first: int = 0) -> None: ...

    @property
    def turn(self) -> int: ...  # the ticket that may commit now

    def wait_turn(self, ticket: int, timeout: float | None) -> None: ...

    def pass_turn(self, ticket: int) -> None: ...

    def finish_turns(self, worker: int, count: int) -> None: ...

    def dequeue(self) -> tuple[tf.Tensor, list[tf.Tensor]]: ...

    def dequeue_many(
        self, n: int, allow_smaller: bool, padding: list | None = None
    ) -> tuple[tf.Tensor, list[tf.Tensor]]: ...

    def dataset(self, batch_size: int | None, drop_remainder: bool, padding: list | None, spec: Spec) -> Any: ...


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


def create(backend: str, spec: Spec, capacity: int, queue_name: str, order: Order, shared: bool = False) -> Backend:
    """A backend for a Queue."""
    if backend not in ("auto", "native", "python"):
        raise ValueError(f'backend must be "auto", "native" or "python", got {backend!r}')
    if shared and backend == "python":
        raise ValueError("shared=True needs the native backend: the python backend has no ring in shared memory")
    if backend in ("auto", "native"):
        why = native_unavailable()
        if why is None:
            from .native import NativeBackend

            return NativeBackend(spec, capacity, queue_name, order, shared)
        if backend == "native" or shared:
            needed = " (shared=True needs it)" if shared else ""
            raise ImportError(f"pyfastq's native backend is unavailable{needed}: {why}")
        _warn_fallback(why)
    from .python import PythonBackend

    return PythonBackend(spec, capacity, queue_name, order)


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
