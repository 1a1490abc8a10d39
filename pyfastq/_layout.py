"""An element's layout: flattening it along the specs, checking and converting it.

No TensorFlow here: worker processes use this to put into a shared ring, and
importing TF there would cost seconds and hundreds of MB per worker. Python
scalars and lists of them convert as ``tf.convert_to_tensor`` would, with
numpy; only what numpy cannot express the same way (bfloat16 and other
ml_dtypes, quantized dtypes, array-likes, scalar subclasses) imports TF, on
first use. Both backends and the worker share these checks, so the errors are
the same wherever they are raised.
"""

from __future__ import annotations

import numbers
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


class Leaf:
    """One component in a layout's skeleton: where the specs had a TensorSpec.

    ``shape`` has None where the spec has a variable dim; ``bound`` is the
    shape with each None replaced by its bound (max_shapes), which sizes the slot.
    """

    __slots__ = ("bound", "dtype", "name", "shape")

    def __init__(self, name: str, dtype: np.dtype, shape: tuple, bound: tuple[int, ...] | None = None):
        self.name, self.dtype, self.shape = name, dtype, shape
        self.bound = tuple(shape) if bound is None else tuple(bound)

    @property
    def variable(self) -> bool:
        return None in self.shape

    def __getstate__(self):
        return self.name, self.dtype, self.shape, self.bound

    def __setstate__(self, state):
        self.name, self.dtype, self.shape, self.bound = state

    def __repr__(self) -> str:
        return f"TensorSpec(shape={_shape_str(self.shape)}, dtype={self.dtype.name})"


class Layout:
    """The flat view of a nest of specs: names, numpy dtypes, shapes, and the nest itself (picklable, TF-free)."""

    def __init__(self, skeleton: Any):
        self.skeleton = skeleton
        self.leaves: list[Leaf] = [leaf for _, leaf in _paths(skeleton)]
        self.names = [leaf.name for leaf in self.leaves]
        self.dtypes: list[np.dtype] = [leaf.dtype for leaf in self.leaves]
        self.shapes: list[tuple] = [leaf.shape for leaf in self.leaves]  # None where a dim is variable
        self.bounds: list[tuple[int, ...]] = [leaf.bound for leaf in self.leaves]
        self.variable = any(leaf.variable for leaf in self.leaves)
        self.nbytes: list[int] = [
            int(np.prod(sh, dtype=np.int64)) * dt.itemsize for sh, dt in zip(self.bounds, self.dtypes, strict=True)
        ]
        self.single = isinstance(skeleton, Leaf)

    def __getstate__(self):
        return self.skeleton

    def __setstate__(self, skeleton):
        self.__init__(skeleton)

    # -- structure -----------------------------------------------------------
    def flatten(self, element: Any) -> list:
        """The element's components in spec order; TypeError if its nest differs.

        The nest is walked along the specs, so a list where the specs have a
        TensorSpec is data (as tf.convert_to_tensor takes it), not structure.
        """
        if self.single:
            _check_leaf(self.skeleton, element, "")
            return [element]
        out: list = []
        _flatten_like(self.skeleton, element, "", out)
        return out

    def pack(self, flat: Sequence) -> Any:
        """The specs' nest with ``flat`` in its places (as tf.nest.pack_sequence_as)."""
        if self.single:
            return flat[0]
        it = iter(flat)
        return _pack_like(self.skeleton, it)

    def flatten_shapes(self, shapes: Any) -> list[tuple[int, ...]]:
        """reserve(shapes=...): one shape per component, walked along the specs (a list there is a shape)."""
        out: list = []
        leaves_along(self.skeleton, shapes, "", out, "shapes")
        try:
            return [tuple(int(d) for d in shape) for shape in out]
        except (TypeError, ValueError):
            raise TypeError(f"shapes must hold a list of ints per component, got {shapes!r:.200}") from None

    def reserve_shapes(self, shapes: Any, queue: str) -> list[tuple[int, ...]] | None:
        """reserve(shapes=...) checked: one shape per component, each one it may have; None for the specs' own
        shapes, which a queue with a None dim does not have."""
        if shapes is None:
            if self.variable:
                raise ValueError(
                    f"queue '{queue}' has components of variable shape: reserve(shapes=...) needs the element's "
                    "shapes, a nest like specs"
                )
            return None
        flat = self.flatten_shapes(shapes)
        for i, shape in enumerate(flat):
            self.check_shape(i, shape)
        return flat

    def ring_shapes(self) -> tuple[list[list[int]], list[list[int]] | None]:
        """The specs' shapes (-1 where variable) and, if any dim is variable, the bounds: what _core.Ring takes."""
        shapes = [[-1 if d is None else d for d in sh] for sh in self.shapes]
        return shapes, ([list(b) for b in self.bounds] if self.variable else None)

    # -- components ----------------------------------------------------------
    def check_shape(self, i: int, shape: tuple, rows: int | None = None) -> None:
        """ValueError unless ``shape`` is one component i may have (after a leading ``rows`` dim for put_many)."""
        leaf = self.leaves[i]
        spec = leaf.shape if rows is None else (rows, *leaf.shape)
        bound = leaf.bound if rows is None else (rows, *leaf.bound)
        if len(shape) != len(spec) or any(s is not None and s != d for s, d in zip(spec, shape, strict=True)):
            raise ValueError(f"component {leaf.name}: expected shape {_shape_str(spec)}, got {list(shape)}")
        if any(d > b for d, b in zip(shape, bound, strict=True)):
            raise ValueError(
                f"component {leaf.name}: shape {list(shape)} is over its bound {list(bound)} (max_shapes); "
                "nothing was enqueued"
            )

    def convert(self, flat: Sequence, many: bool = False) -> list[np.ndarray]:
        """Checked, C-contiguous arrays of the specs' dtypes and shapes.

        Arrays (numpy, numpy scalars, tensors) must have the spec's dtype
        exactly; Python scalars and lists convert as tf.convert_to_tensor would.
        With ``many`` (put_many) every component has rows along a leading
        dimension, as many as the first component has.
        """
        out = []
        rows = None  # put_many's, from the first component
        tf = sys.modules.get("tensorflow")
        for i, (value, dtype, shape) in enumerate(zip(flat, self.dtypes, self.shapes, strict=True)):
            name = self.names[i]
            if tf is not None and isinstance(value, (tf.Tensor, tf.Variable)):
                try:
                    value = value.numpy()
                except (AttributeError, NotImplementedError):  # a graph tensor (TF1 style, or inside tf.function)
                    raise TypeError(
                        f"component {name}: a symbolic tensor has no value to put; put arrays or eager tensors"
                    ) from None
            if isinstance(value, (np.ndarray, np.generic)):
                arr = np.asarray(value)
                if arr.dtype != dtype:
                    raise TypeError(
                        f"component {name}: expected dtype {dtype.name}, got {arr.dtype.name} (arrays are not cast)"
                    )
            else:
                try:
                    arr = _from_python(value, dtype)
                    if arr is None:  # numpy cannot do what TF does here
                        arr = _from_python_by_tf(value, dtype)
                except (TypeError, ValueError, OverflowError) as e:
                    raise TypeError(
                        f"component {name}: cannot convert {type(value).__name__} to {dtype.name}: {e}"
                    ) from None
            if many and rows is None:
                if arr.ndim == 0:
                    raise ValueError(f"component {name}: put_many needs a leading dimension, got a scalar")
                rows = arr.shape[0]
            if arr.shape != ((rows, *shape) if many else shape):
                self.check_shape(i, arr.shape, rows if many else None)
            out.append(arr if arr.flags.c_contiguous else arr.copy(order="C"))
        return out


