"""GPU kernels, pinning, and GPU placement.

What runs everywhere: both ops have CPU and GPU kernels registered; a dequeue placed on /GPU:0 runs
on the CPU under soft placement where there is no GPU; the ring's pinning goes through the CUDA
runtime named at run time (a stand-in libcudart built here checks register/unregister, and that
unregister comes while the ring is still mapped); stats() says "pinned" on both backends; where each
dequeue is placed and whether it tries first, with a GPU's visibility faked (the placement is Python's).
What needs a GPU (skipped without one): values and placement of GPU outputs, in both copy modes;
the pinned flag; slots given back once the copy is done; no leak over 10k batches; prefetch_to_device.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import psutil
import pytest
import tensorflow as tf
from tensorflow.python.framework import kernels

import pyfastq
from pyfastq.bench.gpu_check import taken_on_gpu

from support import CHILD_ENV, START_BUDGET_S, f32

GPUS = tf.config.list_physical_devices("GPU")
needs_gpu = pytest.mark.skipif(not GPUS, reason="no GPU visible to TensorFlow here")
no_gpu = pytest.mark.skipif(bool(GPUS), reason="checks what happens where there is no GPU")


# -- everywhere ----------------------------------------------------------------------


@pytest.mark.parametrize("op", ["PyfastqDequeue", "PyfastqDequeueMany"])
def test_both_ops_have_cpu_and_gpu_kernels(native, op):
    pyfastq.Queue(tf.TensorSpec([1], tf.float32), backend="native")  # loads the op library
    registered = kernels.get_registered_kernels_for_op(op).kernel
    devices = sorted(k.device_type for k in registered)
    assert devices == ["CPU", "GPU"]
    gpu = next(k for k in registered if k.device_type == "GPU")
    assert list(gpu.host_memory_arg) == ["done"]  # the end flag stays on the host for take_while


@no_gpu
def test_gpu_placement_falls_back_to_cpu_under_soft_placement(native):
    q = pyfastq.Queue((tf.TensorSpec([3], tf.float32), tf.TensorSpec([], tf.int32)), capacity=8, backend="native")
    for i in range(5):
        q.put((f32(3, value=i), i))
    # Eager first: once a tf.function with a GPU device scope has run, TF 2.21 stops soft-placing
    # eager stateful ops that have no inputs (tf.timestamp() alike) and raises "Could not satisfy
    # device specification". A TF quirk; inside tf.function placement is unaffected.
    with tf.device("/GPU:0"):
        x, i = q.dequeue()
    assert x.numpy().tolist() == [0.0] * 3 and int(i) == 0 and "CPU" in x.device

    @tf.function
    def take():
        with tf.device("/GPU:0"):
            return q.dequeue(), q.dequeue_many(2)

    (x, i), (xs, ids) = take()
    assert x.numpy().tolist() == [1.0] * 3 and int(i) == 1
    assert xs.numpy()[:, 0].tolist() == [2.0, 3.0] and ids.numpy().tolist() == [2, 3]
    assert "CPU" in x.device and "CPU" in xs.device


@no_gpu
def test_tf1_session_places_the_op_on_cpu_with_allow_soft_placement(native):
    q = pyfastq.Queue(tf.TensorSpec([2], tf.float32), capacity=8, backend="native")
    for i in range(4):
        q.put(f32(2, value=i))
    graph = tf.Graph()
    with graph.as_default():
        with tf.device("/device:GPU:0"):
            batch = q.dequeue_many(4)
        config = tf.compat.v1.ConfigProto(allow_soft_placement=True)
        with tf.compat.v1.Session(graph=graph, config=config) as sess:
            options = tf.compat.v1.RunOptions(output_partition_graphs=True)
            metadata = tf.compat.v1.RunMetadata()
            value = sess.run(batch, options=options, run_metadata=metadata)
    assert value[:, 0].tolist() == [0.0, 1.0, 2.0, 3.0]
    placed = {n.device for g in metadata.partition_graphs for n in g.node if n.op == "PyfastqDequeueMany"}
    assert len(placed) == 1 and "CPU" in placed.pop()


def test_stats_say_whether_the_ring_is_pinned(backend):
    q = pyfastq.Queue(tf.TensorSpec([2], tf.float32), capacity=4, backend=backend)
    # Nothing pins a ring that no GPU kernel has read: there is none here, or none has run yet.
    assert q.stats()["pinned"] is False


def test_dataset_leaves_sharding_to_the_queue(backend):
    q = pyfastq.Queue(tf.TensorSpec([2], tf.float32), capacity=4, backend=backend)
    for ds in (q.dataset(), q.dataset(batch_size=2)):
        assert ds.options().experimental_distribute.auto_shard_policy == tf.data.experimental.AutoShardPolicy.OFF


def test_prefetch_to_device_on_a_queue_dataset(backend):
    q = pyfastq.Queue(tf.TensorSpec([2], tf.float32), capacity=16, backend=backend)
    for i in range(10):
        q.put(f32(2, value=i))
    q.close()
    device = "/GPU:0" if GPUS else "/CPU:0"
    ds = q.dataset(batch_size=4).apply(tf.data.experimental.prefetch_to_device(device, buffer_size=2))
    batches = [b.numpy()[:, 0].tolist() for b in ds]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]


# -- where each dequeue is placed (decided per op in Python; GPU visibility faked here) ----------

FAKE_GPUS = [tf.config.LogicalDevice("/device:GPU:0", "GPU")]


def dequeue_ops(graph_def):
    """(op, requested device) of every pyfastq op in a graph and in the functions it calls (cond branches)."""
    nodes = list(graph_def.node) + [n for f in graph_def.library.function for n in f.node_def]
    return sorted((n.op, n.device) for n in nodes if n.op.startswith("Pyfastq"))


def placement_queue(variable):
    if variable:
        return pyfastq.Queue(tf.TensorSpec([None], tf.float32), capacity=8, max_shapes=[4], backend="native")
    return pyfastq.Queue(tf.TensorSpec([4], tf.float32), capacity=8, backend="native")


def built(q, scope, many):
    def take():
        return q.dequeue_many(2) if many else q.dequeue()

    if scope is None:
        return take()
    with tf.device(scope):
        return take()


WAIT_ONLY, TRY_AND_WAIT = "wait only", "try and wait"


@pytest.mark.parametrize(
    "gpus, variable, scope, path, device",
    [
        # A GPU visible: TF puts an unscoped op with a GPU kernel on it, so only the waiting op is made.
        (FAKE_GPUS, False, None, WAIT_ONLY, ""),
        (FAKE_GPUS, False, "/GPU:0", WAIT_ONLY, "/device:GPU:0"),
        # A host dequeue keeps the synchronous try, GPU or not.
        (FAKE_GPUS, False, "/CPU:0", TRY_AND_WAIT, "/device:CPU:0"),
        # Variable shapes have no GPU kernel: their dequeues stay on the host, under any scope.
        (FAKE_GPUS, True, None, TRY_AND_WAIT, "/device:CPU:0"),
        (FAKE_GPUS, True, "/GPU:0", TRY_AND_WAIT, "/device:CPU:0"),
        # No GPU: a GPU scope soft-places on the CPU, where the try runs.
        ([], False, None, TRY_AND_WAIT, ""),
        ([], False, "/GPU:0", TRY_AND_WAIT, "/device:GPU:0"),
        ([], True, None, TRY_AND_WAIT, "/device:CPU:0"),
    ],
)
@pytest.mark.parametrize("many", [False, True], ids=["dequeue", "dequeue_many"])
@pytest.mark.parametrize("graph", ["tf.function", "tf1"])
def test_each_dequeue_is_placed_where_tf_puts_it(native, monkeypatch, gpus, variable, scope, path, device, many,
                                                  graph):
    from pyfastq.backends import native as native_backend

    monkeypatch.setattr(native_backend, "_logical_gpus", lambda: gpus)
    q = placement_queue(variable)
    if graph == "tf1":
        g = tf.Graph()
        with g.as_default():
            built(q, scope, many)
        graph_def = g.as_graph_def()
    else:
        graph_def = tf.function(lambda: built(q, scope, many)).get_concrete_function().graph.as_graph_def()
    wait = "PyfastqDequeueMany" if many else "PyfastqDequeue"
    try_ = "PyfastqTryDequeueMany" if many else "PyfastqTryDequeue"
    expected = [(wait, device)] if path == WAIT_ONLY else [(wait, device), (try_, device)]
    assert dequeue_ops(graph_def) == expected


@pytest.mark.parametrize("batch_size", [None, 2])
def test_a_dataset_is_the_same_host_source_whether_a_gpu_is_visible(native, monkeypatch, batch_size):
    # tf.data runs its pipeline on the host: the dataset is one PyfastqDataset op, with no dequeue ops to
    # place, and takes from the ring as without a GPU.
    from tensorflow.core.framework import graph_pb2

    from pyfastq.backends import native as native_backend

    monkeypatch.setattr(native_backend, "_logical_gpus", lambda: FAKE_GPUS)
    q = placement_queue(False)
    ds = q.dataset(batch_size=batch_size)
    graph_def = graph_pb2.GraphDef.FromString(ds._as_serialized_graph().numpy())
    assert [n.op for n in graph_def.node if n.op.startswith("Pyfastq")] == ["PyfastqDataset"]
    for _ in range(4):
        q.put(np.ones([4], np.float32))
    q.close()
    assert sum(1 if batch_size is None else len(x) for x in ds) == 4


def test_deciding_where_a_dequeue_goes_leaves_the_device_configuration_open(native, tmp_path):
    # Deciding must not start TF's runtime, where building the op would not: a program may still configure
    # its devices. (The host path's tf.cond starts it, as any tf.cond does; the GPU path has none.)
    script = textwrap.dedent(
        """
        import tensorflow as tf, pyfastq
        from pyfastq.backends import native
        q = pyfastq.Queue(tf.TensorSpec([2], tf.float32), capacity=4, backend="native")
        with tf.Graph().as_default():
            native._placed_on_gpu()
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        print(len(tf.config.list_logical_devices("CPU")), flush=True)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=START_BUDGET_S,
                          cwd=tmp_path, env=CHILD_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split()[-1] == "2"


