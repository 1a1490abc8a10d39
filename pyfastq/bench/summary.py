"""What a run prints: the machine and the command, the table of every figure, and a line per target.

Targets compare methods measured in the same run; absolute figures drift between runs.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import TYPE_CHECKING

import tensorflow as tf

import pyfastq

from .methods import BASELINES, SOURCE_PEERS
from .ours import PUT_MANY_ROWS
from .workloads import AUTO, COLD_COPY, GRAPH_LOOP, SHUFFLE, WORKLOADS

if TYPE_CHECKING:
    from .runner import Results

GRAPH_LOOP_TARGET = 0.8  # small: native x graph_loop, same run
COLD_COPY_TARGET = 0.9  # image and large: native x np_copyto_cold, same run
SEED_TARGET = 3e6  # seed: elements/s with one producer thread calling put per element
SHUFFLE_TARGET = 0.8  # x native's (FIFO) batches/s, same run
# Targets at 2 workers: pyfastq's best against PyDataset with processes and grain on the
# image source, against the best peer on the GIL-bound one; auto against the best fixed worker count.
SOURCE_TARGETS = {"source_image": {"pydataset_processes": 3.0, "grain": 2.5}, "source_gil": {"best peer": 1.0}}
AUTO_TARGET = 0.9
# mode="ray"'s targets: against process workers with as many workers (one host), and against Ray Data's TF path.
RAY_VS_PROCESS = 0.7
RAY_VS_RAY_DATA = 2.0


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


def command(argv) -> str:
    """The command line of the run (argv: what `pyfastq bench` was given; None: sys.argv)."""
    return f"Command: pyfastq bench {' '.join(sys.argv[1:] if argv is None else argv)}".rstrip()


def print_table(argv, rows: dict, samples: dict) -> None:
    """The machine, the command and a markdown table of every figure, against the best baseline and np.copyto."""
    print(f"Machine: {machine()}")
    print(command(argv))
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


def met(ratio: float, target: float) -> str:
    """A ratio against its target, as every table says it: ">= 0.9x: met" or ">= 0.9x: NOT met"."""
    return f">= {target:g}x: {'met' if ratio >= target else 'NOT met'}"


def verdict(ratio: float, target: float) -> str:
    return f"target {met(ratio, target)}"


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


