"""Producer(mode="process"): worker processes that write straight into a shared ring.

The trainer's side (``WorkerProcesses``: start, watch, stop) and the worker's
side (``bootstrap``, ``worker_main``). No TensorFlow here: worker processes
import this.

A worker is a fresh interpreter started with ``subprocess`` (not
multiprocessing's spawn or forkserver, which replay the trainer's main module,
TensorFlow import and all, in every worker, and cannot unpickle a function
defined in ``__main__``). It runs ``bootstrap()``, which imports numpy,
cloudpickle and ``pyfastq._core`` and nothing of the trainer's: fn and its
arguments arrive over a socket, pickled by cloudpickle, so a function from
``__main__`` (a script, ``python -c``, a notebook cell) travels by value and
one from an importable module by reference. The ring's descriptor (and any
other a pickled shared queue needs) is inherited through ``pass_fds``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from multiprocessing.connection import Connection
from multiprocessing.connection import wait as wait_for
from typing import Any

from ._compat import interpreter_flags, spawning_popen
from ._errors import QueueClosed
from ._sources import RingTurns, run_claims
from ._worker import (
    WorkerPool,
    become_worker_process,
    failure_message,
    failure_report,
    put_until_stopped,
    reported_exception,
)

# stop(): how long workers get to finish the element in hand before SIGTERM, then before SIGKILL.
STOP_GRACE_S = 0.5
TERM_GRACE_S = 0.5
# Exit codes of a worker that ends itself.
EXIT_TRAINER_GONE = 3
# Writers the ring can name (its kMaxWriters): worker i is writer i + 1.
MAX_WRITERS = 256

log = logging.getLogger("pyfastq")


class _FdsForChild:
    """Stands in for multiprocessing's spawning Popen while a payload is pickled.

    A shared queue pickles its ring's descriptor as ``multiprocessing.reduction.DupFd``,
    which asks the spawning Popen to hand the descriptor to the child: here it is
    recorded for ``pass_fds``, and the child finds it under the same number.
    """

    def __init__(self):
        self.fds: list[int] = []

    def duplicate_for_child(self, fd: int) -> int:
        self.fds.append(fd)
        return fd

    def DupFd(self, fd: int) -> _InheritedFd:
        return _InheritedFd(fd)


class _InheritedFd:
    """What a DupFd pickled under _FdsForChild becomes in the worker: the descriptor it inherited (pass_fds)."""

    def __init__(self, fd: int):
        self.fd = fd

    def detach(self) -> int:
        return self.fd


def pickle_for_workers(obj: Any, mode: str = "process") -> tuple[bytes, list[int]]:
    """obj pickled as workers receive it (cloudpickle: __main__'s functions by value), and the descriptors it needs.

    Raises TypeError, naming the object, if it cannot be pickled.
    """
    import cloudpickle

    fds = _FdsForChild()
    try:
        with spawning_popen(fds):
            data = cloudpickle.dumps(obj)
    except Exception as e:  # noqa: BLE001 - any pickling failure means the same to the user
        raise TypeError(
            f'mode="{mode}" sends fn to each worker by pickle, and {obj!r:.200} does not pickle '
            f"({type(e).__name__}: {e}); pass what a worker needs as arguments it can pickle, or "
            "make it in fn (a lock, an open file, a TensorFlow object do not pickle)"
        ) from None
    return data, sorted(set(fds.fds))


def _worker_command() -> list[str]:
    """A lean interpreter running bootstrap(), finding pyfastq where this process did; SIGINT ignored from the start."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = (
        "import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); "
        f"import sys; sys.path.insert(0, {root!r}); "
        "from pyfastq._process import bootstrap; bootstrap()"
    )
    return [sys.executable, *interpreter_flags(), "-c", code]