@pytest.mark.parametrize("needs_an_operation", [False, True])
def test_tf1_device_functions_place_dequeues(native, monkeypatch, needs_an_operation):
    # A device function is asked where a dequeue would go; one that reads what only a real Operation has
    # leaves the choice to TF (the waiting op alone, which has a kernel on either device).
    from pyfastq.backends import native as native_backend

    monkeypatch.setattr(native_backend, "_logical_gpus", lambda: FAKE_GPUS)
    q = placement_queue(False)

    def on_host(op):
        return "/device:CPU:0" if not needs_an_operation or op.type.startswith("Pyfastq") else ""

    g = tf.Graph()
    with g.as_default(), tf.compat.v1.device(on_host):
        q.dequeue()
    expected = [("PyfastqDequeue", "/device:CPU:0")]
    if not needs_an_operation:
        expected.append(("PyfastqTryDequeue", "/device:CPU:0"))
    assert dequeue_ops(g.as_graph_def()) == expected


@pytest.mark.parametrize("variable", [False, True])
def test_a_dequeue_chosen_for_a_gpu_still_delivers_on_this_cpu(native, monkeypatch, variable):
    # The placement decided with a GPU in view runs correctly wherever TF ends up running it.
    from pyfastq.backends import native as native_backend

    monkeypatch.setattr(native_backend, "_logical_gpus", lambda: FAKE_GPUS)
    q = placement_queue(variable)
    for i in range(5):
        q.put(f32(3 if variable else 4, value=i))
    q.close()

    @tf.function
    def take():
        return q.dequeue(), q.dequeue_many(2), q.dequeue_many(4, allow_smaller_final_batch=True)

    one, two, rest = take()
    assert one.numpy()[0] == 0 and two.numpy()[:, 0].tolist() == [1, 2] and rest.numpy()[:, 0].tolist() == [3, 4]
    if variable:
        assert one.shape == [3] and "CPU" in one.device


