"""Behaviour seen from a separate interpreter: exit with blocked producers, version refusal."""

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

import psutil
import pytest

from support import CHILD_ENV, START_BUDGET_S, read_line, shm_segments, start_child, still_running

# From main's return to the end of the process: interpreter teardown, TF's included, on a busy machine.
EXIT_BUDGET_S = 20

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="signals, process sentinels and /dev/shm of Linux")


def run(script):
    """Runs a script in a fresh interpreter, to its end."""
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True, text=True, timeout=START_BUDGET_S, env=CHILD_ENV, cwd=tempfile.gettempdir(),
    )


@pytest.mark.parametrize("daemon", [False, True], ids=["threads", "daemon-threads"])
def test_interpreter_exits_while_producers_are_blocked(backend, daemon):
    # Daemon threads are still blocked (then woken by the exit hook) when the interpreter finalizes, and
    # CPython ends a daemon thread that wants the GIL back then with pthread_exit: that must end the thread,
    # not abort the process (as a forced unwind through a noexcept GIL guard did).
    proc = run(f"""
        import threading, time, numpy as np, tensorflow as tf, pyfastq
        q = pyfastq.Queue(tf.TensorSpec([4], tf.float32), capacity=2, backend={backend!r})
        def put():
            q.put(np.zeros(4, np.float32))
        def put_many():
            q.put_many(np.zeros([2, 4], np.float32))
        def reserve():
            with q.reserve() as view:
                view[:] = 0
        def produce(call):
            try:
                while True:
                    call()
            except pyfastq.QueueClosed:
                pass
        threads = [threading.Thread(target=produce, args=(c,), daemon={daemon!r}) for c in (put, put_many, reserve)]
        for t in threads:
            t.start()
        while q.stats()["put_waiters"] < 3:  # all three wait for room
            time.sleep(0.01)
        print("blocked", flush=True)
        print(time.monotonic(), flush=True)
    """)
    assert proc.returncode == 0, proc.stderr
    assert "terminate called" not in proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == "blocked"
    # From the end of the script to the end of the process: prompt, not a hang.
    assert time.monotonic() - float(lines[1]) < EXIT_BUDGET_S


WAITING_AT_EXIT = """
import sys, threading, time, numpy as np, tensorflow as tf, pyfastq


def main(how, kind, backend):
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4, backend=backend)

    def consume():
        try:
            if how == "dataset":
                for _ in q.dataset():
                    pass
            else:
                q.dequeue()
            print("ended with no error", flush=True)
        except tf.errors.OpError as e:
            print("ended with", type(e).__name__, flush=True)

    threading.Thread(target=consume, daemon=kind == "daemon thread").start()
    while q.stats()["get_waiters"] == 0:
        time.sleep(0.005)
    print("ready", flush=True)  # and main returns, with the dequeue waiting for data that will never come


main(*sys.argv[1:])
"""


