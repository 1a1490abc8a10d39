"""Producer(mode="ray") on a local Ray of 2 CPUs: delivery, order, seeds, failures, deaths, stop, Ctrl-C.

One Ray for the whole module: it takes seconds to start on 2 cores. Its actors
take 1 CPU each unless a test asks for less, so no test runs more than two at once.
"""

import functools
import os
import signal
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import pyfastq
from pyfastq._compat import actor_id
from pyfastq._worker import worker_seed

from _workers import count, forever, raises_after, ray_info, sleeps_in_fn, tagged
from support import START_BUDGET_S, error_class, read_line, start_child, still_running, wait_until

ray = pytest.importorskip("ray")

SPEC = tf.TensorSpec([], tf.int64)
PAIR = (SPEC, SPEC)
linux_only = pytest.mark.skipif(sys.platform != "linux", reason="signals and process ids of Linux")


@pytest.fixture(scope="module")
def local_ray():
    """The module's Ray: started here (never a cluster some other program started), loopback only."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=200 << 20)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def queue(backend="native", capacity=8, spec=SPEC, shared=False):
    return pyfastq.Queue(spec, capacity=capacity, backend=backend, shared=shared)


def actor_gone(actor, timeout=30.0) -> bool:
    """True once calling the actor raises Ray's actor error (it was killed), within timeout seconds.

    ray.kill lands a little later: a call Ray delivers before it is answered (at once by an actor whose fn
    has finished), so answered calls are made again until the error comes or the time is up.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            ray.get(actor.outcome.remote(), timeout=max(0.1, deadline - time.monotonic()))
        except ray.exceptions.RayActorError:
            return True
        except ray.exceptions.GetTimeoutError:
            return False
        time.sleep(0.1)
    return False  # it kept answering: alive, not killed


# -- delivery ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["native", "native shared", "python"])
def test_every_element_exactly_once_into_any_queue(local_ray, kind, request):
    backend = request.getfixturevalue("native") if kind.startswith("native") else "python"  # conftest's rule
    q = queue(backend, capacity=8, shared=kind.endswith("shared"))
    with pyfastq.Producer(q, functools.partial(count, total=3000), workers=2, mode="ray") as p:
        assert len(p.actors) == 2 and all(isinstance(a, ray.actor.ActorHandle) for a in p.actors)
        got = [int(x) for x in q.dataset()]
    assert sorted(got) == list(range(3000))
    assert p.errors == [] and not p.running and q.closed


def test_elements_are_nests_and_each_worker_keeps_its_order(local_ray, native):
    q = queue(spec=PAIR, capacity=16)
    fn = functools.partial(tagged, counts=[300, 200], jitter=0.0005)  # ~0.25 ms apart: several chunks each
    with pyfastq.Producer(q, fn, workers=2, mode="ray"):
        got = [(int(a), int(b)) for a, b in q.dataset()]
    assert sorted(got) == [(w, k) for w, n in enumerate([300, 200]) for k in range(n)]
    for w in range(2):
        assert [k for v, k in got if v == w] == list(range([300, 200][w]))


def test_ordered_is_the_threads_round_robin_whatever_the_timing(local_ray, backend):
    counts = [130, 20, 75]  # unequal: finished workers drop out of the rotation; ~1 ms apart: several chunks
    expected = []
    for k in range(max(counts)):
        expected += [(w, k) for w in range(len(counts)) if k < counts[w]]
    q = queue(backend, spec=PAIR, capacity=5)
    fn = functools.partial(tagged, counts=counts)
    with pyfastq.Producer(q, fn, workers=3, mode="ray", ordered=True, ray_options={"num_cpus": 0.5}) as p:
        got = [(int(a), int(b)) for a, b in q.dataset()]
    assert got == expected and p.errors == []


def test_seeds_and_worker_info_in_the_actors(local_ray, native):
    spec = (SPEC, SPEC, tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.float64), SPEC)

    def run(seed):
        q = queue(spec=spec, capacity=4)
        with pyfastq.Producer(q, ray_info, workers=2, mode="ray", seed=seed):
            return sorted(tuple(t.numpy().item() for t in e) for e in q.dataset())

    first, again, other = run(7), run(7), run(8)
    assert first == again and first != other  # reproducible, and from the seed
    (w0, fits0, r0, n0, s0), (w1, fits1, r1, n1, s1) = first
    assert (w0, w1) == (0, 1) and fits0 == fits1 == 1  # worker_info(): index, num_workers, mode "ray", no queue
    assert r0 != r1 and n0 != n1  # random and numpy.random seeded per worker
    assert (s0, s1) == (worker_seed(7, 0) % 2**62, worker_seed(7, 1) % 2**62)


