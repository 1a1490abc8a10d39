"""tf.distribute: MirroredStrategy with Keras fit, MultiWorkerMirroredStrategy with a custom loop.

Each runs in fresh interpreters (tests/_distribute.py): logical devices and TF_CONFIG must be set
before TensorFlow's runtime starts. Every child is bounded in time and the workers talk over free
loopback ports only.

How a MultiWorkerMirroredStrategy worker is judged: by the RESULT line it prints once training is
over, not by its exit code alone. TF 2.21's MWMS may abort while the interpreter exits, after
training ("terminate called without an active exception", SIGABRT), with a plain tf.data dataset as
well as with q.dataset(); that abort is TF's, so a worker that printed its RESULT and then died of
SIGABRT with that message passes, and any other exit code fails. docs/gpus.md:
Exit under MultiWorkerMirroredStrategy.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys

import pytest

from support import CHILD_ENV, TESTS_DIR

CHILD = f"{TESTS_DIR}/_distribute.py"
# Two interpreters importing TF, a gRPC cluster and a dozen steps: well under a minute on an idle
# machine; the bound leaves room for a busy one.
WORKER_TIMEOUT_S = 300
TF_EXIT_ABORT = "terminate called without an active exception"

pytestmark = pytest.mark.slow


def free_ports(n: int) -> list[int]:
    """n ports on 127.0.0.1 that were free a moment ago (bound together, so they differ)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def run_children(args_per_child: list[list[str]], leftovers) -> list[tuple[int, dict | None, str]]:
    """Starts every child at once, waits for all: (exit code, its RESULT or None, stderr) for each."""
    procs = [
        subprocess.Popen([sys.executable, CHILD, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=CHILD_ENV, cwd=TESTS_DIR)
        for args in args_per_child
    ]
    leftovers.extend(procs)
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=WORKER_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail(f"a tf.distribute child did not finish within {WORKER_TIMEOUT_S} s")
        results = [line[len("RESULT "):] for line in stdout.splitlines() if line.startswith("RESULT ")]
        out.append((p.returncode, json.loads(results[-1]) if results else None, stderr))
    return out


def finished_training(code: int, result: dict | None, stderr: str) -> dict:
    """The child's RESULT, if it trained and then exited cleanly or with TF's own exit abort."""
    assert result is not None, f"no RESULT (exit code {code}):\n{stderr[-3000:]}"
    tf_abort = code == -signal.SIGABRT and TF_EXIT_ABORT in stderr
    assert code == 0 or tf_abort, f"trained, then exit code {code}:\n{stderr[-3000:]}"
    return result


def test_mirrored_strategy_keras_fit_on_two_logical_cpus(native, leftovers):
    [(code, result, stderr)] = run_children([["mirrored"]], leftovers)
    assert code == 0, stderr[-3000:]
    assert result["replicas"] == 2
    assert result["gets"] == result["total"]  # every element trained on, none twice
    assert result["loss"] == result["loss"]  # a number, not NaN


@pytest.mark.parametrize("variant", ["pyfastq", "pyfastq-exhaust"])
def test_multi_worker_mirrored_strategy_custom_loop(native, leftovers, variant):
    ports = ",".join(map(str, free_ports(2)))
    results = [finished_training(*r) for r in run_children([["worker", str(i), ports, variant] for i in (0, 1)],
                                                           leftovers)]
    for r in results:
        assert r["steps"] == 12 and r["gets"] == 12 * 8  # each worker read its own queue, all of it
        assert r["last_loss"] < r["first_loss"]
    # Synchronous training: the all-reduced step leaves both workers with the same weights and losses.
    assert results[0]["weights"] == results[1]["weights"]
    assert results[0]["last_loss"] == results[1]["last_loss"]
