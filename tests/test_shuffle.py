"""Queue(shuffle=True): TF's RandomShuffleQueue order, on both backends."""

import threading

import numpy as np
import pytest
import tensorflow as tf

import pyfastq

from support import session_dequeue_after_a_timeout, wait_until

INT = tf.TensorSpec([], tf.int32)


def ints(n, start=0):
    return np.arange(start, start + n, dtype=np.int32)


def order_of(backend, seed, count=100, **kwargs):
    """The order a shuffled queue gives `count` ints put before close."""
    q = pyfastq.Queue(INT, capacity=count, shuffle=True, seed=seed, backend=backend, **kwargs)
    q.put_many(ints(count))
    q.close()
    return [int(x) for x in q.dataset()]


def blocked_dequeue(q, n=None):
    """A dequeue (dequeue_many(n) if n) in a thread of its own: (thread, result dict)."""

    @tf.function
    def take():
        return q.dequeue() if n is None else q.dequeue_many(n)

    take.get_concrete_function()
    result = {}

    def run():
        try:
            result["value"] = take().numpy()
        except tf.errors.OpError as e:
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def test_the_multiset_is_kept_and_the_order_mixed(backend):
    order = order_of(backend, seed=7, count=200)
    assert sorted(order) == list(range(200))
    assert order != list(range(200))
    # Mixed, not merely rotated or reversed: most elements land far from where FIFO would put them.
    assert sum(abs(x - i) > 10 for i, x in enumerate(order)) > 100


def test_same_seed_same_order(backend):
    assert order_of(backend, seed=3) == order_of(backend, seed=3)
    assert order_of(backend, seed=3) != order_of(backend, seed=4)
    assert order_of(backend, seed=None) != order_of(backend, seed=None)  # drawn from the OS: 1 in 100! to match


def test_one_producer_with_a_seed_is_reproducible(backend):
    def numbers(worker, workers):
        yield from ints(64)

    def run():
        q = pyfastq.Queue(INT, capacity=64, shuffle=True, min_after_dequeue=10, seed=11, backend=backend)
        with pyfastq.Producer(q, numbers, workers=1):
            wait_until(lambda: q.closed, "the producer to finish")
        return [int(x) for x in q.dataset(batch_size=None)]

    first = run()
    assert sorted(first) == list(range(64)) and first != list(range(64))
    assert run() == first


def test_min_after_dequeue_holds_back_while_open_and_drains_after_close(backend):
    q = pyfastq.Queue(INT, capacity=10, shuffle=True, min_after_dequeue=4, seed=1, backend=backend)
    q.put_many(ints(4))
    t, result = blocked_dequeue(q)
    # a dequeue that would leave 3 of min_after_dequeue=4 must wait
    wait_until(lambda: q.stats()["get_waiters"] == 1, "the dequeue to wait")
    assert q.size() == 4
    q.put(np.int32(4))
    t.join(10)
    assert not t.is_alive() and "value" in result
    taken = [int(result["value"])]
    assert q.size() == 4
    # dequeue_many takes its batch whole, still leaving 4 behind: with 5 there, 2 must wait.
    q.put(np.int32(5))
    t, result = blocked_dequeue(q, 2)
    wait_until(lambda: q.stats()["get_waiters"] == 1, "the dequeue_many to wait")
    assert q.size() == 5
    q.put(np.int32(6))
    t.join(10)
    assert not t.is_alive()
    taken += result["value"].tolist()
    assert len(taken) == 3 and q.size() == 4
    # After close min_after_dequeue no longer holds anything back: the 4 left drain, then the queue ends.
    q.close()
    rest = [int(x) for x in q.dataset()]
    assert sorted(taken + rest) == list(range(7))
    with pytest.raises(tf.errors.OutOfRangeError):
        q.dequeue()


def test_a_closed_shuffled_queue_leaves_a_short_batch_or_gives_it(backend):
    q = pyfastq.Queue(INT, capacity=8, shuffle=True, min_after_dequeue=2, seed=2, backend=backend)
    q.put_many(ints(3))
    q.close()
    with pytest.raises(tf.errors.OutOfRangeError):
        q.dequeue_many(4)
    assert q.size() == 3  # the elements stay
    rest = q.dequeue_many(4, allow_smaller_final_batch=True)
    assert sorted(rest.numpy().tolist()) == [0, 1, 2]
    with pytest.raises(tf.errors.OutOfRangeError):
        q.dequeue_many(1, allow_smaller_final_batch=True)


def test_a_put_waiting_at_close_completes_and_drains(backend):
    q = pyfastq.Queue(INT, capacity=2, shuffle=True, min_after_dequeue=1, seed=3, backend=backend)
    q.put_many(ints(2))
    done = threading.Event()

    def put():
        q.put(np.int32(2))
        done.set()

    t = threading.Thread(target=put, daemon=True)
    t.start()
    wait_until(lambda: q.stats()["put_waiters"] == 1, "the put to wait for room")
    assert not done.is_set()
    q.close()
    assert sorted(int(x) for x in q.dataset()) == [0, 1, 2]
    t.join(10)
    assert done.is_set()


