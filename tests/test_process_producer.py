"""Queue(shared=True) and Producer(mode="process"): worker processes writing into the shared ring."""

import functools
import multiprocessing
import os
import pickle
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

import pyfastq

from _workers import (
    count,
    exits_after,
    forever,
    holds_a_reserved_slot,
    ignores_sigterm,
    labelled,
    put_range,
    raises_after,
    reports_tensorflow,
    seeds,
    sleeps_in_fn,
    tagged,
    uses_tensorflow,
    worker_0_stalls,
    writes_directly,
)
from support import CHILD_ENV, START_BUDGET_S, cpu_seconds_in_one_second, shm_segments, wait_until

SPEC = tf.TensorSpec([], tf.int64)


def shared_queue(capacity=8, spec=SPEC):
    return pyfastq.Queue(spec, capacity=capacity, shared=True, backend="native")



# -- the shared ring ------------------------------------------------------------------


def test_shared_ring_is_private_unguessable_and_never_named_in_dev_shm(native):
    before = shm_segments()
    q = shared_queue()
    assert q.shared and q.stats()["shared"]
    assert os.fstat(q._impl.fd).st_mode & 0o777 == 0o600
    assert shm_segments() == before  # unlinked at creation: no crash can leave it behind
    with open("/proc/self/maps") as f:
        names = set(re.findall(r"/dev/shm/(pyfastq-[0-9a-f]+) \(deleted\)", f.read()))
    assert any(len(n) == len("pyfastq-") + 32 for n in names)  # 128 random bits
    q.put(np.int64(5))
    assert int(q.dequeue()) == 5


def test_a_ring_larger_than_dev_shm_is_a_clear_oserror_not_a_sigbus(native):
    fs = os.statvfs("/dev/shm")
    element = 4 << 20
    capacity = fs.f_blocks * fs.f_frsize // element + 2  # more than the whole file system: refused at once
    if capacity >= 2**31:
        pytest.skip("/dev/shm is too large to overflow here")
    before = shm_segments()
    with pytest.raises(OSError, match="does not fit in /dev/shm") as info:
        pyfastq.Queue(tf.TensorSpec([element // 4], tf.float32), capacity=capacity, shared=True, backend="native")
    assert info.value.errno in (28, 12)  # ENOSPC (or ENOMEM)
    assert shm_segments() == before


def test_a_private_queue_does_not_pickle(backend):
    q = pyfastq.Queue(SPEC, backend=backend)
    with pytest.raises(TypeError, match="shared=True"):
        pickle.dumps(q)


def test_the_python_backend_has_no_shared_ring():
    with pytest.raises(ValueError, match="native backend"):
        pyfastq.Queue(SPEC, shared=True, backend="python")


# The modules a worker process imports; TensorFlow would cost it seconds and hundreds of MB.
WORKER_SIDE = ["pyfastq", "pyfastq._core", "pyfastq._errors", "pyfastq._layout", "pyfastq._writer",
               "pyfastq._worker", "pyfastq._process", "pyfastq.producer", "pyfastq.backends"]


def test_worker_side_modules_never_import_tensorflow(native):
    script = f"import importlib, sys; [importlib.import_module(m) for m in {WORKER_SIDE!r}]; print(sorted(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=CHILD_ENV,
                          cwd=tempfile.gettempdir(), timeout=START_BUDGET_S)
    assert proc.returncode == 0, proc.stderr
    loaded = eval(proc.stdout)  # a list of module names
    assert "pyfastq._process" in loaded  # the check saw the modules it names
    assert [m for m in loaded if m.split(".")[0] in ("tensorflow", "keras", "tf_keras")] == []


def test_a_worker_process_runs_without_tensorflow(native):
    q = shared_queue(capacity=4)
    with pyfastq.Producer(q, reports_tensorflow, workers=1, mode="process"):
        assert int(q.dequeue()) == 0


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/<pid>/maps")
def test_workers_yielding_python_numbers_never_map_tensorflow(native):
    specs = (tf.TensorSpec([4], tf.float32), tf.TensorSpec([], tf.int64), tf.TensorSpec([2], tf.float32))
    q = pyfastq.Queue(specs, capacity=4, shared=True, backend="native")
    with pyfastq.Producer(q, labelled, workers=2, mode="process") as p:
        for _ in range(8):
            image, label, pair = (t.numpy().tolist() for t in q.dequeue())
            assert image == [label] * 4 and pair == [0.5, label]
        # A worker waits for room only after converting the element it puts
        wait_until(lambda: q.stats()["put_waiters"] == 2, "both workers to wait for room")
        for pid in p.pids:
            with open(f"/proc/{pid}/maps") as f:
                maps = f.read()
            assert "pyfastq" in maps  # the maps of a worker, which has pyfastq._core loaded
            assert "libtensorflow" not in maps


def test_a_plain_multiprocessing_process_writes_into_the_queue(native):
    q = shared_queue(capacity=4)
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=put_range, args=(q, i * 100, i * 100 + 50)) for i in range(2)]
    for p in procs:
        p.start()
    got = [int(q.dequeue()) for _ in range(100)]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert sorted(got) == list(range(50)) + list(range(100, 150))
    # Each process's own elements arrive in its order.
    assert [g for g in got if g < 100] == list(range(50))


