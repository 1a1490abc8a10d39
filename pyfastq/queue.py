"""pyfastq.Queue: the public queue, on either backend."""

from __future__ import annotations

import contextlib
import itertools
import os
import weakref
from typing import Any

import numpy as np
import tensorflow as tf

from . import _interrupt, backends
from ._compat import run_before_threads_join
from ._contract import check_batch
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

    ``shuffle=True`` gives TF's RandomShuffleQueue order: each dequeue takes a
    uniformly random element among those ready, keeping ``min_after_dequeue``
    back while the queue is open. Specs with None dims take ``max_shapes``
    (their bounds, which size the slots): dequeue gives each element its own
    shape, dequeue_many and dataset pad a batch to its largest element.
    """

    _layout: Spec  # the specs, flattened (a Layout with what the consumers' side needs)

    def __init__(
        self,
        specs: Any,
        capacity: int = 64,
        *,
        shuffle: bool = False,
        min_after_dequeue: int = 0,
        seed: int | None = None,
        max_shapes: Any = None,
        shared: bool = False,
        backend: str = "auto",
        name: str | None = None,
    ):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"capacity must be an int >= 1, got {capacity!r}")
        if capacity >= 2**31:
            raise ValueError(f"capacity must be below 2**31, got {capacity}")
        self._order = _checked_order(shuffle, min_after_dequeue, seed, capacity)
        self._layout = Spec(specs, max_shapes)
        self.name = name if name is not None else f"pyfastq_queue_{next(_names)}"
        self._impl: backends.Backend = backends.create(
            backend, self._layout, capacity, self.name, self._order, shared=bool(shared)
        )
        self._capacity = capacity
        self._shared = bool(shared)
        self._datasets_made = 0
        self._unbuffered_datasets = False  # set by pyfastq.keras.BackupAndRestore.track
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
        return reduce_shared(self._impl.fd, self._layout.layout(), self.name, self._capacity)

    # -- consumers (TF ops) --------------------------------------------------------
    def dequeue(self) -> Any:
        """TF op: one element, a nest of tensors with the specs' static shapes (each None: the element's own).

        The tensors alias the ring slot; the slot returns to producers when they are freed.

        >>> image, label = q.dequeue()   # eagerly, or in a tf.function or a TF1 session
        """
        _, flat = self._impl.dequeue()
        return self._layout.pack(flat)

    def dequeue_many(self, n: int, allow_smaller_final_batch: bool = False, *, padding_values: Any = None) -> Any:
        """TF op: n elements stacked along a new dim 0.

        With variable shapes every component is padded to the largest shape in
        the batch, with zeros or ``padding_values`` (a nest like specs of scalars; None: zeros).

        Needs 1 <= n <= capacity. A shuffled queue takes the n at once, so a cancelled
        dequeue takes nothing: while the queue is open it waits until n + min_after_dequeue
        are ready, and a batch with n + min_after_dequeue > capacity, which can never be
        ready then, waits for close() (TF's RandomShuffleQueue takes such a batch element
        by element as they come).

        >>> @tf.function
        ... def step():
        ...     images, labels = q.dequeue_many(64)
        ...     return train_step(images, labels)
        """
        check_batch(self.name, n, self._capacity)
        _, flat = self._impl.dequeue_many(n, allow_smaller_final_batch, padding=self._padding(padding_values))
        return self._layout.pack(flat)

    def dataset(
        self, batch_size: int | None = None, drop_remainder: bool = False, *, padding_values: Any = None
    ) -> tf.data.Dataset:
        """A tf.data.Dataset of the queue's elements (or batches) that ends when the queue is closed and drained.

        Batches of variable-shape elements are padded as dequeue_many pads them (padded_batch's rule),
        and a shuffled queue's batches wait as dequeue_many's do (with batch_size + min_after_dequeue >
        capacity, the first comes after close()).

        Made after ``pyfastq.keras.BackupAndRestore.track`` of this queue's producer, the dataset runs
        without tf.data's injected prefetch, so that each step takes its batch from the queue itself.

        >>> model.fit(q.dataset(batch_size=32), epochs=1)
        """
        if batch_size is not None:
            check_batch(self.name, batch_size, self._capacity)
        ds = self._impl.dataset(batch_size, drop_remainder, self._padding(padding_values), self._layout)
        # Each tf.distribute worker feeds its own queue: there is no file list to shard, and sharding by
        # data would make every worker read the whole queue to keep 1/N of it.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        if self._unbuffered_datasets:
            # pyfastq.keras.BackupAndRestore tracks this queue's producer: its state() must count only what
            # steps have taken, and tf.data's injected prefetch would hold a batch taken but not yet trained.
            options.experimental_optimization.inject_prefetch = False
        self._datasets_made += 1
        return ds.with_options(options)

    # -- state ---------------------------------------------------------------------
    @property
    def capacity(self) -> int:
        return self._capacity

    @property
    def specs(self) -> Any:
        return self._layout.structure

    @property
    def backend(self) -> str:
        return self._impl.kind

    @property
    def shared(self) -> bool:
        """True if the ring is in shared memory, for producers in other processes."""
        return self._shared

    @property
    def shuffle(self) -> bool:
        return self._order.shuffle

    @property
    def min_after_dequeue(self) -> int:
        return self._order.min_after_dequeue

    @property
    def max_shapes(self) -> Any:
        """The bounds, a nest like specs of TensorShapes (each the spec's shape when it has no None dim)."""
        return self._layout.pack([tf.TensorShape(b) for b in self._layout.bounds])

    def stats(self) -> dict:
        """A snapshot of the queue's counters (both backends give the same keys).

        puts, gets: elements committed and taken, all time. size: ready now.
        put_wait_s, get_wait_s: seconds producers (consumers) spent waiting, summed over them.
        put_blocked_s, get_blocked_s: seconds during which at least one producer (consumer) waited.
        put_waiters, get_waiters: waiting now. fill_histogram: FILL_BINS counts of how full each
        dequeue found the queue (bin i: size/capacity in [i/10, (i+1)/10); the last bin holds full).
        capacity, shuffle, min_after_dequeue; native also slot_bytes, memory_bytes, shared.
        pinned: the ring is page-locked for host-to-GPU DMA (the first dequeue on a GPU pins it where
        the CUDA runtime loads and a device is there); always False on the python backend.

        >>> s = q.stats(); s["get_blocked_s"], s["fill_histogram"]
        """
        return self._impl.stats()

    def __repr__(self) -> str:
        return (
            f"pyfastq.Queue({self.name!r}, capacity={self._capacity}, backend={self.backend!r}, "
            f"state={self._impl.state!r})"
        )

    def _padding(self, padding_values: Any) -> list | None:
        """padding_values as one numpy scalar (or None: zeros) per component; None if all are zeros."""
        if padding_values is None:
            return None
        flat = self._layout.flatten(padding_values)
        out = []
        for value, dtype, name in zip(flat, self._layout.tf_dtypes, self._layout.names, strict=True):
            if value is None:
                out.append(None)
                continue
            try:
                arr = tf.make_ndarray(tf.make_tensor_proto(value, dtype=dtype))
            except (TypeError, ValueError) as e:
                raise TypeError(f"padding value for component {name}: cannot be {dtype.name}: {e}") from None
            if arr.shape != ():
                raise ValueError(f"padding value for component {name} must be a scalar, got shape {list(arr.shape)}")
            out.append(arr)
        return out if any(v is not None for v in out) else None


def _checked_order(shuffle: Any, min_after_dequeue: Any, seed: Any, capacity: int) -> backends.Order:
    """Queue's shuffle arguments checked; the seed drawn from the OS when not given."""
    if not isinstance(shuffle, (bool, np.bool_)):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    if isinstance(min_after_dequeue, bool) or not isinstance(min_after_dequeue, (int, np.integer)):
        raise TypeError(f"min_after_dequeue must be an int, got {min_after_dequeue!r}")
    if not 0 <= min_after_dequeue < capacity:
        raise ValueError(f"min_after_dequeue must be in [0, capacity) = [0, {capacity}), got {min_after_dequeue}")
    bad_seed = isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64
    if seed is not None and bad_seed:
        raise ValueError(f"seed must be None or an int in [0, 2**64), got {seed!r}")
    if not shuffle and (min_after_dequeue or seed is not None):
        # Refused rather than ignored: a seed that does nothing would promise a reproducible order.
        raise ValueError("min_after_dequeue and seed shape a shuffled order: they need shuffle=True")
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little")
    return backends.Order(bool(shuffle), int(min_after_dequeue), int(seed))


def _cancel_all_at_exit() -> None:
    # Wakes every put and dequeue still blocked, so the interpreter can exit.
    for q in list(_live):
        with contextlib.suppress(Exception):  # best effort at interpreter exit
            q.close(cancel=True)


# threading's own hook runs before non-daemon threads are joined: a producer
# thread blocked in put() is woken before the interpreter waits for it.
run_before_threads_join(_cancel_all_at_exit)
