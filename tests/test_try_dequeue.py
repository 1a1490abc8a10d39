"""dequeue() in a graph on the native backend: a synchronous try (PyfastqTryDequeue), then the waiting op.

The split is for speed (TF runs a sync kernel's consumers inline); these tests hold it to the
contract: each path delivers, nothing is taken twice or lost, each dequeue counts once in the
fill histogram, and errors still come from the waiting op.
"""

import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import pyfastq

from support import f32, session_dequeue_after_a_timeout

pytestmark = pytest.mark.usefixtures("native_without_gpu")

SPEC = tf.TensorSpec([3], tf.float32)


@pytest.fixture
def native_without_gpu(native):
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("with a GPU visible, dequeue() is the waiting op alone")


def _ops():
    from pyfastq.backends import native

    return native._ops


def op_types(fn, *args):
    """Every op type in fn's graph, the cond's branch functions included."""
    graph_def = fn.get_concrete_function(*args).graph.as_graph_def()
    types = {node.op for node in graph_def.node}
    for function in graph_def.library.function:
        types |= {node.op for node in function.node_def}
    return types


def test_the_try_op_takes_a_ready_element_and_nothing_from_an_empty_queue():
    q = pyfastq.Queue(SPEC, capacity=4)
    attrs = q._impl._op_attrs
    ok, (value,) = _ops().pyfastq_try_dequeue(**attrs)
    assert not bool(ok) and q.stats()["gets"] == 0
    q.put(f32(3, value=7))
    ok, (value,) = _ops().pyfastq_try_dequeue(**attrs)
    assert bool(ok) and value.numpy().tolist() == [7, 7, 7]
    assert q.stats()["gets"] == 1 and q.size() == 0
    assert sum(q.stats()["fill_histogram"]) == 2


def test_a_graph_dequeue_tries_first_and_waits_when_it_finds_nothing():
    q = pyfastq.Queue(SPEC, capacity=4)

    @tf.function
    def take():
        return q.dequeue()

    assert {"PyfastqTryDequeue", "PyfastqDequeue"} <= op_types(take)
    q.put(f32(3, value=1))
    assert take().numpy().tolist() == [1, 1, 1]  # the try found it
    threading.Timer(0.3, q.put, args=(f32(3, value=2),)).start()
    start = time.monotonic()
    assert take().numpy().tolist() == [2, 2, 2]  # the try found nothing; the waiting op got it
    assert time.monotonic() - start >= 0.2
    stats = q.stats()
    assert stats["gets"] == 2 and stats["puts"] == 2
    hist = stats["fill_histogram"]
    assert sum(hist) == 2 and hist[0] == 1  # once per dequeue: the wait after the try is not counted again


def test_every_element_once_through_a_graph_loop_with_a_racing_producer():
    q = pyfastq.Queue(SPEC, capacity=4)  # fewer slots than the loop's iterations in flight: both paths run
    n = 3000

    @tf.function
    def total(steps):
        acc = tf.constant(0.0)
        for _ in tf.range(steps):
            acc += q.dequeue()[0]
        return acc

    def produce():
        for i in range(n):
            q.put(f32(3, value=i))

    t = threading.Thread(target=produce)
    t.start()
    got = float(total(tf.constant(n)))
    t.join(30)
    assert got == sum(range(n))
    stats = q.stats()
    assert stats["gets"] == n and sum(stats["fill_histogram"]) == n


def test_errors_come_from_the_waiting_op():
    q = pyfastq.Queue(SPEC, capacity=4, name="tried")

    @tf.function
    def take():
        return q.dequeue()

    q.put(f32(3))
    q.close()
    take()
    with pytest.raises(tf.errors.OutOfRangeError, match=r"PyfastqDequeue on pyfastq queue 'tried'.*closed"):
        take()
    q2 = pyfastq.Queue(SPEC, capacity=4)

    @tf.function
    def take2():
        return q2.dequeue()

    q2.put(f32(3))
    q2.close(cancel=True)
    with pytest.raises(tf.errors.CancelledError, match="cancelled"):
        take2()


