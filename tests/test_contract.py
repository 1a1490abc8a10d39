"""The public contract of pyfastq.Queue, on both backends."""

import gc
import multiprocessing
import threading
import time
import weakref

import numpy as np
import pytest
import tensorflow as tf

import pyfastq
from pyfastq._writer import QueueWriter

from _workers import put_many_outcomes
from support import START_BUDGET_S, error_class, f32, session_dequeue_after_a_timeout, wait_until

SPEC = tf.TensorSpec([3], tf.float32)


def drain(q):
    out = []
    while True:
        try:
            out.append(q.dequeue())
        except tf.errors.OutOfRangeError:
            return out


# -- order, shapes, nests ----------------------------------------------------------


def test_fifo_order(backend):
    q = pyfastq.Queue(SPEC, capacity=16, backend=backend)
    for i in range(10):
        q.put(f32(3, value=i))
    q.close()
    assert [float(t[0]) for t in drain(q)] == list(range(10))


def test_static_shapes_inside_tf_function(backend):
    q = pyfastq.Queue((tf.TensorSpec([2, 5], tf.float32), tf.TensorSpec([], tf.int32)), capacity=8, backend=backend)
    shapes = {}

    @tf.function
    def step():
        x, y = q.dequeue()
        xs, ys = q.dequeue_many(2)
        xr, _ = q.dequeue_many(2, allow_smaller_final_batch=True)
        shapes.update(x=x.shape, y=y.shape, xs=xs.shape, ys=ys.shape, xr=xr.shape)
        return x, xs, xr

    step.get_concrete_function()
    assert shapes["x"] == [2, 5] and shapes["y"] == []
    assert shapes["xs"] == [2, 2, 5] and shapes["ys"] == [2]
    assert shapes["xr"].as_list() == [None, 2, 5]


def test_tuple_dict_and_nested_specs(backend):
    specs = {
        "image": tf.TensorSpec([2, 2], tf.uint8),
        "meta": (tf.TensorSpec([], tf.int64), tf.TensorSpec([2], tf.bool)),
    }
    q = pyfastq.Queue(specs, capacity=4, backend=backend)
    q.put({"image": np.arange(4, dtype=np.uint8).reshape(2, 2), "meta": (7, [True, False])})
    out = q.dequeue()
    assert set(out) == {"image", "meta"}
    assert out["image"].numpy().tolist() == [[0, 1], [2, 3]]
    assert int(out["meta"][0]) == 7 and out["meta"][1].numpy().tolist() == [True, False]


def test_put_many_splits_dim0(backend):
    q = pyfastq.Queue((tf.TensorSpec([2], tf.int32), tf.TensorSpec([], tf.float64)), capacity=8, backend=backend)
    q.put_many((np.arange(10, dtype=np.int32).reshape(5, 2), np.arange(5, dtype=np.float64)))
    assert q.size() == 5
    xs, ys = q.dequeue_many(5)
    assert xs.numpy().tolist() == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]
    assert ys.numpy().tolist() == [0, 1, 2, 3, 4]


def test_reserve_commit_and_abort(backend):
    q = pyfastq.Queue((tf.TensorSpec([4], tf.float32), tf.TensorSpec([], tf.int32)), capacity=2, backend=backend)
    with q.reserve() as (x, y):
        x[:] = [1, 2, 3, 4]
        y[...] = 9
    assert not x.flags.writeable  # the slot is the consumers' now
    with pytest.raises(RuntimeError, match="boom"):
        with q.reserve() as (x, y):
            x[:] = 5
            raise RuntimeError("boom")
    assert q.size() == 1
    q.close()
    x, y = q.dequeue()
    assert x.numpy().tolist() == [1, 2, 3, 4] and int(y) == 9
    with pytest.raises(tf.errors.OutOfRangeError):
        q.dequeue()


def test_aborted_reservation_frees_its_slot(backend):
    q = pyfastq.Queue(SPEC, capacity=1, backend=backend)
    with pytest.raises(KeyError):
        with q.reserve():
            raise KeyError
    q.put(f32(3), timeout=1)  # the slot came back
    assert q.size() == 1


# -- the error table -------------------------------------------------------------------