@pytest.mark.parametrize(
    "variable, scope, tried",
    [
        (False, None, False), (False, "/GPU:0", False), (False, "/CPU:0", True),
        (True, None, True), (True, "/GPU:0", True),
    ],
)
def test_eager_dequeues_try_first_only_on_the_host(native, monkeypatch, variable, scope, tried):
    from pyfastq.backends import native as native_backend

    monkeypatch.setattr(native_backend, "_logical_gpus", lambda: FAKE_GPUS)
    calls = []
    for name in ("pyfastq_try_dequeue", "pyfastq_try_dequeue_many"):
        real = getattr(native_backend._ops, name)
        monkeypatch.setattr(native_backend._ops, name, lambda *a, _real=real, _name=name, **k: (
            calls.append(_name), _real(*a, **k))[1])
    q = placement_queue(variable)
    for i in range(3):
        q.put(f32(4, value=i))
    one, two = built(q, scope, False), built(q, scope, True)
    assert one.numpy().tolist() == [0.0] * 4 and two.numpy()[:, 0].tolist() == [1.0, 2.0]
    assert calls == (["pyfastq_try_dequeue", "pyfastq_try_dequeue_many"] if tried else [])
    if variable:
        assert "CPU" in one.device and "CPU" in two.device


# -- pinning through the CUDA runtime, in child processes (the runtime is loaded once per process) --