@pytest.mark.parametrize("kind", ["thread", "daemon thread"])
@pytest.mark.parametrize("how", ["eager", "dataset"])
def test_interpreter_exits_while_a_dequeue_waits(backend, how, kind, tmp_path, leftovers):
    # The exit hook cancels every open queue before the interpreter joins its threads: a thread's dequeue
    # ends, and the interpreter can join it; a daemon thread's ends or is still ending as it finalizes.
    script = tmp_path / "waiting_at_exit.py"
    script.write_text(WAITING_AT_EXIT)
    with open(tmp_path / "stderr", "w+") as stderr:
        proc = start_child(script, how, kind, backend, cwd=tmp_path, stderr=stderr)
        leftovers.append(proc)
        assert read_line(proc) == "ready"
        ready = time.monotonic()
        try:
            # A generous bound: interpreter teardown on a busy machine. Without the exit hook a thread's
            # dequeue would wait forever.
            proc.wait(EXIT_BUDGET_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the interpreter did not exit within {EXIT_BUDGET_S} s of main's return")
        exited = time.monotonic() - ready
        stderr.seek(0)
        errors = stderr.read()
    assert proc.returncode == 0, errors
    assert "terminate called" not in errors
    assert exited < EXIT_BUDGET_S
    rest = proc.stdout.read().split("\n")
    if kind == "thread":  # joined at exit: it saw its dequeue end
        cancelled = "CancelledError" if backend == "native" else "UnknownError"
        assert rest[0] == f"ended with {cancelled}", rest


def test_native_refuses_another_tensorflow(native):
    proc = run("""
        import warnings, tensorflow as tf
        import pyfastq._build_info as info
        info.TF_VERSION = "0.0.0"   # as if built against another TF
        import pyfastq
        why = pyfastq.native_unavailable()
        print("WHY", why)
        try:
            pyfastq.Queue(tf.TensorSpec([1], tf.float32), backend="native")
        except ImportError as e:
            print("NATIVE-REFUSED", e)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            q = pyfastq.Queue(tf.TensorSpec([1], tf.float32))
            q2 = pyfastq.Queue(tf.TensorSpec([1], tf.float32))
        print("AUTO", q.backend, q2.backend, len([w for w in caught if "pyfastq" in str(w.message)]))
    """)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "built against TensorFlow 0.0.0" in out and "rebuild" in out
    assert "NATIVE-REFUSED" in out
    assert "AUTO python python 1" in out  # falls back, warning once


BLOCKED_PUT = """
import sys, threading, time, numpy as np, tensorflow as tf, pyfastq
q = pyfastq.Queue(tf.TensorSpec([4], tf.float32), capacity=1, backend=sys.argv[1])
q.put(np.zeros(4, np.float32))

def announce():
    while q.stats()["put_waiters"] == 0:
        time.sleep(0.005)
    print("blocking", flush=True)

threading.Thread(target=announce, daemon=True).start()
try:
    q.put(np.zeros(4, np.float32))
except KeyboardInterrupt:
    print("interrupted", flush=True)
"""


@linux_only
def test_ctrl_c_interrupts_a_blocked_put(backend, tmp_path, leftovers):
    script = tmp_path / "blocked_put.py"
    script.write_text(BLOCKED_PUT)
    proc = start_child(script, backend, cwd=tmp_path)
    leftovers.append(proc)
    assert read_line(proc) == "blocking"  # inside the put
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    assert read_line(proc) == "interrupted"
    assert time.monotonic() - start < 2.0  # to the KeyboardInterrupt; interpreter teardown is not timed


IN_A_FINALIZER = """
import sys, time, weakref, numpy as np, tensorflow as tf, pyfastq
q = pyfastq.Queue(tf.TensorSpec([4], tf.float32), capacity=1)  # takes over SIGINT

def finalize(*_):
    print("finalizing", flush=True)
    time.sleep(1.0)  # Ctrl-C comes in here, where Python would print it as "Exception ignored" and go on
    print("finalized", flush=True)

class Finalized:
    def __del__(self):
        finalize()

class Referenced:
    pass

try:
    if sys.argv[1] == "__del__":
        x = Finalized()
    else:
        x = Referenced()
        ref = weakref.ref(x, finalize)
    del x
    print("went on", flush=True)
    time.sleep(60)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
"""


@linux_only
@pytest.mark.parametrize("finalizer", ["__del__", "weakref callback"])
def test_ctrl_c_inside_a_finalizer_is_not_lost(native, finalizer, tmp_path, leftovers):
    """TF's objects have finalizers the gc runs at any moment: Ctrl-C in one must still reach the main thread."""
    script = tmp_path / "in_a_finalizer.py"
    script.write_text(IN_A_FINALIZER)
    proc = start_child(script, finalizer, cwd=tmp_path)
    leftovers.append(proc)
    assert read_line(proc) == "finalizing"
    time.sleep(0.3)  # inside the finalizer's sleep
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    lines = []
    while not lines or lines[-1] != "KeyboardInterrupt":
        lines.append(read_line(proc, timeout=max(0.0, 2.0 - (time.monotonic() - start))))
    if finalizer == "__del__":
        assert lines[0] == "finalized", lines  # a __del__ is left to finish, then interrupted
    assert time.monotonic() - start < 2.0


# -- process producers: the trainer dying or interrupted ------------------------------------

TRAINER = """
import sys, threading, time
import numpy as np, tensorflow as tf, pyfastq
from _workers import forever, python_heavy, sleeps_in_fn

def announce_wait(q):
    while q.stats()["get_waiters"] == 0:
        time.sleep(0.005)
    print("ready", flush=True)  # the dataset waits for data

def main(how):
    # how: idle: workers blocked on a full queue; consume: busy workers; starve: workers stuck in fn
    spec = tf.TensorSpec([4], tf.float32) if how == "consume" else tf.TensorSpec([], tf.int64)
    fn = {"idle": forever, "consume": python_heavy, "starve": sleeps_in_fn}[how]
    q = pyfastq.Queue(spec, capacity=4, shared=True)
    with pyfastq.Producer(q, fn, workers=2, mode="process") as p:
        while q.size() < (2 if how == "starve" else 4):
            time.sleep(0.01)
        print(" ".join(map(str, p.pids)), flush=True)
        if how == "idle":
            print("ready", flush=True)
        else:
            batches = iter(q.dataset(batch_size=2))  # built and traced before "ready"
            if how == "consume":
                next(batches)
                print("ready", flush=True)  # data flows
            else:
                threading.Thread(target=announce_wait, args=(q,), daemon=True).start()
            for batch in batches:
                pass
        time.sleep(3600)


if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except (KeyboardInterrupt, tf.errors.CancelledError) as e:
        print("stopped by", type(e).__name__, flush=True)  # the with block has stopped the workers
        sys.exit(1)
"""


def start_trainer(tmp_path, how, leftovers):
    """Starts TRAINER; returns once it is ready, with its Popen, its workers' pids and its helper processes' pids."""
    script = tmp_path / "trainer.py"
    script.write_text(TRAINER)
    trainer = start_child(script, how, cwd=tmp_path, start_new_session=True)
    leftovers.append(trainer)
    pids = [int(p) for p in read_line(trainer).split()]
    assert len(pids) == 2, "the trainer did not start its workers"
    children = psutil.Process(trainer.pid).children(recursive=True)  # workers, forkserver, resource tracker
    leftovers.extend(children)
    helpers = [c.pid for c in children if c.pid not in pids]
    assert read_line(trainer) == "ready"
    return trainer, pids, helpers


@linux_only
def test_sigkill_of_the_trainer_ends_its_workers_and_leaves_no_segment(native, tmp_path, leftovers):
    before = shm_segments()
    trainer, workers, helpers = start_trainer(tmp_path, "idle", leftovers)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(10)
    assert still_running(workers + helpers, 5.0) == []
    assert shm_segments() == before


@linux_only
@pytest.mark.parametrize("to,how", [("trainer", "consume"), ("process group", "consume"), ("trainer", "starve")])
def test_ctrl_c_in_the_trainer_stops_everything_within_two_seconds(native, tmp_path, to, how, leftovers):
    """consume: data flows, workers busy in Python; starve: the trainer waits in a dequeue, workers stuck in fn."""
    trainer, workers, helpers = start_trainer(tmp_path, how, leftovers)
    if how == "consume":
        time.sleep(0.3)  # well into the loop, workers busy in Python
    start = time.monotonic()
    if to == "trainer":
        trainer.send_signal(signal.SIGINT)
    else:
        os.killpg(trainer.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    # KeyboardInterrupt (or, starved, the dequeue's CancelledError) ended the trainer's with block.
    assert read_line(trainer).startswith("stopped by")
    assert still_running(workers, 2.0 - (time.monotonic() - start)) == []
    assert time.monotonic() - start < 2.0  # to workers gone and the with block left; teardown is not timed
    assert trainer.wait(START_BUDGET_S) == 1
    assert still_running(helpers, 5.0) == []


STARVED = """
import sys, threading, time, numpy as np, tensorflow as tf, pyfastq


def main(how, backend):
    # In a function: its dataset iterator goes before interpreter exit. A python-backend iterator torn
    # down during finalization can wait forever for a tf.data thread that needs the GIL for numpy_function.
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4, backend=backend)

    @tf.function
    def step():
        return q.dequeue_many(2)

    it = iter(q.dataset()) if how == "dataset" else None
    if how == "tf.function":
        step.get_concrete_function()  # traced now, so what follows "waiting" is the wait itself

    def announce():
        while q.stats()["get_waiters"] == 0:
            time.sleep(0.005)
        print("waiting", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    try:
        if how == "dataset":
            next(it)
        elif how == "tf.function":
            step()
        else:
            q.dequeue()
    except KeyboardInterrupt:
        print("caught KeyboardInterrupt", flush=True)
    except tf.errors.OpError as e:
        print("caught", type(e).__name__, " ".join(e.message.split()), flush=True)  # on one line


main(*sys.argv[1:])
"""


@linux_only
@pytest.mark.parametrize("how", ["eager", "tf.function", "dataset"])
def test_ctrl_c_ends_a_dequeue_waiting_for_data(backend, how, tmp_path, leftovers):
    script = tmp_path / "starved.py"
    script.write_text(STARVED)
    proc = start_child(script, how, backend, cwd=tmp_path)
    leftovers.append(proc)
    assert read_line(proc) == "waiting"  # inside the dequeue, which no data will end
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out = read_line(proc)
    # To the dequeue's end (interpreter teardown, seconds on a busy machine, is not timed).
    # Without pyfastq's handler it would wait for data forever.
    assert time.monotonic() - start < 2.0
    if how == "eager" and backend == "python":
        assert "caught KeyboardInterrupt" in out  # a plain Python wait: Python's own KeyboardInterrupt
    else:
        expected = "CancelledError" if backend == "native" else "UnknownError"
        # The dequeue's error; or, if the main thread was still in Python code when the signal came
        # (a loaded machine), the KeyboardInterrupt Python raises there.
        by_the_op = f"caught {expected}" in out and "interrupted by Ctrl-C (SIGINT)" in out
        assert by_the_op or "caught KeyboardInterrupt" in out, out
