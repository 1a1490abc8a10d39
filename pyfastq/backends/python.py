"""The pure-Python backend: a deque under a Condition, dequeued through tf.numpy_function.

It has the native backend's API and semantics; it exists for comparison and
as a fallback. tf.numpy_function can only raise OutOfRangeError (from
StopIteration) into the graph: cancel and fail arrive as UnknownError carrying
the same message.
"""

from __future__ import annotations

import collections
import random
import threading
import time

import numpy as np
import tensorflow as tf

from .. import _interrupt
from .._contract import (
    CANCELLED,
    CLOSED,
    FAILED,
    FILL_BINS,
    OPEN,
    RESERVATION_FINISHED,
    TAKING_PUTS,
    Turnstile,
    Waiting,
    check_all_or_nothing,
    deadline_from,
    fill_bin,
    no_free_slot,
    no_turn,
    refused,
)
from .._spec import Spec, bitcast_takes
from . import Order

# A wait wakes this often, so nothing blocks forever on a missed notify.
_SLICE = 0.1


class _Reservation:
    """The Reservation protocol for one slot of a PythonBackend, as the ring's: once committed or aborted (or
    dropped: aborted) the slot is the consumers' or free again, and the views are read-only."""

    def __init__(self, backend: PythonBackend, views: list[np.ndarray]):
        self._backend = backend
        self.views = views
        self.active = True

    def _finish(self, commit: bool) -> None:
        if not self.active:
            raise ValueError(RESERVATION_FINISHED)
        self.active = False
        for v in self.views:
            v.setflags(write=False)
        self._backend._end_reservation(self.views if commit else None)

    def commit(self) -> None:
        self._finish(True)

    def abort(self) -> None:
        self._finish(False)

    def __del__(self):
        if getattr(self, "active", False):
            self._backend._end_reservation(None)


