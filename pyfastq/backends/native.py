"""The native backend: producers write into the C++ ring through pyfastq._core;
the compiled op (pyfastq/_ops.so) dequeues inside the graph.

Importing this module raises ImportError, saying how to rebuild, when the
compiled parts are missing or were built against another TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import importlib.util
import os

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import node_def_pb2

from .. import _compat
from .._spec import Spec, bitcast_takes
from .._writer import RingWriter
from . import Order

_REBUILD = (
    "rebuild pyfastq against it: "
    "pip install --force-reinstall --no-deps --no-build-isolation pyfastq (or . in a checkout)"
)

try:
    from .. import _build_info, _core
except ImportError as e:  # pragma: no cover - depends on how pyfastq was installed
    raise ImportError(f"pyfastq's compiled modules are missing ({e}); {_REBUILD}") from None

if tf.__version__ != _build_info.TF_VERSION:
    raise ImportError(
        f"pyfastq was built against TensorFlow {_build_info.TF_VERSION} but {tf.__version__} is imported; {_REBUILD}"
    )

try:
    _ops = tf.load_op_library(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_ops.so"))
except tf.errors.OpError as e:
    raise ImportError(f"pyfastq's op library did not load ({e.message.strip()}); {_REBUILD}") from None


def _pip_cudart() -> list[str]:
    """The CUDA runtimes of pip's nvidia-* packages (TF's ``[and-cuda]`` extra): off the loader's path."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    found = []
    for root in spec.submodule_search_locations:
        found += sorted(glob.glob(os.path.join(root, "*", "lib", "libcudart.so.*")), reverse=True)
    return found


def _cuda_major() -> str:
    """The major version of the CUDA runtime TF was built with ("12"), or "" for a build without CUDA."""
    version = str(tf.sysconfig.get_build_info().get("cuda_version") or "")
    return version.split(".")[0]


# Read when a GPU dequeue first pins a ring: TF's runtime version (no second runtime beside TF's),
# and pip's runtimes to try after the one TF has loaded and before the loader's own search.
_core.set_cudart_version(_cuda_major())
_core.set_cudart_candidates(_pip_cudart())


def _logical_gpus() -> list:
    """The GPUs TF places ops on: its logical GPUs once its runtime has started. Before that, the visible
    physical GPUs (each gives at least one logical GPU), read without starting the runtime: starting it
    would fix the device configuration (set_visible_devices, set_memory_growth, virtual devices) for good
    in a program that only builds a graph yet."""
    if _compat.tf_runtime_started():
        return tf.config.list_logical_devices("GPU")
    return tf.config.get_visible_devices("GPU")


def _requested_device() -> str:
    """The device a dequeue op made here is requested on: the current tf.device scope, "" outside any."""
    if tf.executing_eagerly():
        return _compat.eager_device_name()
    # A graph merges its tf.device scopes into each new op; this merges them into a stand-in node, as
    # Graph._apply_device_functions does, without adding an op to the graph.
    node = node_def_pb2.NodeDef(op="PyfastqDequeue")
    scopes = _compat.graph_device_scopes(tf.compat.v1.get_default_graph())
    if scopes is None:  # a TF without them: taken as no scope, where TF puts the op on a visible GPU
        return ""
    for scope in scopes:
        if scope.is_null_merge:
            continue
        if scope.function is None:  # tf.device(None): scopes further out do not apply
            break
        try:
            node.device = scope.string_merge(node)
        except (AttributeError, TypeError, ValueError):  # a TF1 device function wanting a real Operation
            return ""
    return node.device


def _placed_on_gpu() -> bool:
    """Whether TF places a dequeue op made here on a GPU: under a GPU scope, or outside any device scope
    while a GPU is visible (TF gives an op that has a GPU kernel the first GPU). Decided where the op is
    made: a tf.function traced outside any scope keeps its choice when later called under one."""
    device_type = tf.DeviceSpec.from_string(_requested_device()).device_type
    return (device_type is None or device_type.upper() == "GPU") and bool(_logical_gpus())


def _placed(dequeue):
    """A dequeue method run under its queue's placement (NativeBackend._placement)."""
    @functools.wraps(dequeue)
    def placed(self, *args, **kwargs):
        with self._placement():
            return dequeue(self, *args, **kwargs)

    return placed


# The GPU kernels' copy mode for dequeues made now (the ops' gpu_copy attr): "auto" but inside gpu_copy().
_gpu_copy = "auto"


@contextlib.contextmanager
def gpu_copy(mode: str):
    """Dequeues made inside copy to the GPU by `mode`: "gather", "rows" or "auto" (the default).

    For benchmarks and tests that compare the copies; a bad mode is refused by the GPU kernel.

    >>> with gpu_copy("rows"):
    ...     batch = q.dequeue_many(64)
    """
    global _gpu_copy
    before, _gpu_copy = _gpu_copy, mode
    try:
        yield
    finally:
        _gpu_copy = before


