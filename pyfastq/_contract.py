"""What both backends promise alike, written once: the queue's constants, messages and checks.

The ring (C++, ``pyfastq._core``) keeps its own copies of what it checks for its own safety
(``kFillBins``, ``kMaxTurnWorkers``, its timeout and close messages); tests/test_contract.py
asserts that they agree with these. No TensorFlow and no numpy here: producer processes import it.
"""

from __future__ import annotations

import time

from ._errors import QueueClosed

FILL_BINS = 10  # the fill histogram's bins: tenths of capacity, the last holding full (the ring's kFillBins)
MAX_ORDERED_WORKERS = 256  # ordered producers one turnstile takes (the ring's kMaxTurnWorkers)

# A queue's states, as Backend.state gives them: closed lets puts already waiting complete, cancelled and
# failed refuse them.
OPEN, CLOSED, CANCELLED, FAILED = "open", "closed", "cancelled", "failed"
TAKING_PUTS = (OPEN, CLOSED)  # states in which a put already under way may still go in


# A reservation's commit or abort after one of them (the ring's Reservation says the same).
RESERVATION_FINISHED = "this reservation was already committed or aborted"


def deadline_from(timeout: float | None) -> float | None:
    """The time.monotonic() by which a call with this timeout gives up; None: never."""
    if timeout is None:
        return None
    if not timeout >= 0:
        raise ValueError(f"timeout must be None or a number >= 0, got {timeout!r}")
    return time.monotonic() + timeout


def refused(queue: str, state: str, enqueued: int = 0) -> QueueClosed:
    """The error of a put that an ended queue refuses; `enqueued`: rows of a put_many that went in before."""
    why = {FAILED: "has failed", CANCELLED: "was cancelled"}.get(state, "is closed")
    went_in = f" ({enqueued} rows of this put_many went in before)" if enqueued else ""
    return QueueClosed(f"queue '{queue}' {why}: no more puts{went_in}", enqueued=enqueued)


def no_free_slot(queue: str) -> TimeoutError:
    return TimeoutError(f"no free slot in queue '{queue}' before the timeout")


def no_turn(queue: str, ticket: int) -> TimeoutError:
    return TimeoutError(f"queue '{queue}': ticket {ticket}'s turn did not come before the timeout")


def check_all_or_nothing(queue: str, rows: int, capacity: int, timeout: float | None) -> None:
    """ValueError for a put_many with a timeout (all rows or none) of more rows than the queue holds."""
    if rows > capacity and timeout is not None:
        raise ValueError(
            f"put_many of {rows} elements into '{queue}' of capacity {capacity} "
            "cannot be all-or-nothing within a timeout; pass timeout=None"
        )


def check_turn_workers(workers: int) -> None:
    """ValueError unless one turnstile can order this many producers."""
    if not 1 <= workers <= MAX_ORDERED_WORKERS:
        raise ValueError(f"ordered producers: 1 to {MAX_ORDERED_WORKERS} workers, got {workers}")


def check_batch(queue: str, n: object, capacity: int) -> None:
    """ValueError unless n elements can ever be taken at once from a queue of this capacity."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"batch size must be an int >= 1, got {n!r}")
    if n > capacity:
        raise ValueError(f"a batch of {n} from '{queue}' of capacity {capacity} could never be formed")


def fill_bin(size: int, capacity: int) -> int:
    """The fill histogram's bin of a dequeue that finds `size` of `capacity` ready (Ring::record_fill)."""
    return min(FILL_BINS - 1, size * FILL_BINS // capacity)


class Waiting:
    """Threads of one side waiting now, and the time at least one of them was (the ring's blocked_ns).

    Its owner's lock is held around every call.
    """

    def __init__(self):
        self.count = 0
        self._since = 0.0  # when the stretch under way began
        self._blocked = 0.0  # stretches that have ended

    def enter(self) -> None:
        self.count += 1
        if self.count == 1:
            self._since = time.monotonic()

    def leave(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._blocked += time.monotonic() - self._since

    def blocked(self) -> float:
        """Seconds at least one waited, the stretch under way included."""
        return self._blocked + (time.monotonic() - self._since if self.count else 0.0)


class Turnstile:
    """Round-robin commit order for ordered producers, as the ring's (Ring::begin_turns): ticket k*P + i is
    producer i's k-th element, tickets of producers that have finished are skipped. Its owner's lock is
    held around every call, and the owner wakes its waiters when `turn` moves."""

    DONE = 2**64 - 1  # the turn once every producer has finished (the ring's kNoTurn)

    def __init__(self):
        self.turn = 0
        self._finished_at: list[int | None] = []  # per producer: elements made, once finished

    def begin(self, workers: int, first: int = 0) -> None:
        check_turn_workers(workers)
        self._finished_at = [None] * workers
        self.turn = first

    def passed(self, ticket: int) -> None:
        self.turn = ticket + 1
        self._skip_finished()

    def finish(self, worker: int, count: int) -> None:
        if worker < len(self._finished_at):
            self._finished_at[worker] = count
            self._skip_finished()

    def _skip_finished(self) -> None:
        p = len(self._finished_at)
        for _ in range(p):
            if self.turn == self.DONE:
                return
            made = self._finished_at[self.turn % p]
            if made is None or made > self.turn // p:
                return
            self.turn += 1
        if p:
            self.turn = self.DONE
