"""pyfastq bench --device gpu: host-to-device copies into a GPU, where TensorFlow sees one.

    pyfastq bench --device gpu                      # seed, small, image, large
    pyfastq bench --device gpu --workloads image --seconds 5

Methods, each consuming batches in GPU memory inside one tf.function graph loop:
  native            q.dequeue() / q.dequeue_many(n) under tf.device("/GPU:0"): the GPU kernel copies
                    from the ring's slots (pinned at the first dequeue) on the op's stream
  native_gather     dequeue_many only: rows gathered into pinned host memory, then one copy
  native_rows       dequeue_many only: one copy per row, straight from each pinned slot
  prefetch_to_device  q.dataset() on the CPU with tf.data.experimental.prefetch_to_device("/GPU:0")
  pinned_copy       the limit: cudaMemcpy of the same bytes from cudaMallocHost memory, through the
                    CUDA runtime (ctypes), nothing else
The producer is a Python thread putting one pre-made batch, as in the CPU benchmark.
"""

from __future__ import annotations

import ctypes
import functools
import gc
import json
import os
import sys
import time
from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

import pyfastq

from .runner import Progress
from .summary import command, machine
from .timing import take_of, timed_feeding
from .workloads import WORKLOADS

if TYPE_CHECKING:
    from .run import Options

GPU_WORKLOADS = ("seed", "small", "image", "large")
NO_GPU = "no GPU visible to TensorFlow here: --device gpu measures host-to-device copies. Nothing measured."


def gpus() -> list:
    return tf.config.list_physical_devices("GPU")


def _timed_on_gpu(w, q, take, seconds: float) -> float:
    """Batches/s of the CPU benchmark's graph loop of take(), on /GPU:0, while a thread puts w's element into q."""
    item = np.ones(w.element_shape, w.dtype)
    return timed_feeding(q.put, item, take, lambda: q.close(cancel=True), seconds, device="/GPU:0")


def measure_native(w, seconds: float, copy: str) -> float:
    from pyfastq.backends.native import gpu_copy

    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native")
    with gpu_copy(copy):  # the dequeues are made in _timed_on_gpu's graph
        return _timed_on_gpu(w, q, take_of(q, w.batch), seconds)


def measure_prefetch_to_device(w, seconds: float) -> float:
    q = pyfastq.Queue(w.spec(), capacity=w.capacity, backend="native")
    ds = q.dataset(batch_size=w.batch if w.batch > 1 else None)
    it = iter(ds.apply(tf.data.experimental.prefetch_to_device("/GPU:0", buffer_size=2)))
    return _timed_on_gpu(w, q, lambda: next(it), seconds)


def _cudart() -> ctypes.CDLL:
    """The CUDA runtime: the one pyfastq pins with if it has loaded one, else the usual places."""
    from pyfastq import _core
    from pyfastq.backends.native import _pip_cudart

    names = [_core.cudart()] if os.path.exists(_core.cudart()) else []
    names += _pip_cudart()
    names += ["libcudart.so.13", "libcudart.so.12", "libcudart.so.11.0", "libcudart.so"]
    for name in names:
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise OSError("no CUDA runtime (libcudart) found for the pinned-copy limit")


def measure_pinned_copy(w, seconds: float) -> float:
    """Batches/s of a bare cudaMemcpy host-to-device of one batch's bytes from page-locked memory."""
    rt = _cudart()
    nbytes = ctypes.c_size_t(w.batch_bytes)
    host, dev = ctypes.c_void_p(), ctypes.c_void_p()
    for call, args in (("cudaMallocHost", (ctypes.byref(host), nbytes)), ("cudaMalloc", (ctypes.byref(dev), nbytes))):
        if getattr(rt, call)(*args) != 0:
            raise RuntimeError(f"{call} of {w.batch_bytes} bytes failed")
    try:
        ctypes.memset(host, 1, w.batch_bytes)
        host_to_device = 1  # cudaMemcpyHostToDevice
        rt.cudaMemcpy(dev, host, nbytes, host_to_device)  # warm-up
        copies, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            for _ in range(10):
                if rt.cudaMemcpy(dev, host, nbytes, host_to_device) != 0:
                    raise RuntimeError("cudaMemcpy failed")
            copies += 10
        rt.cudaDeviceSynchronize()
        return copies / (time.perf_counter() - start)
    finally:
        rt.cudaFree(dev)
        rt.cudaFreeHost(host)


