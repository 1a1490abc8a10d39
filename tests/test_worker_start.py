"""Process workers start from any kind of main module, and never replay it nor load TensorFlow.

Each test runs a trainer as users write them: TensorFlow imported at the top, fn
defined in the main module itself. The trainer prints "main ran" each time its
main module runs: a worker that replayed it would print it too (their stdout is
the trainer's). Each worker ends with one element telling whether libtensorflow
is mapped in its own address space (/proc/self/maps).
"""

import json
import subprocess
import sys

import pytest

from support import CHILD_ENV, START_BUDGET_S

WORKERS = 2
ELEMENTS = 200

TRAINER = f"""
import json
import numpy as np, tensorflow as tf, pyfastq

print("main ran", flush=True)


def examples(worker, workers):
    for k in range(worker, {ELEMENTS}, workers):
        yield np.int64(k)
    with open("/proc/self/maps") as maps:
        yield np.int64(-1 if "libtensorflow" in maps.read() else -2)


def train():
    q = pyfastq.Queue(tf.TensorSpec([], tf.int64), capacity=16, shared=True)
    with pyfastq.Producer(q, examples, workers={WORKERS}, mode="process"):
        got = [int(x) for x in q.dataset()]
    print(json.dumps(got), flush=True)
"""

GUARDED = TRAINER + '\nif __name__ == "__main__":\n    train()\n'
UNGUARDED = TRAINER + "\ntrain()\n"


def run_trainer(kind, tmp_path):
    if kind == "script with the __main__ guard":
        (tmp_path / "train.py").write_text(GUARDED)
        command, stdin = [sys.executable, "train.py"], None
    elif kind == "script without the guard":
        (tmp_path / "train.py").write_text(UNGUARDED)
        command, stdin = [sys.executable, "train.py"], None
    elif kind == "python -c":
        command, stdin = [sys.executable, "-c", UNGUARDED], None
    else:  # a main module with no file at all, as in a notebook
        command, stdin = [sys.executable, "-"], UNGUARDED
    return subprocess.run(
        command, input=stdin, capture_output=True, text=True, env=CHILD_ENV, cwd=tmp_path, timeout=START_BUDGET_S
    )


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/self/maps")
@pytest.mark.parametrize(
    "kind", ["script with the __main__ guard", "script without the guard", "python -c", "python - (stdin)"]
)
def test_workers_run_fn_from_any_main_module_once_each_without_tensorflow(native, kind, tmp_path):
    proc = run_trainer(kind, tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines.count("main ran") == 1, proc.stdout  # the workers never ran the main module
    got = json.loads(lines[-1])
    assert sorted(x for x in got if x >= 0) == list(range(ELEMENTS))  # every element once
    assert [x for x in got if x < 0] == [-2] * WORKERS  # no worker mapped libtensorflow
