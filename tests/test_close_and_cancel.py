"""What close, cancel and a cancelled step do to puts and dequeues that are waiting, on both backends.

The rules are TF's FIFOQueue's, checked the way TF's own FIFOQueue tests check them:
a put waiting for room when close() comes still completes; close(cancel=True) and
fail() refuse it; a dequeue in a session step that is cancelled (timeout, a failed
op, sess.close()) ends, and takes nothing from the queue.
"""

import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import pyfastq

from support import f32, wait_until

SCALAR = tf.TensorSpec([], tf.float32)
# Generous: the machine may be busy. The product's own bound is far below.
BUDGET_S = 30


class Background:
    """Runs fn on a thread; .result or .error once joined."""

    def __init__(self, fn):
        self.result = self.error = None
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn):
        try:
            self.result = fn()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            self.error = e

    def join(self):
        self._thread.join(BUDGET_S)
        assert not self._thread.is_alive(), "the call did not return"
        return self


def waiting_put(q, call):
    """Starts call() (a put that will find the queue full) and returns once it waits for room."""
    bg = Background(call)
    wait_until(lambda: q.stats()["put_waiters"] > 0 or bg.error is not None, "the put to wait for room")
    return bg


def dequeue_all(q):
    out = []
    while True:
        try:
            out.append(float(q.dequeue()))
        except tf.errors.OutOfRangeError:
            return out


def test_a_put_waiting_for_room_completes_after_close(backend):
    q = pyfastq.Queue(SCALAR, capacity=2, backend=backend)
    q.put(1.0)
    q.put(2.0)
    put = waiting_put(q, lambda: q.put(3.0))
    q.close()
    with pytest.raises(pyfastq.QueueClosed):
        q.put(4.0)  # a put that begins after close is refused
    assert dequeue_all(q) == [1.0, 2.0, 3.0]
    assert put.join().error is None


def test_a_waiting_put_many_puts_every_row_after_close(backend):
    q = pyfastq.Queue(SCALAR, capacity=2, backend=backend)
    q.put(1.0)
    put = waiting_put(q, lambda: q.put_many(np.array([2, 3, 4], np.float32)))
    q.close()
    assert dequeue_all(q) == [1.0, 2.0, 3.0, 4.0]
    assert put.join().error is None


def test_a_waiting_reserve_completes_after_close(backend):
    q = pyfastq.Queue(SCALAR, capacity=1, backend=backend)
    q.put(1.0)

    def reserve():
        with q.reserve() as view:
            view[...] = 2.0

    put = waiting_put(q, reserve)
    q.close()
    assert dequeue_all(q) == [1.0, 2.0]
    assert put.join().error is None


@pytest.mark.parametrize("how", ["cancel", "fail"])
def test_cancel_and_fail_refuse_waiting_puts(backend, how):
    q = pyfastq.Queue(SCALAR, capacity=2, backend=backend)
    q.put(1.0)
    q.put(2.0)
    put = waiting_put(q, lambda: q.put(3.0))
    if how == "cancel":
        q.close(cancel=True)
    else:
        q.fail(ValueError("boom"))
    error = put.join().error
    assert isinstance(error, pyfastq.QueueClosed), error
    assert error.enqueued == 0
    assert ("cancelled" if how == "cancel" else "failed") in str(error)


def test_a_put_many_cut_short_says_how_many_rows_went_in(backend):
    q = pyfastq.Queue(SCALAR, capacity=2, backend=backend)
    q.put(1.0)
    put = waiting_put(q, lambda: q.put_many(np.array([2, 3, 4], np.float32)))  # 2 goes in, 3 waits
    q.close(cancel=True)
    error = put.join().error
    assert isinstance(error, pyfastq.QueueClosed), error
    assert error.enqueued == 1
    assert "1 rows of this put_many went in" in str(error)


def test_queue_closed_pickles_with_its_count():
    import pickle

    error = pickle.loads(pickle.dumps(pyfastq.QueueClosed("queue 'q' was cancelled", enqueued=5)))
    assert isinstance(error, pyfastq.QueueClosed) and error.enqueued == 5 and str(error) == "queue 'q' was cancelled"