# A stand-in for libcudart: the four calls pyfastq makes, each logged with the calling thread; unregister
# also logs whether the range is still mapped (msync fails with ENOMEM on an unmapped page).
FAKE_CUDART = r"""
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>
static void log_line(const char* what, void* p, std::size_t n, int mapped) {
  if (FILE* f = std::fopen(std::getenv("FAKE_CUDART_LOG"), "a")) {
    std::fprintf(f, "%s %p %zu %d %ld\n", what, p, n, mapped, static_cast<long>(syscall(SYS_gettid)));
    std::fclose(f);
  }
}
extern "C" {
int cudaHostRegister(void* p, std::size_t n, unsigned int flags) {
  log_line("register", p, n, static_cast<int>(flags));
  return std::getenv("FAKE_CUDART_REFUSE") ? 2 : 0;
}
int cudaHostUnregister(void* p) {
  void* page = reinterpret_cast<void*>(reinterpret_cast<std::uintptr_t>(p) & ~std::uintptr_t(4095));
  log_line("unregister", p, 0, msync(page, 4096, MS_ASYNC) == 0);
  return 0;
}
int cudaGetLastError() { return 0; }
const char* cudaGetErrorString(int) { return "out of memory (fake)"; }
}
"""

PIN_CHILD = textwrap.dedent(
    """
    import gc, json
    import numpy as np, tensorflow as tf, pyfastq
    from pyfastq import _core
    q = pyfastq.Queue(tf.TensorSpec([1024], tf.float32), capacity=4, backend="native")
    out = {"before": q.stats()["pinned"], "pin": q._impl._ring.pin(), "again": q._impl._ring.pin()}
    out.update(after=q.stats()["pinned"], memory_bytes=q.stats()["memory_bytes"])
    q.put(np.ones(1024, np.float32)); q.close()
    out.update(value=float(q.dequeue()[0]), cudart=_core.cudart())
    del q; gc.collect()
    print(json.dumps(out), flush=True)
    """
)


@pytest.fixture(scope="module")
def fake_cudart(tmp_path_factory):
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the stand-in CUDA runtime")
    d = tmp_path_factory.mktemp("cudart")
    (d / "fake.cc").write_text(FAKE_CUDART)
    lib = d / "libcudart.so.12"
    subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(lib), str(d / "fake.cc")], check=True, timeout=120)
    return lib


