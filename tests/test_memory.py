"""Resident memory stays flat over a million put/dequeue pairs; a ring too large for memory says so."""

import re
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


# 256 MiB elements x 2**20 slots = 256 TiB: more than a 47-bit address space maps, so the allocation
# fails at once on any machine and any overcommit setting, without touching memory.
HUGE_SPEC = tf.TensorSpec([2**26], tf.float32)
HUGE_CAPACITY = 2**20


def test_a_ring_too_large_for_memory_says_how_many_bytes(native):
    with pytest.raises(MemoryError) as e:
        pyfastq.Queue(HUGE_SPEC, capacity=HUGE_CAPACITY, backend=native, name="huge")
    message = str(e.value)
    found = re.search(r"queue 'huge': a ring of (\d+) slots x (\d+) bytes needs (\d+) bytes \(256\.0 TiB\)", message)
    assert found, message
    slots, slot_bytes, needed = map(int, found.groups())
    assert (slots, slot_bytes) == (HUGE_CAPACITY, 2**28)
    # The slots and the ring's own index (a header and three cells per slot): nothing else.
    assert slots * slot_bytes < needed < slots * slot_bytes + 64 * HUGE_CAPACITY
    assert "could not be allocated" in message


def test_an_element_too_large_to_count_is_a_memory_error(native):
    # 2**40 x 2**24 bytes is 2**64: the element's byte count itself overflows 64 bits.
    with pytest.raises(MemoryError, match=r"needs more than 2\^64 bytes, which no machine can allocate"):
        pyfastq.Queue(tf.TensorSpec([2**40, 2**24], tf.uint8), capacity=4, backend=native)


def test_python_backend_allocates_per_element_and_says_so_when_it_cannot():
    # The python backend preallocates nothing: a queue whose largest element could not be held is
    # made, and an element it cannot allocate is numpy's MemoryError, naming the element's size.
    q = pyfastq.Queue(tf.TensorSpec([None], tf.float32), capacity=2, max_shapes=[2**45], backend="python")
    with pytest.raises(MemoryError, match=r"128\. TiB"):
        with q.reserve(shapes=[2**45]):
            pass
    # ... and took no slot for it.
    for i in range(2):
        q.put(np.full([3], i, np.float32), timeout=10)
    assert q.size() == 2
