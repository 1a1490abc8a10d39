"""pyfastq's own methods: the queue on each backend, shuffled, put_many, a producer making its batch in place,
and pyfastq.Producer's threads, processes, Ray actors and workers="auto"."""

from __future__ import annotations

import functools
import logging
import os
import time

import numpy as np

import pyfastq

from .registry import NATIVE, PRODUCER, method, register
from .timing import graph_loop, take_of, timed, timed_feeding
from .workloads import AUTO, SHUFFLE, Workload

PUT_MANY_ROWS = 128  # seed's put_many: elements per call


def measure_queue(w: Workload, seconds: float, backend: str, shuffle: bool = False) -> float:
    """The pyfastq queue on `backend`; with shuffle (native), sized by TF's rule (Workload.min_after_dequeue)."""
    capacity, order = w.capacity, {}
    if shuffle:
        capacity = w.capacity + w.min_after_dequeue
        order = dict(shuffle=True, min_after_dequeue=w.min_after_dequeue, seed=0)
    q = pyfastq.Queue(w.spec(), capacity=capacity, backend=backend, **order)
    return timed_feeding(q.put, np.ones(w.element_shape, w.dtype), take_of(q, w.batch), lambda: q.close(cancel=True),
                         seconds)


@method("native", needs=NATIVE)
def measure_native(w: Workload, seconds: float) -> float:
    """The pyfastq queue on the native backend, a Python thread putting one pre-made element at a time."""
    return measure_queue(w, seconds, "native")


@method(SHUFFLE, needs=NATIVE)
def measure_shuffle(w: Workload, seconds: float) -> float:
    """measure_native with Queue(shuffle=True)."""
    return measure_queue(w, seconds, "native", shuffle=True)


@method("put_many", needs=NATIVE)
def measure_put_many(w: Workload, seconds: float) -> float:
    """pyfastq native, the producer putting PUT_MANY_ROWS elements per put_many call."""
    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native")
    rows = np.ones((PUT_MANY_ROWS, *w.element_shape), w.dtype)
    return timed_feeding(q.put_many, rows, take_of(q, w.batch), lambda: q.close(cancel=True), seconds)


def random_fill(rng: np.random.Generator, out: np.ndarray) -> None:
    """Random bytes into a C-contiguous array of any dtype: float32 draws over its memory (rng.random(out=...))."""
    rng.random(out=out.reshape(-1).view(np.float32), dtype=np.float32)


@method("reserve", needs=NATIVE)
def measure_reserve(w: Workload, seconds: float) -> float:
    """pyfastq native, the producer making each batch in place: rng.random(out=view) inside q.reserve()."""

    def produce(q, rng):
        with q.reserve() as view:
            random_fill(rng, view)

    return measure_making(w, seconds, produce)


@method("fresh_put", needs=NATIVE)
def measure_fresh_put(w: Workload, seconds: float) -> float:
    """measure_reserve's producer making a fresh array instead, then calling put (one copy more)."""

    def produce(q, rng):
        batch = np.empty(w.element_shape, w.dtype)
        random_fill(rng, batch)
        q.put(batch)

    return measure_making(w, seconds, produce)


def measure_making(w: Workload, seconds: float, produce) -> float:
    """pyfastq native, a producer thread calling produce(q, rng) for each batch it makes."""
    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native")
    rng = np.random.default_rng(0)
    return timed_feeding(lambda _: produce(q, rng), None, q.dequeue, lambda: q.close(cancel=True), seconds)


@method("python")
def measure_python(w: Workload, seconds: float) -> float:
    """The pyfastq queue on the python backend (deque + Condition + tf.numpy_function)."""
    return measure_queue(w, seconds, "python")


# -- pyfastq.Producer -----------------------------------------------------------------------------


def wait_for_workers(q, producer, workers: int, batch: int, timeout: float = 120.0) -> None:
    """Takes batches eagerly until every worker's element has arrived (its first value is the worker's index)."""
    seen: set = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        while q.size() < batch:  # poll, so that a worker that never starts is a timeout, not a hang
            if producer.errors:
                raise producer.errors[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"only workers {sorted(seen)} of {workers} produced within {timeout:.0f} s")
            time.sleep(0.01)
        seen.update(int(i) for i in q.dequeue_many(batch).numpy().reshape(batch, -1)[:, 0])


def copies(worker: int, workers: int, shape: tuple, dtype: type):
    """Producer fn of the workloads that put one pre-made batch: a fresh copy each time, its first value the worker."""
    item = np.ones(shape, dtype)
    item.flat[0] = worker
    while True:
        yield item.copy()


def start_ray() -> None:
    """A local Ray of as many CPUs as cores, started once, here (never a cluster another program started)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=512 << 20, logging_level=logging.WARNING)
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no execution plans between the figures


def measure_producer(w: Workload, seconds: float, workers: int, mode: str) -> float:
    """pyfastq.Producer(fn, workers, mode) into a native queue (shared for processes); dequeue(_many) in the graph."""
    if mode == "ray":
        start_ray()
    fn = w.make or functools.partial(copies, shape=w.element_shape, dtype=w.dtype)
    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native", shared=mode == "process")
    with pyfastq.Producer(q, fn, workers=workers, mode=mode) as producer:
        wait_for_workers(q, producer, workers, w.batch)
        rate = timed(graph_loop(take_of(q, w.batch)), seconds)
        if producer.errors:
            raise producer.errors[0]
        return rate


def producer_pipeline(w: Workload, source, workers: int, method: str):
    """(take, stop) of pyfastq.Producer over a random-access source: P threads, P processes or "auto" processes."""
    mode = "thread" if method == "thread" else "process"
    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native", shared=mode == "process")
    p = pyfastq.Producer(q, source, workers="auto" if method == AUTO else workers, mode=mode, epochs=None)
    p.start()

    def stop():
        p.stop()
        if p.errors:
            raise p.errors[0]

    return functools.partial(q.dequeue_many, w.batch), stop


# Producer's threads, processes and Ray actors on the batch and python workloads, with P workers; on the source
# workloads, threads, processes and workers="auto" (processes) reading the source.
register("thread", measure=functools.partial(measure_producer, mode="thread"),
         pipeline=functools.partial(producer_pipeline, method="thread"), per_worker_count=True, needs=PRODUCER)
register("process", measure=functools.partial(measure_producer, mode="process"),
         pipeline=functools.partial(producer_pipeline, method="process"), per_worker_count=True, needs=PRODUCER)
register("ray", measure=functools.partial(measure_producer, mode="ray"), per_worker_count=True, needs=PRODUCER,
         imports=("ray", 'pip install "pyfastq[ray]"'))
register(AUTO, pipeline=functools.partial(producer_pipeline, method=AUTO), needs=PRODUCER)
