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
from tensorflow.python.data.ops import dataset_ops

from .._spec import Spec
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

    def dequeue(self):
        return self._tried(
            lambda: _ops.pyfastq_try_dequeue(**self._op_attrs),
            lambda record_fill: _ops.pyfastq_dequeue(record_fill=record_fill, **self._op_attrs),
        )

    def dequeue_many(self, n: int, allow_smaller: bool, padding: list | None = None):
        """padding: None (zeros), or one numpy scalar (None: zero) per component."""
        pad = self._padding_bytes(padding)
        return self._tried(
            lambda: _ops.pyfastq_try_dequeue_many(n=n, padding=pad, **self._op_attrs),
            lambda record_fill: _ops.pyfastq_dequeue_many(
                n=n, allow_smaller_final_batch=allow_smaller, padding=pad, record_fill=record_fill, **self._op_attrs,
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

    @staticmethod
    def _tried(try_op, wait_op):
        """(done, components): try_op's if it took something, else wait_op's, which waits.

        The try is a synchronous kernel, so what consumes an element it found runs inline on TF's
        thread; the waiting op, an async kernel, would send it through TF's inter-op pool. Each
        dequeue counts once in the fill histogram: the try counts it, the wait after it does not.
        """
        def waited(record_fill: bool):
            done, comps = wait_op(record_fill)
            return done, list(comps)

        if _gpu_visible():
            # Under a GPU device scope the waiting op runs its GPU kernel, which copies into device
            # memory; the try has no GPU kernel and would bring the element to the host instead.
            return waited(True)
        ok, fast = try_op()
        if tf.executing_eagerly():
            return (tf.constant(False), list(fast)) if ok else waited(False)

        return tf.constant(False), list(tf.cond(ok, lambda: list(fast), lambda: waited(False)[1]))


class _QueueDataset(dataset_ops.DatasetSource):
    """A dataset whose variant is a PyfastqDataset op's: tf.data's own Python wrapper, as
    tensorflow-io's Arrow datasets have it. The op's outputs are element_spec's components, flattened."""

    def __init__(self, make_variant, element_spec):
        self._specs = element_spec
        super().__init__(make_variant())

    @property
    def element_spec(self):
        return self._specs
