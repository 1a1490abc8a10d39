"""pyfastq gpu-check: every check of pyfastq's GPU paths, in order, on a machine with a GPU.

    pyfastq gpu-check                     # from a checkout: also runs tests/test_gpu.py
    pyfastq gpu-check --tests DIR         # the directory holding test_gpu.py
    pyfastq gpu-check --skip-bench        # without `pyfastq bench --device gpu`

Each check runs in a child process of its own (the CUDA runtime is opened, and PYFASTQ_CUDART read, once
per process), with TF_FORCE_GPU_ALLOW_GROWTH=true so that the children can share the GPU:
  placement     where each dequeue runs: unscoped and /GPU:0 on the GPU, /CPU:0 and variable shapes on the host
  copy/<mode>/<pinned|unpinned>
                values and devices of dequeue and dequeue_many made with gpu_copy auto, gather and rows,
                from a pinned ring and from one left unpinned (PYFASTQ_CUDART=0); every slot back after
  dropped       a queue cancelled and let go while its GPU dequeues are copying: no hang, no crash, the
                GPU still works after
  tests         the GPU tests (tests/test_gpu.py), which skip nothing on a machine with a GPU
  bench         `pyfastq bench --device gpu --quick`
Exit status: 0 when every check passed, 1 when one failed, 77 (a skip) where TensorFlow sees no GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import threading
import time

NO_GPU_EXIT = 77  # the usual "skipped" status of test drivers
NO_GPU = ("no GPU visible to TensorFlow here: pyfastq gpu-check checks the GPU paths on a machine with one. "
          "Nothing checked.")
CHILD_BUDGET_S = 600.0  # a child imports TF and initialises CUDA: generous on a busy machine


# -- the checks, each run in a child: `python -m pyfastq.bench.gpu_check --check NAME` ----------


def _check_placement() -> str:
    import numpy as np
    import tensorflow as tf

    import pyfastq

    fixed = pyfastq.Queue(tf.TensorSpec([4], tf.float32), capacity=16, backend="native")
    variable = pyfastq.Queue(tf.TensorSpec([None], tf.float32), capacity=16, max_shapes=[4], backend="native")
    for i in range(8):
        fixed.put(np.full(4, i, np.float32))
        variable.put(np.full(3, i, np.float32))

    @tf.function
    def take():
        with tf.device("/CPU:0"):
            host = fixed.dequeue()
        with tf.device("/GPU:0"):
            scoped = fixed.dequeue_many(2)
        return fixed.dequeue(), scoped, host, variable.dequeue(), variable.dequeue_many(2)

    unscoped, scoped, host, var_one, var_many = take()
    devices = {"unscoped": unscoped.device, "gpu scope": scoped.device, "cpu scope": host.device,
               "variable": var_one.device, "variable many": var_many.device}
    expected = {"unscoped": "GPU", "gpu scope": "GPU", "cpu scope": "CPU", "variable": "CPU", "variable many": "CPU"}
    wrong = {k: v for k, v in devices.items() if expected[k] not in v}
    if wrong:
        raise AssertionError(f"placed on the wrong device: {wrong}")
    values = [float(host[0]), *scoped.numpy()[:, 0].tolist(), float(unscoped[0])]
    if sorted(values) != [0.0, 1.0, 2.0, 3.0]:
        raise AssertionError(f"values {values}")
    if var_one.shape != [3] or var_many.shape != [2, 3]:
        raise AssertionError(f"variable shapes {var_one.shape}, {var_many.shape}")
    ops = {op.type for op in take.get_concrete_function().graph.get_operations()}
    if "PyfastqTryDequeue" not in ops:
        raise AssertionError(f"a host dequeue without its try: ops {sorted(ops)}")
    return json.dumps(devices)


def taken_on_gpu(image_shape: list):
    """A native queue of 9 {"image": uint8 [image_shape], "label": int64} elements, closed, then emptied on /GPU:0
    by dequeue(), dequeue_many(4) and dequeue_many(8, allow_smaller_final_batch=True); AssertionError unless each
    output is in GPU memory and holds what was put. Returns the queue, drained. (tests/test_gpu.py runs it too.)"""
    import numpy as np
    import tensorflow as tf

    import pyfastq

    specs = {"image": tf.TensorSpec(image_shape, tf.uint8), "label": tf.TensorSpec([], tf.int64)}
    q = pyfastq.Queue(specs, capacity=16, backend="native")
    rng = np.random.default_rng(0)
    made = [{"image": rng.integers(0, 255, image_shape, dtype=np.uint8), "label": np.int64(i)} for i in range(9)]
    for element in made:
        q.put(element)
    q.close()
    with tf.device("/GPU:0"):
        one = q.dequeue()
        many = q.dequeue_many(4)
        rest = q.dequeue_many(8, allow_smaller_final_batch=True)
    for name, t in {"one": one["image"], "many": many["image"], "rest": rest["label"]}.items():
        if "GPU" not in t.device:
            raise AssertionError(f"{name} is on {t.device}")
    np.testing.assert_array_equal(one["image"].numpy(), made[0]["image"])
    np.testing.assert_array_equal(many["image"].numpy(), np.stack([e["image"] for e in made[1:5]]))
    if rest["label"].numpy().tolist() != [5, 6, 7, 8]:
        raise AssertionError(f"rest {rest['label'].numpy().tolist()}")
    return q


def _check_copy(mode: str, pinned: bool) -> str:
    from pyfastq.backends.native import gpu_copy

    with gpu_copy(mode):
        return _check_copy_made(mode, pinned)


def _check_copy_made(mode: str, pinned: bool) -> str:
    import numpy as np
    import tensorflow as tf

    import pyfastq

    # Rows of 64 KiB: gpu_copy auto copies them one DMA each from a pinned ring.
    q = taken_on_gpu([128, 128, 4])

    @tf.function
    def in_graph():
        with tf.device("/GPU:0"):
            return q.dequeue_many(1, allow_smaller_final_batch=True)

    if in_graph()["label"].shape[0] != 0:
        raise AssertionError("a closed, drained queue gave rows")
    stats = q.stats()
    if stats["pinned"] is not pinned:
        why = q._impl._ring.pin()[1]
        raise AssertionError(f"pinned is {stats['pinned']}, expected {pinned} ({why})")
    if stats["size"] != 0:
        raise AssertionError(f"{stats['size']} elements left")
    # Every slot is back: a new queue of the same ring size fills whole after device copies.
    q2 = pyfastq.Queue(tf.TensorSpec([256, 256], tf.float32), capacity=4, backend="native")
    for i in range(4):
        q2.put(np.full([256, 256], i, np.float32))
    with tf.device("/GPU:0"):
        kept = [q2.dequeue(), q2.dequeue_many(3)]
    for i in range(4):
        q2.put(np.full([256, 256], 10 + i, np.float32), timeout=30)
    if float(kept[0][0, 0]) != 0.0 or kept[1][:, 0, 0].numpy().tolist() != [1.0, 2.0, 3.0]:
        raise AssertionError("the kept device tensors changed")
    return f"mode {mode}, pinned {stats['pinned']}"


def _check_dropped() -> str:
    import numpy as np
    import tensorflow as tf

    import pyfastq
    from pyfastq.backends import native

    # The consumer's graph holds the op's attributes, not the Queue: once the Queue is let go, the copies
    # in flight hold the ring's last references, and its teardown follows their completion.
    q = pyfastq.Queue(tf.TensorSpec([4, 1024, 1024], tf.float32), capacity=4, backend="native")
    attrs = dict(q._impl._op_attrs)
    for _ in range(4):
        q.put(np.ones([4, 1024, 1024], np.float32))
    ended: dict = {}

    @tf.function
    def consume():
        total = tf.constant(0.0)
        with tf.device("/GPU:0"):
            for _ in tf.range(1_000_000):  # until the queue is gone
                _, (batch,) = native._ops.pyfastq_dequeue_many(
                    n=2, allow_smaller_final_batch=False, padding=[], record_fill=True, **attrs
                )
                total += tf.reduce_sum(batch[:, 0, 0])
        return total

    def consumer():
        try:
            consume()
        except tf.errors.OpError as e:
            ended["consumer"] = type(e).__name__

    thread = threading.Thread(target=consumer, daemon=True)
    thread.start()
    deadline = time.monotonic() + CHILD_BUDGET_S / 2
    while q.stats()["gets"] < 1:  # the first 32 MB copy has started: the queue goes while it runs
        if time.monotonic() > deadline:
            raise AssertionError("the consumer never got going")
    del q
    gc.collect()
    thread.join(timeout=120)
    if thread.is_alive():
        raise AssertionError("the consumer still waits 120 s after its queue was dropped")
    @tf.function
    def still_computes():
        with tf.device("/GPU:0"):
            return tf.reduce_sum(tf.ones([1024, 1024]))

    after = float(still_computes())
    if after != 1024 * 1024:
        raise AssertionError(f"the GPU computes {after} after the drop")
    return json.dumps(ended)


def _run_check(name: str) -> int:
    if name == "placement":
        print(_check_placement())
    elif name.startswith("copy/"):
        _, mode, pinning = name.split("/")
        print(_check_copy(mode, pinning == "pinned"))
    elif name == "dropped":
        print(_check_dropped())
    else:
        raise SystemExit(f"unknown check {name!r}")
    return 0


# -- the driver -----------------------------------------------------------------------------------


def _checks() -> list[tuple[str, dict]]:
    checks = [("placement", {})]
    for mode in ("auto", "gather", "rows"):
        checks.append((f"copy/{mode}/pinned", {}))
        checks.append((f"copy/{mode}/unpinned", {"PYFASTQ_CUDART": "0"}))
    checks.append(("dropped", {}))
    return checks


def _find_tests(given: str | None) -> pathlib.Path | None:
    candidates = [pathlib.Path(given)] if given else [
        pathlib.Path.cwd() / "tests",
        pathlib.Path(__file__).resolve().parents[2] / "tests",  # an editable install or a checkout's build
    ]
    return next((d for d in candidates if (d / "test_gpu.py").is_file()), None)


def _child(command: list[str], env: dict, cwd: str) -> tuple[bool, str]:
    try:
        proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=cwd, timeout=CHILD_BUDGET_S)
    except subprocess.TimeoutExpired:
        return False, f"no answer in {CHILD_BUDGET_S:.0f} s: a hang"
    out = (proc.stdout.strip().splitlines() or [""])[-1]
    if proc.returncode != 0:
        return False, f"exit {proc.returncode}: {(proc.stderr.strip() or out)[-2000:]}"
    return True, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pyfastq gpu-check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tests", metavar="DIR", help="the directory holding test_gpu.py (default: ./tests)")
    parser.add_argument("--skip-bench", action="store_true", help="leave out pyfastq bench --device gpu")
    parser.add_argument("--check", help=argparse.SUPPRESS)  # one check, in this process: what the driver runs
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if args.check:
        return _run_check(args.check)

    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        print(NO_GPU)
        return NO_GPU_EXIT
    import pyfastq

    why = pyfastq.native_unavailable()
    if why is not None:
        print(f"the native backend does not load ({why}): its GPU kernels cannot be checked")
        return 1

    env = {**os.environ, "TF_FORCE_GPU_ALLOW_GROWTH": "true", "TF_CPP_MIN_LOG_LEVEL": "2"}
    env.pop("PYFASTQ_CUDART", None)
    steps: list[tuple[str, list[str], dict]] = [
        (name, [sys.executable, "-m", "pyfastq.bench.gpu_check", "--check", name], extra) for name, extra in _checks()
    ]
    tests = _find_tests(args.tests)
    if tests is not None:
        # pytest from a directory outside the checkout: the installed pyfastq is imported, not the source tree.
        steps.append(("tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                                str(tests / "test_gpu.py")], {}))
    if not args.skip_bench:
        steps.append(("bench", [sys.executable, "-m", "pyfastq", "bench", "--device", "gpu", "--quick"], {}))

    failed = []
    with tempfile.TemporaryDirectory(prefix="pyfastq-gpu-check-") as cwd:
        for name, command, extra in steps:
            start = time.monotonic()
            ok, detail = _child(command, {**env, **extra}, cwd)
            print(f"{'PASS' if ok else 'FAIL'} {name} ({time.monotonic() - start:.1f} s): {detail}", flush=True)
            if not ok:
                failed.append(name)
    if tests is None:
        print("NOT RUN tests: no test_gpu.py found (run from a checkout, or pass --tests DIR)")
    summary = f"{len(steps) - len(failed)} of {len(steps)} checks passed"
    print(summary + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed or tests is None else 0


if __name__ == "__main__":
    sys.exit(main())
