"""The resume workload: what exact resume and self-healing workers cost, in one run.

A Producer reading a random-access source tags each element with its position, and the consumer side
records the positions it takes (what ``p.state()`` reads); with ``restarts=k`` each worker process also
counts its commits and the ring knows the slots it holds. Each case moves the elements of a benchmark
workload (seed: [100] float32 taken by ``dequeue_many(128)``; small: [128, 100] float32 taken by
``dequeue()``) from 2 worker processes reading a source of one pre-made element
(``sources.Premade``), in a graph loop, three ways:

- ``tracked+restarts``: tracking and ``restarts=100``, everything on;
- ``tracked``: tracking alone (``restarts=0``, the default);
- ``untracked``: neither: the plan's tagging off, as a queue that cannot track runs (the baseline).

    python -m pyfastq.bench.resume   # the cases only, the three ways interleaved over 5 rounds (medians)

"restart" is the time from a worker's SIGKILL to the first element its replacement made reaching the
consumer (1 worker, ``restarts=3``, three kills, their median): the death noticed, the slots it held given
back, a new interpreter started and fed, its first item read and put.
"""

from __future__ import annotations

import os
import signal
import statistics
import time

import tensorflow as tf

import pyfastq

from . import sources
from .summary import met
from .timing import graph_loop, take_of, timed

CASES = {"seed": ((100,), 128, 1024), "small": ((128, 100), 1, 8)}  # element shape, batch, queue capacity
WAYS = ("tracked+restarts", "tracked", "untracked")
WORKERS = 2
TARGET = 0.9  # tracked+restarts over untracked: tracking and restarts cost at most 10%
RESTART_KILLS = 3


def measure(case: str, way: str, seconds: float) -> float:
    """Batches per second of one case, made by WORKERS processes from a random-access source."""
    shape, batch, capacity = CASES[case]
    q = pyfastq.Queue(tf.TensorSpec(shape, tf.float32), capacity=capacity, shared=True)
    # untracked: as a queue that cannot record what is taken: no tags, no records.
    p = pyfastq.Producer(q, sources.Premade(shape), workers=WORKERS, mode="process", epochs=None,
                         restarts=100 if way == "tracked+restarts" else 0, _track_positions=way != "untracked")
    if p.plan.tagged != (way != "untracked"):
        raise RuntimeError(f"resume bench: tracking is {'on' if p.plan.tagged else 'off'} for the {way} case")
    with p:
        try:
            return timed(graph_loop(take_of(q, batch)), seconds)
        finally:
            q.close(cancel=True)


def measure_restart(seconds: float) -> float:
    """Median seconds from a worker's SIGKILL to the first element its replacement made (see the module doc)."""
    del seconds  # a fixed number of kills, not a time budget
    q = pyfastq.Queue(tf.TensorSpec([2], tf.int64), capacity=4, shared=True)
    gaps = []
    with pyfastq.Producer(q, sources.WhoMade(), workers=1, mode="process", epochs=None, restarts=RESTART_KILLS):
        try:
            for _ in range(RESTART_KILLS):
                pid = int(q.dequeue()[1])
                for _ in range(20):  # well into its work
                    pid = int(q.dequeue()[1])
                os.kill(pid, signal.SIGKILL)
                killed = time.perf_counter()
                while int(q.dequeue()[1]) == pid:  # what the dead worker had committed still comes first
                    pass
                gaps.append(time.perf_counter() - killed)
        finally:
            q.close(cancel=True)
    return statistics.median(gaps)


def plan() -> list:
    """(label, measure(seconds)) of every figure."""
    out = [(f"{case} {way}", lambda s, c=case, w=way: measure(c, w, s)) for case in CASES for way in WAYS]
    out.append(("restart", measure_restart))
    return out


def print_table(rows: dict) -> None:
    """rows: label -> figure (None if it failed). Each case with tracking against without, and the restart time."""
    if not rows:
        return
    print()
    print("| resume case (batches/s, 2 worker processes) | tracked+restarts | tracked | untracked | "
          "ratio (all on / untracked) | target |")
    print("|---|---:|---:|---:|---:|---|")
    for case in CASES:
        figures = [rows.get(f"{case} {way}") for way in WAYS]
        cells = " | ".join("failed" if f is None else f"{f:,.0f}" for f in figures)
        if figures[0] is None or figures[2] is None:
            print(f"| {case} | {cells} | | >= {TARGET:g}x |")
            continue
        ratio = figures[0] / figures[2]
        print(f"| {case} | {cells} | {ratio:.2f}x | {met(ratio, TARGET)} |")
    if "restart" not in rows:
        return
    restart = rows["restart"]
    print(f"\nrestart: a killed worker's replacement delivers its first element "
          f"{'(failed)' if restart is None else f'{restart * 1e3:,.0f} ms'} after the kill (median of "
          f"{RESTART_KILLS})")


def interleaved(rounds: int = 5, seconds: float = 1.0) -> dict:
    """Each case's ways measured in turn, round after round (drift hits all three alike); label -> median."""
    samples: dict = {}
    for _ in range(rounds):
        for case in CASES:
            for way in WAYS:
                samples.setdefault(f"{case} {way}", []).append(measure(case, way, seconds))
    return {label: statistics.median(v) for label, v in samples.items()}


if __name__ == "__main__":  # python -m pyfastq.bench.resume: the cases, interleaved over 5 rounds
    print_table(interleaved())
