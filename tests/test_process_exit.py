"""Behaviour seen from a separate interpreter: exit with blocked producers, version refusal."""

import os
import subprocess
import sys
import tempfile
import textwrap
import time

import pytest

import pyfastq

# The child imports the same pyfastq as these tests (installed, or a built checkout), and runs
# outside the checkout so a source tree without its compiled parts cannot shadow it.
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(pyfastq.__file__)))
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": PACKAGE_ROOT}


def run(script, timeout=120):
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True, timeout=timeout, env=ENV, cwd=tempfile.gettempdir()
    )
    return proc, time.monotonic() - start


def test_interpreter_exits_while_producers_are_blocked(backend):
    proc, _ = run(f"""
        import threading, time, numpy as np, tensorflow as tf, pyfastq
        q = pyfastq.Queue(tf.TensorSpec([4], tf.float32), capacity=2, backend={backend!r})
        def produce():
            try:
                while True:
                    q.put(np.zeros(4, np.float32))
            except pyfastq.QueueClosed:
                pass
        threads = [threading.Thread(target=produce) for _ in range(3)]  # not daemons
        for t in threads:
            t.start()
        while q.size() < 2:
            time.sleep(0.01)
        time.sleep(0.2)
        print("blocked", flush=True)
        print(time.monotonic(), flush=True)
    """)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.split()
    assert lines[0] == "blocked"
    # From the end of the script to the end of the process: prompt, not a hang.
    assert time.monotonic() - float(lines[1]) < 20


def test_native_refuses_another_tensorflow(native):
    proc, _ = run("""
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


@pytest.mark.skipif(sys.platform != "linux", reason="uses SIGINT semantics of Linux")
def test_ctrl_c_interrupts_a_blocked_put(backend):
    import signal

    script = f"""
        import numpy as np, tensorflow as tf, pyfastq
        q = pyfastq.Queue(tf.TensorSpec([4], tf.float32), capacity=1, backend={backend!r})
        q.put(np.zeros(4, np.float32))
        print("blocking", flush=True)
        try:
            q.put(np.zeros(4, np.float32))
        except KeyboardInterrupt:
            print("interrupted", flush=True)
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE, text=True, env=ENV, cwd=tempfile.gettempdir()
    )
    assert proc.stdout.readline().strip() == "blocking"
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    assert "interrupted" in out
