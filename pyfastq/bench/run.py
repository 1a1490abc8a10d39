"""pyfastq's benchmark: Python producer -> TF graph, against the tools people use today.

    pyfastq bench                 # every workload, about 3 minutes on 2 cores
    pyfastq bench --quick         # a smoke run
    pyfastq bench --workloads seed,large --methods native,from_generator --json out.json
    pyfastq bench --workloads python --workers 1,2 --seconds 3
    pyfastq bench --repeat 3 --out results   # results/bench.json and results/bench.png (pyfastq[bench])
    pyfastq bench --device gpu    # host-to-device copies, where TF sees a GPU (gpu_copy.py)

Consumer: one tf.function running N steps in a graph loop (`for _ in tf.range(n)`);
each step takes one batch and reads from it. Producer: a Python thread putting one
pre-made numpy batch (seed: one [100] float32 element at a time, batched 128 in the
graph). Every method's producer pays exactly one copy of the pre-made batch per put,
as a real producer making a new batch would: pyfastq's put copies it into the ring;
the baselines are handed `batch.copy()` (handing TF the same array object every time
lets from_generator and numpy_function wrap it without any copy, which no real
producer of new data can do). Each figure is batches consumed over a fixed wall-time
budget after a warm-up.

"python" is the GIL-bound producer: each element costs about 1 ms of pure-Python work
(pyfastq/bench/gil_work.py), put by pyfastq.Producer with P workers in threads (which share the
GIL), in processes (Queue(shared=True): each worker writes into the shared ring) or in
Ray actors (mode="ray": a local Ray of as many CPUs as cores, chunks streamed to a feeder
thread), or made by tf.data's from_generator; the graph takes dequeue_many(32) (.batch(32)).
Worker start-up is left out (the startup workload measures it): the warm-up waits until
every worker's elements arrive.
"small" also runs through Ray: Producer(mode="ray") with P actors each yielding a fresh copy
of the batch, against Ray Data's own TF path (ray_data: ray.data.range(...).map_batches
making the same rows in Ray tasks, then Dataset.to_tf, which is from_generator underneath).
"shuffle" is pyfastq native with Queue(shuffle=True) on the seed and small workloads, against the FIFO
queue (native) of the same run (target: >= 0.8x). It is sized by TF's rule for shuffle queues,
capacity = min_after_dequeue + the slack producers and consumers need: the slack kept as the FIFO queue's
capacity, and min_after_dequeue as large (seed: 1024 kept back of 2048; small: 8 of 16). So both queues
give producers the same room and the figure is the cost of picking slots at random.
Limits and producers beside them (bench/README.md tells what each measures):
"graph_loop" is the same graph loop reading a pre-made batch from a tf.Variable each step: no feeding at
all, the floor any input pipeline sits on (small's target: native >= 0.8x it). "np_copyto_cold" is the
producer's one copy with its destination rotating through buffers as large as the ring, as the ring's slots
do, so it is cache-cold as the producer's copy is (image and large: native >= 0.9x it). "reserve" is a
producer that makes its data in place, rng.random(out=view) inside q.reserve(); "fresh_put" is the same
producer making a fresh array and calling put (image and large; reserve saves the copy). "put_many" (seed)
puts 128 elements per call. --inter-op-threads sets TensorFlow's inter-op pool before anything runs
(the figures of one run share it).
"source_gil" and "source_image" are random-access sources (pyfastq/bench/sources.py: item i made from i
alone, ~1.7 ms of GIL-bound Python and a 1 KB element; a numpy crop, flip and brightness of a 224x224x3
uint8 image), one object per workload read by every method: pyfastq.Producer with P threads, P processes
and workers="auto" (processes), against the peers in pyfastq/bench/peers.py (Keras PyDataset with P threads
or processes entering TF as fit does, grain's DataLoader with P workers when grain imports,
map(py_function, AUTOTUNE), from_generator). Batches of 32 into the graph loop; each method takes batches
for a warm-up (2 s; --quick 0.5 s) before it is timed, so pools have started and auto has grown; --quick
measures them at the largest worker count only. Targets at 2 workers: image >= 3x PyDataset processes and
>= 2.5x grain; GIL-bound >= 1.0x the best peer; auto >= 0.9x the best fixed worker count.
"startup" runs pyfastq/bench/startup_trainer.py, a script that imports TensorFlow at its top, with
1, 2 and 8 process workers: seconds from entering the producer to the first element in the
trainer, and each worker's USS; beside it, the same fn in multiprocessing's forkserver
processes, which re-run the script (what Producer did before its workers were lean).
"tfdata" (pyfastq/bench/tfdata.py) runs q.dataset(), q.dataset(128), q.dataset().batch(64) and Keras fit
against tf.data's own floor (from_tensors(x).repeat(), an in-memory fit), with the same consumer.
"resume" (pyfastq/bench/resume.py) runs the seed and small elements from 2 worker processes reading a
random-access source with position tracking and restarts on, tracking alone, and neither; and the time
from a worker's SIGKILL to its replacement's first element.
Ratios compare methods measured in the same run; absolute figures drift between runs.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib
import json
import logging
import os
import platform
import queue as pyqueue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf

import pyfastq

from . import gil_work
from . import gpu_copy as gpu
from . import sources as items

BASELINES = ("from_generator", "numpy_function", "fifo_queue", "ray_data")
METHODS = ("native", "python", "from_generator", "numpy_function", "fifo_queue", "np_copyto")
GRAPH_LOOP = "graph_loop"  # the consumer's loop with no feeding: a limit
COLD_COPY = "np_copyto_cold"  # the producer's copy into ring-sized rotating buffers: a limit
LIMITS = ("np_copyto", COLD_COPY, GRAPH_LOOP)
IN_PLACE = ("reserve", "fresh_put")  # a producer making its data in the slot, against the same making an array
GRAPH_LOOP_TARGET = 0.8  # small: native x graph_loop, same run
COLD_COPY_TARGET = 0.9  # image and large: native x np_copyto_cold, same run
SEED_TARGET = 3e6  # seed: elements/s with one producer thread calling put per element
PUT_MANY_ROWS = 128  # seed's put_many: elements per call
SHUFFLE = "shuffle"  # pyfastq native, Queue(shuffle=True): the seed and small workloads measure it against native
SHUFFLE_TARGET = 0.8  # x native's (FIFO) batches/s, same run
# The "python" workload's methods: Producer threads, processes and Ray actors, each with P workers, and from_generator.
PRODUCER_METHODS = ("thread", "process", "ray", "from_generator")
WORKER_METHODS = ("thread", "process", "ray")  # measured once per worker count P
# The source workloads' methods: each reads the same random-access source (pyfastq/bench/sources.py).
# pyfastq.Producer with threads, processes and workers="auto" (processes), against the peers
# (pyfastq/bench/peers.py), those with a worker count measured once per P as Producer's are.
AUTO = "auto"
PEER_WORKER_METHODS = ("pydataset_threads", "pydataset_processes", "grain")
SOURCE_PEERS = (*PEER_WORKER_METHODS, "tf_map", "from_generator")
SOURCE_METHODS = ("thread", "process", AUTO, *SOURCE_PEERS)
SOURCE_WARMUP_S = 2.0  # batches taken before each source figure's measurement (--quick: 0.5 s)
# Targets at 2 workers (issue 19): pyfastq's best against PyDataset with processes and grain on the
# image source, against the best peer on the GIL-bound one; auto against the best fixed worker count.
SOURCE_TARGETS = {"source_image": {"pydataset_processes": 3.0, "grain": 2.5}, "source_gil": {"best peer": 1.0}}
AUTO_TARGET = 0.9
# What --methods takes.
ALL_METHODS = ("native", SHUFFLE, "put_many", *IN_PLACE, "python", "thread", "process", "ray", AUTO, *BASELINES,
               *LIMITS, *PEER_WORKER_METHODS, "tf_map")


@dataclass
class Workload:
    name: str
    element_shape: tuple  # what one put carries
    dtype: type
    batch: int  # elements per consumed batch (1: each put is a whole batch)
    capacity: int  # queue capacity, in elements
    methods: tuple = METHODS  # the methods that apply
    make: Callable | None = None  # the producer's fn(worker, workers) -> elements; None: put one pre-made item
    source: Callable | None = None  # source workloads: makes the random-access source every method reads
    _source_object: object = field(default=None, repr=False)

    def random_access_source(self):
        """The one source object every method of a source workload reads (made at its first use)."""
        if self._source_object is None:
            self._source_object = self.source()
        return self._source_object

    @property
    def batch_bytes(self) -> int:
        return int(np.prod(self.element_shape)) * np.dtype(self.dtype).itemsize * self.batch

    def spec(self) -> tf.TensorSpec:
        return tf.TensorSpec(self.element_shape, tf.as_dtype(self.dtype))

    @property
    def min_after_dequeue(self) -> int:
        """For the shuffle method: as many kept back as the FIFO queue holds; its capacity is twice that."""
        return self.capacity


WORKLOADS = {
    "seed": Workload("seed: [100] float32 elements, dequeue_many(128)", (100,), np.float32, 128, 1024,
                     (*METHODS, SHUFFLE, "put_many", GRAPH_LOOP)),
    "small": Workload("small batch [128,100] float32 (51 KB)", (128, 100), np.float32, 1, 8,
                      (*METHODS, SHUFFLE, "ray", "ray_data", GRAPH_LOOP)),
    "image": Workload("image batch [32,224,224,3] uint8 (4.8 MB)", (32, 224, 224, 3), np.uint8, 1, 8,
                      (*METHODS, *IN_PLACE, COLD_COPY)),
    "large": Workload("large batch [16,1024,1024] float32 (64 MB)", (16, 1024, 1024), np.float32, 1, 8,
                      (*METHODS, *IN_PLACE, COLD_COPY)),
    "python": Workload("Python-heavy producer: ~1 ms of GIL-bound Python per [100] float32 element, dequeue_many(32)",
                       gil_work.SHAPE, gil_work.DTYPE, 32, 128, PRODUCER_METHODS, gil_work.make),
    "source_gil": Workload("random-access source: ~1.7 ms of GIL-bound Python per [256] float32 item (1 KB), "
                           "batches of 32", items.GIL_SHAPE, np.float32, 32, 256, SOURCE_METHODS,
                           source=items.GilItems),
    "source_image": Workload("random-access source: crop, flip, brightness of a 224x224x3 uint8 image per item "
                             "(150 KB), batches of 32", items.IMAGE_SHAPE, np.uint8, 32, 256, SOURCE_METHODS,
                             source=items.AugmentedImages),
}


# Not a Workload: each figure is a fresh trainer process (pyfastq/bench/startup_trainer.py).
STARTUP = "startup"
STARTUP_WORKERS = (1, 2, 8)
STARTUP_TARGETS_S = {2: 1.0, 8: 2.0}  # workers -> seconds to the first element
STARTUP_USS_TARGET_MB = 60
# mode="ray"'s targets: against process workers with as many workers (one host), and against Ray Data's TF path.
RAY_VS_PROCESS = 0.7
RAY_VS_RAY_DATA = 2.0
# Not Workloads either: modules of their own, each with plan() -> [(label, measure(seconds))] and
# print_table(rows): q.dataset() and Keras fit against tf.data's own floor (tfdata.py); what tracking
# positions and restarting workers cost (resume.py).
CASE_MODULES = ("tfdata", "resume")
WORKLOAD_NAMES = (*WORKLOADS, STARTUP, *CASE_MODULES)


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


def measure_pyfastq(w: Workload, backend: str, seconds: float, shuffle: bool = False) -> float:
    """The pyfastq queue on `backend`; with shuffle (native), sized by TF's rule (Workload.min_after_dequeue)."""
    capacity, order = w.capacity, {}
    if shuffle:
        capacity = w.capacity + w.min_after_dequeue
        order = dict(shuffle=True, min_after_dequeue=w.min_after_dequeue, seed=0)
    q = pyfastq.Queue(w.spec(), capacity=capacity, backend=backend, **order)
    take = (lambda: q.dequeue_many(w.batch)) if w.batch > 1 else q.dequeue
    return timed_feeding(q.put, np.ones(w.element_shape, w.dtype), take, lambda: q.close(cancel=True), seconds)