def test_lambdas_and_closures_travel_by_value(local_ray, native):
    offset = 10
    q = queue()
    with pyfastq.Producer(q, lambda i, n: iter([np.int64(i + offset)]), workers=2, mode="ray"):
        assert sorted(int(x) for x in q.dataset()) == [10, 11]


def test_close_on_exit_false_leaves_the_queue_open(local_ray, native):
    q = queue(capacity=16)
    with pyfastq.Producer(q, functools.partial(count, total=5), workers=2, mode="ray", close_on_exit=False) as p:
        wait_until(lambda: not p.running, "the actors to finish", timeout=60)
    assert not q.closed and q.size() == 5


def test_elements_larger_than_a_chunk_go_one_per_chunk(local_ray, native):
    spec = tf.TensorSpec([300_000], tf.float32)  # 1.2 MB: more than CHUNK_BYTES, through Ray's shared-memory store

    def fn(i, n):
        for k in range(i, 12, n):
            yield np.full([300_000], k, np.float32)

    q = queue(spec=spec, capacity=3)
    with pyfastq.Producer(q, fn, workers=2, mode="ray"):
        got = sorted(int(x[0]) for x in q.dataset() if np.all(x == x[0]))
    assert got == list(range(12))


# -- an actor's chunks, without Ray ------------------------------------------------------------


def chunks_of(elements, spec_shape=(), chunk_bytes=64):
    from pyfastq._layout import Layout, Leaf
    from pyfastq._ray import _Chunks

    chunks = _Chunks(Layout(Leaf("0", np.dtype(np.int64), spec_shape)), chunk_bytes)
    threading.Thread(target=chunks.make, args=(elements,), daemon=True).start()
    return chunks


def test_chunks_hold_every_element_once_in_order_full_or_not():
    chunks = chunks_of(np.int64(k) for k in range(100))  # 8 per chunk of 64 bytes
    got = []
    while (chunk := chunks.take()) is not None:
        assert 1 <= len(chunk[0]) <= 8
        got += chunk[0].tolist()
    assert got == list(range(100)) and chunks.failure is None


def test_an_element_larger_than_a_chunk_is_a_chunk_of_its_own():
    chunks = chunks_of((np.full([20], k, np.int64) for k in range(5)), spec_shape=(20,))  # 160 bytes each
    got = []
    while (chunk := chunks.take()) is not None:
        assert chunk[0].shape == (1, 20)
        got.append(int(chunk[0][0, 0]))
    assert got == list(range(5))


def test_a_chunk_goes_when_it_is_due_while_fn_is_busy():
    from pyfastq._ray import CHUNK_S

    def slow():
        yield np.int64(1)
        time.sleep(3600)  # the element made so far must not wait for the next

    chunks = chunks_of(slow())
    start = time.monotonic()
    assert chunks.take()[0].tolist() == [1]
    assert time.monotonic() - start < CHUNK_S + 1.0


def test_what_fn_raises_is_kept_after_the_rows_made_before():
    def fails():
        yield np.int64(1)
        raise KeyError("late")

    chunks = chunks_of(fails())
    rows = []
    while (chunk := chunks.take()) is not None:
        rows += chunk[0].tolist()
    assert rows == [1] and isinstance(chunks.failure, KeyError)


# -- arguments (no actor starts) ------------------------------------------------------------


def test_what_does_not_pickle_is_a_type_error_at_producer_naming_it(local_ray):
    lock = threading.Lock()

    def fn(i, n):
        with lock:
            yield np.int64(i)

    with pytest.raises(TypeError, match=r'mode="ray" sends fn .* does not pickle.*lock'):
        pyfastq.Producer(queue("python"), fn, mode="ray")


def test_a_shared_queue_cannot_travel_to_an_actor(local_ray, native):
    q = queue(shared=True)

    def fn(i, n):
        q.put(np.int64(i))
        return iter(())

    with pytest.raises(TypeError, match="shared queue"):
        pyfastq.Producer(q, fn, mode="ray")


@pytest.mark.parametrize("options,error", [({"num_cpus": -1}, ValueError), ({"no_such_option": 1}, ValueError)])
def test_bad_ray_options_are_refused_at_producer(local_ray, options, error):
    with pytest.raises(error):
        pyfastq.Producer(queue("python"), functools.partial(count, total=1), mode="ray", ray_options=options)


