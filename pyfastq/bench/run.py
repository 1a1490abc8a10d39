"""pyfastq's benchmark: Python producer -> TF graph, against the tools people use today.

    pyfastq bench                 # every workload, about 3 minutes on 2 cores
    pyfastq bench --quick         # a smoke run
    pyfastq bench --workloads seed,large --methods native,from_generator --json out.json
    pyfastq bench --workloads python --workers 1,2 --seconds 3
    pyfastq bench --repeat 3 --out results   # results/bench.json and results/bench.png (pyfastq[bench])
    pyfastq bench --device gpu    # host-to-device copies, where TF sees a GPU (gpu_copy.py)

Consumer: one tf.function running N steps in a graph loop (`for _ in tf.range(n)`);
each step takes one batch and reads from it. Producer: a Python thread putting one
pre-made numpy batch (seed: one [100] float32 element at a time, batched 128 in the
graph). Every method's producer pays exactly one copy of the pre-made batch per put,
as a real producer making a new batch would: pyfastq's put copies it into the ring;
the baselines are handed `batch.copy()` (handing TF the same array object every time
lets from_generator and numpy_function wrap it without any copy, which no real
producer of new data can do). Each figure is batches consumed over a fixed wall-time
budget after a warm-up.

"python" is the GIL-bound producer: each element costs about 1 ms of pure-Python work
(pyfastq/bench/gil_work.py), put by pyfastq.Producer with P workers in threads (which share the
GIL), in processes (Queue(shared=True): each worker writes into the shared ring) or in
Ray actors (mode="ray": a local Ray of as many CPUs as cores, chunks streamed to a feeder
thread), or made by tf.data's from_generator; the graph takes dequeue_many(32) (.batch(32)).
Worker start-up is left out (the startup workload measures it): the warm-up waits until
every worker's elements arrive.
"small" also runs through Ray: Producer(mode="ray") with P actors each yielding a fresh copy
of the batch, against Ray Data's own TF path (ray_data: ray.data.range(...).map_batches
making the same rows in Ray tasks, then Dataset.to_tf, which is from_generator underneath).
"shuffle" is pyfastq native with Queue(shuffle=True) on the seed and small workloads, against the FIFO
queue (native) of the same run (target: >= 0.8x). It is sized by TF's rule for shuffle queues,
capacity = min_after_dequeue + the slack producers and consumers need: the slack kept as the FIFO queue's
capacity, and min_after_dequeue as large (seed: 1024 kept back of 2048; small: 8 of 16). So both queues
give producers the same room and the figure is the cost of picking slots at random.
Limits and producers beside them (docs/benchmarks.md tells what each measures):
"graph_loop" is the same graph loop reading a pre-made batch from a tf.Variable each step: no feeding at
all, the floor any input pipeline sits on (small's target: native >= 0.8x it). "np_copyto_cold" is the
producer's one copy with its destination rotating through buffers as large as the ring, as the ring's slots
do, so it is cache-cold as the producer's copy is (image and large: native >= 0.9x it). "reserve" is a
producer that makes its data in place, rng.random(out=view) inside q.reserve(); "fresh_put" is the same
producer making a fresh array and calling put (image and large; reserve saves the copy). "put_many" (seed)
puts 128 elements per call. --inter-op-threads sets TensorFlow's inter-op pool before anything runs
(the figures of one run share it).
"source_gil" and "source_image" are random-access sources (pyfastq/bench/sources.py: item i made from i
alone, ~1.7 ms of GIL-bound Python and a 1 KB element; a numpy crop, flip and brightness of a 224x224x3
uint8 image), one object per workload read by every method: pyfastq.Producer with P threads, P processes
and workers="auto" (processes), against the peers in pyfastq/bench/peers.py (Keras PyDataset with P threads
or processes entering TF as fit does, grain's DataLoader with P workers when grain imports,
map(py_function, AUTOTUNE), from_generator). Batches of 32 into the graph loop; each method takes batches
for a warm-up (2 s; --quick 0.5 s) before it is timed, so pools have started and auto has grown; --quick
measures them at the largest worker count only. Targets at 2 workers: image >= 3x PyDataset processes and
>= 2.5x grain; GIL-bound >= 1.0x the best peer; auto >= 0.9x the best fixed worker count.
"startup" runs pyfastq/bench/startup_trainer.py, a script that imports TensorFlow at its top, with
1, 2 and 8 process workers: seconds from entering the producer to the first element in the
trainer, and each worker's USS; beside it, the same fn in multiprocessing's forkserver
processes, which re-run the script (multiprocessing's way, which Producer's lean workers avoid).
"tfdata" (pyfastq/bench/tfdata.py) runs q.dataset(), q.dataset(128), q.dataset().batch(64) and Keras fit
against tf.data's own floor (from_tensors(x).repeat(), an in-memory fit), with the same consumer.
"resume" (pyfastq/bench/resume.py) runs the seed and small elements from 2 worker processes reading a
random-access source with position tracking and restarts on, tracking alone, and neither; and the time
from a worker's SIGKILL to its replacement's first element.
Ratios compare methods measured in the same run; absolute figures drift between runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf

from . import gpu_copy as gpu
from . import runner, startup
from .methods import ALL_METHODS, runnable
from .outputs import write_outputs
from .runner import Progress, Results
from .summary import print_summary, print_table
from .workloads import WORKLOAD_NAMES


def default_worker_counts(quick: bool) -> list:
    """1, 2 and, where cores allow, 4, 8, ... and the core count (--quick: 1 and 2)."""
    cores = os.cpu_count() or 1
    counts = {1, 2}
    if not quick:
        p = 4
        while p < cores:
            counts.add(p)
            p *= 2
        counts.add(cores)
    return sorted(counts)


@dataclass
class Options:
    """The command line, checked."""

    workloads: list  # names, in the order asked for
    methods: list
    worker_counts: list  # the python workload's
    seconds: float  # measuring time per figure
    json: str | None  # also write the figures to this file
    quick: bool = False
    repeat: int = 1  # measurements per figure: the median is reported, with the spread
    out: str | None = None  # a directory for bench.json and bench.png
    device: str = "cpu"  # "gpu": gpu_copy.py host-to-device methods on seed, small, image, large
    inter_op_threads: int | None = None  # TensorFlow's inter-op pool, set before anything runs; None: TF's default


def parse_args(argv) -> Options:
    """Options from argv (None: sys.argv); an unknown name or a bad worker count is a usage error."""
    parser = argparse.ArgumentParser(
        prog="pyfastq bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--workloads", default=",".join(WORKLOAD_NAMES), help=f"comma-separated, of {', '.join(WORKLOAD_NAMES)}"
    )
    parser.add_argument(
        "--methods",
        default=",".join(ALL_METHODS),
        help=f"comma-separated, of {', '.join(ALL_METHODS)} (each workload runs those that apply to it)",
    )
    parser.add_argument(
        "--workers",
        help="the python workload's worker counts, comma-separated "
        "(default 1, 2, 4, ... up to the core count; --quick: 1,2)",
    )
    parser.add_argument("--seconds", type=float, default=2.5, help="measuring time per figure (after warm-up)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 0.3 s per figure")
    parser.add_argument("--repeat", type=int, default=1, help="measure each figure N times: the median, and the spread")
    parser.add_argument("--out", metavar="DIR", help="write DIR/bench.json (every figure, the machine), DIR/bench.png")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu",
                        help="gpu: host-to-device GB/s of the GPU kernel, prefetch_to_device and a bare pinned copy")
    parser.add_argument("--inter-op-threads", type=int, metavar="N",
                        help="TensorFlow's inter-op threads for the whole run (default: TF's own choice); "
                        "1 on a 2-core machine: see docs/benchmarks.md")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat takes an int >= 1, got {args.repeat}")
    if args.inter_op_threads is not None and args.inter_op_threads < 1:
        parser.error(f"--inter-op-threads takes an int >= 1, got {args.inter_op_threads}")
    if args.device == "gpu" and args.workloads == ",".join(WORKLOAD_NAMES):
        args.workloads = ",".join(gpu.GPU_WORKLOADS)
    workloads = [w.strip() for w in args.workloads.split(",") if w.strip()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for name in workloads:
        if name not in WORKLOAD_NAMES:
            parser.error(f"unknown workload {name!r}")
    for m in methods:
        if m not in ALL_METHODS:
            parser.error(f"unknown method {m!r}")
    if args.workers:
        try:
            worker_counts = sorted({int(p) for p in args.workers.split(",") if p.strip()})
        except ValueError:
            parser.error(f"--workers takes comma-separated ints, got {args.workers!r}")
        if not worker_counts or worker_counts[0] < 1:
            parser.error(f"--workers takes ints >= 1, got {args.workers!r}")
    else:
        worker_counts = default_worker_counts(args.quick)
    if args.device == "gpu":
        for name in workloads:
            if name not in gpu.GPU_WORKLOADS:
                parser.error(f"--device gpu runs {', '.join(gpu.GPU_WORKLOADS)}; not {name!r}")
    seconds = 0.3 if args.quick else args.seconds
    return Options(workloads, methods, worker_counts, seconds, args.json, args.quick, args.repeat, args.out,
                   args.device, args.inter_op_threads)


def main(argv=None) -> int:
    options = parse_args(argv)
    if options.inter_op_threads is not None:
        tf.config.threading.set_inter_op_parallelism_threads(options.inter_op_threads)
    if options.device == "gpu":
        return gpu.run(argv, options)
    options.methods = runnable(options.methods)
    progress = Progress(runner.measurements(options))
    results = Results()
    try:
        runner.run_all(options, results, progress)
    finally:
        progress.close()
    print_table(argv, results.rows, results.samples)
    print()
    print_summary(results)
    startup.print_table(results.startup)
    for name, rows in results.cases.items():
        runner.case_module(name).print_table(rows)
    write_outputs(options, results)
    print(f"\n({progress.elapsed():.0f} s)", file=sys.stderr)
    return 1 if results.failures else 0


if __name__ == "__main__":
    sys.exit(main())