def test_stop_wakes_a_producer_put_after_close(backend):
    # A Producer's workers are woken by stop(), not by close(): the with block still ends promptly.
    q = pyfastq.Queue(SCALAR, capacity=1, backend=backend)

    def forever(i, n):
        while True:
            yield 1.0

    with pyfastq.Producer(q, forever, workers=2) as p:
        wait_until(lambda: q.size() == 1 and q.stats()["put_waiters"] > 0, "the workers to block")
        q.close()
    assert not p.running


# -- a dequeue in a session step that is cancelled ----------------------------------------


@pytest.fixture
def graph_session():
    graph = tf.Graph()
    with graph.as_default():
        sess = tf.compat.v1.Session(graph=graph)
        yield sess
        sess.close()


@pytest.mark.parametrize("how", ["run_options", "session_config"])
def test_a_step_timeout_ends_a_waiting_dequeue_and_takes_nothing(backend, graph_session, how):
    q = pyfastq.Queue(SCALAR, capacity=2, backend=backend)
    x = q.dequeue()
    start = time.monotonic()
    with pytest.raises(tf.errors.DeadlineExceededError):
        if how == "run_options":
            graph_session.run(x, options=tf.compat.v1.RunOptions(timeout_in_ms=10))
        else:
            config = tf.compat.v1.ConfigProto(operation_timeout_in_ms=10)
            with tf.compat.v1.Session(graph=graph_session.graph, config=config) as sess:
                sess.run(x)
    assert time.monotonic() - start < BUDGET_S
    # Data that comes later stays in the queue for the next dequeue.
    q.put(5.0)
    time.sleep(0.3)  # an abandoned dequeue still polling would take it by now
    assert q.size() == 1
    assert graph_session.run(x) == 5.0


def test_a_failing_op_in_the_step_ends_a_waiting_dequeue(backend, graph_session):
    q = pyfastq.Queue(SCALAR, capacity=2, backend=backend)
    x = q.dequeue()
    bad = tf.debugging.assert_equal(tf.compat.v1.placeholder_with_default(1, []), 2)
    with pytest.raises(tf.errors.InvalidArgumentError):
        graph_session.run([x, bad])
    q.put(5.0)
    time.sleep(0.3)
    assert q.size() == 1


def test_session_close_ends_a_waiting_dequeue(backend, graph_session):
    q = pyfastq.Queue(SCALAR, capacity=2, backend=backend)
    x = q.dequeue_many(2)
    step = Background(lambda: graph_session.run(x))
    wait_until(lambda: q.stats()["get_waiters"] > 0, "the dequeue to wait")
    graph_session.close()
    assert isinstance(step.join().error, tf.errors.CancelledError)
    q.put(5.0)
    time.sleep(0.3)
    assert q.size() == 1


def test_a_session_dequeue_sees_close_cancel_and_fail(backend, graph_session):
    cancelled_error = tf.errors.CancelledError if backend == "native" else tf.errors.UnknownError
    aborted_error = tf.errors.AbortedError if backend == "native" else tf.errors.UnknownError

    def error_of_a_waiting_dequeue(end):
        q = pyfastq.Queue(tf.TensorSpec([3], tf.float32), capacity=2, backend=backend)
        x = q.dequeue()
        step = Background(lambda: graph_session.run(x))
        wait_until(lambda: q.stats()["get_waiters"] > 0, "the dequeue to wait")
        {"close": q.close, "cancel": lambda: q.close(cancel=True), "fail": lambda: q.fail(ValueError("boom"))}[end]()
        return step.join().error

    for end, error in [("close", tf.errors.OutOfRangeError), ("cancel", cancelled_error), ("fail", aborted_error)]:
        got = error_of_a_waiting_dequeue(end)
        assert isinstance(got, error), (end, got)
    q = pyfastq.Queue(tf.TensorSpec([3], tf.float32), capacity=2, backend=backend)
    q.put(f32(3, value=7))
    assert graph_session.run(q.dequeue()).tolist() == [7, 7, 7]
