"""pyfastq.Producer: what TF1's QueueRunner + Coordinator were, for Python producers.

Threads, or worker processes that write straight into a shared ring. No
TensorFlow is imported here: worker processes import this module and should
not pay for TF.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import random
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_for
from typing import TYPE_CHECKING, Any

import numpy as np

from ._errors import QueueClosed

if TYPE_CHECKING:
    from .queue import Queue

# A worker blocked in put() re-checks for stop() this often.
_STOP_CHECK_S = 0.05
# stop(): how long workers get to finish the element in hand before SIGTERM, then before SIGKILL.
_STOP_GRACE_S = 0.5
_TERM_GRACE_S = 0.5


@dataclass(frozen=True)
class WorkerInfo:
    """What ``pyfastq.worker_info()`` tells a worker about itself."""

    index: int  # 0 .. num_workers - 1
    num_workers: int
    seed: int  # this worker's seed, from the Producer's base seed and the index
    mode: str  # "thread" or "process"
    queue: Any  # the queue to put into: the Queue itself, or a QueueWriter in a process


_thread_info = threading.local()
_process_info: WorkerInfo | None = None


def worker_info() -> WorkerInfo | None:
    """Inside a Producer's worker (its ``fn``), who the worker is; None elsewhere.

    >>> def fn(i, n):
    ...     rng = np.random.default_rng(pyfastq.worker_info().seed)
    ...     yield rng.random(100, dtype=np.float32)
    """
    return getattr(_thread_info, "info", None) or _process_info


def _worker_seed(base: int, index: int) -> int:
    # SeedSequence mixes base and index well: neighbouring workers' streams are unrelated.
    state = np.random.SeedSequence(base, spawn_key=(index,)).generate_state(4)
    return int.from_bytes(state.tobytes(), "little")


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
    with cores) that write into the ring of a ``Queue(shared=True)``; ``fn``
    must pickle (a module-level function or a ``functools.partial`` of one).
    Each worker process seeds ``random`` and ``numpy.random`` from ``seed`` and
    its index; a worker that dies (a signal, ``os._exit``) fails the queue
    within a second; if this process dies, the workers exit by themselves.

    ``ordered=True`` delivers in a fixed round-robin of workers (worker 0's
    first element, worker 1's first, ..., worker 0's second, ...; a worker
    that has finished is skipped), so a run is reproducible whatever the
    timing. Workers still make their elements in parallel.
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
        start_method: str | None = None,
    ):
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be an int >= 1, got {workers!r}")
        if mode not in ("thread", "process"):
            raise ValueError(f'mode must be "thread" or "process", got {mode!r}')
        if not callable(fn):
            raise TypeError(f"fn must be callable as fn(worker_index, num_workers), got {fn!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
        if mode == "process":
            if not getattr(queue, "shared", False):
                raise ValueError(
                    'mode="process" needs Queue(..., shared=True): worker processes write into a ring in shared '
                    f"memory, and queue '{queue.name}' ({queue.backend} backend) has none"
                )
            if ordered and workers > 256:
                raise ValueError(f"ordered=True takes at most 256 worker processes, got {workers}")
            start_method = start_method or ("forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn")
            if start_method not in ("forkserver", "spawn"):
                raise ValueError(
                    f'start_method must be "forkserver" or "spawn", got {start_method!r}: a fork of a process '
                    "that has TensorFlow loaded copies its threads' locks mid-use and can hang"
                )
        elif start_method is not None:
            raise ValueError('start_method is for mode="process"')
        self.queue = queue
        self.mode = mode
        self.seed = seed if seed is not None else int.from_bytes(os.urandom(8), "little")
        self.ordered = ordered
        self.errors: list[BaseException] = []
        self._fn = fn
        self._workers = workers
        self._close_on_exit = close_on_exit
        self._start_method = start_method
        self._stop = threading.Event()
        self._started = False
        # thread mode
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._running = 0
        self._turns = _ThreadTurns(workers) if ordered and mode == "thread" else None
        # process mode
        self._procs: list[Any] = []
        self._conns: list[Any] = []
        self._monitor: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> Producer:
        if self._started:
            raise RuntimeError("this Producer was already started")
        self._started = True
        if self.mode == "process":
            self._start_processes()
            return self
        self._running = self._workers
        for i in range(self._workers):
            t = threading.Thread(target=self._run_thread, args=(i,), name=f"pyfastq-{self.queue.name}-{i}", daemon=True)
            self._threads.append(t)
            t.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Stops the workers and joins them; with ``close_on_exit`` the queue is closed too, so no consumer waits forever.

        A worker blocked in put wakes within 50 ms. A worker process still busy
        in ``fn`` after 0.5 s is sent SIGTERM (it unwinds: nothing is
        half-enqueued), and SIGKILL 0.5 s later; a worker killed that way may
        have held a slot, so the queue is failed rather than closed.
        """
        self._stop.set()
        if self.mode == "process":
            self._stop_processes()
        else:
            for t in self._threads:
                t.join(timeout)
        if self._close_on_exit:
            self.queue.close()

    @property
    def running(self) -> bool:
        return any(t.is_alive() for t in self._threads) or any(p.is_alive() for p in self._procs)

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (mode="process"), in worker order."""
        return [p.pid for p in self._procs]

    def __enter__(self) -> Producer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- threads -------------------------------------------------------------------
    def _run_thread(self, index: int) -> None:
        _thread_info.info = WorkerInfo(index, self._workers, _worker_seed(self.seed, index), "thread", self.queue)
        made = 0
        try:
            for element in self._fn(index, self._workers):
                ticket = made * self._workers + index
                if self._turns is not None:
                    while not self._turns.wait(ticket, _STOP_CHECK_S):
                        if self._stop.is_set() or self.queue.closed:
                            return
                if not _put_until_stopped(self.queue.put, element, self._stop):
                    return
                made += 1
                if self._turns is not None:
                    self._turns.passed(ticket)
        except QueueClosed:
            return  # the consumer side ended the queue: nothing left to do
        except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
            self.errors.append(e)
            self.queue.fail(_failure(index, self._workers, e))
            self._stop.set()
            return
        finally:
            if self._turns is not None:
                self._turns.finish(index, made)
            with self._lock:
                self._running -= 1
                last = self._running == 0
        if last and self._close_on_exit and not self._stop.is_set():
            self.queue.close()

    # -- processes -----------------------------------------------------------------
    def _start_processes(self) -> None:
        try:
            pickle.dumps(self._fn)
        except Exception as e:  # noqa: BLE001 - any pickling failure means the same to the user
            raise TypeError(
                f'mode="process" sends fn to each worker by pickle, and {self._fn!r} does not pickle ({e}); '
                "use a module-level function (or a functools.partial of one)"
            ) from None
        ctx = multiprocessing.get_context(self._start_method)
        if self.ordered:
            self.queue._impl.begin_turns(self._workers)
        try:
            for i in range(self._workers):
                parent_end, child_end = ctx.Pipe(duplex=True)
                p = ctx.Process(
                    target=_process_main,
                    args=(child_end, self.queue, self._fn, i, self._workers, self.seed, self.ordered),
                    name=f"pyfastq-{self.queue.name}-{i}",
                    daemon=True,  # at interpreter exit multiprocessing terminates them (they unwind cleanly)
                )
                self._conns.append(parent_end)
                p.start()
                child_end.close()  # so that the worker's death reads as EOF here
                self._procs.append(p)
        except BaseException:
            self._stop.set()  # nothing half-started: the workers already running are stopped
            self._stop_processes()
            raise
        self._monitor = threading.Thread(target=self._watch, name=f"pyfastq-{self.queue.name}-monitor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        """Reads the workers' reports and watches their sentinels: a death is reported at once."""
        finished: dict[int, str] = {}  # index -> "done" | "error" | "died"
        by_conn = {c: i for i, c in enumerate(self._conns)}
        by_sentinel = {p.sentinel: i for i, p in enumerate(self._procs)}
        while len(finished) < self._workers:
            ready = wait_for([c for c, i in by_conn.items() if i not in finished] +
                             [s for s, i in by_sentinel.items() if i not in finished])
            for obj in ready:
                if obj in by_conn:
                    i = by_conn[obj]
                    if i not in finished:
                        self._read_report(i, finished)
                elif by_sentinel[obj] not in finished:
                    i = by_sentinel[obj]
                    # Its last report was sent before it exited: read that first.
                    while i not in finished and self._conns[i].poll(0):
                        self._read_report(i, finished)
                    if i not in finished:
                        self._died(i)
                        finished[i] = "died"
        if self._close_on_exit and not self._stop.is_set() and all(v == "done" for v in finished.values()):
            self.queue.close()

    def _read_report(self, i: int, finished: dict) -> None:
        try:
            kind, payload = self._conns[i].recv()
        except (EOFError, OSError):
            self._procs[i].join(1.0)  # the pipe closes as the process exits
            self._died(i)
            finished[i] = "died"
            return
        if kind == "error":
            text, exc_bytes = payload
            try:
                exc = pickle.loads(exc_bytes) if exc_bytes else RuntimeError(text)
            except Exception:  # noqa: BLE001 - an exception that does not unpickle still gets reported
                exc = RuntimeError(text)
            self.errors.append(exc)
            self._stop.set()
        finished[i] = kind

    def _died(self, i: int) -> None:
        p = self._procs[i]
        p.join(1.0)
        if self._stop.is_set():
            return  # stopped on purpose; _stop_processes decides what that means for the queue
        code = p.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            try:
                how += f" (killed by {signal.Signals(-code).name})"
            except ValueError:
                pass
        message = (
            f"pyfastq producer worker {i} of {self._workers} (process {p.pid}) died with {how} before it finished; "
            "an element it was putting may be lost"
        )
        if code == 1:
            message += " (a worker that cannot import fn's module, or the main module, exits so: its traceback is on stderr)"
        self.errors.append(RuntimeError(message))
        self.queue.fail(message)

    def _stop_processes(self) -> None:
        for c in self._conns:
            try:
                c.send(("stop", None))
            except (OSError, ValueError):
                pass  # that worker has gone already
        killed = []
        deadline = time.monotonic() + _STOP_GRACE_S
        for p in self._procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self._procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker raises inside fn or put and unwinds
        deadline = time.monotonic() + _TERM_GRACE_S
        for i, p in enumerate(self._procs):
            p.join(max(0.0, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
                p.join()
                killed.append(i)
        if self._monitor is not None:
            self._monitor.join(2.0)
        for c in self._conns:
            c.close()
        if killed:
            self.queue.fail(
                f"pyfastq producer workers {killed} of {self._workers} did not stop within "
                f"{_STOP_GRACE_S + _TERM_GRACE_S:.1f} s and were killed; a slot they held may be lost"
            )


def _failure(index: int, workers: int, e: BaseException, where: str = "") -> str:
    """What consumers see of a worker's exception: who raised what, and its traceback."""
    text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
    return f"pyfastq producer worker {index} of {workers}{where} raised {type(e).__name__}: {e}\n{text}"


def _put_until_stopped(put: Callable[..., None], element: Any, stop: threading.Event, *args: Any) -> bool:
    """put(element, timeout, *args) in short slices until it succeeds (True) or stop is set (False)."""
    while True:
        if stop.is_set():
            return False
        try:
            put(element, _STOP_CHECK_S, *args)
            return True
        except TimeoutError:
            continue


class _Stopped(BaseException):
    """Raised in a worker process by SIGTERM: stop() asked it to end now."""


def _raise_stopped(signum, frame):
    raise _Stopped()


def _process_main(conn, queue, fn, index: int, workers: int, base_seed: int, ordered: bool) -> None:
    """A worker process: puts what fn yields into the shared ring; reports ("done"|"error", ...) on conn."""
    global _process_info
    # Ctrl-C goes to the whole process group: the trainer decides, and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_stopped)
    seed = _worker_seed(base_seed, index)
    random.seed(seed)
    np.random.seed(np.frombuffer(seed.to_bytes(16, "little"), np.uint32))
    _process_info = WorkerInfo(index, workers, seed, "process", queue)
    stop = threading.Event()
    threading.Thread(target=_watch_trainer, args=(conn, stop), name="pyfastq-watchdog", daemon=True).start()

    impl, layout = queue._impl, queue._layout
    made = 0
    try:
        for element in fn(index, workers):
            flat = layout.flatten(element)
            ticket = made * workers + index if ordered else -1
            if not _put_until_stopped(impl.put, flat, stop, ticket):
                break
            made += 1
    except (QueueClosed, _Stopped):
        pass  # the queue ended, or stop() asked: nothing to report but that we are done
    except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
        message = _failure(index, workers, e, f" (process {os.getpid()})")
        queue.fail(message)  # straight into the ring: consumers see it now
        try:
            exc_bytes = pickle.dumps(e)
        except Exception:  # noqa: BLE001
            exc_bytes = None
        _report(conn, ("error", (message, exc_bytes)))
        return
    finally:
        if ordered:
            impl.finish_turns(index, made)
    _report(conn, ("done", made))


def _report(conn, message) -> None:
    try:
        conn.send(message)
    except (OSError, ValueError):
        pass  # the trainer has gone; the watchdog ends us


def _watch_trainer(conn, stop: threading.Event) -> None:
    """Worker process: sets stop on the trainer's word; exits at once if the trainer dies."""
    parent = multiprocessing.parent_process()
    watched = [conn] + ([parent.sentinel] if parent is not None else [])
    while True:
        for obj in wait_for(watched):
            if obj is conn:
                try:
                    conn.recv()  # the only message the trainer sends is "stop"
                    stop.set()
                    continue
                except (EOFError, OSError):
                    pass
            # The trainer is gone: nobody will consume what we make.
            sys.stderr.flush()
            os._exit(3)