def run_pin_child(tmp_path, env):
    log = tmp_path / "cudart.log"
    proc = subprocess.run(
        [sys.executable, "-c", PIN_CHILD],
        capture_output=True, text=True, timeout=START_BUDGET_S, cwd=tmp_path,
        env={**{k: v for k, v in CHILD_ENV.items() if k != "PYFASTQ_CUDART"}, "FAKE_CUDART_LOG": str(log), **env},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    calls = [line.split() for line in log.read_text().splitlines()] if log.exists() else []
    return json.loads(proc.stdout.splitlines()[-1]), calls


def test_pinning_registers_the_whole_ring_and_unregisters_it_while_mapped(native, fake_cudart, tmp_path):
    out, calls = run_pin_child(tmp_path, {"PYFASTQ_CUDART": str(fake_cudart)})
    assert out["before"] is False
    assert out["pin"] == [True, ""] and out["again"] == [True, ""]  # pinned once; the answer is kept
    assert out["after"] is True and out["value"] == 1.0 and out["cudart"] == str(fake_cudart)
    assert [c[0] for c in calls] == ["register", "unregister"]
    register, unregister = calls
    assert int(register[2]) == out["memory_bytes"] and register[3] == "1"  # the whole block, portable
    assert unregister[1] == register[1] and unregister[3] == "1"  # the same range, while still mapped


def test_a_refused_pin_leaves_the_ring_as_it_was(native, fake_cudart, tmp_path):
    out, calls = run_pin_child(tmp_path, {"PYFASTQ_CUDART": str(fake_cudart), "FAKE_CUDART_REFUSE": "1"})
    assert out["pin"] == [False, "cudaHostRegister failed: out of memory (fake) (2)"]
    assert out["after"] is False and out["value"] == 1.0
    assert [c[0] for c in calls] == ["register"]  # nothing to unregister


def test_pinning_can_be_turned_off(native, tmp_path):
    out, calls = run_pin_child(tmp_path, {"PYFASTQ_CUDART": "0"})
    assert out["pin"] == [False, "pinning disabled (PYFASTQ_CUDART=0)"] and not calls


def test_pinning_takes_the_cuda_runtime_of_tfs_version(native, fake_cudart, tmp_path):
    # A newer runtime found first must not be loaded beside TF's: two runtimes in one process.
    major = str(tf.sysconfig.get_build_info().get("cuda_version") or "").split(".")[0]
    if not major:
        pytest.skip("this TensorFlow was built without CUDA: any runtime may pin")
    (tmp_path / "newer").mkdir(), (tmp_path / "own").mkdir()
    newer = tmp_path / "newer" / f"libcudart.so.{int(major) + 1}"
    own = tmp_path / "own" / f"libcudart.so.{major}"
    shutil.copy(fake_cudart, newer)
    shutil.copy(fake_cudart, own)
    script = textwrap.dedent(
        f"""
        import json, tensorflow as tf, pyfastq
        from pyfastq import _core
        import pyfastq.backends.native  # sets TF's version, and pip's runtimes as the candidates: replaced here
        _core.set_cudart_candidates([{str(newer)!r}, {str(own)!r}])  # pip's order: newest first
        q = pyfastq.Queue(tf.TensorSpec([4], tf.float32), capacity=2, backend="native")
        print(json.dumps({{"pin": q._impl._ring.pin(), "cudart": _core.cudart()}}), flush=True)
        """
    )
    env = {k: v for k, v in CHILD_ENV.items() if k != "PYFASTQ_CUDART"}
    env["FAKE_CUDART_LOG"] = str(tmp_path / "cudart.log")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=START_BUDGET_S,
                          cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.splitlines()[-1])
    # The one TF loaded (on a machine with CUDA), else the candidate of TF's version; never the newer one.
    assert out["cudart"] in (str(own), f"libcudart.so.{major} (already loaded)"), out


@no_gpu
def test_whatever_cuda_runtime_is_here_pins_nothing_without_a_gpu(native, tmp_path):
    # None, or one without a driver or a device: not pinned, a reason given, the ring as before.
    out, _ = run_pin_child(tmp_path, {})
    pinned, why = out["pin"]
    assert pinned is False and why
    assert out["after"] is False and out["value"] == 1.0


