"""Element specs: a nest of ``tf.TensorSpec`` checked and turned into a layout.

The layout (``_layout.Layout``) does the per-element work, flattening, checking
and converting, without TensorFlow; this adds what the consumers' side needs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from ._layout import Layout, Leaf, skeleton_of

_UNSUPPORTED = (tf.string, tf.resource, tf.variant)


class Spec(Layout):
    """The flat view of a nest of ``tf.TensorSpec``: names, dtypes, shapes, TF dtypes."""

    def __init__(self, specs: Any):
        self.flat: list[tf.TensorSpec] = tf.nest.flatten(specs)
        if not self.flat:
            raise TypeError("specs must hold at least one tf.TensorSpec")
        super().__init__(skeleton_of(specs, _leaf))
        self.structure = specs
        self.tf_dtypes = [s.dtype for s in self.flat]

    def layout(self) -> Layout:
        """The TF-free part, for producers in other processes."""
        return Layout(self.skeleton)


def _leaf(path: str, s: Any) -> Leaf:
    if not isinstance(s, tf.TensorSpec):
        raise TypeError(f"specs must be tf.TensorSpec or a tuple/list/dict nest of them; {path or 'specs'} is {s!r}")
    if not s.shape.is_fully_defined():
        raise ValueError(f"component {path or '0'} has shape {s.shape}: ring slots need fully defined shapes")
    if s.dtype in _UNSUPPORTED:
        raise TypeError(
            f"component {path or '0'} has dtype {s.dtype.name}: only fixed-size numeric and bool dtypes fit in a slot"
        )
    return Leaf(path or "0", np.dtype(s.dtype.as_numpy_dtype), tuple(s.shape.as_list()))
