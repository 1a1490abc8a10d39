"""Random-access sources for Producer: the sampler, claiming positions, and a worker's loop over its claims.

A random-access source is any object with ``__len__`` and ``__getitem__`` (a
Keras ``PyDataset``, a grain or torch-style map dataset, a list of files). The
sampler turns a run into a sequence of positions (epoch after epoch, each a
pass over the shard, shuffled per epoch when asked) and says which index each
position reads. Workers claim small chunks of positions from a shared counter
as they go, so a slow item or a slow worker never holds back the rest; the
counter is a lock's integer for threads and one word of shared memory for
processes. No TensorFlow here: worker processes import this.
"""

from __future__ import annotations

import mmap
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._worker import STOP_CHECK_S, put_until_stopped

# Positions a worker claims at a time: small, so that a slow item delays at most
# a few of its neighbours, while a claim (a lock or one atomic add) stays rare
# beside the work of reading an item.
CLAIM = 4

_KERAS_BATCHES = ("PyDataset", "Sequence")


def is_random_access(source: Any) -> bool:
    """True for an object with __len__ and __getitem__ (a generator function has neither)."""
    kind = type(source)
    return hasattr(kind, "__len__") and hasattr(kind, "__getitem__")


def _is_keras_class(c: type) -> bool:
    return c.__module__.split(".")[0] in ("keras", "tf_keras", "tensorflow")


def is_keras_batches(source: Any) -> bool:
    """True for a keras PyDataset / Sequence, whose items are batches; keras itself is never imported for it."""
    return any(c.__name__ in _KERAS_BATCHES and _is_keras_class(c) for c in type(source).__mro__)


def has_epoch_end(source: Any) -> bool:
    """True for a keras PyDataset / Sequence whose class has an on_epoch_end of its own (keras' does nothing)."""
    if not is_keras_batches(source):
        return False
    owner = next((c for c in type(source).__mro__ if "on_epoch_end" in vars(c)), None)
    return owner is not None and not _is_keras_class(owner)


class EpochEnds:
    """Thread workers: ``source.on_epoch_end()`` once every item of an epoch is read, before any of the next is.

    As Keras' fit does between epochs (its workers stop, then on_epoch_end runs), so an on_epoch_end that
    changes what an index reads (a reshuffle of the PyDataset's own) never races a read. Reads of the next
    epoch wait at the boundary; those of one epoch still run in parallel.
    """

    def __init__(self, source: Any, sampler: Sampler):
        self._source = source
        self._per_epoch = sampler.per_epoch
        self._cond = threading.Condition()
        self._read: dict[int, int] = {}  # epoch -> items read
        self._ended = 0  # epochs whose on_epoch_end has returned

    def before_read(self, position: int, stop: threading.Event) -> bool:
        """Waits until the epochs before position's have ended; False if stopped meanwhile."""
        epoch = position // self._per_epoch
        with self._cond:
            while self._ended < epoch:
                if stop.is_set():
                    return False
                self._cond.wait(STOP_CHECK_S)
        return True

    def after_read(self, position: int) -> None:
        """Counts position's item as read; the epoch's last read runs on_epoch_end (its exception is the caller's)."""
        epoch = position // self._per_epoch
        with self._cond:
            self._read[epoch] = self._read.get(epoch, 0) + 1
            if self._read[epoch] < self._per_epoch:
                return
            del self._read[epoch]
        # Outside the lock: the next epoch's readers wait for _ended, not for the lock.
        self._source.on_epoch_end()
        with self._cond:
            self._ended = epoch + 1
            self._cond.notify_all()


class Sampler:
    """Which source index each position of a run reads.

    Positions count from 0 over the whole run: position ``p`` is element
    ``p % per_epoch`` of epoch ``p // per_epoch``. An epoch visits the shard's
    indices (``index, index + count, ...``: disjoint and balanced across
    shards whatever each one's seed), in order, or with ``shuffle`` in a
    permutation drawn from ``seed`` and the epoch, so epochs differ and a seed
    repeats them.

    >>> s = Sampler(10, shuffle=True, seed=1, epochs=2)
    >>> [s.index(p) for p in range(s.total)]   # two permutations of 0..9
    """

    def __init__(self, length: int, *, shuffle: bool = False, seed: int = 0, epochs: int | None = 1,
                 shard: tuple[int, int] | None = None):
        self.length = length
        self.shuffle = shuffle
        self.seed = seed
        self.epochs = epochs
        self.shard = shard or (0, 1)
        self.per_epoch = len(range(self.shard[0], length, self.shard[1]))
        self.total: int | None = None if epochs is None and self.per_epoch else self.per_epoch * (epochs or 0)
        self._cached: tuple[int, np.ndarray] = (-1, np.empty(0, np.int64))

    def order(self, epoch: int) -> np.ndarray:
        """The indices epoch `epoch` reads, in the order it reads them."""
        indices = np.arange(self.shard[0], self.length, self.shard[1], dtype=np.int64)
        if self.shuffle:
            np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(epoch,))).shuffle(indices)
        return indices

    def index(self, position: int) -> int:
        """The source index position `position` reads."""
        epoch, k = divmod(position, self.per_epoch)
        cached = self._cached  # one read: threads share a sampler, and swap the whole pair
        if cached[0] != epoch:
            cached = (epoch, self.order(epoch))
            self._cached = cached
        return int(cached[1][k])

    def end(self, start: int, n: int) -> int:
        """Where a claim of n positions from start ends: at most at the run's end."""
        return start + n if self.total is None else min(start + n, self.total)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cached": (-1, np.empty(0, np.int64))}


