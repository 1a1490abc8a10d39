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

from ._compat import add_note
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

    def __init__(self, source: Any, sampler: Sampler, start: int = 0):
        self._source = source
        self._per_epoch = sampler.per_epoch
        self._cond = threading.Condition()
        # A resumed run starts at position `start`: the epochs before it ended, and its own positions
        # below it count as read (they were, before the resume).
        self._ended = start // self._per_epoch  # epochs whose on_epoch_end has returned
        self._read: dict[int, int] = {self._ended: start % self._per_epoch} if start % self._per_epoch else {}

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

    def __init__(self, start: int = 0):
        self._next = start
        self._lock = threading.Lock()

    def claim(self, n: int) -> int:
        """n positions from the one returned are the caller's."""
        with self._lock:
            start, self._next = self._next, self._next + n
            return start


class SharedClaims:
    """Claiming for worker processes: a table in shared memory, the next unclaimed position and one entry per worker.

    Each worker claims under the table's lock and records in its entry its
    claim, the position it is at and the slots it had committed when it began
    it (``_core.claim``, ``_core.claims_advance``): when a worker dies, the
    trainer reads what it had committed and hands the rest of its claim to a
    replacement (``handover``). It pickles to its descriptor (as a shared
    queue does), so the workers map the same table.
    """

    ENTRIES = 1024  # worker indices a run can have, restarts and workers="auto" included
    _BYTES = (8 + 8 * ENTRIES) * 8

    def __init__(self, fd: int | None = None, start: int = 0):
        if fd is None:
            fd = os.memfd_create("pyfastq-claims", os.MFD_CLOEXEC)
            os.ftruncate(fd, self._BYTES)
        self._fd = fd
        self._map = mmap.mmap(fd, self._BYTES)
        if start:
            np.frombuffer(self._map, np.uint64, 1)[0] = start

    def claim(self, n: int, entry: int = 0, total: int | None = None) -> tuple[int, int]:
        """Up to n positions below total for worker `entry`: (start, end)."""
        from ._core import claim

        if entry >= self.ENTRIES:
            raise RuntimeError(f"pyfastq: worker index {entry} beyond the {self.ENTRIES} a run can have")
        return claim(self._map, entry, n, -1 if total is None else total)

    def advance(self, entry: int, position: int) -> None:
        """Worker `entry` begins position `position` (the one before is committed whole)."""
        from ._core import claims_advance

        claims_advance(self._map, entry, position)

    def pending(self, entry: int) -> tuple[int, int, int]:
        """Worker `entry`'s unfinished claim: (position, end, rows of position committed)."""
        words = np.frombuffer(self._map, np.uint64, 8, (8 + 8 * entry) * 8)
        which = int(words[2])
        position, base = int(words[3 + 2 * which]), int(words[4 + 2 * which])
        return position, max(position, int(words[1])), int(words[7]) - base

    def handover(self, entry: int) -> tuple[int, int, int]:
        """Trainer, once worker `entry` is dead: its claim's remainder stays in the entry for the replacement."""
        from ._core import claims_handover

        return claims_handover(self._map, entry)

    def commits_word(self, entry: int) -> int:
        """Where in the table worker `entry`'s count of committed slots is (a uint64 index)."""
        return 8 + 8 * entry + 7

    @property
    def table(self) -> mmap.mmap:
        return self._map

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
    tagged: bool = False  # each element's position goes into the ring with it (the ring records what is taken)
    skip: frozenset = frozenset()  # positions taken before a resume: not read again
    restarts: int = 0  # worker processes may be replaced: each names itself to the ring as writer index + 1
    start: int = 0  # the first position of the run (a resume's watermark)


def read_item(source: Any, index: int, length: int) -> Any:
    """source[index], any exception it raises noted with the index, so the consumer's message names it."""
    try:
        return source[index]
    except Exception as e:
        add_note(e, f"pyfastq: raised by source[{index}] of a random-access source of len {length}")
        raise