class PythonBackend:
    """The Backend protocol over a deque (or, shuffled, a list) under one Condition."""

    kind = "python"
    tracks_positions = False  # tags are taken and dropped: nothing records what consumers take
    fd = -1  # process-private: no ring in shared memory

    def __init__(self, spec: Spec, capacity: int, queue_name: str, order: Order):
        self._spec = spec
        self._queue_name = queue_name
        self._capacity = capacity
        # FIFO: a deque. Shuffled: a list picked from at random (swap with the last, pop), as the ring's pool.
        self._shuffle = order.shuffle
        self._keep = order.min_after_dequeue
        self._rng = random.Random(order.seed)
        self._items: collections.deque | list = [] if order.shuffle else collections.deque()
        self._reserved = 0  # slots held by reservations and puts in progress
        self._putting = 0  # puts under way: begun while open, not yet ended
        self._cond = threading.Condition()
        self._state = OPEN
        self._fail_message = ""
        self._puts = self._gets = 0
        self._put_wait = self._get_wait = 0.0
        self._put_waiting, self._get_waiting = Waiting(), Waiting()  # producers / consumers waiting
        self._fill_hist = [0] * FILL_BINS
        self._turns = Turnstile()

    # -- producers -------------------------------------------------------------
    # A put begins (counted in _putting) only while the queue is open; once
    # begun it waits through close() and completes when room frees, as in TF's
    # FIFOQueue; cancel and fail refuse it. Consumers of a closed queue wait
    # for the puts under way.
    def _begin_put(self) -> None:
        """Caller holds the lock."""
        if self._state != OPEN:
            raise refused(self._queue_name, self._state)
        self._putting += 1

    def _end_put(self) -> None:
        """Caller holds the lock."""
        self._putting -= 1
        self._cond.notify_all()

    def _claim(self, count: int, deadline: float | None, allow_smaller: bool = False, done: int = 0) -> int:
        """For a put under way: waits until `count` slots are free (or, allow_smaller,
        at least one) and holds them; returns how many. Holds none while waiting.
        `done`: rows of this put_many already in, for the error. Caller holds the lock."""
        start = None
        need = 1 if allow_smaller else count
        while self._state in TAKING_PUTS and self._capacity - len(self._items) - self._reserved < need:
            now = time.monotonic()
            start = start or now
            if deadline is not None and now >= deadline:
                self._put_wait += now - start
                raise no_free_slot(self._queue_name)
            self._put_waiting.enter()
            try:
                self._cond.wait(_SLICE if deadline is None else min(_SLICE, deadline - now))
            finally:
                self._put_waiting.leave()
        if start is not None:
            self._put_wait += time.monotonic() - start
        if self._state not in TAKING_PUTS:
            raise refused(self._queue_name, self._state, done)
        got = min(count, self._capacity - len(self._items) - self._reserved)
        self._reserved += got
        return got

    def put(self, flat: list, timeout: float | None, ticket: int | None = None, tag: int | None = None) -> None:
        """With a ticket (an ordered producer's), waits for its turn first and passes it on after."""
        arrays = [a.copy() for a in self._spec.convert(flat)]
        deadline = deadline_from(timeout)
        with self._cond:
            if ticket is not None:
                self._wait_turn(ticket, deadline)
            self._begin_put()
            try:
                self._claim(1, deadline)
                self._reserved -= 1
                self._items.append(arrays)
                self._puts += 1
            finally:
                self._end_put()
            if ticket is not None:
                self._pass_turn(ticket)

    def put_many(self, flat: list, timeout: float | None, tag: int | None = None) -> None:
        # With a timeout: all rows or none. Without: rows go in as slots come
        # free, so a consumer waiting for a batch is never starved.
        arrays = self._spec.convert(flat, many=True)
        rows = arrays[0].shape[0]
        deadline = deadline_from(timeout)
        check_all_or_nothing(self._queue_name, rows, self._capacity, timeout)
        with self._cond:
            self._begin_put()  # zero rows too: on a closed queue it raises QueueClosed, as any put_many
        try:
            done = 0
            while done < rows:
                with self._cond:
                    got = self._claim(min(rows - done, self._capacity), deadline, timeout is None, done)
                    self._reserved -= got
                    for r in range(done, done + got):
                        self._items.append([a[r].copy() for a in arrays])
                    self._puts += got
                    self._cond.notify_all()
                done += got
        finally:
            with self._cond:
                self._end_put()

    def reserve(self, timeout: float | None, shapes: list | None = None) -> _Reservation:
        deadline = deadline_from(timeout)
        shapes = self._spec.shapes if shapes is None else shapes
        # Allocated before a slot is claimed: an element numpy cannot allocate (MemoryError) holds none.
        views = [np.zeros(s, d) for s, d in zip(shapes, self._spec.dtypes, strict=True)]
        with self._cond:
            self._begin_put()
            try:
                self._claim(1, deadline)  # the slot held counts in _reserved until commit or abort
            finally:
                self._end_put()
        return _Reservation(self, views)

    def _end_reservation(self, views: list[np.ndarray] | None) -> None:
        with self._cond:
            self._reserved -= 1
            if views is not None and self._state in TAKING_PUTS:
                self._items.append(views)
                self._puts += 1
            self._cond.notify_all()

    # -- ordered producers: the ring's turnstile --------------------------------
    def begin_turns(self, workers: int, first: int = 0) -> None:
        with self._cond:
            self._turns.begin(workers, first)
            self._cond.notify_all()

    @property
    def turn(self) -> int:
        return self._turns.turn

    def wait_turn(self, ticket: int, timeout: float | None) -> None:
        """Until ticket's turn (TimeoutError, QueueClosed): for a producer putting several elements in one turn."""
        deadline = deadline_from(timeout)
        with self._cond:
            self._wait_turn(ticket, deadline)

    def pass_turn(self, ticket: int) -> None:
        with self._cond:
            self._pass_turn(ticket)

    def finish_turns(self, worker: int, count: int) -> None:
        with self._cond:
            self._turns.finish(worker, count)
            self._cond.notify_all()

    def _wait_turn(self, ticket: int, deadline: float | None) -> None:
        """Caller holds the lock. Its turn comes even on an ended queue: the put that follows reports the end."""
        while self._turns.turn != ticket:
            if self._state != OPEN:
                raise refused(self._queue_name, self._state)
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                raise no_turn(self._queue_name, ticket)
            self._cond.wait(_SLICE if deadline is None else min(_SLICE, deadline - now))

    def _pass_turn(self, ticket: int) -> None:
        """Caller holds the lock."""
        self._turns.passed(ticket)
        self._cond.notify_all()

    # -- any thread ------------------------------------------------------------
    def close(self, cancel: bool) -> None:
        with self._cond:
            if cancel and self._state in TAKING_PUTS:
                self._state = CANCELLED
                self._items.clear()
            elif self._state == OPEN:
                self._state = CLOSED
            self._cond.notify_all()

    def fail(self, message: str) -> None:
        with self._cond:
            if self._state in TAKING_PUTS:
                self._state = FAILED
                self._fail_message = message
            self._cond.notify_all()

    @property
    def state(self) -> str:
        return self._state

    def size(self) -> int:
        return len(self._items)

    def stats(self) -> dict:
        with self._cond:
            return {
                "puts": self._puts,
                "gets": self._gets,
                "size": len(self._items),
                "put_wait_s": self._put_wait,
                "get_wait_s": self._get_wait,
                "put_blocked_s": self._put_waiting.blocked(),
                "get_blocked_s": self._get_waiting.blocked(),
                "put_waiters": self._put_waiting.count,
                "get_waiters": self._get_waiting.count,
                "fill_histogram": list(self._fill_hist),
                "capacity": self._capacity,
                "shuffle": self._shuffle,
                "min_after_dequeue": self._keep,
                "pinned": False,  # no ring: nothing here is page-locked for GPU copies
            }

    def _record_fill(self) -> None:
        """A dequeue has come: counts how full it finds the queue (as Ring::record_fill)."""
        with self._cond:
            self._fill_hist[fill_bin(len(self._items), self._capacity)] += 1

    # -- consumers ---------------------------------------------------------------
    # A dequeue is a loop of short polls. Each poll takes what it needs if it is
    # there, without waiting; otherwise it waits up to _SLICE for a change and
    # returns _NOTHING_YET having taken nothing. In a graph the loop is a
    # tf.while_loop, which checks the step's cancellation before every
    # iteration: a session timeout, a failed op, sess.close() or a torn-down
    # dataset iterator end the dequeue within _SLICE, and a poll that takes
    # data always starts right after such a check, so a cancelled dequeue takes
    # nothing. (tf.numpy_function itself cannot be cancelled.)
    _DATA, _END, _NOTHING_YET = 0, 1, 2

    def _poll(self, n: int | None, allow_smaller: bool, end_as_flag: bool, since: int, padding: list | None = None):
        """One poll: (_DATA, components), (_END, empty components) or (_NOTHING_YET, empty components).

        Ends raise: StopIteration (closed and drained, without end_as_flag; numpy_function
        turns it into OutOfRangeError), RuntimeError (cancelled, failed, Ctrl-C since
        _interrupt epoch `since`; it arrives as UnknownError carrying the message).
        """
        want = 1 if n is None else n
        with self._cond:
            status = self._ready(want, allow_smaller, end_as_flag)
            if status is None:
                if threading.current_thread() is not threading.main_thread() and _interrupt.take(since):
                    raise RuntimeError(
                        f"CancelledError: dequeue from pyfastq queue '{self._queue_name}' was interrupted by Ctrl-C "
                        "(SIGINT) while waiting for data"
                    )
                start = time.monotonic()
                self._get_waiting.enter()
                try:
                    self._cond.wait(_SLICE)
                finally:
                    self._get_waiting.leave()
                    self._get_wait += time.monotonic() - start
                return self._NOTHING_YET, self._empty(n)
            if status == self._END:
                return self._END, self._empty(n)
            want = min(want, len(self._items))
            items = [self._take() for _ in range(want)]
            self._gets += want
            self._cond.notify_all()
        if n is None:
            return self._DATA, items[0]
        return self._DATA, [self._stack([it[c] for it in items], c, padding) for c in range(len(self._spec.flat))]

    def _take(self) -> list:
        """The next element: the oldest, or, shuffled, a uniformly random one. Caller holds the lock."""
        if not self._shuffle:
            return self._items.popleft()
        items = self._items
        r = self._rng.randrange(len(items))
        items[r], items[-1] = items[-1], items[r]
        return items.pop()

    def _stack(self, arrays: list[np.ndarray], c: int, padding: list | None) -> np.ndarray:
        """Component c of a batch: stacked, or padded to the largest shape among them (padded_batch)."""
        if not self._spec.leaves[c].variable:
            return np.stack(arrays)
        shape = tuple(max(dims) for dims in zip(*(a.shape for a in arrays), strict=True))
        if all(a.shape == shape for a in arrays):
            return np.stack(arrays)
        value = 0 if padding is None or padding[c] is None else padding[c]
        out = np.full((len(arrays), *shape), value, self._spec.dtypes[c])
        for r, a in enumerate(arrays):
            out[(r, *(slice(0, d) for d in a.shape))] = a
        return out

    def _ready(self, want: int, allow_smaller: bool, end_as_flag: bool) -> int | None:
        """What a poll can do now: _DATA (take min(want, len) items), _END, or None (wait). Caller holds the lock."""
        if self._state == CANCELLED:
            raise RuntimeError(f"CancelledError: pyfastq queue '{self._queue_name}' was cancelled")
        if self._state == FAILED:
            raise RuntimeError(f"AbortedError: pyfastq queue '{self._queue_name}' failed: {self._fail_message}")
        # Shuffled and open: a batch is taken whole, leaving min_after_dequeue behind (after close, all drain);
        # one with want + min_after_dequeue > capacity is never ready before close.
        keep = self._keep if self._state == OPEN else 0
        if len(self._items) >= want + keep:
            return self._DATA
        if self._state == CLOSED and self._reserved == 0 and self._putting == 0:
            if allow_smaller and self._items:
                return self._DATA
            if end_as_flag:
                return self._END
            raise StopIteration
        return None

    def _empty(self, n: int | None) -> list[np.ndarray]:
        lead = () if n is None else (0,)
        return [np.zeros(lead + _zeroed(s), d) for s, d in zip(self._spec.shapes, self._spec.dtypes, strict=True)]

    def _arrive(self) -> np.int64:
        """Once per dequeue, as it begins: the fill level it finds, and the interrupt epoch it waits from."""
        self._record_fill()
        return np.int64(_interrupt.epoch())

    def _op(self, n: int | None, allow_smaller: bool, end_as_flag: bool, padding: list | None = None):
        """The dequeue: (done, components), done True only at the end with end_as_flag. Queue checked n."""
        if tf.executing_eagerly():
            return self._eager(n, allow_smaller, end_as_flag, padding)
        lead = [] if n is None else [None if (allow_smaller or end_as_flag) else n]
        shapes = [tf.TensorShape(lead + list(s)) for s in self._spec.shapes]
        since = tf.numpy_function(self._arrive, [], tf.int64, stateful=True, name="pyfastq_python_interrupt_epoch")
        # The loop carries each component as it crosses control flow: its own dtype or a same-width integer.
        carried = self._spec.carried_dtypes
        views = [None if c == d else c.as_numpy_dtype for c, d in zip(carried, self._spec.tf_dtypes, strict=True)]

        def poll(since):
            status, comps = self._poll(n, allow_smaller, end_as_flag, int(since), padding)
            return (np.int8(status), *(c if v is None else c.view(v) for c, v in zip(comps, views, strict=True)))

        def body(status, *comps):
            out = tf.numpy_function(
                poll, [since], [tf.int8, *carried], stateful=True, name="pyfastq_python_dequeue"
            )
            out[0].set_shape([])
            for t, shape in zip(out[1:], shapes, strict=True):
                t.set_shape(shape)
            return out

        start = [tf.constant(self._NOTHING_YET, tf.int8)] + [
            tf.zeros([0] * len(lead) + list(_zeroed(s)), d) for s, d in zip(self._spec.shapes, carried, strict=True)
        ]
        out = tf.while_loop(
            lambda status, *comps: tf.equal(status, self._NOTHING_YET),
            body,
            start,
            shape_invariants=[
                tf.TensorShape([]),
                *(tf.TensorShape([None] * len(lead) + list(s)) for s in self._spec.shapes),
            ],
        )
        comps = [self._restored(t, d) for t, d in zip(out[1:], self._spec.tf_dtypes, strict=True)]
        for t, shape in zip(comps, shapes, strict=True):
            t.set_shape(shape)
        return tf.equal(out[0], self._END), comps

    @staticmethod
    def _restored(t: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        """A component that left the loop as carried, with its own dtype again."""
        if t.dtype == dtype:
            return t
        if bitcast_takes(dtype):
            return tf.bitcast(t, dtype)
        # A dtype tf.bitcast does not take (float8, int4, ...): numpy reinterprets it, with a copy.
        return tf.numpy_function(lambda a: a.view(dtype.as_numpy_dtype), [t], dtype, stateful=False)

    def _eager(self, n: int | None, allow_smaller: bool, end_as_flag: bool, padding: list | None):
        # Eagerly there is no step to cancel; Python's own Ctrl-C interrupts the wait.
        since = int(self._arrive())
        try:
            while True:
                status, comps = self._poll(n, allow_smaller, end_as_flag, since, padding)
                if status != self._NOTHING_YET:
                    break
        except StopIteration:
            raise tf.errors.OutOfRangeError(
                None, None, f"pyfastq queue '{self._queue_name}' is closed and has too few elements left"
            ) from None
        except RuntimeError as e:
            raise tf.errors.UnknownError(None, None, str(e)) from None
        return tf.constant(status == self._END), [tf.constant(c) for c in comps]

    def dequeue(self, *, end_as_flag: bool = False):
        return self._op(None, False, end_as_flag)

    def dequeue_many(self, n: int, allow_smaller: bool, padding: list | None = None, *, end_as_flag: bool = False):
        """padding: None (zeros), or one numpy scalar (None: zero) per component."""
        return self._op(n, allow_smaller, end_as_flag, padding)

    def dataset(self, batch_size: int | None, drop_remainder: bool, padding: list | None, spec) -> tf.data.Dataset:
        """Queue.dataset's dataset, elements nested as spec: a dequeue per element, mapped until the end flag."""

        def take(_):
            if batch_size is None:
                done, flat = self.dequeue(end_as_flag=True)
            else:
                done, flat = self.dequeue_many(batch_size, not drop_remainder, end_as_flag=True, padding=padding)
            return done, tuple(flat)

        lead = [] if batch_size is None else [batch_size if drop_remainder else None]

        def unpack(done, flat):
            return spec.pack([tf.ensure_shape(t, lead + list(s)) for t, s in zip(flat, spec.shapes, strict=True)])

        ds = tf.data.Dataset.from_tensors(0).repeat().map(take).take_while(lambda done, flat: tf.logical_not(done))
        return ds.map(unpack)


def _zeroed(shape: tuple) -> tuple:
    """shape with each variable dim (None) as 0: an empty placeholder of it."""
    return tuple(0 if d is None else d for d in shape)

