"""Producer functions for the process-mode tests.

Worker processes import this module to unpickle them, so it imports neither
TensorFlow nor the test modules (which do): a worker then starts in a fraction
of a second.
"""

import os
import random
import signal
import time

import numpy as np

import pyfastq


def count(worker, workers, total):
    for k in range(worker, total, workers):
        yield np.int64(k)


def forever(worker, workers):
    k = 0
    while True:
        yield np.int64(worker * 1_000_000 + k)
        k += 1


def labelled(worker, workers):
    """(image, label, [score, label]) forever: an array and Python numbers, as most datasets yield them."""
    k = 0
    while True:
        yield np.full([4], k, np.float32), k, [0.5, k]
        k += 1


def tagged(worker, workers, counts, jitter=0.002):
    """Worker i yields counts[i] elements (i, k), after random pauses so that timing differs run to run."""
    rng = random.Random()  # unseeded on purpose: the order must not depend on timing
    for k in range(counts[worker]):
        time.sleep(rng.random() * jitter)
        yield np.int64(worker), np.int64(k)


def seeds(worker, workers):
    info = pyfastq.worker_info()
    yield np.int64(worker), np.float64(random.random()), np.float64(np.random.rand()), np.int64(info.seed % 2**62)


def writes_directly(worker, workers, rows):
    """put_many, reserve and put through the worker's queue: each writes into the shared ring."""
    q = pyfastq.worker_info().queue
    base = worker * 10_000
    q.put_many(np.arange(base, base + rows, dtype=np.int64))
    for k in range(rows, 2 * rows):
        with q.reserve() as view:
            view[...] = base + k
    q.put(base + 2 * rows)  # a Python int: converted as tf.convert_to_tensor would
    return iter(())


def raises_after(worker, workers, n):
    for k in range(n):
        yield np.int64(k)
    if worker == 1:
        raise KeyError("missing field 'label'")
    while True:
        time.sleep(0.01)
        yield np.int64(-1)


def exits_after(worker, workers, n, code):
    for k in range(n):
        yield np.int64(k)
    time.sleep(0.2)  # let the puts land
    os._exit(code)


def holds_a_reserved_slot(worker, workers, marker):
    q = pyfastq.worker_info().queue
    with q.reserve() as view:
        view[...] = 1
        open(marker, "w").close()
        time.sleep(3600)  # killed here, the slot in its hands
    return iter(())


def sleeps_in_fn(worker, workers):
    yield np.int64(worker)
    time.sleep(3600)  # stop() must not wait for this
    yield np.int64(-1)


def ignores_sigterm(worker, workers):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    yield np.int64(worker)
    while True:
        time.sleep(0.01)


def python_heavy(worker, workers):
    """About a millisecond of pure-Python work per element: holds the GIL."""
    while True:
        acc = 0
        for j in range(20_000):
            acc += j * j % 7
        yield np.full([4], acc, np.float32)


def put_range(queue, start, stop):
    """A plain multiprocessing target: the queue arrives as a QueueWriter on the shared ring."""
    for k in range(start, stop):
        queue.put(np.int64(k))


def put_many_outcomes(queue, results):
    """A plain multiprocessing target: what a put_many of 0 and of 2 rows into the QueueWriter raise."""
    outcomes = {}
    for rows in (0, 2):
        name = f"{rows} rows"
        try:
            queue.put_many(np.zeros([rows, 3], np.float32))
            outcomes[name] = "returned"
        except (pyfastq.QueueClosed, TypeError, ValueError) as e:
            outcomes[name] = type(e).__name__
    results.put(outcomes)


def worker_0_stalls(worker, workers):
    """Worker 0 makes one element, then stalls in fn; the others make elements forever."""
    k = 0
    while True:
        if worker == 0 and k == 1:
            time.sleep(3600)
        yield np.int64(worker * 1_000_000 + k)
        k += 1


def reports_tensorflow(worker, workers):
    """One element: 1 if TensorFlow is loaded in this worker process, else 0."""
    import sys

    yield np.int64("tensorflow" in sys.modules)


def uses_tensorflow(worker, workers):
    import tensorflow as tf

    yield tf.constant(7, tf.int64).numpy()


# -- Ray actors (tests/test_ray_*.py); actors import this module as process workers do ------------


def ray_info(worker, workers):
    """One element: who the worker is, by worker_info() in a Ray actor, and its seeded random streams."""
    info = pyfastq.worker_info()
    fits = info.mode == "ray" and info.queue is None and (info.index, info.num_workers) == (worker, workers)
    streams = np.float64(random.random()), np.float64(np.random.rand())
    yield np.int64(worker), np.int64(fits), *streams, np.int64(info.seed % 2**62)


def node_tagged(worker, workers, total):
    """k = worker, worker + workers, ... below total, each with (a number naming) the Ray node that made it."""
    import ray

    node = int(ray.get_runtime_context().get_node_id()[:15], 16)
    for k in range(worker, total, workers):
        yield np.int64(k), np.int64(node)


def pids(worker, workers, busy_ms=0.0):
    """This process's pid, forever, after busy_ms of pure-Python work each."""
    pid = np.int64(os.getpid())
    while True:
        end = time.perf_counter() + busy_ms / 1e3
        while time.perf_counter() < end:
            pass
        yield pid


def pid_then_sleeps(worker, workers):
    """This process's pid, then a sleep in fn that only a kill ends."""
    yield np.int64(os.getpid())
    time.sleep(3600)
    yield np.int64(-1)
