"""q.dataset() as a tf.data source: the idioms that hold elements downstream, several iterators, waiting in
GetNext and what ends the wait, tf.data's rewrites, and the features that cannot work on a process-local queue."""

from __future__ import annotations

import contextlib
import signal
import threading

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.data.experimental.ops import testing  # assert_next: what the rewrites made

import pyfastq

from support import error_class, read_line, start_child, wait_until

N = 600  # elements a test sends through a capacity-16 queue: many times round the ring


def counting_queue(backend, capacity=16, n=N, **kwargs):
    """A queue of (index, payload) elements and the thread putting n of them, then closing it."""
    q = pyfastq.Queue((tf.TensorSpec([], tf.int64), tf.TensorSpec([25], tf.float32)), capacity=capacity,
                      backend=backend, **kwargs)

    def produce():
        with contextlib.suppress(pyfastq.QueueClosed):
            for i in range(n):
                q.put((np.int64(i), np.full([25], i, np.float32)))
            q.close()

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    return q, thread


def indices(elements):
    """The indices of (index, payload) elements, each checked against its payload."""
    out = []
    for i, payload in elements:
        i, payload = np.asarray(i).reshape(-1), np.asarray(payload).reshape(-1, 25)
        np.testing.assert_array_equal(payload, np.repeat(i.astype(np.float32)[:, None], 25, axis=1))
        out += i.tolist()
    return out


IDIOMS = {
    "batch(64)": lambda ds: ds.batch(64),
    "shuffle(256)": lambda ds: ds.shuffle(256),
    "prefetch(100)": lambda ds: ds.prefetch(100),
    "parallel map": lambda ds: ds.map(lambda i, x: (i, x + 0), num_parallel_calls=4, deterministic=False),
    "map, batch, prefetch": lambda ds: ds.map(lambda i, x: (i, x * 1)).batch(32).prefetch(8),
}


@pytest.mark.timeout(300)
@pytest.mark.parametrize("idiom", IDIOMS)
def test_buffers_downstream_of_a_small_queue_get_every_element_once(backend, idiom):
    # Each buffer holds more elements than the queue has slots: aliased slots alone would starve the producer.
    q, producer = counting_queue(backend)
    assert sorted(indices(IDIOMS[idiom](q.dataset()))) == list(range(N))
    producer.join()


@pytest.mark.timeout(300)
def test_elements_kept_by_the_consumer_keep_their_values(backend):
    # More elements held at once than the queue has slots: none is overwritten by later puts.
    q, producer = counting_queue(backend)
    kept = list(q.dataset())
    assert indices(kept) == list(range(N))
    producer.join()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("batch_size", [None, 5])
