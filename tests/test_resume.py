"""Producer.state() and resume=state; restarts=k: a dead worker process replaced, nothing lost, nothing repeated."""

import collections
import json
import os
import random
import signal
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from _resume_data import ReservesAt, Rows

import pyfastq

from _sources_data import Items, Sleepy
from support import START_BUDGET_S, read_line, sampler_order, shm_segments, start_child, taken, wait_until

pytestmark = pytest.mark.timeout(300)

SPEC = tf.TensorSpec([], tf.int64)
MODES = ["thread", "process"]
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))


def queue(mode, capacity=16, spec=SPEC):
    return pyfastq.Queue(spec, capacity=capacity, shared=mode == "process", backend="native")


def take(q, n):
    return [int(q.dequeue()) for _ in range(n)]


# -- state() and resume ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_take_300_state_stop_resume_in_a_new_queue(native, mode, ordered):
    q = queue(mode)
    p = pyfastq.Producer(q, Items(1000), workers=3, mode=mode, ordered=ordered, shuffle=True, seed=5,
                         close_on_exit=False).start()
    first = take(q, 300)
    state = json.loads(json.dumps(p.state()))  # what a checkpoint stores
    p.stop()
    assert state["position"] <= 300 and state["position"] + len(state["taken"]) == 300
    q2 = queue(mode)
    with pyfastq.Producer(q2, Items(1000), workers=3, mode=mode, ordered=ordered, shuffle=True, resume=state):
        rest = taken(q2)
    assert collections.Counter(first + rest) == {i: 1 for i in range(1000)}
    if ordered:
        assert state["position"] == 300 and state["taken"] == []
        assert first + rest == sampler_order(1000, shuffle=True, seed=5)


@pytest.mark.parametrize("mode", MODES)
def test_resume_carries_on_with_the_later_epochs(native, mode):
    q = queue(mode)
    p = pyfastq.Producer(q, Items(100), workers=2, mode=mode, ordered=True, shuffle=True, seed=3, epochs=3,
                         close_on_exit=False).start()
    first = take(q, 130)  # into the second epoch
    state = p.state()
    p.stop()
    assert state["epoch"] == 1
    q2 = queue(mode)
    with pyfastq.Producer(q2, Items(100), workers=2, mode=mode, ordered=True, shuffle=True, epochs=3, resume=state):
        rest = taken(q2)
    assert first + rest == sampler_order(100, shuffle=True, seed=3, epochs=3)


def test_state_counts_what_consumers_took_not_what_workers_made(native):
    q = queue("thread", capacity=16)
    p = pyfastq.Producer(q, Items(100), workers=2, shuffle=True, seed=1, close_on_exit=False).start()
    wait_until(lambda: q.stats()["put_waiters"] > 0, "the workers to fill the queue and wait")
    assert p.state()["position"] == 0 and p.state()["taken"] == []
    take(q, 10)
    state = p.state()
    assert state["position"] + len(state["taken"]) == 10
    p.stop()


@pytest.mark.parametrize("element", ["array", "list"])
def test_a_tagged_put_records_its_position_when_taken(native, element):
    # An exact array takes the builtin's fast path, a list the converting one: both carry the tag.
    q = pyfastq.Queue(tf.TensorSpec([2], tf.int64), capacity=8)
    q._impl.begin_tracking(0, [])
    for position in (0, 2, 1, 5):
        x = np.array([position, 7], np.int64) if element == "array" else [position, 7]
        q._tagged_put(x, None, position)
    assert q._impl.taken_state() == (0, [], False)  # made, not taken
    assert [int(q.dequeue()[0]) for _ in range(3)] == [0, 2, 1]
    assert q._impl.taken_state() == (3, [], False)
    q.dequeue()
    assert q._impl.taken_state() == (3, [5], False)
    with pytest.raises(TypeError, match="3 positional arguments"):
        q._tagged_put(x, None)


def test_resume_of_batched_items_counts_items_whose_last_row_was_taken(native):
    q = queue("thread", capacity=64)
    p = pyfastq.Producer(q, Rows(50, 4), workers=1, batched=True, ordered=True, close_on_exit=False).start()
    first = take(q, 42)  # items 0..9 whole, two rows of item 10
    state = p.state()
    p.stop()
    assert state["position"] == 10
    q2 = queue("thread", capacity=64)
    with pyfastq.Producer(q2, Rows(50, 4), batched=True, ordered=True, resume=state):
        rest = taken(q2)
    assert first[:40] + rest == list(range(200))  # item 10 again whole: its state was "not taken"


def test_a_state_that_does_not_match_the_source_is_refused(native):
    q = queue("thread")
    p = pyfastq.Producer(q, Items(100), shuffle=True, seed=2, close_on_exit=False)
    state = p.state()
    for change, field in [(dict(source=Items(99)), "length"), (dict(shuffle=False), "shuffle"),
                          (dict(seed=3), "seed"), (dict(shard=(0, 2)), "shard")]:
        kwargs = dict(source=Items(100), shuffle=True, resume=state) | change
        with pytest.raises(ValueError, match=f"state's {field}"):
            pyfastq.Producer(queue("thread"), **kwargs)
    with pytest.raises(ValueError, match=r"Producer\.state"):
        pyfastq.Producer(queue("thread"), Items(100), resume={"position": 3})


