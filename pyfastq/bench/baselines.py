"""The tools people use today, as the batch and python workloads' methods: from_generator + prefetch,
queue.Queue + tf.numpy_function, tf.queue.FIFOQueue fed by a thread, Ray Data's TF path.

Every producer here is handed `batch.copy()`: one copy per put, as pyfastq's put pays (handing TF the same
array object every time lets from_generator and numpy_function wrap it without any copy, which no real
producer of new data can do).
"""

from __future__ import annotations

import contextlib
import queue as pyqueue

import numpy as np
import tensorflow as tf

from .ours import start_ray
from .registry import method
from .timing import graph_loop, timed, timed_feeding
from .workloads import Workload


@method("from_generator", baseline=True)
def measure_from_generator(w: Workload, seconds: float) -> float:
    """tf.data.Dataset.from_generator(...).prefetch(2), batched in tf.data where the graph takes several elements."""
    item = np.ones(w.element_shape, w.dtype)

    def gen():
        if w.make is not None:  # the workload's own producer, as one worker
            yield from w.make(0, 1)
        while True:
            yield item.copy()

    ds = tf.data.Dataset.from_generator(gen, output_signature=w.spec())
    if w.batch > 1:
        ds = ds.batch(w.batch)
    it = iter(ds.prefetch(2))
    return timed(graph_loop(lambda: next(it)), seconds)


@method("numpy_function", baseline=True)
def measure_numpy_function(w: Workload, seconds: float) -> float:
    """A queue.Queue fed by a thread, taken by tf.numpy_function."""
    q: pyqueue.Queue = pyqueue.Queue(maxsize=w.capacity)

    def put(x):
        with contextlib.suppress(pyqueue.Full):
            q.put(x.copy(), timeout=0.1)  # returns within 0.1 s so the feeder sees stop

    shape = [w.batch, *w.element_shape] if w.batch > 1 else list(w.element_shape)

    def get():
        if w.batch > 1:
            return np.stack([q.get() for _ in range(w.batch)])
        return q.get()

    def take():
        out = tf.numpy_function(get, [], tf.as_dtype(w.dtype), stateful=True)
        out.set_shape(shape)
        return out

    return timed_feeding(put, np.ones(w.element_shape, w.dtype), take, None, seconds)


@method("fifo_queue", baseline=True)
def measure_fifo_queue(w: Workload, seconds: float) -> float:
    """tf.queue.FIFOQueue, a thread calling enqueue."""
    fq = tf.queue.FIFOQueue(w.capacity, [tf.as_dtype(w.dtype)], shapes=[w.element_shape])
    take = (lambda: fq.dequeue_many(w.batch)) if w.batch > 1 else fq.dequeue
    return timed_feeding(lambda x: fq.enqueue(x.copy()), np.ones(w.element_shape, w.dtype), take,
                         lambda: fq.close(cancel_pending_enqueues=True), seconds)


@method("ray_data", baseline=True, imports=("ray.data", 'pip install "pyfastq[bench]"'))
def measure_ray_data(w: Workload, seconds: float) -> float:
    """Ray Data's TF path: rows made by map_batches in Ray tasks, batched by Dataset.to_tf (from_generator inside)."""
    start_ray()
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = False
    # Ray Data's rows are the batch's rows; to_tf stacks them back into batches of the workload's shape.
    rows, per_batch = (w.element_shape[1:], w.element_shape[0]) if w.batch == 1 else (w.element_shape, w.batch)

    def make(batch):
        return {"x": np.ones((len(batch["id"]), *rows), w.dtype), "id": batch["id"]}

    # Streamed: only what is taken (and Ray Data's read-ahead) is ever made of these 100,000 batches. Ray Data's
    # defaults: a larger map_batches batch_size or to_tf prefetch_batches measured slower here.
    ds = ray.data.range(per_batch * 100_000).map_batches(make, batch_format="numpy")
    it = iter(ds.to_tf(feature_columns="x", label_columns="id", batch_size=per_batch).prefetch(2))
    return timed(graph_loop(lambda: next(it)[0]), seconds)