# name -> fn(w, seconds) -> batches/s, in the table's order.
GPU_METHODS = {
    "native": functools.partial(measure_native, copy="auto"),
    "native_gather": functools.partial(measure_native, copy="gather"),
    "native_rows": functools.partial(measure_native, copy="rows"),
    "prefetch_to_device": measure_prefetch_to_device,
    "pinned_copy": measure_pinned_copy,
}


def methods_for(w) -> list:
    """native_gather and native_rows differ only for dequeue_many (a batch of several elements)."""
    return [m for m in GPU_METHODS if w.batch > 1 or m not in ("native_gather", "native_rows")]


def measure(w, method: str, seconds: float) -> float:
    if method not in GPU_METHODS:
        raise ValueError(f"unknown GPU bench method {method!r}; the known ones: {', '.join(GPU_METHODS)}")
    return GPU_METHODS[method](w, seconds)


def print_table(rows: dict) -> None:
    print()
    print("| workload | method | batches/s | GB/s host to device | vs pinned_copy | vs prefetch_to_device |")
    print("|---|---|---:|---:|---:|---:|")
    for name, row in rows.items():
        w = WORKLOADS[name]
        limit, prefetch = row.get("pinned_copy"), row.get("prefetch_to_device")
        for m, rate in row.items():
            if rate is None:
                print(f"| {name} | {m} | failed | | | |")
                continue
            vs_limit = f"{rate / limit:.2f}x" if limit else ""
            vs_prefetch = f"{rate / prefetch:.2f}x" if prefetch else ""
            print(f"| {name} | {m} | {rate:,.1f} | {rate * w.batch_bytes / 1e9:.3f} | {vs_limit} | {vs_prefetch} |")


def pinned_summary() -> str:
    """Whether the ring of a GPU dequeue was pinned here, and with which CUDA runtime."""
    from pyfastq import _core

    q = pyfastq.Queue(tf.TensorSpec([1], tf.float32), capacity=2, backend="native")
    q.put(np.zeros(1, np.float32))
    with tf.device("/GPU:0"):
        q.dequeue_many(1)
    pinned, why = q._impl._ring.pin()
    return f"ring pinned: {pinned}" + (f" ({_core.cudart()})" if pinned else f": {why}")


def run(argv, options: Options) -> int:
    """--device gpu: every GPU method on each workload asked for, then one table against the limits."""
    if not gpus():
        print(NO_GPU)
        return 0
    if pyfastq.native_unavailable():
        print(f"--device gpu needs the native backend: {pyfastq.native_unavailable()}", file=sys.stderr)
        return 1
    progress, rows, failures = Progress(), {}, 0
    progress.log(pinned_summary())
    for name in options.workloads:
        w = WORKLOADS[name]
        row = rows[name] = {}
        for m in methods_for(w):
            try:
                rate = measure(w, m, options.seconds)
            except Exception as e:  # noqa: BLE001 - one broken method must not hide the others
                failures += 1
                progress.log(f"{name:6s} {m:18s} FAILED: {type(e).__name__}: {e}")
                row[m] = None
                continue
            row[m] = rate
            progress.log(f"{name:6s} {m:18s} {rate:12,.1f} batches/s {rate * w.batch_bytes / 1e9:8.3f} GB/s")
            gc.collect()
    print(f"Machine: {machine()}, {len(gpus())} GPU(s): {tf.config.experimental.get_device_details(gpus()[0])}")
    print(command(argv))
    print_table(rows)
    if options.json:
        with open(options.json, "w") as f:
            json.dump({"machine": machine(), "device": "gpu", "seconds": options.seconds, "results": rows}, f, indent=2)
    print(f"\n({progress.elapsed():.0f} s)", file=sys.stderr)
    return 1 if failures else 0
