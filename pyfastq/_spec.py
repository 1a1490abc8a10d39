"""Element specs: a nest of ``tf.TensorSpec`` checked and turned into a layout.

The layout (``_layout.Layout``) does the per-element work, flattening, checking
and converting, without TensorFlow; this adds what the consumers' side needs.
A spec may have None dims when ``max_shapes`` bounds them: slots are sized
for the bounds, and each element keeps its own shape.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from ._layout import Layout, Leaf, _paths, leaves_along, skeleton_of

_UNSUPPORTED = (tf.string, tf.resource, tf.variant)
# The dtypes TF's control flow (Switch, Merge, NextIteration: tf.cond and tf.while_loop in a graph) has
# CPU kernels for. A component of any other dtype crosses it as a same-width integer.
_CONTROL_FLOW = frozenset([
    tf.bool, tf.int8, tf.int16, tf.int32, tf.int64, tf.uint8, tf.uint16, tf.uint32, tf.uint64,
    tf.float16, tf.bfloat16, tf.float32, tf.float64, tf.complex64, tf.complex128,
])
_SAME_WIDTH = {1: tf.uint8, 2: tf.uint16, 4: tf.uint32, 8: tf.uint64}
# tf.bitcast (which does not copy) takes these besides; not float8, float4, int4, int2 and their unsigned kin.
_BITCAST = _CONTROL_FLOW | {tf.qint8, tf.quint8, tf.qint16, tf.quint16, tf.qint32}


def bitcast_takes(dtype: tf.DType) -> bool:
    return dtype in _BITCAST


class Spec(Layout):
    """The flat view of a nest of ``tf.TensorSpec``: names, dtypes, shapes, bounds, TF dtypes."""

    def __init__(self, specs: Any, max_shapes: Any = None):
        self.flat: list[tf.TensorSpec] = tf.nest.flatten(specs)
        if not self.flat:
            raise TypeError("specs must hold at least one tf.TensorSpec")
        bounds: dict[str, Any] = {}
        if max_shapes is not None:
            given: list = []
            leaves_along(specs, max_shapes, "", given, "max_shapes")
            bounds = {path: b for (path, _), b in zip(_paths(specs), given, strict=True)}
        super().__init__(skeleton_of(specs, lambda path, s: _leaf(path, s, bounds.get(path))))
        self.structure = specs
        self.tf_dtypes = [s.dtype for s in self.flat]
        # What each component crosses control flow as: its own dtype, or a same-width integer.
        self.carried_dtypes = [
            d if d in _CONTROL_FLOW else _SAME_WIDTH[leaf.dtype.itemsize]
            for d, leaf in zip(self.tf_dtypes, self.leaves, strict=True)
        ]

    def layout(self) -> Layout:
        """The TF-free part, for producers in other processes."""
        return Layout(self.skeleton)


def _leaf(path: str, s: Any, max_shape: Any) -> Leaf:
    name = path or "0"
    if not isinstance(s, tf.TensorSpec):
        raise TypeError(f"specs must be tf.TensorSpec or a tuple/list/dict nest of them; {path or 'specs'} is {s!r}")
    if s.dtype in _UNSUPPORTED:
        raise TypeError(
            f"component {name} has dtype {s.dtype.name}: only fixed-size numeric and bool dtypes fit in a slot"
        )
    if s.shape.rank is None:
        raise ValueError(f"component {name} has shape {s.shape} of unknown rank: a slot needs the rank")
    shape = tuple(s.shape.as_list())
    bound = _bound(name, shape, max_shape)
    return Leaf(name, np.dtype(s.dtype.as_numpy_dtype), shape, bound)


def _bound(name: str, shape: tuple, max_shape: Any) -> tuple[int, ...]:
    """The component's bound: its shape with each None replaced by max_shape's dim there."""
    where = f"component {name} has shape {list(shape)}"
    if max_shape is None:
        if None in shape:
            raise ValueError(
                f"{where}: a None dim needs its bound in max_shapes= (a nest like specs, each None replaced by its "
                "largest size), which sizes the ring's slots"
            )
        return shape
    try:
        given = tf.TensorShape(max_shape)
    except (TypeError, ValueError) as e:
        raise TypeError(f"max_shapes for component {name} must be a TensorShape or a list of ints, got "
                        f"{max_shape!r:.100} ({e})") from None
    if given.rank != len(shape):
        raise ValueError(f"{where}, but its max_shapes entry {given} has another rank")
    bound = []
    for d, (want, b) in enumerate(zip(shape, given.as_list(), strict=True)):
        if want is None:
            if b is None or b < 0:
                raise ValueError(f"{where}: dim {d} is None and max_shapes gives it no bound ({given})")
            bound.append(b)
        elif b is not None and b != want:
            raise ValueError(f"{where}: max_shapes {given} differs in dim {d}, which the spec defines as {want}")
        else:
            bound.append(want)
    return tuple(bound)