def test_the_try_aliases_a_variable_shape_element_at_its_own_shape():
    q = pyfastq.Queue(tf.TensorSpec([None, 2], tf.int32), capacity=4, max_shapes=[5, 2])

    @tf.function
    def take():
        return q.dequeue()

    q.put(np.arange(6, dtype=np.int32).reshape(3, 2))
    out = take()
    assert out.shape == (3, 2) and out.numpy().ravel().tolist() == list(range(6))


def test_a_session_dequeue_tries_then_times_out_taking_nothing():
    q = pyfastq.Queue(SPEC, capacity=4)
    with tf.Graph().as_default() as graph:
        q.dequeue()
    assert "PyfastqTryDequeue" in {op.type for op in graph.get_operations()}
    assert session_dequeue_after_a_timeout(q, f32(3, value=5)).tolist() == [5, 5, 5]
    assert q.stats()["gets"] == 1


def test_the_batch_try_takes_n_or_nothing():
    q = pyfastq.Queue(SPEC, capacity=8)
    attrs = q._impl._op_attrs
    q.put_many(np.arange(9, dtype=np.float32).reshape(3, 3))
    ok, (batch,) = _ops().pyfastq_try_dequeue_many(n=4, **attrs)
    assert not bool(ok) and q.size() == 3 and q.stats()["gets"] == 0  # 3 of 4: nothing taken
    ok, (batch,) = _ops().pyfastq_try_dequeue_many(n=2, **attrs)
    assert bool(ok) and batch.numpy().tolist() == [[0, 1, 2], [3, 4, 5]] and q.size() == 1


def test_a_graph_dequeue_many_tries_first_waits_and_gives_the_short_final_batch():
    q = pyfastq.Queue(SPEC, capacity=8)

    @tf.function
    def take():
        return q.dequeue_many(2, allow_smaller_final_batch=True)

    assert {"PyfastqTryDequeueMany", "PyfastqDequeueMany"} <= op_types(take)
    q.put_many(np.ones([2, 3], np.float32))
    assert take().shape == (2, 3)  # the try found two
    threading.Timer(0.3, q.put_many, args=(np.full([2, 3], 2, np.float32),)).start()
    assert take().numpy()[:, 0].tolist() == [2, 2]  # the try found none; the wait got them
    q.put(f32(3, value=3))
    q.close()
    assert take().numpy().tolist() == [[3, 3, 3]]  # one left after close: the waiting op's short batch
    with pytest.raises(tf.errors.OutOfRangeError):
        take()
    assert sum(q.stats()["fill_histogram"]) == 4


def test_a_tried_padded_batch_is_the_waiting_ops_batch():
    spec = tf.TensorSpec([None], tf.int32)
    q = pyfastq.Queue(spec, capacity=8, max_shapes=[4])

    @tf.function
    def take():
        return q.dequeue_many(2, padding_values=-1)

    q.put(np.array([1, 2, 3], np.int32))
    q.put(np.array([4], np.int32))
    tried = take().numpy().tolist()
    threading.Timer(0.3, lambda: [q.put(np.array([1, 2, 3], np.int32)), q.put(np.array([4], np.int32))]).start()
    waited = take().numpy().tolist()
    assert tried == waited == [[1, 2, 3], [4, -1, -1]]


def test_a_dataset_of_batches_gets_every_element_once():
    q = pyfastq.Queue(SPEC, capacity=16)
    n = 2000

    def produce():
        for i in range(n):
            q.put(f32(3, value=i))
        q.close()

    t = threading.Thread(target=produce)
    t.start()
    seen = [float(v) for batch in q.dataset(batch_size=7) for v in batch[:, 0].numpy()]
    t.join(30)
    assert sorted(seen) == list(range(n)) and seen == sorted(seen)