def timed_feeding(put, item, take, unblock, seconds: float, device: str | None = None) -> float:
    """Batches per second of a graph loop of take() (on `device`) while a Feeder thread calls put(item).

    unblock: None, or what wakes a put that waits for room when the loop is done.
    """
    feeder = Feeder(put, item)
    try:
        return timed(graph_loop(take, device), seconds)
    finally:
        feeder.stop(unblock)


def measure_put_many(w: Workload, seconds: float) -> float:
    """pyfastq native, the producer putting PUT_MANY_ROWS elements per put_many call."""
    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native")
    rows = np.ones((PUT_MANY_ROWS, *w.element_shape), w.dtype)
    return timed_feeding(q.put_many, rows, lambda: q.dequeue_many(w.batch), lambda: q.close(cancel=True), seconds)


def random_fill(rng: np.random.Generator, out: np.ndarray) -> None:
    """Random bytes into a C-contiguous array of any dtype: float32 draws over its memory (rng.random(out=...))."""
    rng.random(out=out.reshape(-1).view(np.float32), dtype=np.float32)


def measure_reserve(w: Workload, seconds: float) -> float:
    """pyfastq native, the producer making each batch in place: rng.random(out=view) inside q.reserve()."""

    def produce(q, rng):
        with q.reserve() as view:
            random_fill(rng, view)

    return measure_making(w, seconds, produce)