class _Worker:
    """The trainer's handle on one worker process."""

    def __init__(self, proc: subprocess.Popen, conn: Connection):
        self.proc = proc
        self.conn = conn
        self.pid = proc.pid
        self.index = 0  # set by WorkerProcesses: its place in procs
        try:
            self.sentinel: int | None = os.pidfd_open(proc.pid)  # readable once the process has exited
        except (AttributeError, OSError):
            self.sentinel = None  # the conn's EOF tells the death instead

    def alive(self) -> bool:
        return self.proc.poll() is None

    def join(self, timeout: float) -> bool:
        """True once the process has exited; waits at most timeout seconds."""
        try:
            self.proc.wait(max(0.0, timeout))
            return True
        except subprocess.TimeoutExpired:
            return False

    @property
    def exitcode(self) -> int | None:
        return self.proc.poll()

    def close(self) -> None:
        self.conn.close()
        if self.sentinel is not None:
            os.close(self.sentinel)
            self.sentinel = None


class WorkerProcesses(WorkerPool):
    """The trainer's side: starts the worker processes, reads their reports, watches their deaths, stops them.

    Made with WorkerPool's arguments: (queue, fn, workers, seed, ordered, errors, stopping, on_all_done, plan).
    """

    def __init__(self, *wiring: Any):
        super().__init__(*wiring)
        # Pickled once, here, so that what does not pickle is a TypeError before anything starts.
        self._payload, self._fds = pickle_for_workers((self._fn, self._queue, self._plan))
        self.procs: list[_Worker] = []
        self._monitor: threading.Thread | None = None
        self._lock = threading.Lock()  # procs grows (add) while the monitor reads it
        self._finished: dict[int, str] = {}  # index -> "done" | "error" | "died"
        self._retired: set[int] = set()
        self._watching = True
        self.replaced: list[tuple[int, int, float]] = []  # (index, dead pid, monotonic time of the death seen)

    def start(self) -> None:
        if self._ordered:
            # A random-access source's tickets are sampler positions, whichever worker holds them.
            if self._plan is not None:
                self._queue._impl.begin_turns(1, self._plan.start)
            else:
                self._queue._impl.begin_turns(self._workers)
        try:
            # All started first, then all fed: the interpreters start up in parallel.
            with self._lock:
                started = [self._spawn() for _ in range(self._workers)]
            for w in started:
                self._feed(w)
        except BaseException:
            self._stopping.set()  # nothing half-started: the workers already running are stopped
            self.stop()
            raise
        self._monitor = threading.Thread(target=self._watch, name=f"pyfastq-{self._queue.name}-monitor", daemon=True)
        self._monitor.start()

    def _spawn(self, index: int | None = None) -> _Worker:
        """A new worker process, appended to procs or replacing procs[index] (under the lock); fed by _feed."""
        ours, theirs = socket.socketpair()
        with theirs:
            proc = subprocess.Popen([*_worker_command(), str(theirs.fileno())],
                                    pass_fds=[theirs.fileno(), *self._fds], stdin=subprocess.DEVNULL)
        w = _Worker(proc, Connection(ours.detach()))
        if index is None:
            w.index = len(self.procs)
            self.procs.append(w)
        else:
            w.index = index
            self.procs[index] = w
        return w

    def _replace(self, i: int) -> bool:
        """Worker i died: with restarts left, a new process takes its place and the rest of its claim; True if so.

        The ring gets back the slots it held and forgets its puts under way (it was writer i + 1),
        and the claims table says which positions and rows of its claim it had committed.
        """
        if self._stopping.is_set() or self.restarts_left <= 0 or i + 1 >= MAX_WRITERS:
            return False
        dead = self.procs[i]
        if not dead.join(1.0):  # its line closed but it lingers: it must write nothing more before reclaiming
            dead.proc.kill()
            dead.proc.wait()
        self._queue._impl.reclaim_writer(i + 1)
        self._plan.claims.handover(i)
        self.restarts_left -= 1
        self.replaced.append((i, dead.pid, time.monotonic()))
        dead.close()
        with self._lock:
            w = self._spawn(i)
        self._feed(w)
        log.warning("pyfastq: producer worker %d (process %d) of queue '%s' died with exit code %s; replaced by "
                    "process %d (%d restarts left)", i, dead.pid, self._queue.name, dead.exitcode, w.pid,
                    self.restarts_left)
        return True

    def _feed(self, w: _Worker) -> None:
        w.conn.send((sys.path, w.index, max(self._workers, w.index + 1), self._seed, self._ordered))
        w.conn.send_bytes(self._payload)

    def add(self) -> bool:
        """One more worker (a random-access source's, which claims as the others do); False once the run is over."""
        with self._lock:
            if self._stopping.is_set() or self._monitor is None or not self._watching:
                return False
            w = self._spawn()
        self._feed(w)
        return True

    def retire(self) -> bool:
        """Asks the newest working worker to stop claiming: it puts what it has claimed, then finishes."""
        with self._lock:
            working = [w for w in self.procs if w.index not in self._finished and w.index not in self._retired]
            if len(working) <= 1:
                return False
            w = working[-1]
            self._retired.add(w.index)
        with contextlib.suppress(OSError, ValueError):  # it has gone already
            w.conn.send(("retire", None))
        return True

    def working(self) -> int:
        """Workers neither finished nor retiring."""
        with self._lock:
            return sum(1 for w in self.procs if w.index not in self._finished and w.index not in self._retired)

    def _watch(self) -> None:
        """Reads the workers' reports and watches their deaths: a death is reported at once."""
        finished = self._finished
        while True:
            with self._lock:
                procs = list(self.procs)
                if len(finished) == len(procs):
                    self._watching = False  # add() starts no worker now
                    break
            by_conn = {w.conn: w.index for w in procs if w.index not in finished}
            by_sentinel = {w.sentinel: w.index for w in procs if w.sentinel is not None and w.index not in finished}
            # A timeout, so that a worker add() started meanwhile is watched too.
            ready = wait_for([*by_conn, *by_sentinel], timeout=0.1 if self._plan is not None else None)
            for obj in ready:
                i = by_conn[obj] if obj in by_conn else by_sentinel[obj]
                if i in finished:
                    continue
                if obj in by_conn:
                    replaced = self._read_report(i, finished)
                else:
                    # Its last report was sent before it exited: read that first.
                    replaced = False
                    while i not in finished and not replaced and self.procs[i].conn.poll(0):
                        replaced = self._read_report(i, finished)
                    if i not in finished and not replaced:
                        replaced = self._replace(i)
                        if not replaced:
                            self._died(i)
                            finished[i] = "died"
                if replaced:
                    break  # the rest of `ready` may name the dead worker's closed descriptors: wait again
        if not self._stopping.is_set() and all(v == "done" for v in finished.values()):
            self._on_all_done()

    def _read_report(self, i: int, finished: dict) -> bool:
        """Reads worker i's report; True if it had died and was replaced."""
        try:
            kind, payload = self.procs[i].conn.recv()
        except (EOFError, OSError):  # the socket closes as the process exits
            self.procs[i].join(1.0)
            if self._replace(i):
                return True
            self._died(i)
            finished[i] = "died"
            return False
        if kind == "error":
            # The worker failed the queue itself, unless it could not even load fn.
            self._record_failure(reported_exception(payload), payload[0])
        finished[i] = kind
        return False

    def _died(self, i: int) -> None:
        w = self.procs[i]
        w.join(1.0)
        if self._stopping.is_set():
            return  # stopped on purpose; stop() decides what that means for the queue
        code = w.exitcode
        how = f"exit code {code}"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):  # a signal number Python has no name for
                how += f" (killed by {signal.Signals(-code).name})"
        message = self._death_message(
            f"pyfastq producer worker {i} of {self._workers} (process {w.pid}) died with {how} before it finished; "
            "an element it was putting may be lost"
        )
        self._errors.append(RuntimeError(message))
        self._queue.fail(message)

    def running(self) -> bool:
        return any(w.alive() for w in self.procs)

    def stop(self) -> None:
        """Asks the workers to stop; SIGTERM after STOP_GRACE_S, then SIGKILL (failing the queue) TERM_GRACE_S later."""
        for w in self.procs:
            with contextlib.suppress(OSError, ValueError):  # that worker has gone already
                w.conn.send(("stop", None))
        killed = []
        deadline = time.monotonic() + STOP_GRACE_S
        for w in self.procs:
            w.join(deadline - time.monotonic())
        for w in self.procs:
            if w.alive():
                w.proc.terminate()  # SIGTERM: the worker raises inside fn or put and unwinds
        deadline = time.monotonic() + TERM_GRACE_S
        for i, w in enumerate(self.procs):
            if not w.join(deadline - time.monotonic()):
                w.proc.kill()
                w.proc.wait()
                killed.append(i)
        if self._monitor is not None:
            self._monitor.join(2.0)
        for w in self.procs:
            w.close()
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