# tf.convert_to_tensor's conversion of Python values, in numpy. Its graph-mode path is the reference
# (tensor_util.make_tensor_proto): TF1 sessions take it, and eager conversion refuses some of what it
# accepts (bools into ints, ints past int64) and aborts the interpreter on a negative int into uint64.
# Each leaf is checked for the dtype's kind first (tensor_util._TF_TO_IS_OK: no float into an int, nothing
# but bools into bool), then numpy converts the whole value, wrapping out-of-range ints as TF does.
_ACCEPTS = {
    "b": (bool,),
    "i": (numbers.Integral, np.integer),
    "u": (numbers.Integral, np.integer),
    "f": (numbers.Real, np.integer, np.floating),
    "c": (numbers.Complex, np.number),
}
# Leaves whose conversion numpy is known to share with TF; anything else (Fractions, enums, arrays,
# strings) takes TF's own path, which also gives its errors.
_PLAIN = frozenset({bool, int, float, complex})


def _from_python(value: Any, dtype: np.dtype) -> np.ndarray | None:
    """value (a Python scalar or a list/tuple nest of them) as tf.convert_to_tensor(value, dtype) gives it.

    None when numpy cannot stand in for TF here. Raises TF's error types: TypeError for a leaf of the
    wrong kind, ValueError for None or a ragged nest, OverflowError for an int numpy cannot hold.
    """
    if value is None:
        raise ValueError("None values not supported.")
    accepts = _ACCEPTS.get(dtype.kind)
    leaves: list = []
    if accepts is None or not _plain_leaves(value, leaves):
        return None
    for leaf in leaves:
        if not isinstance(leaf, accepts):
            raise TypeError(f"Expected {dtype.name}, but got {leaf} of type '{type(leaf).__name__}'.")
    # numpy_compat.np_array: astype for numbers, so that out-of-range ints wrap instead of raising
    arr = np.array(value).astype(dtype) if dtype.kind != "b" else np.array(value, dtype=dtype)
    if list(arr.shape) != _dense_dims(value):
        raise ValueError(f"Expected values {value!r:.200} to be a dense tensor with shape {_dense_dims(value)}, "
                         f"but got shape {list(arr.shape)}.")
    return arr