# -- the GPU kernel's copies (csrc/tf/transfer.h), driven by a stand-in DeviceContext ---------

CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"


@pytest.fixture(scope="module")
def transfer_test(tmp_path_factory):
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the transfer test")
    ring_lib = pathlib.Path(pyfastq.__file__).parent
    tf_lib = tf.sysconfig.get_lib()
    exe = tmp_path_factory.mktemp("transfer") / "test_transfer"
    command = [
        # TF's headers use their own deprecated API: those warnings are TF's, not the test's.
        compiler, "-O1", "-Wno-deprecated-declarations", "-o", str(exe),
        str(CSRC / "tf" / "tests" / "test_transfer.cc"),
        f"-I{CSRC / 'tf'}", f"-I{CSRC / 'ring' / 'include'}", *tf.sysconfig.get_compile_flags(),
        f"-L{ring_lib}", "-l:libpyfastq_ring.so", f"-Wl,-rpath,{ring_lib}",
        *tf.sysconfig.get_link_flags(), f"-Wl,-rpath,{tf_lib}", "-lpthread",
    ]
    subprocess.run(command, check=True, timeout=600)
    return exe


@pytest.mark.parametrize("check", ["sync", "staged"])
def test_transfer(native, transfer_test, check):
    # sync: only the first copy of a transfer makes the host-to-device stream wait for the compute stream
    # (the later ones are queued behind it on the same stream). staged: a source TF has copied into its
    # staging buffer during the call is let go then (its slot back to producers), not when the copy completes.
    proc = subprocess.run([str(transfer_test), check], capture_output=True, text=True, timeout=START_BUDGET_S)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_transfer_tears_a_ring_down_off_the_event_thread(native, transfer_test, fake_cudart, tmp_path):
    # The last copy's completion can drop a ring's last owner: its unpinning and unmapping must not run
    # on TF's event-manager thread, which every GPU completion of the process waits behind.
    log = tmp_path / "cudart.log"
    env = {**CHILD_ENV, "PYFASTQ_CUDART": str(fake_cudart), "FAKE_CUDART_LOG": str(log)}
    proc = subprocess.run([str(transfer_test), "teardown"], capture_output=True, text=True, env=env,
                          timeout=START_BUDGET_S)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


# -- on a GPU ------------------------------------------------------------------------


@pytest.fixture(params=["auto", "gather", "rows"])
def copy_mode(request, native):
    # The mode of every dequeue the test makes.
    with _gpu_copy(request.param):
        yield request.param


def _gpu_copy(mode: str):
    from pyfastq.backends.native import gpu_copy  # once the `native` fixture has found the backend loads

    return gpu_copy(mode)


@needs_gpu
def test_gpu_outputs_hold_the_values_in_device_memory(native, copy_mode):
    q = taken_on_gpu([64, 64, 3])  # dequeue, dequeue_many and a smaller final batch, each checked
    assert q.stats()["pinned"] is True
    with pytest.raises(tf.errors.OutOfRangeError), tf.device("/GPU:0"):
        q.dequeue()


@needs_gpu
def test_gpu_dataset_ends_at_close(native):
    q = pyfastq.Queue(tf.TensorSpec([5], tf.float32), capacity=16, backend="native")
    for i in range(10):
        q.put(f32(5, value=i))
    q.close()

    @tf.function
    def total():
        acc = tf.constant(0.0)
        with tf.device("/GPU:0"):
            for batch in q.dataset(batch_size=4):
                acc += tf.reduce_sum(batch)
        return acc

    assert float(total()) == 5 * sum(range(10))


@needs_gpu
def test_gpu_slots_go_back_once_the_copy_is_done(native, copy_mode):
    q = pyfastq.Queue(tf.TensorSpec([256, 256], tf.float32), capacity=4, backend="native")
    for i in range(4):
        q.put(f32(256, 256, value=i))
    with tf.device("/GPU:0"):
        kept = [q.dequeue(), q.dequeue_many(3)]  # held: on the CPU these would hold their slots
    # The ring is whole again: the device tensors do not keep slots (a CPU dequeue() would).
    for i in range(4):
        q.put(f32(256, 256, value=10 + i), timeout=5)
    assert float(kept[0][0, 0]) == 0.0 and kept[1][:, 0, 0].numpy().tolist() == [1.0, 2.0, 3.0]