class LocalClaims:
    """Claiming for workers of one process (threads, the Ray feeder): the next unclaimed position, under a lock."""

    def __init__(self):
        self._next = 0
        self._lock = threading.Lock()

    def claim(self, n: int) -> int:
        """n positions from the one returned are the caller's."""
        with self._lock:
            start, self._next = self._next, self._next + n
            return start


class SharedClaims:
    """Claiming for worker processes: the next unclaimed position in one word of shared memory, taken atomically.

    It pickles to its descriptor (as a shared queue does), so the workers map the same word.
    """

    def __init__(self, fd: int | None = None):
        if fd is None:
            fd = os.memfd_create("pyfastq-claims", os.MFD_CLOEXEC)
            os.ftruncate(fd, mmap.PAGESIZE)
        self._fd = fd
        self._map = mmap.mmap(fd, mmap.PAGESIZE)

    def claim(self, n: int) -> int:
        from ._core import fetch_add

        return fetch_add(self._map, n)

    def __reduce__(self):
        from multiprocessing.reduction import DupFd

        return _attach_claims, (DupFd(self._fd),)


def _attach_claims(dup) -> SharedClaims:
    return SharedClaims(dup.detach())


@dataclass
class Plan:
    """What a worker of a random-access source needs besides the source: where to claim and what each position reads."""

    sampler: Sampler
    claims: Any  # LocalClaims or SharedClaims
    batched: bool  # item i is a batch: dim 0 splits into elements


def read_item(source: Any, index: int, length: int) -> Any:
    """source[index], any exception it raises noted with the index, so the consumer's message names it."""
    try:
        return source[index]
    except Exception as e:
        e.add_note(f"pyfastq: raised by source[{index}] of a random-access source of len {length}")
        raise


def put_rows_until_stopped(queue: Any, batch: Any, stop: threading.Event) -> bool:
    """Every row of batch's dim 0, in slices that fit the free slots (so stop() is seen); False if stopped."""
    layout = queue._layout
    rows = layout.convert(layout.flatten(batch), many=True)
    n, done = len(rows[0]), 0
    fit = queue.capacity - queue.size()
    while done < n:
        if stop.is_set():
            return False
        k = max(1, min(n - done, fit))
        try:
            queue._impl.put_many([a[done : done + k] for a in rows], STOP_CHECK_S)
        except TimeoutError:
            # Slots neither ready nor free are held by consumers' tensors: a smaller slice.
            fit = min(k // 2, queue.capacity - queue.size())
            continue
        done += k
        fit = queue.capacity - queue.size()
    return True


def run_claims(source: Any, plan: Plan, queue: Any, stop: threading.Event, turns: Any = None,
               retire: threading.Event | None = None, epoch_ends: EpochEnds | None = None) -> int:
    """A worker's loop: claims positions, reads their items and puts them, until the run ends, stop or retire.

    With turns (ordered), each item is put in its position's turn: ``turns.wait(position, stop)``
    (False: stopped) and ``turns.passed(position)``. With epoch_ends, items are read epoch after epoch,
    on_epoch_end between them. Returns the items put.
    """
    sampler, made = plan.sampler, 0
    while not stop.is_set() and not (retire is not None and retire.is_set()):
        start = plan.claims.claim(CLAIM)
        end = sampler.end(start, CLAIM)
        if start >= end:
            break
        for position in range(start, end):
            if epoch_ends is not None and not epoch_ends.before_read(position, stop):
                return made
            item = read_item(source, sampler.index(position), sampler.length)
            if epoch_ends is not None:
                epoch_ends.after_read(position)
            if turns is not None and not turns.wait(position, stop):
                return made
            if plan.batched:
                put = put_rows_until_stopped(queue, item, stop)
            else:
                put = put_until_stopped(queue.put, item, stop)
            if not put:
                return made
            made += 1
            if turns is not None:
                turns.passed(position)
    return made


class ThreadTurns:
    """Sampler order for thread workers: position p's item is put once position p - 1's is."""

    def __init__(self, queue: Any):
        self._queue = queue
        self._turn = 0
        self._cond = threading.Condition()

    def wait(self, position: int, stop: threading.Event) -> bool:
        with self._cond:
            while self._turn != position:
                if stop.is_set() or self._queue.closed:
                    return False
                self._cond.wait(STOP_CHECK_S)
            return True

    def passed(self, position: int) -> None:
        with self._cond:
            self._turn = position + 1
            self._cond.notify_all()


class RingTurns:
    """Sampler order for worker processes: the shared ring's turnstile, a position its ticket."""

    def __init__(self, impl: Any):
        self._impl = impl  # the queue's RingWriter

    def wait(self, position: int, stop: threading.Event) -> bool:
        while not stop.is_set():
            try:
                self._impl.wait_turn(position, STOP_CHECK_S)
                return True
            except TimeoutError:
                continue
        return False

    def passed(self, position: int) -> None:
        self._impl.pass_turn(position)