def test_cancel_and_fail_end_a_held_back_consumer(backend):
    for end in ("cancel", "fail"):
        q = pyfastq.Queue(INT, capacity=4, shuffle=True, min_after_dequeue=2, backend=backend)
        q.put(np.int32(0))
        t, result = blocked_dequeue(q)
        wait_until(lambda: q.stats()["get_waiters"] == 1, "the held-back dequeue to wait")  # noqa: B023 - called now
        q.close(cancel=True) if end == "cancel" else q.fail(RuntimeError("producer broke"))
        t.join(10)
        assert not t.is_alive() and "error" in result
        assert q.size() == (0 if end == "cancel" else 1)


def test_many_producers_and_a_batching_consumer_exactly_once(backend):
    per = 200 if backend == "native" else 60
    q = pyfastq.Queue(tf.TensorSpec([2], tf.int64), capacity=48, shuffle=True, min_after_dequeue=16, backend=backend)

    def ids(worker, workers):
        for k in range(per):
            yield np.array([worker, k], np.int64)

    with pyfastq.Producer(q, ids, workers=4):
        got = [tuple(row) for batch in q.dataset(batch_size=16) for row in batch.numpy().tolist()]
    assert sorted(got) == sorted((w, k) for w in range(4) for k in range(per))
    stats = q.stats()
    assert stats["puts"] == stats["gets"] == 4 * per and stats["shuffle"] and stats["min_after_dequeue"] == 16


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(shuffle=True, min_after_dequeue=8),  # k must be below the capacity
        dict(shuffle=True, min_after_dequeue=-1),
        dict(min_after_dequeue=2),  # without shuffle it would do nothing
        dict(seed=1),
        dict(shuffle=True, seed=-1),
    ],
)
def test_bad_shuffle_arguments_are_value_errors(kwargs, backend):
    with pytest.raises(ValueError):
        pyfastq.Queue(INT, capacity=8, backend=backend, **kwargs)


def test_a_batch_beyond_the_hold_back_drains_after_close(backend):
    # n <= capacity < n + min_after_dequeue: after close nothing is held back, so it drains, as in TF.
    q = pyfastq.Queue(INT, capacity=1000, shuffle=True, min_after_dequeue=100, backend=backend)
    with pytest.raises(ValueError, match="could never be formed"):
        q.dequeue_many(1001)
    q.put_many(ints(1000))
    q.close()
    assert sorted(q.dequeue_many(1000).numpy()) == list(range(1000))

    q = pyfastq.Queue(INT, capacity=1000, shuffle=True, min_after_dequeue=100, backend=backend)
    q.put_many(ints(1000))
    q.close()
    batches = [b.numpy() for b in q.dataset(batch_size=1000)]
    assert [len(b) for b in batches] == [1000] and sorted(batches[0]) == list(range(1000))


def test_a_batch_beyond_the_hold_back_waits_while_open_and_completes_at_close(backend):
    q = pyfastq.Queue(INT, capacity=8, shuffle=True, min_after_dequeue=5, backend=backend)
    q.put_many(ints(8))
    t, result = blocked_dequeue(q, 6)  # 6 + 5 > 8: never ready while open
    wait_until(lambda: q.stats()["get_waiters"] > 0 or not t.is_alive(), "the dequeue_many to wait")
    assert not result and q.size() == 8
    q.close()
    t.join(60)
    assert not t.is_alive() and "error" not in result
    rest = q.dequeue_many(8, allow_smaller_final_batch=True).numpy()
    assert sorted([*result["value"], *rest]) == list(range(8))  # every element exactly once


def test_a_cancelled_batch_beyond_the_hold_back_takes_nothing(backend):
    q = pyfastq.Queue(INT, capacity=8, shuffle=True, min_after_dequeue=5, backend=backend)
    q.put_many(ints(8))
    graph = tf.Graph()
    with graph.as_default():
        batch = q.dequeue_many(6)
        with tf.compat.v1.Session(graph=graph) as sess:
            with pytest.raises(tf.errors.DeadlineExceededError):
                sess.run(batch, options=tf.compat.v1.RunOptions(timeout_in_ms=200))
            assert q.size() == 8  # the step that timed out took nothing
            q.close()
            got = sess.run(batch)
    rest = q.dequeue_many(8, allow_smaller_final_batch=True).numpy()
    assert sorted([*got, *rest]) == list(range(8))


def test_a_cancelled_shuffled_dequeue_takes_nothing(native):
    q = pyfastq.Queue(INT, capacity=8, shuffle=True, min_after_dequeue=3, backend=native)
    q.put_many(ints(3))
    assert q.size() == 3
    got = int(session_dequeue_after_a_timeout(q, np.int32(3)))
    assert q.size() == 3
    q.close()
    assert sorted([got] + [int(x) for x in q.dataset()]) == [0, 1, 2, 3]  # each element once: none taken twice


def test_process_workers_feed_a_shuffled_shared_queue(native):
    q = pyfastq.Queue(INT, capacity=16, shuffle=True, min_after_dequeue=4, seed=5, shared=True, backend=native)
    with pyfastq.Producer(q, _numbers_by_worker, workers=2, mode="process"):
        got = [int(x) for x in q.dataset()]
    assert sorted(got) == list(range(200))
    assert got != sorted(got)


def _numbers_by_worker(worker, workers):
    for i in range(worker, 200, workers):
        yield np.int32(i)
