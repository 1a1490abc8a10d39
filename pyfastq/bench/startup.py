"""The startup workload: seconds from entering the producer to the first element, and each worker's USS.

Each figure is a fresh trainer process (startup_trainer.py, a script that imports TensorFlow at its top),
with 1, 2 and 8 process workers; beside it, the same fn in multiprocessing's forkserver processes, which
re-run the script.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

import pyfastq

if TYPE_CHECKING:
    from .run import Options
    from .runner import Progress, Results

STARTUP_WORKERS = (1, 2, 8)
STARTUP_TARGETS_S = {2: 1.0, 8: 2.0}  # workers -> seconds to the first element
STARTUP_USS_TARGET_MB = 60


def plan(options: Options) -> list:
    """(how, workers) of each startup figure."""
    if options.quick:
        return [("pyfastq", 1), ("pyfastq", 2)]
    return [("pyfastq", p) for p in STARTUP_WORKERS] + [("forkserver", p) for p in STARTUP_WORKERS]


def run(options: Options, results: Results, progress: Progress) -> None:
    """The startup workload: a fresh trainer per figure, for pyfastq's workers and multiprocessing's forkserver."""
    if pyfastq.native_unavailable():
        progress.log("startup skipped: process workers need the native backend")
        return
    for how, workers in [figure for figure in plan(options) for _ in range(options.repeat)]:
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


def medians(runs: list) -> list:
    """One figure per (how, workers): the median of its runs' times, the largest USS any of them saw."""
    groups: dict = {}
    for f in runs:
        groups.setdefault((f["how"], f["workers"]), []).append(f)
    return [
        {"how": how, "workers": workers, "runs": len(fs),
         "to_first_s": statistics.median(f["to_first_s"] for f in fs),
         "to_all_s": statistics.median(f["to_all_s"] for f in fs),
         "uss_bytes": [max(u for f in fs for u in f["uss_bytes"])]}
        for (how, workers), fs in groups.items()
    ]


def print_table(runs: list) -> None:
    """The startup workload's table (medians over --repeat) and its targets."""
    if not runs:
        return
    figures = medians(runs)
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