def test_nest_differs_is_type_error(backend):
    q = pyfastq.Queue((SPEC, SPEC), capacity=2, backend=backend)
    with pytest.raises(TypeError, match="structure"):
        q.put(f32(3))
    with pytest.raises(TypeError, match="structure"):
        q.put((f32(3), f32(3), f32(3)))
    single = pyfastq.Queue(SPEC, capacity=2, backend=backend)
    with pytest.raises(TypeError, match="structure"):
        single.put({"a": f32(3)})
    assert q.size() == 0 and single.size() == 0


def test_dtype_differs_is_type_error_naming_component(backend):
    q = pyfastq.Queue({"x": SPEC, "y": tf.TensorSpec([], tf.int32)}, capacity=2, backend=backend)
    with pytest.raises(TypeError, match=r"\['y'\].*int32.*int64"):
        q.put({"x": f32(3), "y": np.int64(1)})
    with pytest.raises(TypeError, match=r"float32.*float64"):
        q.put({"x": np.zeros(3), "y": 1})
    assert q.size() == 0


def test_python_values_convert_like_convert_to_tensor(backend):
    q = pyfastq.Queue((SPEC, tf.TensorSpec([], tf.int32)), capacity=4, backend=backend)
    q.put(([1, 2, 3], 4))  # ints into float32: fine, as tf.convert_to_tensor
    with pytest.raises(TypeError):
        q.put(([1, 2, 3], 1.5))  # a float into int32 is not
    x, y = q.dequeue()
    assert x.numpy().tolist() == [1.0, 2.0, 3.0] and int(y) == 4
    assert q.size() == 0


def test_shape_differs_is_value_error(backend):
    q = pyfastq.Queue(SPEC, capacity=2, backend=backend)
    with pytest.raises(ValueError, match=r"expected shape \[3\], got \[4\]"):
        q.put(f32(4))
    with pytest.raises(ValueError):
        q.put_many(f32(2, 4))
    assert q.size() == 0


@pytest.mark.parametrize("how", ["close", "cancel", "fail"])
def test_puts_after_close_raise_queue_closed(backend, how):
    q = pyfastq.Queue(SPEC, capacity=2, backend=backend)
    {"close": q.close, "cancel": lambda: q.close(cancel=True), "fail": lambda: q.fail(ValueError("x"))}[how]()
    assert q.closed
    with pytest.raises(pyfastq.QueueClosed):
        q.put(f32(3))
    with pytest.raises(pyfastq.QueueClosed):
        q.put_many(f32(2, 3))
    with pytest.raises(pyfastq.QueueClosed):
        with q.reserve():
            pass


_ROWS = {
    "numpy": lambda n: f32(n, 3),
    "tensor": lambda n: tf.zeros([n, 3], tf.float32),
}


@pytest.mark.parametrize("rows", [0, 2])
@pytest.mark.parametrize("kind", sorted(_ROWS))
@pytest.mark.parametrize("how", ["close", "cancel", "fail"])
def test_put_many_after_close_raises_whatever_it_holds(backend, how, kind, rows):
    q = pyfastq.Queue(SPEC, capacity=2, backend=backend)
    {"close": q.close, "cancel": lambda: q.close(cancel=True), "fail": lambda: q.fail(ValueError("x"))}[how]()
    with pytest.raises(pyfastq.QueueClosed):
        q.put_many(_ROWS[kind](rows))
    with pytest.raises(pyfastq.QueueClosed):
        q.put_many(_ROWS[kind](rows), timeout=1.0)


@pytest.mark.parametrize("kind", sorted(_ROWS))
def test_empty_put_many_on_an_open_queue_does_nothing(backend, kind):
    q = pyfastq.Queue(SPEC, capacity=2, backend=backend)
    q.put_many(_ROWS[kind](0))
    q.put_many(_ROWS[kind](0), timeout=0)
    assert q.size() == 0 and q.stats()["puts"] == 0 and not q.closed


@pytest.mark.parametrize("kind", sorted(_ROWS))
def test_a_queue_writer_refuses_put_many_after_close(native, kind):
    q = pyfastq.Queue(SPEC, capacity=2, shared=True)
    writer = QueueWriter(q._impl.fd, q._layout.layout(), q.name, q.capacity)  # what another process holds
    writer.put_many(_ROWS[kind](0))
    q.close()
    for rows in (0, 2):
        with pytest.raises(pyfastq.QueueClosed):
            writer.put_many(_ROWS[kind](rows))


