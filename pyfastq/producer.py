"""pyfastq.Producer: what TF1's QueueRunner + Coordinator were, for Python producers.

Threads here; worker processes that write straight into a shared ring in
``_process``; Ray actors streaming chunks to a feeder in ``_ray``. No
TensorFlow is imported here: worker processes and Ray actors import this
module and should not pay for TF.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from . import _process
from ._errors import QueueClosed
from ._worker import (
    STOP_CHECK_S,
    WorkerInfo,
    failure_message,
    put_until_stopped,
    set_thread_info,
    worker_info,
    worker_seed,
)

if TYPE_CHECKING:
    from . import _ray
    from .queue import Queue

__all__ = ["Producer", "WorkerInfo", "worker_info"]

MODES = ("thread", "process", "ray")


class _ThreadTurns:
    """Round-robin order for thread workers: ticket k*P + i is worker i's k-th element; finished workers are skipped.

    Process workers use the same rule through the ring's turnstile (Ring::begin_turns).
    """

    def __init__(self, workers: int):
        self._p = workers
        self._turn = 0
        self._finished = [None] * workers  # elements made, once finished
        self._cond = threading.Condition()

    def wait(self, ticket: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self._turn == ticket, timeout)

    def passed(self, ticket: int) -> None:
        with self._cond:
            self._turn = ticket + 1
            self._skip()

    def finish(self, worker: int, count: int) -> None:
        with self._cond:
            self._finished[worker] = count
            self._skip()

    def _skip(self) -> None:
        for _ in range(self._p):
            done = self._finished[self._turn % self._p]
            if done is None or done > self._turn // self._p:
                break
            self._turn += 1
        self._cond.notify_all()


class Producer:
    """Runs ``fn(worker_index, num_workers)`` in workers and puts every element it yields.

    >>> with pyfastq.Producer(q, lambda i, n: (make(k) for k in range(i, 1000, n)), workers=4):
    ...     model.fit(q.dataset(batch_size=32))

    When every worker has finished, the queue is closed (``close_on_exit``); a
    worker's exception fails the queue, so consumers raise it. Leaving the
    ``with`` block (or ``stop()``) stops the workers, waking any blocked in
    put, and joins them.

    ``mode="process"`` runs the workers in processes (GIL-bound Python scales
    with cores) that write into the ring of a ``Queue(shared=True)``. Each is a
    lean interpreter: it never runs this program's main module nor imports
    TensorFlow (unless ``fn`` does); ``fn`` travels by cloudpickle, by value if
    it comes from ``__main__`` (a script, ``python -c``, a notebook), so a
    lambda or a local function works. Each worker process seeds ``random`` and
    ``numpy.random`` from ``seed`` and its index; a worker that dies (a signal,
    ``os._exit``) fails the queue within a second; if this process dies, the
    workers exit by themselves.

    ``ordered=True`` delivers in a fixed round-robin of workers (worker 0's
    first element, worker 1's first, ..., worker 0's second, ...; a worker
    that has finished is skipped), so a run is reproducible whatever the
    timing. Workers still make their elements in parallel.

    ``mode="ray"`` runs the workers in Ray actors (options from
    ``ray_options``, e.g. ``{"num_cpus": 2, "resources": {...}}``) anywhere in
    the Ray cluster this process is connected to (a local one is started if
    Ray is not initialised). Each streams what ``fn`` yields back in chunks,
    with backpressure; a feeder thread here puts them into the queue, which
    may be any Queue. Seeds and ``ordered`` as with processes; an actor that
    dies fails the queue within seconds, naming the worker; leaving the
    ``with`` block kills the actors (``p.actors``).
    """

    def __init__(
        self,
        queue: Queue,
        fn: Callable[[int, int], Iterable[Any]],
        workers: int = 1,
        mode: str = "thread",
        close_on_exit: bool = True,
        *,
        ordered: bool = False,
        seed: int | None = None,
        ray_options: dict | None = None,
    ):
        _check_arguments(queue, fn, workers, mode, ordered, seed, ray_options)
        self.queue = queue
        self.mode = mode
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
        self.ordered = ordered
        self.errors: list[BaseException] = []
        self._fn = fn
        self._workers = workers
        self._close_on_exit = close_on_exit
        self._stop = threading.Event()
        self._started = False
        # thread mode
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = 0
        self._turns = _ThreadTurns(workers) if ordered and mode == "thread" else None
        # process and ray modes: the workers' pool (start, stop, running)
        wiring = (queue, fn, workers, self.seed, ordered, self.errors, self._stop, self._all_done)
        self._pool: _process.WorkerProcesses | _ray.RayActors | None = None
        if mode == "process":
            self._pool = _process.WorkerProcesses(*wiring)
        elif mode == "ray":
            self._pool = _ray_mode().RayActors(*wiring, ray_options)

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> Producer:
        """Starts the workers (what entering the ``with`` block does); returns self.

        >>> p = pyfastq.Producer(q, fn, workers=4).start()
        >>> ...; p.stop()
        """
        if self._started:
            raise RuntimeError("this Producer was already started")
        self._started = True
        if self._pool is not None:
            self._pool.start()
            return self
        self._running = self._workers
        for i in range(self._workers):
            t = threading.Thread(target=self._run_thread, args=(i,), name=f"pyfastq-{self.queue.name}-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stops the workers and joins them; with ``close_on_exit`` the queue is closed too: no consumer waits forever.

        A worker blocked in put wakes within 50 ms. A worker process still busy
        in ``fn`` after 0.5 s is sent SIGTERM (it unwinds: nothing is
        half-enqueued), and SIGKILL 0.5 s later; a worker killed that way may
        have held a slot, so the queue is failed rather than closed. Ray actors
        are killed at once: they hold no slot.

        >>> p.stop()   # what leaving the ``with`` block does
        """
        self._stop.set()
        if self._pool is not None:
            self._pool.stop()
        else:
            for t in self._threads:
                t.join(timeout)
        if self._close_on_exit:
            self.queue.close()

    @property
    def running(self) -> bool:
        """True while any worker is alive.

        >>> while p.running: time.sleep(0.1)
        """
        return any(t.is_alive() for t in self._threads) or (self._pool is not None and self._pool.running())

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (mode="process"), in worker order."""
        return [w.pid for w in self._pool.procs] if self.mode == "process" else []

    @property
    def actors(self) -> list:
        """The Ray actors' handles (mode="ray"), in worker order."""
        return list(self._pool.actors) if self.mode == "ray" else []

    def _all_done(self) -> None:
        """Every worker finished normally."""
        if self._close_on_exit:
            self.queue.close()

    def __enter__(self) -> Producer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- threads -------------------------------------------------------------------
    def _run_thread(self, index: int) -> None:
        set_thread_info(WorkerInfo(index, self._workers, worker_seed(self.seed, index), "thread", self.queue))
        made = 0
        try:
            for element in self._fn(index, self._workers):
                ticket = made * self._workers + index
                if self._turns is not None:
                    while not self._turns.wait(ticket, STOP_CHECK_S):
                        if self._stop.is_set() or self.queue.closed:
                            return
                if not put_until_stopped(self.queue.put, element, self._stop):
                    return
                made += 1
                if self._turns is not None:
                    self._turns.passed(ticket)
        except QueueClosed:
            return  # the consumer side ended the queue: nothing left to do
        except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
            self.errors.append(e)
            self.queue.fail(failure_message(index, self._workers, e))
            self._stop.set()
            return
        finally:
            if self._turns is not None:
                self._turns.finish(index, made)
            with self._lock:
                self._running -= 1
                last = self._running == 0
        if last and not self._stop.is_set():
            self._all_done()


