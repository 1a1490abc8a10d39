"""Helpers the tests share; conftest.py holds only fixtures.

Budgets: a child interpreter that imports TensorFlow may take many seconds to
start on a busy machine, so waits for a child to be ready get START_BUDGET_S.
The product's own bounds (death seen within 1 s, Ctrl-C within 2 s) are timed
by the tests themselves, from a moment the child has said it is ready.
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time

import numpy as np
import psutil
import tensorflow as tf

import pyfastq
from pyfastq._sources import Sampler

START_BUDGET_S = 120.0
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
# A child imports the same pyfastq as the tests (installed, or a built checkout), and runs
# outside the checkout so that a source tree without its compiled parts cannot shadow it.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pyfastq.__file__)))
CHILD_ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": os.pathsep.join([PACKAGE_ROOT, TESTS_DIR])}


def f32(*shape, value=0.0):
    return np.full(shape, value, np.float32)


def session_dequeue_after_a_timeout(q, element):
    """A TF1 session's dequeue of q times out taking nothing; then element is put: what the next run returns."""
    graph = tf.Graph()
    with graph.as_default():
        x = q.dequeue()
        with tf.compat.v1.Session(graph=graph) as sess:
            size = q.size()
            try:
                sess.run(x, options=tf.compat.v1.RunOptions(timeout_in_ms=200))
            except tf.errors.DeadlineExceededError:
                pass
            else:
                raise AssertionError("the dequeue did not time out")
            assert q.size() == size  # the step that timed out took nothing
            q.put(element)
            return sess.run(x)


def error_class(backend, native_error):
    """The error a consumer sees: the python backend's numpy_function turns Aborted/Cancelled into UnknownError."""
    return native_error if backend == "native" else tf.errors.UnknownError


def wait_until(predicate, what: str, timeout: float = START_BUDGET_S, interval: float = 0.005) -> None:
    """Waits for predicate() to hold; fails the test, naming `what`, if it does not within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"gave up after {timeout:g} s waiting for {what}"
        time.sleep(interval)


def read_line(proc: subprocess.Popen, timeout: float = START_BUDGET_S) -> str:
    """The next line of a child's stdout (text mode), stripped; fails the test if none comes within `timeout`."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        raise AssertionError(f"the child printed nothing within {timeout:g} s") from None
    assert line, f"the child ended (exit code {proc.wait(10)}) before printing a line"
    return line.strip()


def start_child(script_path, *args, cwd, env=None, **popen) -> subprocess.Popen:
    """Starts `python script_path args...` with its stdout piped, importing the pyfastq under test (env: added)."""
    command = [sys.executable, str(script_path), *map(str, args)]
    return subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env={**CHILD_ENV, **(env or {})}, cwd=cwd,
                            **popen)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def still_running(pids, timeout: float) -> list[int]:
    """The pids of `pids` that have not ended within `timeout` seconds (at once if timeout <= 0)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(gone(p) for p in pids):
        time.sleep(0.02)
    return [p for p in pids if not gone(p)]


def cpu_seconds_in_one_second(pid: int) -> float:
    """User + system CPU time process `pid` spends over the next second."""
    proc = psutil.Process(pid)
    before = proc.cpu_times()
    time.sleep(1.0)
    after = proc.cpu_times()
    return (after.user - before.user) + (after.system - before.system)


def shm_segments() -> set[str]:
    """pyfastq's POSIX shared-memory segments that exist now."""
    return {n for n in os.listdir("/dev/shm") if n.startswith("pyfastq")}


def taken(q) -> list[int]:
    """Every element of a queue of int64 scalars, in the order taken, until it is closed and drained."""
    return [int(x) for x in q.dataset()]


def sampler_order(n: int, **sampling) -> list[int]:
    """The source indices a run of Sampler(n, **sampling) reads, position by position."""
    s = Sampler(n, **sampling)
    return [s.index(p) for p in range(s.total)]