def test_a_queue_writer_in_a_process_refuses_an_empty_put_many_after_close(native):
    q = pyfastq.Queue(SPEC, capacity=2, shared=True)
    q.close()
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    proc = ctx.Process(target=put_many_outcomes, args=(q, results))
    proc.start()
    try:
        got = results.get(timeout=START_BUDGET_S)
    finally:
        proc.join(START_BUDGET_S)
    assert proc.exitcode == 0
    assert got == {"0 rows": "QueueClosed", "2 rows": "QueueClosed"}


def test_timeouts_enqueue_nothing(backend):
    q = pyfastq.Queue(SPEC, capacity=2, backend=backend)
    q.put(f32(3, value=1))
    start = time.monotonic()
    with pytest.raises(TimeoutError):
        q.put_many(f32(2, 3), timeout=0.1)  # only one slot free: all or nothing
    assert time.monotonic() - start >= 0.09
    assert q.size() == 1
    q.put(f32(3, value=2))
    with pytest.raises(TimeoutError):
        q.put(f32(3), timeout=0)
    with pytest.raises(TimeoutError):
        with q.reserve(timeout=0.05):
            pass
    with pytest.raises(ValueError):
        q.put(f32(3), timeout=-1)
    assert q.size() == 2
    q.close()
    assert [float(t[0]) for t in drain(q)] == [1, 2]


def test_closed_and_drained_is_out_of_range(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)
    q.put(f32(3))
    q.close()
    q.dequeue()
    with pytest.raises(tf.errors.OutOfRangeError):
        q.dequeue()
    with pytest.raises(tf.errors.OutOfRangeError):
        q.dequeue_many(1)


def test_dequeue_many_after_close_leaves_elements(backend):
    q = pyfastq.Queue(SPEC, capacity=8, backend=backend)
    q.put_many(np.arange(9, dtype=np.float32).reshape(3, 3))
    q.close()
    with pytest.raises(tf.errors.OutOfRangeError):
        q.dequeue_many(4)
    assert q.size() == 3
    rest = q.dequeue_many(4, allow_smaller_final_batch=True)
    assert rest.shape == [3, 3] and rest.numpy()[:, 0].tolist() == [0, 3, 6]
    with pytest.raises(tf.errors.OutOfRangeError):
        q.dequeue_many(4, allow_smaller_final_batch=True)


def test_cancel_drops_and_consumers_see_cancelled(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)
    q.put(f32(3))
    q.close(cancel=True)
    assert q.size() == 0
    with pytest.raises(error_class(backend, tf.errors.CancelledError), match="cancelled"):
        q.dequeue()


def test_fail_carries_type_message_and_traceback(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)

    def parse_record():
        raise ValueError("corrupt record 17")

    try:
        parse_record()
    except ValueError as e:
        q.fail(e)
    with pytest.raises(error_class(backend, tf.errors.AbortedError)) as info:
        q.dequeue_many(2)
    message = str(info.value)
    assert "ValueError" in message and "corrupt record 17" in message
    assert "Traceback" in message and "parse_record" in message


@pytest.mark.parametrize("end", ["close", "cancel", "fail"])
def test_blocked_consumer_wakes(backend, end):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)

    @tf.function
    def take():
        return q.dequeue_many(2)

    take.get_concrete_function()
    result = {}

    def consumer():
        try:
            take()
        except tf.errors.OpError as e:
            result["error"] = e

    t = threading.Thread(target=consumer)
    t.start()
    wait_until(lambda: q.stats()["get_waiters"] == 1, "the dequeue to wait")
    {"close": q.close, "cancel": lambda: q.close(cancel=True), "fail": lambda: q.fail("worker died")}[end]()
    t.join(5)
    assert not t.is_alive()
    want = {
        "close": tf.errors.OutOfRangeError,
        "cancel": error_class(backend, tf.errors.CancelledError),
        "fail": error_class(backend, tf.errors.AbortedError),
    }[end]
    assert isinstance(result["error"], want)


def test_dequeue_many_larger_than_capacity_is_rejected(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)
    with pytest.raises(ValueError, match="capacity"):
        q.dequeue_many(5)
    with pytest.raises(ValueError):
        q.dataset(batch_size=5)


@pytest.mark.parametrize(
    "kwargs, error",
    [
        (dict(capacity=0), ValueError),
        (dict(capacity=2.5), ValueError),
        (dict(backend="gpu"), ValueError),
    ],
)
def test_bad_constructor_arguments(kwargs, error):
    with pytest.raises(error):
        pyfastq.Queue(SPEC, **kwargs)


