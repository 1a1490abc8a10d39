"""The tfdata workload: q.dataset() against tf.data's own floor, with the same consumer, in one run.

Each case pairs a pyfastq dataset, fed by a Python thread putting pre-made elements (one per put; a batch's
rows per put_many for dataset(128) and for fit), with the tf.data
dataset that feeds nothing at all (from_tensors(x).repeat(), or an in-memory from_tensor_slices for Keras):
the floor any tf.data source sits on. Consumers: a tf.function graph loop of next(it) (as fit consumes),
eager iteration (for x in ds), and Keras fit of a one-layer model with steps_per_execution=50.
Figures are elements/s (fit: steps/s); the ratio is pyfastq's over the floor's. The floor hands out one
tensor it never writes; a queue's batch is data a producer wrote, so where the floor would mean more
bytes per second than one memcpy moves (q.dataset(128) of 51 KB elements: 6.5 MB batches), the ratio is
taken to that memcpy's rate instead ("copy" in the table), the ceiling of any source that moves its data:
np.copyto of each batch out of memory as large as the queue's ring (8 batches, 52 MB: no cache holds it),
as the dataset's gather reads the ring's slots.

    python -m pyfastq.bench.tfdata   # the alias limit: q.dataset().prefetch(k) across it, in eager iteration

A q.dataset() element aliases its ring slot while fewer than half the slots are held that way, and is
copied out (its slot freed at once) beyond: `python -m pyfastq.bench.tfdata` measures a capacity-64 queue
of 51 KB and 400 B elements under prefetch(k) for k below, at and above that limit of 32.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

import pyfastq

from .summary import met
from .timing import copy_rate, feeding_queue, graph_loop, timed

SMALL = (100,)  # 400 B of float32
LARGE = (128, 100)  # 51 KB of float32
FIT_INPUTS = 100
FIT_BATCH = 64
STEPS_PER_EXECUTION = 50
RING_BATCHES = 8  # dataset(128)'s queue holds 8 batches
# Goals (a benchmark, not a test): pyfastq's figure over the floor's.
TARGETS = {"dataset()": 0.9, "dataset(128)": 0.9, "dataset().batch(64)": 0.6, "fit dataset(64)": 0.9,
           "fit dataset().batch(64)": 0.6}


@dataclass
class Case:
    name: str  # the TARGETS key
    element: tuple  # one element's shape (float32)
    consumer: str  # "graph" or "eager"

    @property
    def label(self) -> str:
        kb = int(np.prod(self.element)) * 4 / 1000
        return f"{self.name} {kb:g} KB, {self.consumer}"


CASES = [Case(n, e, c) for c in ("graph", "eager") for n, e in
         [("dataset()", SMALL), ("dataset()", LARGE), ("dataset(128)", SMALL), ("dataset(128)", LARGE),
          ("dataset().batch(64)", SMALL)]]
FIT_CASES = ["fit dataset(64)", "fit dataset().batch(64)"]


def _shape(case: Case) -> tuple[int, int]:
    """(elements per batch the consumer takes, how the pyfastq dataset is batched: None or n)."""
    if case.name == "dataset(128)":
        return 128, 128
    if case.name == "dataset().batch(64)":
        return 64, None
    return 1, None


def _pyfastq_dataset(q, case: Case):
    _, n = _shape(case)
    ds = q.dataset(n)
    return ds.batch(64) if case.name == "dataset().batch(64)" else ds


def _floor_dataset(case: Case):
    _, n = _shape(case)
    x = tf.ones(case.element, tf.float32)
    if n:
        return tf.data.Dataset.from_tensors(tf.ones((n, *case.element), tf.float32)).repeat()
    ds = tf.data.Dataset.from_tensors(x).repeat()
    return ds.batch(64) if case.name == "dataset().batch(64)" else ds


def _eager(it, seconds: float) -> float:
    """Batches per second of next(it) in Python, after a warm-up."""
    for _ in range(100):
        next(it)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(100):
            next(it)
        count += 100
    return count / (time.perf_counter() - start)


def _rate(ds, case: Case, seconds: float) -> float:
    it = iter(ds)
    if case.consumer == "graph":
        return timed(graph_loop(lambda: next(it)), seconds)
    return _eager(it, seconds)


def measure(case: Case, source: str, seconds: float) -> float:
    """Elements per second of one case, from pyfastq ("pyfastq"), the floor ("floor") or one memcpy of
    each batch ("copy")."""
    per, _ = _shape(case)
    if source == "copy":
        # Out of memory as large as the queue's ring (RING_BATCHES batches, more than a cache holds at 51 KB
        # elements), one batch after another, as the dataset's gather reads the ring's slots.
        srcs = np.ones((RING_BATCHES, per, *case.element), np.float32)
        dst = np.empty_like(srcs[0])
        return copy_rate([(dst, src) for src in srcs], seconds) * per
    if source == "floor":
        return _rate(_floor_dataset(case), case, seconds) * per
    # dataset(128): a queue of 8 batches, as docs/api.md advises, so that a producer woken a little late never
    # leaves the consumer waiting; with 2 batches it is a wake-up's latency away from waiting at every batch.
    q = pyfastq.Queue(tf.TensorSpec(case.element, tf.float32),
                      capacity=RING_BATCHES * 128 if case.name == "dataset(128)" else 64)
    if case.name == "dataset(128)":  # the producer puts one pre-made batch of 128 rows per call
        feeding = feeding_queue(q, np.ones((128, *case.element), np.float32), many=True)
    else:
        feeding = feeding_queue(q, np.ones(case.element, np.float32))
    with feeding:
        return _rate(_pyfastq_dataset(q, case), case, seconds) * per


def measure_fit(name: str, source: str, seconds: float) -> float:
    """Keras fit steps per second of a one-layer model on batches of 64 (pyfastq, or in-memory: "floor")."""
    model = tf.keras.Sequential([tf.keras.Input([FIT_INPUTS]), tf.keras.layers.Dense(1)])
    model.compile("sgd", "mse", steps_per_execution=STEPS_PER_EXECUTION)
    if source == "floor":
        x = np.ones((FIT_BATCH * 100, FIT_INPUTS), np.float32)
        y = np.ones((FIT_BATCH * 100, 1), np.float32)
        ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(FIT_BATCH).repeat()
        return _fit_rate(model, ds, seconds)
    q = pyfastq.Queue((tf.TensorSpec([FIT_INPUTS], tf.float32), tf.TensorSpec([1], tf.float32)), capacity=256)
    # put_many of a batch's rows at a time: one put per element from a Python thread costs ~2.5 us, more
    # than a step of this model per 64 elements, which would measure the producer, not the dataset.
    rows = (np.ones((FIT_BATCH, FIT_INPUTS), np.float32), np.ones((FIT_BATCH, 1), np.float32))
    with feeding_queue(q, rows, many=True):
        ds = q.dataset(FIT_BATCH) if name == "fit dataset(64)" else q.dataset().batch(FIT_BATCH)
        return _fit_rate(model, ds, seconds)


def _fit_rate(model, ds, seconds: float) -> float:
    """Steps per second of model.fit over ds, traced and warm, for about `seconds`."""
    model.fit(ds, steps_per_epoch=STEPS_PER_EXECUTION * 4, epochs=1, verbose=0)  # traced and warm
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=STEPS_PER_EXECUTION * 4, epochs=1, verbose=0)
    per_step = (time.perf_counter() - start) / (STEPS_PER_EXECUTION * 4)
    steps = STEPS_PER_EXECUTION * max(1, int(seconds / per_step / STEPS_PER_EXECUTION))
    start = time.perf_counter()
    model.fit(ds, steps_per_epoch=steps, epochs=1, verbose=0)
    return steps / (time.perf_counter() - start)


def plan() -> list:
    """(label, measure()) of every figure, pyfastq's and its floor's side by side."""
    out = []
    for case in CASES:
        sources = ("pyfastq", "floor", "copy") if _shape(case)[1] else ("pyfastq", "floor")
        for source in sources:
            out.append((f"{case.label} {source}", lambda s, c=case, src=source: measure(c, src, s)))
    for name in FIT_CASES:
        for source in ("pyfastq", "floor"):
            out.append((f"{name} {source}", lambda s, n=name, src=source: measure_fit(n, src, s)))
    return out


def print_table(rows: dict) -> None:
    """rows: label -> figure (None if it failed). One line per case: pyfastq, the floor, their ratio."""
    if not rows:
        return
    print()
    print("| tf.data case | pyfastq | tf.data floor (or copy) | ratio | target |")
    print("|---|---:|---:|---:|---|")
    labels = [c.label for c in CASES] + FIT_CASES
    for label in labels:
        ours, floor = rows.get(f"{label} pyfastq"), rows.get(f"{label} floor")
        target = TARGETS[label if label.startswith("fit") else label.split(" ")[0]]
        unit = "steps/s" if label.startswith("fit") else "elements/s"
        if ours is None or floor is None:
            print(f"| {label} | {'failed' if ours is None else f'{ours:,.0f}'} | "
                  f"{'failed' if floor is None else f'{floor:,.0f}'} | | >= {target:g}x |")
            continue
        copy = rows.get(f"{label} copy")
        bound, against = (copy, " (copy)") if copy is not None and copy < floor else (floor, "")
        ratio = ours / bound
        print(f"| {label} ({unit}) | {ours:,.0f} | {bound:,.0f}{against} | {ratio:.2f}x | {met(ratio, target)} |")


THRESHOLD_CAPACITY = 64
THRESHOLD_DEPTHS = (0, 8, 24, 31, 40, 48, 100)


def measure_prefetched(element: tuple, depth: int, seconds: float) -> float:
    """Elements per second of eager iteration over q.dataset().prefetch(depth) of a capacity-64 queue."""
    q = pyfastq.Queue(tf.TensorSpec(element, tf.float32), capacity=THRESHOLD_CAPACITY)
    with feeding_queue(q, np.ones(element, np.float32)):
        ds = q.dataset()
        return _eager(iter(ds.prefetch(depth) if depth else ds), seconds)


def print_threshold(seconds: float = 1.0, repeat: int = 3) -> None:
    """The alias limit's table: elements/s of each prefetch depth, the median of `repeat` rounds."""
    print(f"| prefetch(k) after q.dataset(), capacity {THRESHOLD_CAPACITY} (alias limit "
          f"{THRESHOLD_CAPACITY // 2}), eager | " + " | ".join(f"k={k}" for k in THRESHOLD_DEPTHS) + " |")
    print("|---|" + "---:|" * len(THRESHOLD_DEPTHS))
    for element in (LARGE, SMALL):
        rounds = [[measure_prefetched(element, k, seconds) for k in THRESHOLD_DEPTHS] for _ in range(repeat)]
        medians = [sorted(r[i] for r in rounds)[repeat // 2] for i in range(len(THRESHOLD_DEPTHS))]
        kb = int(np.prod(element)) * 4 / 1000
        print(f"| {kb:g} KB elements/s | " + " | ".join(f"{m:,.0f}" for m in medians) + " |")


if __name__ == "__main__":
    print_threshold()