# -- delivery -------------------------------------------------------------------------


def test_every_element_exactly_once_from_three_processes(native):
    q = shared_queue(capacity=16)
    with pyfastq.Producer(q, functools.partial(count, total=3000), workers=3, mode="process") as p:
        got = [int(x) for x in q.dataset()]
    assert sorted(got) == list(range(3000))
    assert p.errors == [] and not p.running and q.closed


def test_put_many_reserve_and_put_write_from_a_worker(native):
    q = shared_queue(capacity=8)
    rows = 20
    with pyfastq.Producer(q, functools.partial(writes_directly, rows=rows), workers=2, mode="process") as p:
        got = [int(x) for x in q.dataset()]
    expected = [w * 10_000 + k for w in range(2) for k in range(2 * rows + 1)]
    assert sorted(got) == expected and p.errors == []


def test_elements_are_nests(native):
    specs = (tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64))
    q = shared_queue(capacity=4, spec=specs)
    with pyfastq.Producer(q, functools.partial(tagged, counts=[3, 3], jitter=0), workers=2, mode="process"):
        got = sorted((int(a), int(b)) for a, b in q.dataset())
    assert got == [(w, k) for w in range(2) for k in range(3)]


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_ordered_is_a_round_robin_of_workers_whatever_the_timing(native, mode):
    specs = (tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64))
    counts = [6, 2, 9, 0]  # unequal: finished workers drop out of the rotation
    expected = []
    for k in range(max(counts)):
        expected += [(w, k) for w in range(len(counts)) if k < counts[w]]
    for _ in range(2):
        q = pyfastq.Queue(specs, capacity=3, shared=mode == "process", backend="native")
        fn = functools.partial(tagged, counts=counts)
        with pyfastq.Producer(q, fn, workers=len(counts), mode=mode, ordered=True):
            got = [(int(a), int(b)) for a, b in q.dataset()]
        assert got == expected


def test_ordered_threads_on_the_python_backend():
    specs = (tf.TensorSpec([], tf.int64), tf.TensorSpec([], tf.int64))
    q = pyfastq.Queue(specs, capacity=2, backend="python")
    with pyfastq.Producer(q, functools.partial(tagged, counts=[3, 1, 2]), workers=3, ordered=True):
        got = [(int(a), int(b)) for a, b in q.dataset()]
    assert got == [(0, 0), (1, 0), (2, 0), (0, 1), (2, 1), (0, 2)]


def test_workers_seed_random_and_numpy_from_the_base_seed_and_their_index(native):
    spec = (SPEC, tf.TensorSpec([], tf.float64), tf.TensorSpec([], tf.float64), SPEC)

    def run(seed):
        q = shared_queue(capacity=4, spec=spec)
        with pyfastq.Producer(q, seeds, workers=2, mode="process", seed=seed) as p:
            rows = sorted(tuple(float(t) for t in e) for e in q.dataset())
        assert p.seed == seed
        return rows

    first, again, other = run(7), run(7), run(8)
    assert first == again  # reproducible
    assert first != other
    (w0, r0, n0, s0), (w1, r1, n1, s1) = first
    assert (w0, w1) == (0, 1) and r0 != r1 and n0 != n1 and s0 != s1  # different per worker