def measure_fresh_put(w: Workload, seconds: float) -> float:
    """measure_reserve's producer making a fresh array instead, then calling put (one copy more)."""

    def produce(q, rng):
        batch = np.empty(w.element_shape, w.dtype)
        random_fill(rng, batch)
        q.put(batch)

    return measure_making(w, seconds, produce)


def measure_making(w: Workload, seconds: float, produce) -> float:
    """pyfastq native, a producer thread calling produce(q, rng) for each batch it makes."""
    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native")
    rng = np.random.default_rng(0)
    return timed_feeding(lambda _: produce(q, rng), None, q.dequeue, lambda: q.close(cancel=True), seconds)


def measure_graph_loop(w: Workload, seconds: float) -> float:
    """The consumer's graph loop with no feeding: each step reads a pre-made batch from a tf.Variable."""
    batch = tf.Variable(np.ones((w.batch, *w.element_shape) if w.batch > 1 else w.element_shape, w.dtype))
    return timed(graph_loop(batch.read_value), seconds)


def wait_for_workers(q, producer, workers: int, batch: int, timeout: float = 120.0) -> None:
    """Takes batches eagerly until every worker's element has arrived (its first value is the worker's index)."""
    seen: set = set()
    deadline = time.monotonic() + timeout
    while len(seen) < workers:
        while q.size() < batch:  # poll, so that a worker that never starts is a timeout, not a hang
            if producer.errors:
                raise producer.errors[0]
            if time.monotonic() > deadline:
                raise TimeoutError(f"only workers {sorted(seen)} of {workers} produced within {timeout:.0f} s")
            time.sleep(0.01)
        seen.update(int(i) for i in q.dequeue_many(batch).numpy().reshape(batch, -1)[:, 0])


def copies(worker: int, workers: int, shape: tuple, dtype: type):
    """Producer fn of the workloads that put one pre-made batch: a fresh copy each time, its first value the worker."""
    item = np.ones(shape, dtype)
    item.flat[0] = worker
    while True:
        yield item.copy()


def start_ray() -> None:
    """A local Ray of as many CPUs as cores, started once, here (never a cluster another program started)."""
    import ray

    if not ray.is_initialized():
        ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 object_store_memory=512 << 20, logging_level=logging.WARNING)
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # no execution plans between the figures


def measure_producer(w: Workload, mode: str, workers: int, seconds: float) -> float:
    """pyfastq.Producer(fn, workers, mode) into a native queue (shared for processes); dequeue(_many) in the graph."""
    if mode == "ray":
        start_ray()
    fn = w.make or functools.partial(copies, shape=w.element_shape, dtype=w.dtype)
    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native", shared=mode == "process")
    with pyfastq.Producer(q, fn, workers=workers, mode=mode) as producer:
        wait_for_workers(q, producer, workers, w.batch)
        take = (lambda: q.dequeue_many(w.batch)) if w.batch > 1 else q.dequeue
        rate = timed(graph_loop(take), seconds)
        if producer.errors:
            raise producer.errors[0]
        return rate


def measure_source(w: Workload, method: str, seconds: float, workers: int) -> float:
    """A source workload's method: batches of w.batch elements of one random-access source, per second.

    Each method first takes batches for a warm-up (its workers start, pools fill, auto grows), then is timed.
    """
    take, stop = source_pipeline(w, method, w.random_access_source(), workers)
    try:
        run = graph_loop(take)
        timed(run, min(SOURCE_WARMUP_S, max(0.5, seconds)))
        return timed(run, seconds)
    finally:
        stop()


def source_pipeline(w: Workload, method: str, source, workers: int):
    """(take, stop): what the graph loop calls for a batch of method's pipeline over source, and what ends it."""
    if method in ("thread", "process", AUTO):
        mode = "thread" if method == "thread" else "process"
        q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native", shared=mode == "process")
        p = pyfastq.Producer(q, source, workers="auto" if method == AUTO else workers, mode=mode, epochs=None)
        p.start()

        def stop():
            p.stop()
            if p.errors:
                raise p.errors[0]

        return functools.partial(q.dequeue_many, w.batch), stop
    from . import peers

    if method.startswith("pydataset_"):
        it, end = peers.pydataset(source, w.batch, workers, processes=method == "pydataset_processes")
    elif method == "grain":
        it, end = peers.grain_loader(source, w.batch, workers)
    else:
        it, end = getattr(peers, method)(source, w.batch)

    def take():
        return peers.first(next(it))

    return take, functools.partial(peers.stop_quietly, end)


def measure_from_generator(w: Workload, seconds: float) -> float:
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


def measure_numpy_function(w: Workload, seconds: float) -> float:
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


def measure_fifo_queue(w: Workload, seconds: float) -> float:
    fq = tf.queue.FIFOQueue(w.capacity, [tf.as_dtype(w.dtype)], shapes=[w.element_shape])
    take = (lambda: fq.dequeue_many(w.batch)) if w.batch > 1 else fq.dequeue
    return timed_feeding(lambda x: fq.enqueue(x.copy()), np.ones(w.element_shape, w.dtype), take,
                         lambda: fq.close(cancel_pending_enqueues=True), seconds)