# -- failures -------------------------------------------------------------------------------


def test_a_worker_exception_reaches_the_consumer_with_the_remote_traceback(local_ray, backend):
    q = queue(backend, capacity=64)
    with pyfastq.Producer(q, functools.partial(raises_after, n=3), workers=2, mode="ray") as p:
        with pytest.raises(error_class(backend, tf.errors.AbortedError)) as info:
            for _ in range(10_000):
                q.dequeue()
    message = str(info.value)
    assert "worker 1 of 2 (Ray actor" in message and f"{actor_id(p.actors[1])} on " in message
    assert "KeyError" in message and "missing field 'label'" in message
    assert "Traceback" in message and "raises_after" in message
    assert len(p.errors) == 1 and isinstance(p.errors[0], KeyError)


def test_an_exception_is_seen_at_once_while_ordered_waits_on_another_worker(local_ray, native):
    def fn(i, n):
        if i == 0:
            yield np.int64(0)
            time.sleep(3600)  # worker 1's turn never comes
        else:
            raise KeyError("worker 1 fails before its turn")
        yield np.int64(-1)

    q = queue()
    with pyfastq.Producer(q, fn, workers=2, mode="ray", ordered=True, ray_options={"num_cpus": 0.5}):
        with pytest.raises(tf.errors.AbortedError, match=r"worker 1 of 2 .* raised KeyError"):
            for _ in range(10):
                q.dequeue()


