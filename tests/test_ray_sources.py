"""Producer(mode="ray") with a random-access source, on one local Ray of 2 CPUs for the module."""

import collections
import logging
import threading

import pytest
import tensorflow as tf

import pyfastq
from pyfastq._sources import Sampler

from _sources_data import Items, ShortLen, Unequal, WhoReads
from support import START_BUDGET_S, wait_until

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.timeout(300)

SPEC = tf.TensorSpec([], tf.int64)


@pytest.fixture(scope="module")
def local_ray():
    """The module's Ray: started here (never a cluster some other program started), loopback only."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 << 20)
    yield
    ray.shutdown()


def taken(q):
    return [int(x) for x in q.dataset()]


def test_every_index_once_per_epoch(local_ray):
    q = pyfastq.Queue(SPEC, capacity=8)
    with pyfastq.Producer(q, Items(101), workers=2, mode="ray", shuffle=True, seed=5, epochs=3):
        got = taken(q)
    assert collections.Counter(got) == {i: 3 for i in range(101)}


def test_ordered_delivers_in_the_samplers_order(local_ray):
    q = pyfastq.Queue(SPEC, capacity=8)
    with pyfastq.Producer(q, Unequal(60), workers=2, mode="ray", ordered=True, shuffle=True, seed=7, epochs=2):
        got = taken(q)
    s = Sampler(60, shuffle=True, seed=7, epochs=2)
    assert got == [s.index(p) for p in range(s.total)]


def test_worker_info_inside_getitem(local_ray):
    q = pyfastq.Queue((SPEC, SPEC, SPEC), capacity=8)
    with pyfastq.Producer(q, WhoReads(30, "ray"), workers=2, mode="ray"):
        got = [tuple(int(c) for c in e) for e in q.dataset()]
    assert sorted(i for i, _, _ in got) == list(range(30))
    assert all(same_mode for _, _, same_mode in got)


def test_an_index_error_inside_len_fails_the_queue_naming_the_index(local_ray):
    q = pyfastq.Queue(SPEC, capacity=8)
    with pyfastq.Producer(q, ShortLen(10), workers=2, mode="ray") as p:
        with pytest.raises(tf.errors.AbortedError, match=r"(?s)IndexError.*source\[9\] of a random-access source"):
            taken(q)
    assert any(isinstance(e, IndexError) for e in p.errors)


def test_auto_workers_grow_while_the_consumer_waits_and_shrink_while_it_does_not(local_ray, caplog):
    caplog.set_level(logging.INFO, logger="pyfastq")
    q = pyfastq.Queue((SPEC, SPEC, SPEC), capacity=8)
    # Items that wait 20 ms each: one actor makes 50 a second; a consumer taking as fast as it can waits.
    # Half a CPU each: three actors fit in the module's Ray of 2 CPUs.
    with pyfastq.Producer(q, WhoReads(1000, "ray", seconds=0.02), workers="auto", mode="ray", max_workers=3,
                          epochs=None, ray_options={"num_cpus": 0.5}) as p:
        assert p.workers == 1
        stop, readers = threading.Event(), set()

        def consume():
            while not stop.is_set():
                readers.add(int(q.dequeue()[1]))

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        try:
            wait_until(lambda: p.workers == 3, "the pool to grow to max_workers while the consumer waits")
            wait_until(lambda: readers == {0, 1, 2}, "items read by each of the three actors")
            assert len(p.actors) == 3
        finally:
            stop.set()
            consumer.join(START_BUDGET_S)
        wait_until(lambda: p.workers == 1, "the pool to shrink while the actors wait for room")
    messages = [r.getMessage() for r in caplog.records if r.name == "pyfastq"]
    assert any("3 workers now" in m for m in messages) and any("1 workers now" in m for m in messages)
