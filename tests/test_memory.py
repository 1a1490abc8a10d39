"""Resident memory stays flat over a million put/dequeue pairs."""

import threading

import numpy as np
import psutil
import pytest
import tensorflow as tf

import pyfastq


@pytest.mark.slow
def test_rss_flat_over_a_million_elements(native):
    q = pyfastq.Queue(tf.TensorSpec([4], tf.float32), capacity=1024, backend=native)
    element = np.ones(4, np.float32)
    block = np.ones((999, 4), np.float32)

    @tf.function
    def consume(steps):
        total = tf.constant(0.0)
        for _ in tf.range(steps):
            total += tf.reduce_sum(q.dequeue_many(999)) + tf.reduce_sum(q.dequeue())
        return total

    def produce(n_blocks):
        for _ in range(n_blocks):
            q.put_many(block)
            q.put(element)  # one-at-a-time path too

    def run(n_blocks):
        t = threading.Thread(target=produce, args=(n_blocks,))
        t.start()
        total = consume(tf.constant(n_blocks))  # one step takes what one block put
        t.join()
        return float(total)

    run(100)  # warm up: tracing, allocator pools
    rss = psutil.Process().memory_info().rss
    assert run(1000) == 1000 * 1000 * 4  # a million elements, each summed once
    grown = psutil.Process().memory_info().rss - rss
    assert grown < 20 * 2**20, f"RSS grew {grown / 2**20:.1f} MiB over a million elements"
    assert q.size() == 0
