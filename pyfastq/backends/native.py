"""The native backend: producers write into the C++ ring through pyfastq._core;
the compiled op (pyfastq/_ops.so) dequeues inside the graph.

Importing this module raises ImportError, saying how to rebuild, when the
compiled parts are missing or were built against another TensorFlow.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import os

import numpy as np
import tensorflow as tf

from .._spec import Spec, bitcast_takes
from .._writer import RingWriter

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


# Tried when a GPU dequeue first pins a ring, after the runtime TF has loaded and the loader's own search.
_core.set_cudart_candidates(_pip_cudart())


@functools.cache
def _gpu_visible() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


class NativeBackend(RingWriter):
    """The ring's producer side (RingWriter) and the dequeue ops."""

    def __init__(
        self,
        spec: Spec,
        capacity: int,
        name: str,
        shared: bool = False,
        shuffle: bool = False,
        min_after_dequeue: int = 0,
        seed: int = 0,
    ):
        shapes, bounds = spec.ring_shapes()
        ring = _core.Ring(
            capacity, spec.dtypes, shapes, name, shared,
            bounds=bounds, shuffle=shuffle, min_after_dequeue=min_after_dequeue, seed=seed,
        )
        super().__init__(ring, spec, name)
        self._op_attrs = dict(
            queue_id=self._ring.id,
            queue_name=name,
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

    def dequeue(self, end_as_flag: bool = False):
        return self._tried(
            lambda attrs: _ops.pyfastq_try_dequeue(**attrs),
            lambda attrs, record_fill: _ops.pyfastq_dequeue(end_as_flag=end_as_flag, record_fill=record_fill, **attrs),
            end_as_flag,
        )

    def dequeue_many(self, n: int, allow_smaller: bool, end_as_flag: bool = False, padding: list | None = None):
        """padding: None (zeros), or one numpy scalar (None: zero) per component."""
        pad = []
        if padding is not None:
            pad = [
                (np.zeros((), d) if v is None else v).astype(d).tobytes()
                for v, d in zip(padding, self._layout.dtypes, strict=True)
            ]
        return self._tried(
            lambda attrs: _ops.pyfastq_try_dequeue_many(n=n, padding=pad, **attrs),
            lambda attrs, record_fill: _ops.pyfastq_dequeue_many(
                n=n, allow_smaller_final_batch=allow_smaller, end_as_flag=end_as_flag, padding=pad,
                record_fill=record_fill, **attrs,
            ),
            end_as_flag,
        )

    def _tried(self, try_op, wait_op, end_as_flag: bool):
        """(done, components): try_op's if it took something, else wait_op's, which waits.

        The try is a synchronous kernel, so what consumes an element it found runs inline on TF's
        thread; the waiting op, an async kernel, would send it through TF's inter-op pool. Each
        dequeue counts once in the fill histogram: the try counts it, the wait after it does not.
        Both take the op attributes to run with (the components' own dtypes, or as they cross tf.cond).
        """
        def waited(attrs: dict, record_fill: bool):
            done, comps = wait_op(attrs, record_fill)
            return done, list(comps)

        if _gpu_visible():
            # Under a GPU device scope the waiting op runs its GPU kernel, which copies into device
            # memory; the try has no GPU kernel and would bring the element to the host instead.
            return waited(self._op_attrs, True)
        if tf.executing_eagerly():
            ok, fast = try_op(self._op_attrs)
            return (tf.constant(False), list(fast)) if ok else waited(self._op_attrs, False)
        if self._no_cond:
            return waited(self._op_attrs, True)
        ok, fast = try_op(self._cond_attrs)

        def wait():
            done, comps = waited(self._cond_attrs, False)
            return [done, *comps] if end_as_flag else comps

        if not end_as_flag:  # done is always False: one output fewer through the cond, which costs per output
            done, comps = tf.constant(False), tf.cond(ok, lambda: list(fast), wait)
        else:
            done, *comps = tf.cond(ok, lambda: [tf.constant(False), *fast], wait)
        return done, [
            t if t.dtype == d else tf.bitcast(t, d) for t, d in zip(comps, self._dtypes, strict=True)
        ]