def test_two_iterators_share_the_elements_once(backend, batch_size):
    q, producer = counting_queue(backend)
    ds = q.dataset(batch_size)
    seen = [[], []]

    def consume(k):
        seen[k] = indices(ds)

    threads = [threading.Thread(target=consume, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(seen[0] + seen[1]) == list(range(N))
    producer.join()


@pytest.mark.parametrize(
    "dtype", [tf.bool, tf.int8, tf.uint16, tf.int32, tf.int64, tf.float16, tf.bfloat16, tf.float64, tf.complex128,
              tf.qint8, tf.quint8, tf.qint32]
)
def test_every_dtype(native, dtype):
    q = pyfastq.Queue(tf.TensorSpec([3], dtype), capacity=8)
    np_dtype = dtype.as_numpy_dtype
    values = [np.array([i, 0, 1], dtype=np_dtype) if dtype != tf.bool else np.array([i % 2, 0, 1], bool)
              for i in range(4)]
    for v in values:
        q.put(v)
    q.close()
    got = [x.numpy() for x in q.dataset()]
    assert [g.tobytes() for g in got] == [v.tobytes() for v in values]


# -- waiting in GetNext ---------------------------------------------------------------------------------------


def waiting_next(it):
    """next(it) in a thread; the thread and a list that receives its element or its error."""
    out: list = []

    def run():
        try:
            out.append(next(it))
        except (tf.errors.OpError, StopIteration) as e:
            out.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


def ends_waiting_with(backend, end, batch_size=None):
    q = pyfastq.Queue(tf.TensorSpec([2], tf.float32), capacity=4, backend=backend)
    it = iter(q.dataset(batch_size))
    thread, out = waiting_next(it)
    wait_until(lambda: q.stats()["get_waiters"] >= 1, "the iterator to wait for data")
    end(q)
    thread.join(60)
    assert not thread.is_alive(), "the wait did not end"
    return out[0]


def test_close_ends_a_waiting_iterator(backend):
    assert isinstance(ends_waiting_with(backend, lambda q: q.close()), StopIteration)


def test_cancel_ends_a_waiting_iterator(backend):
    got = ends_waiting_with(backend, lambda q: q.close(cancel=True))
    assert isinstance(got, error_class(backend, tf.errors.CancelledError)), got


@pytest.mark.parametrize("batch_size", [None, 3])
def test_fail_ends_a_waiting_iterator_with_the_message(backend, batch_size):
    got = ends_waiting_with(backend, lambda q: q.fail(RuntimeError("the worker broke")), batch_size)
    assert isinstance(got, error_class(backend, tf.errors.AbortedError)), got
    assert "the worker broke" in got.message


def test_a_step_that_times_out_takes_nothing(native):
    # A TF1 session's step cancelled by its timeout cancels the iterator it waits in.
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.data.make_one_shot_iterator(q.dataset()).get_next()
        with tf.compat.v1.Session(graph=graph) as sess, pytest.raises(tf.errors.DeadlineExceededError):
            sess.run(x, options=tf.compat.v1.RunOptions(timeout_in_ms=300))
    wait_until(lambda: q.stats()["get_waiters"] == 0, "the cancelled wait to end")
    q.put(np.int64(7))
    q.close()
    assert [int(v) for v in q.dataset()] == [7]  # the cancelled step took nothing


def test_an_iterator_destroyed_while_it_waits_takes_nothing(native):
    # prefetch's thread waits in GetNext; tearing the iterator down cancels it.
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4)
    q.put(np.int64(1))
    it = iter(q.dataset().prefetch(2))
    assert int(next(it)) == 1  # prefetch starts its thread at the first next()
    wait_until(lambda: q.stats()["get_waiters"] >= 1, "the prefetch thread to wait for data")
    del it
    wait_until(lambda: q.stats()["get_waiters"] == 0, "the destroyed iterator's wait to end")
    q.put(np.int64(3))
    q.close()
    assert [int(v) for v in q.dataset()] == [3]


CTRL_C = """
import sys, threading, time, tensorflow as tf, pyfastq

q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4)
it = iter(q.dataset())


@tf.function
def step():
    return next(it)


step.get_concrete_function()


def announce():
    while q.stats()["get_waiters"] < 1:
        time.sleep(0.005)
    print("waiting", flush=True)


threading.Thread(target=announce, daemon=True).start()
try:
    step()
except KeyboardInterrupt:
    print("caught KeyboardInterrupt", flush=True)
except tf.errors.OpError as e:
    print("caught", type(e).__name__, " ".join(e.message.split()), flush=True)
print("size", q.size(), flush=True)
"""


def test_ctrl_c_ends_a_graph_loop_waiting_in_get_next(native, tmp_path, leftovers):
    script = tmp_path / "ctrl_c.py"
    script.write_text(CTRL_C)
    proc = start_child(script, cwd=tmp_path)
    leftovers.append(proc)
    assert read_line(proc) == "waiting"
    proc.send_signal(signal.SIGINT)
    out = read_line(proc)
    assert ("caught CancelledError" in out and "interrupted by Ctrl-C (SIGINT)" in out) or out == (
        "caught KeyboardInterrupt"
    ), out
    assert read_line(proc) == "size 0"
    assert proc.wait(60) == 0


# -- tf.data's machinery ------------------------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_static_rewrites_see_through_the_dataset(native):
    # map_and_batch_fusion rewrites the serialized graph: it runs only if PyfastqDataset serializes.
    q, producer = counting_queue("native")
    ds = q.dataset().apply(testing.assert_next(["MapAndBatch"]))
    ds = ds.map(lambda i, x: (i, x + 0)).batch(10)
    options = tf.data.Options()
    options.experimental_optimization.apply_default_optimizations = False
    options.experimental_optimization.map_and_batch_fusion = True
    assert sorted(indices(ds.with_options(options))) == list(range(N))
    producer.join()


@pytest.mark.timeout(300)
def test_options(native):
    q, producer = counting_queue("native")
    options = tf.data.Options()
    options.deterministic = False
    options.autotune.enabled = True
    options.experimental_optimization.map_parallelization = True
    options.experimental_optimization.parallel_batch = True
    options.experimental_optimization.inject_prefetch = True
    options.threading.private_threadpool_size = 2
    ds = q.dataset().map(lambda i, x: (i, x * 1)).batch(7).with_options(options)
    assert sorted(indices(ds)) == list(range(N))
    producer.join()


@pytest.mark.timeout(300)
def test_distribute_datasets_from_function_and_prefetch_to_device(native):
    q, producer = counting_queue("native")
    strategy = tf.distribute.OneDeviceStrategy("/CPU:0")
    dist = strategy.distribute_datasets_from_function(lambda ctx: q.dataset(10))
    seen = []
    for i, x in dist:
        seen += indices([(i, x)])
    assert sorted(seen) == list(range(N))
    producer.join()

    q, producer = counting_queue("native")
    ds = q.dataset(10).apply(tf.data.experimental.prefetch_to_device("/CPU:0"))
    assert sorted(indices(ds)) == list(range(N))
    producer.join()


def test_check_external_state_names_pyfastq(native):
    # What tf.data service and every serialization that must not lose state ask first.
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4)
    fail = 2  # ExternalStatePolicy.FAIL
    with pytest.raises(tf.errors.FailedPreconditionError, match=r"pyfastq.*lives in this process"):
        tf.raw_ops.DatasetToGraphV2(input_dataset=q.dataset()._variant_tensor, external_state_policy=fail)