@pytest.mark.parametrize(
    "specs, error",
    [
        (tf.TensorSpec([None, 3], tf.float32), ValueError),
        (tf.TensorSpec([3], tf.string), TypeError),
        ((SPEC, "not a spec"), TypeError),
    ],
)
def test_bad_specs(specs, error, backend):
    with pytest.raises(error):
        pyfastq.Queue(specs, backend=backend)


def test_state_and_stats(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend, name="stats")
    assert q.capacity == 4 and q.specs == SPEC and q.backend == backend and not q.closed
    q.put(f32(3))
    q.put(f32(3))
    q.dequeue()
    stats = q.stats()
    assert stats["puts"] == 2 and stats["gets"] == 1 and stats["size"] == 1 == q.size()
    assert stats["put_wait_s"] == 0 and stats["get_wait_s"] == 0  # neither side ever found it full or empty
    q.close()
    assert q.closed


def test_auto_backend_picks_native_without_warning(native, recwarn):
    q = pyfastq.Queue(SPEC)
    assert q.backend == "native"
    assert not [w for w in recwarn if "pyfastq" in str(w.message)]


# -- tf.data, Keras, TF1 --------------------------------------------------------------


@pytest.mark.parametrize("batch_size, drop_remainder, want", [(None, False, 7), (3, False, 3), (3, True, 2)])
def test_dataset_ends_at_close(backend, batch_size, drop_remainder, want):
    q = pyfastq.Queue(SPEC, capacity=8, backend=backend)
    q.put_many(np.arange(21, dtype=np.float32).reshape(7, 3))
    q.close()
    batches = list(q.dataset(batch_size=batch_size, drop_remainder=drop_remainder))
    assert len(batches) == want
    if batch_size:
        assert batches[0].shape == [3, 3]
        if drop_remainder:
            assert q.size() == 1  # the short remainder stays
        else:
            assert batches[-1].shape == [1, 3]


def test_dataset_reports_a_failure(backend):
    q = pyfastq.Queue(SPEC, capacity=8, backend=backend)
    q.put(f32(3))
    q.fail(RuntimeError("sensor unplugged"))
    with pytest.raises(error_class(backend, tf.errors.AbortedError), match="sensor unplugged"):
        list(q.dataset())


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_keras_fit_on_dataset(backend):
    specs = (tf.TensorSpec([4], tf.float32), tf.TensorSpec([1], tf.float32))
    q = pyfastq.Queue(specs, capacity=64, backend=backend)
    rng = np.random.default_rng(0)

    def examples(i, n):
        for _ in range(i, 320, n):
            x = rng.random(4, dtype=np.float32)
            yield x, np.array([x.sum()], np.float32)

    model = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    steps = []
    callback = tf.keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(batch))
    with pyfastq.Producer(q, examples, workers=2):
        model.fit(q.dataset(batch_size=32), epochs=1, verbose=0, callbacks=[callback], shuffle=False)
    assert len(steps) == 10
    assert q.stats()["gets"] == 320


def test_tf1_session_graph_mode(backend):
    q = pyfastq.Queue((SPEC, tf.TensorSpec([], tf.int64)), capacity=8, backend=backend)
    for i in range(3):
        q.put((f32(3, value=i), i))
    q.close()
    graph = tf.Graph()
    with graph.as_default():
        x, y = q.dequeue()
        assert x.shape == [3]
        with tf.compat.v1.Session(graph=graph) as sess:
            got = [sess.run(y) for _ in range(3)]
            with pytest.raises(tf.errors.OutOfRangeError):
                sess.run(y)
    assert got == [0, 1, 2]


def test_tf1_session_timeout_cancels_a_blocked_dequeue(native):
    q = pyfastq.Queue(SPEC, capacity=8, backend=native)
    assert session_dequeue_after_a_timeout(q, f32(3, value=5)).tolist() == [5, 5, 5]


# -- many producers and consumers ------------------------------------------------------