class NativeBackend(RingWriter):
    """The ring's producer side (RingWriter) and the dequeue ops."""

    def __init__(self, spec: Spec, capacity: int, queue_name: str, order: Order, shared: bool = False):
        shapes, bounds = spec.ring_shapes()
        ring = _core.Ring(
            capacity, spec.dtypes, shapes, queue_name, shared, bounds=bounds,
            shuffle=order.shuffle, min_after_dequeue=order.min_after_dequeue, seed=order.seed,
        )
        super().__init__(ring, spec, queue_name)
        self._op_attrs = dict(
            queue_id=self._ring.id,
            queue_name=queue_name,
            component_types=spec.tf_dtypes,
            shapes=[tf.TensorShape(s) for s in spec.shapes],
            max_shapes=[tf.TensorShape(b) for b in spec.bounds] if spec.variable else [],
        )
        # Inside tf.cond the ops give each component as it crosses control flow (the kernels copy bytes,
        # whatever the type): tf.bitcast, which does not copy, restores the others after it. A dtype that
        # tf.bitcast does not take either (float8, int4, ...) keeps the dequeue out of tf.cond altogether.
        self._dtypes = spec.tf_dtypes
        self._cond_attrs = dict(self._op_attrs, component_types=spec.carried_dtypes)
        self._no_cond = any(
            c != d and not bitcast_takes(d) for c, d in zip(spec.carried_dtypes, spec.tf_dtypes, strict=True)
        )
        # The GPU kernel copies slots at their full shapes; an element of variable shape gets its shape
        # on the host. Its dequeues stay there (also under a GPU scope), and TF copies what a GPU op reads.
        self._host_only = spec.variable

    def _placement(self):
        return tf.device("/CPU:0") if self._host_only else contextlib.nullcontext()

    @_placed
    def dequeue(self):
        return self._tried(
            lambda attrs: _ops.pyfastq_try_dequeue(**attrs),
            lambda attrs, record_fill: _ops.pyfastq_dequeue(record_fill=record_fill, gpu_copy=_gpu_copy, **attrs),
        )

    @_placed
    def dequeue_many(self, n: int, allow_smaller: bool, padding: list | None = None):
        """padding: None (zeros), or one numpy scalar (None: zero) per component."""
        pad = self._padding_bytes(padding)
        return self._tried(
            lambda attrs: _ops.pyfastq_try_dequeue_many(n=n, padding=pad, **attrs),
            lambda attrs, record_fill: _ops.pyfastq_dequeue_many(
                n=n, allow_smaller_final_batch=allow_smaller, padding=pad, record_fill=record_fill,
                gpu_copy=_gpu_copy, **attrs,
            ),
        )

    def dataset(self, batch_size: int | None, drop_remainder: bool, padding: list | None, spec: Spec):
        """Queue.dataset's dataset, elements nested as spec: the PyfastqDataset kernel, whose GetNext takes
        from the ring."""
        lead = [] if batch_size is None else [batch_size if drop_remainder else None]
        specs = [tf.TensorSpec(lead + list(s), d) for s, d in zip(spec.shapes, spec.tf_dtypes, strict=True)]
        attrs = dict(self._op_attrs)
        attrs["output_types"] = attrs.pop("component_types")
        return _QueueDataset(
            lambda: _ops.pyfastq_dataset(
                output_shapes=[s.shape for s in specs], padding=self._padding_bytes(padding),
                batch_size=batch_size or 0, drop_remainder=bool(drop_remainder), **attrs,
            ),
            spec.pack(specs),
        )

    def _padding_bytes(self, padding: list | None) -> list[bytes]:
        """The ops' padding attr: empty (zeros), or one scalar's bytes per component."""
        if padding is None:
            return []
        return [
            (np.zeros((), d) if v is None else v).astype(d).tobytes()
            for v, d in zip(padding, self._layout.dtypes, strict=True)
        ]

    def _tried(self, try_op, wait_op):
        """(done, components): try_op's if it took something, else wait_op's, which waits.

        The try is a synchronous kernel, so what consumes an element it found runs inline on TF's
        thread; the waiting op, an async kernel, would send it through TF's inter-op pool. Each
        dequeue counts once in the fill histogram: the try counts it, the wait after it does not.
        Both take the op attributes to run with (the components' own dtypes, or as they cross tf.cond).
        """
        def waited(attrs: dict, record_fill: bool):
            done, comps = wait_op(attrs, record_fill)
            return done, list(comps)

        if _placed_on_gpu():
            # On a GPU the waiting op runs its GPU kernel, which copies into device memory; the try
            # has no GPU kernel and would bring the element to the host instead.
            return waited(self._op_attrs, True)
        if tf.executing_eagerly():
            ok, fast = try_op(self._op_attrs)
            return (tf.constant(False), list(fast)) if ok else waited(self._op_attrs, False)
        if self._no_cond:
            return waited(self._op_attrs, True)
        ok, fast = try_op(self._cond_attrs)

        def wait():
            return waited(self._cond_attrs, False)[1]

        comps = tf.cond(ok, lambda: list(fast), wait)
        return tf.constant(False), [
            t if t.dtype == d else tf.bitcast(t, d) for t, d in zip(comps, self._dtypes, strict=True)
        ]


class _QueueDataset(_compat.dataset_source_base()):
    """A dataset whose variant is a PyfastqDataset op's: tf.data's own Python wrapper, as
    tensorflow-io's Arrow datasets have it. The op's outputs are element_spec's components, flattened."""

    def __init__(self, make_variant, element_spec):
        self._specs = element_spec
        super().__init__(make_variant())

    @property
    def element_spec(self):
        return self._specs
