"""pyfastq.Producer in thread mode: delivery, close on exit, errors, stop; the arguments of every mode."""

import sys
import time

import numpy as np
import pytest
import tensorflow as tf

import pyfastq

from support import error_class

SPEC = tf.TensorSpec([], tf.int64)


def counting(total):
    def fn(worker, workers):
        for k in range(worker, total, workers):
            yield np.int64(k)

    return fn


def test_delivers_everything_and_closes(backend):
    q = pyfastq.Queue(SPEC, capacity=8, backend=backend)
    with pyfastq.Producer(q, counting(200), workers=3):
        got = sorted(int(x) for x in q.dataset())
    assert got == list(range(200))
    assert q.closed


def test_a_worker_exception_reaches_the_consumer(backend):
    q = pyfastq.Queue(SPEC, capacity=8, backend=backend)

    def fn(worker, workers):
        yield np.int64(1)
        if worker == 1:
            raise KeyError("missing field 'label'")
        yield np.int64(2)

    with pyfastq.Producer(q, fn, workers=2) as p:
        with pytest.raises(error_class(backend, tf.errors.AbortedError)) as info:
            for _ in range(10):
                q.dequeue()
    message = str(info.value)
    assert "worker 1 of 2" in message and "KeyError" in message and "missing field 'label'" in message
    assert "Traceback" in message
    assert len(p.errors) == 1 and isinstance(p.errors[0], KeyError)


def test_stop_wakes_a_worker_blocked_on_a_full_queue(backend):
    q = pyfastq.Queue(SPEC, capacity=2, backend=backend)
    p = pyfastq.Producer(q, counting(10**9), workers=2).start()
    deadline = time.monotonic() + 5
    while q.size() < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert q.size() == 2 and p.running  # full, workers blocked in put
    start = time.monotonic()
    p.stop()
    assert time.monotonic() - start < 1.0
    assert not p.running
    assert q.closed  # close_on_exit: no consumer waits forever
    assert [int(x) for x in q.dataset()] != []


def test_close_on_exit_false_leaves_queue_open(backend):
    q = pyfastq.Queue(SPEC, capacity=16, backend=backend)
    with pyfastq.Producer(q, counting(5), close_on_exit=False) as p:
        while p.running:
            time.sleep(0.01)
    assert not q.closed and q.size() == 5


def test_consumer_closing_the_queue_ends_workers_quietly(backend):
    q = pyfastq.Queue(SPEC, capacity=2, backend=backend)
    p = pyfastq.Producer(q, counting(10**9), workers=2).start()
    q.close(cancel=True)
    p.stop(timeout=2)
    assert not p.running and p.errors == []


def test_process_mode_needs_a_shared_queue(backend):
    q = pyfastq.Queue(SPEC, backend=backend)
    with pytest.raises(ValueError, match="shared"):
        pyfastq.Producer(q, counting(5), mode="process")


@pytest.mark.parametrize("kwargs", [dict(workers=0), dict(mode="fiber")])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        pyfastq.Producer(pyfastq.Queue(SPEC, backend="python"), counting(5), **kwargs)


def test_started_twice_is_an_error():
    q = pyfastq.Queue(SPEC, backend="python")
    p = pyfastq.Producer(q, counting(1)).start()
    with pytest.raises(RuntimeError):
        p.start()
    p.stop()
    assert not p.running


def test_ray_options_are_for_the_ray_mode():
    with pytest.raises(ValueError, match="ray_options"):
        pyfastq.Producer(pyfastq.Queue(SPEC, backend="python"), counting(5), ray_options={"num_cpus": 1})


def test_ray_mode_without_ray_is_an_import_error_saying_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed: import ray fails
    with pytest.raises(ImportError, match=r'mode="ray" needs Ray.*pip install "pyfastq\[ray\]"'):
        pyfastq.Producer(pyfastq.Queue(SPEC, backend="python"), counting(5), mode="ray")


class _Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not this one")


def test_a_worker_exception_reaches_the_trainer_whole_or_as_its_message():
    """How process workers and Ray actors report what fn raised: pickled, or as text if it does not pickle."""
    from pyfastq._worker import failure_report, reported_exception

    exc = reported_exception(failure_report(KeyError("k"), "worker 0 raised KeyError"))
    assert type(exc) is KeyError and exc.args == ("k",)
    exc = reported_exception(failure_report(_Unpicklable("x"), "worker 1 raised _Unpicklable"))
    assert type(exc) is RuntimeError and exc.args == ("worker 1 raised _Unpicklable",)
