"""Producer(mode="process"): worker processes that write straight into a shared ring.

The trainer's side (``WorkerProcesses``: start, watch, stop) and the worker's
side (``worker_main``). No TensorFlow here: worker processes import this.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import pickle
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait as wait_for
from typing import Any

import numpy as np

from ._errors import QueueClosed
from ._worker import WorkerInfo, failure_message, put_until_stopped, set_process_info, worker_seed

# stop(): how long workers get to finish the element in hand before SIGTERM, then before SIGKILL.
STOP_GRACE_S = 0.5
TERM_GRACE_S = 0.5


def default_start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


def check_picklable(fn: Callable) -> None:
    try:
        pickle.dumps(fn)
    except Exception as e:  # noqa: BLE001 - any pickling failure means the same to the user
        raise TypeError(
            f'mode="process" sends fn to each worker by pickle, and {fn!r} does not pickle ({e}); '
            "use a module-level function (or a functools.partial of one)"
        ) from None


class WorkerProcesses:
    """The trainer's side: starts the worker processes, reads their reports, watches their deaths, stops them.

    A worker's exception or death is appended to ``errors`` and fails the
    queue; when every worker has finished normally, ``on_all_done`` runs.
    """

    def __init__(
        self,
        queue: Any,
        fn: Callable[[int, int], Iterable[Any]],
        workers: int,
        seed: int,
        ordered: bool,
        start_method: str,
        errors: list[BaseException],
        stopping: threading.Event,
        on_all_done: Callable[[], None],
    ):
        self._queue = queue
        self._fn = fn
        self._workers = workers
        self._seed = seed
        self._ordered = ordered
        self._start_method = start_method
        self._errors = errors
        self._stopping = stopping
        self._on_all_done = on_all_done
        self.procs: list[Any] = []
        self._conns: list[Any] = []
        self._monitor: threading.Thread | None = None

    def start(self) -> None:
        check_picklable(self._fn)
        ctx = multiprocessing.get_context(self._start_method)
        if self._ordered:
            self._queue._impl.begin_turns(self._workers)
        try:
            for i in range(self._workers):
                parent_end, child_end = ctx.Pipe(duplex=True)
                p = ctx.Process(
                    target=worker_main,
                    args=(child_end, self._queue, self._fn, i, self._workers, self._seed, self._ordered),
                    name=f"pyfastq-{self._queue.name}-{i}",
                    daemon=True,  # at interpreter exit multiprocessing terminates them (they unwind cleanly)
                )
                self._conns.append(parent_end)
                p.start()
                child_end.close()  # so that the worker's death reads as EOF here
                self.procs.append(p)
        except BaseException:
            self._stopping.set()  # nothing half-started: the workers already running are stopped
            self.stop()
            raise
        self._monitor = threading.Thread(target=self._watch, name=f"pyfastq-{self._queue.name}-monitor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        """Reads the workers' reports and watches their sentinels: a death is reported at once."""
        finished: dict[int, str] = {}  # index -> "done" | "error" | "died"
        by_conn = {c: i for i, c in enumerate(self._conns)}
        by_sentinel = {p.sentinel: i for i, p in enumerate(self.procs)}
        while len(finished) < self._workers:
            ready = wait_for(
                [c for c, i in by_conn.items() if i not in finished]
                + [s for s, i in by_sentinel.items() if i not in finished]
            )
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
        if not self._stopping.is_set() and all(v == "done" for v in finished.values()):
            self._on_all_done()

    def _read_report(self, i: int, finished: dict) -> None:
        try:
            kind, payload = self._conns[i].recv()
        except (EOFError, OSError):
            self.procs[i].join(1.0)  # the pipe closes as the process exits
            self._died(i)
            finished[i] = "died"
            return
        if kind == "error":
            text, exc_bytes = payload
            try:
                exc = pickle.loads(exc_bytes) if exc_bytes else RuntimeError(text)
            except Exception:  # noqa: BLE001 - an exception that does not unpickle still gets reported
                exc = RuntimeError(text)
            self._errors.append(exc)
            self._stopping.set()
        finished[i] = kind

    def _died(self, i: int) -> None:
        p = self.procs[i]
        p.join(1.0)
        if self._stopping.is_set():
            return  # stopped on purpose; stop() decides what that means for the queue
        code = p.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):  # a signal number Python has no name for
                how += f" (killed by {signal.Signals(-code).name})"
        message = (
            f"pyfastq producer worker {i} of {self._workers} (process {p.pid}) died with {how} before it finished; "
            "an element it was putting may be lost"
        )
        if code == 1:
            message += (
                " (a worker that cannot import fn's module, or the main module, exits so: its traceback is on stderr)"
            )
        self._errors.append(RuntimeError(message))
        self._queue.fail(message)

    def stop(self) -> None:
        """Asks every worker to stop; SIGTERM after STOP_GRACE_S, SIGKILL (and a failed queue) TERM_GRACE_S later."""
        for c in self._conns:
            with contextlib.suppress(OSError, ValueError):  # that worker has gone already
                c.send(("stop", None))
        killed = []
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.terminate()  # SIGTERM: the worker raises inside fn or put and unwinds
        deadline = time.monotonic() + TERM_GRACE_S
        for i, p in enumerate(self.procs):
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
            self._queue.fail(
                f"pyfastq producer workers {killed} of {self._workers} did not stop within "
                f"{STOP_GRACE_S + TERM_GRACE_S:.1f} s and were killed; a slot they held may be lost"
            )


# -- the worker's side ---------------------------------------------------------------------


class _Stopped(BaseException):
    """Raised in a worker process by SIGTERM: stop() asked it to end now."""


def _raise_stopped(signum, frame):
    raise _Stopped()


def worker_main(conn, queue, fn, index: int, workers: int, base_seed: int, ordered: bool) -> None:
    """A worker process: puts what fn yields into the shared ring; reports ("done"|"error", ...) on conn."""
    # Ctrl-C goes to the whole process group: the trainer decides, and stops us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _raise_stopped)
    seed = worker_seed(base_seed, index)
    random.seed(seed)
    np.random.seed(np.frombuffer(seed.to_bytes(16, "little"), np.uint32))
    set_process_info(WorkerInfo(index, workers, seed, "process", queue))
    stop = threading.Event()
    threading.Thread(target=_watch_trainer, args=(conn, stop), name="pyfastq-watchdog", daemon=True).start()

    impl, layout = queue._impl, queue._layout
    made = 0
    try:
        for element in fn(index, workers):
            flat = layout.flatten(element)
            ticket = made * workers + index if ordered else None
            if not put_until_stopped(impl.put, flat, stop, ticket):
                break
            made += 1
    except (QueueClosed, _Stopped):
        pass  # the queue ended, or stop() asked: nothing to report but that we are done
    except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
        message = failure_message(index, workers, e, f" (process {os.getpid()})")
        queue.fail(message)  # straight into the ring: consumers see it now
        try:
            exc_bytes = pickle.dumps(e)
        except Exception:  # noqa: BLE001 - an exception that does not pickle still gets reported, as text
            exc_bytes = None
        _report(conn, ("error", (message, exc_bytes)))
        return
    finally:
        if ordered:
            impl.finish_turns(index, made)
    _report(conn, ("done", made))


def _report(conn, message) -> None:
    with contextlib.suppress(OSError, ValueError):  # the trainer has gone; the watchdog ends us
        conn.send(message)


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
