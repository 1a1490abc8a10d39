"""What every producer worker has (thread, process or Ray actor): who it is, its seed, how it puts, how it fails;
and what the trainer's side of process workers and Ray actors shares (``WorkerPool``).

No TensorFlow here: worker processes and Ray actors import this.
"""

from __future__ import annotations

import pickle
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._compat import format_exception

# A worker blocked in put() re-checks for stop() this often.
STOP_CHECK_S = 0.05


@dataclass(frozen=True)
class WorkerInfo:
    """What ``pyfastq.worker_info()`` tells a worker about itself.

    >>> info = pyfastq.worker_info()   # inside fn
    >>> shard = files[info.index::info.num_workers]
    """

    index: int  # 0 .. num_workers - 1
    num_workers: int
    seed: int  # this worker's seed, from the Producer's base seed and the index
    mode: str  # "thread", "process" or "ray"
    queue: Any  # the queue to put into: the Queue itself, a QueueWriter in a process; None in a Ray actor


_thread_info = threading.local()
_process_info: WorkerInfo | None = None


def worker_info() -> WorkerInfo | None:
    """Inside a Producer's worker (its ``fn``), who the worker is; None elsewhere.

    >>> def fn(i, n):
    ...     rng = np.random.default_rng(pyfastq.worker_info().seed)
    ...     yield rng.random(100, dtype=np.float32)
    """
    return getattr(_thread_info, "info", None) or _process_info


def set_thread_info(info: WorkerInfo) -> None:
    _thread_info.info = info




def worker_seed(base: int, index: int) -> int:
    """Worker `index`'s seed: SeedSequence mixes base and index well, so neighbouring workers' streams are unrelated."""
    state = np.random.SeedSequence(base, spawn_key=(index,)).generate_state(4)
    return int.from_bytes(state.tobytes(), "little")


def become_worker_process(index: int, workers: int, base_seed: int, mode: str, queue: Any) -> None:
    """Makes this process (a worker process, a Ray actor: one worker's alone) worker `index` of `workers`.

    It seeds ``random`` and ``numpy.random`` with the worker's seed, and ``worker_info()`` tells who it is.
    """
    global _process_info
    seed = worker_seed(base_seed, index)
    random.seed(seed)
    np.random.seed(np.frombuffer(seed.to_bytes(16, "little"), np.uint32))
    _process_info = WorkerInfo(index, workers, seed, mode, queue)


def failure_message(index: int, workers: int, e: BaseException, where: str = "") -> str:
    """What consumers see of a worker's exception: who raised what, and its traceback."""
    text = format_exception(e)
    return f"pyfastq producer worker {index} of {workers}{where} raised {type(e).__name__}: {e}\n{text}"


def failure_report(e: BaseException, message: str) -> tuple[str, bytes | None]:
    """What a worker sends the trainer of its exception: the message, and the exception pickled if it pickles."""
    try:
        return message, pickle.dumps(e)
    except Exception:  # noqa: BLE001 - an exception that does not pickle still gets reported, as text
        return message, None


def reported_exception(report: tuple[str, bytes | None]) -> BaseException:
    """The trainer's side of failure_report: the worker's exception, or a RuntimeError of the message."""
    message, exc_bytes = report
    try:
        return pickle.loads(exc_bytes) if exc_bytes else RuntimeError(message)
    except Exception:  # noqa: BLE001 - an exception that does not unpickle here still gets reported
        return RuntimeError(message)


def put_until_stopped(put: Callable[..., None], element: Any, stop: threading.Event, *args: Any) -> bool:
    """put(element, timeout, *args) in short slices until it succeeds (True) or stop is set (False)."""
    while True:
        if stop.is_set():
            return False
        try:
            put(element, STOP_CHECK_S, *args)
            return True
        except TimeoutError:
            continue


class WorkerPool:
    """What the trainer's side of process workers and Ray actors shares: the Producer's wiring, how a failure ends.

    A worker's exception or death is appended to ``errors`` and fails the queue (a random-access
    source's dead worker is first replaced while ``restarts_left``); when every worker has
    finished normally, ``on_all_done`` runs.
    """

    def __init__(
        self,
        queue: Any,
        fn: Callable[[int, int], Iterable[Any]],
        workers: int,
        seed: int,
        ordered: bool,
        errors: list[BaseException],
        stopping: threading.Event,
        on_all_done: Callable[[], None],
        plan: Any = None,
    ):
        self._queue = queue
        self._fn = fn
        self._workers = workers
        self._seed = seed
        self._ordered = ordered
        self._errors = errors
        self._stopping = stopping
        self._on_all_done = on_all_done
        self._plan = plan  # a random-access source's _sources.Plan; None for a generator fn
        self.restarts_left = plan.restarts if plan is not None else 0

    def _record_failure(self, exc: BaseException, message: str) -> None:
        """A worker failed: the run stops, and the queue's consumers get message."""
        self._errors.append(exc)
        self._stopping.set()
        self._queue.fail(message)

    def _death_message(self, message: str) -> str:
        """message, saying so when the worker died with no restart left to replace it."""
        if self._plan is not None and self._plan.restarts:
            message += f" (restarts={self._plan.restarts} used up)"
        return message