def put_rows_until_stopped(queue: Any, batch: Any, stop: threading.Event, tag: int | None = None,
                           skip: int = 0) -> bool:
    """Every row of batch's dim 0 from row `skip`, in slices that fit the free slots (so stop() is seen).

    False if stopped. With a tag, the last row carries it (the row whose taking completes the item).
    """
    layout = queue._layout
    rows = layout.convert(layout.flatten(batch), many=True)
    n, done = len(rows[0]), min(skip, len(rows[0]))
    fit = queue.capacity - queue.size()
    while done < n:
        if stop.is_set():
            return False
        k = max(1, min(n - done, fit))
        try:
            last = tag if done + k == n else None
            if last is None:
                queue._impl.put_many([a[done : done + k] for a in rows], STOP_CHECK_S)
            else:
                queue._impl.put_many([a[done : done + k] for a in rows], STOP_CHECK_S, last)
        except TimeoutError:
            # Slots neither ready nor free are held by consumers' tensors: a smaller slice.
            fit = min(k // 2, queue.capacity - queue.size())
            continue
        done += k
        fit = queue.capacity - queue.size()
    return True


def run_claims(source: Any, plan: Plan, queue: Any, stop: threading.Event, turns: Any = None,
               retire: threading.Event | None = None, entry: int | None = None,
               epoch_ends: EpochEnds | None = None) -> int:
    """A worker's loop: claims positions, reads their items and puts them, until the run ends, stop or retire.

    With turns (ordered), each item is put in its position's turn: ``turns.wait(position, stop)``
    (False: stopped) and ``turns.passed(position)``. With an entry (a worker process's place in
    the SharedClaims table), it first finishes what its entry holds (a dead predecessor's
    remainder) and records its progress there as it goes. With epoch_ends, items are read epoch
    after epoch, on_epoch_end between them. Returns the items put.
    """
    sampler, made = plan.sampler, 0
    while not stop.is_set() and not (retire is not None and retire.is_set()):
        done = 0  # rows of the first position committed before (a dead predecessor's)
        if entry is None:
            start = plan.claims.claim(CLAIM)
            end = sampler.end(start, CLAIM)
        else:
            start, end, done = plan.claims.pending(entry)
            if start >= end:
                start, end = plan.claims.claim(CLAIM, entry, sampler.total)
                done = 0
        if start >= end:
            break
        for position in range(start, end):
            if epoch_ends is not None and not epoch_ends.before_read(position, stop):
                return made
            if not _put_position(source, plan, queue, stop, turns, position, done, epoch_ends):
                return made
            done = 0
            made += 1
            if entry is not None:
                plan.claims.advance(entry, position + 1)
    return made


def _put_position(source: Any, plan: Plan, queue: Any, stop: threading.Event, turns: Any, position: int,
                  done: int, epoch_ends: EpochEnds | None = None) -> bool:
    """Reads and puts position's item (its rows from row `done`), in its turn if ordered; False if stopped."""
    sampler = plan.sampler
    if position in plan.skip:  # taken before a resume
        if epoch_ends is not None:
            epoch_ends.after_read(position)
        if turns is not None:
            if not turns.wait(position, stop):
                return False
            turns.passed(position)
        return True
    item = read_item(source, sampler.index(position), sampler.length)
    if epoch_ends is not None:
        epoch_ends.after_read(position)
    tag = position if plan.tagged else None
    left = (len(queue._layout.flatten(item)[0]) if plan.batched else 1) - done  # rows still to put
    if left <= 0:
        # A dead predecessor committed all of it, and may have died before passing its turn on.
        if turns is not None:
            turns.pass_if_at(position)
        return True
    if turns is not None and not turns.wait(position, stop):
        return False
    if plan.batched:
        put = put_rows_until_stopped(queue, item, stop, tag, done)
    elif tag is None:
        put = put_until_stopped(queue.put, item, stop)
    else:
        put = put_until_stopped(queue._tagged_put, item, stop, tag)
    if not put:
        return False
    if turns is not None:
        turns.passed(position)
    return True


class RingTurns:
    """Ordered puts through the queue backend's turnstile (a ring's, or the python backend's): a ticket each."""

    def __init__(self, impl: Any):
        self._impl = impl  # the queue's backend, or a worker process's RingWriter

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

    def pass_if_at(self, position: int) -> None:
        if self._impl.turn == position:
            self._impl.pass_turn(position)
