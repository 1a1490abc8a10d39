"""Running the workloads asked for: each method's figures with the repeats, the progress said on stderr."""

from __future__ import annotations

import gc
import importlib
import logging
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pyfastq

from . import gil_work, startup
from .methods import measure
from .registry import get
from .workloads import CASE_MODULES, STARTUP, WORKLOADS, Workload

if TYPE_CHECKING:
    from .run import Options


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
        if get(m).per_worker_count:
            for p in worker_counts:
                yield m, p
        else:
            yield m, None


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
            if w.counts_elements:
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


def measurements(options: Options) -> int:
    """How many measurements the run will make: the progress bar's total."""
    count = 0
    for name in options.workloads:
        if name == STARTUP:
            count += len(startup.plan(options))
        elif name in CASE_MODULES:
            count += len(case_module(name).plan())
        else:
            w = WORKLOADS[name]
            count += len(list(runs(w, options.methods, worker_counts_of(w, options))))
    return count * options.repeat


def run_all(options: Options, results: Results, progress: Progress) -> None:
    """Every workload of options.workloads in turn, into results."""
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
                startup.run(options, results, progress)
            elif name in CASE_MODULES:
                run_cases(name, options, results, progress)
            else:
                run_workload(name, options, results, progress)
    finally:
        pyfastq_log.removeHandler(said)
        pyfastq_log.setLevel(level)
        pyfastq_log.propagate = propagate
