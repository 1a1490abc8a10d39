"""Producer with a random-access source (len + getitem): sampler, claiming, order, shards, PyDataset, auto workers."""

import collections
import logging
import os
import threading

import numpy as np
import pytest
import tensorflow as tf

import pyfastq
from pyfastq._sources import Sampler

from _sources_data import HeldAt, Items, ShortLen, Sleepy, Unequal, WhoReads
from support import START_BUDGET_S, sampler_order, taken, wait_until

pytestmark = pytest.mark.timeout(300)

SPEC = tf.TensorSpec([], tf.int64)
MODES = ["thread", "process"]


def queue(mode, capacity=8, spec=SPEC):
    return pyfastq.Queue(spec, capacity=capacity, shared=mode == "process", backend="native")


# -- every index, once per epoch ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_every_index_once_per_epoch(native, mode):
    q = queue(mode)
    with pyfastq.Producer(q, Items(101), workers=2, mode=mode, shuffle=True, seed=5, epochs=3):
        got = taken(q)
    assert collections.Counter(got) == {i: 3 for i in range(101)}


@pytest.mark.parametrize("mode", MODES)
def test_ordered_delivers_in_the_samplers_order(native, mode):
    q = queue(mode)
    with pyfastq.Producer(q, Unequal(60), workers=2, mode=mode, ordered=True, shuffle=True, seed=7, epochs=2):
        got = taken(q)
    expected = sampler_order(60, shuffle=True, seed=7, epochs=2)
    assert got == expected
    assert sorted(got[:60]) == sorted(got[60:]) == list(range(60))  # each epoch a permutation


def test_seeded_epochs_repeat_with_the_seed_and_differ_from_each_other(native):
    def run(seed):
        q = queue("thread")
        with pyfastq.Producer(q, Items(50), workers=2, ordered=True, shuffle=True, seed=seed, epochs=3):
            got = taken(q)
        return [got[k * 50 : (k + 1) * 50] for k in range(3)]

    first, again, other = run(11), run(11), run(12)
    assert first == again
    assert first[0] != first[1] != first[2] != first[0]
    assert all(sorted(e) == list(range(50)) for e in first)
    assert first != other
    assert first[0] != list(range(50))  # shuffled at all


def test_without_shuffle_each_epoch_is_in_index_order(native):
    q = queue("thread")
    with pyfastq.Producer(q, Items(20), workers=3, ordered=True, epochs=2):
        assert taken(q) == list(range(20)) * 2


@pytest.mark.parametrize("mode", MODES)
def test_shards_are_disjoint_balanced_and_cover_the_source(native, mode):
    shards = []
    for index in range(3):
        q = queue(mode)
        # Each shard its own seed, as tf.distribute input pipelines may have: still disjoint.
        with pyfastq.Producer(q, Items(100), workers=2, mode=mode, shuffle=True, seed=index, shard=(index, 3)):
            shards.append(taken(q))
    assert sorted(len(s) for s in shards) == [33, 33, 34]
    assert sorted(i for s in shards for i in s) == list(range(100))


def test_endless_epochs_run_until_stopped(native):
    q = queue("thread")
    with pyfastq.Producer(q, Items(7), workers=2, ordered=True, epochs=None):
        got = [int(q.dequeue()) for _ in range(7 * 5)]
    assert got == list(range(7)) * 5


# -- keras PyDataset: item i is a batch --------------------------------------------------------------


def test_a_pydataset_of_x_y_batches_through_process_workers(native):
    from _keras_data import Pairs

    q = pyfastq.Queue((tf.TensorSpec([3], tf.float32), tf.TensorSpec([], tf.int64)), capacity=16, shared=True)
    with pyfastq.Producer(q, Pairs(batches=10, batch_size=6), workers=2, mode="process", ordered=True):
        got = [(x.numpy(), int(y)) for x, y in q.dataset()]
    assert [y for _, y in got] == list(range(60))
    assert all((x == y).all() for x, y in got)


def test_on_epoch_end_runs_between_epochs_in_thread_mode(native):
    from _keras_data import Reshuffled

    source = Reshuffled(batches=8, batch_size=4, seconds=0.002)
    q = pyfastq.Queue((SPEC, SPEC), capacity=8, backend="native")
    with pyfastq.Producer(q, source, workers=3, epochs=3):
        got = [(int(row), int(epoch)) for row, epoch in q.dataset()]
    assert source.epoch == 3  # once after each epoch, the last one too
    # Every read of an epoch saw that epoch's permutation whole: no read raced a reshuffle.
    for epoch in range(3):
        assert sorted(row for row, e in got if e == epoch) == list(range(32))


def test_on_epoch_end_is_not_called_in_process_mode_and_says_so(native, caplog):
    from _keras_data import Reshuffled

    caplog.set_level(logging.WARNING, logger="pyfastq")
    source = Reshuffled(batches=4, batch_size=4)
    q = pyfastq.Queue((SPEC, SPEC), capacity=8, shared=True)
    with pyfastq.Producer(q, source, workers=2, mode="process", epochs=2):
        got = [(int(row), int(epoch)) for row, epoch in q.dataset()]
    # Each worker's copy keeps its first order: still every row once per epoch.
    assert collections.Counter(row for row, _ in got) == {i: 2 for i in range(16)}
    assert {e for _, e in got} == {0}
    assert any("Reshuffled.on_epoch_end is not called in mode='process'" in r.getMessage() for r in caplog.records)