def bootstrap() -> None:
    """A worker process's entry (see _worker_command): receives fn and the queue from the trainer, then runs them."""
    # SIGINT is ignored already: Ctrl-C goes to the whole process group; the trainer decides, and stops us.
    signal.signal(signal.SIGTERM, _raise_stopped)
    fd = int(sys.argv[1])
    os.set_inheritable(fd, False)  # a process fn starts must not keep the trainer's line open
    conn = Connection(fd)
    try:
        sys_path, index, workers, base_seed, ordered = conn.recv()
        payload = conn.recv_bytes()
    except (EOFError, OSError, _Stopped):
        os._exit(EXIT_TRAINER_GONE)
    sys.path[:] = sys_path  # fn's module, if it travels by reference, imports as in the trainer
    try:
        fn, queue, plan = pickle.loads(payload)
    except _Stopped:
        os._exit(0)
    except BaseException as e:  # noqa: BLE001 - every error must reach the consumer
        _report_failure(conn, e, failure_message(index, workers, e, f" (process {os.getpid()}), loading fn,"))
        return
    worker_main(conn, queue, fn, index, workers, base_seed, ordered, plan)


def worker_main(conn, queue, fn, index: int, workers: int, base_seed: int, ordered: bool, plan: Any = None) -> None:
    """A worker process: puts what fn yields (or, given a plan, the source's items it claims) into the shared ring.

    Reports ("done"|"error", ...) on conn.
    """
    become_worker_process(index, workers, base_seed, "process", queue)
    stop, retire = threading.Event(), threading.Event()
    threading.Thread(target=_watch_trainer, args=(conn, stop, retire), name="pyfastq-watchdog", daemon=True).start()

    impl, layout = queue._impl, queue._layout
    made = 0
    try:
        if plan is not None:
            # The claims table counts what this worker commits; with restarts, the ring knows its slots as its own.
            impl.set_writer(index + 1 if plan.restarts and index + 1 < MAX_WRITERS else 0, plan.claims.table,
                            plan.claims.commits_word(index))
            made = run_claims(fn, plan, queue, stop, RingTurns(impl) if ordered else None, retire, entry=index)
        else:
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
        _report_failure(conn, e, message)
        return
    finally:
        if ordered and plan is None:
            impl.finish_turns(index, made)
    _report(conn, ("done", made))


def _report_failure(conn, e: BaseException, message: str) -> None:
    _report(conn, ("error", failure_report(e, message)))


def _report(conn, message) -> None:
    with contextlib.suppress(OSError, ValueError):  # the trainer has gone; the watchdog ends us
        conn.send(message)


def _watch_trainer(conn, stop: threading.Event, retire: threading.Event) -> None:
    """Worker process: sets stop (or retire) on the trainer's word; exits at once if the trainer dies (conn closes)."""
    while True:
        try:
            kind, _ = conn.recv()  # "stop", or "retire": claim no more, put what is claimed
            (retire if kind == "retire" else stop).set()
        except (EOFError, OSError):
            # The trainer is gone: nobody will consume what we make.
            sys.stderr.flush()
            os._exit(EXIT_TRAINER_GONE)