def test_four_producers_three_consumers_exactly_once(backend):
    per_producer = 300 if backend == "native" else 100
    q = pyfastq.Queue(tf.TensorSpec([2], tf.int64), capacity=16, backend=backend)

    def ids(worker, workers):
        for k in range(per_producer):
            yield np.array([worker, k], np.int64)

    @tf.function
    def take():
        return q.dequeue_many(4, allow_smaller_final_batch=True)

    seen = [[] for _ in range(3)]

    def consumer(c):
        while True:
            try:
                seen[c].extend(map(tuple, take().numpy().tolist()))
            except tf.errors.OutOfRangeError:
                return

    consumers = [threading.Thread(target=consumer, args=(c,)) for c in range(3)]
    for t in consumers:
        t.start()
    with pyfastq.Producer(q, ids, workers=4):
        for t in consumers:
            t.join(60)
    assert not any(t.is_alive() for t in consumers)
    everything = [e for s in seen for e in s]
    assert len(everything) == 4 * per_producer
    assert set(everything) == {(w, k) for w in range(4) for k in range(per_producer)}
    for s in seen:  # each consumer sees each producer's elements in order
        for w in range(4):
            ks = [k for (pw, k) in s if pw == w]
            assert ks == sorted(ks)


# -- native only ----------------------------------------------------------------------------


def test_dequeue_aliases_the_slot_until_freed(native):
    q = pyfastq.Queue(SPEC, capacity=1, backend=native)
    q.put(f32(3, value=1))
    t = q.dequeue()
    assert t.numpy().tolist() == [1, 1, 1]
    with pytest.raises(TimeoutError):
        q.put(f32(3), timeout=0.2)  # the tensor still holds the only slot
    del t
    gc.collect()
    q.put(f32(3, value=2), timeout=1)
    assert q.dequeue().numpy().tolist() == [2, 2, 2]


def test_op_outliving_its_queue_fails_cleanly(native):
    q = pyfastq.Queue(SPEC, capacity=1, backend=native)
    graph = tf.Graph()
    with graph.as_default():
        x = q.dequeue()  # the op names the ring by id; the graph holds no reference to q
    del q
    gc.collect()
    with tf.compat.v1.Session(graph=graph) as sess:
        with pytest.raises(tf.errors.FailedPreconditionError, match="no longer exists"):
            sess.run(x)


def test_blocking_put_many_never_starves_a_batch_consumer(backend):
    # A put_many that held its slots while waiting for more would deadlock here:
    # the consumer waits for 5 ready elements, only 3 are ready, the rest of the ring is free.
    q = pyfastq.Queue(tf.TensorSpec([], tf.int32), capacity=8, backend=backend)
    q.put_many(np.arange(3, dtype=np.int32))

    @tf.function
    def take():
        return q.dequeue_many(5)

    got = []
    consumer = threading.Thread(target=lambda: got.extend(int(x) for _ in range(4) for x in take()))
    consumer.start()
    q.put_many(np.arange(3, 20, dtype=np.int32))
    consumer.join(10)
    assert not consumer.is_alive()
    assert got == list(range(20))


def test_breaking_out_of_a_dataset_loop_on_an_empty_open_queue_returns(backend):
    # tf.data tears the iterator down at once, waiting for the dequeue in flight:
    # that one must end although no data comes (the python backend polls).
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4, backend=backend)
    q.put(np.int64(1))
    start = time.monotonic()
    for x in q.dataset():
        assert int(x) == 1
        break
    assert time.monotonic() - start < 5.0
    q.put(np.int64(2))
    q.close()
    assert [int(x) for x in q.dataset()] == [2]  # nothing was taken by the abandoned iterator


def test_put_takes_its_arguments_as_the_documented_signature(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)
    q.put(f32(3, value=1))
    q.put(f32(3, value=2), 1.0)
    q.put(element=f32(3, value=3), timeout=1.0)
    q.put([4, 4, 4], timeout=None)  # not an exact array: converted, as ever
    with pytest.raises(TypeError):
        q.put()
    with pytest.raises(TypeError):
        q.put(f32(3), 1.0, 2.0)
    with pytest.raises(TypeError):
        q.put(f32(3), deadline=1.0)
    with pytest.raises(TypeError):
        q.put(f32(3), element=f32(3))
    with pytest.raises(TimeoutError):
        q.put(f32(3), timeout=0.01)  # full: nothing enqueued
    assert q.size() == 4
    assert "Enqueues one element" in q.put.__doc__
    q.close()
    assert [float(t[0]) for t in drain(q)] == [1, 2, 3, 4]


def test_a_dropped_queue_is_collected(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)
    q.put(f32(3))
    gone = weakref.ref(q)
    del q
    gc.collect()
    assert gone() is None  # the fast put stored on the queue must not keep it alive
