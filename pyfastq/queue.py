"""pyfastq.Queue: the public queue, on either backend."""

from __future__ import annotations

import functools
import itertools
import threading
import traceback
import weakref
from typing import Any

import tensorflow as tf

from . import backends
from ._spec import Spec

_names = itertools.count()
_live: weakref.WeakSet = weakref.WeakSet()


class Queue:
    """A bounded queue from Python producers to TensorFlow consumers.

    >>> q = pyfastq.Queue(tf.TensorSpec([128, 100], tf.float32), capacity=8)
    >>> q.put(np.zeros([128, 100], np.float32)); q.close()
    >>> for batch in q.dataset(): ...
    """

    def __init__(
        self,
        specs: Any,
        capacity: int = 64,
        *,
        shuffle: bool = False,
        min_after_dequeue: int = 0,
        seed: int | None = None,
        shared: bool = False,
        backend: str = "auto",
        name: str | None = None,
    ):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        if capacity >= 2**31:
            raise ValueError(f"capacity must be below 2**31, got {capacity}")
        if shuffle or min_after_dequeue:
            raise NotImplementedError("shuffle=True is not implemented yet; shuffle in the producer for now")
        if shared:
            raise NotImplementedError("shared=True (process producers) is not implemented yet")
        del seed  # used by shuffle
        self._spec = Spec(specs)
        self.name = name if name is not None else f"pyfastq_queue_{next(_names)}"
        self._impl = backends.create(backend, self._spec, capacity, self.name)
        self._capacity = capacity
        if self._spec.single and self._impl.name == "native":
            self.put = self._fast_put()
        _live.add(self)

    # -- producers ---------------------------------------------------------------
    def put(self, element: Any, timeout: float | None = None) -> None:
        """Enqueues one element; blocks while the queue is full.

        >>> q.put((image, label))
        """
        self._impl.put(self._spec.flatten(element), timeout)

    def _fast_put(self):
        # The producer's hot path for a one-component native queue: an exact
        # array goes straight to the ring; anything else takes Queue.put's way.
        ring_put, slow = self._impl.put_one, self._impl.put
        flatten = self._spec.flatten

        @functools.wraps(Queue.put)
        def put(element: Any, timeout: float | None = None) -> None:
            if not ring_put(element, timeout):
                slow(flatten(element), timeout)

        return put

    def put_many(self, elements: Any, timeout: float | None = None) -> None:
        """Enqueues every row of dim 0 of every component, all or none (as TF's enqueue_many).

        >>> q.put_many((images[:32], labels[:32]))
        """
        self._impl.put_many(self._spec.flatten(elements), timeout)

    def reserve(self, timeout: float | None = None) -> _Reserved:
        """Zero-copy put: writable numpy views of one slot, in the specs' nest.

        >>> with q.reserve() as (image, label):
        ...     image[:] = decode(...); label[...] = 3
        """
        return _Reserved(self, timeout)

    def close(self, cancel: bool = False) -> None:
        """No more puts; consumers drain what is left, then end. cancel=True drops what is left."""
        self._impl.close(cancel)

    def fail(self, exc: BaseException | str) -> None:
        """Ends the queue with a producer's error: consumers raise AbortedError holding it."""
        if isinstance(exc, BaseException):
            message = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        else:
            message = str(exc)
        self._impl.fail(message)

    # -- consumers (TF ops) --------------------------------------------------------
    def dequeue(self) -> Any:
        """TF op: one element, a nest of tensors with the specs' static shapes."""
        _, flat = self._impl.dequeue()
        return self._spec.pack(flat)

    def dequeue_many(self, n: int, allow_smaller_final_batch: bool = False) -> Any:
        """TF op: n elements stacked along a new dim 0."""
        self._check_batch(n)
        _, flat = self._impl.dequeue_many(n, allow_smaller_final_batch)
        return self._spec.pack(flat)

    def dataset(self, batch_size: int | None = None, drop_remainder: bool = False) -> tf.data.Dataset:
        """A tf.data.Dataset of the queue's elements (or batches) that ends when the queue is closed and drained.

        >>> model.fit(q.dataset(batch_size=32), epochs=1)
        """
        if batch_size is not None:
            self._check_batch(batch_size)
        impl, spec = self._impl, self._spec

        def take(_):
            if batch_size is None:
                done, flat = impl.dequeue(end_as_flag=True)
            else:
                done, flat = impl.dequeue_many(batch_size, not drop_remainder, end_as_flag=True)
            return done, tuple(flat)

        lead = [] if batch_size is None else [batch_size if drop_remainder else None]

        def unpack(done, flat):
            return spec.pack([tf.ensure_shape(t, lead + list(s)) for t, s in zip(flat, spec.shapes)])

        return (
            tf.data.Dataset.from_tensors(0)
            .repeat()
            .map(take)
            .take_while(lambda done, flat: tf.logical_not(done))
            .map(unpack)
        )

    # -- state ---------------------------------------------------------------------
    def size(self) -> int:
        """Elements ready to dequeue now."""
        return self._impl.size()

    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def closed(self) -> bool:
        """True once close(), close(cancel=True) or fail() was called."""
        return self._impl.state != "open"

    @property
    def specs(self) -> Any:
        return self._spec.structure

    @property
    def backend(self) -> str:
        return self._impl.name

    def stats(self) -> dict:
        """Counters: puts, gets, put_wait_s, get_wait_s, size, capacity (and, native, memory)."""
        return self._impl.stats()

    def __repr__(self) -> str:
        return f"pyfastq.Queue({self.name!r}, capacity={self._capacity}, backend={self.backend!r}, state={self._impl.state!r})"

    def _check_batch(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"batch size must be an int >= 1, got {n!r}")
        if n > self._capacity:
            raise ValueError(f"a batch of {n} from '{self.name}' of capacity {self._capacity} could never be formed")


class _Reserved:
    """The context manager q.reserve() returns: commit on normal exit, abort on an exception."""

    def __init__(self, queue: Queue, timeout: float | None):
        self._queue = queue
        self._timeout = timeout
        self._res = None

    def __enter__(self):
        self._res = self._queue._impl.reserve(self._timeout)
        return self._queue._spec.pack(list(self._res.views))

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._res.commit()
        else:
            self._res.abort()
        self._res = None
        return False


def _cancel_all_at_exit() -> None:
    # Wakes every put and dequeue still blocked, so the interpreter can exit.
    for q in list(_live):
        try:
            q.close(cancel=True)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


# threading's own hook runs before non-daemon threads are joined: a producer
# thread blocked in put() is woken before the interpreter waits for it.
threading._register_atexit(_cancel_all_at_exit)
