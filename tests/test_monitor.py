"""q.stats() and pyfastq.keras.QueueMonitor: who waited, on both backends."""

import gc
import glob
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import pyfastq
from pyfastq.keras import QueueMonitor, verdict

from support import wait_until

SPEC = tf.TensorSpec([3], tf.float32)
STATS_KEYS = {
    "puts", "gets", "size", "put_wait_s", "get_wait_s", "put_blocked_s", "get_blocked_s", "put_waiters",
    "get_waiters", "fill_histogram", "capacity", "shuffle", "min_after_dequeue", "pinned",
}


@pytest.fixture(autouse=True)
def no_collection_of_earlier_garbage():
    """These tests time who waited. After the rest of the suite, one full collection of the heap it left
    (TF graphs and functions) can stop this process for seconds: the model would take nothing meanwhile,
    and the monitor would rightly see the producers wait. Collect it first, and keep it out of later ones."""
    gc.collect()
    gc.freeze()
    yield
    gc.unfreeze()


def test_stats_are_complete(backend):
    q = pyfastq.Queue(SPEC, capacity=10, backend=backend)
    stats = q.stats()
    native_only = {"slot_bytes", "memory_bytes", "shared"}
    assert set(stats) == STATS_KEYS | (native_only if backend == "native" else set())
    assert stats["fill_histogram"] == [0] * 10 and stats["capacity"] == 10 and not stats["shuffle"]


def test_the_fill_histogram_counts_what_each_dequeue_found(backend):
    q = pyfastq.Queue(SPEC, capacity=10, backend=backend)
    q.put_many(np.zeros([10, 3], np.float32))
    q.dequeue()  # found it full: the last bin
    q.dequeue_many(4)  # found 9 of 10: the last bin too
    q.dequeue()  # found 5: bin 5
    hist = q.stats()["fill_histogram"]
    assert hist[9] == 2 and hist[5] == 1 and sum(hist) == 3
    q.close()
    list(q.dataset())  # 4 elements, then the end: 5 more dequeues
    assert sum(q.stats()["fill_histogram"]) == 8


def test_blocked_time_is_the_stretch_anyone_waited_not_the_sum(backend):
    q = pyfastq.Queue(SPEC, capacity=1, backend=backend)
    q.put(np.zeros(3, np.float32))
    producers = [threading.Thread(target=q.put, args=(np.zeros(3, np.float32),), daemon=True) for _ in range(2)]
    for t in producers:
        t.start()
    wait_until(lambda: q.stats()["put_waiters"] == 2, "both producers to wait")
    time.sleep(0.3)
    during = q.stats()
    assert during["put_blocked_s"] >= 0.2  # the stretch under way counts
    for _ in range(3):
        q.dequeue()
    for t in producers:
        t.join(10)
    after = q.stats()
    assert after["put_blocked_s"] < after["put_wait_s"]  # two waited through the same stretch
    assert after["put_waiters"] == 0


def test_a_waiting_consumer_counts_in_get_blocked(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)
    t = threading.Thread(target=q.dequeue, daemon=True)
    t.start()
    wait_until(lambda: q.stats()["get_waiters"] == 1, "the dequeue to wait")
    time.sleep(0.3)  # the time being measured
    q.put(np.zeros(3, np.float32))
    t.join(10)
    stats = q.stats()
    assert stats["get_blocked_s"] >= 0.2 and stats["get_wait_s"] >= 0.2
    assert stats["fill_histogram"][0] == 1  # it came to an empty queue


def test_the_verdict_lines():
    assert verdict(0.43, 0.02) == "pyfastq: input-bound: the model waited for data 43% of the time; add workers"
    assert verdict(0.01, 0.61) == "pyfastq: compute-bound: producers waited for space 61% of the time"
    assert verdict(0.03, 0.05).startswith("pyfastq: balanced: ")