def _ray_mode():
    """The ray mode's module; an ImportError saying how to install Ray if it does not import."""
    try:
        import ray  # noqa: F401 - only whether it imports
    except ImportError as e:
        raise ImportError(
            f'mode="ray" needs Ray, which does not import here ({e}): pip install "pyfastq[ray]"'
        ) from e
    from . import _ray

    return _ray


def _check_arguments(
    queue: Any, fn: Any, workers: Any, mode: Any, ordered: bool, seed: Any, ray_options: Any
) -> None:
    """Producer's arguments checked, before anything starts (fn's pickling is checked by the process or ray mode)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an int >= 1, got {workers!r}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable as fn(worker_index, num_workers), got {fn!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
        raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
    if ray_options is not None:
        if mode != "ray":
            raise ValueError(f'ray_options is for mode="ray", not mode={mode!r}')
        if not isinstance(ray_options, dict):
            raise TypeError(f"ray_options must be a dict of Ray actor options, got {ray_options!r}")
    if mode != "process":
        return
    if not getattr(queue, "shared", False):
        raise ValueError(
            'mode="process" needs Queue(..., shared=True): worker processes write into a ring in shared '
            f"memory, and queue '{queue.name}' ({queue.backend} backend) has none"
        )
    from ._core import MAX_ORDERED_WORKERS  # a shared queue has the native backend

    if ordered and workers > MAX_ORDERED_WORKERS:
        raise ValueError(f"ordered=True takes at most {MAX_ORDERED_WORKERS} worker processes, got {workers}")
