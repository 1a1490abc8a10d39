"""Producer(mode="ray") with a random-access source, on one local Ray of 2 CPUs for the module."""

import collections
import json
import logging
import os
import threading
import time

import pytest
import tensorflow as tf
from _resume_data import HeldUntil, Rows

import pyfastq
from pyfastq._compat import actor_id
from pyfastq._sources import Sampler

from _sources_data import Items, ShortLen, Sleepy, Unequal, WhoReads
from support import START_BUDGET_S, taken, wait_until

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


def test_every_index_once_per_epoch(local_ray, backend):
    q = pyfastq.Queue(SPEC, capacity=8, backend=backend)  # native: each item tagged; python: none
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


# -- restarts: a dead actor replaced ----------------------------------------------------------------


def take_until(q, got, predicate, what):
    """Takes the elements there are into got until predicate() holds (the feeder sees a death only while it can
    put); never waits in a dequeue, which may wait for nothing while ordered waits on the held item."""
    deadline = time.monotonic() + START_BUDGET_S
    while not predicate():
        assert time.monotonic() < deadline, f"gave up after {START_BUDGET_S:g} s waiting for {what}"
        if q.size():
            got.append(int(q.dequeue()))
        else:
            time.sleep(0.005)


def kill_and_await_replacement(p, q, got, index=0):
    """ray.kill of actor `index` (no restart by Ray); returns once the Producer has replaced it."""
    killed = actor_id(p.actors[index])
    ray.kill(p.actors[index], no_restart=True)
    take_until(q, got, lambda: actor_id(p.actors[index]) != killed, f"actor {index}'s replacement")


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_a_killed_actor_is_replaced_and_every_index_comes_once(local_ray, caplog, tmp_path, ordered):
    caplog.set_level(logging.WARNING, logger="pyfastq")
    n = 2000
    s = Sampler(n, shuffle=True, seed=4)
    gate = str(tmp_path / "gate")
    q = pyfastq.Queue(SPEC, capacity=16)
    # The item at position 500 waits for the gate: the actor reading it is killed with that read (and any
    # queued behind it) under way, so their positions are lost with it and must be read again.
    with pyfastq.Producer(q, HeldUntil(n, s.index(500), gate), workers=2, mode="ray", ordered=ordered, shuffle=True,
                          seed=4, restarts=2, ray_options={"num_cpus": 0.5}) as p:
        got = []
        take_until(q, got, lambda: os.path.exists(gate + ".reading"), "an actor to begin reading the held item")
        with open(gate + ".reading") as f:
            holder = int(f.read())
        kill_and_await_replacement(p, q, got, holder)
        open(gate, "w").close()  # only now: the killed actor never made the held item
        assert p.workers == 2 and len(p.actors) == 2
        assert ray.get(p.actors[holder].ready.remote(), timeout=START_BUDGET_S)  # the replacement is up
        got += taken(q)
    assert collections.Counter(got) == {i: 1 for i in range(n)}
    if ordered:
        assert got == [s.index(i) for i in range(n)]
    assert p.errors == []
    messages = [r.getMessage() for r in caplog.records if r.name == "pyfastq" and r.levelno == logging.WARNING]
    assert len([m for m in messages if "replaced by Ray actor" in m]) == 1
    assert any(f"worker {holder} (Ray actor" in m and "(1 restarts left)" in m for m in messages)


def test_past_restarts_an_actors_death_fails_the_queue_naming_the_worker(local_ray):
    q = pyfastq.Queue(SPEC, capacity=16)
    with pyfastq.Producer(q, Sleepy(2000, 0.002), workers=2, mode="ray", restarts=2,
                          ray_options={"num_cpus": 0.5}) as p:
        got = []
        for _ in range(2):
            got += [int(q.dequeue()) for _ in range(50)]
            kill_and_await_replacement(p, q, got)
        ray.kill(p.actors[0], no_restart=True)
        named = r"(?s)worker 0 of 2 \(Ray actor \w+\) died.*restarts=2 used up"
        with pytest.raises(tf.errors.AbortedError, match=named):
            while True:
                got.append(int(q.dequeue()))
    assert len(got) < 2000  # the death, not the epoch's end, ended it
    assert any("restarts=2 used up" in str(e) for e in p.errors)