def test_batched_splits_any_sources_items(native):
    batches = [np.arange(k * 4, (k + 1) * 4, dtype=np.int64) for k in range(5)]
    q = queue("thread", capacity=3)  # smaller than a batch: its rows go in as slots come free
    with pyfastq.Producer(q, batches, workers=2, batched=True, ordered=True):
        assert taken(q) == list(range(20))


# -- claiming: a slow item holds back no other ----------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_a_held_item_does_not_stall_the_others(native, mode, tmp_path):
    gate = str(tmp_path / "gate")
    n = 40
    q = queue(mode, capacity=64)
    with pyfastq.Producer(q, HeldAt(n, held=0, gate=gate), workers=2, mode=mode) as p:
        # Item 0 is held until the gate opens: the other worker reads on; at most the rest of
        # the held worker's claim (pyfastq._sources.CLAIM positions) waits with it.
        from pyfastq._sources import CLAIM

        wait_until(lambda: q.size() >= n - CLAIM, "the items not claimed with the held one",
                   timeout=START_BUDGET_S)
        assert p.running
        open(gate, "w").close()
        got = taken(q)
    assert sorted(got) == list(range(n))


# -- workers="auto" -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_auto_workers_grow_while_the_consumer_waits_and_shrink_while_it_does_not(native, mode, caplog):
    caplog.set_level(logging.INFO, logger="pyfastq")
    q = queue(mode, capacity=8)
    # Items that wait 20 ms each: one worker makes 50 a second; a consumer taking as fast as it can waits.
    with pyfastq.Producer(q, Sleepy(1000, 0.02), workers="auto", mode=mode, max_workers=3, epochs=None) as p:
        assert p.workers == 1
        stop = threading.Event()

        def consume():
            while not stop.is_set():
                q.dequeue()

        consumer = threading.Thread(target=consume, daemon=True)
        consumer.start()
        try:
            wait_until(lambda: p.workers == 3, "the pool to grow to max_workers while the consumer waits")
        finally:
            stop.set()
            consumer.join(START_BUDGET_S)
        # Nobody takes now: the workers wait for room, and the pool shrinks back to one.
        wait_until(lambda: p.workers == 1, "the pool to shrink while the workers wait for room")
    messages = [r.getMessage() for r in caplog.records if r.name == "pyfastq"]
    assert any("3 workers now" in m for m in messages) and any("1 workers now" in m for m in messages)


# -- worker_info and failures -------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_worker_info_inside_getitem(native, mode):
    q = pyfastq.Queue((SPEC, SPEC, SPEC), capacity=8, shared=mode == "process")
    with pyfastq.Producer(q, WhoReads(30, mode), workers=2, mode=mode):
        got = [tuple(int(c) for c in e) for e in q.dataset()]
    assert sorted(i for i, _, _ in got) == list(range(30))
    assert {w for _, w, _ in got} <= {0, 1}
    assert all(same_mode for _, _, same_mode in got)


@pytest.mark.parametrize("mode", MODES)
def test_an_index_error_inside_len_fails_the_queue_naming_the_index(native, mode):
    q = queue(mode)
    with pyfastq.Producer(q, ShortLen(10), workers=2, mode=mode) as p:
        with pytest.raises(tf.errors.AbortedError, match=r"(?s)IndexError.*source\[9\] of a random-access source"):
            taken(q)
    assert any(isinstance(e, IndexError) for e in p.errors)


# -- refusals -----------------------------------------------------------------------------------------


def generator(i, n):
    yield from range(i, 10, n)


@pytest.mark.parametrize(
    "sampling",
    [{"shuffle": True}, {"epochs": 2}, {"epochs": None}, {"shard": (0, 2)}, {"workers": "auto"}, {"batched": True}],
)
def test_sampling_needs_a_random_access_source(sampling):
    q = pyfastq.Queue(SPEC, backend="python")
    with pytest.raises(ValueError, match="need a random-access source"):
        pyfastq.Producer(q, generator, **sampling)


@pytest.mark.parametrize(
    "bad",
    [{"epochs": 0}, {"epochs": 1.5}, {"shard": (3, 3)}, {"shard": (0,)}, {"shard": (-1, 2)},
     {"max_workers": 2}, {"workers": "auto", "max_workers": 0}, {"workers": "many"}],
)
def test_bad_sampling_arguments(bad):
    q = pyfastq.Queue(SPEC, backend="python")
    with pytest.raises(ValueError):
        pyfastq.Producer(q, Items(4), **bad)


def test_neither_callable_nor_random_access_is_a_type_error():
    with pytest.raises(TypeError, match="random-access source"):
        pyfastq.Producer(pyfastq.Queue(SPEC, backend="python"), 42)


def test_the_python_backend_reads_a_source_too():
    q = pyfastq.Queue(SPEC, capacity=4, backend="python")
    with pyfastq.Producer(q, Items(25), workers=2, ordered=True, epochs=2):
        got = [int(x) for x in q.dataset()]
    assert got == list(range(25)) * 2


def test_sampler_shards_and_epochs_arithmetic():
    s = Sampler(10, shard=(1, 3), epochs=2)
    assert s.per_epoch == 3 and s.total == 6
    assert [s.index(p) for p in range(6)] == [1, 4, 7, 1, 4, 7]
    assert Sampler(0, epochs=None).total == 0  # nothing to read, even for ever
    assert os.sched_getaffinity(0)  # auto's default max_workers
