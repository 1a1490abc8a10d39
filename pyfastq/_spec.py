"""Element specs: flattening an element against its specs, and checking it.

Both backends use this: the native one only when its exact-match fast path
declines a component (a Python scalar or list, a non-contiguous array, a wrong
dtype or shape), so the errors are the same whichever backend raised them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

_UNSUPPORTED = (tf.string, tf.resource, tf.variant)


def _is_structure(x: Any) -> bool:
    return isinstance(x, (tuple, list, Mapping))


class Spec:
    """The flat view of a nest of ``tf.TensorSpec``: names, dtypes, shapes."""

    def __init__(self, specs: Any):
        self.structure = specs
        flat = tf.nest.flatten(specs)
        if not flat:
            raise TypeError("specs must hold at least one tf.TensorSpec")
        self.names: list[str] = []
        for path, s in _paths(specs):
            if not isinstance(s, tf.TensorSpec):
                raise TypeError(f"specs must be tf.TensorSpec or a tuple/list/dict nest of them; {path or 'specs'} is {s!r}")
            if not s.shape.is_fully_defined():
                raise ValueError(f"component {path or '0'} has shape {s.shape}: ring slots need fully defined shapes")
            if s.dtype in _UNSUPPORTED:
                raise TypeError(f"component {path or '0'} has dtype {s.dtype.name}: only fixed-size numeric and bool dtypes fit in a slot")
            self.names.append(path or "0")
        self.flat: list[tf.TensorSpec] = flat
        self.dtypes: list[np.dtype] = [np.dtype(s.dtype.as_numpy_dtype) for s in flat]
        self.shapes: list[tuple[int, ...]] = [tuple(s.shape.as_list()) for s in flat]
        self.tf_dtypes = [s.dtype for s in flat]
        self.nbytes: list[int] = [int(np.prod(sh, dtype=np.int64)) * dt.itemsize for sh, dt in zip(self.shapes, self.dtypes)]
        self.single = isinstance(specs, tf.TensorSpec)

    # -- structure -----------------------------------------------------------
    def flatten(self, element: Any) -> list:
        """The element's components in spec order; TypeError if its nest differs.

        The nest is walked along the specs, so a list where the specs have a
        TensorSpec is data (as tf.convert_to_tensor takes it), not structure.
        """
        if self.single:
            _check_leaf(self.structure, element, "")
            return [element]
        out: list = []
        _flatten_like(self.structure, element, "", out)
        return out

    def pack(self, flat: Sequence) -> Any:
        return flat[0] if self.single else tf.nest.pack_sequence_as(self.structure, list(flat))

    # -- components ----------------------------------------------------------
    def convert(self, flat: Sequence, leading: int | None = None) -> list[np.ndarray]:
        """Checked, C-contiguous arrays of the specs' dtypes and shapes.

        Arrays (numpy, numpy scalars, tensors) must have the spec's dtype
        exactly; Python scalars and lists convert as tf.convert_to_tensor would.
        With ``leading`` (put_many) every component has that many rows first;
        ``leading=-1`` takes the row count from the first component.
        """
        out = []
        for i, (value, dtype, shape) in enumerate(zip(flat, self.dtypes, self.shapes)):
            name = self.names[i]
            if isinstance(value, (tf.Tensor, tf.Variable)):
                value = value.numpy()
            if isinstance(value, (np.ndarray, np.generic)):
                arr = np.asarray(value)
                if arr.dtype != dtype:
                    raise TypeError(f"component {name}: expected dtype {dtype.name}, got {arr.dtype.name} (arrays are not cast)")
            else:
                try:
                    arr = np.asarray(tf.convert_to_tensor(value, dtype=self.tf_dtypes[i]).numpy())
                except (TypeError, ValueError) as e:
                    raise TypeError(f"component {name}: cannot convert {type(value).__name__} to {dtype.name}: {e}") from None
            want = shape
            if leading is not None:
                if leading == -1:
                    if arr.ndim == 0:
                        raise ValueError(f"component {name}: put_many needs a leading dimension, got a scalar")
                    leading = arr.shape[0]
                want = (leading, *shape)
            if arr.shape != want:
                raise ValueError(f"component {name}: expected shape {list(want)}, got {list(arr.shape)}")
            out.append(arr if arr.flags.c_contiguous else arr.copy(order="C"))
        return out


def _structure_error(spec: Any, value: Any, path: str) -> TypeError:
    where = f" at {path}" if path else ""
    return TypeError(f"element structure differs from specs{where}: expected {spec!r}, got {type(value).__name__} {value!r:.200}")


def _check_leaf(spec: Any, value: Any, path: str) -> None:
    if isinstance(value, (tuple, Mapping)):
        raise _structure_error(spec, value, path)


def _flatten_like(spec: Any, value: Any, path: str, out: list) -> None:
    if isinstance(spec, tf.TensorSpec):
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
        for i, (s, v) in enumerate(zip(spec, value)):
            _flatten_like(s, v, f"{path}[{i}]", out)


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