def test_generator_sources_refuse_restarts_in_ray_mode(local_ray):
    def fn(i, n):
        yield 1

    with pytest.raises(ValueError, match="restarts need a random-access source"):
        pyfastq.Producer(pyfastq.Queue(SPEC, capacity=8), fn, mode="ray", restarts=1)


# -- state() and resume ------------------------------------------------------------------------------


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_take_300_state_stop_resume_in_a_new_queue(local_ray, native, ordered):
    q = pyfastq.Queue(SPEC, capacity=16, backend="native")
    p = pyfastq.Producer(q, Items(1000), workers=2, mode="ray", ordered=ordered, shuffle=True, seed=5,
                         close_on_exit=False, ray_options={"num_cpus": 0.5}).start()
    first = [int(q.dequeue()) for _ in range(300)]
    state = json.loads(json.dumps(p.state()))  # what a checkpoint stores
    p.stop()
    assert state["position"] <= 300 and state["position"] + len(state["taken"]) == 300
    q2 = pyfastq.Queue(SPEC, capacity=16, backend="native")
    with pyfastq.Producer(q2, Items(1000), workers=2, mode="ray", ordered=ordered, shuffle=True, resume=state,
                          ray_options={"num_cpus": 0.5}):
        rest = taken(q2)
    assert collections.Counter(first + rest) == {i: 1 for i in range(1000)}
    if ordered:
        assert state["position"] == 300 and state["taken"] == []
        s = Sampler(1000, shuffle=True, seed=5)
        assert first + rest == [s.index(i) for i in range(1000)]


def test_resume_of_batched_items_counts_items_whose_last_row_was_taken(local_ray, native):
    q = pyfastq.Queue(SPEC, capacity=64, backend="native")
    p = pyfastq.Producer(q, Rows(50, 4), workers=2, mode="ray", batched=True, ordered=True, close_on_exit=False,
                         ray_options={"num_cpus": 0.5}).start()
    first = [int(q.dequeue()) for _ in range(42)]  # items 0..9 whole, two rows of item 10
    state = p.state()
    p.stop()
    assert state["position"] == 10 and state["taken"] == []
    q2 = pyfastq.Queue(SPEC, capacity=64, backend="native")
    with pyfastq.Producer(q2, Rows(50, 4), workers=2, mode="ray", batched=True, ordered=True, resume=state,
                          ray_options={"num_cpus": 0.5}):
        rest = taken(q2)
    assert first[:40] + rest == list(range(200))  # item 10 again whole: its state was "not taken"


def test_state_after_a_replacement_resumes_every_index_once(local_ray, native):
    q = pyfastq.Queue(SPEC, capacity=16, backend="native")
    p = pyfastq.Producer(q, Sleepy(1000, 0.002), workers=2, mode="ray", shuffle=True, seed=6, restarts=1,
                         close_on_exit=False, ray_options={"num_cpus": 0.5}).start()
    first = [int(q.dequeue()) for _ in range(100)]
    kill_and_await_replacement(p, q, first, 1)
    first += [int(q.dequeue()) for _ in range(200)]
    state = p.state()
    p.stop()
    assert p.errors == []
    q2 = pyfastq.Queue(SPEC, capacity=16, backend="native")
    with pyfastq.Producer(q2, Sleepy(1000, 0), workers=2, mode="ray", shuffle=True, resume=state,
                          ray_options={"num_cpus": 0.5}):
        rest = taken(q2)
    assert collections.Counter(first + rest) == {i: 1 for i in range(1000)}
