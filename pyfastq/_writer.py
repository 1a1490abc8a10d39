"""The producers' side of a queue, without TensorFlow.

``Producing`` is the put/put_many/reserve/close/fail half of ``pyfastq.Queue``;
``RingWriter`` is that half for a native ring (the native backend adds the TF
ops to it); ``QueueWriter`` is what a ``Queue(shared=True)`` becomes in another
process: a producer writing straight into the shared ring's slots.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._compat import format_exception
from ._layout import Layout

if TYPE_CHECKING:
    from .backends import Backend


class Producing:
    """put, put_many, reserve, close, fail, size, closed over ``self._layout`` and a backend ``self._impl``.

    A subclass sets the four attributes below; the producers (``_process``, ``_ray``) read them too.
    """

    _layout: Layout
    _impl: Backend
    name: str
    capacity: int

    def _init_fast_put(self) -> None:
        # The producer's hot path for a one-component native ring: a builtin
        # that puts an exact array straight into the ring and hands anything
        # else to put's way. `slow` must not hold the queue: the builtin is
        # stored on it, and a cycle through a builtin is never collected.
        if self._layout.single and isinstance(self._impl, RingWriter):
            impl_put, flatten = self._impl.put, self._layout.flatten

            def slow(element: Any, timeout: float | None) -> None:
                impl_put(flatten(element), timeout)

            def slow_tagged(element: Any, timeout: float | None, tag: int) -> None:
                impl_put(flatten(element), timeout, None, tag)

            self.put = self._impl.fast_put(slow, Producing.put.__doc__)
            self._tagged_put = self._impl.fast_put(slow_tagged, Producing._tagged_put.__doc__, tagged=True)

    def put(self, element: Any, timeout: float | None = None) -> None:
        """Enqueues one element; blocks while the queue is full.

        >>> q.put((image, label))
        """
        self._impl.put(self._layout.flatten(element), timeout)

    def _tagged_put(self, element: Any, timeout: float | None, tag: int) -> None:
        """put() of a random-access source's worker: the element reads position `tag` of the run (a ring that
        records what consumers take, RingWriter.tracks_positions, only)."""
        self._impl.put(self._layout.flatten(element), timeout, None, tag)

    def put_many(self, elements: Any, timeout: float | None = None) -> None:
        """Enqueues every row of dim 0 of every component (as TF's enqueue_many).

        With a timeout, all rows or none; without one, rows go in as slots come free.

        >>> q.put_many((images[:32], labels[:32]))
        """
        self._impl.put_many(self._layout.flatten(elements), timeout)

    def reserve(self, timeout: float | None = None, *, shapes: Any = None) -> Reserved:
        """Zero-copy put: writable numpy views of one slot, in the specs' nest.

        For specs with None dims, ``shapes`` (a nest like specs) gives the element's shapes,
        each within its bound; the views have those shapes.

        >>> with q.reserve() as (image, label):
        ...     image[:] = decode(...); label[...] = 3
        """
        return Reserved(self, timeout, shapes)

    def close(self, cancel: bool = False) -> None:
        """No more puts; consumers drain what is left, then end. cancel=True drops what is left.

        A put already waiting for room completes (TF's FIFOQueue rule); cancel=True refuses it.

        >>> q.close()              # producers are done: a dataset() ends once drained
        >>> q.close(cancel=True)   # stop now: consumers raise CancelledError
        """
        self._impl.close(cancel)

    def fail(self, exc: BaseException | str) -> None:
        """Ends the queue with a producer's error: consumers raise AbortedError holding it.

        >>> try:
        ...     produce(q)
        ... except Exception as e:
        ...     q.fail(e)          # the training loop raises AbortedError with e's traceback
        """
        self._impl.fail(format_exception(exc) if isinstance(exc, BaseException) else str(exc))

    def size(self) -> int:
        """Elements ready to dequeue now.

        >>> q.size() / q.capacity   # how full: near 0 input-bound, near 1 compute-bound
        """
        return self._impl.size()

    @property
    def closed(self) -> bool:
        """True once close(), close(cancel=True) or fail() was called."""
        return self._impl.state != "open"


class Reserved:
    """The context manager reserve() returns: commit on normal exit, abort on an exception."""

    def __init__(self, queue: Producing, timeout: float | None, shapes: Any = None):
        self._shapes = queue._layout.reserve_shapes(shapes, queue.name)
        self._queue = queue
        self._timeout = timeout
        self._res = None

    def __enter__(self):
        self._res = self._queue._impl.reserve(self._timeout, self._shapes)
        return self._queue._layout.pack(list(self._res.views))

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self._res.commit()
        else:
            self._res.abort()
        self._res = None
        return False


class RingWriter:
    """A native ring's producer side: the exact-match fast path of ``_core``, with conversion behind it."""

    kind = "native"

    def __init__(self, ring: Any, layout: Layout, queue_name: str):
        self._ring = ring
        self._layout = layout
        self._queue_name = queue_name

    def put(self, flat: list, timeout: float | None, ticket: int | None = None, tag: int | None = None) -> None:
        """With a ticket (an ordered producer's), waits for its turn first; a tag is the position the element reads."""
        # The fast path takes exact-match arrays; anything else is converted
        # (or rejected with the precise error) first.
        if self._ring.put(flat, timeout, ticket, tag):
            return
        if not self._ring.put(self._layout.convert(flat), timeout, ticket, tag):
            raise AssertionError(
                f"pyfastq internal error: converted element rejected by the ring of '{self._queue_name}'"
            )

    def fast_put(self, slow, doc: str, tagged: bool = False):
        """put(element, timeout=None) as a builtin (tagged: put(element, timeout, tag)): exact arrays go straight
        in, anything else to slow."""
        return self._ring.fast_put(slow, doc, tagged)

    def put_many(self, flat: list, timeout: float | None, tag: int | None = None) -> None:
        """A tag is the position whose item the last row completes."""
        # Zero rows go to the ring too: on a closed queue it raises QueueClosed, as for any other put_many.
        if not self._ring.put_many(flat, timeout, tag):
            arrays = self._layout.convert(flat, many=True)
            if not self._ring.put_many(arrays, timeout, tag):
                raise AssertionError(
                    f"pyfastq internal error: converted elements rejected by the ring of '{self._queue_name}'"
                )

    def reserve(self, timeout: float | None, shapes: list | None = None):
        return self._ring.reserve(timeout, None if shapes is None else [list(s) for s in shapes])

    def close(self, cancel: bool) -> None:
        self._ring.close(cancel)

    def fail(self, message: str) -> None:
        self._ring.fail(message)

    @property
    def state(self) -> str:
        return self._ring.state

    def size(self) -> int:
        return self._ring.size()

    def stats(self) -> dict:
        return self._ring.stats()

    @property
    def fd(self) -> int:
        """The shared ring's descriptor (-1 if the ring is process-private)."""
        return self._ring.fd

    def begin_turns(self, workers: int, first: int = 0) -> None:
        self._ring.begin_turns(workers, first)

    @property
    def turn(self) -> int:
        return self._ring.turn

    tracks_positions = True  # the ring records the positions consumers take

    def begin_tracking(self, watermark: int, taken: list[int]) -> None:
        self._ring.begin_tracking(watermark, taken)

    def taken_state(self) -> tuple[int, list[int], bool]:
        return self._ring.taken_state()

    def set_writer(self, writer: int, counter: Any = None, word: int = 0) -> None:
        self._ring.set_writer(writer, counter, word)

    def reclaim_writer(self, writer: int) -> int:
        return self._ring.reclaim_writer(writer)

    def finish_turns(self, worker: int, count: int) -> None:
        self._ring.finish_turns(worker, count)

    def wait_turn(self, ticket: int, timeout: float | None) -> None:
        """Until ticket's turn (TimeoutError, QueueClosed): for a producer putting several elements in one turn."""
        self._ring.wait_turn(ticket, timeout)

    def pass_turn(self, ticket: int) -> None:
        self._ring.pass_turn(ticket)


class QueueWriter(Producing):
    """A shared queue in a producer process: put, put_many and reserve write into the ring's slots.

    A ``Queue(shared=True)`` pickles to one of these when multiprocessing hands it
    to another process (as ``Producer(mode="process")`` does); its ring's
    descriptor travels with it, so nothing is pickled per element.
    """

    def __init__(self, fd: int, layout: Layout, name: str, capacity: int):
        self._layout = layout
        self.name = name
        self.capacity = capacity
        from . import _core

        shapes, bounds = layout.ring_shapes()
        ring = _core.Ring.attach(fd, layout.dtypes, shapes, name, bounds=bounds)
        self._impl = RingWriter(ring, layout, name)
        self._init_fast_put()

    def __reduce__(self):
        return reduce_shared(self._impl.fd, self._layout, self.name, self.capacity)

    def __repr__(self) -> str:
        return f"pyfastq.QueueWriter({self.name!r}, capacity={self.capacity}, state={self._impl.state!r})"


def reduce_shared(fd: int, layout: Layout, name: str, capacity: int):
    """How a shared queue pickles: its descriptor, duplicated into the receiving process by multiprocessing."""
    from multiprocessing.reduction import DupFd

    return _attach_writer, (DupFd(fd), layout, name, capacity)


def _attach_writer(dup, layout: Layout, name: str, capacity: int) -> QueueWriter:
    import os

    fd = dup.detach()
    try:
        return QueueWriter(fd, layout, name, capacity)
    finally:
        os.close(fd)  # the ring maps its own duplicate