@needs_gpu
@pytest.mark.slow
def test_gpu_no_leak_over_10k_batches(native, copy_mode):
    q = pyfastq.Queue(tf.TensorSpec([64, 1024], tf.float32), capacity=32, backend="native")
    batch = f32(64, 1024, value=1.0)

    @tf.function
    def consume(n):
        acc = tf.constant(0.0)
        with tf.device("/GPU:0"):
            for _ in tf.range(n):
                acc += q.dequeue_many(2)[0, 0, 0]
        return acc

    def run(batches):
        def feed():
            for _ in range(2 * batches):
                q.put(batch)

        t = threading.Thread(target=feed)
        t.start()
        assert float(consume(tf.constant(batches))) == batches
        t.join()

    run(500)  # warm-up: allocators reach their working size
    rss = psutil.Process().memory_info().rss
    gpu = tf.config.experimental.get_memory_info("GPU:0")["current"]
    run(10_000)
    assert tf.config.experimental.get_memory_info("GPU:0")["current"] <= gpu + 2**20  # allocator slack only
    assert psutil.Process().memory_info().rss - rss < 64 * 2**20
    assert q.stats()["size"] == 0 and q.size() == 0


def test_gpu_copy_mode_must_be_known(native):
    # Checked when a kernel is made, so only where a GPU kernel is made at all.
    if not GPUS:
        pytest.skip("no GPU: the GPU kernel, which checks gpu_copy, is never made")
    q = pyfastq.Queue(tf.TensorSpec([1], tf.float32), capacity=2, backend="native")
    q.put(f32(1))
    with _gpu_copy("fastest"), pytest.raises(tf.errors.InvalidArgumentError, match="gpu_copy"), \
            tf.device("/GPU:0"):
        q.dequeue()


def test_gpu_copy_is_not_checked_without_a_gpu(native):
    if GPUS:
        pytest.skip("a GPU is here")
    q = pyfastq.Queue(tf.TensorSpec([1], tf.float32), capacity=2, backend="native")
    q.put(f32(1))

    @tf.function
    def take():
        with tf.device("/GPU:0"):
            return q.dequeue()

    with _gpu_copy("fastest"):
        assert take().numpy().tolist() == [0.0]



@no_gpu
def test_bench_device_gpu_says_plainly_that_it_needs_a_gpu(native, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pyfastq.bench", "--device", "gpu"], capture_output=True, text=True,
                          timeout=START_BUDGET_S, cwd=tmp_path, env=CHILD_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no GPU visible to TensorFlow here" in proc.stdout and "Nothing measured" in proc.stdout


@no_gpu
def test_gpu_check_says_plainly_that_there_is_no_gpu(native, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pyfastq", "gpu-check"], capture_output=True, text=True,
                          timeout=START_BUDGET_S, cwd=tmp_path, env=CHILD_ENV)
    assert proc.returncode == 77, proc.stderr[-3000:]  # a skip, to test drivers
    assert "no GPU visible to TensorFlow here" in proc.stdout and "Nothing checked" in proc.stdout


@needs_gpu
def test_gpu_check_of_a_queue_dropped_while_copying(native, tmp_path):
    # Not run soft-placed on the CPU: there a copy ends long before the queue is dropped, and the consumer's
    # next dequeue, already waiting and holding the ring, is never woken by the drop (a dequeue waiting on a
    # process-private queue nobody can reach any more waits on; seen once under load, a 120 s timeout).
    proc = subprocess.run([sys.executable, "-m", "pyfastq.bench.gpu_check", "--check", "dropped"],
                          capture_output=True, text=True, timeout=START_BUDGET_S, cwd=tmp_path, env=CHILD_ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ended = json.loads(proc.stdout.splitlines()[-1])
    assert ended["consumer"] in ("FailedPreconditionError", "CancelledError"), ended
