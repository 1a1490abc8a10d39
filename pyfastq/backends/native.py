"""The native backend: producers write into the C++ ring through pyfastq._core;
the compiled op (pyfastq/_ops.so) dequeues inside the graph.

Importing this module raises ImportError, saying how to rebuild, when the
compiled parts are missing or were built against another TensorFlow.
"""

from __future__ import annotations

import os

import tensorflow as tf

from .._spec import Spec

_REBUILD = "rebuild pyfastq against it: pip install --force-reinstall --no-deps --no-build-isolation pyfastq (or . in a checkout)"

try:
    from .. import _build_info, _core
except ImportError as e:  # pragma: no cover - depends on how pyfastq was installed
    raise ImportError(f"pyfastq's compiled modules are missing ({e}); {_REBUILD}") from None

if _build_info.TF_VERSION != tf.__version__:
    raise ImportError(f"pyfastq was built against TensorFlow {_build_info.TF_VERSION} but {tf.__version__} is imported; {_REBUILD}")

try:
    _ops = tf.load_op_library(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "_ops.so"))
except tf.errors.OpError as e:
    raise ImportError(f"pyfastq's op library did not load ({e.message.strip()}); {_REBUILD}") from None


class NativeBackend:
    name = "native"

    def __init__(self, spec: Spec, capacity: int, name: str):
        self._spec = spec
        self._name = name
        self._ring = _core.Ring(capacity, spec.dtypes, [list(s) for s in spec.shapes], name)
        self._op_attrs = dict(
            queue_id=self._ring.id,
            queue_name=name,
            component_types=spec.tf_dtypes,
            shapes=[tf.TensorShape(s) for s in spec.shapes],
        )

    def put(self, flat: list, timeout: float | None) -> None:
        # The fast path takes exact-match arrays; anything else is converted
        # (or rejected with the precise error) first.
        if not self._ring.put(flat, timeout) and not self._ring.put(self._spec.convert(flat), timeout):
            raise AssertionError(f"pyfastq internal error: converted element rejected by the ring of '{self._name}'")

    @property
    def put_one(self):
        return self._ring.put_one

    def put_many(self, flat: list, timeout: float | None) -> None:
        if not self._ring.put_many(flat, timeout):
            arrays = self._spec.convert(flat, leading=-1)
            if arrays[0].shape[0] and not self._ring.put_many(arrays, timeout):
                raise AssertionError(f"pyfastq internal error: converted elements rejected by the ring of '{self._name}'")

    def reserve(self, timeout: float | None):
        return self._ring.reserve(timeout)

    def close(self, cancel: bool) -> None:
        self._ring.close(cancel)

    def fail(self, message: str) -> None:
        self._ring.fail(message)

    @property
    def state(self) -> str:
        return self._ring.state

    def size(self) -> int:
        return self._ring.size()

    def stats(self) -> dict:
        return self._ring.stats()

    def dequeue(self, end_as_flag: bool = False):
        done, comps = _ops.pyfastq_dequeue(end_as_flag=end_as_flag, **self._op_attrs)
        return done, list(comps)

    def dequeue_many(self, n: int, allow_smaller: bool, end_as_flag: bool = False):
        done, comps = _ops.pyfastq_dequeue_many(
            n=n, allow_smaller_final_batch=allow_smaller, end_as_flag=end_as_flag, **self._op_attrs
        )
        return done, list(comps)
