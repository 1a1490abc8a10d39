"""The producer of the benchmark's "python" workload: about 1 ms of GIL-bound pure-Python work per element.

    python -m pyfastq.bench.gil_work   # ms of work per element on this machine, and the LOOPS that would make 1 ms

Only numpy and the standard library here: worker processes of Producer(mode="process")
unpickle `make` by importing this module (by reference: it is part of the package).

The work is a loop of Python integer arithmetic (a linear congruential generator): every
iteration is a few bytecodes the interpreter runs holding the GIL, with no allocation worth
counting and nothing numpy or C could run without it, the way parsing, decoding or
augmenting an example in Python does. The element is a [100] float32 array made from the
result; element[0] is the index of the worker that made it (the benchmark's warm-up waits
until it has seen every worker's).

LOOPS calibration: `python -m pyfastq.bench.gil_work` (best of 5 runs of 200 elements) on the
bench machine (AMD EPYC, 2 cores, Python 3.11.7, numpy's part negligible) measured
0.112-0.127 us per iteration over six runs, so LOOPS = 8,500 gives 0.95-1.07 ms per element.
The time scales linearly with LOOPS: on another machine or Python, LOOPS / (the ms it
prints) makes 1 ms there. The benchmark measures and prints the run's own figure (the ideal
one-core rate is 1000 / that), since absolute rates depend on it; the targets are ratios.
"""

from __future__ import annotations

import time

import numpy as np

LOOPS = 8_500
SHAPE = (100,)
DTYPE = np.float32


def work(seed: int, loops: int = LOOPS) -> int:
    """`loops` steps of pure-Python integer arithmetic (LOOPS: about 1 ms); the GIL is held throughout."""
    x = seed & 0x7FFFFFFF
    acc = 0
    for _ in range(loops):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        acc += x >> 16
    return acc


def element(worker: int, k: int) -> np.ndarray:
    """Element k of a worker: work(k) and a cheap [100] float32 array made from its result."""
    out = np.full(SHAPE, work(k) % 65521, DTYPE)
    out[0] = worker
    return out


def make(worker: int, workers: int):
    """Producer fn (and from_generator's generator as worker 0 of 1): elements forever, worker, worker + workers, ..."""
    k = worker
    while True:
        yield element(worker, k)
        k += workers


def ms_per_element(elements: int = 200, repeats: int = 5) -> float:
    """Best-of-repeats wall time of one element, in ms, on one core of this machine."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for k in range(elements):
            element(0, k)
        best = min(best, (time.perf_counter() - start) / elements)
    return best * 1e3


if __name__ == "__main__":
    ms = ms_per_element()
    print(f"{ms:.3f} ms per element with LOOPS={LOOPS} ({ms * 1e3 / LOOPS:.4f} us per iteration); "
          f"1 ms here would take LOOPS={round(LOOPS / ms, -2):,.0f}")