def test_a_worker_that_cannot_load_fn_is_reported_with_the_reason(local_ray, native, tmp_path, monkeypatch):
    (tmp_path / "pyfastq_vanishing_ray.py").write_text("import numpy as np\ndef fn(i, n):\n    yield np.int64(i)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import pyfastq_vanishing_ray

    (tmp_path / "pyfastq_vanishing_ray.py").unlink()  # imported here (so fn goes by reference), gone for the actors
    q = queue()
    try:
        with pyfastq.Producer(q, pyfastq_vanishing_ray.fn, workers=1, mode="ray") as p:
            with pytest.raises(tf.errors.AbortedError, match=r"worker 0 of 1 \(Ray actor .*\), loading fn, raised "
                                                             r"ModuleNotFoundError"):
                q.dequeue()
    finally:
        del sys.modules["pyfastq_vanishing_ray"]
    assert isinstance(p.errors[0], ModuleNotFoundError)


@pytest.mark.parametrize("feeder", ["putting into a full queue", "waiting for chunks"])
def test_an_actor_killed_fails_the_queue_naming_the_worker_within_5_s(local_ray, native, feeder):
    full = feeder.startswith("putting")
    q = queue(capacity=4)
    with pyfastq.Producer(q, forever if full else sleeps_in_fn, workers=2, mode="ray") as p:
        if full:
            wait_until(lambda: q.size() == 4 and q.stats()["put_waiters"] == 1, "the feeder to wait for room")
        else:
            wait_until(lambda: q.size() == 2, "the actors' first elements")
            time.sleep(0.3)  # the actors now sleep in fn and the feeder waits on them: no counter shows it
        killed = time.monotonic()
        ray.kill(p.actors[1])
        wait_until(lambda: q.closed, "the death to fail the queue", timeout=5.0)
        took = time.monotonic() - killed
        with pytest.raises(tf.errors.AbortedError) as info:
            q.dequeue()
    assert took < 5.0
    message = str(info.value)
    assert f"worker 1 of 2 (Ray actor {actor_id(p.actors[1])}) died" in message
    assert "ray.kill" in message  # Ray's own account of the death
    assert len(p.errors) == 1 and not p.running


# -- stop -------------------------------------------------------------------------------------


def test_leaving_the_with_block_kills_the_actors(local_ray, native):
    q = queue(capacity=4)
    with pyfastq.Producer(q, forever, workers=2, mode="ray") as p:
        wait_until(lambda: q.size() == 4, "the actors to fill the queue")
        left = time.monotonic()
    assert time.monotonic() - left < 2.0
    assert not p.running and q.closed and p.errors == []
    assert all(actor_gone(a) for a in p.actors)


def test_the_consumer_cancelling_the_queue_ends_the_producer_quietly(local_ray, native):
    q = queue(capacity=4)
    p = pyfastq.Producer(q, forever, workers=2, mode="ray").start()
    wait_until(lambda: q.size() == 4, "the actors to fill the queue")
    q.close(cancel=True)
    wait_until(lambda: not p.running, "the feeder to end", timeout=5.0)
    assert p.errors == [] and all(actor_gone(a) for a in p.actors)  # ended, so the actors were freed
    p.stop()


def test_actors_that_finish_are_freed(local_ray, native):
    q = queue(capacity=16)
    with pyfastq.Producer(q, functools.partial(count, total=10), workers=2, mode="ray") as p:
        assert sorted(int(x) for x in q.dataset()) == list(range(10))
        wait_until(lambda: not p.running, "the feeder to end", timeout=5.0)
        assert all(actor_gone(a) for a in p.actors)  # their CPUs are back before the with block ends


TRAINER = """
import faulthandler, sys, threading, time
import numpy as np, ray, tensorflow as tf, pyfastq
from _workers import pid_then_sleeps, pids

def announce_wait(q):
    while q.stats()["get_waiters"] == 0:
        time.sleep(0.005)
    print("ready", flush=True)  # the dataset waits for data

def main(address, how):
    # consume: data flows, actors busy in Python; starve: the trainer waits in a dequeue, actors asleep in fn
    ray.init(address=address, log_to_driver=False)
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=4)
    fn = pids if how == "consume" else pid_then_sleeps
    with pyfastq.Producer(q, fn, workers=2, mode="ray"):
        seen = set()
        while len(seen) < 2:
            seen.add(int(q.dequeue()))
        print(" ".join(map(str, sorted(seen))), flush=True)
        batches = iter(q.dataset(batch_size=2))  # built and traced before "ready"
        if how == "consume":
            next(batches)
            print("ready", flush=True)  # data flows
        else:
            threading.Thread(target=announce_wait, args=(q,), daemon=True).start()
        # The test's Ctrl-C comes within a second: if this process is still here a minute on, its threads'
        # stacks go to stderr (the test's report) and it ends, rather than leave the test waiting.
        faulthandler.dump_traceback_later(60, exit=True)
        for batch in batches:
            pass
        time.sleep(3600)


if __name__ == "__main__":
    try:
        main(*sys.argv[1:])
    except (KeyboardInterrupt, tf.errors.CancelledError) as e:
        faulthandler.cancel_dump_traceback_later()
        print("stopped by", type(e).__name__, flush=True)  # the with block has killed the actors
        sys.exit(1)
"""


def start_trainer(tmp_path, address, how, leftovers):
    """Starts TRAINER on the module's Ray; returns once it is ready, with its Popen and its actors' pids."""
    script = tmp_path / "ray_trainer.py"
    script.write_text(TRAINER)
    # What ray.init set in this process's environment (its authentication mode) lets the trainer connect.
    ray_env = {k: v for k, v in os.environ.items() if k.startswith("RAY_")}
    trainer = start_child(script, address, how, cwd=tmp_path, env=ray_env, start_new_session=True)
    leftovers.append(trainer)
    actor_pids = [int(p) for p in read_line(trainer).split()]
    assert len(actor_pids) == 2
    assert read_line(trainer) == "ready"
    return trainer, actor_pids


@linux_only
@pytest.mark.parametrize("how", ["consume", "starve"])
def test_ctrl_c_in_the_trainer_kills_its_actors(local_ray, native, tmp_path, how, leftovers):
    trainer, actor_pids = start_trainer(tmp_path, local_ray, how, leftovers)
    if how == "consume":
        time.sleep(0.3)  # well into the loop, actors busy
    start = time.monotonic()
    os.killpg(trainer.pid, signal.SIGINT)  # what a terminal's Ctrl-C does
    assert read_line(trainer).startswith("stopped by")
    assert still_running(actor_pids, 5.0 - (time.monotonic() - start)) == []
    assert trainer.wait(START_BUDGET_S) == 1


@linux_only
def test_sigkill_of_the_trainer_ends_its_actors(local_ray, native, tmp_path, leftovers):
    trainer, actor_pids = start_trainer(tmp_path, local_ray, "consume", leftovers)
    trainer.send_signal(signal.SIGKILL)
    trainer.wait(10)
    assert still_running(actor_pids, 30.0) == []  # Ray ends the actors of an owner that died


def test_the_demo_trains_from_ray_actors(local_ray, native, capsys):
    from pyfastq.__main__ import main

    assert main(["demo", "--mode", "ray", "--examples", "2000", "--batch-size", "50"]) == 0
    out = capsys.readouterr().out
    assert "2 producer Ray actors -> queue (native backend)" in out
    assert "trained on 2000 examples" in out  # every example the actors made, once (the demo checks the count)
