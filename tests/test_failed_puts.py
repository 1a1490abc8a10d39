"""A put, put_many or reserve that fails after taking its slots gives them all back (native backend).

Between taking a slot and committing it, _core runs code that can raise (array and capsule creation,
taking the GIL back). _core._fail_next_fills(n) is a test hook that makes the next n of those steps
raise MemoryError, as a failed allocation there would. A slot leaked there would be lost to producers
and, since it counts as a put under way, would keep consumers of a closed queue waiting forever.
"""

import threading

import numpy as np
import pytest
import tensorflow as tf

import pyfastq

from support import f32

CAPACITY = 4
# A dequeue of a closed, empty queue ends at once; this only bounds a hang, on a busy machine.
CONSUMER_BUDGET_S = 60
ONE = tf.TensorSpec([3], tf.float32)
TWO = (tf.TensorSpec([3], tf.float32), tf.TensorSpec([], tf.int32))
# Over _core's 256 KiB threshold: copied with the GIL released.
LARGE = tf.TensorSpec([300_000], tf.uint8)


def element(spec, i):
    if spec is TWO:
        return f32(3, value=i), np.array(i, np.int32)
    return np.full(spec.shape, i, spec.dtype.as_numpy_dtype)


def rows(spec, n):
    if spec is TWO:
        return np.zeros((n, 3), np.float32), np.arange(n, dtype=np.int32)
    return np.zeros((n, *spec.shape), spec.dtype.as_numpy_dtype)


def reserve_and_fill(q, spec):
    with q.reserve():
        raise AssertionError("the reservation's views were made despite the injected failure")


# Each way a put takes slots, on the specs that send it down its distinct paths in _core.
PUTS = {
    "put, one component (the builtin fast path)": (ONE, lambda q, s: q.put(element(s, 0))),
    "put, two components": (TWO, lambda q, s: q.put(element(s, 0))),
    "put, large (copied without the GIL)": (LARGE, lambda q, s: q.put(element(s, 0))),
    "put with a timeout": (ONE, lambda q, s: q.put(element(s, 0), timeout=10)),
    "put_many of a whole ring, with a timeout": (TWO, lambda q, s: q.put_many(rows(s, CAPACITY), timeout=10)),
    "put_many of a whole ring, without one": (ONE, lambda q, s: q.put_many(rows(s, CAPACITY))),
    "reserve": (TWO, reserve_and_fill),
}


@pytest.fixture
def failing_fill(native):
    """Arms the hook for one fill; disarmed again whatever the test's outcome."""
    from pyfastq import _core

    _core._fail_next_fills(1)
    yield
    _core._fail_next_fills(0)


def consume_until_closed(q) -> list:
    """Dequeues in another thread until the queue ends: what it took, then the error that ended it."""
    out: list = []

    def run():
        try:
            while True:
                out.append(q.dequeue())
        except Exception as e:  # noqa: BLE001 - reported to the test
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(CONSUMER_BUDGET_S)
    if t.is_alive():
        q.close(cancel=True)  # wakes it, so no thread outlives the test
        t.join(CONSUMER_BUDGET_S)
        raise AssertionError("a consumer of the closed queue did not end: a slot is still held")
    return out


@pytest.mark.parametrize("put", list(PUTS))
def test_a_failed_put_leaves_every_slot_free(failing_fill, put):
    spec, do = PUTS[put]
    q = pyfastq.Queue(spec, capacity=CAPACITY, backend="native")
    with pytest.raises(MemoryError, match="test hook"):
        do(q, spec)
    assert q.size() == 0
    # A leaked slot would make the last of these time out.
    for i in range(CAPACITY):
        q.put(element(spec, i), timeout=10)
    q.close()
    *taken, end = consume_until_closed(q)
    assert isinstance(end, tf.errors.OutOfRangeError), repr(end)
    first = [t[0] if spec is TWO else t for t in taken]
    assert [int(np.asarray(t).flat[0]) for t in first] == list(range(CAPACITY))


@pytest.mark.parametrize("put", list(PUTS))
def test_after_a_failed_put_consumers_of_a_closed_queue_end(failing_fill, put):
    spec, do = PUTS[put]
    q = pyfastq.Queue(spec, capacity=CAPACITY, backend="native")
    with pytest.raises(MemoryError, match="test hook"):
        do(q, spec)
    q.close()
    [end] = consume_until_closed(q)
    assert isinstance(end, tf.errors.OutOfRangeError), repr(end)