def _plain_leaves(value: Any, out: list) -> bool:
    """Appends the leaves of a list/tuple nest to out; False if one is not a plain Python or numpy scalar."""
    if isinstance(value, (list, tuple)):
        return all(_plain_leaves(v, out) for v in value)
    out.append(value)
    return type(value) in _PLAIN or isinstance(value, (np.number, np.bool_))


def _dense_dims(value: Any) -> list[int]:
    """The shape a nest has if it is dense, read along its first items (tensor_util._GetDenseDimensions)."""
    if not isinstance(value, (list, tuple)):
        return []
    return [len(value), *_dense_dims(value[0])] if value else [0]


def _from_python_by_tf(value: Any, dtype: np.dtype) -> np.ndarray:
    import tensorflow as tf  # loaded once, when first needed

    # convert_to_tensor's own conversion, which also works with eager execution disabled (TF1 sessions)
    return tf.make_ndarray(tf.make_tensor_proto(value, dtype=tf.as_dtype(dtype)))


def _shape_str(shape) -> str:
    return "[" + ", ".join("None" if d is None else str(d) for d in shape) + "]"


def _structure_error(spec: Any, value: Any, path: str) -> TypeError:
    where = f" at {path}" if path else ""
    return TypeError(
        f"element structure differs from specs{where}: expected {spec!r}, got {type(value).__name__} {value!r:.200}"
    )


def _check_leaf(spec: Any, value: Any, path: str) -> None:
    if isinstance(value, (tuple, Mapping)):
        raise _structure_error(spec, value, path)


def _flatten_like(spec: Any, value: Any, path: str, out: list) -> None:
    if isinstance(spec, Leaf):
        _check_leaf(spec, value, path)
        out.append(value)
    elif isinstance(spec, Mapping):
        if not isinstance(value, Mapping) or set(value) != set(spec):
            raise _structure_error(spec, value, path)
        for k in sorted(spec):
            _flatten_like(spec[k], value[k], f"{path}[{k!r}]", out)
    else:
        if not isinstance(value, (tuple, list)) or len(value) != len(spec):
            raise _structure_error(spec, value, path)
        for i, (s, v) in enumerate(zip(spec, value, strict=True)):
            _flatten_like(s, v, f"{path}[{i}]", out)


def _pack_like(spec: Any, flat) -> Any:
    if isinstance(spec, Leaf):
        return next(flat)
    if isinstance(spec, Mapping):
        packed = {k: _pack_like(spec[k], flat) for k in sorted(spec)}
        return type(spec)((k, packed[k]) for k in spec)  # the specs' key order, as tf.nest keeps it
    items = [_pack_like(s, flat) for s in spec]
    if isinstance(spec, tuple) and hasattr(spec, "_fields"):  # a namedtuple
        return type(spec)(*items)
    return type(spec)(items)


def leaves_along(specs: Any, value: Any, path: str, out: list, what: str) -> None:
    """value walked along the specs' nest: appends what value holds where specs has a leaf.

    There any value is taken whole (a list is a shape or a scalar's data, not more nest).
    """
    if isinstance(specs, Mapping):
        if not isinstance(value, Mapping) or set(value) != set(specs):
            raise TypeError(f"{what} must be a nest like specs; at {path or 'the top'} it is {value!r:.200}")
        for k in sorted(specs):
            leaves_along(specs[k], value[k], f"{path}[{k!r}]", out, what)
    elif isinstance(specs, (tuple, list)):
        if not isinstance(value, (tuple, list)) or len(value) != len(specs):
            raise TypeError(f"{what} must be a nest like specs; at {path or 'the top'} it is {value!r:.200}")
        for i, (s, v) in enumerate(zip(specs, value, strict=True)):
            leaves_along(s, v, f"{path}[{i}]", out, what)
    else:
        out.append(value)


def _paths(specs: Any, prefix: str = ""):
    """(path, leaf) pairs in tf.nest order: dict keys sorted, sequences by index."""
    if isinstance(specs, Mapping):
        for k in sorted(specs):
            yield from _paths(specs[k], f"{prefix}[{k!r}]")
    elif isinstance(specs, (tuple, list)):
        for i, v in enumerate(specs):
            yield from _paths(v, f"{prefix}[{i}]")
    else:
        yield prefix, specs


def skeleton_of(specs: Any, leaf) -> Any:
    """``specs`` with each leaf replaced by ``leaf(path, spec)``, in the same containers."""
    return _map_with_path(specs, "", leaf)


def _map_with_path(specs: Any, path: str, leaf) -> Any:
    if isinstance(specs, Mapping):
        return type(specs)((k, _map_with_path(specs[k], f"{path}[{k!r}]", leaf)) for k in specs)
    if isinstance(specs, (tuple, list)):
        items = [_map_with_path(v, f"{path}[{i}]", leaf) for i, v in enumerate(specs)]
        if isinstance(specs, tuple) and hasattr(specs, "_fields"):
            return type(specs)(*items)
        return type(specs)(items)
    return leaf(path, specs)
