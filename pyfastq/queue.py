"""pyfastq.Queue: the public queue, on either backend."""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from typing import Any

import tensorflow as tf

from . import _interrupt, backends
from ._spec import Spec
from ._writer import Producing, reduce_shared

_names = itertools.count()
_live: weakref.WeakSet = weakref.WeakSet()


class Queue(Producing):
    """A bounded queue from Python producers to TensorFlow consumers.

    >>> q = pyfastq.Queue(tf.TensorSpec([128, 100], tf.float32), capacity=8)
    >>> q.put(np.zeros([128, 100], np.float32)); q.close()
    >>> for batch in q.dataset(): ...

    With ``shared=True`` the ring lives in shared memory and the queue can be
    handed to other processes (``Producer(mode="process")``, or any
    ``multiprocessing`` process): there it is a ``QueueWriter`` whose put,
    put_many and reserve write straight into the ring's slots.
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
        if shuffle or min_after_dequeue or seed is not None:
            # Refused rather than ignored: a seed that does nothing would promise a reproducible order.
            raise NotImplementedError(
                "shuffle=True (and its min_after_dequeue and seed) is not implemented yet; "
                "shuffle in the producer for now"
            )
        self._spec = self._layout = Spec(specs)
        self.name = name if name is not None else f"pyfastq_queue_{next(_names)}"
        self._impl = backends.create(backend, self._spec, capacity, self.name, shared=bool(shared))
        self._capacity = capacity
        self._shared = bool(shared)
        self._init_fast_put()
        _interrupt.install()
        _live.add(self)
        if self._shared:
            # Writers in other processes must not wait forever on a ring that nobody here reads any more.
            weakref.finalize(self, self._impl.close, True)

    def __reduce__(self):
        if not self._shared:
            raise TypeError(
                f"pyfastq queue '{self.name}' lives in this process's memory: create it with shared=True "
                "to hand it to other processes"
            )
        return reduce_shared(self._impl.fd, self._spec.layout(), self.name, self._capacity)

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
            return spec.pack([tf.ensure_shape(t, lead + list(s)) for t, s in zip(flat, spec.shapes, strict=True)])

        ds = tf.data.Dataset.from_tensors(0).repeat().map(take).take_while(lambda done, flat: tf.logical_not(done))
        # Each tf.distribute worker feeds its own queue: there is no file list to shard, and sharding by
        # data would make every worker read the whole queue to keep 1/N of it.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        return ds.map(unpack).with_options(options)

    # -- state ---------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def specs(self) -> Any:
        return self._spec.structure

    @property
    def backend(self) -> str:
        return self._impl.name

    @property
    def shared(self) -> bool:
        """True if the ring is in shared memory, for producers in other processes."""
        return self._shared

    def stats(self) -> dict:
        """Counters: puts, gets, put_wait_s, get_wait_s, size, capacity, pinned (and, native, memory).

        ``pinned``: the ring is page-locked for host-to-GPU DMA. The first dequeue on a GPU pins it where
        the CUDA runtime loads and a device is there; always False on the python backend.
        """
        return self._impl.stats()

    def __repr__(self) -> str:
        return (
            f"pyfastq.Queue({self.name!r}, capacity={self._capacity}, backend={self.backend!r}, "
            f"state={self._impl.state!r})"
        )

    def _check_batch(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"batch size must be an int >= 1, got {n!r}")
        if n > self._capacity:
            raise ValueError(f"a batch of {n} from '{self.name}' of capacity {self._capacity} could never be formed")


def _cancel_all_at_exit() -> None:
    # Wakes every put and dequeue still blocked, so the interpreter can exit.
    for q in list(_live):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            q.close(cancel=True)


# threading's own hook runs before non-daemon threads are joined: a producer
# thread blocked in put() is woken before the interpreter waits for it.
threading._register_atexit(_cancel_all_at_exit)