def test_dataset_save_refuses_at_once(native, tmp_path):
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4)
    q.put(np.int64(1))  # open: a save that started reading would wait for the close forever
    with pytest.raises(tf.errors.FailedPreconditionError, match="pyfastq"):
        q.dataset().save(str(tmp_path / "saved"))
    assert q.size() == 1


def test_iterator_checkpoint_refuses_at_once(native, tmp_path):
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4)
    q.put(np.int64(1))
    it = iter(q.dataset())
    with pytest.raises(tf.errors.OpError, match=r"pyfastq.*cannot be saved.*resume=state"):
        tf.train.Checkpoint(it=it).save(str(tmp_path / "ckpt"))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("how", ["dataset(64)", "dataset().batch(64)"])
def test_keras_fit(backend, how):
    q = pyfastq.Queue((tf.TensorSpec([10], tf.float32), tf.TensorSpec([1], tf.float32)), capacity=128,
                      backend=backend)

    def produce():
        for i in range(64 * 20):
            q.put((np.full([10], i % 7, np.float32), np.full([1], i % 7, np.float32)))
        q.close()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    ds = q.dataset(64) if how == "dataset(64)" else q.dataset().batch(64)
    model = tf.keras.Sequential([tf.keras.Input([10]), tf.keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=5)
    history = model.fit(ds, epochs=1, verbose=0, shuffle=False)
    assert len(history.history["loss"]) == 1
    producer.join()
    assert q.stats()["gets"] == 64 * 20
