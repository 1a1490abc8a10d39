"""The startup workload's trainer, a script as users write them: TensorFlow imported at its top, fn defined in it.

    python -m pyfastq.bench.startup_trainer WORKERS [pyfastq|forkserver]   # prints one JSON line

From entering the producer to the first element in this process, to every worker's first
element, and each worker's USS (the memory only it holds) once all have produced.
"pyfastq" is Producer(mode="process"); "forkserver" is the same fn in multiprocessing's
forkserver processes writing into the same shared queue (multiprocessing's usual way,
which Producer's lean worker interpreters avoid): each of those re-runs this script, TensorFlow and all.
"""

import json
import multiprocessing
import sys
import time

import numpy as np
import tensorflow as tf

import pyfastq

SPEC = tf.TensorSpec([100], tf.float32)


def examples(worker, workers):
    element = np.full([100], worker, np.float32)  # element[0] tells whose it is
    while True:
        yield element


def put_examples(queue, worker, workers):
    try:
        for element in examples(worker, workers):
            queue.put(element)
    except pyfastq.QueueClosed:
        pass  # measured: the trainer cancels the queue


def uss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        return sum(int(line.split()[1]) * 1024 for line in f if line.startswith(("Private_Clean:", "Private_Dirty:")))


def first_elements(q, workers: int, start: float) -> tuple[float, float]:
    """Seconds from start to the first element, and to one from every worker."""
    seen = {int(q.dequeue()[0])}
    to_first = time.perf_counter() - start
    while len(seen) < workers:
        seen.add(int(q.dequeue()[0]))
    return to_first, time.perf_counter() - start


def main(workers: int, how: str) -> dict:
    q = pyfastq.Queue(SPEC, capacity=64, shared=True, backend="native")
    q.put(np.zeros(100, np.float32))
    q.dequeue()  # the op library is loaded and its kernel made before the clock starts
    start = time.perf_counter()
    if how == "pyfastq":
        with pyfastq.Producer(q, examples, workers=workers, mode="process") as p:
            to_first, to_all = first_elements(q, workers, start)
            uss = [uss_bytes(pid) for pid in p.pids]
    else:
        ctx = multiprocessing.get_context("forkserver")
        procs = [ctx.Process(target=put_examples, args=(q, i, workers), daemon=True) for i in range(workers)]
        for proc in procs:
            proc.start()
        to_first, to_all = first_elements(q, workers, start)
        uss = [uss_bytes(proc.pid) for proc in procs]
        q.close(cancel=True)
        for proc in procs:
            proc.join(10)
    return {"workers": workers, "how": how, "to_first_s": to_first, "to_all_s": to_all, "uss_bytes": uss}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "pyfastq")), flush=True)