def test_worker_info(native):
    assert pyfastq.worker_info() is None  # not in a worker
    q = pyfastq.Queue(SPEC, capacity=4, backend="native")
    seen = []

    def fn(i, n):
        seen.append(pyfastq.worker_info())
        yield np.int64(i)

    with pyfastq.Producer(q, fn, workers=2, seed=3):
        list(q.dataset())
    assert sorted((w.index, w.num_workers, w.mode) for w in seen) == [(0, 2, "thread"), (1, 2, "thread")]
    assert seen[0].queue is q and seen[0].seed != seen[1].seed


# -- arguments --------------------------------------------------------------------------


def test_what_does_not_pickle_is_a_type_error_at_producer_naming_it(native):
    lock = threading.Lock()

    def fn(i, n):
        with lock:
            yield np.int64(i)

    with pytest.raises(TypeError, match=r"does not pickle.*lock"):
        pyfastq.Producer(shared_queue(), fn, mode="process")


def _local_functions():
    offset = 10

    def local(i, n):
        yield np.int64(i + offset)

    def scaled(i, n, scale):
        yield np.int64(i * scale + offset)

    return {
        "lambda": lambda i, n: iter([np.int64(i + offset)]),
        "local function": local,
        "partial of a local function": functools.partial(scaled, scale=1),
    }


@pytest.mark.parametrize("kind", list(_local_functions()))
def test_lambdas_closures_and_partials_travel_by_value(native, kind):
    q = shared_queue()
    with pyfastq.Producer(q, _local_functions()[kind], workers=2, mode="process"):
        assert sorted(int(x) for x in q.dataset()) == [10, 11]