def fit(backend, slow, log_dir=None, steps=15, update_freq=5):
    """Keras fit of `steps` batches from a queue fed by one producer thread and watched by a QueueMonitor.

    slow: "producer" or "model".

    A slow model's producer never runs out (fit stops after `steps`): otherwise it could put its last
    element into tf.data's buffers early, and stop waiting for space, while the model is still busy.
    """
    examples = steps * 16 if slow == "producer" else 10**6
    specs = (tf.TensorSpec([4], tf.float32), tf.TensorSpec([1], tf.float32))
    q = pyfastq.Queue(specs, capacity=32, backend=backend)

    def examples_fn(worker, workers):
        rng = np.random.default_rng(worker)
        for _ in range(examples):
            if slow == "producer":
                time.sleep(0.02)  # a producer far slower than the model, even on a busy machine
            x = rng.random(4, dtype=np.float32)
            yield x, np.array([x.sum()], np.float32)

    model = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    callbacks = []
    if slow == "model":  # a model far slower than the producer, even on a busy machine: each step takes 250 ms more
        slow_step = tf.keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs=None: time.sleep(0.25))
        callbacks.append(slow_step)
    monitor = QueueMonitor(q, log_dir=log_dir, update_freq=update_freq)
    with pyfastq.Producer(q, examples_fn, workers=1):
        model.fit(q.dataset(batch_size=16), epochs=1, verbose=0, shuffle=False, callbacks=[*callbacks, monitor],
                  steps_per_epoch=steps if slow == "model" else None)
    return monitor


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_verdict_for_a_slow_producer(backend, capsys):
    monitor = fit(backend, "producer")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("pyfastq: input-bound: the model waited for data ") and line.endswith(
        "% of the time; add workers"
    )
    assert line == monitor.verdict
    assert monitor.summary["model_waited"] > 0.5 > monitor.summary["producers_waited"]


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_verdict_for_a_slow_model(backend, capsys):
    monitor = fit(backend, "model")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("pyfastq: compute-bound: producers waited for space ") and line.endswith("% of the time")
    assert monitor.summary["producers_waited"] > 0.5 > monitor.summary["model_waited"]


class SlowToTrace(tf.keras.layers.Layer):
    """The identity, whose tracing takes `seconds` (its Python runs only then), as a big model's first step does."""

    def __init__(self, seconds, **kwargs):
        super().__init__(**kwargs)
        self.seconds = seconds

    def call(self, x):
        time.sleep(self.seconds)
        return x


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_the_verdict_leaves_out_the_first_step(backend, capsys):
    # 15 batches of 8 rows, one every 100 ms: the producer's whole run (1.5 s) is shorter than tracing the
    # first step (3 s), through which it fills the capacity-64 queue and waits. After that, the model waits.
    batches, rows, period, trace_s = 15, 8, 0.1, 3.0
    specs = (tf.TensorSpec([4], tf.float32), tf.TensorSpec([1], tf.float32))
    q = pyfastq.Queue(specs, capacity=64, backend=backend)

    def examples(worker, workers):
        for k in range(batches * rows):
            if k % rows == 0:
                time.sleep(period)
            yield np.full([4], k, np.float32), np.array([k], np.float32)

    model = tf.keras.Sequential([tf.keras.Input([4]), SlowToTrace(trace_s), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    monitor = QueueMonitor(q)
    with pyfastq.Producer(q, examples, workers=1):
        started = time.monotonic()
        model.fit(q.dataset(batch_size=rows), epochs=1, verbose=0, shuffle=False, callbacks=[monitor])
    assert time.monotonic() - started > trace_s  # the first step was traced in this fit
    assert monitor.verdict.startswith("pyfastq: input-bound: "), monitor.summary
    assert monitor.summary["steps"] == batches - 1  # every step but the first
    assert monitor.summary["seconds"] < time.monotonic() - started - trace_s
    assert monitor.summary["model_waited"] > 0.5 > monitor.summary["producers_waited"]


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_a_one_step_fit_is_judged_on_that_step(backend):
    q = pyfastq.Queue(SPEC, capacity=4, backend=backend)
    q.put_many(np.zeros([4, 3], np.float32))
    q.close()
    model = tf.keras.Sequential([tf.keras.Input([3]), tf.keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    monitor = QueueMonitor(q, print_fn=None)
    model.fit(q.dataset(batch_size=4).map(lambda x: (x, x[:, :1])), epochs=1, verbose=0, shuffle=False,
              callbacks=[monitor])
    assert monitor.summary["steps"] == 1 and monitor.summary["seconds"] > 0
    assert monitor.verdict.startswith("pyfastq: balanced: ")


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
def test_tensorboard_event_files_hold_the_scalars(backend, tmp_path):
    fit(backend, "model", log_dir=str(tmp_path), steps=20, update_freq=5)  # 4 writes
    scalars: dict = {}
    files = glob.glob(str(tmp_path / "events.out.tfevents.*"))
    assert files
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                assert value.metadata.plugin_data.plugin_name == "scalars" or value.tag in scalars
                scalars.setdefault(value.tag, []).append((event.step, float(tf.make_ndarray(value.tensor))))
    assert set(scalars) == {"pyfastq/fill_level", "pyfastq/model_waited", "pyfastq/producers_waited"}
    for points in scalars.values():
        assert [step for step, _ in points] == [5, 10, 15, 20]
        assert all(0.0 <= v <= 1.0 for _, v in points)
    assert max(v for _, v in scalars["pyfastq/producers_waited"]) > 0.5  # the model is the slow side
    assert max(v for _, v in scalars["pyfastq/fill_level"]) > 0.5


def test_update_freq_is_checked():
    q = pyfastq.Queue(SPEC, capacity=2)
    with pytest.raises(ValueError):
        QueueMonitor(q, update_freq=0)


def test_keras_is_reached_from_the_package():
    assert pyfastq.keras.QueueMonitor is QueueMonitor