def measure_np_copyto(w: Workload, seconds: float) -> float:
    src = np.ones((w.batch, *w.element_shape), w.dtype)
    dst = np.empty_like(src)
    np.copyto(dst, src)  # fault the pages in
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(10):
            np.copyto(dst, src)
        batches += 10
    return batches / (time.perf_counter() - start)


def measure_np_copyto_cold(w: Workload, seconds: float) -> float:
    """np.copyto of one pre-made batch into buffers as large as the ring, in turn, as a producer fills its slots."""
    src = np.ones((w.batch, *w.element_shape), w.dtype)
    dsts = [np.empty_like(src) for _ in range(w.capacity // w.batch or 1)]
    for dst in dsts:
        np.copyto(dst, src)  # fault the pages in
    batches, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for dst in dsts:
            np.copyto(dst, src)
        batches += len(dsts)
    return batches / (time.perf_counter() - start)


def measure(w: Workload, method: str, seconds: float, workers: int = 1) -> float:
    if w.source is not None:
        return measure_source(w, method, seconds, workers)
    if method in WORKER_METHODS:
        return measure_producer(w, method, workers, seconds)
    if method in ("native", "python"):
        return measure_pyfastq(w, method, seconds)
    if method == SHUFFLE:
        return measure_pyfastq(w, "native", seconds, shuffle=True)
    return globals()[f"measure_{method}"](w, seconds)


def default_worker_counts(quick: bool) -> list:
    """1, 2 and, where cores allow, 4, 8, ... and the core count (--quick: 1 and 2)."""
    cores = os.cpu_count() or 1
    counts = {1, 2}
    if not quick:
        p = 4
        while p < cores:
            counts.add(p)
            p *= 2
        counts.add(cores)
    return sorted(counts)


def worker_counts_of(w: Workload, options: Options) -> list:
    """The worker counts w is measured at: --workers (or its default); --quick, a source workload at the largest."""
    if options.quick and w.source is not None:
        return options.worker_counts[-1:]
    return options.worker_counts


def runs(w: Workload, methods: list, worker_counts: list):
    """(method, workers) pairs to measure for w: workers is None for methods without a worker count."""
    for m in methods:  # in the order asked for
        if m not in w.methods:
            continue
        if m in WORKER_METHODS or m in PEER_WORKER_METHODS:
            for p in worker_counts:
                yield m, p
        else:
            yield m, None


def producer_summary(row: dict, batch: int, element_ms: float | None) -> list:
    """The python workload's targets.

    process P >= 0.9 x P x process P=1 (P up to the cores); process P=cores >= 0.85 x cores x from_generator;
    ray P >= 0.7 x process P (one host: Ray's hops against writing straight into shared memory).
    """
    cores = os.cpu_count() or 1
    lines = []
    if element_ms:
        lines.append(f"python: one element is {element_ms:.3f} ms of Python on one core here, "
                     f"{1e3 / element_ms:,.0f} elements/s per core at best")
    threads, procs, rays = (per_worker_count(row, m) for m in ("thread", "process", "ray"))
    one = procs.get(1)
    for p, rate in sorted(procs.items()):
        if p > 1 and one:
            scale = rate / one
            if p <= cores:
                target = 0.9 * p
                note = f"target >= 0.9 x {p} = {target:.2f}x: {'met' if scale >= target else 'NOT met'}"
            else:
                note = f"more workers than the {cores} cores: no target"
            lines.append(
                f"python: process P={p} is {scale:.2f}x process P=1 "
                f"({rate * batch:,.0f} vs {one * batch:,.0f} elements/s; {note})"
            )
    gen = row.get("from_generator")
    within = [p for p in procs if p <= cores]
    if gen and within:
        p = max(within)
        ratio, target = procs[p] / gen, 0.85 * p
        note = (f"target >= 0.85 x {p} = {target:.2f}x: {'met' if ratio >= target else 'NOT met'}" if p == cores
                   else f"the target is for P = the {cores} cores")
        lines.append(
            f"python: process P={p} is {ratio:.2f}x from_generator "
            f"({procs[p] * batch:,.0f} vs {gen * batch:,.0f} elements/s; {note})"
        )
    if threads.get(1):
        more = ", ".join(f"thread P={p} is {rate / threads[1]:.2f}x" for p, rate in sorted(threads.items()) if p > 1)
        lines.append(f"python: threads share the GIL: {more or 'one worker only'} thread P=1"
                     + (f"; thread P=1 is {threads[1] / gen:.2f}x from_generator" if gen else ""))
    for p, rate in sorted(rays.items()):
        against = []
        if procs.get(p):
            ratio = rate / procs[p]
            against.append(f"{ratio:.2f}x process P={p} ({verdict(ratio, RAY_VS_PROCESS)})")
        if gen:
            against.append(f"{rate / gen:.2f}x from_generator")
        if against:
            lines.append(f"python: ray P={p} is {' and '.join(against)} ({rate * batch:,.0f} elements/s)")
    return lines


def per_worker_count(row: dict, method: str) -> dict:
    """{P: batches/s} of a worker method's figures in a workload's row."""
    return {int(k.split("=")[1]): v for k, v in row.items() if k.startswith(f"{method} P=") and v}


def ray_data_summary(name: str, row: dict) -> list:
    """mode="ray" against Ray Data's TF path, where a workload ran both."""
    base = row.get("ray_data")
    lines = []
    for p, rate in sorted(per_worker_count(row, "ray").items()):
        if base:
            ratio = rate / base
            lines.append(f"{name}: pyfastq ray P={p} is {ratio:.2f}x Ray Data's TF path ({rate:,.0f} vs "
                         f"{base:,.0f} batches/s; {verdict(ratio, RAY_VS_RAY_DATA)})")
    return lines


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = f"Python {platform.python_version()}, TensorFlow {tf.__version__}, pyfastq {pyfastq.__version__}"
    inter_op = tf.config.threading.get_inter_op_parallelism_threads() or "TF's default"
    return f"{cpu}, {os.cpu_count()} cores, {versions}, inter-op threads: {inter_op}"


@dataclass
class Options:
    """The command line, checked."""

    workloads: list  # names, in the order asked for
    methods: list
    worker_counts: list  # the python workload's
    seconds: float  # measuring time per figure
    json: str | None  # also write the figures to this file
    quick: bool = False
    repeat: int = 1  # measurements per figure: the median is reported, with the spread
    out: str | None = None  # a directory for bench.json and bench.png
    device: str = "cpu"  # "gpu": gpu_copy.py host-to-device methods on seed, small, image, large
    inter_op_threads: int | None = None  # TensorFlow's inter-op pool, set before anything runs; None: TF's default


def parse_args(argv) -> Options:
    """Options from argv (None: sys.argv); an unknown name or a bad worker count is a usage error."""
    parser = argparse.ArgumentParser(
        prog="pyfastq bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOAD_NAMES), help=f"comma-separated, of {', '.join(WORKLOAD_NAMES)}"
    )
    parser.add_argument(
        "--methods",
        default=",".join(ALL_METHODS),
        help=f"comma-separated, of {', '.join(ALL_METHODS)} (each workload runs those that apply to it)",
    )
    parser.add_argument(
        "--workers",
        help="the python workload's worker counts, comma-separated "
        "(default 1, 2, 4, ... up to the core count; --quick: 1,2)",
    )
    parser.add_argument("--seconds", type=float, default=2.5, help="measuring time per figure (after warm-up)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 0.3 s per figure")
    parser.add_argument("--repeat", type=int, default=1, help="measure each figure N times: the median, and the spread")
    parser.add_argument("--out", metavar="DIR", help="write DIR/bench.json (every figure, the machine), DIR/bench.png")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="gpu: host-to-device GB/s of the GPU kernel, prefetch_to_device and a bare pinned copy")
    parser.add_argument("--inter-op-threads", type=int, metavar="N",
                        help="TensorFlow's inter-op threads for the whole run (default: TF's own choice); "
                        "1 on a 2-core machine: see bench/README.md")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat takes an int >= 1, got {args.repeat}")
    if args.inter_op_threads is not None and args.inter_op_threads < 1:
        parser.error(f"--inter-op-threads takes an int >= 1, got {args.inter_op_threads}")
    if args.device == "gpu" and args.workloads == ",".join(WORKLOAD_NAMES):
        args.workloads = ",".join(gpu.GPU_WORKLOADS)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in workloads:
        if name not in WORKLOAD_NAMES:
            parser.error(f"unknown workload {name!r}")
    for m in methods:
        if m not in ALL_METHODS:
            parser.error(f"unknown method {m!r}")
    if args.workers:
        try:
            worker_counts = sorted({int(p) for p in args.workers.split(",") if p.strip()})
        except ValueError:
            parser.error(f"--workers takes comma-separated ints, got {args.workers!r}")
        if not worker_counts or worker_counts[0] < 1:
            parser.error(f"--workers takes ints >= 1, got {args.workers!r}")
    else:
        worker_counts = default_worker_counts(args.quick)
    if args.device == "gpu":
        for name in workloads:
            if name not in gpu.GPU_WORKLOADS:
                parser.error(f"--device gpu runs {', '.join(gpu.GPU_WORKLOADS)}; not {name!r}")
    seconds = 0.3 if args.quick else args.seconds
    return Options(workloads, methods, worker_counts, seconds, args.json, args.quick, args.repeat, args.out,
                   args.device, args.inter_op_threads)


def runnable(methods: list) -> list:
    """methods less those that need the native backend when it cannot load here, each skip said on stderr."""
    methods = list(methods)
    for m in ("native", SHUFFLE, "put_many", *IN_PLACE):
        if m in methods and pyfastq.native_unavailable():
            print(f"native backend unavailable, {m} skipped: {pyfastq.native_unavailable()}", file=sys.stderr)
            methods.remove(m)
    for m in WORKER_METHODS:  # the Producer runs on the native backend
        if m in methods and pyfastq.native_unavailable():
            print(f"native backend unavailable, Producer's {m} skipped", file=sys.stderr)
            methods.remove(m)
    if AUTO in methods and pyfastq.native_unavailable():  # the Producer's process workers
        print(f"native backend unavailable, Producer's {AUTO} skipped", file=sys.stderr)
        methods.remove(AUTO)
    if "grain" in methods:
        try:
            importlib.import_module("grain")
        except ImportError as e:
            print(f"grain skipped: grain does not import ({e}); pip install grain to measure its DataLoader",
                  file=sys.stderr)
            methods.remove("grain")
    for m, module, extra in (("ray", "ray", "ray"), ("ray_data", "ray.data", "bench")):
        if m in methods:
            try:
                importlib.import_module(module)
            except ImportError as e:
                print(f"{m} skipped: {module} does not import ({e}); pip install \"pyfastq[{extra}]\"",
                      file=sys.stderr)
                methods.remove(m)
    return methods


class Progress:
    """Progress on stderr: a line per figure, stamped with the seconds since the run began, and on a
    terminal a bar (rich, which Keras brings) counting the measurements done of `total`."""

    def __init__(self, total: int = 0):
        self._begin = time.perf_counter()
        self._bar = None
        if total and sys.stderr.isatty():
            try:
                from rich.console import Console
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                return
            self._bar = Progress(TextColumn("{task.description:32s}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self._task = self._bar.add_task("pyfastq bench", total=total)
            self._bar.start()

    def elapsed(self) -> float:
        return time.perf_counter() - self._begin

    def log(self, text: str) -> None:
        line = f"[{self.elapsed():6.1f}s] {text}"
        if self._bar is not None:
            self._bar.console.print(line, markup=False, highlight=False)
        else:
            print(line, file=sys.stderr, flush=True)

    def working_on(self, what: str) -> None:
        if self._bar is not None:
            self._bar.update(self._task, description=what)

    def advance(self) -> None:
        if self._bar is not None:
            self._bar.advance(self._task)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()


class ProgressHandler(logging.Handler):
    """Log records as Progress lines."""

    def __init__(self, progress: Progress):
        super().__init__(logging.INFO)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self._progress.log(record.getMessage())


@dataclass
class Results:
    """What the runs measured."""

    rows: dict = field(default_factory=dict)  # workload -> {label: batches/s (the median), None if it failed}
    samples: dict = field(default_factory=dict)  # workload -> {label: [batches/s of each repeat]}
    failures: int = 0
    element_ms: float | None = None  # the python workload's ms of work per element, measured here on one core
    startup: list = field(default_factory=list)  # startup_trainer.py's figures, one dict per run
    cases: dict = field(default_factory=dict)  # CASE_MODULES' figures: name -> label -> median over the repeats


def run_workload(name: str, options: Options, results: Results, progress: Progress) -> None:
    """Measures every method of options.methods that applies to one workload, into results."""
    w = WORKLOADS[name]
    row = results.rows[name] = {}
    if w.make is gil_work.make:
        results.element_ms = gil_work.ms_per_element(100, 3)
        progress.log(
            f"{name:6s} one element takes {results.element_ms:.3f} ms of Python "
            f"on one core (ideal {1e3 / results.element_ms:,.0f} elements/s per core)"
        )
    samples = results.samples[name] = {}
    for m, workers in runs(w, options.methods, worker_counts_of(w, options)):
        label = f"{m} P={workers}" if workers else m

        def line(rate: float, label: str = label) -> str:
            out = f"{name:6s} {label:15s} {rate:12,.1f} batches/s {rate * w.batch_bytes / 1e9:8.3f} GB/s"
            if w.methods in (PRODUCER_METHODS, SOURCE_METHODS):
                out += f" {rate * w.batch:10,.0f} elements/s"
            return out

        rates = samples[label] = repeated(f"{name} {label}", f"{name:6s} {label:15s}",
                                          lambda m=m, workers=workers: measure(w, m, options.seconds, workers or 1),
                                          line, options, results, progress)
        row[label] = statistics.median(rates) if len(rates) == options.repeat else None


def repeated(what: str, prefix: str, once: Callable[[], float], line: Callable[[float], str], options: Options,
             results: Results, progress: Progress) -> list:
    """options.repeat figures of once(), each logged as line(figure); a failure is counted, logged after prefix,
    and ends the repeats (one broken method must not hide the others)."""
    rates: list = []
    for _ in range(options.repeat):
        progress.working_on(what)
        try:
            rates.append(once())
        except Exception as e:  # noqa: BLE001 - see the docstring
            results.failures += 1
            progress.log(f"{prefix} FAILED: {type(e).__name__}: {e}")
            break
        finally:
            progress.advance()
            gc.collect()
        progress.log(line(rates[-1]))
    return rates


def case_module(name: str):
    """The module of one of CASE_MODULES (imported when asked for: each imports what it measures)."""
    return importlib.import_module(f".{name}", __package__)


def run_cases(name: str, options: Options, results: Results, progress: Progress) -> None:
    """A workload of CASE_MODULES: each case of its plan() measured in turn, with the repeats."""
    if pyfastq.native_unavailable():
        progress.log(f"{name} needs the native backend: {pyfastq.native_unavailable()}")
        results.failures += 1
        return
    rows = results.cases[name] = {}
    for label, run in case_module(name).plan():
        rates = repeated(f"{name} {label}", f"{name} {label}", lambda run=run: run(options.seconds),
                         lambda rate, label=label: f"{name} {label:45s} {rate:14,.3f}", options, results, progress)
        rows[label] = statistics.median(rates) if len(rates) == options.repeat else None


def startup_plan(options: Options) -> list:
    """(how, workers) of each startup figure."""
    if options.quick:
        return [("pyfastq", 1), ("pyfastq", 2)]
    return [("pyfastq", p) for p in STARTUP_WORKERS] + [("forkserver", p) for p in STARTUP_WORKERS]


def measurements(options: Options) -> int:
    """How many measurements the run will make: the progress bar's total."""
    count = 0
    for name in options.workloads:
        if name == STARTUP:
            count += len(startup_plan(options))
        elif name in CASE_MODULES:
            count += len(case_module(name).plan())
        else:
            w = WORKLOADS[name]
            count += len(list(runs(w, options.methods, worker_counts_of(w, options))))
    return count * options.repeat


def run_startup(options: Options, results: Results, progress: Progress) -> None:
    """The startup workload: a fresh trainer per figure, for pyfastq's workers and multiprocessing's forkserver."""
    if pyfastq.native_unavailable():
        progress.log("startup skipped: process workers need the native backend")
        return
    for how, workers in [run for run in startup_plan(options) for _ in range(options.repeat)]:
        label = f"{how} P={workers}"
        progress.working_on(f"startup {label}")
        trainer = [sys.executable, "-m", "pyfastq.bench.startup_trainer", str(workers), how]
        # Outside any checkout: `-m` puts the working directory first on sys.path, and a source tree
        # there (no compiled parts) would shadow the installed pyfastq.
        proc = subprocess.run(trainer, capture_output=True, text=True, timeout=600, cwd=tempfile.gettempdir(),
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        progress.advance()
        if proc.returncode != 0:
            results.failures += 1
            progress.log(f"startup {label:15s} FAILED (exit code {proc.returncode}): {proc.stderr.strip()[-2000:]}")
            continue
        figure = json.loads(proc.stdout.strip().splitlines()[-1])
        results.startup.append(figure)
        progress.log(f"startup {label:15s} first element {figure['to_first_s']:6.2f} s, every worker's "
                     f"{figure['to_all_s']:6.2f} s, worker USS up to {max(figure['uss_bytes']) / 2**20:6.1f} MB")


def startup_medians(runs_: list) -> list:
    """One figure per (how, workers): the median of its runs' times, the largest USS any of them saw."""
    groups: dict = {}
    for f in runs_:
        groups.setdefault((f["how"], f["workers"]), []).append(f)
    return [
        {"how": how, "workers": workers, "runs": len(fs),
         "to_first_s": statistics.median(f["to_first_s"] for f in fs),
         "to_all_s": statistics.median(f["to_all_s"] for f in fs),
         "uss_bytes": [max(u for f in fs for u in f["uss_bytes"])]}
        for (how, workers), fs in groups.items()
    ]


def print_startup(runs_: list) -> None:
    """The startup workload's table (medians over --repeat) and its targets."""
    if not runs_:
        return
    figures = startup_medians(runs_)
    print()
    print("| startup | workers | to the first element (s) | to every worker's first (s) | worker USS, max (MB) |")
    print("|---|---:|---:|---:|---:|")
    for f in figures:
        print(f"| {f['how']} | {f['workers']} | {f['to_first_s']:.2f} | {f['to_all_s']:.2f} | "
              f"{max(f['uss_bytes']) / 2**20:.1f} |")
    print()
    ours = {f["workers"]: f for f in figures if f["how"] == "pyfastq"}
    theirs = {f["workers"]: f for f in figures if f["how"] == "forkserver"}
    for workers, target in STARTUP_TARGETS_S.items():
        if workers in ours:
            took = ours[workers]["to_first_s"]
            line = (f"startup: {workers} workers, first element after {took:.2f} s "
                    f"(target <= {target:.1f} s: {'met' if took <= target else 'NOT met'})")
            if workers in theirs:
                line += f"; forkserver {theirs[workers]['to_first_s']:.2f} s"
            print(line)
    if ours:
        uss = max(max(f["uss_bytes"]) for f in ours.values()) / 2**20
        verdict = "met" if uss <= STARTUP_USS_TARGET_MB else "NOT met"
        line = f"startup: a worker's USS is at most {uss:.1f} MB (target <= {STARTUP_USS_TARGET_MB} MB: {verdict})"
        if theirs:
            line += f"; forkserver workers {max(max(f['uss_bytes']) for f in theirs.values()) / 2**20:.1f} MB"
        print(line)


def print_table(argv, rows: dict, samples: dict) -> None:
    """The machine, the command and a markdown table of every figure, against the best baseline and np.copyto."""
    print(f"Machine: {machine()}")
    print(f"Command: pyfastq bench {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    if not rows:
        return
    print()
    spread = any(len(v) > 1 for row in samples.values() for v in row.values())
    print("| workload | method | batches/s | elements/s | GB/s | vs best baseline | vs np.copyto |"
          + (" spread (min-max) |" if spread else ""))
    print("|---|---|---:|---:|---:|---:|---:|" + ("---:|" if spread else ""))
    for name, row in rows.items():
        w = WORKLOADS[name]
        base = max((row.get(b) or 0 for b in BASELINES), default=0)
        if w.source is not None:
            base = (best_of(row, SOURCE_PEERS) or (None, 0))[1]
        copy = row.get("np_copyto")
        for m, rate in row.items():
            if rate is None:
                print(f"| {name} | {m} | failed | | | | |" + (" |" if spread else ""))
                continue
            vs_base = f"{rate / base:.2f}x" if base else ""
            vs_copy = f"{rate / copy:.2f}x" if copy and w.batch == 1 else ""
            gbs = rate * w.batch_bytes / 1e9
            line = f"| {name} | {m} | {rate:,.1f} | {rate * w.batch:,.0f} | {gbs:.3f} | {vs_base} | {vs_copy} |"
            if spread:
                got = samples[name][m]
                line += f" {min(got):,.1f}-{max(got):,.1f} |"
            print(line)


def print_summary(results: Results) -> None:
    """One line per workload on native against its best baseline, then the python workload's targets."""
    for name, row in results.rows.items():
        base = {b: row.get(b) for b in BASELINES if row.get(b)}
        if row.get("native") and base:
            best = max(base, key=base.get)
            line = f"{name}: pyfastq native is {row['native'] / base[best]:.1f}x the best baseline ({best})"
            if row.get("np_copyto") and WORKLOADS[name].batch == 1:
                line += f", {row['native'] / row['np_copyto']:.2f}x one np.copyto"
            print(line)
        if row.get(SHUFFLE) and row.get("native"):
            ratio = row[SHUFFLE] / row["native"]
            w = WORKLOADS[name]
            print(f"{name}: shuffle (capacity {w.capacity + w.min_after_dequeue}, min_after_dequeue "
                  f"{w.min_after_dequeue}) is {ratio:.2f}x the FIFO queue (native, capacity {w.capacity}; "
                  f"{verdict(ratio, SHUFFLE_TARGET)})")
        for line in ray_data_summary(name, row):
            print(line)
    for line in limit_summary(results.rows):
        print(line)
    if "python" in results.rows:
        for line in producer_summary(results.rows["python"], WORKLOADS["python"].batch, results.element_ms):
            print(line)
    for name, row in results.rows.items():
        if WORKLOADS[name].source is not None:
            for line in source_summary(name, row, WORKLOADS[name].batch):
                print(line)


def method_of(label: str) -> str:
    """The method of a row's label: "process P=2" -> "process"."""
    return label.split(" P=")[0]


def best_of(row: dict, methods: tuple, workers: int | None = None) -> tuple | None:
    """(label, batches/s) of the fastest figure in row of one of methods (at P=workers, or without a P); or None."""
    got = [(label, rate) for label, rate in row.items() if rate and method_of(label) in methods
           and (workers is None or " P=" not in label or label.endswith(f" P={workers}"))]
    return max(got, key=lambda kv: kv[1]) if got else None


def source_summary(name: str, row: dict, batch: int) -> list:
    """A source workload against its peers at 2 workers, and workers="auto" against the best fixed worker count."""
    lines = []
    peer, ours = best_of(row, SOURCE_PEERS, 2), best_of(row, ("thread", "process"), 2)
    if ours and peer:
        label, rate = ours
        against = [f"{rate / peer[1]:.2f}x the best peer, {peer[0]} ({peer[1] * batch:,.0f} elements/s)"]
        for m, target in SOURCE_TARGETS.get(name, {}).items():
            if m == "best peer":
                against[0] += f"; {verdict(rate / peer[1], target)}"
            elif row.get(f"{m} P=2"):
                ratio = rate / row[f"{m} P=2"]
                against.append(f"{ratio:.2f}x {m} P=2 ({verdict(ratio, target)})")
        lines.append(f"{name}: pyfastq {label} ({rate * batch:,.0f} elements/s) is {'; '.join(against)}")
    fixed = best_of(row, ("thread", "process"))
    if row.get(AUTO) and fixed:
        ratio = row[AUTO] / fixed[1]
        lines.append(f"{name}: pyfastq auto ({row[AUTO] * batch:,.0f} elements/s) is {ratio:.2f}x the best fixed "
                     f"worker count, {fixed[0]} ({verdict(ratio, AUTO_TARGET)})")
    return lines


def verdict(ratio: float, target: float) -> str:
    return f"target >= {target:g}x: {'met' if ratio >= target else 'NOT met'}"


def limit_summary(rows: dict) -> list:
    """native against the limits measured in the same run, seed's elements/s, and reserve against fresh_put."""
    lines = []
    for name, row in rows.items():
        w, native = WORKLOADS[name], row.get("native")
        if native and row.get(GRAPH_LOOP):
            ratio = native / row[GRAPH_LOOP]
            line = (f"{name}: pyfastq native is {ratio:.2f}x the graph loop with no feeding "
                    f"({row[GRAPH_LOOP]:,.0f} steps/s)")
            lines.append(line + (f"; {verdict(ratio, GRAPH_LOOP_TARGET)}" if name == "small" else ""))
        if native and row.get(COLD_COPY):
            ratio = native / row[COLD_COPY]
            lines.append(f"{name}: pyfastq native is {ratio:.2f}x one cache-cold np.copyto ({row[COLD_COPY]:,.1f}/s); "
                         f"{verdict(ratio, COLD_COPY_TARGET)}")
        if name == "seed" and native:
            got = native * w.batch
            met = "met" if got >= SEED_TARGET else "NOT met"
            line = (f"seed: one producer thread calling put per element: {got:,.0f} elements/s "
                    f"(target >= {SEED_TARGET:,.0f}: {met})")
            if row.get("put_many"):
                line += (f"; put_many of {PUT_MANY_ROWS}: {row['put_many'] * w.batch:,.0f} elements/s "
                         f"({row['put_many'] / native:.2f}x)")
            lines.append(line)
        if row.get("reserve") and row.get("fresh_put"):
            lines.append(f"{name}: a producer making its batch in place (reserve) is "
                         f"{row['reserve'] / row['fresh_put']:.2f}x the same producer making an array and calling put")
    return lines


def write_json(path: str, results: Results, options: Options) -> None:
    """The figures, with the machine, the command's options and every repeat, as JSON."""
    out = {"machine": machine(), "seconds": options.seconds, "repeat": options.repeat, "results": results.rows,
           "samples": results.samples,
           "batch_bytes": {name: WORKLOADS[name].batch_bytes for name in results.rows},
           "batch_elements": {name: WORKLOADS[name].batch for name in results.rows}}
    if results.element_ms is not None:
        out["python_element_ms"] = results.element_ms
    out.update(results.cases)
    if results.startup:
        out["startup"] = startup_medians(results.startup)
        out["startup_runs"] = results.startup
    with open(path, "w") as f:
        json.dump(out, f, indent=2)


def write_outputs(options: Options, results: Results) -> None:
    """--json FILE; --out DIR: DIR/bench.json and, with matplotlib, DIR/bench.png."""
    if options.json:
        write_json(options.json, results, options)
    if not options.out:
        return
    os.makedirs(options.out, exist_ok=True)
    path = os.path.join(options.out, "bench.json")
    write_json(path, results, options)
    print(f"wrote {path}", file=sys.stderr)
    try:
        from .plot import plot
    except ImportError as e:
        print(f"no plot: {e.name or e} is not installed here; pip install \"pyfastq[bench]\" to get "
              f"{os.path.join(options.out, 'bench.png')}", file=sys.stderr)
        return
    png = os.path.join(options.out, "bench.png")
    plot(path, png)
    print(f"wrote {png}", file=sys.stderr)


def run_gpu(argv, options: Options) -> int:
    """--device gpu: every GPU method on each workload asked for, then one table against the limits."""
    if not gpu.gpus():
        print(gpu.NO_GPU)
        return 0
    if pyfastq.native_unavailable():
        print(f"--device gpu needs the native backend: {pyfastq.native_unavailable()}", file=sys.stderr)
        return 1
    progress, rows, failures = Progress(), {}, 0
    progress.log(gpu.pinned_summary())
    for name in options.workloads:
        w = WORKLOADS[name]
        row = rows[name] = {}
        for m in gpu.methods_for(w):
            try:
                rate = gpu.measure(w, m, options.seconds)
            except Exception as e:  # noqa: BLE001 - one broken method must not hide the others
                failures += 1
                progress.log(f"{name:6s} {m:18s} FAILED: {type(e).__name__}: {e}")
                row[m] = None
                continue
            row[m] = rate
            progress.log(f"{name:6s} {m:18s} {rate:12,.1f} batches/s {rate * w.batch_bytes / 1e9:8.3f} GB/s")
            gc.collect()
    print(f"Machine: {machine()}, {len(gpu.gpus())} GPU(s): {tf.config.experimental.get_device_details(gpu.gpus()[0])}")
    print(f"Command: pyfastq bench {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    gpu.print_table(rows, WORKLOADS)
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"machine": machine(), "device": "gpu", "seconds": options.seconds, "results": rows}, f, indent=2)
    print(f"\n({progress.elapsed():.0f} s)", file=sys.stderr)
    return 1 if failures else 0


def main(argv=None) -> int:
    options = parse_args(argv)
    if options.inter_op_threads is not None:
        tf.config.threading.set_inter_op_parallelism_threads(options.inter_op_threads)
    if options.device == "gpu":
        return run_gpu(argv, options)
    options.methods = runnable(options.methods)
    progress = Progress(measurements(options))
    results = Results()
    # workers="auto" logs each change of its pool at INFO: shown among the figures, stamped like them.
    said = ProgressHandler(progress)
    pyfastq_log = logging.getLogger("pyfastq")
    level, propagate = pyfastq_log.level, pyfastq_log.propagate
    pyfastq_log.addHandler(said)
    pyfastq_log.setLevel(logging.INFO)
    pyfastq_log.propagate = False  # once, not again through a handler TF's absl gave the root logger
    try:
        for name in options.workloads:
            if name == STARTUP:
                run_startup(options, results, progress)
            elif name in CASE_MODULES:
                run_cases(name, options, results, progress)
            else:
                run_workload(name, options, results, progress)
    finally:
        pyfastq_log.removeHandler(said)
        pyfastq_log.setLevel(level)
        pyfastq_log.propagate = propagate
        progress.close()
    print_table(argv, results.rows, results.samples)
    print()
    print_summary(results)
    print_startup(results.startup)
    for name, rows in results.cases.items():
        case_module(name).print_table(rows)
    write_outputs(options, results)
    print(f"\n({progress.elapsed():.0f} s)", file=sys.stderr)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