def test_a_worker_that_cannot_load_fn_is_reported_with_the_reason(native, tmp_path, monkeypatch):
    (tmp_path / "pyfastq_vanishing.py").write_text("import numpy as np\ndef fn(i, n):\n    yield np.int64(i)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import pyfastq_vanishing

    (tmp_path / "pyfastq_vanishing.py").unlink()  # imported here (so fn goes by reference), gone for the workers
    q = shared_queue()
    try:
        with pyfastq.Producer(q, pyfastq_vanishing.fn, workers=1, mode="process") as p:
            loading = r"worker 0 of 1 \(process \d+\), loading fn, raised ModuleNotFoundError"
            with pytest.raises(tf.errors.AbortedError, match=loading):
                q.dequeue()
    finally:
        del sys.modules["pyfastq_vanishing"]
    assert isinstance(p.errors[0], ModuleNotFoundError)


def test_a_worker_fn_may_import_tensorflow_itself(native):
    q = shared_queue()
    with pyfastq.Producer(q, uses_tensorflow, workers=1, mode="process"):
        assert [int(x) for x in q.dataset()] == [7]


# -- failures -----------------------------------------------------------------------------


def test_a_worker_exception_reaches_the_consumer_with_its_traceback(native):
    q = shared_queue(capacity=64)
    with pyfastq.Producer(q, functools.partial(raises_after, n=3), workers=2, mode="process") as p:
        with pytest.raises(tf.errors.AbortedError) as info:
            for _ in q.dataset():
                pass
    message = str(info.value)
    assert "worker 1 of 2" in message and "KeyError" in message and "missing field 'label'" in message
    assert "Traceback" in message and "raises_after" in message
    assert len(p.errors) == 1 and isinstance(p.errors[0], KeyError)


def test_sigkill_of_a_worker_blocked_in_put_fails_the_queue_within_a_second(native):
    q = shared_queue(capacity=4)
    with pyfastq.Producer(q, forever, workers=2, mode="process") as p:
        wait_until(lambda: q.size() == 4 and q.stats()["put_waiters"] == 2, "both workers to wait for a free slot")
        os.kill(p.pids[0], signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: q.closed, "the death to close the queue", timeout=1.0)
        assert time.monotonic() - killed < 1.0
        with pytest.raises(
            tf.errors.AbortedError, match=r"worker 0 of 2 \(process \d+\) died with exit code -9 \(killed by SIGKILL\)"
        ):
            q.dequeue()
    assert not p.running


def test_sigkill_of_a_worker_holding_a_reserved_slot_never_hangs(native, tmp_path):
    q = shared_queue(capacity=2)
    marker = tmp_path / "reserved"
    with pyfastq.Producer(q, functools.partial(holds_a_reserved_slot, marker=str(marker)), mode="process") as p:
        wait_until(marker.exists, "the worker to reserve a slot")
        q.put(np.int64(1), timeout=0)  # the other slot: a batch of 2 now needs the dead worker's slot
        os.kill(p.pids[0], signal.SIGKILL)
        start = time.monotonic()
        with pytest.raises(tf.errors.AbortedError, match="worker 0 of 1"):
            q.dequeue_many(2)
        assert time.monotonic() - start < 1.0


def test_os_exit_of_a_worker_is_reported_with_its_exit_code(native):
    q = shared_queue(capacity=16)
    with pyfastq.Producer(q, functools.partial(exits_after, n=3, code=7), workers=1, mode="process"):
        with pytest.raises(tf.errors.AbortedError, match="died with exit code 7"):
            for _ in range(10):
                q.dequeue()


def test_stop_unwinds_a_worker_busy_in_fn_without_failing_the_queue(native):
    q = shared_queue()
    p = pyfastq.Producer(q, sleeps_in_fn, workers=2, mode="process").start()
    wait_until(lambda: q.size() == 2, "the workers to fill the queue")
    start = time.monotonic()
    p.stop()
    assert time.monotonic() - start < 1.5
    assert not p.running and p.errors == []
    assert sorted(int(x) for x in q.dataset()) == [0, 1]  # closed, not failed: what was put is there


def test_stop_kills_a_worker_that_ignores_sigterm_and_fails_the_queue(native):
    q = shared_queue()
    p = pyfastq.Producer(q, ignores_sigterm, workers=1, mode="process").start()
    wait_until(lambda: q.size() == 1, "the worker's first element")
    start = time.monotonic()
    p.stop()
    assert time.monotonic() - start < 2.0
    assert not p.running
    with pytest.raises(tf.errors.AbortedError, match="were killed"):
        q.dequeue()


def test_a_worker_blocked_in_put_does_not_spin(native):
    q = shared_queue(capacity=2)
    with pyfastq.Producer(q, forever, workers=1, mode="process") as p:
        wait_until(lambda: q.size() == 2, "the workers to fill the queue")
        busy = cpu_seconds_in_one_second(p.pids[0])
        assert busy < 0.1, f"a worker waiting for a free slot used {busy:.2f} s of CPU in 1 s"


def test_the_demo_trains_from_worker_processes(native):
    from pyfastq.demo import main

    result = main(examples=2000, batch_size=50, workers=2, mode="process")
    assert result["examples"] == 2000 and result["mode"] == "process" and result["backend"] == "native"
    assert result["accuracy"] > 0.3  # 4 classes: the model fed by the workers learned
    # The same model, fed by from_generator: trained on the same examples, and the ratio is of the two times.
    baseline = result["from_generator"]
    assert baseline["accuracy"] > 0.3  # 4 classes: it learned from the same examples
    assert baseline["speedup"] == pytest.approx(baseline["seconds"] / result["seconds"])


def test_an_ordered_worker_waiting_for_its_turn_does_not_spin(native):
    q = shared_queue(capacity=8)
    with pyfastq.Producer(q, worker_0_stalls, workers=2, mode="process", ordered=True) as p:
        wait_until(lambda: q.size() == 2, "a first element from each worker")  # worker 0's first, worker 1's first
        time.sleep(0.2)  # worker 1's second now waits for worker 0's turn, which will not come
        assert q.size() == 2
        busy = cpu_seconds_in_one_second(p.pids[1])
        assert busy < 0.1, f"a worker waiting for its turn used {busy:.2f} s of CPU in 1 s"
    assert [int(x) for x in q.dataset()] == [0, 1_000_000]
