"""The benchmark's methods by name: each registers itself, with what the run and its summaries need to know of it.

    @method("numpy_function", baseline=True)
    def measure_numpy_function(w: Workload, seconds: float) -> float: ...   # batches/s

    @source_method("tf_map", peer=True)
    def tf_map(w: Workload, source, workers: int): ...   # (take, stop) over the random-access source

One name may have both: a measurement for the batch and python workloads and a pipeline for the source
workloads (from_generator, thread, process). The registry's order, the order methods register in
(methods.py imports their modules), is what --methods lists and the order a workload's rows come in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

NATIVE = "native"  # the method's own queue is native: skipped, saying why, where the native backend does not load
PRODUCER = "producer"  # pyfastq.Producer's workers (on the native backend): skipped likewise


@dataclass
class Method:
    name: str
    # The batch and python workloads: fn(w, seconds) -> batches/s (fn(w, seconds, workers) with per_worker_count).
    measure: Callable | None = None
    # The source workloads: fn(w, source, workers) -> (take, stop): what the graph loop calls for a batch, what
    # ends the pipeline.
    pipeline: Callable | None = None
    baseline: bool = False  # a tool people use today: "vs best baseline" and the summaries compare against these
    peer: bool = False  # a source workload's peer: "the best peer" is the best of these
    per_worker_count: bool = False  # measured once per worker count P, its row labelled "name P=p"
    needs: str | None = None  # NATIVE or PRODUCER: needs the native backend
    imports: tuple[str, str] | None = None  # (a module it needs, how to get it): skipped where it does not import


REGISTRY: dict[str, Method] = {}


def register(name: str, *, measure: Callable | None = None, pipeline: Callable | None = None, **about) -> Method:
    """Adds measure and/or pipeline, and the Method fields in about, to name's entry (made at its first use)."""
    entry = REGISTRY.setdefault(name, Method(name))
    for slot, fn in (("measure", measure), ("pipeline", pipeline)):
        if fn is not None:
            if getattr(entry, slot) is not None:
                raise ValueError(f"bench method {name!r} has a {slot} already")
            setattr(entry, slot, fn)
    for key, value in about.items():
        if not hasattr(entry, key) or key in ("name", "measure", "pipeline"):
            raise TypeError(f"bench method {name!r}: no such field {key!r}")
        setattr(entry, key, value)
    return entry


def method(name: str, **about):
    """Decorator: fn(w, seconds[, workers]) -> batches/s is name's measurement of the batch and python workloads."""

    def add(fn):
        register(name, measure=fn, **about)
        return fn

    return add


def source_method(name: str, **about):
    """Decorator: fn(w, source, workers) -> (take, stop) is name's pipeline on the source workloads."""

    def add(fn):
        register(name, pipeline=fn, **about)
        return fn

    return add


def get(name: str) -> Method:
    """name's entry; an unknown name is a ValueError listing the known ones."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown bench method {name!r}; the known ones: {', '.join(REGISTRY)}") from None


def names(**about) -> tuple:
    """The registered names, in order; with about (e.g. baseline=True), those whose fields have those values."""
    return tuple(n for n, m in REGISTRY.items() if all(getattr(m, k) == v for k, v in about.items()))
