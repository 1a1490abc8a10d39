"""pyfastq's benchmark: Python producer -> TF graph, against the tools people use today.

    python bench/run.py                 # every workload, about 3 minutes on 2 cores
    python bench/run.py --quick         # a smoke run
    python bench/run.py --workloads seed,large --methods native,from_generator --json out.json

Consumer: one tf.function running N steps in a graph loop (`for _ in tf.range(n)`);
each step takes one batch and reads from it. Producer: a Python thread putting one
pre-made numpy batch (seed: one [100] float32 element at a time, batched 128 in the
graph). Every method's producer pays exactly one copy of the pre-made batch per put,
as a real producer making a new batch would: pyfastq's put copies it into the ring;
the baselines are handed `batch.copy()` (handing TF the same array object every time
lets from_generator and numpy_function wrap it without any copy, which no real
producer of new data can do). Each figure is batches consumed over a fixed wall-time
budget after a warm-up.
Ratios compare methods measured in the same run; absolute figures drift between runs.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import queue as pyqueue
import sys
import threading
import time
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import pyfastq  # noqa: E402

BASELINES = ("from_generator", "numpy_function", "fifo_queue")
METHODS = ("native", "python", *BASELINES, "np_copyto")


@dataclass
class Workload:
    name: str
    element_shape: tuple  # what one put carries
    dtype: type
    batch: int  # elements per consumed batch (1: each put is a whole batch)
    capacity: int  # queue capacity, in elements

    @property
    def batch_bytes(self) -> int:
        return int(np.prod(self.element_shape)) * np.dtype(self.dtype).itemsize * self.batch

    def spec(self) -> tf.TensorSpec:
        return tf.TensorSpec(self.element_shape, tf.as_dtype(self.dtype))


# Further workloads (the GIL-bound producer of process mode) register here.
WORKLOADS = {
    "seed": Workload("seed: [100] float32 elements, dequeue_many(128)", (100,), np.float32, 128, 1024),
    "small": Workload("small batch [128,100] float32 (51 KB)", (128, 100), np.float32, 1, 8),
    "image": Workload("image batch [32,224,224,3] uint8 (4.8 MB)", (32, 224, 224, 3), np.uint8, 1, 8),
    "large": Workload("large batch [16,1024,1024] float32 (64 MB)", (16, 1024, 1024), np.float32, 1, 8),
}


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


def graph_loop(take):
    """A tf.function that takes n batches with take() and reads one value of each."""

    @tf.function
    def run(n):
        acc = tf.constant(0.0)
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


def measure_pyfastq(w: Workload, backend: str, seconds: float) -> float:
    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend=backend)
    item = np.ones(w.element_shape, w.dtype)
    feeder = Feeder(q.put, item)
    take = (lambda: q.dequeue_many(w.batch)) if w.batch > 1 else q.dequeue
    try:
        return timed(graph_loop(take), seconds)
    finally:
        feeder.stop(lambda: q.close(cancel=True))


def measure_from_generator(w: Workload, seconds: float) -> float:
    item = np.ones(w.element_shape, w.dtype)

    def gen():
        while True:
            yield item.copy()

    ds = tf.data.Dataset.from_generator(gen, output_signature=w.spec())
    if w.batch > 1:
        ds = ds.batch(w.batch)
    it = iter(ds.prefetch(2))
    return timed(graph_loop(lambda: next(it)), seconds)


def measure_numpy_function(w: Workload, seconds: float) -> float:
    q: pyqueue.Queue = pyqueue.Queue(maxsize=w.capacity)
    item = np.ones(w.element_shape, w.dtype)

    def put(x):
        try:
            q.put(x.copy(), timeout=0.1)  # returns within 0.1 s so the feeder sees stop
        except pyqueue.Full:
            pass

    feeder = Feeder(put, item)
    shape = [w.batch, *w.element_shape] if w.batch > 1 else list(w.element_shape)

    def get():
        if w.batch > 1:
            return np.stack([q.get() for _ in range(w.batch)])
        return q.get()

    def take():
        out = tf.numpy_function(get, [], tf.as_dtype(w.dtype), stateful=True)
        out.set_shape(shape)
        return out

    try:
        return timed(graph_loop(take), seconds)
    finally:
        feeder.stop()


def measure_fifo_queue(w: Workload, seconds: float) -> float:
    fq = tf.queue.FIFOQueue(w.capacity, [tf.as_dtype(w.dtype)], shapes=[w.element_shape])
    item = np.ones(w.element_shape, w.dtype)
    feeder = Feeder(lambda x: fq.enqueue(x.copy()), item)
    take = (lambda: fq.dequeue_many(w.batch)) if w.batch > 1 else fq.dequeue
    try:
        return timed(graph_loop(take), seconds)
    finally:
        feeder.stop(lambda: fq.close(cancel_pending_enqueues=True))


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


def measure(w: Workload, method: str, seconds: float) -> float:
    if method in ("native", "python"):
        return measure_pyfastq(w, method, seconds)
    return globals()[f"measure_{method}"](w, seconds)


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, TensorFlow {tf.__version__}, pyfastq {pyfastq.__version__}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help=f"comma-separated, of {', '.join(WORKLOADS)}")
    parser.add_argument("--methods", default=",".join(METHODS), help=f"comma-separated, of {', '.join(METHODS)}")
    parser.add_argument("--seconds", type=float, default=2.5, help="measuring time per figure (after warm-up)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 0.3 s per figure")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    seconds = 0.3 if args.quick else args.seconds
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in workloads:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}")
    for m in methods:
        if m not in METHODS:
            parser.error(f"unknown method {m!r}")
    if "native" in methods and pyfastq.native_unavailable():
        print(f"native backend unavailable, skipped: {pyfastq.native_unavailable()}", file=sys.stderr)
        methods.remove("native")

    results: dict = {}
    failures = 0
    begin = time.perf_counter()
    for name in workloads:
        w = WORKLOADS[name]
        results[name] = {}
        for m in methods:
            try:
                rate = measure(w, m, seconds)
            except Exception as e:  # noqa: BLE001 - one broken method must not hide the others
                failures += 1
                print(f"[{time.perf_counter() - begin:6.1f}s] {name:6s} {m:15s} FAILED: {type(e).__name__}: {e}", file=sys.stderr)
                results[name][m] = None
                continue
            results[name][m] = rate
            print(f"[{time.perf_counter() - begin:6.1f}s] {name:6s} {m:15s} {rate:12,.1f} batches/s {rate * w.batch_bytes / 1e9:8.3f} GB/s",
                  file=sys.stderr, flush=True)
            gc.collect()

    print(f"Machine: {machine()}")
    print(f"Command: python bench/run.py {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip())
    print()
    print("| workload | method | batches/s | elements/s | GB/s | vs best baseline | vs np.copyto |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for name, row in results.items():
        w = WORKLOADS[name]
        base = max((row.get(b) or 0 for b in BASELINES), default=0)
        copy = row.get("np_copyto")
        for m, rate in row.items():
            if rate is None:
                print(f"| {name} | {m} | failed | | | | |")
                continue
            vs_base = f"{rate / base:.2f}x" if base else ""
            vs_copy = f"{rate / copy:.2f}x" if copy and w.batch == 1 else ""
            print(f"| {name} | {m} | {rate:,.1f} | {rate * w.batch:,.0f} | {rate * w.batch_bytes / 1e9:.3f} | {vs_base} | {vs_copy} |")
    print()
    for name, row in results.items():
        base = {b: row.get(b) for b in BASELINES if row.get(b)}
        if row.get("native") and base:
            best = max(base, key=base.get)
            line = f"{name}: pyfastq native is {row['native'] / base[best]:.1f}x the best baseline ({best})"
            if row.get("np_copyto") and WORKLOADS[name].batch == 1:
                line += f", {row['native'] / row['np_copyto']:.2f}x one np.copyto"
            print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "seconds": seconds, "results": results}, f, indent=2)
    print(f"\n({time.perf_counter() - begin:.0f} s)", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
