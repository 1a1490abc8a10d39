"""Property: any element is either accepted and comes out bit-identical, or rejected
with the documented error and the queue unchanged."""

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import pyfastq

DTYPES = [np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, np.float16]
shapes = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=4)
leaf = st.tuples(st.sampled_from(DTYPES), shapes)
nests = st.one_of(
    leaf,
    st.lists(leaf, min_size=1, max_size=3).map(tuple),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), leaf, min_size=1),
)


def to_specs(nest):
    if isinstance(nest, dict):
        return {k: to_specs(v) for k, v in nest.items()}
    if isinstance(nest[0], type):  # a leaf: (dtype, shape)
        return tf.TensorSpec(nest[1], tf.as_dtype(nest[0]))
    return tuple(to_specs(v) for v in nest)


def leaves(specs):
    return tf.nest.flatten(specs)


@st.composite
def case(draw):
    specs = to_specs(draw(nests))
    flat = []
    perturb = draw(st.sampled_from(["none", "none", "dtype", "shape", "structure"]))
    target = draw(st.integers(0, len(leaves(specs)) - 1))
    for i, s in enumerate(leaves(specs)):
        dtype, shape = s.dtype.as_numpy_dtype, tuple(s.shape.as_list())
        if i == target and perturb == "dtype":
            dtype = draw(st.sampled_from([d for d in DTYPES if np.dtype(d) != np.dtype(dtype)]))
        if i == target and perturb == "shape":
            shape = (*shape, 2) if draw(st.booleans()) or not shape else (*shape[:-1], shape[-1] + 1)
        flat.append(draw(hnp.arrays(dtype, shape)))
    element = tf.nest.pack_sequence_as(specs, flat)
    if perturb == "structure":  # one component more, or one fewer
        if not isinstance(element, tuple):
            element = (element, flat[0])
        elif len(element) > 1:
            element = element[:-1]
        else:
            element = element + element
    return specs, element, perturb


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)
@given(case())
def test_accepted_bit_identical_or_rejected_unchanged(backend, case):
    specs, element, perturb = case
    q = pyfastq.Queue(specs, capacity=2, backend=backend)
    expected_error = {"none": None, "dtype": TypeError, "shape": ValueError, "structure": TypeError}[perturb]
    if expected_error is None:
        q.put(element)
        assert q.size() == 1
        out = q.dequeue()
        for want, got in zip(tf.nest.flatten(element), tf.nest.flatten(out), strict=True):
            got = got.numpy()
            assert got.dtype == want.dtype and got.shape == want.shape
            assert got.tobytes() == np.ascontiguousarray(want).tobytes()
    else:
        with pytest.raises(expected_error):
            q.put(element)
        assert q.size() == 0
        assert q.stats()["puts"] == 0
