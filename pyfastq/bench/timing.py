"""How every figure of the benchmark is taken: a graph loop consuming batches, timed, while a thread feeds.

Consumer: one tf.function running N steps in a graph loop (`for _ in tf.range(n)`); each step takes one
batch and reads from it. Producer: a Python thread (`Feeder`) calling put(item) until the figure is taken.
"""

from __future__ import annotations

import contextlib
import threading
import time

import numpy as np
import tensorflow as tf

import pyfastq


class Feeder:
    """A Python thread calling put(item) until stopped; put must return or raise within ~0.1 s of stop."""

    def __init__(self, put, item):
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(put, item), daemon=True)
        self._thread.start()

    def _run(self, put, item):
        try:
            while not self._stop.is_set():
                put(item)
        except (pyfastq.QueueClosed, tf.errors.CancelledError):
            pass

    def stop(self, unblock=None):
        self._stop.set()
        if unblock:
            unblock()
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("a benchmark producer did not stop")


@contextlib.contextmanager
def feeding(put, item, unblock=None):
    """A Feeder calling put(item) for the duration of the block, then stopped (unblock: see timed_feeding)."""
    feeder = Feeder(put, item)
    try:
        yield feeder
    finally:
        feeder.stop(unblock)


def feeding_queue(q, item, many: bool = False):
    """feeding() of a pyfastq queue: q.put(item) (q.put_many with many), the queue cancelled at the end."""
    return feeding(q.put_many if many else q.put, item, lambda: q.close(cancel=True))


def take_of(q, batch: int):
    """What a graph loop calls for one batch of q: q.dequeue_many(batch), or q.dequeue where a put is a batch."""
    return (lambda: q.dequeue_many(batch)) if batch > 1 else q.dequeue


def graph_loop(take, device: str | None = None):
    """A tf.function that takes n batches with take() and reads one value of each (on `device`, if given)."""

    @tf.function
    def run(n):
        acc = tf.constant(0.0)
        with tf.device(device) if device else contextlib.nullcontext():
            for _ in tf.range(n):
                batch = take()
                acc += tf.cast(tf.reshape(batch, [-1])[-1], tf.float32)
        return acc

    return run


def timed(run, seconds: float) -> float:
    """Batches per second of run(n): a warm-up, then calls sized to ~0.3 s until the budget is spent."""
    n = 2
    run(tf.constant(n))  # trace and warm up
    while True:  # calibrate
        start = time.perf_counter()
        run(tf.constant(n))
        took = time.perf_counter() - start
        if took > 0.1 or n >= 1 << 20:
            break
        n *= 4
    n = max(1, int(n * 0.3 / max(took, 1e-6)))
    batches, elapsed = 0, 0.0
    while elapsed < seconds:
        start = time.perf_counter()
        run(tf.constant(n))
        elapsed += time.perf_counter() - start
        batches += n
    return batches / elapsed


def timed_feeding(put, item, take, unblock, seconds: float, device: str | None = None) -> float:
    """Batches per second of a graph loop of take() (on `device`) while a Feeder thread calls put(item).

    unblock: None, or what wakes a put that waits for room when the loop is done.
    """
    with feeding(put, item, unblock):
        return timed(graph_loop(take, device), seconds)


def copy_rate(pairs: list, seconds: float) -> float:
    """np.copyto(dst, src) of each (dst, src) of pairs in turn, round after round: copies per second.

    A first round faults the pages in before the clock starts.
    """
    for dst, src in pairs:
        np.copyto(dst, src)
    copies, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for dst, src in pairs:
            np.copyto(dst, src)
        copies += len(pairs)
    return copies / (time.perf_counter() - start)
