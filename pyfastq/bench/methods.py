"""Every method of the benchmark, registered (registry.py), and what runs one by name.

Importing this imports the modules that register them, in the order --methods lists them: pyfastq's own
(ours.py), the tools people use today (baselines.py), the limits (limits.py), the source workloads' peers
(source_peers.py).
"""

from __future__ import annotations

import importlib
import sys

import pyfastq

from . import baselines, limits, ours, source_peers  # noqa: F401 - each registers its methods
from .registry import NATIVE, PRODUCER, get, names
from .timing import graph_loop, timed
from .workloads import Workload

ALL_METHODS = names()  # what --methods takes
BASELINES = names(baseline=True)  # "vs best baseline": the batch workloads' tools of today
SOURCE_PEERS = names(peer=True)  # "the best peer": the source workloads' peers
SOURCE_WARMUP_S = 2.0  # batches taken before each source figure's measurement (--quick: 0.5 s)


def measure(w: Workload, method: str, seconds: float, workers: int = 1) -> float:
    """Batches per second of method on w (with `workers` where it has a worker count)."""
    m = get(method)
    if w.source is not None:
        if m.pipeline is None:
            raise ValueError(f"bench method {method!r} does not run on a source workload ({w.name})")
        return measure_source(w, m.pipeline, seconds, workers)
    if m.measure is None:
        raise ValueError(f"bench method {method!r} runs on the source workloads only, not on {w.name}")
    return m.measure(w, seconds, workers) if m.per_worker_count else m.measure(w, seconds)


def measure_source(w: Workload, pipeline, seconds: float, workers: int) -> float:
    """A source workload's method: batches of w.batch elements of one random-access source, per second.

    Each method first takes batches for a warm-up (its workers start, pools fill, auto grows), then is timed.
    """
    take, stop = pipeline(w, w.random_access_source(), workers)
    try:
        run = graph_loop(take)
        timed(run, min(SOURCE_WARMUP_S, max(0.5, seconds)))
        return timed(run, seconds)
    finally:
        stop()


def runnable(methods: list) -> list:
    """methods less those that cannot run here (the native backend, a module), each skip said on stderr."""
    why = pyfastq.native_unavailable()
    out = []
    for name in methods:
        m = get(name)
        if why and m.needs == NATIVE:
            print(f"native backend unavailable, {name} skipped: {why}", file=sys.stderr)
            continue
        if why and m.needs == PRODUCER:  # the Producer runs on the native backend
            print(f"native backend unavailable, Producer's {name} skipped", file=sys.stderr)
            continue
        if m.imports:
            module, advice = m.imports
            try:
                importlib.import_module(module)
            except ImportError as e:
                print(f"{name} skipped: {module} does not import ({e}); {advice}", file=sys.stderr)
                continue
        out.append(name)
    return out