def test_generator_sources_refuse_resume_and_restarts(native):
    def fn(i, n):
        yield np.int64(i)

    for kwargs in (dict(restarts=2), dict(resume={})):
        with pytest.raises(ValueError, match="random-access source"):
            pyfastq.Producer(queue("process"), fn, mode="process", **kwargs)


def test_restarts_are_for_worker_processes_and_ray_actors(native):
    with pytest.raises(ValueError, match='restarts replace dead worker processes and Ray actors'):
        pyfastq.Producer(queue("thread"), Items(10), restarts=1)


# -- restarts: a dead worker process replaced -------------------------------------------------------


def kill_at_random(p, stop, every, kills):
    """Kills one of p's worker processes at random every `every` seconds until stop; appends the pids to kills."""
    rng = random.Random(0)
    while not stop.wait(every):
        pids = p.pids
        if not pids:
            continue
        pid = rng.choice(pids)
        try:
            os.kill(pid, signal.SIGKILL)
            kills.append(pid)
        except ProcessLookupError:
            pass


def taken_while_killing(p, q):
    """Starts p and takes every element of q while one of its workers is SIGKILLed every 0.3 s: (elements, kills)."""
    stop, kills = threading.Event(), []
    with p:
        killer = threading.Thread(target=kill_at_random, args=(p, stop, 0.3, kills), daemon=True)
        killer.start()
        try:
            return taken(q), kills
        finally:
            stop.set()
            killer.join()


@pytest.mark.parametrize("ordered", [False, True], ids=["unordered", "ordered"])
def test_chaos_workers_killed_every_0_3_s_every_index_once(native, ordered):
    before = shm_segments()
    q = queue("process", capacity=16)
    n = 5000
    p = pyfastq.Producer(q, Sleepy(n, 0.002), workers=3, mode="process", ordered=ordered, shuffle=True, seed=9,
                         restarts=10_000)
    got, kills = taken_while_killing(p, q)
    assert len(kills) >= 3, f"only {len(kills)} kills: the epoch ended too soon to test anything"
    assert collections.Counter(got) == {i: 1 for i in range(n)}
    if ordered:
        assert got == sampler_order(n, shuffle=True, seed=9)
    assert p.errors == []
    assert shm_segments() == before


def test_chaos_rows_of_batched_items_once(native):
    q = queue("process", capacity=16)
    p = pyfastq.Producer(q, Rows(600, 7, 0.004), workers=3, mode="process", batched=True, restarts=10_000)
    got, kills = taken_while_killing(p, q)
    assert len(kills) >= 3
    assert collections.Counter(got) == {i: 1 for i in range(600 * 7)}


def test_a_worker_killed_holding_a_reserved_slot_is_replaced_and_the_slot_reclaimed(native, tmp_path):
    marker = str(tmp_path / "reserved")
    capacity = 4
    q = queue("process", capacity=capacity)
    p = pyfastq.Producer(q, ReservesAt(40, 17, marker), workers=2, mode="process", restarts=1,
                         close_on_exit=False)
    with p:
        got = []
        while not os.path.exists(marker):  # a dequeue may wait for nothing once only the holder is left
            if q.size():
                got.append(int(q.dequeue()))
            else:
                time.sleep(0.005)
        with open(marker) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        while len(got) < 40:
            got.append(int(q.dequeue()))
        assert sorted(got) == list(range(40))  # the half-written -1 never reached a consumer
        wait_until(lambda: not p.running, "the workers to finish")
        # Every slot free again: an all-or-nothing put of `capacity` elements goes in at once.
        q.put_many(np.arange(capacity, dtype=np.int64), timeout=START_BUDGET_S)
        assert take(q, capacity) == list(range(capacity))
    assert p.errors == []


def test_past_restarts_a_death_fails_the_queue_naming_the_worker(native):
    q = queue("process", capacity=4)
    p = pyfastq.Producer(q, Sleepy(10_000, 0.002), workers=1, mode="process", restarts=1)
    with p:
        take(q, 5)
        first = p.pids[0]
        os.kill(first, signal.SIGKILL)
        wait_until(lambda: p.pids[0] != first, "the replacement")
        take(q, 5)
        os.kill(p.pids[0], signal.SIGKILL)
        with pytest.raises(tf.errors.AbortedError, match=r"worker 0 of 1 .*restarts=1 used up"):
            while True:
                q.dequeue()


# -- a trainer killed and restarted from its checkpoint ---------------------------------------------


def test_a_trainer_killed_after_a_checkpoint_resumes_every_index_once(native, tmp_path, leftovers):
    n, step = 3000, 50
    log = tmp_path / "steps.jsonl"

    def steps():
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines() if line.endswith("}")]

    child = start_child(os.path.join(TESTS_DIR, "_resume_child.py"), log, n, step, cwd=tmp_path)
    leftovers.append(child)
    assert read_line(child) == "ready"
    wait_until(lambda: len(steps()) >= 8, "the trainer to take 8 steps")
    child.kill()
    child.wait(30)
    first = steps()
    assert len(first) < n // step, "the first run ended before it was killed"
    (tmp_path / "state.json").write_text(json.dumps(first[-1]["state"]))
    second = start_child(os.path.join(TESTS_DIR, "_resume_child.py"), log, n, step, tmp_path / "state.json",
                         cwd=tmp_path)
    leftovers.append(second)
    assert read_line(second) == "ready"
    assert second.wait(START_BUDGET_S) == 0
    trained = [e for s in steps() for e in s["elements"]]
    assert collections.Counter(trained) == {i: 1 for i in range(n)}
